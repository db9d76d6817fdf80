"""Multi-scale deformable attention: compiled CPU kernel vs its PyTorch twin (and mmcv's path)."""
import pytest
import torch

from projects.odin.ops import (
    ext_available,
    multi_scale_deform_attn,
    multi_scale_deform_attn_pytorch,
    use_backend,
    verify_kernels,
)
from projects.odin.ops.ms_deform_attn import ms_deform_attn_probe_problem

needs_ext = pytest.mark.skipif(not ext_available(),
                               reason='compiled extension not built (python tools/build_ops.py)')
BACKENDS = ['pytorch', pytest.param('auto', marks=needs_ext)]
INPUTS = ('value', 'sampling_locations', 'attention_weights')
# (levels (h, w), batch, queries, heads, head dims, points)
PROBLEMS = [
    (((3, 5), (2, 2), (1, 3)), 2, 6, 2, 4, 3),       # odd sizes, 3 levels
    (((1, 1), ), 1, 4, 1, 3, 1),                     # one 1x1 level, head size 3 (no unrolling)
    (((7, 2), (5, 9), (4, 4), (2, 1)), 3, 9, 4, 8, 2),  # 4 levels, unrolled head size 8
    (((6, 4), (3, 2)), 1, 11, 2, 32, 4),             # the model's head size 32
]

pytestmark = pytest.mark.usefixtures('one_thread')


def problem(levels, bs, nq, heads, dims, points, dtype, seed=0):
    return ms_deform_attn_probe_problem(dtype=dtype, levels=levels, bs=bs, num_queries=nq,
                                        heads=heads, head_dims=dims, points=points, seed=seed)


def run(fn, p):
    """Output and gradients of (value, sampling_locations, attention_weights)."""
    leaves = [p[k].clone().requires_grad_(True) for k in INPUTS]
    out = fn(leaves[0], leaves[1], leaves[2])
    grads = torch.autograd.grad(out, leaves, p['grad_output'])
    return [out.detach(), *grads]


def ours(p):
    return lambda v, loc, w: multi_scale_deform_attn(v, p['value_spatial_shapes'],
                                                     p['level_start_index'], loc, w)


def twin(p):
    return lambda v, loc, w: multi_scale_deform_attn_pytorch(v, p['value_spatial_shapes'], loc,
                                                             w)


def away_from_pixel_centres(p, margin=1e-3):
    """Move sampling locations whose pixel coordinate ``x * w - 0.5`` lies within ``margin``
    pixels of an integer (a pixel centre, where the bilinear weights' derivatives jump) by
    ``2 * margin`` pixels: a stated tie margin, so that float32 rounding of the coordinate (the
    twin's ``grid_sample`` rounds it, fused or not depending on the CPU) cannot pick the other
    side of a kink on any CPU."""
    loc = p['sampling_locations'].double()
    sizes = p['value_spatial_shapes'].flip(1).view(1, 1, 1, -1, 1, 2).double()   # (w, h)
    px = loc * sizes - 0.5
    near = (px - px.round()).abs() < margin
    p = dict(p)
    p['sampling_locations'] = torch.where(near, loc + 2 * margin / sizes, loc).to(
        p['sampling_locations'].dtype)
    return p


def assert_norm_close(got, expected, rtol, what):
    err = float((got.double() - expected.double()).norm())
    scale = float(expected.double().norm())
    assert err <= rtol * scale + 1e-30, f'{what}: |diff| {err:.3g} vs |ref| {scale:.3g}'


@needs_ext
@pytest.mark.parametrize('dtype,rtol', [(torch.float64, 1e-12), (torch.float32, 2e-6)])
@pytest.mark.parametrize('spec', PROBLEMS)
def test_kernel_matches_twin(spec, dtype, rtol):
    p = away_from_pixel_centres(problem(*spec, dtype=dtype, seed=len(spec[0])))
    # some samples fall partly or entirely outside their map
    loc = p['sampling_locations']
    assert bool(((loc < 0) | (loc > 1)).any())
    got = run(ours(p), p)
    expected = run(twin(p), p)
    for name, a, b in zip(('out', *(f'grad_{k}' for k in INPUTS)), got, expected):
        assert a.dtype == dtype and a.shape == b.shape, name
        assert_norm_close(a, b, rtol, name)
        # elementwise too: no single entry may be off
        torch.testing.assert_close(a, b, rtol=rtol * 10, atol=rtol * float(b.abs().max()) * 10)


