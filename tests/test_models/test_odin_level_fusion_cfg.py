"""The pixel decoder's per-level fusion layer is ``level_fusion_cfg``; ``fusion_cfg`` still works.

The backbone's ``fusion_cfg`` (residual fusion blocks: projections + layer) and the pixel
decoder's (one bare layer per encoder level) meant different things under one name; the pixel
decoder's key was renamed, the old one is accepted with a DeprecationWarning and the state-dict
keys (``decode_head.pixel_decoder.fusion_blocks.*``) are unchanged.
"""
import copy
import warnings

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

import projects.odin  # noqa: F401  (registers the ODIN components)
from odin_testing import REPO_ROOT

CFG = f'{REPO_ROOT}/configs/odin/odin_tiny_test.py'
init_default_scope('mmdet3d')


def _model(**pixel_decoder):
    from mmdet3d.registry import MODELS
    cfg = copy.deepcopy(Config.fromfile(CFG).model)
    pd = cfg.decode_head.pixel_decoder
    layer = pd.pop('level_fusion_cfg')
    for key, value in pixel_decoder.items():
        pd[key] = layer if value == 'layer' else value
    torch.manual_seed(0)
    return MODELS.build(cfg)


def test_configs_use_the_new_key():
    for name in ('configs/_base_/models/odin_r50.py', 'configs/odin/odin_tiny_test.py',
                 'configs/odin/synthetic_r18_demo.py', 'configs/odin/scannet_swin.py'):
        pd = Config.fromfile(f'{REPO_ROOT}/{name}').model.decode_head.pixel_decoder
        assert 'fusion_cfg' not in pd and pd.level_fusion_cfg is not None, name


def test_old_key_warns_and_builds_the_same_model():
    with warnings.catch_warnings():
        warnings.filterwarnings('error', message='.*fusion_cfg', category=DeprecationWarning)
        new = _model(level_fusion_cfg='layer')
    with pytest.warns(DeprecationWarning, match='level_fusion_cfg'):
        old = _model(fusion_cfg='layer')
    new_sd, old_sd = new.state_dict(), old.state_dict()
    assert list(new_sd) == list(old_sd)
    assert any(k.startswith('decode_head.pixel_decoder.fusion_blocks.') for k in new_sd)
    assert all(torch.equal(new_sd[k], old_sd[k]) for k in new_sd)


def test_old_key_none_is_the_no_fusion_ablation():
    with pytest.warns(DeprecationWarning):
        model = _model(fusion_cfg=None)
    assert model.decode_head.pixel_decoder.fusion_blocks is None
    assert _model(level_fusion_cfg=None).decode_head.pixel_decoder.fusion_blocks is None


def test_both_keys_disagreeing_is_an_error():
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match='set only'):
        _model(level_fusion_cfg='layer', fusion_cfg=None)
    with pytest.warns(DeprecationWarning):  # the same value twice is not ambiguous
        model = _model(level_fusion_cfg='layer', fusion_cfg='layer')
    assert len(model.decode_head.pixel_decoder.fusion_blocks) == 3
