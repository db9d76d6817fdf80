"""The self-check guard of the compiled kernels (projects/odin/ops/guard.py), tested on a CPU.

A fake extension stands in for the compiled one: it runs the PyTorch twins, optionally with one
kernel made faulty (wrong numbers or an exception), and counts its calls. A guard that checks CPU
tensors (the production guard checks CUDA only) then shows, through the public ops: one warning
naming the op, the twin used from then on, correct results, ``ODIN_OPS_STRICT=1`` raising, and a
good kernel passing and being used.
"""
import warnings
from collections import Counter

import pytest
import torch

from projects.odin import ops
from projects.odin.ops import backend
from projects.odin.ops import knn_attention as ka
from projects.odin.ops import ms_deform_attn as msda
from projects.odin.ops.guard import KernelGuard, KernelSelfCheckError, compare_outputs, self_check
from projects.odin.ops.knn import knn_probe_problem, knn_pytorch

pytestmark = pytest.mark.usefixtures('one_thread')


class FakeExt:
    """The compiled extension's interface on top of the twins; ``faults`` spoils kernels."""

    def __init__(self, faults=None):
        self.faults = dict(faults or {})  # kernel name -> 'wrong' | 'raise'
        self.calls = Counter()

    @staticmethod
    def with_cuda() -> bool:
        return False

    def _run(self, name, fn, *args):
        self.calls[name] += 1
        fault = self.faults.get(name)
        if fault == 'raise':
            raise RuntimeError('CUDA error: no kernel image is available for execution')
        out = fn(*args)
        if fault == 'wrong':
            def spoil(t):
                return t + 0.01 if t.is_floating_point() else t.flip(-1)

            out = spoil(out) if isinstance(out, torch.Tensor) else tuple(
                [spoil(out[0]), *out[1:]])
        return out

    def knn_forward(self, q, s, q_off, s_off, k):
        return self._run('knn_forward', knn_pytorch, q, s, k, q_off.cpu(), s_off.cpu())

    def knn_gather_dot_forward(self, *a):
        return self._run('knn_gather_dot_forward', ka.gather_dot_forward_pytorch, *a)

    def knn_gather_dot_backward(self, *a):
        return self._run('knn_gather_dot_backward', ka.gather_dot_backward_pytorch, *a)

    def knn_gather_wsum_forward(self, *a):
        return self._run('knn_gather_wsum_forward', ka.gather_wsum_forward_pytorch, *a)

    def knn_gather_wsum_backward(self, *a):
        return self._run('knn_gather_wsum_backward', ka.gather_wsum_backward_pytorch, *a)

    def knn_pe_score_forward(self, *a):
        return self._run('knn_pe_score_forward', ka.pe_score_forward_pytorch, *a)

    def knn_pe_score_backward(self, *a):
        return self._run('knn_pe_score_backward', ka.pe_score_backward_pytorch, *a)

    def ms_deform_attn_forward(self, value, shapes, start, loc, attn):
        return self._run('ms_deform_attn_forward', msda.multi_scale_deform_attn_pytorch, value,
                         shapes, loc, attn)

    def ms_deform_attn_backward(self, value, shapes, start, loc, attn, grad):
        def twin_backward():
            leaves = [t.detach().requires_grad_(True) for t in (value, loc, attn)]
            with torch.enable_grad():
                out = msda.multi_scale_deform_attn_pytorch(leaves[0], shapes, *leaves[1:])
                return torch.autograd.grad(out, leaves, grad)

        return self._run('ms_deform_attn_backward', twin_backward)


@pytest.fixture
def cpu_guard(monkeypatch):
    """Install a fake extension and a guard that checks CPU tensors; returns a setter."""
    monkeypatch.delenv('ODIN_OPS_STRICT', raising=False)
    monkeypatch.setattr(backend, '_backend', 'auto')
    monkeypatch.setattr(backend, '_ext_loaded', True)
    guard = KernelGuard(device_types=('cpu', ))
    monkeypatch.setattr(backend, 'kernel_guard', guard)

    def install(faults=None) -> FakeExt:
        ext = FakeExt(faults)
        monkeypatch.setattr(backend, '_ext', ext)
        return ext

    return install, guard


def guard_warnings(record, op):
    return [w for w in record if issubclass(w.category, RuntimeWarning)
            and f'compiled {op!r} kernel failed its self-check' in str(w.message)]


def gather_dot_case():
    g = torch.Generator().manual_seed(3)
    q = torch.randn(40, 16, generator=g, requires_grad=True)
    key = torch.randn(30, 16, generator=g, requires_grad=True)
    idx = torch.randint(0, 30, (40, 8), generator=g)
    return q, key, idx


def run_gather_dot(q, key, idx):
    out = ops.knn_gather_dot(q, key, idx, 4)
    gq, gk = torch.autograd.grad(out.sin().sum(), (q, key))
    return out.detach(), gq, gk


