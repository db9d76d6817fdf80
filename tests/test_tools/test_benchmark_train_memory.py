"""Smoke test of tools/analysis_tools/benchmark_train_memory.py: a tiny run end to end (one fresh
process per variant) prints the table's rows and parsable ratios (no timing or memory target)."""
import re

import pytest

from odin_testing import load_script


@pytest.mark.smoke
def test_benchmark_train_memory_prints_a_table(capsys):
    bench = load_script('tools/analysis_tools/benchmark_train_memory.py')
    rc = bench.main(['--config', 'configs/odin/odin_tiny_test.py', '--views', '4',
                     '--image-size', '32', '48', '--points', '200', '--view-chunks', '3',
                     '--steps', '1', '--threads', '1'])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert '4 views of 32x48' in out and 'random weights' in out
    rows = {}
    for line in out.splitlines():
        m = re.match(r'\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(-?[\d.]+)\s+'
                     r'([\d.]+)$', line)
        if m:
            rows[int(m.group(1))] = [float(v) for v in m.group(2, 3, 4, 5, 6, 7)]
    assert sorted(rows) == [0, 3], out
    for step_s, cpu_s, peak_gb, base_gb, step_gb, loss in rows.values():
        assert loss > 0 and step_s > 0 and cpu_s > 0 and 0.1 < base_gb <= peak_gb < 64
        assert step_gb == pytest.approx(peak_gb - base_gb, abs=0.011)
    # the same scene and weights: the chunked step computes the same loss
    assert rows[3][5] == pytest.approx(rows[0][5], rel=1e-4)
    m = re.search(r'view_chunk=3 vs whole batch: peak RSS ([\d.]+)x, step memory (-?[\d.]+)x, '
                  r'time ([\d.]+)x, CPU time ([\d.]+)x', out)
    assert m, out


def test_benchmark_train_memory_rejects_bad_arguments():
    bench = load_script('tools/analysis_tools/benchmark_train_memory.py')
    with pytest.raises(SystemExit):
        bench.parse_args(['--view-chunks', '0'])
