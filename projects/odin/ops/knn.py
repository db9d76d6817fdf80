"""Exact k nearest neighbours within each scene of a batch.

Compiled kernels: CPU (a uniform hash grid per scene, searched ring by ring with an exact stopping
rule, OpenMP over queries) and CUDA (brute force per scene, one thread per query, like the official
``pointops2`` kernel). The PyTorch twin is a chunked brute force; :func:`knn_grid_pytorch`, a grid
search in batched tensor operations, answers CUDA calls with a scene of more than
:data:`CUDA_GRID_MIN_POINTS` support points (H200: 0.086 s vs the kernel's 0.264 s at 400k points,
0.025 vs 0.020 s at 100k; docs/benchmarks/gpu_check.json). All three compute squared
distances with the same float formula ``dx*dx + dy*dy + dz*dz`` (no fused multiply-add) and order
neighbours by ``(squared distance, support index)``, so they return identical results.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from .backend import get_backend, get_ext, register_self_check
from .guard import self_check
from .limits import check_cuda_elements
from .utils import check_offsets, check_points, scene_ranges

#: squared distance written into padded slots (the official pointops2 kernel's initial heap value)
PAD_DIST2 = 1e10
#: largest k of the CUDA kernel (larger k uses the twin on the GPU)
CUDA_MAX_K = 128
#: on CUDA, a call with a scene of more support points than this uses the grid twin (measured
#: crossover of the brute-force kernel and the grid twin on an H200: between 100k and 400k)
CUDA_GRID_MIN_POINTS = 1 << 17
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
    if query_xyz.is_cuda and use_grid_on_cuda(s_off):
        idx, dist2 = knn_grid_pytorch(query_xyz, support_xyz, k, q_off, s_off)
        return idx, dist2.sqrt()
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


def use_grid_on_cuda(support_offsets: Tensor) -> bool:
    """Whether a CUDA call goes to :func:`knn_grid_pytorch`.

    It does when a scene has more than :data:`CUDA_GRID_MIN_POINTS` support points, unless the
    ``pytorch`` backend forces the brute-force twin.

    Args:
        support_offsets: ``(B,)`` CPU int64 cumulative end index of each support scene.
    """
    if get_backend() == 'pytorch':
        return False
    sizes = torch.diff(support_offsets, prepend=support_offsets.new_zeros(1))
    return bool(sizes.numel()) and int(sizes.max()) > CUDA_GRID_MIN_POINTS


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


# ----------------------------------------------------------------------------- grid twin
#: scenes with at most this many support points are searched by brute force (grid twin)
_GRID_MIN_POINTS = 4096
#: (query, candidate) pairs per chunk of the grid twin
_GRID_CHUNK_PAIRS = 1 << 24
#: the 27 cell offsets of a query cell's 3x3x3 block
_BLOCK27 = torch.stack(torch.meshgrid(*[torch.arange(-1, 2)] * 3, indexing='ij'), -1).view(-1, 3)


def knn_grid_pytorch(query_xyz: Tensor, support_xyz: Tensor, k: int, query_offsets: Tensor,
                     support_offsets: Tensor) -> Tuple[Tensor, Tensor]:
    """Pure-PyTorch k-NN on a uniform grid per scene; the same result as :func:`knn_pytorch`.

    Made of batched tensor operations for a GPU (the CUDA kernel is a brute force). Per scene,
    support points are sorted into cubic cells of side ``s`` (about ``k / 2`` points per
    occupied cell); each query takes the points of its cell's 3x3x3 block as candidates, and
    keeps the ``k`` smallest ``(squared distance, support index)`` keys. The answer is exact when
    the ``k``-th distance is below ``0.999 s`` (every point outside the block is at least ``s``
    away) and no cell of the block was truncated; the other rows are answered by the brute-force
    twin. Distances use the kernels' formula, so the result is bit-equal to the other backends.
    float64 inputs and small scenes go to the brute-force twin.

    Args:
        query_xyz: ``(M, 3)`` query coordinates.
        support_xyz: ``(N, 3)`` support coordinates, same dtype and device.
        k: neighbours per query.
        query_offsets: ``(B,)`` CPU int64 cumulative end index of each query scene.
        support_offsets: ``(B,)`` CPU int64 cumulative end index of each support scene.

    Returns:
        tuple: ``idx`` ``(M, k)`` int64 and ``dist2`` ``(M, k)`` squared distances, as
        :func:`knn_pytorch`.
    """
    m = query_xyz.shape[0]
    device = query_xyz.device
    idx = torch.empty((m, k), dtype=torch.int64, device=device)
    dist2 = torch.empty((m, k), dtype=query_xyz.dtype, device=device)
    for (qs, qe), (ss, se) in zip(scene_ranges(query_offsets), scene_ranges(support_offsets)):
        if qe == qs:
            continue
        q, sup = query_xyz[qs:qe], support_xyz[ss:se]
        if se - ss <= max(k, _GRID_MIN_POINTS) or query_xyz.dtype != torch.float32:
            i, d = knn_pytorch(q, sup, k, torch.tensor([qe - qs]), torch.tensor([se - ss]))
        else:
            i, d = _grid_scene(q, sup, k)
        idx[qs:qe] = i + ss
        dist2[qs:qe] = d
    return idx, dist2


def _cell_size(sup: Tensor, per_cell: float) -> float:
    """Side of cells holding about ``per_cell`` support points each (occupied cells)."""
    lo = sup.min(0).values.double()
    extent = (sup.max(0).values.double() - lo).clamp_min(1e-6)
    n = sup.shape[0]
    size = float((extent.prod() * per_cell / n) ** (1 / 3))  # a volume's guess
    for _ in range(2):  # surfaces: points per cell grow with the square of the side
        cells = torch.unique(torch.floor((sup.double() - lo) / size).long(), dim=0).shape[0]
        size *= (per_cell / (n / cells)) ** 0.5
    return size


def _grid_scene(q: Tensor, sup: Tensor, k: int, per_cell: Optional[float] = None,
                coarser: int = 2) -> Tuple[Tensor, Tensor]:
    """:func:`knn_grid_pytorch` on one scene (indices into ``sup``).

    Rows the grid cannot answer exactly go to a grid of cells twice as wide (``coarser`` more
    times), then to the brute-force twin.
    """
    device, n = q.device, sup.shape[0]
    per_cell = per_cell or max(2.0, 0.5 * k)
    size = _cell_size(sup, per_cell)
    lo = sup.min(0).values.double()
    dims = torch.floor((sup.max(0).values.double() - lo) / size).long() + 1

    def cell_key(c: Tensor) -> Tensor:
        return (c[..., 0] * dims[1] + c[..., 1]) * dims[2] + c[..., 2]

    skey = cell_key(torch.floor((sup.double() - lo) / size).long())
    order = torch.argsort(skey, stable=True)  # within a cell: ascending support index
    cells, counts = torch.unique_consecutive(skey[order], return_counts=True)
    starts = counts.cumsum(0) - counts
    width = int(min(int(counts.max()), max(16, 4 * k)))  # candidates kept per cell
    block = _BLOCK27.to(device)
    slots = torch.arange(width, device=device)
    lim = (0.999 * size) ** 2
    idx = torch.empty((q.shape[0], k), dtype=torch.int64, device=device)
    d2_out = torch.empty((q.shape[0], k), dtype=q.dtype, device=device)
    rows = max(1, _GRID_CHUNK_PAIRS // (27 * width))
    redo = []
    for c0 in range(0, q.shape[0], rows):
        qc = q[c0:c0 + rows]
        nb = torch.floor((qc.double() - lo) / size).long()[:, None] + block  # (r, 27, 3)
        inside = ((nb >= 0) & (nb < dims)).all(-1)
        key = cell_key(nb)
        pos = torch.searchsorted(cells, key).clamp_max(cells.numel() - 1)
        found = inside & (cells[pos] == key)
        cnt = torch.where(found, counts[pos], 0)
        valid = slots < cnt[..., None]  # (r, 27, width)
        cand = order[torch.where(valid, starts[pos][..., None] + slots, 0)]
        p = sup[cand]
        dx = qc[:, None, None, 0] - p[..., 0]
        dy = qc[:, None, None, 1] - p[..., 1]
        dz = qc[:, None, None, 2] - p[..., 2]
        d2 = dx * dx + dy * dy + dz * dz
        keys = (d2.view(torch.int32).long() << 31) | cand  # (d2, index) order: d2 >= 0
        keys = torch.where(valid, keys, torch.iinfo(torch.int64).max).view(len(qc), -1)
        if keys.shape[1] < k:
            redo.append(torch.arange(c0, c0 + len(qc), device=device))
            continue
        best = torch.topk(keys, k, dim=1, largest=False, sorted=True).values
        bd2 = (best >> 31).int().view(torch.float32)
        idx[c0:c0 + len(qc)] = best & ((1 << 31) - 1)
        d2_out[c0:c0 + len(qc)] = bd2
        exact = (best[:, -1] != torch.iinfo(torch.int64).max) & (bd2[:, -1] < lim) & \
            ~(cnt > width).any(1)
        redo.append(torch.nonzero(~exact).flatten() + c0)
    redo = torch.cat(redo) if redo else torch.empty(0, dtype=torch.long, device=device)
    if redo.numel():
        if coarser > 0:
            i, d = _grid_scene(q[redo], sup, k, 4 * per_cell, coarser - 1)
        else:
            i, d = knn_pytorch(q[redo], sup, k, torch.tensor([redo.numel()]),
                               torch.tensor([n]))
        idx[redo] = i
        d2_out[redo] = d
    return idx, d2_out


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
