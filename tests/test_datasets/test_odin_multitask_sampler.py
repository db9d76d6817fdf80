"""Joint 2D-3D data: single-task batches, task ratio, tiling, rank agreement, determinism,
task/vocabulary metainfo and the task-dispatching collate."""
from collections import Counter

import numpy as np
import pytest
import torch
from mmengine.dataset import BaseDataset
from mmengine.structures import InstanceData

import projects.odin  # noqa: F401  (registers the samplers and the collate function)
from odin_testing import create_odin_inputs
from projects.odin.datasets import multitask
from projects.odin.datasets.multitask import (
    ODINMultiTaskBatchSampler,
    ODINMultiTaskDataset,
    ODINMultiTaskSampler,
    batch_task,
    odin_multitask_collate,
)


class _Pack:
    """Pipeline step: a packed sample as PackODINInputs (3D) / PackDetInputs (2D) produce."""

    def __init__(self, task):
        self.task = task

    def __call__(self, info):
        from mmdet.structures import DetDataSample
        from mmdet3d.structures import Det3DDataSample
        if self.task == '3d':
            inputs = dict(img=torch.zeros(4, 3, 8, 8, dtype=torch.uint8),
                          depths=torch.ones(4, 8, 8), cam2world=torch.eye(4).repeat(4, 1, 1),
                          intrinsics=torch.eye(4).repeat(4, 1, 1))
            ds = Det3DDataSample(metainfo=dict(num_views=4, sample_idx=info['id'],
                                               img_path=[f'{info["id"]}_{v}' for v in range(4)]))
        else:
            inputs = torch.zeros(3, 8, 8, dtype=torch.uint8)
            ds = DetDataSample(metainfo=dict(img_id=info['id']))
            ds.gt_instances = InstanceData(labels=torch.zeros(0, dtype=torch.long))
        return dict(inputs=inputs, data_samples=ds)


class _Toy(BaseDataset):
    """``n`` in-memory samples of one task."""

    def __init__(self, n, task, classes):
        self._n = n
        super().__init__(ann_file='', metainfo=dict(classes=classes, task=task),
                         pipeline=[_Pack(task)], serialize_data=False)

    def load_data_list(self):
        return [dict(id=i) for i in range(self._n)]


def _dataset(n3d=5, n2d=40):
    return ODINMultiTaskDataset([_Toy(n3d, '3d', ('chair', 'table')),
                                 _Toy(n2d, '2d', ('person', 'dog', 'cat'))])


def _batches(dataset, seed=0, epoch=0, rank=None, monkeypatch=None, tile=True, **kw):
    if rank is not None:
        monkeypatch.setattr(multitask, 'get_dist_info', lambda: rank)
    sampler = ODINMultiTaskSampler(dataset, seed=seed, tile=tile)
    sampler.set_epoch(epoch)
    kw.setdefault('batch_sizes', {'3d': 2, '2d': 3})
    return list(ODINMultiTaskBatchSampler(sampler, **kw)), sampler


def test_batches_are_single_task_with_the_task_batch_size():
    ds = _dataset()
    seen = set()
    for epoch in range(3):
        batches, _ = _batches(ds, epoch=epoch)
        assert batches
        for b in batches:
            tasks = {ds.task_of(i) for i in b}
            assert len(tasks) == 1
            task = tasks.pop()
            seen.add(task)
            assert len(b) == {'3d': 2, '2d': 3}[task]
            lo, hi = (0, 5) if task == '3d' else (5, 45)
            assert all(lo <= i < hi for i in b)
    assert seen == {'3d', '2d'}


def test_task_ratio_is_close_to_the_probabilities():
    ds = _dataset(n3d=20, n2d=500)
    tasks = []
    for epoch in range(8):
        batches, _ = _batches(ds, epoch=epoch, batch_sizes={'3d': 1, '2d': 1})
        tasks += [ds.task_of(b[0]) for b in batches]
    frac_3d = tasks.count('3d') / len(tasks)
    assert len(tasks) > 2000
    assert abs(frac_3d - 0.3) < 0.03, frac_3d  # default official PROB [0.3, 0.7]
    # configurable
    batches, _ = _batches(ds, batch_sizes={'3d': 1, '2d': 1},
                          task_probs={'3d': 0.8, '2d': 0.2})
    frac_3d = sum(ds.task_of(b[0]) == '3d' for b in batches) / len(batches)
    assert abs(frac_3d - 0.8) < 0.05, frac_3d


