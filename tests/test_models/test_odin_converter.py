"""Official-checkpoint key mapping: all 13 official architectures, and loud failures."""
import glob
import os.path as osp

import pytest
import torch

from odin_testing import reference_dir
from projects.odin.conversion import (
    ConversionError,
    check_state_dict,
    convert_mask2former_state_dict,
    convert_official_state_dict,
    infer_architecture,
    odin_model_cfg,
)
from projects.odin.parity import read_statedict_tsv

REF = reference_dir()
TSVS = sorted(glob.glob(osp.join(REF, 'statedict_*.tsv')))
needs_ref = pytest.mark.skipif(
    not TSVS, reason=f'reference state-dict lists not found in {osp.normpath(REF)}')


pytestmark = pytest.mark.usefixtures('one_thread')


def _meta_state_dict(path):
    return {
        k: torch.empty(shape, dtype=getattr(torch, dtype), device='meta')
        for k, (shape, dtype) in read_statedict_tsv(path).items()
    }


def _build(arch):
    from mmdet3d.registry import MODELS
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet3d')
    try:
        # shapes only: skip allocating/initialising ~56M parameters where the backbone allows
        with torch.device('meta'):
            return MODELS.build(odin_model_cfg(**arch))
    except RuntimeError:  # mmdet's Swin calls .item() while building
        return MODELS.build(odin_model_cfg(**arch))


@needs_ref
def test_all_13_architectures_are_covered():
    assert len(TSVS) == 13
    names = []
    for path in TSVS:
        official = _meta_state_dict(path)
        arch = infer_architecture(official)
        converted = convert_official_state_dict(official)
        model_sd = _build(arch).state_dict()
        # every model key is provided with the right shape, nothing extra
        check_state_dict(converted, model_sd)
        assert len(converted) >= len(official) - 1  # only criterion.empty_weight dropped
        names.append((osp.basename(path), arch['backbone'], arch['num_classes']))
    assert ('statedict_alfred_resnet.tsv', 'r50', 123) in names
    assert ('statedict_scannet200_swin.tsv', 'swin', 200) in names


@needs_ref
def test_architecture_inference():
    ablation = infer_architecture(_meta_state_dict(osp.join(REF,
                                                            'statedict_ablation_no_3d_fusion.tsv')))
    assert ablation['fusion_stages'] == () and not ablation['decoder_fusion']
    inter = infer_architecture(_meta_state_dict(osp.join(REF,
                                                         'statedict_ablation_no_interleave.tsv')))
    assert inter['fusion_stages'] == () and inter['decoder_fusion']
    full = infer_architecture(_meta_state_dict(osp.join(REF, 'statedict_scannet_swin.tsv')))
    assert full['backbone_fusion_layers'] == (2, 6, 2) and full['num_queries'] == 100


@needs_ref
def test_conversion_fails_loudly():
    official = _meta_state_dict(osp.join(REF, 'statedict_scannet_resnet.tsv'))
    bad = dict(official)
    bad['sem_seg_head.predictor.some_new_layer.weight'] = torch.empty(3, device='meta')
    with pytest.raises(ConversionError, match='some_new_layer'):
        convert_official_state_dict(bad)
    bad = dict(official)
    bad['backbone.res2.0.conv1.extra'] = torch.empty(3, device='meta')
    with pytest.raises(ConversionError, match='unmapped'):
        convert_official_state_dict(bad)
    converted = convert_official_state_dict(official)
    model_sd = {k: v for k, v in converted.items()}
    wrong = dict(converted)
    wrong['decode_head.classifier.cls_embed.weight'] = torch.empty(5, 256, device='meta')
    with pytest.raises(ConversionError, match='shape mismatch'):
        check_state_dict(wrong, model_sd)
    missing = dict(converted)
    missing.pop('decode_head.query_feat.weight')
    with pytest.raises(ConversionError, match='missing'):
        check_state_dict(missing, model_sd)


@needs_ref
def test_mask2former_init_weights():
    """A Mask2Former COCO pkl (numpy arrays, no 3D layers, 3x3 output conv, 81 classes)."""
    import numpy as np
    official = read_statedict_tsv(osp.join(REF, 'statedict_ablation_no_3d_fusion.tsv'))
    m2f = {}
    for k, (shape, _) in official.items():
        if k == 'criterion.empty_weight':
            continue
        if k == 'sem_seg_head.predictor.class_embed.weight':
            shape = (81, 256)
        if k == 'sem_seg_head.predictor.class_embed.bias':
            shape = (81, )
        if k.startswith('sem_seg_head.predictor.pe_layer'):
            continue
        if k == 'sem_seg_head.pixel_decoder.layer_1.weight':
            shape = (256, 256, 3, 3)
        if k == 'sem_seg_head.pixel_decoder.layer_1.bias':
            continue
        m2f[k] = np.zeros(shape, dtype=np.float32)
    model_sd = _build(dict(backbone='r50', num_classes=20)).state_dict()
    out, dropped = convert_mask2former_state_dict(m2f, model_sd)
    assert 'decode_head.pixel_decoder.output_convs.0.conv.weight' in dropped
    assert 'sem_seg_head.predictor.class_embed.weight' in dropped
    from projects.odin.conversion import M2F_MISSING_PATTERNS
    check_state_dict(out, model_sd, allow_missing=M2F_MISSING_PATTERNS +
                     (r'decode_head\.pixel_decoder\.output_convs\..*', ))
    assert out['backbone.conv1.weight'].dtype == torch.float32
