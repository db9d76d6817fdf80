from pathlib import Path

import pytest
import torch

from odin_testing import reference_dir
from projects.odin.layers import (
    CrossViewAttention,
    convert_official_cross_view_state_dict,
    voxelize,
)
from projects.odin.ops import ext_available, knn, scatter_mean, use_backend
from projects.odin.parity import NaiveCrossViewAttention, fill_value, knn_differences

# ../shared/reference beside the checkout (or $ODIN_REFERENCE_DIR), as every golden test
REF = Path(reference_dir())
GOLDEN_BLOCK = REF / 'golden_crossview_block.pt'


def random_pair(c=32, layers=2, heads=4, ffn=48, k=5, seed=0, dtype=torch.float64):
    """An official-formulation block with random weights and our block loaded from it."""
    torch.manual_seed(seed)
    naive = NaiveCrossViewAttention(c, layers, heads, ffn).to(dtype)
    with torch.no_grad():
        for p in naive.parameters():   # non-trivial LayerNorm/bias values too
            p.add_(0.1 * torch.randn_like(p))
    ours = CrossViewAttention(c, layers, heads, ffn, num_neighbors=k).to(dtype)
    ours.load_state_dict(convert_official_cross_view_state_dict(naive.state_dict()))
    return naive, ours


def random_voxels(n_per_scene, c, k, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    xyz = torch.rand(sum(n_per_scene), 3, generator=g, dtype=dtype)
    feats = torch.randn(sum(n_per_scene), c, generator=g, dtype=dtype)
    off = torch.tensor(n_per_scene).cumsum(0)
    idx, _ = knn(xyz, xyz, k, off, off)
    return feats, xyz, idx


@pytest.mark.skipif(not GOLDEN_BLOCK.exists(), reason=f'{GOLDEN_BLOCK} not present')
@pytest.mark.parametrize('backend,device', [
    ('pytorch', 'cpu'),
    pytest.param('auto', 'cpu', marks=pytest.mark.skipif(
        not ext_available(), reason='compiled extension not built')),
    # on a GPU: our CUDA kernels (or the twins on the GPU), cuBLAS in full float32
    pytest.param('auto', 'cuda', marks=pytest.mark.skipif(
        not torch.cuda.is_available(), reason='needs a CUDA device'))])
def test_golden_official_block(backend, device):
    g = torch.load(GOLDEN_BLOCK, weights_only=True, map_location=device)
    inter = g['intermediates']
    sd = {key: fill_value(key, shape) for key, shape, _ in g['meta']['state_dict_keys']}
    block = CrossViewAttention(256, num_layers=2, num_heads=8, ffn_dims=1024, num_neighbors=8)
    block.load_state_dict(convert_official_cross_view_state_dict(sd))
    block.eval().to(device)
    # the full path the model takes: voxelise pixels, pool, kNN, fuse, broadcast back
    b, v, h, w = 2, 2, 25, 30
    feats = g['inputs']['features'].view(b, v, 256, h, w).permute(0, 1, 3, 4, 2).reshape(-1, 256)
    p2v, voff, vxyz = voxelize(g['inputs']['xyz'].reshape(-1, 3), torch.tensor([1500, 3000]), 0.04)
    ref_idx = inter['knn_idx'].long()
    with use_backend(backend), torch.no_grad():
        vfeats = scatter_mean(feats, p2v, int(voff[-1]))
        idx, _ = knn(vxyz, vxyz, 8, voff, voff)
        # our selection may differ from the official one only at float64 near-ties (which the
        # CPU's float32 kernels resolve either way); the block then runs on the official one
        _, unexplained = knn_differences(idx, ref_idx, vxyz, vxyz, 8, voff, voff)
        out = block(vfeats, vxyz, ref_idx)
        query_pe = block.pos_enc(torch.zeros(1, 3, device=device))[0]
    torch.testing.assert_close(vfeats, inter['voxel_feats_in'])
    assert unexplained == []
    torch.testing.assert_close(query_pe, inter['query_pe_row'], rtol=1e-5, atol=1e-6)
    ref = inter['layer1_out_voxel'][:, 0]
    assert ((out - ref).norm() / ref.norm()).item() <= 1e-5
    pixels = out[p2v].view(b, v, h, w, 256).permute(0, 1, 4, 2, 3).reshape(b * v, 256, h, w)
    assert ((pixels - g['output']).norm() / g['output'].norm()).item() <= 1e-5


@pytest.mark.parametrize('backend', ['pytorch', pytest.param('auto', marks=pytest.mark.skipif(
    not ext_available(), reason='compiled extension not built'))])
def test_equals_official_formulation_float64(backend):
    naive, ours = random_pair(c=32, layers=2, heads=4, ffn=48, k=6, seed=1)
    feats, xyz, idx = random_voxels([40, 3, 57], 32, 6, seed=2)  # scene of 3 -> padded neighbours
    f1 = feats.clone().requires_grad_(True)
    f2 = feats.clone().requires_grad_(True)
    out_ref = naive(f1, xyz, idx)
    with use_backend(backend):
        out = ours(f2, xyz, idx)
    assert (out - out_ref).abs().max().item() <= 1e-10
    grad = torch.randn_like(out)
    (out_ref * grad).sum().backward()
    with use_backend(backend):
        (out * grad).sum().backward()
    assert (f1.grad - f2.grad).abs().max().item() <= 1e-10
    ref_grads = convert_official_cross_view_state_dict(
        {k: p.grad for k, p in naive.named_parameters()})
    for name, p in ours.named_parameters():
        assert (p.grad - ref_grads[name]).abs().max().item() <= 1e-10, name


def test_gradcheck_fast_block():
    _, ours = random_pair(c=8, layers=2, heads=2, ffn=12, k=4, seed=3)
    feats, xyz, idx = random_voxels([6, 5], 8, 4, seed=4)
    feats.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda f: ours(f, xyz, idx), (feats,), fast_mode=True)
    # parameters too (through a functional call)
    params = {k: v.detach().clone().requires_grad_(True) for k, v in ours.named_parameters()}
    names = ['pos_enc.fc1.weight', 'pos_enc.norm.weight', 'pos_enc.fc2.weight',
             'layers.1.in_proj_weight']

    def fn(*tensors):
        p = dict(params, **dict(zip(names, tensors)))
        return torch.func.functional_call(ours, p, (feats.detach(), xyz, idx))

    assert torch.autograd.gradcheck(fn, tuple(params[n] for n in names), fast_mode=True)


