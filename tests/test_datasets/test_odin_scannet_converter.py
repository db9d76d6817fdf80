"""ScanNet converter on the synthetic raw world: outputs field by field, resume, bad inputs."""
import json
import logging
import os
import pickle
import shutil

import cv2
import numpy as np
import pytest

from projects.odin.datasets.converters.scannet import convert_scannet
from projects.odin.datasets.scannet_raw import (
    read_aggregation,
    read_label_ply,
    read_mesh_ply,
    read_segs,
    write_json,
    write_mesh_ply,
)
from projects.odin.datasets.sens_data import SensorDataReader, encode_color, write_sens

SCENES = ('scene0000_00', 'scene0001_00')


def _load(out, split):
    with open(out / f'scannet_infos_{split}.pkl', 'rb') as fh:
        return pickle.load(fh)


def test_outputs_field_by_field(synthetic_raw, converted):
    raw, world = synthetic_raw
    out, summary = converted
    assert summary['converted'] == list(SCENES) and summary['skipped'] == {}
    assert summary['dropped_frames_total']['invalid_pose'] == 2
    assert summary['info_files'] == {'train': 'scannet_infos_train.pkl',
                                     'val': 'scannet_infos_val.pkl'}
    infos = {**{i['sample_idx']: i for i in _load(out, 'train')['data_list']},
             **{i['sample_idx']: i for i in _load(out, 'val')['data_list']}}
    meta = _load(out, 'train')['metainfo']
    assert meta['dataset'] == 'scannet' and meta['label_space'] == 'nyu40'
    assert meta['frame_skip'] == 1 and meta['info_version'] == '1.1'
    for scene in SCENES:
        info = infos[scene]
        d = raw / 'scans' / scene
        xyz, rgb, _ = read_mesh_ply(d / f'{scene}_vh_clean_2.ply')
        pts = np.fromfile(out / info['lidar_points']['lidar_path'], np.float32).reshape(-1, 6)
        np.testing.assert_array_equal(pts[:, :3], xyz)
        np.testing.assert_array_equal(pts[:, 3:], rgb.astype(np.float32))
        assert info['num_points'] == len(xyz)
        sem = np.fromfile(out / info['pts_semantic_mask_path'], np.int64)
        np.testing.assert_array_equal(sem, read_label_ply(d / f'{scene}_vh_clean_2.labels.ply')[1])
        inst = np.fromfile(out / info['pts_instance_mask_path'], np.int64)
        seg = read_segs(d / f'{scene}_vh_clean_2.0.010000.segs.json')
        groups = read_aggregation(d / f'{scene}.aggregation.json')
        for g in groups:
            assert (inst[np.isin(seg, g['segments'])] == g['id']).all()
        assert (inst == -1).sum() == (~np.isin(seg, sum([g['segments'] for g in groups], []))
                                      ).sum()
        assert info['num_instances'] == len(groups)
        sp = np.fromfile(out / info['super_pts_path'], np.int64)
        assert sp.min() == 0 and sp.max() == len(np.unique(seg)) - 1
        # same raw segment <=> same superpoint
        assert len(np.unique(np.stack([sp, seg], 1), axis=0)) == len(np.unique(seg))
        # frames: every frame but the invalid-pose one, straight from the .sens
        bad = world['scenes'][scene]['invalid_pose_frames']
        reader = SensorDataReader(d / f'{scene}.sens')
        assert sorted(int(k) for k in info['images']) == [i for i in range(10) if i not in bad]
        for frame in reader.iter_frames():
            key = f'{frame.index:06d}'
            if frame.index in bad:
                assert key not in info['images']
                continue
            fr = info['images'][key]
            depth = cv2.imread(str(out / fr['depth_map']), cv2.IMREAD_UNCHANGED)
            assert depth.dtype == np.uint16
            np.testing.assert_array_equal(depth, reader.decode_depth(frame))
            inp = cv2.imread(str(out / fr['depth_inpainted_map']), cv2.IMREAD_UNCHANGED)
            assert inp.shape == depth.shape and (inp > 0).all()
            np.testing.assert_array_equal(inp[depth > 0], depth[depth > 0])
            color = cv2.imread(str(out / fr['img_path']))
            assert color.shape == (48, 64, 3) and (fr['height'], fr['width']) == (48, 64)
            np.testing.assert_allclose(fr['cam2world'], frame.camera_to_world, atol=1e-6)
            pose_txt = np.loadtxt(out / 'frames' / scene / 'pose' / f'{key}.txt')
            np.testing.assert_allclose(pose_txt, frame.camera_to_world, atol=1e-6)
            np.testing.assert_allclose(fr['cam2img'], reader.header.intrinsic_depth, atol=1e-6)
            assert fr['frame_idx'] == frame.index


