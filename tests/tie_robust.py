"""Comparisons of two computations of one prediction that are robust to near-ties.

Two computations of the same quantity (bounded vs whole-batch inference, kernel vs twin) agree
only to float rounding, and rounding differs between CPUs (AVX2 vs AVX-512 kernels, BLAS builds).
A discrete decision taken on a value that lies within rounding of its threshold (a mask logit at
0, two class scores that tie, two instance scores that tie in a top-k) may then go either way. The
helpers here accept a different decision exactly where it is such a near-tie, and nowhere else:
a decision taken far from its threshold must agree, so real differences still fail.

:func:`record_postprocess` captures the logits from which the head's inference rules take their
decisions (from outside the model: it wraps the head's ``postprocess_3d`` on the instance).
"""
from contextlib import contextmanager
from typing import Iterator, List, Tuple

import torch
from torch import Tensor


@contextmanager
def record_postprocess(head) -> Iterator[List[Tuple[Tensor, Tensor]]]:
    """Record ``(cls_logits (Q, K+1), point_logits (Q, N))`` of every ``postprocess_3d`` call.

    Args:
        head: an ``ODINHead``; its bound method is shadowed on the instance for the duration.

    Yields:
        list: one ``(cls_logits, point_logits)`` per scene, in call order.
    """
    calls: List[Tuple[Tensor, Tensor]] = []
    original = head.postprocess_3d

    def wrapper(cls_logits: Tensor, point_logits: Tensor):
        calls.append((cls_logits.detach().clone(), point_logits.detach().clone()))
        return original(cls_logits, point_logits)

    head.postprocess_3d = wrapper
    try:
        yield calls
    finally:
        del head.postprocess_3d


def tie_margin(values: Tensor, rtol: float) -> float:
    """The absolute margin of a near-tie: ``rtol`` times the largest magnitude of ``values``."""
    return rtol * float(values.abs().max().clamp_min(1e-12))


def assert_same_binary_masks(mask_a: Tensor, mask_b: Tensor, logits_a: Tensor,
                             logits_b: Tensor, rtol: float, max_fraction: float = 1e-3) -> int:
    """``logit > 0`` masks equal except where the logit is within the margin of 0 in both runs.

    Args:
        mask_a, mask_b: boolean masks (Q, N) of the two runs.
        logits_a, logits_b: the logits they threshold (Q, N).
        rtol: near-tie margin relative to the largest logit magnitude.
        max_fraction: most entries that may differ (near-ties are rare by nature).

    Returns:
        int: the number of differing entries (all near-ties).
    """
    assert mask_a.shape == mask_b.shape
    differ = mask_a != mask_b
    margin = tie_margin(logits_a, rtol)
    far = differ & ((logits_a.abs() > margin) | (logits_b.abs() > margin))
    assert not bool(far.any()), (
        f'{int(far.sum())} mask entries differ although their logits are not near 0 '
        f'(margin {margin:.3g}); e.g. logits {logits_a[far][:5].tolist()} vs '
        f'{logits_b[far][:5].tolist()}')
    n = int(differ.sum())
    assert n <= max_fraction * differ.numel(), f'{n} near-tie mask entries: too many to be ties'
    return n


def assert_same_argmax(idx_a: Tensor, idx_b: Tensor, scores_a: Tensor, rtol: float,
                       max_fraction: float = 1e-3) -> int:
    """Argmax over dim 0 of ``scores`` equal except where the two classes nearly tie.

    Args:
        idx_a, idx_b: argmax per column (N,) of the two runs.
        scores_a: the scores (C, N) of run A (its argmax is ``idx_a``).
        rtol: near-tie margin relative to the largest score magnitude.
        max_fraction: most columns that may differ.

    Returns:
        int: the number of differing columns (all near-ties).
    """
    differ = idx_a != idx_b
    if not bool(differ.any()):
        return 0
    cols = differ.nonzero()[:, 0]
    gap = (scores_a[idx_a[cols], cols] - scores_a[idx_b[cols], cols]).abs()
    margin = tie_margin(scores_a, rtol)
    assert bool((gap <= margin).all()), (
        f'argmax differs at {int((gap > margin).sum())} columns whose scores do not tie '
        f'(gaps {gap[gap > margin][:5].tolist()}, margin {margin:.3g})')
    n = int(differ.sum())
    assert n <= max(1, max_fraction * differ.numel()), f'{n} near-tie columns: too many'
    return n


