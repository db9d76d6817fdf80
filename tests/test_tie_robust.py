"""The near-tie machinery of tests/tie_robust.py accepts ties resolved the other way and
rejects every other difference (so the tests that use it still fail on real differences).

After-the-fact comparisons (binary masks, arg-max, top-k) accept a difference only at a near-tie
of its own threshold. :class:`DecisionReplay` replays a decision flipped at a near-tie, as another
CPU's rounding would flip it, and the comparison passes; the same flip without the replay fails
the comparison, and a flipped decision that is NOT a near-tie is reported and fails. The reverse
switch (``ODIN_TEST_TIE_ORDER=reverse``) really resolves k-NN ties the other way, and finds the
near-tie rows of the parity rule exactly.
"""
import copy

import pytest
import torch
from mmengine.config import Config
from tie_robust import (
    DecisionReplay,
    apply_reverse_tie_order,
    assert_same_argmax,
    assert_same_binary_masks,
    attention_mask_logits,
    candidate_near_ties,
    match_topk,
    query_of_instances,
    reverse_knn,
    topk_tie_groups,
)

from odin_testing import REPO_ROOT, create_odin_inputs

CFG = f'{REPO_ROOT}/configs/odin/odin_tiny_test.py'


def test_binary_masks_accept_only_flips_at_near_zero_logits():
    torch.manual_seed(0)
    logits = torch.randn(4, 5000)
    logits[1, 7] = 3e-7  # a near-tie: another CPU may round it below 0
    other = logits.clone()
    other[1, 7] = -2e-7
    n = assert_same_binary_masks(logits > 0, other > 0, logits, other, rtol=1e-5)
    assert n == 1
    # the same flip at a logit far from 0 is a real difference
    far = logits.clone()
    far[2, 3] = -logits[2, 3].abs() - 0.5
    logits[2, 3] = logits[2, 3].abs() + 0.5
    with pytest.raises(AssertionError, match='not near 0'):
        assert_same_binary_masks(logits > 0, far > 0, logits, far, rtol=1e-5)


def test_binary_masks_reject_many_ties():
    logits = torch.zeros(2, 100)
    with pytest.raises(AssertionError, match='too many'):
        assert_same_binary_masks(logits > 0, logits >= 0, logits, logits, rtol=1e-5)


def test_argmax_accepts_only_near_tied_classes():
    scores = torch.tensor([[1.0, 2.0, 3.0], [1.0 + 1e-7, 0.5, 0.1]])
    a = scores.argmax(0)  # column 0: class 1 by 1e-7
    b = a.clone()
    b[0] = 0  # the tie resolved the other way
    assert assert_same_argmax(a, b, scores, rtol=1e-5) == 1
    b[1] = 1  # column 1: class 0 wins by 1.5
    with pytest.raises(AssertionError, match='do not tie'):
        assert_same_argmax(a, b, scores, rtol=1e-5)


def test_topk_matching_reorders_only_inside_tie_groups():
    scores = torch.tensor([0.9, 0.5, 0.5 - 1e-8, 0.3, 0.1])
    labels = torch.tensor([3, 1, 2, 4, 0])
    assert topk_tie_groups(scores, 1e-5) == [[0], [1, 2], [3], [4]]
    # the tie (positions 1, 2) in the other order
    perm = match_topk(labels, scores, labels[[0, 2, 1, 3, 4]], scores[[0, 2, 1, 3, 4]], 1e-5)
    assert perm.tolist() == [0, 2, 1, 3, 4]
    # a swap of instances whose scores do not tie
    with pytest.raises(AssertionError):
        match_topk(labels, scores, labels[[3, 1, 2, 0, 4]], scores[[3, 1, 2, 0, 4]], 1e-5)
    # the last instance ties with the first one below the cut: it may be exchanged
    cut = torch.tensor([0.9, 0.5, 0.2])
    perm = match_topk(torch.tensor([1, 2, 3]), cut, torch.tensor([1, 2, 7]),
                      torch.tensor([0.9, 0.5, 0.2 - 1e-9]), 1e-5)
    assert perm.tolist() == [0, 1, -1]


def test_query_of_instances_follows_the_models_topk_rule():
    from projects.odin.models.postprocess import instance_inference
    torch.manual_seed(0)
    cls = torch.randn(6, 5)
    pts = torch.randn(6, 40)
    masks, _, _ = instance_inference(cls, pts, 10, (1,))
    q = query_of_instances(cls, 10, (1,))
    assert torch.equal(masks, pts[q] > 0)


# ---------------------------------------------------------------------- the decision replay
def _model_and_batch():
    from mmdet3d.registry import MODELS
    from mmengine.registry import init_default_scope

    import projects.odin  # noqa: F401
    init_default_scope('mmdet3d')
    cfg = copy.deepcopy(Config.fromfile(CFG).model)
    cfg['prediction_points'] = dict(type='SensorPoints')
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    model.init_weights()
    model.eval()
    data = create_odin_inputs(num_views=4, img_hw=(32, 32), num_points=150,
                              num_superpoints=None)
    return model, model.data_preprocessor(data, False)


