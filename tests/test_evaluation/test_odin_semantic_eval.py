"""Semantic mIoU / mAcc / allAcc with ignored GT and unknown predictions (hand-computed)."""
import numpy as np
import pytest

from projects.odin.evaluation.functional import (
    confusion_from_sparse,
    scene_confusion,
    semantic_metrics,
)


def test_ignored_gt_and_unknown_predictions():
    # classes a, b, c; GT 3 and -1 are not evaluated; prediction 5 is not an evaluated class
    gt = np.array([0, 0, 0, 1, 1, 2, 3, -1])
    pred = np.array([0, 0, 1, 1, 5, 2, 0, 0])
    conf = confusion_from_sparse([scene_confusion(gt, pred, 3)], 3)
    expected = np.array([[2, 1, 0, 0], [0, 1, 0, 1], [0, 0, 1, 0]])
    np.testing.assert_array_equal(conf, expected)
    sem = semantic_metrics(conf, ('a', 'b', 'c'))
    # a: 2 / (3 + 2 - 2); b: 1 / (2 + 2 - 1) (the unknown prediction is an FN of b, no one's FP);
    # c: 1; predictions on ignored GT count nowhere
    assert sem['classes']['a']['iou'] == pytest.approx(2 / 3)
    assert sem['classes']['b']['iou'] == pytest.approx(1 / 3)
    assert sem['classes']['c']['iou'] == 1.0
    assert sem['miou'] == pytest.approx(2 / 3)
    assert sem['macc'] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert sem['allacc'] == pytest.approx(4 / 6)


def test_classes_without_gt():
    gt = np.array([0, 0, 1, 1])
    pred = np.array([0, 2, 1, 1])  # class 2 predicted but never in GT -> IoU 0; class 3 -> NaN
    sem = semantic_metrics(confusion_from_sparse([scene_confusion(gt, pred, 4)], 4), 'abcd')
    assert sem['classes']['c']['iou'] == 0.0
    assert np.isnan(sem['classes']['d']['iou'])
    assert sem['miou'] == pytest.approx((1 / 2 + 1 + 0) / 3)
    # ODIN's evaluator averages over classes present in the GT only
    odin = semantic_metrics(confusion_from_sparse([scene_confusion(gt, pred, 4)], 4), 'abcd',
                            mean_over_classes_with_gt=True)
    assert odin['miou'] == pytest.approx((1 / 2 + 1) / 2)


def test_accumulates_over_scenes_and_checks_lengths():
    parts = [scene_confusion(np.array([0, 1]), np.array([0, 0]), 2),
             scene_confusion(np.array([1, 1]), np.array([1, 1]), 2)]
    conf = confusion_from_sparse(parts, 2)
    np.testing.assert_array_equal(conf, [[1, 0, 0], [1, 2, 0]])
    with pytest.raises(ValueError, match='scene7: 3 predicted labels but 2 GT'):
        scene_confusion(np.array([0, 1]), np.array([0, 1, 1]), 2, scene_name='scene7')


def test_agrees_with_mmdet3d_seg_eval():
    from mmdet3d.evaluation.functional import seg_eval

    rng = np.random.default_rng(1)
    gts = [rng.integers(0, 6, 500) for _ in range(3)]  # 5 = ignore index
    preds = [rng.integers(0, 5, 500) for _ in range(3)]
    names = ('a', 'b', 'c', 'd', 'e')
    ref = seg_eval(gts, preds, dict(enumerate(names)), ignore_index=5)
    sem = semantic_metrics(confusion_from_sparse(
        [scene_confusion(g, p, 5) for g, p in zip(gts, preds)], 5), names)
    assert sem['miou'] == pytest.approx(ref['miou'])
    assert sem['allacc'] == pytest.approx(ref['acc'])
    assert sem['macc'] == pytest.approx(ref['acc_cls'])
