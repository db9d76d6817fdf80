"""Bad arguments are rejected before any kernel runs, by the compiled ops and by the twins alike.

The compiled bindings validate every argument in code shared by the CPU and the CUDA kernels
(``csrc/common/odin_checks.h``) before they dispatch by device, so a CPU-only and a CUDA-enabled
build raise the same ``RuntimeError`` (on a GPU machine a CUDA-enabled build once segfaulted on a
level outside the value rows). The public ops validate first in Python (``ValueError``, the same
whichever backend runs). Each case below goes through the compiled CPU kernel directly AND
through the public op with the twins forced; both must name the same problem.
"""
import re

import pytest
import torch

from projects.odin import ops
from projects.odin.ops import ext_available, use_backend
from projects.odin.ops.knn_attention import knn_gather_dot, knn_gather_wsum, knn_pe_score
from projects.odin.ops.ms_deform_attn import ms_deform_attn_probe_problem

needs_ext = pytest.mark.skipif(not ext_available(), reason='compiled extension not built')


def _knn_case(q_rows=10, s_rows=12, q_off=(6, 10), s_off=(9, 12), k=4, s_dtype=torch.float32):
    g = torch.Generator().manual_seed(3)
    q = torch.rand(q_rows, 3, generator=g)
    s = torch.rand(s_rows, 3, generator=g).to(s_dtype)
    qo, so = torch.tensor(q_off), torch.tensor(s_off)
    return (q, s, qo, so, k), (q, s, k, qo, so)


def _gather_case(n=7, m=5, k=3, c=8, idx_shift=0, idx_dtype=torch.int64, key_c=8):
    g = torch.Generator().manual_seed(4)
    q = torch.rand(n, c, generator=g)
    key = torch.rand(m, key_c, generator=g)
    idx = (torch.randint(0, m, (n, k), generator=g) + idx_shift).to(idx_dtype)
    idx[0, 0] = m - 1 + idx_shift  # the largest index is always present
    return q, key, idx


def _msda(**change):
    p = ms_deform_attn_probe_problem()
    p.update(change)
    return (p['value'], p['value_spatial_shapes'], p['level_start_index'],
            p['sampling_locations'], p['attention_weights'])


