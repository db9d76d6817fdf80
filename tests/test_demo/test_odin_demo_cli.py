"""demo/odin_demo.py end to end on tiny recordings of every layout, with a tiny random ODIN."""
import json
import os
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
from plyfile import PlyData
from rgbd_makers import make_7scenes, make_scannet, make_tum

from odin_testing import DEMO_CONFIG, REPO_ROOT, load_script

CLASSES = ('wall', 'floor', 'cabinet', 'bed', 'chair', 'sofa', 'table', 'door', 'window',
           'bookshelf', 'picture', 'counter', 'desk', 'curtain', 'refrigerator',
           'shower curtain', 'toilet', 'sink', 'bathtub', 'otherfurniture')


def _demo_module():
    return load_script('demo/odin_demo.py')


@pytest.fixture(scope='module')
def tiny_checkpoint(tmp_path_factory):
    """Randomly initialised demo-config model saved as an mmengine checkpoint."""
    from mmdet3d.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet3d')
    cfg = Config.fromfile(DEMO_CONFIG)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    path = str(tmp_path_factory.mktemp('ckpt') / 'tiny_random.pth')
    torch.save(dict(state_dict=model.state_dict(),
                    meta=dict(dataset_meta=dict(classes=CLASSES))), path)
    return path


def _run(folder, ckpt, out, *extra):
    return _demo_module().main([str(folder), DEMO_CONFIG, ckpt, '--out-dir', str(out),
                                '--image-size', '24', '32', '--score-thr', '0',
                                '--min-points', '1', *extra])


@pytest.mark.parametrize('maker', [make_scannet, make_tum, make_7scenes])
def test_demo_writes_consistent_outputs(tmp_path, tiny_checkpoint, maker, capsys):
    folder = maker(tmp_path / 'rec')
    out = tmp_path / 'out'
    assert _run(folder, tiny_checkpoint, out) == 0
    plys = sorted(p for p in os.listdir(out) if p.endswith('_instances.ply'))
    jsons = sorted(p for p in os.listdir(out) if p.endswith('_instances.json'))
    assert plys == ['rec_instances.ply'] and jsons == ['rec_instances.json']
    vertex = PlyData.read(str(out / plys[0]))['vertex']
    n = len(vertex['x'])
    assert n > 0
    xyz = np.stack([vertex['x'], vertex['y'], vertex['z']], 1)
    assert np.isfinite(xyz).all()
    # the recordings look at a plane 1.5 m (TUM: 1 m) in front of cameras at z = 1 (+z forward)
    assert np.allclose(xyz[:, 2], 2.5, atol=0.05) or np.allclose(xyz[:, 2], 2.0, atol=0.05)
    inst = np.asarray(vertex['instance'])
    doc = json.loads((out / jsons[0]).read_text())
    ids = sorted(int(i) for i in np.unique(inst[inst >= 0]))
    # the PLY's instances are exactly the JSON's records, with the same point counts
    assert doc['num_instances'] == len(doc['instances']) == len(ids)
    assert sorted(r['id'] for r in doc['instances']) == ids
    for r in doc['instances']:
        assert r['num_points'] == int((inst == r['id']).sum())
        assert r['class_name'] == CLASSES[r['label']]
        assert 0 <= r['score'] <= 1
    labels = np.asarray(vertex['label'])
    assert ((labels >= 0) == (inst >= 0)).all()
    assert doc['num_points'] == n and doc['num_views'] == 4
    views = sorted(os.listdir(out / 'views'))
    assert len(views) == 4
    img = cv2.imread(str(out / 'views' / views[0]))
    assert img.shape == (24, 32, 3)
    assert f'{len(ids)} instances' in capsys.readouterr().out


def test_demo_score_threshold_can_remove_everything(tmp_path, tiny_checkpoint):
    out = tmp_path / 'out'
    assert _run(make_scannet(tmp_path / 'rec'), tiny_checkpoint, out, '--score-thr', '1.01') == 0
    doc = json.loads((out / 'rec_instances.json').read_text())
    assert doc['num_instances'] == 0
    vertex = PlyData.read(str(out / 'rec_instances.ply'))['vertex']
    assert (np.asarray(vertex['instance']) == -1).all()


def _expect_error(capsys, folder, ckpt, tmp_path, match):
    rc = _run(folder, ckpt, tmp_path / 'out_err')
    err = capsys.readouterr().err
    assert rc != 0
    lines = [ln for ln in err.splitlines() if ln.startswith('error: ')]
    assert len(lines) == 1 and match in lines[0], err
    assert not osp.isdir(tmp_path / 'out_err') or not any(
        p.endswith('.ply') for p in os.listdir(tmp_path / 'out_err'))


