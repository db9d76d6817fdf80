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
from .resources import find_resource, resolve_file
from .scripts import load_script

__all__ = [
    'trusted_checkpoint_loading', 'trusted_torch_load', 'read_checkpoint', 'check_checkpoint',
    'load_checked_checkpoint', 'CheckpointError', 'CheckpointReadError',
    'CheckpointMismatchError', 'load_script', 'find_resource', 'resolve_file'
]
