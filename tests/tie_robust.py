"""Near-tie-robust comparisons of two computations of one ODIN output (test support).

Two float32 computations of the same model output (whole batch vs view chunks, compiled kernels
vs their twins, this CPU vs another) agree to about 1e-6 relative, but the model takes discrete
decisions on continuous values:

* k-NN selections (voxel graphs, IDW): the k-th and (k+1)-th distances may be equal to float32
  resolution;
* the decoder's attention masks: a voxel is masked when ``sigmoid(logit) < 0.5``, and a logit
  within rounding of 0 may land on either side (one flipped entry moves the final logits by
  ~1e-4, docs/model.md "Near-ties in the bounded path");
* post-processing: ``mask logit > 0``, top-k over class scores, the semantic arg-max.

A decision on a near-tie may go either way on another CPU or with another summation order.
:class:`DecisionReplay` records every such decision of run A and lets run B take A's decision
wherever B's differs from A's **and** the decision is a near-tie in both runs (float64 k-NN gap
below ``parity.TIE_RTOL``; ``|mask logit| <= MASK_TIE_RTOL * max |logit|``); every override is
counted, every other difference is left in place and counted as unexplained, so the test's own
tolerances still catch real differences. :func:`apply_reverse_tie_order` resolves every near-tie
the other way for a whole test session (``ODIN_TEST_TIE_ORDER=reverse``, tests/conftest.py).

Everything acts from outside the model: the k-NN entry point
:func:`projects.odin.structures.neighbors.knn` is substituted (as the parity tool does), forward
hooks observe and replace the attention masks of the ``AttentionMask3D`` modules, and the head's
``postprocess_3d`` is wrapped on the instance.
"""
from collections import Counter
from contextlib import ExitStack, contextmanager
from typing import Callable, Dict, Iterator, List, Tuple
from unittest import mock

import torch
from torch import Tensor

from projects.odin.models.odin_head import AttentionMask3D, ODINHead
from projects.odin.ops.utils import scene_ranges
from projects.odin.parity.knn_ties import TieRow, call_signature, near_ties
from projects.odin.parity.tolerances import TIE_RTOL
from projects.odin.structures import neighbors

#: a mask logit (attention mask or instance mask) is a near-tie when its magnitude is at most this
#: fraction of the largest magnitude of its tensor (the bounded path's logits agree to ~1e-6)
MASK_TIE_RTOL = 1e-5
#: class probabilities closer than this fraction of the largest one may be ordered either way
SCORE_TIE_RTOL = 1e-5
#: ``reverse`` flips mask decisions only this far from 0, well inside the replay margin, so that
#: a decision flipped in one run and not in the other is still a near-tie for the replay
REVERSE_MASK_RTOL = MASK_TIE_RTOL / 4

KnnFn = Callable[..., Tuple[Tensor, Tensor]]


def _set_row(idx: Tensor, dist: Tensor, row: int, sel_idx: Tensor, sel_dist: Tensor) -> None:
    idx[row] = sel_idx.to(idx)
    dist[row] = sel_dist.to(dist)


def mask_logits_layout(tgt: Tensor, geo) -> Tensor:
    """Voxel logits ``(N_vox, Q)`` in the attention mask's layout ``(B, Q, N_vox_max)``.

    Padding voxels get ``+inf`` (never a near-tie).
    """
    counts = list(geo.voxel_counts)
    out = tgt.new_full((len(counts), tgt.shape[1], max(counts)), float('inf'))
    for j, (s, n) in enumerate(zip(geo.voxel_starts, counts)):
        out[j, :, :n] = tgt[s:s + n].t()
    return out


def attention_mask_logits(args: tuple) -> Tensor:
    """The IDW-interpolated voxel logits behind one ``AttentionMask3D`` call, in its layout.

    ``args`` are the module's positional call arguments ``(src_logits, src_xyz, src_offsets,
    geo, num_neighbors)``; the k-NN goes through the (possibly substituted) model entry point.
    """
    src_logits, src_xyz, src_offsets, geo, k = args
    tgt = neighbors.idw(src_logits, src_xyz, src_offsets, geo.voxel_xyz, geo.voxel_offsets, k)
    return mask_logits_layout(tgt, geo)


