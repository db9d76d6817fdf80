"""A ScanNet ``.sens`` stream read directly, frame by frame."""
import glob
import os.path as osp
from typing import Tuple

import numpy as np

from .base import RECORDING_READERS, RecordingReader, RGBDFolderError, RGBDSequence, read_matrix


@RECORDING_READERS.register_module(name='sens')
class SensReader(RecordingReader):
    """ScanNet's binary ``.sens`` file (or a scan folder holding exactly one).

    Format definition: ScanNet's ``SensReader/python/SensorData.py`` (github.com/ScanNet/ScanNet):
    ``SensorData.load`` reads the header (colour/depth intrinsics as 4×4, image sizes,
    ``depth_shift``) and ``RGBDFrame.load`` one ``camera_to_world`` 4×4 (16 float32, row-major)
    per frame followed by the compressed colour (JPEG) and depth (zlib uint16; raw / depth_shift
    = metres). Our :mod:`projects.odin.datasets.sens_data` parses it; frames are located once
    (headers only, image bytes seeked over) and each selected frame is read and decoded when the
    demo loads it, so a scene is never held in memory. The colour (1296×968 in ScanNet) is resized
    to the depth size (640×480) with both header intrinsics known, as ODIN's export does. Poses of
    lost tracking (``-inf``) are skipped and logged.
    """

    name = 'sens'
    priority = 10
    summary = 'a ScanNet .sens file'
    depth_scale_source = '.sens depth_shift'

    @classmethod
    def detect(cls, path: str) -> bool:
        """Whether ``path`` has this layout's files (names only; see the class docstring)."""
        found = glob.glob(osp.join(glob.escape(path), '*.sens')) if osp.isdir(path) else [path]
        return len(found) == 1 and found[0].endswith('.sens')

    def read(self) -> RGBDSequence:
        """Index the recording (see :meth:`RecordingReader.read`)."""
        from projects.odin.datasets.sens_data import SensorDataError, SensorDataReader
        path = self.path
        if osp.isdir(path):
            path = glob.glob(osp.join(glob.escape(path), '*.sens'))[0]
        try:
            reader = SensorDataReader(path)
            refs = reader.index_frames()
        except SensorDataError as e:
            raise RGBDFolderError(str(e)) from e
        hdr = reader.header
        self.depth_scale = hdr.depth_shift
        k_depth = (read_matrix(self.intrinsics_file, 'intrinsics') if self.intrinsics_file
                   else hdr.intrinsic_depth.astype(np.float64))
        k_color = hdr.intrinsic_color.astype(np.float64)

        def load(ref) -> Tuple[np.ndarray, np.ndarray]:
            try:
                frame = reader.read_frame(ref)
                return reader.decode_color(frame), reader.decode_depth(frame)
            except SensorDataError as e:
                raise RGBDFolderError(str(e)) from e

        ids = [str(r.index) for r in refs]
        return self.sequence(
            ids, [f'{path}#frame={i}' for i in ids], [f'{path}#frame={i}' for i in ids],
            [r.camera_to_world for r in refs], [k_depth] * len(refs), [k_color] * len(refs),
            frame_loader=load, frame_refs=list(refs),
            depth_hw=(hdr.depth_height, hdr.depth_width))
