"""tools/analysis_tools/benchmark_model.py end to end: both formulations agree (no timing)."""
import json
import os.path as osp

import pytest

from odin_testing import load_script

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

pytestmark = pytest.mark.usefixtures('one_thread')


def test_benchmark_model_compares_the_two_formulations(tmp_path, capsys):
    tool = load_script('tools/analysis_tools/benchmark_model.py')
    out = tmp_path / 'bench.json'
    assert tool.main(['--config', osp.join(REPO_ROOT, 'configs', 'odin', 'synthetic_r18_demo.py'),
                      '--views', '2', '--repeats', '1', '--room-spacing', '0.25',
                      '--object-spacing', '0.2', '--json', str(out)]) == 0
    doc = json.loads(out.read_text())
    # every 3D block (3 backbone stages + 3 pixel-decoder levels) ran in the official formulation
    assert doc['swapped_blocks'] == 6
    # the official formulation runs mmcv's deformable attention (its CPU path), ours our kernel
    assert doc['msda_layers'] == 1  # the demo config's 1-layer encoder
    assert set(doc['results']) == {'ours', 'official formulation'}
    for r in doc['results'].values():
        assert r['median_s'] > 0 and r['peak_mb'] > 0 and len(r['runs_s']) == 1
    # same weights, same input: the two formulations compute the same logits
    assert max(doc['rel_err']) < 1e-3, doc['rel_err']
    assert doc['views'] == 2 and doc['vertices'] > 0 and doc['voxels']['res2'] > 0
    # the reported speed-up is the ratio of the two medians, and the printed figures are the
    # JSON's (not a fixed word the script always prints)
    r = doc['results']
    assert doc['speedup'] == pytest.approx(r['official formulation']['median_s']
                                           / r['ours']['median_s'])
    out = capsys.readouterr().out
    assert f"{doc['speedup']:.2f}x faster" in out
    assert f"{doc['rel_err'][0]:.1e}, {doc['rel_err'][1]:.1e}" in out
