"""Self-check of the compiled kernels against their PyTorch twins before first use on a device.

The CUDA kernels of :mod:`projects.odin.ops` are compiled on the user's machine and may be wrong
there (a kernel image for another GPU architecture, a compiler or driver bug, a kernel that was
never run on a GPU before). So the first time a compiled op is about to run on a guarded device
type (CUDA by default), it first runs a tiny fixed problem through the compiled kernel and through
its pure-PyTorch twin and compares the outputs and the gradients. If the kernel raises or
disagrees, ONE warning names the op and the reason, and that op uses its twin from then on (the
other ops are unaffected); with ``ODIN_OPS_STRICT=1`` a :class:`KernelSelfCheckError` is raised
instead. A kernel that passes is used without further checks.

The logic is independent of the kernels: :func:`self_check` compares two callables and
:class:`KernelGuard` remembers the verdict per op, so both can be tested on a CPU with a simulated
faulty kernel (``tests/test_ops/test_kernel_guard.py``). Torch alone is needed.
"""
import contextlib
import os
import warnings
from typing import Callable, Dict, Iterator, Optional, Sequence, Tuple

import torch
from torch import Tensor

#: environment variable: ``1`` makes a failed self-check raise instead of falling back to the twin
STRICT_ENV = 'ODIN_OPS_STRICT'
#: default tolerance of the self-check: ``max|kernel - twin| <= ATOL + RTOL * max|twin|``
RTOL = 1e-4
ATOL = 1e-6

#: ``check(ext, device) -> None (agree) or a reason``; registered per op by the op modules
SelfCheck = Callable[[object, torch.device], Optional[str]]


class KernelSelfCheckError(RuntimeError):
    """A compiled kernel failed its self-check and ``ODIN_OPS_STRICT=1`` forbids the fallback."""


def strict_mode() -> bool:
    """Whether ``ODIN_OPS_STRICT`` asks for an error instead of the fallback to the twin."""
    return os.environ.get(STRICT_ENV, '').strip().lower() in ('1', 'true', 'yes', 'on')


def compare_outputs(names: Sequence[str], got: Sequence[Tensor], expected: Sequence[Tensor],
                    rtol: float = RTOL, atol: float = ATOL) -> Optional[str]:
    """Compare the kernel's outputs with the twin's.

    Floating outputs agree when ``max|got - expected| <= atol + rtol * max|expected|`` (a
    norm-wise bound: the kernels sum in another order, and CUDA's atomics in any order); integer
    outputs must be equal.

    Args:
        names: one name per output, used in the reason.
        got: the kernel's outputs.
        expected: the twin's outputs.
        rtol: relative tolerance. Defaults to :data:`RTOL`.
        atol: absolute tolerance. Defaults to :data:`ATOL`.

    Returns:
        None if every output agrees, else the reason for the first one that does not.
    """
    if len(got) != len(expected):
        return f'returned {len(got)} outputs, expected {len(expected)}'
    for name, a, b in zip(names, got, expected):
        if not isinstance(a, Tensor):
            return f'{name}: returned {type(a).__name__}, expected a tensor'
        if a.shape != b.shape or a.dtype != b.dtype:
            return (f'{name}: shape/dtype {tuple(a.shape)}/{a.dtype}, expected '
                    f'{tuple(b.shape)}/{b.dtype}')
        a, b = a.detach().cpu(), b.detach().cpu()
        if not a.is_floating_point():
            if not torch.equal(a, b):
                rows = int((a != b).reshape(a.shape[0], -1).any(1).sum()) if a.dim() else 1
                return f'{name}: {rows} row(s) differ from the twin'
            continue
        if not bool(torch.isfinite(a).all()):
            return f'{name}: non-finite values'
        err = float((a.double() - b.double()).abs().max()) if a.numel() else 0.0
        scale = float(b.double().abs().max()) if b.numel() else 0.0
        if err > atol + rtol * scale:
            return f'{name}: max abs error {err:.3g} vs twin (max |twin| {scale:.3g})'
    return None


