"""Streaming ODIN: a live 3D instance map from posed RGB-D frames, in bounded memory.

:class:`StreamingODIN` takes frames one by one (:meth:`StreamingODIN.push`) and, every
``update_every`` frames, runs the offline model on a bounded set of views (the ``window`` most
recent frames plus up to ``keyframes`` older frames kept for coverage) and merges the instances
it finds into a global voxel map (:class:`VoxelInstanceMap`). Everything it keeps is bounded by
the window, the keyframes and the scanned surface; frames that leave both are dropped. The
method, its parameters and measured figures are in docs/streaming.md.

Only public entry points of the offline inference are used: the frames of a window go through
:func:`projects.odin.apis.inference.prepare_recording` (the config's test pipeline, sensor points)
and :func:`projects.odin.apis.inference.inference_recording` (the model's ``test_step``:
data preprocessor, then ``mode='predict'``, on the bounded path of ``model.test_cfg.view_chunk``).
The query embedding of each predicted instance, used for matching, is read by forward hooks on
the head's decoder output (:class:`QueryCapture`), from outside the model.
"""
import logging
import resource
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Callable, Deque, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)


class StreamError(ValueError):
    """A frame or a streaming configuration that cannot be used; the message says why."""


# ------------------------------------------------------------------------------------------------
# frames


@dataclass
class Frame:
    """One posed RGB-D frame of a stream.

    Attributes:
        color: (H, W, 3) uint8 RGB, registered to the depth image (same size).
        depth: (H, W) float depth in metres; 0 (or NaN, negative) = no measurement.
        intrinsics: (3, 3) or (4, 4) intrinsics of the depth image.
        cam2world: (4, 4) camera-to-world pose, OpenCV camera axes (x right, y down, z forward).
            A non-finite pose (lost tracking) makes :meth:`StreamingODIN.push` skip the frame.
        frame_id: a name for logs and outputs. Defaults to None (the frame's index).
    """

    color: np.ndarray
    depth: np.ndarray
    intrinsics: np.ndarray
    cam2world: np.ndarray
    frame_id: Optional[str] = None


FrameLike = Union[Frame, dict, Sequence]


def as_frame(obj: FrameLike) -> Frame:
    """Turn what a generator yields into a :class:`Frame`.

    Accepted: a :class:`Frame`; a dict with ``color`` (or ``rgb``), ``depth``, ``intrinsics`` and
    ``cam2world`` (or ``pose``), optionally ``frame_id``; a tuple
    ``(color, depth, intrinsics, cam2world[, frame_id])``.

    Raises:
        StreamError: anything else, naming what is missing.
    """
    if isinstance(obj, Frame):
        return obj
    if isinstance(obj, dict):
        color = obj.get('color', obj.get('rgb'))
        pose = obj.get('cam2world', obj.get('pose'))
        missing = [name for name, value in (('color', color), ('depth', obj.get('depth')),
                                            ('intrinsics', obj.get('intrinsics')),
                                            ('cam2world', pose)) if value is None]
        if missing:
            raise StreamError(f'a frame dict needs {", ".join(missing)}; got keys {sorted(obj)}')
        return Frame(color, obj['depth'], obj['intrinsics'], pose, obj.get('frame_id'))
    if isinstance(obj, (tuple, list)) and len(obj) in (4, 5):
        return Frame(*obj)
    raise StreamError(f'cannot use {type(obj).__name__} as a frame: give a Frame, a dict with '
                      'color, depth, intrinsics, cam2world, or a tuple (color, depth, '
                      'intrinsics, cam2world[, frame_id])')


def check_frame(frame: Frame, name: str) -> Optional[Tuple[np.ndarray, np.ndarray, np.ndarray,
                                                             np.ndarray]]:
    """Validate a frame and return its arrays in the types the pipeline reads.

    Args:
        frame: the frame.
        name: how errors name it (e.g. ``'frame 12'``).

    Returns:
        ``(rgb (H, W, 3) uint8, depth (H, W) float32 metres, intrinsics (4, 4) float64,
        cam2world (4, 4) float64)``, or None when the pose is not finite (lost tracking).

    Raises:
        StreamError: wrong shapes or types, colour and depth of different sizes, intrinsics
            that are not a camera matrix, a pose that is not a rigid transform.
    """
    rgb, depth = np.asarray(frame.color), np.asarray(frame.depth)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise StreamError(f'{name}: colour must be (H, W, 3) uint8 RGB, got {rgb.shape} '
                          f'{rgb.dtype}')
    if depth.ndim == 3 and depth.shape[2] == 1:
        depth = depth[:, :, 0]
    if depth.ndim != 2:
        raise StreamError(f'{name}: depth must be (H, W), got shape {depth.shape}')
    if not np.issubdtype(depth.dtype, np.floating):
        raise StreamError(f'{name}: depth must be float metres, got {depth.dtype} (divide raw '
                          'sensor depth by its units per metre, e.g. 1000 for millimetres)')
    if rgb.shape[:2] != depth.shape:
        raise StreamError(f'{name}: colour is {rgb.shape[1]}x{rgb.shape[0]} but depth is '
                          f'{depth.shape[1]}x{depth.shape[0]}; register the colour to the depth '
                          'image (same size) before streaming')
    k = np.asarray(frame.intrinsics, np.float64)
    if k.shape not in ((3, 3), (4, 4)):
        raise StreamError(f'{name}: intrinsics must be 3x3 or 4x4, got {k.shape}')
    if not (np.isfinite(k).all() and k[0, 0] > 0 and k[1, 1] > 0):
        raise StreamError(f'{name}: invalid intrinsics (fx={k[0, 0]}, fy={k[1, 1]})')
    k4 = np.eye(4)
    k4[:3, :3] = k[:3, :3]
    pose = np.asarray(frame.cam2world, np.float64)
    if pose.shape != (4, 4):
        raise StreamError(f'{name}: cam2world must be 4x4, got {pose.shape}')
    if not np.isfinite(pose).all():
        return None
    r = pose[:3, :3]
    if np.abs(pose[3] - [0, 0, 0, 1]).max() > 1e-6 or \
            np.abs(r.T @ r - np.eye(3)).max() > 1e-3 or np.linalg.det(r) < 0:
        raise StreamError(f'{name}: cam2world is not a rigid transform (rotation block and last '
                          'row [0, 0, 0, 1])')
    depth = depth.astype(np.float32, copy=True)
    depth[~np.isfinite(depth) | (depth < 0)] = 0
    return np.ascontiguousarray(rgb), depth, k4, pose


