# Copyright (c) OpenMMLab. All rights reserved.
"""ScanNet-protocol 3D instance AP for overlapping (K, N) masks, scene by scene (pure numpy).

The official evaluator (ScanNet ``BenchmarkScripts/3d_evaluation/evaluate_semantic_instance.py``,
ported to Python 3 in ``mmdet3d.evaluation.functional.scannet_utils.evaluate_semantic_instance``)
first associates every scene, keeps all scenes' associations in memory, and then runs a greedy
matching and AP computation over everything. The greedy matching only ever looks at one scene at a
time (the ``pred_visited`` flags are keyed by prediction files, which are scene-specific), so it is
split here into:

1. :func:`match_scene` - association + greedy matching of ONE scene for every IoU threshold and
   class, reduced to the few numbers AP needs (``y_true`` / ``y_score`` per matched or
   false-positive prediction, hard false negatives, ``has_gt`` / ``has_pred``). Memory
   O(#predictions).
2. :func:`accumulate_scene_matches` - concatenation of the per-scene results (order-independent,
   so results gathered from several GPUs give the same numbers).
3. :func:`compute_ap` / :func:`compute_averages` - the official precision-recall integration and
   averaging, reproduced operation by operation so the numbers are bit-identical.

The rules (see ``docs/evaluation.md``): IoU > threshold (strict); predictions with a label that is
not evaluated or with fewer than ``min_region_size`` vertices are dropped before matching; GT
instances with fewer than ``min_region_size`` vertices are not matched and ignored; greedy matching
in GT order (``np.unique`` order) x prediction order, a second prediction above threshold for an
already matched GT is a false positive carrying the lower of the two scores; an unmatched prediction
whose overlap with void / small GT exceeds the threshold is not counted; AP = sum(precision * recall
step width) with the artificial (P=1, R=0) point; NaN for classes without GT, 0 for classes with GT
but no prediction. The official crash when every prediction of a class is ignored (ScanNet PR #26)
is handled (the class then gets AP 0).
"""
import warnings
from typing import Dict, List, Optional, Sequence

import numpy as np

#: IoU thresholds of the benchmark: 0.50, 0.55, ..., 0.90 (0.95 excluded) and 0.25.
OVERLAPS = np.append(np.arange(0.5, 0.95, 0.05), 0.25)
#: Minimum number of vertices of a predicted or GT region.
MIN_REGION_SIZE = 100


