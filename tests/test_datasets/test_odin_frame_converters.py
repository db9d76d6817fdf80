"""S3DIS, Matterport3D and AI2THOR converters on tiny inputs written in their real formats.

The inputs are rendered from the synthetic world, so the converted frames can be checked against
the converted points geometrically (unprojected depth lies on the scene surface)."""
import json
import os
import pickle

import cv2
import numpy as np
import pytest
from scipy.spatial import cKDTree

from odin_testing import REPO_ROOT
from projects.odin.class_names import AI2THOR_CLASSES, MATTERPORT3D_CLASSES, S3DIS_CLASSES
from projects.odin.datasets.converters.ai2thor import convert_ai2thor, fov_intrinsics
from projects.odin.datasets.converters.matterport import convert_matterport
from projects.odin.datasets.converters.s3dis import convert_s3dis
from projects.odin.datasets.scannet_raw import write_json, write_mesh_ply
from projects.odin.datasets.synthetic_world import WorldConfig, build_scene, render
from projects.odin.datasets.transforms import unproject

HW = (48, 64)
S3DIS_MAP = dict(wall='wall', floor='floor', ceiling='ceiling', chair='chair', table='table',
                 door='door', window='window', couch='sofa', bookshelf='bookcase',
                 picture='board')


@pytest.fixture(scope='module')
def scene():
    cfg = WorldConfig.from_preset('tiny', num_frames=4)
    return build_scene(11, 0, cfg)


def _k(hw, f=0.9):
    h, w = hw
    k = np.eye(4)
    k[0, 0] = k[1, 1] = f * w
    k[0, 2], k[1, 2] = (w - 1) / 2, (h - 1) / 2
    return k


def _frames(scene, hw, k):
    return [(p.astype(np.float64), render(scene, p.astype(np.float64), k, hw))
            for p in scene.poses]


def _load(path):
    with open(path, 'rb') as fh:
        return pickle.load(fh)


def _check_alignment(out, info, scene):
    """Unprojected converted depth lies on the scene surface (dense samples of its triangles)."""
    v, f = scene.vertices.astype(np.float64), scene.faces
    g = np.linspace(0, 1, 13)
    a, b = np.meshgrid(g, g)
    keep = a + b <= 1
    a, b = a[keep], b[keep]
    surf = (v[f[:, 0]][:, None] + a[None, :, None] * (v[f[:, 1]] - v[f[:, 0]])[:, None] +
            b[None, :, None] * (v[f[:, 2]] - v[f[:, 0]])[:, None]).reshape(-1, 3)
    tree = cKDTree(surf)
    pts = np.fromfile(out / info['lidar_points']['lidar_path'], np.float32).reshape(-1, 6)
    assert np.mean(tree.query(pts[:, :3])[0] < 1e-4) > 0.99  # the converted points (+ stairs)
    for fr in info['images'].values():
        d = cv2.imread(str(out / fr['depth_map']), cv2.IMREAD_UNCHANGED) / 1000.0
        xyz = unproject(d, np.asarray(fr['cam2img']), np.asarray(fr['cam2world']))
        assert len(xyz) > 100
        dist = tree.query(xyz)[0]
        assert np.median(dist) < 0.02 and np.percentile(dist, 95) < 0.04


# ------------------------------------------------------------------------------------------ S3DIS