@dataclass
class _Stored:
    """A frame as the stream keeps it: resized to the model input (what the pipeline reads).

    ``cache`` is the frame's ``view_caches`` dict of the updates' pipeline (with
    ``StreamingConfig.cache_frames``): the frame's own part of the point fusion, computed by the
    first update that sees it and reused by the next ones; it goes with the frame.
    """

    index: int
    frame_id: str
    rgb: np.ndarray
    depth: np.ndarray
    intrinsics: np.ndarray
    pose: np.ndarray
    coverage: Optional[np.ndarray] = None  # coarse voxel keys it sees (computed on eviction)
    cache: dict = field(default_factory=dict)

    @property
    def cache_nbytes(self) -> int:
        """Bytes of the arrays in :attr:`cache`."""
        return _arrays_nbytes(self.cache)

    @property
    def nbytes(self) -> int:
        """Bytes of the frame itself (colour, depth, coverage; not :attr:`cache`)."""
        cov = 0 if self.coverage is None else self.coverage.nbytes
        return self.rgb.nbytes + self.depth.nbytes + cov + 256


def _arrays_nbytes(obj, seen: Optional[set] = None) -> int:
    """Bytes of the distinct numpy arrays in nested dicts, lists and tuples."""
    seen = set() if seen is None else seen
    if isinstance(obj, np.ndarray):
        if id(obj) in seen:
            return 0
        seen.add(id(obj))
        return obj.nbytes
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_arrays_nbytes(x, seen) for x in obj)
    return 0


# ------------------------------------------------------------------------------------------------
# configuration


@dataclass
class StreamingConfig:
    """Parameters of :class:`StreamingODIN` (docs/streaming.md explains each and its effect).

    Attributes:
        update_every: run the model every K pushed frames. Defaults to 10.
        window: the W most recent frames every update sees (>= ``update_every``, so that every
            frame is seen by at least one update). Defaults to 20.
        keyframes: up to M older frames kept for coverage of the map and added to every update.
            Defaults to 10.
        voxel_size: edge of the map's voxels (metres). Defaults to 0.05.
        image_size: model input (H, W); None: the config's test resize of the first frame.
        point_voxel_size: voxel size of the fused sensor points ODIN labels (as the demo).
            Defaults to 0.02.
        max_depth: depth beyond this (metres) is ignored. Defaults to None.
        view_chunk: ``model.test_cfg.view_chunk`` during the updates (the bounded path; the
            model's ``test_cfg`` is replaced by a copy for each update and put back after it,
            never modified); None keeps the model's. Defaults to 8.
        hold_res2: during the updates, keep every view chunk's res2 from the backbone pass for
            the mask features instead of recomputing it (``model.test_cfg.hold_res2_views`` =
            ``window + keyframes``): the same results, about 10 % faster updates on a CPU, and
            4.9 MB more per 240x320 view of an update. Defaults to True.
        score_thr: window instances below this score are not merged. Defaults to 0.3.
        min_points: window instances with fewer points (after overlaps are resolved, highest
            score wins) are not merged. Defaults to 50.
        min_iou: smallest voxel IoU for a window instance to match a map instance. Defaults to
            0.1.
        min_similarity: smallest query-embedding cosine for a match. Defaults to 0.0.
        require_same_class: only match instances of the same class. Defaults to False.
        iou_weight: weight of the voxel IoU in the matching affinity. Defaults to 1.0.
        similarity_weight: weight of the embedding cosine. Defaults to 0.5.
        class_weight: bonus for the same class. Defaults to 0.25.
        none_weight: weight of an observation that puts no instance on a voxel. Defaults to 0.1.
        retire_after: a map instance is retired after this many consecutive updates that saw at
            least ``retire_visible`` of its voxels without matching it (0 = never). Defaults to 3.
        retire_visible: fraction of an instance's voxels an update must observe to count as
            having seen it. Defaults to 0.5.
        merge_overlap: after matching, an unmatched map instance B is merged into the map
            instance A matched by a window instance J when at least this fraction of B's voxels
            observed by the update lie in J's voxels, and the update observed at least
            ``retire_visible`` of B (one object seen as one by a wider window; 0 = never merge).
            Defaults to 0.5.
        keyframe_voxel: voxel size of the coverage grid used to choose keyframes. Defaults to
            0.2.
        keyframe_min_new: a leaving frame becomes a keyframe only if at least this fraction of
            its coverage voxels is new to the keyframes. Defaults to 0.1.
        cache_frames: keep each held frame's own part of the updates' point fusion (its
            unprojected points and their voxels) from the first update that sees it to the next
            ones, instead of recomputing it in every update; the same results either way, more
            memory per held frame (docs/streaming.md section 6). Defaults to True.
        name: scene name of the updates' samples. Defaults to ``'stream'``.
    """

    update_every: int = 10
    window: int = 20
    keyframes: int = 10
    voxel_size: float = 0.05
    image_size: Optional[Tuple[int, int]] = None
    point_voxel_size: float = 0.02
    max_depth: Optional[float] = None
    view_chunk: Optional[int] = 8
    hold_res2: bool = True
    score_thr: float = 0.3
    min_points: int = 50
    min_iou: float = 0.1
    min_similarity: float = 0.0
    require_same_class: bool = False
    iou_weight: float = 1.0
    similarity_weight: float = 0.5
    class_weight: float = 0.25
    none_weight: float = 0.1
    retire_after: int = 3
    retire_visible: float = 0.5
    merge_overlap: float = 0.5
    keyframe_voxel: float = 0.2
    keyframe_min_new: float = 0.1
    cache_frames: bool = True
    name: str = 'stream'

    def __post_init__(self) -> None:
        checks = [
            (self.update_every >= 1, f'update_every must be >= 1, got {self.update_every}'),
            (self.window >= self.update_every,
             f'window ({self.window}) must be >= update_every ({self.update_every}); otherwise '
             'some frames would never be seen by an update'),
            (self.keyframes >= 0, f'keyframes must be >= 0, got {self.keyframes}'),
            (self.voxel_size > 0, f'voxel_size must be > 0, got {self.voxel_size}'),
            (self.point_voxel_size > 0,
             f'point_voxel_size must be > 0, got {self.point_voxel_size}'),
            (self.keyframe_voxel > 0, f'keyframe_voxel must be > 0, got {self.keyframe_voxel}'),
            (0 <= self.min_iou <= 1, f'min_iou must be in [0, 1], got {self.min_iou}'),
            (-1 <= self.min_similarity <= 1,
             f'min_similarity must be in [-1, 1], got {self.min_similarity}'),
            (0 <= self.retire_visible <= 1,
             f'retire_visible must be in [0, 1], got {self.retire_visible}'),
            (self.retire_after >= 0, f'retire_after must be >= 0, got {self.retire_after}'),
            (0 <= self.merge_overlap <= 1,
             f'merge_overlap must be in [0, 1], got {self.merge_overlap}'),
            (0 <= self.keyframe_min_new <= 1,
             f'keyframe_min_new must be in [0, 1], got {self.keyframe_min_new}'),
            (self.none_weight >= 0, f'none_weight must be >= 0, got {self.none_weight}'),
            (self.min_points >= 1, f'min_points must be >= 1, got {self.min_points}'),
            (self.view_chunk is None or self.view_chunk >= 0,
             f'view_chunk must be >= 0 or None, got {self.view_chunk}'),
        ]
        for ok, message in checks:
            if not ok:
                raise StreamError(message)


