r"""Peak memory and time of one ODIN training step, whole batch vs view chunks.

``model.train_cfg.view_chunk`` (docs/training.md) runs a 3D training step over chunks of views
with every chunk's activations recomputed in the backward pass. This benchmark measures what it
buys: for every variant (``view_chunk`` 0 = whole batch, and ``--view-chunks``) one **fresh
subprocess** builds the config's model (random weights; memory and time do not depend on their
values) in training mode, makes a synthetic scene of ``--views`` posed RGB-D views with mesh
points, superpoints and instance labels (the packed batch the data pipeline produces), and runs
``--steps`` training steps (forward, losses, backward). It reports the peak resident memory of
the process (``resource.getrusage(RUSAGE_SELF).ru_maxrss``), the peak before the first step (the
model, the data and the imports) and the wall time of the last step, so every figure is the
honest peak of one run.

Example (the figures of docs/training.md)::

    python tools/analysis_tools/benchmark_train_memory.py --views 25 --image-size 144 192 \
        --view-chunks 5 --threads 1
"""
import argparse
import json
import os
import os.path as osp
import resource
import subprocess
import sys
import time
from typing import List, Optional

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
RESULT_TAG = 'BENCHMARK_RESULT '


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--config', default='configs/odin/scannet_r50.py',
                        help='model config (default: the ScanNet R50 recipe)')
    parser.add_argument('--views', type=int, default=25, help='views of the scene')
    parser.add_argument('--image-size', type=int, nargs=2, default=(240, 320),
                        metavar=('H', 'W'), help='image size of every view')
    parser.add_argument('--points', type=int, default=20000, help='mesh points of the scene')
    parser.add_argument('--view-chunks', type=int, nargs='+', default=(5, ),
                        help='train_cfg.view_chunk values measured besides 0 (whole batch)')
    parser.add_argument('--steps', type=int, default=2,
                        help='training steps per process (the last one is timed)')
    parser.add_argument('--threads', type=int, default=None, help='torch threads')
    parser.add_argument('--child', default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.views < 1 or args.steps < 1 or min(args.view_chunks) < 1:
        parser.error('--views, --steps and --view-chunks must be >= 1')
    return args


def _peak_rss_gb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def run_child(job: dict) -> dict:
    """One variant in this process: build, make the scene, run the steps, measure."""
    import torch
    if job.get('threads'):
        torch.set_num_threads(job['threads'])
    sys.path.insert(0, REPO_ROOT)
    from mmdet3d.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import projects.odin  # noqa: F401
    from projects.odin.utils.scripts import load_script
    create_odin_inputs = load_script(osp.join(osp.dirname(osp.abspath(__file__)),
                                              'synthetic_inputs.py')).create_odin_inputs
    init_default_scope('mmdet3d')
    cfg = Config.fromfile(osp.join(REPO_ROOT, job['config']))
    cfg.model.train_cfg['view_chunk'] = job['view_chunk']
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    data = create_odin_inputs(num_views=job['views'], img_hw=tuple(job['image_size']),
                              num_points=job['points'], num_classes=model.num_classes,
                              num_instances=12, num_superpoints=job['points'] // 50)
    base_gb = _peak_rss_gb()
    step_s = cpu_s = 0.0
    total = None
    for _ in range(job['steps']):
        model.zero_grad(set_to_none=True)
        t0, c0 = time.perf_counter(), time.process_time()
        batch = model.data_preprocessor(data, True)
        losses = model(**batch, mode='loss')
        total = sum(v for k, v in losses.items() if 'loss' in k)
        total.backward()
        step_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
        del batch, losses
    return dict(view_chunk=job['view_chunk'], base_gb=base_gb, peak_gb=_peak_rss_gb(),
                step_s=step_s, cpu_s=cpu_s, loss=float(total), threads=torch.get_num_threads())


def spawn(job: dict) -> dict:
    """Run ``job`` in a fresh Python process; its result."""
    cmd = [sys.executable, osp.abspath(__file__), '--child', json.dumps(job)]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=REPO_ROOT))
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    raise RuntimeError(f'variant {job} failed (exit {proc.returncode}):\n'
                       f'{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}')


def main(argv: Optional[List[str]] = None) -> int:
    """Measure every variant in its own process and print the table."""
    args = parse_args(argv)
    if args.child is not None:
        print(RESULT_TAG + json.dumps(run_child(json.loads(args.child))), flush=True)
        return 0
    h, w = args.image_size
    print(f'{args.config}: one training step (forward, losses, backward) on {args.views} views '
          f'of {h}x{w}, {args.points} mesh points, random weights, {args.steps} steps per '
          f'process (the last timed), one fresh process per row', flush=True)
    rows = []
    for chunk in [0] + list(args.view_chunks):
        job = dict(config=args.config, views=args.views, image_size=[h, w],
                   points=args.points, steps=args.steps, view_chunk=chunk,
                   threads=args.threads)
        rows.append(spawn(job))
    print(f'{"view_chunk":>10}  {"step s":>8}  {"CPU s":>8}  {"peak RSS GB":>11}  '
          f'{"before step GB":>14}  {"step GB":>8}  {"loss":>10}')
    for r in rows:
        print(f'{r["view_chunk"]:>10}  {r["step_s"]:>8.2f}  {r["cpu_s"]:>8.2f}  '
              f'{r["peak_gb"]:>11.2f}  {r["base_gb"]:>14.2f}  {r["peak_gb"] - r["base_gb"]:>8.2f}  '
              f'{r["loss"]:>10.4f}')
    whole = rows[0]
    whole_step_gb = max(whole['peak_gb'] - whole['base_gb'], 1e-9)
    for r in rows[1:]:
        print(f'view_chunk={r["view_chunk"]} vs whole batch: peak RSS '
              f'{r["peak_gb"] / whole["peak_gb"]:.2f}x, step memory '
              f'{(r["peak_gb"] - r["base_gb"]) / whole_step_gb:.2f}x, time '
              f'{r["step_s"] / whole["step_s"]:.2f}x, CPU time '
              f'{r["cpu_s"] / whole["cpu_s"]:.2f}x ({r["threads"]} threads)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
