import math
from pathlib import Path

import pytest
import torch

from odin_testing import reference_dir
from projects.odin.ops import knn, use_backend
from projects.odin.ops.backend import get_ext
from projects.odin.parity import knn_differences
from projects.odin.structures import idw_interpolate, multiscale_xyz, unproject_depth, voxelize
from projects.odin.structures.geometry import idw_from_neighbors

# ../shared/reference beside the checkout (or $ODIN_REFERENCE_DIR), as every golden test
REF = Path(reference_dir())
GOLDEN_SCENE = REF / 'golden_scannet_resnet.pt'
GOLDEN_BLOCK = REF / 'golden_crossview_block.pt'
needs_scene = pytest.mark.skipif(not GOLDEN_SCENE.exists(), reason=f'{GOLDEN_SCENE} not present')
needs_block = pytest.mark.skipif(not GOLDEN_BLOCK.exists(), reason=f'{GOLDEN_BLOCK} not present')


@pytest.fixture(scope='module')
def scene_golden():
    return torch.load(GOLDEN_SCENE, weights_only=True)


def test_unproject_depth_matches_pinhole_model():
    depth = torch.tensor([[[2.0, 0.0, 1.0], [4.0, 3.0, 2.0]]], dtype=torch.float64)  # (1, 2, 3)
    intr = torch.eye(4, dtype=torch.float64)[None]
    intr[0, 0, 0], intr[0, 1, 1], intr[0, 0, 2], intr[0, 1, 2] = 2.0, 4.0, 1.0, 0.5
    pose = torch.eye(4, dtype=torch.float64)[None]
    pose[0, :3, :3] = torch.tensor([[0., -1, 0], [1, 0, 0], [0, 0, 1]], dtype=torch.float64)
    pose[0, :3, 3] = torch.tensor([1.0, 2.0, 3.0])
    xyz = unproject_depth(depth, intr, pose)
    for y in range(2):
        for x in range(3):
            z = depth[0, y, x]
            cam = torch.tensor([(x - 1.0) * z / 2.0, (y - 0.5) * z / 4.0, z, 1.0],
                               dtype=torch.float64)
            torch.testing.assert_close(xyz[0, y, x], (pose[0] @ cam)[:3])
    # invalid depth lands on the camera centre (not masked, as in the official code)
    torch.testing.assert_close(xyz[0, 0, 1], pose[0, :3, 3])


@needs_scene
def test_unproject_and_multiscale_match_official_golden(scene_golden):
    bi = scene_golden['inputs']['batched_inputs'][0]
    xyz = unproject_depth(torch.stack(bi['depths']), torch.stack(bi['intrinsics']),
                          torch.stack(bi['poses']))  # official key
    torch.testing.assert_close(xyz, bi['original_xyz'], rtol=0, atol=1e-6)
    for ours, ref in zip(multiscale_xyz(xyz, (32, 16, 8, 4)), bi['multi_scale_xyz']):
        torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)


def test_multiscale_pads_to_divisible_with_origin():
    xyz = torch.arange(1 * 5 * 7 * 3, dtype=torch.float32).view(1, 5, 7, 3) + 1
    s8, s4 = multiscale_xyz(xyz, (8, 4))
    assert s8.shape == (1, 1, 1, 3) and s4.shape == (1, 2, 2, 3)
    torch.testing.assert_close(s4[0, 1, 1], xyz[0, 4, 4])
    torch.testing.assert_close(s4[0, 0, 1], xyz[0, 0, 4])
    pad = multiscale_xyz(xyz, (1, 8))[0]
    assert pad.shape == (1, 8, 8, 3) and bool((pad[0, 5:] == 0).all())


