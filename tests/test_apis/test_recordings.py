"""Recording readers: one synthetic room in every layout, each format's own conventions, bad input.

The round trip (our writer -> our reader) only proves that the two agree, so every layout also
has a test on numbers taken from the format's definition (the reader docstrings cite it), with
the expected matrix written out by hand.
"""
import json
import os

import cv2
import numpy as np
import pytest
from recording_writers import (
    render_room,
    write_7scenes,
    write_arkitscenes,
    write_plain,
    write_scannet,
    write_sens,
    write_transforms_json,
    write_tum,
)

from projects.odin.apis.inference import unproject_frame
from projects.odin.datasets.recordings import (
    LAYOUTS,
    RGBDFolderError,
    detect_layout,
    load_rgbd_folder,
)

S = np.sqrt(0.5)


@pytest.fixture(scope='module')
def room():
    return render_room()


def fused_cloud(seq) -> np.ndarray:
    """(N, 3) world points of every valid depth pixel of every frame, in frame/pixel order."""
    pts = []
    for i in range(len(seq)):
        _, depth = seq.load_frame(i)
        xyz = unproject_frame(depth.astype(np.float64), seq.intrinsics[i], seq.poses[i])
        pts.append(xyz[depth > 0])
    return np.concatenate(pts)


@pytest.fixture(scope='module')
def scannet_cloud(room, tmp_path_factory):
    seq = load_rgbd_folder(str(write_scannet(room, tmp_path_factory.mktemp('ref') / 'rec')))
    assert seq.layout == 'scannet' and len(seq) == len(room)
    return fused_cloud(seq)


WRITERS = {
    'sens': lambda r, p: write_sens(r, p.with_suffix('.sens')),
    'nerfstudio-global': write_transforms_json,
    'nerfstudio-per-frame': lambda r, p: write_transforms_json(r, p, per_frame=True),
    'arkitscenes': write_arkitscenes,
    'arkitscenes-3dod-scene': lambda r, p: write_arkitscenes(r, p, scene_folder=True),
    'tum': write_tum,
    '7scenes': write_7scenes,
    'plain-tum-rows': write_plain,
    'plain-16': lambda r, p: write_plain(r, p, poses='16'),
    'plain-12-npy': lambda r, p: write_plain(r, p, poses='12', depth='npy'),
}


@pytest.mark.parametrize('variant', sorted(WRITERS))
def test_every_layout_fuses_to_the_scannet_cloud(room, scannet_cloud, tmp_path, variant):
    path = WRITERS[variant](room, tmp_path / 'rec')
    layout = variant.split('-')[0]
    assert detect_layout(str(path)) == layout
    seq = load_rgbd_folder(str(path))
    assert seq.layout == layout and len(seq) == len(room)
    np.testing.assert_allclose(seq.poses, room.poses, atol=1e-6)
    cloud = fused_cloud(seq)
    assert cloud.shape == scannet_cloud.shape
    assert np.abs(cloud - scannet_cloud).max() <= 1e-3  # 1 mm
    rgb, depth = seq.load_frame(1)
    assert rgb.shape == depth.shape + (3,) and rgb.dtype == np.uint8
    assert rgb.mean() > 20  # the room was drawn, not a black image


def test_layout_names_and_float_depth(room, scannet_cloud, tmp_path):
    assert set(LAYOUTS) == {'sens', 'nerfstudio', 'arkitscenes', 'scannet', 'tum', '7scenes',
                            'plain'}
    seq = load_rgbd_folder(str(write_plain(room, tmp_path / 'rec', depth='tiff')))
    assert seq.depth_scale == 1.0 and seq.depth_units == 'float32 depth, metres (float depth)'
    assert np.abs(fused_cloud(seq) - scannet_cloud).max() <= 1e-3
    # an EXR this OpenCV build cannot decode: the error says what to do
    (tmp_path / 'rec' / 'depth' / 'frame_00000.tiff').unlink()
    (tmp_path / 'rec' / 'depth' / 'frame_00000.exr').write_bytes(b'not an exr')
    with pytest.raises(RGBDFolderError, match='cannot read depth image .*frame_00000.exr .*'
                       'OPENCV_IO_ENABLE_OPENEXR'):
        load_rgbd_folder(str(tmp_path / 'rec'))


