"""Streaming ODIN (projects/odin/apis/streaming.py): the same result as offline predict when one
window holds every frame, bounded state, matching / voting / retirement rules, frame sources and
the demo's ``--stream`` mode."""
import json
import os
import shutil

import numpy as np
import pytest
import torch
from mmengine.config import Config
from plyfile import PlyData
from rgbd_makers import make_scannet
from test_odin_demo_cli import CLASSES, tiny_checkpoint  # noqa: F401  (fixture)

from odin_testing import DEMO_CONFIG, load_script
from projects.odin.apis.export import flatten_instances
from projects.odin.apis.inference import (
    inference_recording,
    init_odin_model,
    prepare_recording,
    select_instances,
)
from projects.odin.apis.rgbd_folder import RGBDFolderError, load_rgbd_folder
from projects.odin.apis.stream_sources import follow_folder, realsense_frames, recording_frames
from projects.odin.apis.streaming import (
    Frame,
    StreamError,
    StreamingConfig,
    StreamingODIN,
    VoxelInstanceMap,
    WindowResult,
    check_frame,
    voxel_keys,
)

pytestmark = pytest.mark.usefixtures('one_thread')
HW = (48, 64)


@pytest.fixture(scope='module')
def recording(tmp_path_factory):
    bench = load_script('tools/analysis_tools/benchmark_long_scene.py')
    out = tmp_path_factory.mktemp('stream') / 'rec'
    return bench.make_long_recording(str(out), num_frames=12, hw=HW, render_scale=1.0)


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    return init_odin_model(Config.fromfile(DEMO_CONFIG), sensor_points=True)


def _voxel_sets(xyz, ids, num, voxel):
    keys = voxel_keys(xyz, voxel)
    return [set(keys[ids == j].tolist()) for j in range(num)]


def test_one_window_over_all_frames_equals_offline_predict(recording, model):
    """One update over every frame: the window's sample, instances and the map are offline's."""
    n = 12
    stream = StreamingODIN(model, StreamingConfig(
        update_every=n, window=n, keyframes=0, voxel_size=0.02, image_size=HW, score_thr=0.0,
        min_points=1, none_weight=0.1))
    stats = stream.run(recording_frames(recording))
    assert len(stats) == 1 and stats[0].frames_seen == n and stats[0].views == n
    seq = load_rgbd_folder(recording)
    prepared = prepare_recording(seq, image_size=HW, cfg=model.cfg)
    # offline on the path the stream's updates ran (its view_chunk; the model's own test_cfg
    # is left as it was by the stream)
    saved = model.test_cfg
    model.test_cfg = dict(saved, view_chunk=stream.cfg.view_chunk)
    try:
        pred = inference_recording(model, prepared).pred_pts_seg
    finally:
        model.test_cfg = saved
    win = stream.last_window
    points = prepared.inputs['points'][:, :3].numpy()
    # same frames through the same pipeline: the same fused points, in the same order
    np.testing.assert_allclose(win.points, points, rtol=0, atol=1e-6)
    masks, labels, scores = select_instances(pred, score_thr=0.0, min_points=1)
    ids, labels, scores, _ = flatten_instances(masks, labels, scores, min_points=1)
    assert len(win.labels) == len(labels) > 0
    # same instances up to float rounding: scores agree, labels agree where scores are not tied
    order_o, order_s = np.argsort(-scores, kind='stable'), np.argsort(-win.scores, kind='stable')
    np.testing.assert_allclose(win.scores[order_s], scores[order_o], rtol=1e-4, atol=1e-6)
    gap = np.diff(scores[order_o])
    untied = np.ones(len(scores), bool)
    untied[:-1] &= np.abs(gap) > 1e-4
    untied[1:] &= np.abs(gap) > 1e-4
    np.testing.assert_array_equal(win.labels[order_s][untied], labels[order_o][untied])
    # the map after one update holds exactly the window's instances on the points' voxels
    xyz, _, inst, _, listed = stream.export()
    assert len(listed) == len(labels)
    offline = _voxel_sets(points, ids, len(labels), 0.02)
    streamed = _voxel_sets(xyz, inst, len(listed), 0.02)
    for rec, vox in zip(listed, streamed):
        ious = [len(vox & o) / len(vox | o) for o in offline]
        j = int(np.argmax(ious))
        assert ious[j] >= 0.99 and rec.label == labels[j], (rec, ious[j])
        assert rec.score == pytest.approx(float(scores[j]), rel=1e-4, abs=1e-6)
    # the query embeddings were captured from outside the model, one unit vector per instance
    emb = win.embeddings
    assert emb is not None and emb.shape[0] == len(win.labels)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)


