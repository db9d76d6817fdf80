"""Numpy/OpenCV rendering of instance-coloured point clouds (no matplotlib, no OpenGL).

Used by the visualisation hook of ``tools/test.py --show-dir`` and by the demo's figure
(:func:`projects.odin.demo.figure.render_demo_figure`): a perspective view of the point cloud from
above a corner of the scene (z-buffered square splats).
"""
from typing import Optional, Tuple

import numpy as np
from plyfile import PlyData


def look_at_view(eye: np.ndarray, target: np.ndarray,
                 up: Tuple[float, float, float] = (0.0, 0.0, 1.0)) -> np.ndarray:
    """World-to-camera matrix of a camera at ``eye`` looking at ``target`` (OpenCV axes).

    Args:
        eye: (3,) camera centre.
        target: (3,) point in the middle of the image.
        up: world up direction. Defaults to +z.

    Returns:
        (4, 4) world-to-camera matrix (x right, y down, z forward).
    """
    z = np.asarray(target, float) - np.asarray(eye, float)
    z /= np.linalg.norm(z)
    x = np.cross(z, np.asarray(up, float))
    if np.linalg.norm(x) < 1e-8:
        x = np.cross(z, np.array([0.0, 1.0, 0.0]))
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    view = np.eye(4)
    view[:3, :3] = np.stack([x, y, z])
    view[:3, 3] = -view[:3, :3] @ np.asarray(eye, float)
    return view


def render_points(xyz: np.ndarray,
                  colors: np.ndarray,
                  size: Tuple[int, int] = (360, 480),
                  view: Optional[np.ndarray] = None,
                  fov_deg: float = 55.0,
                  splat: int = 1,
                  background: Tuple[int, int, int] = (255, 255, 255),
                  shade_depth: float = 0.35) -> np.ndarray:
    """Rasterise a coloured point cloud with a z-buffer.

    Each point is drawn as a ``(2 * splat + 1)``-pixel square; the nearest point wins every pixel,
    and colours are darkened with distance (``shade_depth``) for a sense of depth.

    Args:
        xyz: (N, 3) points.
        colors: (N, 3) uint8 RGB.
        size: (H, W) of the image. Defaults to (360, 480).
        view: (4, 4) world-to-camera matrix; None picks :func:`default_view`.
        fov_deg: horizontal field of view. Defaults to 55.
        splat: half size of the square drawn per point, in pixels. Defaults to 1.
        background: RGB background. Defaults to white.
        shade_depth: darkening of the farthest points (0 = none). Defaults to 0.35.

    Returns:
        (H, W, 3) uint8 RGB image.
    """
    xyz = np.asarray(xyz, dtype=np.float64)
    colors = np.asarray(colors, dtype=np.uint8)
    if xyz.ndim != 2 or xyz.shape[1] != 3 or len(colors) != len(xyz):
        raise ValueError(f'xyz must be (N, 3) with (N, 3) colours; got {xyz.shape}, '
                         f'{colors.shape}')
    h, w = size
    img = np.empty((h, w, 3), np.uint8)
    img[:] = background
    if len(xyz) == 0:
        return img
    view = default_view(xyz) if view is None else view
    cam = xyz @ view[:3, :3].T + view[:3, 3]
    front = cam[:, 2] > 1e-3
    cam, col = cam[front], colors[front]
    f = 0.5 * w / np.tan(np.deg2rad(fov_deg) / 2)
    u = np.round(f * cam[:, 0] / cam[:, 2] + (w - 1) / 2).astype(np.int64)
    v = np.round(f * cam[:, 1] / cam[:, 2] + (h - 1) / 2).astype(np.int64)
    depth = cam[:, 2]
    if shade_depth > 0 and len(depth):
        lo, hi = np.percentile(depth, 2), np.percentile(depth, 98)
        t = np.clip((depth - lo) / max(hi - lo, 1e-6), 0, 1)
        col = (col.astype(np.float32) * (1 - shade_depth * t)[:, None]).astype(np.uint8)
    us, vs, ds, idx = [], [], [], []
    ar = np.arange(len(u))
    for dy in range(-splat, splat + 1):
        for dx in range(-splat, splat + 1):
            us.append(u + dx)
            vs.append(v + dy)
            ds.append(depth)
            idx.append(ar)
    us, vs, ds, idx = (np.concatenate(a) for a in (us, vs, ds, idx))
    ok = (us >= 0) & (us < w) & (vs >= 0) & (vs < h)
    pix = vs[ok] * w + us[ok]
    ds, idx = ds[ok], idx[ok]
    order = np.lexsort((ds, pix))  # by pixel, nearest first
    pix, idx = pix[order], idx[order]
    first = np.ones(len(pix), bool)
    first[1:] = pix[1:] != pix[:-1]
    img.reshape(-1, 3)[pix[first]] = col[idx[first]]
    return img


def default_view(xyz: np.ndarray, elevation_deg: float = 50.0,
                 azimuth_deg: float = -60.0, distance: float = 1.35) -> np.ndarray:
    """A view from above a corner of the cloud's bounding box, looking at its centre (z up)."""
    lo, hi = np.percentile(xyz, 1, axis=0), np.percentile(xyz, 99, axis=0)
    centre = (lo + hi) / 2
    radius = max(np.linalg.norm(hi - lo) / 2, 1e-3)
    el, az = np.deg2rad(elevation_deg), np.deg2rad(azimuth_deg)
    direction = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    eye = centre + distance * 2 * radius * direction
    return look_at_view(eye, centre)


def read_instance_ply(path: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read a PLY written by :func:`projects.odin.visualization.instances.write_instance_ply`.

    Returns:
        tuple: xyz (N, 3) float32, colours (N, 3) uint8, instance ids (N,) int64 (-1 = none).
    """
    vertex = PlyData.read(path)['vertex']
    xyz = np.stack([vertex['x'], vertex['y'], vertex['z']], 1).astype(np.float32)
    rgb = np.stack([vertex['red'], vertex['green'], vertex['blue']], 1).astype(np.uint8)
    names = vertex.data.dtype.names
    inst = (np.asarray(vertex['instance'], np.int64) if 'instance' in names else
            np.full(len(xyz), -1, np.int64))
    return xyz, rgb, inst


__all__ = ['render_points', 'default_view', 'look_at_view', 'read_instance_ply']