# ------------------------------------------------------------------------------------------------
# each format's own conventions, on numbers from its definition


def _plain(tmp_path, pose_text, name='gt_pose.txt', n=1, hw=(4, 6), k=((10, 0, 2.5), (0, 10, 1.5),
                                                                        (0, 0, 1))):
    root = tmp_path / 'rec'
    os.makedirs(root / 'rgb')
    os.makedirs(root / 'depth')
    for i in range(n):
        cv2.imwrite(str(root / 'rgb' / f'frame_{i:05d}.png'), np.full(hw + (3,), 99, np.uint8))
        cv2.imwrite(str(root / 'depth' / f'frame_{i:05d}.png'), np.full(hw, 2000, np.uint16))
    (root / name).write_text(pose_text)
    np.savetxt(root / 'intrinsic.txt', np.asarray(k, float))
    return root


def test_tum_rows_are_camera_to_world_scalar_last_quaternions(tmp_path):
    # TUM file_formats: "tx ty tz qx qy qz qw": position of the optical centre and orientation
    # (unit quaternion, w last) with respect to the world; 90 degrees about z below.
    root = _plain(tmp_path, f'# timestamp tx ty tz qx qy qz qw\n1.0 1 2 3 0 0 {S} {S}\n'
                  '2.0 0 0 0 1 0 0 0\n', n=2)
    seq = load_rgbd_folder(str(root))
    np.testing.assert_allclose(seq.poses[0], [[0, -1, 0, 1], [1, 0, 0, 2], [0, 0, 1, 3],
                                              [0, 0, 0, 1]], atol=1e-12)
    # (1, 0, 0, 0) with w last is 180 degrees about x (with w first it would be the identity)
    np.testing.assert_allclose(seq.poses[1][:3, :3], np.diag([1, -1, -1]), atol=1e-12)
    # camera-to-world: the principal pixel at depth 2 m lies 2 m along the camera's z axis
    # (world +z here) from the camera centre (1, 2, 3)
    _, depth = seq.load_frame(0)
    xyz = unproject_frame(depth.astype(np.float64), seq.intrinsics[0], seq.poses[0])
    # pixel (row 1, col 2): camera point ((2 - 2.5) / 10 * 2, (1 - 1.5) / 10 * 2, 2) =
    # (-0.1, -0.1, 2), rotated 90 degrees about z -> (0.1, -0.1, 2), plus the centre (1, 2, 3)
    np.testing.assert_allclose(xyz[1, 2], [1.1, 1.9, 5.0], atol=1e-12)
    assert 'millimetres' in seq.depth_units and seq.depth_scale == 1000  # not TUM's 5000


def test_replica_traj_rows_are_row_major_4x4(tmp_path):
    # NICE-SLAM Replica.load_poses: one line of 16 numbers, reshape(4, 4) (row-major) = c2w
    root = _plain(tmp_path, '0 -1 0 1 1 0 0 2 0 0 1 3 0 0 0 1\n', name='traj.txt')
    seq = load_rgbd_folder(str(root))
    np.testing.assert_allclose(seq.poses[0], [[0, -1, 0, 1], [1, 0, 0, 2], [0, 0, 1, 3],
                                              [0, 0, 0, 1]])
    # NICE-SLAM negates columns 1 and 2 for its OpenGL cameras: the file holds OpenCV axes
    nice_slam = np.array([[0, 1, 0, 1], [1, 0, 0, 2], [0, 0, -1, 3], [0, 0, 0, 1]], float)
    np.testing.assert_allclose(seq.poses[0] @ np.diag([1, -1, -1, 1]), nice_slam)


