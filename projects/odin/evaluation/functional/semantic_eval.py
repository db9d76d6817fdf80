# Copyright (c) OpenMMLab. All rights reserved.
"""Semantic segmentation mIoU / mAcc / allAcc from a confusion matrix (pure numpy).

Same rules as ScanNet's ``evaluate_semantic_label.py`` (and equivalent to mmdet3d's ``seg_eval``):
points whose GT is not an evaluated class are ignored; a prediction outside the evaluated classes
counts as a false negative of the GT class and never as a false positive; the confusion matrix is
accumulated over all scenes; IoU_c = TP / (TP + FP + FN), NaN for a class with no GT and no
prediction; mIoU / mAcc are NaN-means over classes.
"""
import warnings
from typing import Dict, Sequence, Tuple

import numpy as np


def scene_confusion(gt: np.ndarray, pred: np.ndarray, num_classes: int,
                    scene_name: str = '') -> Tuple[np.ndarray, np.ndarray]:
    """Sparse confusion counts of one scene.

    Args:
        gt (np.ndarray): (N,) int GT class index; values outside ``[0, num_classes)`` are ignored.
        pred (np.ndarray): (N,) int predicted class index; values outside ``[0, num_classes)`` are
            counted in an extra "unknown" column.
        num_classes (int): C.
        scene_name (str): Used in error messages only.

    Returns:
        tuple[np.ndarray, np.ndarray]: Flat indices into a (C, C + 1) matrix and their counts
        (int64), a compact form to gather across processes.
    """
    gt = np.asarray(gt).astype(np.int64).reshape(-1)
    pred = np.asarray(pred).astype(np.int64).reshape(-1)
    if gt.shape != pred.shape:
        raise ValueError(f'{scene_name}: {pred.size} predicted labels but {gt.size} GT labels')
    keep = (gt >= 0) & (gt < num_classes)
    gt, pred = gt[keep], pred[keep]
    pred = np.where((pred >= 0) & (pred < num_classes), pred, num_classes)
    flat, counts = np.unique(gt * (num_classes + 1) + pred, return_counts=True)
    return flat.astype(np.int64), counts.astype(np.int64)


def confusion_from_sparse(parts: Sequence[Tuple[np.ndarray, np.ndarray]],
                          num_classes: int) -> np.ndarray:
    """Sum sparse per-scene confusions into a dense (C, C + 1) int64 matrix."""
    conf = np.zeros(num_classes * (num_classes + 1), dtype=np.int64)
    for flat, counts in parts:
        np.add.at(conf, flat, counts)
    return conf.reshape(num_classes, num_classes + 1)


def semantic_metrics(confusion: np.ndarray,
                     class_names: Sequence[str],
                     mean_over_classes_with_gt: bool = False) -> Dict[str, object]:
    """IoU / accuracy from a (C, C + 1) or (C, C) confusion matrix (rows = GT).

    Args:
        confusion (np.ndarray): Counts; an optional last column holds predictions outside the
            evaluated classes.
        class_names (Sequence[str]): (C,) names.
        mean_over_classes_with_gt (bool): Average mIoU / mAcc over classes that occur in the GT
            only (ODIN's evaluator); by default a class that is predicted but absent from the GT
            counts with IoU 0 (benchmark / mmdet3d ``seg_eval``). Defaults to False.

    Returns:
        dict: ``miou``, ``macc``, ``allacc`` (fractions) and ``classes`` (name -> ``iou``, ``acc``).
    """
    conf = np.asarray(confusion, dtype=np.float64)
    num_classes = conf.shape[0]
    tp = np.diag(conf[:, :num_classes])
    gt_count = conf.sum(1)
    pred_count = conf[:, :num_classes].sum(0)
    with warnings.catch_warnings(), np.errstate(invalid='ignore', divide='ignore'):
        warnings.simplefilter('ignore', category=RuntimeWarning)
        iou = tp / (gt_count + pred_count - tp)
        acc = tp / gt_count
        if mean_over_classes_with_gt:
            iou = np.where(gt_count > 0, iou, np.nan)
        out = dict(miou=float(np.nanmean(iou)), macc=float(np.nanmean(acc)),
                   allacc=float(tp.sum() / gt_count.sum()) if gt_count.sum() > 0 else float('nan'))
    out['classes'] = {
        n: dict(iou=float(iou[i]), acc=float(acc[i]))
        for i, n in enumerate(class_names)
    }
    return out


def format_semantic_table(sem: dict) -> str:
    """Per-class IoU / accuracy table (values in %)."""
    def f(v: float) -> str:
        return f'{100 * v:>8.1f}' if np.isfinite(v) else f'{"nan":>8}'

    names = list(sem['classes'])
    width = max([len(n) for n in names] + [8])
    lines = [f'{"class":<{width}} {"IoU":>8} {"Acc":>8}']
    for name in names:
        lines.append(f'{name:<{width}} {f(sem["classes"][name]["iou"])} '
                     f'{f(sem["classes"][name]["acc"])}')
    lines.append('-' * len(lines[0]))
    lines.append(f'{"mean":<{width}} {f(sem["miou"])} {f(sem["macc"])}')
    lines.append(f'{"allAcc":<{width}} {f(sem["allacc"])}')
    return '\n'.join(lines)
