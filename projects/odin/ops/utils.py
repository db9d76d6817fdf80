"""Validation helpers shared by the ops (offsets, finiteness, shapes)."""
from typing import List, Tuple

import torch
from torch import Tensor


def check_points(name: str, xyz: Tensor) -> None:
    """Check that ``xyz`` is a floating ``(N, 3)`` tensor of finite coordinates.

    Raises:
        ValueError: wrong shape/dtype, or NaN/inf coordinates (the first offending row is named).
    """
    if not isinstance(xyz, Tensor):
        raise TypeError(f'{name} must be a torch.Tensor, got {type(xyz).__name__}')
    if xyz.dim() != 2 or xyz.shape[1] != 3:
        raise ValueError(f'{name} must have shape (N, 3), got {tuple(xyz.shape)}')
    if not xyz.is_floating_point():
        raise ValueError(f'{name} must be a floating tensor, got {xyz.dtype}')
    finite = torch.isfinite(xyz).all(dim=1)
    if not bool(finite.all()):
        bad = torch.nonzero(~finite)[:, 0]
        row = int(bad[0])
        raise ValueError(
            f'{name} contains {bad.numel()} point(s) with NaN/inf coordinates '
            f'(first: row {row} = {xyz[row].tolist()})')


def check_offsets(name: str, offsets: Tensor, total: int) -> Tensor:
    """Validate cumulative end offsets of the scenes and return them as a CPU int64 tensor.

    Args:
        name: argument name used in error messages.
        offsets: ``(B,)`` integer tensor, non-decreasing, last entry == ``total``.
        total: number of rows of the matching point tensor.

    Returns:
        ``(B,)`` int64 CPU tensor.
    """
    if not isinstance(offsets, Tensor):
        offsets = torch.as_tensor(offsets)
    if offsets.dim() != 1 or offsets.numel() == 0:
        raise ValueError(f'{name} must be a non-empty 1-D tensor of cumulative scene ends, '
                         f'got shape {tuple(offsets.shape)}')
    if offsets.is_floating_point() or offsets.dtype == torch.bool:
        raise ValueError(f'{name} must be an integer tensor, got {offsets.dtype}')
    off = offsets.detach().to('cpu', torch.int64)
    starts = torch.cat([off.new_zeros(1), off[:-1]])
    if bool((off < starts).any()) or int(off[0]) < 0:
        raise ValueError(f'{name} must be non-decreasing and non-negative, got {off.tolist()}')
    if int(off[-1]) != total:
        raise ValueError(f'{name}[-1] = {int(off[-1])} does not match the number of points {total}')
    return off


def scene_ranges(offsets: Tensor) -> List[Tuple[int, int]]:
    """``[(start, end), ...]`` of every scene from cumulative end offsets (CPU int64)."""
    ends = offsets.tolist()
    starts = [0] + ends[:-1]
    return list(zip(starts, ends))