@needs_ext
def test_kernel_is_used_on_cpu_and_twin_when_forced():
    p = problem(*PROBLEMS[0], dtype=torch.float64)
    v = p['value'].requires_grad_(True)
    out = multi_scale_deform_attn(v, p['value_spatial_shapes'], p['level_start_index'],
                                  p['sampling_locations'], p['attention_weights'])
    assert type(out.grad_fn).__name__ == 'MultiScaleDeformAttnCPUBackward'
    with use_backend('pytorch'):
        out2 = multi_scale_deform_attn(v, p['value_spatial_shapes'], p['level_start_index'],
                                       p['sampling_locations'], p['attention_weights'])
    assert 'MultiScaleDeformAttnCPU' not in type(out2.grad_fn).__name__
    torch.testing.assert_close(out, out2, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('backend', BACKENDS)
def test_gradcheck(backend):
    p = problem(((3, 2), (2, 3)), 2, 3, 2, 3, 2, dtype=torch.float64, seed=3)
    # keep locations away from pixel centres (kinks of the bilinear interpolation)
    loc = p['sampling_locations']
    for axis, dim in ((0, 1), (1, 0)):
        pix = loc[..., axis] * p['value_spatial_shapes'][:, dim].view(1, 1, 1, -1, 1) - 0.5
        assert float((pix - pix.round()).abs().min()) > 1e-4
    args = [p[k].clone().requires_grad_(True) for k in INPUTS]
    with use_backend(backend):
        assert torch.autograd.gradcheck(
            lambda v, loc, w: multi_scale_deform_attn(v, p['value_spatial_shapes'],
                                                      p['level_start_index'], loc, w),
            args, eps=1e-6, atol=1e-8)


@pytest.mark.parametrize('backend', BACKENDS)
def test_points_outside_the_maps_read_zeros(backend):
    p = problem(((3, 5), (2, 2)), 1, 5, 2, 4, 3, dtype=torch.float64)
    shapes = p['value_spatial_shapes'].double()
    loc = p['sampling_locations']
    loc[0, 0] = -0.7                       # query 0: everything left of / above the maps
    loc[0, 1, ..., 0] = 1 + 1.2 / shapes[:, 1].view(1, -1, 1)   # query 1: beyond the right edge
    # query 2: exactly half a pixel outside the left edge -> only the right pixel, weight 0.5
    loc[0, 2, ..., 0] = 0.0
    with use_backend(backend):
        out, g_v, g_loc, g_w = run(ours(p), p)
    assert torch.equal(out[0, :2], torch.zeros_like(out[0, :2]))
    assert torch.equal(g_loc[0, :2], torch.zeros_like(g_loc[0, :2]))
    assert torch.equal(g_w[0, :2], torch.zeros_like(g_w[0, :2]))
    assert float(out[0, 2].abs().max()) > 0 and float(out[0, 3:].abs().max()) > 0
    # the samples of query 2 read column 0 with weight 0.5 (x = 0 is pixel coordinate -0.5)
    ref = run(twin(p), p)
    torch.testing.assert_close(out, ref[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g_v, ref[1], rtol=1e-12, atol=1e-12)


def test_twin_matches_mmcv_pytorch_path():
    mmcv_msda = pytest.importorskip('mmcv.ops.multi_scale_deform_attn')
    p = problem(*PROBLEMS[2], dtype=torch.float64)
    got = run(twin(p), p)
    expected = run(lambda v, loc, w: mmcv_msda.multi_scale_deformable_attn_pytorch(
        v, p['value_spatial_shapes'], loc, w), p)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@needs_ext
def test_result_does_not_depend_on_the_thread_count():
    # large enough for the OpenMP regions to run in parallel
    p = problem(((16, 20), (8, 10), (4, 5)), 2, 300, 4, 32, 4, dtype=torch.float32)
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = run(ours(p), p)
        torch.set_num_threads(3)
        three = run(ours(p), p)
    finally:
        torch.set_num_threads(n)
    for a, b in zip(one, three):
        assert torch.equal(a, b)  # rows / (batch, head) pairs are owned by one thread


def test_locations_and_weights_are_cast_to_value_dtype():
    p = problem(*PROBLEMS[0], dtype=torch.float64)
    out = multi_scale_deform_attn(p['value'], p['value_spatial_shapes'], p['level_start_index'],
                                  p['sampling_locations'].float(),
                                  p['attention_weights'].float())
    assert out.dtype == torch.float64


@pytest.mark.parametrize('backend', BACKENDS)
def test_bad_input_is_rejected_with_a_clear_error(backend):
    p = problem(*PROBLEMS[0], dtype=torch.float32)
    args = dict(value=p['value'], value_spatial_shapes=p['value_spatial_shapes'],
                level_start_index=p['level_start_index'],
                sampling_locations=p['sampling_locations'],
                attention_weights=p['attention_weights'])
    cases = [
        (dict(value_spatial_shapes=torch.tensor([[3, 5], [2, 2], [1, 4]])), 'hold 23 keys'),
        (dict(level_start_index=torch.tensor([0, 15, 20])), 'does not match'),
        (dict(value_spatial_shapes=torch.tensor([[3, 5], [2, 2]])), '(3, 2)'),
        (dict(value_spatial_shapes=torch.tensor([[3., 5.], [2., 2.], [1., 3.]])), 'integer'),
        (dict(value_spatial_shapes=torch.tensor([[3, 5], [0, 2], [2, 3]])), 'at least 1x1'),
        (dict(attention_weights=p['attention_weights'][..., :2]), 'attention_weights must be'),
        (dict(sampling_locations=p['sampling_locations'][..., :1]), 'sampling_locations must'),
        (dict(sampling_locations=p['sampling_locations'][:1]), 'batch 1'),
        (dict(value=p['value'][0]), 'value must be'),
    ]
    with use_backend(backend):
        for change, message in cases:
            with pytest.raises(ValueError, match=message.replace('(', r'\(').replace(')', r'\)')):
                multi_scale_deform_attn(**{**args, **change})


@needs_ext
def test_compiled_kernel_checks_its_arguments():
    from projects.odin.ops import _ext
    p = problem(*PROBLEMS[0], dtype=torch.float32)
    with pytest.raises(RuntimeError, match='lies outside'):
        _ext.ms_deform_attn_forward(p['value'], p['value_spatial_shapes'],
                                    torch.tensor([0, 15, 25]), p['sampling_locations'],
                                    p['attention_weights'])
    with pytest.raises(RuntimeError, match='share a dtype'):
        _ext.ms_deform_attn_forward(p['value'].double(), p['value_spatial_shapes'],
                                    p['level_start_index'], p['sampling_locations'],
                                    p['attention_weights'])


@needs_ext
def test_self_check_passes_on_cpu():
    assert verify_kernels('cpu')['ms_deform_attn'] == 'ok'


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_cuda_dispatches_to_mmcv_and_matches_the_twin():
    pytest.importorskip('mmcv.ops.multi_scale_deform_attn')
    p = {k: v.cuda() for k, v in away_from_pixel_centres(
        problem(*PROBLEMS[3], dtype=torch.float32)).items()}
    got = run(ours(p), p)
    leaves = [p[k].clone().requires_grad_(True) for k in INPUTS]
    out = multi_scale_deform_attn(leaves[0], p['value_spatial_shapes'], p['level_start_index'],
                                  leaves[1], leaves[2])
    assert type(out.grad_fn).__name__ == 'MultiScaleDeformableAttnFunctionBackward'
    expected = run(twin(p), p)
    for a, b in zip(got, expected):
        assert_norm_close(a, b, 1e-5, 'cuda vs twin')


@needs_ext
def test_float32_locations_next_to_pixel_centres_land_on_their_exact_side():
    """The derivatives of the bilinear weights jump where a coordinate crosses a pixel centre.

    The kernel forms float32 pixel coordinates exactly (in double), so float32 locations within
    rounding of such a boundary give the gradients of the float64 computation on the same
    locations (a float32 ``grid_sample`` rounds the coordinate and may land on either side).
    """
    p = problem(((5, 7), (3, 6), (4, 1)), 1, 200, 2, 4, 4, dtype=torch.float32, seed=5)
    g = torch.Generator().manual_seed(6)
    loc = p['sampling_locations']
    sizes = p['value_spatial_shapes'].flip(1).view(1, 1, 1, -1, 1, 2).double()   # (w, h)
    centre = torch.randint(0, 8, loc.shape, generator=g).double()  # pixel index, some beyond
    near = (centre + 0.5) / sizes + (torch.rand(loc.shape, generator=g, dtype=torch.float64)
                                     - 0.5) * 6e-7
    p['sampling_locations'] = near.float()
    p64 = {k: v.double() if v.is_floating_point() else v for k, v in p.items()}
    got = run(ours(p), p)
    expected = run(twin(p64), p64)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-5 * float(b.abs().max()))
