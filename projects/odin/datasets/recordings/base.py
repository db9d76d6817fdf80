"""What every posed RGB-D recording reader shares: the sequence, the registry, the parsers.

A reader turns one recording format into an :class:`RGBDSequence` whose poses are
**camera-to-world in OpenCV camera axes** (x right, y down, z forward), whose intrinsics describe
the **depth** image, and whose frames read as RGB ``uint8`` plus depth in metres (0 = invalid).
Readers are registered in :data:`RECORDING_READERS` (an MMEngine registry) under their layout name.
"""
import glob
import logging
import os
import os.path as osp
import re
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from mmengine.registry import Registry
from scipy.spatial.transform import Rotation

logger = logging.getLogger('projects.odin.datasets.recordings')

RECORDING_READERS = Registry('posed RGB-D recording reader')

IMAGE_EXTS = ('.jpg', '.jpeg', '.png')
DEPTH_EXTS = ('.png', '.npy', '.exr', '.tif', '.tiff')
#: Raw depth units per metre of 16-bit depth when the layout does not say otherwise (millimetres).
DEFAULT_UINT16_SCALE = 1000.0


class RGBDFolderError(ValueError):
    """A posed RGB-D recording cannot be used; the message says which file or frame and why."""


@dataclass
class RGBDSequence:
    """Frames of a posed RGB-D recording, after validation, stride and frame cap.

    Attributes:
        folder: the recording (a folder, or a file such as a ``.sens``).
        layout: the reader's name (see :data:`RECORDING_READERS`).
        frame_ids: (V,) names of the frames (file stem, index or timestamp).
        color_paths: (V,) colour image paths (``<file>#frame=<i>`` for frames inside a file).
        depth_paths: (V,) depth image paths (same convention).
        poses: (V, 4, 4) float64 camera-to-world, OpenCV camera axes.
        intrinsics: (V, 4, 4) float64 depth-camera intrinsics (K in the top-left 3×3).
        depth_scale: raw depth units per metre (1 for float depth in metres).
        skipped: human-readable notes about frames that were dropped (e.g. invalid poses).
        color_intrinsics: (V, 4, 4) colour-camera intrinsics when the layout gives them; a colour
            image of another size than the depth is only accepted when they are known.
        depth_units: how ``depth_scale`` was chosen (printed by the demo).
        depth_hw: (H, W) of the depth images (every frame must have it).
        depth_dtype: numpy dtype name of the raw depth of the first frame (every frame must match).
        invalid_depth: raw depth values that mean "no measurement" besides 0 (7-Scenes: 65535).
        frame_loader: for frames stored inside a file: ``frame_loader(ref)`` returns RGB (H, W, 3)
            uint8 and the raw depth (H, W); None reads ``color_paths`` / ``depth_paths``.
        frame_refs: (V,) the ``ref`` of each frame for ``frame_loader``.
        view_caches: (V,) one dict per frame in which pipeline steps may keep work that depends
            on that frame alone, checked against the frame's content before it is reused
            (``ODINSensorPoints``; a stream keeps one per held frame); None: nothing is kept.
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
    color_intrinsics: Optional[np.ndarray] = None
    depth_units: str = ''
    depth_hw: Optional[Tuple[int, int]] = None
    depth_dtype: Optional[str] = None
    invalid_depth: Tuple[float, ...] = ()
    frame_loader: Optional[Callable[[object], Tuple[np.ndarray, np.ndarray]]] = None
    frame_refs: Optional[List[object]] = None
    view_caches: Optional[List[dict]] = None
    _color_checked: bool = field(default=False, repr=False)

    def __len__(self) -> int:
        return len(self.frame_ids)

    @property
    def scene_name(self) -> str:
        """The recording's name: its folder's, a ``.sens`` file's stem, a JSON file's folder's."""
        path = osp.normpath(self.folder)
        if osp.isfile(path):
            stem, ext = osp.splitext(osp.basename(path))
            return osp.basename(osp.dirname(osp.abspath(path))) if ext == '.json' else stem
        return osp.basename(path)

    def select(self, keep: Sequence[int]) -> 'RGBDSequence':
        """Return the sequence restricted to the frames ``keep`` (indices into this one)."""
        keep = list(keep)
        return replace(
            self, frame_ids=[self.frame_ids[i] for i in keep],
            color_paths=[self.color_paths[i] for i in keep],
            depth_paths=[self.depth_paths[i] for i in keep],
            poses=self.poses[keep], intrinsics=self.intrinsics[keep],
            color_intrinsics=None if self.color_intrinsics is None else
            self.color_intrinsics[keep],
            frame_refs=None if self.frame_refs is None else [self.frame_refs[i] for i in keep],
            view_caches=None if self.view_caches is None else
            [self.view_caches[i] for i in keep],
            skipped=list(self.skipped))

    def read_raw(self, i: int) -> Tuple[Optional[np.ndarray], np.ndarray]:
        """Read frame ``i`` as stored: RGB uint8 (None when unreadable) and raw depth.

        Raises:
            RGBDFolderError: an unreadable depth image, naming the frame and the file.
        """
        frame = f'frame {self.frame_ids[i]}'
        if self.frame_loader is not None:
            return self.frame_loader(self.frame_refs[i])
        depth_path = self.depth_paths[i]
        depth = read_depth_file(depth_path, frame)
        bgr = cv2.imread(self.color_paths[i], cv2.IMREAD_COLOR)
        return (None if bgr is None else np.ascontiguousarray(bgr[:, :, ::-1])), depth

    def load_frame(self, i: int) -> Tuple[np.ndarray, np.ndarray]:
        """Read frame ``i``.

        Args:
            i: frame index in ``[0, len(self))``.

        Returns:
            tuple: ``rgb`` (H, W, 3) uint8 and ``depth`` (H, W) float32 metres (0 = invalid), both
            at the depth image's resolution.

        Raises:
            RGBDFolderError: unreadable files, a depth image that is not single-channel, of another
                size or type than the first frame's, without any valid pixel, or a colour image of
                another size than the depth when the layout gives no colour intrinsics.
        """
        color_path, depth_path = self.color_paths[i], self.depth_paths[i]
        frame = f'frame {self.frame_ids[i]}'
        rgb, raw = self.read_raw(i)
        if raw.ndim != 2:
            raise RGBDFolderError(
                f'{frame}: depth image {depth_path} has {raw.shape[2]} channels; expected a '
                'single-channel depth map (16-bit PNG or float32 NPY/EXR)')
        if self.depth_hw is not None and raw.shape != tuple(self.depth_hw):
            raise RGBDFolderError(
                f'{frame}: depth image {depth_path} is {raw.shape[1]}x{raw.shape[0]}, the first '
                f'frame\'s is {self.depth_hw[1]}x{self.depth_hw[0]}; one recording needs one '
                'depth resolution')
        if self.depth_dtype is not None and raw.dtype.name != self.depth_dtype:
            raise RGBDFolderError(
                f'{frame}: depth image {depth_path} holds {raw.dtype.name}, the first frame '
                f'{self.depth_dtype}; the depth scale was inferred from the first frame')
        if rgb is None:
            raise RGBDFolderError(f'{frame}: cannot read colour image {color_path}')
        depth = raw.astype(np.float32) / np.float32(self.depth_scale)
        for value in self.invalid_depth:
            depth[raw == value] = 0
        depth[~np.isfinite(depth) | (depth < 0)] = 0
        if not (depth > 0).any():
            raise RGBDFolderError(f'{frame}: depth image {depth_path} has no valid pixel')
        h, w = depth.shape
        if rgb.shape[:2] != (h, w):
            if self.color_intrinsics is None:
                raise RGBDFolderError(
                    f'{frame}: colour image {color_path} is {rgb.shape[1]}x{rgb.shape[0]} but '
                    f'depth image {depth_path} is {w}x{h}, and the {self.layout} layout gives '
                    'intrinsics for one camera only, so the colour cannot be registered to the '
                    'depth. Resize the colour images to the depth size, or give the intrinsics of '
                    'both cameras (e.g. intrinsic_color.txt and intrinsic_depth.txt)')
            if not self._color_checked:
                self._color_checked = True
                _check_colour_intrinsics(self.color_intrinsics[i], self.intrinsics[i],
                                         rgb.shape[:2], (h, w), frame)
            rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_LINEAR)
        return np.ascontiguousarray(rgb), depth


