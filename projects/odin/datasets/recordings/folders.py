"""Folder layouts of images + text poses: ScanNet export, TUM RGB-D, 7-Scenes, plain folders."""
import glob
import logging
import os.path as osp
from typing import List, Optional

import numpy as np

from .base import (
    DEPTH_EXTS,
    IMAGE_EXTS,
    RECORDING_READERS,
    RecordingReader,
    RGBDFolderError,
    RGBDSequence,
    associate,
    files_by_stem,
    find_file,
    intrinsics_matrix,
    natural_key,
    read_matrix,
    read_pose_list,
)

logger = logging.getLogger('projects.odin.datasets.recordings')

INTRINSICS_NAMES = ('intrinsics.txt', 'intrinsic.txt', 'camera-intrinsics.txt', 'camera.txt',
                    'K.txt', 'intrinsic_depth.txt', osp.join('intrinsic', 'intrinsic_depth.txt'))
COLOR_DIRS = ('rgb', 'color', 'colour', 'image', 'images')
DEPTH_DIRS = ('depth', 'depths')


def _check_counts(folder, colors, depths, poses, cname, dname, pname):
    if not colors:
        raise RGBDFolderError(f'{folder}: no colour images in {cname}')
    if not poses:
        raise RGBDFolderError(f'{folder}: no poses in {pname} (camera-to-world 4x4 per frame)')
    for name, other in ((dname, depths), (pname, poses)):
        missing = sorted(set(colors) - set(other), key=natural_key)
        if missing:
            raise RGBDFolderError(
                f'{folder}: {len(colors)} colour frames but {len(other)} in {name}; e.g. frame '
                f'{missing[0]} has no {name} file')


@RECORDING_READERS.register_module(name='scannet')
class ScanNetExportReader(RecordingReader):
    """ScanNet frames exported from a ``.sens`` (and our converter's ``frames/<scene>`` folders).

    Files: ``color/<i>.jpg``, ``depth/<i>.png``, ``pose/<i>.txt``, ``intrinsic/intrinsic_depth.txt``
    (and ``intrinsic_color.txt``). Format definition: ScanNet's ``SensReader/python/SensorData.py``
    (github.com/ScanNet/ScanNet), ``SensorData.export_depth_images`` writes the raw uint16 depth
    (``depth_shift`` 1000 = millimetres), ``export_poses`` writes each frame's ``camera_to_world``
    4×4 as text, ``export_intrinsics`` writes ``intrinsic_color.txt`` / ``intrinsic_depth.txt``
    (4×4). ScanNet's camera axes are OpenCV's (x right, y down, z forward): NICE-SLAM's loader
    (``src/utils/datasets.py``, class ``ScanNet``) negates the y and z columns to obtain its
    OpenGL-style cameras. Our converter writes colour resized to the depth size and only
    ``intrinsic_depth.txt``; per-frame ``intrinsic/<i>.txt`` files are also read.
    """

    name = 'scannet'
    priority = 30
    summary = 'color/<i>.jpg, depth/<i>.png, pose/<i>.txt, intrinsic/intrinsic_depth.txt'
    depth_scale, depth_scale_source = 1000.0, 'millimetres, ScanNet depth_shift'
    markers = ('color/', 'depth/', 'pose/')

    def read(self) -> RGBDSequence:
        """Index the recording (see :meth:`RecordingReader.read`)."""
        folder = self.path
        colors = files_by_stem(osp.join(folder, 'color'), IMAGE_EXTS)
        depths = files_by_stem(osp.join(folder, 'depth'), DEPTH_EXTS)
        pose_dir = osp.join(folder, 'pose')
        poses = files_by_stem(pose_dir, ('.txt',))
        _check_counts(folder, colors, depths, poses, 'color/', 'depth/', 'pose/')
        stems = sorted(colors, key=natural_key)
        intr_dir = osp.join(folder, 'intrinsic')
        k_color = None
        if self.intrinsics_file is not None:
            intr = [read_matrix(self.intrinsics_file, 'intrinsics')] * len(stems)
        elif osp.isfile(osp.join(intr_dir, 'intrinsic_depth.txt')):
            intr = [read_matrix(osp.join(intr_dir, 'intrinsic_depth.txt'), 'intrinsics')]
            intr = intr * len(stems)
            if osp.isfile(osp.join(intr_dir, 'intrinsic_color.txt')):
                k_color = [read_matrix(osp.join(intr_dir, 'intrinsic_color.txt'),
                                       'intrinsics')] * len(stems)
        elif osp.isdir(intr_dir) and all(osp.isfile(osp.join(intr_dir, s + '.txt'))
                                         for s in stems):
            intr = [read_matrix(osp.join(intr_dir, s + '.txt'), 'intrinsics') for s in stems]
        else:
            intr = [read_matrix(self.find_intrinsics(folder, INTRINSICS_NAMES),
                                'intrinsics')] * len(stems)
        mats = [read_matrix(osp.join(pose_dir, s + '.txt'), 'pose') for s in stems]
        return self.sequence(stems, [colors[s] for s in stems], [depths[s] for s in stems],
                             mats, intr, k_color)