def _near_zero(logits: Tensor, rtol: float) -> Tensor:
    finite = logits[torch.isfinite(logits)]
    scale = finite.abs().max() if finite.numel() else logits.new_tensor(0.0)
    return logits.abs() <= rtol * scale


def _same_decisions(a, b) -> bool:
    return (torch.equal(a.instance_labels, b.instance_labels)
            and torch.equal(a.pts_instance_mask, b.pts_instance_mask)
            and torch.equal(a.pts_semantic_mask, b.pts_semantic_mask))


class DecisionReplay:
    """Record the discrete decisions of one run of ``model`` and replay them at near-ties.

    Usage::

        replay = DecisionReplay(model)
        with replay.record():
            a = run_whole_batch()
        with replay.replay():       # calls are matched in order, from the start of the block
            b = run_bounded()
        replay.check()              # no unexplained difference, few overrides

    Several recordings are kept apart by ``key`` (``record('predict')`` ... ``replay('predict')``).

    Args:
        model: an ODIN detector (its ``AttentionMask3D`` modules and ``decode_head`` are used).
        mask_rtol: attention/instance mask near-tie margin (fraction of the largest |logit|).
        score_rtol: class-probability near-tie margin (fraction of the largest probability).
    """

    def __init__(self, model: torch.nn.Module, mask_rtol: float = MASK_TIE_RTOL,
                 score_rtol: float = SCORE_TIE_RTOL) -> None:
        self.model = model
        self.mask_rtol = mask_rtol
        self.score_rtol = score_rtol
        self.mask_modules = [m for m in model.modules() if isinstance(m, AttentionMask3D)]
        if not self.mask_modules:
            raise ValueError('the model has no AttentionMask3D module to observe')
        self.head = model.decode_head
        self._recordings: Dict[str, tuple] = {}
        self._knn: Dict[Tuple, Tuple[Tensor, Tensor]] = {}
        self._masks: List[Tuple[Tensor, Tensor]] = []
        self._post: List[Tuple[Tensor, Tensor, object]] = []
        #: near-tie decisions of run B replaced by run A's, per kind
        self.overrides: Counter = Counter()
        #: differing decisions that are not near-ties (left in place), per kind
        self.unexplained: Counter = Counter()
        self._i_mask = self._i_post = 0

    # ------------------------------------------------------------------ contexts
    @contextmanager
    def record(self, key: str = '') -> Iterator[None]:
        """Record every decision of the runs inside the block (run A) under ``key``."""
        self._knn, self._masks, self._post = {}, [], []
        self._recordings[key] = (self._knn, self._masks, self._post)
        with self._hooks(replay=False):
            yield

    @contextmanager
    def replay(self, key: str = '') -> Iterator[None]:
        """Run B: near-tie decisions that differ from run A's (``key``) take A's (counted)."""
        if key not in self._recordings:
            raise KeyError(f'nothing recorded under {key!r}')
        self._knn, self._masks, self._post = self._recordings[key]
        self._i_mask = self._i_post = 0
        with self._hooks(replay=True):
            yield

    def total_overrides(self) -> int:
        """Number of replayed near-tie decisions so far."""
        return sum(self.overrides.values())

    def check(self, max_overrides: int = 8) -> None:
        """Assert no unexplained difference and at most ``max_overrides`` replayed near-ties."""
        unexplained = +self.unexplained   # drops zero counts
        assert not unexplained, f'decisions differ beyond near-ties: {dict(unexplained)}'
        assert self.total_overrides() <= max_overrides, \
            f'too many near-tie overrides: {dict(+self.overrides)}'

    @contextmanager
    def _hooks(self, replay: bool) -> Iterator[None]:
        with ExitStack() as stack:
            knn = neighbors.knn
            stack.enter_context(mock.patch.object(
                neighbors, 'knn', self._knn_replay(knn) if replay else self._knn_record(knn)))
            for m in self.mask_modules:
                handle = m.register_forward_hook(self._mask_replay if replay else self._mask_record)
                stack.callback(handle.remove)
            post = self.head.postprocess_3d
            stack.enter_context(mock.patch.object(
                self.head, 'postprocess_3d',
                self._post_replay(post) if replay else self._post_record(post)))
            yield

    # ------------------------------------------------------------------ k-NN
    def _knn_record(self, fn: KnnFn) -> KnnFn:
        def knn(query, support, k, query_offsets, support_offsets):
            idx, dist = fn(query, support, k, query_offsets, support_offsets)
            self._knn.setdefault(call_signature(query, support, k), (idx.clone(), dist.clone()))
            return idx, dist
        return knn

    def _knn_replay(self, fn: KnnFn) -> KnnFn:
        def knn(query, support, k, query_offsets, support_offsets):
            idx, dist = fn(query, support, k, query_offsets, support_offsets)
            ref = self._knn.get(call_signature(query, support, k))
            if ref is None or torch.equal(idx, ref[0]):
                return idx, dist
            ref_idx, ref_dist = ref[0].to(idx.device), ref[1].to(dist.device)
            same_set = (idx.sort(1).values == ref_idx.sort(1).values).all(1)
            idx, dist = idx.clone(), dist.clone()
            for row in torch.nonzero(same_set & (idx != ref_idx).any(1)).flatten().tolist():
                _set_row(idx, dist, row, ref_idx[row], ref_dist[row])  # same set, A's order
            rows = torch.nonzero(~same_set).flatten().tolist()
            if rows:
                ties = {t.row: t for t in near_ties(query, support, k, query_offsets,
                                                    support_offsets, TIE_RTOL)}
                for row in rows:
                    t = ties.get(row)
                    if t is not None and t.accepts(ref_idx[row].tolist()):
                        _set_row(idx, dist, row, ref_idx[row], ref_dist[row])
                        self.overrides['knn'] += 1
                    else:
                        self.unexplained['knn'] += 1
            return idx, dist
        return knn

    # ------------------------------------------------------------------ attention masks
    def _mask_record(self, module, args, out: Tensor) -> None:
        self._masks.append((out.clone(), attention_mask_logits(args)))

    def _mask_replay(self, module, args, out: Tensor) -> Tensor:
        i = self._i_mask
        self._i_mask += 1
        if i >= len(self._masks) or self._masks[i][0].shape != out.shape:
            self.unexplained['attention_mask_call'] += 1
            return out
        ref, ref_logits = self._masks[i]
        differ = out != ref
        if not differ.any():
            return out
        near = (_near_zero(attention_mask_logits(args), self.mask_rtol)
                & _near_zero(ref_logits, self.mask_rtol))
        self.overrides['attention_mask'] += int((differ & near).sum())
        self.unexplained['attention_mask'] += int((differ & ~near).sum())
        return torch.where(differ & near, ref, out)

    # ------------------------------------------------------------------ post-processing
    def _post_record(self, fn: Callable) -> Callable:
        def postprocess_3d(cls_logits: Tensor, point_logits: Tensor):
            out = fn(cls_logits, point_logits)
            self._post.append((cls_logits.clone(), point_logits.clone(), out))
            return out
        return postprocess_3d

    def _post_replay(self, fn: Callable) -> Callable:
        def postprocess_3d(cls_logits: Tensor, point_logits: Tensor):
            i = self._i_post
            self._i_post += 1
            if i >= len(self._post):
                self.unexplained['postprocess_call'] += 1
                return fn(cls_logits, point_logits)
            cls_a, logits_a, out_a = self._post[i]
            if cls_a.shape != cls_logits.shape or logits_a.shape != point_logits.shape:
                self.unexplained['postprocess_call'] += 1
                return fn(cls_logits, point_logits)
            # instance masks (logit > 0): a sign that differs on a near-0 logit takes A's value
            tol = self.mask_rtol * logits_a.abs().max()
            close = (point_logits - logits_a).abs() <= tol
            flips = (point_logits > 0) != (logits_a > 0)
            near = flips & close & (logits_a.abs() <= tol)
            self.overrides['instance_mask'] += int(near.sum())
            logits = torch.where(near, logits_a, point_logits)
            out = fn(cls_logits, logits)
            if _same_decisions(out, out_a):
                return out
            # if B's inputs are within the margins of A's everywhere, every remaining decision
            # that differs (top-k order/selection, arg-max) is a near-tie: take A's
            p_a, p_b = cls_a.softmax(-1), cls_logits.softmax(-1)
            p_tol = self.score_rtol * float(p_a.max())
            inputs_close = bool(close.all()) and float((p_b - p_a).abs().max()) <= p_tol
            if not inputs_close:
                self.unexplained['postprocess'] += 1
                return out
            if not (torch.equal(out.instance_labels, out_a.instance_labels)
                    and torch.equal(out.pts_instance_mask, out_a.pts_instance_mask)):
                out = fn(cls_a, logits)   # class-score near-ties resolved as in A
                self.overrides['class_score'] += 1
            sem = out.pts_semantic_mask != out_a.pts_semantic_mask
            if sem.any():
                self.overrides['semantic'] += int(sem.sum())
                out.pts_semantic_mask = torch.where(sem, out_a.pts_semantic_mask,
                                                    out.pts_semantic_mask)
            return out
        return postprocess_3d


