"""Convert a raw dataset into ODIN's training-ready layout (mmdet3d v2 infos + frames + masks).

Examples::

    python tools/create_data.py scannet --root-path data/scannet_raw --out-dir data/scannet \
        --inpaint-depth
    python tools/create_data.py scannet200 --root-path data/scannet_raw \
        --out-dir data/scannet200 --inpaint-depth
    python tools/create_data.py s3dis --root-path data/s3dis_raw --out-dir data/s3dis \
        --inpaint-depth
    python tools/create_data.py matterport3d --root-path data/matterport_raw \
        --out-dir data/matterport3d --inpaint-depth
    python tools/create_data.py ai2thor --root-path data/ai2thor_raw --out-dir data/ai2thor

A re-run resumes (finished scenes are skipped). See docs/data.md.
"""
import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..')))

from projects.odin.datasets.converters import CONVERTERS  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='ODIN data converter')
    parser.add_argument('dataset', choices=sorted(CONVERTERS))
    parser.add_argument('--root-path', required=True, help='raw dataset root')
    parser.add_argument('--out-dir', required=True, help='output root')
    parser.add_argument('--extra-tag', default=None, help='info file prefix (default: dataset)')
    parser.add_argument('--workers', type=int, default=4, help='parallel processes')
    parser.add_argument('--overwrite', action='store_true', help='redo finished scenes')
    parser.add_argument('--scenes', nargs='*', default=None, help='only these scenes/rooms')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    parser.add_argument('--debug', action='store_true',
                        help='show the full traceback of input errors')
    parser.add_argument('--inpaint-depth', action='store_true',
                        help='ScanNet / ScanNet200 / S3DIS / Matterport3D: also write '
                        'OpenCV-inpainted depth (depth_inpainted/), which the configs of these '
                        'datasets read, as the official recipes do')
    sn = parser.add_argument_group('ScanNet / ScanNet200')
    sn.add_argument('--frame-skip', type=int, default=20, help='keep every N-th .sens frame')
    sn.add_argument('--split-dir', default=None, help='folder with scannetv2_<split>.txt')
    sn.add_argument('--color-interp', default='nearest', choices=['nearest', 'area', 'linear'])
    ot = parser.add_argument_group('S3DIS / Matterport3D / AI2THOR')
    ot.add_argument('--val-area', type=int, default=5, help='S3DIS validation area')
    ot.add_argument('--image-size', type=int, nargs=2, default=None, metavar=('H', 'W'),
                    help='resize frames to this size (Matterport default 512 640)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(message)s')
    try:
        summary = CONVERTERS[args.dataset](args)
    except (FileNotFoundError, NotADirectoryError, ValueError) as err:
        # unusable input (wrong root, missing split files, malformed metadata): the message
        # names the file and what is wrong; the traceback only with --debug
        if args.debug:
            raise
        print(f'create_data.py {args.dataset}: error: {err}', file=sys.stderr)
        return 2
    skipped = summary['skipped']
    print(f"{args.dataset}: converted {len(summary['converted'])}, resumed "
          f"{len(summary['resumed'])}, skipped {len(skipped)}; infos: {summary['info_files']}")
    for scene, reason in skipped.items():
        print(f'  skipped {scene}: {reason}')
    dropped = {k: v for k, v in summary['dropped_frames_total'].items() if v}
    if dropped:
        print(f'  dropped frames: {dropped}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
