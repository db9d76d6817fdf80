"""Readers for posed RGB-D recordings in common folder layouts (used by the demo).

Three layouts are recognised (``layout='auto'`` picks the one whose files are present):

* ``scannet`` — our converted ScanNet layout and ScanNet's ``SensReader`` export:
  ``color/<id>.jpg|png``, ``depth/<id>.png`` (16-bit, millimetres), ``pose/<id>.txt`` (4×4
  camera-to-world) and ``intrinsic/`` holding ``intrinsic_depth.txt`` (or ``intrinsic_color.txt``,
  or one ``<id>.txt`` per frame), 3×3 or 4×4.
* ``tum`` — TUM RGB-D: ``rgb/``, ``depth/`` (16-bit, 5000 per metre), ``rgb.txt`` and ``depth.txt``
  (``timestamp path`` lines), a pose list ``groundtruth.txt`` (``timestamp tx ty tz qx qy qz qw``,
  camera-to-world) and an intrinsics file (3×3 or 4×4, e.g. ``intrinsics.txt``). Colour, depth and
  poses are associated by nearest timestamp (at most ``max_time_diff`` apart).
* ``7scenes`` — Microsoft 7-Scenes: ``frame-XXXXXX.color.jpg|png``, ``frame-XXXXXX.depth.png``
  (16-bit millimetres, 65535 = invalid), ``frame-XXXXXX.pose.txt`` (4×4 camera-to-world) and
  ``camera-intrinsics.txt``.

The intrinsics describe the **depth** image; a colour image of another size is resized to the depth
resolution (as ODIN's ScanNet export does), so colour and depth share one intrinsics matrix.
Depth is returned in metres with 0 for invalid pixels.
"""
import glob
import logging
import os
import os.path as osp
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

logger = logging.getLogger(__name__)

LAYOUTS = ('scannet', 'tum', '7scenes')
DEFAULT_DEPTH_SCALE = {'scannet': 1000.0, 'tum': 5000.0, '7scenes': 1000.0}
INTRINSICS_NAMES = ('intrinsics.txt', 'intrinsic.txt', 'camera-intrinsics.txt', 'camera.txt',
                    'K.txt', 'intrinsic_depth.txt')
_IMAGE_EXTS = ('.jpg', '.jpeg', '.png')


class RGBDFolderError(ValueError):
    """A posed RGB-D folder cannot be used; the message says which file or frame and why."""


@dataclass
class RGBDSequence:
    """Frames of a posed RGB-D recording, after validation, stride and frame cap.

    Attributes:
        folder: the recording's folder.
        layout: one of :data:`LAYOUTS`.
        frame_ids: (V,) names of the frames (file stem or timestamp).
        color_paths: (V,) colour image paths.
        depth_paths: (V,) depth image paths.
        poses: (V, 4, 4) float64 camera-to-world matrices.
        intrinsics: (V, 4, 4) float64 depth-camera intrinsics (K in the top-left 3×3).
        depth_scale: raw depth units per metre.
        skipped: human-readable notes about frames that were dropped (e.g. invalid poses).
    """

    folder: str
    layout: str
    frame_ids: List[str]
    color_paths: List[str]
    depth_paths: List[str]
    poses: np.ndarray
    intrinsics: np.ndarray
    depth_scale: float
    skipped: List[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.frame_ids)

    def load_frame(self, i: int) -> Tuple[np.ndarray, np.ndarray]:
        """Read frame ``i``.

        Args:
            i: frame index in ``[0, len(self))``.

        Returns:
            tuple: ``rgb`` (H, W, 3) uint8 and ``depth`` (H, W) float32 metres (0 = invalid), both
            at the depth image's resolution.

        Raises:
            RGBDFolderError: unreadable files, a depth image that is not single-channel, or a depth
                map without any valid pixel.
        """
        color_path, depth_path = self.color_paths[i], self.depth_paths[i]
        frame = f'frame {self.frame_ids[i]}'
        depth_raw = cv2.imread(depth_path, cv2.IMREAD_UNCHANGED)
        if depth_raw is None:
            raise RGBDFolderError(f'{frame}: cannot read depth image {depth_path}')
        if depth_raw.ndim != 2:
            raise RGBDFolderError(
                f'{frame}: depth image {depth_path} has {depth_raw.shape[2]} '
                'channels; expected a single-channel 16-bit PNG')
        bgr = cv2.imread(color_path, cv2.IMREAD_COLOR)
        if bgr is None:
            raise RGBDFolderError(f'{frame}: cannot read colour image {color_path}')
        depth = depth_raw.astype(np.float32) / self.depth_scale
        if self.layout == '7scenes':
            depth[depth_raw == 65535] = 0
        depth[~np.isfinite(depth)] = 0
        if not (depth > 0).any():
            raise RGBDFolderError(
                f'{frame}: depth image {depth_path} has no valid pixel')
        h, w = depth.shape
        if bgr.shape[:2] != (h, w):
            bgr = cv2.resize(bgr, (w, h), interpolation=cv2.INTER_LINEAR)
        return np.ascontiguousarray(bgr[:, :, ::-1]), depth


