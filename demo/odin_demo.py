"""ODIN demo: a posed RGB-D recording → 3D instances.

Usage:
    python demo/odin_demo.py RECORDING CONFIG CHECKPOINT --out-dir OUT [--max-frames N]
        [--device cpu|cuda] [--layout auto|sens|nerfstudio|arkitscenes|scannet|tum|7scenes|plain]
        [--depth-scale S] [--frame-stride K] [--intrinsics FILE] [--image-size H W]
        [--score-thr T] [--classes NAME [NAME ...]] [--allow-partial] [--cfg-options KEY=VALUE ...]

RECORDING is a folder (ScanNet export, TUM, 7-Scenes, ARKitScenes, nerfstudio ``transforms.json``,
or a plain ``rgb/ depth/ + pose list + intrinsics`` folder), a ScanNet ``.sens`` file or a
``transforms.json`` (see docs/demo.md for the layouts). The layout, depth unit and frame count are
printed before the model is loaded. ODIN runs in sensor-point mode on the fused point cloud and
writes to OUT:

* ``<scene>_instances.ply``  the fused cloud, coloured by instance (``instance``/``label`` fields);
* ``views/<frame>.png``       per-view overlays of the instances;
* ``<scene>_instances.json``  one record per instance (class, score, point count).

With an open-vocabulary model (the joint 2D-3D one) ``--classes`` names what to look for, e.g.
``--classes chair "coffee table" plant``.
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from mmengine.config import DictAction  # noqa: E402

from projects.odin.apis import (  # noqa: E402
    RGBDFolderError,
    flatten_instances,
    load_rgbd_folder,
    overlay_instances,
    write_instance_ply,
    write_instances_json,
)
from projects.odin.apis.rgbd_folder import LAYOUTS  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Run ODIN on a posed RGB-D recording')
    parser.add_argument('folder', metavar='RECORDING',
                        help='recording folder, ScanNet .sens file or transforms.json '
                        '(layouts: docs/demo.md)')
    parser.add_argument('config', help='model config')
    parser.add_argument('checkpoint', help='checkpoint (ours, or converted official weights)')
    parser.add_argument('--out-dir', required=True, help='output folder')
    parser.add_argument('--max-frames', type=int, default=60,
                        help='uniform frame cap that bounds memory (default 60)')
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
                        help='config overrides, e.g. model.decode_head.open_vocab_cfg.'
                        'text_encoder.pretrained=/data/roberta-base')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        seq = load_rgbd_folder(args.folder, layout=args.layout, depth_scale=args.depth_scale,
                               frame_stride=args.frame_stride, max_frames=args.max_frames,
                               intrinsics_file=args.intrinsics)
    except RGBDFolderError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    print(f'{seq.layout} recording: {len(seq)} frames ({len(seq.skipped)} skipped), '
          f'depth {seq.depth_hw[1]}x{seq.depth_hw[0]}, {seq.depth_units}')
    from projects.odin.apis.inference import (
        demo_image_size,
        inference_recording,
        init_odin_model,
        prepare_recording,
        select_instances,
        set_vocabulary,
    )
    for path, what in ((args.config, 'config'), (args.checkpoint, 'checkpoint')):
        if not osp.isfile(path):
            print(f'error: {what} not found: {path}', file=sys.stderr)
            return 2
    from mmengine.config import Config
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    image_size = tuple(args.image_size) if args.image_size else demo_image_size(cfg, seq)
    print(f'input size {image_size[0]}x{image_size[1]}')
    # every frame is read (and checked) before the model is built
    try:
        prepared = prepare_recording(seq, image_size=image_size, max_depth=args.max_depth,
                                     progress=True)
    except RGBDFolderError as e:
        print(f'\nerror: {e}', file=sys.stderr)
        return 2
    try:
        # a missing model file (e.g. the RoBERTa folder of an open-vocabulary model), a checkpoint
        # that is unreadable or does not fit the config (CheckpointError is a ValueError) or a
        # vocabulary the model cannot take
        model = init_odin_model(cfg, args.checkpoint, device=args.device, sensor_points=True,
                                allow_partial=args.allow_partial)
        classes = set_vocabulary(model, args.classes)
    except (FileNotFoundError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    result = inference_recording(model, prepared)
    masks, labels, scores = select_instances(result.pred_pts_seg, args.score_thr, args.min_points)
    # one instance per point (highest score wins); instances left with < min_points are dropped,
    # so the PLY's instance ids and the JSON's records are the same set
    inst_ids, labels, scores, counts = flatten_instances(masks, labels, scores, args.min_points)
    if not classes:
        classes = [str(i) for i in range(int(labels.max(initial=0)) + 1)]
    scene = prepared.metainfo['scene_id']
    os.makedirs(osp.join(args.out_dir, 'views'), exist_ok=True)
    points = prepared.inputs['points'].numpy()
    ply_path = osp.join(args.out_dir, f'{scene}_instances.ply')
    point_labels = np.full(len(inst_ids), -1, np.int64)
    point_labels[inst_ids >= 0] = labels[inst_ids[inst_ids >= 0]]
    write_instance_ply(ply_path, points[:, :3], inst_ids,
                       rgb=(points[:, 3:6] * 255).round().astype(np.uint8), labels=point_labels)
    for v, frame_id in enumerate(seq.frame_ids):
        p2p = prepared.pixel_to_point[v]
        view_ids = np.where(p2p >= 0, inst_ids[np.maximum(p2p, 0)], -1)
        overlay = overlay_instances(prepared.images[v], view_ids)
        cv2.imwrite(osp.join(args.out_dir, 'views', f'{frame_id}.png'), overlay[:, :, ::-1])
    json_path = osp.join(args.out_dir, f'{scene}_instances.json')
    write_instances_json(json_path, labels, scores, counts, classes,
                         extra=dict(scene=scene, folder=osp.abspath(args.folder),
                                    num_points=int(len(points)), num_views=len(seq),
                                    score_thr=args.score_thr))
    print(f'{len(scores)} instances → {ply_path}, {json_path}, '
          f'{len(seq)} overlays in {osp.join(args.out_dir, "views")}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