# ------------------------------------------------------------------------------------------------
# the voxel map

_BITS = 21
_OFFSET = 1 << (_BITS - 1)


def voxel_keys(xyz: np.ndarray, voxel_size: float) -> np.ndarray:
    """Pack the voxel indices ``floor(xyz / voxel_size)`` into one int64 key per point.

    Args:
        xyz: (N, 3) coordinates in metres.
        voxel_size: voxel edge in metres.

    Returns:
        (N,) int64 keys (21 bits per axis).

    Raises:
        StreamError: a coordinate beyond ±2^20 voxels (e.g. ±21 km at 2 cm).
    """
    ijk = np.floor(np.asarray(xyz, np.float64) / voxel_size).astype(np.int64)
    if len(ijk) and np.abs(ijk).max() >= _OFFSET:
        raise StreamError(f'a point lies {np.abs(xyz).max():.1f} m from the origin, beyond the '
                          f'map\'s range of {_OFFSET * voxel_size:.0f} m at voxel size '
                          f'{voxel_size} (are the poses in metres?)')
    ijk += _OFFSET
    return (ijk[:, 0] << (2 * _BITS)) | (ijk[:, 1] << _BITS) | ijk[:, 2]


def key_centers(keys: np.ndarray, voxel_size: float) -> np.ndarray:
    """(N, 3) float32 centres of the voxels of packed ``keys``."""
    mask = (1 << _BITS) - 1
    ijk = np.stack([(keys >> (2 * _BITS)) & mask, (keys >> _BITS) & mask, keys & mask], 1)
    return ((ijk - _OFFSET + 0.5) * voxel_size).astype(np.float32)


class VoxelInstanceMap:
    """A voxel hash of the scanned surface: per voxel an instance id, class, score and count.

    Voxels are kept as sorted packed keys (:func:`voxel_keys`) with parallel arrays, so the map
    costs 25 bytes per voxel (key 8, id 4, class 2, score 4, count 4, colour 3) and grows with
    the scanned surface only.

    Every update votes once on every voxel it observed: for the window instance it assigns (or
    for "no instance", with a smaller weight). A vote for the voxel's current instance adds its
    weight to the voxel's ``score``, a vote for another one subtracts it, and the voxel changes
    instance when the score falls below zero (keeping the rest as the new instance's score): a
    voxel follows the weighted majority of its observations, with hysteresis.

    Args:
        voxel_size: voxel edge in metres.
    """

    def __init__(self, voxel_size: float) -> None:
        self.voxel_size = float(voxel_size)
        self.keys = np.zeros(0, np.int64)
        self.instance = np.zeros(0, np.int32)
        self.label = np.zeros(0, np.int16)
        self.score = np.zeros(0, np.float32)
        self.count = np.zeros(0, np.int32)
        self.rgb = np.zeros((0, 3), np.uint8)

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def nbytes(self) -> int:
        """Bytes held by the map's arrays."""
        return sum(a.nbytes for a in (self.keys, self.instance, self.label, self.score,
                                      self.count, self.rgb))

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """(N,) position of each key in the map, -1 where absent."""
        pos = np.searchsorted(self.keys, keys)
        found = pos < len(self.keys)
        found[found] = self.keys[pos[found]] == keys[found]
        return np.where(found, pos, -1)

    def vote(self, keys: np.ndarray, instance: np.ndarray, weight: np.ndarray,
             label: np.ndarray, rgb: np.ndarray) -> None:
        """One observation of each voxel ``keys`` (sorted, unique).

        Args:
            keys: (U,) int64 sorted unique voxel keys.
            instance: (U,) global instance id voted for, -1 = no instance.
            weight: (U,) vote weights (> 0).
            label: (U,) class of the voted instance (-1 for none).
            rgb: (U, 3) uint8 colour observed.
        """
        pos = self.lookup(keys)
        old = pos >= 0
        p = pos[old]
        same = self.instance[p] == instance[old]
        score = self.score[p] + np.where(same, weight[old], -weight[old])
        flip = score < 0
        self.instance[p] = np.where(flip, instance[old], self.instance[p])
        self.label[p] = np.where(flip | same, label[old], self.label[p])
        self.score[p] = np.abs(score)
        self.count[p] += 1
        self.rgb[p] = rgb[old]
        new = ~old
        if new.any():
            at = np.searchsorted(self.keys, keys[new])
            self.keys = np.insert(self.keys, at, keys[new])
            self.instance = np.insert(self.instance, at, instance[new].astype(np.int32))
            self.label = np.insert(self.label, at, label[new].astype(np.int16))
            self.score = np.insert(self.score, at, weight[new].astype(np.float32))
            self.count = np.insert(self.count, at, np.ones(int(new.sum()), np.int32))
            self.rgb = np.insert(self.rgb, at, rgb[new], axis=0)

    def clear_instances(self, ids: Sequence[int]) -> None:
        """Remove instances: their voxels hold no instance (score 0) from now on."""
        hit = np.isin(self.instance, np.asarray(list(ids), np.int32))
        self.instance[hit] = -1
        self.label[hit] = -1
        self.score[hit] = 0

    def relabel(self, mapping: Dict[int, int], labels: Dict[int, int]) -> None:
        """Give the voxels of instance ``b`` the id ``mapping[b]`` (vote scores kept).

        Args:
            mapping: ``{old id: new id}``.
            labels: ``{new id: its class}`` for the relabelled voxels.
        """
        if not mapping:
            return
        old = np.array(sorted(mapping), np.int32)
        hit = np.isin(self.instance, old)
        new = np.array([mapping[int(i)] for i in self.instance[hit]], np.int32)
        self.instance[hit] = new
        self.label[hit] = [labels[int(i)] for i in new]

    def instance_sizes(self) -> Dict[int, int]:
        """``{instance id: voxels}`` of every instance holding a voxel."""
        ids, counts = np.unique(self.instance[self.instance >= 0], return_counts=True)
        return dict(zip(ids.tolist(), counts.tolist()))

    def centers(self) -> np.ndarray:
        """(V, 3) float32 voxel centres."""
        return key_centers(self.keys, self.voxel_size)