@needs_scene
def test_voxelize_matches_official_p2v(scene_golden):
    bi = scene_golden['inputs']['batched_inputs'][0]
    inter = scene_golden['intermediates']
    for level, size in enumerate((0.16, 0.08, 0.04, 0.02)):
        pts = bi['multi_scale_xyz'][level].reshape(-1, 3)
        p2v, voff, vxyz = voxelize(pts, torch.tensor([pts.shape[0]]), size)
        assert torch.equal(p2v, inter['prep.multi_scale_p2v'][level].reshape(-1))
    pts = bi['multi_scale_xyz'][2].reshape(-1, 3)
    p2v, voff, vxyz = voxelize(pts, torch.tensor([pts.shape[0]]), 0.04)
    torch.testing.assert_close(vxyz, inter['backbone.cross_view_attn.res3.voxel_xyz'])
    idx, _ = knn(vxyz, vxyz, 8, voff, voff)
    # rows may differ from the official selection only at float64 near-ties (CPU-dependent)
    _, unexplained = knn_differences(idx, inter['backbone.cross_view_attn.res3.knn_idx'].long(),
                                     vxyz, vxyz, 8, voff, voff)
    assert unexplained == []


@needs_block
def test_voxelize_multi_scene_matches_block_golden():
    g = torch.load(GOLDEN_BLOCK, weights_only=True)
    xyz = g['inputs']['xyz'].reshape(-1, 3)
    p2v, voff, vxyz = voxelize(xyz, torch.tensor([1500, 3000]), 0.04)
    ref = g['inputs']['p2v'].clone()
    ref[1] += 1287   # golden ids are per scene, ours global
    assert torch.equal(p2v, ref.reshape(-1))
    assert voff.tolist() == g['intermediates']['batch_offset'].tolist()
    torch.testing.assert_close(vxyz, g['intermediates']['voxel_xyz'])


def test_voxelize_order_centroids_and_empty_scene():
    xyz = torch.tensor([[0.31, 0.0, 0.0], [0.0, 0.0, 0.29], [0.0, 0.01, 0.0], [0.33, 0.0, 0.02],
                        [5.0, 5.0, 5.0], [5.0, 5.1, 5.0]], dtype=torch.float64)
    p2v, voff, vxyz = voxelize(xyz, torch.tensor([4, 4, 6]), 0.1)
    # scene 0 cells (x,y,z): (3,0,0) (0,0,3) (0,0,0) (3,0,0) -> sorted (0,0,0) < (0,0,3) < (3,0,0)
    assert p2v.tolist() == [2, 1, 0, 2, 3, 4]
    assert voff.tolist() == [3, 3, 5]
    torch.testing.assert_close(vxyz[2], (xyz[0] + xyz[3]) / 2)
    torch.testing.assert_close(vxyz[3], xyz[4])


def idw_reference(src_feats, src_xyz, src_off, tgt_xyz, tgt_off, k):
    """float64 loop: inverse distances of the k nearest sources, normalised."""
    out = torch.zeros(tgt_xyz.shape[0], src_feats.shape[1], dtype=torch.float64)
    s0 = t0 = 0
    for s1, t1 in zip(src_off.tolist(), tgt_off.tolist()):
        for t in range(t0, t1):
            d = (src_xyz[s0:s1] - tgt_xyz[t]).double().norm(dim=1)
            order = torch.sort(d, stable=True).indices[:k]
            w = 1.0 / (d[order] + 1e-8)
            out[t] = (w[:, None] * src_feats[s0:s1][order].double()).sum(0) / w.sum()
        s0, t0 = s1, t1
    return out


