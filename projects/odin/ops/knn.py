"""Exact k nearest neighbours within each scene of a batch.

Compiled kernels: CPU (a uniform hash grid per scene, searched ring by ring with an exact stopping
rule, OpenMP over queries) and CUDA (brute force per scene, one thread per query, like the official
``pointops2`` kernel). The PyTorch twin is a chunked brute force. All three compute squared
distances with the same float formula ``dx*dx + dy*dy + dz*dz`` (no fused multiply-add) and order
neighbours by ``(squared distance, support index)``, so they return identical results.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from .backend import get_ext, register_self_check
from .guard import self_check
from .limits import check_cuda_elements
from .utils import check_offsets, check_points, scene_ranges

#: squared distance written into padded slots (the official pointops2 kernel's initial heap value)
PAD_DIST2 = 1e10
#: largest k of the CUDA kernel (larger k uses the twin on the GPU)
CUDA_MAX_K = 128
# brute-force twin: at most this many (query, support) pairs per chunk
_TWIN_CHUNK_PAIRS = 1 << 22


def knn(query_xyz: Tensor,
        support_xyz: Tensor,
        k: int,
        query_offsets: Tensor,
        support_offsets: Tensor) -> Tuple[Tensor, Tensor]:
    """Exact k nearest support points of every query point, within its own scene.

    Scenes are concatenated along dim 0 and delimited by cumulative END offsets (scenes of 5 and 7
    points -> ``[5, 12]``); scene ``b`` of the queries is matched with scene ``b`` of the support.

    Padding: if scene ``b`` has ``n < k`` support points, the ``n`` true neighbours come first and
    the remaining ``k - n`` slots hold the index of the scene's FIRST support point with distance
    ``1e5`` (squared ``1e10``), exactly like the official ``pointops2`` kNN kernel, so downstream
    layers reproduce the official numbers (IDW weights of padded slots are ~1e-5; an attention
    layer sees the first point repeated). Test ``dist >= 1e5`` to detect them.

    Ties (duplicate points, equal distances) are ordered by ascending support index, so the result
    is deterministic and identical on every backend.

    Args:
        query_xyz: ``(M, 3)`` float query coordinates.
        support_xyz: ``(N, 3)`` float support coordinates, same dtype and device.
        k: number of neighbours (>= 1).
        query_offsets: ``(B,)`` int cumulative end index of each query scene.
        support_offsets: ``(B,)`` int cumulative end index of each support scene.

    Returns:
        tuple: ``idx`` ``(M, k)`` int64 global row indices into ``support_xyz``, sorted by
        ascending distance; ``dist`` ``(M, k)`` euclidean distances (not squared), dtype of xyz.

    Raises:
        ValueError: bad shapes/offsets, NaN/inf coordinates, ``k < 1``, or a scene that has
            query points but no support point.
    """
    check_points('query_xyz', query_xyz)
    check_points('support_xyz', support_xyz)
    if support_xyz.dtype != query_xyz.dtype or support_xyz.device != query_xyz.device:
        raise ValueError('query_xyz and support_xyz must have the same dtype and device, got '
                         f'{query_xyz.dtype}/{query_xyz.device} and '
                         f'{support_xyz.dtype}/{support_xyz.device}')
    if int(k) != k or k < 1:
        raise ValueError(f'k must be a positive integer, got {k}')
    k = int(k)
    q_off = check_offsets('query_offsets', query_offsets, query_xyz.shape[0])
    s_off = check_offsets('support_offsets', support_offsets, support_xyz.shape[0])
    if q_off.numel() != s_off.numel():
        raise ValueError(f'query_offsets has {q_off.numel()} scenes but support_offsets has '
                         f'{s_off.numel()}')
    for b, ((qs, qe), (ss, se)) in enumerate(zip(scene_ranges(q_off), scene_ranges(s_off))):
        if qe > qs and se == ss:
            raise ValueError(f'scene {b} has {qe - qs} query points but no support point; '
                             'k nearest neighbours are undefined')
    ext = get_ext(query_xyz, support_xyz, op='knn')
    if ext is not None and query_xyz.is_cuda and k > CUDA_MAX_K:
        ext = None  # the CUDA kernel keeps its k best in registers
    if ext is not None and query_xyz.is_cuda:
        check_cuda_elements('knn', query_xyz.shape[0], 'query points')
    if ext is not None:
        idx, dist2 = ext.knn_forward(query_xyz.contiguous(), support_xyz.contiguous(),
                                     q_off.to(query_xyz.device), s_off.to(query_xyz.device), k)
    else:
        idx, dist2 = knn_pytorch(query_xyz, support_xyz, k, q_off, s_off)
    return idx, dist2.sqrt()


def _sq_dist(q: Tensor, s: Tensor) -> Tensor:
    """``(m, n)`` squared distances with the kernels' exact formula ``dx*dx + dy*dy + dz*dz``."""
    qt, st = q.t().contiguous(), s.t().contiguous()
    d2 = qt[0][:, None] - st[0][None]
    d2.mul_(d2)
    for a in (1, 2):
        da = qt[a][:, None] - st[a][None]
        d2.add_(da.mul_(da))
    return d2