@pytest.mark.parametrize('fault', ['knn_gather_dot_forward', 'knn_gather_dot_backward'])
def test_faulty_kernel_warns_once_and_the_twin_is_used(cpu_guard, fault):
    install, guard = cpu_guard
    ext = install({fault: 'wrong'})
    q, key, idx = gather_dot_case()
    with ops.use_backend('pytorch'):
        expected = run_gather_dot(q, key, idx)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter('always')
        first = run_gather_dot(q, key, idx)
        calls_after_check = ext.calls.copy()
        second = run_gather_dot(q, key, idx)
    found = guard_warnings(record, 'knn_gather_dot')
    assert len(found) == 1
    # the reason names the output that disagreed
    wrong = 'out' if fault.endswith('forward') else 'grad_q'
    assert f'({wrong}: max abs error' in str(found[0].message)
    # the self-check ran the faulty pair once; the real calls never reached the kernel
    assert calls_after_check['knn_gather_dot_forward'] == 1
    assert ext.calls == calls_after_check
    for got in (first, second):
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert guard.verdicts()['knn_gather_dot'].startswith('failed: ')
    # the other ops keep their kernels: a good knn_gather_wsum is checked, passes and is used
    attn = torch.softmax(torch.randn(40, 4, 8), -1)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter('always')
        ops.knn_gather_wsum(attn, key.detach(), idx)
    assert not guard_warnings(record, 'knn_gather_wsum')
    assert guard.verdicts()['knn_gather_wsum'] == 'ok'
    assert ext.calls['knn_gather_wsum_forward'] == 2  # self-check + the real call


def test_kernel_that_raises_falls_back_with_the_reason(cpu_guard):
    install, guard = cpu_guard
    ext = install({'knn_forward': 'raise'})
    g = torch.Generator().manual_seed(0)
    pts = torch.rand(50, 3, generator=g)
    off = torch.tensor([20, 50])
    with ops.use_backend('pytorch'):
        ref_idx, ref_dist = ops.knn(pts, pts, 5, off, off)
    with pytest.warns(RuntimeWarning, match=r"'knn' kernel failed.*no kernel image") as record:
        idx, dist = ops.knn(pts, pts, 5, off, off)
    assert len(guard_warnings(record, 'knn')) == 1
    assert torch.equal(idx, ref_idx) and torch.equal(dist, ref_dist)
    idx, dist = ops.knn(pts, pts, 5, off, off)
    assert torch.equal(idx, ref_idx) and torch.equal(dist, ref_dist)
    assert ext.calls['knn_forward'] == 1  # only the self-check tried it
    assert 'RuntimeError' in guard.verdicts()['knn']


def test_faulty_pe_score_backward_is_caught_at_the_first_forward(cpu_guard):
    install, guard = cpu_guard
    ext = install({'knn_pe_score_backward': 'wrong'})
    g = torch.Generator().manual_seed(1)
    n, k, h, d = 30, 6, 2, 4
    c = h * d
    q = torch.randn(n, c, generator=g, requires_grad=True)
    m = torch.randn(h, d, c, generator=g, requires_grad=True)
    rel = torch.randn(n, k, 3, generator=g)
    params = [torch.randn(c, 3, generator=g)] + [torch.randn(c, generator=g) for _ in range(3)]
    params = [p.requires_grad_(True) for p in params]
    leaves = [q, m, *params]

    def run():
        out = ops.knn_pe_score(q, m, rel, *params)
        return (out.detach(), *torch.autograd.grad(out.square().sum(), leaves))

    with ops.use_backend('pytorch'):
        expected = run()
    with pytest.warns(RuntimeWarning, match=r"'knn_pe_score' kernel failed.*grad_r"):
        got = run()
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert ext.calls['knn_pe_score_backward'] == 1 and ext.calls['knn_pe_score_forward'] == 1


def test_strict_mode_raises_naming_the_op(cpu_guard, monkeypatch):
    install, guard = cpu_guard
    install({'knn_gather_wsum_forward': 'wrong'})
    monkeypatch.setenv('ODIN_OPS_STRICT', '1')
    attn = torch.softmax(torch.randn(10, 2, 3), -1)
    value = torch.randn(6, 8)
    idx = torch.randint(0, 6, (10, 3))
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # strict: an error, not a warning
        for _ in range(2):  # and on every later use as well, never a silent fallback
            with pytest.raises(KernelSelfCheckError, match=r"'knn_gather_wsum'.*ODIN_OPS_STRICT"):
                ops.knn_gather_wsum(attn, value, idx)


def test_good_kernels_pass_and_are_used(cpu_guard):
    install, guard = cpu_guard
    ext = install()
    q, key, idx = gather_dot_case()
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        for _ in range(3):
            run_gather_dot(q, key, idx)
    assert guard.verdicts() == {'knn_gather_dot': 'ok'}
    # one forward + backward in the self-check, then 3 of each for real
    assert ext.calls['knn_gather_dot_forward'] == 4
    assert ext.calls['knn_gather_dot_backward'] == 4