def test_demo_rejects_folder_without_poses(tmp_path, tiny_checkpoint, capsys):
    root = make_scannet(tmp_path / 'rec')
    for p in os.listdir(root / 'pose'):
        os.remove(root / 'pose' / p)
    _expect_error(capsys, root, tiny_checkpoint, tmp_path, 'no poses')


def test_demo_rejects_mismatched_counts(tmp_path, tiny_checkpoint, capsys):
    root = make_7scenes(tmp_path / 'rec')
    os.remove(root / 'frame-000002.depth.png')
    _expect_error(capsys, root, tiny_checkpoint, tmp_path, 'frame-000002 has no')


def test_demo_rejects_unreadable_depth(tmp_path, tiny_checkpoint, capsys):
    root = make_scannet(tmp_path / 'rec')
    (root / 'depth' / '1.png').write_bytes(b'not a png')
    _expect_error(capsys, root, tiny_checkpoint, tmp_path, 'cannot read depth image')


def test_demo_rejects_tum_without_pose_list(tmp_path, tiny_checkpoint, capsys):
    root = make_tum(tmp_path / 'rec')
    os.remove(root / 'groundtruth.txt')
    _expect_error(capsys, root, tiny_checkpoint, tmp_path, 'no pose list')


def test_demo_rejects_unknown_layout_and_missing_checkpoint(tmp_path, tiny_checkpoint, capsys):
    empty = tmp_path / 'empty'
    empty.mkdir()
    _expect_error(capsys, empty, tiny_checkpoint, tmp_path, 'unrecognised RGB-D layout')
    _expect_error(capsys, make_scannet(tmp_path / 'rec'), str(tmp_path / 'missing.pth'),
                  tmp_path, 'checkpoint not found')


OV_CONFIG = osp.join(REPO_ROOT, 'configs', 'odin', 'odin_tiny_joint_ov_test.py')


@pytest.fixture(scope='module')
def tiny_open_vocab(tmp_path_factory):
    """A randomly initialised tiny open-vocabulary ODIN (tiny RoBERTa) and its checkpoint."""
    from mmdet3d.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from odin_testing import make_tiny_roberta
    root = tmp_path_factory.mktemp('ov')
    roberta = make_tiny_roberta(str(root / 'roberta'))
    init_default_scope('mmdet3d')
    cfg = Config.fromfile(OV_CONFIG)
    cfg.model.decode_head.classifier.text_encoder.pretrained = roberta
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    path = str(root / 'tiny_ov.pth')
    torch.save(dict(state_dict=model.state_dict(),
                    meta=dict(dataset_meta=dict(classes=CLASSES))), path)
    return roberta, path


def test_set_vocabulary_open_and_closed_set(tiny_open_vocab, tiny_checkpoint):
    from projects.odin.apis.inference import init_odin_model, set_vocabulary
    roberta, ckpt = tiny_open_vocab
    opts = {'model.decode_head.classifier.text_encoder.pretrained': roberta}
    model = init_odin_model(OV_CONFIG, ckpt, cfg_options=opts)
    assert set_vocabulary(model) == list(CLASSES)  # the checkpoint's classes by default
    assert model.decode_head.batch_num_classes([]) == len(CLASSES)
    assert set_vocabulary(model, ['lamp', 'potted plant']) == ['lamp', 'potted plant']
    assert model.decode_head.batch_num_classes([]) == 2
    assert tuple(model.test_cfg['skip_classes']) == ()
    closed = init_odin_model(DEMO_CONFIG, tiny_checkpoint)
    names = [f'c{i}' for i in range(len(CLASSES))]
    assert set_vocabulary(closed, names) == names  # renaming keeps the count
    with pytest.raises(ValueError, match='predicts 20 classes, 2 names were given'):
        set_vocabulary(closed, ['lamp', 'potted plant'])