def test_kitti_rows_are_row_major_3x4(tmp_path):
    # pykitti odometry _load_poses: reshape(3, 4), append [0, 0, 0, 1] = T_w_cam0
    root = _plain(tmp_path, '0 -1 0 1 1 0 0 2 0 0 1 3\n', name='poses.txt')
    seq = load_rgbd_folder(str(root))
    np.testing.assert_allclose(seq.poses[0], [[0, -1, 0, 1], [1, 0, 0, 2], [0, 0, 1, 3],
                                              [0, 0, 0, 1]])


def test_tum_layout_scale_and_associate(tmp_path):
    root = tmp_path / 'tum'
    os.makedirs(root / 'rgb')
    os.makedirs(root / 'depth')
    for name in ('a', 'b', 'c'):
        cv2.imwrite(str(root / 'rgb' / f'{name}.png'), np.full((4, 6, 3), 50, np.uint8))
    cv2.imwrite(str(root / 'depth' / 'd.png'), np.full((4, 6), 5000, np.uint16))
    cv2.imwrite(str(root / 'depth' / 'e.png'), np.full((4, 6), 10000, np.uint16))
    # associate.py pairs one-to-one, closest first: a (t=1.000) and b (t=1.010) both want d
    # (t=1.008); b is closer and wins, a is left without depth; c pairs with e.
    (root / 'rgb.txt').write_text('1.000 rgb/a.png\n1.010 rgb/b.png\n2.000 rgb/c.png\n')
    (root / 'depth.txt').write_text('# depth\n1.008 depth/d.png\n2.001 depth/e.png\n')
    (root / 'groundtruth.txt').write_text('1.0 0 0 0 0 0 0 1\n1.01 0 0 0 0 0 0 1\n'
                                          '2.0 0 0 0 0 0 0 1\n')
    np.savetxt(root / 'intrinsics.txt', np.array([[10, 0, 2.5], [0, 10, 1.5], [0, 0, 1]]))
    seq = load_rgbd_folder(str(root))
    assert seq.layout == 'tum' and seq.frame_ids == ['1.010000', '2.000000']
    assert seq.depth_scale == 5000 and 'TUM' in seq.depth_units
    assert [os.path.basename(p) for p in seq.depth_paths] == ['d.png', 'e.png']
    np.testing.assert_allclose(seq.load_frame(1)[1], 2.0)  # 10000 / 5000 per metre
    assert any('t=1.000000' in s for s in seq.skipped)


def test_sens_pose_rows_header_and_stream(room, tmp_path):
    path = write_sens(room, tmp_path / 'scene0000_00.sens')
    seq = load_rgbd_folder(str(path), frame_stride=2)
    # SensorData.py: camera_to_world = 16 float32 row-major; depth / depth_shift = metres
    assert seq.layout == 'sens' and seq.frame_ids == ['0', '2']
    np.testing.assert_allclose(seq.poses[1], room.poses[2].astype(np.float32), atol=0)
    assert seq.depth_scale == 1000 and 'depth_shift' in seq.depth_units
    np.testing.assert_allclose(seq.color_intrinsics[0], room.k_color, atol=1e-5)
    rgb, depth = seq.load_frame(1)  # JPEG colour at 2x the depth size, resized
    assert rgb.shape == (18, 24, 3)
    np.testing.assert_allclose(depth, room.depth_mm[2] / 1000.0, atol=1e-6)
    assert seq.color_paths[1].endswith('scene0000_00.sens#frame=2')
    # a folder holding one .sens is read as that file
    assert detect_layout(str(tmp_path)) == 'sens'