# (id, compiled call, public call, what both messages must contain (regex))
CASES = [
    ('knn last offset beyond the points',
     lambda: ops._ext.knn_forward(*_knn_case(q_off=(6, 11))[0]),
     lambda: ops.knn(*_knn_case(q_off=(6, 11))[1]),
     r'(?i)number of (query )?(and support )?points'),
    ('knn scene without support points',
     lambda: ops._ext.knn_forward(*_knn_case(s_off=(12, 12))[0]),
     lambda: ops.knn(*_knn_case(s_off=(12, 12))[1]),
     r'query points but no support point'),
    ('knn decreasing offsets',
     lambda: ops._ext.knn_forward(*_knn_case(q_off=(10, 6, 10), s_off=(9, 3, 12))[0]),
     lambda: ops.knn(*_knn_case(q_off=(10, 6, 10), s_off=(9, 3, 12))[1]),
     r'non-decreasing'),
    ('knn k = 0',
     lambda: ops._ext.knn_forward(*_knn_case(k=0)[0]),
     lambda: ops.knn(*_knn_case(k=0)[1]),
     r'k must be'),
    ('knn dtypes differ',
     lambda: ops._ext.knn_forward(*_knn_case(s_dtype=torch.float64)[0]),
     lambda: ops.knn(*_knn_case(s_dtype=torch.float64)[1]),
     r'(?i)dtype'),
    ('knn (M, 2) query',
     lambda: ops._ext.knn_forward(torch.rand(10, 2), torch.rand(12, 3), torch.tensor([10]),
                                  torch.tensor([12]), 4),
     lambda: ops.knn(torch.rand(10, 2), torch.rand(12, 3), 4, torch.tensor([10]),
                     torch.tensor([12])),
     r'\((M|N), 3\)'),
    ('gather_dot index out of range',
     lambda: ops._ext.knn_gather_dot_forward(*_gather_case(idx_shift=1), 2),
     lambda: knn_gather_dot(*_gather_case(idx_shift=1), 2),
     r'(?i)out of range|must lie in \[0, 5\)'),
    ('gather_dot negative index',
     lambda: ops._ext.knn_gather_dot_forward(*_gather_case(idx_shift=-5), 2),
     lambda: knn_gather_dot(*_gather_case(idx_shift=-5), 2),
     r'(?i)out of range|must lie in \[0, 5\)'),
    ('gather_dot heads do not divide the channels',
     lambda: ops._ext.knn_gather_dot_forward(*_gather_case(), 3),
     lambda: knn_gather_dot(*_gather_case(), 3),
     r'divi'),
    ('gather_dot zero heads',
     lambda: ops._ext.knn_gather_dot_forward(*_gather_case(), 0),
     lambda: knn_gather_dot(*_gather_case(), 0),
     r'num_heads'),
    ('gather_dot int32 indices',
     lambda: ops._ext.knn_gather_dot_forward(*_gather_case(idx_dtype=torch.int32), 2),
     lambda: knn_gather_dot(*_gather_case(idx_dtype=torch.int32), 2),
     r'int64'),
    ('gather_dot channels of q and key differ',
     lambda: ops._ext.knn_gather_dot_forward(*_gather_case(key_c=16), 2),
     lambda: knn_gather_dot(*_gather_case(key_c=16), 2),
     r'channels'),
    ('gather_wsum index out of range',
     lambda: ops._ext.knn_gather_wsum_forward(torch.rand(7, 2, 3), *_gather_case(idx_shift=1)[1:]),
     lambda: knn_gather_wsum(torch.rand(7, 2, 3), *_gather_case(idx_shift=1)[1:]),
     r'(?i)out of range|must lie in \[0, 5\)'),
    ('gather_wsum attn k differs from idx',
     lambda: ops._ext.knn_gather_wsum_forward(torch.rand(7, 2, 4), *_gather_case()[1:]),
     lambda: knn_gather_wsum(torch.rand(7, 2, 4), *_gather_case()[1:]),
     r'attn must be \(N, H, k\)'),
    ('pe_score rel not (N, k, 3)',
     lambda: ops._ext.knn_pe_score_forward(torch.rand(2, 7, 8), torch.rand(7, 3, 2),
                                           torch.rand(8, 3), torch.rand(8), torch.rand(8),
                                           torch.rand(8), 1e-5),
     lambda: knn_pe_score(torch.rand(7, 8), torch.rand(2, 4, 8), torch.rand(7, 3, 2),
                          torch.rand(8, 3), torch.rand(8), torch.rand(8), torch.rand(8)),
     r'rel must be'),
    ('pe_score parameters of the wrong size',
     lambda: ops._ext.knn_pe_score_forward(torch.rand(2, 7, 8), torch.rand(7, 3, 3),
                                           torch.rand(8, 3), torch.rand(9), torch.rand(8),
                                           torch.rand(8), 1e-5),
     lambda: knn_pe_score(torch.rand(7, 8), torch.rand(2, 4, 8), torch.rand(7, 3, 3),
                          torch.rand(8, 3), torch.rand(9), torch.rand(8), torch.rand(8)),
     r'PE parameters'),
    ('ms_deform_attn level outside the value rows',
     lambda: ops._ext.ms_deform_attn_forward(*_msda(level_start_index=torch.tensor([0, 15, 25]))),
     lambda: ops.multi_scale_deform_attn(*_msda(level_start_index=torch.tensor([0, 15, 25]))),
     r'lies outside|does not match the level maps'),
    ('ms_deform_attn level maps hold more keys than value',
     lambda: ops._ext.ms_deform_attn_forward(
         *_msda(value_spatial_shapes=torch.tensor([[3, 5], [2, 2], [2, 3]]))),
     lambda: ops.multi_scale_deform_attn(
         *_msda(value_spatial_shapes=torch.tensor([[3, 5], [2, 2], [2, 3]]))),
     r'lies outside|hold \d+ keys'),
    ('ms_deform_attn empty level map',
     lambda: ops._ext.ms_deform_attn_forward(
         *_msda(value_spatial_shapes=torch.tensor([[3, 5], [0, 2], [1, 3]]))),
     lambda: ops.multi_scale_deform_attn(
         *_msda(value_spatial_shapes=torch.tensor([[3, 5], [0, 2], [1, 3]]))),
     r'(?i)empty map|at least 1x1'),
    ('ms_deform_attn attention weights of the wrong shape',
     lambda: ops._ext.ms_deform_attn_forward(*_msda(attention_weights=torch.rand(2, 6, 2, 3, 2))),
     lambda: ops.multi_scale_deform_attn(*_msda(attention_weights=torch.rand(2, 6, 2, 3, 2))),
     r'attention_weights must be'),
]


