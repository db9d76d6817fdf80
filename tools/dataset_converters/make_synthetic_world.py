"""Generate the synthetic labelled world in ScanNet's raw layout.

Example::

    python tools/dataset_converters/make_synthetic_world.py --out-dir data/synthetic_raw \
        --num-scenes 4 --seed 0 --preset small
    python tools/create_data.py scannet --root-path data/synthetic_raw \
        --out-dir data/synthetic --frame-skip 1

The logic lives in :mod:`projects.odin.datasets.synthetic_world` (importable by the demo and
the tests); this file is only the command line.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..')))

from projects.odin.datasets.synthetic_world import PRESETS, generate_world  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out-dir', required=True, help='root of the raw layout to write')
    parser.add_argument('--num-scenes', type=int, default=2)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--preset', default='tiny', choices=sorted(PRESETS))
    parser.add_argument('--num-val', type=int, default=None,
                        help='scenes in the val split (default: a quarter, at least 1)')
    parser.add_argument('--num-frames', type=int, default=None, help='override: frames/scene')
    parser.add_argument('--depth-size', type=int, nargs=2, default=None, metavar=('H', 'W'),
                        help='override: depth (= converted frame) size')
    parser.add_argument('--color-size', type=int, nargs=2, default=None, metavar=('H', 'W'),
                        help='override: colour size in the .sens')
    parser.add_argument('--num-invalid-poses', type=int, default=None,
                        help='override: frames per scene written with a -inf pose')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    t0 = time.time()
    summary = generate_world(
        args.out_dir, num_scenes=args.num_scenes, seed=args.seed, preset=args.preset,
        num_val=args.num_val, num_frames=args.num_frames,
        depth_hw=tuple(args.depth_size) if args.depth_size else None,
        color_hw=tuple(args.color_size) if args.color_size else None,
        num_invalid_poses=args.num_invalid_poses)
    print(json.dumps(dict(splits=summary['splits'], seconds=round(time.time() - t0, 2),
                          scenes=summary['scenes']), indent=1))


if __name__ == '__main__':
    main()