def _write_s3dis(root, scene, area='area_5a', room='office_1', bad=False):
    k = _k(HW)
    data = root / '2D-3D-S' / area / 'data'
    for sub in ('rgb', 'depth', 'pose'):
        (data / sub).mkdir(parents=True, exist_ok=True)
    for i, (pose, out) in enumerate(_frames(scene, HW, k)):
        stem = f'camera_0a1b2c3d4e5f_{room}_frame_{i}_domain_'
        cv2.imwrite(str(data / 'rgb' / f'{stem}rgb.png'), out['color'][..., ::-1])
        raw = np.where(out['depth'] > 0, np.round(out['depth'] * 512), 65535).astype(np.uint16)
        if bad and i == 1:
            raw = raw[:, :-4]  # size mismatch
        cv2.imwrite(str(data / 'depth' / f'{stem}depth.png'), raw)
        rt = np.linalg.inv(pose)[:3]
        if bad and i == 2:
            rt = np.full((3, 4), np.nan)
        (data / 'pose' / f'{stem}pose.json').write_text(json.dumps(dict(
            camera_k_matrix=k[:3, :3].tolist(), camera_rt_matrix=rt.tolist(),
            camera_location=pose[:3, 3].tolist())).replace('NaN', 'NaN'))
    if bad:
        os.remove(data / 'depth' / f'camera_0a1b2c3d4e5f_{room}_frame_3_domain_depth.png')
    # points: one annotation file per instance
    ann = root / 'Stanford3dDataset_v1.2' / f'Area_{area[5]}' / room / 'Annotations'
    ann.mkdir(parents=True, exist_ok=True)
    counts = {}
    for iid, meta in enumerate(scene.instances):
        m = scene.vertex_instance == iid
        if not m.any():
            continue
        cls = S3DIS_MAP.get(meta['label'], 'clutter')
        counts[cls] = counts.get(cls, 0) + 1
        rows = np.concatenate([scene.vertices[m], scene.colors[m]], 1)
        np.savetxt(ann / f'{cls}_{counts[cls]}.txt', rows, fmt='%.6f %.6f %.6f %d %d %d')
    # a stairs file (-> clutter) with one malformed line, as in the real release
    (ann / 'stairs_1.txt').write_text('0.1 0.2 0.3 10 20 30\n0.4 0.5 x 1 2 3\n')


def test_s3dis(scene, tmp_path):
    raw = tmp_path / 'raw'
    _write_s3dis(raw, scene)
    _write_s3dis(raw, scene, area='area_1', room='hallway_2', bad=True)
    (raw / 'Stanford3dDataset_v1.2' / 'Area_2' / 'lounge_1' / 'Annotations').mkdir(parents=True)
    out = tmp_path / 'out'
    s = convert_s3dis(str(raw), str(out), progress=False)
    assert sorted(s['converted']) == ['Area_1_hallway_2', 'Area_5_office_1']
    assert 'Annotations' in s['skipped']['Area_2_lounge_1']  # empty room
    d = s['dropped_frames']['Area_1_hallway_2']
    assert d['size_mismatch'] == 1 and d['invalid_pose'] == 1 and d['missing_file'] == 1
    val = _load(out / 's3dis_infos_val.pkl')['data_list']
    train = _load(out / 's3dis_infos_train.pkl')['data_list']
    assert [i['sample_idx'] for i in val] == ['Area_5_office_1']
    assert [i['sample_idx'] for i in train] == ['Area_1_hallway_2']
    info = val[0]
    assert len(info['images']) == 4 and len(train[0]['images']) == 1
    fr = info['images'][sorted(info['images'])[0]]
    np.testing.assert_allclose(fr['cam2img'], _k(HW), atol=1e-6)
    np.testing.assert_allclose(fr['cam2world'], scene.poses[0], atol=1e-5)
    depth = cv2.imread(str(out / fr['depth_map']), cv2.IMREAD_UNCHANGED)
    ref = render(scene, scene.poses[0].astype(np.float64), _k(HW), HW)['depth']
    np.testing.assert_allclose(depth / 1000.0, np.round(ref * 512) / 512, atol=6e-4)
    sem = np.fromfile(out / info['pts_semantic_mask_path'], np.int64)
    inst = np.fromfile(out / info['pts_instance_mask_path'], np.int64)
    assert len(sem) == info['num_points'] == len(scene.vertices) + 1  # + the stairs point
    names = [S3DIS_CLASSES[i - 1] for i in np.unique(sem)]
    assert {'wall', 'floor', 'ceiling', 'clutter'} <= set(names)
    assert (inst >= 0).all() and info['num_instances'] == len(np.unique(inst))
    assert 'super_pts_path' not in info
    marker = json.loads((out / '.done' / 'Area_5_office_1.json').read_text())
    assert any('malformed' in n for n in marker['notes'])
    _check_alignment(out, info, scene)


# ------------------------------------------------------------------------------------ Matterport

