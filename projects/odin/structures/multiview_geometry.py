"""Multi-view voxel geometry of a forward pass, shared by every 3D layer of ODIN.

One scene chunk has V posed RGB-D views. For every feature level (stride 4, 8, 16, 32) the
pixels of all views are unprojected to world xyz, pooled into voxels (2/4/8/16 cm) and, for the
levels that run 3D attention, linked to their k nearest voxels. This is computed once per forward
and shared by the backbone fusion blocks, the pixel-decoder fusion layers and the decoder memory
(docs/specification.md §2.3: voxel pooling before every 3D operation).

Flattening convention: a level's pixel features ``(B*V, C, h, w)`` are flattened to
``(B*V*h*w, C)`` in (scene, view, row, column) order; scenes are concatenated and delimited by
cumulative ``offsets`` (mmcv/pointops style, see ``projects.odin.ops``).
"""
from dataclasses import dataclass
from typing import List, Optional, Sequence, Union

import torch
from torch import Tensor

from projects.odin.ops import scatter_mean
from projects.odin.ops.utils import scene_ranges

from . import neighbors
from .geometry import multiscale_xyz, unproject_depth, voxelize
from .multiview_depths import MultiViewDepths


@dataclass
class LevelGeometry:
    """Voxelisation of one feature level of a batch of scene chunks.

    Attributes:
        shape: ``(B, V, h, w)`` of the level.
        point_xyz: world xyz of every pixel, shape (B*V*h*w, 3).
        point_offsets: cumulative pixel count per scene, shape (B,).
        p2v: global voxel id of every pixel, shape (B*V*h*w,).
        voxel_xyz: voxel centroids (mean of member pixels), shape (N_vox, 3).
        voxel_offsets: cumulative voxel count per scene, shape (B,).
        knn_idx: global ids of the k nearest voxels of the same scene (self included), shape
            (N_vox, k), or None for levels without 3D attention.
    """

    shape: tuple
    point_xyz: Tensor
    point_offsets: Tensor
    p2v: Tensor
    voxel_xyz: Tensor
    voxel_offsets: Tensor
    knn_idx: Optional[Tensor] = None

    @property
    def num_voxels(self) -> int:
        """Total number of voxels over the batch."""
        return self.voxel_xyz.shape[0]

    @property
    def voxel_counts(self) -> List[int]:
        """Number of voxels of every scene."""
        return [e - s for s, e in scene_ranges(self.voxel_offsets)]

    @property
    def voxel_starts(self) -> List[int]:
        """First global voxel id of every scene."""
        return [s for s, _ in scene_ranges(self.voxel_offsets)]

    def pool(self, feats: Tensor) -> Tensor:
        """Average pixel features into voxels.

        Args:
            feats: pixel features, shape (B*V, C, h, w).

        Returns:
            Tensor: voxel features, shape (N_vox, C).
        """
        # shape (B*V, C, h, w) -> (B*V*h*w, C)
        flat = feats.permute(0, 2, 3, 1).reshape(-1, feats.shape[1])
        return scatter_mean(flat, self.p2v, self.num_voxels)

    def view_pixels(self, start: int, end: int) -> slice:
        """Pixel rows of the flattened views ``start:end`` (flattened ``B*V`` view index)."""
        _, _, h, w = self.shape
        return slice(start * h * w, end * h * w)

    def pool_views(self, feats: Tensor, start: int, into: 'VoxelSum') -> None:
        """Add the pixel features of views ``start:start+n`` to a voxel accumulator.

        Args:
            feats: features of ``n`` consecutive views (flattened ``B*V`` index), (n, C, h, w).
            start: flattened index of the first of them.
            into: the accumulator of this level (:meth:`voxel_sum`).
        """
        # shape (n, C, h, w) -> (n*h*w, C)
        flat = feats.permute(0, 2, 3, 1).reshape(-1, feats.shape[1])
        into.add(flat, self.p2v[self.view_pixels(start, start + feats.shape[0])])

    def voxel_sum(self) -> 'VoxelSum':
        """An empty accumulator of per-voxel means of this level's pixels (chunked pooling)."""
        counts = torch.bincount(self.p2v, minlength=self.num_voxels)
        return VoxelSum(counts)

    def broadcast_views(self, voxel_feats: Tensor, start: int, end: int) -> Tensor:
        """:meth:`broadcast` for the views ``start:end`` only.

        Args:
            voxel_feats: shape (N_vox, C).
            start: flattened (``B*V``) index of the first view.
            end: one past the last view.

        Returns:
            Tensor: pixel features of those views, shape (end - start, C, h, w).
        """
        _, _, h, w = self.shape
        p2v = self.p2v[self.view_pixels(start, end)]
        # shape (n*h*w, C) -> (n, C, h, w)
        return voxel_feats[p2v].view(end - start, h, w, -1).permute(0, 3, 1, 2).contiguous()

    def broadcast(self, voxel_feats: Tensor) -> Tensor:
        """Give every pixel the features of its voxel.

        Args:
            voxel_feats: shape (N_vox, C).

        Returns:
            Tensor: pixel features, shape (B*V, C, h, w).
        """
        b, v, h, w = self.shape
        # shape (B*V*h*w, C) -> (B*V, C, h, w)
        return voxel_feats[self.p2v].view(b * v, h, w, -1).permute(0, 3, 1, 2).contiguous()


