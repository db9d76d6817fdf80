"""Multi-view RGB-D transforms of ODIN (per-frame 2D augmentation, scene-level 3D augmentation).

Geometry conventions: intrinsics are (4, 4) with K in the top-left 3x3 for integer pixel indices
(pixel ``(u, v)`` = column, row; unprojection ``X = (u - cx) z / fx``); poses are camera-to-world
(4, 4). Resizing follows the official ODIN pipeline exactly: K is scaled by the resize factor
(``fx' = fx * s``, ``cx' = cx * s``, as ODIN's ``get_scannet_intrinsic``) and depth / label maps
are resized with ``torch.nn.functional.interpolate(mode='nearest')``'s rule (output pixel ``i``
takes input pixel ``floor(i * in / out)``, detectron2's resize of float maps). The two go together:
an output pixel unprojects exactly like the input pixel it was sampled from, so unprojected depth
stays on the scene surface. Cropping subtracts the crop offset from ``cx, cy``.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmdet3d.registry import TRANSFORMS
from mmdet3d.structures.points import BasePoints, DepthPoints

from projects.odin.structures.geometry import unproject_depth

VIEW_KEYS = ('img', 'depths', 'cam2img', 'cam2world', 'img_path', 'depth_path', 'frame_ids',
             'inst_maps', 'sem_maps', 'scale_factor', 'crop_offset')


def nearest_resize(arr: np.ndarray, hw: Tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an (H, W[, C]) array to ``hw`` (``F.interpolate`` rule).

    Output pixel ``(i, j)`` takes input pixel ``(floor(i * H / h), floor(j * W / w))``, which is
    what the official pipeline does to depth maps; it pairs with :func:`scale_intrinsics`.
    """
    h0, w0 = arr.shape[:2]
    h, w = hw
    ys = np.minimum(np.floor(np.arange(h) * (h0 / h)).astype(np.int64), h0 - 1)
    xs = np.minimum(np.floor(np.arange(w) * (w0 / w)).astype(np.int64), w0 - 1)
    return arr[ys[:, None], xs[None, :]]


def scale_intrinsics(k: np.ndarray, sx: float, sy: float,
                     dtype: np.dtype = np.float32) -> np.ndarray:
    """Intrinsics after resizing the image by (sx, sy): rows scaled as in the official code.

    Computed in ``dtype`` (float32; a recording's float64 intrinsics stay float64, see
    ``_resize_view``).
    """
    k = np.array(k, dtype=dtype, copy=True)
    k[0, :3] *= sx
    k[1, :3] *= sy
    return k


def _resize_view(results: dict, i: int, hw: Tuple[int, int]) -> None:
    import cv2
    img = results['img'][i]
    h0, w0 = img.shape[:2]
    h, w = hw
    if (h, w) == (h0, w0):
        return
    interp = cv2.INTER_AREA if h < h0 and w < w0 else cv2.INTER_LINEAR
    results['img'][i] = cv2.resize(img, (w, h), interpolation=interp)
    results['depths'][i] = nearest_resize(results['depths'][i], hw)
    for key in ('inst_maps', 'sem_maps'):
        if key in results:
            results[key][i] = nearest_resize(results[key][i], hw)
    k = results['cam2img'][i]
    results['cam2img'][i] = scale_intrinsics(k, w / w0, h / h0,
                                             np.result_type(np.asarray(k).dtype, np.float32))


def _crop_pad_view(results: dict, i: int, off: Tuple[int, int], size: Tuple[int, int],
                   img_pad: float, depth_pad: float) -> None:
    oy, ox = off
    ch, cw = size

    def cut(a: np.ndarray, pad) -> np.ndarray:
        a = a[oy:oy + ch, ox:ox + cw]
        if a.shape[:2] == (ch, cw):
            return np.ascontiguousarray(a)
        out = np.full((ch, cw) + a.shape[2:], pad, dtype=a.dtype)
        out[:a.shape[0], :a.shape[1]] = a
        return out

    results['img'][i] = cut(results['img'][i], img_pad)
    results['depths'][i] = cut(results['depths'][i], depth_pad)
    if 'inst_maps' in results:
        results['inst_maps'][i] = cut(results['inst_maps'][i], -1)
    if 'sem_maps' in results:
        results['sem_maps'][i] = cut(results['sem_maps'][i], 0)
    k = np.array(results['cam2img'][i], dtype=np.float32, copy=True)
    k[0, 2] -= ox
    k[1, 2] -= oy
    results['cam2img'][i] = k


