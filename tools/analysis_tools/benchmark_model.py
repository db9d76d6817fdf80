"""Benchmark a whole ODIN forward pass against the official formulation, in one run.

The input reproduces the official CPU harness' full-model measurement
(``../shared/reference/timings_official_cpu.md`` (b)): one ScanNet-like room of the synthetic world
with V posed RGB-D views of 240x320 (10 by default), a ~50,000-vertex mesh (ghost points) with
superpoints, read through the config's own test pipeline (``ODINScanNetDataset``), ScanNet R50
architecture, ``eval()`` + ``no_grad``.

Two models with the same weights run on it, interleaved:

* **ours** - the model as configured: exact hash-grid kNN kernels and
  :class:`~projects.odin.layers.CrossViewAttention` (keys/values projected once per voxel);
* **official formulation** - every kNN and IDW interpolation as the official CPU harness does it
  (``torch.cdist`` + ``torch.topk`` per scene: :func:`projects.odin.parity.official_knn`
  substituted for the model's k-NN), and every 3D block replaced by
  :class:`~projects.odin.parity.NaiveCrossViewAttention` (the official ``CrossViewPAnet``
  formulation: gather k neighbours, add the relative position encoding, ``nn.MultiheadAttention``
  per voxel) with the same weights.

The 2D parts (ResNet, the decoder) are the same code in both, except the pixel decoder's
multi-scale deformable attention: ours runs our compiled CPU kernel
(:class:`~projects.odin.layers.ODINMultiScaleDeformableAttention`), the official formulation
mmcv's own layer, i.e. its PyTorch (``grid_sample``) path on CPU as the official code does.
``--with-mmcv-msda`` also times ours with mmcv's layer (the model before that kernel).
Printed: median forward time, peak tensor memory (see ``benchmark_ops.py``), the ratios,
and the largest relative error between the two models' class and mask logits. For context the
official code's own figures from the reference harness (same machine type, not this run) are
printed below the table.

Examples::

    python tools/analysis_tools/benchmark_model.py
    python tools/analysis_tools/benchmark_model.py --views 10 --repeats 3 --json bench.json
    python tools/analysis_tools/benchmark_model.py --device cuda --json bench_cuda.json
"""
import argparse
import copy
import json
import os.path as osp
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

# published by the official CPU harness (reference timings_official_cpu.md (b), idle runs)
OFFICIAL_HARNESS = dict(forward_s=(9.66, 12.31), peak_rss_mb=(2069, 2103))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--config', default=str(ROOT / 'configs' / 'odin' / 'scannet_r50.py'))
    parser.add_argument('--views', type=int, default=10, help='views of the scene')
    parser.add_argument('--repeats', type=int, default=3, help='timed forwards per model')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    parser.add_argument('--room-size', type=float, nargs=2, default=(3.0, 3.0), metavar=('X', 'Y'),
                        help='room extent (m); the official harness used a 3x3 m room')
    parser.add_argument('--room-spacing', type=float, default=0.055,
                        help='mesh vertex spacing of walls/floor (m); with the object spacing '
                        'it sets the mesh size (~26k 2 cm mesh voxels by default, as the harness)')
    parser.add_argument('--object-spacing', type=float, default=0.045,
                        help='mesh vertex spacing of furniture (m)')
    parser.add_argument('--no-memory', action='store_true', help='skip the memory measurement')
    parser.add_argument('--with-mmcv-msda', action='store_true',
                        help="also time ours with mmcv's deformable attention (PyTorch path)")
    parser.add_argument('--device', default='cpu', help='cpu or cuda[:N] (both models run there)')
    parser.add_argument('--json', default=None, help='also write the figures here')
    return parser.parse_args(argv)


