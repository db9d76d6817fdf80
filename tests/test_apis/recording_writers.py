"""One synthetic room rendered into every recording layout the readers support (test helpers).

The room is a furnished room of :mod:`projects.odin.datasets.synthetic_world`, ray-cast from a few
cameras. Its depth is quantised to millimetres once, so every layout stores exactly the same
depth (16-bit mm, TUM's 1/5000 m, float metres) and the fused clouds of all layouts must agree to
float precision; each writer follows the format's own definition (see the readers' docstrings):
poses as camera-to-world quaternions (TUM), 4x4/3x4 rows, OpenGL transform matrices (nerfstudio),
world-to-camera axis-angle rows (ARKitScenes), float32 matrices in a binary stream (.sens).
"""
import json
import os
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

OPENGL = np.diag([1.0, -1.0, -1.0, 1.0])


@dataclass
class Room:
    """A rendered synthetic room.

    Attributes:
        poses: (V, 4, 4) float64 camera-to-world, OpenCV axes.
        k_depth: (4, 4) depth intrinsics at ``depth_mm``'s size.
        k_color: (4, 4) colour intrinsics at ``color``'s size.
        depth_mm: (V, H, W) uint16 millimetres (0 = no measurement).
        color: (V, Hc, Wc, 3) uint8 RGB at the colour size (twice the depth size).
        color_small: (V, H, W, 3) uint8 RGB at the depth size.
        times: (V,) float timestamps (seconds).
    """

    poses: np.ndarray
    k_depth: np.ndarray
    k_color: np.ndarray
    depth_mm: np.ndarray
    color: np.ndarray
    color_small: np.ndarray
    times: np.ndarray

    def __len__(self):
        return len(self.poses)


def render_room(num_frames: int = 3, depth_hw=(18, 24), seed: int = 3) -> Room:
    """Render ``num_frames`` views of one furnished synthetic room."""
    from projects.odin.datasets.synthetic_world import WorldConfig, build_scene, render
    cfg = WorldConfig.from_preset('tiny', depth_hw=depth_hw,
                                  color_hw=(2 * depth_hw[0], 2 * depth_hw[1]),
                                  num_frames=num_frames)
    scene = build_scene(seed, 0, cfg)
    poses = scene.poses.astype(np.float64)
    depths, colors, smalls = [], [], []
    for v, pose in enumerate(poses):
        depth = render(scene, pose, scene.intrinsic_depth, cfg.depth_hw)['depth']
        dmm = np.round(depth * 1000.0).astype(np.uint16)
        dmm[v % depth_hw[0], :3] = 0  # a few pixels without measurement
        depths.append(dmm)
        colors.append(render(scene, pose, scene.intrinsic_color, cfg.color_hw)['color'])
        smalls.append(render(scene, pose, scene.intrinsic_depth, cfg.depth_hw)['color'])
    return Room(poses, scene.intrinsic_depth.astype(np.float64),
                scene.intrinsic_color.astype(np.float64), np.stack(depths), np.stack(colors),
                np.stack(smalls), 1000.0 + 0.1 * np.arange(len(poses)))


def _rgb(path, rgb):
    cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, ::-1]))


def _mat_text(mat) -> str:
    return '\n'.join(' '.join(repr(float(x)) for x in row) for row in np.asarray(mat)) + '\n'


def _row(values) -> str:
    return ' '.join(repr(float(x)) for x in values)


def write_scannet(room: Room, root):
    """ScanNet ``SensorData.py`` export: colour at its own size with both intrinsics."""
    for d in ('color', 'depth', 'pose', 'intrinsic'):
        os.makedirs(root / d)
    for i in range(len(room)):
        _rgb(root / 'color' / f'{i}.png', room.color[i])
        cv2.imwrite(str(root / 'depth' / f'{i}.png'), room.depth_mm[i])
        (root / 'pose' / f'{i}.txt').write_text(_mat_text(room.poses[i]))
    (root / 'intrinsic' / 'intrinsic_depth.txt').write_text(_mat_text(room.k_depth))
    (root / 'intrinsic' / 'intrinsic_color.txt').write_text(_mat_text(room.k_color))
    return root


