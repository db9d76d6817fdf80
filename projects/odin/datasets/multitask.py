"""Joint 2D-3D training data: a task-tagged concatenation, a single-task batch sampler, collate.

ODIN's joint recipe (docs/specification.md §3.6) mixes a 3D dataset (posed RGB-D scene chunks, e.g.
ScanNet) with a 2D one (single images, COCO). Every iteration is entirely 3D or entirely 2D on
all GPUs (30 % / 70 %), with per-task batch sizes (3D 6 / 2D 16 scenes or images per iteration),
and the smaller dataset's indices are tiled to the larger one's size.

* :class:`ODINMultiTaskDataset` -- mmengine's ``ConcatDataset`` whose sub-datasets each carry a
  task (``'3d'`` / ``'2d'``); every packed sample gets ``task`` and ``classes`` (the vocabulary of
  the dataset it comes from) in its metainfo, and the metainfo keeps one record per task
  (``task_metainfo``) for the joint metric.
* :class:`ODINMultiTaskSampler` -- per-task index streams for this rank (tiled, shuffled with a
  seed shared by all ranks, sharded without overlap).
* :class:`ODINMultiTaskBatchSampler` -- draws the task of every iteration from a generator seeded
  identically on all ranks and cuts single-task batches of the task's batch size.
* :func:`odin_multitask_collate` -- 3D batches through :func:`odin_collate` (per-batch camera
  drop), 2D batches through ``pseudo_collate`` (what mmdet's ``PackDetInputs`` + the ODIN data
  preprocessor's 2D path expect); mixed batches are rejected.
"""
from __future__ import annotations

import copy
import math
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from mmdet3d.registry import DATA_SAMPLERS, DATASETS
from mmengine.dataset import BaseDataset, ConcatDataset, pseudo_collate
from mmengine.dist import get_dist_info, sync_random_seed
from torch.utils.data import Sampler

from .transforms import odin_collate

TASKS = ('3d', '2d')
DEFAULT_TASK_PROBS = {'3d': 0.3, '2d': 0.7}


def _check_task(task: str, where: str) -> str:
    if task not in TASKS:
        raise ValueError(f'{where}: task must be one of {TASKS}, got {task!r}')
    return task