def test_rerun_resumes_and_frame_skip(synthetic_raw, tmp_path, caplog):
    raw, _ = synthetic_raw
    out = tmp_path / 'out'
    s1 = convert_scannet(str(raw), str(out), frame_skip=3, progress=False)
    assert s1['converted'] == list(SCENES)
    info = _load(out, 'train')['data_list'][0]
    assert [int(k) for k in info['images']] == [i for i in (0, 3, 6, 9)
                                                if i in [int(k) for k in info['images']]]
    assert 'depth_inpainted_map' not in next(iter(info['images'].values()))
    marker = out / '.done' / 'scene0000_00.json'
    mtime = marker.stat().st_mtime_ns
    pts_mtime = (out / 'points' / 'scene0000_00.bin').stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger='odin.create_data'):
        s2 = convert_scannet(str(raw), str(out), frame_skip=3, progress=False, workers=2)
    assert s2['resumed'] == list(SCENES) and s2['converted'] == []
    assert marker.stat().st_mtime_ns == mtime
    assert (out / 'points' / 'scene0000_00.bin').stat().st_mtime_ns == pts_mtime
    assert 'already converted' in caplog.text
    assert _load(out, 'train')['data_list'][0]['images'].keys() == info['images'].keys()
    # a partial run (--scenes) keeps the other converted scenes in the info files
    s_part = convert_scannet(str(raw), str(out), frame_skip=3, progress=False,
                             scenes=['scene0001_00'], overwrite=True)
    assert s_part['converted'] == ['scene0001_00']
    assert [i['sample_idx'] for i in _load(out, 'train')['data_list']] == ['scene0000_00']
    assert [i['sample_idx'] for i in _load(out, 'val')['data_list']] == ['scene0001_00']
    # other options: converted again
    s3 = convert_scannet(str(raw), str(out), frame_skip=2, progress=False)
    assert s3['converted'] == list(SCENES)
    assert not (out / '.staging').exists()


def _copy_world(raw, tmp_path):
    dst = tmp_path / 'raw'
    shutil.copytree(raw, dst)
    return dst


