"""Build steps of the ODIN package (metadata in pyproject.toml).

* ``build_py`` copies the package data: ``configs/`` -> ``projects/odin/.mim/configs`` and
  ``model-index.yml`` -> ``projects/odin/.mim/model-index.yml`` (where
  :mod:`projects.odin.utils.resources` looks first, as ``mim`` does for OpenMMLab packages). An
  editable install links ``projects/odin/.mim/`` to the checkout's files instead of copying.
* ``build_ext`` compiles our ops with the logic of ``tools/build_ops.py`` (the same flags and
  cache; ``FORCE_CUDA=1`` or a visible GPU adds the CUDA kernels) for the torch of the
  environment that runs the build - hence ``--no-build-isolation`` - and puts
  ``projects/odin/ops/_ext*.so`` into the wheel (or, editable, into the checkout). A failed build
  fails the install; ``ODIN_SKIP_OPS_BUILD=1`` skips it on purpose (the ops then run their
  pure-PyTorch twins).
"""
import importlib.util
import os
import shutil
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
#: package data: source in the checkout -> destination under projects/odin/.mim
MIM_FILES = {'configs': 'configs', 'model-index.yml': 'model-index.yml'}
MIM_DIR = Path('projects') / 'odin' / '.mim'


def _load_build_ops():
    """tools/build_ops.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location('odin_build_ops', ROOT / 'tools' / 'build_ops.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _is_editable(cmd) -> bool:
    return bool(getattr(cmd, 'editable_mode', False)) or bool(getattr(cmd, 'inplace', False))


class BuildPyWithMim(build_py):
    """build_py that also ships the configs and the model index under projects/odin/.mim."""

    def run(self):
        """Build the Python files, then copy (or, editable, link) the package data."""
        super().run()
        if _is_editable(self):
            self._link_in_checkout()
        else:
            self._copy_into(Path(self.build_lib) / MIM_DIR)

    def _copy_into(self, dest: Path) -> None:
        for src, name in MIM_FILES.items():
            source, target = ROOT / src, dest / name
            if target.is_symlink() or target.is_file():
                target.unlink()
            elif target.is_dir():
                shutil.rmtree(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, target, ignore=shutil.ignore_patterns('__pycache__'))
            else:
                shutil.copy2(source, target)

    @staticmethod
    def _link_in_checkout() -> None:
        dest = ROOT / MIM_DIR
        dest.mkdir(parents=True, exist_ok=True)
        for src, name in MIM_FILES.items():
            target = dest / name
            if target.is_symlink() or target.is_file():
                target.unlink()
            elif target.is_dir():
                shutil.rmtree(target)
            os.symlink(os.path.relpath(ROOT / src, dest), target)


class BuildOps(build_ext):
    """Compile projects/odin/ops/_ext with tools/build_ops.py's logic for this torch."""

    def run(self):
        """Build the ops (or reuse the cache) and put the .so where the install needs it."""
        if os.environ.get('ODIN_SKIP_OPS_BUILD', '0') == '1':
            print('[setup.py] ODIN_SKIP_OPS_BUILD=1: not building the ops (twins will be used)')
            return
        try:
            import torch  # noqa: F401
        except ImportError as exc:
            raise RuntimeError(
                'building the ODIN ops needs torch in the build environment: install torch first '
                'and use `pip install --no-build-isolation ...` (or set ODIN_SKIP_OPS_BUILD=1 '
                'to install without the compiled ops)') from exc
        build_ops = _load_build_ops()
        so = build_ops.build(force=False)
        if so is None:
            raise RuntimeError('building the ODIN ops failed (see the [build_ops] lines above); '
                               'set ODIN_SKIP_OPS_BUILD=1 to install without them')
        if not _is_editable(self):
            dest = Path(self.build_lib) / 'projects' / 'odin' / 'ops' / so.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(so, dest)

    def get_outputs(self):
        """No setuptools-managed extension modules (the .so is placed by :meth:`run`)."""
        return []


class BinaryDistribution(Distribution):
    """The wheel holds a compiled extension: tag it for this Python and platform."""

    def has_ext_modules(self):
        """True unless the ops build is skipped: the wheel is then platform-specific."""
        return os.environ.get('ODIN_SKIP_OPS_BUILD', '0') != '1'


setup(distclass=BinaryDistribution, cmdclass={'build_py': BuildPyWithMim, 'build_ext': BuildOps})
