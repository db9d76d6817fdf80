"""Peak memory and wall time of ODIN on long recordings, per frame count and inference path.

A long posed RGB-D recording is generated once (a camera orbiting a furnished room of the
synthetic world, :mod:`projects.odin.datasets.synthetic_world`, written as a ScanNet export:
``color/<i>.jpg``, ``depth/<i>.png`` in millimetres, ``pose/<i>.txt``,
``intrinsic/intrinsic_depth.txt``; 640x480 like ScanNet by default, rendered at half size and
upsampled to save time). For every model, frame count and path, one **fresh subprocess** runs
what the demo runs: ``load_rgbd_folder(max_frames=N)`` (N frames spread over the recording) ->
``prepare_recording`` -> ``init_odin_model`` -> ``inference_recording``, and reports the peak
resident memory of that process (``resource.getrusage(RUSAGE_SELF).ru_maxrss``), so every
figure is the honest peak of one run. The models have **random weights** (no checkpoint is
needed; memory and time do not depend on the weights' values).

Paths: ``unchunked`` (``model.test_cfg.view_chunk=0``) and ``bounded``
(``view_chunk=--view-chunk``; a model without the bounded path ignores the key and both rows
measure the same path). A size whose predicted peak exceeds ``--max-memory-gb`` is skipped and
printed as ``skipped (would need ~X GB)``: the prediction is the least-squares line through the
sizes already measured for that model and path, or before two sizes exist the demo's documented
estimate (:mod:`projects.odin.demo.memory`).

Printed: a table (model, frames, path, prep s, wall s, s/frame, read GB, peak RSS GB; with
``--device cuda`` also ``torch.cuda.max_memory_allocated``) and, per model and path, the
per-frame memory slope (least squares over the measured sizes). ``read GB`` is the peak of the
process after reading and preparing the recording minus its peak after the imports (the cost
of the reading path alone); ``--reading-only`` stops there.

Examples::

    # the issue's table (long: every size of every model runs in its own process)
    python tools/analysis_tools/benchmark_long_scene.py --max-memory-gb 24
    # R50 sensor mode only, a few sizes
    python tools/analysis_tools/benchmark_long_scene.py --models r50_sensor --frames 30 60 120
    # the reading path only (no model), here against another checkout of the project
    python tools/analysis_tools/benchmark_long_scene.py --reading-only --repo ../main
"""
import argparse
import json
import os
import os.path as osp
import resource
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

