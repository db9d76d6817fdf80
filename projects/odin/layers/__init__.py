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
if importlib.util.find_spec('mmcv') is not None:  # mmcv's deformable attention, our CPU kernel
    from .ms_deform_attn import (
        ODINMultiScaleDeformableAttention,
        use_mmcv_ms_deform_attn,
        use_odin_ms_deform_attn,
    )

__all__ = [
    'CrossViewAttention', 'KNNCrossAttentionLayer', 'RelativePositionMLP',
    'convert_official_cross_view_state_dict', 'NaiveCrossViewAttention', 'idw_interpolate',
    'multiscale_xyz', 'unproject_depth', 'voxelize'
]
if importlib.util.find_spec('mmcv') is not None:
    __all__ += ['ODINMultiScaleDeformableAttention', 'use_odin_ms_deform_attn',
                'use_mmcv_ms_deform_attn']