def write_sens(room: Room, path):
    """ScanNet ``.sens``: JPEG colour, zlib depth, float32 camera-to-world per frame."""
    from projects.odin.datasets.sens_data import (
        SensorFrame,
        SensorHeader,
        encode_color,
        encode_depth,
        write_sens,
    )
    h, w = room.depth_mm.shape[1:]
    ch, cw = room.color.shape[1:3]
    frames = [SensorFrame(room.poses[i].astype(np.float32), encode_color(room.color[i], 'jpeg'),
                          encode_depth(room.depth_mm[i]), i, i) for i in range(len(room))]
    header = SensorHeader('synthetic', room.k_color.astype(np.float32), np.eye(4, dtype=np.float32),
                          room.k_depth.astype(np.float32), np.eye(4, dtype=np.float32), 'jpeg',
                          'zlib_ushort', cw, ch, w, h, 1000.0, len(frames))
    write_sens(path, header, frames)
    return path


def write_tum(room: Room, root):
    """TUM RGB-D: lists, 5000-per-metre depth, timestamped quaternion poses (not in sync)."""
    os.makedirs(root / 'rgb')
    os.makedirs(root / 'depth')
    rgb, dep, gt = ['# color images'], ['# depth maps'], ['# timestamp tx ty tz qx qy qz qw']
    for i, t in enumerate(room.times):
        _rgb(root / 'rgb' / f'{t:.6f}.png', room.color_small[i])
        cv2.imwrite(str(root / 'depth' / f'{t + 0.004:.6f}.png'),
                    (room.depth_mm[i].astype(np.uint32) * 5).astype(np.uint16))
        rgb.append(f'{t:.6f} rgb/{t:.6f}.png')
        dep.append(f'{t + 0.004:.6f} depth/{t + 0.004:.6f}.png')
        q = Rotation.from_matrix(room.poses[i][:3, :3]).as_quat()  # x y z w
        gt.append(f'{t + 0.001:.6f} {_row(room.poses[i][:3, 3])} {_row(q)}')
    for name, lines in (('rgb.txt', rgb), ('depth.txt', dep), ('groundtruth.txt', gt)):
        (root / name).write_text('\n'.join(lines) + '\n')
    (root / 'intrinsics.txt').write_text(_mat_text(room.k_depth[:3, :3]))
    return root


def write_7scenes(room: Room, root):
    """7-Scenes: frame-XXXXXX files, invalid depth = 65535."""
    os.makedirs(root)
    for i in range(len(room)):
        stem = root / f'frame-{i:06d}'
        _rgb(f'{stem}.color.png', room.color_small[i])
        d = room.depth_mm[i].copy()
        d[d == 0] = 65535
        cv2.imwrite(f'{stem}.depth.png', d)
        (root / f'frame-{i:06d}.pose.txt').write_text(_mat_text(room.poses[i]))
    (root / 'camera-intrinsics.txt').write_text(_mat_text(room.k_depth[:3, :3]))
    return root


def write_plain(room: Room, root, poses: str = 'tum', depth: str = 'png'):
    """A plain folder: ``rgb/frame_00000.png``, ``depth/frame_00000.<png|npy|tiff>``, a pose list
    (``gt_pose.txt`` TUM rows, ``traj.txt`` 16 numbers or ``poses.txt`` 12 numbers) and a 4x4
    ``intrinsic.txt``; no list file."""
    os.makedirs(root / 'rgb')
    os.makedirs(root / 'depth')
    rows = []
    for i in range(len(room)):
        _rgb(root / 'rgb' / f'frame_{i:05d}.png', room.color_small[i])
        metres = room.depth_mm[i].astype(np.float32) / np.float32(1000)
        if depth == 'png':
            cv2.imwrite(str(root / 'depth' / f'frame_{i:05d}.png'), room.depth_mm[i])
        elif depth == 'npy':
            np.save(root / 'depth' / f'frame_{i:05d}.npy', metres)
        else:
            assert cv2.imwrite(str(root / 'depth' / f'frame_{i:05d}.{depth}'), metres)
        p = room.poses[i]
        if poses == 'tum':
            q = Rotation.from_matrix(p[:3, :3]).as_quat()
            rows.append(f'{room.times[i]:.6f} {_row(p[:3, 3])} {_row(q)}')
        elif poses == '16':
            rows.append(_row(p.reshape(-1)))
        else:
            rows.append(_row(p[:3].reshape(-1)))
    name = {'tum': 'gt_pose.txt', '16': 'traj.txt', '12': 'poses.txt'}[poses]
    header = '# timestamp tx ty tz qx qy qz qw\n' if poses == 'tum' else ''
    (root / name).write_text(header + '\n'.join(rows) + '\n')
    (root / 'intrinsic.txt').write_text(_mat_text(room.k_depth))
    return root