def test_bad_inputs_are_logged_skips(synthetic_raw, tmp_path, caplog):
    raw = _copy_world(synthetic_raw[0], tmp_path)
    out = tmp_path / 'out'
    # first a good conversion of both scenes
    convert_scannet(str(raw), str(out), frame_skip=1, progress=False)
    good = {p: p.read_bytes() for p in (out / 'points').iterdir()}
    # now corrupt scene0001_00 (truncated .sens) and redo everything
    sens = raw / 'scans' / 'scene0001_00' / 'scene0001_00.sens'
    data = sens.read_bytes()
    sens.write_bytes(data[:len(data) // 2])
    with caplog.at_level(logging.WARNING, logger='odin.create_data'):
        s = convert_scannet(str(raw), str(out), frame_skip=1, progress=False, overwrite=True)
    assert s['converted'] == ['scene0000_00']
    reason = s['skipped']['scene0001_00']
    assert 'scene0001_00.sens: truncated file in frame' in reason
    assert 'scene0001_00' in caplog.text and 'truncated' in caplog.text
    # nothing already written is lost: the earlier outputs of the failed scene are intact
    for p, b in good.items():
        assert p.read_bytes() == b
    assert [i['sample_idx'] for i in _load(out, 'val')['data_list']] == ['scene0001_00']
    summary = json.loads((out / 'scannet_summary.json').read_text())
    assert 'scene0001_00' in summary['skipped']


def _rewrite_sens(path, edit):
    r = SensorDataReader(path)
    frames = list(r.iter_frames())
    hdr = r.header
    edit(r, hdr, frames)
    write_sens(path, hdr, frames)


def test_bad_frames_and_empty_scenes(synthetic_raw, tmp_path):
    raw = _copy_world(synthetic_raw[0], tmp_path)
    d0 = raw / 'scans' / 'scene0000_00'

    def edit(r, hdr, frames):
        frames[0].camera_to_world = np.full((4, 4), np.nan, np.float32)  # NaN pose
        depth = np.zeros((hdr.depth_height, hdr.depth_width), np.uint16)  # zero-depth frame
        frames[1].depth_data = __import__('zlib').compress(depth.tobytes())
        # colour of the wrong size for the header
        frames[3].color_data = encode_color(np.zeros((10, 10, 3), np.uint8), 'jpeg')

    _rewrite_sens(d0 / 'scene0000_00.sens', edit)
    # scene0001_00: an empty mesh
    d1 = raw / 'scans' / 'scene0001_00'
    write_mesh_ply(d1 / 'scene0001_00_vh_clean_2.ply', np.zeros((0, 3)), np.zeros((0, 3)),
                   np.zeros((0, 3), int))
    out = tmp_path / 'out'
    s = convert_scannet(str(raw), str(out), frame_skip=1, progress=False)
    assert s['converted'] == ['scene0000_00']
    assert 'mesh has no vertices' in s['skipped']['scene0001_00']
    assert 'scene0001_00_vh_clean_2.ply' in s['skipped']['scene0001_00']
    dropped = s['dropped_frames']['scene0000_00']
    assert dropped['invalid_pose'] >= 2 and dropped['zero_depth'] == 1
    assert dropped['corrupt'] == 1
    marker = json.loads((out / '.done' / 'scene0000_00.json').read_text())
    assert any('frame 3: colour image is 10x10' in n for n in marker['notes'])
    keys = set(marker['info']['images'])
    assert not keys & {'000000', '000001', '000003'}

    # a scene whose every frame is invalid is skipped with the counts
    def all_bad(r, hdr, frames):
        for f in frames:
            f.camera_to_world = np.full((4, 4), np.inf, np.float32)

    _rewrite_sens(d0 / 'scene0000_00.sens', all_bad)
    s = convert_scannet(str(raw), str(tmp_path / 'out2'), frame_skip=1, progress=False)
    assert 'no valid frame' in s['skipped']['scene0000_00']
    # missing .sens and a missing split scene
    os.remove(d0 / 'scene0000_00.sens')
    s = convert_scannet(str(raw), str(tmp_path / 'out3'), frame_skip=1, progress=False)
    assert 'scene0000_00.sens: .sens file not found' in s['skipped']['scene0000_00']
    with pytest.raises(FileNotFoundError, match='scans'):
        convert_scannet(str(tmp_path / 'nothing'), str(tmp_path / 'o'), progress=False)


def test_scannet200_labels_and_known_bad_scene(synthetic_raw, tmp_path):
    raw = _copy_world(synthetic_raw[0], tmp_path)
    # rename scene0000_00 to a known-bad ScanNet scene and give one instance the bad id 50
    src, dst = raw / 'scans' / 'scene0000_00', raw / 'scans' / 'scene0270_00'
    os.rename(src, dst)
    for p in list(dst.iterdir()):
        p.rename(dst / p.name.replace('scene0000_00', 'scene0270_00'))
    agg_path = dst / 'scene0270_00.aggregation.json'
    agg = json.loads(agg_path.read_text())
    agg['segGroups'][6]['id'] = 50
    write_json(agg_path, agg)
    (raw / 'scannetv2_train.txt').write_text('scene0270_00\n')
    groups = read_aggregation(agg_path)
    seg = read_segs(dst / 'scene0270_00_vh_clean_2.0.010000.segs.json')
    n_bad = int(np.isin(seg, groups[6]['segments']).sum())
    n = len(seg)

    s20 = convert_scannet(str(raw), str(tmp_path / 'o20'), frame_skip=5, progress=False)
    s200 = convert_scannet(str(raw), str(tmp_path / 'o200'), dataset='scannet200',
                           frame_skip=5, progress=False)
    assert s20['converted'] == s200['converted'] == ['scene0001_00', 'scene0270_00']
    i20 = _load(tmp_path / 'o20', 'train')['data_list'][0]
    assert i20['num_points'] == n - n_bad
    inst20 = np.fromfile(tmp_path / 'o20' / i20['pts_instance_mask_path'], np.int64)
    assert len(inst20) == n - n_bad and not (inst20 == 50).any()
    with open(tmp_path / 'o200' / 'scannet200_infos_train.pkl', 'rb') as fh:
        i200 = pickle.load(fh)['data_list'][0]
    assert i200['num_points'] == n  # the fix only applies to the NYU40 labels
    sem200 = np.fromfile(tmp_path / 'o200' / i200['pts_semantic_mask_path'], np.int64)
    inst200 = np.fromfile(tmp_path / 'o200' / i200['pts_instance_mask_path'], np.int64)
    tsv_ids = {'wall': 1, 'floor': 3, 'ceiling': 41, 'chair': 2, 'table': 4, 'door': 5}
    for g in groups:
        if g['label'] in tsv_ids:
            assert (sem200[inst200 == g['id']] == tsv_ids[g['label']]).all()
    assert (sem200[inst200 == -1] == 0).all()
    with pytest.raises(FileNotFoundError, match='labels.combined.tsv'):
        os.remove(raw / 'scannetv2-labels.combined.tsv')
        convert_scannet(str(raw), str(tmp_path / 'o3'), dataset='scannet200', progress=False)


def _tool(root, rel):
    from odin_testing import load_script
    return load_script(os.path.join(root, rel))


def test_command_lines(tmp_path, capsys):
    """The two CLIs, as a user runs them (generator -> create_data -> resumed re-run); one real
    subprocess, the rest in-process (importing the package costs seconds per process)."""
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    raw, out = tmp_path / 'raw', tmp_path / 'out'
    _tool(root, 'tools/dataset_converters/make_synthetic_world.py').main(
        ['--out-dir', str(raw), '--num-scenes', '2', '--num-frames', '3', '--seed', '1'])
    printed = capsys.readouterr().out
    assert json.loads(printed)['splits'] == {'train': ['scene0000_00'], 'val': ['scene0001_00']}
    args = ['scannet', '--root-path', str(raw), '--out-dir', str(out), '--frame-skip', '1',
            '--workers', '2', '--extra-tag', 'synthetic', '--no-progress']
    r = subprocess.run([sys.executable, 'tools/create_data.py'] + args, cwd=root,
                       env=dict(os.environ, PYTHONPATH=root), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert 'converted 2, resumed 0, skipped 0' in r.stdout
    assert (out / 'synthetic_infos_train.pkl').is_file()
    assert (out / 'synthetic_infos_val.pkl').is_file()
    assert _tool(root, 'tools/create_data.py').main(args) == 0
    assert 'converted 0, resumed 2, skipped 0' in capsys.readouterr().out
    # a wrong root: exit status 2 and one line naming the folder and the expected layout
    bad = ['scannet', '--root-path', str(tmp_path / 'nowhere'), '--out-dir', str(out)]
    assert _tool(root, 'tools/create_data.py').main(bad) == 2
    err = capsys.readouterr().err
    assert 'nowhere' in err and 'scans/' in err and 'Traceback' not in err
    with pytest.raises(FileNotFoundError):
        _tool(root, 'tools/create_data.py').main(bad + ['--debug'])


def test_unannotated_test_scene(synthetic_raw, tmp_path):
    raw = _copy_world(synthetic_raw[0], tmp_path)
    src = raw / 'scans' / 'scene0001_00'
    (raw / 'scans_test').mkdir()
    dst = raw / 'scans_test' / 'scene0001_00'
    os.rename(src, dst)
    for name in ('scene0001_00.aggregation.json', 'scene0001_00_vh_clean_2.labels.ply'):
        os.remove(dst / name)
    s = convert_scannet(str(raw), str(tmp_path / 'out'), frame_skip=4, progress=False)
    assert s['info_files']['test'] == 'scannet_infos_test.pkl'
    info = _load(tmp_path / 'out', 'test')['data_list'][0]
    assert info['sample_idx'] == 'scene0001_00' and 'pts_semantic_mask_path' not in info
    assert 'super_pts_path' in info and len(info['images']) >= 2


def test_converted_scene_folder_reads_in_the_demo_loader(converted):
    """A converted scene folder is a ScanNet-layout recording for the demo (projects.odin.apis)."""
    apis = pytest.importorskip('projects.odin.apis')
    out, _ = converted
    info = _load(out, 'train')['data_list'][0]
    seq = apis.load_rgbd_folder(str(out / 'frames' / info['sample_idx']))
    assert seq.layout == 'scannet' and seq.depth_scale == 1000.0
    assert list(seq.frame_ids) == sorted(info['images'])
    for i, fid in enumerate(seq.frame_ids):
        fr = info['images'][fid]
        np.testing.assert_allclose(seq.poses[i], fr['cam2world'], atol=1e-6)
        np.testing.assert_allclose(seq.intrinsics[i], fr['cam2img'], atol=1e-6)
