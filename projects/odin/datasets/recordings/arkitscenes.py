"""Apple ARKitScenes (3DOD / raw) video folders."""
import glob
import os.path as osp
from typing import Dict, List, Optional

import numpy as np
from scipy.spatial.transform import Rotation

from .base import (
    RECORDING_READERS,
    RecordingReader,
    RGBDFolderError,
    RGBDSequence,
    intrinsics_matrix,
    read_matrix,
    read_number_rows,
)


def _timestamp(name: str) -> str:
    """``<video_id>_<timestamp>.png`` -> ``<timestamp>``."""
    return osp.splitext(name)[0].rsplit('_', 1)[-1]


@RECORDING_READERS.register_module(name='arkitscenes')
class ARKitScenesReader(RecordingReader):
    """An ARKitScenes video folder (3DOD or raw).

    Files: ``lowres_wide/``, ``lowres_depth/``, ``lowres_wide_intrinsics/`` and
    ``lowres_wide.traj``. The path may be the folder holding them (a ``raw`` video folder, or the
    ``<video_id>_frames/`` folder of a 3DOD scene) or the 3DOD scene folder ``<video_id>/`` of the
    download (``download_data.py 3dod``), which holds ``<video_id>_frames/`` next to the scene's
    annotation and mesh (:meth:`frames_folder`).

    Format definition: github.com/apple/ARKitScenes, ``DATA.md`` (depth: uint16 PNG in
    millimetres; ``.pincam``: one line ``width height fx fy cx cy``; ``.traj``: per line a
    timestamp, an axis-angle rotation in radians and a translation in metres) and
    ``threedod/benchmark_scripts/utils/tenFpsDataLoader.py``: ``TrajStringToMatrix`` builds
    ``[R | t]`` from the row with ``cv2.Rodrigues`` (``utils/rotation.py``,
    ``convert_angle_axis_to_matrix3``) as the world-to-camera ``r_w_to_p, t_w_to_p`` and returns
    its inverse, the camera-to-world pose that ``generate_point`` applies to pinhole-unprojected
    (OpenCV-axes) points; ``st2_camera_intrinsics`` reads the ``.pincam``. Frames are the depth
    images; each one's pose is the ``.traj`` row nearest in time (the loader accepts 0.005 s;
    ``max_time_diff`` here) and its intrinsics the ``.pincam`` of the same timestamp (or ±1 ms, as
    the loader). Frames without a pose are skipped and logged. The world is ARKit's (gravity
    along -y), not ScanNet's z-up.
    """

    name = 'arkitscenes'
    priority = 25
    summary = 'lowres_wide/, lowres_depth/, lowres_wide_intrinsics/*.pincam, lowres_wide.traj'
    depth_scale, depth_scale_source = 1000.0, 'millimetres, ARKitScenes DATA.md'
    markers = ('lowres_depth/', '*.traj')

    @classmethod
    def frames_folder(cls, path: str) -> Optional[str]:
        """The folder holding the frames of ``path``: itself or its ``<video_id>_frames/``.

        Args:
            path: an ARKitScenes video folder or 3DOD scene folder.

        Returns:
            ``path`` when it holds the frame folders (:attr:`markers`), else its
            ``<basename>_frames/`` subfolder when that one does, else the only ``*_frames/``
            subfolder that does; None otherwise (also for several candidates, none named after
            ``path``).
        """
        holds_frames = super().detect  # the markers, in the folder itself
        if holds_frames(path):
            return path
        if not osp.isdir(path):
            return None
        named = osp.join(path, osp.basename(osp.normpath(path)) + '_frames')
        found = [named] if osp.isdir(named) else sorted(
            glob.glob(osp.join(glob.escape(path), '*_frames')))
        found = [f for f in found if holds_frames(f)]
        return found[0] if len(found) == 1 else None

    @classmethod
    def detect(cls, path: str) -> bool:
        """Whether ``path`` is an ARKitScenes video folder or 3DOD scene folder."""
        return cls.frames_folder(path) is not None

    def _read_traj(self, path: str):
        stamps, mats = [], []
        for line_no, vals in read_number_rows(path):
            if len(vals) != 7:
                raise RGBDFolderError(f'{path}:{line_no}: a trajectory row of {len(vals)} '
                                      'numbers; expected 7 (timestamp, axis-angle, translation)')
            w2c = np.eye(4)
            w2c[:3, :3] = Rotation.from_rotvec(vals[1:4]).as_matrix()  # as cv2.Rodrigues
            w2c[:3, 3] = vals[4:7]
            stamps.append(vals[0])
            mats.append(np.linalg.inv(w2c) if np.isfinite(w2c).all() else
                        np.full((4, 4), np.nan))
        if not stamps:
            raise RGBDFolderError(f'{path} holds no pose')
        return np.asarray(stamps), mats

    def read(self) -> RGBDSequence:
        """Index the recording (see :meth:`RecordingReader.read`)."""
        folder = self.frames_folder(self.path)
        if folder is None:
            raise RGBDFolderError(
                f'{self.path}: not an ARKitScenes video folder ({self.summary}) nor a 3DOD scene '
                'folder holding one <video_id>_frames/ folder with them')
        traj = osp.join(folder, 'lowres_wide.traj')
        if not osp.isfile(traj):
            trajs = sorted(glob.glob(osp.join(glob.escape(folder), '*.traj')))
            traj = trajs[0]
        stamps, mats = self._read_traj(traj)
        depth_dir, color_dir = osp.join(folder, 'lowres_depth'), osp.join(folder, 'lowres_wide')
        intr_dir = osp.join(folder, 'lowres_wide_intrinsics')
        depths = sorted(glob.glob(osp.join(glob.escape(depth_dir), '*.png')),
                        key=lambda p: float(_timestamp(osp.basename(p))))
        if not depths:
            raise RGBDFolderError(f'{folder}: no depth images in lowres_depth/')
        pincams: Dict[str, str] = {_timestamp(osp.basename(p)): p
                                   for p in glob.glob(osp.join(glob.escape(intr_dir), '*.pincam'))}
        ids, colors, dpaths, poses, intr, skipped = [], [], [], [], [], []
        for dpath in depths:
            name = osp.basename(dpath)
            ts = _timestamp(name)
            t = float(ts)
            j = int(np.abs(stamps - t).argmin())
            if abs(stamps[j] - t) > self.max_time_diff:
                skipped.append(f'frame {ts}: no pose in {osp.basename(traj)} within '
                               f'{self.max_time_diff}s')
                continue
            if self.intrinsics_file is not None:
                k = read_matrix(self.intrinsics_file, 'intrinsics')
            else:
                k = self._pincam(pincams, ts, folder)
            ids.append(ts)
            colors.append(osp.join(color_dir, name))
            dpaths.append(dpath)
            poses.append(mats[j])
            intr.append(k)
        if not ids:
            raise RGBDFolderError(f'{folder}: no depth frame has a pose in {osp.basename(traj)} '
                                  f'within {self.max_time_diff}s')
        # lowres_wide and lowres_depth are registered images of one size (256x192)
        return self.sequence(ids, colors, dpaths, poses, intr, list(intr), skipped=skipped)

    @staticmethod
    def _pincam(pincams: Dict[str, str], ts: str, folder: str) -> np.ndarray:
        t = float(ts)
        for cand in (ts, f'{t - 0.001:.3f}', f'{t + 0.001:.3f}'):
            if cand in pincams:
                rows: List = read_number_rows(pincams[cand])
                if len(rows) != 1 or len(rows[0][1]) != 6:
                    raise RGBDFolderError(f'{pincams[cand]}: expected one line "width height fx '
                                          'fy cx cy"')
                _, _, fx, fy, cx, cy = rows[0][1]
                return intrinsics_matrix(fx, fy, cx, cy)
        raise RGBDFolderError(f'{folder}: frame {ts}: no lowres_wide_intrinsics/*_{ts}.pincam')
