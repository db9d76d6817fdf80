"""The model package holds the model: building a model loads no tooling (parity check, checkpoint
conversion, the official-formulation reference block, test helpers); moved and renamed modules,
names and registered types keep their old paths as aliases that warn once."""
import os
import subprocess
import sys

from odin_testing import DEMO_CONFIG, REPO_ROOT

SCRIPT = r'''
import sys, warnings
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmdet3d.registry import MODELS
import projects.odin  # noqa: F401
init_default_scope('mmdet3d')
model = MODELS.build(Config.fromfile(sys.argv[1]).model)
tooling = ('projects.odin.parity', 'projects.odin.conversion', 'projects.odin.testing',
           'odin_testing', 'projects.odin.layers.cross_view_reference')
print('LOADED', sorted(m for m in sys.modules if m.startswith(tooling)))
# the reference block is registered by its own module only, not by a model build
print('NAIVE_REGISTERED', MODELS.get('NaiveCrossViewAttention') is not None)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    from projects.odin.models.parity import run_parity as old_run
    from projects.odin.models import official_converter as old_conv
    from projects.odin.layers.geometry import unproject_depth as old_unproject
    from projects.odin.layers.ms_deform_attn import ODINMultiScaleDeformableAttention as old_da
    from projects.odin.datasets.scannet_mv_dataset import ODINS3DISDataset as old_s3dis
    from projects.odin.models.multiview import MultiViewGeometry as old_geometry
    from projects.odin.models import neighbors as old_neighbors
    from projects.odin.layers.cross_view_reference import NaiveCrossViewAttention as old_naive
    from projects.odin.layers import NaiveCrossViewAttention as old_naive2
    from mmdet3d.registry import TASK_UTILS
    old_mesh = TASK_UTILS.build(dict(type='MeshPoints', voxel_size=0.05, superpoints=False))
    old_sensor = TASK_UTILS.build(dict(type='SensorPoints'))
    TASK_UTILS.build(dict(type='MeshPoints'))  # a second use: no second warning
from projects.odin import conversion, parity
from projects.odin.models import MeshPointsBuilder, SensorPointsBuilder
from projects.odin.parity.cross_view_reference import NaiveCrossViewAttention
from projects.odin.structures import MultiViewGeometry, neighbors
from projects.odin.datasets.multiview_datasets import ODINS3DISDataset
from projects.odin.layers.deform_attn_layer import ODINMultiScaleDeformableAttention
from projects.odin.structures import unproject_depth
assert old_unproject is unproject_depth and old_s3dis is ODINS3DISDataset
assert old_da is ODINMultiScaleDeformableAttention
assert old_run is parity.run_parity
assert old_conv.convert_official_state_dict is conversion.convert_official_state_dict
assert old_geometry is MultiViewGeometry and old_neighbors is neighbors
assert old_naive is old_naive2 is NaiveCrossViewAttention is parity.NaiveCrossViewAttention
assert MODELS.get('NaiveCrossViewAttention') is NaiveCrossViewAttention
assert isinstance(old_mesh, MeshPointsBuilder) and isinstance(old_sensor, SensorPointsBuilder)
assert (old_mesh.voxel_size, old_mesh.superpoints) == (0.05, False)
for w in caught:
    print('WARN', w.category.__name__, str(w.message))
'''


def test_model_build_loads_no_tooling_and_old_paths_warn(tmp_path):
    script = tmp_path / 'build.py'
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, str(script), DEMO_CONFIG], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert 'LOADED []' in lines, lines
    assert 'NAIVE_REGISTERED False' in lines, lines
    warned = sorted(ln for ln in lines if ln.startswith('WARN '))
    olds = {'projects.odin.models.official_converter': 'projects.odin.conversion.official',
            'projects.odin.models.parity': 'projects.odin.parity',
            'projects.odin.layers.geometry': 'projects.odin.structures.geometry',
            'projects.odin.layers.ms_deform_attn': 'projects.odin.layers.deform_attn_layer',
            'projects.odin.datasets.scannet_mv_dataset':
                'projects.odin.datasets.multiview_datasets',
            'projects.odin.models.multiview': 'projects.odin.structures.multiview_geometry',
            'projects.odin.models.neighbors': 'projects.odin.structures.neighbors',
            'projects.odin.layers.cross_view_reference':
                'projects.odin.parity.cross_view_reference',
            'projects.odin.layers.NaiveCrossViewAttention':
                'projects.odin.parity.cross_view_reference.NaiveCrossViewAttention',
            "prediction_points=dict(type='MeshPoints')": "dict(type='MeshPointsBuilder')",
            "prediction_points=dict(type='SensorPoints')": "dict(type='SensorPointsBuilder')"}
    assert len(warned) == len(olds), warned
    for old, new in olds.items():
        (hit, ) = [w for w in warned if f' {old} is deprecated' in w]
        assert hit.endswith(f'use {new}'), hit
    assert all(w.startswith('WARN DeprecationWarning ') for w in warned)


def test_no_test_helpers_in_the_library():
    assert not os.path.exists(os.path.join(REPO_ROOT, 'projects', 'odin', 'testing.py'))
    assert not os.path.exists(os.path.join(REPO_ROOT, 'projects', 'odin', 'models',
                                           'model_cfgs.py'))