def test_smaller_dataset_is_tiled_to_the_larger_size():
    ds = _dataset(n3d=5, n2d=40)
    sampler = ODINMultiTaskSampler(ds, seed=3)
    streams = sampler.task_indices()
    assert len(streams['3d']) == len(streams['2d']) == 40
    assert Counter(streams['3d']) == {i: 8 for i in range(5)}  # every 3D scene 8 times
    assert sorted(streams['2d']) == list(range(5, 45))  # 2D indices offset by the 3D dataset
    assert len(sampler) == 80 and sorted(sampler) == sorted(streams['3d'] + streams['2d'])
    untiled = ODINMultiTaskSampler(ds, seed=3, tile=False).task_indices()
    assert sorted(untiled['3d']) == list(range(5))


def test_two_ranks_agree_on_the_task_and_get_disjoint_samples(monkeypatch):
    ds = _dataset(n3d=6, n2d=40)
    full, _ = _batches(ds, seed=11, rank=(0, 1), monkeypatch=monkeypatch,
                       batch_sizes={'3d': 1, '2d': 2})
    r0, s0 = _batches(ds, seed=11, rank=(0, 2), monkeypatch=monkeypatch,
                      batch_sizes={'3d': 1, '2d': 2})
    r1, s1 = _batches(ds, seed=11, rank=(1, 2), monkeypatch=monkeypatch,
                      batch_sizes={'3d': 1, '2d': 2})
    assert len(r0) == len(r1) > 5
    assert [ds.task_of(b[0]) for b in r0] == [ds.task_of(b[0]) for b in r1]
    # the shards partition the shared (tiled, shuffled) stream of every task
    t0, t1 = s0.task_indices(), s1.task_indices()
    monkeypatch.setattr(multitask, 'get_dist_info', lambda: (0, 1))
    tfull = ODINMultiTaskSampler(ds, seed=11).task_indices()
    for task in ('3d', '2d'):
        assert len(t0[task]) == len(t1[task]) == 20
        assert Counter(t0[task]) + Counter(t1[task]) == Counter(tfull[task])
    assert not set(t0['2d']) & set(t1['2d'])  # the 2D dataset is not tiled: disjoint
    # without tiling the 3D shards are disjoint too
    monkeypatch.setattr(multitask, 'get_dist_info', lambda: (0, 2))
    u0 = ODINMultiTaskSampler(ds, seed=11, tile=False).task_indices()['3d']
    monkeypatch.setattr(multitask, 'get_dist_info', lambda: (1, 2))
    u1 = ODINMultiTaskSampler(ds, seed=11, tile=False).task_indices()['3d']
    assert sorted(u0 + u1) == list(range(6))
    # each rank draws one batch per iteration of the same task as the single-rank plan would
    assert len(full) >= len(r0)


def test_deterministic_given_seed_and_epoch():
    ds = _dataset()
    a, _ = _batches(ds, seed=5, epoch=2)
    b, _ = _batches(ds, seed=5, epoch=2)
    c, _ = _batches(ds, seed=5, epoch=3)
    d, _ = _batches(ds, seed=6, epoch=2)
    assert a == b
    assert a != c and a != d
    _, sampler = _batches(ds, seed=5)
    bs = ODINMultiTaskBatchSampler(sampler, batch_sizes={'3d': 2, '2d': 3})
    assert len(bs) == len(list(bs))


