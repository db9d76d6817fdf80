"""Every config under configs/ parses with mmengine's Config."""
from pathlib import Path

import pytest
from mmengine.config import Config

CONFIG_ROOT = Path(__file__).resolve().parents[1] / 'configs'
CONFIGS = sorted(p for p in CONFIG_ROOT.rglob('*.py'))


def test_configs_exist():
    assert CONFIGS, f'no configs found under {CONFIG_ROOT}'


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: str(p.relative_to(CONFIG_ROOT)))
def test_config_parses(path):
    cfg = Config.fromfile(str(path))
    assert isinstance(cfg.to_dict(), dict)
    if not path.relative_to(CONFIG_ROOT).parts[0] == '_base_':
        # Full configs enable the project through custom_imports, as mmdet3d projects do.
        assert cfg.custom_imports['imports'] == ['projects.odin']
        assert cfg.custom_imports['allow_failed_imports'] is False
