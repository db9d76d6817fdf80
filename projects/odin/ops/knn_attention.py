"""Neighbourhood attention primitives for the kNN cross-view attention.

For ``N`` query voxels with ``k`` neighbour indices each (``idx``, global rows of a per-voxel
table) and ``H`` heads splitting ``C`` channels into ``H`` groups of ``C/H``:

* :func:`knn_gather_dot` ``(q (N,C), key (M,C), idx (N,k)) -> (N,H,k)``:
  ``out[n,h,j] = <q[n, head h], key[idx[n,j], head h]>`` - attention scores against keys that were
  projected ONCE per voxel (the official layer projects every gathered neighbour again per query).
* :func:`knn_gather_wsum` ``(attn (N,H,k), value (M,C), idx (N,k)) -> (N,C)``:
  ``out[n, head h] = sum_j attn[n,h,j] * value[idx[n,j], head h]``.

Both are ``torch.autograd.Function`` s that never materialise the ``(N, k, C)`` gathered tensor
(the compiled kernels loop over the neighbours; the twin gathers chunk by chunk) and save only
their inputs for backward, which is what keeps the block's memory low.
"""
import functools
from typing import Callable, Dict, Optional, Tuple

import torch
from torch import Tensor
from torch.autograd import Function
from torch.autograd.function import once_differentiable

from .backend import get_ext, register_self_check
from .guard import self_check
from .limits import check_cuda_elements

_TWIN_CHUNK = 4096  # query rows per chunk in the PyTorch twins (bounds the gathered temporaries)


def _check(name_a: str, a: Tensor, table: Tensor, idx: Tensor, num_heads: int) -> None:
    if table.dim() != 2:
        raise ValueError(f'the per-voxel table must be (M, C), got {tuple(table.shape)}')
    if idx.dim() != 2 or idx.shape[0] != a.shape[0]:
        raise ValueError(f'idx must be (N, k) with N = {a.shape[0]} rows of {name_a}, '
                         f'got {tuple(idx.shape)}')
    if idx.dtype != torch.int64:
        raise ValueError(f'idx must be int64, got {idx.dtype}')
    if int(num_heads) != num_heads or num_heads < 1:
        raise ValueError(f'num_heads must be a positive integer, got {num_heads}')
    if table.shape[1] % num_heads:
        raise ValueError(f'channels {table.shape[1]} not divisible by num_heads {num_heads}')
    if a.dtype != table.dtype or a.device != table.device or idx.device != a.device:
        raise ValueError('inputs must share dtype and device')
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= table.shape[0]):
        raise ValueError(f'idx values must lie in [0, {table.shape[0]}), got '
                         f'[{int(idx.min())}, {int(idx.max())}]')
    if a.is_cuda:
        check_cuda_elements('knn_gather', idx.numel() * table.shape[1], 'N * k * C')


_LOW_PRECISION = (torch.float16, torch.bfloat16)


