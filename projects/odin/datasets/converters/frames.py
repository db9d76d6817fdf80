"""Per-frame validation and writing shared by the frame-folder converters.

S3DIS, Matterport3D and AI2THOR keep a frame only if its colour, depth and pose files exist and
agree in size, the pose is finite and the depth has at least one valid pixel; otherwise the frame
is dropped, counted under a reason and described (file names) in the scene's notes.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from .common import inpaint_depth, mat_list, write_image, write_matrix

DROP_REASONS = ('missing_file', 'unreadable', 'size_mismatch', 'invalid_pose', 'zero_depth')


class FrameDrop(Exception):
    """A frame must be dropped; ``reason`` is one of ``DROP_REASONS``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def read_color(path: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB, or :class:`FrameDrop` naming the file."""
    import cv2
    if not os.path.isfile(path):
        raise FrameDrop('missing_file', f'{path}: colour file missing')
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise FrameDrop('unreadable', f'{path}: cannot decode colour image')
    return np.ascontiguousarray(img[..., ::-1])


def read_depth_raw(path: str) -> np.ndarray:
    """The stored depth values (uint16 PNG or float ``.npy``), or :class:`FrameDrop`."""
    import cv2
    if not os.path.isfile(path):
        raise FrameDrop('missing_file', f'{path}: depth file missing')
    if path.endswith('.npy'):
        try:
            dep = np.load(path)
        except Exception as exc:
            raise FrameDrop('unreadable', f'{path}: cannot load depth ({exc})') from exc
    else:
        dep = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if dep is None or dep.ndim != 2:
        raise FrameDrop('unreadable', f'{path}: cannot decode a single-channel depth image')
    return dep


def to_depth_mm(depth_m: np.ndarray) -> np.ndarray:
    """Metres (0 / non-finite = invalid) -> uint16 mm (0 = invalid, clipped at 65.535 m)."""
    d = np.where(np.isfinite(depth_m), depth_m, 0.0)
    return np.clip(np.round(d * 1000.0), 0, 65535).astype(np.uint16)


def check_frame(color: np.ndarray, depth_mm: np.ndarray, pose: np.ndarray, color_path: str,
                depth_path: str, pose_path: str) -> None:
    """Raise :class:`FrameDrop` if sizes disagree, the pose is not finite or depth is empty."""
    if color.shape[:2] != depth_mm.shape:
        raise FrameDrop('size_mismatch',
                        f'{color_path} is {color.shape[1]}x{color.shape[0]} but {depth_path} is '
                        f'{depth_mm.shape[1]}x{depth_mm.shape[0]}')
    if pose.shape != (4, 4) or not np.isfinite(pose).all():
        raise FrameDrop('invalid_pose', f'{pose_path}: non-finite camera pose')
    if not depth_mm.any():
        raise FrameDrop('zero_depth', f'{depth_path}: no valid depth pixel')


def resize_frame(color: np.ndarray, depth_mm: np.ndarray, k: np.ndarray,
                 size: Optional[Tuple[int, int]], label_maps: Tuple[np.ndarray, ...] = ()):
    """Resize colour (area), depth and label maps (nearest) to ``size`` = (H, W).

    Returns:
        tuple: colour, depth, intrinsics (4, 4) scaled by the resize factor, label maps.
    """
    if size is None or tuple(size) == depth_mm.shape:
        return color, depth_mm, k, label_maps
    import cv2

    from ..transforms import nearest_resize, scale_intrinsics
    h, w = size
    h0, w0 = depth_mm.shape
    color = cv2.resize(color, (w, h), interpolation=cv2.INTER_AREA)
    depth_mm = nearest_resize(depth_mm, (h, w))
    label_maps = tuple(nearest_resize(m, (h, w)) for m in label_maps)
    return color, depth_mm, scale_intrinsics(k, w / w0, h / h0).astype(np.float64), label_maps


def write_frame(stage: Path, scene: str, fid: str, color: np.ndarray, depth_mm: np.ndarray,
                pose: np.ndarray, k: np.ndarray, jpeg_quality: int = 95,
                inpaint: bool = False) -> dict:
    """Write one frame under ``frames/<scene>/`` and return its info entry.

    Args:
        stage (Path): Staging root (same layout as the output root).
        scene (str): Scene id.
        fid (str): Frame id (file stem).
        color (np.ndarray): (H, W, 3) uint8 RGB.
        depth_mm (np.ndarray): (H, W) uint16 depth in mm, 0 = invalid.
        pose (np.ndarray): (4, 4) camera-to-world.
        k (np.ndarray): (4, 4) intrinsics.
        jpeg_quality (int): Colour JPEG quality. Defaults to 95.
        inpaint (bool): Also write ``depth_inpainted/<fid>.png`` (the written depth with its
            holes filled by :func:`~.common.inpaint_depth`) and list it as
            ``depth_inpainted_map``. Defaults to False.

    Returns:
        dict: The frame's info entry (paths relative to the output root).
    """
    rel = Path('frames') / scene
    entry = dict(img_path=str(rel / 'color' / f'{fid}.jpg'),
                 depth_map=str(rel / 'depth' / f'{fid}.png'),
                 height=int(depth_mm.shape[0]), width=int(depth_mm.shape[1]),
                 cam2img=mat_list(k), cam2world=mat_list(pose))
    write_image(stage / entry['img_path'], color, jpeg_quality)
    write_image(stage / entry['depth_map'], depth_mm)
    if inpaint:
        entry['depth_inpainted_map'] = str(rel / 'depth_inpainted' / f'{fid}.png')
        write_image(stage / entry['depth_inpainted_map'], inpaint_depth(depth_mm))
    write_matrix(stage / rel / 'pose' / f'{fid}.txt', pose)
    write_matrix(stage / rel / 'intrinsic' / f'{fid}.txt', k)
    return entry


def new_drop_counter() -> Dict[str, int]:
    """A zeroed counter of dropped frames per reason."""
    return {r: 0 for r in DROP_REASONS}


def record_drop(exc: FrameDrop, dropped: Dict[str, int], notes: List[str],
                max_notes: int = 20) -> None:
    """Count a dropped frame and keep (a bounded number of) its descriptions."""
    dropped[exc.reason] = dropped.get(exc.reason, 0) + 1
    if len(notes) < max_notes:
        notes.append(f'dropped frame: {exc}')
