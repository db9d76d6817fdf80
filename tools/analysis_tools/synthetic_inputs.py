"""A tiny packed ODIN batch of synthetic posed RGB-D views (the benchmarks' and tests' input).

Not a command-line script: ``tools/analysis_tools/benchmark_train_memory.py`` and the tests load
it with :func:`projects.odin.utils.scripts.load_script`. The batch has the layout of
docs/data_contract.md, so the model's data preprocessor takes it as it takes the pipeline's.
"""
from typing import List, Optional, Sequence

import numpy as np
import torch


def _look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Camera-to-world pose (OpenCV axes: x right, y down, z forward)."""
    z = target - eye
    z = z / np.linalg.norm(z)
    x = np.cross(z, np.array([0.0, 0.0, 1.0]))
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = x, y, z, eye
    return pose


def create_odin_inputs(num_views: int = 2,
                       img_hw: Sequence[int] = (32, 32),
                       num_points: int = 300,
                       num_classes: int = 4,
                       num_instances: int = 3,
                       num_superpoints: Optional[int] = 40,
                       mode: str = '3d',
                       batch_size: int = 1,
                       seed: int = 0) -> dict:
    """Build a tiny packed batch as the data pipeline produces it (docs/data_contract.md).

    3D mode: ``num_views`` posed RGB-D views of a synthetic box room (depth ray-cast onto a
    plane-and-boxes scene is approximated by a tilted plane per view), the mesh ``points``
    sampled from the unprojected depth, ``superpoints`` and per-point instance/semantic labels
    (instances = spatial clusters). 2D mode: single images with ``gt_instances``.

    Args:
        num_views: views per scene (3D).
        img_hw: image size (H, W).
        num_points: mesh points per scene (3D).
        num_classes: classes of the labels.
        num_instances: instances per sample.
        num_superpoints: superpoints per scene (None: no ``superpoints`` key).
        mode: '3d' or '2d'.
        batch_size: samples.
        seed: RNG seed.

    Returns:
        dict: ``{'inputs': {...}, 'data_samples': [...]}`` for the model's data preprocessor.
    """
    from mmdet.structures.mask import BitmapMasks
    from mmdet3d.structures import Det3DDataSample, PointData
    from mmengine.structures import InstanceData

    from projects.odin.structures.geometry import unproject_depth
    rng = np.random.RandomState(seed)
    h, w = img_hw
    samples: List = []
    inputs: dict = {'img': []}
    if mode == '2d':
        for _ in range(batch_size):
            img = torch.from_numpy(rng.randint(0, 255, (3, h, w)).astype(np.uint8))
            masks = np.zeros((num_instances, h, w), dtype=np.uint8)
            for i in range(num_instances):
                y0, x0 = rng.randint(0, h // 2), rng.randint(0, w // 2)
                masks[i, y0:y0 + h // 3, x0:x0 + w // 3] = 1
            s = Det3DDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w),
                                              pad_shape=(h, w), batch_input_shape=(h, w),
                                              scale_factor=(1.0, 1.0)))
            s.gt_instances = InstanceData(
                labels=torch.from_numpy(rng.randint(0, num_classes, num_instances)).long(),
                masks=BitmapMasks(masks, h, w),
                bboxes=torch.zeros(num_instances, 4))
            inputs['img'].append(img)
            samples.append(s)
        return dict(inputs=inputs, data_samples=samples)
    for key in ('depths', 'cam2world', 'intrinsics', 'points', 'superpoints'):
        inputs[key] = []
    f = 0.8 * w
    K = np.eye(4)
    K[0, 0], K[1, 1], K[0, 2], K[1, 2] = f, f, (w - 1) / 2, (h - 1) / 2
    for _ in range(batch_size):
        target = np.array([1.0, 1.0, 0.5])
        imgs, depths, cam2world, xyz_all = [], [], [], []
        for v in range(num_views):
            ang = 2 * np.pi * v / max(num_views, 1) + rng.uniform(-0.2, 0.2)
            eye = target + np.array([1.2 * np.cos(ang), 1.2 * np.sin(ang), 0.6])
            pose = _look_at(eye, target)
            ys, xs = np.mgrid[0:h, 0:w]
            depth = 1.3 + 0.3 * (ys / h) + 0.1 * np.sin(xs / 3.0) + rng.uniform(0, 0.02, (h, w))
            depth[rng.rand(h, w) < 0.02] = 0.0
            world = unproject_depth(torch.from_numpy(depth)[None], torch.from_numpy(K)[None],
                                    torch.from_numpy(pose)[None]).numpy().reshape(-1, 3)  # float64
            valid = depth.reshape(-1) > 0
            xyz_all.append(world[valid])
            img = np.clip(128 + 100 * np.sin(world * 3).reshape(h, w, 3), 0, 255)
            imgs.append(torch.from_numpy(img.transpose(2, 0, 1).astype(np.uint8)))
            depths.append(torch.from_numpy(depth.astype(np.float32)))
            cam2world.append(torch.from_numpy(pose.astype(np.float32)))
        xyz = np.concatenate(xyz_all)
        pts = xyz[rng.choice(len(xyz), num_points, replace=len(xyz) < num_points)]
        pts = pts + rng.normal(0, 0.003, pts.shape)
        centers = pts[rng.choice(len(pts), num_instances, replace=False)]
        dist = np.linalg.norm(pts[:, None] - centers[None], axis=-1)
        inst = dist.argmin(1)
        inst[dist.min(1) > np.median(dist.min(1)) * 2] = -1
        sem_of_inst = rng.randint(0, num_classes, num_instances)
        sem = np.where(inst >= 0, sem_of_inst[np.maximum(inst, 0)], num_classes)
        rgb = rng.uniform(0, 1, (num_points, 3))
        inputs['img'].append(torch.stack(imgs))
        inputs['depths'].append(torch.stack(depths))
        inputs['cam2world'].append(torch.stack(cam2world))
        inputs['intrinsics'].append(torch.from_numpy(np.stack([K] * num_views).astype(np.float32)))
        inputs['points'].append(torch.from_numpy(np.concatenate([pts, rgb], 1).astype(np.float32)))
        if num_superpoints:
            sp_centers = pts[rng.choice(len(pts), num_superpoints, replace=False)]
            sp = np.linalg.norm(pts[:, None] - sp_centers[None], axis=-1).argmin(1)
            inputs['superpoints'].append(torch.from_numpy(sp).long())
        s = Det3DDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w),
                                          num_views=num_views))
        s.gt_pts_seg = PointData(pts_semantic_mask=torch.from_numpy(sem).long(),
                                 pts_instance_mask=torch.from_numpy(inst).long())
        s.eval_ann_info = dict(pts_semantic_mask=sem, pts_instance_mask=inst)
        samples.append(s)
    if not num_superpoints:
        inputs.pop('superpoints')
    return dict(inputs=inputs, data_samples=samples)
