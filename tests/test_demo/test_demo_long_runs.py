"""Long recordings in the demo: every frame by default, the bounded path's view chunk, a memory
budget refused up front with the frame count that fits, and the progress bar's hooks."""
import io
import json
import math
import os
import re

import pytest
import torch
from mmengine.config import Config
from rgbd_makers import make_scannet
from test_odin_demo_cli import _run, tiny_checkpoint  # noqa: F401  (fixture)
from torch import nn

from odin_testing import DEMO_CONFIG, REPO_ROOT
from projects.odin.apis.inference import inference_recording, init_odin_model, prepare_recording
from projects.odin.datasets.recordings import load_rgbd_folder
from projects.odin.demo import DEFAULT_VIEW_CHUNK, DemoError, run_recording_demo
from projects.odin.demo.memory import (
    MEMORY_COSTS,
    MemoryBudgetError,
    backbone_family,
    check_memory_budget,
    estimate_peak_memory_gb,
    frames_within_budget,
)
from projects.odin.demo.progress import ViewProgress, progress_modules, view_passes

OPTS = dict(image_size=(24, 32), score_thr=0.0, min_points=1, progress=False)


def test_demo_uses_every_frame_by_default(tmp_path, tiny_checkpoint, capsys):  # noqa: F811
    folder = make_scannet(tmp_path / 'rec', n=65)  # more than the old default cap of 60
    assert _run(folder, tiny_checkpoint, tmp_path / 'out', '--quiet') == 0
    doc = json.loads((tmp_path / 'out' / 'rec_instances.json').read_text())
    assert doc['num_views'] == 65
    captured = capsys.readouterr()
    assert 'scannet recording: 65 frames' in captured.out
    assert f'view chunk {DEFAULT_VIEW_CHUNK},' in captured.out
    assert 'ODIN' not in captured.err  # --quiet: no progress bar
    # --max-frames stays as a speed option
    assert _run(folder, tiny_checkpoint, tmp_path / 'cap', '--quiet', '--max-frames', '7') == 0
    doc = json.loads((tmp_path / 'cap' / 'rec_instances.json').read_text())
    assert doc['num_views'] == 7


def test_view_chunk_option_and_config_precedence(tmp_path, tiny_checkpoint):  # noqa: F811
    folder = str(make_scannet(tmp_path / 'rec'))
    for kwargs, expect in ((dict(view_chunk=0), 'view chunk off (unchunked)'),
                           (dict(view_chunk=3), 'view chunk 3,'),
                           (dict(cfg_options={'model.test_cfg.view_chunk': 5}), 'view chunk 5,')):
        lines = []
        run_recording_demo(folder, DEMO_CONFIG, tiny_checkpoint, str(tmp_path / 'o'),
                           log=lines.append, **kwargs, **OPTS)
        assert any(line.startswith(expect) for line in lines), (kwargs, lines)
    with pytest.raises(DemoError, match='--view-chunk must be >= 0'):
        run_recording_demo(folder, DEMO_CONFIG, tiny_checkpoint, str(tmp_path / 'o'),
                           view_chunk=-1, log=lambda s: None, **OPTS)


def test_memory_budget_refused_with_the_frame_count_that_fits(
        tmp_path, tiny_checkpoint, capsys):  # noqa: F811
    folder = make_scannet(tmp_path / 'rec', n=6)
    cfg = Config.fromfile(DEMO_CONFIG)
    size = OPTS['image_size']
    # a budget between the estimates of 2 and 3 frames: 2 frames fit
    two = estimate_peak_memory_gb(cfg, 2, size, DEFAULT_VIEW_CHUNK)
    three = estimate_peak_memory_gb(cfg, 3, size, DEFAULT_VIEW_CHUNK)
    budget = (two + three) / 2
    out = tmp_path / 'out'
    with pytest.raises(DemoError) as err:
        run_recording_demo(str(folder), DEMO_CONFIG, tiny_checkpoint, str(out),
                           max_memory_gb=budget, log=lambda s: None, **OPTS)
    msg = str(err.value)
    assert '6 frames at 24x32 need ~' in msg and f'--max-memory-gb {budget:g}' in msg
    assert 'at most 2 frames fit: use --max-frames 2' in msg and '--frame-stride 3' in msg
    assert not out.exists()  # refused before anything was prepared or written
    # the suggestion works: 2 frames pass the same budget
    res = run_recording_demo(str(folder), DEMO_CONFIG, tiny_checkpoint, str(out),
                             max_memory_gb=budget, max_frames=2, log=lambda s: None, **OPTS)
    assert res.num_instances >= 0 and out.exists()
    # the command line: exit 2 with one error line; a budget below the model alone
    capsys.readouterr()
    assert _run(folder, tiny_checkpoint, tmp_path / 'cli', '--max-memory-gb', '0.01') == 2
    err_lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith('error: ')]
    assert len(err_lines) == 1 and 'not even one frame fits' in err_lines[0]


