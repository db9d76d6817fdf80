from .checkpoint import register_trusted_local_loader, trusted_torch_load

__all__ = ['register_trusted_local_loader', 'trusted_torch_load']
