# Copyright (c) OpenMMLab. All rights reserved.
"""Reading and writing the ScanNet benchmark file formats, and evaluating a folder of them.

Formats (ScanNet ``BenchmarkScripts``):

* GT (instance): ``<scene>.txt``, one integer per mesh vertex, ``label_id * 1000 + instance_id``
  (0 = unannotated).
* Instance prediction: ``<scene>.txt`` with one line per instance,
  ``<relative path to mask file> <label_id> <confidence>``; each mask file (in a sub-folder, by
  convention ``pred_mask/``) has one integer per vertex, non-zero = inside.
* Semantic prediction: ``<scene>.txt``, one label id per vertex.
"""
import os
import os.path as osp
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .instance_eval import MIN_REGION_SIZE, OVERLAPS, instance_eval_from_matches, match_scene

EXCLUDED_TXT = ('semantic_instance_evaluation.txt', 'semantic_label_evaluation.txt')


class ScanNetFormatError(ValueError):
    """A benchmark-format file is malformed or inconsistent (the message names the file)."""


def load_ids(path: str) -> np.ndarray:
    """Read one integer per line.

    Args:
        path (str): Text file.

    Returns:
        np.ndarray: (N,) int64.
    """
    if not osp.isfile(path):
        raise ScanNetFormatError(f'{path}: file not found')
    with open(path, 'rb') as f:
        data = f.read()
    # fast path: a 0/1 mask written one digit per line
    n = len(data) // 2
    if len(data) % 2 == 0 and n > 0:
        buf = np.frombuffer(data, dtype=np.uint8)
        if (buf[1::2] == 10).all() and ((buf[0::2] == 48) | (buf[0::2] == 49)).all():
            return (buf[0::2] - 48).astype(np.int64)
    tokens = data.split()
    try:
        ids = np.array([int(t) for t in tokens], dtype=np.int64)
    except ValueError as e:
        raise ScanNetFormatError(f'{path}: expected one integer per line ({e})') from None
    if len(tokens) != len(data.splitlines()) and len(data.strip()) > 0:
        lines = [ln for ln in data.splitlines() if len(ln.split()) != 1]
        raise ScanNetFormatError(f'{path}: expected one integer per line, got {lines[0]!r}')
    return ids


def write_ids(path: str, ids: np.ndarray) -> None:
    """Write one integer per line (0/1 masks take a fast path)."""
    ids = np.asarray(ids).reshape(-1)
    if ids.dtype == np.bool_ or (ids.size and ids.min() >= 0 and ids.max() <= 1):
        buf = np.empty(2 * ids.size, dtype=np.uint8)
        buf[0::2] = ids.astype(np.uint8) + 48
        buf[1::2] = 10
        with open(path, 'wb') as f:
            f.write(buf.tobytes())
        return
    with open(path, 'w') as f:
        f.write(''.join(f'{int(v)}\n' for v in ids.tolist()))


def read_instance_prediction_file(path: str, pred_dir: str) -> List[Tuple[str, int, float]]:
    """Parse a per-scene instance listing.

    Args:
        path (str): ``<pred_dir>/<scene>.txt``.
        pred_dir (str): Root that every mask file must live in.

    Returns:
        list[tuple[str, int, float]]: (absolute mask path, label id, confidence) in file order. A
        mask path listed twice keeps its first position and its last label and confidence (as the
        benchmark's dict does).
    """
    abs_root = osp.abspath(pred_dir)
    entries: Dict[str, Tuple[int, float]] = {}
    with open(path) as f:
        lines = f.read().splitlines()
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.split()
        where = f'{path}:{lineno}'
        if len(parts) != 3:
            raise ScanNetFormatError(f'{where}: expected "<relative mask path> <label id> '
                                     f'<confidence>", got {line!r}')
        if osp.isabs(parts[0]):
            raise ScanNetFormatError(f'{where}: mask path {parts[0]!r} must be relative')
        mask_file = osp.abspath(osp.join(osp.dirname(path), parts[0]))
        if osp.commonpath([mask_file, abs_root]) != abs_root:
            raise ScanNetFormatError(f'{where}: mask {mask_file} points outside {abs_root}')
        try:
            label_f = float(parts[1])
            conf = float(parts[2])
        except ValueError:
            raise ScanNetFormatError(f'{where}: label id and confidence must be numbers, got '
                                     f'{parts[1]!r} {parts[2]!r}') from None
        if label_f != int(label_f):
            raise ScanNetFormatError(f'{where}: label id {parts[1]!r} is not an integer')
        if not np.isfinite(conf):
            raise ScanNetFormatError(f'{where}: confidence {parts[2]!r} is not finite')
        if not osp.isfile(mask_file):
            raise ScanNetFormatError(f'{where}: mask file {mask_file} not found')
        entries[mask_file] = (int(label_f), conf)
    return [(k, v[0], v[1]) for k, v in entries.items()]


