"""Numerical parity with the official ODIN implementation on the reference goldens.

A golden (``../shared/reference/golden_<name>.pt`` beside the checkout, made by running the
official code on CPU) stores the inputs of one eval forward pass and the tensors at every
stage. This module fills the **official** state-dict keys (``statedict_<name>.tsv``) with the
deterministic rule of the reference goldens (docs/model.md §3), converts them with
:func:`convert_official_state_dict`, runs our model on the golden inputs and compares every
recorded stage. k-NN selections are compared modulo float64 near-ties and the golden's recorded
ones are injected (:class:`KnnSelections`), so the check gives the same verdict on every CPU.
"""
import itertools
import math
import os.path as osp
import random
import zlib
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple
from unittest import mock

import torch
from torch import Tensor

from projects.odin.ops import knn as ops_knn
from projects.odin.ops.utils import scene_ranges

from .official_converter import (
    check_state_dict,
    convert_official_state_dict,
    infer_architecture,
    odin_model_cfg,
)

#: relative error above which a continuous stage fails
TOLERANCE = 1e-4


def fill_value(key: str, shape: Tuple[int, ...]) -> Tensor:
    """The reference's deterministic parameter value of one official state-dict entry."""
    g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    if key.endswith('num_batches_tracked'):
        return torch.zeros(shape)
    if key.endswith('running_var'):
        return 0.5 + torch.rand(shape, generator=g)
    if key.endswith('running_mean'):
        return 0.1 * torch.randn(shape, generator=g)
    if len(shape) == 1 and key.endswith('weight'):
        return 1 + 0.1 * torch.randn(shape, generator=g)
    if len(shape) <= 1:
        return 0.02 * torch.randn(shape, generator=g)
    return torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))


def read_statedict_tsv(path: str) -> 'OrderedDict[str, Tuple[Tuple[int, ...], str]]':
    """Read ``key<TAB>[shape]<TAB>dtype`` lines (comments skipped)."""
    spec = OrderedDict()
    with open(path) as f:
        for line in f:
            if not line.strip() or line.startswith('#'):
                continue
            key, shape, dtype = line.rstrip('\n').split('\t')[:3]
            dims = [int(d) for d in shape.strip('[]').split(',') if d.strip()]
            spec[key] = (tuple(dims), dtype.replace('torch.', ''))
    return spec


def filled_official_state_dict(tsv_path: str) -> 'OrderedDict[str, Tensor]':
    """Official keys with rule-filled float32 values (non-float entries are left out)."""
    out = OrderedDict()
    for key, (shape, dtype) in read_statedict_tsv(tsv_path).items():
        if dtype.startswith('float'):
            out[key] = fill_value(key, shape)
    return out


# ---------------------------------------------------------------------------- model + inputs
DATASET_SETTINGS = {
    # name prefix -> (ghost points, superpoints, skip classes (0-based))
    'scannet_': (True, True, (18, 19)),
    'scannet200': (True, True, ()),
    's3dis': (True, False, ()),
    'matterport': (True, True, ()),
    'ai2thor': (False, False, ()),
    'alfred': (False, False, ()),
}


def _settings(name: str):
    for prefix, val in DATASET_SETTINGS.items():
        if name.startswith(prefix):
            return val
    return True, True, ()


def build_parity_model(golden: dict, reference_dir: str):
    """Build our model for the golden's architecture and load converted rule-filled weights."""
    from mmdet3d.registry import MODELS
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet3d')
    name = golden['meta']['name']
    official = filled_official_state_dict(osp.join(reference_dir, f'statedict_{name}.tsv'))
    arch = infer_architecture(official)
    ghost, superpoints, skip = _settings(name)
    points = dict(type='MeshPoints', voxel_size=0.02, superpoints=superpoints,
                  visibility_thresh=1e-3) if ghost else dict(type='SensorPoints')
    cfg = odin_model_cfg(**arch, prediction_points=points)
    cfg['test_cfg'].update(skip_classes=skip, topk=100)
    model = MODELS.build(cfg)
    converted = convert_official_state_dict(official)
    model_sd = model.state_dict()
    check_state_dict(converted, model_sd, allow_missing=[r'.*relative_position_index'])
    missing, unexpected = model.load_state_dict(converted, strict=False)
    assert not unexpected and all('relative_position_index' in k for k in missing)
    model.eval()
    return model, arch