@RECORDING_READERS.register_module(name='7scenes')
class SevenScenesReader(RecordingReader):
    """Microsoft RGB-D Dataset 7-Scenes.

    Files: ``frame-XXXXXX.color.png``, ``frame-XXXXXX.depth.png``, ``frame-XXXXXX.pose.txt``.
    Format definition: the dataset page
    (microsoft.com/en-us/research/project/rgb-d-dataset-7-scenes) — depth in millimetres, 16-bit
    PNG, invalid depth 65535; pose = camera-to-world 4×4 in homogeneous coordinates; principal
    point (320, 240), focal length (585, 585), used when the folder has no
    ``camera-intrinsics.txt`` (the dataset ships none). The colour and depth
    cameras are not registered in 7-Scenes (both 640×480; the depth intrinsics are used).
    """

    name = '7scenes'
    priority = 50
    summary = 'frame-XXXXXX.color.png / .depth.png / .pose.txt (+ camera-intrinsics.txt)'
    depth_scale, depth_scale_source = 1000.0, 'millimetres, 7-Scenes'
    markers = ('frame-*.color.*',)
    invalid_depth = (65535,)
    PUBLISHED_INTRINSICS = (585.0, 585.0, 320.0, 240.0)

    def read(self) -> RGBDSequence:
        """Index the recording (see :meth:`RecordingReader.read`)."""
        folder = self.path

        def stems(pattern):
            return {osp.basename(p).split('.')[0]: p
                    for p in glob.glob(osp.join(glob.escape(folder), pattern))}

        colors, depths = stems('frame-*.color.*'), stems('frame-*.depth.png')
        poses = stems('frame-*.pose.txt')
        _check_counts(folder, colors, depths, poses, 'frame-*.color.*', 'frame-*.depth.png',
                      'frame-*.pose.txt')
        keys = sorted(colors, key=natural_key)
        path = self.intrinsics_file or find_file(folder, ('camera-intrinsics.txt',) +
                                                 INTRINSICS_NAMES)
        if path is not None:
            intr = read_matrix(path, 'intrinsics')
        else:
            intr = intrinsics_matrix(*self.PUBLISHED_INTRINSICS)
            logger.info('%s: no intrinsics file; using the published 7-Scenes intrinsics '
                        'fx=fy=585, cx=320, cy=240', folder)
        mats = [read_matrix(poses[s], 'pose') for s in keys]
        return self.sequence(keys, [colors[s] for s in keys], [depths[s] for s in keys], mats,
                             [intr] * len(keys))


def _list_files(folder: str, dirnames, exts) -> tuple:
    for d in dirnames:
        path = osp.join(folder, d)
        if osp.isdir(path):
            return d, files_by_stem(path, exts)
    return None, {}


def find_pose_list(folder: str) -> Optional[str]:
    """The pose list of a plain folder, or None.

    ``groundtruth.txt``, else one ``*pose*.txt``, else one ``traj*.txt``; several candidates of
    one kind are refused, naming them.
    """
    path = find_file(folder, ('groundtruth.txt',))
    if path is not None:
        return path
    for pattern in ('*pose*.txt', 'traj*.txt'):
        found = sorted(p for p in glob.glob(osp.join(glob.escape(folder), pattern))
                       if osp.isfile(p))
        if len(found) > 1:
            raise RGBDFolderError(
                f'{folder}: several pose lists ({", ".join(osp.basename(p) for p in found)}); '
                'keep the one that belongs to the images')
        if found:
            return found[0]
    return None


