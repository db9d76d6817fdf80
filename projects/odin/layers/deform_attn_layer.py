"""mmcv's ``MultiScaleDeformableAttention`` with its core op dispatched by device.

:class:`ODINMultiScaleDeformableAttention` is a subclass of mmcv's layer with the same
constructor, submodules, parameters and state-dict keys; only the core op differs:
:func:`projects.odin.ops.multi_scale_deform_attn` (our compiled kernel on CPU, mmcv's own
CUDA op on GPUs) instead of mmcv's CPU fallback (``grid_sample`` per level). mmcv itself is not
modified: mmdet's Deformable-DETR layers build mmcv's class directly, so the pixel decoder
swaps its encoder's layers once, after construction, with :func:`use_odin_ms_deform_attn`
(:func:`use_mmcv_ms_deform_attn` swaps back, e.g. to benchmark mmcv's path).

This module imports mmcv; :mod:`projects.odin.layers` imports it only when mmcv is installed.
"""
import copy
from typing import Optional, Type

import torch
from mmcv.ops import MultiScaleDeformableAttention
from mmengine.registry import MODELS
from torch import Tensor, nn

from projects.odin.ops import multi_scale_deform_attn


@MODELS.register_module()
class ODINMultiScaleDeformableAttention(MultiScaleDeformableAttention):
    """Deformable-DETR attention whose core op runs our CPU kernel (mmcv's op on CUDA).

    Arguments, parameters, initialisation and outputs are those of mmcv's
    ``MultiScaleDeformableAttention`` (outputs equal up to float rounding: the kernel sums the
    samples in another order than ``grid_sample``).
    """

    def forward(self,
                query: Tensor,
                key: Optional[Tensor] = None,
                value: Optional[Tensor] = None,
                identity: Optional[Tensor] = None,
                query_pos: Optional[Tensor] = None,
                key_padding_mask: Optional[Tensor] = None,
                reference_points: Optional[Tensor] = None,
                spatial_shapes: Optional[Tensor] = None,
                level_start_index: Optional[Tensor] = None,
                **kwargs) -> Tensor:
        """Deformable attention of ``query`` over the multi-level ``value`` maps.

        Args:
            query: ``(num_query, bs, C)``, or ``(bs, num_query, C)`` with ``batch_first``.
            key: unused (the keys are the sampled values), kept for mmcv's interface.
            value: ``(num_value, bs, C)`` (or batch first); defaults to ``query``.
            identity: added to the output; defaults to ``query`` (before ``query_pos``).
            query_pos: positional encoding added to ``query``, same shape.
            key_padding_mask: ``(bs, num_value)`` bool, True where a value is padding (zeroed).
            reference_points: ``(bs, num_query, num_levels, 2)`` normalised points, or
                ``(..., 4)`` boxes ``(cx, cy, w, h)``.
            spatial_shapes: ``(num_levels, 2)`` int64 ``(h, w)`` of every level.
            level_start_index: ``(num_levels,)`` first value row of every level.
            **kwargs: ignored (mmdet passes e.g. ``valid_ratios``), except mmcv's deprecated
                ``residual``, an alias of ``identity``.

        Returns:
            Tensor of ``query``'s shape.
        """
        if identity is None and kwargs.get('residual') is not None:
            identity = kwargs['residual']
        if value is None:
            value = query
        if identity is None:
            identity = query
        if query_pos is not None:
            query = query + query_pos
        if not self.batch_first:  # (n, bs, C) -> (bs, n, C)
            query = query.permute(1, 0, 2)
            value = value.permute(1, 0, 2)
        bs, num_query, _ = query.shape
        num_value = value.shape[1]
        heads, levels, points = self.num_heads, self.num_levels, self.num_points

        value = self.value_proj(value)
        if key_padding_mask is not None:
            value = value.masked_fill(key_padding_mask[..., None], 0.0)
        value = value.view(bs, num_value, heads, -1)
        offsets = self.sampling_offsets(query).view(bs, num_query, heads, levels, points, 2)
        weights = self.attention_weights(query).view(bs, num_query, heads, levels * points)
        weights = weights.softmax(-1).view(bs, num_query, heads, levels, points)
        locations = self._sampling_locations(reference_points, offsets, spatial_shapes)

        output = multi_scale_deform_attn(value, spatial_shapes, level_start_index, locations,
                                         weights, self.im2col_step)
        output = self.output_proj(output)
        if not self.batch_first:
            output = output.permute(1, 0, 2)
        return self.dropout(output) + identity

    def _sampling_locations(self, reference_points: Tensor, offsets: Tensor,
                            spatial_shapes: Tensor) -> Tensor:
        """Normalised sampling locations ``(bs, nq, heads, levels, points, 2)``.

        Offsets are in pixels of each level for reference points, and in units of half the box
        size divided by ``num_points`` for reference boxes (Deformable DETR).
        """
        if reference_points.shape[-1] == 2:
            # (h, w) -> (w, h): offsets are (x, y)
            normalizer = torch.stack([spatial_shapes[..., 1], spatial_shapes[..., 0]], -1)
            return reference_points[:, :, None, :, None, :] \
                + offsets / normalizer[None, None, None, :, None, :]
        if reference_points.shape[-1] == 4:
            return reference_points[:, :, None, :, None, :2] \
                + offsets / self.num_points * reference_points[:, :, None, :, None, 2:] * 0.5
        raise ValueError('reference_points must end in 2 (points) or 4 (boxes), got shape '
                         f'{tuple(reference_points.shape)}')


def swap_module_class(child: nn.Module, target: Type[nn.Module]) -> nn.Module:
    """A ``target`` instance that takes over ``child``'s state.

    The new module gets the old one's attributes, submodules, parameter objects, devices, dtypes
    and hooks (containers copied shallowly), so state dicts and outputs are unchanged; it is
    meant for a subclass (or the base class) of ``type(child)`` with the same constructor.
    """
    new = target.__new__(target)
    new.__dict__.update({k: copy.copy(v) if isinstance(v, (dict, set)) else v
                         for k, v in vars(child).items()})
    return new


def _swap(root: nn.Module, source: Type[nn.Module], target: Type[nn.Module]) -> int:
    """Replace every module of exactly class ``source`` under ``root`` by a ``target``.

    See :func:`swap_module_class`.
    """
    swapped = 0
    for parent in list(root.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not source:
                continue
            setattr(parent, name, swap_module_class(child, target))
            swapped += 1
    return swapped


def use_odin_ms_deform_attn(module: nn.Module) -> int:
    """Swap mmcv's ``MultiScaleDeformableAttention`` layers under ``module`` for ours.

    Args:
        module: e.g. a pixel decoder's encoder.

    Returns:
        The number of layers swapped.
    """
    return _swap(module, MultiScaleDeformableAttention, ODINMultiScaleDeformableAttention)


def use_mmcv_ms_deform_attn(module: nn.Module) -> int:
    """Swap our layers under ``module`` back to mmcv's class (its own CPU path on CPU).

    Returns:
        The number of layers swapped.
    """
    return _swap(module, ODINMultiScaleDeformableAttention, MultiScaleDeformableAttention)