def golden_data(golden: dict) -> dict:
    """Our data-preprocessor input (docs/data_contract.md) for the golden's batched input."""
    from mmdet3d.structures import Det3DDataSample
    bi = golden['inputs']['batched_inputs'][0]
    imgs = torch.stack(bi['images'])
    inputs = dict(
        img=[imgs],
        depths=[torch.stack(bi['depths'])],
        cam2world=[torch.stack(bi['poses'])],  # the official batch calls them poses
        intrinsics=[torch.stack(bi['intrinsics'])])
    if bi.get('use_ghost', False) and 'scannet_coords' in bi:
        inputs['points'] = [torch.cat([bi['scannet_coords'], bi['scannet_color'] / 255.], 1)]
        inputs['superpoints'] = [bi['scannet_segments'].long()]
    else:
        # sensor points: depth-valid pixels of the half-resolution unprojected frames
        xyz = bi['original_xyz'][:, ::2, ::2]
        valid = torch.stack(bi['valids'])[:, ::2, ::2]
        inputs['points'] = [xyz[valid]]
    sample = Det3DDataSample(metainfo=dict(img_shape=tuple(imgs.shape[-2:]),
                                           ori_shape=tuple(imgs.shape[-2:]),
                                           num_views=imgs.shape[0]))
    return dict(inputs=inputs, data_samples=[sample])


# ---------------------------------------------------------------------------- comparison
def rel_err(ours: Tensor, ref: Tensor) -> float:
    """Max |ours - ref| / max |ref| (shape mismatch -> inf)."""
    ours, ref = ours.detach().float(), ref.detach().float()
    if tuple(ours.shape) != tuple(ref.shape):
        return float('inf')
    if ref.numel() == 0:
        return 0.0
    return ((ours - ref).abs().max() / ref.abs().max().clamp_min(1e-12)).item()


class Recorder:
    """Forward hooks storing module outputs under names.

    A module called several times in one pass (per view chunk, per scene) has its tensor
    outputs concatenated along dim 0 (views), in call order.
    """

    def __init__(self) -> None:
        self.data: Dict[str, object] = {}
        self.handles = []

    def hook(self, module, name: str, input_index: Optional[int] = None,
             stop: bool = False) -> None:
        """Store the output (or input ``input_index``) of ``module`` under ``name``.

        With ``stop`` the hook then ends the forward pass (raises :class:`_Stop`).
        """
        def fn(mod, args, out):
            value = args[input_index] if input_index is not None else out
            prev = self.data.get(name)
            if isinstance(prev, Tensor) and isinstance(value, Tensor):
                value = torch.cat([prev, value])
            self.data[name] = value
            if stop:
                raise _Stop(name)
        self.handles.append(module.register_forward_hook(fn))

    def remove(self) -> None:
        """Remove all hooks."""
        for h in self.handles:
            h.remove()


# ---------------------------------------------------------------------------- kNN near-ties
#: relative float64 gap between the k-th and (k+1)-th neighbour distance below which a row's
#: k-NN selection is a near-tie: float32 kernels of different CPUs may keep either candidate
TIE_RTOL = 1e-6
#: most forward passes spent searching tie resolutions of k-NN calls the golden does not record
MAX_TRIALS = 64
_CHUNK_PAIRS = 1 << 22


@contextmanager
def substitute_knn(fn: Callable[..., Tuple[Tensor, Tensor]]) -> Iterator[None]:
    """Route every k-NN (and hence IDW) of the ODIN model through ``fn`` inside the block.

    The model calls :func:`projects.odin.models.neighbors.knn` for every neighbour search, so
    this test/benchmark-time substitution from outside reaches all of them; nothing in the model
    changes. ``fn`` has the signature of :func:`projects.odin.ops.knn`.
    """
    from . import neighbors
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


