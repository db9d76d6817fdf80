"""The demo's path on a generated long recording: bounded (view-chunked) and whole-batch
inference give the same logits and the same instances, in sensor and mesh (ghost) mode."""
import copy

import pytest
import torch
from mmengine.config import Config

from odin_testing import DEMO_CONFIG, load_script
from projects.odin.apis.inference import init_odin_model, prepare_recording
from projects.odin.datasets.recordings import load_rgbd_folder

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
    with torch.no_grad():
        for chunk in (0, 5):
            model.test_cfg.update(view_chunk=chunk, point_chunk=1000)
            d = model.data_preprocessor(copy.deepcopy(data), False)
            preds[chunk] = model(**d, mode='predict')[0].pred_pts_seg
            cls, mask = model(**d, mode='tensor')
            logits[chunk] = (cls[-1], mask[-1])
    (c1, m1), (c0, m0) = logits[5], logits[0]
    assert float((m1 - m0).abs().max() / m0.abs().max()) <= 1e-5
    torch.testing.assert_close(c1, c0, rtol=1e-5, atol=1e-6)
    a, b = preds[5], preds[0]
    assert torch.equal(a.instance_labels, b.instance_labels)
    torch.testing.assert_close(a.instance_scores, b.instance_scores, rtol=1e-5, atol=1e-6)
    assert torch.equal(a.pts_instance_mask, b.pts_instance_mask)
    assert torch.equal(a.pts_semantic_mask, b.pts_semantic_mask)
