"""The recording readers and the demo moved out of ``projects.odin.apis``; the old import paths
still work, are the new objects themselves and warn once each."""
import ast
import os
import subprocess
import sys

from odin_testing import REPO_ROOT

SCRIPT = r'''
import sys, warnings
warnings.simplefilter('always')
import projects.odin  # noqa: F401
loaded = sorted(m for m in sys.modules if m.startswith('projects.odin.apis'))
print('APIS_AFTER_PACKAGE', loaded)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    import projects.odin.apis.recordings.base as old_base
    import projects.odin.apis.recordings as old_recordings
    from projects.odin.apis.rgbd_folder import load_rgbd_folder as old_load
    from projects.odin.apis.rgbd_folder import LAYOUTS as old_layouts
    from projects.odin.apis import load_rgbd_folder as old_load2, RGBDSequence as old_seq
    from projects.odin.apis import run_recording_demo as old_run
    from projects.odin.apis.demo import DEFAULT_VIEW_CHUNK
    from projects.odin.apis.memory import MEMORY_COSTS as old_costs
    from projects.odin.apis.progress import ViewProgress as old_progress
    from projects.odin.apis.synthetic_demo import run_demo as old_run_demo
    from projects.odin.apis.render import render_demo_figure as old_figure, render_points
    import projects.odin.apis.memory  # a second import: no second warning
    from projects.odin.apis import load_rgbd_folder as again  # noqa: F401
from projects.odin.datasets import recordings
from projects.odin.datasets.recordings import base
from projects.odin import demo, visualization
from projects.odin.demo import figure, memory, progress, synthetic_demo
assert old_base is base and old_recordings is recordings
assert old_load is old_load2 is recordings.load_rgbd_folder and old_seq is recordings.RGBDSequence
assert old_layouts == recordings.LAYOUTS and len(recordings.LAYOUTS) == 7
assert old_run is demo.run_recording_demo and DEFAULT_VIEW_CHUNK == demo.DEFAULT_VIEW_CHUNK
assert old_costs is memory.MEMORY_COSTS and old_progress is progress.ViewProgress
assert old_run_demo is synthetic_demo.run_demo and old_figure is figure.render_demo_figure
assert render_points is visualization.render_points
for w in caught:
    print('WARN', w.category.__name__, w.filename == __file__, str(w.message))
'''


def test_old_paths_are_aliases_that_warn_once(tmp_path):
    script = tmp_path / 'old_paths.py'
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, str(script)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    # registering the package does not load the inference API (nor the demo through it)
    assert "APIS_AFTER_PACKAGE []" in lines
    warned = [ln for ln in lines if ln.startswith('WARN ')]
    olds = ['projects.odin.apis.recordings', 'projects.odin.apis.rgbd_folder',
            'projects.odin.apis.load_rgbd_folder', 'projects.odin.apis.RGBDSequence',
            'projects.odin.apis.run_recording_demo', 'projects.odin.apis.demo',
            'projects.odin.apis.memory', 'projects.odin.apis.progress',
            'projects.odin.apis.synthetic_demo', 'projects.odin.apis.render']
    assert len(warned) == len(olds), warned
    for old in olds:
        (hit, ) = [ln for ln in warned if f' {old} is deprecated' in ln]
        # a DeprecationWarning attributed to the importing script, naming the new place
        assert hit.startswith('WARN DeprecationWarning True ') and ': use projects.odin.' in hit


def test_visualization_hook_does_not_import_the_api():
    """engine/visualization.py uses the neutral visualisation and recording modules."""
    path = os.path.join(REPO_ROOT, 'projects', 'odin', 'engine', 'visualization.py')
    with open(path) as f:
        tree = ast.parse(f.read())
    modules = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    modules += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert modules and not [m for m in modules if m and '.apis' in m], modules