class VoxelSum:
    """Per-voxel mean of pixel features accumulated over view chunks.

    The chunked form of :meth:`LevelGeometry.pool`: ``add`` the pixels of every chunk, then
    :meth:`mean` (sum / member count; voxels without members are 0).

    Args:
        counts: member pixels of every voxel, shape (N_vox,).
    """

    def __init__(self, counts: Tensor) -> None:
        self.counts = counts
        self.sums: Optional[Tensor] = None

    def add(self, feats: Tensor, p2v: Tensor) -> None:
        """Add pixel features ``(n, C)`` whose voxel ids are ``p2v`` ``(n,)``."""
        if self.sums is None:
            self.sums = feats.new_zeros(len(self.counts), feats.shape[1])
        self.sums.index_add_(0, p2v, feats)

    def mean(self) -> Tensor:
        """Voxel means, shape (N_vox, C)."""
        if self.sums is None:
            raise RuntimeError('VoxelSum.mean() before any add()')
        return self.sums / self.counts.clamp(min=1).unsqueeze(1).to(self.sums.dtype)


def compute_multiscale_xyz(depths: Union[Tensor, MultiViewDepths],
                           intrinsics: Tensor,
                           cam2world: Tensor,
                           img_shapes: Sequence[tuple],
                           strides: Sequence[int] = (4, 8, 16, 32),
                           view_chunk: int = 16) -> List[Tensor]:
    """Unproject padded depth maps and nearest-downsample the xyz maps.

    As docs/specification.md §2.2 says: unprojection at full resolution of the unpadded image,
    padding for size divisibility added afterwards with zeros (the world origin), then nearest
    downsampling (the pixel at ``stride * i``).

    Args:
        depths: shape (B, V, Hp, Wp), metres, 0 = invalid: a tensor or a
            :class:`MultiViewDepths` (made float32 here, ``view_chunk`` views at a time, so the
            float depths of all views are never held at once).
        intrinsics: shape (B, V, 4, 4).
        cam2world: camera-to-world, shape (B, V, 4, 4).
        img_shapes: unpadded ``(H, W)`` of every sample.
        strides: output strides, highest resolution (res2) first, the order of the backbone
            levels and of :class:`MultiViewGeometry`.
        view_chunk: views unprojected at a time (memory bound; the result does not depend on
            it).

    Returns:
        list[Tensor]: one ``(B, V, Hp/s, Wp/s, 3)`` xyz map per stride.
    """
    b, v, hp, wp = depths.shape
    per_sample = []
    for i in range(b):
        h, w = img_shapes[i]
        chunks = []
        # a few views at a time: the full-resolution xyz map (and, for MultiViewDepths, the
        # float depth) is never held for all views
        for s in range(0, v, view_chunk):
            e = min(s + view_chunk, v)
            if isinstance(depths, MultiViewDepths):
                depth = depths.region(i, s, e, h, w)
            else:
                depth = depths[i, s:e, :h, :w]
            full = depth.new_zeros(e - s, hp, wp, 3)
            full[:, :h, :w] = unproject_depth(depth, intrinsics[i, s:e], cam2world[i, s:e])
            chunks.append(multiscale_xyz(full, strides=tuple(strides)))
        per_sample.append([torch.cat([c[j] for c in chunks]) for j in range(len(strides))])
    return [torch.stack([lv[j] for lv in per_sample]) for j in range(len(strides))]