def _check_colour_intrinsics(k_color: np.ndarray, k_depth: np.ndarray, color_hw, depth_hw,
                             frame: str) -> None:
    """Warn when resizing the colour image to the depth size does not register the two cameras."""
    sy, sx = depth_hw[0] / color_hw[0], depth_hw[1] / color_hw[1]
    scaled = np.array([k_color[0, 0] * sx, k_color[1, 1] * sy, k_color[0, 2] * sx,
                       k_color[1, 2] * sy])
    ref = np.array([k_depth[0, 0], k_depth[1, 1], k_depth[0, 2], k_depth[1, 2]])
    tol = 0.02 * np.array([ref[0], ref[1], depth_hw[1], depth_hw[0]])
    if (np.abs(scaled - ref) > tol).any():
        logger.warning(
            '%s: the colour intrinsics scaled to the depth size (fx fy cx cy = %s) differ from '
            'the depth intrinsics (%s) by more than 2%%; colour is resized to the depth size as '
            'ODIN does, so colours may be misplaced', frame, np.round(scaled, 2).tolist(),
            np.round(ref, 2).tolist())


def unproject_frame(depth: np.ndarray, intrinsics: np.ndarray, cam2world: np.ndarray) -> np.ndarray:
    """Unproject every pixel of a depth map to world coordinates (integer pixel indices, as ODIN).

    :func:`projects.odin.structures.geometry.unproject_depth` in float64.

    Args:
        depth: (H, W) metres.
        intrinsics: (4, 4) or (3, 3) camera matrix.
        cam2world: (4, 4) pose.

    Returns:
        (H, W, 3) float64 world coordinates.
    """
    import torch

    from projects.odin.structures.geometry import unproject_depth
    return unproject_depth(torch.from_numpy(np.asarray(depth, np.float64))[None],
                           torch.from_numpy(np.asarray(intrinsics, np.float64))[None],
                           torch.from_numpy(np.asarray(cam2world, np.float64))[None])[0].numpy()


