"""ODINMultiTaskMetric: per-sample routing by task, per-task dataset_meta, name prefixes, and
hand-checkable values with the real ODINSegMetric and mmdet CocoMetric."""
from typing import List

import numpy as np
import pytest
import torch
from mmdet3d.registry import METRICS
from mmengine.evaluator import BaseMetric, Evaluator

from odin_testing import make_tiny_coco
from projects.odin.evaluation.metrics import ODINMultiTaskMetric


class _Recorder(BaseMetric):
    """Records what it is given: sample ids, batch parts, dataset_meta."""

    def __init__(self, name):
        super().__init__()
        self.name = name
        self.batches: List = []

    def process(self, data_batch, data_samples):
        self.batches.append(data_batch)
        for s in data_samples:
            self.results.append(s['id'])

    def compute_metrics(self, results):
        return dict(ids=results, classes=self.dataset_meta['classes'])


def test_routes_each_sample_to_its_task_metric_and_prefixes_names():
    m3, m2 = _Recorder('3d'), _Recorder('2d')
    metric = ODINMultiTaskMetric(task_metrics={'3d': m3, '2d': m2})
    metric.dataset_meta = dict(classes=('a', ), task_metainfo={
        '3d': dict(classes=('wall', 'chair')), '2d': dict(classes=('person', ))})
    samples = [dict(id=0, task='2d'), dict(id=1, task='3d'), dict(id=2, task='2d'),
               dict(id=3, task='3d')]
    batch = dict(inputs=['x0', 'x1', 'x2', 'x3'], data_samples=['s0', 's1', 's2', 's3'])
    # batches of mixed tasks are routed per sample too
    metric.process(dict(inputs=batch['inputs'][:2], data_samples=batch['data_samples'][:2]),
                   samples[:2])
    metric.process(dict(inputs=batch['inputs'][2:], data_samples=batch['data_samples'][2:]),
                   samples[2:])
    assert m2.batches[0] == dict(inputs=['x0'], data_samples=['s0'])
    assert m3.batches[0] == dict(inputs=['x1'], data_samples=['s1'])
    assert m2.batches[1] == dict(inputs=['x2'], data_samples=['s2'])
    assert len(m3.results) == len(m2.results) == 0  # held by the wrapper, one per sample
    assert [t for t, _ in metric.results] == ['2d', '3d', '2d', '3d']
    # size 3: the 4th sample is distributed-sampler padding and is dropped
    out = metric.evaluate(3)
    assert out == {'coco/ids': [0, 2], 'coco/classes': ('person', ),
                   'scannet/ids': [1], 'scannet/classes': ('wall', 'chair')}


def test_missing_task_is_skipped_and_unknown_task_rejected():
    metric = ODINMultiTaskMetric(task_metrics={'3d': _Recorder('3d'), '2d': _Recorder('2d')},
                                 prefixes={'3d': 'synthetic'})
    metric.dataset_meta = dict(classes=('x', ))  # no task_metainfo: shared by both
    metric.process({}, [dict(id=7, task='3d')])
    assert metric.evaluate(1) == {'synthetic/ids': [7], 'synthetic/classes': ('x', )}
    only3d = ODINMultiTaskMetric(task_metrics={'3d': _Recorder('3d')})
    with pytest.raises(KeyError, match="a '2d' sample"):
        only3d.process({}, [dict(id=0, task='2d')])
    with pytest.raises(ValueError, match='tasks are'):
        ODINMultiTaskMetric(task_metrics={'video': _Recorder('v')})


def _scene(n=300, seed=0):
    """A 3D scene with 3 instances and a perfect prediction."""
    inst = np.repeat(np.arange(3), n // 3)
    sem = np.array([2, 4, 2])[inst]  # chair, table, chair (ScanNet-20 training ids)
    masks = np.stack([inst == i for i in range(3)])
    return dict(
        task='3d', scene_id=f'scene{seed:04d}_00',
        pred_pts_seg=dict(pts_instance_mask=torch.from_numpy(masks),
                          instance_labels=torch.tensor([2, 4, 2]),
                          instance_scores=torch.tensor([0.9, 0.8, 0.7]),
                          pts_semantic_mask=torch.from_numpy(sem)),
        eval_ann_info=dict(pts_semantic_mask=sem, pts_instance_mask=inst))


def _image(coco, img_id, perfect):
    """A COCO prediction dict for image ``img_id``: its GT masks (or shifted ones)."""
    from pycocotools import mask as mask_utils
    anns = coco.load_anns(coco.get_ann_ids(img_ids=[img_id]))
    info = coco.load_imgs([img_id])[0]
    h, w = info['height'], info['width']
    masks, labels = [], []
    for a in anns:
        rle = mask_utils.frPyObjects(a['segmentation'], h, w)
        m = mask_utils.decode(mask_utils.merge(rle)).astype(bool)
        if not perfect:
            m = np.roll(m, w // 2, axis=1)
        masks.append(m)
        labels.append(a['category_id'] - 1)
    return dict(task='2d', img_id=img_id, ori_shape=(h, w),
                pred_instances=dict(masks=torch.from_numpy(np.stack(masks)),
                                    labels=torch.tensor(labels),
                                    scores=torch.ones(len(labels)),
                                    bboxes=torch.zeros(len(labels), 4)))


def test_real_metrics_hand_checkable(tmp_path):
    """Perfect 3D predictions -> AP 1; COCO: one perfect image of two -> mAP between 0 and 1;
    the 3D samples never reach CocoMetric (it would fail on them) and vice versa."""
    from mmdet.datasets.api_wrappers import COCO

    from projects.odin.datasets.metainfo import SCANNET_METAINFO
    classes = SCANNET_METAINFO['classes']
    info = make_tiny_coco(str(tmp_path), num_images=2, split='val', classes=classes,
                          object_classes=(2, 4), seed=0)
    metric = METRICS.build(dict(
        type='ODINMultiTaskMetric',
        task_metrics={'3d': dict(type='ODINSegMetric', dataset='scannet'),
                      '2d': dict(type='mmdet.CocoMetric', ann_file=info['ann_path'],
                                 metric=['segm'])}))
    evaluator = Evaluator([metric])
    evaluator.dataset_meta = dict(classes=classes, task_metainfo={
        '3d': dict(SCANNET_METAINFO), '2d': dict(classes=classes)})
    coco = COCO(info['ann_path'])
    samples = [_scene(seed=0), _image(coco, 1, perfect=True), _scene(seed=1),
               _image(coco, 2, perfect=True)]
    evaluator.process(samples, dict(inputs=[None] * 4, data_samples=[None] * 4))
    out = evaluator.evaluate(4)
    assert out['scannet/AP'] == pytest.approx(1.0)
    assert out['scannet/AP50'] == pytest.approx(1.0)
    assert out['coco/segm_mAP'] == pytest.approx(1.0)
    # now the second image's masks are shifted by half the width: no match there
    evaluator = Evaluator([METRICS.build(dict(
        type='ODINMultiTaskMetric',
        task_metrics={'2d': dict(type='mmdet.CocoMetric', ann_file=info['ann_path'],
                                 metric=['segm'])}))])
    evaluator.dataset_meta = dict(classes=classes)
    evaluator.process([_image(coco, 1, perfect=True), _image(coco, 2, perfect=False)])
    out = evaluator.evaluate(2)
    assert set(out) >= {'coco/segm_mAP', 'coco/segm_mAP_50'}
    assert 0.0 < out['coco/segm_mAP'] < 1.0
