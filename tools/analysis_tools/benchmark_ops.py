"""Benchmark ODIN's 3D ops against the official formulation and brute force.

Prints one table:

* the cross-view block (:class:`projects.odin.layers.CrossViewAttention`) against a straightforward
  implementation of the official formulation (gather the k neighbours, add the relative-position
  encoding, ``nn.MultiheadAttention``: :class:`projects.odin.parity.NaiveCrossViewAttention`),
  same weights, same neighbour indices, forward (eval, no_grad) and forward+backward (gradients of
  the input features and all parameters): median wall time, peak memory, ratios and the largest
  relative error between the two (outputs, and for fwd+bwd also every gradient);
* the accuracy of both against float64: the same block (same weights, inputs, neighbour indices
  and output gradient) evaluated in float64 is the reference, and for each pass the norm-wise
  relative error ``|x - x64| / |x64|`` of the output and of every gradient is reported for ours
  (``ours_err_fp64``) and for the official formulation (``official_err_fp64``), with their ratio.
  Ours must be no further from float64 than ``FP64_BOUND`` (1.5) times the official
  formulation's error on every tensor; the table says whether that holds. (Comparing ours with
  the official float32 run mixes both rounding errors; this separates them.) The reference is the
  official formulation in float64; ours in float64 agrees with it to < 1e-10 (tested). The FFN's
  ReLU is a discrete decision: a pre-activation within float32 rounding of 0 (a few per 20M
  entries) may fall on either side in a float32 run, and the side flips the gradient of that
  entry by O(1) - which alone made either error up to 1e-4 and their ratio anything from 0.01 to
  1000 depending on the BLAS code path (docs/ops.md). So each float32 run is compared with a
  float64 run that takes that run's ReLU decisions where the float64 pre-activation is a near-tie
  (within ``RELU_TIE_RTOL`` of the layer's RMS pre-activation) - the same rule as the parity
  check's k-NN near-ties; the adopted and any unexplained (outside the margin) decisions are
  reported;
* our kNN (:func:`projects.odin.ops.knn`, k=8, every point queries its own scene) against brute
  force ``torch.cdist + torch.topk`` at 20k/100k/400k points;
* multi-scale deformable attention (:func:`projects.odin.ops.multi_scale_deform_attn`: our
  compiled kernel on CPU, mmcv's CUDA op on GPU) against mmcv's PyTorch path
  (``multi_scale_deformable_attn_pytorch``, what mmcv runs on CPU) at the pixel decoder's size:
  ``--msda-views`` views of ``--msda-hw`` input pixels, levels 1/8, 1/16 and 1/32, 256 channels,
  8 heads, 4 points (every pixel of every level queries, as in the encoder; locations = the
  pixel's reference point plus offsets of a few pixels), forward and forward+backward (gradients
  of value, locations and weights), with the errors of both against a float64 run.

Timing: ``time.perf_counter`` around each call (``torch.cuda.synchronize`` on GPU), one warm-up,
then ``--repeats`` runs with ours and the official one interleaved, median reported. Brute-force
kNN beyond ``--brute-max-queries`` queries is timed on that many queries (in chunks of 4,096, the
same code path) and scaled linearly to all queries (its cost is exactly linear in the number of
queries); the table marks such figures with ``*``. Use ``--brute-max-queries 0`` to time all.

Peak memory: on CPU, the peak of live tensor bytes above the level before the call, from the
allocation/free records of ``torch.profiler`` (``profile_memory=True``): every CPU tensor
allocation and free goes through c10's allocator, which the profiler records with a timestamp;
the running sum of those records gives the exact peak of tensor memory (autograd-saved tensors,
temporaries, outputs, gradients; not the interpreter or allocator slack). It is measured in a
separate, untimed call. On CUDA, ``torch.cuda.max_memory_allocated`` minus the level before.

Examples::

    python tools/analysis_tools/benchmark_ops.py
    python tools/analysis_tools/benchmark_ops.py --json work_dirs/ops_bench.json
    python tools/analysis_tools/benchmark_ops.py --device cuda
"""
import argparse
import copy
import json
import math
import os
import statistics
import sys
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Tuple
from unittest import mock

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from projects.odin.layers import (
    CrossViewAttention,  # noqa: E402
    convert_official_cross_view_state_dict,  # noqa: E402
)
from projects.odin.ops import (  # noqa: E402
    ext_available,
    ext_has_cuda,
    get_backend,
    knn,
    multi_scale_deform_attn,
    multi_scale_deform_attn_pytorch,
    set_backend,  # noqa: E402
)
from projects.odin.ops.knn import knn_grid_pytorch  # noqa: E402
from projects.odin.parity.cross_view_reference import NaiveCrossViewAttention  # noqa: E402