def build_level_geometry(xyz: Tensor, voxel_size: float,
                         num_neighbors: Optional[int]) -> LevelGeometry:
    """Voxelise one level and (optionally) find the k nearest voxels.

    Args:
        xyz: shape (B, V, h, w, 3).
        voxel_size: edge length in metres.
        num_neighbors: k of the voxel k-NN graph, or None to skip it.

    Returns:
        LevelGeometry: the level's voxelisation.
    """
    b, v, h, w, _ = xyz.shape
    point_xyz = xyz.reshape(-1, 3)
    point_offsets = torch.arange(1, b + 1, device=xyz.device, dtype=torch.long) * (v * h * w)
    p2v, voxel_offsets, voxel_xyz = voxelize(point_xyz, point_offsets, voxel_size)
    knn_idx = None
    if num_neighbors:
        knn_idx, _ = neighbors.knn(voxel_xyz, voxel_xyz, num_neighbors, voxel_offsets,
                                   voxel_offsets)
    return LevelGeometry((b, v, h, w), point_xyz, point_offsets, p2v, voxel_xyz,
                         voxel_offsets.long(), knn_idx)


@dataclass
class MultiViewGeometry:
    """Geometry of all feature levels, indexed like the backbone outputs (res2..res5).

    Attributes:
        levels: one :class:`LevelGeometry` per level, res2 (stride 4) first.
        num_neighbors: k of the voxel k-NN graphs and of every IDW interpolation of the model
            (the detector's ``num_neighbors``, the one place it is configured).
    """

    levels: List[LevelGeometry]
    num_neighbors: int = 8

    def __getitem__(self, i: int) -> LevelGeometry:
        return self.levels[i]

    def idw(self, src_feats: Tensor, src: LevelGeometry, tgt_xyz: Tensor,
            tgt_offsets: Tensor) -> Tensor:
        """IDW-interpolate voxel features of level ``src`` onto target points (k nearest).

        Args:
            src_feats: ``(N_vox, C)`` features of the voxels of ``src``.
            src: the source level.
            tgt_xyz: ``(N_t, 3)`` target points of all scenes.
            tgt_offsets: ``(B,)`` cumulative target count per scene.

        Returns:
            ``(N_t, C)`` interpolated features.
        """
        return neighbors.idw(src_feats, src.voxel_xyz, src.voxel_offsets, tgt_xyz, tgt_offsets,
                             self.num_neighbors)


def build_multiview_geometry(multi_scale_xyz: Sequence[Tensor],
                             voxel_sizes: Sequence[float] = (0.02, 0.04, 0.08, 0.16),
                             num_neighbors: int = 8,
                             knn_levels: Sequence[int] = (1, 2, 3)) -> MultiViewGeometry:
    """Build the voxel geometry of every level.

    Args:
        multi_scale_xyz: xyz maps ordered res2..res5 (stride 4..32), each (B, V, h, w, 3).
        voxel_sizes: voxel edge per level, res2..res5.
        num_neighbors: k of the k-NN graph.
        knn_levels: levels that need the k-NN graph (those with 3D attention).

    Returns:
        MultiViewGeometry: one LevelGeometry per level.
    """
    levels = []
    for i, (xyz, size) in enumerate(zip(multi_scale_xyz, voxel_sizes)):
        levels.append(build_level_geometry(xyz, size, num_neighbors if i in knn_levels else None))
    return MultiViewGeometry(levels, num_neighbors)