@RECORDING_READERS.register_module(name='plain')
class PlainFolderReader(RecordingReader):
    """A colour folder, a depth folder, one pose list and one intrinsics file.

    Files: a colour folder ``rgb|color|colour|image|images``, a depth folder ``depth|depths``
    (16-bit PNG: millimetres; float32 ``.npy`` / ``.exr`` / ``.tif``: metres), a pose list
    ``groundtruth.txt`` / ``*pose*.txt`` / ``traj*.txt`` and an intrinsics file (3×3 or 4×4:
    ``intrinsic.txt``, ``intrinsics.txt``, ``K.txt``...). Every pose row is camera-to-world, in
    one of three forms (``base.read_pose_list``):

    * ``timestamp tx ty tz qx qy qz qw`` — TUM RGB-D's trajectory format (vision.in.tum.de/data/
      datasets/rgbd-dataset/file_formats: the optical centre's position and orientation, unit
      quaternion, with respect to the world); its tools (``rgbd_benchmark_tools/evaluate_rpe.py``,
      ``transform44``) build the homogeneous matrix from it;
    * 16 numbers: a 4×4 row-major matrix per line, as Replica's ``traj.txt`` read by NICE-SLAM
      (github.com/cvg/nice-slam, ``src/utils/datasets.py``, ``Replica.load_poses``: reshape(4, 4),
      then y and z columns negated for NICE-SLAM's OpenGL cameras, so the file holds OpenCV axes);
    * 12 numbers: 3×4 row-major, as KITTI odometry poses (github.com/utiasSTARS/pykitti,
      ``pykitti/odometry.py``, ``_load_poses``: reshape(3, 4) + ``[0, 0, 0, 1]`` = ``T_w_cam0``).

    Frames are paired by timestamp when ``rgb.txt`` and ``depth.txt`` lists exist (that is the
    ``tum`` layout); otherwise colour and depth are paired by file stem (or by natural sort order
    when the stems differ) and the i-th pose row belongs to the i-th frame, which needs equal
    counts. A colour image of another size than the depth is refused unless both
    ``intrinsic_color.txt`` and ``intrinsic_depth.txt`` are given.
    """

    name = 'plain'
    priority = 90
    summary = ('rgb|color|image|images/, depth/, a pose list (groundtruth.txt, *pose*.txt, '
               'traj*.txt) and an intrinsics file (intrinsic.txt, 3x3 or 4x4)')

    @classmethod
    def detect(cls, path: str) -> bool:
        """Whether ``path`` has this layout's files (names only; see the class docstring)."""
        return (any(osp.isdir(osp.join(path, d)) for d in COLOR_DIRS) and
                any(osp.isdir(osp.join(path, d)) for d in DEPTH_DIRS))

    def _intrinsics(self, n: int):
        folder = self.path
        depth_k = find_file(folder, ('intrinsic_depth.txt',))
        color_k = find_file(folder, ('intrinsic_color.txt',))
        if self.intrinsics_file is None and depth_k and color_k:
            return ([read_matrix(depth_k, 'intrinsics')] * n,
                    [read_matrix(color_k, 'intrinsics')] * n)
        return [read_matrix(self.find_intrinsics(folder, INTRINSICS_NAMES), 'intrinsics')] * n, None

    def read(self) -> RGBDSequence:
        """Index the recording (see :meth:`RecordingReader.read`)."""
        folder = self.path
        cdir, colors = _list_files(folder, COLOR_DIRS, IMAGE_EXTS)
        ddir, depths = _list_files(folder, DEPTH_DIRS, DEPTH_EXTS)
        if cdir is None or ddir is None:
            raise RGBDFolderError(f'{folder}: expected a colour folder ({"|".join(COLOR_DIRS)}) '
                                  f'and a depth folder ({"|".join(DEPTH_DIRS)})')
        pose_list = find_pose_list(folder)
        if pose_list is None:
            raise RGBDFolderError(
                f'{folder}: no pose list; expected groundtruth.txt, *pose*.txt or traj*.txt with '
                'one camera-to-world pose per line (timestamp tx ty tz qx qy qz qw, 12 or 16 '
                'numbers); a ScanNet export keeps its poses in pose/<i>.txt')
        _, _, mats, _ = read_pose_list(pose_list)
        c_keys = sorted(colors, key=natural_key)
        d_keys = sorted(depths, key=natural_key)
        if not c_keys:
            raise RGBDFolderError(f'{folder}: no colour images (.jpg/.png) in {cdir}/')
        if len(c_keys) != len(d_keys) or len(c_keys) != len(mats):
            raise RGBDFolderError(
                f'{folder}: {len(c_keys)} colour images in {cdir}/, {len(d_keys)} depth images in '
                f'{ddir}/ and {len(mats)} poses in {osp.basename(pose_list)}; without timestamp '
                'lists (rgb.txt and depth.txt) frames are paired in sorted order, which needs '
                'equal counts')
        if set(c_keys) != set(d_keys):
            logger.info('%s: colour and depth file names differ; pairing them in sorted order',
                        folder)
            d_keys_for = dict(zip(c_keys, d_keys))
        else:
            d_keys_for = {k: k for k in c_keys}
        intr, k_color = self._intrinsics(len(c_keys))
        ids = [str(k) for k in c_keys]
        return self.sequence(ids, [colors[k] for k in c_keys],
                             [depths[d_keys_for[k]] for k in c_keys], mats, intr, k_color)


