import numpy as np
import pytest
import torch

from projects.odin.ops import PAD_DIST2, ext_available, knn, use_backend
from projects.odin.ops.knn import knn_grid_pytorch, knn_pytorch

BACKENDS = ['pytorch', pytest.param('auto', marks=pytest.mark.skipif(
    not ext_available(), reason='compiled extension not built (python tools/build_ops.py)'))]


def brute_force(query, support, k, q_off, s_off):
    """float64 reference: per scene, argsort by (distance, index); official padding."""
    q = query.double().numpy()
    s = support.double().numpy()
    idx = np.zeros((q.shape[0], k), dtype=np.int64)
    dist = np.zeros((q.shape[0], k))
    qs = ss = 0
    for qe, se in zip(q_off.tolist(), s_off.tolist()):
        for i in range(qs, qe):
            d2 = ((s[ss:se] - q[i]) ** 2).sum(1)
            order = np.lexsort((np.arange(se - ss), d2))[:k]
            n = order.size
            idx[i, :n] = order + ss
            dist[i, :n] = np.sqrt(d2[order])
            idx[i, n:] = ss
            dist[i, n:] = np.sqrt(PAD_DIST2)
        qs, ss = qe, se
    return torch.from_numpy(idx), torch.from_numpy(dist)


def random_scenes(sizes, seed, dtype=torch.float64, dup_every=0):
    g = torch.Generator().manual_seed(seed)
    pts = torch.rand(sum(sizes), 3, generator=g, dtype=torch.float64) * 2 - 1
    if dup_every:
        pts[1::dup_every] = pts[0:-1:dup_every][:pts[1::dup_every].shape[0]]
    return pts.to(dtype), torch.tensor(sizes).cumsum(0)


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('sizes,k', [([1], 1), ([7, 300], 8), ([50, 0, 613], 16),
                                     ([2000], 8), ([400, 1500], 3)])