# ------------------------------------------------------------------------------------------------
# parsers shared by the readers


def read_depth_file(path: str, frame: str = '') -> np.ndarray:
    """Read a depth map as stored: 16-bit PNG/TIFF, float EXR/TIFF, or ``.npy``.

    Raises:
        RGBDFolderError: a missing, empty or unreadable file.
    """
    where = f'{frame}: ' if frame else ''
    if not osp.isfile(path):
        raise RGBDFolderError(f'{where}depth image {path} not found')
    if osp.getsize(path) == 0:
        raise RGBDFolderError(f'{where}depth image {path} is an empty file')
    ext = osp.splitext(path)[1].lower()
    if ext == '.npy':
        try:
            depth = np.load(path, allow_pickle=False)
        except ValueError as e:
            raise RGBDFolderError(f'{where}cannot read depth array {path}: {e}') from e
        return np.squeeze(depth, axis=-1) if depth.ndim == 3 and depth.shape[-1] == 1 else depth
    if ext == '.exr':
        # OpenCV decodes EXR only when this is set before its first EXR read
        os.environ.setdefault('OPENCV_IO_ENABLE_OPENEXR', '1')
    depth = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if depth is None:
        hint = (' (OpenCV reads EXR only with OPENCV_IO_ENABLE_OPENEXR=1; or save the depth as '
                'float32 .npy)') if ext == '.exr' else ''
        raise RGBDFolderError(f'{where}cannot read depth image {path}{hint}')
    if depth.ndim == 3 and ext == '.exr':
        depth = depth[:, :, 0]  # single-channel EXRs are read as 3 equal channels
    return depth


