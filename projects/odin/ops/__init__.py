"""ODIN ops: kNN, segment reductions, kNN-attention primitives, multi-scale deformable attention.

Imports with torch alone (no mmcv/mmdet/mmdet3d). Each op dispatches to the compiled extension
``projects.odin.ops._ext`` (C++/OpenMP on CPU, CUDA when compiled with it; built by
``tools/build_ops.py``) and falls back to its pure-PyTorch twin when the extension is missing.
``set_backend('pytorch')``, ``use_backend('pytorch')`` or ``ODIN_OPS_BACKEND=pytorch`` force the
twins. Before a compiled op first runs on a CUDA device, it is checked against its twin on a tiny
problem (outputs and gradients); a failing kernel is replaced by its twin with one warning
(``ODIN_OPS_STRICT=1``: an error), see :mod:`.guard` and ``docs/ops.md``.
"""
from .backend import (
                      ext_available,
                      ext_has_cuda,
                      ext_load_error,
                      get_backend,
                      set_backend,
                      use_backend,
                      verify_kernels,
)
from .guard import KernelGuard, KernelSelfCheckError
from .knn import PAD_DIST2, knn, knn_pytorch
from .knn_attention import knn_gather_dot, knn_gather_wsum, knn_pe_score
from .ms_deform_attn import multi_scale_deform_attn, multi_scale_deform_attn_pytorch
from .scatter import scatter_max, scatter_mean, scatter_min, scatter_sum
from .utils import scene_ranges

__all__ = [
    'knn', 'knn_pytorch', 'PAD_DIST2', 'knn_gather_dot', 'knn_gather_wsum', 'knn_pe_score',
    'multi_scale_deform_attn', 'multi_scale_deform_attn_pytorch',
    'scatter_sum',
    'scatter_mean', 'scatter_max', 'scatter_min', 'set_backend', 'get_backend', 'use_backend',
    'ext_available', 'ext_has_cuda', 'ext_load_error', 'scene_ranges', 'verify_kernels',
    'KernelGuard', 'KernelSelfCheckError'
]
