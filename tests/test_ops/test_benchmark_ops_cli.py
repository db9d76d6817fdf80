"""tools/analysis_tools/benchmark_ops.py at a tiny size: errors against float64 (no timing)."""
import json
import math

import pytest

from odin_testing import load_script

pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def tool():
    return load_script('tools/analysis_tools/benchmark_ops.py')


def test_errors_against_float64_per_pass(tool, tmp_path, capsys):
    out = tmp_path / 'ops.json'
    report = tool.main(['--voxels', '300', '--channels', '32', '--heads', '4', '--ffn', '64',
                        '--repeats', '1', '--skip-knn', '--skip-msda', '--json', str(out)])
    assert json.loads(out.read_text())['block'].keys() == {'fwd', 'fwd_bwd'}
    block = report['block']
    assert set(block['fwd']['ours_err_fp64']) == {'output'}
    tensors = block['fwd_bwd']['ours_err_fp64']
    # the output, the input gradient and the gradient of every parameter of our block
    assert {'output', 'grad:voxel_feats', 'grad:layers.1.ffn_norm.bias'} <= set(tensors)
    assert len(tensors) == 2 + 34
    for r in block.values():
        assert r['ours_err_fp64'].keys() == r['official_err_fp64'].keys()
        for errs in (r['ours_err_fp64'], r['official_err_fp64']):
            # float32 rounding: non-zero, finite and far below 1 (float64 is the reference)
            assert all(0 < e < 1e-4 and math.isfinite(e) for e in errs.values()), errs
        ratio = {k: r['ours_err_fp64'][k] / r['official_err_fp64'][k] for k in r['ours_err_fp64']}
        assert r['err_fp64_ratio'] == pytest.approx(ratio)
        assert r['worst_ratio'] == pytest.approx(max(ratio.values()))
        assert r['fp64_bound_holds'] == (max(ratio.values()) <= tool.FP64_BOUND)
        # both are float32 runs of the same block: the pairwise difference is bounded by the sum
        # of their distances to float64 (triangle inequality, output)
        assert r['output_rel_err'] <= (r['ours_err_fp64']['output']
                                       + r['official_err_fp64']['output']) * (1 + 1e-6)
    printed = capsys.readouterr().out
    assert 'ours_err_fp64' in printed and 'official_err_fp64' in printed
    for name, r in block.items():
        verdict = 'holds' if r['fp64_bound_holds'] else 'DOES NOT HOLD'
        assert f'{name}: ours <= 1.5x official against float64 on every tensor: {verdict}' \
            in printed


def test_fp64_summary_verdict(tool):
    ok = tool.fp64_summary({'a': 1e-7, 'b': 3e-7}, {'a': 1e-7, 'b': 2.5e-7})
    assert ok['fp64_bound_holds'] and ok['worst_ratio_tensor'] == 'b'
    assert ok['worst_ratio'] == pytest.approx(1.2)
    bad = tool.fp64_summary({'a': 1e-7, 'b': 4e-7}, {'a': 1e-7, 'b': 2.5e-7})
    assert not bad['fp64_bound_holds'] and bad['worst_ratio'] == pytest.approx(1.6)
    assert not tool.fp64_summary({'a': 1e-9}, {'a': 0.0})['fp64_bound_holds']
    assert tool.fp64_summary({'a': 0.0}, {'a': 0.0})['fp64_bound_holds']


def test_msda_section(tool, capsys):
    report = tool.main(['--skip-block', '--skip-knn', '--msda-views', '2', '--msda-hw', '40', '72',
                        '--msda-channels', '32', '--msda-heads', '4', '--repeats', '1'])
    assert set(report) == {'meta', 'msda'}
    tensors = {'output', 'grad:value', 'grad:sampling_locations', 'grad:attention_weights'}
    for name, r in report['msda'].items():
        assert r['speedup'] == pytest.approx(r['mmcv_pytorch_s'] / r['ours_s'])
        assert r['ours_peak_mb'] > 0 and r['mmcv_pytorch_peak_mb'] > 0
        expected = {'output'} if name == 'fwd' else tensors
        assert set(r['rel_err']) == set(r['ours_err_fp64']) == expected
        # float32 rounding only: both close to float64 and to each other
        for errs in (r['rel_err'], r['ours_err_fp64'], r['mmcv_pytorch_err_fp64']):
            assert all(0 <= e < 1e-5 and math.isfinite(e) for e in errs.values()), errs
        assert r['max_rel_err'] == max(r['rel_err'].values())
    printed = capsys.readouterr().out
    assert 'levels 5x9 / 3x5 / 2x3' in printed
    for name, r in report['msda'].items():
        assert f"| {name:<7} | {r['ours_s']:8.3f} |" in printed
