"""tools/analysis_tools/compare_models.py: two small ODIN variants on the same synthetic test split
through the same Runner and evaluator; the table's metrics are those tools/test.py gives."""
import json
import os.path as osp

import pytest
import torch

from odin_testing import REPO_ROOT, load_script

BASE = osp.join(REPO_ROOT, 'configs', 'odin', 'synthetic_r18_demo.py')
VARIANTS = {
    # the demo model as configured
    'odin_a': '',
    # fewer queries, two decoder layers, one fusion layer fewer: a different architecture
    'odin_b': ('model = dict(backbone=dict(fusion_stages=(2, 3), fusion_layers=(1, 1)),\n'
               '             decode_head=dict(num_queries=16, transformer_decoder=dict('
               'num_layers=2)),\n'
               '             test_cfg=dict(topk=16, max_per_image=16))\n'),
}

pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def models(tmp_path_factory):
    """Two configs (on the demo config) and a checkpoint of each with its own random weights."""
    from projects.odin.apis.inference import init_odin_model
    from projects.odin.class_names import SCANNET_CLASSES
    from projects.odin.demo.synthetic_demo import make_synthetic_dataset
    root = tmp_path_factory.mktemp('compare')
    data = make_synthetic_dataset(str(root / 'data'), num_scenes=3, num_val=2, seed=5,
                                  preset='tiny')
    out = []
    for seed, (name, body) in enumerate(VARIANTS.items()):
        cfg = root / f'{name}.py'
        cfg.write_text(f'_base_ = [{BASE!r}]\n{body}')
        torch.manual_seed(seed)
        model = init_odin_model(str(cfg), None)
        ckpt = root / f'{name}.pth'
        torch.save(dict(state_dict=model.state_dict(),
                        meta=dict(dataset_meta=dict(classes=tuple(SCANNET_CLASSES)))), ckpt)
        out.append((name, str(cfg), str(ckpt)))
    return dict(root=root, data_root=data['converted'] + '/', models=out)


def _tools_test_metrics(cfg, ckpt, work_dir, data_root):
    """What tools/test.py CFG CKPT --cfg-options ... evaluates (its own config building)."""
    from mmengine.runner import Runner
    test_tool = load_script('tools/test.py')
    args = test_tool.parse_args([cfg, ckpt, '--work-dir', work_dir, '--cfg-options',
                                 f'test_dataloader.dataset.data_root={data_root}'])
    metrics = Runner.from_cfg(test_tool.build_config(args)).test()
    return {k: float(v) for k, v in metrics.items()}


def test_two_odin_variants_side_by_side(models, capsys):
    # in this process (--no-isolate): the isolated default is checked below on one model
    tool = load_script('tools/analysis_tools/compare_models.py')
    root, data_root = models['root'], models['data_root']
    argv = [p for _, cfg, ckpt in models['models'] for p in (cfg, ckpt)]
    out_json = str(root / 'compare.json')
    assert tool.main(argv + ['--cfg-options', f'test_dataloader.dataset.data_root={data_root}',
                             '--device', 'cpu', '--threads', '1', '--out', out_json,
                             '--work-dir', str(root / 'work'), '--no-isolate']) == 0
    printed = capsys.readouterr().out
    table = printed[printed.index('| model |'):]
    rows = [line for line in table.splitlines() if line.startswith('| odin_')]
    assert [r.split(' | ')[0] for r in rows] == ['| odin_a', '| odin_b']
    assert '(2 scenes)' in printed and 'ODINSegMetric' in printed

    with open(out_json) as f:
        results = json.load(f)['models']
    assert [r['name'] for r in results] == ['odin_a', 'odin_b']
    for r, (_, cfg, ckpt) in zip(results, models['models']):
        assert r['scenes'] == 2 and r['device'] == 'cpu'
        assert r['s_per_scene'] > 0 and r['mem_kind'] == 'peak RSS'
        assert 0.1 < r['peak_mem_gb'] < 64
        assert r['dataset']['data_root'] == data_root
        expected = _tools_test_metrics(cfg, ckpt, str(root / 'ref'), data_root)
        assert set(r['metrics']) == set(expected) >= {'AP', 'AP50', 'AP25', 'mIoU'}
        for key, value in expected.items():
            assert r['metrics'][key] == pytest.approx(value, abs=1e-6), key
        for key in ('AP', 'mIoU'):  # the table prints the same numbers (4 decimals)
            assert f'{r["metrics"][key]:.4f}' in rows[results.index(r)]
    # two different models: not the same numbers twice
    a, b = (r['metrics'] for r in results)
    assert any(abs(a[k] - b[k]) > 1e-6 for k in a), (a, b)
    assert 'process peak so far' in printed  # the CPU memory caveat of --no-isolate


def test_isolated_run_gives_the_same_metrics(models):
    """The default: each model in a fresh process (its own peak RSS), same numbers."""
    tool = load_script('tools/analysis_tools/compare_models.py')
    root, data_root = models['root'], models['data_root']
    name, cfg, ckpt = models['models'][1]
    with open(root / 'compare.json') as f:
        in_process = json.load(f)['models'][1]
    assert in_process['name'] == name
    spec = dict(config=cfg, checkpoint=ckpt, data_config=cfg, work_dir=str(root / 'iso'),
                cfg_options={'test_dataloader.dataset.data_root': data_root}, threads=1)
    result = tool._run_isolated(spec, 'cpu')
    assert result['scenes'] == 2 and result['mem_kind'] == 'peak RSS'
    assert 0.1 < result['peak_mem_gb'] < 64
    assert result['metrics'].keys() == in_process['metrics'].keys()
    for key, value in in_process['metrics'].items():
        assert result['metrics'][key] == pytest.approx(value, abs=1e-6), key


def test_bad_arguments(models, capsys):
    tool = load_script('tools/analysis_tools/compare_models.py')
    (_, cfg, ckpt), _ = models['models']
    with pytest.raises(SystemExit):
        tool.main([cfg, ckpt, cfg])  # not in pairs
    assert 'expected CFG CKPT pairs, got 3' in capsys.readouterr().err
    assert tool.main([cfg, ckpt, cfg, ckpt + '.missing']) == 2
    assert 'checkpoint not found' in capsys.readouterr().err
    assert tool.main([cfg, ckpt, cfg, ckpt, '--data-config', cfg + '.missing']) == 2
    assert 'data config not found' in capsys.readouterr().err
