"""NeRFStudio-style ``transforms.json`` (nerfstudio data, Polycam and Record3D exports)."""
import json
import logging
import os.path as osp
from typing import Optional, Tuple

import numpy as np

from .base import (
    RECORDING_READERS,
    RecordingReader,
    RGBDFolderError,
    RGBDSequence,
    check_rigid,
    intrinsics_matrix,
    read_depth_file,
    read_matrix,
)

logger = logging.getLogger('projects.odin.datasets.recordings')

#: camera axes: OpenGL (x right, y up, z back) -> OpenCV (x right, y down, z forward).
OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])
_PERSPECTIVE = ('PINHOLE', 'SIMPLE_PINHOLE', 'OPENCV', 'PERSPECTIVE', 'RADIAL', 'SIMPLE_RADIAL')
_DISTORTION = ('k1', 'k2', 'k3', 'k4', 'p1', 'p2')


@RECORDING_READERS.register_module(name='nerfstudio')
class TransformsJsonReader(RecordingReader):
    """``transforms.json`` with ``depth_file_path`` per frame (nerfstudio, Polycam, Record3D).

    Format definition: nerfstudio (github.com/nerfstudio-project/nerfstudio),
    ``docs/quickstart/data_conventions.md`` — cameras use the OpenGL/Blender convention (+X right,
    +Y up, +Z back, looking along -Z) and ``transform_matrix`` is camera-to-world (its columns are
    the camera's +X, +Y, +Z in the world, the last column its origin); ``fl_x fl_y cx cy w h``
    are global or per frame (``nerfstudio/data/dataparsers/nerfstudio_dataparser.py``,
    ``Nerfstudio._generate_dataparser_outputs``: a global key wins over the frames', frames are
    sorted by file name). ``nerfstudio/process_data/polycam_utils.py`` (``polycam_to_json``) writes
    per-frame intrinsics and ``depth_file_path``; ``record3d_utils.py`` (``record3d_to_json``)
    global intrinsics. Depth: nerfstudio scales it by ``depth_unit_scale_factor`` (default 1e-3,
    millimetres) and resizes it to the image size (``data_utils.get_depth_image_from_path``), so
    the depth covers the colour image's field of view and its intrinsics are the colour ones
    scaled to its size. Here 16-bit depth is millimetres and float depth (``.npy``/``.exr``) is
    metres (``--depth-scale`` overrides). The pose is turned to OpenCV axes by negating its y and z
    columns. nerfstudio's own re-orientation and rescaling of the poses (``orientation_method``,
    ``auto_scale_poses``) are training options, not part of the file, and are not applied.
    """

    name = 'nerfstudio'
    priority = 20
    summary = 'transforms.json with file_path, depth_file_path and transform_matrix per frame'
    depth_scale, depth_scale_source = 1000.0, 'millimetres, nerfstudio depth_unit_scale_factor 1e-3'

    @classmethod
    def detect(cls, path: str) -> bool:
        """Whether ``path`` has this layout's files (names only; see the class docstring)."""
        if osp.isfile(path):
            return path.endswith('.json')
        return osp.isfile(osp.join(path, 'transforms.json'))

    def read(self) -> RGBDSequence:
        """Index the recording (see :meth:`RecordingReader.read`)."""
        json_path = self.path if osp.isfile(self.path) else osp.join(self.path, 'transforms.json')
        root = osp.dirname(json_path)
        try:
            with open(json_path) as f:
                meta = json.load(f)
        except (OSError, ValueError) as e:
            raise RGBDFolderError(f'{json_path}: cannot read JSON: {e}') from e
        frames = meta.get('frames')
        if not isinstance(frames, list) or not frames:
            raise RGBDFolderError(f'{json_path}: no "frames" list')
        model = str(meta.get('camera_model', 'PINHOLE')).upper()
        if model not in _PERSPECTIVE:
            raise RGBDFolderError(f'{json_path}: camera_model {model} is not a perspective camera; '
                                  'only pinhole-like cameras can be unprojected')
        for i, fr in enumerate(frames):
            if 'file_path' not in fr:
                raise RGBDFolderError(f'{json_path}: frame {i} has no file_path')
        frames = sorted(frames, key=lambda fr: str(fr['file_path']))
        ids, colors, depths, poses, k_color, k_depth = [], [], [], [], [], []
        depth_hw: Optional[Tuple[int, int]] = None
        distorted = False
        for i, fr in enumerate(frames):
            where = f'{json_path}: frame {i} ({fr["file_path"]})'
            if 'depth_file_path' not in fr:
                raise RGBDFolderError(
                    f'{where} has no depth_file_path; ODIN needs a depth map per frame (exports '
                    'without depth, e.g. ns-process-data record3d, cannot be used)')
            try:
                mat = np.asarray(fr['transform_matrix'], dtype=np.float64)
            except (KeyError, TypeError, ValueError) as e:
                raise RGBDFolderError(f'{where}: missing or malformed transform_matrix') from e
            if mat.shape == (3, 4):
                mat = np.vstack([mat, [0, 0, 0, 1]])
            if mat.shape != (4, 4):
                raise RGBDFolderError(f'{where}: transform_matrix is {mat.shape}, expected 4x4')
            check_rigid(mat, where)
            vals = {}
            for key in ('fl_x', 'fl_y', 'cx', 'cy', 'w', 'h'):
                value = meta.get(key, fr.get(key))
                if value is None:
                    raise RGBDFolderError(f'{where}: no {key} (global or per frame)')
                vals[key] = float(value)
            distorted |= any(float(meta.get(k, fr.get(k, 0.0)) or 0.0) != 0.0
                             for k in _DISTORTION)
            kc = intrinsics_matrix(vals['fl_x'], vals['fl_y'], vals['cx'], vals['cy'])
            if self.intrinsics_file is not None:
                kd = read_matrix(self.intrinsics_file, 'intrinsics')
            else:
                if depth_hw is None:  # every depth map must have the first one's size
                    raw = read_depth_file(osp.join(root, fr['depth_file_path']), where)
                    depth_hw = raw.shape[:2]
                kd = kc.copy()
                kd[0, :3] *= depth_hw[1] / vals['w']
                kd[1, :3] *= depth_hw[0] / vals['h']
            ids.append(osp.splitext(osp.basename(str(fr['file_path'])))[0])
            colors.append(osp.join(root, fr['file_path']))
            depths.append(osp.join(root, fr['depth_file_path']))
            poses.append(mat @ OPENGL_TO_OPENCV)
            k_color.append(kc)
            k_depth.append(kd)
        if distorted:
            logger.warning('%s: lens distortion coefficients are ignored (images are used as if '
                           'undistorted)', json_path)
        return self.sequence(ids, colors, depths, poses, k_depth, k_color, depth_hw=depth_hw)
