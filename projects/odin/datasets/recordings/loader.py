"""Load a posed RGB-D recording in any supported layout (the inference API and the demo read it).

One reader per layout is registered in
:data:`projects.odin.datasets.recordings.RECORDING_READERS` (see each reader's docstring for the
files it reads and the definition of the format it follows):

=============  ===========================================================================
layout         files
=============  ===========================================================================
``sens``       a ScanNet ``.sens`` file (streamed frame by frame)
``nerfstudio`` ``transforms.json`` with ``depth_file_path`` (nerfstudio, Polycam, Record3D)
``arkitscenes`` ``lowres_wide/``, ``lowres_depth/``, ``*.pincam``, ``lowres_wide.traj``
``scannet``    ``color/``, ``depth/``, ``pose/``, ``intrinsic/`` (ScanNet export, our converter)
``tum``        ``rgb.txt``, ``depth.txt``, ``groundtruth.txt`` + an intrinsics file
``7scenes``    ``frame-XXXXXX.color.png / .depth.png / .pose.txt``
``plain``      ``rgb|color|image|images/``, ``depth/``, a pose list, an intrinsics file
=============  ===========================================================================

Every reader returns camera-to-world poses in OpenCV camera axes and intrinsics of the depth
image; this module drops frames with non-finite poses (logged), applies the stride and frame cap,
checks the intrinsics and infers the depth unit from the first frame (16-bit: millimetres unless
the layout says otherwise, e.g. TUM 5000 per metre; float: metres; ``depth_scale`` overrides).
"""
import logging
import os.path as osp
from typing import List, Optional

import numpy as np

from . import arkitscenes, folders, sens, transforms_json  # noqa: F401  (register the readers)
from .base import (
    RECORDING_READERS,
    RGBDFolderError,
    RGBDSequence,
    depth_units,
    quaternion_pose,
    read_matrix,
)

logger = logging.getLogger(__name__)

__all__ = ['LAYOUTS', 'RGBDFolderError', 'RGBDSequence', 'detect_layout', 'load_rgbd_folder',
           'quaternion_pose', 'read_matrix']


def _readers() -> List[type]:
    return sorted(RECORDING_READERS.module_dict.values(), key=lambda r: (r.priority, r.name))


#: the registered layout names, in detection order.
LAYOUTS = tuple(r.name for r in _readers())


def detect_layout(path: str) -> str:
    """Return the layout of the recording ``path`` (a folder or a file).

    Raises:
        RGBDFolderError: if no layout matches, listing what each layout needs.
    """
    if not osp.exists(path):
        raise RGBDFolderError(f'{path} does not exist')
    if osp.isfile(path) or osp.isdir(path):
        for reader in _readers():
            if reader.detect(path):
                return reader.name
    what = '; '.join(f'{r.name}: {r.summary}' for r in _readers())
    raise RGBDFolderError(f'{path}: unrecognised RGB-D layout. Expected one of: {what}')


def load_rgbd_folder(folder: str,
                     layout: str = 'auto',
                     depth_scale: Optional[float] = None,
                     frame_stride: int = 1,
                     max_frames: Optional[int] = None,
                     intrinsics_file: Optional[str] = None,
                     max_time_diff: float = 0.02) -> RGBDSequence:
    """Index a posed RGB-D recording and validate it.

    Args:
        folder: the recording: a folder, a ``.sens`` file or a ``transforms.json``.
        layout: ``'auto'`` or one of :data:`LAYOUTS`. Defaults to ``'auto'``.
        depth_scale: raw depth units per metre; by default inferred from the first depth image
            (16-bit: the layout's convention, else 1000 = millimetres; float: metres).
        frame_stride: keep every ``frame_stride``-th frame. Defaults to 1.
        max_frames: if set, keep at most this many frames, uniformly spread over the (strided)
            sequence, as ODIN's test-time frame cap. Defaults to None.
        intrinsics_file: explicit 3×3 / 4×4 intrinsics file (depth camera) overriding the
            recording's.
        max_time_diff: largest timestamp gap in seconds when frames are paired by time (TUM,
            ARKitScenes). Defaults to 0.02.

    Returns:
        The validated :class:`RGBDSequence`; ``depth_units`` says how the depth scale was chosen.
        Frames whose pose is not finite are dropped and logged; their notes are in ``skipped``.

    Raises:
        RGBDFolderError: for a recording that cannot be used (missing poses, mismatched counts,
            malformed pose rows, unreadable matrices, no usable frame...), naming the file or
            frame.
    """
    if frame_stride < 1:
        raise RGBDFolderError(f'frame_stride must be >= 1, got {frame_stride}')
    if max_frames is not None and max_frames < 1:
        raise RGBDFolderError(f'max_frames must be >= 1, got {max_frames}')
    layout = detect_layout(folder) if layout == 'auto' else layout
    if layout not in RECORDING_READERS.module_dict:
        raise RGBDFolderError(f'unknown layout {layout!r}; choose from {LAYOUTS} or "auto"')
    reader = RECORDING_READERS.get(layout)(folder, intrinsics_file=intrinsics_file,
                                           max_time_diff=max_time_diff)
    seq = reader.read()
    keep = []
    for i, mat in enumerate(seq.poses):
        if np.isfinite(mat).all():
            keep.append(i)
        else:
            seq.skipped.append(f'frame {seq.frame_ids[i]}: pose is not finite')
    if not keep:
        raise RGBDFolderError(f'{folder}: no frame has a finite camera pose')
    keep = keep[::frame_stride]
    if max_frames is not None and len(keep) > max_frames:
        sel = np.linspace(0, len(keep) - 1, max_frames).round().astype(int)
        keep = [keep[i] for i in sel]
    for note in seq.skipped:
        logger.warning('%s: skipped %s', folder, note)
    seq = seq.select(keep)
    for i in range(len(seq)):
        k = seq.intrinsics[i]
        if not (np.isfinite(k).all() and k[0, 0] > 0 and k[1, 1] > 0):
            raise RGBDFolderError(f'frame {seq.frame_ids[i]}: invalid intrinsics (fx={k[0, 0]}, '
                                  f'fy={k[1, 1]})')
    # the depth unit and size come from the first frame; load_frame holds every frame to them
    _, raw = seq.read_raw(0)
    if raw.ndim != 2:
        raise RGBDFolderError(f'frame {seq.frame_ids[0]}: depth image {seq.depth_paths[0]} has '
                              f'{raw.shape[2]} channels; expected a single-channel depth map')
    seq.depth_scale, seq.depth_units = depth_units(raw.dtype, reader.depth_scale,
                                                   reader.depth_scale_source, depth_scale)
    seq.depth_dtype = raw.dtype.name
    if seq.depth_hw is None:
        seq.depth_hw = tuple(raw.shape)
    return seq
