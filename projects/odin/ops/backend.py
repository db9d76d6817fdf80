"""Dispatch between the compiled ``_ext`` kernels and the pure-PyTorch twins.

Every op in :mod:`projects.odin.ops` has a pure-PyTorch twin. The compiled extension
(``projects/odin/ops/_ext*.so``, built by ``tools/build_ops.py``) is optional: when it is missing or
fails to load, the twins are used and a warning is emitted once. CUDA tensors use the CUDA kernels
only when the extension was compiled with CUDA (otherwise the twin runs on the GPU).

The backend can be forced to the twins for testing:

* ``set_backend('pytorch')`` / ``set_backend('auto')`` (process-wide),
* ``with use_backend('pytorch'): ...`` (temporarily),
* the environment variable ``ODIN_OPS_BACKEND=pytorch`` (read at import).

Guard: before an op's compiled kernel first runs on a CUDA device, it is checked against its twin
on a tiny problem (outputs and gradients, :mod:`.guard`); a kernel that raises or disagrees is
replaced by its twin with one warning (``ODIN_OPS_STRICT=1``: an error). Each op module registers
its check with :func:`register_self_check`; :func:`verify_kernels` runs them all on demand.
"""
import contextlib
import importlib
import os
import warnings
from typing import Dict, Iterator, Optional, Union

import torch

from .guard import KernelGuard, SelfCheck, check_context

_VALID_BACKENDS = ('auto', 'pytorch')
_backend = os.environ.get('ODIN_OPS_BACKEND', 'auto').strip().lower() or 'auto'
if _backend not in _VALID_BACKENDS:
    raise ValueError(f'ODIN_OPS_BACKEND must be one of {_VALID_BACKENDS}, got {_backend!r}')

_ext = None
_ext_error: Optional[str] = None
_ext_loaded = False
_warned = False
#: verdicts of the self-checks (CUDA by default); replace it to check other device types
kernel_guard = KernelGuard()
_SELF_CHECKS: Dict[str, SelfCheck] = {}


def _load_ext():
    """Import the compiled extension once; remember why it failed if it did."""
    global _ext, _ext_error, _ext_loaded
    if not _ext_loaded:
        _ext_loaded = True
        try:
            _ext = importlib.import_module('projects.odin.ops._ext')
        except Exception as exc:  # ImportError, or an ABI mismatch raised as OSError
            _ext = None
            _ext_error = f'{type(exc).__name__}: {exc}'
    return _ext


def ext_available() -> bool:
    """Whether the compiled extension could be imported."""
    return _load_ext() is not None


def ext_has_cuda() -> bool:
    """Whether the compiled extension contains the CUDA kernels."""
    ext = _load_ext()
    return ext is not None and bool(ext.with_cuda())


def ext_load_error() -> Optional[str]:
    """Why the extension could not be imported (``None`` if it was, or was never tried)."""
    _load_ext()
    return _ext_error


def get_backend() -> str:
    """The current backend name: ``'auto'`` or ``'pytorch'``."""
    return _backend


def set_backend(name: str) -> None:
    """Select ``'auto'`` (compiled kernels where available) or ``'pytorch'`` (twins only)."""
    global _backend
    name = name.strip().lower()
    if name not in _VALID_BACKENDS:
        raise ValueError(f'backend must be one of {_VALID_BACKENDS}, got {name!r}')
    _backend = name


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Context manager that temporarily selects a backend (see :func:`set_backend`)."""
    previous = _backend
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def register_self_check(op: str, check: SelfCheck) -> None:
    """Register the self-check of a compiled op (see :mod:`.guard`).

    Args:
        op: the name passed as ``get_ext(..., op=op)``.
        check: ``check(ext, device)`` runs a tiny problem through the kernel(s) of ``ext`` and
            through the twin(s) on ``device``; returns None if they agree, else the reason.
    """
    _SELF_CHECKS[op] = check


def verify_kernels(device: Union[str, torch.device] = 'cuda') -> Dict[str, str]:
    """Run every registered self-check on ``device`` now (diagnostics; nothing is remembered).

    Args:
        device: device to check the compiled kernels on. Defaults to ``'cuda'``.

    Returns:
        ``{op: 'ok' | 'failed: <reason>'}``, or ``{op: 'not compiled ...'}`` when the extension
        (or its CUDA part) is missing.
    """
    device = torch.device(device)
    ext = _load_ext()
    if ext is None or (device.type == 'cuda' and not ext.with_cuda()):
        why = _ext_error if ext is None else 'the extension was built without CUDA'
        return {op: f'not compiled ({why})' for op in _SELF_CHECKS}
    verdicts = {}
    for op in _SELF_CHECKS:
        reason = _run_self_check(op, ext, device)
        verdicts[op] = 'ok' if reason is None else f'failed: {reason}'
    return verdicts


def _run_self_check(op: str, ext, device: torch.device) -> Optional[str]:
    with check_context():
        return _SELF_CHECKS[op](ext, device)


def get_ext(*tensors: torch.Tensor, op: Optional[str] = None):
    """The compiled extension to use for these tensors, or ``None`` to use the PyTorch twin.

    Returns ``None`` when the backend is forced to ``'pytorch'``, when the extension is not built
    (warning once), when a tensor is on a CUDA device and the extension has no CUDA kernels, or
    when the kernels of ``op`` failed their self-check on this device type (:mod:`.guard`).

    Args:
        *tensors: the op's inputs (same device).
        op: name of the op whose registered self-check guards its kernels. Defaults to None
            (no guard).
    """
    global _warned
    if _backend == 'pytorch':
        return None
    ext = _load_ext()
    if ext is None:
        if not _warned:
            _warned = True
            warnings.warn(
                'projects.odin.ops: compiled extension not available '
                f'({_ext_error}); using the pure-PyTorch twins. Build it with '
                '`python tools/build_ops.py`.',
                stacklevel=3)
        return None
    if any(t.is_floating_point() and t.dtype not in (torch.float32, torch.float64)
           for t in tensors):
        return None  # the kernels are compiled for float32/float64 only
    devices = {t.device.type for t in tensors}
    if devices - {'cpu', 'cuda'}:
        return None
    if 'cuda' in devices and not ext.with_cuda():
        return None
    if op is not None and tensors:
        device = tensors[0].device
        if not kernel_guard.allows(op, device, lambda: _run_self_check(op, ext, device)):
            return None
    return ext
