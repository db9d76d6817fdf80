"""Multi-scale deformable attention with mmcv's op signature: compiled on CPU, mmcv's op on CUDA.

The core of Deformable-DETR's ``MultiScaleDeformableAttention`` (the pixel decoder's encoder):
for every query, head, level and point, sample the level's value map bilinearly at a normalised
location and sum the samples weighted by the attention weights. mmcv ships a CUDA kernel only; on
CPU it falls back to ``F.grid_sample`` per level, which dominates ODIN's CPU forward. Dispatch of
:func:`multi_scale_deform_attn`:

* CPU tensors (float32/float64): the compiled C++/OpenMP kernel of ``projects.odin.ops._ext``
  (forward and backward), else the pure-PyTorch twin;
* CUDA tensors: mmcv's own ``MultiScaleDeformableAttnFunction`` (unchanged; mmcv imported
  lazily), called on batch chunks that keep its 32-bit offsets in range and satisfy its
  ``batch % im2col_step`` assertion (:func:`.limits.mmcv_msda_batch_step`; a batch of 250 views
  with ``im2col_step=64`` would trip it), else the twin;
* ``set_backend('pytorch')`` / ``ODIN_OPS_BACKEND=pytorch``, other dtypes or devices: the twin.

Sampling semantics (shared by the kernel, the twin and mmcv): a location ``(x, y)`` in ``[0, 1]``
on an ``h x w`` map reads pixel coordinates ``(x * w - 0.5, y * h - 0.5)`` with bilinear weights,
pixels outside the map count as zero - i.e. ``F.grid_sample(2 * loc - 1, mode='bilinear',
padding_mode='zeros', align_corners=False)``.
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd import Function
from torch.autograd.function import once_differentiable

from . import backend
from .backend import get_ext, register_self_check
from .guard import self_check
from .limits import INT32_MAX, mmcv_msda_batch_step

_MMCV_FUNCTION = None
_MMCV_TRIED = False


def _mmcv_cuda_function():
    """The CUDA op of mmcv (``MultiScaleDeformableAttnFunction``), or None when unavailable."""
    global _MMCV_FUNCTION, _MMCV_TRIED
    if not _MMCV_TRIED:
        _MMCV_TRIED = True
        try:
            from mmcv.ops.multi_scale_deform_attn import MultiScaleDeformableAttnFunction
            _MMCV_FUNCTION = MultiScaleDeformableAttnFunction
        except Exception:  # mmcv missing or built without its ops: use the twin
            _MMCV_FUNCTION = None
    return _MMCV_FUNCTION


def _level_shapes(value_spatial_shapes: Tensor) -> List[Tuple[int, int]]:
    return [(int(h), int(w)) for h, w in value_spatial_shapes.tolist()]


def check_ms_deform_attn_args(value: Tensor, value_spatial_shapes: Tensor,
                              level_start_index: Optional[Tensor], sampling_locations: Tensor,
                              attention_weights: Tensor) -> None:
    """Raise a ``ValueError`` naming what is wrong with the op's arguments.

    Shapes, dtypes and devices are always checked, and so are the level sizes and start indices
    (tiny tensors; on a GPU reading them costs one small copy to the host): a level outside the
    value rows would make a kernel read outside its tensors.

    Args:
        value: ``(bs, num_keys, num_heads, head_dims)``.
        value_spatial_shapes: ``(num_levels, 2)`` integer ``(h, w)`` per level.
        level_start_index: ``(num_levels,)`` first key of every level, or None (the twin does
            not need it).
        sampling_locations: ``(bs, num_queries, num_heads, num_levels, num_points, 2)``.
        attention_weights: ``(bs, num_queries, num_heads, num_levels, num_points)``.
    """
    if value.dim() != 4:
        raise ValueError('value must be (bs, num_keys, num_heads, head_dims), got '
                         f'{tuple(value.shape)}')
    bs, num_keys, heads, _ = value.shape
    if sampling_locations.dim() != 6 or sampling_locations.shape[-1] != 2:
        raise ValueError('sampling_locations must be (bs, num_queries, num_heads, num_levels, '
                         f'num_points, 2), got {tuple(sampling_locations.shape)}')
    b2, nq, h2, levels, points, _ = sampling_locations.shape
    if (b2, h2) != (bs, heads):
        raise ValueError(f'sampling_locations has batch {b2} / {h2} heads, value has batch {bs} '
                         f'/ {heads} heads')
    if tuple(attention_weights.shape) != (bs, nq, heads, levels, points):
        raise ValueError(f'attention_weights must be {(bs, nq, heads, levels, points)} like '
                         f'sampling_locations, got {tuple(attention_weights.shape)}')
    if value_spatial_shapes.shape != (levels, 2) or value_spatial_shapes.is_floating_point():
        raise ValueError(f'value_spatial_shapes must be an integer ({levels}, 2) tensor of (h, w) '
                         f'per level, got {tuple(value_spatial_shapes.shape)} '
                         f'{value_spatial_shapes.dtype}')
    if level_start_index is not None and level_start_index.shape != (levels, ):
        raise ValueError(f'level_start_index must be ({levels},), got '
                         f'{tuple(level_start_index.shape)}')
    if level_start_index is not None and level_start_index.is_floating_point():
        raise ValueError(f'level_start_index must be an integer tensor, got '
                         f'{level_start_index.dtype}')
    if not value.is_floating_point():
        raise ValueError(f'value must be a floating tensor, got {value.dtype}')
    for name, t in (('value_spatial_shapes', value_spatial_shapes),
                    ('level_start_index', level_start_index),
                    ('sampling_locations', sampling_locations),
                    ('attention_weights', attention_weights)):
        if t is not None and t.device != value.device:
            raise ValueError(f'{name} is on {t.device} but value is on {value.device} (all '
                             'tensors of a call on one device)')
    shapes = _level_shapes(value_spatial_shapes)
    if any(h < 1 or w < 1 for h, w in shapes):
        raise ValueError(f'every level map must be at least 1x1, got (h, w) = {shapes}')
    sizes = [h * w for h, w in shapes]
    if sum(sizes) != num_keys:
        raise ValueError(f'the level maps {shapes} hold {sum(sizes)} keys but value has '
                         f'{num_keys}')
    if level_start_index is not None:
        starts = [0]
        for n in sizes[:-1]:
            starts.append(starts[-1] + n)
        if level_start_index.tolist() != starts:
            raise ValueError(f'level_start_index {level_start_index.tolist()} does not match '
                             f'the level maps {shapes} (expected {starts})')


# ----------------------------------------------------------------------------- PyTorch twin
def multi_scale_deform_attn_pytorch(value: Tensor, value_spatial_shapes: Tensor,
                                    sampling_locations: Tensor,
                                    attention_weights: Tensor) -> Tensor:
    """Pure-PyTorch multi-scale deformable attention (``grid_sample`` per level).

    Same semantics as mmcv's ``multi_scale_deformable_attn_pytorch``; differentiable by autograd
    w.r.t. ``value``, ``sampling_locations`` and ``attention_weights``.

    Args:
        value: ``(bs, num_keys, num_heads, head_dims)``, the levels' maps flattened row-major and
            concatenated.
        value_spatial_shapes: ``(num_levels, 2)`` ``(h, w)`` of every level.
        sampling_locations: ``(bs, num_queries, num_heads, num_levels, num_points, 2)``,
            normalised ``(x, y)``; ``(0, 0)`` is the top-left corner of the map, ``(1, 1)`` the
            bottom-right one.
        attention_weights: ``(bs, num_queries, num_heads, num_levels, num_points)``.

    Returns:
        ``(bs, num_queries, num_heads * head_dims)``.
    """
    bs, _, heads, dims = value.shape
    nq, levels, points = sampling_locations.shape[1], sampling_locations.shape[3], \
        sampling_locations.shape[4]
    shapes = _level_shapes(value_spatial_shapes)
    maps = value.split([h * w for h, w in shapes], dim=1)
    # grid_sample's grid is in [-1, 1]; one (bs * heads) "image" per batch element and head
    grids = (2 * sampling_locations - 1).transpose(1, 2).reshape(bs * heads, nq, levels,
                                                                 points, 2)
    weights = attention_weights.transpose(1, 2).reshape(bs * heads, 1, nq, levels, points)
    out = None
    for lvl, (h, w) in enumerate(shapes):
        image = maps[lvl].permute(0, 2, 3, 1).reshape(bs * heads, dims, h, w)
        sampled = F.grid_sample(image, grids[:, :, lvl], mode='bilinear', padding_mode='zeros',
                                align_corners=False)                    # (bs*H, D, nq, P)
        term = (sampled * weights[..., lvl, :]).sum(-1)                 # (bs*H, D, nq)
        out = term if out is None else out + term
    return out.view(bs, heads * dims, nq).transpose(1, 2).contiguous()


# ----------------------------------------------------------------------------- autograd
class MultiScaleDeformAttnCPU(Function):
    """Autograd function of the compiled CPU kernels (inputs already checked and cast)."""

    @staticmethod
    def forward(ctx, value: Tensor, value_spatial_shapes: Tensor, level_start_index: Tensor,
                sampling_locations: Tensor, attention_weights: Tensor, ext) -> Tensor:
        """``(bs,K,H,D), (L,2), (L,), (bs,Q,H,L,P,2), (bs,Q,H,L,P) -> (bs,Q,H*D)``."""
        args = (value.contiguous(), value_spatial_shapes.long().contiguous(),
                level_start_index.long().contiguous(), sampling_locations.contiguous(),
                attention_weights.contiguous())
        ctx.save_for_backward(*args)
        ctx.ext = ext
        return ext.ms_deform_attn_forward(*args)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor):
        """Gradients w.r.t. ``value``, ``sampling_locations`` and ``attention_weights``."""
        grad_value, grad_loc, grad_attn = ctx.ext.ms_deform_attn_backward(
            *ctx.saved_tensors, grad_output.contiguous())
        return grad_value, None, None, grad_loc, grad_attn, None


def multi_scale_deform_attn(value: Tensor,
                            value_spatial_shapes: Tensor,
                            level_start_index: Tensor,
                            sampling_locations: Tensor,
                            attention_weights: Tensor,
                            im2col_step: int = 64) -> Tensor:
    """Multi-scale deformable attention, mmcv's op signature (see the module docstring).

    Args:
        value: ``(bs, num_keys, num_heads, head_dims)``.
        value_spatial_shapes: ``(num_levels, 2)`` int64 ``(h, w)`` of every level.
        level_start_index: ``(num_levels,)`` int64 first key of every level (the exclusive
            cumulative sum of ``h * w``).
        sampling_locations: ``(bs, num_queries, num_heads, num_levels, num_points, 2)``
            normalised ``(x, y)``; cast to ``value``'s dtype like mmcv does.
        attention_weights: ``(bs, num_queries, num_heads, num_levels, num_points)``; cast too.
        im2col_step: batch chunk of mmcv's CUDA op (passed to it on CUDA; no effect on CPU).

    Returns:
        ``(bs, num_queries, num_heads * head_dims)``; differentiable w.r.t. ``value``,
        ``sampling_locations`` and ``attention_weights``.
    """
    check_ms_deform_attn_args(value, value_spatial_shapes, level_start_index,
                              sampling_locations, attention_weights)
    # mmcv casts the locations and weights to value's dtype (AMP runs value in half precision)
    sampling_locations = sampling_locations.type_as(value)
    attention_weights = attention_weights.type_as(value)
    if backend.get_backend() != 'pytorch':
        if value.device.type == 'cpu':
            ext = get_ext(value, sampling_locations, attention_weights, op='ms_deform_attn')
            if ext is not None:
                return MultiScaleDeformAttnCPU.apply(value, value_spatial_shapes,
                                                     level_start_index, sampling_locations,
                                                     attention_weights, ext)
        elif value.is_cuda and torch.cuda.is_available():
            function = _mmcv_cuda_function()
            if function is not None:
                return mmcv_msda_chunked(function, value, value_spatial_shapes,
                                         level_start_index, sampling_locations,
                                         attention_weights, im2col_step)
    return multi_scale_deform_attn_pytorch(value, value_spatial_shapes, sampling_locations,
                                           attention_weights)


def mmcv_msda_chunked(function, value: Tensor, value_spatial_shapes: Tensor,
                      level_start_index: Tensor, sampling_locations: Tensor,
                      attention_weights: Tensor, im2col_step: int = 64,
                      int_max: int = INT32_MAX) -> Tensor:
    """Call mmcv's ``MultiScaleDeformableAttnFunction`` on batch chunks it handles safely.

    mmcv 2.1.0's CUDA op asserts ``batch % min(batch, im2col_step) == 0`` and computes its
    offsets in 32-bit ``int``. Each chunk here has at most
    :func:`.limits.mmcv_msda_batch_step` elements and is passed that chunk's own size as
    ``im2col_step``, so neither limit is reached; the chunks' outputs are concatenated (the op
    treats batch elements independently, so the result equals one call on the whole batch).

    Args:
        function: mmcv's autograd function (or any with its ``apply`` signature).
        value: ``(bs, num_keys, num_heads, head_dims)``.
        value_spatial_shapes: ``(num_levels, 2)``.
        level_start_index: ``(num_levels,)``.
        sampling_locations: ``(bs, num_queries, num_heads, num_levels, num_points, 2)``.
        attention_weights: ``(bs, num_queries, num_heads, num_levels, num_points)``.
        im2col_step: the layer's ``im2col_step`` (upper bound of a chunk). Defaults to 64.
        int_max: the largest offset of one call. Defaults to ``2**31 - 1``.

    Returns:
        ``(bs, num_queries, num_heads * head_dims)``.

    Raises:
        OpSizeError: one batch element alone is too large for mmcv's kernel.
    """
    bs, num_keys, heads, dims = value.shape
    _, nq, _, levels, points, _ = sampling_locations.shape
    if bs == 0:  # mmcv would divide by min(0, im2col_step) = 0
        return value.new_zeros((0, nq, heads * dims))
    step = mmcv_msda_batch_step(bs, num_keys, heads, dims, nq, levels, points, im2col_step,
                                int_max)
    if bs <= step:
        return function.apply(value, value_spatial_shapes, level_start_index,
                              sampling_locations, attention_weights, bs)
    outs = []
    for s in range(0, bs, step):
        e = min(bs, s + step)
        outs.append(function.apply(value[s:e], value_spatial_shapes, level_start_index,
                                   sampling_locations[s:e], attention_weights[s:e], e - s))
    return torch.cat(outs)


# ----------------------------------------------------------------------------- self-check
def ms_deform_attn_probe_problem(dtype: torch.dtype = torch.float32,
                                 levels: Sequence[Tuple[int, int]] = ((3, 5), (2, 2), (1, 3)),
                                 bs: int = 2, num_queries: int = 6, heads: int = 2,
                                 head_dims: int = 4, points: int = 3,
                                 seed: int = 20240612) -> dict:
    """A small random problem (CPU): odd level sizes, locations partly outside the maps.

    Locations are drawn in ``[-0.3, 1.3]``, so some samples fall entirely or partly outside
    their map (zero padding). Uses its own generator (the global RNG is untouched).

    Returns:
        dict with ``value``, ``value_spatial_shapes``, ``level_start_index``,
        ``sampling_locations``, ``attention_weights`` and an upstream gradient ``grad_output``.
    """
    g = torch.Generator().manual_seed(seed)
    shapes = torch.tensor(levels, dtype=torch.long)
    sizes = shapes.prod(1)
    start = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    num_keys, num_levels = int(sizes.sum()), len(levels)

    def rand(*shape: int) -> Tensor:
        return torch.rand(*shape, generator=g, dtype=torch.float64).to(dtype)

    return dict(
        value=(rand(bs, num_keys, heads, head_dims) * 2 - 1),
        value_spatial_shapes=shapes,
        level_start_index=start,
        sampling_locations=rand(bs, num_queries, heads, num_levels, points, 2) * 1.6 - 0.3,
        attention_weights=torch.softmax(
            rand(bs, num_queries, heads, num_levels * points) * 4, -1).view(
                bs, num_queries, heads, num_levels, points),
        grad_output=rand(bs, num_queries, heads * head_dims) * 2 - 1)


def _self_check_ms_deform_attn(ext, device: torch.device) -> Optional[str]:
    p = {k: v.to(device) for k, v in ms_deform_attn_probe_problem().items()}
    shapes, start = p['value_spatial_shapes'], p['level_start_index']

    def run_twin():
        leaves = [p[k].clone().requires_grad_(True)
                  for k in ('value', 'sampling_locations', 'attention_weights')]
        with torch.enable_grad():
            out = multi_scale_deform_attn_pytorch(leaves[0], shapes, *leaves[1:])
            grads = torch.autograd.grad(out, leaves, p['grad_output'])
        return (out.detach(), *grads)

    if device.type == 'cpu':
        def run_kernel():
            args = (p['value'], shapes, start, p['sampling_locations'], p['attention_weights'])
            return (ext.ms_deform_attn_forward(*args),
                    *ext.ms_deform_attn_backward(*args, p['grad_output']))
    else:  # on CUDA the op runs mmcv's kernel: check that one
        function = _mmcv_cuda_function()
        if function is None:
            return 'mmcv (whose CUDA op is used on GPUs) is not importable'

        def run_kernel():
            leaves = [p[k].clone().requires_grad_(True)
                      for k in ('value', 'sampling_locations', 'attention_weights')]
            with torch.enable_grad():
                out = function.apply(leaves[0], shapes, start, leaves[1], leaves[2], 64)
                grads = torch.autograd.grad(out, leaves, p['grad_output'])
            return (out.detach(), *grads)

    return self_check(run_kernel, run_twin,
                      names=('out', 'grad_value', 'grad_sampling_locations',
                             'grad_attention_weights'))


register_self_check('ms_deform_attn', _self_check_ms_deform_attn)