def topk_tie_groups(scores: Tensor, rtol: float) -> List[List[int]]:
    """Positions of a descending score list, grouped into runs of near-equal neighbours.

    Args:
        scores: descending scores (K,).
        rtol: near-tie margin relative to the largest score magnitude.

    Returns:
        list: groups of consecutive positions whose neighbouring scores lie within the margin.
    """
    margin = tie_margin(scores, rtol) if scores.numel() else 0.0
    groups: List[List[int]] = []
    for i in range(scores.numel()):
        if groups and float(scores[i - 1] - scores[i]) <= margin:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def query_of_instances(cls_logits: Tensor, topk: int, skip_classes=()) -> Tensor:
    """The query behind each instance of the head's top-k rule, by the model's own function.

    ``instance_inference`` returns ``mask_logits[query] > 0``: given the identity as (Q, Q)
    "mask logits", row ``i`` of its masks is the one-hot of instance ``i``'s query.

    Args:
        cls_logits: (Q, K+1) class logits of one scene.
        topk: the head's ``test_cfg.topk``.
        skip_classes: the head's ``test_cfg.skip_classes``.

    Returns:
        Tensor: (k,) long query index of every instance.
    """
    from projects.odin.models.postprocess import instance_inference
    eye = torch.eye(cls_logits.shape[0], dtype=cls_logits.dtype)
    onehot, _, _ = instance_inference(cls_logits, eye, topk, skip_classes)
    assert bool((onehot.sum(1) == 1).all())
    return onehot.float().argmax(1)


def match_topk(labels_a: Tensor, scores_a: Tensor, labels_b: Tensor, scores_b: Tensor,
               rtol: float) -> Tensor:
    """Pair the instances of two top-k lists, allowing reorderings only inside near-ties.

    Within a group of near-equal scores of run A the order is arbitrary, so run B's instances
    at those positions are matched to run A's by label (then closest score); everywhere else
    position ``i`` must be position ``i``. A tie group that reaches the end of the list may
    also exchange instances with those just below the cut: they stay unmatched (-1).

    Args:
        labels_a, scores_a: top-k labels and descending scores (K,) of run A.
        labels_b, scores_b: those of run B.
        rtol: near-tie margin relative to the largest score magnitude.

    Returns:
        Tensor: ``perm`` (K,) with run B's instance ``perm[i]`` matched to run A's ``i`` (-1:
        none, only in a tie group at the cut).
    """
    assert labels_a.shape == labels_b.shape
    last = labels_a.numel() - 1
    perm = torch.arange(labels_a.numel())
    for group in topk_tie_groups(scores_a, rtol):
        if len(group) == 1 and group[0] != last:
            continue
        left = list(group)
        for i in group:
            cand = [j for j in left if int(labels_b[j]) == int(labels_a[i])]
            if not cand:
                assert last in group, (
                    f'instance {i} (label {int(labels_a[i])}) has no partner in its tie group')
                perm[i] = -1
                continue
            j = min(cand, key=lambda j: abs(float(scores_b[j] - scores_a[i])))
            perm[i] = j
            left.remove(j)
    ok = perm >= 0
    assert torch.equal(labels_b[perm[ok]], labels_a[ok]), 'top-k labels differ outside near-ties'
    torch.testing.assert_close(scores_b[perm[ok]], scores_a[ok], rtol=rtol,
                               atol=tie_margin(scores_a, rtol))
    return perm
