import pytest
import torch

from projects.odin.ops import scatter_max, scatter_mean, scatter_min, scatter_sum


def loop_reference(src, index, dim_size, reduce):
    out = torch.zeros((dim_size, *src.shape[1:]), dtype=torch.float64)
    for s in range(dim_size):
        rows = src[index == s].double()
        if rows.shape[0]:
            out[s] = {'sum': rows.sum(0), 'mean': rows.mean(0), 'max': rows.amax(0),
                      'min': rows.amin(0)}[reduce]
    return out


@pytest.mark.parametrize('fn,reduce', [(scatter_sum, 'sum'), (scatter_mean, 'mean'),
                                       (scatter_max, 'max'), (scatter_min, 'min')])
@pytest.mark.parametrize('n,dim_size,shape', [(1, 1, ()), (500, 37, (4,)), (2000, 300, (3, 2))])
def test_scatter_matches_loop_reference(fn, reduce, n, dim_size, shape):
    g = torch.Generator().manual_seed(n + dim_size)
    src = torch.randn(n, *shape, generator=g, dtype=torch.float64)
    index = torch.randint(0, dim_size, (n,), generator=g)
    index[index == dim_size // 2] = 0   # guarantee an empty segment when dim_size > 1
    out = fn(src, index, dim_size)
    assert out.shape == (dim_size, *shape) and out.dtype == src.dtype
    torch.testing.assert_close(out, loop_reference(src, index, dim_size, reduce))


def test_scatter_gradients():
    src = torch.randn(40, 3, dtype=torch.float64, requires_grad=True)
    index = torch.arange(40) % 7
    for fn in (scatter_sum, scatter_mean, scatter_max, scatter_min):
        assert torch.autograd.gradcheck(lambda s, fn=fn: fn(s, index, 9), (src,))


def test_scatter_rejects_bad_index():
    src = torch.randn(5, 2)
    with pytest.raises(ValueError, match=r'in \[0, 3\)'):
        scatter_mean(src, torch.tensor([0, 1, 2, 3, 0]), 3)
    with pytest.raises(ValueError, match='shape'):
        scatter_sum(src, torch.tensor([0, 1]), 3)
    with pytest.raises(ValueError, match='integer'):
        scatter_sum(src, torch.zeros(5), 3)
