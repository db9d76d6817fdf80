"""Bounded-memory inference on the synthetic world: a converted room through the real test
pipeline, the tiny model with one view per chunk vs all views at once (mesh and sensor points).
Near-tie decisions take the whole-batch run's where they differ (``tie_robust.DecisionReplay``).
"""
import copy

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from tie_robust import DecisionReplay

from odin_testing import REPO_ROOT

CFG = f'{REPO_ROOT}/configs/odin/odin_tiny_test.py'

pytestmark = pytest.mark.usefixtures('one_thread')
init_default_scope('mmdet3d')


def _sample(out):
    from mmdet3d.registry import DATASETS
    from mmengine.dataset import pseudo_collate
    pipeline = [
        dict(type='LoadODINFrames', num_views=-1, sampling='uniform', use_inpainted_depth=True),
        dict(type='LoadPointsFromFile', coord_type='DEPTH', load_dim=6, use_dim=[0, 1, 2, 3, 4, 5],
             shift_height=False, use_color=True),
        dict(type='LoadAnnotations3D', with_bbox_3d=False, with_label_3d=False, with_mask_3d=True,
             with_seg_3d=True),
        dict(type='LoadODINSuperpoints'),
        dict(type='ODINPointSegClassMapping'),
        dict(type='ODINResize', short_edge=48, max_size=64),
        dict(type='NormalizePointsColor', color_mean=None),
        dict(type='PackODINInputs'),
    ]
    ds = DATASETS.build(dict(type='ODINScanNetDataset', data_root=str(out), test_mode=True,
                             ann_file='scannet_infos_val.pkl', pipeline=pipeline))
    return pseudo_collate([ds[0]])


@pytest.mark.parametrize('points', ['MeshPointsBuilder', 'SensorPointsBuilder'])
def test_synthetic_room_chunked_equals_whole(converted, points):
    from mmdet3d.registry import MODELS

    import projects.odin  # noqa: F401
    out, _ = converted
    data = _sample(out)
    assert data['inputs']['img'][0].shape[0] >= 6  # a multi-view room
    cfg = copy.deepcopy(Config.fromfile(CFG).model)
    cfg['prediction_points'] = dict(type=points)
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    model.init_weights()
    model.eval()
    preds = {}
    replay = DecisionReplay(model)
    with torch.no_grad():
        for chunk in (0, 1):
            model.test_cfg.update(view_chunk=chunk, point_chunk=97)
            d = model.data_preprocessor(copy.deepcopy(data), False)
            with replay.replay('predict') if chunk else replay.record('predict'):
                preds[chunk] = model(**d, mode='predict')[0].pred_pts_seg
            with replay.replay('logits') if chunk else replay.record('logits'):
                if chunk:
                    cls, mask = model(**d, mode='tensor')
                else:
                    ref_cls, ref_mask = model(**d, mode='tensor')
    replay.check()
    rel = float((mask[-1] - ref_mask[-1]).abs().max() / ref_mask[-1].abs().max())
    assert rel <= 1e-5, rel
    torch.testing.assert_close(cls[-1], ref_cls[-1], rtol=1e-5, atol=1e-6)
    a, b = preds[1], preds[0]
    assert torch.equal(a.instance_labels, b.instance_labels)
    torch.testing.assert_close(a.instance_scores, b.instance_scores, rtol=1e-5, atol=1e-6)
    assert torch.equal(a.pts_instance_mask, b.pts_instance_mask)
    assert torch.equal(a.pts_semantic_mask, b.pts_semantic_mask)