def test_memory_estimate_is_linear_and_consistent():
    r50 = Config.fromfile('configs/odin/scannet_r50.py')
    swin = Config.fromfile('configs/odin/scannet200_swin.py')
    assert backbone_family(r50) == 'resnet' and backbone_family(swin) == 'swin'
    a, b, c = (estimate_peak_memory_gb(r50, n, (240, 320)) for n in (10, 20, 30))
    assert b - a == pytest.approx(c - b) and b > a
    # the per-frame slope scales with the input's pixels
    slope_small = estimate_peak_memory_gb(r50, 1, (240, 320)) - \
        estimate_peak_memory_gb(r50, 0, (240, 320))
    slope_large = estimate_peak_memory_gb(r50, 1, (480, 640)) - \
        estimate_peak_memory_gb(r50, 0, (480, 640))
    assert slope_large == pytest.approx(4 * slope_small)
    for budget in (6.0, 11.0, 24.0):
        fit = frames_within_budget(swin, budget, (384, 512))
        assert estimate_peak_memory_gb(swin, fit, (384, 512)) <= budget
        assert estimate_peak_memory_gb(swin, fit + 1, (384, 512)) > budget
        with pytest.raises(MemoryBudgetError, match=f'at most {fit} frames fit'):
            check_memory_budget(swin, fit + 1, (384, 512), budget)
        assert check_memory_budget(swin, fit, (384, 512), budget) <= budget
    with pytest.raises(ValueError, match='must be positive'):
        check_memory_budget(r50, 10, (240, 320), 0.0)
    # the suggested stride accounts for a stride already applied
    with pytest.raises(MemoryBudgetError, match='--frame-stride 6'):
        check_memory_budget(r50, 30, (240, 320), estimate_peak_memory_gb(r50, 10, (240, 320)),
                            frame_stride=2)


def test_memory_costs_rest_on_documented_measurements():
    """Every line of the estimate lies on or above its measured points, each of them a row of
    docs/demo.md's tables, measured by a command of this repository."""
    assert set(MEMORY_COSTS) == {(f, p) for f in ('resnet', 'swin')
                                 for p in ('bounded', 'unchunked')}
    with open(os.path.join(REPO_ROOT, 'docs', 'demo.md')) as f:
        rows = [[c.strip() for c in line.strip().strip('|').split('|')]
                for line in f if line.startswith('|')]
    for key, cost in MEMORY_COSTS.items():
        assert cost.table.startswith('docs/demo.md') and len(cost.measured) >= 2, key
        script = cost.command.split()[1]
        assert os.path.isfile(os.path.join(REPO_ROOT, script)), (key, script)
        family = 'R50' if key[0] == 'resnet' else 'Swin-B'
        for frames, gb in cost.measured:
            assert cost.peak_gb(frames, cost.measured_hw) >= gb, (key, frames, gb)
            assert any(r[0].startswith(family) and r[1] == str(frames) and r[2] == key[1] and
                       float(r[-1]) == gb for r in rows if len(r) >= 4 and r[1].isdigit()), \
                (key, frames, gb)


class _Stage(nn.Module):

    def forward(self, x=None, query=None):
        return (x if query is None else query) + 1


class _ChunkedModel(nn.Module):
    """A model whose stages run per chunk of views, like the bounded path."""

    def __init__(self, chunk: int):
        super().__init__()
        self.chunk = chunk
        self.backbone = nn.Module()
        self.backbone.res_layers = ['layer1', 'layer2']
        self.backbone.layer1, self.backbone.layer2 = _Stage(), _Stage()
        self.decode_head = nn.Module()
        self.decode_head.pixel_decoder = nn.Module()
        self.decode_head.pixel_decoder.encoder = _Stage()

    def forward(self, x):
        for stage in (self.backbone.layer1, self.backbone.layer2):
            x = torch.cat([stage(c) for c in x.split(self.chunk)])
        enc = self.decode_head.pixel_decoder.encoder
        return torch.cat([enc(query=c) for c in x.split(self.chunk)])


def _bar_counts(text: str):
    """Every ``done/total`` a tqdm bar drew, in order."""
    return [(int(a), int(b)) for a, b in re.findall(r'(\d+)/(\d+) \[', text)]