def read_matrix(path: str, what: str = 'matrix') -> np.ndarray:
    """Read a whitespace-separated 3×3 or 4×4 matrix and return it as 4×4 float64.

    Args:
        path: text file.
        what: description used in error messages (e.g. ``'pose'``).

    Returns:
        (4, 4) float64 array.

    Raises:
        RGBDFolderError: if the file is missing, not numeric, or not 3×3 / 4×4 (3×4 is accepted
            and completed with ``[0, 0, 0, 1]``).
    """
    if not osp.isfile(path):
        raise RGBDFolderError(f'{what} file not found: {path}')
    try:
        values = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as e:
        raise RGBDFolderError(f'{what} file {path} is not a numeric matrix: {e}') from e
    mat = np.eye(4)
    if values.shape == (4, 4):
        mat = values
    elif values.shape in ((3, 3), (3, 4)):
        mat[:3, :values.shape[1]] = values
    else:
        raise RGBDFolderError(
            f'{what} file {path} holds a {values.shape[0]}x{values.shape[1]} matrix; '
            'expected 3x3 or 4x4')
    return mat


def _frames_by_stem(directory: str, exts: Sequence[str]) -> dict:
    out = {}
    for path in os.listdir(directory):
        stem, ext = osp.splitext(path)
        if ext.lower() in exts:
            out[stem] = osp.join(directory, path)
    return out


def _natural_key(name: str):
    digits = ''.join(ch for ch in name if ch.isdigit())
    return (int(digits) if digits else -1, name)


def _find_intrinsics(folder: str, explicit: Optional[str]) -> str:
    if explicit is not None:
        return explicit
    for name in INTRINSICS_NAMES:
        path = osp.join(folder, name)
        if osp.isfile(path):
            return path
    raise RGBDFolderError(
        f'{folder}: no intrinsics file; provide one of {", ".join(INTRINSICS_NAMES)} in the '
        'folder or pass --intrinsics FILE (3x3 or 4x4, for the depth image)')


def detect_layout(folder: str) -> str:
    """Return the layout of ``folder`` (see module docstring).

    Raises:
        RGBDFolderError: if no layout matches, with what each layout would need.
    """
    if not osp.isdir(folder):
        raise RGBDFolderError(f'{folder} is not a directory')
    if all(osp.isdir(osp.join(folder, d)) for d in ('color', 'depth')):
        return 'scannet'
    if osp.isfile(osp.join(folder, 'rgb.txt')) or osp.isdir(osp.join(folder, 'rgb')):
        return 'tum'
    if glob.glob(osp.join(folder, 'frame-*.color.*')):
        return '7scenes'
    raise RGBDFolderError(
        f'{folder}: unrecognised RGB-D layout. Expected one of: ScanNet-style color/, depth/, '
        'pose/, intrinsic/ folders; TUM-style rgb.txt, depth.txt, groundtruth.txt and an '
        'intrinsics file; 7-Scenes-style frame-XXXXXX.color.jpg/.depth.png/.pose.txt files with '
        'camera-intrinsics.txt')


def _load_scannet(folder: str, intrinsics_file: Optional[str]):
    colors = _frames_by_stem(osp.join(folder, 'color'), _IMAGE_EXTS)
    depths = _frames_by_stem(osp.join(folder, 'depth'), ('.png',))
    pose_dir = osp.join(folder, 'pose')
    if not osp.isdir(pose_dir):
        raise RGBDFolderError(f'{folder}: no pose/ folder (camera-to-world 4x4 per frame)')
    poses = _frames_by_stem(pose_dir, ('.txt',))
    _check_counts(folder, colors, depths, poses, 'color/', 'depth/', 'pose/')
    stems = sorted(colors, key=_natural_key)
    per_frame_intr = None
    if intrinsics_file is None:
        intr_dir = osp.join(folder, 'intrinsic')
        for name in ('intrinsic_depth.txt', 'intrinsic_color.txt'):
            if osp.isfile(osp.join(intr_dir, name)):
                intrinsics_file = osp.join(intr_dir, name)
                break
        else:
            if osp.isdir(intr_dir) and all(
                    osp.isfile(osp.join(intr_dir, s + '.txt')) for s in stems):
                per_frame_intr = [osp.join(intr_dir, s + '.txt') for s in stems]
            else:
                intrinsics_file = _find_intrinsics(folder, None)
    intr = ([read_matrix(p, 'intrinsics') for p in per_frame_intr] if per_frame_intr else
            [read_matrix(intrinsics_file, 'intrinsics')] * len(stems))
    return (stems, [colors[s] for s in stems], [depths[s] for s in stems],
            [osp.join(pose_dir, s + '.txt') for s in stems], intr)


