"""Inference rules of ODIN (top-k over query x class, mask scores, semantic argmax)."""
import torch

from projects.odin.models.postprocess import instance_inference, semantic_inference


def test_instance_inference_hand_computed():
    # 2 queries, 3 classes + no-object
    cls = torch.log(torch.tensor([[0.6, 0.1, 0.2, 0.1], [0.05, 0.7, 0.05, 0.2]]))
    masks = torch.tensor([[2.0, -1.0, 0.0, 3.0], [-1.0, -2.0, -3.0, -4.0]])
    binary, labels, scores = instance_inference(cls, masks, topk=3)
    # top-3 of {q0c0 .6, q1c1 .7, q0c2 .2, ...} by class probability
    assert labels.tolist() == [1, 0, 2]
    assert binary[0].sum() == 0 and scores[0] == 0  # query 1 has no positive logit
    mean_in = (torch.sigmoid(torch.tensor(2.0)) + torch.sigmoid(torch.tensor(3.0))) / 2
    torch.testing.assert_close(scores[1], 0.6 * mean_in, rtol=1e-5, atol=1e-6)
    assert binary[1].tolist() == [True, False, False, True]


def test_instance_inference_skips_classes():
    cls = torch.randn(5, 21)
    masks = torch.randn(5, 30)
    _, labels, _ = instance_inference(cls, masks, topk=50, skip_classes=(18, 19))
    assert len(labels) == 50 and not ((labels == 18) | (labels == 19)).any()


def test_semantic_inference():
    cls = torch.log(torch.tensor([[0.9, 0.05, 0.05], [0.05, 0.9, 0.05]]))
    masks = torch.tensor([[5.0, -5.0], [-5.0, 5.0]])
    assert semantic_inference(cls, masks).tolist() == [0, 1]


def test_instance_inference_leaves_its_inputs_and_matches_the_out_of_place_rule():
    """The in-place sigmoid and masking act on the function's own copy of the kept rows: the
    caller's logits are unchanged and the scores are bit-equal to the out-of-place formula."""
    g = torch.Generator().manual_seed(0)
    cls = torch.randn(12, 6, generator=g)
    logits = torch.randn(12, 500, generator=g)
    before = logits.clone()
    binary, labels, scores = instance_inference(cls, logits, topk=30)
    assert torch.equal(logits, before)
    probs = cls.softmax(-1)[:, :-1]
    top_scores, top_idx = probs.flatten().topk(30, sorted=True)
    masks = logits[torch.div(top_idx, 5, rounding_mode='floor')]
    ref = (masks.sigmoid() * (masks > 0)).sum(1) / ((masks > 0).sum(1) + 1e-6)
    assert torch.equal(binary, masks > 0)
    assert torch.equal(scores, top_scores * ref)


def test_row_counts_equal_the_bool_sum():
    # counted a few rows at a time (sum of a bool tensor converts all of it to int64 first)
    from projects.odin.models.postprocess import _row_counts
    g = torch.Generator().manual_seed(1)
    for rows in (0, 1, 8, 9, 17, 100):
        binary = torch.rand(rows, 37, generator=g) > 0.4
        counts = _row_counts(binary)
        assert counts.dtype == torch.int64 and torch.equal(counts, binary.sum(1))
