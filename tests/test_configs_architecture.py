"""The packaged configs (configs/_base_/models, shipped as projects/odin/.mim/configs) are the one
source of the architectures: the checkpoint converter builds its model configs from them, and every
official architecture it builds so still has the state-dict keys of the reference lists."""
import os.path as osp
import shutil

import pytest
import torch
from mmengine.config import Config

from odin_testing import REPO_ROOT, reference_dir
from projects.odin.conversion import (
    base_model_cfg,
    check_state_dict,
    convert_official_state_dict,
    infer_architecture,
    odin_model_cfg,
)
from projects.odin.parity import read_statedict_tsv
from projects.odin.utils import resources

REF = reference_dir()
#: one architecture of each kind: R50, Swin-B, and R50 without any 3D layer
TSVS = ['statedict_scannet_resnet.tsv', 'statedict_scannet200_swin.tsv',
        'statedict_ablation_no_3d_fusion.tsv']
pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture
def packaged_configs(tmp_path, monkeypatch):
    """A copy of the configs as installed package data, and a working directory without them."""
    data = tmp_path / 'mim'
    shutil.copytree(osp.join(REPO_ROOT, 'configs'), data / 'configs')
    monkeypatch.setattr(resources, 'PACKAGE_DATA', str(data))
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return data / 'configs'


@pytest.mark.parametrize('backbone', ['r50', 'swin'])
def test_converter_defaults_are_the_base_configs(packaged_configs, backbone):
    cfg = Config.fromfile(str(packaged_configs / '_base_' / 'models' / f'odin_{backbone}.py'))
    assert odin_model_cfg(backbone=backbone) == cfg.model.to_dict()
    wide = odin_model_cfg(backbone=backbone, num_classes=200, num_queries=150)
    assert wide['decode_head']['loss_cls']['class_weight'] == [1.0] * 200 + [0.1]
    assert wide['decode_head']['num_queries'] == 150


def test_converter_reads_the_packaged_configs(packaged_configs):
    """A value changed in the packaged config is what the converter builds (no second copy)."""
    path = packaged_configs / '_base_' / 'models' / 'odin_r50.py'
    text = path.read_text()
    assert 'num_neighbors=8,' in text
    path.write_text(text.replace('num_neighbors=8,', 'num_neighbors=5,'))
    assert base_model_cfg('r50')['num_neighbors'] == 5
    assert odin_model_cfg()['num_neighbors'] == 5
    assert odin_model_cfg(backbone='swin')['num_neighbors'] == 5  # swin inherits from r50


def test_converter_without_configs_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setattr(resources, 'PACKAGE_DATA', str(tmp_path / 'no_package_data'))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match='odin_r50.py of the ODIN project not found'):
        odin_model_cfg()
    with pytest.raises(ValueError, match="backbone must be one of"):
        base_model_cfg('r101')


@pytest.mark.skipif(not osp.isfile(osp.join(REF, TSVS[0])),
                    reason=f'reference state-dict lists not found in {osp.normpath(REF)}')
@pytest.mark.parametrize('tsv', TSVS)
def test_packaged_architectures_match_the_official_key_lists(packaged_configs, tsv):
    from mmdet3d.registry import MODELS
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet3d')
    official = {k: torch.empty(shape, dtype=getattr(torch, dtype), device='meta')
                for k, (shape, dtype) in read_statedict_tsv(osp.join(REF, tsv)).items()}
    arch = infer_architecture(official)
    try:
        with torch.device('meta'):  # shapes only
            model = MODELS.build(odin_model_cfg(**arch))
    except RuntimeError:  # mmdet's Swin calls .item() while building
        model = MODELS.build(odin_model_cfg(**arch))
    # every model key is provided with the right shape, nothing extra (raises otherwise)
    check_state_dict(convert_official_state_dict(official), model.state_dict())