def _orbit_frames(recording, repeats):
    seq = load_rgbd_folder(recording)
    frames = [Frame(*seq.load_frame(i), seq.intrinsics[i], seq.poses[i]) for i in range(len(seq))]
    for r in range(repeats):  # a generator source: dicts, as a user's code would yield them
        for i, f in enumerate(frames):
            yield dict(color=f.color, depth=f.depth, intrinsics=f.intrinsics,
                       cam2world=f.cam2world, frame_id=f'{r}_{i}')


def test_streaming_leaves_the_models_test_cfg_unchanged(recording, model):
    """Updates run with the stream's view_chunk; the model's test_cfg is never modified."""
    before = model.test_cfg
    snapshot = dict(before)
    assert snapshot.get('view_chunk') != 3
    seen = []
    handle = model.register_forward_pre_hook(
        lambda mod, args: seen.append(dict(mod.test_cfg)))
    try:
        stream = StreamingODIN(model, StreamingConfig(
            update_every=3, window=3, keyframes=1, image_size=HW, view_chunk=3))
        assert model.test_cfg is before and model.test_cfg == snapshot
        stream.run(recording_frames(recording, max_frames=6))
        assert len(stream.updates) == 2 and len(seen) == 2
        # during the updates the model saw the override on top of its own keys
        assert all(cfg == dict(snapshot, view_chunk=3, hold_res2_views=4) for cfg in seen)
        assert model.test_cfg is before and model.test_cfg == snapshot
        # also when an update fails
        def boom(mod, args):
            raise RuntimeError('boom')
        failing = model.register_forward_pre_hook(boom)
        try:
            with pytest.raises(RuntimeError, match='boom'):
                stream.run(recording_frames(recording, max_frames=3))
        finally:
            failing.remove()
        assert model.test_cfg is before and model.test_cfg == snapshot
    finally:
        handle.remove()


def test_state_is_bounded_by_window_keyframes_and_surface(recording, model):
    cfg = StreamingConfig(update_every=3, window=4, keyframes=2, voxel_size=0.05,
                          image_size=HW, score_thr=0.0, min_points=5)
    stream = StreamingODIN(model, cfg)
    sizes = []
    for frame in _orbit_frames(recording, 3):
        if stream.push(frame) is not None:
            sizes.append((stream.frames_seen, len(stream.map)))
        assert len(stream.window) <= 4 and len(stream.keyframes) <= 2
    assert stream.frames_seen == 36 and len(stream.updates) == 12
    assert all(u.views <= 6 for u in stream.updates)
    # the second and third orbits scan no new surface: the map stops growing with frames
    after_one = max(v for n, v in sizes if n <= 12)
    assert sizes[-1][1] <= after_one * 1.05
    frame_bytes = sum(f.nbytes for f in stream.window) + sum(f.nbytes for f in stream.keyframes)
    assert frame_bytes <= 6 * (HW[0] * HW[1] * 7 + 4096)
    assert all(set(u.to_dict()) >= {'frames_seen', 'latency_s', 'instances', 'map_voxels',
                                    'peak_rss_gb'} for u in stream.updates)


def test_update_without_confident_instances_maps_surface_only(recording, model):
    stream = StreamingODIN(model, StreamingConfig(update_every=3, window=3, keyframes=0,
                                                  image_size=HW, score_thr=1.01))
    stats = stream.run(_orbit_frames(recording, 1), max_frames=3)
    assert len(stats) == 1 and stats[0].window_instances == 0 and stats[0].instances == 0
    assert len(stream.map) > 0 and (stream.map.instance == -1).all()
    assert stream.export()[4] == []