def test_sens_bytes_as_scannet_sensordata_reads_them(tmp_path):
    """A .sens written field by field in the order of ScanNet's SensorData.load / RGBDFrame.load
    (not with our writer): the pose is 16 float32 row-major, camera-to-world; depth / shift."""
    import struct
    import zlib
    pose = np.array([[0, -1, 0, 1], [1, 0, 0, 2], [0, 0, 1, 3], [0, 0, 0, 1]], np.float32)
    k_depth = np.array([[10, 0, 2.5, 0], [0, 10, 1.5, 0], [0, 0, 1, 0], [0, 0, 0, 1]], np.float32)
    k_color = k_depth.copy()
    k_color[:2, :3] *= 2
    ok, jpeg = cv2.imencode('.jpg', np.full((8, 12, 3), 128, np.uint8))
    depth = zlib.compress(np.full((4, 6), 3000, np.uint16).tobytes())
    data = struct.pack('I', 4) + struct.pack('Q', 3) + b'cam'
    for m in (k_color, np.eye(4), k_depth, np.eye(4)):
        data += struct.pack('f' * 16, *np.asarray(m, np.float32).reshape(-1))
    data += struct.pack('ii', 2, 1)  # jpeg colour, zlib_ushort depth
    data += struct.pack('IIII', 12, 8, 6, 4) + struct.pack('f', 1000.0) + struct.pack('Q', 1)
    data += struct.pack('f' * 16, *pose.reshape(-1)) + struct.pack('QQQQ', 0, 0, len(jpeg),
                                                                    len(depth))
    data += jpeg.tobytes() + depth + struct.pack('Q', 0)
    (tmp_path / 'scene.sens').write_bytes(data)
    seq = load_rgbd_folder(str(tmp_path / 'scene.sens'))
    np.testing.assert_array_equal(seq.poses[0], pose)
    np.testing.assert_array_equal(seq.intrinsics[0], k_depth)
    rgb, d = seq.load_frame(0)
    assert rgb.shape == (4, 6, 3) and np.allclose(d, 3.0)
    # SensorData.export_poses / export_intrinsics write the same matrices as '%f' text rows
    root = tmp_path / 'export'
    for sub in ('color', 'depth', 'pose', 'intrinsic'):
        os.makedirs(root / sub)
    cv2.imwrite(str(root / 'color' / '0.jpg'), np.full((8, 12, 3), 128, np.uint8))
    cv2.imwrite(str(root / 'depth' / '0.png'), np.full((4, 6), 3000, np.uint16))
    np.savetxt(root / 'pose' / '0.txt', pose, fmt='%f')
    np.savetxt(root / 'intrinsic' / 'intrinsic_depth.txt', k_depth, fmt='%f')
    np.savetxt(root / 'intrinsic' / 'intrinsic_color.txt', k_color, fmt='%f')
    exp = load_rgbd_folder(str(root))
    assert exp.layout == 'scannet'
    np.testing.assert_array_equal(exp.poses, seq.poses)
    np.testing.assert_array_equal(exp.load_frame(0)[1], d)


def test_7scenes_invalid_depth_and_published_intrinsics(tmp_path):
    root = tmp_path / 'seq-01'
    os.makedirs(root)
    cv2.imwrite(str(root / 'frame-000000.color.png'), np.zeros((480, 640, 3), np.uint8) + 9)
    depth = np.full((480, 640), 1500, np.uint16)
    depth[0, 0] = 65535  # 7-Scenes: invalid depth is 65535
    cv2.imwrite(str(root / 'frame-000000.depth.png'), depth)
    (root / 'frame-000000.pose.txt').write_text('1 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n')
    seq = load_rgbd_folder(str(root))
    # no camera-intrinsics.txt: the dataset page's principal point (320, 240), focal (585, 585)
    np.testing.assert_allclose(seq.intrinsics[0, :3, :3], [[585, 0, 320], [0, 585, 240],
                                                           [0, 0, 1]])
    d = seq.load_frame(0)[1]
    assert d[0, 0] == 0 and d[0, 1] == pytest.approx(1.5)