def _logits(model, d):
    """Class and mask logits of the last decoder prediction."""
    with torch.no_grad():
        x = model.extract_feat(d['inputs'], d['data_samples'])
        cls, mask = model.decode_head(x, d['data_samples'])
    return cls[-1], mask[-1]


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


def _first_mask_logits(model, d):
    """The voxel logits behind the first attention mask of a forward pass, in its layout."""
    seen = []
    handle = model.decode_head.attn_mask_3d.register_forward_hook(
        lambda m, args, out: seen.append(attention_mask_logits(args)) if not seen else None)
    try:
        _logits(model, d)
    finally:
        handle.remove()
    return seen[0]


def _flip_first_call(module, entry):
    """Forward hook flipping one decision of the module's first call, as another CPU's rounding
    would; returns the handle."""
    calls = []

    def hook(mod, args, out):
        calls.append(1)
        if len(calls) > 1:
            return out
        out = out.clone()
        out[entry] = ~out[entry]
        return out
    return module.register_forward_hook(hook)


@pytest.mark.usefixtures('one_thread')
def test_a_flipped_attention_mask_near_tie_is_replayed_and_a_real_flip_is_not():
    model, d = _model_and_batch()
    mask_module = model.decode_head.attn_mask_3d
    logits = _first_mask_logits(model, d)
    valid = torch.isfinite(logits)
    # a tie margin by construction: shift query q so that its logit at voxel v is 0 (within
    # float32 rounding) in every decoder level, in both runs
    flat = torch.where(valid, logits.abs(), torch.inf).flatten()
    b, q, v = torch.unravel_index(flat.argsort()[flat.numel() // 4], logits.shape)
    shift = float(logits[b, q, v])

    def pre(module, args):
        src = args[0].clone()
        src[:, q] -= shift
        return (src, *args[1:])

    pre_handle = mask_module.register_forward_pre_hook(pre)
    try:
        near = _first_mask_logits(model, d)
        scale = float(near[torch.isfinite(near)].abs().max())
        assert abs(float(near[b, q, v])) <= 1e-6 * scale  # the constructed near-tie
        cls_a, mask_a = _logits(model, d)

        # without the replay, the flip at the near-tie moves the logits beyond the bound
        flip = _flip_first_call(mask_module, (b, q, v))
        cls_b, mask_b = _logits(model, d)
        flip.remove()
        assert _rel(mask_b, mask_a) > 1e-5

        # with it, the flip is replayed (one override) and the runs agree exactly
        replay = DecisionReplay(model)
        with replay.record():
            _logits(model, d)
        flip = _flip_first_call(mask_module, (b, q, v))
        with replay.replay():
            cls_b, mask_b = _logits(model, d)
        flip.remove()
        assert replay.overrides['attention_mask'] == 1
        replay.check(max_overrides=1)
        assert torch.equal(mask_b, mask_a) and torch.equal(cls_b, cls_a)

        # a flip where the logit is far from 0 is a real difference: reported, not replayed
        far = torch.unravel_index(torch.where(valid, logits.abs(), -1.0).flatten().argmax(),
                                  logits.shape)
        flip = _flip_first_call(mask_module, far)
        with replay.replay():
            _, mask_c = _logits(model, d)
        flip.remove()
        assert replay.unexplained['attention_mask'] == 1
        with pytest.raises(AssertionError, match='beyond near-ties'):
            replay.check()
        assert _rel(mask_c, mask_a) > 1e-5
    finally:
        pre_handle.remove()


def _tied_points():
    """8 support points at exactly equal distance 1 from the origin query: k=3 is a tie."""
    support = torch.tensor([[1., 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1],
                            [2, 0, 0], [0, 2, 0]])
    query = torch.zeros(1, 3)
    return query, support, torch.tensor([1]), torch.tensor([8])


def test_reverse_knn_picks_the_other_resolution_and_the_replay_restores_ours():
    from projects.odin.models import neighbors
    from projects.odin.ops import knn as ops_knn
    query, support, qo, so = _tied_points()
    ours, _ = ops_knn(query, support, 3, qo, so)
    rev, rev_dist = reverse_knn(ops_knn)(query, support, 3, qo, so)
    assert sorted(ours[0].tolist()) == [0, 1, 2]  # ties ordered by support index
    assert sorted(rev[0].tolist()) == [3, 4, 5]
    torch.testing.assert_close(rev_dist, torch.ones(1, 3))
    model, _ = _model_and_batch()
    replay = DecisionReplay(model)
    with replay.record():
        recorded, _ = neighbors.knn(query, support, 3, qo, so)
    with pytest.MonkeyPatch.context() as mp:  # run B resolves the tie the other way
        mp.setattr(neighbors, 'knn', reverse_knn(neighbors.knn))
        with replay.replay():
            replayed, _ = neighbors.knn(query, support, 3, qo, so)
    assert torch.equal(replayed, recorded)
    assert replay.overrides['knn'] in (0, 1)  # 0 when both runs already resolve it alike
    replay.check(max_overrides=1)


def test_reverse_switch_reaches_the_model_entry_points(monkeypatch):
    from projects.odin.models import neighbors
    from projects.odin.models.odin_head import AttentionMask3D, ODINHead
    from projects.odin.ops import knn as ops_knn
    query, support, qo, so = _tied_points()
    before = (neighbors.knn, AttentionMask3D.forward, ODINHead.postprocess_3d,
              ODINHead.predict_by_feat_3d)
    apply_reverse_tie_order(monkeypatch)
    after = (neighbors.knn, AttentionMask3D.forward, ODINHead.postprocess_3d,
             ODINHead.predict_by_feat_3d)
    assert all(a is not b for a, b in zip(after, before))
    idx, _ = neighbors.knn(query, support, 3, qo, so)
    ours, _ = ops_knn(query, support, 3, qo, so)
    assert set(idx[0].tolist()).isdisjoint(ours[0].tolist())


def test_reverse_switch_flips_instance_masks_of_the_models_predictions_only(monkeypatch,
                                                                            tie_order):
    """A near-0 instance-mask logit lands on the other side of 0 in the model's prediction
    (``predict_by_feat_3d``); logits given to ``postprocess_3d`` directly (data, such as the
    official goldens') keep their exact decisions."""
    from types import SimpleNamespace
    model, _ = _model_and_batch()
    head = model.decode_head
    g = torch.Generator().manual_seed(0)
    cls = torch.randn(1, head.num_queries, head.num_classes + 1, generator=g)
    logits = torch.randn(1, head.num_queries, 300, generator=g)
    logits[0, :, 0] = 1e-7    # a near-0 logit in every query (scale ~4)

    points = SimpleNamespace(lift_logits=lambda b, mask_logits: mask_logits)  # points = voxels
    if tie_order != 'reverse':  # else already applied (tests/conftest.py); twice flips back
        apply_reverse_tie_order(monkeypatch)
    direct = head.postprocess_3d(cls[0], logits[0])
    predicted = head.predict_by_feat_3d(cls, logits, [300], points)[0]
    assert bool(direct.pts_instance_mask[:, 0].all())       # 1e-7 > 0: as given
    assert not bool(predicted.pts_instance_mask[:, 0].any())  # flipped: the other side of 0
    assert torch.equal(direct.pts_instance_mask[:, 1:], predicted.pts_instance_mask[:, 1:])


def test_postprocess_replay_takes_near_zero_mask_signs_only():
    model, _ = _model_and_batch()
    head = model.decode_head
    g = torch.Generator().manual_seed(0)
    cls = torch.randn(head.num_queries, head.num_classes + 1, generator=g)
    logits = torch.randn(head.num_queries, 300, generator=g)
    logits[0, 0] = 1e-7   # a near-0 mask logit (scale ~4)
    replay = DecisionReplay(model)
    with replay.record():
        a = head.postprocess_3d(cls, logits)
    near = logits.clone()
    near[0, 0] = -1e-7    # the other side of 0, as another CPU may round it
    with replay.replay():
        b = head.postprocess_3d(cls, near)
    assert replay.overrides['instance_mask'] == 1
    replay.check(max_overrides=1)
    assert torch.equal(a.pts_instance_mask, b.pts_instance_mask)
    assert torch.equal(a.pts_semantic_mask, b.pts_semantic_mask)
    real = logits.clone()
    real[:, 0] = -real[:, 0]  # a real difference: whole columns of logits change sign
    with replay.replay():
        c = head.postprocess_3d(cls, real)
    assert replay.unexplained['postprocess'] == 1
    assert not torch.equal(a.pts_instance_mask, c.pts_instance_mask)


def test_candidate_near_ties_equal_the_parity_rule():
    """The reverse switch's fast tie search finds exactly the rows and groups of
    ``near_ties`` (lattice points: many exact ties; two scenes; a short scene)."""
    from projects.odin.ops import knn as ops_knn
    from projects.odin.parity.knn_ties import near_ties
    g = torch.Generator().manual_seed(0)
    lattice = torch.randint(0, 6, (400, 3), generator=g).float() * 0.04
    jitter = torch.randn(300, 3, generator=g) * 0.01
    support = torch.cat([lattice[:300] + jitter * (torch.arange(300)[:, None] % 2), lattice[300:],
                         torch.rand(5, 3, generator=g)])
    so = torch.tensor([300, 400, 405])
    query = torch.cat([lattice[:50] + 0.02, lattice[300:340], torch.rand(3, 3, generator=g)])
    qo = torch.tensor([50, 90, 93])
    for k in (1, 8):
        fast = candidate_near_ties(ops_knn, query, support, k, qo, so)
        exact = near_ties(query, support, k, qo, so)
        assert len(exact) > 0
        assert [(t.row, t.fixed, t.group, t.slots) for t in fast] == \
            [(t.row, t.fixed, t.group, t.slots) for t in exact]
