"""tools/eval_scannet_format.py: JSON schema, official-format parsing and clear errors."""
import json

import numpy as np
import pytest

from odin_testing import load_script
from projects.odin.class_names import SCANNET200_INSTANCE_CLASSES, SCANNET_INSTANCE_CLASSES
from projects.odin.evaluation.functional import write_ids


@pytest.fixture(scope='module')
def cli():
    return load_script('tools/eval_scannet_format.py').main


def make_dirs(tmp_path, lines, n=500, gt=None, masks=None):
    """One scene: GT file + listing `lines` + mask files {name: array}."""
    gt_dir, pred_dir = tmp_path / 'gt', tmp_path / 'pred'
    (pred_dir / 'pred_mask').mkdir(parents=True)
    gt_dir.mkdir()
    if gt is None:
        gt = np.zeros(n, np.int64)
        gt[0:200] = 3001  # cabinet
        gt[200:400] = 5002  # chair
    write_ids(str(gt_dir / 'scene0000_00.txt'), gt)
    for name, m in (masks or {}).items():
        write_ids(str(pred_dir / 'pred_mask' / name), m)
    (pred_dir / 'scene0000_00.txt').write_text(''.join(ln + '\n' for ln in lines))
    return ['--gt-dir', str(gt_dir), '--pred-dir', str(pred_dir)]


def box(n, a, b):
    m = np.zeros(n, np.int64)
    m[a:b] = 1
    return m


def test_json_schema_scannet(cli, tmp_path):
    args = make_dirs(tmp_path, ['pred_mask/a.txt 3 0.9', 'pred_mask/b.txt 1 0.8'],
                     masks={'a.txt': box(500, 0, 200), 'b.txt': box(500, 200, 400)})
    out = tmp_path / 'r.json'
    cli(args + ['--dataset', 'scannet', '--json', str(out)])
    res = json.loads(out.read_text())
    assert set(res) == {'AP', 'AP50', 'AP25', 'per_class'}
    assert list(res['per_class']) == list(SCANNET_INSTANCE_CLASSES)
    assert res['per_class']['cabinet'] == {'AP': 1.0, 'AP50': 1.0, 'AP25': 1.0}
    assert res['per_class']['chair'] == {'AP': 0.0, 'AP50': 0.0, 'AP25': 0.0}  # wall pred skipped
    assert res['per_class']['bed'] == {'AP': None, 'AP50': None, 'AP25': None}  # no GT: NaN
    assert res['AP'] == 0.5 and res['AP25'] == 0.5


def test_json_schema_scannet200_subsets(cli, tmp_path):
    gt = np.zeros(500, np.int64)
    gt[0:200] = 2 * 1000 + 1  # chair (head)
    gt[200:400] = 1191 * 1000 + 2  # mattress (common)
    args = make_dirs(tmp_path, ['pred_mask/a.txt 2 0.9'], gt=gt,
                     masks={'a.txt': box(500, 0, 200)})
    out = tmp_path / 'r.json'
    cli(args + ['--dataset', 'scannet200', '--json', str(out)])
    res = json.loads(out.read_text())
    assert set(res) == {'AP', 'AP50', 'AP25', 'per_class', 'head', 'common', 'tail'}
    assert len(res['per_class']) == 198 == len(SCANNET200_INSTANCE_CLASSES)
    assert 'wall' not in res['per_class'] and 'floor' not in res['per_class']
    assert res['head'] == {'AP': 1.0, 'AP50': 1.0, 'AP25': 1.0}
    assert res['common'] == {'AP': 0.0, 'AP50': 0.0, 'AP25': 0.0}
    assert res['tail'] == {'AP': None, 'AP50': None, 'AP25': None}
    assert res['AP'] == 0.5


def error_of(cli, args, capsys):
    with pytest.raises(SystemExit) as e:
        cli(args)
    assert e.value.code == 2
    return capsys.readouterr().err


def test_vertex_count_mismatch(cli, tmp_path, capsys):
    args = make_dirs(tmp_path, ['pred_mask/a.txt 3 0.9'], masks={'a.txt': box(499, 0, 200)})
    err = error_of(cli, args + ['--dataset', 'scannet'], capsys)
    assert 'a.txt' in err and '499 lines' in err and '500 vertices' in err


