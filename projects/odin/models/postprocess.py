"""ODIN inference rules (docs/specification.md §2.11), written as plain tensor functions."""
from typing import Sequence, Tuple

import torch
from torch import Tensor


def instance_inference(cls_logits: Tensor,
                       mask_logits: Tensor,
                       topk: int = 100,
                       skip_classes: Sequence[int] = ()) -> Tuple[Tensor, Tensor, Tensor]:
    """Top-k instances over query x class, no NMS and no score threshold.

    Args:
        cls_logits: shape (Q, K+1), the last class is "no object".
        mask_logits: per-point mask logits, shape (Q, N).
        topk: number of instances kept.
        skip_classes: 0-based classes never reported (wall/floor on ScanNet-20).

    Returns:
        tuple: boolean masks (topk, N) (``logit > 0``), 0-based labels (topk,) and scores
        (topk,) = class probability x mean sigmoid inside the binary mask (0 for empty masks).
    """
    num_classes = cls_logits.shape[1] - 1
    probs = cls_logits.softmax(-1)[:, :-1]
    keep = torch.tensor([c for c in range(num_classes) if c not in set(skip_classes)],
                        device=cls_logits.device, dtype=torch.long)
    probs = probs[:, keep]
    k = min(topk, probs.numel())
    top_scores, top_idx = probs.flatten().topk(k, sorted=True)
    labels = keep[top_idx % keep.numel()]
    query = torch.div(top_idx, keep.numel(), rounding_mode='floor')
    # (topk, N) logits of the kept instances: a copy this function owns, so the sigmoid and the
    # masking are done in place (the same operations, no further (topk, N) float buffers: a
    # scene's points can be hundreds of thousands)
    masks = mask_logits[query]
    binary = masks > 0
    mask_scores = masks.sigmoid_().mul_(binary).sum(1) / (_row_counts(binary) + 1e-6)
    return binary, labels, top_scores * mask_scores


def _row_counts(binary: Tensor, rows: int = 8) -> Tensor:
    """True entries per row of a (R, N) bool tensor, (R,) int64 (``binary.sum(1)``).

    ``sum`` of a bool tensor converts all of it to int64 first (8 bytes per entry: 0.37 GB for
    100 masks over 463k points); a few rows at a time the conversion stays small.
    """
    if binary.shape[0] <= rows:
        return binary.sum(1)
    return torch.cat([binary[s:s + rows].sum(1) for s in range(0, binary.shape[0], rows)])


def semantic_inference(cls_logits: Tensor, mask_logits: Tensor) -> Tensor:
    """Per-point class = argmax_c sum_q p(c|q) sigmoid(m_q).

    Args:
        cls_logits: shape (Q, K+1).
        mask_logits: shape (Q, N).

    Returns:
        Tensor: 0-based class per point, shape (N,).
    """
    probs = cls_logits.softmax(-1)[:, :-1]
    return torch.einsum('qc,qn->cn', probs, mask_logits.sigmoid()).argmax(0)
