"""Multi-view RGB-D pipeline: alignment of depth and mesh after every augmentation, intrinsics,
frame sampling, camera drop, packing contract."""
import pickle
import shutil

import numpy as np
import pytest
import torch
from mmengine.registry import init_default_scope
from scipy.spatial import cKDTree

from projects.odin.datasets.loading import sample_frame_indices
from projects.odin.datasets.scannet_raw import read_mesh_ply
from projects.odin.datasets.synthetic_world import WorldConfig, build_scene, render
from projects.odin.datasets.transforms import (
    ODINRandomResizeCrop,
    ODINResize,
    odin_collate,
    unproject,
)

init_default_scope('mmdet3d')


def _dense_surface(verts, faces, n=12):
    """Points on every triangle (barycentric grid, n subdivisions)."""
    g = np.arange(n + 1) / n
    a, b = np.meshgrid(g, g)
    keep = a + b <= 1
    a, b = a[keep], b[keep]
    v0, v1, v2 = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    pts = (v0[:, None] + a[None, :, None] * (v1 - v0)[:, None] +
           b[None, :, None] * (v2 - v0)[:, None])
    return pts.reshape(-1, 3)


@pytest.fixture(scope='module')
def dense_data(synthetic_raw, converted, tmp_path_factory):
    """Converted data whose point file holds a dense sampling of the mesh surface."""
    raw, _ = synthetic_raw
    out, _ = converted
    root = tmp_path_factory.mktemp('dense')
    shutil.copytree(out, root, dirs_exist_ok=True)
    with open(root / 'scannet_infos_train.pkl', 'rb') as fh:
        infos = pickle.load(fh)
    info = infos['data_list'][0]
    scene = info['sample_idx']
    xyz, rgb, faces = read_mesh_ply(raw / 'scans' / scene / f'{scene}_vh_clean_2.ply')
    dense = _dense_surface(xyz.astype(np.float64), faces).astype(np.float32)
    pts = np.concatenate([dense, np.full((len(dense), 3), 128, np.float32)], 1)
    pts.tofile(root / 'dense.bin')
    info['lidar_points']['lidar_path'] = 'dense.bin'
    for key in ('pts_semantic_mask_path', 'pts_instance_mask_path', 'super_pts_path'):
        info.pop(key)
    infos['data_list'] = [info]
    with open(root / 'dense_infos.pkl', 'wb') as fh:
        pickle.dump(infos, fh)
    return root


def _build(transforms):
    from mmdet3d.registry import TRANSFORMS
    return [TRANSFORMS.build(t) for t in transforms]


def _alignment(results):
    """Distances from every unprojected valid depth pixel to the (transformed) surface points."""
    pts = results['points'].tensor[:, :3].numpy()
    tree = cKDTree(pts)
    xyz = np.concatenate([unproject(d, k, p) for d, k, p in
                          zip(results['depths'], results['cam2img'], results['cam2world'])])
    assert len(xyz) > 500
    return tree.query(xyz)[0]


def test_depth_and_mesh_stay_aligned_after_every_augmentation(dense_data):
    from mmdet3d.registry import DATASETS
    np.random.seed(0)
    ds = DATASETS.build(dict(type='ODINScanNetDataset', data_root=str(dense_data),
                             ann_file='dense_infos.pkl', pipeline=[]))
    steps = _build([
        dict(type='LoadODINFrames', num_views=4, sampling='chunk'),
        dict(type='LoadPointsFromFile', coord_type='DEPTH', load_dim=6, use_dim=[0, 1, 2, 3, 4, 5],
             shift_height=False, use_color=True),
        dict(type='ODINRandomResizeCrop', crop_size=(40, 40), scale_range=(0.5, 2.0), prob=1.0),
        dict(type='ODINColorJitter', prob=1.0),
        dict(type='ODINGlobalAug3D'),
        dict(type='ODINCameraDrop', prob=1.0),
        dict(type='ODINGlobalAug3D'),
    ])
    for trial in range(2):
        results = ds.get_data_info(0)
        for i, t in enumerate(steps):
            results = t(results)
            if i == 0:
                continue
            dist = _alignment(results)
            # surface sampling (< 3.5 cm) + half a source pixel of nearest resampling
            assert np.percentile(dist, 50) < 0.03, (trial, t)
            assert np.percentile(dist, 95) < 0.06, (trial, t)
        flow = results['transformation_3d_flow']
        assert flow == ['T', 'T']
        assert not np.allclose(results['global_aug_matrix'], np.eye(4), atol=1e-3)
    # control: moving the points but not the poses breaks the alignment (the check can fail)
    pts = results['points'].tensor
    pts[:, :3] = pts[:, :3] @ torch.tensor([[0., -1, 0], [1, 0, 0], [0, 0, 1]]).T + 0.5
    assert np.percentile(_alignment(results), 50) > 0.15


