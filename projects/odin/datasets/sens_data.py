"""Reader and writer of ScanNet's binary ``.sens`` RGB-D stream format.

The layout (little endian) of ScanNet's ``SensorData`` C++ class (version 4)::

    uint32   version                       (4)
    uint64   len(sensor_name); bytes sensor_name
    float32  intrinsic_color[4][4], extrinsic_color[4][4]
    float32  intrinsic_depth[4][4], extrinsic_depth[4][4]
    int32    color_compression_type        (-1 unknown, 0 raw, 1 png, 2 jpeg)
    int32    depth_compression_type        (-1 unknown, 0 raw_ushort, 1 zlib_ushort, 2 occi_ushort)
    uint32   color_width, color_height, depth_width, depth_height
    float32  depth_shift                   (depth value / depth_shift = metres, 1000 for ScanNet)
    uint64   num_frames
    num_frames x {
        float32 camera_to_world[4][4]      (-inf entries mark an invalid pose)
        uint64  timestamp_color, timestamp_depth, color_size_bytes, depth_size_bytes
        bytes   color_data[color_size_bytes], depth_data[depth_size_bytes]
    }
    uint64   num_imu_frames (+ IMU records; optional, ignored by this reader)

Only the codecs ScanNet actually uses are supported: JPEG / PNG / raw colour and zlib / raw depth.
Every inconsistency raises :class:`SensorDataError` naming the file, the frame and what is wrong.
"""
from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator, List, Sequence, Union

import numpy as np

COLOR_CODECS = {-1: 'unknown', 0: 'raw', 1: 'png', 2: 'jpeg'}
DEPTH_CODECS = {-1: 'unknown', 0: 'raw_ushort', 1: 'zlib_ushort', 2: 'occi_ushort'}
_FRAME_HEADER = struct.Struct('<16f4Q')  # pose, ts_color, ts_depth, color_bytes, depth_bytes
_MAX_SENSOR_NAME = 1 << 16


class SensorDataError(ValueError):
    """A ``.sens`` file is truncated, inconsistent or uses an unsupported codec."""


@dataclass
class SensorHeader:
    """Header of a ``.sens`` file.

    Attributes:
        sensor_name (str): Free-form device name.
        intrinsic_color (np.ndarray): (4, 4) float32 colour camera intrinsics.
        extrinsic_color (np.ndarray): (4, 4) float32 colour camera extrinsics.
        intrinsic_depth (np.ndarray): (4, 4) float32 depth camera intrinsics.
        extrinsic_depth (np.ndarray): (4, 4) float32 depth camera extrinsics.
        color_compression (str): One of ``COLOR_CODECS`` values.
        depth_compression (str): One of ``DEPTH_CODECS`` values.
        color_width (int): Colour image width in pixels.
        color_height (int): Colour image height in pixels.
        depth_width (int): Depth image width in pixels.
        depth_height (int): Depth image height in pixels.
        depth_shift (float): Divide stored depth values by this to get metres.
        num_frames (int): Number of frames announced by the header.
        version (int): Format version (4).
    """

    sensor_name: str
    intrinsic_color: np.ndarray
    extrinsic_color: np.ndarray
    intrinsic_depth: np.ndarray
    extrinsic_depth: np.ndarray
    color_compression: str
    depth_compression: str
    color_width: int
    color_height: int
    depth_width: int
    depth_height: int
    depth_shift: float
    num_frames: int
    version: int = 4


@dataclass
class SensorFrame:
    """One compressed RGB-D frame.

    Attributes:
        camera_to_world (np.ndarray): (4, 4) float32 pose; may hold inf/NaN for lost tracking.
        color_data (bytes): Compressed colour image.
        depth_data (bytes): Compressed depth image.
        timestamp_color (int): Colour timestamp (microseconds).
        timestamp_depth (int): Depth timestamp (microseconds).
    """

    camera_to_world: np.ndarray
    color_data: bytes
    depth_data: bytes
    timestamp_color: int = 0
    timestamp_depth: int = 0
    index: int = field(default=-1, compare=False)


@dataclass
class SensorFrameRef:
    """Where one frame of a ``.sens`` file lies (see :meth:`SensorDataReader.index_frames`).

    Attributes:
        index (int): Frame position in the file.
        offset (int): File offset of the colour data (the depth data follows it).
        color_size (int): Compressed colour size in bytes.
        depth_size (int): Compressed depth size in bytes.
        camera_to_world (np.ndarray): (4, 4) float32 pose; may hold inf/NaN for lost tracking.
        timestamp_color (int): Colour timestamp (microseconds).
        timestamp_depth (int): Depth timestamp (microseconds).
    """

    index: int
    offset: int
    color_size: int
    depth_size: int
    camera_to_world: np.ndarray
    timestamp_color: int = 0
    timestamp_depth: int = 0