def test_demo_open_vocabulary_classes(tmp_path, tiny_open_vocab, tiny_checkpoint, capsys):
    roberta, ckpt = tiny_open_vocab
    folder = make_scannet(tmp_path / 'rec')
    opts = ['--cfg-options', f'model.decode_head.classifier.text_encoder.pretrained={roberta}']
    vocab = ['lamp', 'potted plant', 'coffee table']

    def run(out, *extra):
        return _demo_module().main([str(folder), OV_CONFIG, ckpt, '--out-dir', str(out),
                                    '--image-size', '24', '32', '--score-thr', '0',
                                    '--min-points', '1', *opts, *extra])

    assert run(tmp_path / 'ov', '--classes', *vocab) == 0
    doc = json.loads((tmp_path / 'ov' / 'rec_instances.json').read_text())
    assert doc['num_instances'] > 0
    for r in doc['instances']:
        assert 0 <= r['label'] < len(vocab) and r['class_name'] == vocab[r['label']]
    # without --classes: the checkpoint's training classes
    assert run(tmp_path / 'own') == 0
    doc = json.loads((tmp_path / 'own' / 'rec_instances.json').read_text())
    assert doc['num_instances'] > 0
    assert all(r['class_name'] == CLASSES[r['label']] for r in doc['instances'])
    capsys.readouterr()
    # the RoBERTa folder missing: exit 2, the message names the path and the remedy
    assert _demo_module().main([str(folder), OV_CONFIG, ckpt, '--out-dir', str(tmp_path / 'x'),
                                '--image-size', '24', '32', '--cfg-options',
                                'model.decode_head.classifier.text_encoder.pretrained='
                                f'{tmp_path / "no_roberta"}']) == 2
    err = capsys.readouterr().err
    assert 'cannot load RoBERTa' in err and 'no_roberta' in err and 'save_pretrained' in err
    # a closed-set model cannot take a new vocabulary: exit 2 with the reason
    assert _run(folder, tiny_checkpoint, tmp_path / 'closed', '--classes', *vocab) == 2
    assert 'predicts 20 classes, 3 names were given' in capsys.readouterr().err


def test_demo_figure_composes_cloud_and_view_grid(tmp_path, tiny_checkpoint):
    from projects.odin.demo.figure import render_demo_figure
    out = tmp_path / 'out'
    assert _run(make_scannet(tmp_path / 'rec'), tiny_checkpoint, out) == 0
    fig = cv2.imread(render_demo_figure(str(out), str(tmp_path / 'fig.png'), size=(120, 160)))
    assert fig.shape[0] == 120 and fig.shape[1] > 160 + 8
    cloud = fig[:, :160]
    assert (cloud != 255).any(axis=2).sum() > 50  # the point cloud was drawn
    # 4 views of 24x32 in a 2x2 grid, 58 px high each, 4 px white gaps
    grid = fig[:, 168:]
    assert grid.shape[1] == 2 * 77 + 4 and (grid[58:62] == 255).all()
    one = cv2.imread(render_demo_figure(str(out), str(tmp_path / 'one.png'), size=(120, 160),
                                        num_views=1))
    assert one.shape == (120, 160 + 8 + 160, 3)
    with pytest.raises(FileNotFoundError, match='no \\*_instances.ply'):
        render_demo_figure(str(tmp_path), str(tmp_path / 'x.png'))


def test_demo_plain_folder_and_sens_file(tmp_path, tiny_checkpoint, capsys):
    """The plain layout without any list file (rgb/frame_00000.png, depth/ in mm, gt_pose.txt,
    4x4 intrinsic.txt) and a ScanNet .sens file given directly."""
    from recording_writers import render_room, write_plain, write_sens
    room = render_room()
    plain = write_plain(room, tmp_path / 'my_scan')
    sens = write_sens(room, tmp_path / 'scene0000_00.sens')
    # layout, depth unit and frame count are printed before the model is loaded
    assert _run(plain, str(tmp_path / 'missing.pth'), tmp_path / 'x') == 2
    out = capsys.readouterr()
    assert 'plain recording: 3 frames (0 skipped), depth 24x18, uint16 depth, millimetres' in \
        out.out and 'checkpoint not found' in out.err
    assert _run(plain, tiny_checkpoint, tmp_path / 'out_plain') == 0
    assert _run(sens, tiny_checkpoint, tmp_path / 'out_sens', '--frame-stride', '2') == 0
    printed = capsys.readouterr().out
    assert 'sens recording: 2 frames' in printed and '.sens depth_shift' in printed
    for out_dir, scene, views in (('out_plain', 'my_scan', 3), ('out_sens', 'scene0000_00', 2)):
        doc = json.loads((tmp_path / out_dir / f'{scene}_instances.json').read_text())
        assert doc['num_views'] == views and doc['num_points'] > 100
        assert len(os.listdir(tmp_path / out_dir / 'views')) == views
