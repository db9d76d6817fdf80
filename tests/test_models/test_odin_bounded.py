"""Bounded-memory inference (``test_cfg.view_chunk``): exactly the whole-batch model.

The 3D forward (``MultiViewEncoder``) runs every per-view step on a few views at a time and
every cross-view step on voxels; the whole batch is one chunk (``view_chunk=0``). Chunks must
give the whole-batch logits to float-summation precision (<= 1e-5 relative) with the same
instances, in mesh (ghost) mode, sensor mode, with Swin and with the open-vocabulary head, and
pass the official goldens with one view per chunk. Near-tie decisions (k-NN, attention and
instance masks, class scores) take the whole-batch run's where they differ
(``tie_robust.DecisionReplay``; training: the whole-batch step's attention masks), so the
comparisons hold on any CPU.
"""
import copy
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from tie_robust import DecisionReplay, attention_mask_injection

from odin_testing import REPO_ROOT, create_odin_inputs, make_tiny_roberta, reference_dir

CFG = f'{REPO_ROOT}/configs/odin/odin_tiny_test.py'
RTOL = 1e-5

pytestmark = pytest.mark.usefixtures('one_thread')


def _build(cfg_update=None, **model):
    from mmdet3d.registry import MODELS
    from mmengine.registry import init_default_scope

    import projects.odin  # noqa: F401
    init_default_scope('mmdet3d')
    cfg = Config.fromfile(CFG)
    if cfg_update:
        cfg.merge_from_dict(dict(model=copy.deepcopy(cfg_update)))
    model_cfg = copy.deepcopy(cfg.model)
    for key, value in model.items():
        model_cfg[key] = value  # replaces (no merge: prediction_points changes type)
    torch.manual_seed(0)
    net = MODELS.build(model_cfg)
    net.init_weights()
    return net.eval()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))


def _forward(model, d, view_chunk, point_chunk=0):
    """Features and every decoder prediction with ``test_cfg`` view / point chunks."""
    model.test_cfg.update(view_chunk=view_chunk, point_chunk=point_chunk)
    x = model.extract_feat(d['inputs'], d['data_samples'])
    cls, mask = model.decode_head(x, d['data_samples'])
    return x, cls, mask


def _compare(model, data, chunks=((1, 53), (3, 0), (4, 1000))):
    """Whole-batch vs chunked logits of every decoder prediction; returns the largest error."""
    d = model.data_preprocessor(copy.deepcopy(data), False)
    worst = 0.0
    replay = DecisionReplay(model)
    with torch.no_grad():
        with replay.record():
            x, ref_cls, ref_mask = _forward(model, d, 0)
        ref_counts = x.pred_counts
        for view_chunk, point_chunk in chunks:
            with replay.replay():
                x, cls, mask = _forward(model, d, view_chunk, point_chunk)
            counts = x.pred_counts
            assert counts == ref_counts
            assert len(cls) == len(ref_cls) == len(mask)
            for a, b in zip(cls + mask, ref_cls + ref_mask):
                assert a.shape == b.shape
                worst = max(worst, _rel(a, b))
            # inference keeps only the last prediction
            with replay.replay():
                last = model.decode_head.forward_last(x, d['data_samples'])
            cls1, mask1 = [last[0]], [last[1]]
            assert len(cls1) == len(mask1) == 1
            torch.testing.assert_close(mask1[0], mask[-1], rtol=0, atol=0)
    assert worst <= RTOL, worst
    replay.check()
    return worst


def _same_instances(a, b, logits_ref=None):
    """Identical instances: labels equal, scores close, masks equal."""
    assert torch.equal(a.instance_labels, b.instance_labels)
    torch.testing.assert_close(a.instance_scores, b.instance_scores, rtol=1e-5, atol=1e-6)
    assert torch.equal(a.pts_instance_mask, b.pts_instance_mask)
    assert torch.equal(a.pts_semantic_mask, b.pts_semantic_mask)


@pytest.mark.parametrize('mode', ['mesh', 'superpoints', 'sensor'])
def test_chunked_equals_whole_batch(mode):
    pp = dict(mesh=dict(type='MeshPointsBuilder', superpoints=False),
              superpoints=dict(type='MeshPointsBuilder', superpoints=True),
              sensor=dict(type='SensorPointsBuilder'))[mode]
    model = _build(prediction_points=pp)
    data = create_odin_inputs(num_views=7, img_hw=(32, 48), num_points=200, batch_size=2,
                              num_superpoints=40 if mode == 'superpoints' else None)
    _compare(model, data)


