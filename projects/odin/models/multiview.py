"""Deprecated alias of :mod:`projects.odin.structures.multiview_geometry`.

The per-level voxel geometry of a forward pass (``LevelGeometry``, ``MultiViewGeometry``,
``build_multiview_geometry``, ...) is a data structure, not a model: it moved next to the pure
geometry functions in :mod:`projects.odin.structures`; importing this path warns once.
"""
from projects.odin.utils.deprecation import alias_module

__deprecated_alias__ = True
alias_module(__name__, 'projects.odin.structures.multiview_geometry')
