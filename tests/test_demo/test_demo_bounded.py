"""The demo's path on a generated long recording: bounded (view-chunked) and whole-batch
inference give the same logits and the same instances, in sensor and mesh (ghost) mode.

Near-ties (an attention-mask logit within rounding of 0, ...) take the whole-batch run's decision
(tests/tie_robust.py); without that, one flipped attention-mask entry moves the logits by ~3e-4
on some CPUs (docs/model.md "Near-ties in the bounded path")."""
import copy

import pytest
import torch
from mmengine.config import Config
from tie_robust import DecisionReplay

from projects.odin.apis import load_rgbd_folder
from projects.odin.apis.inference import init_odin_model, prepare_recording
from projects.odin.testing import DEMO_CONFIG, load_script

pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def recording(tmp_path_factory):
    bench = load_script('tools/analysis_tools/benchmark_long_scene.py')
    out = tmp_path_factory.mktemp('long') / 'rec'
    return bench.make_long_recording(str(out), num_frames=24, hw=(48, 64), render_scale=1.0)


@pytest.mark.parametrize('sensor', [True, False])
def test_long_recording_bounded_equals_whole_batch(recording, sensor):
    from mmdet3d.structures import Det3DDataSample
    seq = load_rgbd_folder(recording)
    assert len(seq) == 24
    cfg = Config.fromfile(DEMO_CONFIG)
    torch.manual_seed(0)
    model = init_odin_model(cfg, sensor_points=sensor)
    prepared = prepare_recording(seq, image_size=(48, 64), cfg=cfg)
    data = dict(inputs={k: [v] for k, v in prepared.inputs.items()},
                data_samples=[Det3DDataSample(metainfo=prepared.metainfo)])
    preds, logits = {}, {}
    replay = DecisionReplay(model)
    with torch.no_grad():
        for chunk in (0, 5):
            model.test_cfg.update(view_chunk=chunk, point_chunk=1000)
            d = model.data_preprocessor(copy.deepcopy(data), False)
            with replay.replay('predict') if chunk else replay.record('predict'):
                preds[chunk] = model(**d, mode='predict')[0].pred_pts_seg
            with replay.replay('logits') if chunk else replay.record('logits'):
                if chunk:
                    cls, mask, _, _ = model.forward_3d_chunked(d['inputs'], d['data_samples'],
                                                               chunk, 1000)
                else:
                    feats, pts = model.extract_feat_3d(d['inputs'], d['data_samples'])
                    cls, mask, _ = model.decode_head.forward_3d(feats, pts, d['data_samples'])
            logits[chunk] = (cls[-1], mask[-1])
    replay.check()
    (c1, m1), (c0, m0) = logits[5], logits[0]
    assert float((m1 - m0).abs().max() / m0.abs().max()) <= 1e-5
    torch.testing.assert_close(c1, c0, rtol=1e-5, atol=1e-6)
    a, b = preds[5], preds[0]
    assert torch.equal(a.instance_labels, b.instance_labels)
    torch.testing.assert_close(a.instance_scores, b.instance_scores, rtol=1e-5, atol=1e-6)
    assert torch.equal(a.pts_instance_mask, b.pts_instance_mask)
    assert torch.equal(a.pts_semantic_mask, b.pts_semantic_mask)