def run_parity(golden_path: str, reference_dir: Optional[str] = None,
               verbose: bool = True, tie_order: str = 'ours',
               modify_model: Optional[Callable[[torch.nn.Module], None]] = None,
               max_trials: int = MAX_TRIALS, view_chunk: int = 0, point_chunk: int = 0
               ) -> Tuple[bool, List[Tuple[str, str, bool]]]:
    """Run the parity check of one golden, robust to the CPU's k-NN tie order.

    The golden's voxel k-NN graphs are compared row by row with ours (rows may differ only at
    float64 near-ties, :func:`near_ties`) and then injected into the forward pass
    (:class:`KnnSelections`), so that the downstream comparison (relative error <= 1e-4,
    instances identical) measures the model, not the CPU. If the pass still fails and k-NN calls
    the golden does not record (IDW interpolations) have near-tie rows, their valid resolutions
    are searched (:func:`_search_resolutions`) and the parity passes if one reproduces the
    golden; the rows and the matching resolution are reported.

    Args:
        golden_path: ``golden_<name>.pt``.
        reference_dir: folder with ``statedict_<name>.tsv`` (default: the golden's folder).
        verbose: print the table.
        tie_order: ``'ours'``, or ``'reverse'`` / ``'shuffle'`` to resolve every near-tie the
            other way first, as a CPU with another float32 tie order would (tests).
        modify_model: called with the loaded model before the forward (tests perturb a weight).
        max_trials: most forward passes of the resolution search.
        view_chunk: views per chunk of the model's 3D forward (0 = the whole batch as one
            chunk, ``test_cfg.view_chunk``).
        point_chunk: pixels per chunk of its point-wise steps (``test_cfg.point_chunk``).

    Returns:
        tuple: overall pass flag and rows ``(stage, value, ok)``.
    """
    reference_dir = reference_dir or osp.dirname(osp.abspath(golden_path))
    golden = torch.load(golden_path, weights_only=True)
    model, arch = build_parity_model(golden, reference_dir)
    if modify_model is not None:
        modify_model(model)
    inter = golden['intermediates']
    recorded = {key[:-len('knn_idx')]: (inter[key[:-len('knn_idx')] + 'voxel_xyz'],
                                        inter[key].long())
                for key in inter if key.endswith('.knn_idx')}

    def run(choices, stop_after=None):
        sel = KnnSelections(recorded, choices=choices, tie_order=tie_order)
        return _forward_and_compare(model, arch, golden, sel, stop_after, view_chunk,
                                    point_chunk), sel

    rows, sel = run({})
    sites: OrderedDict[Tuple, List[TieRow]] = OrderedDict()
    for c in sel.calls:
        if c.recorded is None and c.ties:
            sites.setdefault(c.signature, c.ties)
    n_rows = sum(len(t) for t in sites.values())
    detail = 'our selection'
    if not all(r[2] for r in rows) and sites:
        rows, detail = _search_resolutions(run, rows, sel, sites, max_trials)
    ok = all(r[2] for r in rows)
    rows.append(('knn.unrecorded_near_ties', f'{n_rows} rows', ok or not sites))
    if verbose:
        w = max(len(r[0]) for r in rows)
        print(f'parity of {osp.basename(golden_path)} ({golden["meta"]["name"]}), tolerance '
              f'{TOLERANCE:g} (max |ours - official| / max |official|), k-NN near-tie: float64 '
              f'gap < {TIE_RTOL:g} relative')
        for stage, val, good in rows:
            print(f'{stage:<{w}}  {val:>12}  {"ok" if good else "FAIL"}')
        print(f'{n_rows} near-tie rows in {len(sites)} k-NN problems the golden does not record '
              f'(IDW); resolution that reproduces the golden: {detail}')
        print('PASS' if ok else 'FAIL')
    return ok, rows


#: an attention-mask entry may differ from the golden's where its logit is within this fraction of
#: the level's largest |logit| from 0 (``sigmoid < 0.5`` is then decided by float32 rounding)
MASK_RTOL = 1e-5


