"""The library runs from a copy of ``projects/`` outside the checkout (no path into the repo)."""
import os
import shutil
import subprocess
import sys

from odin_testing import REPO_ROOT

SCRIPT = r'''
import os, shutil, sys
import projects.odin  # noqa: F401  (registers everything)
from projects.odin.demo import synthetic_demo
from projects.odin.utils import checkpoint, model_zoo
assert os.path.dirname(projects.odin.__file__).startswith(os.getcwd()), projects.odin.__file__
try:
    synthetic_demo.load_demo_config('data', 'work')
except FileNotFoundError as e:
    print('NO_CONFIG', e)
try:
    checkpoint.suggest_configs(dict(backbone='r50', num_classes=20))
except FileNotFoundError as e:
    print('NO_SUGGEST', e)
try:
    model_zoo.build_model_zoo()
except FileNotFoundError as e:
    print('NO_INDEX', e)
print('HINT', checkpoint._arch_hint(dict(arch=dict(backbone='r50')), None))
# configs shipped as package data (what an installation with its configs provides)
shutil.copytree(sys.argv[1], os.path.join('projects', 'odin', '.mim', 'configs'))
cfg = synthetic_demo.load_demo_config('data', 'work')
print('DEMO_CFG', cfg.filename.startswith(os.path.join(os.getcwd(), 'projects', 'odin', '.mim')))
print('SUGGEST', checkpoint.suggest_configs(dict(backbone='r50', num_classes=20,
                                                 open_vocab=False, num_queries=100)))
'''


def _run(tmp_path, *args):
    env = dict(os.environ, PYTHONPATH=str(tmp_path), OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, '-c', SCRIPT, *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_library_from_a_copy_of_projects(tmp_path):
    shutil.copytree(os.path.join(REPO_ROOT, 'projects'), tmp_path / 'projects',
                    ignore=shutil.ignore_patterns('__pycache__', '.mim'))
    out = _run(tmp_path, os.path.join(REPO_ROOT, 'configs'))
    # without the configs: clear errors naming where they were looked for
    assert 'NO_CONFIG configs/odin/synthetic_r18_demo.py of the ODIN project not found' in out
    assert os.path.join('projects', 'odin', '.mim') in out
    assert 'NO_SUGGEST configs/odin of the ODIN project not found' in out
    assert 'NO_INDEX model-index.yml of the ODIN project not found' in out
    assert 'HINT  The checkpoint was converted from a model with backbone=r50.' in out
    # with the configs as package data: found there
    assert 'DEMO_CFG True' in out
    assert "SUGGEST ['" in out and "scannet_r50.py'" in out
