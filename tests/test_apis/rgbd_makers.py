"""Writers of tiny posed RGB-D recordings in the real folder layouts (test helpers)."""
import os

import cv2
import numpy as np

H, W = 12, 16
K = np.array([[10.0, 0, 7.5], [0, 10.0, 5.5], [0, 0, 1]])


def _pose(i):
    pose = np.eye(4)
    pose[:3, 3] = [0.1 * i, 0.0, 1.0]
    return pose


def _write_images(rgb_path, depth_path, i, depth_mm=1500, color_hw=(H, W)):
    rgb = np.full((*color_hw, 3), 40 * i % 255, np.uint8)
    cv2.imwrite(rgb_path, rgb)
    cv2.imwrite(depth_path, np.full((H, W), depth_mm, np.uint16))


def make_scannet(root, n=4):
    for d in ('color', 'depth', 'pose', 'intrinsic'):
        os.makedirs(root / d, exist_ok=True)
    for i in range(n):
        _write_images(str(root / 'color' / f'{i}.jpg'), str(root / 'depth' / f'{i}.png'), i,
                      color_hw=(2 * H, 2 * W))
        np.savetxt(root / 'pose' / f'{i}.txt', _pose(i))
    full = np.eye(4)
    full[:3, :3] = K
    np.savetxt(root / 'intrinsic' / 'intrinsic_depth.txt', full)
    full[:2, :3] *= 2  # the colour images are twice the depth size (as SensReader's export)
    np.savetxt(root / 'intrinsic' / 'intrinsic_color.txt', full)
    return root


def make_tum(root, n=4):
    os.makedirs(root / 'rgb')
    os.makedirs(root / 'depth')
    with open(root / 'rgb.txt', 'w') as fr, open(root / 'depth.txt', 'w') as fd, \
            open(root / 'groundtruth.txt', 'w') as fg:
        fr.write('# color images\n')
        fg.write('# timestamp tx ty tz qx qy qz qw\n')
        for i in range(n):
            t = 100.0 + i * 0.1
            _write_images(str(root / 'rgb' / f'{t:.6f}.png'), str(root / 'depth' / f'{t:.6f}.png'),
                          i, depth_mm=5000)
            fr.write(f'{t:.6f} rgb/{t:.6f}.png\n')
            fd.write(f'{t + 0.005:.6f} depth/{t:.6f}.png\n')
            fg.write(f'{t + 0.001:.6f} {0.1 * i} 0 1 0 0 0 1\n')
    np.savetxt(root / 'intrinsics.txt', K)
    return root


def make_7scenes(root, n=4):
    os.makedirs(root)
    for i in range(n):
        stem = str(root / f'frame-{i:06d}')
        _write_images(f'{stem}.color.png', f'{stem}.depth.png', i)
        np.savetxt(root / f'frame-{i:06d}.pose.txt', _pose(i))
    np.savetxt(root / 'camera-intrinsics.txt', K)
    return root