def test_knn_matches_float64_brute_force(backend, sizes, k):
    support, s_off = random_scenes(sizes, seed=sum(sizes) + k, dup_every=5)
    query, q_off = random_scenes([max(1, n // 2) if n else 0 for n in sizes], seed=k)
    with use_backend(backend):
        idx, dist = knn(query, support, k, q_off, s_off)
    ref_idx, ref_dist = brute_force(query, support, k, q_off, s_off)
    assert idx.dtype == torch.int64 and idx.shape == (query.shape[0], k)
    assert torch.equal(idx, ref_idx)
    torch.testing.assert_close(dist, ref_dist, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('backend', BACKENDS)
def test_knn_float32_self_query(backend):
    pts, off = random_scenes([900, 1200], seed=3, dtype=torch.float32)
    with use_backend(backend):
        idx, dist = knn(pts, pts, 8, off, off)
    ref_idx, ref_dist = brute_force(pts, pts, 8, off, off)
    # the query itself is its own nearest neighbour; distances agree with float64
    assert torch.equal(idx[:, 0], torch.arange(pts.shape[0]))
    torch.testing.assert_close(dist.double(), ref_dist, rtol=1e-5, atol=1e-6)
    # returned neighbours really are at the returned distances, and sorted
    recomputed = (pts[idx] - pts[:, None]).double().norm(dim=-1)
    torch.testing.assert_close(dist.double(), recomputed, rtol=1e-5, atol=1e-6)
    assert bool((dist[:, 1:] >= dist[:, :-1]).all())
    # scene membership
    assert bool((idx[:900] < 900).all()) and bool((idx[900:] >= 900).all())


@pytest.mark.parametrize('backend', BACKENDS)
def test_knn_padding_duplicates_and_empty_scenes(backend):
    support = torch.tensor([[0., 0, 0], [1, 0, 0], [0, 0, 0], [5, 5, 5], [5, 5, 5]])
    s_off = torch.tensor([3, 3, 5])          # scenes of 3, 0 and 2 support points
    query = torch.tensor([[0.1, 0, 0], [5, 5, 5]])
    q_off = torch.tensor([1, 1, 2])
    with use_backend(backend):
        idx, dist = knn(query, support, 4, q_off, s_off)
    # duplicates ordered by index; k > scene size padded with the scene's first row and 1e5
    assert idx.tolist() == [[0, 2, 1, 0], [3, 4, 3, 3]]
    assert dist[0, 3].item() == pytest.approx(1e5)
    assert dist[1, 2:].tolist() == [pytest.approx(1e5)] * 2
    assert dist[1, :2].tolist() == [0.0, 0.0]


def test_knn_rejects_bad_input():
    pts = torch.rand(10, 3)
    off = torch.tensor([10])
    bad = pts.clone()
    bad[4, 1] = float('nan')
    with pytest.raises(ValueError, match='NaN/inf.*row 4'):
        knn(bad, pts, 2, off, off)
    bad[4, 1] = float('inf')
    with pytest.raises(ValueError, match='support_xyz.*NaN/inf'):
        knn(pts, bad, 2, off, off)
    with pytest.raises(ValueError, match='no support point'):
        knn(pts, pts[:0], 2, off, torch.tensor([0]))
    with pytest.raises(ValueError, match='does not match'):
        knn(pts, pts, 2, torch.tensor([9]), off)
    with pytest.raises(ValueError, match='non-decreasing'):
        knn(pts, pts, 2, torch.tensor([6, 4, 10]), torch.tensor([6, 4, 10]))
    with pytest.raises(ValueError, match='positive integer'):
        knn(pts, pts, 0, off, off)
    with pytest.raises(ValueError, match=r'\(N, 3\)'):
        knn(pts[:, :2], pts, 2, off, off)


@pytest.mark.skipif(not ext_available(), reason='compiled extension not built')
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_knn_cpp_equals_twin_on_surfaces(dtype):
    # room-like surfaces (what voxel centroids look like) exercise the adaptive grid; far outliers
    # (invalid depth lands on the camera centre) exercise the full-scan fallback
    g = torch.Generator().manual_seed(0)
    n = 3000
    uv = torch.rand(n, 2, generator=g) * 3
    face = torch.randint(0, 3, (n,), generator=g)
    pts = torch.zeros(n, 3)
    pts[:, 0] = torch.where(face == 2, 0.0, uv[:, 0])
    pts[:, 1] = torch.where(face == 1, 0.0, torch.where(face == 2, uv[:, 0], uv[:, 1]))
    pts[:, 2] = torch.where(face == 0, 0.0, uv[:, 1])
    pts[:20] = torch.tensor([40.0, -30.0, 2.0])
    pts = (pts + 0.002 * torch.randn(n, 3, generator=g)).to(dtype)
    off = torch.tensor([1200, n])
    queries = torch.cat([pts, pts[:100] + 0.01, torch.tensor([[100.0, 0, 0]], dtype=dtype)])
    q_off = torch.tensor([1200, queries.shape[0]])
    for k in (1, 8, 24):
        out_ext = knn(queries, pts, k, q_off, off)
        with use_backend('pytorch'):
            out_twin = knn(queries, pts, k, q_off, off)
        assert torch.equal(out_ext[0], out_twin[0])
        assert torch.equal(out_ext[1], out_twin[1])


@pytest.mark.skipif(not ext_available(), reason='compiled extension not built')
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_knn_cpp_far_queries_use_every_search_level_exactly(dtype):
    # The mesh vertices of a room against the voxels its views saw: >= 4096 support points on a
    # floor patch and a ceiling patch 3 m above it, queried by points on the patches (answered
    # by the fine grid), by points 0.2-0.5 m off them or mid-way between them, inside the
    # support's bounding box (too many empty fine cells: the coarse grid answers) and by points
    # in the empty space between the room and a far outlier (the full scan). Duplicated support
    # points make exact distance ties, which every level must order by support index; the
    # second scene is small (fine grid only). Cutting either fallback short fails this test.
    g = torch.Generator().manual_seed(3)
    n = 6000
    pts = torch.rand(n, 3, generator=g, dtype=torch.float64)
    pts[:, 2] = torch.where(torch.arange(n) % 2 == 0, 0.0, 3.0)
    pts[1::7] = pts[0:-1:7][:pts[1::7].shape[0]]
    pts[-1] = torch.tensor([40.0, -30.0, 2.0])  # invalid depth: the camera centre, far away
    small = torch.rand(300, 3, generator=g, dtype=torch.float64)
    support = torch.cat([pts, small]).to(dtype)
    s_off = torch.tensor([n, n + 300])
    near = pts[:500] + 1e-3 * torch.randn(500, 3, generator=g, dtype=torch.float64)
    off = torch.rand(1500, 3, generator=g, dtype=torch.float64)
    off[:, 2] = 0.2 + 0.3 * off[:, 2]
    off[750:, 2] = 3.0 - off[750:, 2]
    middle = torch.rand(300, 3, generator=g, dtype=torch.float64)
    middle[:, 2] = 1.0 + middle[:, 2]
    empty = torch.tensor([[20.0, -15.0, 1.0], [30.0, -5.0, 2.5], [10.0, -25.0, 0.5]],
                         dtype=torch.float64)  # nowhere near a point: the full scan
    queries = torch.cat([near, off, middle, empty, small[:50] + 2.0]).to(dtype)
    q_off = torch.tensor([2303, queries.shape[0]])
    for k in (1, 8, 16):
        idx, dist = knn(queries, support, k, q_off, s_off)
        with use_backend('pytorch'):
            idx_twin, dist_twin = knn(queries, support, k, q_off, s_off)
        assert torch.equal(idx, idx_twin)
        assert torch.equal(dist, dist_twin)
        if dtype == torch.float64:
            ref_idx, ref_dist = brute_force(queries, support, k, q_off, s_off)
            assert torch.equal(idx, ref_idx)
            torch.testing.assert_close(dist, ref_dist, rtol=1e-12, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
def test_knn_cuda_matches_cpu(monkeypatch):
    # CUDA kernel when the extension has it (ext_has_cuda()), else the twin on the GPU; strict:
    # a kernel failing its self-check raises instead of passing through the twin
    monkeypatch.setenv('ODIN_OPS_STRICT', '1')
    pts, off = random_scenes([3000, 17, 2000], seed=5, dtype=torch.float32, dup_every=7)
    idx, dist = knn(pts.cuda(), pts.cuda(), 16, off.cuda(), off.cuda())
    with use_backend('pytorch'):
        ref_idx, ref_dist = knn(pts, pts, 16, off, off)
    idx, dist = idx.cpu(), dist.cpu()
    rows = torch.nonzero((idx != ref_idx).any(1) | (dist != ref_dist).any(1)).flatten()
    first = rows[:2].tolist()
    # the same formula with round-to-nearest products and sums, and (distance, index) order:
    # the selections and distances are bit-equal; the message says how they differ if not
    assert len(rows) == 0, (
        f'{len(rows)} of {len(idx)} rows differ (rows {rows[:8].tolist()}); max |dist diff| '
        f'{(dist - ref_dist).abs().max().item():.3g}; rows {first}: cuda idx '
        f'{idx[first].tolist()} dist {dist[first].tolist()}; cpu idx {ref_idx[first].tolist()} '
        f'dist {ref_dist[first].tolist()}')


@pytest.mark.parametrize('k', [1, 8, 20])
def test_grid_twin_equals_brute_force_twin(k):
    # a room-like scene above the grid's size threshold (planes, a dense cluster of duplicates,
    # queries far outside), a tiny scene with fewer points than k, and a scene without queries
    g = torch.Generator().manual_seed(k)
    big = torch.rand(5000, 3, generator=g) * torch.tensor([4.0, 4.0, 2.5])
    face = torch.randint(0, 3, (5000,), generator=g)
    big[face == 0, 2] = 0.0
    big[face == 1, 0] = 0.0
    big[face == 2, 1] = 4.0
    big[200:300] = big[7]  # 100 duplicates: exact ties ordered by index
    small = torch.rand(6, 3, generator=g)
    other = torch.rand(4200, 3, generator=g) * 3
    support = torch.cat([big, small, other])
    far = torch.rand(50, 3, generator=g) * 20 - 8
    query = torch.cat([big, far, small, torch.empty(0, 3)])
    q_off = torch.tensor([5050, 5056, 5056])
    s_off = torch.tensor([5000, 5006, 9206])
    idx, d2 = knn_grid_pytorch(query, support, k, q_off, s_off)
    ref_idx, ref_d2 = knn_pytorch(query, support, k, q_off, s_off)
    # the same formula and (distance, index) order: bit-equal, ties included
    assert torch.equal(idx, ref_idx)
    assert torch.equal(d2, ref_d2)


def test_cuda_calls_with_a_large_scene_use_the_grid_twin():
    from projects.odin.ops.knn import CUDA_GRID_MIN_POINTS, use_grid_on_cuda
    big = CUDA_GRID_MIN_POINTS + 1
    assert not use_grid_on_cuda(torch.tensor([1000, 2000]))
    assert not use_grid_on_cuda(torch.tensor([CUDA_GRID_MIN_POINTS]))
    assert use_grid_on_cuda(torch.tensor([10, 10 + big]))  # the second scene is the large one
    with use_backend('pytorch'):  # the twins' reference backend keeps the brute force
        assert not use_grid_on_cuda(torch.tensor([big]))
