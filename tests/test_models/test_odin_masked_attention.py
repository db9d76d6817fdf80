"""ODINMaskedAttention: mmcv's MultiheadAttention through scaled_dot_product_attention."""
import copy
import os.path as osp

import pytest
import torch
from mmcv.cnn.bricks.transformer import MultiheadAttention

from projects.odin.layers import (
    ODINMaskedAttention,
    use_mmcv_masked_attn,
    use_odin_masked_attn,
)
from projects.odin.layers.deform_attn_layer import swap_module_class

pytestmark = pytest.mark.usefixtures('one_thread')


def _pair(batch_first=True, dtype=torch.float64, **kwargs):
    """mmcv's layer and ours with the same (randomised) weights."""
    torch.manual_seed(0)
    ref = MultiheadAttention(32, 4, batch_first=batch_first, **kwargs).to(dtype)
    with torch.no_grad():
        for p in ref.parameters():  # mmcv initialises the biases to zero
            p.add_(0.1 * torch.randn_like(p))
    ours = swap_module_class(copy.deepcopy(ref), ODINMaskedAttention)
    return ref.eval(), ours.eval()


def _inputs(bs=2, nq=7, nk=40, dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    q, qp = (torch.randn(bs, nq, 32, generator=g, dtype=dtype) for _ in range(2))
    k, kp = (torch.randn(bs, nk, 32, generator=g, dtype=dtype) for _ in range(2))
    mask = torch.rand(bs, nq, nk, generator=g) < 0.6
    mask[:, :, 0] = False  # no fully masked row (mmcv would give NaN, the head never asks)
    return q, qp, k, kp, mask


@pytest.mark.parametrize('batch_first', [True, False])
def test_equals_mmcv_layer_with_a_mask_per_head_or_shared(batch_first):
    ref, ours = _pair(batch_first)
    q, qp, k, kp, mask = _inputs()
    per_head = mask.unsqueeze(1).repeat(1, 4, 1, 1)
    per_head[1, 2, :, 5:9] = True  # heads may differ when the mask is given per head
    if not batch_first:
        q, qp, k, kp = (t.transpose(0, 1) for t in (q, qp, k, kp))
    with torch.no_grad():
        expected = ref(q, k, k, query_pos=qp, key_pos=kp, attn_mask=per_head.flatten(0, 1))
        flat = ours(q, k, k, query_pos=qp, key_pos=kp, attn_mask=per_head.flatten(0, 1))
        four_d = ours(q, k, k, query_pos=qp, key_pos=kp, attn_mask=per_head)
        shared_ref = ref(q, k, k, query_pos=qp, key_pos=kp,
                         attn_mask=mask.unsqueeze(1).repeat(1, 4, 1, 1).flatten(0, 1))
        shared = ours(q, k, k, query_pos=qp, key_pos=kp, attn_mask=mask.unsqueeze(1))
    for out, exp in ((flat, expected), (four_d, expected), (shared, shared_ref)):
        assert out.shape == exp.shape
        assert float((out - exp).abs().max() / exp.abs().max()) < 1e-12
    assert not torch.allclose(expected, shared_ref)  # the per-head difference mattered


def test_key_padding_mask_2d_mask_and_defaults_equal_mmcv():
    ref, ours = _pair()
    q, qp, k, kp, mask = _inputs()
    pad = torch.zeros(2, 40, dtype=torch.bool)
    pad[1, 30:] = True
    with torch.no_grad():
        cases = [
            (dict(key=k, value=k, key_padding_mask=pad), dict(key=k, value=k,
                                                               key_padding_mask=pad)),
            (dict(key=k, attn_mask=mask[0]), dict(key=k, attn_mask=mask[0])),
            (dict(query_pos=qp), dict(query_pos=qp)),  # self-attention, key_pos = query_pos
            (dict(key=k, value=k, query_pos=qp, identity=qp), dict(key=k, value=k, query_pos=qp,
                                                                   identity=qp)),
        ]
        for ref_kw, our_kw in cases:
            expected, out = ref(q, **ref_kw), ours(q, **our_kw)
            assert float((out - expected).abs().max() / expected.abs().max()) < 1e-12


def _float32_errors(device: str, nk: int) -> list:
    """Largest relative errors of ours vs mmcv (output, then every gradient), float32."""
    ref, ours = _pair(dtype=torch.float32)
    ref, ours = ref.to(device).train(), ours.to(device).train()  # dropout is 0
    q, qp, k, kp, mask = (t.to(device) for t in _inputs(nk=nk, dtype=torch.float32))
    q.requires_grad_(True)
    k.requires_grad_(True)
    results = []
    for layer, attn_mask in ((ref, mask.unsqueeze(1).repeat(1, 4, 1, 1).flatten(0, 1)),
                             (ours, mask.unsqueeze(1))):
        out = layer(q, k, k, query_pos=qp, key_pos=kp, attn_mask=attn_mask)
        results.append((out,) + torch.autograd.grad(out.square().sum(),
                                                    [q, k] + list(layer.parameters())))
    return [float((a.detach() - b.detach()).abs().max() / a.detach().abs().max())
            for a, b in zip(*results)]


def test_float32_forward_and_gradients_close_to_mmcv():
    errors = _float32_errors('cpu', 3000)
    assert len(errors) == 7 and max(errors) < 1e-5, errors


def test_bad_masks_raise_clear_errors():
    _, ours = _pair()
    q, qp, k, kp, mask = _inputs()
    with pytest.raises(ValueError, match='bool attn_mask'):
        ours(q, k, k, attn_mask=mask.float())
    with pytest.raises(ValueError, match=r'got \(2, 3, 7, 40\)'):
        ours(q, k, k, attn_mask=mask.unsqueeze(1).repeat(1, 3, 1, 1))
    with pytest.raises(ValueError, match='key_padding_mask must be'):
        ours(q, k, k, key_padding_mask=torch.zeros(2, 39, dtype=torch.bool))


def test_swap_keeps_parameters_round_trips_and_refuses_other_key_dims():
    from mmdet.models.layers import Mask2FormerTransformerDecoder
    decoder = Mask2FormerTransformerDecoder(num_layers=2, layer_cfg=dict(
        self_attn_cfg=dict(embed_dims=32, num_heads=4, dropout=0.0, batch_first=True),
        cross_attn_cfg=dict(embed_dims=32, num_heads=4, dropout=0.0, batch_first=True),
        ffn_cfg=dict(embed_dims=32, feedforward_channels=64)))
    params, keys = list(decoder.parameters()), list(decoder.state_dict())
    assert use_odin_masked_attn(decoder) == 2
    assert all(type(layer.cross_attn) is ODINMaskedAttention for layer in decoder.layers)
    assert all(type(layer.self_attn) is MultiheadAttention for layer in decoder.layers)
    assert all(a is b for a, b in zip(decoder.parameters(), params))
    assert list(decoder.state_dict()) == keys
    assert use_odin_masked_attn(decoder) == 0  # already ours
    assert use_mmcv_masked_attn(decoder) == 2
    assert all(type(layer.cross_attn) is MultiheadAttention for layer in decoder.layers)

    class Holder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleList([torch.nn.Module()])
            self.layers[0].cross_attn = MultiheadAttention(32, 4, kdim=16, vdim=16)

    with pytest.raises(ValueError, match='embed_dims channels'):
        use_odin_masked_attn(Holder())


def test_registered_and_used_by_the_head():
    from mmdet3d.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import projects.odin  # noqa: F401
    init_default_scope('mmdet3d')
    layer = MODELS.build(dict(type='ODINMaskedAttention', embed_dims=32, num_heads=4))
    assert isinstance(layer, ODINMaskedAttention)
    cfg = Config.fromfile(osp.join(osp.dirname(__file__), '..', '..', 'configs', 'odin',
                                   'scannet_r50.py'))
    head = MODELS.build(cfg.model.decode_head)
    assert all(type(layer.cross_attn) is ODINMaskedAttention
               for layer in head.transformer_decoder.layers)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_cuda_layer_equals_mmcv_layer():
    # on CUDA the fused kernel (memory-efficient attention) takes the bool mask; an odd key
    # count exercises its mask alignment
    errors = _float32_errors('cuda', 3001)
    assert len(errors) == 7 and max(errors) < 1e-4, errors
