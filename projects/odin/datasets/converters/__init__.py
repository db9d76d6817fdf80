"""Raw dataset -> ODIN converters (pure numpy/OpenCV; no torch needed).

``CONVERTERS[name](args)`` runs one converter from ``tools/create_data.py``'s parsed arguments.
"""
from argparse import Namespace
from typing import Callable, Dict


def _scannet(args: Namespace, dataset: str) -> dict:
    from .scannet import convert_scannet
    return convert_scannet(args.root_path, args.out_dir, dataset=dataset,
                           frame_skip=args.frame_skip, inpaint=args.inpaint_depth,
                           workers=args.workers, overwrite=args.overwrite,
                           split_dir=args.split_dir, scenes=args.scenes,
                           color_interp=args.color_interp, prefix=args.extra_tag,
                           progress=not args.no_progress)


def _s3dis(args: Namespace) -> dict:
    from .s3dis import convert_s3dis
    size = tuple(args.image_size) if args.image_size else None
    return convert_s3dis(args.root_path, args.out_dir, val_area=args.val_area, image_size=size,
                         inpaint=args.inpaint_depth,
                         workers=args.workers, overwrite=args.overwrite, rooms=args.scenes,
                         prefix=args.extra_tag, progress=not args.no_progress)


def _matterport(args: Namespace) -> dict:
    from .matterport import convert_matterport
    size = tuple(args.image_size) if args.image_size else (512, 640)
    return convert_matterport(args.root_path, args.out_dir, image_size=size,
                              inpaint=args.inpaint_depth,
                              workers=args.workers, overwrite=args.overwrite,
                              split_dir=args.split_dir, houses=args.scenes,
                              prefix=args.extra_tag, progress=not args.no_progress)


def _ai2thor(args: Namespace) -> dict:
    from .ai2thor import convert_ai2thor
    if args.inpaint_depth:
        raise ValueError('--inpaint-depth is not used for ai2thor: the official AI2THOR recipes '
                         'read raw depth (INPUT.INPAINT_DEPTH False)')
    return convert_ai2thor(args.root_path, args.out_dir, workers=args.workers,
                           overwrite=args.overwrite, split_dir=args.split_dir,
                           scenes=args.scenes, prefix=args.extra_tag,
                           progress=not args.no_progress)


CONVERTERS: Dict[str, Callable[[Namespace], dict]] = {
    'scannet': lambda a: _scannet(a, 'scannet'),
    'scannet200': lambda a: _scannet(a, 'scannet200'),
    's3dis': _s3dis,
    'matterport3d': _matterport,
    'ai2thor': _ai2thor,
}

__all__ = ['CONVERTERS']