def test_predict_uses_view_chunk_and_gives_the_same_instances():
    model = _build(prediction_points=dict(type='SensorPointsBuilder'))
    data = create_odin_inputs(num_views=6, img_hw=(32, 32), num_points=150,
                              num_superpoints=None)
    calls = []
    model.backbone.layer1.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    replay = DecisionReplay(model)
    with torch.no_grad():
        model.test_cfg['view_chunk'] = 0
        with replay.record():
            whole = model(**model.data_preprocessor(copy.deepcopy(data), False), mode='predict')
        assert calls == [6]
        calls.clear()
        model.test_cfg.update(view_chunk=4, point_chunk=100)
        with replay.replay():
            chunked = model(**model.data_preprocessor(copy.deepcopy(data), False),
                            mode='predict')
    # the first pass runs res2 per chunk; sensor points recompute it per chunk at the end
    assert calls == [4, 2, 4, 2]
    _same_instances(chunked[0].pred_pts_seg, whole[0].pred_pts_seg)
    replay.check()



def test_hold_res2_views_holds_instead_of_recomputing_with_the_same_logits():
    """``hold_res2_views``: res2 of every chunk kept from the backbone pass (no second stem /
    res2 pass) for batches of at most that many views; the same chunks run the same
    operations, so every logit is bit-equal to recomputing it."""
    model = _build(prediction_points=dict(type='SensorPointsBuilder'))
    data = create_odin_inputs(num_views=6, img_hw=(32, 32), num_points=150,
                              num_superpoints=None)
    d = model.data_preprocessor(copy.deepcopy(data), False)
    calls = []
    model.backbone.layer1.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    outs = {}
    with torch.no_grad():
        for hold in (0, 5, 6):
            calls.clear()
            model.test_cfg.update(view_chunk=4, hold_res2_views=hold)
            outs[hold] = _forward(model, d, 4)[1:]
            # held only when the batch has at most `hold` views
            assert calls == ([4, 2] if hold >= 6 else [4, 2, 4, 2]), (hold, calls)
    for a, b in zip(outs[6][0] + outs[6][1], outs[0][0] + outs[0][1]):
        assert torch.equal(a, b)
    model.test_cfg['hold_res2_views'] = -1
    with pytest.raises(ValueError, match='hold_res2_views must be >= 0'):
        model.extract_feat(d['inputs'], d['data_samples'])

def test_swin_chunked_equals_whole_batch():
    backbone = dict(
        _delete_=True, type='ODINSwinTransformer', embed_dims=32, depths=[1, 1, 1, 1],
        num_heads=[1, 2, 4, 8], window_size=4, out_indices=(0, 1, 2, 3),
        fusion_stages=(1, 2, 3), fusion_layers=(1, 1, 1),
        fusion_cfg=dict(embed_dims=32, num_heads=4, ffn_dims=64, num_groups=8), init_cfg=None)
    for pp in (dict(type='MeshPointsBuilder'), dict(type='SensorPointsBuilder')):
        model = _build(dict(backbone=backbone, decode_head=dict(in_channels=[32, 64, 128, 256])),
                       prediction_points=pp)
        data = create_odin_inputs(num_views=5, img_hw=(32, 32), num_points=150,
                                  num_superpoints=None)
        _compare(model, data, chunks=((2, 37), ))


def test_open_vocab_chunked_equals_whole_batch(tmp_path):
    roberta = make_tiny_roberta(str(tmp_path / 'roberta'))
    model = _build(dict(decode_head=dict(
        open_vocab_cfg=dict(text_encoder=dict(type='ODINTextEncoder', pretrained=roberta)),
        class_names=('chair', 'table', 'sofa', 'lamp'))))
    data = create_odin_inputs(num_views=5, img_hw=(32, 32), num_points=150)
    _compare(model, data, chunks=((2, 64), ))


def test_no_decoder_fusion_ablation():
    """Without pixel-decoder fusion the multi-scale features are per pixel; their voxel means
    (what the decoder reads) still match."""
    model = _build(dict(decode_head=dict(pixel_decoder=dict(level_fusion_cfg=None))),
                   prediction_points=dict(type='SensorPointsBuilder'))
    assert model.decode_head.pixel_decoder.fusion_blocks is None
    data = create_odin_inputs(num_views=5, img_hw=(32, 32), num_points=150,
                              num_superpoints=None)
    _compare(model, data, chunks=((2, 0), ))


def test_bad_view_chunk():
    model = _build()
    data = create_odin_inputs(num_views=2, img_hw=(32, 32), num_points=100)
    d = model.data_preprocessor(data, False)
    model.test_cfg['view_chunk'] = -1
    with pytest.raises(ValueError, match='view_chunk must be >= 0'):
        model.extract_feat(d['inputs'], d['data_samples'])


@pytest.mark.parametrize('arch,tie_order', [('scannet_resnet', 'ours'),
                                            ('scannet200_swin', 'ours'),
                                            ('ai2thor_resnet', 'ours'),
                                            ('ai2thor_resnet', 'reverse')])