@TRANSFORMS.register_module()
class ODINRandomResizeCrop(BaseTransform):
    """Per-frame random rescale (probability ``prob``) then a random fixed-size crop with padding.

    Every view draws its own scale and crop (detectron2 ``ResizeScale`` + ``FixedSizeCrop`` as
    in the official pipeline): the output scale is ``min(crop_h * s / H, crop_w * s / W)`` with
    ``s ~ U(scale_range)``; images are padded with ``img_pad_value``, depth with 0 (invalid).

    Required keys: ``img``, ``depths``, ``cam2img`` (lists of V), optional ``inst_maps``,
    ``sem_maps``. Modified keys: the same (intrinsics updated). Added keys: ``img_shape``,
    ``pad_shape``, ``scale_factor`` (list of V (sx, sy)), ``crop_offset`` (list of V (oy, ox)).

    Args:
        crop_size (tuple[int, int]): Output (H, W). Defaults to (256, 256).
        scale_range (tuple[float, float]): Range of ``s``. Defaults to (0.1, 2.0).
        prob (float): Probability of rescaling a view. Defaults to 0.5.
        img_pad_value (int): Image padding value. Defaults to 128.
    """

    def __init__(self,
                 crop_size: Sequence[int] = (256, 256),
                 scale_range: Sequence[float] = (0.1, 2.0),
                 prob: float = 0.5,
                 img_pad_value: int = 128) -> None:
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))
        self.scale_range = tuple(scale_range)
        self.prob = prob
        self.img_pad_value = img_pad_value

    def transform(self, results: dict) -> dict:
        """Resize/crop every view independently."""
        ch, cw = self.crop_size
        results['scale_factor'], results['crop_offset'] = [], []
        for i in range(len(results['img'])):
            h0, w0 = results['img'][i].shape[:2]
            if np.random.rand() < self.prob:
                s = np.random.uniform(*self.scale_range)
                scale = min(ch * s / h0, cw * s / w0)
                h, w = max(1, int(round(h0 * scale))), max(1, int(round(w0 * scale)))
                _resize_view(results, i, (h, w))
            else:
                h, w = h0, w0
            oy = np.random.randint(0, h - ch + 1) if h > ch else 0
            ox = np.random.randint(0, w - cw + 1) if w > cw else 0
            _crop_pad_view(results, i, (oy, ox), (ch, cw), self.img_pad_value, 0.0)
            results['scale_factor'].append((w / w0, h / h0))
            results['crop_offset'].append((oy, ox))
        results['img_shape'] = (ch, cw)
        results['pad_shape'] = (ch, cw)
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(crop_size={self.crop_size}, '
                f'scale_range={self.scale_range}, prob={self.prob})')


@TRANSFORMS.register_module()
class ODINResize(BaseTransform):
    """Deterministic resize of every view (test time), ``ResizeShortestEdge`` semantics.

    The shorter side becomes ``short_edge`` unless the longer side would exceed ``max_size``
    (ScanNet test 320/320 -> 240x320 from 480x640).

    Required/modified keys: ``img``, ``depths``, ``cam2img``, optional label maps.
    Added keys: ``img_shape``, ``pad_shape``, ``scale_factor``.

    Args:
        short_edge (int): Target of the shorter side. Defaults to 320.
        max_size (int): Cap on the longer side. Defaults to 320.
        size (tuple[int, int], optional): A fixed output (H, W) instead of the shortest-edge
            rule (the demo's ``--image-size``). Defaults to None.
    """

    def __init__(self, short_edge: int = 320, max_size: int = 320,
                 size: Optional[Sequence[int]] = None) -> None:
        self.short_edge = short_edge
        self.max_size = max_size
        self.size = None if size is None else (int(size[0]), int(size[1]))

    def output_size(self, h0: int, w0: int) -> Tuple[int, int]:
        """The (H, W) a view of (h0, w0) pixels is resized to."""
        if self.size is not None:
            return self.size
        scale = self.short_edge / min(h0, w0)
        if max(h0, w0) * scale > self.max_size:
            scale = self.max_size / max(h0, w0)
        return int(round(h0 * scale)), int(round(w0 * scale))

    def transform(self, results: dict) -> dict:
        """Resize all views."""
        results['scale_factor'] = []
        for i in range(len(results['img'])):
            h0, w0 = results['img'][i].shape[:2]
            h, w = self.output_size(h0, w0)
            _resize_view(results, i, (h, w))
            results['scale_factor'].append((w / w0, h / h0))
        results['img_shape'] = results['img'][0].shape[:2]
        results['pad_shape'] = results['img_shape']
        return results

    def __repr__(self) -> str:
        args = f'short_edge={self.short_edge}, max_size={self.max_size}'
        if self.size is not None:
            args += f', size={self.size}'
        return f'{self.__class__.__name__}({args})'