# ------------------------------------------------------------------------------------------------
# query embeddings, from outside the model


class QueryCapture:
    """Forward hooks on an ODIN head that record the last decoder output and class logits.

    ``decode_head.transformer_decoder.post_norm`` normalises the queries before the prediction
    heads, and ``decode_head.classifier`` turns them into class logits; the last call of each in
    a forward is the final prediction's. :meth:`instance_queries` recovers which query each
    predicted instance came from by the top-k rule of
    :func:`projects.odin.models.postprocess.instance_inference` (docs/specification.md §2.11).
    A model without these modules gives no embeddings (matching then uses overlap and class).

    Args:
        model: the ODIN detector.
    """

    def __init__(self, model: nn.Module) -> None:
        head = getattr(model, 'decode_head', None)
        decoder = getattr(head, 'transformer_decoder', None)
        self.norm = getattr(decoder, 'post_norm', None)
        self.classifier = getattr(head, 'classifier', None)
        self.test_cfg = dict(getattr(model, 'test_cfg', None) or {})
        self.queries: Optional[torch.Tensor] = None
        self.logits: Optional[torch.Tensor] = None
        self._handles: list = []

    @property
    def available(self) -> bool:
        """Whether the head has the hooked modules."""
        return isinstance(self.norm, nn.Module) and isinstance(self.classifier, nn.Module)

    def __enter__(self) -> 'QueryCapture':
        self.queries = self.logits = None
        if self.available:
            def keep_queries(module, args, out):
                self.queries = out.detach()

            def keep_logits(module, args, out):
                self.logits = out.detach()
            self._handles = [self.norm.register_forward_hook(keep_queries),
                             self.classifier.register_forward_hook(keep_logits)]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def instance_queries(self, labels: np.ndarray) -> Optional[np.ndarray]:
        """(K, C) float32 L2-normalised query of each predicted instance, or None.

        Args:
            labels: (K,) the prediction's ``instance_labels`` (checked against the recomputed
                top-k: any disagreement gives None rather than wrong embeddings).
        """
        if self.queries is None or self.logits is None or not isinstance(self.logits,
                                                                        torch.Tensor):
            return None
        logits, queries = self.logits[0].float().cpu(), self.queries[0].float().cpu()
        if logits.ndim != 2 or queries.ndim != 2 or len(logits) != len(queries):
            return None
        num_classes = logits.shape[1] - 1
        skip = set(self.test_cfg.get('skip_classes', ()) or ())
        keep = torch.tensor([c for c in range(num_classes) if c not in skip], dtype=torch.long)
        probs = logits.softmax(-1)[:, :-1][:, keep]
        k = min(int(self.test_cfg.get('topk', 100)), probs.numel())
        _, idx = probs.flatten().topk(k, sorted=True)
        top_labels = keep[idx % len(keep)].numpy()
        if len(top_labels) != len(labels) or not np.array_equal(top_labels, labels):
            return None
        emb = queries[torch.div(idx, len(keep), rounding_mode='floor')].numpy()
        return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


# ------------------------------------------------------------------------------------------------
# results


@dataclass
class MapInstance:
    """One instance of the global map.

    Attributes:
        id: its global id (stable across updates).
        label: class (the one with the largest summed score over its matches).
        score: mean score of its matches.
        embedding: (C,) L2-normalised running mean of its query embeddings, or None.
        first_update: update that created it.
        last_update: last update that matched it.
        first_frame: frames pushed when it was created.
        last_frame: frames pushed when it was last matched.
        matches: updates that created or matched it.
        missed: consecutive updates that saw it without matching it.
        class_scores: summed score per class over its matches.
    """

    id: int
    label: int
    score: float
    embedding: Optional[np.ndarray]
    first_update: int
    last_update: int
    first_frame: int
    last_frame: int
    matches: int = 1
    missed: int = 0
    class_scores: Dict[int, float] = field(default_factory=dict)


@dataclass
class WindowResult:
    """What the model found in one update's window (kept until the next update).

    Attributes:
        frame_ids: the frames the update ran on (keyframes first, then the window).
        points: (N, 3) float32 the window's fused sensor points.
        point_instance: (N,) index of the window instance owning each point (-1 none).
        labels: (J,) class of each window instance.
        scores: (J,) score of each window instance.
        global_ids: (J,) the map id each window instance was merged into.
        embeddings: (J, C) query embeddings, or None.
    """

    frame_ids: List[str]
    points: np.ndarray
    point_instance: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    global_ids: np.ndarray
    embeddings: Optional[np.ndarray]


