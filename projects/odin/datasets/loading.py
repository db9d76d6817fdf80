"""Loading transforms: multi-view RGB-D frames (with frame sampling) and superpoints."""
from __future__ import annotations

import os
from typing import List, Optional

import numpy as np
from mmcv.transforms import BaseTransform
from mmdet3d.registry import TRANSFORMS


def read_rgb(path: str) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB; raises naming the file if unreadable."""
    import cv2
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{path}: image file not found')
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f'{path}: cannot decode image')
    return np.ascontiguousarray(img[..., ::-1])


def read_depth(path: str, scale: float) -> np.ndarray:
    """Read a 16-bit depth PNG as (H, W) float32 metres (value / ``scale``; 0 = invalid)."""
    import cv2
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{path}: depth file not found')
    dep = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if dep is None:
        raise ValueError(f'{path}: cannot decode depth image')
    if dep.ndim != 2:
        raise ValueError(f'{path}: depth must be single-channel, got shape {dep.shape}')
    return dep.astype(np.float32) / float(scale)


def sample_frame_indices(num_frames: int,
                         num_views: int,
                         mode: str,
                         max_stride: int = 4,
                         rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """Choose which frames of a scene form one sample.

    Args:
        num_frames (int): Frames available in the scene (> 0).
        num_views (int): Frames wanted. For 'chunk': the chunk length; for 'uniform': the cap
            (<= 0 means all frames).
        mode (str): 'chunk' (train: random start, random stride in [1, max_stride], indices
            wrap around the scene, as the official consecutive sampling), 'uniform' (test:
            stride ``num_frames // num_views`` from frame 0, at most ``num_views`` frames) or
            'all'.
        max_stride (int): Largest chunk stride. Defaults to 4.
        rng (np.random.Generator, optional): Random source (default: numpy's global RNG,
            which mmengine seeds per worker).

    Returns:
        np.ndarray: (V,) int64 frame indices in sampling order.
    """
    if num_frames <= 0:
        raise ValueError('scene has no frames')
    if mode == 'all' or (mode == 'uniform' and (num_views <= 0 or num_frames <= num_views)):
        return np.arange(num_frames)
    if mode == 'uniform':
        stride = num_frames // num_views
        return np.arange(0, num_frames, stride)[:num_views]
    if mode == 'chunk':
        if rng is None:
            start = np.random.randint(num_frames)
            stride = np.random.randint(1, max_stride + 1)
        else:
            start = int(rng.integers(num_frames))
            stride = int(rng.integers(1, max_stride + 1))
        return (start + stride * np.arange(num_views)) % num_frames
    raise ValueError(f'unknown frame sampling mode {mode!r}')


#: the pose key of info files written before the pose had one name (read, never written)
LEGACY_POSE_KEY = 'cam2global'


def frame_pose(frame: dict) -> np.ndarray:
    """The camera-to-world pose (4, 4) of an info file's frame.

    ``frame['cam2world']``; info files of earlier versions of this project call it
    ``cam2global`` and are read as they are (no re-conversion needed).

    Raises:
        KeyError: the frame has neither key.
    """
    if 'cam2world' in frame:
        return frame['cam2world']
    if LEGACY_POSE_KEY in frame:
        return frame[LEGACY_POSE_KEY]
    raise KeyError(f'frame {frame.get("img_path", "?")}: no camera pose (cam2world) in the info')


@TRANSFORMS.register_module()
class LoadODINFrames(BaseTransform):
    """Sample the frames of a scene and load colour, depth, intrinsics and poses.

    Required keys: ``images`` (dict frame id -> ``img_path``, ``depth_map``, optional
    ``depth_inpainted_map``, ``cam2img`` (4x4), ``cam2world`` (4x4 camera-to-world), optional
    ``instance_map`` / ``semantic_map`` paths (AI2THOR)), optional ``depth_scale``.

    Added keys: ``img`` (list of V (H, W, 3) uint8 RGB), ``depths`` (list of V (H, W) float32
    metres, 0 = invalid), ``cam2img`` (list of V (4, 4) float32), ``cam2world`` (list of V (4, 4)
    float32), ``img_path``, ``depth_path``, ``frame_ids`` (lists of V), ``num_views``,
    ``img_shape``, ``ori_shape``, optional ``inst_maps`` / ``sem_maps`` (lists of (H, W) int64).
    Modified keys: ``images`` (only the sampled frames).

    Args:
        num_views (int): Frames per sample ('chunk') or cap ('uniform', <= 0 = all).
            Defaults to 25.
        sampling (str): 'chunk', 'uniform' or 'all'. Defaults to 'chunk'.
        max_stride (int): Largest chunk stride (official: 4). Defaults to 4.
        use_inpainted_depth (bool): Read ``depth_inpainted_map`` (the official setting for
            ScanNet, ScanNet200, S3DIS and Matterport3D);
            raises if a frame has none. Defaults to False.
        depth_scale (float, optional): Divisor from stored values to metres; defaults to the
            info's ``depth_scale`` or 1000.
        ignore_depth_max (float, optional): Depth beyond this (m) is set to 0 (AI2THOR: 15).
        with_label_maps (bool): Also load per-frame ``instance_map`` (uint16 PNG, instance id
            + 1, 0 = none -> ``inst_maps`` with -1 = none) and ``semantic_map`` (raw class id,
            0 = unannotated) PNGs (AI2THOR). Defaults to False.
    """

    def __init__(self,
                 num_views: int = 25,
                 sampling: str = 'chunk',
                 max_stride: int = 4,
                 use_inpainted_depth: bool = False,
                 depth_scale: Optional[float] = None,
                 ignore_depth_max: Optional[float] = None,
                 with_label_maps: bool = False) -> None:
        if sampling not in ('chunk', 'uniform', 'all'):
            raise ValueError(f'unknown sampling {sampling!r}')
        if sampling == 'chunk' and num_views < 1:
            raise ValueError('chunk sampling needs num_views >= 1')
        self.num_views = num_views
        self.sampling = sampling
        self.max_stride = max_stride
        self.use_inpainted_depth = use_inpainted_depth
        self.depth_scale = depth_scale
        self.ignore_depth_max = ignore_depth_max
        self.with_label_maps = with_label_maps

    def transform(self, results: dict) -> dict:
        """Sample and load the frames (see the class docstring)."""
        frames = results.get('images')
        scene = results.get('scene_id', results.get('sample_idx', '?'))
        if not frames:
            raise ValueError(f'scene {scene}: no frames in the info')
        keys = sorted(frames)
        idx = sample_frame_indices(len(keys), self.num_views, self.sampling, self.max_stride)
        scale = self.depth_scale or results.get('depth_scale', 1000.0)
        out = dict(img=[], depths=[], cam2img=[], cam2world=[], img_path=[], depth_path=[],
                   frame_ids=[])
        inst_maps: List[np.ndarray] = []
        sem_maps: List[np.ndarray] = []
        for i in idx:
            fr = frames[keys[i]]
            dkey = 'depth_inpainted_map' if self.use_inpainted_depth else 'depth_map'
            if dkey not in fr:
                raise KeyError(f'scene {scene} frame {keys[i]}: no {dkey!r} in the info '
                               '(convert with --inpaint-depth or set use_inpainted_depth=False)')
            img = read_rgb(fr['img_path'])
            dep = read_depth(fr[dkey], scale)
            if img.shape[:2] != dep.shape:
                raise ValueError(f'{fr["img_path"]} is {img.shape[1]}x{img.shape[0]} but '
                                 f'{fr[dkey]} is {dep.shape[1]}x{dep.shape[0]}')
            if self.ignore_depth_max is not None:
                dep[dep > self.ignore_depth_max] = 0
            out['img'].append(img)
            out['depths'].append(dep)
            out['cam2img'].append(np.asarray(fr['cam2img'], np.float32).reshape(4, 4))
            out['cam2world'].append(np.asarray(frame_pose(fr), np.float32).reshape(4, 4))
            out['img_path'].append(fr['img_path'])
            out['depth_path'].append(fr[dkey])
            out['frame_ids'].append(keys[i])
            if self.with_label_maps:
                import cv2
                for key, store in (('instance_map', inst_maps), ('semantic_map', sem_maps)):
                    m = cv2.imread(fr[key], cv2.IMREAD_UNCHANGED)
                    if m is None or m.shape[:2] != dep.shape:
                        raise ValueError(f'{fr[key]}: missing, unreadable or not '
                                         f'{dep.shape[1]}x{dep.shape[0]}')
                    m = m.astype(np.int64)
                    # instance PNGs store id + 1 (0 = no instance)
                    store.append(m - 1 if key == 'instance_map' else m)
        results.update(out)
        if self.with_label_maps:
            results['inst_maps'], results['sem_maps'] = inst_maps, sem_maps
        results['images'] = {k: frames[k] for k in out['frame_ids']}
        results['num_views'] = len(idx)
        results['img_shape'] = out['img'][0].shape[:2]
        results['ori_shape'] = out['img'][0].shape[:2]
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(num_views={self.num_views}, '
                f'sampling={self.sampling!r}, max_stride={self.max_stride}, '
                f'use_inpainted_depth={self.use_inpainted_depth})')


@TRANSFORMS.register_module()
class LoadODINSuperpoints(BaseTransform):
    """Load the superpoint id of every point (``super_pts_path``, int64 ``.bin``).

    Required keys: ``points``; optional ``super_pts_path``.
    Added keys: ``superpoints`` (N,) int64; one segment per point when the scene has none
    (S3DIS) or when ``use_superpoints=False``.

    Args:
        use_superpoints (bool): Load the file; False gives one segment per point.
            Defaults to True.
    """

    def __init__(self, use_superpoints: bool = True) -> None:
        self.use_superpoints = use_superpoints

    def transform(self, results: dict) -> dict:
        """Add ``superpoints``."""
        n = len(results['points'])
        path = results.get('super_pts_path')
        if self.use_superpoints and path:
            sp = np.fromfile(path, dtype=np.int64)
            if len(sp) != n:
                raise ValueError(f'{path}: {len(sp)} superpoint ids for {n} points')
        else:
            sp = np.arange(n, dtype=np.int64)
        results['superpoints'] = sp
        return results


@TRANSFORMS.register_module()
class LoadRecordingFrames(BaseTransform):
    """Read every frame of a posed RGB-D recording (the demo's ``LoadODINFrames``).

    The inference API (:func:`projects.odin.apis.inference.prepare_recording`) puts this step
    in place of a test pipeline's loading steps, as ``mmdet3d.apis.inference_detector`` puts
    ``LoadPointsFromDict`` in place of ``LoadPointsFromFile``.

    With ``resize`` (the arguments of an ``ODINResize``) every frame is resized as soon as it is
    read, exactly as that ``ODINResize`` step would resize it afterwards, so that only one frame
    is ever held at the recording's resolution (a 640x480 frame is 2.1 MB, 0.5 MB at 240x320).

    Required keys: ``recording`` (a validated
    :class:`projects.odin.datasets.recordings.RGBDSequence`: ``load_frame(i)``, ``intrinsics``,
    ``poses``, ``color_paths``, ``depth_paths``, ``frame_ids``, ``scene_name``).
    Added keys: as :class:`LoadODINFrames` (``img``, ``depths``, ``cam2img``, ``cam2world``,
    ``img_path``, ``depth_path``, ``frame_ids``, ``num_views``, ``img_shape``, ``ori_shape``),
    plus ``scene_id`` and ``sample_idx`` (0); with ``resize`` also ``scale_factor`` and
    ``pad_shape`` (as ``ODINResize``); ``view_caches`` when the recording has them (see
    ``RGBDSequence.view_caches``).

    Args:
        max_depth (float, optional): Depth beyond this (metres) is set to 0 (invalid).
            Defaults to None.
        progress (bool): Show a progress bar while reading. Defaults to False.
        resize (dict, optional): ``ODINResize`` arguments applied per frame while reading.
            Defaults to None (frames keep their size).
    """

    def __init__(self, max_depth: Optional[float] = None, progress: bool = False,
                 resize: Optional[dict] = None) -> None:
        self.max_depth = max_depth
        self.progress = progress
        self.resize = None if resize is None else dict(resize)

    def transform(self, results: dict) -> dict:
        """Read the frames (errors of the recording's reader propagate)."""
        seq = results['recording']
        frames = range(len(seq))
        if self.progress:
            from tqdm import tqdm
            frames = tqdm(frames, desc='reading frames', unit='frame')
        resize = None
        if self.resize is not None:
            from .transforms import ODINResize
            resize = ODINResize(**{k: v for k, v in self.resize.items() if k != 'type'})
        imgs, depths, intrinsics, scales, ori_shape = [], [], [], [], None
        for i in frames:
            rgb, depth = seq.load_frame(i)
            if self.max_depth is not None:
                depth = np.where(depth > self.max_depth, 0, depth)
            k = np.asarray(seq.intrinsics[i]).copy()
            ori_shape = ori_shape or rgb.shape[:2]
            if resize is not None:
                one = resize(dict(img=[rgb], depths=[depth], cam2img=[k]))
                rgb, depth, k = one['img'][0], one['depths'][0], one['cam2img'][0]
                scales.append(one['scale_factor'][0])
            imgs.append(rgb)
            depths.append(depth)
            intrinsics.append(k)
        results.update(
            img=imgs, depths=depths, cam2img=intrinsics,
            cam2world=[np.asarray(p) for p in seq.poses], img_path=list(seq.color_paths),
            depth_path=list(seq.depth_paths), frame_ids=list(seq.frame_ids),
            num_views=len(imgs), scene_id=seq.scene_name, sample_idx=0,
            img_shape=imgs[0].shape[:2], ori_shape=ori_shape)
        if resize is not None:
            results.update(scale_factor=scales, pad_shape=imgs[0].shape[:2])
        if getattr(seq, 'view_caches', None) is not None:
            results['view_caches'] = list(seq.view_caches)
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(max_depth={self.max_depth}, '
                f'progress={self.progress}, resize={self.resize})')