def _as_numpy(x) -> np.ndarray:
    if hasattr(x, 'detach'):  # torch.Tensor without importing torch
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def match_scene(gt_ids: np.ndarray,
                pred_masks: np.ndarray,
                pred_label_ids: Sequence[int],
                pred_scores: Sequence[float],
                valid_class_ids: Sequence[int],
                id_multiplier: int = 1000,
                overlaps: np.ndarray = OVERLAPS,
                min_region_size: int = MIN_REGION_SIZE,
                scene_name: str = '') -> Dict[str, object]:
    """Associate and greedily match one scene for every IoU threshold and class.

    Args:
        gt_ids (np.ndarray): (N,) int GT per vertex, ``label_id * id_multiplier + instance``
            (0 = unannotated).
        pred_masks (np.ndarray): (K, N) predicted masks (bool, or ints where non-zero = inside),
            in prediction order (which matters for the greedy matching, as in the benchmark).
        pred_label_ids (Sequence[int]): (K,) label id of each mask (same id space as ``gt_ids``).
        pred_scores (Sequence[float]): (K,) confidence of each mask.
        valid_class_ids (Sequence[int]): (C,) evaluated label ids; defines the class order of the
            outputs.
        id_multiplier (int): Multiplier of the GT encoding. Defaults to 1000.
        overlaps (np.ndarray): (O,) IoU thresholds. Defaults to :data:`OVERLAPS`.
        min_region_size (int): Minimum region size in vertices. Defaults to 100.
        scene_name (str): Used in error messages only.

    Returns:
        dict: ``has_gt`` (C,) bool, ``has_pred`` (C,) bool, ``hard_fn`` (O, C) int32 and, per
        threshold, ``cls`` / ``true`` / ``score``: lists of O arrays (M_o,) with the class index,
        1/0 (true / false positive) and confidence of every scored prediction.
    """
    gt_ids = _as_numpy(gt_ids).astype(np.int64).reshape(-1)
    pred_masks = _as_numpy(pred_masks)
    if pred_masks.ndim == 1 and pred_masks.size == 0:
        pred_masks = pred_masks.reshape(0, gt_ids.size)
    if pred_masks.ndim != 2:
        raise ValueError(f'{scene_name}: pred_masks must be (K, N), got shape {pred_masks.shape}')
    num_pred = pred_masks.shape[0]
    if pred_masks.shape[1] != gt_ids.size:
        raise ValueError(f'{scene_name}: predicted masks have {pred_masks.shape[1]} points but the '
                         f'ground truth has {gt_ids.size}')
    pred_label_ids = _as_numpy(pred_label_ids).astype(np.int64).reshape(-1)
    pred_scores = _as_numpy(pred_scores).astype(np.float64).reshape(-1)
    if pred_label_ids.size != num_pred or pred_scores.size != num_pred:
        raise ValueError(f'{scene_name}: {num_pred} masks but {pred_label_ids.size} labels and '
                         f'{pred_scores.size} scores')
    if not np.isfinite(pred_scores).all():
        raise ValueError(f'{scene_name}: prediction scores must be finite, got '
                         f'{pred_scores[~np.isfinite(pred_scores)][:3].tolist()}')
    valid_class_ids = np.asarray(valid_class_ids, dtype=np.int64)
    cls_index = {int(c): i for i, c in enumerate(valid_class_ids)}
    num_cls = len(valid_class_ids)
    overlaps = np.asarray(overlaps, dtype=np.float64)

    # ---- ground-truth instances (np.unique order, as util_3d.get_instances) ----
    uniq, inverse, counts = np.unique(gt_ids, return_inverse=True, return_counts=True)
    uniq_label = uniq // id_multiplier
    is_gt_inst = (uniq != 0) & np.isin(uniq_label, valid_class_ids)
    gt_uid = np.flatnonzero(is_gt_inst)  # positions in `uniq`
    gt_inst_id = uniq[gt_uid]
    gt_vert = counts[gt_uid].astype(np.int64)
    gt_cls = np.array([cls_index[int(lb)] for lb in uniq_label[gt_uid]], dtype=np.int64)
    num_gt = gt_uid.size
    uniq_to_gt = np.full(uniq.size, -1, dtype=np.int64)
    uniq_to_gt[gt_uid] = np.arange(num_gt)
    vert_gt = uniq_to_gt[inverse.reshape(-1)]  # (N,) GT instance index or -1
    bool_void = ~np.isin(gt_ids // id_multiplier, valid_class_ids)

    # ---- predictions: drop invalid labels and small regions, intersect with same-class GT ----
    p_cls: List[int] = []
    p_vert: List[int] = []
    p_conf: List[float] = []
    p_void: List[int] = []
    p_gts: List[np.ndarray] = []  # same-class GT indices with intersection > 0 (GT order)
    p_inter: List[np.ndarray] = []
    gt_preds: List[List[int]] = [[] for _ in range(num_gt)]  # pred indices in prediction order
    gt_pred_inter: List[List[int]] = [[] for _ in range(num_gt)]
    for k in range(num_pred):
        ci = cls_index.get(int(pred_label_ids[k]))
        if ci is None:
            continue
        mask = pred_masks[k]
        mask = mask if mask.dtype == np.bool_ else mask != 0
        num = int(np.count_nonzero(mask))
        if num < min_region_size:
            continue
        hit = vert_gt[mask]
        hit = hit[hit >= 0]
        inter = np.bincount(hit, minlength=num_gt) if hit.size else np.zeros(num_gt, np.int64)
        cand = np.flatnonzero((inter > 0) & (gt_cls == ci))
        pi = len(p_cls)
        p_cls.append(ci)
        p_vert.append(num)
        p_conf.append(float(pred_scores[k]))
        p_void.append(int(np.count_nonzero(bool_void & mask)))
        p_gts.append(cand)
        p_inter.append(inter[cand].astype(np.int64))
        for g, it in zip(cand.tolist(), inter[cand].tolist()):
            gt_preds[g].append(pi)
            gt_pred_inter[g].append(it)

    p_cls_arr = np.asarray(p_cls, dtype=np.int64)
    has_gt = np.zeros(num_cls, dtype=bool)
    gt_kept = (gt_inst_id >= id_multiplier) & (gt_vert >= min_region_size)
    has_gt[gt_cls[gt_kept]] = True
    has_pred = np.zeros(num_cls, dtype=bool)
    has_pred[p_cls_arr] = True
    active = np.flatnonzero(has_gt | has_pred)

    hard_fn = np.zeros((len(overlaps), num_cls), dtype=np.int32)
    out_cls: List[np.ndarray] = []
    out_true: List[np.ndarray] = []
    out_score: List[np.ndarray] = []
    for oi, th in enumerate(overlaps):
        visited = np.zeros(len(p_cls), dtype=bool)
        cls_l: List[int] = []
        true_l: List[float] = []
        score_l: List[float] = []
        for ci in active.tolist():
            gts = np.flatnonzero((gt_cls == ci) & gt_kept).tolist()
            cur_true = [1.0] * len(gts)
            cur_score = [-float('inf')] * len(gts)
            cur_match = [False] * len(gts)
            for gti, g in enumerate(gts):
                found_match = False
                for pi, inter in zip(gt_preds[g], gt_pred_inter[g]):
                    if visited[pi]:
                        continue
                    overlap = float(inter) / (gt_vert[g] + p_vert[pi] - inter)
                    if overlap > th:
                        conf = p_conf[pi]
                        if cur_match[gti]:
                            # the lower-scored of two matches of one GT is a false positive
                            max_score = max(cur_score[gti], conf)
                            min_score = min(cur_score[gti], conf)
                            cur_score[gti] = max_score
                            cur_true.append(0.0)
                            cur_score.append(min_score)
                            cur_match.append(True)
                        else:
                            found_match = True
                            cur_match[gti] = True
                            cur_score[gti] = conf
                            visited[pi] = True
                if not found_match:
                    hard_fn[oi, ci] += 1
            kept_true = [t for t, m in zip(cur_true, cur_match) if m]
            kept_score = [s for s, m in zip(cur_score, cur_match) if m]
            # unmatched predictions are false positives unless mostly on ignored regions
            for pi in np.flatnonzero(p_cls_arr == ci).tolist():
                found_gt = False
                for g, inter in zip(p_gts[pi].tolist(), p_inter[pi].tolist()):
                    overlap = float(inter) / (gt_vert[g] + p_vert[pi] - inter)
                    if overlap > th:
                        found_gt = True
                        break
                if not found_gt:
                    num_ignore = p_void[pi]
                    for g, inter in zip(p_gts[pi].tolist(), p_inter[pi].tolist()):
                        if gt_inst_id[g] < id_multiplier:  # group
                            num_ignore += inter
                        if gt_vert[g] < min_region_size:  # small GT
                            num_ignore += inter
                    if float(num_ignore) / p_vert[pi] <= th:
                        kept_true.append(0.0)
                        kept_score.append(p_conf[pi])
            cls_l.extend([ci] * len(kept_true))
            true_l.extend(kept_true)
            score_l.extend(kept_score)
        out_cls.append(np.asarray(cls_l, dtype=np.int32))
        out_true.append(np.asarray(true_l, dtype=np.float64))
        out_score.append(np.asarray(score_l, dtype=np.float64))
    return dict(has_gt=has_gt, has_pred=has_pred, hard_fn=hard_fn, cls=out_cls, true=out_true,
                score=out_score)


def accumulate_scene_matches(scene_results: Sequence[dict]) -> dict:
    """Pool the per-scene outputs of :func:`match_scene` (any order, e.g. gathered from GPUs).

    Args:
        scene_results (Sequence[dict]): Outputs of :func:`match_scene` with the same class set and
            thresholds.

    Returns:
        dict: ``has_gt`` (C,), ``has_pred`` (C,), ``hard_fn`` (O, C) and ``cls`` / ``true`` /
        ``score`` lists of O concatenated arrays.
    """
    if len(scene_results) == 0:
        raise ValueError('no scene results to accumulate')
    first = scene_results[0]
    num_ov = len(first['cls'])
    out = dict(
        has_gt=np.logical_or.reduce([r['has_gt'] for r in scene_results]),
        has_pred=np.logical_or.reduce([r['has_pred'] for r in scene_results]),
        hard_fn=np.sum([r['hard_fn'] for r in scene_results], axis=0),
        cls=[np.concatenate([r['cls'][o] for r in scene_results]) for o in range(num_ov)],
        true=[np.concatenate([r['true'][o] for r in scene_results]) for o in range(num_ov)],
        score=[np.concatenate([r['score'][o] for r in scene_results]) for o in range(num_ov)])
    return out


def _ap_one(y_true: np.ndarray, y_score: np.ndarray, hard_false_negatives: int) -> float:
    """Area under the PR curve exactly as the benchmark computes it (has_gt and has_pred)."""
    score_arg_sort = np.argsort(y_score)
    y_score_sorted = y_score[score_arg_sort]
    y_true_sorted = y_true[score_arg_sort]
    y_true_sorted_cumsum = np.cumsum(y_true_sorted)
    _, unique_indices = np.unique(y_score_sorted, return_index=True)
    num_prec_recall = len(unique_indices) + 1
    num_examples = len(y_score_sorted)
    # ScanNet PR #26: every prediction ignored -> nothing to sort
    num_true_examples = y_true_sorted_cumsum[-1] if len(y_true_sorted_cumsum) > 0 else 0
    precision = np.zeros(num_prec_recall)
    recall = np.zeros(num_prec_recall)
    y_true_sorted_cumsum = np.append(y_true_sorted_cumsum, 0)
    for idx_res, idx_scores in enumerate(unique_indices):
        cumsum = y_true_sorted_cumsum[idx_scores - 1]
        tp = num_true_examples - cumsum
        fp = num_examples - idx_scores - tp
        fn = cumsum + hard_false_negatives
        precision[idx_res] = float(tp) / (tp + fp)
        recall[idx_res] = float(tp) / (tp + fn)
    precision[-1] = 1.
    recall[-1] = 0.
    recall_for_conv = np.copy(recall)
    recall_for_conv = np.append(recall_for_conv[0], recall_for_conv)
    recall_for_conv = np.append(recall_for_conv, 0.)
    step_widths = np.convolve(recall_for_conv, [-0.5, 0, 0.5], 'valid')
    return float(np.dot(precision, step_widths))


def compute_ap(accumulated: dict) -> np.ndarray:
    """Average precision per class and threshold.

    Args:
        accumulated (dict): Output of :func:`accumulate_scene_matches`.

    Returns:
        np.ndarray: (1, C, O) AP (the benchmark's ``[distance, class, overlap]`` layout); NaN for
        classes without GT, 0 for classes with GT but no prediction.
    """
    has_gt, has_pred = accumulated['has_gt'], accumulated['has_pred']
    num_cls = has_gt.size
    num_ov = len(accumulated['cls'])
    ap = np.zeros((1, num_cls, num_ov), dtype=np.float64)
    for oi in range(num_ov):
        cls = accumulated['cls'][oi]
        order = np.argsort(cls, kind='stable')
        bounds = np.searchsorted(cls[order], np.arange(num_cls + 1))
        for li in range(num_cls):
            if has_gt[li] and has_pred[li]:
                sel = order[bounds[li]:bounds[li + 1]]
                ap[0, li, oi] = _ap_one(accumulated['true'][oi][sel],
                                        accumulated['score'][oi][sel],
                                        int(accumulated['hard_fn'][oi, li]))
            elif has_gt[li]:
                ap[0, li, oi] = 0.0
            else:
                ap[0, li, oi] = float('nan')
    return ap


def compute_averages(aps: np.ndarray,
                     class_names: Sequence[str],
                     overlaps: np.ndarray = OVERLAPS,
                     subsets: Optional[Dict[str, Sequence[str]]] = None) -> dict:
    """Benchmark averages: AP over 0.50:0.90, AP50 and AP25, overall, per class and per subset.

    Args:
        aps (np.ndarray): (1, C, O) output of :func:`compute_ap`.
        class_names (Sequence[str]): (C,) names.
        overlaps (np.ndarray): (O,) thresholds used. Defaults to :data:`OVERLAPS`.
        subsets (dict, optional): Subset name -> class names (e.g. ScanNet200 head / common /
            tail); names that are not evaluated classes (wall, floor) are left out, as ODIN does.

    Returns:
        dict: ``all_ap``, ``all_ap_50%``, ``all_ap_25%``, ``classes`` (name -> ``ap``, ``ap50%``,
        ``ap25%``) and, per subset ``s``, ``s_ap``, ``s_ap_50%``, ``s_ap_25%`` (fractions).
    """
    d_inf = 0
    o50 = np.where(np.isclose(overlaps, 0.5))
    o25 = np.where(np.isclose(overlaps, 0.25))
    o_all_but25 = np.where(np.logical_not(np.isclose(overlaps, 0.25)))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', category=RuntimeWarning)  # nanmean of all-NaN -> NaN
        avg = dict(all_ap=float(np.nanmean(aps[d_inf, :, o_all_but25])),
                   **{'all_ap_50%': float(np.nanmean(aps[d_inf, :, o50])),
                      'all_ap_25%': float(np.nanmean(aps[d_inf, :, o25]))})
        avg['classes'] = {}
        for li, name in enumerate(class_names):
            avg['classes'][name] = {
                'ap': float(np.average(aps[d_inf, li, o_all_but25])),
                'ap50%': float(np.average(aps[d_inf, li, o50])),
                'ap25%': float(np.average(aps[d_inf, li, o25])),
            }
        name_to_idx = {n: i for i, n in enumerate(class_names)}
        for sname, snames in (subsets or {}).items():
            ids = np.array([name_to_idx[n] for n in snames if n in name_to_idx], dtype=np.int64)
            avg[f'{sname}_ap'] = float(np.nanmean(aps[d_inf, :, o_all_but25][..., ids]))
            avg[f'{sname}_ap_50%'] = float(np.nanmean(aps[d_inf, :, o50][..., ids]))
            avg[f'{sname}_ap_25%'] = float(np.nanmean(aps[d_inf, :, o25][..., ids]))
    return avg


def instance_eval_from_matches(scene_results: Sequence[dict],
                               class_names: Sequence[str],
                               overlaps: np.ndarray = OVERLAPS,
                               subsets: Optional[Dict[str, Sequence[str]]] = None) -> dict:
    """Pool per-scene matches and compute the benchmark averages (see :func:`compute_averages`)."""
    acc = accumulate_scene_matches(scene_results)
    return compute_averages(compute_ap(acc), class_names, overlaps, subsets)


def format_instance_table(avg: dict, class_names: Sequence[str]) -> str:
    """Per-class and summary AP table (values in %)."""
    def f(v: float) -> str:
        return f'{100 * v:>8.1f}' if np.isfinite(v) else f'{"nan":>8}'

    width = max([len(n) for n in class_names] + [8])
    lines = [f'{"class":<{width}} {"AP":>8} {"AP50":>8} {"AP25":>8}']
    for name in class_names:
        v = avg['classes'][name]
        lines.append(f'{name:<{width}} {f(v["ap"])} {f(v["ap50%"])} {f(v["ap25%"])}')
    lines.append('-' * len(lines[0]))
    for key in [k[:-3] for k in avg if k.endswith('_ap') and k != 'all_ap']:
        lines.append(f'{key:<{width}} {f(avg[key + "_ap"])} {f(avg[key + "_ap_50%"])} '
                     f'{f(avg[key + "_ap_25%"])}')
    lines.append(f'{"average":<{width}} {f(avg["all_ap"])} {f(avg["all_ap_50%"])} '
                 f'{f(avg["all_ap_25%"])}')
    return '\n'.join(lines)
