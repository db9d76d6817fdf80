"""The images of a 3D batch, kept as loaded and normalised a few views at a time.

A 3D batch of V views holds its images in the dtype they were loaded in (uint8 for every
recording reader and dataset), padded with zeros to the batch size. The model normalises and pads
each chunk of views where it first uses it (:meth:`MultiViewImages.normalized`), so the float
images of all views (``V*3*H*W*4`` bytes, 4x the uint8 ones) are never held at once. The result
is the one of normalising the whole batch (mmdet's ``ImgDataPreprocessor``): the normalisation
is element-wise, so it does not depend on which views are normalised together.
"""
import math
from typing import List, Sequence, Tuple, Union

import torch
from torch import Tensor


class MultiViewImages:
    """Images of a 3D batch with the normalisation that the model applies per view chunk.

    Args:
        raw: the images as loaded, (B, V, 3, Hp, Wp), any dtype (uint8 or float), in the
            model's channel order, zero padded beyond each sample's ``img_shapes``.
        img_shapes: unpadded ``(H, W)`` of every sample (B of them).
        mean: per-channel mean, (3, 1, 1), or None to skip the normalisation.
        std: per-channel std, (3, 1, 1), or None (with ``mean``).
        pad_value: value of the padded pixels after normalisation.

    Raises:
        ValueError: a ``raw`` that is not (B, V, 3, Hp, Wp), shapes that do not fit it, or only
            one of ``mean`` / ``std``.
    """

    def __init__(self, raw: Tensor, img_shapes: Sequence[Tuple[int, int]],
                 mean: Union[Tensor, None], std: Union[Tensor, None],
                 pad_value: float = 0.) -> None:
        if raw.dim() != 5 or raw.shape[2] != 3:
            raise ValueError(f'raw images must be (B, V, 3, Hp, Wp), got {tuple(raw.shape)}')
        shapes = [tuple(int(x) for x in s[:2]) for s in img_shapes]
        if len(shapes) != raw.shape[0]:
            raise ValueError(f'{len(shapes)} image shapes for {raw.shape[0]} samples')
        hp, wp = raw.shape[-2:]
        for i, (h, w) in enumerate(shapes):
            if not (0 < h <= hp and 0 < w <= wp):
                raise ValueError(f'sample {i}: image shape {(h, w)} does not fit the padded '
                                 f'size {(hp, wp)}')
        if (mean is None) != (std is None):
            raise ValueError('give both mean and std, or neither')
        self.raw = raw
        self.img_shapes: List[Tuple[int, int]] = shapes
        self.mean = mean
        self.std = std
        self.pad_value = float(pad_value)

    @classmethod
    def stack(cls, images: Sequence[Tensor], pad_size_divisor: int, **kwargs
              ) -> 'MultiViewImages':
        """Stack per-sample images (V, 3, H, W), zero padded to a multiple of the divisor.

        Args:
            images: one (V, 3, H_i, W_i) tensor per sample, same V and dtype.
            pad_size_divisor: the padded size is the largest ``H_i``/``W_i`` rounded up to it.
            **kwargs: ``mean``, ``std``, ``pad_value`` of the constructor.

        Returns:
            MultiViewImages: the batch.

        Raises:
            ValueError: images that are not (V, 3, H, W) or differ in V.
        """
        for i, img in enumerate(images):
            if img.dim() != 4 or img.shape[1] != 3:
                raise ValueError(f'sample {i}: images must be (V, 3, H, W), got '
                                 f'{tuple(img.shape)}')
        if len({img.shape[0] for img in images}) != 1:
            raise ValueError('every sample of a 3D batch needs the same number of views, got '
                             f'{[img.shape[0] for img in images]}')
        div = max(int(pad_size_divisor), 1)
        hp = math.ceil(max(img.shape[-2] for img in images) / div) * div
        wp = math.ceil(max(img.shape[-1] for img in images) / div) * div
        first = images[0]
        if len(images) == 1 and tuple(first.shape[-2:]) == (hp, wp):
            raw = first.unsqueeze(0)  # one sample without padding: no copy
        else:
            raw = first.new_zeros((len(images), first.shape[0], 3, hp, wp))
            for i, img in enumerate(images):
                raw[i, :, :, :img.shape[-2], :img.shape[-1]] = img
        return cls(raw, [tuple(img.shape[-2:]) for img in images], **kwargs)

    @property
    def shape(self) -> torch.Size:
        """(B, V, 3, Hp, Wp) of the batch."""
        return self.raw.shape

    @property
    def device(self) -> torch.device:
        """Device of the images."""
        return self.raw.device

    @property
    def num_views(self) -> int:
        """Views of the batch, flattened (``B*V``)."""
        return self.raw.shape[0] * self.raw.shape[1]

    def select_views(self, idx: Tensor) -> 'MultiViewImages':
        """The same samples with the views ``idx`` (1D index into V) only."""
        return MultiViewImages(self.raw[:, idx], self.img_shapes, self.mean, self.std,
                               self.pad_value)

    def normalized(self, start: int = 0, end: Union[int, None] = None) -> Tensor:
        """Normalised, padded float images of the flattened views ``start..end``.

        Args:
            start: first view (index into the flattened ``B*V`` views).
            end: one past the last view (None = all).

        Returns:
            Tensor: (end - start, 3, Hp, Wp) float32; the padded pixels hold ``pad_value``.
        """
        b, v = self.raw.shape[:2]
        end = b * v if end is None else end
        if not 0 <= start <= end <= b * v:
            raise ValueError(f'views {start}..{end} out of range 0..{b * v}')
        # a copy even of float images: the padding below must not write into ``raw``
        out = self.raw.flatten(0, 1)[start:end].to(torch.float32, copy=True)
        if out.shape[0] == 0:
            return out
        if self.mean is not None:
            out = (out - self.mean) / self.std
        hp, wp = out.shape[-2:]
        for i in range(start // v, (end + v - 1) // v):
            h, w = self.img_shapes[i]
            if (h, w) == (hp, wp):
                continue
            s, e = max(i * v, start) - start, min((i + 1) * v, end) - start
            out[s:e, :, h:] = self.pad_value
            out[s:e, :, :, w:] = self.pad_value
        return out

    def to_tensor(self) -> Tensor:
        """All views normalised and padded, (B, V, 3, Hp, Wp).

        What a whole-batch preprocessor would hold; the model never builds it (it normalises
        per view chunk, :meth:`normalized`).
        """
        return self.normalized().unflatten(0, self.raw.shape[:2])
