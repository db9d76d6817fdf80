"""kNN cross-view attention over voxels (ODIN's 3D fusion block), exact and fast.

The official layer (docs/specification.md §2.4) computes for every voxel ``i`` and its ``k``
neighbours ``j``::

    MHA(query = LN(f_i) + PE(0), key = f_j + PE(x_j - x_i), value = f_j)

with ``PE = Linear(3->C) -> LN -> ReLU -> Linear(C->C)``, then a pre-norm FFN and an extra
LayerNorm. It gathers the ``k`` neighbour features per query and projects keys and values ``k``
times per voxel (``~3 N k C^2`` multiply-adds per layer, plus ``N k C^2`` for ``PE``).

This module computes the same numbers with (per layer) five ``N x C x C`` products and
``O(N k C)`` work:

* keys and values are projected once per voxel: ``K = W_k f + b_k``, ``V = W_v f + b_v``;
* with ``P_ij = ReLU(LN(W_1 (x_j - x_i) + b_1))`` (the PE hidden) and ``PE_ij = W_2 P_ij + b_2``,
  the score of head ``h`` is
  ``q_h . (K_j,h + W_k,h W_2 P_ij + W_k,h b_2) = q_h . K_j,h + r_h . P_ij + q_h . u_h`` where
  ``r_h = (W_k,h W_2)^T q_h`` (the ``C x C`` matrix ``W_k W_2`` is folded once per forward) and
  ``u = W_k b_2``; the ``N k C``-sized ``PE_ij`` is never formed;
* the output is ``sum_j a_hj V_j,h`` gathered from the once-projected values.

The three neighbourhood terms run in :mod:`projects.odin.ops` primitives
(:func:`~projects.odin.ops.knn_gather_dot`, :func:`~projects.odin.ops.knn_pe_score`,
:func:`~projects.odin.ops.knn_gather_wsum`) that never materialise ``(N, k, C)`` tensors and save
only their inputs for backward (``P_ij`` and ``r`` are recomputed), which keeps both time and
memory low. Everything after the key and value projections is row-wise in the query voxel, so it
runs on chunks of ``row_chunk`` voxels (the FFN hidden of all voxels, ``ffn_dims`` floats each,
is never held). Forward and backward go through autograd.
"""
import math
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from projects.odin.ops import knn_gather_dot, knn_gather_wsum, knn_pe_score

__all__ = ['RelativePositionMLP', 'KNNCrossAttentionLayer', 'CrossViewAttention',
           'convert_official_cross_view_state_dict']


class RelativePositionMLP(nn.Module):
    """Learned relative-position encoding ``fc2(ReLU(norm(fc1(rel))))`` (3 -> C -> C).

    Args:
        embed_dims: output channels ``C``.
    """

    def __init__(self, embed_dims: int = 256) -> None:
        super().__init__()
        self.fc1 = nn.Linear(3, embed_dims)
        self.norm = nn.LayerNorm(embed_dims)
        self.fc2 = nn.Linear(embed_dims, embed_dims)

    def hidden(self, rel: Tensor) -> Tensor:
        """``ReLU(norm(fc1(rel)))``: ``(..., 3) -> (..., C)``."""
        return F.relu(self.norm(self.fc1(rel)))

    def forward(self, rel: Tensor) -> Tensor:
        """Encode offsets ``(..., 3) -> (..., C)``."""
        return self.fc2(self.hidden(rel))


