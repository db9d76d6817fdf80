"""ODIN for MMDetection3D.

Importing this package (configs do it through
``custom_imports=dict(imports=['projects.odin'], allow_failed_imports=False)``) registers every ODIN
component in mmdet3d's registries. The compiled-ops subpackage :mod:`projects.odin.ops` needs torch
alone, so that kernels can be built and benchmarked on a machine without the OpenMMLab stack; the
registrations below are therefore skipped when mmdet3d is not installed at all, and - with a
warning - when mmdet3d is installed but mmcv's compiled ops (``mmcv._ext``) cannot be imported
(mmcv not built yet, or built for another torch): mmdet's and mmdet3d's models need them, and the
ops must stay importable meanwhile (e.g. to build and check the kernels before mmcv is built).
:data:`STACK_IMPORT_ERROR` then says why, and :func:`require_stack` raises it.

Importing the package changes nothing in mmengine itself: checkpoints are read through the scoped
trusted loader of :mod:`projects.odin.utils.checkpoint` (``TrustedCheckpointHook`` for the Runner).
"""
import importlib
import importlib.util
import warnings
from typing import Optional

__version__ = '0.1.0'

#: why the registrations were skipped although mmdet3d is installed (None: they ran, or no mmdet3d)
STACK_IMPORT_ERROR: Optional[str] = None


def _mmcv_ops_error() -> Optional[str]:
    """None if mmcv's compiled ops import, else why not."""
    try:
        importlib.import_module('mmcv._ext')
    except ImportError as exc:  # missing mmcv, mmcv-lite, or a build for another torch
        return f'{type(exc).__name__}: {exc}'
    return None


def require_stack() -> None:
    """Raise ``ImportError`` if the registrations were skipped (see :data:`STACK_IMPORT_ERROR`)."""
    if STACK_IMPORT_ERROR is not None:
        raise ImportError('projects.odin: the ODIN components are not registered: mmcv\'s compiled '
                          f'ops cannot be imported ({STACK_IMPORT_ERROR}); build mmcv with its ops '
                          '(bash tools/setup_env.sh, or see README "Installation")')


if importlib.util.find_spec('mmdet3d') is not None:
    STACK_IMPORT_ERROR = _mmcv_ops_error()
    if STACK_IMPORT_ERROR is None:
        from .datasets import *  # noqa: F401,F403,E402
        from .engine import *  # noqa: F401,F403,E402
        from .evaluation import *  # noqa: F401,F403,E402
        from .models import *  # noqa: F401,F403,E402
    else:
        warnings.warn(
            'projects.odin: mmdet3d is installed but mmcv\'s compiled ops are not importable '
            f'({STACK_IMPORT_ERROR}); the ODIN components are NOT registered (projects.odin.ops '
            'works with torch alone). Build mmcv with its ops: bash tools/setup_env.sh',
            RuntimeWarning, stacklevel=2)