class _NoModel(torch.nn.Module):
    """Stands in for the model where only the merge is tested."""


def _box(lo, hi, step=0.05):
    g = [np.arange(a, b, step) + step / 2 for a, b in zip(lo, hi)]
    return np.stack(np.meshgrid(*g, indexing='ij'), -1).reshape(-1, 3)


def _window(parts, labels, scores, emb=None):
    points = np.concatenate(parts).astype(np.float32)
    owner = np.concatenate([np.full(len(p), j if j < len(labels) else -1)
                            for j, p in enumerate(parts)])
    return WindowResult([], points, owner, np.asarray(labels), np.asarray(scores, np.float32),
                        np.full(len(labels), -1), emb)


def _merge(stream, window):
    pts = np.concatenate([window.points, np.full((len(window.points), 3), 0.5)], 1)
    out = stream._merge(window, pts)
    stream.updates.append(None)  # the update counter the records use
    return out


def test_matching_keeps_ids_creates_new_ones_and_retires():
    stream = StreamingODIN(_NoModel(), StreamingConfig(
        update_every=1, window=1, voxel_size=0.05, view_chunk=None, retire_after=2,
        min_iou=0.25))
    a, b = _box((0, 0, 0), (0.5, 0.5, 0.5)), _box((1, 0, 0), (1.5, 0.5, 0.5))
    assert _merge(stream, _window([a, b], [1, 2], [0.9, 0.8])) == (0, 2, 0)
    # the next window lists them in the other order and sees only half of b: same ids
    half_b = b[b[:, 1] < 0.25]
    w = _window([half_b, a], [2, 1], [0.7, 0.9])
    assert _merge(stream, w) == (2, 0, 0)
    assert w.global_ids.tolist() == [1, 0]
    assert stream.instances[1].matches == 2 and stream.instances[0].matches == 2
    # one-to-one: two window instances on a, only one keeps its id, the other is new
    left, right = a[a[:, 0] < 0.25], a[a[:, 0] >= 0.25]
    w = _window([left, right], [1, 1], [0.9, 0.6])
    matched, new, _ = _merge(stream, w)
    assert (matched, new) == (1, 1) and sorted(w.global_ids.tolist())[0] == 0
    # a visible instance that is not detected for retire_after updates is retired
    c = _box((3, 0, 0), (3.5, 0.5, 0.5))
    stream2 = StreamingODIN(_NoModel(), StreamingConfig(
        update_every=1, window=1, voxel_size=0.05, view_chunk=None, retire_after=2))
    _merge(stream2, _window([c], [3], [0.9]))
    assert _merge(stream2, _window([c], [], [])) == (0, 0, 0)
    assert 0 in stream2.instances and stream2.instances[0].missed == 1
    assert _merge(stream2, _window([c], [], [])) == (0, 0, 1)
    assert stream2.instances == {} and stream2.retired == [0]


