"""ScanNet .sens reader/writer: round trip, frame skipping, and clear errors on bad files."""
import struct
import zlib

import numpy as np
import pytest

from projects.odin.datasets.sens_data import (
    SensorDataError,
    SensorDataReader,
    SensorFrame,
    SensorHeader,
    encode_color,
    encode_depth,
    make_intrinsic,
    write_sens,
)


def _make(tmp_path, n=5, codec='png', h=12, w=16, dh=6, dw=8, name='a.sens'):
    rng = np.random.default_rng(0)
    colors = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for _ in range(n)]
    if codec == 'jpeg':  # smooth images: JPEG is lossy on noise
        yy, xx = np.mgrid[0:h, 0:w]
        colors = [np.stack([yy * 7 + i, xx * 7, yy + xx + 40 * i], -1).astype(np.uint8)
                  for i in range(n)]
    depths = [rng.integers(0, 5000, (dh, dw)).astype(np.uint16) for _ in range(n)]
    poses = [np.eye(4, dtype=np.float32) for _ in range(n)]
    for i, p in enumerate(poses):
        p[:3, 3] = (i, 2 * i, 0.5)
    poses[2][:] = -np.inf
    frames = [SensorFrame(p, encode_color(c, codec), encode_depth(d), 10 * i, 20 * i)
              for i, (p, c, d) in enumerate(zip(poses, colors, depths))]
    header = SensorHeader('test-sensor', make_intrinsic(20, 21, 7.5, 5.5), np.eye(4),
                          make_intrinsic(10, 11, 3.5, 2.5), np.eye(4), codec, 'zlib_ushort',
                          w, h, dw, dh, 1000.0, n)
    path = tmp_path / name
    write_sens(path, header, frames)
    return path, colors, depths, poses


@pytest.mark.parametrize('codec', ['png', 'raw'])
def test_round_trip_exact(tmp_path, codec):
    path, colors, depths, poses = _make(tmp_path, codec=codec)
    r = SensorDataReader(path)
    h = r.header
    assert (h.sensor_name, h.color_width, h.color_height, h.depth_width, h.depth_height) == \
        ('test-sensor', 16, 12, 8, 6)
    assert h.color_compression == codec and h.depth_compression == 'zlib_ushort'
    assert h.depth_shift == 1000.0 and len(r) == 5
    np.testing.assert_allclose(h.intrinsic_depth[:3, :3],
                               [[10, 0, 3.5], [0, 11, 2.5], [0, 0, 1]])
    frames = list(r.iter_frames())
    assert [f.index for f in frames] == [0, 1, 2, 3, 4]
    for i, f in enumerate(frames):
        np.testing.assert_array_equal(r.decode_color(f), colors[i])
        np.testing.assert_array_equal(r.decode_depth(f), depths[i])
        assert f.timestamp_color == 10 * i and f.timestamp_depth == 20 * i
        if i == 2:
            assert np.isneginf(f.camera_to_world).all()
        else:
            np.testing.assert_array_equal(f.camera_to_world, poses[i])


def test_jpeg_and_frame_skip(tmp_path):
    path, colors, _, _ = _make(tmp_path, codec='jpeg', h=32, w=32)
    r = SensorDataReader(path)
    frames = list(r.iter_frames(frame_skip=2))
    assert [f.index for f in frames] == [0, 2, 4]
    img = r.decode_color(frames[1])
    assert img.shape == (32, 32, 3) and img.dtype == np.uint8
    # lossy but close to the source on average
    assert np.abs(img.astype(int) - colors[2].astype(int)).mean() < 4
    with pytest.raises(ValueError):
        list(r.iter_frames(frame_skip=0))


def test_truncated_file_names_file_and_frame(tmp_path):
    path, *_ = _make(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) - 100])
    r = SensorDataReader(path)  # the header is intact
    it = r.iter_frames()
    for _ in range(4):
        next(it)
    with pytest.raises(SensorDataError, match=r'a\.sens: truncated file in frame 4/5'):
        next(it)
    path.write_bytes(data[:30])
    with pytest.raises(SensorDataError, match='a.sens: truncated file while reading'):
        SensorDataReader(path)


def test_bad_header_and_payloads(tmp_path):
    path, *_ = _make(tmp_path)
    data = bytearray(path.read_bytes())
    bad = bytearray(data)
    bad[0:4] = struct.pack('<I', 3)
    (tmp_path / 'v.sens').write_bytes(bytes(bad))
    with pytest.raises(SensorDataError, match='unsupported .sens version 3'):
        SensorDataReader(tmp_path / 'v.sens')
    with pytest.raises(FileNotFoundError, match='missing.sens'):
        SensorDataReader(tmp_path / 'missing.sens')

    # a depth payload of the wrong size and an image whose size disagrees with the header
    h = SensorHeader('s', np.eye(4), np.eye(4), np.eye(4), np.eye(4), 'png', 'zlib_ushort',
                     16, 12, 8, 6, 1000.0, 2)
    frames = [
        SensorFrame(np.eye(4), encode_color(np.zeros((12, 16, 3), np.uint8), 'png'),
                    zlib.compress(b'\0' * 10)),
        SensorFrame(np.eye(4), encode_color(np.zeros((10, 16, 3), np.uint8), 'png'),
                    encode_depth(np.zeros((6, 8), np.uint16))),
    ]
    write_sens(tmp_path / 'p.sens', h, frames)
    r = SensorDataReader(tmp_path / 'p.sens')
    f0, f1 = list(r.iter_frames())
    with pytest.raises(SensorDataError, match=r'p\.sens: frame 0: depth has 10 bytes'):
        r.decode_depth(f0)
    with pytest.raises(SensorDataError, match=r'frame 1: colour image is 16x10 but the header'):
        r.decode_color(f1)