def test_unguarded_device_type_is_not_checked(monkeypatch):
    # the production guard checks CUDA only: CPU kernels run unchecked, as before
    monkeypatch.setattr(backend, '_backend', 'auto')
    monkeypatch.setattr(backend, '_ext_loaded', True)
    ext = FakeExt({'knn_gather_dot_forward': 'wrong'})
    monkeypatch.setattr(backend, '_ext', ext)
    monkeypatch.setattr(backend, 'kernel_guard', KernelGuard())
    q, key, idx = gather_dot_case()
    ops.knn_gather_dot(q.detach(), key.detach(), idx, 4)
    assert ext.calls['knn_gather_dot_forward'] == 1
    assert backend.kernel_guard.verdicts() == {}


def test_self_check_and_compare_outputs():
    a = torch.arange(6.0).view(2, 3)
    assert self_check(lambda: (a, ), lambda: (a.clone(), ), names=('x', )) is None
    assert 'x: max abs error' in self_check(lambda: (a + 1e-2, ), lambda: (a, ), names=('x', ))

    def boom():
        raise ValueError('bad launch\nsecond line')

    assert self_check(boom, lambda: (a, ), names=('x', )) == \
        'the kernel raised ValueError: bad launch'
    assert 'shape/dtype' in compare_outputs(['x'], [a[:1]], [a])
    assert 'non-finite' in compare_outputs(['x'], [a / 0], [a])
    ids = torch.tensor([[0, 1], [2, 3]])
    assert compare_outputs(['idx'], [ids], [ids.clone()]) is None
    assert compare_outputs(['idx'], [ids.flip(1)], [ids]) == 'idx: 2 row(s) differ from the twin'
    # float32 summation-order noise passes
    b = torch.randn(100, 64, generator=torch.Generator().manual_seed(0))
    assert compare_outputs(['b'], [b * (1 + 1e-7)], [b]) is None


def test_self_check_runs_inside_inference_mode_and_autocast(cpu_guard):
    install, guard = cpu_guard
    install()
    q, key, idx = gather_dot_case()
    pe_args = (torch.randn(5, 8), torch.randn(2, 4, 8), torch.randn(5, 3, 3), torch.randn(8, 3),
               *torch.randn(3, 8))
    with torch.inference_mode(), torch.autocast('cpu', dtype=torch.bfloat16):
        ops.knn_gather_dot(q.detach(), key.detach(), idx, 4)
        ops.knn_pe_score(*pe_args)
    assert guard.verdicts() == {'knn_gather_dot': 'ok', 'knn_pe_score': 'ok'}


def test_self_checks_leave_the_global_rng_alone(cpu_guard):
    install, _ = cpu_guard
    install()
    torch.manual_seed(0)
    state = torch.get_rng_state()
    verdicts = backend.verify_kernels('cpu')
    assert set(verdicts.values()) == {'ok'}
    assert torch.equal(torch.get_rng_state(), state)


def test_knn_probe_has_no_near_ties():
    # the self-check compares kNN indices exactly: the probe's k-th and (k+1)-th neighbours (and
    # all ranks in between) must be far apart, so every correct kernel on any device agrees
    query, support, k, q_off, s_off = knn_probe_problem()
    for (qs, qe), (ss, se) in zip([(0, 6), (6, 10)], [(0, 9), (9, 12)]):
        d = torch.cdist(query[qs:qe].double(), support[ss:se].double()).sort(1).values
        kk = min(k + 1, d.shape[1])
        gaps = (d[:, 1:kk] - d[:, :kk - 1]) / d[:, 1:kk]
        assert float(gaps.min()) > 1e-2


@pytest.mark.skipif(not ops.ext_available(), reason='compiled extension not built')
def test_real_cpu_kernels_pass_their_self_checks():
    assert backend.verify_kernels('cpu') == {
        'knn': 'ok', 'knn_gather_dot': 'ok', 'knn_gather_wsum': 'ok', 'knn_pe_score': 'ok',
        'ms_deform_attn': 'ok'}


def test_verify_kernels_reports_a_faulty_extension(monkeypatch):
    monkeypatch.setattr(backend, '_ext_loaded', True)
    monkeypatch.setattr(backend, '_ext', FakeExt({'knn_pe_score_forward': 'raise',
                                                  'ms_deform_attn_backward': 'wrong'}))
    verdicts = backend.verify_kernels('cpu')
    assert verdicts['knn_pe_score'].startswith('failed: the kernel raised RuntimeError')
    assert verdicts.pop('ms_deform_attn').startswith('failed: grad_value: max abs error')
    assert {v for op, v in verdicts.items() if op != 'knn_pe_score'} == {'ok'}
    assert set(backend.verify_kernels('cuda').values()) == {
        'not compiled (the extension was built without CUDA)'}


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
@pytest.mark.skipif(not ops.ext_has_cuda(), reason='the ops were built without CUDA kernels')
def test_real_cuda_kernels_pass_their_self_checks():
    # ms_deform_attn: on CUDA the op runs mmcv's kernel, which its check compares with the twin
    assert backend.verify_kernels('cuda') == {
        'knn': 'ok', 'knn_gather_dot': 'ok', 'knn_gather_wsum': 'ok', 'knn_pe_score': 'ok',
        'ms_deform_attn': 'ok'}
