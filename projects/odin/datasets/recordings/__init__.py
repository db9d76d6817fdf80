"""Readers of posed RGB-D recordings, one per layout, in one registry (:data:`RECORDING_READERS`).

Data readers, next to the datasets: the inference API (:mod:`projects.odin.apis`) and the demo
read recordings with them. Importing this package registers every reader;
:func:`load_rgbd_folder` (:mod:`.loader`) picks one (``layout='auto'``) and validates what it
returns. (Formerly ``projects.odin.apis.recordings`` and ``projects.odin.apis.rgbd_folder``,
which remain as deprecated aliases.)
"""
from .arkitscenes import ARKitScenesReader
from .base import (
    RECORDING_READERS,
    RecordingReader,
    RGBDFolderError,
    RGBDSequence,
    quaternion_pose,
    read_matrix,
    read_pose_list,
    unproject_frame,
)
from .folders import PlainFolderReader, ScanNetExportReader, SevenScenesReader, TUMReader
from .loader import LAYOUTS, detect_layout, load_rgbd_folder  # noqa: I001  (after the readers)
from .sens import SensReader
from .transforms_json import TransformsJsonReader

__all__ = [
    'RECORDING_READERS', 'RecordingReader', 'RGBDFolderError', 'RGBDSequence', 'quaternion_pose',
    'read_matrix', 'read_pose_list', 'ARKitScenesReader', 'PlainFolderReader',
    'ScanNetExportReader', 'SevenScenesReader', 'TUMReader', 'SensReader', 'TransformsJsonReader',
    'LAYOUTS', 'detect_layout', 'load_rgbd_folder', 'unproject_frame'
]
