"""The demo's path on a generated long recording: bounded (view-chunked) and whole-batch
inference give the same logits and the same instances, in sensor and mesh (ghost) mode."""
import copy

import pytest
import torch
from mmengine.config import Config
from tie_robust import (
    assert_same_argmax,
    assert_same_binary_masks,
    attention_mask_injection,
    match_topk,
    query_of_instances,
    record_postprocess,
)

from odin_testing import DEMO_CONFIG, load_script
from projects.odin.apis.inference import init_odin_model, prepare_recording
from projects.odin.datasets.recordings import load_rgbd_folder

pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def recording(tmp_path_factory):
    bench = load_script('tools/analysis_tools/benchmark_long_scene.py')
    out = tmp_path_factory.mktemp('long') / 'rec'
    return bench.make_long_recording(str(out), num_frames=24, hw=(48, 64), render_scale=1.0)


def _run(model, data, chunk, masks=None):
    """Predictions, last-layer logits and postprocess inputs of one inference setting.

    ``masks``: the decoder's attention masks of another run, used instead of this run's (a mask
    logit at 0 may round to either side of ``sigmoid < 0.5``: the comparison then measures the
    two orchestrations, not the CPU's rounding); without, this run's masks are recorded. Also
    returns how many mask entries differed from the injected ones.
    """
    model.test_cfg.update(view_chunk=chunk, point_chunk=1000)
    with attention_mask_injection(model.decode_head, masks) as (recorded, differing), \
            torch.no_grad(), record_postprocess(model.decode_head) as post:
        d = model.data_preprocessor(copy.deepcopy(data), False)
        pred = model(**d, mode='predict')[0].pred_pts_seg
        cls, mask = model(**d, mode='tensor')
    return pred, (cls[-1], mask[-1]), post[0], recorded, differing[0]


@pytest.mark.parametrize('sensor', [True, False])
def test_long_recording_bounded_equals_whole_batch(recording, sensor):
    """Same logits and instances, with near-ties resolved identically or accepted as ties.

    The attention masks of the whole-batch run are given to the bounded run (by construction the
    same decisions; at most a few entries may be near-ties); the final decisions (``logit > 0``
    masks, top-k order, semantic argmax) may differ only where their values tie within the
    near-tie margin.
    """
    from mmdet3d.structures import Det3DDataSample
    seq = load_rgbd_folder(recording)
    assert len(seq) == 24
    cfg = Config.fromfile(DEMO_CONFIG)
    torch.manual_seed(0)
    model = init_odin_model(cfg, sensor_points=sensor)
    prepared = prepare_recording(seq, image_size=(48, 64), cfg=cfg)
    data = dict(inputs={k: [v] for k, v in prepared.inputs.items()},
                data_samples=[Det3DDataSample(metainfo=prepared.metainfo)])
    b, (c0, m0), (cls_b, pts_b), masks, _ = _run(model, data, 0)
    a, (c1, m1), (cls_a, pts_a), _, differing = _run(model, data, 5, masks)
    assert differing <= 1e-3 * sum(m.numel() for m in masks), differing
    assert float((m1 - m0).abs().max() / m0.abs().max()) <= 1e-5
    torch.testing.assert_close(c1, c0, rtol=1e-5, atol=1e-6)
    # final decisions: equal, except at near-ties of their own thresholds
    perm = match_topk(b.instance_labels, b.instance_scores, a.instance_labels, a.instance_scores,
                      rtol=1e-5)
    ok = perm >= 0
    topk = model.decode_head.test_cfg.get('topk', 100)
    skip = model.decode_head.test_cfg.get('skip_classes', ())
    qa = query_of_instances(cls_a, topk, skip)
    qb = query_of_instances(cls_b, topk, skip)
    assert_same_binary_masks(b.pts_instance_mask[ok], a.pts_instance_mask[perm[ok]],
                             pts_b[qb[ok]], pts_a[qa[perm[ok]]], rtol=1e-4)
    probs = cls_b.softmax(-1)[:, :-1]
    sem_scores = torch.einsum('qc,qn->cn', probs, pts_b.sigmoid())
    assert_same_argmax(b.pts_semantic_mask, a.pts_semantic_mask, sem_scores, rtol=1e-5)
