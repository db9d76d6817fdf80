"""ODIN for MMDetection3D.

Importing this package (configs do it through
``custom_imports=dict(imports=['projects.odin'], allow_failed_imports=False)``) registers every ODIN
component in mmdet3d's registries. The compiled-ops subpackage :mod:`projects.odin.ops` needs torch
alone, so that kernels can be built and benchmarked on a machine without the OpenMMLab stack; the
registrations below are therefore skipped when mmdet3d is not installed at all.

Importing the package changes nothing in mmengine itself: checkpoints are read through the scoped
trusted loader of :mod:`projects.odin.utils.checkpoint` (``TrustedCheckpointHook`` for the Runner).
"""
import importlib.util

__version__ = '0.1.0'

if importlib.util.find_spec('mmdet3d') is not None:
    from .datasets import *  # noqa: F401,F403,E402
    from .engine import *  # noqa: F401,F403,E402
    from .evaluation import *  # noqa: F401,F403,E402
    from .models import *  # noqa: F401,F403,E402
