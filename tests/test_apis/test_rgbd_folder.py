"""Posed RGB-D folder readers on tiny recordings written in each real layout."""
import os

import cv2
import numpy as np
import pytest
from rgbd_makers import H, K, W, _pose, make_7scenes, make_scannet, make_tum  # noqa: E402

from projects.odin.datasets.recordings import (
    RGBDFolderError,
    detect_layout,
    load_rgbd_folder,
    quaternion_pose,
)


@pytest.mark.parametrize('maker,layout,scale_m', [(make_scannet, 'scannet', 1.5),
                                                  (make_tum, 'tum', 1.0),
                                                  (make_7scenes, '7scenes', 1.5)])
def test_layouts_load(tmp_path, maker, layout, scale_m):
    root = maker(tmp_path / 'rec')
    assert detect_layout(str(root)) == layout
    seq = load_rgbd_folder(str(root))
    assert seq.layout == layout and len(seq) == 4
    np.testing.assert_allclose(seq.poses[:, :3, 3], [[0.1 * i, 0, 1] for i in range(4)])
    np.testing.assert_allclose(seq.intrinsics[0, :3, :3], K)
    rgb, depth = seq.load_frame(2)
    assert rgb.shape == (H, W, 3) and rgb.dtype == np.uint8
    assert depth.shape == (H, W) and depth.dtype == np.float32
    np.testing.assert_allclose(depth, scale_m)


def test_stride_and_frame_cap(tmp_path):
    root = make_scannet(tmp_path / 'rec', n=10)
    assert load_rgbd_folder(str(root), frame_stride=3).frame_ids == ['0', '3', '6', '9']
    assert load_rgbd_folder(str(root), max_frames=3).frame_ids == ['0', '4', '9']
    assert load_rgbd_folder(str(root), depth_scale=500).load_frame(0)[1].max() == pytest.approx(3)


def test_invalid_pose_is_skipped_and_logged(tmp_path, caplog):
    root = make_scannet(tmp_path / 'rec')
    bad = _pose(1)
    bad[0, 0] = np.inf
    np.savetxt(root / 'pose' / '1.txt', bad)
    seq = load_rgbd_folder(str(root))
    assert seq.frame_ids == ['0', '2', '3']
    assert any('frame 1: pose is not finite' in s for s in seq.skipped)
    assert 'pose is not finite' in caplog.text


def test_quaternion_pose_rotation():
    # 90 degrees about z: x axis -> y axis.
    s = np.sqrt(0.5)
    mat = quaternion_pose([1, 2, 3, 0, 0, s, s])
    np.testing.assert_allclose(mat[:3, :3] @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(mat[:3, 3], [1, 2, 3])


def test_no_poses_is_refused(tmp_path):
    root = make_scannet(tmp_path / 'rec')
    for f in os.listdir(root / 'pose'):
        os.remove(root / 'pose' / f)
    with pytest.raises(RGBDFolderError, match='no poses in pose/'):
        load_rgbd_folder(str(root))


def test_mismatched_counts_are_refused(tmp_path):
    root = make_7scenes(tmp_path / 'rec')
    os.remove(root / 'frame-000002.depth.png')
    with pytest.raises(RGBDFolderError, match='frame-000002 has no frame-\\*.depth.png'):
        load_rgbd_folder(str(root))


def test_unreadable_depth_names_file(tmp_path):
    root = make_scannet(tmp_path / 'rec')
    (root / 'depth' / '2.png').write_bytes(b'not a png')
    seq = load_rgbd_folder(str(root))
    with pytest.raises(RGBDFolderError, match='frame 2: cannot read depth image .*2.png'):
        seq.load_frame(2)


def test_colour_depth_image_refused(tmp_path):
    root = make_scannet(tmp_path / 'rec')
    cv2.imwrite(str(root / 'depth' / '1.png'), np.zeros((H, W, 3), np.uint8))
    with pytest.raises(RGBDFolderError, match='channels; expected a single-channel'):
        load_rgbd_folder(str(root)).load_frame(1)


def test_all_zero_depth_refused(tmp_path):
    root = make_scannet(tmp_path / 'rec')
    cv2.imwrite(str(root / 'depth' / '0.png'), np.zeros((H, W), np.uint16))
    with pytest.raises(RGBDFolderError, match='has no valid pixel'):
        load_rgbd_folder(str(root)).load_frame(0)


def test_missing_intrinsics_and_unknown_layout(tmp_path):
    root = make_tum(tmp_path / 'rec')
    os.remove(root / 'intrinsics.txt')
    with pytest.raises(RGBDFolderError, match='no intrinsics file'):
        load_rgbd_folder(str(root))
    (tmp_path / 'empty').mkdir()
    with pytest.raises(RGBDFolderError, match='unrecognised RGB-D layout'):
        load_rgbd_folder(str(tmp_path / 'empty'))


def test_tum_timestamps_out_of_sync(tmp_path):
    root = make_tum(tmp_path / 'rec')
    text = (root / 'groundtruth.txt').read_text()
    lines = [ln for ln in text.splitlines() if ln.startswith('#')]
    lines.append('500.0 0 0 1 0 0 0 1')
    (root / 'groundtruth.txt').write_text('\n'.join(lines) + '\n')
    with pytest.raises(RGBDFolderError, match='no colour frame has a depth image and a pose'):
        load_rgbd_folder(str(root))


def test_bad_matrix_shape(tmp_path):
    root = make_7scenes(tmp_path / 'rec')
    np.savetxt(root / 'frame-000001.pose.txt', np.eye(2))
    with pytest.raises(RGBDFolderError, match='2x2 matrix; expected 3x3 or 4x4'):
        load_rgbd_folder(str(root))
