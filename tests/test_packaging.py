"""Installing the project into an existing environment (pyproject.toml + setup.py).

Users with torch and mmcv on a cluster install the project with ``pip install
--no-build-isolation -e .`` or build a wheel; both must carry the configs and the model index
as package data (``projects/odin/.mim/``) and our ops built for that environment's torch. The
ops package must also import with torch alone while mmcv's compiled ops are missing (mmdet3d
installed but mmcv not built yet: a trap met on the GPU machine).
"""
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# what a source distribution of the project holds (enough to build and install it)
SOURCE_ITEMS = ('pyproject.toml', 'setup.py', 'README.md', 'model-index.yml', 'configs',
                'projects', 'tools/build_ops.py')


def _run(cmd, cwd, env=None, timeout=240):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f'{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}'
    return proc


def test_ops_import_with_torch_alone_while_mmcv_ops_are_missing(tmp_path):
    if importlib.util.find_spec('mmdet3d') is None:
        pytest.skip('mmdet3d is not installed: the trap needs it')
    script = textwrap.dedent('''
        import sys, warnings

        class BlockMmcvOps:
            """mmcv installed without its compiled ops (not built yet)."""
            def find_spec(self, name, path=None, target=None):
                if name == 'mmcv._ext':
                    raise ImportError('mmcv._ext blocked by the test')
                return None

        sys.meta_path.insert(0, BlockMmcvOps())
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            import projects.odin.ops as ops
        import projects.odin as odin
        import torch
        assert 'mmcv._ext blocked' in odin.STACK_IMPORT_ERROR, odin.STACK_IMPORT_ERROR
        messages = [str(w.message) for w in caught]
        assert any('NOT registered' in m for m in messages), messages
        assert 'mmdet.models' not in sys.modules
        try:
            odin.require_stack()
        except ImportError as exc:
            assert 'not registered' in str(exc)
        else:
            raise AssertionError('require_stack() did not raise')
        pts = torch.tensor([[0., 0, 0], [1, 0, 0], [0, 3, 0]])
        idx, dist = ops.knn(pts, pts, 2, torch.tensor([3]), torch.tensor([3]))
        assert idx[:, 0].tolist() == [0, 1, 2] and idx[:, 1].tolist() == [1, 0, 0], idx
        print('ops ok')
    ''')
    proc = _run([sys.executable, '-c', script], cwd=tmp_path,
                env={**os.environ, 'PYTHONPATH': str(ROOT)}, timeout=180)
    assert 'ops ok' in proc.stdout


def _source_copy(dest: Path) -> Path:
    src = dest / 'src'
    for item in SOURCE_ITEMS:
        path = ROOT / item
        target = src / item
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            shutil.copytree(path, target, symlinks=False,
                            ignore=shutil.ignore_patterns('__pycache__', '.mim', '*.so'))
        else:
            shutil.copy2(path, target)
    return src


def _ops_build_is_cached() -> bool:
    """Whether tools/build_ops.py would reuse a cached build (no compilation in this test)."""
    import torch
    spec = importlib.util.spec_from_file_location('odin_build_ops', ROOT / 'tools' / 'build_ops.py')
    build_ops = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_ops)
    name = '_ext' + sysconfig.get_config_var('EXT_SUFFIX')
    key = build_ops.build_key(torch, build_ops.want_cuda(torch))
    return (build_ops.cache_root() / key / name).exists()


@pytest.mark.slow
def test_wheel_and_editable_install_into_an_environment_with_torch(tmp_path):
    pytest.importorskip('setuptools')
    src = _source_copy(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    with_ops = _ops_build_is_cached()
    if not with_ops:
        env['ODIN_SKIP_OPS_BUILD'] = '1'  # keep the test short: no compilation here
    pip = [sys.executable, '-m', 'pip', '--disable-pip-version-check']

    # 1. a wheel, built against this environment's torch
    _run(pip + ['wheel', '--no-build-isolation', '--no-deps', '--no-index', '-q', '-w',
                str(tmp_path / 'wheel'), '.'], cwd=src, env=env)
    wheels = list((tmp_path / 'wheel').glob('odin_mmdet3d-*.whl'))
    assert len(wheels) == 1, wheels
    names = set(zipfile.ZipFile(wheels[0]).namelist())
    for required in ('projects/odin/__init__.py', 'projects/odin/ops/knn.py',
                     'projects/odin/models/odin.py', 'projects/odin/.mim/model-index.yml',
                     'projects/odin/.mim/configs/odin/scannet200_swin.py',
                     'projects/odin/.mim/configs/odin/metafile.yml',
                     'projects/odin/.mim/configs/_base_/default_runtime.py'):
        assert required in names, required
    assert not any('/csrc/' in n or n.startswith('tests/') for n in names)
    ext = 'projects/odin/ops/_ext' + sysconfig.get_config_var('EXT_SUFFIX')
    assert (ext in names) == with_ops
    if with_ops:
        assert '-linux_' in wheels[0].name or '-manylinux' in wheels[0].name  # platform wheel

    # 2. an editable install into a fresh venv that sees this environment's packages (torch,
    # mmcv, ...) through a plain path entry - not through its .pth files, so the checkout
    # finder that tools/setup_env.sh installs there does not stand in for the install
    venv = tmp_path / 'venv'
    _run([sys.executable, '-m', 'venv', '--without-pip', str(venv)], cwd=tmp_path, env=env)
    py = str(venv / 'bin' / 'python')
    site = _run([py, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                cwd=tmp_path, env=env).stdout.strip()
    (Path(site) / 'zz_base_environment.pth').write_text(
        sysconfig.get_paths()['purelib'] + '\n')
    _run([py, '-m', 'pip', '--disable-pip-version-check', 'install', '--no-build-isolation',
          '--no-deps', '--no-index', '-q', '-e', '.'], cwd=src, env=env)
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    probe = ('import projects.odin, projects.odin.ops as ops\n'
             'from projects.odin.utils.resources import find_resource\n'
             'print(projects.odin.__file__)\n'
             'print(find_resource("configs/odin/scannet_r50.py"))\n'
             'print(find_resource("model-index.yml"))\n'
             'print(ops.ext_available())\n')
    out = _run([py, '-c', probe], cwd=elsewhere, env=env, timeout=240).stdout.split('\n')
    assert Path(out[0]).resolve() == (src / 'projects' / 'odin' / '__init__.py').resolve()
    assert Path(out[1]).resolve() == (src / 'configs' / 'odin' / 'scannet_r50.py').resolve()
    assert Path(out[2]).resolve() == (src / 'model-index.yml').resolve()
    assert out[3] == str(with_ops)
