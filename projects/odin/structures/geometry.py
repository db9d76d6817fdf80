"""2D -> 3D geometry of ODIN: unprojection, multi-scale xyz maps, voxelisation, IDW interpolation.

Pure torch + :mod:`projects.odin.ops`; every function reproduces the official implementation
(docs/specification.md §2.2, §2.3 and §2.6), including its quirks (invalid depth is not masked,
nearest downsampling picks the top-left pixel of each stride cell, voxel ids follow the sorted
raveled voxel key).
"""
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from projects.odin.ops import knn, knn_gather_wsum, scatter_mean
from projects.odin.ops.utils import check_offsets, check_points, scene_ranges

__all__ = ['unproject_depth', 'multiscale_xyz', 'voxelize', 'idw_interpolate', 'idw_from_neighbors']


def unproject_depth(depth: Tensor, intrinsics: Tensor, cam2world: Tensor) -> Tensor:
    """Unproject depth maps to world coordinates at full resolution.

    Pixel ``(row y, column x)`` uses integer indices (no +0.5):
    ``X = (x - cx) * z / fx``, ``Y = (y - cy) * z / fy``, ``Z = z``, then the homogeneous point is
    multiplied by the camera-to-world pose and divided by its last coordinate. Invalid depth (0) is
    not masked: such pixels land on the camera centre, as in the official code.

    Args:
        depth: ``(V, H, W)`` depth in metres.
        intrinsics: ``(V, 4, 4)`` (or ``(V, 3, 3)``) pin-hole intrinsics
            (``fx = K[0,0]``, ``fy = K[1,1]``, ``cx = K[0,2]``, ``cy = K[1,2]``).
        cam2world: ``(V, 4, 4)`` camera-to-world poses.

    Returns:
        ``(V, H, W, 3)`` world xyz, dtype of ``depth``.
    """
    if depth.dim() != 3:
        raise ValueError(f'depth must be (V, H, W), got {tuple(depth.shape)}')
    v, h, w = depth.shape
    if intrinsics.shape[0] != v or intrinsics.shape[1:] not in ((4, 4), (3, 3)):
        raise ValueError(f'intrinsics must be ({v}, 4, 4) or ({v}, 3, 3), '
                         f'got {tuple(intrinsics.shape)}')
    if cam2world.shape != (v, 4, 4):
        raise ValueError(f'cam2world must be ({v}, 4, 4), got {tuple(cam2world.shape)}')
    dtype = depth.dtype
    intrinsics = intrinsics.to(dtype)
    cam2world = cam2world.to(dtype)
    fx = intrinsics[:, 0, 0].view(v, 1, 1)
    fy = intrinsics[:, 1, 1].view(v, 1, 1)
    cx = intrinsics[:, 0, 2].view(v, 1, 1)
    cy = intrinsics[:, 1, 2].view(v, 1, 1)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=dtype, device=depth.device),
                            torch.arange(w, dtype=dtype, device=depth.device), indexing='ij')
    x_cam = (xs - cx) * depth / fx
    y_cam = (ys - cy) * depth / fy
    pts = torch.stack([x_cam, y_cam, depth, torch.ones_like(depth)], dim=-1)  # (V, H, W, 4)
    world = torch.einsum('vij,vhwj->vhwi', cam2world, pts)
    return world[..., :3] / world[..., 3:4]


def multiscale_xyz(xyz: Tensor, strides: Sequence[int] = (32, 16, 8, 4)) -> List[Tensor]:
    """Nearest-downsample a full-resolution xyz map to several strides.

    Output pixel ``(i, j)`` at stride ``s`` is input pixel ``(s*i, s*j)`` (the top-left pixel of the
    stride cell, what ``F.interpolate(mode='nearest')`` picks). If ``H`` or ``W`` is not a multiple
    of ``max(strides)`` the map is first zero-padded at the bottom/right (padding lands on the
    world origin, as the official size-divisibility padding does).

    Args:
        xyz: ``(V, H, W, 3)`` world coordinates.
        strides: output strides, in the order wanted (official order: res5..res2 = 32, 16, 8, 4).

    Returns:
        list of ``(V, ceil(H/s_max)*s_max/s, ..., 3)`` maps, one per stride.
    """
    if xyz.dim() != 4 or xyz.shape[-1] != 3:
        raise ValueError(f'xyz must be (V, H, W, 3), got {tuple(xyz.shape)}')
    if not strides or any(int(s) != s or s < 1 for s in strides):
        raise ValueError(f'strides must be positive integers, got {strides}')
    div = max(strides)
    _, h, w, _ = xyz.shape
    pad_h, pad_w = (-h) % div, (-w) % div
    if pad_h or pad_w:
        xyz = F.pad(xyz, (0, 0, 0, pad_w, 0, pad_h))
    return [xyz[:, ::s, ::s].contiguous() for s in strides]


