"""Hand-computed cases for every rule of the ScanNet instance protocol (docs/evaluation.md)."""
import numpy as np
import pytest

from projects.odin.evaluation.functional import (
    OVERLAPS,
    accumulate_scene_matches,
    compute_ap,
    compute_averages,
    instance_eval_from_matches,
    match_scene,
)

VALID = (3, 4)  # two evaluated classes
NAMES = ('cabinet', 'bed')
O50 = 0  # index of 0.50 in OVERLAPS
O55 = 1
O25 = 9


def scene(n=1000):
    """Empty scene: every vertex unannotated (void)."""
    return np.zeros(n, dtype=np.int64)


def mask(n, *ranges):
    m = np.zeros(n, dtype=bool)
    for a, b in ranges:
        m[a:b] = True
    return m


def evaluate(scenes):
    """scenes: list of (gt_ids, masks (K, N), labels, scores) -> (aps (C, O), averages)."""
    res = [match_scene(g, np.asarray(m).reshape(len(lab), g.size), lab, sc, VALID)
           for g, m, lab, sc in scenes]
    aps = compute_ap(accumulate_scene_matches(res))
    return aps[0], compute_averages(aps, NAMES)


def test_overlaps_are_the_benchmark_ones():
    assert len(OVERLAPS) == 10
    np.testing.assert_allclose(OVERLAPS, [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.25])


def test_iou_must_be_strictly_greater_than_threshold():
    gt = scene()
    gt[0:200] = 3001
    # IoU exactly 0.5 (200 / 400): no match at 0.50, a match at 0.25
    aps, avg = evaluate([(gt, [mask(1000, (0, 400))], [3], [0.9])])
    assert aps[0, O50] == 0.0
    assert aps[0, O25] == 1.0
    assert avg['all_ap'] == 0.0 and avg['all_ap_25%'] == 1.0
    # IoU 200 / 399 > 0.5: a match at 0.50 only (of the nine thresholds 0.50:0.90)
    aps, avg = evaluate([(gt, [mask(1000, (0, 399))], [3], [0.9])])
    assert aps[0, O50] == 1.0 and aps[0, O55] == 0.0
    assert avg['classes']['cabinet']['ap'] == pytest.approx(1 / 9)
    assert np.isnan(avg['classes']['bed']['ap'])  # no GT of class 4 -> NaN, out of the mean
    assert avg['all_ap'] == pytest.approx(1 / 9)


def test_duplicate_match_is_a_false_positive_with_the_lower_score():
    gt = scene()
    gt[0:200] = 3001
    gt[300:500] = 3002
    a, b = mask(1000, (0, 200)), mask(1000, (300, 500))
    # GT A matched twice (0.9 and 0.8), GT B once (0.7): y = (1, .9), (0, .8), (1, .7)
    # sorted: .7/1 .8/0 .9/1 -> P = [2/3, 1/2, 1, 1], R = [1, 1/2, 1/2, 0]
    # step widths [.25, .25, .25, .25] -> AP = (2/3 + 1/2 + 1 + 1) / 4 = 19/24
    aps, _ = evaluate([(gt, [a, a, b], [3, 3, 3], [0.9, 0.8, 0.7])])
    assert aps[0, O50] == pytest.approx(19 / 24)
    # the lower-scored prediction listed FIRST: it takes the GT, the later one is the duplicate,
    # but the GT keeps the higher score and the FP gets the lower one -> same AP
    aps2, _ = evaluate([(gt, [a, a, b], [3, 3, 3], [0.8, 0.9, 0.7])])
    assert aps2[0, O50] == pytest.approx(19 / 24)
    # duplicate only: y = (1, .9), (0, .8) -> AP 1 (the FP is ranked after the TP)
    aps3, _ = evaluate([(gt[:300], [a[:300], a[:300]], [3, 3], [0.9, 0.8])])
    assert aps3[0, O50] == 1.0