@DATASETS.register_module()
class ODINMultiTaskDataset(ConcatDataset):
    """Concatenation of datasets of different tasks (3D scenes and 2D images).

    Sub-dataset metainfos may differ freely (classes, palettes, ...). The wrapper's metainfo is
    the first dataset's plus ``tasks`` (the task of each sub-dataset) and ``task_metainfo``
    (task -> that dataset's metainfo), which :class:`ODINMultiTaskMetric` hands to its per-task
    metrics. Every sample returned gets ``task`` and ``classes`` (tuple of class names in label
    order of its dataset) in ``data_samples.metainfo`` (the open-vocabulary head reads the
    vocabulary of a batch from there).

    Args:
        datasets: sub-dataset configs or instances, one per task.
        tasks: task of each sub-dataset ('3d' or '2d'); defaults to each dataset's
            ``metainfo['task']``.
        lazy_init: as mmengine's ``ConcatDataset``.
    """

    def __init__(self,
                 datasets: Sequence[Union[BaseDataset, dict]],
                 tasks: Optional[Sequence[str]] = None,
                 lazy_init: bool = False) -> None:
        built = [DATASETS.build(d) if isinstance(d, dict) else d for d in datasets]
        for i, d in enumerate(built):
            # BaseDataset or an mmengine wrapper of one (RepeatDataset, ClassBalancedDataset)
            if not (hasattr(d, 'metainfo') and hasattr(d, 'full_init')):
                raise TypeError(f'ODINMultiTaskDataset: dataset {i} ({type(d).__name__}) is not '
                                'an mmengine dataset (no metainfo / full_init)')
        # mmengine's ConcatDataset.__init__ would insist on BaseDataset instances with equal
        # metainfo; here metainfos differ by design and wrappers are allowed
        self.datasets = built
        self.ignore_keys = sorted({k for d in built for k in d.metainfo})
        self._fully_initialized = False
        if tasks is None:
            tasks = [d.metainfo.get('task') for d in built]
            if any(t is None for t in tasks):
                raise ValueError('ODINMultiTaskDataset: give `tasks` (one of '
                                 f"{TASKS} per dataset) or a metainfo['task'] in every dataset")
        if len(tasks) != len(built):
            raise ValueError(f'ODINMultiTaskDataset: {len(tasks)} tasks for {len(built)} datasets')
        self.tasks = tuple(_check_task(t, f'dataset {i}') for i, t in enumerate(tasks))
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f'ODINMultiTaskDataset: one dataset per task, got {self.tasks}')
        task_meta = {t: copy.deepcopy(d.metainfo) for t, d in zip(self.tasks, built)}
        for t, meta in task_meta.items():
            meta['task'] = t
        self._metainfo = dict(copy.deepcopy(built[0].metainfo), tasks=self.tasks,
                              task_metainfo=task_meta)
        self._classes = {t: tuple(m.get('classes') or ()) for t, m in task_meta.items()}
        if not lazy_init:
            self.full_init()

    def task_ranges(self) -> Dict[str, Tuple[int, int]]:
        """Task -> (first global index, number of samples) of its dataset."""
        self.full_init()
        starts = [0] + list(self.cumulative_sizes[:-1])
        return {t: (s, len(d)) for t, s, d in zip(self.tasks, starts, self.datasets)}

    def task_of(self, idx: int) -> str:
        """Task of the sample with global index ``idx``."""
        dataset_idx, _ = self._get_ori_dataset_idx(idx)
        return self.tasks[dataset_idx]

    def __getitem__(self, idx: int):
        if not self._fully_initialized:
            self.full_init()
        dataset_idx, sample_idx = self._get_ori_dataset_idx(idx)
        data = self.datasets[dataset_idx][sample_idx]
        task = self.tasks[dataset_idx]
        samples = data.get('data_samples') if isinstance(data, dict) else None
        if samples is not None:
            meta = dict(task=task)
            if self._classes[task]:
                meta['classes'] = self._classes[task]
            samples.set_metainfo(meta)
        return data


def _task_ranges_of(dataset) -> Dict[str, Tuple[int, int]]:
    if not hasattr(dataset, 'task_ranges'):
        raise TypeError('ODINMultiTaskSampler needs an ODINMultiTaskDataset (a ConcatDataset '
                        f'with one task per sub-dataset), got {type(dataset).__name__}')
    return dataset.task_ranges()


