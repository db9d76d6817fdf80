"""ODIN demo: a posed RGB-D recording → 3D instances.

Usage:
    python demo/odin_demo.py RECORDING CONFIG CHECKPOINT --out-dir OUT [--max-frames N]
        [--view-chunk N] [--max-memory-gb GB] [--quiet] [--device cpu|cuda]
        [--layout auto|sens|nerfstudio|arkitscenes|scannet|tum|7scenes|plain]
        [--depth-scale S] [--frame-stride K] [--intrinsics FILE] [--image-size H W]
        [--score-thr T] [--classes NAME [NAME ...]] [--allow-partial] [--cfg-options KEY=VALUE ...]
        [--stream --update-every K [--window W] [--keyframes M] [--map-voxel-size S]
         [--save-every-update] [--follow --idle-timeout SEC]]

RECORDING is a folder (ScanNet export, TUM, 7-Scenes, ARKitScenes, nerfstudio ``transforms.json``,
or a plain ``rgb/ depth/ + pose list + intrinsics`` folder), a ScanNet ``.sens`` file or a
``transforms.json`` (see docs/demo.md for the layouts). The layout, depth unit and frame count are
printed before the model is loaded. Every frame is used (``--max-frames`` / ``--frame-stride``
thin the recording to go faster); the model runs its bounded-memory path over chunks of
``--view-chunk`` views with a progress bar, and ``--max-memory-gb`` refuses up front a recording
whose estimated peak memory exceeds the budget, naming the frame count that fits. ODIN runs in
sensor-point mode on the fused point cloud and writes to OUT:

* ``<scene>_instances.ply``  the fused cloud, coloured by instance (``instance``/``label`` fields);
* ``views/<frame>.png``       per-view overlays of the instances;
* ``<scene>_instances.json``  one record per instance (class, score, point count).

With an open-vocabulary model (the joint 2D-3D one) ``--classes`` names what to look for, e.g.
``--classes chair "coffee table" plant``.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.config import DictAction  # noqa: E402

from projects.odin.datasets.recordings import LAYOUTS  # noqa: E402
from projects.odin.demo import (  # noqa: E402
    DEFAULT_VIEW_CHUNK,
    DemoError,
    run_recording_demo,
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Run ODIN on a posed RGB-D recording')
    parser.add_argument('folder', metavar='RECORDING',
                        help='recording folder, ScanNet .sens file or transforms.json '
                        '(layouts: docs/demo.md)')
    parser.add_argument('config', help='model config')
    parser.add_argument('checkpoint', help='checkpoint (ours, or converted official weights)')
    parser.add_argument('--out-dir', required=True, help='output folder')
    parser.add_argument('--max-frames', type=int, default=None,
                        help='use at most N frames spread uniformly over the recording, a speed '
                        'option (default: every frame)')
    parser.add_argument('--view-chunk', type=int, default=None,
                        help='views per chunk of the bounded-memory inference path (model.'
                        'test_cfg.view_chunk; 0 = unchunked; default: the config\'s, else '
                        f'{DEFAULT_VIEW_CHUNK})')
    parser.add_argument('--max-memory-gb', type=float, default=None,
                        help='refuse the run if its estimated peak memory exceeds this many GB '
                        '(the message gives the frame count that fits)')
    parser.add_argument('--quiet', action='store_true', help='no progress bars')
    parser.add_argument('--device', default='cpu', help='cpu or cuda[:N]')
    parser.add_argument('--layout', default='auto', choices=['auto', *LAYOUTS])
    parser.add_argument('--depth-scale', type=float, default=None,
                        help='raw depth units per metre (default: inferred: 16-bit = 1000 unless '
                        'the layout says otherwise, e.g. TUM 5000; float = metres)')
    parser.add_argument('--frame-stride', type=int, default=1, help='keep every K-th frame')
    parser.add_argument('--intrinsics', default=None, help='3x3/4x4 depth intrinsics file')
    parser.add_argument('--image-size', type=int, nargs=2, default=None, metavar=('H', 'W'),
                        help='model input size (default: the config test size, else 240 320)')
    parser.add_argument('--max-depth', type=float, default=None, help='ignore depth beyond (m)')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='minimum score of an instance to be drawn/listed')
    parser.add_argument('--min-points', type=int, default=50, help='minimum instance size')
    parser.add_argument('--classes', nargs='+', default=None, metavar='NAME',
                        help='open-vocabulary model: the class names to find (default: its '
                        'training classes); closed-set model: new names for its classes')
    parser.add_argument('--allow-partial', action='store_true',
                        help='run with a checkpoint that does not fit the config (the tensors '
                        'that fit are loaded, the others stay random); refused by default')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default=None,
                        help='config overrides, e.g. model.decode_head.classifier.'
                        'text_encoder.pretrained=/data/roberta-base')
    stream = parser.add_argument_group('streaming (docs/streaming.md)')
    stream.add_argument('--stream', action='store_true',
                        help='replay the recording as a stream into a live instance map')
    stream.add_argument('--update-every', type=int, default=10, metavar='K',
                        help='run ODIN every K frames (default 10)')
    stream.add_argument('--window', type=int, default=20, metavar='W',
                        help='most recent frames per update (default 20)')
    stream.add_argument('--keyframes', type=int, default=10, metavar='M',
                        help='older frames kept for coverage of the map (default 10)')
    stream.add_argument('--map-voxel-size', type=float, default=0.05,
                        help='voxel size of the map in metres (default 0.05)')
    stream.add_argument('--save-every-update', action='store_true',
                        help='also write the map after every update (OUT/updates/<n>.ply)')
    stream.add_argument('--follow', action='store_true',
                        help='the folder is still being written: poll for new frames, stop '
                        'after --idle-timeout seconds without one')
    stream.add_argument('--idle-timeout', type=float, default=10.0,
                        help='seconds without a new frame that end --follow (default 10)')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    """Run the demo (:func:`projects.odin.demo.run_recording_demo`); 2 on a user error."""
    args = parse_args(argv)
    try:
        if args.stream or args.follow:
            from projects.odin.demo.streaming_demo import run_streaming_demo
            run_streaming_demo(
                args.folder, args.config, args.checkpoint, args.out_dir,
                update_every=args.update_every, window=args.window, keyframes=args.keyframes,
                map_voxel_size=args.map_voxel_size, save_every_update=args.save_every_update,
                follow=args.follow, idle_timeout=args.idle_timeout, device=args.device,
                layout=args.layout, depth_scale=args.depth_scale,
                frame_stride=args.frame_stride, max_frames=args.max_frames,
                intrinsics=args.intrinsics, image_size=args.image_size,
                max_depth=args.max_depth, score_thr=args.score_thr,
                min_points=args.min_points, classes=args.classes,
                allow_partial=args.allow_partial, cfg_options=args.cfg_options,
                view_chunk=args.view_chunk)
            return 0
        run_recording_demo(
            args.folder, args.config, args.checkpoint, args.out_dir,
            max_frames=args.max_frames, device=args.device, layout=args.layout,
            depth_scale=args.depth_scale, frame_stride=args.frame_stride,
            intrinsics=args.intrinsics, image_size=args.image_size, max_depth=args.max_depth,
            score_thr=args.score_thr, min_points=args.min_points, classes=args.classes,
            allow_partial=args.allow_partial, cfg_options=args.cfg_options,
            view_chunk=args.view_chunk, max_memory_gb=args.max_memory_gb,
            progress=not args.quiet)
    except DemoError as e:
        print(e.cli_line(), file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
