"""Converter: the joint 2D-3D (open-vocabulary) checkpoint's extra keys.

No official key list exists for the joint model (it cannot be built from the released code), so
the joint state dict is synthesised: the ScanNet R50 key list (reference TSV) plus the keys that
the official decoder source defines in open-vocabulary mode, with shapes from the joint config
(hidden 256, 9 decoder layers, MAX_SEQ_LEN 256) and a tiny RoBERTa standing in for roberta-base.
"""
import os.path as osp

import pytest
import torch

from odin_testing import make_tiny_roberta, reference_dir
from projects.odin.conversion import (
    ConversionError,
    check_state_dict,
    convert_official_state_dict,
    infer_architecture,
    odin_model_cfg,
)
from projects.odin.parity import read_statedict_tsv

TSV = osp.join(reference_dir(), 'statedict_scannet_resnet.tsv')
P = 'sem_seg_head.predictor.'


pytestmark = pytest.mark.usefixtures('one_thread')


def _joint_state_dict(roberta_dir):
    """Official-style joint state dict (meta tensors) and the RoBERTa keys it contains."""
    from transformers import RobertaConfig, RobertaModel
    sd = {
        k: torch.empty(shape, dtype=getattr(torch, dtype), device='meta')
        for k, (shape, dtype) in read_statedict_tsv(TSV).items()
    }
    d = 256
    sd[P + 'class_embed.weight'] = torch.empty(d, d, device='meta')  # Linear(256 -> 256)
    sd[P + 'class_embed.bias'] = torch.empty(d, device='meta')
    for i in range(9):
        pre = f'{P}transformer_text_cross_attention_layers.{i}.'
        sd[pre + 'multihead_attn.in_proj_weight'] = torch.empty(3 * d, d, device='meta')
        sd[pre + 'multihead_attn.in_proj_bias'] = torch.empty(3 * d, device='meta')
        sd[pre + 'multihead_attn.out_proj.weight'] = torch.empty(d, d, device='meta')
        sd[pre + 'multihead_attn.out_proj.bias'] = torch.empty(d, device='meta')
        sd[pre + 'norm.weight'] = torch.empty(d, device='meta')
        sd[pre + 'norm.bias'] = torch.empty(d, device='meta')
    sd[P + 'lang_pos_embed.weight'] = torch.empty(256, d, device='meta')
    config = RobertaConfig.from_pretrained(roberta_dir)
    sd[P + 'lang_encoder.text_projector.0.weight'] = torch.empty(d, config.hidden_size,
                                                                 device='meta')
    sd[P + 'lang_encoder.text_projector.0.bias'] = torch.empty(d, device='meta')
    with torch.device('meta'):
        roberta = RobertaModel(config)  # with pooler, as RobertaModel.from_pretrained builds it
    rob = {P + 'lang_encoder.text_encoder.' + k: v for k, v in roberta.state_dict().items()}
    # transformers 4.x (the official code's era) saved the position-id buffer
    rob[P + 'lang_encoder.text_encoder.embeddings.position_ids'] = torch.empty(
        1, config.max_position_embeddings, dtype=torch.long, device='meta')
    sd.update(rob)
    return sd, rob


@pytest.mark.skipif(not osp.exists(TSV), reason=f'reference key list not found: {TSV}')
def test_joint_checkpoint_converts_and_loads_without_missing_or_unexpected_keys(tmp_path):
    from mmdet3d.registry import MODELS
    from mmengine.registry import init_default_scope

    import projects.odin.models  # noqa: F401
    roberta_dir = make_tiny_roberta(str(tmp_path / 'roberta'))
    official, rob = _joint_state_dict(roberta_dir)
    arch = infer_architecture(official)
    assert arch['open_vocab'] and arch['backbone'] == 'r50'
    with pytest.raises(ValueError, match='roberta=PATH'):
        odin_model_cfg(**arch)
    converted = convert_official_state_dict(official)
    init_default_scope('mmdet3d')
    model = MODELS.build(odin_model_cfg(**arch, roberta=roberta_dir))
    model_sd = model.state_dict()
    check_state_dict(converted, model_sd)  # no missing, unexpected or mis-shaped key
    assert len(converted) == len(model_sd)
    head = 'decode_head.'
    assert converted[head + 'classifier.cls_embed.weight'].shape == (256, 256)
    assert head + 'classifier.text_cross_attn_layers.8.attn.attn.in_proj_weight' in converted
    assert head + 'classifier.text_encoder.token_pos_embed.weight' in converted
    assert head + 'classifier.text_encoder.text_projector.weight' in converted
    mapped = [k for k in converted if k.startswith(head + 'classifier.text_encoder.roberta.')]
    dropped = [k for k in rob if '.pooler.' in k or k.endswith('position_ids')]
    assert len(mapped) == len(rob) - len(dropped) and len(dropped) == 3
    # strict loading of real tensors works
    real = {k: torch.zeros(v.shape, dtype=v.dtype) for k, v in converted.items()}
    missing, unexpected = model.load_state_dict(real, strict=True)
    assert not missing and not unexpected
    # an unknown open-vocab key still fails loudly
    bad = dict(official)
    bad[P + 'lang_encoder.extra.weight'] = torch.empty(3, device='meta')
    with pytest.raises(ConversionError, match='lang_encoder.extra'):
        convert_official_state_dict(bad)
