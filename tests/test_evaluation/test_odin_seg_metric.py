"""ODINSegMetric: agreement with the offline ScanNet-format evaluator, multi-GPU pooling, export."""
import json
import os.path as osp
import pickle

import numpy as np
import pytest
import torch

from odin_testing import load_script
from projects.odin.class_names import (
    SCANNET200_CLASSES,
    SCANNET_CLASS_IDS,
    SCANNET_CLASSES,
    get_class_info,
)
from projects.odin.evaluation.functional import load_ids, write_ids
from projects.odin.evaluation.metrics import ODINSegMetric

IGNORE = len(SCANNET_CLASSES)  # 20


def make_scene(rng, name, n=2000, num_classes=20):
    """GT (training classes, instance ids) and noisy ODIN-style predictions of one scene."""
    sem = np.full(n, num_classes, dtype=np.int64)
    inst = np.full(n, -1, dtype=np.int64)
    pos, k = 0, 0
    while pos < n:
        ln = int(rng.integers(60, 300))
        if rng.random() < 0.8:
            sem[pos:pos + ln] = rng.integers(0, num_classes)
            inst[pos:pos + ln] = k
            k += 1
        pos += ln
    masks, labels = [], []
    for i in range(k):
        if rng.random() < 0.8:
            m = (inst == i) ^ (rng.random(n) < 0.02)
            masks.append(m)
            lab = sem[inst == i][0]
            labels.append(lab if rng.random() < 0.8 else rng.integers(0, num_classes))
    for _ in range(4):  # random false positives
        m = np.zeros(n, dtype=bool)
        a = int(rng.integers(0, n))
        m[a:a + int(rng.integers(80, 300))] = True
        masks.append(m)
        labels.append(rng.integers(0, num_classes))
    masks = np.array(masks, dtype=bool)
    scores = rng.random(len(labels)).astype(np.float32)
    sem_pred = np.where(rng.random(n) < 0.8, np.minimum(sem, num_classes - 1),
                        rng.integers(0, num_classes, n))
    return dict(
        scene_id=name,
        pred_pts_seg=dict(pts_instance_mask=torch.from_numpy(masks),
                          instance_labels=torch.tensor(np.array(labels, dtype=np.int64)),
                          instance_scores=torch.from_numpy(scores),
                          pts_semantic_mask=torch.from_numpy(sem_pred)),
        eval_ann_info=dict(pts_semantic_mask=sem, pts_instance_mask=inst))


def write_gt_file(path, sample, class_ids):
    """Official GT format: label_id * 1000 + instance (0 = unannotated)."""
    sem = sample['eval_ann_info']['pts_semantic_mask']
    inst = sample['eval_ann_info']['pts_instance_mask']
    ok = (sem < len(class_ids)) & (inst >= 0)
    ids = np.where(ok, np.asarray(class_ids)[np.minimum(sem, len(class_ids) - 1)] * 1000 + inst + 1,
                   0)
    write_ids(path, ids)


def run_metric(samples, **kwargs):
    metric = ODINSegMetric(**kwargs)
    metric.dataset_meta = dict(classes=SCANNET_CLASSES)
    metric.process({}, samples)
    results = list(metric.results)  # evaluate() empties metric.results
    return results, metric.evaluate(len(samples))


@pytest.fixture(scope='module')
def samples():
    rng = np.random.default_rng(0)
    return [make_scene(rng, f'scene{i:04d}_00') for i in range(4)]


def load_cli():
    return load_script('tools/eval_scannet_format.py').main


def test_metric_equals_offline_evaluator_on_exported_files(samples, tmp_path):
    eval_cli = load_cli()
    sub = str(tmp_path / 'sub')
    _, res = run_metric(samples, dataset='scannet', submission_prefix=sub)
    assert set(res) == {'AP', 'AP50', 'AP25', 'mIoU', 'mAcc', 'allAcc'}
    assert 0 < res['AP'] < res['AP50'] <= res['AP25'] <= 1
    gt_dir = tmp_path / 'gt'
    gt_dir.mkdir()
    for s in samples:
        write_gt_file(str(gt_dir / f'{s["scene_id"]}.txt'), s, SCANNET_CLASS_IDS)
    out = eval_cli(['--gt-dir', str(gt_dir), '--pred-dir', osp.join(sub, 'instance'),
                    '--dataset', 'scannet', '--json', str(tmp_path / 'r.json')])
    assert (out['AP'], out['AP50'], out['AP25']) == (res['AP'], res['AP50'], res['AP25'])
    with open(tmp_path / 'r.json') as f:
        assert json.load(f)['AP50'] == res['AP50']
    # semantic export: one raw NYU40 id per vertex
    sem = load_ids(osp.join(sub, 'semantic', 'scene0000_00.txt'))
    pred = samples[0]['pred_pts_seg']['pts_semantic_mask'].numpy()
    np.testing.assert_array_equal(sem, np.asarray(SCANNET_CLASS_IDS)[pred])
    # instance export: only the 18 instance classes, masks of 0/1 per vertex
    with open(osp.join(sub, 'instance', 'scene0000_00.txt')) as f:
        lines = f.read().splitlines()
    labels = samples[0]['pred_pts_seg']['instance_labels'].numpy()
    assert len(lines) == int((labels < 18).sum())
    rel, label_id, conf = lines[0].split()
    assert rel.startswith('pred_mask/') and int(label_id) in SCANNET_CLASS_IDS[:18]
    assert set(np.unique(load_ids(osp.join(sub, 'instance', rel)))) <= {0, 1}


