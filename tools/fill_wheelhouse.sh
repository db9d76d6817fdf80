#!/usr/bin/env bash
# Fill a wheelhouse for an offline GPU machine (run on a machine WITH network).
#
#   bash tools/fill_wheelhouse.sh DIR [--python 3.12] [--platform TAG]... [--full] [--dry-run]
#
# Downloads, for the target Python and platform, the OpenMMLab stack pinned in requirements/ as
# wheels plus mmcv 2.1.0's sdist (built on the GPU machine for its GPU by tools/gpu_check.py).
# torch is never downloaded: the GPU machine's own CUDA build is used.
#
#   default   what a machine that already has the scientific Python stack lacks (the H200
#             image of docs/environment facts: numpy, scipy, opencv, pandas, numba, ... present):
#             every requirements/nodeps.txt pin (--no-deps) and the small packages
#             mmcv/mmengine/mmdet/mmdet3d import (--no-deps)
#   --full    everything tools/setup_env.sh installs (requirements/runtime.txt without torch,
#             build.txt, tests.txt, mmcv's runtime deps), dependencies resolved for the target
#   --dry-run print the pip commands, download nothing
#
# Then carry DIR to the GPU machine and run `make gpu-check WHEELHOUSE=DIR`.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=""
PYVER="3.12"
PLATFORMS=()
FULL=0
DRY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --python) PYVER="$2"; shift 2 ;;
    --platform) PLATFORMS+=("$2"); shift 2 ;;
    --full) FULL=1; shift ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    -*) echo "fill_wheelhouse: unknown option $1" >&2; exit 2 ;;
    *) if [ -n "$DIR" ]; then echo "fill_wheelhouse: one DIR only" >&2; exit 2; fi
       DIR="$1"; shift ;;
  esac
done
if [ -z "$DIR" ]; then
  echo "usage: bash tools/fill_wheelhouse.sh DIR [--python 3.12] [--platform TAG]... [--full] [--dry-run]" >&2
  exit 2
fi
if [ ${#PLATFORMS[@]} -eq 0 ]; then
  # pip matches manylinux tags exactly: offer the common glibc levels
  PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64
             manylinux2014_x86_64 manylinux1_x86_64)
fi
PY=${PIP_PYTHON:-python3}
TARGET=(--python-version "$PYVER" --implementation cp --only-binary=:all:)
for p in "${PLATFORMS[@]}"; do TARGET+=(--platform "$p"); done
DL=("$PY" -m pip download --disable-pip-version-check -d "$DIR")

# requirement lines of a file, without comments, blanks and torch
reqs() { sed -e 's/#.*//' -e 's/[[:space:]]*$//' "$1" | grep -v '^$' | grep -v -E '^torch([=<>!~ ]|$)' || true; }

run() {
  printf '%q ' "$@"; printf '\n'
  if [ "$DRY" -eq 0 ]; then "$@"; fi
}

[ "$DRY" -eq 1 ] || mkdir -p "$DIR"
mapfile -t NODEPS < <(reqs "$ROOT/requirements/nodeps.txt")
# what mmcv 2.1.0, mmengine 0.10.7, mmdet 3.3.0 and mmdet3d 1.4.0 import beyond the H200 image
SMALL=("mmengine==0.10.7" addict yapf platformdirs termcolor plyfile trimesh pycocotools shapely
       terminaltables pyquaternion cachetools "setuptools<81")

run "${DL[@]}" --no-deps "${TARGET[@]}" "${NODEPS[@]}"
if [ "$FULL" -eq 1 ]; then
  mapfile -t RUNTIME < <(reqs "$ROOT/requirements/runtime.txt")
  mapfile -t BUILD < <(reqs "$ROOT/requirements/build.txt")
  mapfile -t TESTS < <(reqs "$ROOT/requirements/tests.txt")
  run "${DL[@]}" "${TARGET[@]}" "${RUNTIME[@]}" "${BUILD[@]}" "${TESTS[@]}" \
    "mmengine==0.10.7" addict pyyaml yapf
else
  run "${DL[@]}" --no-deps "${TARGET[@]}" "${SMALL[@]}"
fi
# mmcv: the source distribution (compiled there for the GPU's architecture)
# (pip prepares an sdist's metadata after saving it, and mmcv's setup.py needs torch and
# pkg_resources for that: the build environment is the one pip runs in, and a failure of that step
# after the archive was saved is not a failure of the download)
run "${DL[@]}" --no-deps --no-binary :all: --no-build-isolation "mmcv==2.1.0" ||
  [ "$DRY" -eq 1 ] || [ -f "$DIR/mmcv-2.1.0.tar.gz" ] ||
  { echo "fill_wheelhouse: mmcv-2.1.0.tar.gz was not downloaded" >&2; exit 1; }
if [ "$DRY" -eq 0 ]; then
  # never carry a torch or CUDA runtime: the GPU machine's own torch build is used
  rm -f "$DIR"/torch-*.whl "$DIR"/nvidia_*.whl "$DIR"/triton-*.whl
  echo "wheelhouse ready: $DIR ($(ls "$DIR" | wc -l) files, $(du -sh "$DIR" | cut -f1))"
fi
