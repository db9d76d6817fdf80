"""Checkpoint conversion: official ODIN / Mask2Former weights to this implementation.

A tool library, not part of the model: neither :mod:`projects.odin` nor
:mod:`projects.odin.models` imports it, so building a model never loads it. Its users are
``tools/model_converters/odin_to_mmdet3d.py``, the parity check (:mod:`projects.odin.parity`) and
the tests. The architectures come from the packaged configs (``configs/_base_/models``, see
:func:`base_model_cfg`).
"""
from .official import (
    BASE_MODEL_CONFIGS,
    DROPPED_PATTERNS,
    M2F_MISSING_PATTERNS,
    ConversionError,
    base_model_cfg,
    check_state_dict,
    convert_mask2former_state_dict,
    convert_official_state_dict,
    infer_architecture,
    load_mask2former_pkl,
    odin_model_cfg,
)

__all__ = [
    'BASE_MODEL_CONFIGS', 'DROPPED_PATTERNS', 'M2F_MISSING_PATTERNS', 'ConversionError',
    'base_model_cfg', 'check_state_dict',
    'convert_mask2former_state_dict', 'convert_official_state_dict', 'infer_architecture',
    'load_mask2former_pkl', 'odin_model_cfg'
]