def _read_exact(fh: BinaryIO, n: int, path: str, what: str) -> bytes:
    data = fh.read(n)
    if len(data) != n:
        raise SensorDataError(
            f'{path}: truncated file while reading {what} (expected {n} bytes, got {len(data)})')
    return data


class SensorDataReader:
    """Streaming reader of a ScanNet ``.sens`` file.

    Frames are read lazily and in order (``iter_frames``), so that scenes with thousands of frames
    never sit in memory at once. Decoding helpers turn a frame into arrays.

    Args:
        path (str | Path): The ``.sens`` file.

    Raises:
        SensorDataError: On a truncated header, an unknown version or an unsupported codec.
        FileNotFoundError: If the file does not exist.
    """

    def __init__(self, path: Union[str, Path]) -> None:
        self.path = str(path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f'{self.path}: .sens file not found')
        with open(self.path, 'rb') as fh:
            self.header = self._read_header(fh)
            self._frames_offset = fh.tell()

    def _read_header(self, fh: BinaryIO) -> SensorHeader:
        p = self.path
        (version,) = struct.unpack('<I', _read_exact(fh, 4, p, 'version'))
        if version != 4:
            raise SensorDataError(f'{p}: unsupported .sens version {version} (expected 4)')
        (strlen,) = struct.unpack('<Q', _read_exact(fh, 8, p, 'sensor name length'))
        if strlen > _MAX_SENSOR_NAME:
            raise SensorDataError(f'{p}: implausible sensor-name length {strlen}; corrupt header')
        name = _read_exact(fh, strlen, p, 'sensor name').decode('utf-8', errors='replace')
        mats = np.frombuffer(_read_exact(fh, 4 * 64, p, 'calibration matrices'),
                             dtype='<f4').reshape(4, 4, 4).astype(np.float32)
        ccomp, dcomp = struct.unpack('<ii', _read_exact(fh, 8, p, 'compression types'))
        cw, ch, dw, dh = struct.unpack('<4I', _read_exact(fh, 16, p, 'image sizes'))
        (shift,) = struct.unpack('<f', _read_exact(fh, 4, p, 'depth shift'))
        (num_frames,) = struct.unpack('<Q', _read_exact(fh, 8, p, 'frame count'))
        if COLOR_CODECS.get(ccomp) not in ('raw', 'png', 'jpeg'):
            raise SensorDataError(f'{p}: unsupported colour compression type {ccomp}')
        if DEPTH_CODECS.get(dcomp) not in ('raw_ushort', 'zlib_ushort'):
            raise SensorDataError(f'{p}: unsupported depth compression type {dcomp} '
                                  f'({DEPTH_CODECS.get(dcomp, "invalid")})')
        if min(cw, ch, dw, dh) == 0:
            raise SensorDataError(f'{p}: zero image size in header (colour {cw}x{ch}, '
                                  f'depth {dw}x{dh})')
        if not shift > 0:
            raise SensorDataError(f'{p}: depth_shift must be positive, got {shift}')
        return SensorHeader(name, mats[0], mats[1], mats[2], mats[3], COLOR_CODECS[ccomp],
                            DEPTH_CODECS[dcomp], cw, ch, dw, dh, float(shift), int(num_frames),
                            version)

    def __len__(self) -> int:
        return self.header.num_frames

    def iter_frames(self, frame_skip: int = 1) -> Iterator[SensorFrame]:
        """Yield frames ``0, frame_skip, 2 * frame_skip, ...`` (skipped frames are seeked over).

        Args:
            frame_skip (int): Keep every ``frame_skip``-th frame. Defaults to 1.

        Yields:
            SensorFrame: with ``index`` set to the frame's position in the file.

        Raises:
            SensorDataError: If the file ends before ``num_frames`` frames were read.
        """
        if frame_skip < 1:
            raise ValueError(f'frame_skip must be >= 1, got {frame_skip}')
        size = os.path.getsize(self.path)
        with open(self.path, 'rb') as fh:
            fh.seek(self._frames_offset)
            for i in range(self.header.num_frames):
                head = _read_exact(fh, _FRAME_HEADER.size, self.path,
                                   f'header of frame {i}/{self.header.num_frames}')
                vals = _FRAME_HEADER.unpack(head)
                ts_c, ts_d, csize, dsize = vals[16:]
                if fh.tell() + csize + dsize > size:
                    raise SensorDataError(
                        f'{self.path}: truncated file in frame {i}/{self.header.num_frames} '
                        f'(needs {csize + dsize} bytes of image data, '
                        f'{size - fh.tell()} left)')
                if i % frame_skip:
                    fh.seek(csize + dsize, io.SEEK_CUR)
                    continue
                color = fh.read(csize)
                depth = fh.read(dsize)
                pose = np.asarray(vals[:16], dtype=np.float32).reshape(4, 4)
                yield SensorFrame(pose, color, depth, ts_c, ts_d, index=i)

    def index_frames(self) -> List[SensorFrameRef]:
        """Locate every frame without reading its images (headers are read, image data seeked over).

        Returns:
            list[SensorFrameRef]: one per frame, in file order; :meth:`read_frame` reads one.

        Raises:
            SensorDataError: If the file ends before ``num_frames`` frames.
        """
        size = os.path.getsize(self.path)
        refs = []
        with open(self.path, 'rb') as fh:
            fh.seek(self._frames_offset)
            for i in range(self.header.num_frames):
                vals = _FRAME_HEADER.unpack(_read_exact(
                    fh, _FRAME_HEADER.size, self.path,
                    f'header of frame {i}/{self.header.num_frames}'))
                ts_c, ts_d, csize, dsize = vals[16:]
                offset = fh.tell()
                if offset + csize + dsize > size:
                    raise SensorDataError(
                        f'{self.path}: truncated file in frame {i}/{self.header.num_frames} '
                        f'(needs {csize + dsize} bytes of image data, {size - offset} left)')
                refs.append(SensorFrameRef(i, offset, csize, dsize,
                                           np.asarray(vals[:16], np.float32).reshape(4, 4),
                                           ts_c, ts_d))
                fh.seek(csize + dsize, io.SEEK_CUR)
        return refs

    def read_frame(self, ref: SensorFrameRef) -> SensorFrame:
        """Read the compressed images of one frame located by :meth:`index_frames`."""
        with open(self.path, 'rb') as fh:
            fh.seek(ref.offset)
            color = _read_exact(fh, ref.color_size, self.path, f'colour of frame {ref.index}')
            depth = _read_exact(fh, ref.depth_size, self.path, f'depth of frame {ref.index}')
        return SensorFrame(ref.camera_to_world, color, depth, ref.timestamp_color,
                           ref.timestamp_depth, index=ref.index)

    def decode_color(self, frame: SensorFrame) -> np.ndarray:
        """Decode a frame's colour image.

        Returns:
            np.ndarray: (color_height, color_width, 3) uint8 RGB.

        Raises:
            SensorDataError: If the data cannot be decoded or its size disagrees with the header.
        """
        h = self.header
        where = f'{self.path}: frame {frame.index}'
        if h.color_compression == 'raw':
            if len(frame.color_data) != h.color_width * h.color_height * 3:
                raise SensorDataError(f'{where}: raw colour has {len(frame.color_data)} bytes, '
                                      f'expected {h.color_width * h.color_height * 3}')
            img = np.frombuffer(frame.color_data, np.uint8).reshape(h.color_height,
                                                                     h.color_width, 3)
        else:
            import cv2
            buf = np.frombuffer(frame.color_data, np.uint8)
            bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
            if bgr is None:
                raise SensorDataError(f'{where}: cannot decode {h.color_compression} colour image '
                                      f'({len(frame.color_data)} bytes)')
            img = bgr[..., ::-1]
        if img.shape[:2] != (h.color_height, h.color_width):
            raise SensorDataError(
                f'{where}: colour image is {img.shape[1]}x{img.shape[0]} but the header says '
                f'{h.color_width}x{h.color_height}')
        return np.ascontiguousarray(img)

    def decode_depth(self, frame: SensorFrame) -> np.ndarray:
        """Decode a frame's depth image.

        Returns:
            np.ndarray: (depth_height, depth_width) uint16 in units of ``1 / depth_shift`` metres
            (millimetres for ScanNet); 0 = no measurement.

        Raises:
            SensorDataError: If the data cannot be decompressed or has the wrong size.
        """
        h = self.header
        where = f'{self.path}: frame {frame.index}'
        raw = frame.depth_data
        if h.depth_compression == 'zlib_ushort':
            try:
                raw = zlib.decompress(raw)
            except zlib.error as exc:
                raise SensorDataError(f'{where}: cannot decompress depth ({exc})') from exc
        expected = h.depth_width * h.depth_height * 2
        if len(raw) != expected:
            raise SensorDataError(
                f'{where}: depth has {len(raw)} bytes, expected {expected} for a '
                f'{h.depth_width}x{h.depth_height} uint16 image')
        return np.frombuffer(raw, dtype='<u2').reshape(h.depth_height, h.depth_width).copy()