def depth_units(dtype: np.dtype, layout_scale: Optional[float], what: str,
                override: Optional[float]) -> Tuple[float, str]:
    """Choose the depth scale (raw units per metre) and describe the choice.

    Args:
        dtype: raw depth type of the first frame.
        layout_scale: the layout's own scale for integer depth (e.g. TUM 5000), or None.
        what: where ``layout_scale`` comes from (e.g. ``'TUM convention'``).
        override: ``--depth-scale``, if given.

    Returns:
        tuple: ``(depth_scale, description)``.

    Raises:
        RGBDFolderError: 8-bit depth without an explicit scale.
    """
    kind = f'{np.dtype(dtype).name} depth'
    if override is not None:
        if not override > 0:
            raise RGBDFolderError(f'--depth-scale must be positive, got {override}')
        return float(override), f'{kind}, {override:g} units per metre (--depth-scale)'
    if np.issubdtype(dtype, np.floating):
        return 1.0, f'{kind}, metres (float depth)'
    if np.dtype(dtype) == np.uint8:
        raise RGBDFolderError(
            f'{kind}: 8-bit depth has no conventional unit; pass --depth-scale (units per metre)')
    if layout_scale is not None:
        return float(layout_scale), f'{kind}, {layout_scale:g} units per metre ({what})'
    return DEFAULT_UINT16_SCALE, f'{kind}, millimetres (1000 per metre; 16-bit default)'


