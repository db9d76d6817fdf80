"""ODIN detector on a tiny config: 3D/2D training, inference, gradients, frame cap."""
import copy

import pytest
import torch
from mmengine.config import Config
from tie_robust import DecisionReplay

from odin_testing import REPO_ROOT, create_odin_inputs

CFG = f'{REPO_ROOT}/configs/odin/odin_tiny_test.py'


pytestmark = pytest.mark.usefixtures('one_thread')


def _build(**overrides):
    from mmdet3d.registry import MODELS
    from mmengine.registry import init_default_scope

    import projects.odin  # noqa: F401
    init_default_scope('mmdet3d')
    cfg = Config.fromfile(CFG)
    model_cfg = copy.deepcopy(cfg.model)
    for k, v in overrides.items():
        if isinstance(v, dict) and k in model_cfg and k != 'prediction_points':
            model_cfg[k].update(v)
        else:
            model_cfg[k] = v
    torch.manual_seed(0)
    model = MODELS.build(model_cfg)
    model.init_weights()
    return model


def _loss(model, data):
    d = model.data_preprocessor(data, True)
    losses = model(**d, mode='loss')
    return sum(v for k, v in losses.items() if 'loss' in k), losses


def test_train_3d_loss_falls_and_grads_reach_every_parameter():
    model = _build()
    model.train()
    data = create_odin_inputs(num_views=2, img_hw=(32, 32), num_points=200, batch_size=1)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    history = []
    for it in range(24):
        total, losses = _loss(model, data)
        opt.zero_grad()
        total.backward()
        if it == 1:  # after one step (deformable-attention offsets start at exactly 0)
            no_grad = [n for n, p in model.named_parameters()
                       if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
            assert not no_grad, f'no gradient reaches: {no_grad}'
        opt.step()
        history.append(total.item())
    # deep supervision: initial prediction + 3 layers, each with cls/mask/dice
    assert {'loss_cls', 'loss_mask', 'loss_dice', 'd0.loss_cls', 'd2.loss_dice'} <= set(losses)
    assert all(torch.isfinite(torch.tensor(history)))
    assert sum(history[-3:]) / 3 < 0.7 * sum(history[:3]) / 3, history
    # frozen BN (detectron2 FrozenBN): not trainable and kept in eval mode
    bn = model.backbone.norm1
    assert not bn.weight.requires_grad and not bn.training


def test_predict_3d_ghost_points_output_format():
    model = _build()
    model.eval()
    data = create_odin_inputs(num_views=2, img_hw=(32, 32), num_points=150, batch_size=2)
    with torch.no_grad():
        out = model(**model.data_preprocessor(data, False), mode='predict')
    for sample in out:
        pred = sample.pred_pts_seg
        n = 150
        assert pred.pts_semantic_mask.shape == (n, )
        assert pred.pts_instance_mask.shape == (10, n)
        assert pred.pts_instance_mask.dtype == torch.bool
        assert pred.instance_labels.shape == (10, )
        assert pred.instance_labels.max() < 4 and pred.pts_semantic_mask.max() < 4
        assert ((pred.instance_scores >= 0) & (pred.instance_scores <= 1)).all()
        # empty masks score 0
        empty = pred.pts_instance_mask.sum(1) == 0
        assert (pred.instance_scores[empty] == 0).all()


def test_predict_3d_sensor_points_and_skip_classes():
    model = _build(prediction_points=dict(type='SensorPointsBuilder'),
                   test_cfg=dict(skip_classes=(2, 3)))
    model.eval()
    data = create_odin_inputs(num_views=2, img_hw=(32, 32), num_points=120,
                              num_superpoints=None)
    with torch.no_grad():
        out = model(**model.data_preprocessor(data, False), mode='predict')
    pred = out[0].pred_pts_seg
    assert pred.pts_instance_mask.shape == (10, 120)
    assert not torch.isin(pred.instance_labels, torch.tensor([2, 3])).any()


def test_sensor_mode_trains():
    model = _build(prediction_points=dict(type='SensorPointsBuilder'))
    model.train()
    data = create_odin_inputs(num_views=2, img_hw=(32, 32), num_points=150,
                              num_superpoints=None)
    total, losses = _loss(model, data)
    total.backward()
    assert torch.isfinite(total) and losses['loss_mask'] > 0
    # the sensor-point path reaches the 3D layers (backbone fusion, decoder 3D positions)
    fusion = model.backbone.fusion_blocks[0].in_proj[0].weight.grad
    assert fusion is not None and fusion.abs().sum() > 0
    assert model.decode_head.pos_embed_3d[0].weight.grad.abs().sum() > 0


def test_frame_cap_and_encoder_chunks():
    model = _build(test_cfg=dict(max_frames=2))
    model.eval()
    data = create_odin_inputs(num_views=4, img_hw=(32, 32), num_points=100)
    inputs = model.data_preprocessor(copy.deepcopy(data), False)['inputs']
    capped = model._select_frames(inputs)
    assert capped['imgs'].shape[1] == 2 and capped['depths'].shape[1] == 2
    # stride V // cap from 0
    assert torch.equal(capped['imgs'].raw[:, 1], inputs['imgs'].raw[:, 2])
    replay = DecisionReplay(model)  # near-tie decisions as in the first run (any CPU)
    with torch.no_grad():
        d = model.data_preprocessor(copy.deepcopy(data), False)
        with replay.record():
            ref, _ = model(**d, mode='tensor')
        model.decode_head.pixel_decoder.encoder_chunk_size = 1  # views one at a time
        with replay.replay():
            chunked, _ = model(**d, mode='tensor')
    torch.testing.assert_close(chunked[-1], ref[-1], rtol=1e-4, atol=1e-5)
    replay.check()


def test_2d_mode_train_and_predict():
    model = _build()
    model.train()
    data = create_odin_inputs(img_hw=(64, 64), mode='2d', batch_size=2, num_instances=2)
    total, losses = _loss(model, data)
    total.backward()
    assert torch.isfinite(total)
    # 2D batches never touch the 3D layers
    assert model.backbone.fusion_blocks[0].in_proj[0].weight.grad is None
    assert model.decode_head.pos_embed_3d[0].weight.grad is None
    model.eval()
    with torch.no_grad():
        out = model(**model.data_preprocessor(data, False), mode='predict')
    inst = out[0].pred_instances
    assert inst.masks.shape[-2:] == (64, 64) and len(inst.scores) == 10


def test_mixed_batch_is_rejected():
    model = _build()
    d3 = create_odin_inputs(num_views=2, img_hw=(32, 32))
    d2 = create_odin_inputs(img_hw=(32, 32), mode='2d')
    mixed = dict(inputs=dict(img=d3['inputs']['img'] + d2['inputs']['img'],
                             depths=d3['inputs']['depths']),
                 data_samples=d3['data_samples'] + d2['data_samples'])
    with pytest.raises(ValueError, match='all-3D'):
        model.data_preprocessor(mixed, False)


def test_2d_batch_from_mmdet_pack_det_inputs():
    """COCO-style samples packed by mmdet's PackDetInputs (inputs = plain image tensors)."""
    import numpy as np
    from mmdet.datasets.transforms import PackDetInputs
    from mmdet.structures.mask import BitmapMasks
    model = _build()
    model.train()
    pack = PackDetInputs()
    rng = np.random.RandomState(0)
    batch = dict(inputs=[], data_samples=[])
    for _ in range(2):
        masks = np.zeros((2, 48, 64), dtype=np.uint8)
        masks[0, 5:20, 5:30] = 1
        masks[1, 25:40, 30:60] = 1
        packed = pack(dict(img=rng.randint(0, 255, (48, 64, 3)).astype(np.uint8),
                           img_shape=(48, 64), ori_shape=(48, 64), scale_factor=(1.0, 1.0),
                           gt_bboxes=np.array([[5, 5, 30, 20], [30, 25, 60, 40]], np.float32),
                           gt_bboxes_labels=np.array([0, 3]), gt_masks=BitmapMasks(masks, 48, 64),
                           gt_ignore_flags=np.array([False, False])))
        batch['inputs'].append(packed['inputs'])
        batch['data_samples'].append(packed['data_samples'])
    d = model.data_preprocessor(batch, True)
    assert d['inputs']['imgs'].shape == (2, 3, 64, 64)  # padded to a multiple of 32
    losses = model(**d, mode='loss')
    assert torch.isfinite(sum(v for k, v in losses.items() if 'loss' in k))


def test_swin_backbone_fusion_before_patch_merging():
    """Tiny Swin: 3D fusion blocks are trained and the stage outputs are normalised after them."""
    backbone = dict(
        _delete_=True, type='ODINSwinTransformer', embed_dims=32, depths=[1, 1, 1, 1],
        num_heads=[1, 2, 4, 8], window_size=4, out_indices=(0, 1, 2, 3),
        fusion_stages=(1, 2, 3), fusion_layers=(1, 1, 1),
        fusion_cfg=dict(embed_dims=32, num_heads=4, ffn_dims=64, num_groups=8), init_cfg=None)
    from mmdet3d.registry import MODELS
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet3d')
    cfg = Config.fromfile(CFG)
    cfg.merge_from_dict(dict(model=dict(backbone=backbone,
                                        decode_head=dict(in_channels=[32, 64, 128, 256]))))
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.train()
    data = create_odin_inputs(num_views=2, img_hw=(32, 32), num_points=100)
    total, _ = _loss(model, data)
    total.backward()
    blk = model.backbone.fusion_blocks[0]
    assert blk.in_proj[0].weight.grad is not None and blk.out_proj[0].weight.grad.abs().sum() > 0
    # the fused stage output goes through the stage's output LayerNorm
    seen = {}
    model.backbone.norm1.register_forward_hook(lambda m, i, o: seen.setdefault('in', i[0]))
    blk.register_forward_hook(lambda m, i, o: seen.setdefault('fused', o))
    model.eval()
    with torch.no_grad():
        model(**model.data_preprocessor(data, False), mode='tensor')
    fused = seen['fused'].flatten(2).transpose(1, 2)
    torch.testing.assert_close(seen['in'], fused)


def test_config_keys_of_older_versions_get_a_clear_error():
    with pytest.raises(ValueError, match="use_ghost_points -> prediction_points"):
        _build(use_ghost_points=False)
    with pytest.raises(TypeError, match='no_such_key'):
        _build(no_such_key=1)
