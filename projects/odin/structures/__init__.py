"""Geometry of posed RGB-D views shared by the data pipeline and the model (torch only).

:mod:`.geometry` holds the pure functions: depth unprojection, multi-scale xyz, voxelisation and
inverse-distance-weighted interpolation. The data side (transforms, recording readers, synthetic
world) and the model side (:mod:`projects.odin.models.multiview`, which builds the per-level
voxel geometry of a forward pass on top of them through the model's k-NN entry point) both use
them, as mmdet3d keeps its point and box structures in ``mmdet3d.structures``.
:mod:`.multiview_images` holds a 3D batch's images as loaded, normalised per view chunk by the
model; :mod:`.multiview_depths` its depth maps as given, made float32 per view chunk where the
model unprojects them.
"""
from .geometry import (
    idw_from_neighbors,
    idw_interpolate,
    multiscale_xyz,
    unproject_depth,
    voxelize,
)
from .multiview_depths import MultiViewDepths
from .multiview_images import MultiViewImages

__all__ = ['MultiViewDepths', 'MultiViewImages', 'idw_from_neighbors', 'idw_interpolate',
           'multiscale_xyz', 'unproject_depth', 'voxelize']
