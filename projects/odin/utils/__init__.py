from .checkpoint import (
                         CheckpointError,
                         CheckpointMismatchError,
                         CheckpointReadError,
                         check_checkpoint,
                         load_checked_checkpoint,
                         read_checkpoint,
                         trusted_checkpoint_loading,
                         trusted_torch_load,
)
from .scripts import REPO_ROOT, load_script

__all__ = [
    'trusted_checkpoint_loading', 'trusted_torch_load', 'read_checkpoint', 'check_checkpoint',
    'load_checked_checkpoint', 'CheckpointError', 'CheckpointReadError',
    'CheckpointMismatchError', 'REPO_ROOT', 'load_script'
]