@RECORDING_READERS.register_module(name='tum')
class TUMReader(PlainFolderReader):
    """TUM RGB-D benchmark sequences.

    Files: ``rgb/``, ``depth/``, ``rgb.txt`` and ``depth.txt`` (``timestamp path`` lines), a pose
    list ``groundtruth.txt`` and an intrinsics file (the dataset gives them on its web page, e.g.
    ``intrinsics.txt``). Format definition: vision.in.tum.de/data/datasets/rgbd-dataset/
    file_formats — depth PNGs are scaled by 5000 (5000 = 1 m), ``groundtruth.txt`` rows are
    ``timestamp tx ty tz qx qy qz qw``: position and orientation (unit quaternion, scalar last) of
    the colour camera's optical centre with respect to the world, i.e. camera-to-world. The
    dataset's ``associate.py`` (``read_file_list``: ``#`` comments, commas and tabs as spaces;
    ``associate``: one-to-one pairs, closest first, within ``max_difference`` = 0.02 s) pairs
    colour with depth; poses are paired with colour the same way. Colour frames without a partner
    are skipped and logged. A pose list of 12 or 16 numbers per row (no timestamps) is paired
    with the colour list in order.
    """

    name = 'tum'
    priority = 40
    summary = 'rgb.txt, depth.txt, groundtruth.txt (t tx ty tz qx qy qz qw) and an intrinsics file'
    depth_scale, depth_scale_source = 5000.0, 'TUM RGB-D convention: 5000 = 1 m'
    markers = ('rgb.txt', 'depth.txt')
    # the markers, not the plain layout's folder test this class would inherit
    detect = RecordingReader.__dict__['detect']

    def _read_list(self, path: str, what: str):
        if not osp.isfile(path):
            raise RGBDFolderError(f'{self.path}: missing {what}')
        stamps, files = [], []
        for line_no, line in _text_rows(path):
            parts = line.split()
            try:
                stamps.append(float(parts[0]))
                files.append(parts[1])
            except (ValueError, IndexError) as e:
                raise RGBDFolderError(f'{path}:{line_no}: expected "timestamp path", got '
                                      f'"{line}"') from e
        if not stamps:
            raise RGBDFolderError(f'{path} lists no entries')
        return np.asarray(stamps), files

    def read(self) -> RGBDSequence:
        """Index the recording (see :meth:`RecordingReader.read`)."""
        folder = self.path
        c_t, c_files = self._read_list(osp.join(folder, 'rgb.txt'), 'colour list rgb.txt')
        d_t, d_files = self._read_list(osp.join(folder, 'depth.txt'), 'depth list depth.txt')
        pose_list = find_file(folder, ('groundtruth.txt', 'poses.txt', 'trajectory.txt'))
        if pose_list is None:
            pose_list = find_pose_list(folder)
        if pose_list is None:
            raise RGBDFolderError(
                f'{folder}: no pose list (groundtruth.txt with "timestamp tx ty tz qx qy qz qw")')
        _, p_t, mats, _ = read_pose_list(pose_list)
        c2d = associate(c_t, d_t, self.max_time_diff)
        if p_t is not None:
            c2p = associate(c_t, p_t, self.max_time_diff)
        elif len(mats) == len(c_t):
            c2p = {i: i for i in range(len(c_t))}
        else:
            raise RGBDFolderError(
                f'{pose_list}: {len(mats)} poses without timestamps for {len(c_t)} entries of '
                'rgb.txt; untimed poses are paired in order, which needs equal counts')
        ids, colors, depths, poses, skipped = [], [], [], [], []
        for i, t in enumerate(c_t):
            if i not in c2d or i not in c2p:
                skipped.append(f'rgb frame at t={t:.6f}: no depth/pose within '
                               f'{self.max_time_diff}s')
                continue
            ids.append(f'{t:.6f}')
            colors.append(osp.join(folder, c_files[i]))
            depths.append(osp.join(folder, d_files[c2d[i]]))
            poses.append(mats[c2p[i]])
        if not ids:
            raise RGBDFolderError(
                f'{folder}: no colour frame has a depth image and a pose within '
                f'{self.max_time_diff}s (check the timestamps of rgb.txt, depth.txt and '
                f'{osp.basename(pose_list)})')
        intr, k_color = self._intrinsics(len(ids))
        return self.sequence(ids, colors, depths, poses, intr, k_color, skipped=skipped)


def _text_rows(path: str):
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            line = line.strip().replace(',', ' ').replace('\t', ' ')
            if line and not line.startswith('#'):
                yield line_no, line


__all__: List[str] = ['ScanNetExportReader', 'SevenScenesReader', 'PlainFolderReader',
                      'TUMReader', 'find_pose_list']