def test_infinite_iterator_advances_the_epoch_through_the_batch_sampler(monkeypatch):
    """mmengine's IterBasedTrainLoop iterator calls batch_sampler.sampler.set_epoch."""
    from mmengine.runner import loops
    from mmengine.runner.loops import _InfiniteDataloaderIterator
    monkeypatch.setattr(loops.time, 'sleep', lambda s: None)  # the loader's pause per epoch
    from torch.utils.data import DataLoader
    ds = _dataset(n3d=2, n2d=6)
    sampler = ODINMultiTaskSampler(ds, seed=0)
    bs = ODINMultiTaskBatchSampler(sampler, batch_sizes={'3d': 1, '2d': 2})
    loader = DataLoader(ds, batch_sampler=bs, collate_fn=odin_multitask_collate)
    first_epoch = list(bs)
    it = _InfiniteDataloaderIterator(loader)
    got = [next(it) for _ in range(len(first_epoch) + 1)]
    assert sampler.epoch == 1
    for batch, idx in zip(got, first_epoch):
        ids = [s.metainfo.get('sample_idx', s.metainfo.get('img_id')) for s in
               batch['data_samples']]
        offset = 0 if batch['data_samples'][0].metainfo['task'] == '3d' else 2
        assert [i + offset for i in ids] == idx


def test_runner_builds_the_sampler_pair_from_config():
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner
    init_default_scope('mmdet3d')  # as the ODIN configs (default_scope='mmdet3d')
    ds = _dataset()
    loader = Runner.build_dataloader(dict(
        dataset=ds, batch_size=2, num_workers=0,
        sampler=dict(type='ODINMultiTaskSampler', shuffle=True),
        batch_sampler=dict(type='ODINMultiTaskBatchSampler', batch_sizes={'2d': 4}),
        collate_fn=dict(type='odin_multitask_collate', camera_drop_prob=0.5)), seed=1)
    assert isinstance(loader.batch_sampler, ODINMultiTaskBatchSampler)
    assert loader.batch_sampler.batch_sizes == {'3d': 2, '2d': 4}  # 3D from batch_size
    assert loader.batch_sampler.sampler.seed == 1
    for batch in loader:
        assert len({s.metainfo['task'] for s in batch['data_samples']}) == 1


def test_dataset_puts_task_and_classes_in_every_sample():
    ds = _dataset()
    s3, s2 = ds[0]['data_samples'], ds[5]['data_samples']
    assert s3.metainfo['task'] == '3d' and s3.metainfo['classes'] == ('chair', 'table')
    assert s2.metainfo['task'] == '2d' and s2.metainfo['classes'] == ('person', 'dog', 'cat')
    meta = ds.metainfo
    assert meta['tasks'] == ('3d', '2d')
    assert meta['task_metainfo']['2d']['classes'] == ('person', 'dog', 'cat')
    assert ds.task_ranges() == {'3d': (0, 5), '2d': (5, 40)}
    with pytest.raises(ValueError, match='one dataset per task'):
        ODINMultiTaskDataset([_Toy(2, '3d', ('a', )), _Toy(2, '3d', ('b', ))])
    with pytest.raises(ValueError, match='task must be one of'):
        ODINMultiTaskDataset([_Toy(2, '3d', ('a', ))], tasks=['3D'])


def test_bad_sampler_arguments_are_rejected():
    ds = _dataset()
    sampler = ODINMultiTaskSampler(ds, seed=0)
    with pytest.raises(ValueError, match='absent from the dataset'):
        ODINMultiTaskBatchSampler(sampler, batch_size=1, task_probs={'3d': 0.5, 'video': 0.5})
    with pytest.raises(ValueError, match='no positive batch size'):
        ODINMultiTaskBatchSampler(sampler, batch_sizes={'3d': 2})
    with pytest.raises(ValueError, match='exceeds'):
        ODINMultiTaskBatchSampler(sampler, batch_sizes={'3d': 2, '2d': 41})
    with pytest.raises(TypeError, match='ODINMultiTaskDataset'):
        ODINMultiTaskSampler(_Toy(3, '2d', ('a', )), seed=0)


