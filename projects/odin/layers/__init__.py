"""ODIN layers: the kNN cross-view attention block, the deformable and the masked attention.

The geometry functions moved to :mod:`projects.odin.structures`; they stay importable here. The
official-formulation reference block ``NaiveCrossViewAttention`` moved to
:mod:`projects.odin.parity.cross_view_reference` (a reference of the benchmarks and tests, not a
building block of the model); its old names here warn once.
"""
import importlib.util

from projects.odin import _mmcv_ops_error
from projects.odin.structures.geometry import (  # noqa: F401 (moved; kept importable here)
    idw_interpolate,
    multiscale_xyz,
    unproject_depth,
    voxelize,
)

from .cross_view_attention import (
    CrossViewAttention,
    KNNCrossAttentionLayer,
    RelativePositionMLP,
    convert_official_cross_view_state_dict,
)

# mmcv's compiled ops importable: the OpenMMLab stack works (mmdet3d imports mmcv); before mmcv is
# built the block and the geometry stay usable with torch alone (kernel checks, benchmarks)
_MMCV_OPS = importlib.util.find_spec('mmcv') is not None and _mmcv_ops_error() is None

if importlib.util.find_spec('mmdet3d') is not None and _MMCV_OPS:  # register into the stack
    from mmdet3d.registry import MODELS

    MODELS.register_module(module=CrossViewAttention, force=True)
if _MMCV_OPS:  # mmcv's deformable attention, our CPU kernel
    from .deform_attn_layer import (
        ODINMultiScaleDeformableAttention,
        use_mmcv_ms_deform_attn,
        use_odin_ms_deform_attn,
    )
    from .masked_attention import (
        ODINMaskedAttention,
        use_mmcv_masked_attn,
        use_odin_masked_attn,
    )

__all__ = [
    'CrossViewAttention', 'KNNCrossAttentionLayer', 'RelativePositionMLP',
    'convert_official_cross_view_state_dict', 'idw_interpolate', 'multiscale_xyz',
    'unproject_depth', 'voxelize'
]
if _MMCV_OPS:
    __all__ += ['ODINMultiScaleDeformableAttention', 'use_odin_ms_deform_attn',
                'use_mmcv_ms_deform_attn', 'ODINMaskedAttention', 'use_odin_masked_attn',
                'use_mmcv_masked_attn']


def __getattr__(name: str) -> object:
    """The names that moved out of this package, with a ``DeprecationWarning`` (once)."""
    if name == 'NaiveCrossViewAttention':
        from projects.odin.utils.deprecation import deprecated_attribute
        return deprecated_attribute(__name__, name, 'projects.odin.parity.cross_view_reference')
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
