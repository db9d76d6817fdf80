import pytest
import torch

from projects.odin.ops import ext_available, knn_gather_dot, knn_gather_wsum, use_backend

BACKENDS = ['pytorch', pytest.param('auto', marks=pytest.mark.skipif(
    not ext_available(), reason='compiled extension not built (python tools/build_ops.py)'))]


def make_inputs(n, m, k, c, h, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, c, generator=g, dtype=dtype)
    table = torch.randn(m, c, generator=g, dtype=dtype)
    idx = torch.randint(0, m, (n, k), generator=g)
    if k > 1:
        idx[:, 0] = idx[:, 1]   # repeated neighbours must accumulate in backward
    attn = torch.softmax(torch.randn(n, h, k, generator=g, dtype=dtype), -1)
    return q, table, idx, attn


def dot_reference(q, key, idx, h):
    n, k = idx.shape
    qh = q.view(n, 1, h, -1)
    kh = key[idx].view(n, k, h, -1)
    return (qh * kh).sum(-1).transpose(1, 2)          # (n, h, k)


def wsum_reference(attn, value, idx):
    n, h, k = attn.shape
    vh = value[idx].view(n, k, h, -1)                 # (n, k, h, d)
    return (attn.transpose(1, 2)[..., None] * vh).sum(1).reshape(n, -1)


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('n,m,k,c,h', [(1, 1, 1, 4, 1), (37, 20, 8, 16, 4), (5000, 4000, 8, 64, 8)])
def test_gather_ops_match_reference(backend, n, m, k, c, h):
    q, table, idx, attn = make_inputs(n, m, k, c, h, seed=n)
    q.requires_grad_(True)
    table.requires_grad_(True)
    with use_backend(backend):
        dot = knn_gather_dot(q, table, idx, h)
        wsum = knn_gather_wsum(attn, table, idx)
        (dot.sin().sum() + wsum.cos().sum()).backward()
    grads = q.grad.clone(), table.grad.clone()
    q.grad = table.grad = None
    ref_dot = dot_reference(q, table, idx, h)
    ref_wsum = wsum_reference(attn, table, idx)
    (ref_dot.sin().sum() + ref_wsum.cos().sum()).backward()
    torch.testing.assert_close(dot, ref_dot, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(wsum, ref_wsum, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grads[0], q.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grads[1], table.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('backend', BACKENDS)
def test_gather_ops_gradcheck(backend):
    q, table, idx, attn = make_inputs(6, 5, 4, 6, 2, seed=1)
    q.requires_grad_(True)
    table.requires_grad_(True)
    attn.requires_grad_(True)
    with use_backend(backend):
        assert torch.autograd.gradcheck(lambda a, b: knn_gather_dot(a, b, idx, 2), (q, table))
        assert torch.autograd.gradcheck(lambda a, b: knn_gather_wsum(a, b, idx), (attn, table))


@pytest.mark.skipif(not ext_available(), reason='compiled extension not built')
def test_gather_ops_cpp_equals_twin_float32():
    q, table, idx, attn = make_inputs(3000, 2500, 8, 256, 8, seed=2, dtype=torch.float32)
    grad = torch.randn(3000, 8, 8)
    outs = []
    for backend in ('auto', 'pytorch'):
        with use_backend(backend):
            a = q.clone().requires_grad_(True)
            t = table.clone().requires_grad_(True)
            w = attn.clone().requires_grad_(True)
            dot = knn_gather_dot(a, t, idx, 8)
            ws = knn_gather_wsum(w, t, idx)
            ((dot * grad).sum() + ws.square().sum()).backward()
            outs.append((dot, ws, a.grad, t.grad, w.grad))
    for x, y in zip(*outs):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)


def test_gather_ops_reject_bad_input():
    q, table, idx, attn = make_inputs(4, 3, 2, 8, 2, seed=0)
    with pytest.raises(ValueError, match='int64'):
        knn_gather_dot(q, table, idx.int(), 2)
    with pytest.raises(ValueError, match='divisible'):
        knn_gather_dot(q, table, idx, 3)
    with pytest.raises(ValueError, match=r'\(N, H, k\)'):
        knn_gather_wsum(attn[:, :, :1], table, idx)
    bad = idx.clone()
    bad[0, 0] = 3
    with pytest.raises(ValueError, match=r'idx values must lie in \[0, 3\)'):
        knn_gather_dot(q, table, bad, 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
def test_gather_ops_cuda_match_cpu(monkeypatch):
    monkeypatch.setenv('ODIN_OPS_STRICT', '1')  # a failing kernel raises, not the twin's result
    q, table, idx, attn = make_inputs(500, 400, 8, 32, 4, seed=3)
    dot = knn_gather_dot(q.cuda(), table.cuda(), idx.cuda(), 4).cpu()
    wsum = knn_gather_wsum(attn.cuda(), table.cuda(), idx.cuda()).cpu()
    torch.testing.assert_close(dot, dot_reference(q, table, idx, 4))
    torch.testing.assert_close(wsum, wsum_reference(attn, table, idx))


def pe_inputs(n, k, c, h, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    t = [torch.randn(n, c, generator=g, dtype=dtype), torch.randn(h, c // h, c, generator=g,
                                                                   dtype=dtype),
         torch.randn(n, k, 3, generator=g, dtype=dtype) * 0.2,
         torch.randn(c, 3, generator=g, dtype=dtype), 0.1 * torch.randn(c, generator=g,
                                                                         dtype=dtype),
         1 + 0.1 * torch.randn(c, generator=g, dtype=dtype),
         0.1 * torch.randn(c, generator=g, dtype=dtype)]
    return t


def with_relu_margin(rel, w1, b1, lnw, lnb, redraw, margin=1e-4, tries=20):
    """``rel`` with every pair's PE pre-activations (``LN(fc1(rel))``, float64) at least
    ``margin`` from 0: pairs closer are redrawn with ``redraw(count)``. A stated tie margin: the
    ReLU's derivative jumps at 0, and float32 runs that round a pre-activation within ~1e-6 of 0
    differently (kernel vs twin, one CPU vs another) would differ by a whole term there."""
    c = w1.shape[0]
    for _ in range(tries):
        y = torch.nn.functional.layer_norm(rel.double() @ w1.double().t() + b1.double(), (c,),
                                           lnw.double(), lnb.double())
        bad = y.abs().amin(-1) < margin
        if not bad.any():
            return rel
        rel = rel.clone()
        rel[bad] = redraw(int(bad.sum())).to(rel)
    raise AssertionError(f'could not keep the PE pre-activations {margin} from 0')


def pe_reference(q, m, rel, w1, b1, lnw, lnb):
    n, c = q.shape
    h, d, _ = m.shape
    r = torch.einsum('nhd,hdc->nhc', q.view(n, h, d), m)
    hidden = torch.relu(torch.nn.functional.layer_norm(rel @ w1.t() + b1, (c,), lnw, lnb))
    return torch.einsum('nhc,nkc->nhk', r, hidden)


@pytest.mark.parametrize('backend', BACKENDS)
def test_pe_score_matches_reference_and_gradcheck(backend):
    from projects.odin.ops import knn_pe_score
    inputs = pe_inputs(2100, 3, 8, 2, seed=0)   # > one internal chunk of 2048 voxels
    leaves = [t.clone().requires_grad_(i != 2) for i, t in enumerate(inputs)]
    with use_backend(backend):
        out = knn_pe_score(*leaves)
        out.tanh().sum().backward()
    ref_leaves = [t.clone().requires_grad_(i != 2) for i, t in enumerate(inputs)]
    ref = pe_reference(*ref_leaves)
    ref.tanh().sum().backward()
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    for a, b in zip(leaves, ref_leaves):
        if b.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-9)
    small = [t[:5].clone() if i in (0, 2) else t.clone()
             for i, t in enumerate(pe_inputs(5, 3, 4, 2, seed=1))]
    small = [t.requires_grad_(i != 2) for i, t in enumerate(small)]
    with use_backend(backend):
        assert torch.autograd.gradcheck(lambda *a: knn_pe_score(a[0], a[1], small[2], *a[2:]),
                                        [small[i] for i in (0, 1, 3, 4, 5, 6)])


@pytest.mark.skipif(not ext_available(), reason='compiled extension not built')
def test_pe_score_cpp_equals_twin_float32():
    from projects.odin.ops import knn_pe_score
    inputs = pe_inputs(3000, 8, 64, 8, seed=2, dtype=torch.float32)
    g = torch.Generator().manual_seed(3)
    inputs[2] = with_relu_margin(inputs[2], *inputs[3:],
                                 redraw=lambda n: torch.randn(n, 3, generator=g) * 0.2)
    results = []
    for backend in ('auto', 'pytorch'):
        leaves = [t.clone().requires_grad_(i != 2) for i, t in enumerate(inputs)]
        with use_backend(backend):
            out = knn_pe_score(*leaves)
            out.square().sum().backward()
        results.append([out] + [t.grad for i, t in enumerate(leaves) if i != 2])
    for a, b in zip(*results):   # float32 rounding only: compare norm-wise
        assert ((a - b).norm() / b.norm()).item() < 1e-5



@pytest.mark.skipif(not ext_available(), reason='compiled extension not built')
@pytest.mark.parametrize('threads', [1, 2])
def test_pe_score_parameter_gradients_float32_precision(threads):
    """The PE-parameter gradients are sums of one term per (voxel, neighbour) pair. With nearly
    identical terms (every voxel sees nearly the same neighbourhood) a float32 running sum over a
    chunk's 2048 x 16 pairs drifts by 1e-6..1e-5 (the kernel's former per-thread float32
    accumulators: up to 1.2e-5 / 6e-6 with one / two threads); the kernel keeps them within
    5e-7 of float64. The twin goes through torch's own float32 reductions (linear and
    LayerNorm backward, as the official formulation does) and is only checked to be close."""
    from projects.odin.ops import knn_pe_score
    n, k, c, h = 2048, 16, 32, 4
    g = torch.Generator().manual_seed(5)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    base = torch.tensor([0.05, -0.03, 0.02], dtype=torch.float64)
    leaves64 = [randn(1, c) + 0.01 * randn(n, c), randn(h, c // h, c) / c, randn(c, 3),
                0.1 * randn(c), 1 + 0.1 * randn(c), 0.1 * randn(c)]
    rel = with_relu_margin(base + 1e-3 * randn(n, k, 3), *leaves64[2:],
                           redraw=lambda count: base + 1e-3 * randn(count, 3))
    rel = rel.float().double()  # exactly representable: the same problem in both dtypes
    names = ('q', 'm', 'fc1_weight', 'fc1_bias', 'norm_weight', 'norm_bias')
    n_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    grads = {}
    try:
        for backend, dtype in (('pytorch', torch.float64), ('auto', torch.float32),
                               ('pytorch', torch.float32)):
            leaves = [t.to(dtype).clone().requires_grad_(True) for t in leaves64]
            with use_backend(backend):
                out = knn_pe_score(leaves[0], leaves[1], rel.to(dtype), *leaves[2:])
                out.sum().backward()
            grads[backend, dtype] = [t.grad.double() for t in leaves]
    finally:
        torch.set_num_threads(n_threads)
    ref = grads['pytorch', torch.float64]

    def errors(key):
        return {name: ((a - b).norm() / b.norm()).item()
                for name, a, b in zip(names, grads[key], ref)}

    kernel, twin = errors(('auto', torch.float32)), errors(('pytorch', torch.float32))
    assert max(kernel.values()) < 5e-7, kernel
    assert max(twin.values()) < 1e-4, twin