def write_transforms_json(room: Room, root, per_frame: bool = False):
    """nerfstudio ``transforms.json``: OpenGL camera-to-world, depth_file_path per frame.

    ``per_frame`` (as Polycam exports): per-frame intrinsics of a colour image twice the depth
    size; otherwise (as Record3D exports) global intrinsics of a colour image of the depth size.
    """
    os.makedirs(root / 'images')
    os.makedirs(root / 'depth')
    h, w = room.depth_mm.shape[1:]
    s = 2 if per_frame else 1
    intr = dict(fl_x=room.k_depth[0, 0] * s, fl_y=room.k_depth[1, 1] * s,
                cx=room.k_depth[0, 2] * s, cy=room.k_depth[1, 2] * s, w=w * s, h=h * s)
    frames = []
    for i in range(len(room)):
        name = f'frame_{i + 1:05d}'
        _rgb(root / 'images' / f'{name}.png', room.color[i] if per_frame else room.color_small[i])
        cv2.imwrite(str(root / 'depth' / f'{name}.png'), room.depth_mm[i])
        fr = dict(file_path=f'./images/{name}.png', depth_file_path=f'./depth/{name}.png',
                  transform_matrix=(room.poses[i] @ OPENGL).tolist())
        if per_frame:
            fr.update(intr)
        frames.append(fr)
    meta = dict(camera_model='OPENCV', frames=frames[::-1])  # the reader sorts by file name
    if not per_frame:
        meta.update(intr)
    (root / 'transforms.json').write_text(json.dumps(meta, indent=1))
    return root


def write_arkitscenes(room: Room, root, video_id: str = '41069025', scene_folder: bool = False):
    """ARKitScenes: lowres_wide/, lowres_depth/ (mm), .pincam per frame, world-to-camera .traj
    rows (timestamp, axis-angle, translation), with extra trajectory rows between frames.

    ``scene_folder``: the 3DOD download's layout (ARKitScenes ``DATA.md``): ``root`` is the scene
    folder ``<video_id>/`` holding ``<video_id>_frames/`` (the frame folders above) next to
    ``<video_id>_3dod_annotation.json`` and ``<video_id>_3dod_mesh.ply`` (tiny stand-ins here).
    """
    if scene_folder:
        os.makedirs(root)
        (root / f'{video_id}_3dod_annotation.json').write_text('{"data": []}\n')
        from projects.odin.datasets.scannet_raw import write_mesh_ply
        write_mesh_ply(root / f'{video_id}_3dod_mesh.ply', np.zeros((1, 3)),
                       np.zeros((1, 3), np.uint8))
        write_arkitscenes(room, root / f'{video_id}_frames', video_id)
        return root
    for d in ('lowres_wide', 'lowres_depth', 'lowres_wide_intrinsics'):
        os.makedirs(root / d)
    h, w = room.depth_mm.shape[1:]
    k = room.k_depth
    traj = []
    for i, t in enumerate(room.times):
        name = f'{video_id}_{t:.3f}'
        _rgb(root / 'lowres_wide' / f'{name}.png', room.color_small[i])
        cv2.imwrite(str(root / 'lowres_depth' / f'{name}.png'), room.depth_mm[i])
        (root / 'lowres_wide_intrinsics' / f'{name}.pincam').write_text(
            f'{w} {h} {_row([k[0, 0], k[1, 1], k[0, 2], k[1, 2]])}\n')
        w2c = np.linalg.inv(room.poses[i])
        rotvec = Rotation.from_matrix(w2c[:3, :3]).as_rotvec()
        traj.append(f'{t:.3f} {_row(rotvec)} {_row(w2c[:3, 3])}')
        traj.append(f'{t + 0.05:.3f} 0 0 0 0 0 0')  # a pose between frames: never the nearest
    (root / 'lowres_wide.traj').write_text('\n'.join(traj) + '\n')
    return root
