"""Segment reductions (voxel pooling) on native ``Tensor.scatter_reduce_``.

``scatter_reduce_(..., include_self=False)`` gives the same mean/sum/max/min as
``torch_scatter`` (and is faster on CPU), so no compiled kernel is needed. Segments that receive
no element are 0. All four are differentiable w.r.t. ``src`` (max/min: the gradient goes to the
selected elements; ties share it evenly, as in PyTorch's ``amax``).
"""
from torch import Tensor

_REDUCE = {'sum': 'sum', 'mean': 'mean', 'max': 'amax', 'min': 'amin'}


def _scatter(src: Tensor, index: Tensor, dim_size: int, reduce: str) -> Tensor:
    if src.dim() == 0:
        raise ValueError('src must have at least one dimension (N, ...)')
    if index.dim() != 1 or index.shape[0] != src.shape[0]:
        raise ValueError(f'index must have shape ({src.shape[0]},) to match src '
                         f'{tuple(src.shape)}, got {tuple(index.shape)}')
    if index.is_floating_point():
        raise ValueError(f'index must be an integer tensor, got {index.dtype}')
    if dim_size < 0:
        raise ValueError(f'dim_size must be >= 0, got {dim_size}')
    index = index.long()
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= dim_size):
        raise ValueError(f'index values must lie in [0, {dim_size}), got '
                         f'[{int(index.min())}, {int(index.max())}]')
    out = src.new_zeros((dim_size, *src.shape[1:]))
    expanded = index.view(-1, *([1] * (src.dim() - 1))).expand_as(src)
    return out.scatter_reduce(0, expanded, src, _REDUCE[reduce], include_self=False)


def scatter_sum(src: Tensor, index: Tensor, dim_size: int) -> Tensor:
    """Sum of the rows of ``src`` per segment.

    Args:
        src: ``(N, ...)`` values.
        index: ``(N,)`` int segment id of every row, in ``[0, dim_size)``.
        dim_size: number of segments ``S``.

    Returns:
        ``(S, ...)``; empty segments are 0.
    """
    return _scatter(src, index, dim_size, 'sum')


def scatter_mean(src: Tensor, index: Tensor, dim_size: int) -> Tensor:
    """Mean of the rows of ``src`` per segment (``(S, ...)``, empty segments 0); see scatter_sum."""
    return _scatter(src, index, dim_size, 'mean')


def scatter_max(src: Tensor, index: Tensor, dim_size: int) -> Tensor:
    """Element-wise max of the rows per segment (``(S, ...)``, empty ones 0); see scatter_sum."""
    return _scatter(src, index, dim_size, 'max')


def scatter_min(src: Tensor, index: Tensor, dim_size: int) -> Tensor:
    """Element-wise min of the rows per segment (``(S, ...)``, empty ones 0); see scatter_sum."""
    return _scatter(src, index, dim_size, 'min')