def self_check(kernel: Callable[[], Sequence[Tensor]], twin: Callable[[], Sequence[Tensor]],
               names: Sequence[str], rtol: float = RTOL, atol: float = ATOL) -> Optional[str]:
    """Run the same tiny problem through a kernel and its twin and compare the results.

    Both callables take no argument (the problem is bound in them) and return the outputs,
    gradients included, in the order of ``names``. Build the problem and call this inside
    :func:`check_context`.

    Args:
        kernel: runs the compiled kernel(s).
        twin: runs the PyTorch twin(s); an error here propagates (it is a bug in our code).
        names: output names for the reason.
        rtol: relative tolerance (see :func:`compare_outputs`).
        atol: absolute tolerance.

    Returns:
        None if they agree, else why not (the kernel's exception or the first mismatch).
    """
    try:
        got = tuple(kernel())
        for t in got:
            if isinstance(t, Tensor) and t.is_cuda:
                torch.cuda.synchronize(t.device)  # asynchronous launch errors surface here
    except Exception as exc:  # any failure of the kernel means: do not use it
        return f'the kernel raised {type(exc).__name__}: {str(exc).strip().splitlines()[0]}'
    expected = tuple(twin())
    return compare_outputs(names, got, expected, rtol=rtol, atol=atol)


@contextlib.contextmanager
def check_context() -> Iterator[None]:
    """The state a self-check runs in, whatever the caller's: no inference mode, no autocast.

    A check triggered inside ``torch.inference_mode()`` (whose tensors cannot enter autograd,
    which the twins of some backward kernels use) or ``torch.autocast`` (which would run the
    twins' matmuls in half precision) then compares the same float32 computation.
    """
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.inference_mode(False))
        stack.enter_context(torch.autocast('cpu', enabled=False))
        if torch.cuda.is_available():
            stack.enter_context(torch.autocast('cuda', enabled=False))
        yield


class KernelGuard:
    """Remembers, per op, whether its compiled kernel passed the self-check.

    Args:
        device_types: device types whose kernels are checked before first use. Defaults to
            ``('cuda',)``: the CPU kernels are covered by the test suite, the CUDA kernels are
            compiled on the user's machine.
    """

    def __init__(self, device_types: Tuple[str, ...] = ('cuda', )):
        self.device_types = tuple(device_types)
        self._verdicts: Dict[str, Optional[str]] = {}  # op -> None (passed) or the reason

    def allows(self, op: str, device: torch.device, check: Callable[[], Optional[str]]) -> bool:
        """Whether the compiled kernel of ``op`` may run on ``device``; checks it the first time.

        Args:
            op: op name (used in the warning and as the key of the verdict).
            device: device the op is about to run on.
            check: runs the self-check; returns None or the reason of the failure.

        Returns:
            True to use the kernel, False to use the twin.

        Raises:
            KernelSelfCheckError: the kernel failed and ``ODIN_OPS_STRICT=1``.
        """
        if torch.device(device).type not in self.device_types:
            return True
        if op not in self._verdicts:
            reason = check()
            self._verdicts[op] = reason
            if reason is not None and not strict_mode():
                warnings.warn(
                    f'projects.odin.ops: the compiled {op!r} kernel failed its self-check on '
                    f'{device} ({reason}); using its PyTorch twin for {op!r} from now on '
                    f'(slower, same results). Set {STRICT_ENV}=1 to make this an error.',
                    RuntimeWarning, stacklevel=4)
        reason = self._verdicts[op]
        if reason is not None and strict_mode():
            raise KernelSelfCheckError(
                f'projects.odin.ops: the compiled {op!r} kernel failed its self-check on '
                f'{device}: {reason} ({STRICT_ENV}=1 forbids the fallback to the PyTorch twin; '
                'rebuild the ops with `python tools/build_ops.py --force` or unset it)')
        return reason is None

    def verdicts(self) -> Dict[str, str]:
        """``{op: 'ok' or 'failed: <reason>'}`` for every op checked so far."""
        return {op: 'ok' if r is None else f'failed: {r}' for op, r in self._verdicts.items()}

    def reset(self) -> None:
        """Forget every verdict (the next use checks again)."""
        self._verdicts.clear()