def test_unknown_label_id_is_skipped_by_default_and_refused_with_strict(cli, tmp_path, capsys):
    # ScanNet200: 12 is not a ScanNet200 id (the ids jump 11 -> 13); a valid submission otherwise
    gt = np.zeros(500, np.int64)
    gt[0:200] = 2 * 1000 + 1  # chair
    gt[200:400] = 4 * 1000 + 2  # table
    masks = {'a.txt': box(500, 0, 200), 'b.txt': box(500, 200, 400), 'c.txt': box(500, 0, 400)}
    args = make_dirs(tmp_path, ['pred_mask/a.txt 2 0.9', 'pred_mask/b.txt 4 0.8'], gt=gt,
                     masks=masks) + ['--dataset', 'scannet200']
    clean = cli(args)
    capsys.readouterr()
    listing = tmp_path / 'pred' / 'scene0000_00.txt'
    # the unknown ids outrank the true predictions: counted in any way they would change the result
    listing.write_text('pred_mask/c.txt 12 0.99\npred_mask/a.txt 2 0.9\npred_mask/b.txt 4 0.8\n'
                       'pred_mask/d.txt 999 0.95\n')
    write_ids(str(tmp_path / 'pred' / 'pred_mask' / 'd.txt'), box(500, 0, 200))
    res = cli(args)
    assert res == clean and res['AP'] == 1.0
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if 'skipped' in ln]
    assert len(lines) == 1, err  # one line for all of them, not one per prediction
    assert 'skipped 2 predictions' in lines[0] and '12 (x1)' in lines[0] and '999 (x1)' in lines[0]
    err = error_of(cli, args + ['--strict'], capsys)
    assert 'scene0000_00.txt' in err and 'label id 12' in err and 'c.txt' in err
    # a mask file that does not exist is still an error (the official reader checks every line)
    listing.write_text('pred_mask/a.txt 2 0.9\npred_mask/missing.txt 12 0.5\n')
    err = error_of(cli, args, capsys)
    assert 'missing.txt not found' in err


def test_unknown_label_id_scannet(cli, tmp_path, capsys):
    args = make_dirs(tmp_path, ['pred_mask/a.txt 41 0.9'], masks={'a.txt': box(500, 0, 200)})
    err = error_of(cli, args + ['--dataset', 'scannet', '--strict'], capsys)
    assert 'scene0000_00.txt' in err and 'label id 41' in err
    res = cli(args + ['--dataset', 'scannet'])
    assert res['AP'] == 0.0 and 'skipped 1 predictions' in capsys.readouterr().err
    # the former opt-in flag still parses (skipping is the default now)
    assert cli(args + ['--dataset', 'scannet', '--ignore-unknown-labels']) == res
    # 41 is a ScanNet200 id (bag): evaluated, no skip line
    capsys.readouterr()
    cli(args + ['--dataset', 'scannet200', '--strict'])
    assert 'skipped' not in capsys.readouterr().err


def test_non_instance_label_is_skipped_like_the_benchmark(cli, tmp_path):
    # 40 (otherprop) is a NYU40 id but not an instance class: skipped, not an error
    args = make_dirs(tmp_path, ['pred_mask/a.txt 40 0.9'], masks={'a.txt': box(500, 0, 200)})
    res = cli(args + ['--dataset', 'scannet'])
    assert res['per_class']['cabinet']['AP'] == 0.0


def test_missing_mask_file_and_malformed_lines(cli, tmp_path, capsys):
    args = make_dirs(tmp_path, ['pred_mask/missing.txt 3 0.9'])
    err = error_of(cli, args + ['--dataset', 'scannet'], capsys)
    assert 'scene0000_00.txt:1' in err and 'missing.txt not found' in err
    (tmp_path / 'pred' / 'scene0000_00.txt').write_text('pred_mask/a.txt 3\n')
    err = error_of(cli, args + ['--dataset', 'scannet'], capsys)
    assert 'scene0000_00.txt:1' in err and 'expected' in err
    (tmp_path / 'pred' / 'scene0000_00.txt').write_text('../x.txt 3 0.5\n')
    err = error_of(cli, args + ['--dataset', 'scannet'], capsys)
    assert 'outside' in err


