"""Writers for ODIN's predictions: instance-coloured PLY point clouds, view overlays, JSON."""
import json
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence

import numpy as np
from plyfile import PlyData, PlyElement


def instance_palette(num: int, seed: int = 0) -> np.ndarray:
    """Distinct, reproducible colours for ``num`` instances.

    Args:
        num: number of colours.
        seed: palette seed. Defaults to 0.

    Returns:
        (num, 3) uint8 RGB colours (golden-ratio hue steps, fixed saturation/value).
    """
    rng = np.random.default_rng(seed)
    hues = (rng.random() + np.arange(num) * 0.618033988749895) % 1.0
    s, v = 0.75, 0.95
    i = np.floor(hues * 6).astype(int) % 6
    f = hues * 6 - np.floor(hues * 6)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    table = np.stack([np.stack([np.full_like(f, v), t, np.full_like(f, p)], -1),
                      np.stack([q, np.full_like(f, v), np.full_like(f, p)], -1),
                      np.stack([np.full_like(f, p), np.full_like(f, v), t], -1),
                      np.stack([np.full_like(f, p), q, np.full_like(f, v)], -1),
                      np.stack([t, np.full_like(f, p), np.full_like(f, v)], -1),
                      np.stack([np.full_like(f, v), np.full_like(f, p), q], -1)], 1)
    rgb = table[np.arange(num), i]
    return (rgb * 255).round().astype(np.uint8).reshape(num, 3)


def masks_to_instance_ids(masks: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Flatten overlapping instance masks to one id per point (highest score wins).

    Args:
        masks: (K, N) bool instance masks.
        scores: (K,) scores.

    Returns:
        (N,) int64 index of the winning instance, -1 for points in no mask.
    """
    masks = np.asarray(masks, dtype=bool)
    ids = np.full(masks.shape[1], -1, dtype=np.int64)
    best = np.full(masks.shape[1], -np.inf)
    for k in np.argsort(-np.asarray(scores), kind='stable'):
        take = masks[k] & (best == -np.inf)
        ids[take] = k
        best[take] = scores[k]
    return ids


def flatten_instances(masks: np.ndarray, labels: np.ndarray, scores: np.ndarray,
                      min_points: int = 1):
    """Turn overlapping instance masks into a partition of the points.

    Every point goes to the highest-scoring mask containing it (:func:`masks_to_instance_ids`);
    instances that keep fewer than ``min_points`` points are dropped and the rest renumbered
    0..K'-1 in their original order.

    Args:
        masks: (K, N) bool.
        labels: (K,) class index per mask.
        scores: (K,) scores.
        min_points: smallest instance kept. Defaults to 1.

    Returns:
        tuple: ``instance_ids`` (N,) int64 (-1 = none), ``labels`` (K',), ``scores`` (K',) and
        ``counts`` (K',) points owned by each kept instance.
    """
    labels, scores = np.asarray(labels), np.asarray(scores)
    ids = masks_to_instance_ids(masks, scores)
    counts = np.bincount(ids[ids >= 0], minlength=len(scores))
    keep = counts >= max(1, min_points)
    remap = np.full(len(scores), -1, np.int64)
    remap[keep] = np.arange(int(keep.sum()))
    if len(scores):
        ids = np.where(ids >= 0, remap[np.maximum(ids, 0)], -1)
    return ids, labels[keep], scores[keep], counts[keep]


def write_instance_ply(path: str, xyz: np.ndarray, instance_ids: np.ndarray,
                       rgb: Optional[np.ndarray] = None,
                       labels: Optional[np.ndarray] = None) -> None:
    """Write a binary PLY whose vertex colours show the instances.

    Points without an instance keep their own colour darkened (or grey without colours).

    Args:
        path: output ``.ply`` path (written atomically).
        xyz: (N, 3) float coordinates.
        instance_ids: (N,) int instance index per point, -1 = none.
        rgb: (N, 3) uint8 original colours. Defaults to None.
        labels: (N,) int class label per point, stored as a ``label`` property. Defaults to None.
    """
    xyz = np.asarray(xyz, dtype=np.float32)
    instance_ids = np.asarray(instance_ids, dtype=np.int64)
    if xyz.ndim != 2 or xyz.shape[1] != 3 or len(instance_ids) != len(xyz):
        raise ValueError(f'xyz must be (N, 3) and instance_ids (N,); got {xyz.shape} and '
                         f'{instance_ids.shape}')
    base = (np.full((len(xyz), 3), 128, np.uint8) if rgb is None else
            (np.asarray(rgb, dtype=np.float32) * 0.4).astype(np.uint8))
    colors = base.copy()
    if len(instance_ids) and instance_ids.max() >= 0:
        palette = instance_palette(int(instance_ids.max()) + 1)
        has = instance_ids >= 0
        colors[has] = palette[instance_ids[has]]
    fields = [('x', 'f4'), ('y', 'f4'), ('z', 'f4'), ('red', 'u1'), ('green', 'u1'),
              ('blue', 'u1'), ('instance', 'i4')]
    if labels is not None:
        fields.append(('label', 'i4'))
    vertex = np.empty(len(xyz), dtype=fields)
    vertex['x'], vertex['y'], vertex['z'] = xyz.T
    vertex['red'], vertex['green'], vertex['blue'] = colors.T
    vertex['instance'] = instance_ids
    if labels is not None:
        vertex['label'] = np.asarray(labels)
    _atomic_write(path, lambda f: PlyData([PlyElement.describe(vertex, 'vertex')]).write(f), 'wb')


def overlay_instances(rgb: np.ndarray, instance_map: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """Blend instance colours over an image.

    Args:
        rgb: (H, W, 3) uint8 image.
        instance_map: (H, W) int instance index per pixel, -1 = none.
        alpha: opacity of the instance colours. Defaults to 0.55.

    Returns:
        (H, W, 3) uint8 image.
    """
    out = rgb.astype(np.float32).copy()
    if instance_map.max() >= 0:
        palette = instance_palette(int(instance_map.max()) + 1).astype(np.float32)
        has = instance_map >= 0
        out[has] = (1 - alpha) * out[has] + alpha * palette[instance_map[has]]
    return out.round().astype(np.uint8)


def write_instances_json(path: str, labels: Sequence[int], scores: Sequence[float],
                         point_counts: Sequence[int], class_names: Sequence[str],
                         extra: Optional[Dict] = None) -> List[Dict]:
    """Write the instance list as JSON (sorted by descending score).

    Args:
        path: output ``.json`` path (written atomically).
        labels: (K,) 0-based class index per instance.
        scores: (K,) scores.
        point_counts: (K,) number of points of each instance.
        class_names: names indexed by class.
        extra: additional top-level fields. Defaults to None.

    Returns:
        The list of instance records that was written.
    """
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind='stable')
    records = [dict(id=int(i), label=int(labels[i]), class_name=str(class_names[int(labels[i])]),
                    score=float(scores[i]), num_points=int(point_counts[i])) for i in order]
    doc = dict(extra or {}, num_instances=len(records), instances=records)
    _atomic_write(path, lambda f: json.dump(doc, f, indent=2), 'w')
    return records


def _atomic_write(path: str, writer, mode: str) -> None:
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    tmp = f'{path}.tmp{os.getpid()}'
    with open(tmp, mode) as f:
        writer(f)
    os.replace(tmp, path)
