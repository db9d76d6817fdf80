"""ODINLoggerHook: the test metrics JSON is written by the main process only, atomically."""
import json
import logging
import os
from types import SimpleNamespace

import pytest

import projects.odin.engine.hooks as hooks_module
from projects.odin.engine import ODINLoggerHook


class _Processor:
    def get_log_after_epoch(self, runner, length, mode, with_non_scalar=False):
        assert mode == 'test' and length == 3 and with_non_scalar
        return {'scannet/AP': 0.25, 'scannet/mIoU': 0.5, 'time': 0.01}, 'Epoch(test) [3/3] ...'


def _runner(tmp_path):
    return SimpleNamespace(log_processor=_Processor(), test_dataloader=[0, 1, 2],
                           logger=logging.getLogger('odin-logger-hook-test'),
                           log_dir=str(tmp_path), timestamp='20261205_000000')


@pytest.mark.parametrize('main', [True, False])
def test_only_the_main_process_writes_the_metrics(tmp_path, monkeypatch, main):
    monkeypatch.setattr(hooks_module, 'is_main_process', lambda: main)
    runner = _runner(tmp_path)
    hook = ODINLoggerHook()
    hook.json_log_path = f'{runner.timestamp}.json'
    path = tmp_path / hook.json_log_path
    # a longer file left by another writer is replaced whole, not overwritten in place
    path.write_text('{"a much longer document that a shorter in-place write would leave": 1}')
    hook.after_test_epoch(runner, {})
    if main:
        assert json.loads(path.read_text()) == {'scannet/AP': 0.25, 'scannet/mIoU': 0.5,
                                                'time': 0.01}
    else:  # other ranks leave the file alone
        assert 'much longer' in path.read_text()
    assert sorted(os.listdir(tmp_path)) == [hook.json_log_path]  # no temporary file left


def test_default_runtime_uses_it():
    from mmengine.config import Config

    from odin_testing import REPO_ROOT
    cfg = Config.fromfile(f'{REPO_ROOT}/configs/odin/scannet_r50.py')
    assert cfg.default_hooks.logger.type == 'ODINLoggerHook'
