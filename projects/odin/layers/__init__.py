"""ODIN layers: 3D geometry and the kNN cross-view attention block (torch + projects.odin.ops)."""
import importlib.util

from .cross_view_attention import (
    CrossViewAttention,
    KNNCrossAttentionLayer,
    RelativePositionMLP,
    convert_official_cross_view_state_dict,
)
from .cross_view_reference import NaiveCrossViewAttention
from .geometry import idw_interpolate, multiscale_xyz, unproject_depth, voxelize

if importlib.util.find_spec('mmdet3d') is not None:  # register when the OpenMMLab stack exists
    from mmdet3d.registry import MODELS

    MODELS.register_module(module=CrossViewAttention, force=True)
    MODELS.register_module(module=NaiveCrossViewAttention, force=True)

__all__ = [
    'CrossViewAttention', 'KNNCrossAttentionLayer', 'RelativePositionMLP',
    'convert_official_cross_view_state_dict', 'NaiveCrossViewAttention', 'idw_interpolate',
    'multiscale_xyz', 'unproject_depth', 'voxelize'
]