def test_greedy_matching_follows_prediction_order_not_confidence():
    gt = scene()
    gt[0:200] = 3001
    gt[200:400] = 3002
    both = mask(1000, (0, 400))  # IoU 0.5 with each GT: matches both at 0.25
    only_a = mask(1000, (0, 200))
    # [both, only_a]: A takes `both`, `only_a` is A's duplicate, B is missed
    # y = (1, .5), (0, .5), hard FN 1 -> one threshold: P = .5, R = .5 -> AP = .5 * .5 + 1 * .25
    aps, _ = evaluate([(gt, [both, only_a], [3, 3], [0.5, 0.5])])
    assert aps[0, O25] == pytest.approx(0.375)
    # [only_a, both]: A takes `only_a`, `both` is A's duplicate (FP) but still free for B
    # y = (1, .5), (0, .5), (1, .5), no FN -> P = 2/3, R = 1 -> AP = 2/3 * .5 + 1 * .5
    aps, _ = evaluate([(gt, [only_a, both], [3, 3], [0.5, 0.5])])
    assert aps[0, O25] == pytest.approx(2 / 3 * 0.5 + 0.5)


def test_unmatched_prediction_on_ignored_regions_is_not_a_false_positive():
    gt = scene()
    gt[0:200] = 3001
    gt[200:400] = 1001  # wall: not an evaluated class -> void
    gt[400:600] = 4001  # GT of the other class: not ignored
    tp = mask(1000, (0, 200))
    on_void = mask(1000, (200, 350))
    on_other = mask(1000, (400, 550))
    aps, _ = evaluate([(gt, [tp, on_void], [3, 3], [0.9, 0.95])])
    assert aps[0, O50] == 1.0  # the prediction on void is dropped
    # y = (1, .9), (0, .95): P = [.5, 0, 1], R = [1, 0, 0] -> AP = .5 * .5 = .25
    aps, _ = evaluate([(gt, [tp, on_other], [3, 3], [0.9, 0.95])])
    assert aps[0, O50] == 0.25
    # half void / half other class: ignored share 0.5 -> still a FP at 0.50 (dropped only if the
    # share is > t), dropped at 0.25
    half = mask(1000, (250, 350), (400, 500))
    aps, _ = evaluate([(gt, [tp, half], [3, 3], [0.9, 0.95])])
    assert aps[0, O50] == 0.25 and aps[0, O25] == 1.0


def test_small_regions():
    gt = scene()
    gt[0:99] = 3001  # 99 vertices: not a GT instance to find
    gt[200:400] = 4001
    # a perfect 99-vertex prediction of the small GT is skipped too -> class 3 has no GT: NaN
    aps, avg = evaluate([(gt, [mask(1000, (0, 99))], [3], [0.9])])
    assert np.isnan(aps[0]).all()
    assert avg['classes']['bed']['ap'] == 0.0  # class with GT and no prediction -> 0
    assert avg['all_ap'] == 0.0  # mean over classes with GT only
    # a 99-vertex prediction of a big GT is skipped: no prediction -> AP 0
    aps, _ = evaluate([(gt, [mask(1000, (200, 299))], [4], [0.9])])
    assert (aps[1] == 0).all()
    # a 150-vertex prediction covering the small GT (99) + void (51), ranked above a TP: IoU with
    # the small GT 0.66 -> "found" for t < 0.66; for larger t its ignored share (51 + 99) / 150 =
    # 1 > t -> dropped. It is never a false positive, so class 3 keeps AP 1 everywhere.
    gt[600:800] = 3002
    preds = [mask(1000, (0, 150)), mask(1000, (600, 800)), mask(1000, (200, 400))]
    aps, _ = evaluate([(gt, preds, [3, 3, 4], [0.9, 0.5, 0.8])])
    assert (aps == 1).all()


def test_ties_and_scene_pooling_are_order_independent():
    g1 = scene()
    g1[0:200] = 3001
    g2 = scene()
    g2[0:200] = 3001
    g2[500:700] = 4001  # second scene: an FP of class 3 on GT of class 4, same score as the TP
    s1 = (g1, [mask(1000, (0, 200))], [3], [0.5])
    s2 = (g2, [mask(1000, (500, 700)), mask(1000, (0, 200))], [3, 3], [0.5, 0.5])
    # class 3: y = (1, .5), (0, .5), (1, .5): one threshold, P = 2/3, R = 1 -> AP = 2/3*.5 + .5
    aps, _ = evaluate([s1, s2])
    assert aps[0, O50] == pytest.approx(2 / 3 * 0.5 + 0.5)
    assert aps[1, O50] == 0.0
    aps_rev, _ = evaluate([s2, s1])
    np.testing.assert_array_equal(aps, aps_rev)


