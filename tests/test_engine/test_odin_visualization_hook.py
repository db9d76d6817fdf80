"""ODINVisualizationHook: per-scene PLYs, renders and view overlays of 3D instance masks."""
import glob
import json
import os
import os.path as osp
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from mmdet3d.structures import PointData
from plyfile import PlyData

from odin_testing import create_odin_inputs
from projects.odin.engine.visualization import ODINVisualizationHook


def _sample_with_prediction(num_instances=3):
    batch = create_odin_inputs(num_views=3, img_hw=(24, 32), num_points=400, num_instances=3)
    sample = batch['data_samples'][0]
    sample.set_metainfo(dict(scene_id='scene_vis', frame_ids=['a', 'b', 'c']))
    inst = np.asarray(sample.eval_ann_info['pts_instance_mask'])
    masks = np.stack([inst == i for i in range(num_instances)] + [np.ones_like(inst, bool)])
    sample.pred_pts_seg = PointData(
        pts_instance_mask=torch.from_numpy(masks),
        instance_labels=torch.tensor([1, 2, 3, 0]),
        instance_scores=torch.tensor([0.9, 0.8, 0.7, 0.1]),
        pts_semantic_mask=torch.zeros(len(inst), dtype=torch.long))
    return batch, sample, inst


def _runner(tmp_path, classes):
    dataset = SimpleNamespace(metainfo=dict(classes=classes))
    return SimpleNamespace(work_dir=str(tmp_path), timestamp='ts', iter=0,
                           test_loop=SimpleNamespace(dataloader=SimpleNamespace(dataset=dataset)),
                           logger=SimpleNamespace(info=lambda msg: None))


def test_hook_writes_ply_render_views_and_json(tmp_path):
    batch, sample, inst = _sample_with_prediction()
    hook = ODINVisualizationHook(draw=True, test_out_dir='vis', score_thr=0.3, max_views=2)
    runner = _runner(tmp_path, ['c0', 'c1', 'c2', 'c3'])
    hook.before_test(runner)
    hook.after_test_iter(runner, 0, batch, [sample])
    hook.after_test(runner)
    scene_dir = osp.join(str(tmp_path), 'ts', 'vis', 'scene_vis')
    pred = PlyData.read(osp.join(scene_dir, 'pred_instances.ply'))['vertex']
    gt = PlyData.read(osp.join(scene_dir, 'gt_instances.ply'))['vertex']
    assert len(pred['x']) == len(gt['x']) == len(inst)
    pred_ids = np.asarray(pred['instance'])
    # the low-score "everything" mask is not drawn; the three instances are, one id each
    assert sorted(np.unique(pred_ids[pred_ids >= 0]).tolist()) == [0, 1, 2]
    for k in range(3):
        assert (pred_ids[inst == k] == k).all()
    assert (pred_ids[inst < 0] == -1).all()
    gt_ids = np.asarray(gt['instance'])
    assert len(np.unique(gt_ids[gt_ids >= 0])) == len(np.unique(inst[inst >= 0]))
    doc = json.loads(open(osp.join(scene_dir, 'instances.json')).read())
    assert doc['num_instances'] == 3
    assert [r['class_name'] for r in doc['instances']] == ['c1', 'c2', 'c3']
    render = cv2.imread(osp.join(scene_dir, 'render.png'))
    assert render.shape[0] == 240 and render.shape[1] > 320
    assert (render != 255).any()
    views = sorted(osp.basename(p) for p in glob.glob(
        osp.join(scene_dir, 'views', '*.png')))
    assert views == ['a.png', 'c.png']
    view = cv2.imread(osp.join(scene_dir, 'views', 'a.png'))
    assert view.shape[0] == 24 and view.shape[1] == 2 * 32 + 4


def test_hook_does_nothing_unless_drawing(tmp_path):
    batch, sample, _ = _sample_with_prediction()
    hook = ODINVisualizationHook(draw=False)
    runner = _runner(tmp_path, [])
    hook.before_test(runner)
    hook.after_test_iter(runner, 0, batch, [sample])
    assert not osp.exists(osp.join(str(tmp_path), 'ts'))


def test_hook_is_the_default_visualization_hook():
    from mmengine.config import Config

    from odin_testing import REPO_ROOT
    cfg = Config.fromfile(osp.join(REPO_ROOT, 'configs', '_base_', 'default_runtime.py'))
    assert cfg.default_hooks.visualization.type == 'ODINVisualizationHook'


@pytest.mark.parametrize('interval,expected', [(1, 2), (2, 1)])
def test_hook_interval(tmp_path, interval, expected):
    hook = ODINVisualizationHook(draw=True, test_out_dir=str(tmp_path / 'abs'), interval=interval)
    runner = _runner(tmp_path, [])
    hook.before_test(runner)
    for i in range(2):
        batch, sample, _ = _sample_with_prediction()
        sample.set_metainfo(dict(scene_id=f's{i}'))
        hook.after_test_iter(runner, i, batch, [sample])
    assert len(os.listdir(tmp_path / 'abs')) == expected