def encode_color(rgb: np.ndarray, codec: str = 'jpeg', quality: int = 95) -> bytes:
    """Compress an (H, W, 3) uint8 RGB image with ``codec`` ('jpeg', 'png' or 'raw')."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if codec == 'raw':
        return rgb.tobytes()
    import cv2
    ext, params = ('.jpg', [cv2.IMWRITE_JPEG_QUALITY, int(quality)]) if codec == 'jpeg' else \
        ('.png', [])
    ok, buf = cv2.imencode(ext, rgb[..., ::-1], params)
    if not ok:
        raise SensorDataError(f'cannot encode colour image as {codec}')
    return buf.tobytes()


def encode_depth(depth: np.ndarray, codec: str = 'zlib_ushort') -> bytes:
    """Compress an (H, W) uint16 depth image (zlib or raw)."""
    raw = np.ascontiguousarray(depth, dtype='<u2').tobytes()
    return zlib.compress(raw, 6) if codec == 'zlib_ushort' else raw


def write_sens(path: Union[str, Path],
               header: SensorHeader,
               frames: Sequence[SensorFrame],
               num_imu_frames: int = 0) -> None:
    """Write a ``.sens`` file (atomically: temporary file + ``os.replace``).

    ``header.num_frames`` is ignored; ``len(frames)`` is written instead. Frames must already be
    compressed with the header's codecs (see :func:`encode_color`, :func:`encode_depth`).

    Args:
        path (str | Path): Destination.
        header (SensorHeader): Calibration, codecs and image sizes.
        frames (Sequence[SensorFrame]): The frames, in order.
        num_imu_frames (int): Written as the trailing IMU count (ScanNet writes 0 or more IMU
            records; only 0 is supported here). Defaults to 0.
    """
    inv_c = {v: k for k, v in COLOR_CODECS.items()}
    inv_d = {v: k for k, v in DEPTH_CODECS.items()}
    if num_imu_frames:
        raise NotImplementedError('writing IMU records is not supported')
    path = str(path)
    tmp = f'{path}.tmp{os.getpid()}'
    name = header.sensor_name.encode('utf-8')
    with open(tmp, 'wb') as fh:
        fh.write(struct.pack('<I', 4))
        fh.write(struct.pack('<Q', len(name)))
        fh.write(name)
        for m in (header.intrinsic_color, header.extrinsic_color, header.intrinsic_depth,
                  header.extrinsic_depth):
            fh.write(np.asarray(m, dtype='<f4').reshape(4, 4).tobytes())
        fh.write(struct.pack('<ii', inv_c[header.color_compression],
                             inv_d[header.depth_compression]))
        fh.write(struct.pack('<4I', header.color_width, header.color_height, header.depth_width,
                             header.depth_height))
        fh.write(struct.pack('<f', header.depth_shift))
        fh.write(struct.pack('<Q', len(frames)))
        for fr in frames:
            pose = np.asarray(fr.camera_to_world, dtype=np.float32).reshape(16)
            fh.write(_FRAME_HEADER.pack(*pose.tolist(), int(fr.timestamp_color),
                                        int(fr.timestamp_depth), len(fr.color_data),
                                        len(fr.depth_data)))
            fh.write(fr.color_data)
            fh.write(fr.depth_data)
        fh.write(struct.pack('<Q', num_imu_frames))
    os.replace(tmp, path)


def make_intrinsic(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """Return the (4, 4) float32 intrinsic matrix ScanNet stores (K in the top-left 3x3)."""
    k = np.eye(4, dtype=np.float32)
    k[0, 0], k[1, 1], k[0, 2], k[1, 2] = fx, fy, cx, cy
    return k


def read_all_frames(path: Union[str, Path], frame_skip: int = 1) -> List[SensorFrame]:
    """Convenience: read every ``frame_skip``-th compressed frame of a ``.sens`` into a list."""
    return list(SensorDataReader(path).iter_frames(frame_skip))


__all__ = [
    'SensorDataError', 'SensorHeader', 'SensorFrame', 'SensorFrameRef', 'SensorDataReader',
    'write_sens', 'encode_color', 'encode_depth', 'make_intrinsic', 'read_all_frames'
]