def test_duplicates_seen_as_one_are_merged():
    """Two map instances on one box (two windows each saw a part) become one when a window
    sees the whole box as one instance; not when it still sees two, nor on a glimpse."""
    box = _box((0, 0, 0), (1.0, 0.5, 0.5))
    left, right = box[box[:, 0] < 0.6], box[box[:, 0] >= 0.6]

    def two_parts(**kw):
        stream = StreamingODIN(_NoModel(), StreamingConfig(
            update_every=1, window=1, voxel_size=0.05, view_chunk=None, min_iou=0.25, **kw))
        assert _merge(stream, _window([left, right], [1, 2], [0.9, 0.8])) == (0, 2, 0)
        return stream

    stream = two_parts()
    w = _window([box], [1], [0.7])
    assert _merge(stream, w) == (1, 0, 0)
    assert w.global_ids.tolist() == [0]  # the larger part's id
    assert stream.merged == [(1, 0)] and sorted(stream.instances) == [0]
    rec = stream.instances[0]
    assert rec.matches == 3 and rec.class_scores == pytest.approx({1: 1.6, 2: 0.8})
    keys = voxel_keys(box, 0.05)
    pos = stream.map.lookup(np.unique(keys))
    assert (pos >= 0).all() and (stream.map.instance[pos] == 0).all()
    assert (stream.map.label[pos] == 1).all()
    assert stream.map.instance_sizes() == {0: len(pos)}
    # the window still sees two instances: both are matched, nothing is merged
    stream = two_parts()
    assert _merge(stream, _window([left, right], [1, 2], [0.9, 0.8])) == (2, 0, 0)
    assert stream.merged == [] and sorted(stream.instances) == [0, 1]
    # the window sees the left part and a sliver of the right one: too little of it observed
    stream = two_parts()
    sliver = right[right[:, 0] < 0.7]
    assert _merge(stream, _window([np.concatenate([left, sliver])], [1], [0.7])) == (1, 0, 0)
    assert stream.merged == [] and sorted(stream.instances) == [0, 1]
    # merging off
    stream = two_parts(merge_overlap=0)
    assert _merge(stream, _window([box], [1], [0.7])) == (1, 0, 0)
    assert stream.merged == [] and sorted(stream.instances) == [0, 1]
    with pytest.raises(StreamError, match='merge_overlap'):
        StreamingConfig(merge_overlap=1.5)


def test_voxel_votes_follow_the_weighted_majority():
    m = VoxelInstanceMap(0.1)
    keys = voxel_keys(np.array([[0.05, 0.05, 0.05], [0.15, 0.05, 0.05]]), 0.1)
    rgb = np.zeros((2, 3), np.uint8)
    m.vote(keys, np.array([3, 3]), np.array([0.9, 0.9], np.float32), np.array([1, 1]), rgb)
    m.vote(keys, np.array([4, 3]), np.array([0.5, 0.5], np.float32), np.array([2, 1]), rgb)
    assert m.instance.tolist() == [3, 3] and m.count.tolist() == [2, 2]
    np.testing.assert_allclose(m.score, [0.4, 1.4], rtol=1e-6)
    m.vote(keys, np.array([4, -1]), np.array([0.5, 0.1], np.float32), np.array([2, -1]), rgb)
    assert m.instance.tolist() == [4, 3] and m.label.tolist() == [2, 1]
    np.testing.assert_allclose(m.score, [0.1, 1.3], rtol=1e-6)
    new = voxel_keys(np.array([[-0.05, 0.05, 0.05]]), 0.1)
    m.vote(new, np.array([7]), np.array([0.2], np.float32), np.array([0]), rgb[:1])
    assert len(m) == 3 and (np.diff(m.keys) > 0).all() and m.instance.tolist() == [7, 4, 3]
    with pytest.raises(StreamError, match='beyond the map'):
        voxel_keys(np.array([[1e5, 0, 0]]), 0.02)


def test_bad_config_and_frames_are_refused():
    with pytest.raises(StreamError, match=r'window \(5\) must be >= update_every \(10\)'):
        StreamingConfig(update_every=10, window=5)
    with pytest.raises(StreamError, match='min_iou'):
        StreamingConfig(min_iou=1.5)
    rgb, depth, k = np.zeros((4, 6, 3), np.uint8), np.ones((4, 6), np.float32), np.eye(3)
    assert check_frame(Frame(rgb, depth, k, np.eye(4)), 'f')[1].dtype == np.float32
    assert check_frame(Frame(rgb, depth, k, np.full((4, 4), np.nan)), 'f') is None
    with pytest.raises(StreamError, match='colour is 6x4 but depth is 5x4'):
        check_frame(Frame(rgb, np.ones((4, 5), np.float32), k, np.eye(4)), 'f')
    with pytest.raises(StreamError, match='depth must be float metres, got uint16'):
        check_frame(Frame(rgb, np.ones((4, 6), np.uint16), k, np.eye(4)), 'f')
    with pytest.raises(StreamError, match='not a rigid transform'):
        check_frame(Frame(rgb, depth, k, np.diag([2.0, 1, 1, 1])), 'f')
    with pytest.raises(StreamError, match='invalid intrinsics'):
        check_frame(Frame(rgb, depth, np.zeros((3, 3)), np.eye(4)), 'f')
    stream = StreamingODIN(_NoModel(), StreamingConfig(view_chunk=None))
    with pytest.raises(StreamError, match='a frame dict needs cam2world'):
        stream.push(dict(color=rgb, depth=depth, intrinsics=k))
    assert stream.push((rgb, depth, k, np.full((4, 4), np.inf))) is None
    assert stream.frames_seen == 0 and stream.skipped == ['frame 0: pose is not finite']
    with pytest.raises(StreamError, match='no frame to update on'):
        stream.update()
    assert stream.push((rgb, depth, k, np.eye(4))) is None and stream.frames_seen == 1
    with pytest.raises(StreamError, match="depth is 8x4, the first frame's was 6x4"):
        stream.push((np.zeros((4, 8, 3), np.uint8), np.ones((4, 8), np.float32), k, np.eye(4)))