def _write_matterport(root, scene, house='17DRP5sb8fy', bad=False):
    hd = root / 'v1' / 'scans' / house
    for sub in ('undistorted_color_images', 'undistorted_depth_images',
                'undistorted_camera_parameters', 'house_segmentations', 'region_segmentations'):
        (hd / sub).mkdir(parents=True, exist_ok=True)
    hw2 = (HW[0] * 2, HW[1] * 2)
    k = _k(hw2)
    k[1, 2] = 30.0  # an off-centre principal point (the flip below must be exercised)
    k_file = k.copy()
    k_file[1, 2] = hw2[0] - k[1, 2]  # rows counted from the bottom-left origin (official fix)
    lines = ['dataset matterport', f'n_images {len(scene.poses)}',
             'depth_directory undistorted_depth_images',
             'color_directory undistorted_color_images',
             'intrinsics_matrix ' + ' '.join(str(x) for x in k_file[:3, :3].reshape(-1))]
    house_lines = ['ASCII 1.1']
    for i, (pose, out) in enumerate(_frames(scene, hw2, k)):
        pano = f'pano{i % 2:02d}'
        cname, dname = f'{pano}_i1_{i}.jpg', f'{pano}_d1_{i}.png'
        cv2.imwrite(str(hd / 'undistorted_color_images' / cname), out['color'][..., ::-1])
        dep = np.round(out['depth'] * 4000).astype(np.uint16)  # 0.25 mm units
        if bad and i == 1:
            dep[:] = 0
        cv2.imwrite(str(hd / 'undistorted_depth_images' / dname), dep)
        gl = pose @ np.diag([1.0, -1.0, -1.0, 1.0])  # OpenGL camera axes
        lines.append(f'scan {dname} {cname} ' + ' '.join(repr(float(x)) for x in gl.reshape(-1)))
    house_lines += ['P pano00 0 0 0 1 1 1 0 0 0 0 0', 'P pano01 1 3 0 1 1 1 0 0 0 0 0',
                    'P 0 0 3 door 0 0 0 1 1 1 0 0 0 0']  # a portal line
    (hd / 'undistorted_camera_parameters' / f'{house}.conf').write_text('\n'.join(lines) + '\n')
    (hd / 'house_segmentations' / f'{house}.house').write_text('\n'.join(house_lines) + '\n')
    rd = hd / 'region_segmentations'
    for r in (0, 3):
        write_mesh_ply(rd / f'region{r}.ply', scene.vertices, scene.colors, scene.faces)
        write_json(rd / f'region{r}.vsegs.json', dict(segIndices=scene.vertex_segment.tolist()))
        groups = []
        for iid, meta in enumerate(scene.instances):
            segs = np.unique(scene.vertex_segment[scene.vertex_instance == iid]).tolist()
            label = dict(couch='sofa', bookshelf='bookshelf').get(meta['label'], meta['label'])
            if segs:
                groups.append(dict(id=len(groups), objectId=len(groups), label=label,
                                   segments=segs))
        write_json(rd / f'region{r}.semseg.json', dict(segGroups=groups))
    (root / 'scenes_train.txt').write_text(f'{house}\n')


def test_matterport(scene, tmp_path):
    raw = tmp_path / 'raw'
    _write_matterport(raw, scene, bad=True)
    out = tmp_path / 'out'
    s = convert_matterport(str(raw), str(out), image_size=HW, progress=False)
    assert s['converted'] == ['17DRP5sb8fy_region0', '17DRP5sb8fy_region3']
    assert s['dropped_frames']['17DRP5sb8fy_region3']['zero_depth'] == 1
    infos = {i['sample_idx']: i for i in _load(out / 'matterport3d_infos_train.pkl')['data_list']}
    info = infos['17DRP5sb8fy_region0']
    assert sorted(info['images']) == ['pano00_i1_0', 'pano00_i1_2']
    fr = info['images']['pano00_i1_0']
    # cy flipped to the top-left origin, then K scaled by the resize factor (96x128 -> 48x64)
    k_expect = _k((HW[0] * 2, HW[1] * 2))
    k_expect[1, 2] = 30.0
    k_expect[:2, :3] *= 0.5
    np.testing.assert_allclose(fr['cam2img'], k_expect, atol=1e-4)
    np.testing.assert_allclose(fr['cam2world'], scene.poses[0], atol=1e-5)
    assert (fr['height'], fr['width']) == HW
    sem = np.fromfile(out / info['pts_semantic_mask_path'], np.int64)
    inst = np.fromfile(out / info['pts_instance_mask_path'], np.int64)
    sp = np.fromfile(out / info['super_pts_path'], np.int64)
    assert len(sem) == len(inst) == len(sp) == len(scene.vertices)
    known = {MATTERPORT3D_CLASSES[i - 1] for i in np.unique(sem[sem > 0])}
    assert {'wall', 'floor', 'door', 'chair'} & known and 'wall' in known
    assert sp.max() + 1 == len(np.unique(scene.vertex_segment))
    _check_alignment(out, info, scene)


