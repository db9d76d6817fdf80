"""Readers of posed RGB-D recordings, one per layout, in one registry (:data:`RECORDING_READERS`).

Importing this package registers every reader; :func:`projects.odin.apis.rgbd_folder.
load_rgbd_folder` picks one (``layout='auto'``) and validates what it returns.
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
)
from .folders import PlainFolderReader, ScanNetExportReader, SevenScenesReader, TUMReader
from .sens import SensReader
from .transforms_json import TransformsJsonReader

__all__ = [
    'RECORDING_READERS', 'RecordingReader', 'RGBDFolderError', 'RGBDSequence', 'quaternion_pose',
    'read_matrix', 'read_pose_list', 'ARKitScenesReader', 'PlainFolderReader',
    'ScanNetExportReader', 'SevenScenesReader', 'TUMReader', 'SensReader', 'TransformsJsonReader'
]
