"""mmcv's ``MultiheadAttention`` run through ``scaled_dot_product_attention``.

The decoder's masked cross-attention attends 100 queries to every voxel of a level. mmcv's
layer calls ``nn.MultiheadAttention`` with its default ``need_weights=True``, which builds the
float version of the boolean mask, the scores and the softmax as three ``(B*heads, Q, keys)``
float tensors per layer (about 0.6 GB at 70k keys) only to return weights nobody reads.
:class:`ODINMaskedAttention` computes the same attention with
:func:`torch.nn.functional.scaled_dot_product_attention`: the boolean mask is taken as
``(B, 1, Q, keys)`` (one mask for all heads, no repeat), and the fused kernels (flash attention on
CPU, memory-efficient attention on CUDA) never hold the score matrix.

It is a subclass of mmcv's layer with the same constructor, submodules, parameters and
state-dict keys (``attn.in_proj_weight``, ``attn.in_proj_bias``, ``attn.out_proj.*``); outputs
equal mmcv's up to float rounding (the softmax is summed in another order). mmdet's decoder
layers build mmcv's class directly, so the head swaps its decoder's cross-attention once, after
construction, with :func:`use_odin_masked_attn` (:func:`use_mmcv_masked_attn` swaps back).
"""
from typing import Optional

import torch
import torch.nn.functional as F
from mmcv.cnn.bricks.transformer import MultiheadAttention
from mmengine.registry import MODELS
from torch import Tensor, nn

from .deform_attn_layer import swap_module_class


@MODELS.register_module()
class ODINMaskedAttention(MultiheadAttention):
    """Multi-head attention with a boolean mask shared by the heads, without attention weights.

    Arguments, parameters and initialisation are those of mmcv's ``MultiheadAttention``
    (packed ``attn.in_proj_weight`` = [W_q; W_k; W_v]; keys and values of ``embed_dims``
    channels, no ``bias_k``/``add_zero_attn``).
    """

    def forward(self,
                query: Tensor,
                key: Optional[Tensor] = None,
                value: Optional[Tensor] = None,
                identity: Optional[Tensor] = None,
                query_pos: Optional[Tensor] = None,
                key_pos: Optional[Tensor] = None,
                attn_mask: Optional[Tensor] = None,
                key_padding_mask: Optional[Tensor] = None,
                **kwargs) -> Tensor:
        """Attention of ``query`` over ``key``/``value`` (as mmcv's ``MultiheadAttention``).

        Args:
            query: ``(bs, Q, C)`` with ``batch_first`` (else ``(Q, bs, C)``).
            key: ``(bs, K, C)`` (or ``(K, bs, C)``); defaults to ``query``.
            value: same shape as ``key``; defaults to ``key``.
            identity: added to the output; defaults to ``query`` (before ``query_pos``).
            query_pos: positional encoding added to ``query``.
            key_pos: positional encoding added to ``key``; defaults to ``query_pos`` when it
                has ``key``'s shape.
            attn_mask: bool, True = not attended: ``(Q, K)``, ``(bs*heads, Q, K)`` (torch's
                convention) or ``(bs, 1 or heads, Q, K)`` (one mask for all heads).
            key_padding_mask: ``(bs, K)`` bool, True where a key is padding.
            **kwargs: ignored (mmcv's deprecated ``residual`` is an alias of ``identity``).

        Returns:
            Tensor of ``query``'s shape.

        Raises:
            ValueError: a float mask or a mask of another shape.
        """
        if identity is None and kwargs.get('residual') is not None:
            identity = kwargs['residual']
        if key is None:
            key = query
        if value is None:
            value = key
        if identity is None:
            identity = query
        if key_pos is None and query_pos is not None and query_pos.shape == key.shape:
            key_pos = query_pos
        if query_pos is not None:
            query = query + query_pos
        if key_pos is not None:
            key = key + key_pos
        if not self.batch_first:  # (n, bs, C) -> (bs, n, C)
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        bs, num_query, channels = query.shape
        heads = self.num_heads
        w_q, w_k, w_v = self.attn.in_proj_weight.chunk(3)
        b_q, b_k, b_v = (self.attn.in_proj_bias.chunk(3) if self.attn.in_proj_bias is not None
                         else (None, None, None))
        q = F.linear(query, w_q, b_q).view(bs, num_query, heads, -1).transpose(1, 2)
        k = F.linear(key, w_k, b_k).view(bs, key.shape[1], heads, -1).transpose(1, 2)
        v = F.linear(value, w_v, b_v).view(bs, value.shape[1], heads, -1).transpose(1, 2)
        allowed = self._allowed(attn_mask, key_padding_mask, bs, num_query, key.shape[1])
        dropout = self.attn.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout)
        out = self.attn.out_proj(out.transpose(1, 2).reshape(bs, num_query, channels))
        if not self.batch_first:
            out = out.transpose(0, 1)
        return identity + self.dropout_layer(self.proj_drop(out))

    def _allowed(self, attn_mask: Optional[Tensor], key_padding_mask: Optional[Tensor], bs: int,
                 num_query: int, num_key: int) -> Optional[Tensor]:
        """The attended entries as one bool ``(bs, 1 or heads, Q, K)`` mask (None = all)."""
        allowed = None
        if attn_mask is not None:
            if attn_mask.dtype != torch.bool:
                raise ValueError(f'{type(self).__name__} takes a bool attn_mask (True = not '
                                 f'attended), got {attn_mask.dtype}')
            shape = tuple(attn_mask.shape)
            if attn_mask.dim() == 2 and shape == (num_query, num_key):
                allowed = ~attn_mask.view(1, 1, num_query, num_key)
            elif attn_mask.dim() == 3 and shape == (bs * self.num_heads, num_query, num_key):
                allowed = ~attn_mask.view(bs, self.num_heads, num_query, num_key)
            elif (attn_mask.dim() == 4 and shape[0] == bs and shape[1] in (1, self.num_heads)
                  and shape[2:] == (num_query, num_key)):
                allowed = ~attn_mask
            else:
                raise ValueError(
                    f'attn_mask must be (Q, K), (bs*heads, Q, K) or (bs, 1 or heads, Q, K) with '
                    f'bs={bs}, heads={self.num_heads}, Q={num_query}, K={num_key}; got {shape}')
        if key_padding_mask is not None:
            if tuple(key_padding_mask.shape) != (bs, num_key):
                raise ValueError(f'key_padding_mask must be (bs, K) = ({bs}, {num_key}), got '
                                 f'{tuple(key_padding_mask.shape)}')
            keep = ~key_padding_mask.bool().view(bs, 1, 1, num_key)
            allowed = keep if allowed is None else allowed & keep
        return allowed