def test_goldens_with_one_view_per_chunk(arch, tie_order):
    """The official goldens, on the bounded path with one view per chunk and small point chunks
    (and, once, every k-NN near-tie resolved the other way first)."""
    golden = osp.join(reference_dir(), f'golden_{arch}.pt')
    if not osp.isfile(golden):
        pytest.skip(f'golden not found: {golden} (../shared/reference)')
    import projects.odin.models  # noqa: F401
    from projects.odin.parity import run_parity
    ok, rows = run_parity(golden, verbose=False, view_chunk=1, point_chunk=37,
                          tie_order=tie_order)
    failed = [r for r in rows if not r[2]]
    assert ok, f'stages out of tolerance: {failed}'
    names = {r[0] for r in rows}
    assert 'decoder.out.pred_masks' in names and 'pixel_decoder.mask_features' in names


# ---------------------------------------------------------------- training in bounded memory
def _train_step(model, data, view_chunk, masks=None):
    """Losses and gradients of one training step with ``train_cfg.view_chunk``.

    ``masks``: attention masks to use instead of the model's (one per decoder head, in call
    order); without, the model's masks are recorded into a new list. Returns the losses, the
    gradients, the masks and how many mask entries differed from the injected ones.
    """
    model.train_cfg['view_chunk'] = view_chunk
    model.zero_grad()
    with attention_mask_injection(model.decode_head, masks) as (recorded, differing):
        torch.manual_seed(1)  # key subsampling and loss point subsets
        d = model.data_preprocessor(copy.deepcopy(data), True)
        losses = model(**d, mode='loss')
        sum(v for k, v in losses.items() if 'loss' in k).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return losses, grads, recorded, differing[0]


@pytest.mark.parametrize('points', ['MeshPointsBuilder', 'SensorPointsBuilder'])
def test_training_view_chunks_recompute_and_give_the_whole_batch_gradients(points):
    """``train_cfg.view_chunk``: chunks recomputed in the backward pass, same gradients.

    The attention masks of the whole-batch step are given to the chunked step (a logit at 0 may
    round to the other side of ``sigmoid < 0.5``): the comparison is robust to near-ties.
    """
    model = _build(prediction_points=dict(type=points)).train()
    data = create_odin_inputs(num_views=5, img_hw=(32, 48), num_points=300, batch_size=2,
                              num_superpoints=None)
    ref_losses, ref_grads, masks, _ = _train_step(model, data, 0)
    calls = []
    model.backbone.layer2.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    losses, grads, _, differing = _train_step(model, data, 3)
    # forward: 10 views in chunks of 3, 3, 3, 1 (one spans both scenes); backward: each chunk's
    # segment recomputed once (in the backward's order)
    assert calls[:4] == [3, 3, 3, 1] and sorted(calls[4:]) == [1, 3, 3, 3], calls
    assert differing <= 1e-3 * sum(m.numel() for m in masks)
    assert set(losses) == set(ref_losses)
    for k in losses:
        torch.testing.assert_close(losses[k], ref_losses[k], rtol=1e-5, atol=1e-6)
    assert set(grads) == set(ref_grads) and len(grads) > 100
    # a gradient that is 0 in exact arithmetic is float rounding in both steps (the bias of the
    # keys' positional encoding: a shift of every key leaves the softmax unchanged); it must stay
    # at rounding level, every other one must agree to 1e-5 relative
    scale = max(float(g.abs().max()) for g in ref_grads.values())
    vanishing = {n for n, g in ref_grads.items() if g.abs().max() <= 1e-6 * scale}
    assert vanishing <= {'decode_head.pos_embed_3d.3.bias',
                         'decode_head.pixel_decoder.level_encoding.weight'}, vanishing
    assert all(grads[n].abs().max() <= 1e-6 * scale for n in vanishing)
    worst = max(_rel(grads[n], g) for n, g in ref_grads.items() if n not in vanishing)
    assert worst <= RTOL, worst


def test_training_view_chunks_respect_train_cfg_only():
    """``test_cfg.view_chunk`` does not recompute; ``train_cfg.view_chunk`` < 0 is refused."""
    model = _build().train()
    data = create_odin_inputs(num_views=3, img_hw=(32, 32), num_points=100)
    model.train_cfg['view_chunk'] = -2
    d = model.data_preprocessor(copy.deepcopy(data), True)
    with pytest.raises(ValueError, match='view_chunk must be >= 0'):
        model(**d, mode='loss')
    model.train_cfg['view_chunk'] = 1
    model.eval()
    assert not model.chunk_plan(3).recompute and len(model.chunk_plan(3)) == 1
    model.train()
    assert model.chunk_plan(3).recompute and len(model.chunk_plan(3)) == 3
    with torch.no_grad():  # nothing to recompute without gradients
        assert not model.chunk_plan(3).recompute