# ---------------------------------------------------------------------- the reverse tie order
def candidate_near_ties(fn: KnnFn, query: Tensor, support: Tensor, k: int, query_offsets: Tensor,
                        support_offsets: Tensor, rtol: float = TIE_RTOL) -> List[TieRow]:
    """:func:`near_ties` (the parity rule), scanning only the rows whose k+1 candidates are close.

    The float64 distances of each row's k+1 nearest support points (found by ``fn``, exact in
    float32) flag the rows whose k-th and (k+1)-th are within ``2 * rtol``; only those rows are
    scanned against their whole scene in float64 (``near_ties``' rule). float32 rounding (~1e-7)
    is far below ``rtol``, so no near-tie row escapes the flag; the cost is O(M k) plus the
    flagged rows, not O(M N) as ``near_ties``.

    Args:
        fn: the exact k-NN (signature of :func:`projects.odin.ops.knn`).
        query: ``(M, 3)`` query coordinates.
        support: ``(N, 3)`` support coordinates.
        k: neighbours per query.
        query_offsets: ``(B,)`` cumulative end index of each query scene.
        support_offsets: ``(B,)`` cumulative end index of each support scene.
        rtol: relative float64 gap of a near-tie.

    Returns:
        list[TieRow]: as :func:`near_ties` (ascending rows).
    """
    idx, dist = fn(query, support, k + 1, query_offsets, support_offsets)
    q64, s64 = query.detach().double().cpu(), support.detach().double().cpu()
    d64 = (q64[:, None] - s64[idx.cpu()]).norm(dim=-1).sort(1).values       # (M, k+1)
    valid = dist.cpu()[:, k] < 1e5      # padded slot: the scene has <= k support points
    kth, nxt = d64[:, k - 1], d64[:, k]
    rows = torch.nonzero(valid & (nxt - kth <= 2 * rtol * kth)).flatten().tolist()
    ends = query_offsets.cpu()
    s_ranges = scene_ranges(support_offsets.cpu())
    out = []
    for r in rows:
        ss, se = s_ranges[int(torch.searchsorted(ends, r, right=True))]
        d = (s64[ss:se] - q64[r]).norm(dim=-1)
        vals = d.topk(k + 1, largest=False, sorted=True).values
        if vals[k] - vals[k - 1] > rtol * vals[k - 1]:
            continue
        tol = rtol * vals[k - 1]
        group = torch.nonzero((d - vals[k - 1]).abs() <= tol).flatten()
        fixed = torch.nonzero(d < vals[k - 1] - tol).flatten()
        out.append(TieRow(r, tuple((fixed + ss).tolist()), tuple((group + ss).tolist()),
                          k - len(fixed)))
    return out


