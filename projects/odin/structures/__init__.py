"""Geometry of posed RGB-D views shared by the data pipeline and the model (torch only).

* :mod:`.geometry` holds the pure functions: depth unprojection, multi-scale xyz, voxelisation
  and inverse-distance-weighted interpolation; the data side (transforms, recording readers,
  synthetic world) and the model both use them.
* :mod:`.multiview_geometry` holds the voxel geometry of one forward pass of the model
  (:class:`LevelGeometry` per feature level: pixel xyz, voxels, k-NN graph;
  :class:`MultiViewGeometry` of all levels; :class:`VoxelSum` for pooling view chunks), built on
  those functions.
* :mod:`.neighbors` is the model's k-NN and IDW entry point (``neighbors.knn``, which tools
  substitute from outside).
* :mod:`.multiview_images` holds a 3D batch's images as loaded, normalised per view chunk by the
  model; :mod:`.multiview_depths` its depth maps as given, made float32 per view chunk where the
  model unprojects them.

As mmdet3d keeps its point and box structures in ``mmdet3d.structures``, these are data
structures, not layers: they hold no parameters.
"""
from .geometry import (
    idw_from_neighbors,
    idw_interpolate,
    multiscale_xyz,
    unproject_depth,
    voxelize,
)
from .multiview_depths import MultiViewDepths
from .multiview_geometry import (
    LevelGeometry,
    MultiViewGeometry,
    VoxelSum,
    build_level_geometry,
    build_multiview_geometry,
    compute_multiscale_xyz,
)
from .multiview_images import MultiViewImages

__all__ = ['MultiViewDepths', 'MultiViewImages', 'idw_from_neighbors', 'idw_interpolate',
           'multiscale_xyz', 'unproject_depth', 'voxelize', 'LevelGeometry', 'MultiViewGeometry',
           'VoxelSum', 'build_level_geometry', 'build_multiview_geometry', 'compute_multiscale_xyz']
