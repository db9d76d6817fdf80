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
