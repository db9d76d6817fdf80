"""``exit_after_run``: the exit of ``tools/train.py`` / ``tools/test.py`` (device_fallback.py)."""
import os
import subprocess
import sys

import pytest

from odin_testing import REPO_ROOT

_DISTRIBUTED = r"""
import os, socket, sys, logging
import torch.distributed as dist
from projects.odin.utils.device_fallback import exit_after_run
with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=0, world_size=1)
logging.basicConfig(stream=sys.stderr)
logging.getLogger('probe').warning('logged before the exit')
print('printed before the exit', end='')  # no newline: only a flush writes it
exit_after_run(3)
print('not reached')
"""


def test_outside_distributed_runs_it_exits_normally():
    from projects.odin.utils.device_fallback import exit_after_run
    with pytest.raises(SystemExit) as info:
        exit_after_run(2)
    assert info.value.code == 2


def test_a_distributed_process_exits_with_its_status_and_flushed_output():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO_ROOT] + sys.path),
               CUDA_VISIBLE_DEVICES='')
    out = subprocess.run([sys.executable, '-c', _DISTRIBUTED], capture_output=True, text=True,
                         env=env, cwd=REPO_ROOT, timeout=120)
    assert out.returncode == 3, out.stderr[-2000:]
    assert out.stdout == 'printed before the exit'
    assert 'logged before the exit' in out.stderr