def _inject_attn_mask(args: tuple, out: Tensor, refs: List[Tensor],
                      log: List[Tuple[int, int]]) -> Tensor:
    """Forward hook of ``ODINHead.attn_mask_3d``: compare with the golden mask, return it.

    Entries may differ only where the interpolated logit is a near-0 tie (:data:`MASK_RTOL`);
    the golden's mask is returned so that later layers are compared on the same mask.
    """
    i = len(log)
    ref = refs[i] if i < len(refs) else None
    if ref is None or ref.shape != out.shape:
        log.append((-1, -1))
        return out
    diff = torch.nonzero(out != ref.to(out.device))
    unexplained = 0
    if len(diff):
        src_logits, src_xyz, src_offsets, geo, k = args
        from . import neighbors
        tgt = neighbors.idw(src_logits, src_xyz, src_offsets, geo.voxel_xyz, geo.voxel_offsets,
                            k)  # (N_vox, Q)
        starts = torch.tensor(geo.voxel_starts, device=tgt.device)
        vals = tgt[starts[diff[:, 0]] + diff[:, 2], diff[:, 1]]
        unexplained = int((vals.abs() > MASK_RTOL * tgt.abs().max()).sum())
    log.append((len(diff), unexplained))
    return ref.to(out.device).clone()


#: stages with a forward hook: the resolution search stops the forward pass right after them
_HOOKED = {'pixel_decoder.output_conv0.out': 'pd.output',
           'pixel_decoder.lateral_conv0.out': 'pd.lateral',
           'pixel_decoder.deform_encoder_out[0]': 'pd.encoder'}


class _Stop(Exception):
    """Raised by a forward hook to end a partial forward pass."""


def _search_resolutions(run, rows, sel: KnnSelections, sites, max_trials: int):
    """Greedy search over the near-tie resolutions of the unrecorded k-NN problems.

    Repeatedly: take the first failing stage; for every near-tie row (in call order) try its
    other valid neighbour sets and keep one that lowers that stage's summed absolute error
    (the forward pass stops right after the stage when it has a hook); then rerun the whole
    comparison. Effects of different rows are local (IDW rows feed their own voxel), so this
    finds the combination in about one forward pass per row instead of one per combination.

    Returns:
        tuple: the final rows and a description of the resolution that matched (or why none).
    """
    current = {sig: {t.row: sel.calls[[c.signature for c in sel.calls].index(sig)].selected[t.row]
                     for t in ties} for sig, ties in sites.items()}
    trials = 0
    while trials < max_trials:
        failing = next(r[0] for r in rows if not r[2])
        stop = _HOOKED.get(failing)

        def error(choices, stop=stop):
            out, trial_sel = run(choices, stop_after=stop)
            if not stop:
                out = sum(1e3 + (float(v) if _is_number(v) else 0.0) for _, v, good in out
                          if not good)
            return out, {c.signature for c in trial_sel.calls}

        base, reached = error(current)
        improved = False
        for sig, ties in sites.items():
            if sig not in reached:  # the problem comes after the failing stage
                continue
            for t in ties:
                for option in t.resolutions():
                    if option == current[sig][t.row] or trials >= max_trials:
                        continue
                    trial = {s: dict(v) for s, v in current.items()}
                    trial[sig][t.row] = option
                    trials += 1
                    e = error(trial)[0]
                    if e < base:
                        current, base, improved = trial, e, True
        rows, _ = run(current)
        if all(r[2] for r in rows):
            flips = [(i, r, current[sig][r]) for i, (sig, ties) in enumerate(sites.items())
                     for r in (t.row for t in ties)
                     if current[sig][r] != sel.calls[[c.signature for c in sel.calls]
                                                     .index(sig)].selected[r]]
            return rows, (f'{len(flips)} rows resolved the other way after {trials} trial '
                          f'passes: ' + ', '.join(f'problem {i} row {r} -> {list(s)}'
                                                  for i, r, s in flips) if flips else
                          'our selection')
        if not improved:
            return rows, f'none found ({trials} trial passes)'
    return rows, f'none found within {max_trials} trial passes'


