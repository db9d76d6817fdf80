#!/usr/bin/env bash
# One-command set-up of the ODIN for MMDetection3D environment.
#
# Creates (or reuses) a virtual environment in a cache OUTSIDE the checkout, keyed by a hash of the
# requirement files and of this script, builds mmcv 2.1.0 with its compiled ops once into a wheel
# cache keyed by mmcv + torch + Python version, installs the stack, builds the project's own ops
# and links the environment to ./.venv.  A second run with a warm cache builds nothing.
#
# Environment variables:
#   ODIN_CACHE_DIR  cache root (default: ${XDG_CACHE_HOME:-$HOME/.cache}/odin-mmdet3d)
#   PYTHON          interpreter used to create the venv (default: python3)
#   FORCE_CUDA=1    build mmcv (and our ops) with CUDA kernels; needs nvcc and a CUDA torch build,
#                   which CUDA users install into the venv themselves (see README).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
CACHE=${ODIN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/odin-mmdet3d}
PY=${PYTHON:-python3}
PYTAG=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
# Bump ENV_REVISION when the install steps below change in a way that needs a new environment.
ENV_REVISION=1
REQ_HASH=$( (echo "$ENV_REVISION"; cat requirements.txt requirements/*.txt) | sha256sum | cut -c1-12)
VENV="$CACHE/venvs/$PYTAG-$REQ_HASH"
log() { printf '[setup_env] %s\n' "$*"; }

mkdir -p "$CACHE/venvs" "$CACHE/wheels"

if [ ! -f "$VENV/.complete" ]; then
  log "creating virtual environment $VENV"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
  "${PIP[@]}" --upgrade pip
  # torch first: with 2.13.0 present nothing else may pull another (CUDA) build.
  "${PIP[@]}" "torch==2.13.0" "numpy>=2,<3"
  "${PIP[@]}" -r requirements/build.txt

  TORCH_TAG=$("$VENV/bin/python" -c 'import torch; print(torch.__version__.replace("+", "_"))')
  WHEEL_DIR="$CACHE/wheels/mmcv-2.1.0-torch$TORCH_TAG-$PYTAG${FORCE_CUDA:+-cuda}"
  if ! ls "$WHEEL_DIR"/mmcv-2.1.0-*.whl >/dev/null 2>&1; then
    log "building mmcv 2.1.0 with compiled ops into $WHEEL_DIR (once; ~7 min on 2 cores)"
    TMP_WHEEL=$(mktemp -d "$CACHE/wheels/.build.XXXXXX")
    F="-DNDEBUG -g0 -fwrapv -O3 -Wall"
    CFLAGS="$F" CXXFLAGS="$F" MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-2} \
      "$VENV/bin/python" -m pip wheel --disable-pip-version-check -q --no-build-isolation \
      --no-deps --no-binary mmcv "mmcv==2.1.0" -w "$TMP_WHEEL"
    rm -rf "$WHEEL_DIR"
    mv "$TMP_WHEEL" "$WHEEL_DIR"   # atomic publish: a half-built wheel is never picked up
  else
    log "reusing cached mmcv wheel from $WHEEL_DIR"
  fi
  "${PIP[@]}" --no-deps "$WHEEL_DIR"/mmcv-2.1.0-*.whl
  # mmcv's own runtime requirements (installed without letting pip touch torch).
  "${PIP[@]}" addict "mmengine==0.10.7" pyyaml yapf
  "${PIP[@]}" -r requirements/runtime.txt -r requirements/tests.txt
  "${PIP[@]}" --no-deps -r requirements/nodeps.txt
  "$VENV/bin/python" -c 'import torch, mmcv.ops, mmdet.models, mmdet3d.models' \
    || { log "import check of the installed stack failed"; exit 1; }
  touch "$VENV/.complete"
else
  log "reusing virtual environment $VENV"
fi

ln -sfn "$VENV" "$ROOT/.venv"
# Make `import projects.odin` work from anywhere in a checkout, like an editable install (`projects`
# stays a namespace package as in mmdet3d). The venv is shared by every checkout with the same
# requirements, so the path hook puts the checkout that contains the working directory on sys.path
# and falls back to the checkout that ran this script last.
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
cat > "$SITE/_odin_mmdet3d_path.py" <<PYEOF
"""Put the ODIN checkout on sys.path (written by tools/setup_env.sh)."""
import os
import sys

FALLBACK = $(printf '%q' "$ROOT" | sed "s/.*/'&'/")


def _find_root(start):
    path = os.path.abspath(start)
    while True:
        if os.path.isfile(os.path.join(path, 'projects', 'odin', '__init__.py')):
            return path
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent


try:
    _root = _find_root(os.getcwd()) or FALLBACK
except OSError:  # the working directory was removed
    _root = FALLBACK
if _root not in sys.path:
    sys.path.append(_root)
PYEOF
echo "import _odin_mmdet3d_path" > "$SITE/odin_mmdet3d.pth"

# Our compiled ops (C++ CPU kernels, + CUDA when FORCE_CUDA=1 or torch sees a GPU).
if [ -f tools/build_ops.py ]; then
  "$VENV/bin/python" tools/build_ops.py
fi
log "environment ready: $ROOT/.venv"
