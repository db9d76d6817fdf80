"""The reference goldens: their rule-filled official weights, our model for them, their inputs.

A golden (``../shared/reference/golden_<name>.pt`` beside the checkout, made by running the
official code on CPU) stores the inputs of one eval forward pass and the tensors at every stage;
``statedict_<name>.tsv`` lists the official state-dict keys, whose values the deterministic rule
of docs/model.md §3 (:func:`fill_value`) recreates.
"""
import math
import os.path as osp
import zlib
from collections import OrderedDict
from typing import Tuple

import torch
from torch import Tensor

from projects.odin.conversion import (
    check_state_dict,
    convert_official_state_dict,
    infer_architecture,
    odin_model_cfg,
)


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
    points = dict(type='MeshPointsBuilder', voxel_size=0.02, superpoints=superpoints,
                  visibility_thresh=1e-3) if ghost else dict(type='SensorPointsBuilder')
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
