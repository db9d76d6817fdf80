"""Convert an official ODIN checkpoint (or Mask2Former COCO init weights) to this repo's keys.

Usage:
    python tools/model_converters/odin_to_mmdet3d.py SRC DST [--no-check] [--roberta DIR]

``SRC`` is an official ODIN ``.pth`` (detectron2 checkpoint, ``{'model': state_dict, ...}``) or a
Mask2Former ``m2f_coco*.pkl`` (detectron2 pickle of numpy arrays). The key mapping lives in
:mod:`projects.odin.conversion`; this script only does file I/O. Any unmapped,
missing or mis-shaped key raises an error; the converted state dict is checked against an ODIN
model built for the checkpoint's architecture (backbone, classes, queries, 3D layers). The joint
2D-3D checkpoint (open-vocabulary head) needs ``--roberta DIR`` (a local roberta-base folder) for
that check, or ``--no-check``.
"""
import argparse
import os.path as osp
import sys

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from projects.odin.class_names import get_class_info  # noqa: E402
from projects.odin.conversion import (  # noqa: E402
    M2F_MISSING_PATTERNS,
    ConversionError,
    check_state_dict,
    convert_mask2former_state_dict,
    convert_official_state_dict,
    infer_architecture,
    load_mask2former_pkl,
    odin_model_cfg,
)
from projects.odin.utils.checkpoint import read_checkpoint  # noqa: E402


def build_model(arch: dict):
    from mmdet3d.registry import MODELS
    from mmengine.registry import init_default_scope

    import projects.odin.models  # noqa: F401
    init_default_scope('mmdet3d')
    return MODELS.build(odin_model_cfg(**arch))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='official ODIN .pth or Mask2Former .pkl')
    parser.add_argument('dst', help='output .pth (mmengine checkpoint with state_dict)')
    parser.add_argument('--no-check', action='store_true',
                        help='skip building a model to validate keys and shapes')
    parser.add_argument('--roberta', default=None,
                        help='RoBERTa-base folder (or cached hub name) of the text encoder, '
                        'needed to check a joint open-vocabulary checkpoint')
    parser.add_argument('--dataset', default=None,
                        choices=['scannet', 'scannet200', 's3dis', 'matterport3d', 'ai2thor'],
                        help='store this dataset\'s class names as meta.dataset_meta (what '
                        'mmdet3d.apis.init_model and the visualiser read); checked against the '
                        'checkpoint\'s class count')
    parser.add_argument('--num-classes', type=int, default=20,
                        help='classes of the ODIN model initialised from a .pkl (default 20)')
    args = parser.parse_args(argv)
    meta = dict(source=osp.basename(args.src))
    try:
        if args.src.endswith('.pkl'):
            sd = load_mask2former_pkl(args.src)
            is_swin = 'backbone.patch_embed.proj.weight' in sd
            arch = dict(backbone='swin' if is_swin else 'r50', num_classes=args.num_classes)
            model_sd = None if args.no_check else build_model(arch).state_dict()
            out, dropped = convert_mask2former_state_dict(sd, model_sd)
            if model_sd is not None:
                check_state_dict(out, model_sd, allow_missing=M2F_MISSING_PATTERNS +
                                 (r'decode_head\.pixel_decoder\.output_convs\..*', ))
            meta.update(kind='mask2former_init', dropped=dropped, arch=arch)
            print(f'dropped (re-initialised): {dropped}')
        else:
            ckpt = read_checkpoint(args.src, map_location='cpu')  # trusted local file
            sd = ckpt.get('model', ckpt.get('state_dict', ckpt))
            arch = infer_architecture(sd)
            out = convert_official_state_dict(sd)
            if arch.get('open_vocab'):
                if not args.no_check and args.roberta is None:
                    raise ConversionError('this is an open-vocabulary (joint) checkpoint: pass '
                                          '--roberta DIR (a roberta-base folder) to check it, '
                                          'or --no-check')
                arch['roberta'] = args.roberta
            if not args.no_check:
                check_state_dict(out, build_model(arch).state_dict())
            meta.update(kind='odin', arch=arch, iteration=ckpt.get('iteration'))
        if args.dataset is not None:
            classes = list(get_class_info(args.dataset)['classes'])
            if not arch.get('open_vocab') and len(classes) != arch['num_classes']:
                raise ConversionError(f'--dataset {args.dataset} has {len(classes)} classes but '
                                      f'the checkpoint predicts {arch["num_classes"]}')
            meta['dataset_meta'] = dict(classes=classes)
    except ConversionError as e:
        print(f'error: {args.src}: {e}', file=sys.stderr)
        return 1
    torch.save(dict(state_dict=out, meta=meta), args.dst)
    print(f'wrote {len(out)} tensors to {args.dst} ({meta.get("arch")})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