def test_multi_gpu_split_gives_the_same_numbers(samples):
    _, single = run_metric(samples, dataset='scannet')
    rank0, _ = run_metric(samples[0::2], dataset='scannet')
    rank1, _ = run_metric(samples[1::2], dataset='scannet')
    # collect_results concatenates the ranks' result lists; the order must not matter
    merged = ODINSegMetric(dataset='scannet')
    merged.dataset_meta = dict(classes=SCANNET_CLASSES)
    pooled = merged.compute_metrics(rank1 + rank0)
    assert pooled == single


def test_results_stay_small(samples):
    """Per-scene results hold statistics only: no array grows with the number of points."""
    results, _ = run_metric(samples[:1], dataset='scannet')
    num_points = samples[0]['eval_ann_info']['pts_semantic_mask'].size

    def arrays(obj):
        if isinstance(obj, np.ndarray):
            yield obj
        elif isinstance(obj, dict):
            for v in obj.values():
                yield from arrays(v)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                yield from arrays(v)

    sizes = [a.size for a in arrays(results)]
    assert sizes and max(sizes) < num_points / 10
    assert len(pickle.dumps(results)) < 10000


def test_class_set_from_dataset_meta_and_scannet200_subsets():
    rng = np.random.default_rng(3)
    s = make_scene(rng, 'scene0001_00', num_classes=200)
    metric = ODINSegMetric()  # class set from dataset_meta
    metric.dataset_meta = dict(classes=SCANNET200_CLASSES)
    metric.process({}, [s])
    res = metric.evaluate(1)
    for key in ('AP', 'head_AP', 'common_AP50', 'tail_AP25', 'mIoU'):
        assert key in res
    assert metric.class_info['instance_class_ids'] == get_class_info('scannet200')[
        'instance_class_ids']
    # a custom dataset: label ids from seg_valid_class_ids, only instance classes scored
    m2 = ODINSegMetric(instance_class_ids=(7, ))
    m2.dataset_meta = dict(classes=('x', 'y'), seg_valid_class_ids=(5, 7))
    assert m2.class_info['instance_classes'] == ('y', )
    bad = ODINSegMetric(dataset='scannet')
    bad.dataset_meta = dict(classes=('x', 'y'))
    with pytest.raises(ValueError, match='expects 20 classes'):
        _ = bad.class_info


def test_format_only_writes_files_without_gt(samples, tmp_path):
    s = {k: v for k, v in samples[0].items() if k != 'eval_ann_info'}
    _, res = run_metric([s], dataset='scannet', submission_prefix=str(tmp_path),
                             format_only=True)
    assert res == {}
    assert osp.isfile(tmp_path / 'instance' / 'scene0000_00.txt')
    assert osp.isfile(tmp_path / 'semantic' / 'scene0000_00.txt')
    with pytest.raises(KeyError, match='scene0000_00: no eval_ann_info'):
        run_metric([s], dataset='scannet')


def test_bad_inputs_name_the_scene(samples):
    s = dict(samples[0])
    s['eval_ann_info'] = dict(pts_semantic_mask=np.zeros(10, np.int64),
                              pts_instance_mask=np.zeros(10, np.int64))
    with pytest.raises(ValueError, match='scene0000_00: predicted masks have 2000 points but the '
                       'ground truth has 10'):
        run_metric([s], dataset='scannet', tasks=('instance', ))
    with pytest.raises(ValueError, match='scene0000_00: 2000 predicted labels but 10 GT'):
        run_metric([s], dataset='scannet', tasks=('semantic', ))