#: name -> config, model input (H, W), prediction points (sensor: the fused cloud, as the demo;
#: mesh: the fused cloud given as mesh vertices, the configs' 3D ghost mode)
MODELS: Dict[str, dict] = {
    'r50_sensor': dict(config='configs/odin/scannet_r50.py', image_size=(240, 320), sensor=True),
    'r50_mesh': dict(config='configs/odin/scannet_r50.py', image_size=(240, 320), sensor=False),
    'swin_b': dict(config='configs/odin/scannet200_swin.py', image_size=(384, 512), sensor=True),
}
DEFAULT_FRAMES = (30, 60, 120, 250, 500, 1000)
RESULT_TAG = 'BENCHMARK_RESULT '


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Peak memory / wall time of ODIN on long recordings (fresh process per run)')
    parser.add_argument('--frames', type=int, nargs='+', default=list(DEFAULT_FRAMES),
                        help='frame counts (default: 30 60 120 250 500 1000)')
    parser.add_argument('--models', nargs='+', default=list(MODELS), choices=list(MODELS))
    parser.add_argument('--paths', nargs='+', default=['unchunked', 'bounded'],
                        choices=['unchunked', 'bounded'])
    parser.add_argument('--view-chunk', type=int, default=8,
                        help='views per chunk of the bounded path (default 8)')
    parser.add_argument('--point-chunk', type=int, default=None,
                        help='points per chunk of the bounded path (default: the model\'s)')
    parser.add_argument('--max-memory-gb', type=float, default=None,
                        help='skip a size whose predicted peak exceeds this (default: none)')
    parser.add_argument('--device', default='cpu', help='cpu or cuda[:N]')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch threads per run (default: torch\'s)')
    parser.add_argument('--work-dir', default=osp.join(REPO_ROOT, 'work_dirs', 'long_scene'),
                        help='where the generated recording is kept (reused when it fits)')
    parser.add_argument('--recording-hw', type=int, nargs=2, default=(480, 640),
                        metavar=('H', 'W'), help='frame size of the recording (default 480 640)')
    parser.add_argument('--room', type=float, nargs=2, default=None, metavar=('X', 'Y'),
                        help='floor extent of the generated room in metres (default: the '
                        'synthetic world\'s 4-6 x 3.5-5 m); e.g. 8 7.5 for the surface of a '
                        'large real scan')
    parser.add_argument('--recording-frames', type=int, default=None,
                        help='frames of the generated recording (default: the largest of '
                        '--frames); each size takes frames spread over it')
    parser.add_argument('--image-size', type=int, nargs=2, default=None, metavar=('H', 'W'),
                        help='model input instead of each model\'s (240x320 R50, 384x512 Swin)')
    parser.add_argument('--reading-only', action='store_true',
                        help='measure reading + preparation only (no model)')
    parser.add_argument('--timeout', type=float, default=None,
                        help='seconds per run before it is stopped (default: none)')
    parser.add_argument('--repo', default=REPO_ROOT,
                        help='checkout of the project whose code is measured (default: this one)')
    parser.add_argument('--json', default=None,
                        help='also write every row (model, path, frames, figures) here')
    parser.add_argument('--child', default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if any(n < 1 for n in args.frames):
        parser.error(f'--frames must be positive, got {args.frames}')
    if args.view_chunk < 1:
        parser.error(f'--view-chunk must be >= 1, got {args.view_chunk}')
    return args


# ------------------------------------------------------------------------------------------------
# the recording


def make_long_recording(out_dir: str, num_frames: int, hw: Tuple[int, int] = (480, 640),
                        render_scale: float = 0.5, seed: int = 0,
                        room: Optional[Tuple[float, float]] = None) -> str:
    """Write (or reuse) a ScanNet-export recording of ``num_frames`` frames orbiting one room.

    Args:
        out_dir: folder of the recording (``recording.json`` records what it holds; a folder
            with the same parameters is reused).
        num_frames: frames of one orbit.
        hw: frame (H, W) of the written images.
        render_scale: the frames are ray-cast at this fraction of ``hw`` and upsampled (colour
            bilinear, depth nearest); 1 renders at full size (slower).
        seed: scene seed.
        room: (x, y) floor extent of the room in metres, or None for the world's default
            preset (4-6 m x 3.5-5 m). A larger room gives the model more surface (more 2 cm
            voxels and points), as a real scan of a large room does; its furniture count is
            scaled with the floor area.

    Returns:
        The recording folder.
    """
    import cv2
    import numpy as np

    from projects.odin.datasets.synthetic_world import WorldConfig, build_scene, render
    spec = dict(num_frames=int(num_frames), hw=list(hw), render_scale=render_scale, seed=seed,
                version=1)
    overrides = {}
    if room is not None:
        if len(room) != 2 or min(room) <= 0:
            raise ValueError(f'room must be two positive floor extents in metres, got {room}')
        spec['room'] = [float(room[0]), float(room[1])]
        base = WorldConfig.from_preset('default')
        scale = room[0] * room[1] / (base.room_size[0][1] * base.room_size[1][1])
        overrides = dict(room_size=((room[0], room[0]), (room[1], room[1])),
                         num_objects=tuple(max(1, int(round(n * scale)))
                                           for n in base.num_objects))
    marker = osp.join(out_dir, 'recording.json')
    if osp.isfile(marker):
        with open(marker) as f:
            if json.load(f) == spec:
                return out_dir
    rh, rw = max(8, int(round(hw[0] * render_scale))), max(8, int(round(hw[1] * render_scale)))
    cfg = WorldConfig.from_preset('default', depth_hw=(rh, rw), color_hw=(rh, rw),
                                  num_frames=int(num_frames), hole_fraction=0.0, **overrides)
    scene = build_scene(seed, 0, cfg)
    for d in ('color', 'depth', 'pose', 'intrinsic'):
        os.makedirs(osp.join(out_dir, d), exist_ok=True)
    if osp.isfile(marker):
        os.remove(marker)
    for i, pose in enumerate(scene.poses.astype(np.float64)):
        view = render(scene, pose, scene.intrinsic_depth, (rh, rw))
        rgb = cv2.resize(view['color'], (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR)
        depth = np.round(view['depth'] * 1000.0).astype(np.uint16)
        depth = cv2.resize(depth, (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST)
        cv2.imwrite(osp.join(out_dir, 'color', f'{i}.jpg'), rgb[:, :, ::-1])
        cv2.imwrite(osp.join(out_dir, 'depth', f'{i}.png'), depth)
        np.savetxt(osp.join(out_dir, 'pose', f'{i}.txt'), pose)
    # intrinsics of the upsampled frames (pixel-centre consistent scaling)
    k = np.asarray(scene.intrinsic_depth, np.float64).copy()
    sx, sy = hw[1] / rw, hw[0] / rh
    k[0, 0], k[1, 1] = k[0, 0] * sx, k[1, 1] * sy
    k[0, 2], k[1, 2] = (k[0, 2] + 0.5) * sx - 0.5, (k[1, 2] + 0.5) * sy - 0.5
    np.savetxt(osp.join(out_dir, 'intrinsic', 'intrinsic_depth.txt'), k)
    with open(marker, 'w') as f:
        json.dump(spec, f)
    return out_dir


# ------------------------------------------------------------------------------------------------
# one measurement (in its own process)


def _peak_rss_gb() -> float:
    """Peak resident memory of this process (Linux: ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run_child(job: dict) -> dict:
    """Measure one (model, frames, path) run in this process; returns the figures."""
    import torch
    if job.get('threads'):
        torch.set_num_threads(job['threads'])
    from mmengine.config import Config

    from projects.odin.apis.inference import (
        inference_recording,
        init_odin_model,
        prepare_recording,
    )
    from projects.odin.datasets.recordings import load_rgbd_folder
    import_gb = _peak_rss_gb()
    t0 = time.perf_counter()
    seq = load_rgbd_folder(job['recording'], max_frames=job['frames'])
    cfg = Config.fromfile(osp.join(job['repo'], job['config']))
    cfg.model.setdefault('test_cfg', {})
    cfg.model.test_cfg['view_chunk'] = job['view_chunk']
    if job.get('point_chunk'):
        cfg.model.test_cfg['point_chunk'] = job['point_chunk']
    prepared = prepare_recording(seq, image_size=tuple(job['image_size']), cfg=cfg)
    out = dict(frames=len(seq), points=int(len(prepared.inputs['points'])),
               prep_s=time.perf_counter() - t0, import_gb=import_gb, read_gb=_peak_rss_gb())
    if job['reading_only']:
        out['peak_gb'] = out['read_gb']
        return out
    device = job['device']
    model = init_odin_model(cfg, None, device=device, sensor_points=job['sensor'])
    cuda = device.startswith('cuda')
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t1 = time.perf_counter()
    result = inference_recording(model, prepared)
    if cuda:
        torch.cuda.synchronize()
        out['cuda_gb'] = torch.cuda.max_memory_allocated() / 2**30
    out.update(wall_s=time.perf_counter() - t1, peak_gb=_peak_rss_gb(),
               instances=int(len(result.pred_pts_seg.instance_scores)))
    return out


def spawn(job: dict, timeout: Optional[float] = None) -> dict:
    """Run :func:`run_child` in a fresh interpreter; returns its figures or ``error``."""
    cmd = [sys.executable, osp.abspath(__file__), '--child', json.dumps(job)]
    env = dict(os.environ, PYTHONPATH=job['repo'] + os.pathsep + os.environ.get('PYTHONPATH', ''))
    try:
        proc = subprocess.run(cmd, cwd=job['repo'], env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return dict(error=f'timed out after {timeout:g} s')
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    tail = (proc.stderr.strip().splitlines() or [''])[-1]
    if proc.returncode < 0 or proc.returncode == 137:
        return dict(error=f'killed (signal {-proc.returncode}, out of memory?)')
    return dict(error=f'exit {proc.returncode}: {tail}')


# ------------------------------------------------------------------------------------------------
# the table


def fit_line(xs: Sequence[float], ys: Sequence[float]) -> Tuple[float, float]:
    """Least-squares ``y = a + b x``; returns (a, b) (b = 0 for fewer than two distinct x)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return my, 0.0
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    return my - b * mx, b


def predict_gb(done: List[dict], frames: int, prior: float) -> float:
    """Predicted peak of ``frames`` from the measured rows (``prior`` before two exist)."""
    if len({r['frames'] for r in done}) < 2:
        return prior
    a, b = fit_line([r['frames'] for r in done], [r['peak_gb'] for r in done])
    return a + b * frames


def format_row(model: str, path: str, r: dict, cuda: bool) -> str:
    """One line of the table."""
    head = f'{model:<11} {r["frames"]:>6} {path:<9}'
    if 'skipped' in r:
        return f'{head} skipped (would need ~{r["skipped"]:.1f} GB)'
    if 'error' in r:
        return f'{head} failed: {r["error"]}'
    wall = r.get('wall_s')
    cols = [f'{r["prep_s"]:7.1f}', f'{wall:8.1f}' if wall is not None else f'{"-":>8}',
            f'{wall / r["frames"]:8.2f}' if wall is not None else f'{"-":>8}',
            f'{r["read_gb"] - r["import_gb"]:7.2f}', f'{r["peak_gb"]:11.2f}']
    if cuda:
        cols.append(f'{r.get("cuda_gb", float("nan")):12.2f}')
    return f'{head} ' + ' '.join(cols)


def header(cuda: bool) -> str:
    """The table's header line."""
    cols = (f'{"model":<11} {"frames":>6} {"path":<9} {"prep s":>7} {"wall s":>8} '
            f'{"s/frame":>8} {"read GB":>7} {"peak RSS GB":>11}')
    return cols + (f' {"peak CUDA GB":>12}' if cuda else '')


def main(argv=None) -> int:
    """Run the benchmark and print the table; 0 when every run that was started finished."""
    args = parse_args(argv)
    if args.child is not None:
        job = json.loads(args.child)
        sys.path.insert(0, job['repo'])
        print(RESULT_TAG + json.dumps(run_child(job)), flush=True)
        return 0
    sys.path.insert(0, args.repo)
    from mmengine.config import Config

    try:
        from projects.odin.demo.memory import estimate_peak_memory_gb
    except ImportError:  # a checkout (--repo) without the estimate: skip only by measured fits
        estimate_peak_memory_gb = None
    frames = sorted(set(args.frames))
    length = max(frames + [args.recording_frames or 0])
    room_tag = '' if args.room is None else f'_room{args.room[0]:g}x{args.room[1]:g}'
    recording = make_long_recording(
        osp.join(args.work_dir, f'recording_{length}_{args.recording_hw[0]}x'
                 f'{args.recording_hw[1]}{room_tag}'), length, tuple(args.recording_hw),
        room=args.room)
    print(f'recording: {recording} ({length} frames of {args.recording_hw[1]}x'
          f'{args.recording_hw[0]}, synthetic room); models with random weights; device '
          f'{args.device}; bounded path view_chunk={args.view_chunk}', flush=True)
    cuda = args.device.startswith('cuda')
    paths = ['reading'] if args.reading_only else args.paths
    print(header(cuda), flush=True)
    results: Dict[Tuple[str, str], List[dict]] = {}
    rows_out: List[dict] = []
    failed = False
    for name in args.models:
        spec = MODELS[name]
        cfg = Config.fromfile(osp.join(args.repo, spec['config']))
        image_size = tuple(args.image_size or spec['image_size'])
        for path in paths:
            done = results.setdefault((name, path), [])
            chunk = args.view_chunk if path == 'bounded' else 0
            for n in frames:
                prior = 0.0 if estimate_peak_memory_gb is None else \
                    estimate_peak_memory_gb(cfg, n, image_size, chunk)
                need = predict_gb(done, n, prior)
                if args.max_memory_gb is not None and need > args.max_memory_gb:
                    row = dict(frames=n, skipped=need)
                else:
                    row = spawn(dict(
                        recording=recording, frames=n, config=spec['config'],
                        image_size=image_size, sensor=spec['sensor'], view_chunk=chunk,
                        point_chunk=args.point_chunk if path == 'bounded' else None,
                        device=args.device, threads=args.threads,
                        reading_only=args.reading_only, repo=osp.abspath(args.repo)),
                        args.timeout)
                    row.setdefault('frames', n)
                    rows_out.append(dict(row, model=name, path=path))
                    if 'error' in row:
                        failed = True
                    else:
                        done.append(row)
                print(format_row(name, path, row, cuda), flush=True)
    print('per-frame memory (least squares over the measured sizes):')
    for (name, path), rows in results.items():
        if len({r['frames'] for r in rows}) < 2:
            print(f'  {name} {path}: fewer than two sizes measured')
            continue
        a, b = fit_line([r['frames'] for r in rows], [r['peak_gb'] for r in rows])
        line = f'  {name} {path}: peak RSS {a:.2f} GB + {b * 1024:.1f} MB/frame'
        if cuda and all('cuda_gb' in r for r in rows):
            ca, cb = fit_line([r['frames'] for r in rows], [r['cuda_gb'] for r in rows])
            line += f'; CUDA {ca:.2f} GB + {cb * 1024:.1f} MB/frame'
        print(line)
    if args.json:
        os.makedirs(osp.dirname(osp.abspath(args.json)), exist_ok=True)
        with open(args.json, 'w') as f:
            json.dump(dict(device=args.device, view_chunk=args.view_chunk, rows=rows_out), f,
                      indent=1)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
