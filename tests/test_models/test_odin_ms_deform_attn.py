"""ODINMultiScaleDeformableAttention: mmcv's layer with our CPU kernel, swapped into the decoder."""
import copy
import os.path as osp

import pytest
import torch
from mmcv.ops import MultiScaleDeformableAttention

from odin_testing import reference_dir
from projects.odin.layers import (
    ODINMultiScaleDeformableAttention,
    use_mmcv_ms_deform_attn,
    use_odin_ms_deform_attn,
)
from projects.odin.ops import ext_available, use_backend

TSV = osp.join(reference_dir(), 'statedict_scannet_resnet.tsv')
BACKENDS = ['pytorch', pytest.param('auto', marks=pytest.mark.skipif(
    not ext_available(), reason='compiled extension not built (python tools/build_ops.py)'))]

pytestmark = pytest.mark.usefixtures('one_thread')


def _levels(shapes):
    shapes = torch.tensor(shapes, dtype=torch.long)
    sizes = shapes.prod(1)
    return shapes, torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])


def _pair(batch_first, dtype=torch.float64, **kwargs):
    """mmcv's layer and ours with the same (randomised) weights."""
    torch.manual_seed(0)
    cfg = dict(embed_dims=32, num_heads=4, num_levels=3, num_points=3, dropout=0.0,
               batch_first=batch_first, **kwargs)
    ref = MultiScaleDeformableAttention(**cfg).to(dtype)
    with torch.no_grad():
        for p in ref.parameters():  # mmcv initialises attention weights to zero
            p.add_(0.1 * torch.randn_like(p))
    ours = ODINMultiScaleDeformableAttention(**cfg).to(dtype)
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('batch_first,ref_dims', [(True, 2), (False, 2), (True, 4)])
def test_layer_equals_mmcv_layer(backend, batch_first, ref_dims):
    ref, ours = _pair(batch_first)
    shapes, start = _levels([(5, 3), (3, 2), (1, 1)])
    bs, nq, nv = 2, 7, int(shapes.prod(1).sum())
    g = torch.Generator().manual_seed(1)
    query = torch.randn(bs, nq, 32, generator=g, dtype=torch.float64)
    value = torch.randn(bs, nv, 32, generator=g, dtype=torch.float64)
    pos = torch.randn(bs, nq, 32, generator=g, dtype=torch.float64)
    refs = torch.rand(bs, nq, 3, ref_dims, generator=g, dtype=torch.float64)
    mask = torch.zeros(bs, nv, dtype=torch.bool)
    mask[1, -4:] = True
    if not batch_first:
        query, value, pos = (t.transpose(0, 1) for t in (query, value, pos))

    def run(layer):
        layer.zero_grad()
        q, v = query.clone().requires_grad_(True), value.clone().requires_grad_(True)
        out = layer(q, value=v, query_pos=pos, key_padding_mask=mask, reference_points=refs,
                    spatial_shapes=shapes, level_start_index=start)
        out.pow(2).sum().backward()
        return [out, q.grad, v.grad] + [p.grad for p in layer.parameters()]

    expected = run(ref)
    with use_backend(backend):
        got = run(ours)
    assert got[0].shape == query.shape
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11)


@pytest.mark.skipif(not ext_available(), reason='compiled extension not built')
def test_layer_float32_close_to_mmcv():
    ref, ours = _pair(True, dtype=torch.float32)
    shapes, start = _levels([(6, 4), (3, 2), (2, 1)])
    g = torch.Generator().manual_seed(2)
    query = torch.randn(2, 32, 32, generator=g)
    refs = torch.rand(2, 32, 3, 2, generator=g)
    kw = dict(reference_points=refs, spatial_shapes=shapes, level_start_index=start)
    with torch.no_grad():
        out, expected = ours(query, **kw), ref(query, **kw)
    err = float((out - expected).norm() / expected.norm())
    assert err < 1e-6


def test_swap_keeps_parameters_and_round_trips():
    from mmcv.cnn.bricks.transformer import FFN
    holder = torch.nn.Sequential(
        MultiScaleDeformableAttention(embed_dims=32, num_heads=4, num_levels=2, num_points=2,
                                      batch_first=True),
        FFN(embed_dims=32, feedforward_channels=64))
    holder.eval()
    params = list(holder.parameters())
    keys = list(holder.state_dict())
    assert use_odin_ms_deform_attn(holder) == 1
    assert type(holder[0]) is ODINMultiScaleDeformableAttention
    assert not holder[0].training and holder[0].batch_first and holder[0].num_points == 2
    assert all(a is b for a, b in zip(holder.parameters(), params))
    assert list(holder.state_dict()) == keys
    assert use_odin_ms_deform_attn(holder) == 0  # already ours
    assert use_mmcv_ms_deform_attn(holder) == 1
    assert type(holder[0]) is MultiScaleDeformableAttention
    assert all(a is b for a, b in zip(holder.parameters(), params))


