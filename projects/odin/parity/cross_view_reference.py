"""Straightforward re-implementation of the official cross-view layers (reference for tests/bench).

Written from the description in docs/specification.md §2.4, with the official module and
parameter names, so an official ``CrossViewPAnet`` state dict loads into it unchanged. It does what
the official code does: gather the ``k`` neighbour features, add the relative-position encoding,
and run ``nn.MultiheadAttention`` with one query and ``k`` keys per voxel - i.e. it projects every
neighbour's key and value once per query. Slow and memory hungry on purpose; use
:class:`projects.odin.layers.CrossViewAttention` in models.

A reference of the tools (``tools/analysis_tools/benchmark_ops.py``, ``benchmark_model.py``) and
the tests, not a model component: a model build never imports it. Importing this module registers
:class:`NaiveCrossViewAttention` in mmdet3d's ``MODELS`` (when the OpenMMLab stack is usable), so
a config can select it as a fusion layer after
``custom_imports=dict(imports=['projects.odin', 'projects.odin.parity.cross_view_reference'])``.
It used to be ``projects.odin.layers.cross_view_reference``; that path is an alias of it.
"""
import importlib.util

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ['NaiveCrossViewAttention']


class _PELayer(nn.Module):

    def __init__(self, embed_dims: int) -> None:
        super().__init__()
        self.position_embedding_head = nn.Sequential(
            nn.Linear(3, embed_dims), nn.LayerNorm(embed_dims), nn.ReLU(inplace=True),
            nn.Linear(embed_dims, embed_dims))

    def forward(self, xyz: Tensor) -> Tensor:
        return self.position_embedding_head(xyz)


class _CrossAttention(nn.Module):

    def __init__(self, embed_dims: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(embed_dims, num_heads, dropout=dropout)
        self.norm = nn.LayerNorm(embed_dims)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tgt: Tensor, memory: Tensor, pos: Tensor, query_pos: Tensor) -> Tensor:
        # pre-norm on the query only; tgt (1, N, C), memory/pos (k, N, C)
        tgt2 = self.norm(tgt)
        tgt2 = self.multihead_attn(query=tgt2 + query_pos, key=memory + pos, value=memory)[0]
        return tgt + self.dropout(tgt2)


class _FFN(nn.Module):

    def __init__(self, embed_dims: int, ffn_dims: int, dropout: float) -> None:
        super().__init__()
        self.linear1 = nn.Linear(embed_dims, ffn_dims)
        self.linear2 = nn.Linear(ffn_dims, embed_dims)
        self.norm = nn.LayerNorm(embed_dims)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tgt: Tensor) -> Tensor:
        tgt2 = self.linear2(self.dropout(F.relu(self.linear1(self.norm(tgt)))))
        return tgt + self.dropout(tgt2)


class NaiveCrossViewAttention(nn.Module):
    """Official-formulation cross-view block on voxels (same interface as CrossViewAttention).

    Args:
        embed_dims: channels ``C``.
        num_layers: attention layers.
        num_heads: attention heads.
        ffn_dims: FFN hidden channels.
        dropout: dropout probability.
    """

    def __init__(self, embed_dims: int = 256, num_layers: int = 1, num_heads: int = 8,
                 ffn_dims: int = 1024, dropout: float = 0.0) -> None:
        super().__init__()
        self.cross_view_attention_layers = nn.ModuleList(
            _CrossAttention(embed_dims, num_heads, dropout) for _ in range(num_layers))
        self.ffn_layers = nn.ModuleList(
            _FFN(embed_dims, ffn_dims, dropout) for _ in range(num_layers))
        self.layer_norms = nn.ModuleList(nn.LayerNorm(embed_dims) for _ in range(num_layers))
        self.pe_layer = _PELayer(embed_dims)

    def forward(self, voxel_feats: Tensor, voxel_xyz: Tensor, neighbor_idx: Tensor) -> Tensor:
        """``(N, C), (N, 3), (N, k) -> (N, C)``; see CrossViewAttention.forward."""
        neighbor_idx = neighbor_idx.long()
        rel = voxel_xyz[neighbor_idx] - voxel_xyz[:, None]                 # (N, k, 3)
        pos = self.pe_layer(rel).transpose(0, 1)                           # (k, N, C)
        query_pos = self.pe_layer(torch.zeros_like(voxel_xyz[:1]))[None]  # (1, 1, C)
        feats = voxel_feats[None]                                          # (1, N, C)
        for attn, ffn, norm in zip(self.cross_view_attention_layers, self.ffn_layers,
                                   self.layer_norms):
            memory = feats[0][neighbor_idx].transpose(0, 1)                # (k, N, C)
            feats = attn(feats, memory, pos, query_pos)
            feats = norm(ffn(feats))
        return feats[0]


if importlib.util.find_spec('mmdet3d') is not None:
    import projects.odin as _odin

    if _odin.STACK_IMPORT_ERROR is None:  # as the package's own registrations
        from mmdet3d.registry import MODELS

        MODELS.register_module(module=NaiveCrossViewAttention, force=True)
