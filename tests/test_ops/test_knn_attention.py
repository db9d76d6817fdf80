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
def test_gather_ops_cuda_match_cpu():
    q, table, idx, attn = make_inputs(500, 400, 8, 32, 4, seed=3)
    dot = knn_gather_dot(q.cuda(), table.cuda(), idx.cuda(), 4).cpu()
    wsum = knn_gather_wsum(attn.cuda(), table.cuda(), idx.cuda()).cpu()
    torch.testing.assert_close(dot, dot_reference(q, table, idx, 4))
    torch.testing.assert_close(wsum, wsum_reference(attn, table, idx))
