"""The compiled ops raise std::runtime_error, never c10::Error (csrc/common/odin_error.h).

On the H200 machine of docs/benchmarks/gpu_check.json (torch 2.11+cu130, extension built with
g++ 13.3) any c10::Error (TORCH_CHECK) passing through an extension's frames killed the process
with SIGSEGV, while a std::runtime_error from the same extension became a Python RuntimeError.
That crash cannot be reproduced on our CPUs, so these tests check its cause: the sources use no
c10::Error-throwing macro, and the errors the built extension raises are not c10::Errors (whose
message carries torch's "Exception raised from ..." location line).
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from projects.odin.ops import ext_available

ROOT = Path(__file__).resolve().parents[2]
CSRC = ROOT / 'projects' / 'odin' / 'ops' / 'csrc'
#: macros that throw c10::Error
C10_THROWERS = ('TORCH_CHECK', 'TORCH_INTERNAL_ASSERT', 'AT_ASSERT', 'AT_ASSERTM', 'AT_ERROR',
                'C10_THROW_ERROR', 'C10_CUDA_KERNEL_LAUNCH_CHECK', 'C10_CUDA_CHECK')


def _code(path: Path) -> str:
    """The source without // and /* */ comments."""
    text = re.sub(r'/\*.*?\*/', '', path.read_text(), flags=re.S)
    return re.sub(r'//[^\n]*', '', text)


def test_sources_throw_no_c10_error():
    files = [p for p in CSRC.rglob('*') if p.suffix in ('.h', '.hpp', '.cpp', '.cu')]
    assert len(files) >= 5
    found = [(p.name, m) for p in files for m in C10_THROWERS
             if re.search(rf'\b{m}\s*\(', _code(p))]
    assert found == [], f'c10::Error-throwing macros in the ops sources: {found}'
    helper = _code(CSRC / 'common' / 'odin_error.h')
    assert 'throw std::runtime_error' in helper


_CASES = r"""
import sys, torch
from projects.odin.ops import _ext
device = sys.argv[1]
cases = [
    lambda: _ext.knn_gather_dot_forward(torch.rand(7, 8, device=device),
                                        torch.rand(5, 8, device=device),
                                        torch.full((7, 3), 9, device=device), 2),
    lambda: _ext.knn_forward(torch.rand(4, 2, device=device), torch.rand(4, 3, device=device),
                             torch.tensor([4], device=device), torch.tensor([4], device=device), 2),
]
if device == 'cpu':  # CPU kernel only (mmcv's op on CUDA)
    cases.append(lambda: _ext.ms_deform_attn_forward(
        torch.rand(1, 22, 2, 4), torch.tensor([[3, 5], [2, 2], [1, 3]]),
        torch.tensor([0, 15, 25]), torch.rand(1, 6, 2, 3, 3, 2), torch.rand(1, 6, 2, 3, 3)))
for call in cases:
    try:
        call()
        print('NO ERROR')
    except RuntimeError as exc:
        print('ERROR ' + repr(str(exc)))
"""


@pytest.mark.skipif(not ext_available(), reason='compiled extension not built')
@pytest.mark.parametrize('device', ['cpu', pytest.param('cuda', marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason='needs a CUDA device'))])
def test_compiled_errors_are_plain_runtime_errors(device):
    # with TORCH_SHOW_CPP_STACKTRACES=1 torch appends "Exception raised from <function> at
    # <file>:<line>" to every c10::Error it translates; a std::runtime_error has no such line
    env = dict(os.environ, TORCH_SHOW_CPP_STACKTRACES='1', TORCH_DISABLE_ADDR2LINE='1',
               PYTHONPATH=os.pathsep.join([str(ROOT)] + sys.path))
    out = subprocess.run([sys.executable, '-c', _CASES, device], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=240)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith(('ERROR', 'NO ERROR'))]
    assert out.returncode == 0 and len(lines) == (3 if device == 'cpu' else 2), out.stderr[-2000:]
    for line in lines:
        assert line.startswith('ERROR '), line
        assert 'Exception raised from' not in line, line  # a c10::Error's location line
        assert line[7:].split(':')[0] in ('knn_gather_dot_forward', 'knn_forward',
                                          'ms_deform_attn_forward'), line