def full_precision_under_amp(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """Run an attention op in float32 when AMP is on (the kernels take float32 and float64).

    Under autocast the block's projections arrive in half precision while its softmax weights
    stay float32: half-precision tensor arguments are cast to float32 and the op runs with
    autocast off (its twins too), so its output is float32. Without AMP and without
    half-precision arguments the op is called unchanged (mixed float32/float64 still fails the
    dtype check).
    """
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        tensors = [a for a in args if isinstance(a, Tensor)]
        device = tensors[0].device.type
        low = any(t.dtype in _LOW_PRECISION for t in tensors)
        if not low and not torch.is_autocast_enabled(device):
            return fn(*args, **kwargs)
        args = tuple(a.float() if isinstance(a, Tensor) and a.dtype in _LOW_PRECISION else a
                     for a in args)
        with torch.autocast(device_type=device, enabled=False):
            return fn(*args, **kwargs)
    return wrapper


# ----------------------------------------------------------------------------- PyTorch twins
def gather_dot_forward_pytorch(q: Tensor, key: Tensor, idx: Tensor, num_heads: int) -> Tensor:
    """Twin of the compiled ``knn_gather_dot_forward``: ``(N, H, k)`` scores."""
    n, k = idx.shape
    c = q.shape[1]
    out = q.new_empty((n, num_heads, k))
    for s in range(0, n, _TWIN_CHUNK):
        e = min(n, s + _TWIN_CHUNK)
        qh = q[s:e].view(e - s, num_heads, 1, c // num_heads)
        kh = key[idx[s:e]].view(e - s, k, num_heads, c // num_heads).transpose(1, 2)
        out[s:e] = torch.matmul(qh, kh.transpose(-1, -2)).squeeze(2)
    return out


def gather_dot_backward_pytorch(grad: Tensor, q: Tensor, key: Tensor, idx: Tensor,
                                num_heads: int) -> Tuple[Tensor, Tensor]:
    """Twin of ``knn_gather_dot_backward``: ``(grad_q (N,C), grad_key (M,C))``."""
    n, k = idx.shape
    c = q.shape[1]
    d = c // num_heads
    grad_q = torch.empty_like(q)
    grad_key = torch.zeros_like(key)
    for s in range(0, n, _TWIN_CHUNK):
        e = min(n, s + _TWIN_CHUNK)
        g = grad[s:e].unsqueeze(2)                                      # (n, H, 1, k)
        kh = key[idx[s:e]].view(e - s, k, num_heads, d).transpose(1, 2)  # (n, H, k, d)
        grad_q[s:e] = torch.matmul(g, kh).reshape(e - s, c)
        qh = q[s:e].view(e - s, num_heads, 1, d)
        contrib = torch.matmul(g.transpose(-1, -2), qh)                 # (n, H, k, d)
        grad_key.index_add_(0, idx[s:e].reshape(-1),
                            contrib.transpose(1, 2).reshape(-1, c))
    return grad_q, grad_key


def gather_wsum_forward_pytorch(attn: Tensor, value: Tensor, idx: Tensor) -> Tensor:
    """Twin of ``knn_gather_wsum_forward``: ``(N, C)``."""
    n, num_heads, k = attn.shape
    c = value.shape[1]
    out = value.new_empty((n, c))
    for s in range(0, n, _TWIN_CHUNK):
        e = min(n, s + _TWIN_CHUNK)
        vh = value[idx[s:e]].view(e - s, k, num_heads, c // num_heads).transpose(1, 2)
        out[s:e] = torch.matmul(attn[s:e].unsqueeze(2), vh).reshape(e - s, c)
    return out


def gather_wsum_backward_pytorch(grad: Tensor, attn: Tensor, value: Tensor,
                                 idx: Tensor) -> Tuple[Tensor, Tensor]:
    """Twin of ``knn_gather_wsum_backward``: ``(grad_attn (N,H,k), grad_value (M,C))``."""
    n, num_heads, k = attn.shape
    c = value.shape[1]
    d = c // num_heads
    grad_attn = torch.empty_like(attn)
    grad_value = torch.zeros_like(value)
    for s in range(0, n, _TWIN_CHUNK):
        e = min(n, s + _TWIN_CHUNK)
        g = grad[s:e].view(e - s, num_heads, 1, d)
        vh = value[idx[s:e]].view(e - s, k, num_heads, d).transpose(1, 2)  # (n, H, k, d)
        grad_attn[s:e] = torch.matmul(g, vh.transpose(-1, -2)).squeeze(2)
        contrib = torch.matmul(attn[s:e].unsqueeze(3), g)                 # (n, H, k, d)
        grad_value.index_add_(0, idx[s:e].reshape(-1),
                              contrib.transpose(1, 2).reshape(-1, c))
    return grad_attn, grad_value


# ----------------------------------------------------------------------------- autograd
class KNNGatherDot(Function):
    """Autograd function behind :func:`knn_gather_dot`."""

    @staticmethod
    def forward(ctx, q: Tensor, key: Tensor, idx: Tensor, num_heads: int) -> Tensor:
        """``(N, C), (M, C), (N, k) -> (N, H, k)``."""
        ext = get_ext(q, key, op='knn_gather_dot')
        q, key, idx = q.contiguous(), key.contiguous(), idx.contiguous()
        if ext is not None:
            out = ext.knn_gather_dot_forward(q, key, idx, num_heads)
        else:
            out = gather_dot_forward_pytorch(q, key, idx, num_heads)
        ctx.save_for_backward(q, key, idx)
        ctx.num_heads = num_heads
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        """Gradients w.r.t. ``q`` and ``key``."""
        q, key, idx = ctx.saved_tensors
        grad = grad.contiguous()
        ext = get_ext(q, key, op='knn_gather_dot')
        if ext is not None:
            grad_q, grad_key = ext.knn_gather_dot_backward(grad, q, key, idx, ctx.num_heads)
        else:
            grad_q, grad_key = gather_dot_backward_pytorch(grad, q, key, idx, ctx.num_heads)
        return grad_q, grad_key, None, None


class KNNGatherWeightedSum(Function):
    """Autograd function behind :func:`knn_gather_wsum`."""

    @staticmethod
    def forward(ctx, attn: Tensor, value: Tensor, idx: Tensor) -> Tensor:
        """``(N, H, k), (M, C), (N, k) -> (N, C)``."""
        ext = get_ext(attn, value, op='knn_gather_wsum')
        attn, value, idx = attn.contiguous(), value.contiguous(), idx.contiguous()
        if ext is not None:
            out = ext.knn_gather_wsum_forward(attn, value, idx)
        else:
            out = gather_wsum_forward_pytorch(attn, value, idx)
        ctx.save_for_backward(attn, value, idx)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        """Gradients w.r.t. ``attn`` and ``value``."""
        attn, value, idx = ctx.saved_tensors
        grad = grad.contiguous()
        ext = get_ext(attn, value, op='knn_gather_wsum')
        if ext is not None:
            grad_attn, grad_value = ext.knn_gather_wsum_backward(grad, attn, value, idx)
        else:
            grad_attn, grad_value = gather_wsum_backward_pytorch(grad, attn, value, idx)
        return grad_attn, grad_value, None


@full_precision_under_amp
def knn_gather_dot(q: Tensor, key: Tensor, idx: Tensor, num_heads: int) -> Tensor:
    """Per-head dot products of each query with the keys of its neighbours.

    Under AMP it runs in float32 (:func:`full_precision_under_amp`).

    Args:
        q: ``(N, C)`` queries (already scaled if desired).
        key: ``(M, C)`` per-voxel keys.
        idx: ``(N, k)`` int64 rows of ``key``.
        num_heads: ``H``; ``C`` must be divisible by it.

    Returns:
        ``(N, H, k)`` scores; differentiable w.r.t. ``q`` and ``key``.
    """
    _check('q', q, key, idx, num_heads)
    if q.shape[1] != key.shape[1]:
        raise ValueError(f'q has {q.shape[1]} channels but key has {key.shape[1]}')
    return KNNGatherDot.apply(q, key, idx, num_heads)


@full_precision_under_amp
def knn_gather_wsum(attn: Tensor, value: Tensor, idx: Tensor) -> Tensor:
    """Per-head attention-weighted sum of neighbour values.

    Under AMP it runs in float32 (:func:`full_precision_under_amp`).

    Args:
        attn: ``(N, H, k)`` weights.
        value: ``(M, C)`` per-voxel values; ``C`` divisible by ``H``.
        idx: ``(N, k)`` int64 rows of ``value``.

    Returns:
        ``(N, C)``; differentiable w.r.t. ``attn`` and ``value``.
    """
    if attn.dim() != 3 or attn.shape[2] != idx.shape[-1]:
        raise ValueError(f'attn must be (N, H, k) with k = {idx.shape[-1]}, got '
                         f'{tuple(attn.shape)}')
    _check('attn', attn, value, idx, attn.shape[1])
    return KNNGatherWeightedSum.apply(attn, value, idx)


# ------------------------------------------------------------------ relative-position score
_PE_CHUNK = 2048  # voxels per chunk: bounds the (H, chunk, C) projected-query temporaries


def _pe_hidden(rel: Tensor, w1: Tensor, b1: Tensor, ln_w: Tensor, ln_b: Tensor,
               eps: float) -> Tensor:
    return torch.relu(torch.nn.functional.layer_norm(
        torch.nn.functional.linear(rel, w1, b1), (w1.shape[0],), ln_w, ln_b, eps))


def pe_score_forward_pytorch(r: Tensor, rel: Tensor, w1: Tensor, b1: Tensor, ln_w: Tensor,
                             ln_b: Tensor, eps: float) -> Tensor:
    """Twin of ``knn_pe_score_forward``: ``r (H,n,C), rel (n,k,3) -> (n,H,k)``."""
    hidden = _pe_hidden(rel, w1, b1, ln_w, ln_b, eps)               # (n, k, C)
    return torch.bmm(hidden, r.permute(1, 2, 0)).transpose(1, 2)    # (n, H, k)


def pe_score_backward_pytorch(grad: Tensor, r: Tensor, rel: Tensor, w1: Tensor, b1: Tensor,
                              ln_w: Tensor, ln_b: Tensor, eps: float):
    """Twin of ``knn_pe_score_backward``: grads of ``(r, w1, b1, ln_w, ln_b)``."""
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_(True) for t in (r, w1, b1, ln_w, ln_b)]
        out = pe_score_forward_pytorch(leaves[0], rel, *leaves[1:], eps)
        return torch.autograd.grad(out, leaves, grad)


class KNNRelPosScore(Function):
    """Autograd function behind :func:`knn_pe_score` (chunked, recomputes in backward)."""

    @staticmethod
    def forward(ctx, q: Tensor, m: Tensor, rel: Tensor, w1: Tensor, b1: Tensor, ln_w: Tensor,
                 ln_b: Tensor, eps: float) -> Tensor:
        """``q (N,C), m (H,d,C), rel (N,k,3), PE params -> (N,H,k)``."""
        n, k = rel.shape[:2]
        h, d, _ = m.shape
        q = q.contiguous()
        ext = get_ext(q, m, rel, op='knn_pe_score')
        out = q.new_empty((n, h, k))
        params = [t.contiguous() for t in (w1, b1, ln_w, ln_b)]
        for s in range(0, n, _PE_CHUNK):
            e = min(n, s + _PE_CHUNK)
            r = torch.bmm(q[s:e].view(e - s, h, d).transpose(0, 1), m)  # (H, n, C)
            if ext is not None:
                out[s:e] = ext.knn_pe_score_forward(r, rel[s:e].contiguous(), *params, eps)
            else:
                out[s:e] = pe_score_forward_pytorch(r, rel[s:e], *params, eps)
        ctx.save_for_backward(q, m, rel, *params)
        ctx.eps = eps
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        """Gradients w.r.t. ``q``, ``m`` and the PE parameters (``rel`` is a constant)."""
        q, m, rel, w1, b1, ln_w, ln_b = ctx.saved_tensors
        n = rel.shape[0]
        h, d, c = m.shape
        grad = grad.contiguous()
        ext = get_ext(q, m, rel, op='knn_pe_score')
        grad_q = torch.empty_like(q)
        # the parameter gradients sum over all voxels: chunk partial sums are added in float64
        grad_m = torch.zeros_like(m, dtype=torch.float64)
        grads_p = [torch.zeros_like(t, dtype=torch.float64) for t in (w1, b1, ln_w, ln_b)]
        for s in range(0, n, _PE_CHUNK):
            e = min(n, s + _PE_CHUNK)
            qh = q[s:e].view(e - s, h, d).transpose(0, 1)                # (H, n, d)
            r = torch.bmm(qh, m)
            if ext is not None:
                g_r, *g_p = ext.knn_pe_score_backward(grad[s:e], r, rel[s:e].contiguous(), w1,
                                                      b1, ln_w, ln_b, ctx.eps)
            else:
                g_r, *g_p = pe_score_backward_pytorch(grad[s:e], r, rel[s:e], w1, b1, ln_w,
                                                      ln_b, ctx.eps)
            for acc, g in zip(grads_p, g_p):
                acc += g
            grad_q[s:e] = torch.bmm(g_r, m.transpose(1, 2)).transpose(0, 1).reshape(e - s, c)
            grad_m += torch.bmm(qh.transpose(1, 2), g_r)
        return (grad_q, grad_m.to(m.dtype), None, *(g.to(t.dtype) for g, t in
                                                      zip(grads_p, (w1, b1, ln_w, ln_b))), None)


@full_precision_under_amp
def knn_pe_score(q: Tensor, m: Tensor, rel: Tensor, fc1_weight: Tensor, fc1_bias: Tensor,
                 norm_weight: Tensor, norm_bias: Tensor, eps: float = 1e-5) -> Tensor:
    """Relative-position attention scores without forming the ``(N, k, C)`` encodings.

    ``out[n,h,j] = < m[h]^T q[n, head h], ReLU(LN(fc1(rel[n,j]))) >`` i.e. the score of query
    head ``h`` against ``W_k,h W_2 PE_hidden(x_j - x_i)`` with ``m[h] = (W_k W_2)[head h rows]``.
    The projected query ``r = m^T q`` (``H x C`` per voxel) and the hidden encoding are formed per
    chunk / per pair inside the kernel and recomputed in backward, so only the inputs are saved.

    Args:
        q: ``(N, C)`` (scaled) queries, ``C = H * d``.
        m: ``(H, d, C)`` per-head ``W_k W_2`` blocks.
        rel: ``(N, k, 3)`` neighbour offsets ``x_j - x_i`` (treated as constant).
        fc1_weight: ``(C, 3)`` first PE linear weight.
        fc1_bias: ``(C,)`` its bias.
        norm_weight: ``(C,)`` PE LayerNorm weight.
        norm_bias: ``(C,)`` PE LayerNorm bias.
        eps: LayerNorm epsilon.

    Returns:
        ``(N, H, k)``; differentiable w.r.t. ``q``, ``m`` and the four PE parameters.
    """
    if m.dim() != 3 or q.dim() != 2 or q.shape[1] != m.shape[0] * m.shape[1]:
        raise ValueError(f'q (N, C) and m (H, d, C) with C = H*d expected, got {tuple(q.shape)} '
                         f'and {tuple(m.shape)}')
    if rel.dim() != 3 or rel.shape[0] != q.shape[0] or rel.shape[2] != 3:
        raise ValueError(f'rel must be ({q.shape[0]}, k, 3), got {tuple(rel.shape)}')
    c = m.shape[2]
    if fc1_weight.shape != (c, 3) or any(t.shape != (c,) for t in (fc1_bias, norm_weight,
                                                                    norm_bias)):
        raise ValueError(f'PE parameters must be fc1 ({c}, 3) and ({c},) vectors')
    return KNNRelPosScore.apply(q, m, rel, fc1_weight, fc1_bias, norm_weight, norm_bias, eps)


# ----------------------------------------------------------------------------- self-checks
def attention_probe_problem() -> Dict[str, object]:
    """The tiny fixed problem of the kNN-attention self-checks (CPU float32).

    7 query voxels, 5 table rows, ``k = 3`` neighbours (the first two equal, so the backward
    kernels must accumulate repeated neighbours), ``H = 2`` heads of 4 channels, and the upstream
    gradients of each op's output.

    Returns:
        dict of tensors (and ``num_heads`` / ``eps``) named after the kernels' arguments.
    """
    g = torch.Generator().manual_seed(20240612)
    n, m, k, h, c = 7, 5, 3, 2, 8

    def randn(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64).float()

    idx = torch.randint(0, m, (n, k), generator=g)
    idx[:, 0] = idx[:, 1]
    return dict(
        q=randn(n, c), key=randn(m, c), idx=idx, num_heads=h,
        attn=torch.softmax(randn(n, h, k), -1), grad_scores=randn(n, h, k), grad_out=randn(n, c),
        r=randn(h, n, c), rel=randn(n, k, 3) * 0.5, w1=randn(c, 3), b1=randn(c) * 0.1,
        ln_w=1 + 0.1 * randn(c), ln_b=0.1 * randn(c), eps=1e-5)


def _probe(device: torch.device) -> Dict[str, object]:
    return {name: v.to(device) if isinstance(v, Tensor) else v
            for name, v in attention_probe_problem().items()}


def _self_check_gather_dot(ext, device: torch.device) -> Optional[str]:
    p = _probe(device)

    def run(fwd, bwd):
        out = fwd(p['q'], p['key'], p['idx'], p['num_heads'])
        return (out, *bwd(p['grad_scores'], p['q'], p['key'], p['idx'], p['num_heads']))

    return self_check(
        lambda: run(ext.knn_gather_dot_forward, ext.knn_gather_dot_backward),
        lambda: run(gather_dot_forward_pytorch, gather_dot_backward_pytorch),
        names=('out', 'grad_q', 'grad_key'))


def _self_check_gather_wsum(ext, device: torch.device) -> Optional[str]:
    p = _probe(device)

    def run(fwd, bwd):
        out = fwd(p['attn'], p['key'], p['idx'])
        return (out, *bwd(p['grad_out'], p['attn'], p['key'], p['idx']))

    return self_check(
        lambda: run(ext.knn_gather_wsum_forward, ext.knn_gather_wsum_backward),
        lambda: run(gather_wsum_forward_pytorch, gather_wsum_backward_pytorch),
        names=('out', 'grad_attn', 'grad_value'))


def _self_check_pe_score(ext, device: torch.device) -> Optional[str]:
    p = _probe(device)
    args = (p['r'], p['rel'], p['w1'], p['b1'], p['ln_w'], p['ln_b'], p['eps'])

    def run(fwd, bwd):
        return (fwd(*args), *bwd(p['grad_scores'], *args))

    return self_check(
        lambda: run(ext.knn_pe_score_forward, ext.knn_pe_score_backward),
        lambda: run(pe_score_forward_pytorch, pe_score_backward_pytorch),
        names=('out', 'grad_r', 'grad_w1', 'grad_b1', 'grad_ln_w', 'grad_ln_b'))


register_self_check('knn_gather_dot', _self_check_gather_dot)
register_self_check('knn_gather_wsum', _self_check_gather_wsum)
register_self_check('knn_pe_score', _self_check_pe_score)