def make_scene(work: str, views: int, room_size, room_spacing: float,
               object_spacing: float) -> str:
    """One synthetic room (ScanNet raw layout, 240x320 depth) converted with the real converter."""
    from projects.odin.datasets.converters.scannet import convert_scannet
    from projects.odin.datasets.synthetic_world import generate_world
    raw, out = osp.join(work, 'raw'), osp.join(work, 'converted')
    generate_world(raw, num_scenes=2, seed=0, preset='default', num_val=1, num_frames=views,
                   room_spacing=room_spacing, object_spacing=object_spacing,
                   room_size=((room_size[0], room_size[0]), (room_size[1], room_size[1])),
                   num_objects=(6, 8))
    result = convert_scannet(raw, out, dataset='scannet', frame_skip=1, inpaint=True,
                             overwrite=True, prefix='bench', progress=False)
    if result['skipped']:
        raise RuntimeError(f'the converter skipped scenes: {result["skipped"]}')
    return out


def load_batch(cfg, data_root: str) -> dict:
    """The val room through the config's test pipeline, collated as the test loop does."""
    from mmdet3d.registry import DATASETS
    from mmengine.dataset import pseudo_collate
    ds_cfg = copy.deepcopy(cfg.test_dataloader.dataset)
    ds_cfg.data_root = data_root.rstrip('/') + '/'
    ds_cfg.ann_file = 'bench_infos_val.pkl'
    dataset = DATASETS.build(ds_cfg)
    return pseudo_collate([dataset[0]])


def naive_copy(ours: torch.nn.Module) -> torch.nn.Module:
    """A NaiveCrossViewAttention (official formulation) with the weights of ``ours``."""
    from projects.odin.layers.cross_view_attention import convert_official_cross_view_state_dict
    from projects.odin.parity.cross_view_reference import NaiveCrossViewAttention
    layer = ours.layers[0]
    naive = NaiveCrossViewAttention(ours.embed_dims, len(ours.layers), layer.num_heads,
                                    layer.linear1.out_features, layer.dropout)
    naive.embed_dims, naive.num_neighbors = ours.embed_dims, ours.num_neighbors
    naive_keys = list(naive.state_dict())
    # the converter maps official (= naive) keys to ours, one to one and in order
    our_keys = list(convert_official_cross_view_state_dict(naive.state_dict()))
    ours_sd = ours.state_dict()
    naive.load_state_dict({n: ours_sd[o].clone() for n, o in zip(naive_keys, our_keys)})
    return naive