def reverse_knn(fn: KnnFn) -> KnnFn:
    """``fn`` with every k-NN near-tie row resolved by its LAST valid neighbour set.

    Our kernels keep the lowest support indices of a tie group; the last combination keeps the
    highest, as a CPU rounding the other way would. Deterministic in the coordinates, so repeated
    and chunked calls on the same points agree.
    """
    def knn(query, support, k, query_offsets, support_offsets):
        idx, dist = fn(query, support, k, query_offsets, support_offsets)
        ties = candidate_near_ties(fn, query, support, k, query_offsets, support_offsets)
        if not ties:
            return idx, dist
        idx, dist = idx.clone(), dist.clone()
        for t in ties:
            sel = torch.tensor(t.resolutions()[-1], dtype=torch.long, device=idx.device)
            d2 = ((query[t.row][None] - support[sel])**2).sum(-1)
            order = torch.argsort(d2, stable=True)
            _set_row(idx, dist, t.row, sel[order], d2[order].sqrt())
        return idx, dist
    return knn


def reverse_attention_mask(forward: Callable) -> Callable:
    """``AttentionMask3D.forward`` with the decision of every near-0 logit flipped."""
    def wrapped(self, *args):
        out = forward(self, *args)
        near = _near_zero(attention_mask_logits(args), REVERSE_MASK_RTOL)
        return torch.where(near, ~out, out)
    return wrapped


