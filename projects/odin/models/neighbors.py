"""k-NN and IDW entry points of the model, with an optional official tie order.

By default the model uses :func:`projects.odin.ops.knn` (exact kNN, ties by ascending index) and
:func:`projects.odin.layers.geometry.idw_interpolate`. Exact floating-point distance ties at the
k-th neighbour are rare but do occur (e.g. two voxel centroids at the same euclidean distance
after rounding); which of the tied points is kept is implementation defined. The official goldens
were produced with ``torch.cdist(compute_mode='donot_use_mm_for_euclid_dist')`` +
``torch.topk(largest=False, sorted=True)`` (the reference README §7), so
:func:`official_cpu_ties` switches every kNN of the model to that selection for bit-level parity
checks. Both selections return exact nearest neighbours; they differ only in the order of exactly
tied candidates.
"""
from contextlib import contextmanager
from typing import Iterator, Tuple

import torch
from torch import Tensor

from projects.odin.layers.geometry import idw_interpolate
from projects.odin.ops import knn as ops_knn

_OFFICIAL_TIES = False
_CHUNK_PAIRS = 1 << 24


@contextmanager
def official_cpu_ties(enabled: bool = True) -> Iterator[None]:
    """Use the official CPU harness' kNN tie order inside the ``with`` block."""
    global _OFFICIAL_TIES
    prev = _OFFICIAL_TIES
    _OFFICIAL_TIES = enabled
    try:
        yield
    finally:
        _OFFICIAL_TIES = prev


def _knn_official(query: Tensor, support: Tensor, k: int, query_offsets: Tensor,
                  support_offsets: Tensor) -> Tuple[Tensor, Tensor]:
    idx = torch.empty(query.shape[0], k, dtype=torch.long, device=query.device)
    dist = torch.empty(query.shape[0], k, dtype=query.dtype, device=query.device)
    q_ends, s_ends = query_offsets.tolist(), support_offsets.tolist()
    for qs, qe, ss, se in zip([0] + q_ends[:-1], q_ends, [0] + s_ends[:-1], s_ends):
        sup = support[ss:se]
        kk = min(k, se - ss)
        step = max(1, _CHUNK_PAIRS // max(1, se - ss))
        for c in range(qs, qe, step):
            q = query[c:min(qe, c + step)]
            cd = torch.cdist(q, sup, compute_mode='donot_use_mm_for_euclid_dist')
            order = cd.topk(kk, dim=1, largest=False, sorted=True).indices
            idx[c:c + len(q), :kk] = order + ss
            # distance as the official kernel: float32 sum of squared differences, then sqrt
            dist[c:c + len(q), :kk] = ((q[:, None, :] - sup[order])**2).sum(-1).sqrt()
        if kk < k:
            idx[qs:qe, kk:] = ss
            dist[qs:qe, kk:] = 1e5
    return idx, dist


def knn(query: Tensor, support: Tensor, k: int, query_offsets: Tensor,
        support_offsets: Tensor) -> Tuple[Tensor, Tensor]:
    """K nearest support points per query within its scene: ``(idx (M,k), dist (M,k))``."""
    if _OFFICIAL_TIES:
        return _knn_official(query, support, k, query_offsets, support_offsets)
    return ops_knn(query, support, k, query_offsets, support_offsets)


def idw(src_feats: Tensor, src_xyz: Tensor, src_offsets: Tensor, tgt_xyz: Tensor,
        tgt_offsets: Tensor, k: int = 8) -> Tensor:
    """IDW (``1/(d+1e-8)``, k neighbours) interpolation, see ``geometry.idw_interpolate``."""
    if not _OFFICIAL_TIES:
        return idw_interpolate(src_feats, src_xyz, src_offsets, tgt_xyz, tgt_offsets, k)
    idx, dist = _knn_official(tgt_xyz, src_xyz, k, tgt_offsets, src_offsets)
    recip = 1.0 / (dist + 1e-8)
    weight = (recip / recip.sum(dim=1, keepdim=True)).to(src_feats.dtype)
    out = src_feats.new_zeros((tgt_xyz.shape[0], src_feats.shape[1]))
    for j in range(idx.shape[1]):
        out = out + src_feats[idx[:, j]] * weight[:, j:j + 1]
    return out