def test_nerfstudio_opengl_axes_and_intrinsics(tmp_path):
    # data_conventions.md: OpenGL camera (+X right, +Y up, +Z back); transform_matrix columns are
    # the camera's +X, +Y, +Z in the world. A camera at (1, 2, 3) looking along world +x with
    # world +z up: +X = (0, -1, 0), +Y = (0, 0, 1), +Z = back = (-1, 0, 0).
    root = tmp_path / 'ns'
    os.makedirs(root / 'images')
    os.makedirs(root / 'depth')
    cv2.imwrite(str(root / 'images' / 'frame_00001.jpg'), np.full((8, 12, 3), 80, np.uint8))
    cv2.imwrite(str(root / 'depth' / 'frame_00001.png'), np.full((4, 6), 2000, np.uint16))
    gl = [[0, 0, -1, 1], [-1, 0, 0, 2], [0, 1, 0, 3], [0, 0, 0, 1]]
    meta = dict(fl_x=20.0, fl_y=20.0, cx=5.0, cy=3.0, w=12, h=8, frames=[dict(
        file_path='images/frame_00001.jpg', depth_file_path='depth/frame_00001.png',
        transform_matrix=gl, fl_x=999.0)])  # a global key wins over the frame's (nerfstudio)
    (root / 'transforms.json').write_text(json.dumps(meta))
    seq = load_rgbd_folder(str(root))
    # OpenCV: x right = (0, -1, 0), y down = (0, 0, -1), z forward = (1, 0, 0)
    np.testing.assert_allclose(seq.poses[0], [[0, 0, 1, 1], [-1, 0, 0, 2], [0, -1, 0, 3],
                                              [0, 0, 0, 1]])
    # the depth (half the image size) covers the image's view: intrinsics scaled by 1/2
    np.testing.assert_allclose(seq.intrinsics[0, :3, :3], [[10, 0, 2.5], [0, 10, 1.5], [0, 0, 1]])
    np.testing.assert_allclose(seq.color_intrinsics[0, :3, :3], [[20, 0, 5], [0, 20, 3],
                                                                 [0, 0, 1]])
    _, depth = seq.load_frame(0)
    xyz = unproject_frame(depth.astype(np.float64), seq.intrinsics[0], seq.poses[0])
    # pixel (row 1, col 2): 0.5 px left and above the principal point -> 2 m ahead along +x
    np.testing.assert_allclose(xyz[1, 2], [1 + 2.0, 2 + 0.1, 3 + 0.1])
    assert 'millimetres' in seq.depth_units


def test_arkitscenes_traj_is_world_to_camera_axis_angle(tmp_path):
    # tenFpsDataLoader.TrajStringToMatrix: [Rodrigues(aa) | t] is world-to-camera, inverted to
    # camera-to-world. aa = (0, 0, pi/2): R = 90 degrees about z; t = (1, 2, 3).
    root = tmp_path / '41069025'
    for d in ('lowres_wide', 'lowres_depth', 'lowres_wide_intrinsics'):
        os.makedirs(root / d)
    name = '41069025_3044.953'
    cv2.imwrite(str(root / 'lowres_wide' / f'{name}.png'), np.full((192, 256, 3), 60, np.uint8))
    cv2.imwrite(str(root / 'lowres_depth' / f'{name}.png'), np.full((192, 256), 1250, np.uint16))
    # DATA.md: .pincam = "width height fx fy cx cy"
    (root / 'lowres_wide_intrinsics' / f'{name}.pincam').write_text('256 192 212.5 213 127.5 95.5')
    (root / 'lowres_wide.traj').write_text(f'3044.953 0 0 {np.pi / 2!r} 1 2 3\n')
    seq = load_rgbd_folder(str(root))
    assert seq.layout == 'arkitscenes' and seq.frame_ids == ['3044.953']
    # inverse of [[0,-1,0,1],[1,0,0,2],[0,0,1,3]]: R^T and -R^T t = (-2, 1, -3)
    np.testing.assert_allclose(seq.poses[0], [[0, 1, 0, -2], [-1, 0, 0, 1], [0, 0, 1, -3],
                                              [0, 0, 0, 1]], atol=1e-12)
    np.testing.assert_allclose(seq.intrinsics[0, :3, :3], [[212.5, 0, 127.5], [0, 213, 95.5],
                                                           [0, 0, 1]])
    assert seq.load_frame(0)[1][5, 5] == pytest.approx(1.25)  # DATA.md: millimetres


