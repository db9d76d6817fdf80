"""Size limits of the GPU kernels, reproduced on a CPU (projects/odin/ops/limits.py).

Two causes of the signal 11 seen on a GPU in the unchunked 250-frame forward are size effects
that a CPU can reproduce with a stand-in for mmcv's CUDA op (same assertion, same 32-bit limit):

* mmcv 2.1.0's deformable attention asserts ``batch % min(batch, im2col_step) == 0``: 60 views
  pass with the default ``im2col_step=64``, 250 views do not;
* it computes offsets in 32-bit ``int``; a large enough batch of views would overflow them.

Our wrapper calls mmcv on batch chunks that satisfy both; the result equals the whole-batch op.
Our own CUDA kernels refuse, before launch, problems beyond one launch's grid.
"""
import pytest
import torch

from projects.odin.ops import limits
from projects.odin.ops.limits import (
                                      INT32_MAX,
                                      OpSizeError,
                                      check_cuda_elements,
                                      mmcv_msda_batch_step,
                                      mmcv_msda_sizes,
)
from projects.odin.ops.ms_deform_attn import (
                                              mmcv_msda_chunked,
                                              ms_deform_attn_probe_problem,
                                              multi_scale_deform_attn_pytorch,
)

INPUTS = ('value', 'sampling_locations', 'attention_weights')


class FakeMmcvMSDA:
    """mmcv's ``MultiScaleDeformableAttnFunction`` contract on the twin, with its two limits.

    ``int_max`` stands in for 2^31 - 1 so that tiny tensors reach it; ``calls`` records the
    batch and ``im2col_step`` of every call.
    """

    def __init__(self, int_max: int):
        self.int_max = int_max
        self.calls = []

    def apply(self, value, shapes, start, loc, attn, im2col_step):
        batch, keys, heads, dims = value.shape
        _, nq, _, levels, points, _ = loc.shape
        self.calls.append((batch, im2col_step))
        step = min(batch, im2col_step)
        if batch % step:  # mmcv: AT_ASSERTM(batch % im2col_step_ == 0, ...)
            raise RuntimeError(f'batch({batch}) must divide im2col_step({step})')
        sizes = mmcv_msda_sizes(keys, heads, dims, nq, levels, points)
        if batch * max(sizes.values()) > self.int_max:
            raise OverflowError('int offsets of mmcv\'s kernel would wrap')
        return multi_scale_deform_attn_pytorch(value, shapes, loc, attn)


def _problem(bs):
    return ms_deform_attn_probe_problem(bs=bs, num_queries=5)


def test_mmcv_assertion_reproduced_for_250_views_but_not_60():
    fake = FakeMmcvMSDA(int_max=INT32_MAX)
    for bs, fails in ((60, False), (250, True)):
        p = _problem(bs)
        args = [p['value'], p['value_spatial_shapes'], p['level_start_index'],
                p['sampling_locations'], p['attention_weights'], 64]
        if fails:
            with pytest.raises(RuntimeError, match='must divide im2col_step'):
                fake.apply(*args)
        else:
            assert fake.apply(*args).shape == (bs, 5, 8)


@pytest.mark.parametrize('bs, int_max', [(250, INT32_MAX), (7, INT32_MAX), (13, 3 * 180),
                                         (64, 64 * 180)])
def test_chunked_mmcv_call_respects_both_limits_and_equals_the_whole_batch(bs, int_max):
    p = _problem(bs)
    per_view = max(mmcv_msda_sizes(22, 2, 4, 5, 3, 3).values())
    assert per_view == 180  # 5 queries x 2 heads x 3 levels x 3 points x 2
    fake = FakeMmcvMSDA(int_max)
    leaves = [p[k].clone().requires_grad_(True) for k in INPUTS]
    out = mmcv_msda_chunked(fake, leaves[0], p['value_spatial_shapes'], p['level_start_index'],
                            leaves[1], leaves[2], 64, int_max=int_max)
    grads = torch.autograd.grad(out, leaves, p['grad_output'])
    ref_leaves = [p[k].clone().requires_grad_(True) for k in INPUTS]
    ref = multi_scale_deform_attn_pytorch(ref_leaves[0], p['value_spatial_shapes'],
                                          ref_leaves[1], ref_leaves[2])
    ref_grads = torch.autograd.grad(ref, ref_leaves, p['grad_output'])
    torch.testing.assert_close(out, ref, rtol=0, atol=0)  # same arithmetic per batch element
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=0, atol=0)
    assert sum(b for b, _ in fake.calls) == bs
    assert all(b == step and b * per_view <= int_max for b, step in fake.calls)


def test_batch_step_arithmetic():
    # ODIN R50 at 240x320: encoder levels 30x40, 15x20, 8x10 (1580 keys), 8 heads x 32 dims,
    # 4 points; self-attention (queries = keys)
    step = mmcv_msda_batch_step(250, 1580, 8, 32, 1580, 3, 4, im2col_step=64)
    assert step == 64
    # the largest per-view count is value's 1580 x 8 x 32 = 404,480 (locations: 303,360); a
    # limit that it fills 5 times allows chunks of 5 views
    assert max(mmcv_msda_sizes(1580, 8, 32, 1580, 3, 4).values()) == 404480
    assert mmcv_msda_batch_step(250, 1580, 8, 32, 1580, 3, 4, 64, int_max=5 * 404480 + 7) == 5
    assert mmcv_msda_batch_step(3, 1580, 8, 32, 1580, 3, 4, 64) == 3
    with pytest.raises(OpSizeError, match='reduce the input resolution'):
        mmcv_msda_batch_step(1, 1580, 8, 32, 1580, 3, 4, 64, int_max=404479)
    with pytest.raises(OpSizeError, match='im2col_step'):
        mmcv_msda_batch_step(4, 10, 1, 1, 10, 1, 1, 0)


def test_cuda_launch_limit_names_the_bounded_path(monkeypatch):
    check_cuda_elements('knn', limits.CUDA_MAX_ELEMENTS, 'query points')  # at the limit: fine
    with pytest.raises(OpSizeError, match=r'model\.test_cfg\.view_chunk'):
        check_cuda_elements('knn', limits.CUDA_MAX_ELEMENTS + 1, 'query points')
    # the check reads the limit when called (a tiny limit reproduces it with tiny numbers)
    monkeypatch.setattr(limits, 'CUDA_MAX_ELEMENTS', 100)
    with pytest.raises(OpSizeError, match='N \\* k \\* C = 101'):
        check_cuda_elements('knn_gather', 101, 'N * k * C')
    assert issubclass(OpSizeError, ValueError)