@dataclass
class UpdateStats:
    """Figures of one update (the demo prints one line of them and writes them to stream.json).

    Attributes:
        update: 0-based update index.
        frames_seen: frames pushed so far.
        views: frames the model ran on (window + keyframes).
        keyframes: keyframes among them.
        latency_s: wall time of the update (prepare + model + merge).
        prepare_s: building the window's sample (test pipeline, fused points).
        model_s: the model's forward.
        merge_s: matching and voting into the map.
        window_instances: instances of the window that were merged.
        matched: of those, matched to existing map instances.
        new: of those, new map instances.
        retired: map instances retired by this update.
        merged: map instances merged into others by this update (duplicates).
        instances: map instances after the update.
        map_voxels: voxels of the map.
        map_mb: megabytes held by the map, the instance table, the frames and keyframes (with
            their caches).
        peak_rss_gb: the process's peak resident memory so far (from the OS).
        peak_cuda_gb: peak CUDA memory allocated (0 on CPU).
    """

    update: int
    frames_seen: int
    views: int
    keyframes: int
    latency_s: float
    prepare_s: float
    model_s: float
    merge_s: float
    window_instances: int
    matched: int
    new: int
    retired: int
    merged: int
    instances: int
    map_voxels: int
    map_mb: float
    peak_rss_gb: float
    peak_cuda_gb: float = 0.0

    def to_dict(self) -> dict:
        """A JSON-serialisable dict of the fields."""
        return asdict(self)

    def line(self) -> str:
        """One line for the console."""
        mem = f'peak RSS {self.peak_rss_gb:.2f} GB'
        if self.peak_cuda_gb:
            mem += f', CUDA {self.peak_cuda_gb:.2f} GB'
        return (f'update {self.update + 1}: {self.frames_seen} frames seen, {self.views} views '
                f'({self.keyframes} keyframes), {self.latency_s:.2f} s, {self.instances} '
                f'instances (+{self.new} new, {self.matched} matched, {self.retired} retired), '
                f'map {self.map_voxels} voxels, {mem}')


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far (``ru_maxrss``; kilobytes on Linux)."""
    import sys
    scale = 1 if sys.platform == 'darwin' else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1024 ** 3


class _DepthShape:
    """The two attributes :func:`projects.odin.apis.inference.demo_image_size` reads."""

    def __init__(self, hw: Tuple[int, int]) -> None:
        self.depth_hw = tuple(hw)

    def __len__(self) -> int:
        return 1


class _test_cfg_override:
    """Run with ``model.test_cfg`` replaced by a copy with ``overrides``; the original is put back.

    The model's own dict is never modified (other users of the model, e.g. an offline
    ``predict`` between two updates, see its settings unchanged), also when the run raises.

    Args:
        model: the detector.
        overrides: keys to set for the run (none: nothing is replaced).
    """

    def __init__(self, model: nn.Module, overrides: dict) -> None:
        self.model, self.overrides = model, overrides
        self._saved: tuple = ()

    def __enter__(self) -> None:
        if self.overrides:
            had = 'test_cfg' in vars(self.model)
            saved = getattr(self.model, 'test_cfg', None)
            self._saved = (had, saved)
            self.model.test_cfg = {**(saved or {}), **self.overrides}

    def __exit__(self, *exc) -> None:
        if self._saved:
            had, saved = self._saved
            if had:
                self.model.test_cfg = saved
            else:
                del self.model.test_cfg
            self._saved = ()


# ------------------------------------------------------------------------------------------------
# the streaming model


class StreamingODIN:
    """ODIN over a stream of posed RGB-D frames, merged into a live instance map.

    Args:
        model: an ODIN detector from
            :func:`projects.odin.apis.inference.init_odin_model` (``sensor_points=True``), in
            eval mode, with its config as ``model.cfg``.
        config: streaming parameters (:class:`StreamingConfig`), a dict of them, or None for
            the defaults.
        on_update: called with the :class:`UpdateStats` after every update. Defaults to None.

    Raises:
        StreamError: an invalid configuration.
    """

    def __init__(self, model: nn.Module, config: Union[StreamingConfig, dict, None] = None,
                 on_update: Optional[Callable[[UpdateStats], None]] = None) -> None:
        if isinstance(config, dict):
            config = StreamingConfig(**config)
        self.cfg = config or StreamingConfig()
        self.model = model
        self.on_update = on_update
        self.map = VoxelInstanceMap(self.cfg.voxel_size)
        self.instances: Dict[int, MapInstance] = {}
        self.window: Deque[_Stored] = deque()
        self.keyframes: List[_Stored] = []
        self.updates: List[UpdateStats] = []
        self.last_window: Optional[WindowResult] = None
        self.frames_seen = 0
        self.skipped: List[str] = []
        self.retired: List[int] = []
        self.merged: List[Tuple[int, int]] = []  # (merged id, id it went into)
        self._last_merged = 0
        self.image_size: Optional[Tuple[int, int]] = (
            None if self.cfg.image_size is None else tuple(self.cfg.image_size))
        self._pending = 0
        self._next_id = 0
        self._resize = None
        self._embeddings_warned = False

    # -------------------------------------------------------------- frames in
    def push(self, frame: FrameLike) -> Optional[UpdateStats]:
        """Add one frame; run an update when ``update_every`` frames have arrived since the last.

        Args:
            frame: a :class:`Frame` (or what :func:`as_frame` accepts).

        Returns:
            The update's figures when one ran, else None.

        Raises:
            StreamError: an unusable frame (see :func:`check_frame`) or one of another size
                than the first.
        """
        frame = as_frame(frame)
        index = self.frames_seen
        name = f'frame {frame.frame_id if frame.frame_id is not None else index}'
        checked = check_frame(frame, name)
        if checked is None:
            self.skipped.append(f'{name}: pose is not finite')
            logger.warning('stream: skipped %s: pose is not finite', name)
            return None
        rgb, depth, k, pose = checked
        if self.cfg.max_depth is not None:
            depth[depth > self.cfg.max_depth] = 0
        if self._resize is None:
            self._setup_resize(depth.shape)
        elif depth.shape != self._input_hw:
            raise StreamError(f'{name}: depth is {depth.shape[1]}x{depth.shape[0]}, the first '
                              f'frame\'s was {self._input_hw[1]}x{self._input_hw[0]}; one stream '
                              'needs one frame size')
        one = self._resize(dict(img=[rgb], depths=[depth], cam2img=[k]))
        stored = _Stored(index, str(frame.frame_id if frame.frame_id is not None else index),
                         one['img'][0], one['depths'][0], np.asarray(one['cam2img'][0]), pose)
        self.frames_seen += 1
        self.window.append(stored)
        while len(self.window) > self.cfg.window:
            self._consider_keyframe(self.window.popleft())
        self._pending += 1
        if self._pending >= self.cfg.update_every:
            return self.update()
        return None

    def flush(self) -> Optional[UpdateStats]:
        """Run an update over the frames pushed since the last one, if any (end of a stream)."""
        return self.update() if self._pending else None

    def run(self, frames: Iterable[FrameLike], max_frames: Optional[int] = None
            ) -> List[UpdateStats]:
        """Push every frame of a source (a generator, a recording, a camera), then flush.

        Args:
            frames: the frames.
            max_frames: stop after this many frames. Defaults to None (the whole source).

        Returns:
            The figures of the updates this call ran.
        """
        start = len(self.updates)
        for i, frame in enumerate(frames):
            if max_frames is not None and i >= max_frames:
                break
            self.push(frame)
        self.flush()
        return self.updates[start:]

    def _setup_resize(self, hw: Tuple[int, int]) -> None:
        from projects.odin.datasets.transforms import ODINResize

        from .inference import demo_image_size
        if self.image_size is None:
            cfg = getattr(self.model, 'cfg', None)
            self.image_size = tuple(demo_image_size(cfg, _DepthShape(hw))) if cfg is not None \
                else tuple(hw)
        self._input_hw = tuple(hw)
        self._resize = ODINResize(size=self.image_size)

    def _coverage(self, f: _Stored, stride: int = 4) -> np.ndarray:
        """Coarse voxel keys (``keyframe_voxel``) of the surface a frame sees."""
        d = f.depth[::stride, ::stride]
        v, u = np.nonzero(d > 0)
        z = d[v, u].astype(np.float64)
        k = f.intrinsics
        x = ((u * stride) - k[0, 2]) / k[0, 0] * z
        y = ((v * stride) - k[1, 2]) / k[1, 1] * z
        cam = np.stack([x, y, z], 1)
        world = cam @ f.pose[:3, :3].T + f.pose[:3, 3]
        return np.unique(voxel_keys(world, self.cfg.keyframe_voxel))

    def _consider_keyframe(self, f: _Stored) -> None:
        """Keep a frame leaving the window as a keyframe if it adds coverage (greedy)."""
        if self.cfg.keyframes == 0:
            return
        f.coverage = self._coverage(f)
        if not len(f.coverage):
            return
        held = np.unique(np.concatenate([kf.coverage for kf in self.keyframes])) \
            if self.keyframes else np.zeros(0, np.int64)
        new = int((~np.isin(f.coverage, held)).sum())
        if new < self.cfg.keyframe_min_new * len(f.coverage):
            return
        if len(self.keyframes) < self.cfg.keyframes:
            self.keyframes.append(f)
            return
        # full: replace the keyframe whose unique coverage (against the others and the
        # candidate) is smallest, if the candidate brings more unique coverage than that
        sets = [kf.coverage for kf in self.keyframes] + [f.coverage]
        allk = np.concatenate(sets)
        uniq, counts = np.unique(allk, return_counts=True)
        single = uniq[counts == 1]
        unique_of = [int(np.isin(s, single).sum()) for s in sets]
        worst = int(np.argmin(unique_of[:-1]))
        if unique_of[-1] > unique_of[worst]:
            self.keyframes[worst] = f

    # -------------------------------------------------------------- one update
    def update(self) -> UpdateStats:
        """Run the model on the keyframes + window and merge its instances into the map.

        Returns:
            The update's figures (also appended to :attr:`updates`).

        Raises:
            StreamError: no frame has been pushed.
        """
        if not self.window:
            raise StreamError('no frame to update on: push frames first')
        t0 = time.perf_counter()
        views = sorted(self.keyframes, key=lambda f: f.index) + list(self.window)
        prepared = self._prepare(views)
        t1 = time.perf_counter()
        from .inference import inference_recording
        capture = QueryCapture(self.model)
        with capture, _test_cfg_override(self.model, self._test_overrides()):
            pred = inference_recording(self.model, prepared).pred_pts_seg
        t2 = time.perf_counter()
        points = prepared.inputs['points'][:, :6].numpy()
        del prepared
        window = self._window_instances(pred, capture, points)
        window.frame_ids = [f.frame_id for f in views]
        matched, new, retired = self._merge(window, points)
        t3 = time.perf_counter()
        self.last_window = window
        self._pending = 0
        stats = UpdateStats(
            update=len(self.updates), frames_seen=self.frames_seen, views=len(views),
            keyframes=len(self.keyframes), latency_s=t3 - t0, prepare_s=t1 - t0,
            model_s=t2 - t1, merge_s=t3 - t2, window_instances=len(window.labels),
            matched=matched, new=new, retired=retired, merged=self._last_merged,
            instances=len(self.instances),
            map_voxels=len(self.map), map_mb=self.nbytes / 2 ** 20, peak_rss_gb=peak_rss_gb(),
            peak_cuda_gb=(torch.cuda.max_memory_allocated() / 1024 ** 3
                          if torch.cuda.is_available() else 0.0))
        self.updates.append(stats)
        if self.on_update is not None:
            self.on_update(stats)
        return stats

    def _test_overrides(self) -> dict:
        """The ``test_cfg`` keys an update sets on the model (restored after it)."""
        overrides = {} if self.cfg.view_chunk is None else dict(view_chunk=self.cfg.view_chunk)
        if self.cfg.hold_res2:
            overrides['hold_res2_views'] = self.cfg.window + self.cfg.keyframes
        return overrides

    def held_frames(self) -> List[int]:
        """Indices (push order) of the frames the stream holds: keyframes and window."""
        return sorted([f.index for f in self.keyframes] + [f.index for f in self.window])

    def cached_frames(self) -> List[int]:
        """Indices of the held frames whose fusion part is cached (:attr:`_Stored.cache`)."""
        return sorted(f.index for f in list(self.keyframes) + list(self.window) if f.cache)

    @property
    def nbytes(self) -> int:
        """Bytes held by the stream's own state: map, instances, held frames and their caches."""
        inst = sum(200 + (0 if i.embedding is None else i.embedding.nbytes)
                   for i in self.instances.values())
        frames = sum(f.nbytes + f.cache_nbytes for f in list(self.window) + self.keyframes)
        return self.map.nbytes + inst + frames

    def _prepare(self, views: List[_Stored]):
        """The views as one sample, through the config's test pipeline (sensor points)."""
        from projects.odin.datasets.recordings import RGBDSequence

        from .inference import prepare_recording
        h, w = views[0].depth.shape
        seq = RGBDSequence(
            folder=self.cfg.name, layout='stream', frame_ids=[f.frame_id for f in views],
            color_paths=[f'{self.cfg.name}#frame={f.index}' for f in views],
            depth_paths=[f'{self.cfg.name}#frame={f.index}' for f in views],
            poses=np.stack([f.pose for f in views]),
            intrinsics=np.stack([f.intrinsics for f in views]).astype(np.float64),
            depth_scale=1.0, depth_units='float depth, metres (stream)', depth_hw=(h, w),
            depth_dtype='float32', frame_loader=lambda f: (f.rgb, f.depth),
            frame_refs=list(views),
            view_caches=[f.cache for f in views] if self.cfg.cache_frames else None)
        return prepare_recording(seq, image_size=self.image_size,
                                 point_voxel_size=self.cfg.point_voxel_size,
                                 cfg=getattr(self.model, 'cfg', None))

    def _window_instances(self, pred, capture: QueryCapture, points: np.ndarray) -> WindowResult:
        """The window's instances that will be merged: scored, resolved per point, sized."""
        from .export import masks_to_instance_ids
        masks = _np(pred.pts_instance_mask).astype(bool)
        labels = _np(pred.instance_labels).astype(np.int64)
        scores = _np(pred.instance_scores).astype(np.float32)
        emb = capture.instance_queries(labels)
        if emb is None and not self._embeddings_warned:
            self._embeddings_warned = True
            logger.warning('stream: no query embeddings from the model\'s head; matching uses '
                           'voxel overlap and class only')
        keep = np.nonzero((scores >= self.cfg.score_thr) &
                          (masks.sum(1) >= self.cfg.min_points))[0]
        ids = masks_to_instance_ids(masks[keep], scores[keep])
        counts = np.bincount(ids[ids >= 0], minlength=len(keep))
        ok = counts >= self.cfg.min_points
        remap = np.full(len(keep), -1, np.int64)
        remap[ok] = np.arange(int(ok.sum()))
        point_instance = np.where(ids >= 0, remap[np.maximum(ids, 0)], -1) if len(keep) else \
            np.full(len(points), -1, np.int64)
        sel = keep[ok]
        return WindowResult(frame_ids=[], points=points[:, :3].astype(np.float32),
                            point_instance=point_instance, labels=labels[sel], scores=scores[sel],
                            global_ids=np.full(len(sel), -1, np.int64),
                            embeddings=None if emb is None else emb[sel])

    def _voxelise(self, window: WindowResult, points: np.ndarray
                  ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The window on map voxels: each voxel goes to the instance owning most of its points.

        Ties go to the higher-scoring instance, "no instance" counts as a candidate.

        Returns:
            tuple: sorted unique keys (U,), window instance per voxel (U,) (-1 none), mean
            colour per voxel (U, 3) uint8.
        """
        keys = voxel_keys(window.points, self.cfg.voxel_size)
        uniq, inv = np.unique(keys, return_inverse=True)
        inst = window.point_instance
        # count (voxel, instance) pairs; pick the largest count, then the highest score. One
        # int64 per pair, voxel-major (the order of np.unique over the pair columns, but 1-D)
        span = len(window.scores) + 1
        packed, pair_count = np.unique(inv.astype(np.int64) * span + (inst + 1),
                                       return_counts=True)
        pair = np.stack([packed // span, packed % span - 1])
        score = np.where(pair[1] >= 0, window.scores[np.maximum(pair[1], 0)] if
                         len(window.scores) else 0, -1.0)
        order = np.lexsort((-score, -pair_count, pair[0]))
        first = np.ones(len(order), bool)
        first[1:] = pair[0][order][1:] != pair[0][order][:-1]
        best = order[first]
        voxel_inst = np.full(len(uniq), -1, np.int64)
        voxel_inst[pair[0][best]] = pair[1][best]
        # per-channel sums in point order (as np.add.at adds them)
        colour = points[:, 3:6].astype(np.float64)
        rgb = np.stack([np.bincount(inv, colour[:, c], minlength=len(uniq)) for c in range(3)], 1)
        rgb = rgb / np.bincount(inv, minlength=len(uniq))[:, None]
        rgb = np.clip(np.round(rgb * 255), 0, 255)  # the points carry rgb / 255
        return uniq, voxel_inst, rgb.astype(np.uint8)

    def _merge(self, window: WindowResult, points: np.ndarray) -> Tuple[int, int, int]:
        """Match the window's instances to the map's, vote, retire.

        Returns:
            tuple: window instances matched, new map instances, map instances retired.
        """
        from scipy.optimize import linear_sum_assignment
        cfg = self.cfg
        keys, win, rgb = self._voxelise(window, points)
        num = len(window.labels)
        pos = self.map.lookup(keys)
        cur = np.where(pos >= 0, self.map.instance[np.maximum(pos, 0)], -1) if len(self.map) \
            else np.full(len(keys), -1, np.int64)
        sizes = self.map.instance_sizes()
        visible, seen = np.unique(cur[cur >= 0], return_counts=True)
        win_size = np.bincount(win[win >= 0], minlength=num)
        assign = np.full(num, -1, np.int64)
        if num and len(visible):
            inter = _overlap_counts(win, cur, num, visible).astype(np.float64)
            iou = inter / np.maximum(win_size[:, None] + seen[None, :] - inter, 1)
            same = window.labels[:, None] == np.array(
                [self.instances[int(v)].label for v in visible])[None, :]
            valid = iou >= max(cfg.min_iou, 1e-9)
            affinity = cfg.iou_weight * iou + cfg.class_weight * same
            embs = [self.instances[int(v)].embedding for v in visible]
            if window.embeddings is not None and all(e is not None for e in embs):
                cos = window.embeddings @ np.stack(embs).T
                valid &= cos >= cfg.min_similarity
                affinity = affinity + cfg.similarity_weight * cos
            if cfg.require_same_class:
                valid &= same
            cost = np.where(valid, -affinity, 1e6)
            rows, cols = linear_sum_assignment(cost)
            for r, c in zip(rows, cols):
                if valid[r, c]:
                    assign[r] = int(visible[c])
        matched = int((assign >= 0).sum())
        # update / create the instance records
        for j in range(num):
            emb = None if window.embeddings is None else window.embeddings[j]
            label, score = int(window.labels[j]), float(window.scores[j])
            if assign[j] >= 0:
                rec = self.instances[int(assign[j])]
                rec.class_scores[label] = rec.class_scores.get(label, 0.0) + score
                rec.label = max(rec.class_scores, key=lambda c: (rec.class_scores[c], -c))
                rec.score = (rec.score * rec.matches + score) / (rec.matches + 1)
                if emb is not None and rec.embedding is not None:
                    mean = rec.embedding * rec.matches + emb
                    rec.embedding = (mean / max(np.linalg.norm(mean), 1e-12)).astype(np.float32)
                rec.matches += 1
                rec.missed = 0
                rec.last_update, rec.last_frame = len(self.updates), self.frames_seen
            else:
                assign[j] = self._next_id
                self._next_id += 1
                self.instances[int(assign[j])] = MapInstance(
                    id=int(assign[j]), label=label, score=score,
                    embedding=None if emb is None else emb.astype(np.float32),
                    first_update=len(self.updates), last_update=len(self.updates),
                    first_frame=self.frames_seen, last_frame=self.frames_seen,
                    class_scores={label: score})
        window.global_ids = assign
        merged = self._merge_duplicates(win, cur, assign, visible, seen, sizes)
        self._last_merged = len(merged)
        # retirement: seen (most of its voxels observed) but not matched, several times in a row
        retire = []
        matched_ids = set(assign.tolist())
        for v, n in zip(visible.tolist(), seen.tolist()):
            if v in matched_ids or v in merged or n < cfg.retire_visible * sizes.get(v, 0):
                continue
            rec = self.instances[v]
            rec.missed += 1
            if cfg.retire_after and rec.missed >= cfg.retire_after:
                retire.append(v)
        # vote
        has = win >= 0
        gid = np.where(has, assign[np.maximum(win, 0)] if num else -1, -1)
        weight = np.where(has, window.scores[np.maximum(win, 0)] if num else 0,
                          cfg.none_weight).astype(np.float32)
        label = np.where(has, window.labels[np.maximum(win, 0)] if num else -1, -1)
        if cfg.none_weight == 0:  # "no instance" does not vote at all
            weight = np.where(has, weight, 0).astype(np.float32)
        self.map.vote(keys, gid, weight, label, rgb)
        if retire:
            self.map.clear_instances(retire)
        alive = self.map.instance_sizes()
        gone = [i for i in self.instances if i not in alive]
        for i in gone:
            del self.instances[i]
        self.retired.extend(retire)
        return matched, num - matched, len(retire)

    def _merge_duplicates(self, win: np.ndarray, cur: np.ndarray, assign: np.ndarray,
                          visible: np.ndarray, seen: np.ndarray, sizes: Dict[int, int]
                          ) -> Dict[int, int]:
        """Merge map instances that this update's window saw as parts of one matched instance.

        A map instance B that no window instance matched is merged into the map instance A
        that window instance J matched when ``inter(J, B) >= merge_overlap * seen(B)`` (most of
        what the update observed of B lies in J) and ``seen(B) >= retire_visible * |B|`` (the
        update observed most of B). B's voxels take A's id (their vote scores are kept), A's
        record absorbs B's (class scores, matches, embedding as a match-weighted mean, first
        seen), and B's id is gone (listed in :attr:`merged`). Each B goes to the J that holds
        most of it.

        Args:
            win: (U,) window instance of each observed voxel (-1 none).
            cur: (U,) map instance of each observed voxel before the vote (-1 none / new).
            assign: (J,) map id of each window instance (after matching and creation).
            visible: (V,) map instances the update observed, sorted.
            seen: (V,) voxels of each observed.
            sizes: voxels of every map instance (before the vote).

        Returns:
            ``{merged id B: id A it went into}``.
        """
        cfg = self.cfg
        out: Dict[int, int] = {}
        if cfg.merge_overlap <= 0 or not len(assign) or not len(visible):
            return out
        inter = _overlap_counts(win, cur, len(assign), visible)
        matched = set(assign.tolist())
        for c, (b, n) in enumerate(zip(visible.tolist(), seen.tolist())):
            if b in matched or b not in self.instances or n < cfg.retire_visible * sizes.get(b, 0):
                continue
            j = int(np.argmax(inter[:, c]))
            a = int(assign[j])
            if inter[j, c] < cfg.merge_overlap * n or a == b or a in out:
                continue
            out[b] = a
        for b, a in out.items():
            ra, rb = self.instances[a], self.instances.pop(b)
            for label, score in rb.class_scores.items():
                ra.class_scores[label] = ra.class_scores.get(label, 0.0) + score
            ra.label = max(ra.class_scores, key=lambda c: (ra.class_scores[c], -c))
            total = ra.matches + rb.matches
            ra.score = (ra.score * ra.matches + rb.score * rb.matches) / total
            if ra.embedding is not None and rb.embedding is not None:
                mean = ra.embedding * ra.matches + rb.embedding * rb.matches
                ra.embedding = (mean / max(np.linalg.norm(mean), 1e-12)).astype(np.float32)
            ra.matches = total
            ra.first_update = min(ra.first_update, rb.first_update)
            ra.first_frame = min(ra.first_frame, rb.first_frame)
            self.merged.append((b, a))
        self.map.relabel(out, {a: self.instances[a].label for a in out.values()})
        return out

    # -------------------------------------------------------------- results out
    def export(self, min_voxels: int = 1) -> Tuple[np.ndarray, np.ndarray, np.ndarray,
                                                   np.ndarray, List[MapInstance]]:
        """The map as a labelled point cloud (voxel centres).

        Args:
            min_voxels: instances with fewer voxels are left out. Defaults to 1.

        Returns:
            tuple: ``xyz`` (V, 3) float32, ``rgb`` (V, 3) uint8, ``instance`` (V,) index into the
            returned list (-1 none), ``label`` (V,) (-1 none), and the listed
            :class:`MapInstance` records (by id).
        """
        sizes = self.map.instance_sizes()
        listed = [self.instances[i] for i in sorted(self.instances)
                  if sizes.get(i, 0) >= min_voxels]
        index = {rec.id: n for n, rec in enumerate(listed)}
        lut_keys = np.array(sorted(index), np.int64)
        inst = np.full(len(self.map), -1, np.int64)
        if len(lut_keys):
            p = np.searchsorted(lut_keys, self.map.instance)
            p = np.minimum(p, len(lut_keys) - 1)
            hit = lut_keys[p] == self.map.instance
            inst[hit] = [index[int(k)] for k in lut_keys[p[hit]]]
        labels = np.array([rec.label for rec in listed], np.int64)
        point_label = np.where(inst >= 0, labels[np.maximum(inst, 0)] if len(labels) else -1, -1)
        return self.map.centers(), self.map.rgb.copy(), inst, point_label, listed

    def instance_records(self, class_names: Optional[Sequence[str]] = None,
                         min_voxels: int = 1) -> List[dict]:
        """One dict per listed map instance (id, class, score, voxels, first/last seen)."""
        sizes = self.map.instance_sizes()
        out = []
        for rec in self.export(min_voxels)[4]:
            out.append(dict(id=rec.id, label=rec.label,
                            class_name=(class_names[rec.label] if class_names and
                                        0 <= rec.label < len(class_names) else str(rec.label)),
                            score=round(rec.score, 4), voxels=sizes.get(rec.id, 0),
                            matches=rec.matches, first_frame=rec.first_frame,
                            last_frame=rec.last_frame))
        return out


def _overlap_counts(win: np.ndarray, cur: np.ndarray, num: int, visible: np.ndarray
                    ) -> np.ndarray:
    """(J, V) int64 voxels that window instance j and map instance ``visible[v]`` share.

    Args:
        win: (U,) window instance of each observed voxel (-1 none).
        cur: (U,) map instance of each observed voxel (-1 none).
        num: J, the window instances.
        visible: (V,) sorted map instances among ``cur``.
    """
    both = (win >= 0) & (cur >= 0)
    flat = win[both] * len(visible) + np.searchsorted(visible, cur[both])
    return np.bincount(flat, minlength=num * len(visible)).reshape(num, len(visible))


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


__all__ = ['Frame', 'StreamError', 'StreamingConfig', 'StreamingODIN', 'VoxelInstanceMap',
           'QueryCapture', 'MapInstance', 'WindowResult', 'UpdateStats', 'as_frame',
           'check_frame', 'voxel_keys', 'key_centers', 'peak_rss_gb']