def _is_number(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


def _run_3d(model, inputs: dict, samples, view_chunk: int, point_chunk: int):
    """Every decoder prediction of a 3D batch (``view_chunk`` views per chunk, 0 = all)."""
    model.test_cfg.update(view_chunk=view_chunk, point_chunk=point_chunk)
    x = model.extract_feat(inputs, samples)
    cls_list, mask_list = model.decode_head(x, samples)
    return cls_list, mask_list, x.pred_counts, x.points


def _res2_module(backbone) -> Tuple[torch.nn.Module, bool]:
    """The module whose output is backbone res2, and whether that output is Swin tokens."""
    if getattr(backbone, 'res_layers', None):
        return getattr(backbone, backbone.res_layers[0]), False
    return backbone.norm0, True


def _forward_and_compare(model, arch: dict, golden: dict, selections: KnnSelections,
                         stop_after: Optional[str] = None, view_chunk: int = 0,
                         point_chunk: int = 0):
    """One forward pass with ``selections`` as the model's k-NN; the table of stage rows.

    With ``stop_after`` (a hook name of :data:`_HOOKED`) the pass ends after that module and
    the summed absolute error of its stage is returned instead of the table (passes with
    several view chunks run to the end: the module runs once per chunk).

    The model runs its one 3D forward with ``view_chunk`` views per chunk (0 = all); per-view
    stages are recorded chunk by chunk and concatenated, the backbone outputs res3..res5 are read
    at the pixel decoder's input projections, res2 at the backbone module that outputs it (sensor
    points recompute it per chunk later: the first pass is compared), and the multi-scale
    features are the fused voxels broadcast to the pixels (the forward never holds them).
    """
    G = golden['intermediates']
    rec = Recorder()
    bb = model.backbone
    names = ['res3', 'res4', 'res5']
    swin = arch['backbone'] == 'swin'
    for i, blk in enumerate(bb.fusion_blocks):
        stage = bb.fusion_stages[i]
        rec.hook(blk.in_proj, f'bb.in.{stage}')
        rec.hook(blk.attn, f'bb.attn.{stage}')
        rec.hook(blk.out_proj, f'bb.out_proj.{stage}')
    pd = model.decode_head.pixel_decoder
    stop_after_hook = stop_after
    if view_chunk:
        stop_after = None
    for i in range(pd.num_encoder_levels):
        rec.hook(pd.input_convs[i], f'bb.out.{pd.backbone_level(i)}', input_index=0)
    res2_module, res2_tokens = _res2_module(bb)
    rec.hook(res2_module, 'bb.out.0')
    rec.hook(pd.encoder, 'pd.encoder', stop=stop_after == 'pd.encoder')
    if pd.fusion_blocks is not None:
        for i, blk in enumerate(pd.fusion_blocks):
            rec.hook(blk, f'pd.fusion.{i}')
    rec.hook(pd.lateral_convs[0], 'pd.lateral', stop=stop_after == 'pd.lateral')
    rec.hook(pd.output_convs[0], 'pd.output', stop=stop_after == 'pd.output')
    rec.hook(pd.mask_feature, 'pd.mask_feature')
    head = model.decode_head
    mask_refs = [h['attn_mask_next_level'] for h in golden['decoder_heads']]
    masks: List[Tuple[int, int]] = []  # per decoder head: (differing, unexplained) entries
    handles = [head.attn_mask_3d.register_forward_hook(
        lambda mod, args, out: _inject_attn_mask(args, out, mask_refs, masks))]
    memory: Dict[str, Tensor] = {}
    for li in range(3):
        def grab(mod, args, kwargs, li=li):
            memory[f'decoder.layer{li}.cross_attn.memory'] = kwargs['key'].transpose(0, 1)
            memory[f'decoder.layer{li}.cross_attn.memory_pos'] = kwargs['key_pos'].transpose(0, 1)
        handles.append(head.transformer_decoder.layers[li].register_forward_pre_hook(
            grab, with_kwargs=True))
    data = golden_data(golden)
    if stop_after_hook is not None:
        stage = {v: k for k, v in _HOOKED.items()}[stop_after_hook]
        ref = G[stage[:-3]][0] if stage.endswith('[0]') else G[stage]
        try:
            with torch.no_grad(), substitute_knn(selections):
                prep = model.data_preprocessor(data, False)
                _run_3d(model, prep['inputs'], prep['data_samples'], view_chunk, point_chunk)
        except _Stop:
            pass
        finally:
            rec.remove()
            for h in handles:
                h.remove()
        return float((rec.data[stop_after_hook] - ref).abs().sum())
    with torch.no_grad(), substitute_knn(selections):
        data = model.data_preprocessor(data, False)
        inputs, samples = data['inputs'], data['data_samples']
        cls_list, mask_list, counts, points = _run_3d(model, inputs, samples, view_chunk,
                                                      point_chunk)
        logits = points.lift_logits(0, mask_list[-1][0, :, :counts[0]])
        result = head.postprocess_3d(cls_list[-1][0], logits)
        pc = golden.get('postproc_check')
        if pc:
            lg = points.lift_logits(0, pc['pred_masks_centred'][0])
            result_pc = head.postprocess_3d(pc['pred_logits'][0], lg)
    for h in handles:
        h.remove()
    geometry, ghost = points.geometry, getattr(points, 'mesh_voxels', None)
    rec.remove()
    R = rec.data
    rows: List[Tuple[str, str, bool]] = []
    knn_calls = {c.recorded: c for c in selections.calls if c.recorded is not None}

    def cont(stage: str, ours, ref) -> None:
        e = rel_err(ours, ref)
        rows.append((stage, f'{e:.2e}', e <= TOLERANCE))

    def exact(stage: str, ok: bool, detail: str = '') -> None:
        rows.append((stage, 'equal' if ok else f'DIFFERENT {detail}', ok))

    cont('prep.images_normalized_padded', inputs['imgs'].flatten(0, 1),
         G['prep.images_normalized_padded'])
    bi = golden['inputs']['batched_inputs'][0]
    for j in range(4):
        geo = geometry[3 - j]
        cont(f'prep.multi_scale_xyz[{j}]', geo.point_xyz, bi['multi_scale_xyz'][j].reshape(-1, 3))
        ref = G['prep.multi_scale_p2v'][j][0]
        exact(f'prep.multi_scale_p2v[{j}]', bool(torch.equal(geo.p2v, ref)))
    for stage in bb.fusion_stages:
        nm = names[stage - 1]
        pre = f'backbone.layers.{stage}.' if swin else 'backbone.'
        cv = f'{pre}cross_view_attn.' if swin else f'backbone.cross_view_attn.{nm}.'
        geo = geometry[stage]
        cont(f'{cv}in_features', R[f'bb.in.{stage}'], G[f'{cv}in_features'])
        cont(f'{cv}voxel_xyz', geo.voxel_xyz, G[f'{cv}voxel_xyz'])
        call = knn_calls.get(cv)
        if call is None:
            exact(f'{cv}knn_idx', False, 'not injected (voxels do not match the golden)')
        elif call.unexplained:
            exact(f'{cv}knn_idx', False, f'{len(call.unexplained)} rows (not near-ties)')
        else:
            rows.append((f'{cv}knn_idx', f'{len(call.differing)} tie rows' if call.differing
                         else 'equal', True))
        last = max(int(k.split('layer')[-1].split('.')[0]) for k in G
                   if k.startswith(cv + 'layer'))
        cont(f'{cv}layer{last}.out_voxel', R[f'bb.attn.{stage}'],
             G[f'{cv}layer{last}.out_voxel'][:, 0])
        tr = f'{pre}trans_to_res.out' if swin else f'backbone.trans_to_res.{nm}.out'
        cont(tr, R[f'bb.out_proj.{stage}'], G[tr])
    for j, lvl in enumerate(['res2', 'res3', 'res4', 'res5']):
        ref = G[f'backbone.out.{lvl}']
        ours = R[f'bb.out.{j}'][:len(ref)]
        if j == 0 and res2_tokens:
            # Swin tokens (N, h*w, C) -> (N, C, h, w)
            ours = ours.view(len(ref), *ref.shape[2:], -1).permute(0, 3, 1, 2)
        cont(f'backbone.out.{lvl}', ours, ref)
    if ghost is not None:
        exact('prep.scannet_p2v_batched',
              bool(torch.equal(ghost.p2v[0], G['prep.scannet_p2v_batched'][0])))
        if ghost.segments is not None:
            exact('prep.scannet_segments_batched',
                  bool(torch.equal(ghost.segments[0], G['prep.scannet_segments_batched'][0])))
    enc = R['pd.encoder']
    cont('pixel_decoder.deform_encoder_out[0]', enc, G['pixel_decoder.deform_encoder_out'][0])
    if pd.fusion_blocks is not None:
        for i in range(3):
            key = f'sem_seg_head.pixel_decoder.cross_view_attn.{i}.layer0.out_voxel'
            cont(key, R[f'pd.fusion.{i}'], G[key][:, 0])
    for j in range(3):
        ms = geometry[pd.backbone_level(j)].broadcast(R[f'pd.fusion.{j}'])
        cont(f'pixel_decoder.multi_scale_features[{j}]', ms,
             G['pixel_decoder.multi_scale_features'][j])
    cont('pixel_decoder.lateral_conv0.out', R['pd.lateral'], G['pixel_decoder.lateral_conv0.out'])
    cont('pixel_decoder.output_conv0.out', R['pd.output'], G['pixel_decoder.output_conv0.out'])
    cont('pixel_decoder.mask_features', R['pd.mask_feature'], G['pixel_decoder.mask_features'])
    cont('decoder.in.mask_features_xyz', points.src_xyz,
         G['decoder.in.mask_features_xyz'][0])
    for li in range(3):
        for part in ('memory', 'memory_pos'):
            key = f'decoder.layer{li}.cross_attn.{part}'
            cont(key, memory[key], G[key])
    for i in range(len(mask_refs)):
        n_diff, unexplained = masks[i] if i < len(masks) else (-1, -1)
        name = f'decoder_heads[{i}].attn_mask_next_level'
        if n_diff == 0:
            exact(name, True)
        elif unexplained == 0:
            rows.append((name, f'{n_diff} near-0 logits', True))
        else:
            exact(name, False, f'{n_diff} entries ({unexplained} not at a near-0 logit)')
    aux = G['decoder.out.aux_outputs']
    for i in range(len(aux)):
        cont(f'decoder.out.aux_outputs[{i}].pred_logits', cls_list[i], aux[i]['pred_logits'])
        cont(f'decoder.out.aux_outputs[{i}].pred_masks', mask_list[i], aux[i]['pred_masks'])
    cont('decoder.out.pred_logits', cls_list[-1], G['decoder.out.pred_logits'])
    cont('decoder.out.pred_masks', mask_list[-1], G['decoder.out.pred_masks'])
    # post-processed outputs (model output and the official post-processing check)
    _compare_outputs(rows, 'outputs', result, golden['outputs']['processed_results'][0])
    if pc:
        _compare_outputs(rows, 'postproc_check', result_pc, pc['processed_results'][0])
    return rows


def _compare_outputs(rows, prefix: str, ours, ref: dict) -> None:
    sem_ok = torch.equal(ours.pts_semantic_mask.cpu(), ref['semantic_3d'])
    rows.append((f'{prefix}.semantic_3d', 'equal' if sem_ok else
                 f'{(ours.pts_semantic_mask != ref["semantic_3d"]).sum().item()} differ', sem_ok))
    inst = ref['instances_3d']
    order = ref['instances_3d_order_by_score']
    ref_scores = inst['pred_scores'][order]
    ref_classes = inst['pred_classes'][order]
    ref_masks = inst['pred_masks'][:, order].t()
    o = torch.sort(ours.instance_scores, descending=True, stable=True).indices
    our_scores = ours.instance_scores[o]
    our_classes = ours.instance_labels[o] + 1
    our_masks = ours.pts_instance_mask[o]
    e = rel_err(our_scores, ref_scores) if ref_scores.abs().max() > 0 else \
        our_scores.abs().max().item()
    rows.append((f'{prefix}.instances.pred_scores', f'{e:.2e}', e <= TOLERANCE))
    # (class, mask) pairs as multisets, then their scores within the tolerance: score ties make
    # the order ambiguous, and exact float keys would depend on the CPU's last bits
    def key(c, m):
        return int(c), tuple(m.nonzero().flatten().tolist())

    ours_items = sorted((key(c, m), float(s)) for c, m, s in
                        zip(our_classes, our_masks, our_scores))
    ref_items = sorted((key(c, m), float(s)) for c, m, s in
                       zip(ref_classes, ref_masks, ref_scores))
    scale = max(1e-12, float(ref_scores.abs().max()))
    differ = sum(a[0] != b[0] or abs(a[1] - b[1]) > TOLERANCE * scale
                 for a, b in zip(ours_items, ref_items)) + abs(len(ours_items) - len(ref_items))
    rows.append((f'{prefix}.instances (class, mask, score)', 'equal' if not differ else
                 f'{differ} differ', not differ))
