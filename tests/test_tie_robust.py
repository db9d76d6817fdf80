"""The near-tie comparisons of tests/tie_robust.py accept ties resolved the other way and
reject every other difference (so the tests that use them still fail on real differences)."""
import pytest
import torch
from tie_robust import (
    assert_same_argmax,
    assert_same_binary_masks,
    match_topk,
    query_of_instances,
    topk_tie_groups,
)


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