def _check_counts(folder, colors, depths, poses, cname, dname, pname):
    if not colors:
        raise RGBDFolderError(f'{folder}: no colour images in {cname}')
    if not poses:
        raise RGBDFolderError(f'{folder}: no poses in {pname} (camera-to-world 4x4 per frame)')
    for name, other in ((dname, depths), (pname, poses)):
        missing = sorted(set(colors) - set(other), key=_natural_key)
        if missing:
            raise RGBDFolderError(
                f'{folder}: {len(colors)} colour frames but {len(other)} in {name}; e.g. frame '
                f'{missing[0]} has no {name} file')


def _read_timestamp_list(path: str) -> List[Tuple[float, List[str]]]:
    rows = []
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith('#'):
                continue
            parts = line.replace(',', ' ').split()
            try:
                rows.append((float(parts[0]), parts[1:]))
            except (ValueError, IndexError) as e:
                raise RGBDFolderError(f'{path}:{line_no}: cannot parse "{line}"') from e
    if not rows:
        raise RGBDFolderError(f'{path} lists no entries')
    return rows


def _nearest(stamps: np.ndarray, t: float) -> int:
    return int(np.abs(stamps - t).argmin())


def quaternion_pose(values: Sequence[float]) -> np.ndarray:
    """Convert ``tx ty tz qx qy qz qw`` (TUM order) to a 4×4 matrix.

    Args:
        values: 7 numbers.

    Returns:
        (4, 4) float64 rigid transform.
    """
    from scipy.spatial.transform import Rotation
    quat = np.asarray(values[3:], dtype=np.float64)  # x, y, z, w (scipy's order too)
    n = np.linalg.norm(quat)
    if not np.isfinite(n) or n < 1e-8:
        raise RGBDFolderError(f'invalid quaternion {values[3:]}')
    mat = np.eye(4)
    mat[:3, :3] = Rotation.from_quat(quat / n).as_matrix()
    mat[:3, 3] = values[:3]
    return mat


def _load_tum(folder: str, intrinsics_file: Optional[str], max_time_diff: float):
    rgb_list, depth_list = osp.join(folder, 'rgb.txt'), osp.join(folder, 'depth.txt')
    pose_list = None
    for name in ('groundtruth.txt', 'poses.txt', 'trajectory.txt'):
        if osp.isfile(osp.join(folder, name)):
            pose_list = osp.join(folder, name)
            break
    for path, what in ((rgb_list, 'colour list rgb.txt'), (depth_list, 'depth list depth.txt')):
        if not osp.isfile(path):
            raise RGBDFolderError(f'{folder}: missing {what}')
    if pose_list is None:
        raise RGBDFolderError(
            f'{folder}: no pose list (groundtruth.txt with "timestamp tx ty tz qx qy qz qw")')
    rgbs, depths = _read_timestamp_list(rgb_list), _read_timestamp_list(depth_list)
    poses = _read_timestamp_list(pose_list)
    for t, rest in poses:
        if len(rest) != 7:
            raise RGBDFolderError(f'{pose_list}: entry at t={t} has {len(rest)} values; expected '
                                  '"timestamp tx ty tz qx qy qz qw"')
    d_stamps = np.array([t for t, _ in depths])
    p_stamps = np.array([t for t, _ in poses])
    ids, colors, depth_paths, mats, skipped = [], [], [], [], []
    for t, rest in rgbs:
        j, k = _nearest(d_stamps, t), _nearest(p_stamps, t)
        if abs(d_stamps[j] - t) > max_time_diff or abs(p_stamps[k] - t) > max_time_diff:
            skipped.append(f'rgb frame at t={t:.6f}: no depth/pose within {max_time_diff}s')
            continue
        ids.append(f'{t:.6f}')
        colors.append(osp.join(folder, rest[0]))
        depth_paths.append(osp.join(folder, depths[j][1][0]))
        mats.append(quaternion_pose([float(v) for v in poses[k][1]]))
    if not ids:
        raise RGBDFolderError(f'{folder}: no colour frame has a depth image and a pose within '
                              f'{max_time_diff}s (check the timestamps of rgb.txt, depth.txt and '
                              f'{osp.basename(pose_list)})')
    intr = read_matrix(_find_intrinsics(folder, intrinsics_file), 'intrinsics')
    return ids, colors, depth_paths, mats, [intr] * len(ids), skipped