def read_matrix(path: str, what: str = 'matrix') -> np.ndarray:
    """Read a whitespace-separated 3×3, 3×4 or 4×4 matrix and return it as 4×4 float64.

    Args:
        path: text file.
        what: description used in error messages (e.g. ``'pose'``).

    Returns:
        (4, 4) float64 array.

    Raises:
        RGBDFolderError: if the file is missing, not numeric, or not 3×3 / 3×4 / 4×4 (3×4 is
            completed with ``[0, 0, 0, 1]``).
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


def intrinsics_matrix(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """(4, 4) float64 intrinsics with K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] top-left."""
    k = np.eye(4)
    k[0, 0], k[1, 1], k[0, 2], k[1, 2] = fx, fy, cx, cy
    return k


def natural_key(name: str):
    """Sort key that orders ``frame_2`` before ``frame_10`` (numbers compared as numbers)."""
    return [(0, int(tok), '') if tok.isdigit() else (1, 0, tok)
            for tok in re.split(r'(\d+)', name) if tok]


def files_by_stem(directory: str, exts: Sequence[str]) -> Dict[str, str]:
    """``{stem: path}`` of the files of ``directory`` with one of the extensions ``exts``."""
    out = {}
    for name in os.listdir(directory):
        stem, ext = osp.splitext(name)
        if ext.lower() in exts and not name.startswith('.'):
            out[stem] = osp.join(directory, name)
    return out


def quaternion_pose(values: Sequence[float]) -> np.ndarray:
    """Convert ``tx ty tz qx qy qz qw`` (TUM order, Hamilton, scalar last) to a 4×4 matrix.

    A non-finite entry gives a matrix full of NaN (the frame is then skipped as an invalid pose).
    A quaternion that is not exactly unit is normalised (scipy's ``Rotation.from_quat``).

    Args:
        values: 7 numbers.

    Returns:
        (4, 4) float64 rigid transform.

    Raises:
        RGBDFolderError: a quaternion of (near) zero norm.
    """
    vals = np.asarray(values, dtype=np.float64)
    if not np.isfinite(vals).all():
        return np.full((4, 4), np.nan)
    quat = vals[3:7]
    if float(quat @ quat) < 1e-12:
        raise RGBDFolderError(f'invalid quaternion {quat.tolist()} (zero norm)')
    mat = np.eye(4)
    mat[:3, :3] = Rotation.from_quat(quat).as_matrix()  # scalar-last (x, y, z, w), as TUM
    mat[:3, 3] = vals[:3]
    return mat


def read_number_rows(path: str) -> List[Tuple[int, List[float]]]:
    """Rows of numbers of a text file as ``(line number, values)``.

    ``#`` comments and blank lines are skipped; spaces, tabs and commas separate values.

    Raises:
        RGBDFolderError: a value that is not a number, naming the file and line.
    """
    rows = []
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith('#'):
                continue
            try:
                rows.append((line_no, [float(v) for v in line.replace(',', ' ').split()]))
            except ValueError as e:
                raise RGBDFolderError(f'{path}:{line_no}: not a row of numbers: "{line}"') from e
    return rows


POSE_ROW_KINDS = {8: 'timestamp tx ty tz qx qy qz qw (TUM)', 12: '3x4 row-major (KITTI)',
                  16: '4x4 row-major (Replica / NICE-SLAM traj.txt)'}


def check_rigid(mat: np.ndarray, where: str) -> None:
    """Raise unless a finite 4×4 has a rotation block and a ``[0, 0, 0, 1]`` last row."""
    if not np.isfinite(mat).all():
        return
    if np.abs(mat[3] - [0, 0, 0, 1]).max() > 1e-6:
        raise RGBDFolderError(f'{where}: last row {mat[3].tolist()} is not [0, 0, 0, 1]; not a '
                              'rigid camera pose')
    r = mat[:3, :3]
    if np.abs(r.T @ r - np.eye(3)).max() > 1e-3 or np.linalg.det(r) < 0:
        raise RGBDFolderError(f'{where}: the 3x3 block is not a rotation (scaled, reflected or '
                              'not row-major?)')


def read_pose_list(path: str) -> Tuple[str, Optional[np.ndarray], List[np.ndarray], List[int]]:
    """Read a pose list with one pose per line, camera-to-world.

    Accepted rows (every row of a file has the same kind): 8 numbers
    ``timestamp tx ty tz qx qy qz qw`` (TUM), 16 numbers (4×4 row-major, Replica / NICE-SLAM
    ``traj.txt``) or 12 numbers (3×4 row-major, KITTI odometry poses).

    Returns:
        tuple: ``kind`` (8, 12 or 16 as str), ``timestamps`` (N,) or None, ``poses`` N (4, 4)
        matrices (NaN-filled when a row is not finite), ``line numbers``.

    Raises:
        RGBDFolderError: no rows, a row with another count of numbers, a zero quaternion or a
            matrix that is not a rigid transform — naming the file and line.
    """
    rows = read_number_rows(path)
    if not rows:
        raise RGBDFolderError(f'{path} holds no pose')
    n = len(rows[0][1])
    expected = '; '.join(f'{k} numbers = {v}' for k, v in POSE_ROW_KINDS.items())
    if n not in POSE_ROW_KINDS:
        raise RGBDFolderError(
            f'{path}:{rows[0][0]}: a pose row of {n} numbers; expected {expected}')
    stamps, mats, lines = [], [], []
    for line_no, vals in rows:
        where = f'{path}:{line_no}'
        if len(vals) != n:
            raise RGBDFolderError(f'{where}: a pose row of {len(vals)} numbers, the first row has '
                                  f'{n} ({POSE_ROW_KINDS[n]})')
        if n == 8:
            stamps.append(vals[0])
            try:
                mat = quaternion_pose(vals[1:])
            except RGBDFolderError as e:
                raise RGBDFolderError(f'{where}: {e}') from e
        else:
            mat = np.eye(4)
            mat[:n // 4] = np.asarray(vals).reshape(n // 4, 4)
            if not np.isfinite(vals).all():
                mat[:] = np.nan
        check_rigid(mat, where)
        mats.append(mat)
        lines.append(line_no)
    return str(n), (np.asarray(stamps) if n == 8 else None), mats, lines


def associate(first: Sequence[float], second: Sequence[float],
              max_difference: float) -> Dict[int, int]:
    """Pair two timestamp lists one-to-one, closest pairs first, at most ``max_difference`` apart.

    This is the rule of TUM RGB-D's ``associate.py``.

    Returns:
        ``{index in first: index in second}``.
    """
    a, b = np.asarray(first, np.float64), np.asarray(second, np.float64)
    if not len(a) or not len(b):
        return {}
    # candidate pairs within the window only (a 100 Hz ground truth makes a full matrix large)
    order_b = np.argsort(b, kind='stable')
    sb = b[order_b]
    lo = np.searchsorted(sb, a - max_difference, side='left')
    hi = np.searchsorted(sb, a + max_difference, side='right')
    counts = hi - lo
    ia = np.repeat(np.arange(len(a)), counts)
    pos = np.concatenate([np.arange(s, e) for s, e in zip(lo, hi)]) if counts.sum() else \
        np.zeros(0, np.int64)
    ib = order_b[pos.astype(np.int64)]
    diff = np.abs(a[ia] - b[ib])
    keep = diff < max_difference
    ia, ib, diff = ia[keep], ib[keep], diff[keep]
    order = np.lexsort((ib, ia, diff))
    out, used = {}, set()
    for i, j in zip(ia[order].tolist(), ib[order].tolist()):
        if i not in out and j not in used:
            out[i] = j
            used.add(j)
    return out


def find_file(folder: str, names: Sequence[str]) -> Optional[str]:
    """The first of ``names`` that is a file in ``folder``, or None."""
    for name in names:
        path = osp.join(folder, name)
        if osp.isfile(path):
            return path
    return None


# ------------------------------------------------------------------------------------------------
# the reader interface


def _has(folder: str, marker: str) -> bool:
    """Whether ``folder`` holds ``marker`` (a name or glob; trailing ``/`` = a folder)."""
    pattern = osp.join(glob.escape(folder), marker.rstrip('/'))
    check = osp.isdir if marker.endswith('/') else osp.exists
    return any(check(p) for p in glob.glob(pattern))


class RecordingReader:
    """One recording format. Subclasses are registered in :data:`RECORDING_READERS`.

    Args:
        path: the recording (folder or file).
        intrinsics_file: explicit 3×3 / 4×4 depth intrinsics overriding the recording's.
        max_time_diff: largest timestamp gap (s) when frames are associated by time.
    """

    #: layout name (the registry key and the demo's ``--layout`` value).
    name: str = ''
    #: order of :meth:`detect` tries (lower first): specific formats before generic folders.
    priority: int = 100
    #: one line for error messages and docs: which files make this layout.
    summary: str = ''
    #: raw units per metre of integer depth in this layout, and where that comes from.
    depth_scale: Optional[float] = None
    depth_scale_source: str = ''
    #: names that identify the layout in a folder, all required (glob patterns allowed; a
    #: trailing ``/`` asks for a folder); used by the default :meth:`detect`.
    markers: Tuple[str, ...] = ()
    #: raw depth values meaning "no measurement" besides 0.
    invalid_depth: Tuple[float, ...] = ()

    def __init__(self, path: str, intrinsics_file: Optional[str] = None,
                 max_time_diff: float = 0.02) -> None:
        self.path = path
        self.intrinsics_file = intrinsics_file
        self.max_time_diff = max_time_diff

    @classmethod
    def detect(cls, path: str) -> bool:
        """Whether ``path`` looks like a recording of this layout (cheap: file names only).

        The default: ``path`` is a folder with every one of :attr:`markers`.
        """
        if not cls.markers or not osp.isdir(path):
            return False
        return all(_has(path, m) for m in cls.markers)

    def read(self) -> RGBDSequence:
        """Index the recording (poses, intrinsics, file names); images are not read here.

        Returns:
            The unfiltered sequence: invalid poses are kept (NaN/inf) for the caller to drop and
            log; ``depth_scale`` is the layout's (or 0 when it must be inferred from the data).
        """
        raise NotImplementedError

    def sequence(self, ids: List[str], colors: List[str], depths: List[str],
                 poses: Sequence[np.ndarray], intrinsics: Sequence[np.ndarray],
                 color_intrinsics: Optional[Sequence[np.ndarray]] = None,
                 skipped: Optional[List[str]] = None, **kwargs) -> RGBDSequence:
        """Build the :class:`RGBDSequence` of this reader from per-frame lists."""
        if not ids:
            raise RGBDFolderError(f'{self.path}: no frame found ({self.summary})')
        return RGBDSequence(
            folder=self.path, layout=self.name, frame_ids=list(ids), color_paths=list(colors),
            depth_paths=list(depths), poses=np.stack(poses).astype(np.float64),
            intrinsics=np.stack(intrinsics).astype(np.float64),
            depth_scale=float(self.depth_scale or 0), skipped=list(skipped or []),
            color_intrinsics=None if color_intrinsics is None else
            np.stack(color_intrinsics).astype(np.float64),
            invalid_depth=tuple(self.invalid_depth), **kwargs)

    def find_intrinsics(self, folder: str, names: Sequence[str]) -> str:
        """The ``--intrinsics`` file, else the first of ``names`` in ``folder``.

        Raises:
            RGBDFolderError: none found, listing the names looked for.
        """
        if self.intrinsics_file is not None:
            return self.intrinsics_file
        path = find_file(folder, names)
        if path is None:
            raise RGBDFolderError(
                f'{folder}: no intrinsics file; provide one of {", ".join(names)} in the folder '
                'or pass --intrinsics FILE (3x3 or 4x4, for the depth image)')
        return path