@TRANSFORMS.register_module()
class ODINColorJitter(BaseTransform):
    """Per-frame colour jitter (brightness, contrast, saturation, hue in random order).

    Same parameters as torchvision's ``ColorJitter``, applied to each view independently with
    probability ``prob`` (official: 0.4/0.4/0.4/0.1, p = 0.8). Geometry is untouched.

    Required/modified keys: ``img`` (list of (H, W, 3) uint8 RGB).
    """

    def __init__(self,
                 brightness: float = 0.4,
                 contrast: float = 0.4,
                 saturation: float = 0.4,
                 hue: float = 0.1,
                 prob: float = 0.8) -> None:
        self.brightness, self.contrast = brightness, contrast
        self.saturation, self.hue, self.prob = saturation, hue, prob

    @staticmethod
    def _gray(img: np.ndarray) -> np.ndarray:
        return img @ np.array([0.299, 0.587, 0.114], np.float32)

    def jitter(self, img: np.ndarray) -> np.ndarray:
        """Jitter one (H, W, 3) uint8 RGB image."""
        import cv2
        x = img.astype(np.float32)
        for op in np.random.permutation(4):
            if op == 0 and self.brightness > 0:
                f = np.random.uniform(max(0.0, 1 - self.brightness), 1 + self.brightness)
                x = x * f
            elif op == 1 and self.contrast > 0:
                f = np.random.uniform(max(0.0, 1 - self.contrast), 1 + self.contrast)
                x = x * f + self._gray(x).mean() * (1 - f)
            elif op == 2 and self.saturation > 0:
                f = np.random.uniform(max(0.0, 1 - self.saturation), 1 + self.saturation)
                x = x * f + self._gray(x)[..., None] * (1 - f)
            elif op == 3 and self.hue > 0:
                dh = np.random.uniform(-self.hue, self.hue)
                hsv = cv2.cvtColor(np.clip(x, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV)
                hsv[..., 0] = ((hsv[..., 0].astype(np.int32) + int(round(dh * 180))) % 180)
                x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB).astype(np.float32)
            x = np.clip(x, 0, 255)
        return x.round().astype(np.uint8)

    def transform(self, results: dict) -> dict:
        """Jitter each view with probability ``prob``."""
        results['img'] = [self.jitter(im) if np.random.rand() < self.prob else im
                          for im in results['img']]
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(brightness={self.brightness}, '
                f'contrast={self.contrast}, saturation={self.saturation}, hue={self.hue}, '
                f'prob={self.prob})')


def _points_xyz(results: dict) -> Optional[np.ndarray]:
    pts = results.get('points')
    if pts is None:
        return None
    if isinstance(pts, BasePoints):
        return pts.tensor[:, :3].numpy().astype(np.float64)
    return np.asarray(pts)[:, :3].astype(np.float64)


def unproject(depth: np.ndarray, k: np.ndarray, pose: np.ndarray,
              mask: Optional[np.ndarray] = None) -> np.ndarray:
    """Unproject depth pixels to world xyz (integer pixel indices, no +0.5).

    The masked pixels of :func:`projects.odin.structures.geometry.unproject_depth` (the one
    unprojection of the project), computed in float64 as this pipeline always did.

    Args:
        depth (np.ndarray): (H, W) metres.
        k (np.ndarray): (4, 4) intrinsics.
        pose (np.ndarray): (4, 4) camera-to-world.
        mask (np.ndarray, optional): (H, W) bool; default ``depth > 0``.

    Returns:
        np.ndarray: (M, 3) float64 world points of the masked pixels (row-major order).
    """
    mask = depth > 0 if mask is None else mask
    world = unproject_depth(torch.from_numpy(np.asarray(depth, np.float64))[None],
                            torch.from_numpy(np.asarray(k, np.float64))[None],
                            torch.from_numpy(np.asarray(pose, np.float64))[None])[0]
    return world.numpy()[np.asarray(mask, bool)]