def to_official_formulation(model: torch.nn.Module) -> int:
    """Swap every CrossViewAttention for a NaiveCrossViewAttention with the same weights.

    Returns:
        The number of blocks swapped.
    """
    from projects.odin.layers import CrossViewAttention
    swapped = 0
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, CrossViewAttention):
                setattr(module, child_name, naive_copy(child))
                swapped += 1
    return swapped


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from mmdet3d.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import projects.odin  # noqa: F401
    from projects.odin.layers import use_mmcv_ms_deform_attn
    from projects.odin.ops import ext_available
    from projects.odin.parity import official_knn, substitute_knn
    from projects.odin.utils import load_script
    helpers = load_script('tools/analysis_tools/benchmark_ops.py', str(ROOT))
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('--device cuda requested but torch.cuda.is_available() is False')
    init_default_scope('mmdet3d')
    cfg = Config.fromfile(args.config)

    with tempfile.TemporaryDirectory() as work:
        t0 = time.time()
        data_root = make_scene(work, args.views, args.room_size, args.room_spacing,
                               args.object_spacing)
        batch = load_batch(cfg, data_root)
        print(f'scene generated and converted in {time.time() - t0:.0f}s')

    torch.manual_seed(0)
    cfg.model.train_cfg = None
    ours = MODELS.build(cfg.model).to(device).eval()
    official = copy.deepcopy(ours)
    swapped = to_official_formulation(official)
    msda_layers = use_mmcv_ms_deform_attn(official)  # mmcv's grid_sample path, as officially
    official.to(device)  # the swapped-in reference blocks are built on the CPU
    models = {'ours': ours}
    if args.with_mmcv_msda:
        models['ours, mmcv deformable attention'] = copy.deepcopy(ours)
        use_mmcv_ms_deform_attn(models['ours, mmcv deformable attention'])
    data = ours.data_preprocessor(batch, False)
    inputs, samples = data['inputs'], data['data_samples']
    meta = samples[0].metainfo
    n_vert = len(inputs['points'][0])
    img = inputs['imgs'].raw[0]  # (V, 3, Hp, Wp) as loaded (MultiViewImages)
    with torch.no_grad():
        points = ours.prediction_points(inputs, ours.build_geometry(inputs, samples), False)
        geometry, ghost = points.geometry, points.mesh_voxels
    voxels = {f'res{i + 2}': int(lvl.voxel_xyz.shape[0])
              for i, lvl in enumerate(geometry.levels)}
    print(f'input: {img.shape[0]} views of {img.shape[-2]}x{img.shape[-1]} (padded), '
          f'{n_vert} mesh vertices ({ghost.voxel_xyz.shape[0]} mesh voxels), '
          f'voxels per level {voxels} '
          f'(official harness: 50,000 vertices, 25,431 mesh voxels, res2 15,540 / res3 3,989 / '
          f'res4 1,356 / res5 269); scene {meta.get("sample_idx", "?")}; '
          f'{swapped} cross-view blocks, {msda_layers} deformable-attention layers; '
          f'compiled kernels: {ext_available()}; '
          f'{torch.get_num_threads()} threads')

    def run_ours(model=ours):
        with torch.no_grad():
            return model._forward(inputs, samples)

    def run_official():
        with torch.no_grad(), substitute_knn(official_knn):
            return official._forward(inputs, samples)

    # agreement of the two models (class and mask logits of the last prediction)
    out_a, out_b = run_ours(), run_official()
    errs = [helpers.rel_err(a[-1], b[-1]) for a, b in zip(out_a[:2], out_b[:2])]
    fns = {name: (lambda m=m: run_ours(m)) for name, m in models.items()}
    fns['official formulation'] = run_official
    times = {name: [] for name in fns}
    for _ in range(args.repeats):
        for name, fn in fns.items():
            times[name].append(helpers.timed(fn, device))
    res = {name: dict(median_s=statistics.median(t), runs_s=t) for name, t in times.items()}
    if not args.no_memory:
        for name, fn in fns.items():
            res[name]['peak_mb'] = helpers.peak_memory_mb(fn, device)

    a, b = res['ours'], res['official formulation']
    print(f'\n| model | forward (median of {args.repeats}, s) | runs (s) | '
          'peak tensor memory (MB) |')
    print('|---|---|---|---|')
    for name, r in res.items():
        runs = ', '.join(f'{t:.2f}' for t in r['runs_s'])
        mem = f"{r['peak_mb']:.0f}" if 'peak_mb' in r else 'n/a'
        print(f"| {name} | {r['median_s']:.2f} | {runs} | {mem} |")
    speed = b['median_s'] / a['median_s']
    line = f'\nours vs official formulation: {speed:.2f}x faster'
    if 'peak_mb' in a:
        line += f", {a['peak_mb'] / b['peak_mb']:.2f}x the peak tensor memory"
    print(line)
    for name in fns:
        if name not in ('ours', 'official formulation'):
            print(f"{name}: {b['median_s'] / res[name]['median_s']:.2f}x faster than the official "
                  f"formulation; ours is {res[name]['median_s'] / a['median_s']:.2f}x faster")
    print(f'largest relative error between the two (class logits, mask logits): '
          f'{errs[0]:.1e}, {errs[1]:.1e}')
    lo, hi = OFFICIAL_HARNESS['forward_s']
    print(f'context (not this run): the official code itself on the reference 2-core machine '
          f'took {lo}-{hi} s per forward on the same kind of input (peak RSS '
          f'{OFFICIAL_HARNESS["peak_rss_mb"][0]}-{OFFICIAL_HARNESS["peak_rss_mb"][1]} MB), '
          'timings_official_cpu.md (b)')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(results=res, speedup=speed, rel_err=errs, vertices=n_vert,
                           voxels=voxels, swapped_blocks=swapped, msda_layers=msda_layers,
                           views=int(img.shape[0]), threads=torch.get_num_threads(),
                           device=str(device),
                           official_harness=OFFICIAL_HARNESS), f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