def write_instance_submission(out_dir: str, scene: str, masks: np.ndarray,
                              label_ids: Sequence[int], scores: Sequence[float],
                              mask_subdir: str = 'pred_mask') -> str:
    """Write ``<out_dir>/<scene>.txt`` and its mask files ``<out_dir>/pred_mask/<scene>_<k>.txt``.

    Args:
        out_dir (str): Output folder (created).
        scene (str): Scene name, e.g. ``scene0011_00``.
        masks (np.ndarray): (K, N) bool masks over the mesh vertices.
        label_ids (Sequence[int]): (K,) benchmark label ids.
        scores (Sequence[float]): (K,) confidences, written with full precision (``repr``) so
            that re-reading gives exactly the same ranking.
        mask_subdir (str): Mask folder relative to ``out_dir``. Defaults to ``'pred_mask'``.

    Returns:
        str: Path of the listing file.
    """
    os.makedirs(osp.join(out_dir, mask_subdir), exist_ok=True)
    masks = np.asarray(masks)
    lines = []
    for k in range(masks.shape[0]):
        rel = f'{mask_subdir}/{scene}_{k:03d}.txt'
        write_ids(osp.join(out_dir, rel), masks[k] != 0)
        lines.append(f'{rel} {int(label_ids[k])} {float(scores[k])!r}\n')
    listing = osp.join(out_dir, f'{scene}.txt')
    with open(listing, 'w') as f:
        f.write(''.join(lines))
    return listing


def write_semantic_submission(out_dir: str, scene: str, label_ids: np.ndarray) -> str:
    """Write ``<out_dir>/<scene>.txt`` with one benchmark label id per vertex."""
    os.makedirs(out_dir, exist_ok=True)
    path = osp.join(out_dir, f'{scene}.txt')
    write_ids(path, np.asarray(label_ids, dtype=np.int64))
    return path


def list_scene_files(folder: str) -> List[str]:
    """Sorted ``*.txt`` scene files directly inside ``folder`` (result files excluded)."""
    if not osp.isdir(folder):
        raise ScanNetFormatError(f'{folder}: not a directory')
    return sorted(f for f in os.listdir(folder) if f.endswith('.txt') and f not in EXCLUDED_TXT
                  and osp.isfile(osp.join(folder, f)))


