from .checkpoint import register_trusted_local_loader, trusted_torch_load
from .scripts import REPO_ROOT, load_script

__all__ = ['register_trusted_local_loader', 'trusted_torch_load', 'REPO_ROOT', 'load_script']