@DATA_SAMPLERS.register_module()
class ODINMultiTaskSampler(Sampler):
    """Per-task index streams of this rank over an :class:`ODINMultiTaskDataset`.

    For epoch e, every task's indices are shuffled with ``seed + e`` (the same on every rank),
    tiled (re-shuffled per repetition) to the largest task's size when ``tile``, padded by
    wrapping to a multiple of the world size and sharded ``rank::world_size``, so ranks get
    disjoint samples and equal-length streams. Iterating yields the streams one after the other
    (a plain per-rank sampler); :class:`ODINMultiTaskBatchSampler` uses :meth:`task_indices`.

    Args:
        dataset: the :class:`ODINMultiTaskDataset`.
        shuffle: shuffle the indices. Defaults to True.
        seed: shared seed (mmengine passes ``randomness.seed``); None draws one synchronised over
            ranks.
        tile: repeat the smaller datasets' indices up to the largest one's size.
    """

    def __init__(self,
                 dataset,
                 shuffle: bool = True,
                 seed: Optional[int] = None,
                 tile: bool = True) -> None:
        self.dataset = dataset
        self.rank, self.world_size = get_dist_info()
        self.shuffle = shuffle
        self.seed = sync_random_seed() if seed is None else int(seed)
        self.tile = tile
        self.epoch = 0
        self.ranges = _task_ranges_of(dataset)
        for task, (_, n) in self.ranges.items():
            if n == 0:
                raise ValueError(f'ODINMultiTaskSampler: the {task} dataset is empty')
        largest = max(n for _, n in self.ranges.values())
        self.task_sizes = {t: largest if tile else n for t, (_, n) in self.ranges.items()}
        # samples of each task on this rank (after padding to a multiple of the world size)
        self.num_per_rank = {t: math.ceil(n / self.world_size) for t, n in self.task_sizes.items()}

    @property
    def tasks(self) -> Tuple[str, ...]:
        """The tasks of the dataset, in sub-dataset order."""
        return tuple(self.ranges)

    def task_indices(self) -> Dict[str, List[int]]:
        """Task -> this rank's global dataset indices for the current epoch."""
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        out = {}
        for task, (start, n) in self.ranges.items():
            target = self.task_sizes[task]
            reps = math.ceil(target / n)
            if self.shuffle:
                order = torch.cat([torch.randperm(n, generator=g) for _ in range(reps)])
            else:
                order = torch.arange(n).repeat(reps)
            order = order[:target]
            total = self.num_per_rank[task] * self.world_size
            if total > target:  # pad by wrapping (DistributedSampler behaviour)
                order = torch.cat([order, order[:total - target]])
            out[task] = (order[self.rank:total:self.world_size] + start).tolist()
        return out

    def __iter__(self) -> Iterator[int]:
        for indices in self.task_indices().values():
            yield from indices

    def __len__(self) -> int:
        return sum(self.num_per_rank.values())

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch (reshuffles the streams and redraws the task sequence)."""
        self.epoch = epoch


@DATA_SAMPLERS.register_module()
class ODINMultiTaskBatchSampler(Sampler):
    """Single-task batches: each iteration is all-3D or all-2D on every rank.

    The task sequence of an epoch is drawn from ``numpy.random.default_rng([seed, epoch])`` with
    the shared seed of the wrapped :class:`ODINMultiTaskSampler`, so all ranks agree on every
    iteration's task without communication; each rank then takes its next ``batch_sizes[task]``
    indices from its own shard of that task. The epoch ends when the drawn task's stream cannot
    fill a batch (incomplete batches are dropped). Deterministic given (seed, epoch): resuming
    with mmengine's ``IterBasedTrainLoop`` replays the same batches.

    Args:
        sampler: an :class:`ODINMultiTaskSampler` (mmengine builds it from the dataloader's
            ``sampler`` config and passes it here).
        batch_size: the dataloader's ``batch_size``: per-GPU batch size of tasks missing from
            ``batch_sizes``.
        batch_sizes: task -> per-GPU batch size (official joint recipe on 2 GPUs: 3D 3, 2D 8).
        task_probs: task -> probability of an iteration being of that task (normalised;
            official 3D 0.3, 2D 0.7).
    """

    def __init__(self,
                 sampler: ODINMultiTaskSampler,
                 batch_size: Optional[int] = None,
                 batch_sizes: Optional[Dict[str, int]] = None,
                 task_probs: Optional[Dict[str, float]] = None) -> None:
        if not isinstance(sampler, ODINMultiTaskSampler):
            raise TypeError('ODINMultiTaskBatchSampler needs sampler=dict(type='
                            f"'ODINMultiTaskSampler'), got {type(sampler).__name__}")
        self.sampler = sampler
        tasks = sampler.tasks
        batch_sizes = dict(batch_sizes or {})
        for t in batch_sizes:
            _check_task(t, 'batch_sizes')
        self.batch_sizes = {t: int(batch_sizes.get(t, batch_size or 0)) for t in tasks}
        for t, bs in self.batch_sizes.items():
            if bs <= 0:
                raise ValueError(f'ODINMultiTaskBatchSampler: no positive batch size for task '
                                 f'{t!r} (batch_sizes={batch_sizes}, batch_size={batch_size})')
        probs = dict(task_probs) if task_probs is not None else {
            t: DEFAULT_TASK_PROBS[t] for t in tasks}
        unknown = set(probs) - set(tasks)
        if unknown:
            raise ValueError(f'task_probs names tasks {sorted(unknown)} absent from the dataset '
                             f'(tasks {tasks})')
        p = np.array([float(probs.get(t, 0.0)) for t in tasks])
        if (p < 0).any() or p.sum() <= 0:
            raise ValueError(f'task_probs must be >= 0 with a positive sum, got {probs}')
        self.tasks = tasks
        self.task_probs = p / p.sum()
        for t, prob in zip(tasks, self.task_probs):
            if prob > 0 and self.batch_sizes[t] > sampler.num_per_rank[t]:
                raise ValueError(
                    f'ODINMultiTaskBatchSampler: the {t} batch size {self.batch_sizes[t]} exceeds '
                    f'the {sampler.num_per_rank[t]} {t} samples per rank: no batch could be made')
        self._plan_cache: Tuple[Optional[tuple], List[Tuple[str, int]]] = (None, [])

    def plan(self) -> List[Tuple[str, int]]:
        """The epoch's batches as (task, start offset in this rank's stream of that task)."""
        key = (self.sampler.seed, self.sampler.epoch)
        if self._plan_cache[0] == key:
            return self._plan_cache[1]
        rng = np.random.default_rng([self.sampler.seed, self.sampler.epoch])
        lengths = self.sampler.num_per_rank
        ptr = {t: 0 for t in self.tasks}
        plan = []
        while True:
            # draw in chunks (one draw per iteration, same sequence as one-by-one draws)
            for i in rng.choice(len(self.tasks), size=256, p=self.task_probs):
                t = self.tasks[i]
                if ptr[t] + self.batch_sizes[t] > lengths[t]:
                    self._plan_cache = (key, plan)
                    return plan
                plan.append((t, ptr[t]))
                ptr[t] += self.batch_sizes[t]

    def __iter__(self) -> Iterator[List[int]]:
        streams = self.sampler.task_indices()
        for task, start in self.plan():
            yield streams[task][start:start + self.batch_sizes[task]]

    def __len__(self) -> int:
        return len(self.plan())


def batch_task(data_batch: Sequence[dict]) -> str:
    """The task of a list of packed samples (``metainfo['task']``, else depths -> '3d').

    Raises:
        ValueError: if the samples are of different tasks.
    """
    tasks = set()
    for d in data_batch:
        ds = d.get('data_samples')
        task = ds.metainfo.get('task') if ds is not None else None
        if task is None:
            inputs = d.get('inputs')
            task = '3d' if isinstance(inputs, dict) and 'depths' in inputs else '2d'
        tasks.add(task)
    if len(tasks) != 1:
        raise ValueError(f'a batch must be single-task, got samples of tasks {sorted(tasks)}; '
                         'use ODINMultiTaskBatchSampler (training) or batch_size=1 (testing) '
                         'over an ODINMultiTaskDataset')
    return tasks.pop()


def odin_multitask_collate(data_batch: Sequence[dict], camera_drop_prob: float = 0.0) -> dict:
    """Collate a single-task batch: 3D via :func:`odin_collate`, 2D via ``pseudo_collate``.

    Args:
        data_batch: packed samples of one task.
        camera_drop_prob: per-batch camera drop probability of 3D batches (official 0.5).

    Returns:
        dict: the collated batch (``inputs``, ``data_samples``), as the ODIN data preprocessor
        expects for that task.
    """
    if batch_task(data_batch) == '3d':
        return odin_collate(data_batch, camera_drop_prob=camera_drop_prob)
    return pseudo_collate(data_batch)


def _register_collate() -> None:
    from mmengine.registry import FUNCTIONS
    if 'odin_multitask_collate' not in FUNCTIONS.module_dict:
        FUNCTIONS.register_module(name='odin_multitask_collate', module=odin_multitask_collate)


_register_collate()

__all__ = ['ODINMultiTaskDataset', 'ODINMultiTaskSampler', 'ODINMultiTaskBatchSampler',
           'odin_multitask_collate', 'batch_task']