def evaluate_instance_folder(gt_dir: str,
                             pred_dir: str,
                             class_info: dict,
                             strict: bool = False,
                             log: Optional[Callable[[str], None]] = None) -> dict:
    """Evaluate a folder of instance predictions against a folder of GT files.

    Scenes are those with a prediction listing in ``pred_dir`` (as the benchmark script does); each
    must have a GT file of the same name.

    A prediction whose label id is not an instance class is skipped before its mask is read, as in
    the official ``evaluate_semantic_instance.py`` (it is neither a true nor a false positive).
    This covers labels of the dataset that are not instance classes (wall, floor) and raw ids
    outside the dataset's label set (e.g. 12 for ScanNet200); the latter are counted and reported
    in one log line, or refused with ``strict=True``.

    Args:
        gt_dir (str): Folder of ``<scene>.txt`` GT files.
        pred_dir (str): Folder of ``<scene>.txt`` listings (submission format).
        class_info (dict): A record of :data:`projects.odin.class_names.DATASET_CLASS_INFO`.
        strict (bool): Raise :class:`ScanNetFormatError` on the first label id that is not a
            label id of the dataset at all, instead of skipping it. Defaults to False.
        log (Callable, optional): Receives warnings.

    Returns:
        dict: :func:`compute_averages` output plus ``num_scenes`` and ``num_unknown_label_skipped``
        (predictions skipped because their label id is not a label id of the dataset).
    """
    log = log or (lambda msg: None)
    scenes = list_scene_files(pred_dir)
    if not scenes:
        raise ScanNetFormatError(f'{pred_dir}: no prediction files (<scene>.txt) found')
    missing = [s for s in scenes if not osp.isfile(osp.join(gt_dir, s))]
    if missing:
        raise ScanNetFormatError(f'prediction file {osp.join(pred_dir, missing[0])} has no GT file '
                                 f'{osp.join(gt_dir, missing[0])} ({len(missing)} such scenes)')
    gt_only = sorted(set(list_scene_files(gt_dir)) - set(scenes))
    if gt_only:
        log(f'warning: {len(gt_only)} GT scenes have no prediction file and are not evaluated '
            f'(as in the benchmark script), e.g. {gt_only[0]}')
    known = set(int(i) for i in class_info['known_label_ids'])
    valid = class_info['instance_class_ids']
    mult = int(class_info['id_multiplier'])
    results = []
    seen_masks: Dict[str, str] = {}
    unknown: Dict[int, int] = {}  # label id -> number of skipped predictions
    first_unknown = ''
    for scene_file in scenes:
        listing = osp.join(pred_dir, scene_file)
        gt_file = osp.join(gt_dir, scene_file)
        gt_ids = load_ids(gt_file)
        entries = read_instance_prediction_file(listing, pred_dir)
        masks, labels, confs = [], [], []
        for mask_file, label_id, conf in entries:
            if label_id not in known:
                msg = (f'{listing}: label id {label_id} (mask {mask_file}) is not a label id of '
                       f'this dataset')
                if strict:
                    raise ScanNetFormatError(msg + ' (--strict; without it such predictions are '
                                             'skipped, as by the official script)')
                unknown[label_id] = unknown.get(label_id, 0) + 1
                first_unknown = first_unknown or msg
                continue
            if mask_file in seen_masks:
                raise ScanNetFormatError(f'{listing}: mask {mask_file} is also listed by '
                                         f'{seen_masks[mask_file]}')
            seen_masks[mask_file] = listing
            if label_id not in valid:
                continue  # not an instance class: skipped by the benchmark before reading
            mask = load_ids(mask_file)
            if mask.size != gt_ids.size:
                raise ScanNetFormatError(
                    f'{mask_file} (listed in {listing}) has {mask.size} lines but the GT '
                    f'{gt_file} has {gt_ids.size} vertices')
            masks.append(mask != 0)
            labels.append(label_id)
            confs.append(conf)
        pred_masks = np.stack(masks) if masks else np.zeros((0, gt_ids.size), dtype=bool)
        results.append(match_scene(gt_ids, pred_masks, labels, confs, valid, id_multiplier=mult,
                                   overlaps=OVERLAPS, min_region_size=MIN_REGION_SIZE,
                                   scene_name=listing))
    num_unknown = sum(unknown.values())
    if num_unknown:
        ids = ', '.join(f'{k} (x{v})' for k, v in sorted(unknown.items()))
        log(f'warning: skipped {num_unknown} predictions whose label id is not a label id of '
            f'this dataset, as the official script does: ids {ids}; first: {first_unknown} '
            f'(--strict refuses them)')
    avg = instance_eval_from_matches(results, class_info['instance_classes'], OVERLAPS,
                                     class_info.get('subsets'))
    avg['num_scenes'] = len(scenes)
    avg['num_unknown_label_skipped'] = num_unknown
    return avg
