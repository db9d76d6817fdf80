"""Checkpoint loading for torch >= 2.6 with mmengine 0.10.7.

torch 2.6 changed ``torch.load``'s default to ``weights_only=True``. mmengine 0.10.7 pickles
objects such as ``HistoryBuffer`` and ``ConfigDict`` into every checkpoint it saves, and its loaders
call ``torch.load`` without ``weights_only``, so ``load_checkpoint``, ``Runner(load_from=...)`` and
``resume=True`` all fail with ``UnpicklingError: Weights only load failed``. Adding safe globals is
not enough (the pickles also reference ``getattr``).

Trust assumption: a checkpoint file is a pickle, and unpickling runs code. The loader registered
here unpickles **local files only** with ``weights_only=False``, exactly as torch < 2.6 and
mmengine always did. Only load checkpoints you made or obtained from a source you trust (e.g. the
official ODIN release converted by ``tools/model_converters/odin_to_mmdet3d.py``). Remote
(``http(s)://``) checkpoints keep torch's safe default.
"""
import os
from typing import Any, Callable

import torch

_REGISTERED = False


def trusted_torch_load(filename: str | os.PathLike,
                       map_location: str | Callable | torch.device | None = None) -> Any:
    """Load a trusted local checkpoint with full unpickling.

    Args:
        filename: path of a checkpoint written by ``torch.save``.
        map_location: as in :func:`torch.load`. Defaults to None.

    Returns:
        The unpickled object (usually a dict with ``state_dict``, ``meta``, ``optimizer``...).

    Raises:
        FileNotFoundError: if ``filename`` is not an existing file.
    """
    filename = os.path.expanduser(os.fspath(filename))
    if not os.path.isfile(filename):
        raise FileNotFoundError(f'checkpoint file not found: {filename}')
    return torch.load(filename, map_location=map_location, weights_only=False)


def register_trusted_local_loader() -> None:
    """Replace mmengine's local-file checkpoint loader by :func:`trusted_torch_load`.

    Idempotent. Affects every mmengine code path that reads a local checkpoint
    (``load_checkpoint``, ``Runner.load_checkpoint``, ``load_from``, ``resume``).
    """
    global _REGISTERED
    if _REGISTERED:
        return
    from mmengine.runner.checkpoint import CheckpointLoader

    def _load_local(filename: str, map_location: Any = None) -> Any:
        return trusted_torch_load(filename, map_location=map_location)

    CheckpointLoader.register_scheme(prefixes='', loader=_load_local, force=True)
    _REGISTERED = True
