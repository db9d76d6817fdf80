"""Shared fixtures of the data tests: one tiny synthetic world and its conversion (session)."""
import pytest

from projects.odin.datasets.converters.scannet import convert_scannet
from projects.odin.datasets.synthetic_world import generate_world


@pytest.fixture(scope='session')
def synthetic_raw(tmp_path_factory):
    """Two tiny rooms in ScanNet's raw layout; one -inf pose per scene."""
    root = tmp_path_factory.mktemp('synthetic_raw')
    summary = generate_world(root, num_scenes=2, seed=3, preset='tiny', num_invalid_poses=1)
    return root, summary


@pytest.fixture(scope='session')
def converted(synthetic_raw, tmp_path_factory):
    """The synthetic world converted with every frame kept and inpainted depth."""
    root, _ = synthetic_raw
    out = tmp_path_factory.mktemp('converted')
    summary = convert_scannet(str(root), str(out), frame_skip=1, inpaint=True, progress=False)
    return out, summary