def test_dropout_acts_in_train_mode_only():
    block = CrossViewAttention(16, num_layers=1, num_heads=2, ffn_dims=32, num_neighbors=3,
                               dropout=0.5)
    feats, xyz, idx = random_voxels([20], 16, 3, seed=5, dtype=torch.float32)
    block.eval()
    with torch.no_grad():
        ref = block(feats, xyz, idx)
        torch.testing.assert_close(block(feats, xyz, idx), ref, rtol=0, atol=0)
    block.train()
    torch.manual_seed(0)
    out = block(feats, xyz, idx)
    out.sum().backward()
    assert out.shape == (20, 16) and torch.isfinite(out).all()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in block.parameters())
    # dropout is active: the train-mode output differs from eval and from another draw
    assert (out.detach() - ref).abs().max() > 1e-3
    with torch.no_grad():
        assert (block(feats, xyz, idx) - out.detach()).abs().max() > 1e-3


def test_converter_and_input_errors():
    naive, ours = random_pair(c=8, layers=1, heads=2, ffn=8, k=2)
    sd = naive.state_dict()
    assert set(convert_official_cross_view_state_dict(sd)) == set(ours.state_dict())
    with pytest.raises(KeyError, match='unmapped.*pe_layer.extra'):
        convert_official_cross_view_state_dict(dict(sd, **{'pe_layer.extra': torch.zeros(1)}))
    feats, xyz, idx = random_voxels([5], 8, 2, seed=0)
    with pytest.raises(ValueError, match='neighbor_idx values'):
        ours(feats, xyz, idx + 4)
    with pytest.raises(ValueError, match=r'neighbor_idx must be \(5, 2\)'):
        ours(feats, xyz, idx[:, :1])
    with pytest.raises(ValueError, match='voxel_feats'):
        ours(feats[:, :4], xyz, idx)


