"""The demo is library code: synthetic_demo.run_demo and run_recording_demo (what
demo/odin_demo.py calls) write the same files as the command line, without loading the script."""
import filecmp
import json
import os

import pytest
from rgbd_makers import make_scannet
from test_odin_demo_cli import _run, tiny_checkpoint  # noqa: F401  (fixture)

from odin_testing import DEMO_CONFIG
from projects.odin.demo import DemoError, run_recording_demo
from projects.odin.demo.synthetic_demo import run_demo


def test_library_and_cli_write_the_same_files(tmp_path, tiny_checkpoint, capsys):  # noqa: F811
    folder = make_scannet(tmp_path / 'rec')
    assert _run(folder, tiny_checkpoint, tmp_path / 'cli') == 0
    opts = dict(image_size=(24, 32), score_thr=0.0, min_points=1)
    assert run_demo(str(folder), DEMO_CONFIG, tiny_checkpoint, str(tmp_path / 'lib'), **opts) == 0
    lines = []
    res = run_recording_demo(str(folder), DEMO_CONFIG, tiny_checkpoint, str(tmp_path / 'api'),
                             log=lines.append, **opts)
    assert lines[0].startswith('scannet recording: ') and lines[1] == 'input size 24x32'
    assert res.ply_path == str(tmp_path / 'api' / 'rec_instances.ply')
    with open(res.json_path) as f:
        assert len(json.load(f)['instances']) == res.num_instances
    for other in ('lib', 'api'):
        cmp = filecmp.dircmp(tmp_path / 'cli', tmp_path / other)
        assert sorted(cmp.left_list) == sorted(cmp.right_list)
        assert filecmp.cmp(tmp_path / 'cli' / 'rec_instances.ply',
                           tmp_path / other / 'rec_instances.ply', shallow=False)
        views = sorted(os.listdir(tmp_path / 'cli' / 'views'))
        assert views and views == sorted(os.listdir(tmp_path / other / 'views'))


def test_user_errors_raise_demo_error(tmp_path, tiny_checkpoint, capsys):  # noqa: F811
    folder = make_scannet(tmp_path / 'rec')
    with pytest.raises(DemoError, match='checkpoint not found: .*missing.pth'):
        run_recording_demo(str(folder), DEMO_CONFIG, str(tmp_path / 'missing.pth'),
                           str(tmp_path / 'out'), log=lambda s: None)
    assert run_demo(str(tmp_path / 'nothing'), DEMO_CONFIG, tiny_checkpoint,
                    str(tmp_path / 'out')) == 2
    assert capsys.readouterr().err.startswith('error: ')
