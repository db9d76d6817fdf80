"""tools/analysis_tools/benchmark_streaming.py on tiny inputs: the quality run scores a stream
and the one-window reference with the ScanNet metric and tracks ids; the long run measures each
frame count in its own process."""
import json

import numpy as np
import pytest
import torch

from odin_testing import DEMO_CONFIG, load_script

pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def bench():
    return load_script('tools/analysis_tools/benchmark_streaming.py')


def test_quality_smoke(tmp_path, bench):
    from projects.odin.apis.inference import init_odin_model
    from projects.odin.apis.synthetic_demo import make_synthetic_dataset
    from projects.odin.class_names import SCANNET_CLASSES
    data = make_synthetic_dataset(str(tmp_path / 'data'), num_scenes=2, num_val=1, seed=3,
                                  preset='tiny')
    torch.manual_seed(0)
    model = init_odin_model(DEMO_CONFIG, None)
    ckpt = tmp_path / 'random.pth'
    torch.save(dict(state_dict=model.state_dict(),
                    meta=dict(dataset_meta=dict(classes=tuple(SCANNET_CLASSES)))), ckpt)
    out = tmp_path / 'quality.json'
    assert bench.main(['quality', '--data', data['converted'], '--checkpoint', str(ckpt),
                       '--work-dir', str(tmp_path / 'work'), '--update-every', '2',
                       '--window', '2', '--keyframes', '1', '--score-thr', '0',
                       '--min-points', '1', '--min-region-size', '10', '--out', str(out)]) == 0
    doc = json.loads(out.read_text())
    assert len(doc['scenes']) == 1
    scene = doc['scenes'][0]
    assert scene['offline']['updates'] == 1 and scene['stream']['updates'] >= 2
    for run in ('stream', 'offline'):
        assert 0 <= doc[run]['AP50'] <= 1 and 0 <= doc[run]['mIoU'] <= 1
    stab = doc['id_stability']
    assert set(stab) == {'detected', 'stable', 'fraction'}
    assert 0 <= stab['stable'] <= stab['detected']


def test_id_tracker_counts_changes_of_id(bench):
    class Map:
        voxel_size = 0.1

        def __init__(self, ids):
            self.instance = np.asarray(ids)

        def centers(self):
            return np.array([[0.05, 0.05, 0.05], [1.05, 0.05, 0.05]], np.float32)

        def __len__(self):
            return 2

    class Stream:
        def __init__(self, ids):
            self.map = Map(ids)

    xyz = np.array([[0.05, 0.05, 0.05], [1.05, 0.05, 0.05]])
    tracker = bench.IdTracker(xyz, np.array([0, 1]), [0, 1])
    for ids in ([5, -1], [5, 7], [5, 8], [-1, 8]):
        tracker(Stream(ids))
    assert tracker.history == {0: [5, 5, 5, -1], 1: [-1, 7, 8, 8]}
    assert tracker.stability() == dict(objects=2, detected=2, stable=1, fraction=0.5)


def test_long_smoke(tmp_path, bench):
    out = tmp_path / 'long.json'
    assert bench.main(['long', '--frames', '6', '12', '--hw', '24', '32', '--image-size', '24',
                       '32', '--update-every', '3', '--window', '3', '--keyframes', '2',
                       '--threads', '1', '--work-dir', str(tmp_path), '--out', str(out)]) == 0
    doc = json.loads(out.read_text())
    rows = doc['rows']
    assert [r['frames'] for r in rows] == [6, 12] and [r['updates'] for r in rows] == [2, 4]
    for r in rows:
        assert r['peak_rss_gb'] > 0.1 and r['latency_median_s'] > 0 and r['map_voxels'] > 0
        # the OS's figure for the child and the child's own agree
        assert r['peak_rss_gb'] == pytest.approx(r['peak_rss_gb_self'], rel=0.05)
    assert doc['peak_ratio'] == pytest.approx(rows[1]['peak_rss_gb'] / rows[0]['peak_rss_gb'])


