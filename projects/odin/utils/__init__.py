from .checkpoint import (
                         CheckpointError,
                         CheckpointMismatchError,
                         CheckpointReadError,
                         check_checkpoint,
                         load_checked_checkpoint,
                         read_checkpoint,
                         register_trusted_local_loader,
                         trusted_torch_load,
)
from .scripts import REPO_ROOT, load_script

__all__ = [
    'register_trusted_local_loader', 'trusted_torch_load', 'read_checkpoint', 'check_checkpoint',
    'load_checked_checkpoint', 'CheckpointError', 'CheckpointReadError',
    'CheckpointMismatchError', 'REPO_ROOT', 'load_script'
]
