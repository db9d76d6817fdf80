"""3D Hungarian losses of ODINHead against the formulas written out by hand.

The 3D mask losses go through mmdet's loss modules (``CrossEntropyLoss(use_sigmoid)``,
``DiceLoss(naive_dice)``) with ``avg_factor``; this pins the values they must produce (those of
the hand-written BCE / Dice of earlier versions, docs/specification.md §2.10): per matched query
the BCE averaged over the scene's points, summed over matched queries of all scenes; the naive
Dice (eps 1) summed; both divided by the number of ground-truth masks of the batch and weighted;
the classification CE weighted by the class weights (no-object 0.1) and averaged by their sum.
"""
import copy

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.structures import InstanceData

from odin_testing import REPO_ROOT

CFG = f'{REPO_ROOT}/configs/odin/odin_tiny_test.py'

pytestmark = pytest.mark.usefixtures('one_thread')


def _head():
    from mmdet3d.registry import MODELS
    from mmengine.registry import init_default_scope

    import projects.odin  # noqa: F401
    init_default_scope('mmdet3d')
    cfg = Config.fromfile(CFG)
    head_cfg = copy.deepcopy(cfg.model.decode_head)
    head_cfg.update(train_cfg=cfg.model.train_cfg, test_cfg=cfg.model.test_cfg)
    torch.manual_seed(0)
    return MODELS.build(head_cfg)


def _problem(num_classes: int, num_queries: int):
    """Two scenes (50 points with 3 instances, 30 points without any) and logits whose
    Hungarian matching is unambiguous: query 2j predicts instance j of scene 0."""
    g = torch.Generator().manual_seed(1)
    n0, n1 = 50, 30
    gt_masks = torch.zeros(3, n0, dtype=torch.bool)
    gt_masks[0, :20] = True
    gt_masks[1, 20:35] = True
    gt_masks[2, 35:47] = True  # three points belong to no instance
    gt_labels = torch.tensor([2, 0, 3])
    n_max = max(n0, n1)
    masks = 0.5 * torch.randn(2, num_queries, n_max, generator=g)
    cls = torch.randn(2, num_queries, num_classes + 1, generator=g)
    cls[..., -1] += 2.0  # unmatched queries lean to no-object
    for j in range(3):
        q = 2 * j
        masks[0, q, :n0] += 6.0 * (2 * gt_masks[j].float() - 1)
        cls[0, q, gt_labels[j]] += 8.0
    targets = [InstanceData(labels=gt_labels, masks=gt_masks),
               InstanceData(labels=torch.zeros(0, dtype=torch.long),
                            masks=torch.zeros(0, n1, dtype=torch.bool))]
    return cls, masks, [n0, n1], targets


def test_3d_losses_equal_the_hand_written_formulas():
    head = _head()
    num_classes, num_queries = head.num_classes, head.num_queries
    assert head.max_train_points >= 50  # no point subsampling in this problem
    cls, masks, counts, targets = _problem(num_classes, num_queries)
    # two predictions: deep supervision (d0.*) and the last one
    losses = head.loss_by_feat_3d([cls, cls.flip(1)], [masks, masks.flip(1)], counts, targets)
    assert set(losses) == {'loss_cls', 'loss_mask', 'loss_dice',
                           'd0.loss_cls', 'd0.loss_mask', 'd0.loss_dice'}

    def expected(cls, masks, match):
        """Losses for ``match`` {query: gt index} of scene 0 (scene 1 has no instance)."""
        num_masks = 3.0
        labels = torch.full((2, num_queries), num_classes)
        for q, j in match.items():
            labels[0, q] = targets[0].labels[j]
        weights = torch.tensor(head.class_weight)[labels.flatten()]
        ce = F.cross_entropy(cls.flatten(0, 1), labels.flatten(), reduction='none')
        loss_cls = head.loss_cls.loss_weight * (weights * ce).sum() / weights.sum()
        bce, dice = 0.0, 0.0
        for q, j in match.items():
            logit, gt = masks[0, q, :counts[0]], targets[0].masks[j].float()
            bce = bce + F.binary_cross_entropy_with_logits(logit, gt)  # mean over the points
            p = logit.sigmoid()
            dice = dice + 1 - (2 * (p * gt).sum() + 1) / (p.sum() + gt.sum() + 1)
        return (loss_cls, head.loss_mask.loss_weight * bce / num_masks,
                head.loss_dice.loss_weight * dice / num_masks)

    match = {0: 0, 2: 1, 4: 2}
    flipped = {num_queries - 1 - q: j for q, j in match.items()}
    for prefix, c, m, mt in (('d0.', cls, masks, match),
                             ('', cls.flip(1), masks.flip(1), flipped)):
        exp_cls, exp_mask, exp_dice = expected(c, m, mt)
        torch.testing.assert_close(losses[prefix + 'loss_cls'], exp_cls, rtol=1e-5, atol=0)
        torch.testing.assert_close(losses[prefix + 'loss_mask'], exp_mask, rtol=1e-5, atol=0)
        torch.testing.assert_close(losses[prefix + 'loss_dice'], exp_dice, rtol=1e-5, atol=0)
    # a wrong matching gives other values (the check above can fail)
    wrong = expected(cls, masks, {0: 1, 2: 0, 4: 2})
    assert float(wrong[1]) > 1.5 * float(losses['d0.loss_mask'])


def test_3d_mask_loss_gradients_equal_the_formula():
    """Gradients of the mask logits, not only the values, follow the formula."""
    head = _head()
    cls, masks, counts, targets = _problem(head.num_classes, head.num_queries)
    masks_a = masks.clone().requires_grad_(True)
    losses = head.loss_by_feat_3d([cls], [masks_a], counts, targets)
    (losses['loss_mask'] + losses['loss_dice']).backward()
    masks_b = masks.clone().requires_grad_(True)
    total = 0.0
    for q, j in {0: 0, 2: 1, 4: 2}.items():
        logit, gt = masks_b[0, q, :counts[0]], targets[0].masks[j].float()
        p = logit.sigmoid()
        total = total + head.loss_mask.loss_weight * F.binary_cross_entropy_with_logits(
            logit, gt) / 3 + head.loss_dice.loss_weight * (
                1 - (2 * (p * gt).sum() + 1) / (p.sum() + gt.sum() + 1)) / 3
    total.backward()
    torch.testing.assert_close(masks_a.grad, masks_b.grad, rtol=1e-4,
                               atol=1e-6 * float(masks_b.grad.abs().max()))
    # padding points of scene 1 and unmatched queries get no mask gradient
    assert float(masks_a.grad[1].abs().max()) == 0.0
    assert float(masks_a.grad[0, 1].abs().max()) == 0.0
