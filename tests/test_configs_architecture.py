"""The model configs of configs/_base_/models and the package's architectures
(projects/odin/models/model_cfgs.py, used by the checkpoint converter) are the same dicts, and the
converter reads nothing from the checkout's configs/ folder."""
import os.path as osp

import pytest
from mmengine.config import Config

from projects.odin.models import model_cfgs
from projects.odin.models.official_converter import odin_model_cfg

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


@pytest.mark.parametrize('name,build', [('odin_r50', model_cfgs.odin_r50_model),
                                        ('odin_swin', model_cfgs.odin_swin_model)])
def test_base_model_configs_equal_the_package_architectures(name, build):
    cfg = Config.fromfile(osp.join(ROOT, 'configs', '_base_', 'models', f'{name}.py'))
    assert cfg.model.to_dict() == build(cfg.num_classes, cfg.num_queries)


def test_converter_configs_come_from_package_code(monkeypatch):
    """odin_model_cfg never opens a config file, and its defaults are the base configs."""

    def no_files(*args, **kwargs):
        raise AssertionError('odin_model_cfg read a config file')

    monkeypatch.setattr(Config, 'fromfile', no_files)
    assert odin_model_cfg() == model_cfgs.odin_r50_model()
    assert odin_model_cfg(backbone='swin') == model_cfgs.odin_swin_model()
    cfg = odin_model_cfg(num_classes=200, num_queries=150)
    assert cfg['decode_head']['loss_cls']['class_weight'] == [1.0] * 200 + [0.1]
    assert cfg == model_cfgs.odin_r50_model(200, 150)
