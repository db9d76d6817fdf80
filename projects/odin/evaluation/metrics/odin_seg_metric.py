# Copyright (c) OpenMMLab. All rights reserved.
"""ScanNet-protocol instance AP and semantic mIoU for ODIN's overlapping (K, N) mask predictions."""
import copy
import os.path as osp
from typing import Dict, List, Optional, Sequence

import numpy as np
from mmdet3d.registry import METRICS
from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger, print_log

from projects.odin.class_names import DATASET_CLASS_INFO, get_class_info

from ..functional.instance_eval import (
    MIN_REGION_SIZE,
    OVERLAPS,
    format_instance_table,
    instance_eval_from_matches,
    match_scene,
)
from ..functional.scannet_format import write_instance_submission, write_semantic_submission
from ..functional.semantic_eval import (
    confusion_from_sparse,
    format_semantic_table,
    scene_confusion,
    semantic_metrics,
)


def _np(x) -> Optional[np.ndarray]:
    if x is None:
        return None
    if hasattr(x, 'detach'):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _get(obj, key):
    """Field of a dict or of a data element (``PointData``), else None."""
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(key)
    return getattr(obj, key, None)


@METRICS.register_module()
class ODINSegMetric(BaseMetric):
    """Instance AP / AP50 / AP25 and semantic mIoU / mAcc / allAcc with the ScanNet protocol.

    Consumes what ODIN writes into each data sample (``pred_pts_seg`` with ``pts_instance_mask``
    (K, N) bool, ``instance_labels`` (K,) 0-based training classes, ``instance_scores`` (K,) and
    ``pts_semantic_mask`` (N,)) and ``eval_ann_info`` (``pts_semantic_mask`` (N,) training class,
    ``num_classes`` or any value outside ``[0, num_classes)`` = unannotated; ``pts_instance_mask``
    (N,) instance id, negative = no instance).

    Every scene is matched in :meth:`process` and only its matching statistics (a few numbers per
    prediction) and sparse confusion counts are kept, so memory does not grow with the masks and
    ``collect_results`` gathers small objects across GPUs. The numbers are those of ScanNet's
    ``evaluate_semantic_instance.py`` / ``evaluate_semantic_label.py`` (see
    :mod:`projects.odin.evaluation.functional`).

    Class sets: ``dataset`` names a record of :mod:`projects.odin.class_names` (``'scannet'``,
    ``'scannet200'``, ``'s3dis'``, ``'matterport3d'``, ``'ai2thor'``). Without it the dataset's
    ``dataset_meta`` is used: its ``dataset`` key if it names a record, else a record whose class
    list equals ``classes``, else ``classes`` (training order) with ``seg_valid_class_ids`` (label
    id per class; default 1..C) and optionally ``instance_class_ids``. A ``seg_valid_class_ids``
    in ``dataset_meta`` that disagrees with the record raises an error.

    Args:
        dataset (str, optional): Class-set record name. Defaults to None.
        tasks (Sequence[str]): Any of ``'instance'``, ``'semantic'``. Defaults to both.
        instance_class_ids (Sequence[int], optional): Override of the label ids scored by AP.
        min_region_size (int): Minimum region size in points. Defaults to 100 (benchmark).
        submission_prefix (str, optional): If set, write the ScanNet benchmark submission files:
            ``<prefix>/instance/<scene>.txt`` + ``<prefix>/instance/pred_mask/<scene>_<k>.txt`` and
            ``<prefix>/semantic/<scene>.txt`` (label ids per point). Defaults to None.
        format_only (bool): Only write the submission files (test split without GT); returns an
            empty dict. Defaults to False.
        semantic_protocol (str): ``'scannet'``: per-point GT labels, mIoU over all classes that
            occur in GT or predictions (``evaluate_semantic_label.py``); ``'odin'``: GT labels
            only on points of annotated instances and mIoU over classes present in the GT (ODIN's
            ``scannet_3d_eval_semantic.py``). Defaults to ``'scannet'``.
        classwise (bool): Also return per-class AP / AP50 / AP25 / IoU keys. Defaults to False.
        collect_device (str): ``'cpu'`` or ``'gpu'``. Defaults to ``'cpu'``.
        prefix (str, optional): Metric-name prefix. Defaults to None.
    """

    default_prefix: Optional[str] = None

    def __init__(self,
                 dataset: Optional[str] = None,
                 tasks: Sequence[str] = ('instance', 'semantic'),
                 instance_class_ids: Optional[Sequence[int]] = None,
                 min_region_size: int = MIN_REGION_SIZE,
                 submission_prefix: Optional[str] = None,
                 format_only: bool = False,
                 semantic_protocol: str = 'scannet',
                 classwise: bool = False,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None,
                 **kwargs) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix, **kwargs)
        unknown = set(tasks) - {'instance', 'semantic'}
        if unknown or not tasks:
            raise ValueError(f"tasks must be a non-empty subset of ('instance', 'semantic'), got "
                             f'{tasks}')
        if format_only and submission_prefix is None:
            raise ValueError('format_only=True needs submission_prefix (where to write the files)')
        self.dataset = dataset
        self.tasks = tuple(tasks)
        self._instance_class_ids = (tuple(int(i) for i in instance_class_ids)
                                    if instance_class_ids is not None else None)
        self.min_region_size = int(min_region_size)
        self.submission_prefix = submission_prefix
        self.format_only = format_only
        if semantic_protocol not in ('scannet', 'odin'):
            raise ValueError(f"semantic_protocol must be 'scannet' or 'odin', got "
                             f'{semantic_protocol!r}')
        self.semantic_protocol = semantic_protocol
        self.classwise = classwise
        self._info: Optional[dict] = None

    # ------------------------------------------------------------------ class set
    @property
    def dataset_meta(self) -> Optional[dict]:
        """Meta info of the dataset (setting it re-resolves the class set)."""
        return self._dataset_meta

    @dataset_meta.setter
    def dataset_meta(self, dataset_meta: dict) -> None:
        self._dataset_meta = copy.deepcopy(dataset_meta)
        self._info = None

    @property
    def class_info(self) -> dict:
        """The class record in use (resolved lazily, once ``dataset_meta`` is known)."""
        if self._info is None:
            self._info = self._resolve_class_info()
        return self._info

    def _resolve_class_info(self) -> dict:
        meta = self.dataset_meta or {}
        dataset = self.dataset
        if dataset is None and isinstance(meta.get('dataset'), str):
            if meta['dataset'].lower() in DATASET_CLASS_INFO:
                dataset = meta['dataset']
        if dataset is not None:
            info = get_class_info(dataset)
            meta_classes = meta.get('classes')
            if meta_classes is not None and len(meta_classes) != info['num_classes']:
                raise ValueError(
                    f'ODINSegMetric(dataset={dataset!r}) expects {info["num_classes"]} '
                    f'classes but dataset_meta["classes"] has {len(meta_classes)}')
        else:
            if not meta.get('classes'):
                raise ValueError('ODINSegMetric needs `dataset=` or a dataset_meta with "classes"')
            classes = tuple(meta['classes'])
            info = None
            for name, rec in DATASET_CLASS_INFO.items():
                if classes in (tuple(rec['classes']), tuple(rec.get('alt_classes', ()))):
                    info = get_class_info(name)
                    break
            if info is None:
                class_ids = tuple(int(i) for i in meta.get('seg_valid_class_ids',
                                                           range(1, len(classes) + 1)))
                if len(class_ids) != len(classes):
                    raise ValueError(f'dataset_meta has {len(classes)} classes but '
                                     f'{len(class_ids)} seg_valid_class_ids')
                inst_ids = tuple(int(i) for i in meta.get('instance_class_ids', class_ids))
                id2name = dict(zip(class_ids, classes))
                info = dict(classes=classes, class_ids=class_ids, num_classes=len(classes),
                            instance_class_ids=inst_ids,
                            instance_classes=tuple(id2name[i] for i in inst_ids),
                            semantic_class_ids=class_ids, semantic_classes=classes,
                            id_multiplier=int(meta.get('id_multiplier', 1000)),
                            known_label_ids=(0, ) + class_ids, subsets={})
        meta_ids = meta.get('seg_valid_class_ids')
        if meta_ids is not None and tuple(int(i) for i in meta_ids) != tuple(info['class_ids']):
            raise ValueError(
                'dataset_meta["seg_valid_class_ids"] (label id of each training class) '
                f'{tuple(meta_ids)[:6]}... disagrees with the class set in use '
                f'{tuple(info["class_ids"])[:6]}...; predictions would be scored against the wrong '
                'labels')
        if self._instance_class_ids is not None:
            id2name = dict(zip(info['class_ids'], info['classes']))
            bad = [i for i in self._instance_class_ids if i not in id2name]
            if bad:
                raise ValueError(f'instance_class_ids {bad} are not label ids of the dataset')
            info['instance_class_ids'] = self._instance_class_ids
            info['instance_classes'] = tuple(id2name[i] for i in self._instance_class_ids)
        info['class_ids_arr'] = np.asarray(info['class_ids'], dtype=np.int64)
        # semantic metrics are reported in benchmark order: permutation of training indices
        train_index = {c: i for i, c in enumerate(info['class_ids'])}
        info['semantic_perm'] = np.asarray(
            [train_index[c] for c in info['semantic_class_ids']], dtype=np.int64)
        return info

    def _to_label_ids(self, train_labels: np.ndarray) -> np.ndarray:
        """0-based training classes -> benchmark label ids (0 for anything out of range)."""
        ids = self.class_info['class_ids_arr']
        train_labels = train_labels.astype(np.int64)
        ok = (train_labels >= 0) & (train_labels < ids.size)
        return np.where(ok, ids[np.clip(train_labels, 0, ids.size - 1)], 0)

    # ------------------------------------------------------------------ per sample
    @staticmethod
    def _scene_name(sample: dict, fallback: int) -> str:
        """Benchmark scene name: ``scene_id``, else a string ``sample_idx``, else the point file."""
        for key in ('scene_id', 'sample_idx'):
            val = sample.get(key)
            if isinstance(val, str) and val:
                return osp.splitext(osp.basename(val))[0]
        lidar = sample.get('lidar_path') or (sample.get('lidar_points') or {}).get('lidar_path')
        if isinstance(lidar, str) and lidar:
            return osp.splitext(osp.basename(lidar))[0]
        val = sample.get('sample_idx')
        if isinstance(val, (int, np.integer)):
            return f'scene_{int(val):06d}'
        return f'scene_{fallback:06d}'

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        """Match each scene and keep only its statistics (and optionally export it).

        Args:
            data_batch (dict): Unused.
            data_samples (Sequence[dict]): ``Det3DDataSample.to_dict()`` outputs with
                ``pred_pts_seg`` and ``eval_ann_info``.
        """
        info = self.class_info
        for i, sample in enumerate(data_samples):
            scene = self._scene_name(sample, len(self.results) + i)
            pred = sample.get('pred_pts_seg')
            if pred is None:
                raise KeyError(f'{scene}: data sample has no pred_pts_seg')
            inst_masks = _np(_get(pred, 'pts_instance_mask'))
            inst_labels = _np(_get(pred, 'instance_labels'))
            inst_scores = _np(_get(pred, 'instance_scores'))
            sem_pred = _np(_get(pred, 'pts_semantic_mask'))
            has_inst_pred = inst_masks is not None and inst_labels is not None
            if has_inst_pred:
                if inst_masks.ndim != 2:
                    raise ValueError(f'{scene}: pred_pts_seg.pts_instance_mask must be (K, N) '
                                     f'masks, got shape {inst_masks.shape}')
                if inst_masks.dtype.kind == 'f':
                    raise TypeError(f'{scene}: pred_pts_seg.pts_instance_mask must be binary '
                                    f'(bool) masks, got {inst_masks.dtype}; threshold the logits')
                if inst_scores is None:
                    raise KeyError(f'{scene}: pred_pts_seg has instance masks but no '
                                   'instance_scores')
                inst_label_ids = self._to_label_ids(inst_labels.reshape(-1))
            if self.submission_prefix is not None:
                self._export(scene, inst_masks if has_inst_pred else None,
                             inst_label_ids if has_inst_pred else None, inst_scores, sem_pred)
            if self.format_only:
                self.results.append(dict(scene=scene))
                continue
            gt = sample.get('eval_ann_info')
            if gt is None:
                raise KeyError(f'{scene}: no eval_ann_info (GT) in the data sample; for a test '
                               'split without GT set format_only=True and submission_prefix')
            gt_sem = _np(_get(gt, 'pts_semantic_mask'))
            gt_inst = _np(_get(gt, 'pts_instance_mask'))
            result: Dict[str, object] = dict(scene=scene)
            if 'instance' in self.tasks:
                if not has_inst_pred:
                    raise KeyError(f'{scene}: pred_pts_seg lacks pts_instance_mask / '
                                   'instance_labels needed for instance AP')
                if gt_sem is None or gt_inst is None:
                    raise KeyError(f'{scene}: eval_ann_info needs pts_semantic_mask and '
                                   'pts_instance_mask for instance AP')
                gt_ids, mult = self._encode_gt(gt_sem.reshape(-1), gt_inst.reshape(-1), scene)
                result['instance'] = match_scene(
                    gt_ids, inst_masks, inst_label_ids, inst_scores.reshape(-1),
                    info['instance_class_ids'], id_multiplier=mult, overlaps=OVERLAPS,
                    min_region_size=self.min_region_size, scene_name=scene)
            if 'semantic' in self.tasks:
                if sem_pred is None:
                    raise KeyError(f'{scene}: pred_pts_seg lacks pts_semantic_mask needed for '
                                   'mIoU')
                if gt_sem is None:
                    raise KeyError(f'{scene}: eval_ann_info lacks pts_semantic_mask')
                if self.semantic_protocol == 'odin':
                    if gt_inst is None or gt_inst.shape != gt_sem.shape:
                        raise ValueError(f'{scene}: semantic_protocol="odin" needs a '
                                         'pts_instance_mask of the same length as the semantic GT')
                    gt_sem = np.where(gt_inst.reshape(gt_sem.shape) >= 0, gt_sem, -1)
                result['semantic'] = scene_confusion(gt_sem, sem_pred, info['num_classes'], scene)
            self.results.append(result)

    def _encode_gt(self, gt_sem: np.ndarray, gt_inst: np.ndarray, scene: str):
        """(N,) training class + (N,) instance id -> benchmark ``label * M + instance + 1``."""
        if gt_sem.shape != gt_inst.shape:
            raise ValueError(f'{scene}: eval_ann_info pts_semantic_mask has {gt_sem.size} points '
                             f'but pts_instance_mask has {gt_inst.size}')
        gt_inst = gt_inst.astype(np.int64)
        label_ids = self._to_label_ids(gt_sem)
        mult = int(self.class_info['id_multiplier'])
        max_inst = int(gt_inst.max()) + 1 if gt_inst.size else 0
        if max_inst >= mult:  # keep the encoding unambiguous; does not change any result
            mult = 10**len(str(max_inst))
        gt_ids = np.where((gt_inst >= 0) & (label_ids > 0), label_ids * mult + gt_inst + 1, 0)
        return gt_ids, mult

    def _export(self, scene: str, masks, label_ids, scores, sem_pred) -> None:
        info = self.class_info
        if masks is not None:
            keep = np.isin(label_ids, np.asarray(info['instance_class_ids']))
            order = np.flatnonzero(keep)
            write_instance_submission(
                osp.join(self.submission_prefix, 'instance'), scene, masks[order] != 0,
                label_ids[order], np.asarray(scores, dtype=np.float64).reshape(-1)[order])
        if sem_pred is not None:
            write_semantic_submission(osp.join(self.submission_prefix, 'semantic'), scene,
                                      self._to_label_ids(sem_pred.reshape(-1)))

    # ------------------------------------------------------------------ final metrics
    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        """Pool the per-scene statistics of all processes and compute the metrics.

        Args:
            results (list[dict]): Per-scene results of all processes.

        Returns:
            dict[str, float]: ``AP``, ``AP50``, ``AP25`` (+ ``head_AP`` ... for ScanNet200) and
            ``mIoU``, ``mAcc``, ``allAcc``, as fractions.
        """
        logger = MMLogger.get_current_instance()
        if self.format_only:
            logger.info(f'submission files written to {self.submission_prefix}')
            return {}
        if not results:
            logger.warning('ODINSegMetric: no scene was processed; no metrics')
            return {}
        info = self.class_info
        out: Dict[str, float] = {}
        if 'instance' in self.tasks:
            inst = instance_eval_from_matches([r['instance'] for r in results],
                                              info['instance_classes'], OVERLAPS,
                                              info.get('subsets'))
            out.update(AP=inst['all_ap'], AP50=inst['all_ap_50%'], AP25=inst['all_ap_25%'])
            for sname in (info.get('subsets') or {}):
                out[f'{sname}_AP'] = inst[f'{sname}_ap']
                out[f'{sname}_AP50'] = inst[f'{sname}_ap_50%']
                out[f'{sname}_AP25'] = inst[f'{sname}_ap_25%']
            print_log('\n' + format_instance_table(inst, info['instance_classes']), logger)
            if self.classwise:
                for name, v in inst['classes'].items():
                    out[f'{name}_AP'] = v['ap']
                    out[f'{name}_AP50'] = v['ap50%']
                    out[f'{name}_AP25'] = v['ap25%']
        if 'semantic' in self.tasks:
            conf = confusion_from_sparse([r['semantic'] for r in results], info['num_classes'])
            perm = info['semantic_perm']
            conf = np.concatenate([conf[perm][:, perm], conf[perm][:, -1:]], axis=1)
            sem = semantic_metrics(conf, info['semantic_classes'],
                                   mean_over_classes_with_gt=self.semantic_protocol == 'odin')
            out.update(mIoU=sem['miou'], mAcc=sem['macc'], allAcc=sem['allacc'])
            print_log('\n' + format_semantic_table(sem), logger)
            if self.classwise:
                for name, v in sem['classes'].items():
                    out[f'{name}_IoU'] = v['iou']
        return out