def _check_supported(layer: MultiheadAttention) -> None:
    attn = layer.attn
    if not attn._qkv_same_embed_dim or attn.bias_k is not None or attn.add_zero_attn:
        raise ValueError('ODINMaskedAttention needs keys and values of embed_dims channels and '
                         'no bias_k/add_zero_attn')


def use_odin_masked_attn(decoder: nn.Module) -> int:
    """Swap the ``cross_attn`` of every layer of a Mask2Former decoder for ours.

    The new layer takes over the old one's submodules (the same parameter objects), so state
    dicts are unchanged.

    Args:
        decoder: mmdet's ``Mask2FormerTransformerDecoder`` (anything with ``layers`` whose
            items have a ``cross_attn``).

    Returns:
        The number of layers swapped.
    """
    swapped = 0
    for layer in decoder.layers:
        if type(layer.cross_attn) is MultiheadAttention:
            _check_supported(layer.cross_attn)
            layer.cross_attn = swap_module_class(layer.cross_attn, ODINMaskedAttention)
            swapped += 1
    return swapped


def use_mmcv_masked_attn(decoder: nn.Module) -> int:
    """Swap our cross-attention layers of a decoder back to mmcv's ``MultiheadAttention``.

    mmcv's layer takes a ``(bs*heads, Q, K)`` or ``(Q, K)`` mask only.

    Returns:
        The number of layers swapped.
    """
    swapped = 0
    for layer in decoder.layers:
        if type(layer.cross_attn) is ODINMaskedAttention:
            layer.cross_attn = swap_module_class(layer.cross_attn, MultiheadAttention)
            swapped += 1
    return swapped