def _load_7scenes(folder: str, intrinsics_file: Optional[str]):
    colors = {osp.basename(p).split('.')[0]: p
              for p in glob.glob(osp.join(folder, 'frame-*.color.*'))}
    depths = {osp.basename(p).split('.')[0]: p
              for p in glob.glob(osp.join(folder, 'frame-*.depth.png'))}
    poses = {osp.basename(p).split('.')[0]: p
             for p in glob.glob(osp.join(folder, 'frame-*.pose.txt'))}
    _check_counts(folder, colors, depths, poses, 'frame-*.color.*', 'frame-*.depth.png',
                  'frame-*.pose.txt')
    stems = sorted(colors, key=_natural_key)
    if intrinsics_file is None and osp.isfile(osp.join(folder, 'camera-intrinsics.txt')):
        intrinsics_file = osp.join(folder, 'camera-intrinsics.txt')
    intr = read_matrix(_find_intrinsics(folder, intrinsics_file), 'intrinsics')
    return (stems, [colors[s] for s in stems], [depths[s] for s in stems],
            [poses[s] for s in stems], [intr] * len(stems))


def load_rgbd_folder(folder: str,
                     layout: str = 'auto',
                     depth_scale: Optional[float] = None,
                     frame_stride: int = 1,
                     max_frames: Optional[int] = None,
                     intrinsics_file: Optional[str] = None,
                     max_time_diff: float = 0.02) -> RGBDSequence:
    """Index a posed RGB-D folder and validate it.

    Args:
        folder: the recording's folder.
        layout: ``'auto'`` or one of :data:`LAYOUTS`. Defaults to ``'auto'``.
        depth_scale: raw depth units per metre; defaults to the layout's convention (ScanNet and
            7-Scenes 1000, TUM 5000).
        frame_stride: keep every ``frame_stride``-th frame. Defaults to 1.
        max_frames: if set, keep at most this many frames, uniformly spread over the (strided)
            sequence, as ODIN's test-time frame cap. Defaults to None.
        intrinsics_file: explicit 3×3 / 4×4 intrinsics file overriding the folder's.
        max_time_diff: TUM only: largest colour/depth/pose timestamp gap in seconds.

    Returns:
        The validated :class:`RGBDSequence`. Frames whose pose is not finite are dropped and
        logged; their notes are in ``skipped``.

    Raises:
        RGBDFolderError: for a folder that cannot be used (missing poses, mismatched counts,
            unreadable matrices, no usable frame...), naming the file or frame.
    """
    if frame_stride < 1:
        raise RGBDFolderError(f'frame_stride must be >= 1, got {frame_stride}')
    if max_frames is not None and max_frames < 1:
        raise RGBDFolderError(f'max_frames must be >= 1, got {max_frames}')
    layout = detect_layout(folder) if layout == 'auto' else layout
    if layout not in LAYOUTS:
        raise RGBDFolderError(f'unknown layout {layout!r}; choose from {LAYOUTS} or "auto"')
    skipped: List[str] = []
    if layout == 'scannet':
        ids, colors, depths, pose_paths, intr = _load_scannet(folder, intrinsics_file)
        mats = [read_matrix(p, 'pose') for p in pose_paths]
    elif layout == 'tum':
        ids, colors, depths, mats, intr, skipped = _load_tum(folder, intrinsics_file,
                                                             max_time_diff)
    else:
        ids, colors, depths, pose_paths, intr = _load_7scenes(folder, intrinsics_file)
        mats = [read_matrix(p, 'pose') for p in pose_paths]
    keep = []
    for i, mat in enumerate(mats):
        if np.isfinite(mat).all():
            keep.append(i)
        else:
            skipped.append(f'frame {ids[i]}: pose is not finite')
    if not keep:
        raise RGBDFolderError(f'{folder}: no frame has a finite camera pose')
    keep = keep[::frame_stride]
    if max_frames is not None and len(keep) > max_frames:
        sel = np.linspace(0, len(keep) - 1, max_frames).round().astype(int)
        keep = [keep[i] for i in sel]
    for note in skipped:
        logger.warning('%s: skipped %s', folder, note)
    for i in keep:
        k = intr[i]
        if not (np.isfinite(k).all() and k[0, 0] > 0 and k[1, 1] > 0):
            raise RGBDFolderError(f'frame {ids[i]}: invalid intrinsics (fx={k[0, 0]}, '
                                  f'fy={k[1, 1]})')
    return RGBDSequence(
        folder=folder, layout=layout, frame_ids=[ids[i] for i in keep],
        color_paths=[colors[i] for i in keep], depth_paths=[depths[i] for i in keep],
        poses=np.stack([mats[i] for i in keep]), intrinsics=np.stack([intr[i] for i in keep]),
        depth_scale=float(depth_scale or DEFAULT_DEPTH_SCALE[layout]), skipped=skipped)