def test_arkitscenes_3dod_scene_folder(room, tmp_path):
    # the 3DOD download holds <video_id>/<video_id>_frames/: both folders read the same frames,
    # and the recording is named after the video
    scene = write_arkitscenes(room, tmp_path / '41069025', scene_folder=True)
    inner = load_rgbd_folder(str(scene / '41069025_frames'))
    seq = load_rgbd_folder(str(scene))
    assert seq.layout == inner.layout == 'arkitscenes' and seq.scene_name == '41069025'
    assert seq.frame_ids == inner.frame_ids and len(seq) == len(room)
    np.testing.assert_array_equal(seq.poses, inner.poses)
    np.testing.assert_array_equal(seq.load_frame(2)[1], inner.load_frame(2)[1])
    # a frames folder named after the scene wins over other *_frames folders
    write_arkitscenes(room, scene / 'other_frames', 'other')
    assert load_rgbd_folder(str(scene)).frame_ids == inner.frame_ids
    # two candidates, none named after the folder: refused, naming what it looked for
    os.rename(scene, tmp_path / 'renamed')
    with pytest.raises(RGBDFolderError, match='unrecognised RGB-D layout'):
        load_rgbd_folder(str(tmp_path / 'renamed'))
    with pytest.raises(RGBDFolderError, match='nor a 3DOD scene folder holding one '
                       '<video_id>_frames/'):
        load_rgbd_folder(str(tmp_path / 'renamed'), layout='arkitscenes')


def _closed_form_quaternion(x, y, z, w):
    """Rotation of a (not necessarily unit) quaternion, the textbook closed form (the readers'
    former hand-written conversion, kept as the reference of scipy's)."""
    s = 2.0 / (x * x + y * y + z * z + w * w)
    return np.array([[1 - s * (y * y + z * z), s * (x * y - z * w), s * (x * z + y * w)],
                     [s * (x * y + z * w), 1 - s * (x * x + z * z), s * (y * z - x * w)],
                     [s * (x * z - y * w), s * (y * z + x * w), 1 - s * (x * x + y * y)]])


def _closed_form_rotvec(v):
    """Rodrigues' formula (the ARKitScenes reader's former hand-written conversion)."""
    v = np.asarray(v, dtype=np.float64)
    theta = float(np.linalg.norm(v))
    if theta < 1e-12:
        return np.eye(3)
    k = v / theta
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(theta) * kx + (1 - np.cos(theta)) * kx @ kx