@TRANSFORMS.register_module()
class ODINGlobalAug3D(BaseTransform):
    """Scene-level 3D augmentation applied identically to the points and to every pose.

    As the official ``augment_depth_numpy``: centre the scene on the mean of the points, add a
    translation drawn uniformly between the centred min and max per axis divided by 2, rotate
    about the new mean (z ~ U(rot_range), x and y ~ U(+-tilt), R = Rz Ry Rx), then scale each
    axis by U(scale_range). The resulting 4x4 affine ``T`` maps old world coordinates to new
    ones: points ``p' = T p`` and poses ``cam2world' = T @ cam2world``, so unprojecting any
    depth pixel with the new pose gives ``T`` applied to its old world point.

    The scene statistics come from ``points`` (mesh vertices) or, without points, from the
    unprojected valid depth of all views.

    Required keys: ``cam2world`` (list of V), ``points`` (optional), ``depths``, ``cam2img``.
    Modified keys: ``points`` xyz, ``cam2world``. Added keys: ``global_aug_matrix`` (4, 4),
    ``pcd_rotation`` (3, 3), ``pcd_scale_factor`` (3,), ``transformation_3d_flow`` (+ 'T').

    Args:
        rot_range (tuple[float, float]): z rotation range (rad). Defaults to (-pi, pi).
        tilt (float): Max x/y rotation (rad). Defaults to pi / 24 (7.5 deg).
        scale_range (tuple[float, float]): Per-axis scale range. Defaults to (0.9, 1.1).
        translate (bool): Apply the random translation. Defaults to True.
    """

    def __init__(self,
                 rot_range: Sequence[float] = (-math.pi, math.pi),
                 tilt: float = math.pi / 24,
                 scale_range: Sequence[float] = (0.9, 1.1),
                 translate: bool = True) -> None:
        self.rot_range = tuple(rot_range)
        self.tilt = tilt
        self.scale_range = tuple(scale_range)
        self.translate = translate

    @staticmethod
    def rotation(ax: float, ay: float, az: float) -> np.ndarray:
        """R = Rz(az) @ Ry(ay) @ Rx(ax)."""
        cx, sx, cy, sy, cz, sz = (math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay),
                                  math.cos(az), math.sin(az))
        rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
        ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
        return rz @ ry @ rx

    def sample_matrix(self, xyz: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Draw the augmentation for a scene with points ``xyz`` (N, 3).

        Returns:
            tuple: ``T`` (4, 4), ``R`` (3, 3), ``scale`` (3,).
        """
        mean = xyz.mean(0)
        lo, hi = (xyz - mean).min(0), (xyz - mean).max(0)
        t = np.random.uniform(lo, hi) / 2.0 if self.translate else np.zeros(3)
        rot = self.rotation(np.random.uniform(-self.tilt, self.tilt),
                            np.random.uniform(-self.tilt, self.tilt),
                            np.random.uniform(*self.rot_range))
        scale = np.random.uniform(self.scale_range[0], self.scale_range[1], 3)
        # p -> p - mean + t (its mean is t) -> R (p - t) + t -> S p
        m = np.eye(4)
        m[:3, 3] = t - mean
        r4 = np.eye(4)
        r4[:3, :3] = rot
        r4[:3, 3] = t - rot @ t
        s4 = np.diag([*scale, 1.0])
        return s4 @ r4 @ m, rot, scale

    def transform(self, results: dict) -> dict:
        """Apply one random affine to points and poses."""
        xyz = _points_xyz(results)
        if xyz is None or len(xyz) == 0:
            xyz = np.concatenate([
                unproject(d, k, p)
                for d, k, p in zip(results['depths'], results['cam2img'], results['cam2world'])
            ])
            if len(xyz) == 0:
                raise ValueError(f'scene {results.get("sample_idx")}: no valid depth and no '
                                 'points; cannot place the 3D augmentation')
            new_xyz = None
        else:
            new_xyz = xyz
        mat, rot, scale = self.sample_matrix(xyz)
        if new_xyz is not None:
            moved = new_xyz @ mat[:3, :3].T + mat[:3, 3]
            pts = results['points']
            if isinstance(pts, BasePoints):
                import torch
                pts.tensor[:, :3] = torch.as_tensor(moved, dtype=pts.tensor.dtype)
            else:
                pts = np.array(pts, copy=True)
                pts[:, :3] = moved
                results['points'] = pts
        results['cam2world'] = [(mat @ np.asarray(p, np.float64)).astype(np.float32)
                                 for p in results['cam2world']]
        prev = results.get('global_aug_matrix', np.eye(4))
        results['global_aug_matrix'] = (mat @ prev).astype(np.float32)
        results['pcd_rotation'] = rot.astype(np.float32)
        results['pcd_scale_factor'] = scale.astype(np.float32)
        results.setdefault('transformation_3d_flow', []).append('T')
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(rot_range={self.rot_range}, tilt={self.tilt}, '
                f'scale_range={self.scale_range}, translate={self.translate})')


def select_views(results: dict, keep: Sequence[int]) -> dict:
    """Keep only the views ``keep`` (in that order) of every per-view list in ``results``."""
    keep = list(keep)
    for key in VIEW_KEYS:
        if key in results and isinstance(results[key], list):
            results[key] = [results[key][i] for i in keep]
    if 'images' in results and 'frame_ids' in results:
        results['images'] = {k: results['images'][k] for k in results['frame_ids']
                             if k in results['images']}
    results['num_views'] = len(keep)
    return results


def draw_camera_drop(num_views: Sequence[int], prob: float) -> Optional[List[np.ndarray]]:
    """Draw the official camera drop: which views each sample keeps, or None to keep them all.

    The one implementation behind :class:`ODINCameraDrop` (one sample) and :func:`odin_collate`
    (a batch). Nothing is drawn unless every sample has more than one view; then with probability
    ``prob`` one n ~ U{1..min(num_views)} is drawn for all samples and every sample keeps n
    random views (in random-choice order), so the views of a batch still stack. Uses numpy's
    global generator (``rand``, ``randint``, then one ``choice`` per sample).

    Args:
        num_views: number of views of every sample.
        prob: probability of dropping views.

    Returns:
        ``[keep_0, keep_1, ...]`` view indices per sample, or None (no drop).
    """
    if not num_views or min(num_views) <= 1 or np.random.rand() >= prob:
        return None
    n = np.random.randint(1, min(num_views) + 1)
    return [np.random.choice(v, n, replace=False) for v in num_views]


@TRANSFORMS.register_module()
class ODINCameraDrop(BaseTransform):
    """Randomly keep a subset of the views of a sample (per-sample camera drop).

    With probability ``prob`` a number n ~ U{1..V} is drawn and n random views are kept (in
    random-choice order), by :func:`draw_camera_drop`. The official code draws one n per batch so
    that scenes stack; use the ``odin_collate`` collate function (``camera_drop_prob``, the same
    draw) for that behaviour, or this transform with batch size 1 / a padding preprocessor.

    Modified keys: every per-view list (``img``, ``depths``, ``cam2img``, ``cam2world``, paths,
    ids, label maps), ``num_views``.
    """

    def __init__(self, prob: float = 0.5) -> None:
        self.prob = prob

    def transform(self, results: dict) -> dict:
        """Drop views."""
        keep = draw_camera_drop([len(results['img'])], self.prob)
        return results if keep is None else select_views(results, keep[0])

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(prob={self.prob})'


@TRANSFORMS.register_module()
class ODINPointSegClassMapping(BaseTransform):
    """Map raw semantic ids to training classes and drop instances of ignored classes.

    Like mmdet3d's ``PointSegClassMapping`` (uses ``seg_label_mapping`` from the dataset) but
    tolerant to raw ids beyond the mapping (-> ignore = ``num_classes``), and it also sets the
    instance id of every point whose class is ignored to -1 (no instance), so instance ground
    truth only contains evaluated classes. ``eval_ann_info`` receives the mapped copies.

    Required keys: ``pts_semantic_mask`` (N,), ``seg_label_mapping``, optional
    ``pts_instance_mask`` (N,). Modified keys: the same, ``eval_ann_info``.
    """

    def transform(self, results: dict) -> dict:
        """Map the labels."""
        mapping = np.asarray(results['seg_label_mapping'])
        ignore = int(mapping.max()) if 'ignore_index' not in results else results['ignore_index']
        sem = np.asarray(results['pts_semantic_mask']).astype(np.int64)
        ok = (sem >= 0) & (sem < len(mapping))
        mapped = np.full(sem.shape, ignore, np.int64)
        mapped[ok] = mapping[sem[ok]]
        results['pts_semantic_mask'] = mapped
        if 'pts_instance_mask' in results:
            inst = np.asarray(results['pts_instance_mask']).astype(np.int64).copy()
            inst[mapped == ignore] = -1
            results['pts_instance_mask'] = inst
        if 'eval_ann_info' in results and results['eval_ann_info'] is not None:
            results['eval_ann_info']['pts_semantic_mask'] = mapped.copy()
            if 'pts_instance_mask' in results:
                results['eval_ann_info']['pts_instance_mask'] = results[
                    'pts_instance_mask'].copy()
        return results


#: bits per axis of a packed voxel key (:func:`_voxel_keys`)
_KEY_BITS = 21


def _voxel_keys(xyz: np.ndarray, voxel_size: float) -> np.ndarray:
    """Voxel keys of points that sort like their (x, y, z) voxel indices.

    ``floor(xyz / voxel_size)`` packed into one int64 (21 bits per axis, offset to be
    non-negative: x in the high bits) when every index is within ±2**20 (±20 km at 2 cm), which
    sorts and compares exactly as the index triplets do but 1-D (fast); else the (M, 3) indices.

    Args:
        xyz: (M, 3) float64 points.
        voxel_size: metres.

    Returns:
        (M,) int64 packed keys, or (M, 3) int64 voxel indices.
    """
    idx = np.floor(xyz / voxel_size).astype(np.int64)
    half = 1 << (_KEY_BITS - 1)
    if len(idx) and (idx.min() < -half or idx.max() >= half):
        return idx
    idx += half
    return (idx[:, 0] << (2 * _KEY_BITS)) | (idx[:, 1] << _KEY_BITS) | idx[:, 2]


def _unpack_voxel_keys(keys: np.ndarray) -> np.ndarray:
    """(M,) packed keys of :func:`_voxel_keys` -> (M, 3) int64 voxel indices."""
    mask = (1 << _KEY_BITS) - 1
    half = 1 << (_KEY_BITS - 1)
    return np.stack([(keys >> (2 * _KEY_BITS)) & mask, (keys >> _KEY_BITS) & mask,
                     keys & mask], 1) - half


@TRANSFORMS.register_module()
class ODINSensorPoints(BaseTransform):
    """Build the supervision/evaluation point cloud from the (final) views' valid depth pixels.

    Used for AI2THOR and the demo ("sensor points"): every ``stride``-th pixel with depth > 0
    of every view is unprojected with the current intrinsics and pose; colour from the image,
    labels from the per-frame ``inst_maps`` / ``sem_maps`` when loaded (raw ids; map them with
    ``ODINPointSegClassMapping``). Run it after the 2D transforms and before
    ``ODINGlobalAug3D`` (which then moves the points with the poses).

    Added keys: ``points`` (``DepthPoints`` x y z r g b, colour 0-255), optional
    ``pts_semantic_mask``, ``pts_instance_mask``, ``superpoints`` (one per point),
    ``eval_ann_info`` copies in test mode.

    With ``voxel_size`` the fused cloud is thinned to the first point (in view, row, column
    order) of every ``voxel_size`` voxel, keys computed in float64 before the float32 cast (the
    demo's fusion of a recording); ``pixel_to_point`` (V, H, W) int32 then gives every pixel's
    point (-1: no valid depth or not sampled) and the points come sorted by voxel key. The fusion
    runs view by view (only one view's pixels held as points at a time).

    Args:
        stride (int): Pixel subsampling (official half resolution: 2). Defaults to 1.
        voxel_size (float, optional): Fuse the points into voxels of this size (metres).
            Defaults to None (every sampled pixel is a point).
    """

    def __init__(self, stride: int = 1, voxel_size: Optional[float] = None) -> None:
        self.stride = stride
        self.voxel_size = voxel_size

    def transform(self, results: dict) -> dict:
        """Unproject the views."""
        if self.voxel_size is not None:
            return self._fused(results)
        xyz, rgb, inst, sem = [], [], [], []
        for i, (d, k, p) in enumerate(zip(results['depths'], results['cam2img'],
                                          results['cam2world'])):
            mask = self._mask(d)
            xyz.append(unproject(d, k, p, mask))
            rgb.append(results['img'][i][mask].astype(np.float64))
            if 'inst_maps' in results:
                inst.append(results['inst_maps'][i][mask])
                sem.append(results['sem_maps'][i][mask])
        if not sum(len(x) for x in xyz):
            self._no_points(results)
        return self._output(results, xyz, rgb, inst, sem)

    def _mask(self, depth: np.ndarray) -> np.ndarray:
        """(H, W) bool: the sampled pixels (every ``stride``-th) with valid depth."""
        mask = np.zeros(depth.shape, bool)
        mask[::self.stride, ::self.stride] = True
        return mask & (depth > 0)

    @staticmethod
    def _no_points(results: dict) -> None:
        raise ValueError(f'scene {results.get("scene_id", results.get("sample_idx"))}: no '
                         'view has a pixel with valid depth, no sensor points')

    def _output(self, results: dict, xyz: list, rgb: list, inst: list, sem: list) -> dict:
        pts = np.concatenate([np.concatenate(xyz), np.concatenate(rgb)], 1).astype(np.float32)
        results['points'] = DepthPoints(pts, points_dim=6, attribute_dims=dict(color=[3, 4, 5]))
        results['superpoints'] = np.arange(len(pts), dtype=np.int64)
        if inst:
            results['pts_instance_mask'] = np.concatenate(inst).astype(np.int64)
            results['pts_semantic_mask'] = np.concatenate(sem).astype(np.int64)
            if 'eval_ann_info' in results and results['eval_ann_info'] is not None:
                results['eval_ann_info'].update(
                    pts_instance_mask=results['pts_instance_mask'].copy(),
                    pts_semantic_mask=results['pts_semantic_mask'].copy())
        return results

    def _fused(self, results: dict) -> dict:
        """Keep the first point of every voxel; set ``results['pixel_to_point']``.

        View by view, so that only one view's pixels are held as points at a time: each view's
        voxels and their first pixel (row-major) are kept (:meth:`fuse_view`), then the views'
        voxels are merged keeping the first view's point. The same points, in the same (voxel
        key) order, as fusing all pixels at once.

        With ``results['view_caches']`` (one dict per view, e.g. from
        :attr:`projects.odin.datasets.recordings.RGBDSequence.view_caches`) a view's part is
        reused from its dict when the view's depth, colour, intrinsics and pose equal those it
        was computed from (and the stride and voxel size are the same), else computed and kept
        there: a stream that fuses the same frames in several windows computes each frame's part
        once. Reused or not, the output is the same (views with label maps are never cached).
        """
        v = len(results['depths'])
        h, w = results['depths'][0].shape[:2]
        caches = results.get('view_caches')
        if caches is not None and (len(caches) != v or 'inst_maps' in results):
            caches = None
        pixel_to_point = np.full((v, h, w), -1, np.int32)
        keys, local, xyz, rgb, inst, sem = [], [], [], [], [], []
        for i in range(v):
            view = self.fuse_view(results, i) if caches is None else \
                self._cached_view(results, i, caches[i])
            keys.append(view[0])
            local.append(view[1])
            xyz.append(view[2])
            rgb.append(view[3])
            if 'inst_maps' in results:
                mask, first = self._mask(results['depths'][i]), view[4]
                inst.append(results['inst_maps'][i][mask][first])
                sem.append(results['sem_maps'][i][mask][first])
        if not sum(len(x) for x in keys):
            self._no_points(results)
        # the views' voxels in view order: the first occurrence is the first view's point
        if any(k.ndim == 2 for k in keys):  # some view beyond the packed range
            keys = [_unpack_voxel_keys(k) if k.ndim == 1 else k for k in keys]
        _, first, merged = np.unique(np.concatenate(keys), axis=0, return_index=True,
                                     return_inverse=True)
        merged = merged.ravel().astype(np.int32)
        offset = 0
        for i, voxel in enumerate(keys):
            valid = local[i] >= 0
            pixel_to_point[i][valid] = merged[offset + local[i][valid]]
            offset += len(voxel)
        results['pixel_to_point'] = pixel_to_point
        xyz = [np.concatenate(xyz)[first]]
        rgb = [np.concatenate(rgb)[first].astype(np.float64)]
        if inst:
            inst, sem = [np.concatenate(inst)[first]], [np.concatenate(sem)[first]]
        return self._output(results, xyz, rgb, inst, sem)

    def fuse_view(self, results: dict, i: int) -> tuple:
        """The part of the fusion that depends on view ``i`` alone.

        Args:
            results: the pipeline's dict (``depths``, ``img``, ``cam2img``, ``cam2world``).
            i: the view.

        Returns:
            tuple: the view's voxels, sorted unique keys (U,) int64 (or (U, 3) voxel indices
            beyond the packed range, :func:`_voxel_keys`); ``local`` (H, W) int32 index into
            them of every pixel (-1: no valid depth or not sampled); ``xyz`` (U, 3) float32 and
            ``rgb`` (U, 3) of each voxel's first pixel (row-major); ``first`` (U,) index of that
            pixel among the view's sampled valid pixels.
        """
        d = results['depths'][i]
        mask = self._mask(d)
        pts = unproject(d, results['cam2img'][i], results['cam2world'][i], mask)
        voxel, first, inverse = np.unique(_voxel_keys(pts, self.voxel_size), axis=0,
                                          return_index=True, return_inverse=True)
        local = np.full(d.shape[:2], -1, np.int32)
        local[mask] = inverse.ravel()
        # float32 per view: the fused points are cast to float32 anyway (same values)
        return voxel, local, pts[first].astype(np.float32), results['img'][i][mask][first], first

    def _cached_view(self, results: dict, i: int, cache: dict) -> tuple:
        """:meth:`fuse_view` through the view's cache dict (see :meth:`_fused`)."""
        inputs = (results['depths'][i], results['img'][i], np.asarray(results['cam2img'][i]),
                  np.asarray(results['cam2world'][i]))
        params = (self.stride, self.voxel_size)
        kept = cache.get(_VIEW_CACHE_KEY)
        if kept is not None and kept['params'] == params and \
                all(_same_array(a, b) for a, b in zip(kept['inputs'], inputs)):
            return kept['view']
        view = self.fuse_view(results, i)
        # copies of the inputs: an array changed in place later is not taken for the same;
        # ``first`` is only read with label maps, which are never cached
        cache[_VIEW_CACHE_KEY] = dict(params=params, view=view[:4] + (None,),
                                      inputs=tuple(np.array(a, copy=True) for a in inputs))
        return view


#: the entry :class:`ODINSensorPoints` keeps in a view's cache dict
_VIEW_CACHE_KEY = 'ODINSensorPoints'


def _same_array(a: np.ndarray, b: np.ndarray) -> bool:
    """Same shape, dtype and values (NaN never equals: a NaN input is recomputed)."""
    return a.shape == b.shape and a.dtype == b.dtype and bool(np.array_equal(a, b))


def odin_collate(data_batch: Sequence[dict], camera_drop_prob: float = 0.0) -> dict:
    """``pseudo_collate`` with the official per-batch camera drop.

    With probability ``camera_drop_prob`` one n ~ U{1..V_min} is drawn for the whole batch and
    every sample keeps n random views (:func:`draw_camera_drop`; inputs ``img``, ``depths``,
    ``cam2world``, ``intrinsics`` and
    the per-view metainfo lists), so the views still stack.

    Args:
        data_batch (Sequence[dict]): Packed samples (``inputs``, ``data_samples``).
        camera_drop_prob (float): Probability of dropping views. Defaults to 0.

    Returns:
        dict: The collated batch (as ``pseudo_collate``).
    """
    from mmengine.dataset import pseudo_collate
    views = [d['inputs']['img'].shape[0] for d in data_batch
             if 'img' in d['inputs'] and 'depths' in d['inputs']]
    keeps = draw_camera_drop(views, camera_drop_prob) if len(views) == len(data_batch) else None
    if keeps is not None:
        n = len(keeps[0])
        for d, keep in zip(data_batch, keeps):
            idx = torch.as_tensor(keep, dtype=torch.long)
            for key in ('img', 'depths', 'cam2world', 'intrinsics'):
                if key in d['inputs']:
                    d['inputs'][key] = d['inputs'][key][idx]
            ds = d['data_samples']
            meta = {}
            for key, val in ds.metainfo.items():
                if isinstance(val, (list, tuple)) and key in PER_VIEW_META and len(val) > 0:
                    meta[key] = [val[i] for i in keep]
                elif isinstance(val, np.ndarray) and key in PER_VIEW_META and val.ndim >= 1:
                    meta[key] = val[keep]
            meta['num_views'] = int(n)
            ds.set_metainfo(meta)
    return pseudo_collate(data_batch)


PER_VIEW_META = ('img_path', 'depth_path', 'cam2img', 'cam2world', 'frame_ids', 'lidar2img',
                 'depth2img', 'scale_factor', 'crop_offset')


def _register_collate() -> None:
    from mmengine.registry import FUNCTIONS
    if 'odin_collate' not in FUNCTIONS.module_dict:
        FUNCTIONS.register_module(name='odin_collate', module=odin_collate)


_register_collate()

__all__: List[str] = [
    'ODINRandomResizeCrop', 'ODINResize', 'ODINColorJitter', 'ODINGlobalAug3D', 'ODINCameraDrop',
    'ODINPointSegClassMapping', 'ODINSensorPoints', 'odin_collate', 'draw_camera_drop',
    'unproject', 'scale_intrinsics', 'nearest_resize', 'select_views'
]