@pytest.mark.parametrize('device,dtype', [
    ('cpu', torch.bfloat16),
    pytest.param('cuda', torch.float16, marks=pytest.mark.skipif(
        not torch.cuda.is_available(), reason='needs a CUDA device'))])
def test_block_under_amp(device, dtype):
    # AMP hands the attention ops half-precision projections and float32 softmax weights (the
    # first GPU training stopped on that mix): the ops run in float32, the block trains
    from projects.odin.ops import knn_gather_dot, knn_gather_wsum
    g = torch.Generator().manual_seed(0)
    attn = torch.softmax(torch.randn(20, 4, 5, generator=g), -1).to(device)
    value = torch.randn(30, 32, generator=g).to(device)
    idx = torch.randint(0, 30, (20, 5), generator=g).to(device)
    out = knn_gather_wsum(attn, value.to(dtype), idx)
    assert out.dtype == torch.float32
    assert torch.equal(out, knn_gather_wsum(attn, value.to(dtype).float(), idx))
    q = torch.randn(20, 32, generator=g).to(device)
    with torch.autocast(device_type=device, dtype=dtype):
        scores = knn_gather_dot(q.to(dtype), value, idx, 4)
    assert scores.dtype == torch.float32
    torch.testing.assert_close(scores, knn_gather_dot(q.to(dtype).float(), value, idx, 4))
    with pytest.raises(ValueError, match='share dtype'):  # no AMP, float32 with float64: refused
        knn_gather_wsum(attn, value.double(), idx)

    _, block = random_pair(c=32, layers=2, heads=4, ffn=48, k=5, seed=5, dtype=torch.float32)
    block.to(device)
    feats, xyz, nidx = random_voxels([50], 32, 5, seed=6, dtype=torch.float32)
    feats, xyz, nidx = feats.to(device), xyz.to(device), nidx.to(device)
    ref = block(feats, xyz, nidx)
    f = feats.clone().requires_grad_(True)
    with torch.autocast(device_type=device, dtype=dtype):
        out = block(f, xyz, nidx)
    out.float().square().sum().backward()
    assert ((out.float() - ref).norm() / ref.norm()).item() < 2e-2  # half-precision projections
    assert f.grad.isfinite().all() and block.layers[0].in_proj_weight.grad.isfinite().all()


@pytest.mark.parametrize('row_chunk', [7, 16, 64])
def test_row_chunks_equal_the_whole_layer(row_chunk):
    # the row-wise part (query, scores, output, FFN) runs per chunk of query voxels against
    # the keys and values of all voxels: the same numbers as all rows at once (float64)
    naive, whole = random_pair(c=16, layers=2, heads=2, ffn=24, k=5, seed=6)
    chunked = CrossViewAttention(16, 2, 2, 24, num_neighbors=5, row_chunk=row_chunk).double()
    chunked.load_state_dict(whole.state_dict())
    for layer in whole.layers:
        layer.row_chunk = 0
    feats, xyz, idx = random_voxels([30, 20], 16, 5, seed=7)
    outs, grads = [], []
    for block in (whole, chunked):
        f = feats.clone().requires_grad_(True)
        out = block(f, xyz, idx)
        outs.append(out.detach())
        grads.append(torch.autograd.grad(out.square().sum(), [f] + list(block.parameters())))
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-12, atol=1e-12)
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)
    # and the official formulation agrees with the chunked block
    with torch.no_grad():
        torch.testing.assert_close(outs[1], naive(feats, xyz, idx), rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match='row_chunk must be >= 0'):
        CrossViewAttention(16, 1, 2, 24, row_chunk=-1)
    # no voxels: an empty result, not an error
    with torch.no_grad():
        assert chunked(feats[:0], xyz[:0], idx[:0]).shape == (0, 16)
