"""k-NN selections compared modulo float64 near-ties, and the model's k-NN replaced from outside.

float32 kernels of different CPUs may order two nearly equidistant neighbours either way; a row
whose k-th and (k+1)-th distances are within :data:`TIE_RTOL` (float64) is a near-tie and any of
its valid neighbour sets is accepted (:func:`near_ties`, :func:`knn_differences`).
:class:`KnnSelections` stands in for the model's k-NN during a parity run (through
:func:`substitute_knn`): it injects the golden's recorded selections and resolves near-ties on
request, so the check gives the same verdict on every CPU.
"""
import itertools
import random
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple
from unittest import mock

import torch
from torch import Tensor

from projects.odin.ops import knn as ops_knn
from projects.odin.ops.utils import scene_ranges

from .tolerances import TIE_RTOL, TOLERANCE, rel_err

_CHUNK_PAIRS = 1 << 22


@contextmanager
def substitute_knn(fn: Callable[..., Tuple[Tensor, Tensor]]) -> Iterator[None]:
    """Route every k-NN (and hence IDW) of the ODIN model through ``fn`` inside the block.

    The model calls :func:`projects.odin.structures.neighbors.knn` for every neighbour search, so
    this test/benchmark-time substitution from outside reaches all of them; nothing in the model
    changes. ``fn`` has the signature of :func:`projects.odin.ops.knn`.
    """
    from projects.odin.structures import neighbors
    with mock.patch.object(neighbors, 'knn', fn):
        yield


