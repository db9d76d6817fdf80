"""tools/gpu_check.py and tools/fill_wheelhouse.sh rehearsed on a CPU (no GPU, no network).

The GPU check runs where GPU time is scarce, so its logic is exercised here: the report's shape
(the keys docs/benchmarks/gpu_check.json must have), a step killed by a signal recorded in
``crashes`` without ending the check, pytest failures collected, and a dry run of real steps.
The wheelhouse script prints its pip commands with ``--dry-run``.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from odin_testing import load_script

ROOT = Path(__file__).resolve().parents[2]
REQUIRED_KEYS = ('device', 'cuda', 'torch', 'date', 'tests_failed', 'crashes',
                 'block_fwd_bwd_speedup', 'knn_400k_s', 'whole_model_speedup',
                 'train_swin_peak_gb', 'train_swin_s_per_iter')


def test_a_crashing_step_is_recorded_and_the_report_goes_on(tmp_path):
    tool = load_script('tools/gpu_check.py')
    report = tool.Report(str(tmp_path / 'out'), dict(mode='test', date='d', device='cpu',
                                                     cuda=None, torch='t', python='p',
                                                     cpu_count=1))
    crash = [sys.executable, '-c', 'import os, signal; os.kill(os.getpid(), signal.SIGSEGV)']
    r = tool.run_step(report, 'segv', crash, 60)
    assert r['signal'] == 11 and r['status'] == 'crashed (signal 11)'
    fail = [sys.executable, '-c', "print('FAILED tests/x.py::test_a - boom'); raise SystemExit(1)"]
    r = tool.run_step(report, 'tests', fail, 60)
    assert r['status'] == 'failed (exit 1)' and r['signal'] is None
    assert tool.failed_tests(r['log']) == ['tests/x.py::test_a']
    tagged = [sys.executable, '-c', f"print({tool.CHILD_TAG!r} + '{{\"x\": 3}}')"]
    assert tool.run_step(report, 'child', tagged, 60)['result'] == {'x': 3}
    slow = [sys.executable, '-c', 'import time; time.sleep(30)']
    assert tool.run_step(report, 'slow', slow, 1)['status'].startswith('timed out')
    doc = json.loads((tmp_path / 'out' / 'gpu_check.json').read_text())
    assert doc['crashes'] == [dict(step='segv', signal=11)]
    assert set(doc['steps']) == {'segv', 'tests', 'child', 'slow'}
    assert all(k in doc for k in REQUIRED_KEYS)
    md = (tmp_path / 'out' / 'gpu_check.md').read_text()
    assert '| segv | crashed (signal 11) |' in md
    assert 'boom' in (tmp_path / 'out' / 'logs.txt').read_text()


@pytest.mark.slow
def test_dry_run_writes_the_report_shape(tmp_path):
    out = tmp_path / 'out'
    proc = subprocess.run(
        [sys.executable, 'tools/gpu_check.py', '--dry-run', '--steps', 'install,throw_probe',
         '--out', str(out), '--work', str(tmp_path / 'work')], cwd=ROOT, capture_output=True,
        text=True, timeout=300, env={**os.environ, 'PYTHONPATH': str(ROOT)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    files = sorted(p.name for p in out.iterdir())
    assert files == ['gpu_check.json', 'gpu_check.md', 'logs.txt']  # at most 8 come back
    doc = json.loads((out / 'gpu_check.json').read_text())
    for key in REQUIRED_KEYS:
        assert key in doc, key
    assert doc['mode'] == 'dry-run' and doc['device'] == 'cpu' and doc['crashes'] == []
    assert doc['steps']['throw_probe']['status'] == 'ok'
    # the compiled op (when built) raised on the bad level index instead of crashing
    probe = doc['throw_probe']
    assert probe.get('odin_cpu', 'raised').startswith('raised'), probe
    assert 'install' in doc['skipped']


def test_fill_wheelhouse_dry_run_prints_the_downloads(tmp_path):
    proc = subprocess.run(['bash', 'tools/fill_wheelhouse.sh', str(tmp_path / 'wh'), '--python',
                           '3.12', '--platform', 'manylinux_2_28_x86_64', '--dry-run'],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 3 and not (tmp_path / 'wh').exists()  # printed, nothing downloaded
    wheels, small, mmcv = lines
    for line in (wheels, small):
        assert '--python-version 3.12' in line and '--platform manylinux_2_28_x86_64' in line
        assert '--only-binary=:all:' in line and '--no-deps' in line
    pins = [ln.split('#')[0].strip() for ln in
            (ROOT / 'requirements' / 'nodeps.txt').read_text().splitlines()]
    for pin in filter(None, pins):
        assert pin in wheels.split(), pin
    assert 'mmengine==0.10.7' in small.split()
    # the sdist, its metadata prepared in the downloading environment (mmcv's setup.py needs
    # torch and pkg_resources: an isolated build environment has neither)
    assert '--no-binary :all:' in mmcv and '--no-build-isolation' in mmcv
    assert mmcv.split()[-1] == 'mmcv==2.1.0'
    assert not any(w.startswith('torch') for line in lines for w in line.split())
    full = subprocess.run(['bash', 'tools/fill_wheelhouse.sh', str(tmp_path / 'wh'), '--full',
                           '--dry-run'], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert full.returncode == 0
    resolved = full.stdout.splitlines()[1]
    assert '--no-deps' not in resolved and 'mmengine==0.10.7' in resolved.split()
    assert not any(w.startswith('torch') for w in resolved.split())
    bad = subprocess.run(['bash', 'tools/fill_wheelhouse.sh'], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and 'usage' in bad.stderr
