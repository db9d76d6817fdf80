"""Sanity-check converted ODIN data through a dataset config: shapes, labels, timing, alignment.

For each of the first ``--num`` samples the dataset's pipeline is run and the packed sample is
summarised: views, image size, points, superpoints, classes present, loading time, and the
**alignment** of depth and points (median / 95th-percentile distance from unprojected depth pixels
to the nearest point). The distance is to the nearest *vertex*, so expect about half the vertex
spacing when everything agrees (1-2 cm on ScanNet meshes; 5-7 cm on the coarse synthetic meshes);
tens of centimetres or more point to a wrong camera convention, wrong intrinsics or mismatched
points.

Example::

    python tools/analysis_tools/check_odin_data.py configs/_base_/datasets/synthetic_mv.py \
        --split val --num 2 --cfg-options val_dataloader.dataset.data_root=data/synthetic/
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..')))

import numpy as np  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='check converted ODIN data')
    parser.add_argument('config', help='a config with train/val dataloaders')
    parser.add_argument('--split', default='train', choices=['train', 'val', 'test'])
    parser.add_argument('--num', type=int, default=3, help='samples to check')
    parser.add_argument('--stride', type=int, default=4, help='pixel stride for alignment')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE')
    return parser.parse_args(argv)


def _cfg_options(items):
    out = {}
    for item in items:
        key, val = item.split('=', 1)
        out[key] = val
    return out


def alignment(sample) -> tuple:
    """(median, p95) distance in metres from unprojected depth pixels to the nearest point."""
    from scipy.spatial import cKDTree

    from projects.odin.datasets.transforms import unproject
    inp = sample['inputs']
    pts = inp['points'][:, :3].numpy()
    if len(pts) == 0:
        return float('nan'), float('nan')
    tree = cKDTree(pts)
    xyz = []
    for d, k, p in zip(inp['depths'].numpy(), inp['intrinsics'].numpy(), inp['cam2world'].numpy()):
        m = np.zeros(d.shape, bool)
        m[::ALIGN_STRIDE, ::ALIGN_STRIDE] = True
        xyz.append(unproject(d, k, p, m & (d > 0)))
    xyz = np.concatenate(xyz)
    if len(xyz) == 0:
        return float('nan'), float('nan')
    dist = tree.query(xyz)[0]
    return float(np.median(dist)), float(np.percentile(dist, 95))


ALIGN_STRIDE = 4


def main(argv=None) -> list:
    global ALIGN_STRIDE
    args = parse_args(argv)
    ALIGN_STRIDE = args.stride
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet3d')
    from mmdet3d.registry import DATASETS

    import projects.odin  # noqa: F401
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(_cfg_options(args.cfg_options))
    np.random.seed(args.seed)
    ds = DATASETS.build(cfg[f'{args.split}_dataloader'].dataset)
    classes = ds.metainfo['classes']
    print(f'{type(ds).__name__}: {len(ds)} scenes, {len(classes)} classes')
    rows = []
    for i in range(min(args.num, len(ds))):
        t0 = time.time()
        sample = ds[i]
        dt = time.time() - t0
        inp, meta = sample['inputs'], sample['data_samples'].metainfo
        med, p95 = alignment(sample)
        gt = sample['data_samples'].gt_pts_seg
        sem = gt.pts_semantic_mask.numpy() if 'pts_semantic_mask' in gt else np.zeros(0, int)
        inst = gt.pts_instance_mask.numpy() if 'pts_instance_mask' in gt else np.zeros(0, int)
        present = [classes[c] for c in np.unique(sem) if c < len(classes)]
        row = dict(scene=meta.get('scene_id'), views=int(inp['img'].shape[0]),
                   image=tuple(inp['img'].shape[-2:]), points=int(inp['points'].shape[0]),
                   superpoints=int(inp['superpoints'].max()) + 1 if 'superpoints' in inp else 0,
                   instances=int(len(np.unique(inst[inst >= 0]))), classes=len(present),
                   ignored=float(np.mean(sem == len(classes))) if len(sem) else float('nan'),
                   align_median_m=round(med, 4), align_p95_m=round(p95, 4),
                   seconds=round(dt, 3))
        rows.append(row)
        print('  ' + ', '.join(f'{k}={v}' for k, v in row.items()))
    return rows


if __name__ == '__main__':
    main()