def test_collate_dispatches_on_the_task():
    d3 = create_odin_inputs(num_views=3, img_hw=(16, 16), num_points=50, batch_size=2)
    samples3 = []
    for i in range(2):
        inputs = {k: v[i] for k, v in d3['inputs'].items()}
        d3['data_samples'][i].set_metainfo(dict(task='3d', img_path=['a', 'b', 'c']))
        samples3.append(dict(inputs=inputs, data_samples=d3['data_samples'][i]))
    np.random.seed(0)
    out = odin_multitask_collate(samples3, camera_drop_prob=1.0)  # 3D: per-batch camera drop
    n = out['inputs'][0]['img'].shape[0] if isinstance(out['inputs'], list) else \
        out['inputs']['img'][0].shape[0]
    assert 1 <= n <= 3
    assert all(x.shape[0] == n for x in out['inputs']['depths'])
    assert all(len(s.metainfo['img_path']) == n for s in out['data_samples'])
    d2 = create_odin_inputs(img_hw=(16, 16), mode='2d', batch_size=2)
    samples2 = [dict(inputs=d2['inputs']['img'][i], data_samples=d2['data_samples'][i])
                for i in range(2)]
    out2 = odin_multitask_collate(samples2, camera_drop_prob=1.0)
    assert batch_task(samples2) == '2d'
    assert len(out2['inputs']) == 2 and out2['inputs'][0].shape == (3, 16, 16)
    with pytest.raises(ValueError, match='single-task'):
        odin_multitask_collate([samples3[0], samples2[0]])


class _RecordingModel:
    """Factory of a toy mmengine model that records the sample ids of every training batch."""

    @staticmethod
    def build(seen):
        from mmengine.model import BaseModel

        class Model(BaseModel):
            def __init__(self):
                super().__init__()
                self.w = torch.nn.Parameter(torch.ones(1))

            def forward(self, inputs, data_samples=None, mode='tensor'):
                seen.append(tuple((s.metainfo['task'], s.metainfo.get(
                    'sample_idx', s.metainfo.get('img_id'))) for s in data_samples))
                return dict(loss=self.w.sum() * 0 + len(data_samples))

        return Model()


def _runner(work_dir, seen, max_iters, resume=False):
    from mmengine.runner import Runner
    return Runner(
        model=_RecordingModel.build(seen), work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=_dataset(n3d=3, n2d=8), batch_size=1, num_workers=0,
            sampler=dict(type='ODINMultiTaskSampler'),
            batch_sampler=dict(type='ODINMultiTaskBatchSampler', batch_sizes={'2d': 2}),
            collate_fn=dict(type='odin_multitask_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.0)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=4),
                           logger=dict(type='LoggerHook', interval=100),
                           trusted_checkpoint=dict(type='TrustedCheckpointHook')),
        randomness=dict(seed=3), default_scope='mmdet3d', resume=resume,
        load_from=str(work_dir / 'iter_4.pth') if resume else None, log_level='WARNING',
        experiment_name=f'mt_{work_dir.name}_{max_iters}_{resume}')


def test_runner_resume_replays_the_same_batches_across_epochs(tmp_path, monkeypatch):
    """IterBasedTrainLoop + resume: the batches after a resume equal the uninterrupted run's,
    across several (re-shuffled) epochs; every batch single-task."""
    from mmengine.runner import loops
    monkeypatch.setattr(loops.time, 'sleep', lambda s: None)  # the loader's pause per epoch
    straight, resumed = [], []
    _runner(tmp_path / 'a', straight, max_iters=12).train()
    (tmp_path / 'b').mkdir()
    first = []
    _runner(tmp_path / 'b', first, max_iters=4).train()
    _runner(tmp_path / 'b', resumed, max_iters=12, resume=True).train()
    assert len(straight) == 12 and first == straight[:4]
    assert resumed[-8:] == straight[4:]
    assert all(len({t for t, _ in b}) == 1 for b in straight)
    # the 12 iterations cross an epoch boundary (new shuffle and task draw for epoch 1)
    epoch_len = len(ODINMultiTaskBatchSampler(ODINMultiTaskSampler(_dataset(3, 8), seed=3),
                                              batch_size=1, batch_sizes={'2d': 2}))
    assert 4 < epoch_len < 12