BRUTE_CHUNK = 4096
#: ours may be at most this many times further from float64 than the official formulation
FP64_BOUND = 1.5
#: an FFN pre-activation whose float64 value lies within this fraction of its layer's RMS of 0 is a
#: ReLU near-tie (float32 runs of the default block deviate from float64 by <= 3e-6 RMS, measured)
RELU_TIE_RTOL = 1e-4


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Benchmark the ODIN 3D ops.')
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--voxels', type=int, default=20000)
    parser.add_argument('--k', type=int, default=8)
    parser.add_argument('--channels', type=int, default=256)
    parser.add_argument('--heads', type=int, default=8)
    parser.add_argument('--ffn', type=int, default=1024)
    parser.add_argument('--layers', type=int, default=2,
                        help='attention layers of the block (official backbone res3/res5: 2)')
    parser.add_argument('--knn-points', type=int, nargs='+', default=[20000, 100000, 400000])
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--brute-max-queries', type=int, default=20000,
                        help='time brute-force kNN on at most this many queries and scale '
                        'linearly (0: time all queries)')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    parser.add_argument('--backend', default='auto', choices=['auto', 'pytorch'],
                        help="'pytorch' times the pure-PyTorch twins instead of the kernels")
    parser.add_argument('--skip-block', action='store_true')
    parser.add_argument('--skip-knn', action='store_true')
    parser.add_argument('--skip-msda', action='store_true')
    parser.add_argument('--msda-views', type=int, default=10,
                        help='views (batch) of the deformable-attention benchmark')
    parser.add_argument('--msda-hw', type=int, nargs=2, default=(256, 320), metavar=('H', 'W'),
                        help='padded input image size; levels are 1/8, 1/16, 1/32 of it')
    parser.add_argument('--msda-channels', type=int, default=256)
    parser.add_argument('--msda-heads', type=int, default=8)
    parser.add_argument('--msda-points', type=int, default=4)
    parser.add_argument('--json', metavar='OUT', help='also write the figures as JSON')
    parser.add_argument('--profile', metavar='TXT', default=None,
                        help='instead of timing: profile one fwd+bwd of the block (ours, then '
                        'the official formulation) with the torch profiler; write the operator '
                        'tables, sorted by device time, to TXT')
    return parser.parse_args(argv)


def sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def timed_pair(fn_a: Callable[[], object], fn_b: Callable[[], object], repeats: int,
               device: torch.device) -> Tuple[List[float], List[float]]:
    """Run times (s) of two functions, interleaved ``repeats`` times (same machine state)."""
    runs_a: List[float] = []
    runs_b: List[float] = []
    for _ in range(repeats):
        runs_a.append(timed(fn_a, device))
        runs_b.append(timed(fn_b, device))
    return runs_a, runs_b