def test_progress_counts_views_and_chunks():
    model = _ChunkedModel(chunk=3)
    stream = io.StringIO()
    with ViewProgress(model, num_views=7, stream=stream, min_interval=0.0) as bar:
        model(torch.zeros(7, 2))
    assert bar.stages == ['res2', 'res3', 'encoder']
    assert bar.calls == [3, 3, 3] and bar.views == [7, 7, 7]
    assert bar.done == bar.total == 21
    # the tqdm bar: drawn at the start, at each of the 9 calls (min_interval 0) and at the end
    text = stream.getvalue()
    assert text.count('\r') >= 1 + 9 and '100%|' in text and text.endswith('\n')
    assert _bar_counts(text)[-1] == (21, 21)
    # the hooks are removed afterwards
    model(torch.zeros(7, 2))
    assert bar.calls == [3, 3, 3]
    with pytest.raises(ValueError, match='no backbone stages'):
        progress_modules(nn.Linear(2, 2))


def test_progress_hooks_on_a_tiny_odin(tmp_path):
    seq = load_rgbd_folder(str(make_scannet(tmp_path / 'rec', n=5)))
    cfg = Config.fromfile(DEMO_CONFIG)
    cfg.model.test_cfg.view_chunk = 2  # bounded path: every stage runs in 3 chunks
    model = init_odin_model(cfg)
    prepared = prepare_recording(seq, image_size=(24, 32), cfg=cfg)
    bar = ViewProgress(model, num_views=5, enabled=False)
    with bar:
        inference_recording(model, prepared)
    assert bar.stages == ['res2', 'res3', 'res4', 'res5', 'encoder']
    assert bar.views == [5] * 5  # every view passes every stage once
    assert bar.calls == [math.ceil(5 / 2)] * 5
    assert bar.done == bar.total == 25
    # whole-batch path: one call per stage
    model.test_cfg['view_chunk'] = 0
    bar = ViewProgress(model, num_views=5, enabled=False)
    with bar:
        inference_recording(model, prepared)
    assert bar.calls == [1] * 5 and bar.done == bar.total == 25


SWIN_BACKBONE = dict(
    type='ODINSwinTransformer', embed_dims=32, depths=[1, 1, 1, 1],
    num_heads=[1, 2, 4, 8], window_size=4, out_indices=(0, 1, 2, 3), fusion_stages=(1, 2, 3),
    fusion_layers=(1, 1, 1), fusion_cfg=dict(embed_dims=32, num_heads=4, ffn_dims=64,
                                             num_groups=8), init_cfg=None)


@pytest.fixture(scope='module')
def demo_recording(tmp_path_factory):
    seq = load_rgbd_folder(str(make_scannet(tmp_path_factory.mktemp('rec') / 'rec', n=7)))
    return seq, prepare_recording(seq, image_size=(32, 32), cfg=Config.fromfile(DEMO_CONFIG))


@pytest.mark.parametrize('view_chunk', [0, 3])
@pytest.mark.parametrize('backbone', ['resnet', 'swin'])
def test_demo_progress_total_is_known_up_front(demo_recording, backbone, view_chunk):
    """The demo's model (sensor points): the bar's total never changes and is reached exactly.

    The bounded path recomputes res2 for the sensor-point mask features (the first backbone
    stage runs twice per view); the total, fixed before the forward, accounts for it, so the bar
    neither passes 100 % nor grows its total (it went 100 -> 108 -> 116 -> 120 on 20 frames).
    """
    seq, prepared = demo_recording
    cfg = Config.fromfile(DEMO_CONFIG)
    if backbone == 'swin':
        cfg.model.backbone = SWIN_BACKBONE  # replaced, not merged
        cfg.model.decode_head.in_channels = [32, 64, 128, 256]
    cfg.model.test_cfg.view_chunk = view_chunk
    torch.manual_seed(0)
    model = init_odin_model(cfg, sensor_points=True)
    passes = view_passes(model)
    assert passes == [2 if view_chunk else 1, 1, 1, 1, 1]
    stream = io.StringIO()
    with ViewProgress(model, num_views=len(seq), stream=stream, min_interval=0.0) as bar:
        inference_recording(model, prepared)
    assert bar.total == len(seq) * sum(passes)
    chunks = math.ceil(len(seq) / view_chunk) if view_chunk else 1
    assert bar.views == [len(seq) * p for p in passes]
    assert bar.calls == [chunks * p for p in passes]
    assert bar.done == bar.total
    counts = _bar_counts(stream.getvalue())
    assert len(counts) >= sum(bar.calls)  # a redraw at every call
    assert {total for _, total in counts} == {bar.total}
    done = [d for d, _ in counts]
    assert done == sorted(done) and done[-1] == bar.total