def official_knn(query: Tensor, support: Tensor, k: int, query_offsets: Tensor,
                 support_offsets: Tensor) -> Tuple[Tensor, Tensor]:
    """The official CPU harness' k-NN selection: ``torch.cdist`` + ``torch.topk`` per scene.

    docs/model.md §3 describes it (``compute_mode='donot_use_mm_for_euclid_dist'``,
    ``topk(largest=False, sorted=True)``, distances recomputed with the float32 formula of the
    pointops2 kernel, short scenes padded with the scene's first point at distance 1e5). Used by
    the whole-model benchmark as the official formulation. Same signature as
    :func:`projects.odin.ops.knn`.
    """
    idx = torch.empty(query.shape[0], k, dtype=torch.long, device=query.device)
    dist = torch.empty(query.shape[0], k, dtype=query.dtype, device=query.device)
    for (qs, qe), (ss, se) in zip(scene_ranges(query_offsets), scene_ranges(support_offsets)):
        sup = support[ss:se]
        kk = min(k, se - ss)
        step = max(1, (_CHUNK_PAIRS * 4) // max(1, se - ss))
        for c in range(qs, qe, step):
            q = query[c:min(qe, c + step)]
            cd = torch.cdist(q, sup, compute_mode='donot_use_mm_for_euclid_dist')
            order = cd.topk(kk, dim=1, largest=False, sorted=True).indices
            idx[c:c + len(q), :kk] = order + ss
            dist[c:c + len(q), :kk] = ((q[:, None, :] - sup[order])**2).sum(-1).sqrt()
        if kk < k:
            idx[qs:qe, kk:] = ss
            dist[qs:qe, kk:] = 1e5
    return idx, dist


@dataclass
class TieRow:
    """One query row whose k nearest neighbours are ambiguous at float32 resolution.

    Attributes:
        row: global query row.
        fixed: support rows certainly among the k nearest (float64 distance clearly below the
            k-th).
        group: support rows whose float64 distance is within :data:`TIE_RTOL` of the k-th.
        slots: how many of ``group`` belong to the k nearest.
    """

    row: int
    fixed: Tuple[int, ...]
    group: Tuple[int, ...]
    slots: int

    def resolutions(self) -> List[Tuple[int, ...]]:
        """Every valid neighbour set of the row (sorted support rows)."""
        return [tuple(sorted(self.fixed + c)) for c in itertools.combinations(self.group,
                                                                              self.slots)]

    def accepts(self, selection: Sequence[int]) -> bool:
        """Whether ``selection`` (support rows) is one of the valid neighbour sets."""
        return tuple(sorted(int(i) for i in selection)) in self.resolutions()


def near_ties(query: Tensor, support: Tensor, k: int, query_offsets: Tensor,
              support_offsets: Tensor, rtol: float = TIE_RTOL) -> List[TieRow]:
    """Rows whose k-th and (k+1)-th nearest support points are closer than ``rtol`` (float64).

    Distances are evaluated in float64 from the float32 coordinates, so the rows found do not
    depend on the CPU's float32 kernels.

    Args:
        query: ``(M, 3)`` query coordinates.
        support: ``(N, 3)`` support coordinates.
        k: neighbours per query.
        query_offsets: ``(B,)`` cumulative end index of each query scene.
        support_offsets: ``(B,)`` cumulative end index of each support scene.
        rtol: relative gap of a near-tie.

    Returns:
        list[TieRow]: the near-tie rows in ascending row order.
    """
    out: List[TieRow] = []
    q64, s64 = query.detach().double().cpu(), support.detach().double().cpu()
    for (qs, qe), (ss, se) in zip(scene_ranges(query_offsets.cpu()),
                                  scene_ranges(support_offsets.cpu())):
        n = se - ss
        if n <= k or qe == qs:
            continue  # every support point is selected: no choice to make
        sup = s64[ss:se]
        step = max(1, _CHUNK_PAIRS // n)
        for c in range(qs, qe, step):
            d = torch.cdist(q64[c:min(qe, c + step)], sup)
            vals = d.topk(k + 1, dim=1, largest=False, sorted=True).values
            kth, nxt = vals[:, k - 1], vals[:, k]
            for r in torch.nonzero(nxt - kth <= rtol * kth).flatten().tolist():
                dr, tol = d[r], rtol * kth[r]
                group = torch.nonzero((dr - kth[r]).abs() <= tol).flatten()
                fixed = torch.nonzero(dr < kth[r] - tol).flatten()
                out.append(TieRow(c + r, tuple((fixed + ss).tolist()),
                                  tuple((group + ss).tolist()), k - len(fixed)))
    return out


def knn_differences(idx: Tensor, ref: Tensor, query: Tensor, support: Tensor, k: int,
                    query_offsets: Tensor, support_offsets: Tensor,
                    ties: Optional[List[TieRow]] = None) -> Tuple[List[int], List[int]]:
    """Rows where two k-NN selections differ, and those of them that are not near-ties.

    Args:
        idx: ``(M, k)`` one selection (e.g. ours).
        ref: ``(M, k)`` the other (e.g. the golden's).
        query: ``(M, 3)`` query coordinates of the k-NN problem.
        support: ``(N, 3)`` its support coordinates.
        k: its neighbours per query.
        query_offsets: ``(B,)`` cumulative end index of each query scene.
        support_offsets: ``(B,)`` cumulative end index of each support scene.
        ties: its :func:`near_ties` rows, if already computed.

    Returns:
        tuple: the differing rows, and the differing rows where ``ref``'s selection is not a valid
        resolution of a near-tie (a real difference).
    """
    if ties is None:
        ties = near_ties(query, support, k, query_offsets, support_offsets)
    tie_rows = {t.row: t for t in ties}
    same = (torch.sort(idx, 1).values == torch.sort(ref.to(idx), 1).values).all(1)
    differing = torch.nonzero(~same).flatten().tolist()
    unexplained = [r for r in differing
                   if r not in tie_rows or not tie_rows[r].accepts(ref[r].tolist())]
    return differing, unexplained


def _with_selection(idx: Tensor, dist: Tensor, query: Tensor, support: Tensor, row: int,
                    selection: Sequence[int]) -> None:
    """Write ``selection`` (support rows) into row ``row`` of ``idx``/``dist``, nearest first."""
    sel = torch.tensor(list(selection), dtype=torch.long, device=idx.device)
    d2 = ((query[row][None] - support[sel])**2).sum(-1)
    order = torch.argsort(d2, stable=True)
    idx[row, :len(sel)] = sel[order]
    dist[row, :len(sel)] = d2[order].sqrt().to(dist.dtype)


def call_signature(query: Tensor, support: Tensor, k: int) -> Tuple:
    """Identity of a k-NN problem: identical coordinates give identical selections."""
    def crc(t: Tensor) -> int:
        return zlib.crc32(t.detach().cpu().contiguous().numpy().tobytes())
    return (k, tuple(query.shape), tuple(support.shape), crc(query), crc(support))


@dataclass
class KnnCall:
    """What :class:`KnnSelections` saw of one k-NN call of the model.

    Attributes:
        index: call number within the forward pass.
        signature: :func:`call_signature` of the call (repeated calls on the same points share
            it, and a CPU resolves their ties the same way).
        shape: ``(queries, supports, k)``.
        recorded: name of the golden stage whose selection was injected, or None.
        ties: the call's near-tie rows.
        selected: the neighbour set returned for every near-tie row (sorted support rows).
        differing: rows where our selection and the golden's differ (recorded calls).
        unexplained: differing rows that are not near-ties (a real difference).
    """

    index: int
    signature: Tuple
    shape: Tuple[int, int, int]
    recorded: Optional[str]
    ties: List[TieRow]
    selected: Dict[int, Tuple[int, ...]] = field(default_factory=dict)
    differing: List[int] = field(default_factory=list)
    unexplained: List[int] = field(default_factory=list)


class KnnSelections:
    """Stand-in for the model's k-NN during a parity run (use with :func:`substitute_knn`).

    Every call runs the model's own k-NN (:func:`projects.odin.ops.knn`), finds its near-tie rows
    (:func:`near_ties`) and then:

    * a call whose support points are a voxel set the golden recorded a k-NN graph for (matched
      by coordinates) is compared row by row with the golden's selection - rows may differ only
      at near-ties - and the golden's selection is returned, so that the rest of the forward pass
      measures the model, not the CPU's tie order;
    * any other call returns our selection, except near-tie rows for which ``choices`` names a
      resolution.

    Args:
        recorded: golden k-NN graphs: name -> (voxel xyz ``(N, 3)``, indices ``(N, k)``).
        choices: call signature -> {row: neighbour set} resolutions to apply.
        tie_order: ``'ours'``; ``'reverse'`` / ``'shuffle'`` first resolve every near-tie row
            with the last / a random valid set, as a CPU with another tie order would (the same
            way for repeated calls on the same points).
        seed: seed of ``'shuffle'``.
    """

    def __init__(self, recorded: Dict[str, Tuple[Tensor, Tensor]],
                 choices: Optional[Dict[Tuple, Dict[int, Tuple[int, ...]]]] = None,
                 tie_order: str = 'ours', seed: int = 0) -> None:
        if tie_order not in ('ours', 'reverse', 'shuffle'):
            raise ValueError(f"tie_order must be 'ours', 'reverse' or 'shuffle', got {tie_order}")
        self.recorded = dict(recorded)
        self.choices = choices or {}
        self.tie_order = tie_order
        self.seed = seed
        self.calls: List[KnnCall] = []

    def _match(self, query: Tensor, support: Tensor, k: int) -> Optional[str]:
        if query is not support:
            return None
        for name, (xyz, idx) in self.recorded.items():
            if (idx.shape[1] == k and tuple(xyz.shape) == tuple(support.shape)
                    and rel_err(support, xyz) <= TOLERANCE):
                return name
        return None

    def __call__(self, query: Tensor, support: Tensor, k: int, query_offsets: Tensor,
                 support_offsets: Tensor) -> Tuple[Tensor, Tensor]:
        """The model's k-NN with the substitutions above; signature of ``ops.knn``."""
        idx, dist = ops_knn(query, support, k, query_offsets, support_offsets)
        ties = near_ties(query, support, k, query_offsets, support_offsets)
        sig = call_signature(query, support, k)
        call = KnnCall(len(self.calls), sig, (query.shape[0], support.shape[0], k),
                       self._match(query, support, k), ties)
        self.calls.append(call)
        chosen = self.choices.get(sig, {}) if call.recorded is None else {}
        for t in ties:
            options = t.resolutions()
            if t.row in chosen:
                pick = chosen[t.row]
            elif self.tie_order == 'reverse':
                pick = options[-1]
            elif self.tie_order == 'shuffle':
                pick = random.Random(hash((self.seed, sig, t.row))).choice(options)
            else:
                pick = None
            if pick is not None:
                _with_selection(idx, dist, query, support, t.row, pick)
            call.selected[t.row] = tuple(sorted(idx[t.row, :len(pick or options[0])].tolist()))
        if call.recorded is not None:
            ref = self.recorded.pop(call.recorded)[1].to(idx)
            call.differing, call.unexplained = knn_differences(
                idx, ref, query, support, k, query_offsets, support_offsets, ties)
            idx = ref.clone()
            dist = torch.where(dist >= 1e5, dist,
                               ((query[:, None] - support[idx])**2).sum(-1).sqrt())
        return idx, dist