def peak_memory_mb(fn: Callable[[], object], device: torch.device) -> float:
    """Peak tensor memory (MB) above the level before ``fn``; see the module docstring."""
    if device.type == 'cuda':
        sync(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        sync(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    records = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                     if e.name() == '[memory]')
    live = peak = 0
    for _, nbytes in records:
        live += nbytes
        peak = max(peak, live)
    return peak / 2**20


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def voxel_scene(n: int, device: torch.device, seed: int = 0):
    """``n`` voxel centroids in distinct 8 cm cells of a 40x40x(n/1600) grid, +-0.3 jitter.

    The official CPU timing (reference timings, section (a)) uses the same construction.
    """
    g = torch.Generator().manual_seed(seed)
    depth = max(20, math.ceil(n / 1600))
    cells = torch.randperm(40 * 40 * depth, generator=g)[:n]
    grid = torch.stack([cells // (40 * depth), (cells // depth) % 40, cells % depth], 1).float()
    xyz = (grid + (torch.rand(n, 3, generator=g) - 0.5) * 0.6) * 0.08
    return xyz.to(device)


def room_surfaces(n: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    """``n`` points on the floor and walls of a 6 x 6 x 3 m room and on 12 boxes (+2 mm noise)."""
    g = torch.Generator().manual_seed(seed)
    planes = [((0, 0, 0), (6, 0, 0), (0, 6, 0)), ((0, 0, 0), (6, 0, 0), (0, 0, 3)),
              ((0, 0, 0), (0, 6, 0), (0, 0, 3)), ((6, 0, 0), (0, 6, 0), (0, 0, 3))]
    for _ in range(12):
        o = torch.rand(3, generator=g) * torch.tensor([5.0, 5.0, 0.0])
        s = 0.3 + torch.rand(3, generator=g) * 0.7
        planes += [((o[0], o[1], s[2]), (s[0], 0, 0), (0, s[1], 0)),
                   ((o[0], o[1], 0), (s[0], 0, 0), (0, 0, s[2])),
                   ((o[0], o[1], 0), (0, s[1], 0), (0, 0, s[2]))]
    origin = torch.tensor([[float(v) for v in p[0]] for p in planes])
    du = torch.tensor([[float(v) for v in p[1]] for p in planes])
    dv = torch.tensor([[float(v) for v in p[2]] for p in planes])
    area = torch.linalg.cross(du, dv).norm(dim=1)
    which = torch.multinomial(area, n, replacement=True, generator=g)
    uv = torch.rand(n, 2, generator=g)
    pts = origin[which] + uv[:, :1] * du[which] + uv[:, 1:] * dv[which]
    return (pts + 0.002 * torch.randn(n, 3, generator=g)).to(device)


def _errors(out, model, ref_out, ref_model, grads: bool) -> Dict[str, float]:
    """Norm-wise relative errors of one run against another, per tensor (our names).

    ``out`` / ``ref_out`` are the output (forward) or (output, input gradient) (fwd_bwd);
    parameter gradients are read from the models, official ones converted to our names.
    """
    def named_grads(m):
        g = {k: p.grad for k, p in m.named_parameters()}
        return g if isinstance(m, CrossViewAttention) else convert_official_cross_view_state_dict(g)

    if not grads:
        return {'output': rel_err(out, ref_out)}
    errs = {'output': rel_err(out[0], ref_out[0]),
            'grad:voxel_feats': rel_err(out[1], ref_out[1])}
    ga, gb = named_grads(model), named_grads(ref_model)
    errs.update({f'grad:{k}': rel_err(ga[k], gb[k]) for k in sorted(gb)})
    return errs


def ffn_input_linears(block: nn.Module) -> List[nn.Module]:
    """The FFN input linears (``linear1``) of a block, in layer order: ours or the official."""
    layers = block.layers if isinstance(block, CrossViewAttention) else block.ffn_layers
    return [layer.linear1 for layer in layers]


@contextmanager
def record_relu_decisions(block: nn.Module, out: List[Tensor]) -> Iterator[None]:
    """Append every FFN ReLU decision (``pre-activation > 0``) of ``block``'s forward to ``out``.

    Forward hooks on the FFN input linears; a hook registered earlier on them (e.g. one that
    perturbs the pre-activation) is seen, as the ReLU sees it.
    """
    handles = [m.register_forward_hook(lambda mod, args, z: out.append((z > 0).detach()))
               for m in ffn_input_linears(block)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def relu_decisions_adopted(reference: nn.Module, decisions: List[Tensor],
                           stats: Dict[str, int]) -> Iterator[None]:
    """The official-formulation ``reference`` block takes ``decisions`` at its ReLU near-ties.

    Inside the block every FFN computes ``x + linear2(z * d)`` with ``z = linear1(norm(x))`` and
    ``d`` its own decision ``z > 0``, except where ``|z| <= RELU_TIE_RTOL * RMS(z)``: there ``d``
    is the recorded decision of the run being measured (same value and gradient as ReLU
    otherwise). ``stats['adopted']`` counts near-tie decisions taken from ``decisions`` that differ
    from the reference's own, ``stats['unexplained']`` differing decisions outside the margin
    (a real difference, not rounding).

    Args:
        reference: a :class:`NaiveCrossViewAttention` (normally float64).
        decisions: one bool tensor per FFN call, as :func:`record_relu_decisions` gives them.
        stats: counters ``adopted`` and ``unexplained``, incremented.
    """
    calls = iter(decisions)

    def ffn_forward(ffn: nn.Module) -> Callable[[Tensor], Tensor]:
        def forward(tgt: Tensor) -> Tensor:
            z = ffn.linear1(ffn.norm(tgt))
            own = z > 0
            theirs = next(calls).to(z.device).reshape(z.shape)
            near = z.detach().abs() <= RELU_TIE_RTOL * z.detach().square().mean().sqrt()
            differ = own != theirs
            stats['adopted'] += int((differ & near).sum())
            stats['unexplained'] += int((differ & ~near).sum())
            keep = torch.where(near, theirs, own).to(z.dtype)
            return tgt + ffn.dropout(ffn.linear2(ffn.dropout(z * keep)))
        return forward

    with ExitStack() as stack:
        for ffn in reference.ffn_layers:
            stack.enter_context(mock.patch.object(ffn, 'forward', ffn_forward(ffn)))
        yield


def fp64_summary(ours: Dict[str, float], official: Dict[str, float],
                 bound: float = FP64_BOUND) -> dict:
    """Per-tensor ratio ours / official of the errors against float64, the worst and the verdict.

    A tensor whose official error is exactly 0 counts as within the bound only if ours is 0 too.
    """
    ratio = {k: (ours[k] / official[k] if official[k] > 0 else
                 (0.0 if ours[k] == 0 else math.inf)) for k in ours}
    worst = max(ratio, key=ratio.get)
    return dict(err_fp64_ratio=ratio, worst_ratio=ratio[worst], worst_ratio_tensor=worst,
                fp64_bound=bound, fp64_bound_holds=bool(ratio[worst] <= bound))


def block_problem(args, device: torch.device) -> Tuple[nn.Module, nn.Module, Tensor, Tensor,
                                                       Tensor, Tensor]:
    """The seeded block benchmark problem: both blocks with the same weights and their inputs.

    Returns:
        tuple: ``ours``, ``official`` (on ``device``), voxel features ``(N, C)``, voxel xyz
        ``(N, 3)``, neighbour indices ``(N, k)`` and an output gradient ``(N, C)``.
    """
    torch.manual_seed(0)
    c = args.channels
    xyz = voxel_scene(args.voxels, device)
    feats = torch.randn(args.voxels, c, device=device)
    offsets = torch.tensor([args.voxels], device=device)
    idx, _ = knn(xyz, xyz, args.k, offsets, offsets)
    official = NaiveCrossViewAttention(c, args.layers, args.heads, args.ffn).to(device)
    ours = CrossViewAttention(c, args.layers, args.heads, args.ffn, num_neighbors=args.k)
    ours.load_state_dict(convert_official_cross_view_state_dict(official.state_dict()))
    ours.to(device)
    grad_out = torch.randn(args.voxels, c, device=device)
    return ours, official, feats, xyz, idx, grad_out


def bench_block(args, device: torch.device) -> Dict[str, Dict[str, float]]:
    ours, official, feats, xyz, idx, grad_out = block_problem(args, device)
    # the float64 reference: the same block, weights, inputs and output gradient in float64
    ref64 = copy.deepcopy(official).double()
    inputs = {torch.float32: (feats, xyz, grad_out),
              torch.float64: (feats.double(), xyz.double(), grad_out.double())}
    results = {}

    def fwd(model, dtype=torch.float32):
        f, x, _ = inputs[dtype]
        model.eval()
        with torch.no_grad():
            return model(f, x, idx)

    def fwd_bwd(model, dtype=torch.float32):
        f0, x, g = inputs[dtype]
        model.train()   # dropout is 0: train mode changes nothing numerically
        model.zero_grad(set_to_none=True)
        f = f0.clone().requires_grad_(True)
        out = model(f, x, idx)
        out.backward(g)
        return out.detach(), f.grad

    for name, step in (('fwd', fwd), ('fwd_bwd', fwd_bwd)):
        grads = name == 'fwd_bwd'
        outs, decisions, err64, ties = {}, {}, {}, {}
        for key, model in (('ours', ours), ('official', official)):  # warm-up; error checks
            decisions[key] = []
            with record_relu_decisions(model, decisions[key]):
                outs[key] = step(model)
        errs = _errors(outs['ours'], ours, outs['official'], official, grads)
        for key, model in (('ours', ours), ('official', official)):
            # float64 with this run's ReLU decisions at near-ties (grads are read right after)
            ties[key] = dict(adopted=0, unexplained=0)
            with relu_decisions_adopted(ref64, decisions[key], ties[key]):
                out_ref = step(ref64, torch.float64)
            err64[key] = _errors(outs[key], model, out_ref, ref64, grads)
        err_ours64, err_off64 = err64['ours'], err64['official']
        worst = max(errs, key=errs.get)
        del outs, out_ref, decisions
        t_ours, t_off = timed_pair(lambda s=step: s(ours), lambda s=step: s(official),
                                   args.repeats, device)
        mem_ours = peak_memory_mb(lambda s=step: s(ours), device)
        mem_off = peak_memory_mb(lambda s=step: s(official), device)
        ours_s, off_s = statistics.median(t_ours), statistics.median(t_off)
        results[name] = dict(ours_s=ours_s, official_s=off_s, speedup=off_s / ours_s,
                             ours_peak_mb=mem_ours, official_peak_mb=mem_off,
                             mem_ratio=mem_ours / mem_off, max_rel_err=errs[worst],
                             max_rel_err_tensor=worst,
                             output_rel_err=errs['output'],
                             ours_err_fp64=err_ours64, official_err_fp64=err_off64,
                             relu_near_ties=ties, **fp64_summary(err_ours64, err_off64))
        print(f'  block {name}: done', file=sys.stderr, flush=True)
    return results


def print_fp64_table(block: Dict[str, dict]) -> None:
    """Per pass: output, input gradient, worst parameter gradients vs float64, and the verdict."""
    print(f'Error against float64 (norm-wise relative; same block, weights and inputs in '
          f'float64, with the float32 run\'s FFN ReLU decisions where the float64 pre-activation '
          f'is within {RELU_TIE_RTOL:g} RMS of 0); bound: ours <= {FP64_BOUND}x official on every '
          f'tensor')
    print('| pass    | tensor                               | ours_err_fp64 | official_err_fp64 '
          '| ratio |')
    print('|---------|--------------------------------------|--------------:|------------------:'
          '|------:|')
    for name, r in block.items():
        ours, off, ratio = r['ours_err_fp64'], r['official_err_fp64'], r['err_fp64_ratio']
        rows = ['output'] + (['grad:voxel_feats'] if 'grad:voxel_feats' in ours else [])
        params = [k for k in ours if k not in rows]
        if params:  # the parameter gradients furthest from float64 (ours, official) and ratio
            rows += list(dict.fromkeys([max(params, key=ours.get), max(params, key=off.get),
                                        max(params, key=ratio.get)]))
        for k in rows:
            print(f'| {name:<7} | {k[:36]:<36} | {ours[k]:13.2e} | {off[k]:17.2e} | '
                  f'{ratio[k]:5.2f} |')
        print(f"| {name:<7} | {'max over all ' + str(len(ours)) + ' tensors':<36} | "
              f'{max(ours.values()):13.2e} | {max(off.values()):17.2e} | '
              f"{r['worst_ratio']:5.2f} |")
    for name, r in block.items():
        verdict = 'holds' if r['fp64_bound_holds'] else 'DOES NOT HOLD'
        print(f"{name}: ours <= {FP64_BOUND}x official against float64 on every tensor: "
              f"{verdict} (worst ratio {r['worst_ratio']:.2f}, {r['worst_ratio_tensor']})")
        ties = r['relu_near_ties']
        print(f"{name}: FFN ReLU near-tie decisions taken from the float32 run: "
              f"ours {ties['ours']['adopted']}, official {ties['official']['adopted']}; "
              f"differing decisions outside the margin: ours {ties['ours']['unexplained']}, "
              f"official {ties['official']['unexplained']}")


def brute_knn(pts: torch.Tensor, k: int, max_queries: int) -> float:
    """Time cdist+topk over ``max_queries`` queries (all if 0) and scale to all queries."""
    n = pts.shape[0]
    nq = n if max_queries <= 0 else min(n, max_queries)

    def run():
        for s in range(0, nq, BRUTE_CHUNK):
            d = torch.cdist(pts[s:s + BRUTE_CHUNK], pts)
            torch.topk(d, k, dim=1, largest=False, sorted=True)

    return timed(run, pts.device) * n / nq


def bench_knn(args, device: torch.device) -> Dict[str, Dict[str, float]]:
    results = {}
    for n in args.knn_points:
        pts = room_surfaces(n, device, seed=n)
        off = torch.tensor([n], device=device)
        knn(pts, pts, args.k, off, off)                      # warm-up
        ours = statistics.median(timed(lambda p=pts, o=off: knn(p, p, args.k, o, o), device)
                                 for _ in range(max(1, args.repeats)))
        brute_knn(pts[:min(n, 2 * BRUTE_CHUNK)], args.k, 0)   # warm-up
        brute = brute_knn(pts, args.k, args.brute_max_queries)
        timed_queries = n if args.brute_max_queries <= 0 else min(n, args.brute_max_queries)
        # the grid twin (batched tensor operations): its time, and whether it is bit-equal
        off_cpu = off.cpu()
        grid_idx, grid_d2 = knn_grid_pytorch(pts, pts, args.k, off_cpu, off_cpu)  # warm-up
        grid = statistics.median(
            timed(lambda p=pts, o=off_cpu: knn_grid_pytorch(p, p, args.k, o, o), device)
            for _ in range(max(1, args.repeats)))
        ref_idx, ref_dist = knn(pts, pts, args.k, off, off)
        grid_equal = bool(torch.equal(grid_idx, ref_idx) and
                          torch.equal(grid_d2.sqrt(), ref_dist))
        results[str(n)] = dict(ours_s=ours, brute_s=brute, speedup=brute / ours,
                               brute_queries_timed=timed_queries, grid_twin_s=grid,
                               grid_twin_equal=grid_equal)
        print(f'  knn {n}: done', file=sys.stderr, flush=True)
    return results


def msda_problem(args, device: torch.device, seed: int = 0) -> Dict[str, torch.Tensor]:
    """Inputs of the pixel decoder's deformable attention at ``args``' size (float32)."""
    g = torch.Generator().manual_seed(seed)
    h, w = args.msda_hw
    shapes = torch.tensor([(math.ceil(h / s), math.ceil(w / s)) for s in (8, 16, 32)])
    sizes = shapes.prod(1)
    start = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    bs, heads, points = args.msda_views, args.msda_heads, args.msda_points
    nk, levels, dims = int(sizes.sum()), len(shapes), args.msda_channels // heads
    # reference point of every query: its pixel centre (normalised), on all levels
    refs = torch.cat([torch.stack(torch.meshgrid((torch.arange(hl) + 0.5) / hl,
                                                 (torch.arange(wl) + 0.5) / wl,
                                                 indexing='ij')[::-1], -1).reshape(-1, 2)
                      for hl, wl in shapes.tolist()])                         # (nk, 2) as (x, y)
    offsets = torch.randn(bs, nk, heads, levels, points, 2, generator=g) * 2.0   # pixels
    wh = shapes.flip(1).float().view(1, 1, 1, levels, 1, 2)
    loc = refs.view(1, nk, 1, 1, 1, 2) + offsets / wh
    attn = torch.softmax(torch.randn(bs, nk, heads, levels * points, generator=g), -1)
    p = dict(value=torch.randn(bs, nk, heads, dims, generator=g), value_spatial_shapes=shapes,
             level_start_index=start, sampling_locations=loc,
             attention_weights=attn.view(bs, nk, heads, levels, points),
             grad_output=torch.randn(bs, nk, heads * dims, generator=g))
    return {k: v.to(device) for k, v in p.items()}


def bench_msda(args, device: torch.device) -> Dict[str, Dict[str, float]]:
    """Ours (:func:`multi_scale_deform_attn`) vs mmcv's PyTorch path, fwd and fwd+bwd."""
    try:
        from mmcv.ops.multi_scale_deform_attn import (
            multi_scale_deformable_attn_pytorch as mmcv_pytorch,
        )
    except ImportError:  # no mmcv: its algorithm is our twin's
        mmcv_pytorch = multi_scale_deform_attn_pytorch
    p = msda_problem(args, device)
    p64 = {k: v.double() if v.is_floating_point() else v for k, v in p.items()}
    names = ('value', 'sampling_locations', 'attention_weights')

    def ours(q, v, loc, w):
        return multi_scale_deform_attn(v, q['value_spatial_shapes'], q['level_start_index'],
                                       loc, w)

    def reference(q, v, loc, w):
        return mmcv_pytorch(v, q['value_spatial_shapes'], loc, w)

    def fwd(fn, q=p):
        with torch.no_grad():
            return [fn(q, *(q[k] for k in names))]

    def fwd_bwd(fn, q=p):
        leaves = [q[k].clone().requires_grad_(True) for k in names]
        out = fn(q, *leaves)
        out.backward(q['grad_output'])
        return [out.detach()] + [t.grad for t in leaves]

    tensors = ('output', 'grad:value', 'grad:sampling_locations', 'grad:attention_weights')
    results = {}
    for name, step in (('fwd', fwd), ('fwd_bwd', fwd_bwd)):
        ref64 = step(reference, p64)
        got, exp = step(ours), step(reference)       # warm-up; also the error check
        err = {t: rel_err(a, b) for t, a, b in zip(tensors, got, exp)}
        err_ours = {t: rel_err(a, b) for t, a, b in zip(tensors, got, ref64)}
        err_ref = {t: rel_err(a, b) for t, a, b in zip(tensors, exp, ref64)}
        del got, exp, ref64
        t_ours, t_ref = timed_pair(lambda s=step: s(ours), lambda s=step: s(reference),
                                   args.repeats, device)
        ours_s, ref_s = statistics.median(t_ours), statistics.median(t_ref)
        results[name] = dict(ours_s=ours_s, mmcv_pytorch_s=ref_s, speedup=ref_s / ours_s,
                             ours_runs_s=t_ours, mmcv_pytorch_runs_s=t_ref,
                             ours_peak_mb=peak_memory_mb(lambda s=step: s(ours), device),
                             mmcv_pytorch_peak_mb=peak_memory_mb(lambda s=step: s(reference),
                                                                 device),
                             max_rel_err=max(err.values()), rel_err=err,
                             ours_err_fp64=err_ours, mmcv_pytorch_err_fp64=err_ref)
        print(f'  msda {name}: done', file=sys.stderr, flush=True)
    return results


def print_msda_table(args, msda: Dict[str, dict]) -> None:
    """The deformable-attention timings, memory and errors."""
    h, w = args.msda_hw
    levels = ' / '.join(f'{math.ceil(h / s)}x{math.ceil(w / s)}' for s in (8, 16, 32))
    print(f'Multi-scale deformable attention: {args.msda_views} views of {h}x{w} (levels '
          f'{levels}), {args.msda_channels} channels, {args.msda_heads} heads, '
          f'{args.msda_points} points, float32; median of {args.repeats} (ours vs mmcv\'s '
          'PyTorch path, interleaved)')
    print('| pass    | ours (s) | mmcv pytorch (s) | speedup | ours peak (MB) | '
          'mmcv peak (MB) | max rel err | ours_err_fp64 | mmcv_err_fp64 |')
    print('|---------|---------:|-----------------:|--------:|---------------:|'
          '---------------:|------------:|--------------:|--------------:|')
    for name, r in msda.items():
        print(f"| {name:<7} | {r['ours_s']:8.3f} | {r['mmcv_pytorch_s']:16.3f} | "
              f"{r['speedup']:6.2f}x | {r['ours_peak_mb']:14.1f} | "
              f"{r['mmcv_pytorch_peak_mb']:14.1f} | {r['max_rel_err']:11.2e} | "
              f"{max(r['ours_err_fp64'].values()):13.2e} | "
              f"{max(r['mmcv_pytorch_err_fp64'].values()):13.2e} |")
    print('errors: norm-wise relative, the largest over the output (and the gradients of value, '
          'locations and weights for fwd_bwd); *_err_fp64 against mmcv\'s path in float64')


def profile_block(args, device: torch.device, path: str) -> None:
    """Operator tables of one block fwd+bwd, ours and the official formulation (after warm-up)."""
    from torch.profiler import ProfilerActivity, profile
    ours, official, feats, xyz, idx, grad_out = block_problem(args, device)
    c = args.channels
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == 'cuda'
                                           else [])
    sort = 'self_device_time_total' if device.type == 'cuda' else 'self_cpu_time_total'
    lines = [f'block fwd+bwd: {args.voxels} voxels, k={args.k}, C={c}, {args.heads} heads, '
             f'FFN {args.ffn}, {args.layers} layers, {device}']
    for name, model in (('ours', ours), ('official', official)):
        def step(model=model):
            model.zero_grad(set_to_none=True)
            f = feats.clone().requires_grad_(True)
            model(f, xyz, idx).backward(grad_out)
        for _ in range(2):  # warm-up (kernel loads, allocator)
            step()
        sync(device)
        with profile(activities=activities, record_shapes=False) as prof:
            step()
            sync(device)
        try:
            table = prof.key_averages().table(sort_by=sort, row_limit=25)
        except (AttributeError, KeyError, ValueError):  # older naming of the device columns
            table = prof.key_averages().table(sort_by='self_cuda_time_total' if
                                              device.type == 'cuda' else 'self_cpu_time_total',
                                              row_limit=25)
        lines += ['', f'=== {name}', table]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text('\n'.join(lines) + '\n')
    print(f'profile written to {path}')


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('--device cuda requested but torch.cuda.is_available() is False')
    if args.threads:
        torch.set_num_threads(args.threads)
    set_backend(args.backend)
    if get_backend() == 'pytorch' or not ext_available():
        impl = 'pure-PyTorch twins'
    elif device.type == 'cuda':
        impl = 'compiled CUDA kernels' if ext_has_cuda() else 'twins (extension without CUDA)'
    else:
        impl = 'compiled C++/OpenMP kernels'
    meta = dict(device=str(device), torch=torch.__version__, threads=torch.get_num_threads(),
                ops=impl, voxels=args.voxels, k=args.k, channels=args.channels,
                heads=args.heads, ffn=args.ffn, layers=args.layers, repeats=args.repeats,
                gpu=torch.cuda.get_device_name(device) if device.type == 'cuda' else None,
                cpu_count=os.cpu_count())
    report = {'meta': meta}
    if args.profile:
        profile_block(args, device, args.profile)
        return report
    if not args.skip_block:
        report['block'] = bench_block(args, device)
    if not args.skip_knn:
        report['knn'] = bench_knn(args, device)
    if not args.skip_msda:
        report['msda'] = bench_msda(args, device)

    print(f"\nODIN ops benchmark - device {meta['device']}"
          f"{' (' + meta['gpu'] + ')' if meta['gpu'] else ''}, torch {meta['torch']}, "
          f"{meta['threads']} threads, ops: {impl}")
    if 'block' in report:
        print(f"Cross-view block: {args.voxels} voxels, k={args.k}, C={args.channels}, "
              f"{args.heads} heads, FFN {args.ffn}, {args.layers} layers, float32; "
              f"median of {args.repeats} (ours vs official formulation, interleaved)")
        print('| pass    | ours (s) | official (s) | speedup | ours peak (MB) | official peak (MB)'
              ' | mem ratio | max rel err |')
        print('|---------|---------:|-------------:|--------:|---------------:|------------------:'
              '|----------:|------------:|')
        for name, r in report['block'].items():
            print(f"| {name:<7} | {r['ours_s']:8.3f} | {r['official_s']:12.3f} | "
                  f"{r['speedup']:6.2f}x | {r['ours_peak_mb']:14.1f} | "
                  f"{r['official_peak_mb']:18.1f} | {r['mem_ratio']:9.3f} | "
                  f"{r['max_rel_err']:11.2e} |")
        print('max rel err = largest norm-wise relative difference, ours vs official, over the '
              'output (and every gradient for fwd_bwd); worst: ' + ', '.join(
                  f"{name} {r['max_rel_err_tensor']} (output {r['output_rel_err']:.1e})"
                  for name, r in report['block'].items()))
        print_fp64_table(report['block'])
    if 'knn' in report:
        print(f'kNN: k={args.k}, every point queries its scene (one scene, points on room '
              'surfaces); brute force = torch.cdist + torch.topk')
        print('| points  | ours (s) | brute (s)   | speedup   | grid twin (s) | grid == ours |')
        print('|--------:|---------:|------------:|----------:|--------------:|:------------:|')
        for n, r in report['knn'].items():
            star = '*' if r['brute_queries_timed'] < int(n) else ' '
            print(f"| {int(n):7d} | {r['ours_s']:8.3f} | {r['brute_s']:10.2f}{star} | "
                  f"{r['speedup']:8.1f}x | {r['grid_twin_s']:13.3f} | "
                  f"{'yes' if r['grid_twin_equal'] else 'NO':^12} |")
        if any(r['brute_queries_timed'] < int(n) for n, r in report['knn'].items()):
            print(f'* brute force timed on {args.brute_max_queries} queries and scaled linearly '
                  'to all queries')
    if 'msda' in report:
        print_msda_table(args, report['msda'])
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, 'w') as f:
            json.dump(report, f, indent=2)
        print(f'figures written to {args.json}')
    return report


if __name__ == '__main__':
    main()