def test_through_mmengine_evaluator_with_det3d_data_samples(samples):
    """Registered in mmdet3d's METRICS; consumes real Det3DDataSample / PointData objects."""
    from mmdet3d.structures import Det3DDataSample, PointData
    from mmengine.evaluator import Evaluator
    from mmengine.registry import init_default_scope

    init_default_scope('mmdet3d')
    evaluator = Evaluator(dict(type='ODINSegMetric', dataset='scannet'))
    evaluator.dataset_meta = dict(classes=SCANNET_CLASSES)
    data_samples = []
    for s in samples:
        ds = Det3DDataSample(metainfo=dict(scene_id=s['scene_id']))
        ds.pred_pts_seg = PointData(**s['pred_pts_seg'])
        ds.eval_ann_info = s['eval_ann_info']
        data_samples.append(ds)
    evaluator.process(data_samples, {})
    res = evaluator.evaluate(len(data_samples))
    _, direct = run_metric(samples, dataset='scannet')
    assert res == direct


def test_scene_names_for_export():
    name = ODINSegMetric._scene_name
    assert name(dict(scene_id='scene0011_00', sample_idx=4), 0) == 'scene0011_00'
    assert name(dict(sample_idx='scene0011_00'), 0) == 'scene0011_00'
    assert name(dict(sample_idx=3, lidar_path='data/points/scene0707_00.bin'), 0) == 'scene0707_00'
    assert name(dict(sample_idx=3), 0) == 'scene_000003'


def test_semantic_protocol_odin_uses_instance_points_only():
    sem = np.array([0] * 100 + [1] * 100 + [2] * 100)
    inst = np.array([0] * 100 + [1] * 100 + [-1] * 100)  # class-2 points belong to no instance
    pred = np.array([0] * 100 + [1] * 50 + [2] * 50 + [0] * 100)
    s = dict(scene_id='s', eval_ann_info=dict(pts_semantic_mask=sem, pts_instance_mask=inst),
             pred_pts_seg=dict(pts_semantic_mask=pred))
    _, official = run_metric([s], dataset='scannet', tasks=('semantic', ))
    _, odin = run_metric([s], dataset='scannet', tasks=('semantic', ), semantic_protocol='odin')
    # official: cabinet 100/200, bed 50/100, chair 0/150 (predicted class 2 on bed: FP of chair)
    assert official['mIoU'] == pytest.approx((0.5 + 0.5 + 0) / 3)
    # ODIN: class-2 points ignored; chair is predicted but absent from GT -> left out of the mean
    assert odin['mIoU'] == pytest.approx((1.0 + 0.5) / 2)


def test_class_set_resolution_guards():
    from projects.odin.class_names import SCANNET_ODIN_CLASS_NAMES

    m = ODINSegMetric()
    m.dataset_meta = dict(classes=SCANNET_ODIN_CLASS_NAMES)  # ODIN's spellings -> ScanNet record
    assert m.class_info['class_ids'] == SCANNET_CLASS_IDS
    m.dataset_meta = dict(classes=SCANNET_CLASSES, seg_valid_class_ids=sorted(SCANNET_CLASS_IDS))
    with pytest.raises(ValueError, match='disagrees with the class set'):
        _ = m.class_info


def test_class_set_from_metainfo_dataset_key():
    m = ODINSegMetric()
    m.dataset_meta = dict(classes=SCANNET200_CLASSES, dataset='scannet200')
    assert set(m.class_info['subsets']) == {'head', 'common', 'tail'}


def test_float_masks_are_rejected(samples):
    s = dict(samples[0])
    s['pred_pts_seg'] = dict(s['pred_pts_seg'])
    s['pred_pts_seg']['pts_instance_mask'] = s['pred_pts_seg']['pts_instance_mask'].float()
    with pytest.raises(TypeError, match='scene0000_00: .*binary'):
        run_metric([s], dataset='scannet')


def test_submission_prefix_from_test_py_cfg_options(tmp_path):
    """`tools/test.py CFG CKPT --cfg-options test_evaluator.submission_prefix=DIR` reaches us."""
    from mmdet3d.registry import METRICS

    test_py = load_script('tools/test.py')
    cfg_file = tmp_path / 'cfg.py'
    cfg_file.write_text("test_evaluator = dict(type='ODINSegMetric', dataset='scannet')\n")
    args = test_py.parse_args([
        str(cfg_file), 'ckpt.pth', '--work-dir', str(tmp_path), '--cfg-options',
        f'test_evaluator.submission_prefix={tmp_path / "sub"}'
    ])
    cfg = test_py.build_config(args)
    metric = METRICS.build(cfg.test_evaluator)
    assert isinstance(metric, ODINSegMetric)
    assert metric.submission_prefix == str(tmp_path / 'sub')