@needs_ext
@pytest.mark.parametrize('compiled, public, pattern', [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_compiled_op_and_twin_reject_the_same_bad_argument(compiled, public, pattern):
    with pytest.raises(RuntimeError) as compiled_err:
        compiled()
    assert re.search(pattern, str(compiled_err.value)), str(compiled_err.value)
    with use_backend('pytorch'):
        with pytest.raises(ValueError) as twin_err:
            public()
    assert re.search(pattern, str(twin_err.value)), str(twin_err.value)
    # with the compiled backend the public op rejects it in Python, before the kernel
    with pytest.raises(ValueError) as auto_err:
        public()
    assert re.search(pattern, str(auto_err.value)), str(auto_err.value)


@needs_ext
def test_compiled_ops_reject_tensors_on_different_devices():
    # the 'meta' device stands in for a second device on a CPU-only machine: a kernel given a
    # pointer of another device would read memory that is not there
    q, s, qo, so, k = _knn_case()[0]
    with pytest.raises(RuntimeError, match='on one device'):
        ops._ext.knn_forward(q, s.to('meta'), qo, so, k)
    q, key, idx = _gather_case()
    with pytest.raises(RuntimeError, match='on one device'):
        ops._ext.knn_gather_dot_forward(q, key, idx.to('meta'), 2)
    value, shapes, start, loc, attn = _msda()
    with pytest.raises(RuntimeError, match='on one device'):
        ops._ext.ms_deform_attn_forward(value, shapes, start.to('meta'), loc, attn)


@needs_ext
def test_compiled_backward_ops_check_the_gradient_shape():
    q, key, idx = _gather_case()
    with pytest.raises(RuntimeError, match=r'grad must be \[7, 2, 3\]'):
        ops._ext.knn_gather_dot_backward(torch.rand(7, 2, 4), q, key, idx, 2)
    with pytest.raises(RuntimeError, match=r'grad must be \[7, 8\]'):
        ops._ext.knn_gather_wsum_backward(torch.rand(7, 9), torch.rand(7, 2, 3), key, idx)
    value, shapes, start, loc, attn = _msda()
    with pytest.raises(RuntimeError, match='grad must be'):
        ops._ext.ms_deform_attn_backward(value, shapes, start, loc, attn, torch.rand(2, 6, 7))


@needs_ext
def test_valid_arguments_still_pass_the_checks():
    # the checks must not reject what the kernels are made for (the tiny probe problems)
    q, s, qo, so, k = _knn_case()[0]
    idx, _ = ops._ext.knn_forward(q, s, qo, so, k)
    assert idx.shape == (10, 4) and int(idx[:6].max()) < 9 and int(idx[6:].min()) >= 9
    q, key, idx = _gather_case()
    assert ops._ext.knn_gather_dot_forward(q, key, idx, 2).shape == (7, 2, 3)
    assert ops._ext.ms_deform_attn_forward(*_msda()).shape == (2, 6, 8)