def test_prediction_without_gt_and_bad_gt_file(cli, tmp_path, capsys):
    args = make_dirs(tmp_path, ['pred_mask/a.txt 3 0.9'], masks={'a.txt': box(500, 0, 200)})
    (tmp_path / 'pred' / 'scene0001_00.txt').write_text('')
    err = error_of(cli, args + ['--dataset', 'scannet'], capsys)
    assert 'scene0001_00.txt has no GT file' in err
    (tmp_path / 'pred' / 'scene0001_00.txt').unlink()
    (tmp_path / 'gt' / 'scene0000_00.txt').write_text('1\n2.5\n')
    err = error_of(cli, args + ['--dataset', 'scannet'], capsys)
    assert 'gt/scene0000_00.txt' in err and 'one integer per line' in err


def test_cli_equals_mmdet3d_port_of_the_official_script(cli, tmp_path, monkeypatch, capsys):
    """Random ScanNet200 folders: CLI numbers == the official algorithm (mmdet3d's port)."""
    from mmdet3d.evaluation.functional.scannet_utils import evaluate_semantic_instance as official

    from projects.odin.class_names import SCANNET200_INSTANCE_CLASS_IDS as ids

    monkeypatch.setattr(np, 'in1d', np.isin, raising=False)  # the port predates numpy 2.4
    rng = np.random.default_rng(7)
    gt_dir, pred_dir = tmp_path / 'gt', tmp_path / 'pred'
    (pred_dir / 'pred_mask').mkdir(parents=True)
    gt_dir.mkdir()
    used = list(rng.choice(ids, 6, replace=False)) + [1, 3]  # + wall, floor (not evaluated)
    preds, gts = [], []
    for s in range(3):
        n = 3000
        gt = np.zeros(n, np.int64)
        seg = rng.integers(0, 12, n)
        labels = rng.choice(used, 12)
        for g in range(12):
            gt[seg == g] = labels[g] * 1000 + g + 1 if rng.random() < 0.9 else 0
        write_ids(str(gt_dir / f'scene{s:04d}_00.txt'), gt)
        lines, info = [], {}
        for k in range(15):
            g = int(rng.integers(0, 12))
            m = (seg == g) ^ (rng.random(n) < rng.uniform(0, 0.1))
            lab = int(labels[g] if rng.random() < 0.7 else rng.choice(used))
            if k % 5 == 4:  # raw ids outside ScanNet200 (skipped by default, as officially)
                lab = (12, 999)[k % 2]
            conf = float(np.round(rng.random(), 2))
            name = f'pred_mask/scene{s:04d}_00_{k}.txt'
            write_ids(str(pred_dir / name), m)
            lines.append(f'{name} {lab} {conf}\n')
            info[name] = dict(mask=m.astype(np.int64), label_id=lab, conf=conf)
        (pred_dir / f'scene{s:04d}_00.txt').write_text(''.join(lines))
        preds.append(info)
        gts.append(gt)
    res = cli(['--gt-dir', str(gt_dir), '--pred-dir', str(pred_dir), '--dataset', 'scannet200'])
    assert 'skipped 9 predictions' in capsys.readouterr().err  # 3 per scene
    names = tuple(SCANNET200_INSTANCE_CLASSES)
    ref = official.scannet_eval(preds, gts, None, ids, names, dict(zip(ids, names)))
    assert res['AP'] == ref['all_ap'] and res['AP50'] == ref['all_ap_50%']
    assert res['AP25'] == ref['all_ap_25%'] and res['AP50'] > 0
    for name in names:
        got = [res['per_class'][name][k] for k in ('AP', 'AP50', 'AP25')]
        exp = [ref['classes'][name][k] for k in ('ap', 'ap50%', 'ap25%')]
        np.testing.assert_array_equal(np.array(got, dtype=float), np.array(exp, dtype=float))