def _view_results(scene, hw, k, pose):
    out = render(scene, pose, k, hw)
    return dict(img=[out['color']], depths=[out['depth'].astype(np.float32)],
                cam2img=[k.astype(np.float32)], cam2world=[pose.astype(np.float32)])


@pytest.mark.parametrize('mode', ['resize', 'resize_crop'])
def test_intrinsics_consistent_with_resized_images(mode):
    cfg = WorldConfig.from_preset('tiny')
    scene = build_scene(2, 0, cfg)
    pose = scene.poses[1].astype(np.float64)
    hw = (96, 128)
    f = 0.9 * hw[1]
    k = np.array([[f, 0, 63.5, 0], [0, f, 47.5, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    res = _view_results(scene, hw, k, pose)
    if mode == 'resize':
        res = ODINResize(short_edge=48, max_size=64)(res)
        assert res['img'][0].shape == (48, 64, 3) and res['img_shape'] == (48, 64)
        np.testing.assert_allclose(res['cam2img'][0][:3, :3],
                                   [[f / 2, 0, 31.75], [0, f / 2, 23.75], [0, 0, 1]], atol=1e-4)
    else:
        np.random.seed(3)
        res = ODINRandomResizeCrop(crop_size=(40, 56), scale_range=(1.5, 2.0), prob=1.0)(res)
        assert res['img'][0].shape == (40, 56, 3) and res['depths'][0].shape == (40, 56)
        oy, ox = res['crop_offset'][0]
        sx, sy = res['scale_factor'][0]
        assert (oy, ox) != (0, 0)
        np.testing.assert_allclose(res['cam2img'][0][0, 2], 63.5 * sx - ox,
                                   atol=1e-4)
    k_new = res['cam2img'][0].astype(np.float64)
    h, w = res['depths'][0].shape
    direct = render(scene, pose, k_new, (h, w))
    d_aug, d_dir = res['depths'][0], direct['depth']
    valid = (d_aug > 0) & (d_dir > 0)
    assert valid.mean() > 0.5
    diff = np.abs(d_aug - d_dir)[valid]
    assert np.median(diff) < 0.015 and np.mean(diff < 0.05) > 0.9
    col = np.abs(res['img'][0].astype(float) - direct['color'].astype(float))[valid]
    assert col.mean() < 20
    # a shift of the principal point is clearly worse (3 px either way: the official nearest rule
    # itself samples up to one source pixel to the top-left when upsampling)
    for shift in (-3.0, 3.0):
        k_bad = k_new.copy()
        k_bad[0, 2] += shift
        bad = render(scene, pose, k_bad, (h, w))['depth']
        vb = (d_aug > 0) & (bad > 0)
        assert np.abs(d_aug - bad)[vb].mean() > 2 * diff.mean(), shift


def test_frame_sampling():
    rng = np.random.default_rng(0)
    strides, starts = set(), set()
    for _ in range(200):
        idx = sample_frame_indices(7, 5, 'chunk', 4, rng)
        assert len(idx) == 5 and idx.max() < 7
        stride = (idx[1] - idx[0]) % 7
        assert all((idx[i + 1] - idx[i]) % 7 == stride for i in range(4))  # wraps around
        strides.add(int(stride))
        starts.add(int(idx[0]))
    assert strides == {1, 2, 3, 4} and starts == set(range(7))
    np.testing.assert_array_equal(sample_frame_indices(10, 3, 'uniform'), [0, 3, 6])
    np.testing.assert_array_equal(sample_frame_indices(10, -1, 'uniform'), np.arange(10))
    np.testing.assert_array_equal(sample_frame_indices(4, 8, 'uniform'), np.arange(4))
    np.testing.assert_array_equal(sample_frame_indices(4, 2, 'all'), np.arange(4))
    with pytest.raises(ValueError):
        sample_frame_indices(0, 2, 'chunk')


def _pipeline(num_views=3, test=False, **frames):
    return [
        dict(type='LoadODINFrames', num_views=num_views,
             sampling='uniform' if test else 'chunk', **frames),
        dict(type='LoadPointsFromFile', coord_type='DEPTH', load_dim=6, use_dim=[0, 1, 2, 3, 4, 5],
             shift_height=False, use_color=True),
        dict(type='LoadAnnotations3D', with_bbox_3d=False, with_label_3d=False, with_mask_3d=True,
             with_seg_3d=True),
        dict(type='LoadODINSuperpoints'),
        dict(type='ODINPointSegClassMapping'),
        dict(type='ODINResize', short_edge=24, max_size=32) if test else
        dict(type='ODINRandomResizeCrop', crop_size=(32, 32)),
        dict(type='NormalizePointsColor', color_mean=None),
        dict(type='PackODINInputs'),
    ]


def test_packed_sample_contract(converted):
    from mmdet3d.registry import DATASETS
    out, _ = converted
    np.random.seed(1)
    ds = DATASETS.build(dict(type='ODINScanNetDataset', data_root=str(out),
                             ann_file='scannet_infos_train.pkl', pipeline=_pipeline()))
    item = ds[0]
    inp, ds0 = item['inputs'], item['data_samples']
    assert inp['img'].shape == (3, 3, 32, 32) and inp['img'].dtype == torch.uint8
    assert inp['depths'].shape == (3, 32, 32) and inp['depths'].dtype == torch.float32
    assert inp['cam2world'].shape == (3, 4, 4) and inp['intrinsics'].shape == (3, 4, 4)
    n = inp['points'].shape[0]
    assert inp['points'].shape == (n, 6) and float(inp['points'][:, 3:].max()) <= 1.0
    assert inp['superpoints'].shape == (n, ) and inp['superpoints'].dtype == torch.int64
    sem = ds0.gt_pts_seg.pts_semantic_mask
    inst = ds0.gt_pts_seg.pts_instance_mask
    assert sem.shape == inst.shape == (n, )
    assert int(sem.min()) >= 0 and int(sem.max()) <= 20
    assert (inst[sem == 20] == -1).all() and (sem == 20).any()  # ceiling is ignored
    assert {18, 19} <= set(sem.tolist())  # wall, floor last
    meta = ds0.metainfo
    assert meta['num_views'] == 3 and len(meta['img_path']) == 3 and len(meta['depth_path']) == 3
    assert meta['scene_id'] == 'scene0000_00' and meta['img_shape'] == (32, 32)
    np.testing.assert_allclose(np.stack(meta['cam2img']), inp['intrinsics'].numpy())
    np.testing.assert_allclose(np.stack(meta['cam2world']), inp['cam2world'].numpy())
    assert tuple(ds.metainfo['classes'][-2:]) == ('wall', 'floor')

    # test mode: eval_ann_info carries the mapped labels; uniform frames; resized, not cropped
    ds_t = DATASETS.build(dict(type='ODINScanNetDataset', data_root=str(out), test_mode=True,
                               ann_file='scannet_infos_train.pkl',
                               pipeline=_pipeline(num_views=-1, test=True,
                                                  use_inpainted_depth=True)))
    item = ds_t[0]
    ev = item['data_samples'].eval_ann_info
    np.testing.assert_array_equal(ev['pts_semantic_mask'],
                                  item['data_samples'].gt_pts_seg.pts_semantic_mask.numpy())
    assert item['inputs']['img'].shape[0] == 9 and item['inputs']['img'].shape[2:] == (24, 32)
    assert 'depth_inpainted' in item['data_samples'].metainfo['depth_path'][0]
    assert (item['inputs']['depths'] > 0).all()  # inpainted

    # per-batch camera drop keeps the views stackable and the metainfo consistent
    batch = [ds[0], ds[0]]
    np.random.seed(0)
    col = odin_collate(batch, camera_drop_prob=1.0)
    v = col['inputs']['img'][0].shape[0]
    for key in ('img', 'depths', 'cam2world', 'intrinsics'):
        assert [x.shape[0] for x in col['inputs'][key]] == [v, v]
    assert all(len(s.metainfo['img_path']) == v == s.metainfo['num_views']
               for s in col['data_samples'])


def test_override_intrinsics_and_bad_frames(converted, tmp_path):
    from mmdet3d.registry import DATASETS
    out, _ = converted
    ds = DATASETS.build(dict(type='ODINScanNetDataset', data_root=str(out),
                             ann_file='scannet_infos_train.pkl', override_cam2img=(50, 51, 30, 20),
                             pipeline=[dict(type='LoadODINFrames', num_views=2)]))
    res = ds[0]
    np.testing.assert_allclose(res['cam2img'][0][:3, :3], [[50, 0, 30], [0, 51, 20], [0, 0, 1]])
    # a missing frame file and a depth map of the wrong size give errors naming the files
    root = tmp_path / 'd'
    shutil.copytree(out, root)
    with open(root / 'scannet_infos_train.pkl', 'rb') as fh:
        infos = pickle.load(fh)
    frames = infos['data_list'][0]['images']
    keys = sorted(frames)
    (root / frames[keys[0]]['img_path']).unlink()
    import cv2
    cv2.imwrite(str(root / frames[keys[1]]['depth_map']), np.ones((5, 7), np.uint16))
    ds = DATASETS.build(dict(type='ODINScanNetDataset', data_root=str(root),
                             ann_file='scannet_infos_train.pkl',
                             pipeline=[dict(type='LoadODINFrames', sampling='all')]))
    with pytest.raises(FileNotFoundError, match=f'{keys[0]}.jpg: image file not found'):
        ds[0]
    (root / frames[keys[0]]['img_path']).write_bytes((out / frames[keys[0]]['img_path'])
                                                     .read_bytes())
    with pytest.raises(ValueError, match=rf'{keys[1]}.jpg is 64x48 but .*{keys[1]}.png is 7x5'):
        ds[0]


def test_sensor_points_follow_the_frames(converted):
    from mmdet3d.registry import DATASETS
    out, _ = converted
    np.random.seed(2)
    ds = DATASETS.build(dict(
        type='ODINScanNetDataset', data_root=str(out), ann_file='scannet_infos_train.pkl',
        modality=dict(use_lidar=False, use_camera=True),
        pipeline=[dict(type='LoadODINFrames', num_views=3),
                  dict(type='ODINRandomResizeCrop', crop_size=(32, 32), prob=1.0),
                  dict(type='ODINSensorPoints', stride=2),
                  dict(type='ODINGlobalAug3D'),
                  dict(type='PackODINInputs', keys=('img', 'depths', 'cam2world', 'intrinsics',
                                                     'points', 'superpoints'))]))
    item = ds[0]
    inp = item['inputs']
    d = inp['depths'].numpy()
    expect = sum(int((di[::2, ::2] > 0).sum()) for di in d)
    assert inp['points'].shape == (expect, 6)
    # the packed points are exactly the unprojection of the packed depth with the packed poses
    pts = []
    for di, k, p in zip(d, inp['intrinsics'].numpy(), inp['cam2world'].numpy()):
        m = np.zeros(di.shape, bool)
        m[::2, ::2] = True
        pts.append(unproject(di, k, p, m & (di > 0)))
    np.testing.assert_allclose(inp['points'][:, :3].numpy(), np.concatenate(pts), atol=1e-3)


def test_pack_rejects_views_of_different_sizes():
    from projects.odin.datasets.formatting import PackODINInputs
    res = dict(img=[np.zeros((4, 6, 3), np.uint8), np.zeros((5, 6, 3), np.uint8)],
               depths=[np.zeros((4, 6), np.float32), np.zeros((5, 6), np.float32)],
               cam2img=[np.eye(4)] * 2, cam2world=[np.eye(4)] * 2, scene_id='s0')
    with pytest.raises(ValueError, match='scene s0: views of different sizes'):
        PackODINInputs()(res)


def test_sensor_points_view_caches_reuse_only_unchanged_views(monkeypatch):
    """Fusion with per-view caches: the same output as without; a view changed since (in place,
    or another voxel size) is recomputed, an unchanged one is reused."""
    from projects.odin.datasets.transforms import ODINSensorPoints
    rng = np.random.default_rng(0)

    def views():
        depth = [rng.uniform(0.5, 3.0, (12, 16)).astype(np.float32) for _ in range(3)]
        depth[1][:4] = 0
        pose = [np.eye(4) for _ in range(3)]
        pose[2][:3, 3] = [0.03, 0.0, 0.01]
        k = np.array([[10.0, 0, 8, 0], [0, 10.0, 6, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
        return dict(depths=depth, img=[rng.integers(0, 255, (12, 16, 3), np.uint8)
                                       for _ in range(3)],
                    cam2img=[k] * 3, cam2world=pose, scene_id='s')

    def run(res, voxel=0.05, caches=None):
        res = dict(res, depths=list(res['depths']), img=list(res['img']))
        if caches is not None:
            res['view_caches'] = caches
        out = ODINSensorPoints(voxel_size=voxel)(res)
        return out['points'].tensor.numpy(), out['pixel_to_point']

    res = views()
    calls = []
    fuse = ODINSensorPoints.fuse_view

    def counting(self, results, i):
        calls.append(i)
        return fuse(self, results, i)
    caches = [{} for _ in range(3)]
    monkeypatch.setattr(ODINSensorPoints, 'fuse_view', counting)
    plain = run(res)
    assert calls == [0, 1, 2]
    for expect_calls in ([0, 1, 2], []):  # first fill, then reuse
        calls.clear()
        cached = run(res, caches=caches)
        assert calls == expect_calls
        for a, b in zip(plain, cached):
            np.testing.assert_array_equal(a, b)
    res['depths'][1][6:, :5] = 0  # changed in place after it was cached
    res['img'][2][0, 0] += 1
    calls.clear()
    changed = run(res, caches=caches)
    assert calls == [1, 2]
    calls.clear()
    plain_changed = run(res)
    for a, b in zip(plain_changed, changed):
        np.testing.assert_array_equal(a, b)
    assert len(changed[0]) != len(plain[0]) or not np.array_equal(changed[0], plain[0])
    calls.clear()
    coarse = run(res, voxel=0.2, caches=caches)
    assert calls == [0, 1, 2]
    np.testing.assert_array_equal(coarse[0], run(res, voxel=0.2)[0])