def test_registered_in_the_model_registry():
    from mmdet3d.registry import MODELS
    layer = MODELS.build(dict(type='ODINMultiScaleDeformableAttention', embed_dims=32,
                              num_heads=4, num_levels=2, num_points=2))
    assert isinstance(layer, ODINMultiScaleDeformableAttention)


def _pixel_decoder():
    from mmdet3d.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import projects.odin  # noqa: F401
    init_default_scope('mmdet3d')
    cfg = Config.fromfile(osp.join(osp.dirname(__file__), '..', '..', 'configs', 'odin',
                                   'scannet_r50.py'))
    pd_cfg = copy.deepcopy(cfg.model.decode_head.pixel_decoder)
    pd_cfg.update(in_channels=cfg.model.decode_head.in_channels, feat_channels=256,
                  out_channels=256)
    return MODELS.build(pd_cfg)


@pytest.mark.skipif(not osp.exists(TSV), reason=f'reference state-dict list not found: {TSV}')
def test_pixel_decoder_uses_ours_loads_official_weights_and_matches_mmcv():
    from projects.odin.conversion import convert_official_state_dict
    from projects.odin.parity import read_statedict_tsv

    decoder = _pixel_decoder().eval()
    attns = [m for m in decoder.modules() if isinstance(m, MultiScaleDeformableAttention)]
    assert len(attns) == 6
    assert all(type(m) is ODINMultiScaleDeformableAttention for m in attns)

    # the official ScanNet R50 checkpoint (random values with its key list and shapes) converts
    # and loads into the decoder strictly: same keys and shapes as mmcv's layers
    g = torch.Generator().manual_seed(0)
    official = {}
    for key, (shape, dtype) in read_statedict_tsv(TSV).items():
        if key.startswith('sem_seg_head.pixel_decoder.') and 'float' in dtype:
            official[key] = torch.randn(shape, generator=g) * 0.05
        else:
            official[key] = torch.empty(shape, dtype=getattr(torch, dtype), device='meta')
    prefix = 'decode_head.pixel_decoder.'
    converted = {k[len(prefix):]: v for k, v in convert_official_state_dict(official).items()
                 if k.startswith(prefix)}
    assert any('encoder.layers.5.self_attn.sampling_offsets.weight' == k for k in converted)
    missing, unexpected = decoder.load_state_dict(converted, strict=True)
    assert not missing and not unexpected
    for k, v in decoder.state_dict().items():
        assert torch.equal(v, converted[k]), k

    # per-view deformable encoder: ours vs mmcv's layers with the same weights
    reference = copy.deepcopy(decoder)
    assert use_mmcv_ms_deform_attn(reference) == 6
    g = torch.Generator().manual_seed(1)
    feats = [torch.randn(2, c, 32 // s, 48 // s, generator=g)
             for c, s in zip((256, 512, 1024, 2048), (1, 2, 4, 8))]
    with torch.no_grad():
        got = decoder.encode(feats)
        expected = reference.encode(feats)
    for a, b in zip(got, expected):
        assert a.shape == b.shape
        err = float((a - b).norm() / b.norm())
        assert err < 1e-5, err


def test_identity_and_its_deprecated_alias():
    ref, ours = _pair(True)
    shapes, start = _levels([(2, 3), (1, 2), (1, 1)])
    g = torch.Generator().manual_seed(3)
    query = torch.randn(1, 9, 32, generator=g, dtype=torch.float64)
    residual = torch.randn(1, 9, 32, generator=g, dtype=torch.float64)
    kw = dict(reference_points=torch.rand(1, 9, 3, 2, generator=g, dtype=torch.float64),
              spatial_shapes=shapes, level_start_index=start)
    with torch.no_grad(), pytest.warns(DeprecationWarning):
        expected = ref(query, residual=residual, **kw)
    with torch.no_grad():
        got = ours(query, residual=residual, **kw)
        torch.testing.assert_close(ours(query, identity=residual, **kw), got, rtol=0, atol=0)
        assert float((ours(query, **kw) - got).abs().max()) > 0.1  # identity defaults to query
    torch.testing.assert_close(got, expected, rtol=1e-11, atol=1e-11)
