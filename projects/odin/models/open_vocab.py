"""Open-vocabulary class logits of ODIN (docs/specification.md §2.9).

The vocabulary of a batch is turned into one caption: the class names in label order, cleaned
(parenthesised parts removed, ``_`` -> space, double spaces collapsed) and joined by ``'. '``,
followed by a background class (official: ``'__background__'``, cleaned to ``' background '``).
Every token of the tokenised caption belongs to at most one class (the class whose name span its
character offsets overlap); separators, special and padding tokens belong to none.

Class logits: ``class_embed`` (Linear C->C) of the decoder-normed query, L2-normalised, dot the
L2-normalised projected text tokens, divided by a temperature (0.07) -> token logits; the logit of
a class is the MEAN of its tokens' logits. The background class is the last one and plays the
no-object role of closed-set logits (B, Q, K+1).
"""
import re
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn.bricks.transformer import MultiheadAttention
from mmengine.model import BaseModule
from torch import Tensor

__all__ = [
    'clean_class_name', 'build_caption', 'token_class_map', 'pool_token_logits',
    'open_vocab_class_logits', 'TextCrossAttentionLayer', 'BACKGROUND_NAME'
]

#: name of the extra class appended to every vocabulary (official spelling)
BACKGROUND_NAME = '__background__'


def clean_class_name(name: str) -> str:
    """Official caption cleaning: drop ``(...)``, ``_`` -> space, double spaces -> one."""
    name = re.sub(r'\(.*\)', '', name)
    name = name.replace('_', ' ')
    return name.replace('  ', ' ')


def build_caption(class_names: Sequence[str],
                  background_name: Optional[str] = BACKGROUND_NAME,
                  separator: str = '. ') -> Tuple[str, List[Tuple[int, int]]]:
    """Caption of a vocabulary and the character span of every class name in it.

    Args:
        class_names: the K class names in label order.
        background_name: name of the appended background class (None: no background).
        separator: text between two names.

    Returns:
        tuple: the caption and K (+1) ``(start, end)`` character spans, background last.

    Raises:
        ValueError: empty vocabulary or a name that is empty after cleaning.
    """
    if len(class_names) == 0:
        raise ValueError('open-vocabulary caption: the vocabulary is empty')
    names = list(class_names) + ([background_name] if background_name is not None else [])
    caption, spans = '', []
    for i, name in enumerate(names):
        cleaned = clean_class_name(str(name))
        if not cleaned.strip():
            raise ValueError(f'open-vocabulary caption: class {i} ({name!r}) is empty after '
                             'cleaning')
        if i:
            caption += separator
        spans.append((len(caption), len(caption) + len(cleaned)))
        caption += cleaned
    return caption, spans


def token_class_map(offsets: Sequence[Tuple[int, int]], spans: Sequence[Tuple[int, int]],
                    class_names: Optional[Sequence[str]] = None) -> Tensor:
    """Which tokens belong to which class.

    A token belongs to class c iff its (non-empty) character span overlaps class c's span; the
    special tokens (``<s>``, ``</s>``, padding: empty offsets) and separators belong to none.

    Args:
        offsets: per token ``(start, end)`` character offsets (tokenizer ``offset_mapping``), L.
        spans: per class ``(start, end)`` character span (:func:`build_caption`), K+1.
        class_names: names for error messages (optional).

    Returns:
        Tensor: boolean map of shape (K+1, L).

    Raises:
        ValueError: a class owns no token (e.g. cut off by the maximum sequence length).
    """
    tok = torch.as_tensor([list(o) for o in offsets], dtype=torch.long).view(-1, 2)
    sp = torch.as_tensor([list(s) for s in spans], dtype=torch.long).view(-1, 2)
    nonempty = tok[:, 1] > tok[:, 0]
    overlap = (tok[None, :, 0] < sp[:, None, 1]) & (tok[None, :, 1] > sp[:, None, 0])
    pos_map = overlap & nonempty[None]
    empty = torch.nonzero(pos_map.sum(1) == 0).flatten().tolist()
    if empty:
        names = [class_names[i] if class_names is not None and i < len(class_names) else
                 f'#{i}' for i in empty]
        raise ValueError(f'open-vocabulary caption: no token for class(es) {names} '
                         f'(indices {empty}); was the caption truncated?')
    return pos_map


def pool_token_logits(token_logits: Tensor, pos_map: Tensor) -> Tensor:
    """Per-class logit = mean of the logits of the class's tokens.

    Args:
        token_logits: shape (B, Q, L).
        pos_map: boolean token-to-class map, shape (K+1, L).

    Returns:
        Tensor: class logits, shape (B, Q, K+1).
    """
    weights = pos_map.to(token_logits.dtype)
    weights = weights / weights.sum(1, keepdim=True).clamp(min=1)
    return torch.einsum('bql,kl->bqk', token_logits, weights)


def open_vocab_class_logits(query_embed: Tensor, text_feats: Tensor, pos_map: Tensor,
                            temperature: float = 0.07) -> Tensor:
    """Cosine-similarity class logits.

    Args:
        query_embed: ``class_embed`` of the decoder-normed queries, shape (B, Q, C).
        text_feats: projected text tokens (no positional encoding), shape (B, L, C).
        pos_map: token-to-class map, shape (K+1, L).
        temperature: divisor of the cosine similarity.

    Returns:
        Tensor: shape (B, Q, K+1); last index = background / no object.
    """
    q = F.normalize(query_embed, dim=-1)
    t = F.normalize(text_feats, dim=-1)
    token_logits = torch.einsum('bqc,blc->bql', q / temperature, t)
    return pool_token_logits(token_logits, pos_map)


class TextCrossAttentionLayer(BaseModule):
    """Queries attend to the text tokens (post-norm residual), before each decoder layer.

    key = text token + token positional embedding, value = text token, query = query + query
    PE; padded tokens are masked.

    Args:
        embed_dims: query / token channels.
        num_heads: attention heads.
        dropout: attention-output dropout.
    """

    def __init__(self, embed_dims: int, num_heads: int, dropout: float = 0.0,
                 init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.attn = MultiheadAttention(embed_dims, num_heads, attn_drop=0.0, proj_drop=dropout,
                                       batch_first=True)
        self.norm = nn.LayerNorm(embed_dims)

    def init_weights(self) -> None:
        """Xavier-uniform matrices (as the official attention layers)."""
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, query: Tensor, query_pos: Tensor, text: Tensor, text_pos: Tensor,
                text_pad_mask: Optional[Tensor]) -> Tensor:
        """Cross-attend from the queries to the text tokens.

        Args:
            query: queries, shape (B, Q, C).
            query_pos: query positional embedding, shape (B, Q, C).
            text: projected text tokens, shape (B, L, C).
            text_pos: token positional embedding, shape (B, L, C).
            text_pad_mask: shape (B, L), True = padding (or None).

        Returns:
            Tensor: updated queries, shape (B, Q, C).
        """
        out = self.attn(query=query, key=text, value=text, query_pos=query_pos, key_pos=text_pos,
                        key_padding_mask=text_pad_mask)
        return self.norm(out)