def _sort_lexicographic(cols: Tensor, vals: Tensor) -> Tuple[Tensor, Tensor]:
    """Reorder each row of (cols, vals) by ascending (value, column)."""
    cols, perm = torch.sort(cols, dim=1)
    vals = torch.gather(vals, 1, perm)
    vals, order = torch.sort(vals, dim=1, stable=True)
    return torch.gather(cols, 1, order), vals


def _smallest_k_lexicographic(d2: Tensor, k: int) -> Tuple[Tensor, Tensor]:
    """The k smallest entries of every row ordered by (value, column); ``(m, k)`` cols, values."""
    vals, cols = torch.topk(d2, k, dim=1, largest=False, sorted=True)
    thresh = vals[:, -1:]
    tied = torch.nonzero((d2 <= thresh).sum(1) > k)[:, 0]
    if tied.numel():  # rows where an entry outside the top-k ties with the k-th: smallest columns
        sub, t = d2[tied], thresh[tied]
        below = sub < t
        equal = sub == t
        keep = below | (equal & (equal.cumsum(1) <= k - below.sum(1, keepdim=True)))
        sub_cols = torch.nonzero(keep)[:, 1].view(-1, k)
        cols[tied] = sub_cols
        vals[tied] = torch.gather(sub, 1, sub_cols)
    return _sort_lexicographic(cols, vals)


def knn_pytorch(query_xyz: Tensor, support_xyz: Tensor, k: int, query_offsets: Tensor,
                support_offsets: Tensor) -> Tuple[Tensor, Tensor]:
    """Pure-PyTorch twin of the kNN kernels: chunked brute force; returns ``(idx, dist2)``.

    Inputs are assumed validated (see :func:`knn`); offsets are CPU int64.
    """
    m = query_xyz.shape[0]
    idx = torch.empty((m, k), dtype=torch.int64, device=query_xyz.device)
    dist2 = torch.empty((m, k), dtype=query_xyz.dtype, device=query_xyz.device)
    for (qs, qe), (ss, se) in zip(scene_ranges(query_offsets), scene_ranges(support_offsets)):
        if qe == qs:
            continue
        n = se - ss
        kk = min(k, n)
        support = support_xyz[ss:se]
        chunk = max(1, _TWIN_CHUNK_PAIRS // n)
        for c0 in range(qs, qe, chunk):
            c1 = min(qe, c0 + chunk)
            cols, vals = _smallest_k_lexicographic(_sq_dist(query_xyz[c0:c1], support), kk)
            idx[c0:c1, :kk] = cols + ss
            dist2[c0:c1, :kk] = vals
        if kk < k:
            idx[qs:qe, kk:] = ss
            dist2[qs:qe, kk:] = PAD_DIST2
    return idx, dist2


# ----------------------------------------------------------------------------- self-check
def knn_probe_problem() -> Tuple[Tensor, Tensor, int, Tensor, Tensor]:
    """The tiny fixed kNN problem of the self-check (CPU float32).

    Two scenes: 6 queries / 9 support points, and 4 queries / 3 support points (fewer than
    ``k = 4``: padded slots). The points are drawn once from a seeded generator; their neighbour
    distances are far from ties (tested), so every correct kernel returns the same indices.

    Returns:
        tuple: ``query (10, 3)``, ``support (12, 3)``, ``k``, query and support offsets.
    """
    g = torch.Generator().manual_seed(1394)  # smallest neighbour-distance gap: 5 %
    query = torch.rand(10, 3, generator=g, dtype=torch.float64).float()
    support = torch.rand(12, 3, generator=g, dtype=torch.float64).float()
    return query, support, 4, torch.tensor([6, 10]), torch.tensor([9, 12])


def _self_check_knn(ext, device: torch.device) -> Optional[str]:
    query, support, k, q_off, s_off = knn_probe_problem()
    query, support = query.to(device), support.to(device)
    return self_check(
        lambda: ext.knn_forward(query, support, q_off.to(device), s_off.to(device), k),
        lambda: knn_pytorch(query, support, k, q_off, s_off),
        names=('idx', 'dist2'))


register_self_check('knn', _self_check_knn)