def test_all_predictions_ignored_does_not_crash():
    # the benchmark's `y_true_sorted_cumsum[-1]` on an empty array (ScanNet PR #26)
    gt = scene()
    gt[0:200] = 3001
    aps, _ = evaluate([(gt, [mask(1000, (500, 700))], [3], [0.9])])
    assert (aps[0] == 0).all()


def test_invalid_labels_are_skipped_and_bad_shapes_raise():
    gt = scene()
    gt[0:200] = 3001
    aps, _ = evaluate([(gt, [mask(1000, (0, 200))], [1], [0.9])])  # wall prediction: skipped
    assert (aps[0] == 0).all()
    with pytest.raises(ValueError, match='scene_x.*999 points.*1000'):
        match_scene(gt, np.zeros((1, 999), bool), [3], [0.5], VALID, scene_name='scene_x')
    with pytest.raises(ValueError, match='2 masks but 1 labels'):
        match_scene(gt, np.zeros((2, 1000), bool), [3], [0.5, 0.4], VALID)
    with pytest.raises(ValueError, match='scores must be finite'):
        match_scene(gt, np.zeros((1, 1000), bool), [3], [float('nan')], VALID)


def test_subsets_are_nanmeans_over_their_classes():
    gt = scene()
    gt[0:200] = 3001
    gt[200:400] = 4001
    res = [match_scene(gt, np.stack([mask(1000, (0, 200))]), [3], [0.9], VALID)]
    avg = instance_eval_from_matches(res, NAMES, subsets=dict(a=('cabinet', 'wall'), b=('bed', )))
    assert avg['a_ap'] == 1.0 and avg['b_ap'] == 0.0  # 'wall' is not evaluated: left out
    assert avg['all_ap'] == 0.5


def test_matches_mmdet3d_port_of_the_official_evaluator(monkeypatch):
    """Random scenes: bit-identical to mmdet3d's port of evaluate_semantic_instance.py."""
    from mmdet3d.evaluation.functional.scannet_utils import evaluate_semantic_instance as official

    # the port predates numpy 2 (np.float / np.in1d); give it back what it needs
    monkeypatch.setattr(np, 'float', float, raising=False)
    monkeypatch.setattr(np, 'in1d', np.isin, raising=False)
    rng = np.random.default_rng(0)
    valid = (3, 4, 5, 7)
    names = ('a', 'b', 'c', 'd')
    for _ in range(15):
        preds, gts, ours = [], [], []
        for s in range(int(rng.integers(1, 4))):
            n = 1500
            gt = np.zeros(n, np.int64)
            pos, inst = 0, 1
            while pos < n:
                ln = int(rng.integers(20, 400))
                lab = int(rng.choice([0, 1, 3, 4, 5, 7, 9]))
                gt[pos:pos + ln] = lab * 1000 + inst if lab else 0
                pos, inst = pos + ln, inst + 1
            ids = np.unique(gt)
            ids = ids[ids > 0]
            masks, labels = [], []
            for _k in range(int(rng.integers(0, 20))):
                if rng.random() < 0.7:
                    g = rng.choice(ids)
                    m = (gt == g) ^ (rng.random(n) < rng.uniform(0, 0.05))
                    m[:int(rng.integers(0, 40))] ^= True
                    lab = int(g // 1000) if rng.random() < 0.8 else int(rng.choice([1, 3, 4]))
                else:
                    a = int(rng.integers(0, n))
                    m = np.zeros(n, bool)
                    m[a:a + int(rng.integers(50, 600))] = True
                    lab = int(rng.choice([1, 3, 4, 5, 7, 8]))
                masks.append(m)
                labels.append(lab)
            scores = np.round(rng.random(len(labels)), 1)  # many ties
            masks = np.array(masks, dtype=bool).reshape(len(labels), n)
            preds.append({f'{s}_{k}': dict(mask=masks[k], label_id=labels[k], conf=scores[k])
                          for k in range(len(labels))})
            gts.append(gt)
            ours.append(match_scene(gt, masks, labels, scores, valid))
        ref = official.scannet_eval(preds, gts, None, valid, names, dict(zip(valid, names)))
        got = instance_eval_from_matches(ours[::-1], names)
        for key in ('all_ap', 'all_ap_50%', 'all_ap_25%'):
            np.testing.assert_array_equal(got[key], ref[key])
        for name in names:
            for key in ('ap', 'ap50%', 'ap25%'):
                np.testing.assert_array_equal(got['classes'][name][key], ref['classes'][name][key])