def test_pose_conversions_equal_the_closed_forms(tmp_path):
    """TUM quaternions and ARKitScenes axis-angle rows (scipy's Rotation) give the closed-form
    matrices on random inputs: non-unit quaternions, angles up to 2 pi, tiny angles."""
    from projects.odin.datasets.recordings import quaternion_pose
    rng = np.random.default_rng(0)
    for _ in range(200):
        t = rng.normal(size=3)
        q = rng.normal(size=4) * rng.uniform(0.1, 3.0)
        mat = quaternion_pose([*t, *q])
        np.testing.assert_allclose(mat[:3, :3], _closed_form_quaternion(*q), atol=1e-12)
        np.testing.assert_allclose(mat[:3, 3], t)
        np.testing.assert_array_equal(mat[3], [0, 0, 0, 1])
    assert np.isnan(quaternion_pose([0, 0, np.nan, 0, 0, 0, 1])).all()
    with pytest.raises(RGBDFolderError, match='zero norm'):
        quaternion_pose([0, 0, 0, 0, 0, 0, 0])
    # axis-angle through the reader: world-to-camera rows, inverted
    root = tmp_path / 'rec'
    for d in ('lowres_wide', 'lowres_depth', 'lowres_wide_intrinsics'):
        os.makedirs(root / d)
    rows, expected = [], []
    axes = rng.normal(size=(30, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    angles = np.concatenate([rng.uniform(0, 2 * np.pi, 27), [1e-9, 1e-13, 0.0]])
    for i, (axis, angle) in enumerate(zip(axes, angles)):
        name = f'v_{100 + i:.3f}'
        cv2.imwrite(str(root / 'lowres_wide' / f'{name}.png'), np.full((4, 6, 3), 9, np.uint8))
        cv2.imwrite(str(root / 'lowres_depth' / f'{name}.png'), np.full((4, 6), 900, np.uint16))
        (root / 'lowres_wide_intrinsics' / f'{name}.pincam').write_text('6 4 5 5 2.5 1.5')
        w2c = np.eye(4)
        w2c[:3, :3] = _closed_form_rotvec(axis * angle)
        w2c[:3, 3] = rng.normal(size=3)
        rows.append(f'{100 + i:.3f} {" ".join(repr(float(x)) for x in axis * angle)} '
                    f'{" ".join(repr(float(x)) for x in w2c[:3, 3])}')
        expected.append(np.linalg.inv(w2c))
    (root / 'lowres_wide.traj').write_text('\n'.join(rows) + '\n')
    seq = load_rgbd_folder(str(root))
    np.testing.assert_allclose(seq.poses, np.stack(expected), atol=1e-12)


# ------------------------------------------------------------------------------------------------
# bad input: a clear error naming the file and frame, or a logged skip


def test_unequal_counts_name_the_counts(room, tmp_path):
    root = write_plain(room, tmp_path / 'rec')
    os.remove(root / 'depth' / 'frame_00001.png')
    with pytest.raises(RGBDFolderError, match='3 colour images in rgb/, 2 depth images in depth/ '
                       'and 3 poses in gt_pose.txt'):
        load_rgbd_folder(str(root))


def test_pose_row_with_15_numbers(room, tmp_path):
    root = write_plain(room, tmp_path / 'rec', poses='16')
    lines = (root / 'traj.txt').read_text().splitlines()
    lines[1] = ' '.join(lines[1].split()[:15])
    (root / 'traj.txt').write_text('\n'.join(lines) + '\n')
    with pytest.raises(RGBDFolderError, match=r'traj.txt:2: a pose row of 15 numbers, the first '
                       r'row has 16'):
        load_rgbd_folder(str(root))
    (root / 'traj.txt').write_text('\n'.join(lines[1:]) + '\n')
    with pytest.raises(RGBDFolderError, match=r'traj.txt:1: a pose row of 15 numbers; expected'):
        load_rgbd_folder(str(root))


@pytest.mark.parametrize('poses', ['tum', '16'])
def test_nan_inf_poses_are_skipped_and_logged(room, tmp_path, caplog, poses):
    root = write_plain(room, tmp_path / 'rec', poses=poses)
    name = 'gt_pose.txt' if poses == 'tum' else 'traj.txt'
    lines = (root / name).read_text().splitlines()
    k = 2 if poses == 'tum' else 1  # TUM files have a header line
    parts = lines[k].split()
    parts[3] = 'nan' if poses == 'tum' else 'inf'
    lines[k] = ' '.join(parts)
    (root / name).write_text('\n'.join(lines) + '\n')
    seq = load_rgbd_folder(str(root))
    assert seq.frame_ids == ['frame_00000', 'frame_00002']
    assert 'frame frame_00001: pose is not finite' in caplog.text


def test_colour_and_depth_sizes_need_both_intrinsics(room, tmp_path, caplog):
    root = write_plain(room, tmp_path / 'rec')
    cv2.imwrite(str(root / 'rgb' / 'frame_00001.png'), room.color[1][:, :, ::-1])
    seq = load_rgbd_folder(str(root))
    seq.load_frame(0)
    with pytest.raises(RGBDFolderError, match=r'frame frame_00001: colour image .*frame_00001.png '
                       r'is 48x36 but depth image .*frame_00001.png is 24x18'):
        seq.load_frame(1)
    # with the intrinsics of both cameras the colour is resized to the depth size
    os.remove(root / 'intrinsic.txt')
    np.savetxt(root / 'intrinsic_depth.txt', room.k_depth)
    np.savetxt(root / 'intrinsic_color.txt', room.k_color)
    assert load_rgbd_folder(str(root)).load_frame(1)[0].shape == (18, 24, 3)
    assert 'differ from the depth intrinsics' not in caplog.text
    bad = room.k_color.copy()
    bad[0, 0] *= 1.5  # a colour camera that a plain resize does not register to the depth
    np.savetxt(root / 'intrinsic_color.txt', bad)
    load_rgbd_folder(str(root)).load_frame(1)
    assert 'differ from the depth intrinsics' in caplog.text


def test_empty_depth(room, tmp_path):
    root = write_plain(room, tmp_path / 'rec')
    (root / 'depth' / 'frame_00002.png').write_bytes(b'')
    seq = load_rgbd_folder(str(root))
    with pytest.raises(RGBDFolderError, match='frame frame_00002: depth image .*frame_00002.png is '
                       'an empty file'):
        seq.load_frame(2)
    cv2.imwrite(str(root / 'depth' / 'frame_00001.png'), np.zeros((18, 24), np.uint16))
    with pytest.raises(RGBDFolderError, match='frame frame_00001: depth image .* has no valid '
                       'pixel'):
        seq.load_frame(1)


def test_more_bad_inputs(room, tmp_path):
    root = write_plain(room, tmp_path / 'rec')
    # a second depth size or type than the first frame's
    np.save(root / 'depth' / 'x.npy', np.ones((18, 24), np.float32))
    os.replace(root / 'depth' / 'x.npy', root / 'depth' / 'frame_00002.npy')
    os.remove(root / 'depth' / 'frame_00002.png')
    seq = load_rgbd_folder(str(root))
    with pytest.raises(RGBDFolderError, match='frame frame_00002: .*holds float32, the first '
                       'frame uint16'):
        seq.load_frame(2)
    cv2.imwrite(str(root / 'depth' / 'frame_00001.png'), np.ones((9, 12), np.uint16))
    with pytest.raises(RGBDFolderError, match='frame frame_00001: depth image .* is 12x9, the '
                       'first frame\'s is 24x18'):
        seq.load_frame(1)
    # several pose lists; 8-bit depth; a scaled rotation
    (root / 'poses_old.txt').write_text('0 0 0 1\n')
    (root / 'my_pose.txt').write_text('0 0 0 1\n')
    os.remove(root / 'gt_pose.txt')
    with pytest.raises(RGBDFolderError, match='several pose lists'):
        load_rgbd_folder(str(root))
    os.remove(root / 'poses_old.txt')
    (root / 'my_pose.txt').write_text('2 0 0 0 0 2 0 0 0 0 2 0\n' * 3)
    with pytest.raises(RGBDFolderError, match='my_pose.txt:1: the 3x3 block is not a rotation'):
        load_rgbd_folder(str(root))


def test_transforms_json_without_depth_and_uint8_depth(room, tmp_path):
    root = write_transforms_json(room, tmp_path / 'ns')
    meta = json.loads((root / 'transforms.json').read_text())
    del meta['frames'][1]['depth_file_path']
    (root / 'transforms.json').write_text(json.dumps(meta))
    with pytest.raises(RGBDFolderError, match=r'frame 1 \(./images/frame_00002.png\) has no '
                       'depth_file_path'):
        load_rgbd_folder(str(root))
    root = write_plain(room, tmp_path / 'rec8')
    for i in range(3):
        cv2.imwrite(str(root / 'depth' / f'frame_{i:05d}.png'), np.ones((18, 24), np.uint8))
    with pytest.raises(RGBDFolderError, match='8-bit depth .* pass --depth-scale'):
        load_rgbd_folder(str(root))
    seq = load_rgbd_folder(str(root), depth_scale=100)
    assert '--depth-scale' in seq.depth_units
    assert seq.load_frame(0)[1].max() == pytest.approx(0.01)


def test_truncated_sens_and_scene_names(room, tmp_path):
    path = write_sens(room, tmp_path / 'scene0001_00.sens')
    assert load_rgbd_folder(str(path)).scene_name == 'scene0001_00'
    ns = write_transforms_json(room, tmp_path / 'my_capture')
    assert load_rgbd_folder(str(ns / 'transforms.json')).scene_name == 'my_capture'
    data = path.read_bytes()
    path.write_bytes(data[:-20])  # the last frame's depth is cut short
    with pytest.raises(RGBDFolderError, match='scene0001_00.sens: truncated file in frame 2/3'):
        load_rgbd_folder(str(path))