def _speed_tiny(tmp_path, device):
    return ['speed', '--config', DEMO_CONFIG, '--device', device, '--frames', '7', '--hw', '24',
            '32', '--update-every', '3', '--window', '3', '--keyframes', '2', '--threads', '1',
            '--work-dir', str(tmp_path), '--json', str(tmp_path / f'speed_{device}.json')]


def _check_speed(doc, device):
    assert doc['device'] == device and doc['frames'] == 7
    # updates after frames 3 and 6, then the flush of frame 7
    assert doc['updates'] == 3 and len(doc['latency_s']) == 3
    assert doc['params']['image_size'] == [24, 32] and doc['views_max'] == 5
    assert doc['params']['hold_res2'] is True  # the StreamingConfig default
    assert doc['fps'] > 0 and doc['fps_sustained'] > 0 and doc['wall_s'] > 0
    # the sustained rate counts the 4 frames after the first update over the time after it
    assert doc['wall_s'] > sum(doc['latency_s'][1:])
    assert doc['latency_median_s'] <= doc['latency_max_s']
    assert doc['model_median_s'] < doc['latency_max_s'] + 1e-9
    assert doc['map_voxels'] > 0 and doc['peak_rss_gb'] > 0.1
    assert 0 < doc['cpu_s_per_frame_sustained'] * 4 <= doc['cpu_s']
    assert doc['fps_cpu_bound'] == pytest.approx(doc['threads'] / doc['cpu_s_per_frame_sustained'])


def test_speed_smoke_cpu(tmp_path, bench):
    assert bench.main(_speed_tiny(tmp_path, 'cpu')) == 0
    doc = json.loads((tmp_path / 'speed_cpu.json').read_text())
    _check_speed(doc, 'cpu')
    assert doc['peak_cuda_gb'] is None and doc['device_name'] == 'cpu'


def test_speed_profile_lists_where_updates_spend_time(tmp_path, bench):
    assert bench.main(_speed_tiny(tmp_path, 'cpu') + ['--profile', '200']) == 0
    rows = json.loads((tmp_path / 'speed_cpu.json').read_text())['profile']
    assert 0 < len(rows) <= 200
    assert all(r['function'].startswith('projects/odin/') for r in rows)
    cum = [r['cumulative_s'] for r in rows]
    assert cum == sorted(cum, reverse=True)
    update = [r for r in rows if r['function'].endswith('(update)')
              and 'apis/streaming.py' in r['function']]
    assert len(update) == 1 and update[0]['calls'] == 3
    # the model's predict is inside the updates
    predict = [r for r in rows if r['function'].startswith('projects/odin/models/odin.py:')
               and r['function'].endswith('(predict)')]
    assert predict and predict[0]['cumulative_s'] <= update[0]['cumulative_s'] + 1e-6


def test_speed_defaults_are_the_issue_setting(bench):
    args = bench.parse_args(['speed'])
    assert args.config.endswith('configs/odin/scannet_r50.py')
    assert (args.frames, args.hw, args.image_size) == ([300], [240, 320], [240, 320])
    assert (args.update_every, args.window, args.keyframes) == (10, 20, 10)
    assert args.device == 'cpu' and args.out is None
    # the other modes keep their defaults
    args = bench.parse_args(['long'])
    assert args.config.endswith('synthetic_r18_demo.py') and args.frames == [200, 1000]
    assert (args.update_every, args.window, args.keyframes) == (3, 6, 4)


def test_speed_rejects_bad_device(bench, capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(['speed', '--device', 'tpu'])
    assert 'cpu or cuda' in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            bench.parse_args(['speed', '--device', 'cuda'])
        assert 'CUDA is not available' in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_speed_smoke_cuda(tmp_path, bench):
    assert bench.main(_speed_tiny(tmp_path, 'cuda')) == 0
    doc = json.loads((tmp_path / 'speed_cuda.json').read_text())
    _check_speed(doc, 'cuda')
    assert doc['peak_cuda_gb'] > 0 and doc['device_name'] != 'cpu'
