"""The depth maps of a 3D batch, kept as given and made float32 a few views at a time.

A 3D batch of V views used to hold its depth maps as one float32 tensor (B, V, Hp, Wp), zero padded
to the padded image size: a copy of every view's depth (``V*Hp*Wp*4`` bytes) whenever the batch has
more than one sample, needs padding, or its depths are not float32. The model reads the depths in
one place only, the unprojection of
:func:`projects.odin.structures.multiview_geometry.compute_multiscale_xyz`, a few views at a time
and only inside each sample's unpadded image, so :class:`MultiViewDepths` keeps every sample's
depth maps as given (no stacking, padding or conversion) and gives that unprojection the float32
depths of one chunk of views (:meth:`MultiViewDepths.region`). The values are those of the padded
float32 tensor: padding adds zeros and the dtype conversion is element-wise, so neither depends on
which views are converted together.
"""
from typing import List, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor


class MultiViewDepths:
    """Depth maps of a 3D batch, converted to padded float32 per view chunk.

    Args:
        depths: one (V, H_i, W_i) tensor per sample (metres, 0 = invalid; any real dtype, made
            float32 where used), same V and device for all samples.
        pad_hw: ``(Hp, Wp)``, the padded size of the batch (that of its images).

    Raises:
        ValueError: no sample, a depth stack that is not (V, H, W) or not real-valued, samples
            with different V, or a depth map larger than ``pad_hw``.
    """

    def __init__(self, depths: Sequence[Tensor], pad_hw: Tuple[int, int]) -> None:
        depths = list(depths)
        if not depths:
            raise ValueError('a 3D batch needs the depth maps of at least one sample')
        hp, wp = (int(x) for x in pad_hw)
        for i, d in enumerate(depths):
            if not isinstance(d, Tensor) or d.dim() != 3:
                shape = tuple(d.shape) if isinstance(d, Tensor) else type(d).__name__
                raise ValueError(f'sample {i}: depths must be (V, H, W), got {shape}')
            if d.dtype in (torch.bool, torch.complex64, torch.complex128):
                raise ValueError(f'sample {i}: depths must be real-valued metres, got {d.dtype}')
            if d.shape[1] > hp or d.shape[2] > wp:
                raise ValueError(f'sample {i}: depth maps of {tuple(d.shape[1:])} do not fit the '
                                 f'padded size {(hp, wp)} of the images')
        if len({d.shape[0] for d in depths}) != 1:
            raise ValueError('every sample of a 3D batch needs the same number of views, got '
                             f'{[d.shape[0] for d in depths]} depth maps')
        if len({d.device for d in depths}) != 1:
            raise ValueError('the depth maps of a batch must be on one device')
        self.depths: List[Tensor] = depths
        self.pad_hw: Tuple[int, int] = (hp, wp)

    @property
    def shape(self) -> torch.Size:
        """(B, V, Hp, Wp): the shape of the padded float32 tensor (:meth:`to_tensor`)."""
        return torch.Size((len(self.depths), self.depths[0].shape[0], *self.pad_hw))

    @property
    def device(self) -> torch.device:
        """Device of the depth maps."""
        return self.depths[0].device

    @property
    def num_views(self) -> int:
        """Views of the batch, flattened (``B*V``)."""
        return len(self.depths) * self.depths[0].shape[0]

    def select_views(self, idx: Tensor) -> 'MultiViewDepths':
        """The same samples with the views ``idx`` (1D index into V) only."""
        return MultiViewDepths([d[idx] for d in self.depths], self.pad_hw)

    def region(self, sample: int, start: int, end: int, h: int, w: int) -> Tensor:
        """Float32 depths of views ``start..end`` of one sample, top-left ``h x w`` pixels.

        The values of ``to_tensor()[sample, start:end, :h, :w]`` without building the padded
        tensor of all views: a view of the stored depths when they are float32 and cover the
        region, else a (end - start, h, w) float32 tensor of these views only.

        Args:
            sample: index of the sample.
            start: first view of the sample.
            end: one past its last view.
            h: rows of the region, at most ``Hp``.
            w: columns of the region, at most ``Wp``.

        Returns:
            Tensor: (end - start, h, w) float32 metres (0 beyond the sample's depth maps).
        """
        d = self.depths[sample]
        if not 0 <= start <= end <= d.shape[0]:
            raise ValueError(f'views {start}..{end} out of range 0..{d.shape[0]}')
        if not (0 <= h <= self.pad_hw[0] and 0 <= w <= self.pad_hw[1]):
            raise ValueError(f'region {(h, w)} outside the padded size {self.pad_hw}')
        out = d[start:end, :h, :w].to(torch.float32)
        if tuple(out.shape[1:]) != (h, w):
            out = F.pad(out, (0, w - out.shape[2], 0, h - out.shape[1]))
        return out

    def padded(self, start: int = 0, end: Union[int, None] = None) -> Tensor:
        """Zero-padded float32 depths of the flattened views ``start..end``.

        Args:
            start: first view (index into the flattened ``B*V`` views).
            end: one past the last view (None = all).

        Returns:
            Tensor: (end - start, Hp, Wp) float32.
        """
        v = self.depths[0].shape[0]
        total = self.num_views
        end = total if end is None else end
        if not 0 <= start <= end <= total:
            raise ValueError(f'views {start}..{end} out of range 0..{total}')
        hp, wp = self.pad_hw
        parts = []
        for i in range(start // v, (end + v - 1) // v):
            s, e = max(i * v, start) - i * v, min((i + 1) * v, end) - i * v
            parts.append(self.region(i, s, e, hp, wp))
        if not parts:
            return self.depths[0].new_zeros((0, hp, wp), dtype=torch.float32)
        return torch.cat(parts) if len(parts) > 1 else parts[0].clone()

    def to_tensor(self) -> Tensor:
        """All depth maps zero padded, float32 (B, V, Hp, Wp).

        What the preprocessor held before; for tools and tests (the model never builds it).
        """
        return self.padded().unflatten(0, self.shape[:2])
