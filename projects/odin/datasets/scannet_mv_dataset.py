"""Deprecated alias of :mod:`projects.odin.datasets.multiview_datasets`.

The module holds the ScanNet, ScanNet200, S3DIS, Matterport3D and AI2THOR datasets and was renamed
accordingly; importing this path warns once.
"""
from projects.odin.utils.deprecation import alias_module

__deprecated_alias__ = True
alias_module(__name__, 'projects.odin.datasets.multiview_datasets')