#: depth of ``ODINHead.predict_by_feat_3d`` calls in progress: the reverse order flips instance
#: masks only there, where the mask logits are the model's own (not data, as the parity check's
#: post-processing of the golden's logits, whose ``logit > 0`` is exact on every CPU)
_MODEL_PREDICTIONS = [0]


def counting_model_predictions(predict_by_feat: Callable) -> Callable:
    """``ODINHead.predict_by_feat_3d`` marking its post-processing calls as the model's own."""
    def wrapped(self, *args, **kwargs):
        _MODEL_PREDICTIONS[0] += 1
        try:
            return predict_by_feat(self, *args, **kwargs)
        finally:
            _MODEL_PREDICTIONS[0] -= 1
    return wrapped


def reverse_instance_masks(postprocess: Callable) -> Callable:
    """``ODINHead.postprocess_3d`` with every near-0 mask logit on the other side of 0.

    Only inside the model's own prediction (:func:`counting_model_predictions`); a direct call
    (post-processing of given logits) is left alone.
    """
    def wrapped(self, cls_logits: Tensor, point_logits: Tensor, *args, **kwargs):
        if _MODEL_PREDICTIONS[0] > 0:
            near = _near_zero(point_logits, REVERSE_MASK_RTOL)
            flipped = torch.where(point_logits > 0, -point_logits,
                                  point_logits.abs().clamp_min(
                                      torch.finfo(point_logits.dtype).tiny))
            point_logits = torch.where(near, flipped, point_logits)
        return postprocess(self, cls_logits, point_logits, *args, **kwargs)
    return wrapped


def apply_reverse_tie_order(monkeypatch) -> None:
    """Resolve every k-NN, attention-mask and instance-mask near-tie of the model the other way.

    Patched from outside for the duration of a test (``monkeypatch``): the model's k-NN entry
    point, ``AttentionMask3D.forward`` and ``ODINHead.postprocess_3d`` when called by
    ``ODINHead.predict_by_feat_3d`` (the model's predictions; logits given to ``postprocess_3d``
    directly, such as the official goldens' in the parity check, are data: their decisions are
    exact on every CPU).
    """
    monkeypatch.setattr(neighbors, 'knn', reverse_knn(neighbors.knn))
    monkeypatch.setattr(AttentionMask3D, 'forward', reverse_attention_mask(AttentionMask3D.forward))
    monkeypatch.setattr(ODINHead, 'predict_by_feat_3d',
                        counting_model_predictions(ODINHead.predict_by_feat_3d))
    monkeypatch.setattr(ODINHead, 'postprocess_3d',
                        reverse_instance_masks(ODINHead.postprocess_3d))


# ------------------------------------------------------------- final decisions, after the fact
# The helpers below compare two runs' final decisions (binary masks, top-k order, semantic
# argmax) and accept a difference only where its own threshold is a near-tie.


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


@contextmanager
def attention_mask_injection(head, masks=None) -> Iterator[Tuple[List[Tensor], List[int]]]:
    """Record the head's 3D attention masks, or replace them by another run's.

    A mask logit at 0 may round to either side of ``sigmoid < 0.5``; giving run B run A's masks
    makes a comparison measure the two computations, not the CPU's rounding.

    Args:
        head: an ``ODINHead`` (its ``attn_mask_3d`` module is hooked).
        masks: run A's masks (B, Q, N_vox_max) in call order, or None to record this run's.

    Yields:
        tuple: the masks used, in call order, and a one-element list counting the entries in
        which this run's own masks differed from the injected ones.
    """
    recorded: List[Tensor] = []
    differing = [0]

    def hook(module, args, out):
        if masks is None:
            recorded.append(out.clone())
            return out
        ref = masks[len(recorded)]
        recorded.append(ref)
        differing[0] += int((out != ref).sum())
        return ref.clone()

    handle = head.attn_mask_3d.register_forward_hook(hook)
    try:
        yield recorded, differing
    finally:
        handle.remove()