def test_recording_frames_replay_the_readers_frames(tmp_path):
    folder = make_scannet(tmp_path / 'rec')
    seq = load_rgbd_folder(str(folder))
    frames = list(recording_frames(str(folder)))
    assert [f.frame_id for f in frames] == [str(i) for i in seq.frame_ids]
    for i, f in enumerate(frames):
        rgb, depth = seq.load_frame(i)
        assert np.array_equal(f.color, rgb) and np.array_equal(f.depth, depth)
        assert np.array_equal(f.cam2world, seq.poses[i])
    with pytest.raises(RGBDFolderError, match='does not exist'):
        next(recording_frames(str(tmp_path / 'missing')))


def test_follow_folder_picks_up_frames_as_they_are_written(tmp_path):
    full = make_scannet(tmp_path / 'full', n=5)
    live = tmp_path / 'live'
    for d in ('color', 'depth', 'pose', 'intrinsic'):
        os.makedirs(live / d)
    shutil.copytree(full / 'intrinsic', live / 'intrinsic', dirs_exist_ok=True)
    now = [0.0]
    written = [0]

    def write_next(seconds):  # the capture program writes one frame per poll, pose last
        now[0] += seconds
        i = written[0]
        if i < 5:
            shutil.copy(full / 'color' / f'{i}.jpg', live / 'color')
            shutil.copy(full / 'depth' / f'{i}.png', live / 'depth')
            if i != 2:  # frame 2's pose arrives one poll late (the folder is inconsistent)
                shutil.copy(full / 'pose' / f'{i}.txt', live / 'pose')
            if i == 3:
                shutil.copy(full / 'pose' / '2.txt', live / 'pose')
            written[0] += 1

    ids = [f.frame_id for f in follow_folder(str(live), poll_s=1.0, idle_timeout=3.0,
                                             sleep=write_next, clock=lambda: now[0])]
    assert ids == ['0', '1', '2', '3', '4']
    assert now[0] >= 3.0
    empty = tmp_path / 'never'
    os.makedirs(empty)
    with pytest.raises(RGBDFolderError, match='no new frame for 2 s and the folder is still not'):
        list(follow_folder(str(empty), poll_s=1.0, idle_timeout=2.0,
                           sleep=lambda s: now.__setitem__(0, now[0] + s), clock=lambda: now[0]))


def test_realsense_without_pyrealsense2_says_what_to_install():
    try:
        import pyrealsense2  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match='pip install pyrealsense2'):
            realsense_frames(lambda i, rgb, depth: np.eye(4))
    else:
        pytest.skip('pyrealsense2 is installed: no camera to test against')