def voxelize(xyz: Tensor, offsets: Tensor, voxel_size: float) -> Tuple[Tensor, Tensor, Tensor]:
    """Voxelise every scene of a batch, in the official voxel order.

    Per scene: ``key3 = round(xyz / voxel_size)`` minus its per-scene minimum, raveled in C order
    (x slowest, z fastest) and ``unique(return_inverse=True)``: voxel ids follow the sorted key,
    i.e. lexicographic (x, y, z) cell order, exactly as the official ``voxelization``. Voxel
    coordinates are centroids (mean of the member points), not grid centres.

    Args:
        xyz: ``(N, 3)`` points of all scenes concatenated.
        offsets: ``(B,)`` cumulative end index of each scene's points.
        voxel_size: edge length in the units of ``xyz`` (> 0).

    Returns:
        tuple: ``p2v`` ``(N,)`` int64 GLOBAL voxel id of every point (scene ``b``'s voxels follow
        those of scenes ``< b``), ``voxel_offsets`` ``(B,)`` int64 cumulative voxel counts (device
        of ``xyz``), ``voxel_xyz`` ``(N_vox, 3)`` centroids.
    """
    check_points('xyz', xyz)
    if not voxel_size > 0:
        raise ValueError(f'voxel_size must be > 0, got {voxel_size}')
    off = check_offsets('offsets', offsets, xyz.shape[0])
    p2v = torch.empty(xyz.shape[0], dtype=torch.int64, device=xyz.device)
    counts = []
    base = 0
    for s, e in scene_ranges(off):
        if e == s:
            counts.append(0)
            continue
        cell = torch.round(xyz[s:e] / voxel_size).long()
        cell = cell - cell.min(0).values
        dims = cell.max(0).values + 1
        key = (cell[:, 0] * dims[1] + cell[:, 1]) * dims[2] + cell[:, 2]
        _, inverse = torch.unique(key, sorted=True, return_inverse=True)
        n_vox = int(inverse.max()) + 1
        p2v[s:e] = inverse + base
        base += n_vox
        counts.append(n_vox)
    voxel_offsets = torch.tensor(counts, dtype=torch.int64).cumsum(0).to(xyz.device)
    voxel_xyz = scatter_mean(xyz, p2v, base)
    return p2v, voxel_offsets, voxel_xyz


def idw_interpolate(src_feats: Tensor,
                    src_xyz: Tensor,
                    src_offsets: Tensor,
                    tgt_xyz: Tensor,
                    tgt_offsets: Tensor,
                    k: int = 8) -> Tensor:
    """Inverse-distance-weighted kNN interpolation from source to target points, per scene.

    ``w_j = 1 / (d_j + 1e-8)`` normalised over the ``k`` nearest sources of the same scene
    (euclidean ``d``), ``out = sum_j w_j * src_feats[idx_j]`` accumulated neighbour by neighbour
    like the official ``pointops.interpolation``. Scenes with fewer than ``k`` sources get the
    official padding (see :func:`projects.odin.ops.knn`), whose weights are ~1e-5 relative.

    Args:
        src_feats: ``(Ns, C)`` source features (differentiable).
        src_xyz: ``(Ns, 3)`` source coordinates.
        src_offsets: ``(B,)`` cumulative end index of each scene's sources.
        tgt_xyz: ``(Nt, 3)`` target coordinates.
        tgt_offsets: ``(B,)`` cumulative end index of each scene's targets.
        k: number of neighbours (official: 8).

    Returns:
        ``(Nt, C)`` interpolated features, dtype of ``src_feats``.
    """
    if src_feats.dim() != 2 or src_feats.shape[0] != src_xyz.shape[0]:
        raise ValueError(f'src_feats must be (Ns, C) with Ns = {src_xyz.shape[0]}, '
                         f'got {tuple(src_feats.shape)}')
    idx, dist = knn(tgt_xyz, src_xyz, k, tgt_offsets, src_offsets)
    return idw_from_neighbors(src_feats, idx, dist)


def idw_from_neighbors(src_feats: Tensor, idx: Tensor, dist: Tensor) -> Tensor:
    """Inverse-distance-weighted sum over given neighbours (the second half of IDW).

    ``w_j = 1 / (d_j + 1e-8)`` normalised over the row, ``out = sum_j w_j * src_feats[idx_j]``.
    The sum is the one-head case of :func:`projects.odin.ops.knn_gather_wsum`: the compiled
    kernels accumulate neighbour by neighbour, product then sum (no fused multiply-add), like the
    official ``pointops.interpolation``, without materialising a gathered ``(Nt, C)`` tensor per
    neighbour; the PyTorch twin sums each row by a small matmul (equal within rounding).
    Differentiable w.r.t. ``src_feats``.

    Args:
        src_feats: ``(Ns, C)`` source features (differentiable).
        idx: ``(Nt, k)`` int64 source rows of every target (from :func:`projects.odin.ops.knn`).
        dist: ``(Nt, k)`` euclidean distances of those neighbours.

    Returns:
        ``(Nt, C)`` interpolated features, dtype of ``src_feats``.
    """
    if idx.shape != dist.shape or idx.dim() != 2:
        raise ValueError(f'idx and dist must both be (Nt, k), got {tuple(idx.shape)} and '
                         f'{tuple(dist.shape)}')
    recip = 1.0 / (dist + 1e-8)
    weight = (recip / recip.sum(dim=1, keepdim=True)).to(src_feats.dtype)
    out = knn_gather_wsum(weight.unsqueeze(1), src_feats, idx.long())
    return out.to(src_feats.dtype)