# --------------------------------------------------------------------------------------- AI2THOR

def _write_ai2thor(root, scene, split='train', house='FloorPlan_Train1_1', bad=False):
    hd = root / split / house
    for sub in ('color', 'depth', 'instance', 'pose'):
        (hd / sub).mkdir(parents=True, exist_ok=True)
    k = fov_intrinsics(*HW)
    cls_of = {iid: (AI2THOR_CLASSES.index(m['label'].capitalize()) + 1
                    if m['label'].capitalize() in AI2THOR_CLASSES else 5)
              for iid, m in enumerate(scene.instances)}
    for i, (pose, out) in enumerate(_frames(scene, HW, k)):
        stem = f'{i:04d}'
        cv2.imwrite(str(hd / 'color' / f'{stem}.png'), out['color'][..., ::-1])
        cv2.imwrite(str(hd / 'depth' / f'{stem}.png'),
                    np.round(out['depth'] * 1000).astype(np.uint16))
        code = np.zeros(HW, np.uint16)
        for iid in np.unique(out['instance'][out['instance'] >= 0]):
            code[out['instance'] == iid] = cls_of[iid] * 200 + iid
        cv2.imwrite(str(hd / 'instance' / f'{stem}.png'), code)
        p = np.full((4, 4), np.nan) if (bad and i == 2) else pose
        np.savetxt(hd / 'pose' / f'{stem}.txt', p)
    if bad:
        os.remove(hd / 'depth' / '0001.png')
    return cls_of


def test_ai2thor(scene, tmp_path):
    from mmdet3d.registry import DATASETS
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet3d')
    raw = tmp_path / 'raw'
    cls_of = _write_ai2thor(raw, scene, bad=True)
    _write_ai2thor(raw, scene, split='val', house='FloorPlan_Val1_1')
    (raw / 'val' / 'FloorPlan_Val2_1' / 'color').mkdir(parents=True)  # empty house
    out = tmp_path / 'out'
    s = convert_ai2thor(str(raw), str(out), progress=False)
    assert s['converted'] == ['FloorPlan_Train1_1', 'FloorPlan_Val1_1']
    assert 'no frames' in s['skipped']['FloorPlan_Val2_1']
    d = s['dropped_frames']['FloorPlan_Train1_1']
    assert d['missing_file'] == 1 and d['invalid_pose'] == 1
    info = _load(out / 'ai2thor_infos_val.pkl')['data_list'][0]
    assert len(info['images']) == 4 and 'lidar_points' not in info
    codes = info['instance_codes']
    expect = sorted({cls_of[i] * 200 + i for i in np.unique(scene.vertex_instance)})
    assert set(codes) <= set(expect) and len(codes) >= 5
    fr = info['images']['0000']
    inst = cv2.imread(str(out / fr['instance_map']), cv2.IMREAD_UNCHANGED).astype(np.int64)
    sem = cv2.imread(str(out / fr['semantic_map']), cv2.IMREAD_UNCHANGED).astype(np.int64)
    ref = render(scene, scene.poses[0].astype(np.float64), fov_intrinsics(*HW), HW)
    for iid in np.unique(ref['instance'][ref['instance'] >= 0]):
        m = ref['instance'] == iid
        code = cls_of[iid] * 200 + iid
        assert (inst[m] == codes.index(code) + 1).all() and (sem[m] == cls_of[iid]).all()
    np.testing.assert_allclose(fr['cam2img'], fov_intrinsics(*HW), atol=1e-6)
    # the dataset + sensor-point pipeline turns the masks into per-point ground truth
    ds = DATASETS.build(dict(
        type='ODINAI2THORDataset', data_root=str(out), ann_file='ai2thor_infos_val.pkl',
        test_mode=True,
        pipeline=[dict(type='LoadODINFrames', sampling='all', with_label_maps=True),
                  dict(type='ODINSensorPoints', stride=1),
                  dict(type='ODINPointSegClassMapping'),
                  dict(type='PackODINInputs')]))
    item = ds[0]
    n = item['inputs']['points'].shape[0]
    depth = item['inputs']['depths']
    assert n == int((depth > 0).sum())
    gt_inst = item['data_samples'].gt_pts_seg.pts_instance_mask
    gt_sem = item['data_samples'].gt_pts_seg.pts_semantic_mask
    assert len(gt_inst) == n and (gt_inst >= 0).any()
    # the same object keeps its instance id in every view
    ev = item['data_samples'].eval_ann_info
    np.testing.assert_array_equal(ev['pts_instance_mask'], gt_inst.numpy())
    assert int(gt_sem.max()) <= len(AI2THOR_CLASSES)