@pytest.mark.parametrize('backend', ['pytorch', 'auto'])
def test_idw_interpolate_matches_float64_reference(backend):
    g = torch.Generator().manual_seed(0)
    src_xyz = torch.rand(300, 3, generator=g, dtype=torch.float64)
    tgt_xyz = torch.rand(120, 3, generator=g, dtype=torch.float64)
    feats = torch.randn(300, 5, generator=g, dtype=torch.float64)
    src_off, tgt_off = torch.tensor([100, 300]), torch.tensor([70, 120])
    with use_backend(backend):
        out = idw_interpolate(feats, src_xyz, src_off, tgt_xyz, tgt_off, k=8)
    ref = idw_reference(feats, src_xyz, src_off, tgt_xyz, tgt_off, 8)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    # a target on a source point copies it (weight 1/1e-8 dominates)
    with use_backend(backend):
        on_src = idw_interpolate(feats, src_xyz, src_off, src_xyz[:3], torch.tensor([3, 3]))
    torch.testing.assert_close(on_src, feats[:3], rtol=1e-6, atol=1e-6)


@pytest.mark.skipif(get_ext(torch.zeros(1), op='knn_gather_wsum') is None,
                    reason='the compiled CPU kernel is not in use (not built, or the twins forced)')
def test_idw_compiled_sum_is_the_sequential_neighbour_sum():
    """The kernel sums w_j * f[idx_j] neighbour by neighbour, each product and sum rounded
    (built with -ffp-contract=off): bit-equal to the official accumulation order on any CPU, as
    IEEE multiplication and addition are exact-rounded."""
    g = torch.Generator().manual_seed(3)
    feats = torch.randn(500, 37, generator=g)
    idx = torch.randint(0, 500, (2000, 8), generator=g)
    dist = torch.rand(2000, 8, generator=g)
    recip = 1.0 / (dist + 1e-8)
    weight = recip / recip.sum(dim=1, keepdim=True)
    expected = torch.zeros(2000, 37)
    for j in range(8):
        expected = expected + feats[idx[:, j]] * weight[:, j:j + 1]
    with use_backend('auto'):
        out = idw_from_neighbors(feats, idx, dist)
    assert torch.equal(out, expected)
    with use_backend('pytorch'):  # the twin sums by a matmul: equal within rounding
        torch.testing.assert_close(idw_from_neighbors(feats, idx, dist), expected)
    with pytest.raises(ValueError, match='idx and dist'):
        idw_from_neighbors(feats, idx, dist[:, :4])


def test_idw_keeps_the_dtype_of_low_precision_features():
    feats = torch.randn(20, 4).bfloat16()
    idx = torch.randint(0, 20, (6, 3))
    out = idw_from_neighbors(feats, idx, torch.rand(6, 3))
    assert out.dtype == torch.bfloat16 and out.shape == (6, 4)
    # no neighbours: zeros (the gather op's k = 0 case)
    none = idw_from_neighbors(feats, idx[:, :0], torch.rand(6, 0))
    assert none.shape == (6, 4) and not none.float().abs().any()


def test_idw_interpolate_gradcheck():
    g = torch.Generator().manual_seed(1)
    src_xyz = torch.rand(12, 3, generator=g, dtype=torch.float64)
    tgt_xyz = torch.rand(7, 3, generator=g, dtype=torch.float64)
    feats = torch.randn(12, 3, generator=g, dtype=torch.float64, requires_grad=True)
    src_off, tgt_off = torch.tensor([5, 12]), torch.tensor([3, 7])
    assert torch.autograd.gradcheck(
        lambda f: idw_interpolate(f, src_xyz, src_off, tgt_xyz, tgt_off, k=4), (feats,))


def test_idw_padding_when_scene_smaller_than_k():
    src_xyz = torch.tensor([[0.0, 0, 0], [1.0, 0, 0]])
    feats = torch.tensor([[1.0], [3.0]])
    out = idw_interpolate(feats, src_xyz, torch.tensor([2]), torch.tensor([[0.25, 0, 0]]),
                          torch.tensor([1]), k=8)
    # the 6 padded slots (first source at distance 1e5) change the answer by ~1e-5 relative
    w0, w1 = 1 / 0.25, 1 / 0.75
    assert out.item() == pytest.approx((w0 * 1 + w1 * 3) / (w0 + w1), rel=1e-4)
    assert not math.isnan(out.item())