def test_demo_stream_mode_writes_updates_and_map(tmp_path, tiny_checkpoint, capsys):  # noqa: F811
    from test_odin_demo_cli import _run
    folder = make_scannet(tmp_path / 'rec', n=6)
    out = tmp_path / 'out'
    rc = _run(folder, tiny_checkpoint, out, '--stream', '--update-every', '2', '--window', '3',
              '--keyframes', '2', '--map-voxel-size', '0.05', '--save-every-update')
    printed = capsys.readouterr().out
    assert rc == 0
    doc = json.loads((out / 'stream.json').read_text())
    assert [u['frames_seen'] for u in doc['updates']] == [2, 4, 6]
    for u in doc['updates']:
        assert u['latency_s'] > 0 and u['peak_rss_gb'] > 0 and u['map_voxels'] > 0
        assert u['instances'] >= 0
    lines = [ln for ln in printed.splitlines() if ln.startswith('update ')]
    assert len(lines) == 3 and '6 frames seen' in lines[-1] and 'peak RSS' in lines[-1]
    assert sorted(os.listdir(out / 'updates')) == ['0001.ply', '0002.ply', '0003.ply']
    vertex = PlyData.read(str(out / 'rec_stream.ply'))['vertex']
    assert len(vertex['x']) == doc['updates'][-1]['map_voxels']
    inst = np.asarray(vertex['instance'])
    records = json.loads((out / 'rec_stream_instances.json').read_text())['instances']
    assert len(records) == len(doc['instances']) == len(np.unique(inst[inst >= 0]))
    for r in records:
        assert r['num_points'] == int((inst == r['id']).sum())
        assert r['class_name'] == CLASSES[r['label']]
    rc = _run(folder, tiny_checkpoint, tmp_path / 'bad', '--stream', '--update-every', '5',
              '--window', '2')
    assert rc == 2
    assert 'error: window (2) must be >= update_every (5)' in capsys.readouterr().err


def test_frame_cache_gives_the_same_stream_and_goes_with_the_frames(recording, model,
                                                                      monkeypatch):
    """cache_frames on and off: every update's window result, its figures and the final map are
    identical; with the cache each frame's fusion part is computed once, and a frame that left
    the window and the keyframes is freed with its cache."""
    import gc
    import weakref

    from projects.odin.datasets.transforms import ODINSensorPoints
    calls = []
    fuse = ODINSensorPoints.fuse_view

    def counting(self, results, i):
        calls.append(results['frame_ids'][i])
        return fuse(self, results, i)
    monkeypatch.setattr(ODINSensorPoints, 'fuse_view', counting)

    def stream_run(cache):
        calls.clear()
        stream = StreamingODIN(model, StreamingConfig(
            update_every=3, window=4, keyframes=2, image_size=HW, score_thr=0.0, min_points=5,
            cache_frames=cache))
        windows, frames = [], {}
        stream.on_update = lambda stats: windows.append(stream.last_window)
        for frame in _orbit_frames(recording, 2):
            stream.push(frame)
            for f in stream.window:
                frames.setdefault(f.index, weakref.ref(f))
        stream.flush()
        return stream, windows, frames, list(calls)

    on, win_on, frames_on, calls_on = stream_run(True)
    off, win_off, _, calls_off = stream_run(False)
    assert len(on.updates) == len(off.updates) == 8
    skip = {'latency_s', 'prepare_s', 'model_s', 'merge_s', 'map_mb', 'peak_rss_gb',
            'peak_cuda_gb'}
    for a, b in zip(on.updates, off.updates):
        assert {k: v for k, v in a.to_dict().items() if k not in skip} == \
            {k: v for k, v in b.to_dict().items() if k not in skip}
    assert sum(len(w.labels) for w in win_on) > 0
    for a, b in zip(win_on, win_off):
        assert a.frame_ids == b.frame_ids
        for name in ('points', 'point_instance', 'labels', 'scores', 'global_ids', 'embeddings'):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    for name in ('keys', 'instance', 'label', 'score', 'count', 'rgb'):
        np.testing.assert_array_equal(getattr(on.map, name), getattr(off.map, name))
    # without the cache every view of every update is fused; with it, each frame once
    assert len(calls_off) == sum(u.views for u in off.updates) > len(calls_on)
    assert sorted(calls_on) == sorted(set(calls_on)) and len(calls_on) == 24
    assert off.cached_frames() == [] and on.cached_frames() == on.held_frames()
    assert on.nbytes > off.nbytes
    # the frames that left are gone, their caches with them; the held ones are alive
    gc.collect()
    held = set(on.held_frames())
    assert len(held) == 6
    assert {i for i, ref in frames_on.items() if ref() is not None} == held