# ------------------------------------------------------------------------------ inpainted depth

def _punch_holes(folder, invalid):
    """Set a 6x6 block of every depth PNG in ``folder`` to the dataset's invalid value."""
    for name in sorted(os.listdir(folder)):
        path = str(folder / name)
        d = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        d[20:26, 30:36] = invalid
        cv2.imwrite(path, d)


@pytest.mark.parametrize('dataset', ['s3dis', 'matterport3d'])
def test_inpainted_depth_via_create_data(dataset, scene, tmp_path, capsys):
    """``create_data.py <dataset> --inpaint-depth`` writes filled depth that the configs read."""
    from odin_testing import load_script
    from projects.odin.datasets.converters.common import inpaint_depth
    create_data = load_script('tools/create_data.py').main
    raw, out = tmp_path / 'raw', tmp_path / 'out'
    if dataset == 's3dis':
        _write_s3dis(raw, scene)
        _punch_holes(raw / '2D-3D-S' / 'area_5a' / 'data' / 'depth', 65535)
        info_file, size = out / 's3dis_infos_val.pkl', []
    else:
        _write_matterport(raw, scene)
        _punch_holes(raw / 'v1' / 'scans' / '17DRP5sb8fy' / 'undistorted_depth_images', 0)
        info_file, size = out / 'matterport3d_infos_train.pkl', ['--image-size', *map(str, HW)]
    args = [dataset, '--root-path', str(raw), '--out-dir', str(out), '--workers', '1',
            '--no-progress', *size]
    assert create_data(args) == 0
    info = _load(info_file)['data_list'][0]
    assert not any('depth_inpainted_map' in fr for fr in info['images'].values())
    assert create_data(args + ['--inpaint-depth']) == 0
    assert 'converted 0' not in capsys.readouterr().out  # other options: converted again
    data = _load(info_file)
    assert data['metainfo']['inpaint_depth'] is True
    n_holes = 0
    for fr in data['data_list'][0]['images'].values():
        depth = cv2.imread(str(out / fr['depth_map']), cv2.IMREAD_UNCHANGED)
        filled = cv2.imread(str(out / fr['depth_inpainted_map']), cv2.IMREAD_UNCHANGED)
        assert fr['depth_inpainted_map'].startswith(f'frames/{data["data_list"][0]["scene_id"]}/'
                                                    'depth_inpainted/')
        holes = depth == 0
        n_holes += int(holes.sum())
        np.testing.assert_array_equal(filled, inpaint_depth(depth))  # the shared inpainting
        np.testing.assert_array_equal(filled[~holes], depth[~holes])
        assert (filled[holes] > 0).all()
    assert n_holes > 0
    # the dataset config's loader reads the inpainted depth (official INPUT.INPAINT_DEPTH True)
    from mmdet3d.registry import DATASETS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet3d')
    cfg = Config.fromfile(os.path.join(REPO_ROOT, 'configs', '_base_', 'datasets',
                                       f'{dataset}_mv.py'))
    ds = DATASETS.build(dict(type=cfg.dataset_type, data_root=str(out),
                             ann_file=info_file.name, test_mode=True,
                             pipeline=[cfg.test_pipeline[0]]))
    item = ds[0]
    assert all('/depth_inpainted/' in p for p in item['depth_path'])
    assert all((d > 0).all() for d in item['depths'])
    # the inpainting flag is refused for AI2THOR (its official recipe reads raw depth)
    _write_ai2thor(tmp_path / 'thor', scene)
    assert create_data(['ai2thor', '--root-path', str(tmp_path / 'thor'), '--out-dir',
                        str(tmp_path / 'thor_out'), '--inpaint-depth', '--no-progress']) == 2
    assert 'raw depth' in capsys.readouterr().err