class KNNCrossAttentionLayer(nn.Module):
    """One official cross-view layer: pre-norm kNN cross-attention, pre-norm FFN, extra LayerNorm.

    Parameters mirror ``nn.MultiheadAttention`` (packed ``in_proj_weight`` = [W_q; W_k; W_v]).

    Args:
        embed_dims: channels ``C``.
        num_heads: attention heads.
        ffn_dims: FFN hidden channels.
        dropout: dropout of the attention weights, the attention output and the FFN.
        row_chunk: voxels per chunk of the row-wise part of the layer (everything after the
            key and value projections: query, scores, output, FFN), so that its temporaries
            (e.g. the FFN hidden, ``ffn_dims`` floats per voxel) exist for one chunk at a time;
            0 = all voxels at once. Results equal the unchunked layer's up to float rounding.

    Raises:
        ValueError: ``embed_dims`` not divisible by ``num_heads``, or a negative ``row_chunk``.
    """

    def __init__(self, embed_dims: int = 256, num_heads: int = 8, ffn_dims: int = 1024,
                 dropout: float = 0.0, row_chunk: int = 16384) -> None:
        super().__init__()
        if embed_dims % num_heads:
            raise ValueError(f'embed_dims={embed_dims} not divisible by num_heads={num_heads}')
        if row_chunk < 0:
            raise ValueError(f'row_chunk must be >= 0 (0 = all voxels), got {row_chunk}')
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.dropout = dropout
        self.row_chunk = row_chunk
        self.attn_norm = nn.LayerNorm(embed_dims)
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dims, embed_dims))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dims))
        self.out_proj = nn.Linear(embed_dims, embed_dims)
        self.ffn_norm = nn.LayerNorm(embed_dims)
        self.linear1 = nn.Linear(embed_dims, ffn_dims)
        self.linear2 = nn.Linear(ffn_dims, embed_dims)
        self.out_norm = nn.LayerNorm(embed_dims)
        self.init_weights()

    def init_weights(self) -> None:
        """Xavier-uniform for every >1-D parameter (official init), zero projection biases."""
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, feats: Tensor, neighbor_idx: Tensor, rel: Tensor,
                pos_enc: 'RelativePositionMLP', query_pe: Tensor) -> Tensor:
        """Update voxel features.

        Args:
            feats: ``(N, C)`` voxel features.
            neighbor_idx: ``(N, k)`` int64 neighbour rows of ``feats``.
            rel: ``(N, k, 3)`` offsets ``x_j - x_i``.
            pos_enc: the block's relative-position MLP (shared by all layers).
            query_pe: ``(C,)`` ``PE(0)``.

        Returns:
            ``(N, C)`` updated features.
        """
        n, c = feats.shape
        h = self.num_heads
        w_k, w_v = self.in_proj_weight.chunk(3)[1:]
        b_k, b_v = self.in_proj_bias.chunk(3)[1:]
        key = F.linear(feats, w_k, b_k)           # projected once per voxel
        value = F.linear(feats, w_v, b_v)
        fc2 = pos_enc.fc2
        # q_h . W_k,h (W_2 P_ij + b_2) = (W_k,h W_2)^T q_h . P_ij + q_h . (W_k,h b_2)
        m = (w_k @ fc2.weight).view(h, c // h, c)
        u = (w_k @ fc2.bias).view(1, h, c // h)
        step = self.row_chunk if 0 < self.row_chunk < n else max(n, 1)
        outs = [self._rows(feats[s:s + step], neighbor_idx[s:s + step], rel[s:s + step], key,
                           value, m, u, pos_enc, query_pe) for s in range(0, max(n, 1), step)]
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def _rows(self, feats: Tensor, neighbor_idx: Tensor, rel: Tensor, key: Tensor,
              value: Tensor, m: Tensor, u: Tensor, pos_enc: 'RelativePositionMLP',
              query_pe: Tensor) -> Tensor:
        """The layer for some query voxels (rows), reading the keys and values of all voxels.

        Args:
            feats: ``(n, C)`` features of the query voxels.
            neighbor_idx: ``(n, k)`` their neighbour rows of ``key``/``value``.
            rel: ``(n, k, 3)`` their neighbour offsets.
            key: ``(N, C)`` projected keys of all voxels.
            value: ``(N, C)`` projected values of all voxels.
            m: ``(H, d, C)`` the folded ``W_k,h W_2``.
            u: ``(1, H, d)`` the folded ``W_k b_2``.
            pos_enc: the block's relative-position MLP.
            query_pe: ``(C,)`` ``PE(0)``.

        Returns:
            ``(n, C)`` updated features of the query voxels.
        """
        n, c = feats.shape
        h = self.num_heads
        drop = self.dropout if self.training else 0.0
        scale = 1.0 / math.sqrt(c // h)
        w_q = self.in_proj_weight[:c]
        b_q = self.in_proj_bias[:c]
        q = F.linear(self.attn_norm(feats) + query_pe, w_q * scale, b_q * scale)
        scores = knn_gather_dot(q, key, neighbor_idx, h)
        scores = scores + knn_pe_score(q, m, rel, pos_enc.fc1.weight, pos_enc.fc1.bias,
                                       pos_enc.norm.weight, pos_enc.norm.bias, pos_enc.norm.eps)
        scores = scores + (q.view(n, h, c // h) * u).sum(-1, keepdim=True)  # constant in j
        attn = torch.softmax(scores, dim=-1)
        if drop > 0:
            attn = F.dropout(attn, drop, True)
        out = self.out_proj(knn_gather_wsum(attn, value, neighbor_idx))
        feats = feats + F.dropout(out, drop, self.training)
        ffn = self.linear2(F.dropout(F.relu(self.linear1(self.ffn_norm(feats))), drop,
                                     self.training))
        feats = feats + F.dropout(ffn, drop, self.training)
        return self.out_norm(feats)


class CrossViewAttention(nn.Module):
    """ODIN's 3D cross-view fusion (official ``CrossViewPAnet`` layers) on voxels.

    Voxel pooling, kNN and the broadcast back to pixels are done by the caller (so a level's
    voxelisation and kNN are shared by all blocks of that level).

    Args:
        embed_dims: channels ``C`` (256).
        num_layers: number of attention layers (official: 2/6/2 in the backbone, 1 in the pixel
            decoder).
        num_heads: attention heads (8).
        ffn_dims: FFN hidden channels (1024).
        num_neighbors: ``k`` the caller's kNN uses, checked against ``neighbor_idx``; None
            accepts the caller's k (the model configures k once, on the detector).
        dropout: dropout probability (official 0.0).
        row_chunk: voxels per chunk of each layer's row-wise part (see
            :class:`KNNCrossAttentionLayer`; 0 = all voxels at once).
    """

    def __init__(self, embed_dims: int = 256, num_layers: int = 1, num_heads: int = 8,
                 ffn_dims: int = 1024, num_neighbors: Optional[int] = None,
                 dropout: float = 0.0, row_chunk: int = 16384) -> None:
        super().__init__()
        self.embed_dims = embed_dims
        self.num_neighbors = num_neighbors
        self.pos_enc = RelativePositionMLP(embed_dims)
        self.layers = nn.ModuleList(
            KNNCrossAttentionLayer(embed_dims, num_heads, ffn_dims, dropout, row_chunk)
            for _ in range(num_layers))

    def forward(self, voxel_feats: Tensor, voxel_xyz: Tensor, neighbor_idx: Tensor) -> Tensor:
        """Fuse voxel features across views.

        Args:
            voxel_feats: ``(N_vox, C)`` voxel features of all scenes (concatenated).
            voxel_xyz: ``(N_vox, 3)`` voxel centroids.
            neighbor_idx: ``(N_vox, k)`` int64 global rows of the k nearest voxels of the same
                scene (self included), e.g. from :func:`projects.odin.ops.knn`.

        Returns:
            ``(N_vox, C)`` fused voxel features.
        """
        n = voxel_feats.shape[0]
        if voxel_feats.dim() != 2 or voxel_feats.shape[1] != self.embed_dims:
            raise ValueError(f'voxel_feats must be (N, {self.embed_dims}), '
                             f'got {tuple(voxel_feats.shape)}')
        if voxel_xyz.shape != (n, 3):
            raise ValueError(f'voxel_xyz must be ({n}, 3), got {tuple(voxel_xyz.shape)}')
        k = self.num_neighbors if self.num_neighbors is not None else neighbor_idx.shape[-1]
        if neighbor_idx.dim() != 2 or neighbor_idx.shape != (n, k):
            raise ValueError(f'neighbor_idx must be ({n}, {k}), '
                             f'got {tuple(neighbor_idx.shape)}')
        neighbor_idx = neighbor_idx.long()
        if n and (int(neighbor_idx.min()) < 0 or int(neighbor_idx.max()) >= n):
            raise ValueError(f'neighbor_idx values must lie in [0, {n}), got '
                             f'[{int(neighbor_idx.min())}, {int(neighbor_idx.max())}]')
        rel = (voxel_xyz[neighbor_idx] - voxel_xyz[:, None]).to(voxel_feats.dtype)  # x_j - x_i
        query_pe = self.pos_enc(voxel_feats.new_zeros(1, 3))[0]
        feats = voxel_feats
        for layer in self.layers:
            feats = layer(feats, neighbor_idx, rel.detach(), self.pos_enc, query_pe)
        return feats


# official CrossViewPAnet key -> ours (layer index substituted)
_LAYER_KEY_MAP = {
    'cross_view_attention_layers.{i}.multihead_attn.in_proj_weight': 'layers.{i}.in_proj_weight',
    'cross_view_attention_layers.{i}.multihead_attn.in_proj_bias': 'layers.{i}.in_proj_bias',
    'cross_view_attention_layers.{i}.multihead_attn.out_proj.weight': 'layers.{i}.out_proj.weight',
    'cross_view_attention_layers.{i}.multihead_attn.out_proj.bias': 'layers.{i}.out_proj.bias',
    'cross_view_attention_layers.{i}.norm.weight': 'layers.{i}.attn_norm.weight',
    'cross_view_attention_layers.{i}.norm.bias': 'layers.{i}.attn_norm.bias',
    'ffn_layers.{i}.linear1.weight': 'layers.{i}.linear1.weight',
    'ffn_layers.{i}.linear1.bias': 'layers.{i}.linear1.bias',
    'ffn_layers.{i}.linear2.weight': 'layers.{i}.linear2.weight',
    'ffn_layers.{i}.linear2.bias': 'layers.{i}.linear2.bias',
    'ffn_layers.{i}.norm.weight': 'layers.{i}.ffn_norm.weight',
    'ffn_layers.{i}.norm.bias': 'layers.{i}.ffn_norm.bias',
    'layer_norms.{i}.weight': 'layers.{i}.out_norm.weight',
    'layer_norms.{i}.bias': 'layers.{i}.out_norm.bias',
}
_PE_KEY_MAP = {
    'pe_layer.position_embedding_head.0.weight': 'pos_enc.fc1.weight',
    'pe_layer.position_embedding_head.0.bias': 'pos_enc.fc1.bias',
    'pe_layer.position_embedding_head.1.weight': 'pos_enc.norm.weight',
    'pe_layer.position_embedding_head.1.bias': 'pos_enc.norm.bias',
    'pe_layer.position_embedding_head.3.weight': 'pos_enc.fc2.weight',
    'pe_layer.position_embedding_head.3.bias': 'pos_enc.fc2.bias',
}


def _official_key_to_ours(key: str) -> str:
    if key in _PE_KEY_MAP:
        return _PE_KEY_MAP[key]
    parts = key.split('.')
    if len(parts) > 1 and parts[1].isdigit():
        template = '.'.join([parts[0], '{i}'] + parts[2:])
        if template in _LAYER_KEY_MAP:
            return _LAYER_KEY_MAP[template].format(i=parts[1])
    raise KeyError(key)


def convert_official_cross_view_state_dict(sd: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Map an official ``CrossViewPAnet`` state dict (its own keys) to :class:`CrossViewAttention`.

    Example: ``cross_view_attention_layers.0.multihead_attn.in_proj_weight`` ->
    ``layers.0.in_proj_weight``, ``ffn_layers.1.norm.bias`` -> ``layers.1.ffn_norm.bias``,
    ``layer_norms.0.weight`` -> ``layers.0.out_norm.weight``,
    ``pe_layer.position_embedding_head.3.weight`` -> ``pos_enc.fc2.weight``.

    Args:
        sd: the block's state dict (keys relative to the block, e.g. with the
            ``backbone.cross_view_attn.res3.`` prefix already stripped).

    Returns:
        a new dict with our keys (same tensors).

    Raises:
        KeyError: listing every key that has no counterpart.
    """
    out, unmapped = {}, []
    for key, value in sd.items():
        try:
            out[_official_key_to_ours(key)] = value
        except KeyError:
            unmapped.append(key)
    if unmapped:
        raise KeyError(f'unmapped official cross-view keys: {unmapped}')
    return out
