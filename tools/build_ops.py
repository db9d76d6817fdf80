"""Build the compiled ODIN ops in place: ``projects/odin/ops/_ext<EXT_SUFFIX>``.

The extension (C++/OpenMP CPU kernels; CUDA kernels too when ``FORCE_CUDA=1`` or torch sees a GPU)
is compiled with ``torch.utils.cpp_extension`` (``-O3 -fopenmp``, no debug info) and cached OUTSIDE
the checkout in ``${ODIN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/odin-mmdet3d}/ops/<key>/``,
where ``<key>`` hashes the ``csrc`` sources, this script's flags, the torch version, the Python
ABI tag and the CUDA flag. With a warm cache the .so is only copied (nothing compiles).

Usage::

    python tools/build_ops.py            # build or reuse the cached build
    python tools/build_ops.py --force    # rebuild even if cached
    ODIN_SKIP_OPS_BUILD=1 python tools/build_ops.py   # do nothing (twins will be used)

Exit status is non-zero with a message when the build fails. The ops work without the extension
(pure-PyTorch twins), so a failed build never breaks ``import projects.odin.ops``.
"""
import argparse
import hashlib
import importlib.util
import os
import shutil
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
OPS_DIR = ROOT / 'projects' / 'odin' / 'ops'
CSRC = OPS_DIR / 'csrc'
CPU_SOURCES = ['pytorch/pybind.cpp', 'pytorch/cpu/odin_ops_cpu.cpp',
               'pytorch/cpu/ms_deform_attn_cpu.cpp']
CUDA_SOURCES = ['pytorch/cuda/odin_ops_cuda.cu']
CFLAGS = ['-O3', '-g0', '-DNDEBUG', '-fopenmp', '-ffp-contract=off']
LDFLAGS = ['-fopenmp']
CUDA_FLAGS = ['-O3', '-DNDEBUG', '--fmad=false']
BUILD_REVISION = '1'  # bump when this script changes the produced binary


def log(msg: str) -> None:
    print(f'[build_ops] {msg}', flush=True)


def cache_root() -> Path:
    base = os.environ.get('ODIN_CACHE_DIR') or os.path.join(
        os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache'),
        'odin-mmdet3d')
    return Path(base) / 'ops'


def want_cuda(torch) -> bool:
    if torch.version.cuda is None:
        return False
    return os.environ.get('FORCE_CUDA', '0') == '1' or torch.cuda.is_available()


def build_key(torch, with_cuda: bool) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in CSRC.rglob('*') if p.is_file()):
        h.update(str(path.relative_to(CSRC)).encode())
        h.update(path.read_bytes())
    for item in (BUILD_REVISION, ' '.join(CFLAGS + LDFLAGS + CUDA_FLAGS), torch.__version__,
                 sysconfig.get_config_var('EXT_SUFFIX'), f'cuda={with_cuda}',
                 str(torch.version.cuda)):
        h.update(item.encode())
    return h.hexdigest()[:16]


def check_loadable(path: Path) -> None:
    """Import the built module from its file to catch ABI/link errors early."""
    spec = importlib.util.spec_from_file_location('_ext', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name in ('knn_forward', 'knn_gather_dot_forward', 'knn_gather_wsum_forward',
                 'ms_deform_attn_forward'):
        if not hasattr(module, name):
            raise RuntimeError(f'{path} lacks {name}')


def compile_extension(torch, with_cuda: bool, out_file: Path) -> None:
    from torch.utils.cpp_extension import load

    os.environ.setdefault('MAX_JOBS', '2')
    sources = [str(CSRC / s) for s in CPU_SOURCES]
    cflags = list(CFLAGS)
    cuda_flags = list(CUDA_FLAGS)
    if with_cuda:
        sources += [str(CSRC / s) for s in CUDA_SOURCES]
        cflags.append('-DWITH_CUDA')
        cuda_flags.append('-DWITH_CUDA')
    with tempfile.TemporaryDirectory(prefix='odin_ops_build_') as tmp:
        load(name='_ext', sources=sources, extra_cflags=cflags, extra_cuda_cflags=cuda_flags,
             extra_ldflags=LDFLAGS, extra_include_paths=[str(CSRC / 'common')],
             build_directory=tmp, with_cuda=with_cuda, verbose=False)
        built = Path(tmp) / '_ext.so'
        if not built.exists():
            raise RuntimeError(f'the build finished but {built} does not exist')
        shutil.copy2(built, out_file)


def build(force: bool = False) -> Optional[Path]:
    """Build (or reuse from the cache) the extension and install it next to the ops.

    Also used by ``setup.py``'s ``build_ext`` (``pip install``/``pip wheel``).

    Args:
        force: rebuild even if a cached build exists.

    Returns:
        The installed ``projects/odin/ops/_ext<EXT_SUFFIX>`` path, or None when the build failed
        (the reason is logged).
    """
    try:
        import torch
    except ImportError:
        log('ERROR: torch is not importable with this interpreter; cannot build the ODIN ops')
        return None
    with_cuda = want_cuda(torch)
    name = '_ext' + sysconfig.get_config_var('EXT_SUFFIX')
    target = OPS_DIR / name
    cache_dir = cache_root() / build_key(torch, with_cuda)
    cached = cache_dir / name
    try:
        if cached.exists() and not force:
            log(f'reusing cached build {cached}')
        else:
            log(f'compiling the ODIN ops ({"CPU + CUDA" if with_cuda else "CPU"} kernels, '
                f'torch {torch.__version__}) ...')
            t0 = time.time()
            cache_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix='.build_', suffix='.so', dir=cache_dir)
            os.close(fd)
            try:
                compile_extension(torch, with_cuda, Path(tmp_name))
                os.replace(tmp_name, cached)  # atomic publish: never reuse a half-written .so
            finally:
                if os.path.exists(tmp_name):
                    os.unlink(tmp_name)
            log(f'compiled in {time.time() - t0:.1f} s -> cached at {cached}')
        for stale in OPS_DIR.glob('_ext*.so'):
            if stale.name != name:
                stale.unlink()
        tmp_target = target.with_suffix('.so.tmp')
        shutil.copy2(cached, tmp_target)
        os.replace(tmp_target, target)
        check_loadable(target)
    except Exception as exc:  # report every failure the same way
        log(f'ERROR: building the ODIN ops failed: {type(exc).__name__}: {exc}')
        log('The ops still work through their pure-PyTorch twins. Fix the toolchain (g++ with '
            'OpenMP, ninja, and nvcc for CUDA builds) or set ODIN_SKIP_OPS_BUILD=1 to skip.')
        return None
    log(f'installed {target.relative_to(ROOT)}')
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--force', action='store_true',
                        help='rebuild even if a cached build exists')
    args = parser.parse_args()
    if os.environ.get('ODIN_SKIP_OPS_BUILD', '0') == '1':
        log('ODIN_SKIP_OPS_BUILD=1: skipping the build (the pure-PyTorch twins will be used)')
        return 0
    return 0 if build(args.force) is not None else 1


if __name__ == '__main__':
    sys.exit(main())
