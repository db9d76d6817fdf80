"""One evaluator for a joint 2D-3D test set: route each sample to its task's metric."""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Sequence

from mmdet3d.registry import METRICS
from mmengine.evaluator import BaseMetric

DEFAULT_PREFIXES = {'3d': 'scannet', '2d': 'coco'}


def _split_batch(data_batch: Any, idx: List[int], total: int) -> Any:
    """The part of a collated batch belonging to samples ``idx`` (lists of length ``total``)."""
    if isinstance(data_batch, dict):
        return {k: _split_batch(v, idx, total) for k, v in data_batch.items()}
    if isinstance(data_batch, (list, tuple)) and len(data_batch) == total:
        return [data_batch[i] for i in idx]
    return data_batch


@METRICS.register_module()
class ODINMultiTaskMetric(BaseMetric):
    """Evaluate a joint 3D + 2D test set in one run (e.g. ScanNet val + COCO val).

    Every prediction is routed by its metainfo ``task`` ('3d' / '2d', set by
    :class:`ODINMultiTaskDataset`) to that task's metric (``ODINSegMetric`` for 3D,
    ``mmdet.CocoMetric`` for 2D). The per-task metrics only ``process`` and ``compute_metrics``;
    collection across ranks is done once here, on one result per sample, so the distributed
    sampler's padding is dropped correctly. Each task's metric names get the task's prefix:
    ``scannet/AP50``, ``coco/segm_mAP``. A task without samples is skipped (logged).

    ``dataset_meta``: when it carries ``task_metainfo`` (an :class:`ODINMultiTaskDataset`), each
    metric gets its own dataset's metainfo; otherwise all get the same.

    Args:
        task_metrics: task -> metric config (or instance). (Not ``metrics``: a dict config with
            that key is taken by mmengine's Runner for an Evaluator.)
        prefixes: task -> metric-name prefix. Defaults to ``{'3d': 'scannet', '2d': 'coco'}``.
        collect_device: 'cpu' or 'gpu'.
        prefix: unused (names are prefixed per task); accepted for mmengine compatibility.
    """

    default_prefix: Optional[str] = None

    def __init__(self,
                 task_metrics: Dict[str, Any],
                 prefixes: Optional[Dict[str, str]] = None,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        if not task_metrics:
            raise ValueError('ODINMultiTaskMetric needs at least one task metric')
        self.metrics: Dict[str, BaseMetric] = {}
        for task, cfg in task_metrics.items():
            if task not in ('3d', '2d'):
                raise ValueError(f"ODINMultiTaskMetric: tasks are '3d' / '2d', got {task!r}")
            self.metrics[task] = METRICS.build(cfg) if isinstance(cfg, dict) else cfg
        prefixes = dict(DEFAULT_PREFIXES, **(prefixes or {}))
        self.prefixes = {t: prefixes[t] for t in self.metrics}

    @property
    def dataset_meta(self) -> Optional[dict]:
        """The joint dataset's metainfo (per-task records under ``task_metainfo``)."""
        return self._dataset_meta

    @dataset_meta.setter
    def dataset_meta(self, dataset_meta: Optional[dict]) -> None:
        self._dataset_meta = dataset_meta
        per_task = (dataset_meta or {}).get('task_metainfo') or {}
        for task, metric in self.metrics.items():
            meta = per_task.get(task, dataset_meta)
            if meta is not None:
                metric.dataset_meta = copy.deepcopy(meta)

    @staticmethod
    def _task(sample: dict) -> str:
        task = sample.get('task')
        if task is None:
            task = '3d' if 'pred_pts_seg' in sample else '2d'
        return task

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        """Let each sample's task metric process it; keep one (task, results) entry per sample."""
        total = len(data_samples)
        for i, sample in enumerate(data_samples):
            task = self._task(sample)
            if task not in self.metrics:
                raise KeyError(f'ODINMultiTaskMetric: a {task!r} sample but metrics only for '
                               f'{sorted(self.metrics)}')
            metric = self.metrics[task]
            n0 = len(metric.results)
            metric.process(_split_batch(data_batch, [i], total), [sample])
            new = metric.results[n0:]
            del metric.results[n0:]
            self.results.append((task, new))

    def compute_metrics(self, results: List[tuple]) -> Dict[str, float]:
        """Run every task's ``compute_metrics`` on its samples and prefix the names."""
        from mmengine.logging import MMLogger
        logger = MMLogger.get_current_instance()
        out: Dict[str, float] = {}
        for task, metric in self.metrics.items():
            part = [r for t, rs in results if t == task for r in rs]
            if not part:
                logger.warning(f'ODINMultiTaskMetric: no {task} samples were evaluated; '
                               f'skipping the {self.prefixes[task]} metrics')
                continue
            logger.info(f'ODINMultiTaskMetric: {task} ({self.prefixes[task]}) on '
                        f'{sum(1 for t, _ in results if t == task)} samples')
            for k, v in metric.compute_metrics(part).items():
                out[f'{self.prefixes[task]}/{k}'] = v
        return out
