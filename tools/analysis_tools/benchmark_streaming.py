r"""Benchmarks of streaming ODIN (projects/odin/apis/streaming.py; docs/streaming.md).

Two measurements:

``quality`` -- replay the held-out rooms of a converted synthetic dataset (``make demo``) as
streams and score the final map against offline inference of the same model on the same frames:

    python tools/analysis_tools/benchmark_streaming.py quality \\
        --data outputs/demo/data/converted --checkpoint outputs/demo/train/iter_1500.pth \\
        [--config configs/odin/synthetic_r18_demo.py] [--update-every 3 --window 6 --keyframes 4]

Both results are labels on the room's mesh vertices (each vertex takes the instance of the nearest
map voxel within ``--transfer-radius``, 0.1 m) scored with ``ODINSegMetric`` (ScanNet protocol).
The offline reference is the same model on all frames in one window and one update (the test suite
checks that this equals offline ``predict``), so both go through the same thresholds and the same
transfer.
Id stability: after every update each ground-truth object (an evaluated class, at least
``min_region_size`` vertices) is matched to the map instance of highest IoU (>= 0.5) on the
vertices observed so far; an object is stable when every match after its first has the same id.

``long`` -- peak memory and update latency on a generated long recording (one orbit of a
synthetic room, ``benchmark_long_scene.make_long_recording``), each frame count in a fresh
process whose peak resident memory is read from the OS (``wait4``):

    python tools/analysis_tools/benchmark_streaming.py long --frames 200 1000 --hw 120 160

``speed`` -- sustained throughput of one stream in this process, on the CPU or a GPU
(``--device cuda``: the model, hence the frames' tensors that its data preprocessor casts, on the
GPU). Its defaults are the issue's setting: ``configs/odin/scannet_r50.py`` with random weights,
a generated 240x320 recording of 300 frames (one orbit of a synthetic room) at a 240x320 model
input, K = 10, W = 20, M = 10:

    python tools/analysis_tools/benchmark_streaming.py speed --device cuda --json speed.json
    # a CPU dry run of the same code path in seconds
    python tools/analysis_tools/benchmark_streaming.py speed --config \
        configs/odin/synthetic_r18_demo.py --frames 6 --hw 24 32 --image-size 24 32 \
        --update-every 3 --window 3 --keyframes 2 --threads 1

The frames are read into memory before the clock starts (the figure is the stream's, not the
image decoder's). Reported: frames/s over the whole run and **sustained** frames/s (after the
first update, which pays one-off costs such as CUDA kernel selection), update latency (median,
90th percentile, max; with its prepare / model / merge parts), peak resident memory of the
process from the OS (``getrusage``) and, on CUDA, ``torch.cuda.max_memory_allocated``. On a
shared machine wall-clock rates depend on the other jobs; the CPU time the process used per
sustained frame does much less, and ``fps_cpu_bound`` = threads / (CPU s per frame) is the rate
the same work would reach with all ``--threads`` cores to itself and perfect use of them (an
upper bound: the threads of the model's operators do not all scale perfectly).
``--profile N`` runs the stream under ``cProfile`` and lists the N functions of
``projects/odin`` with the largest cumulative time (where an update spends it).

Results are printed and written as JSON (``--json`` / ``--out``).
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

DEMO_CONFIG = 'configs/odin/synthetic_r18_demo.py'
SPEED_CONFIG = 'configs/odin/scannet_r50.py'


# ------------------------------------------------------------------------------------------------
# quality


def vertex_instances(stream, xyz: np.ndarray, radius: Optional[float] = None):
    """Transfer the stream's map to points: the instance of the nearest voxel within ``radius``.

    Args:
        stream: a :class:`projects.odin.apis.streaming.StreamingODIN`.
        xyz: (N, 3) points (mesh vertices).
        radius: largest distance to a voxel centre. Defaults to the map's voxel size.

    Returns:
        tuple: (N,) global instance id (-1 none) and (N,) bool "near an observed voxel".
    """
    from scipy.spatial import cKDTree
    n = len(xyz)
    if not len(stream.map):
        return np.full(n, -1, np.int64), np.zeros(n, bool)
    radius = stream.map.voxel_size if radius is None else radius
    dist, idx = cKDTree(stream.map.centers()).query(xyz, distance_upper_bound=radius)
    observed = np.isfinite(dist)
    gid = np.full(n, -1, np.int64)
    gid[observed] = stream.map.instance[idx[observed]]
    return gid, observed


def map_prediction(stream, xyz: np.ndarray, radius: Optional[float] = None) -> dict:
    """The map as ``pred_pts_seg`` on points: disjoint masks, labels, scores, semantics."""
    gid, _ = vertex_instances(stream, xyz, radius)
    ids = np.array(sorted(i for i in np.unique(gid[gid >= 0]) if int(i) in stream.instances),
                   np.int64)
    masks = gid[None, :] == ids[:, None]
    labels = np.array([stream.instances[int(i)].label for i in ids], np.int64)
    scores = np.array([stream.instances[int(i)].score for i in ids], np.float32)
    sem = np.zeros(len(xyz), np.int64)
    for m, lab in zip(masks, labels):
        sem[m] = lab
    return dict(pts_instance_mask=masks, instance_labels=labels, instance_scores=scores,
                pts_semantic_mask=sem)


class IdTracker:
    """Follows which map id each ground-truth object is matched to after every update.

    Args:
        xyz: (N, 3) mesh vertices.
        gt_inst: (N,) ground-truth instance per vertex (-1 none).
        gt_objects: the instance ids that count (evaluated classes, large enough).
        iou_thr: smallest IoU of a match. Defaults to 0.5.
        radius: transfer radius (:func:`vertex_instances`). Defaults to None.
    """

    def __init__(self, xyz: np.ndarray, gt_inst: np.ndarray, gt_objects: Sequence[int],
                 iou_thr: float = 0.5, radius: Optional[float] = None) -> None:
        self.xyz, self.gt_inst, self.iou_thr, self.radius = xyz, gt_inst, iou_thr, radius
        self.history: Dict[int, List[int]] = {int(g): [] for g in gt_objects}

    def __call__(self, stream) -> None:
        """Record the matched id of every object after an update (-1: not matched)."""
        gid, observed = vertex_instances(stream, self.xyz, self.radius)
        for g in self.history:
            obj = (self.gt_inst == g) & observed
            best, best_iou = -1, 0.0
            if obj.any():
                cand, inter = np.unique(gid[obj & (gid >= 0)], return_counts=True)
                for c, n in zip(cand.tolist(), inter.tolist()):
                    iou = n / (obj.sum() + ((gid == c) & observed).sum() - n)
                    if iou > best_iou:
                        best, best_iou = c, iou
            self.history[g].append(best if best_iou >= self.iou_thr else -1)

    def stability(self) -> dict:
        """``detected`` objects, ``stable`` ones and their ``fraction``."""
        seen = {g: [i for i in h if i >= 0] for g, h in self.history.items()}
        detected = [g for g, ids in seen.items() if ids]
        stable = [g for g in detected if len(set(seen[g])) == 1]
        return dict(objects=len(self.history), detected=len(detected), stable=len(stable),
                    fraction=(len(stable) / len(detected)) if detected else float('nan'))


def _test_scenes(cfg) -> List[dict]:
    """Mesh vertices and ground truth of every scene of the config's test set."""
    from mmdet3d.registry import DATASETS
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet3d')
    import projects.odin  # noqa: F401  (registers the datasets and transforms)
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    scenes = []
    for i in range(len(dataset)):
        item = dataset[i]
        sample = item['data_samples']
        gt = sample.eval_ann_info
        xyz = item['inputs']['points'][:, :3].numpy().astype(np.float64)
        sem, inst = np.asarray(gt['pts_semantic_mask']), np.asarray(gt['pts_instance_mask'])
        if not len(xyz) == len(sem) == len(inst):
            raise ValueError(f'scene {i}: {len(xyz)} points but {len(sem)} / {len(inst)} labels '
                             '(the test pipeline subsamples the points)')
        info = dataset.get_data_info(i)
        scenes.append(dict(scene=info.get('scene_id', str(i)), xyz=xyz, sem=sem, inst=inst,
                           meta=dataset.metainfo))
    return scenes


def run_quality(args) -> dict:
    """Streams vs one offline window on every held-out room (see the module docstring)."""
    import torch

    from projects.odin.apis.inference import init_odin_model
    from projects.odin.apis.stream_sources import recording_frames
    from projects.odin.apis.streaming import StreamingConfig, StreamingODIN
    from projects.odin.apis.synthetic_demo import load_demo_config
    from projects.odin.evaluation.metrics import ODINSegMetric
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_demo_config(args.data, args.work_dir, config=args.config)
    scenes = _test_scenes(cfg)
    if args.max_scenes:
        scenes = scenes[:args.max_scenes]
    model = init_odin_model(cfg, args.checkpoint, device=args.device, sensor_points=True)
    metrics = {name: ODINSegMetric(dataset='scannet', min_region_size=args.min_region_size)
               for name in ('stream', 'offline')}
    for m in metrics.values():
        m.dataset_meta = scenes[0]['meta']
    common = dict(voxel_size=args.voxel_size, score_thr=args.score_thr,
                  min_points=args.min_points, min_iou=args.min_iou,
                  min_similarity=args.min_similarity, none_weight=args.none_weight,
                  image_size=tuple(args.image_size) if args.image_size else None,
                  point_voxel_size=args.point_voxel_size)
    per_scene, trackers = [], []
    instance_ids = set(metrics['stream'].class_info['instance_class_ids'])
    class_ids = np.asarray(metrics['stream'].class_info['class_ids'])
    for sc in scenes:
        folder = osp.join(args.data, 'frames', sc['scene'])
        n = sum(1 for _ in os.scandir(osp.join(folder, 'pose')))
        inst, sem = sc['inst'], sc['sem']
        valid = (inst >= 0) & (sem >= 0) & (sem < len(class_ids))
        objs = [g for g in np.unique(inst[valid]).tolist()
                if int(class_ids[int(np.bincount(sem[inst == g]).argmax())]) in instance_ids and
                (inst == g).sum() >= args.min_region_size]
        tracker = IdTracker(sc['xyz'], inst, objs, radius=args.transfer_radius)
        runs = {}
        for name, params in (
                ('stream', dict(update_every=args.update_every, window=args.window,
                                keyframes=args.keyframes)),
                ('offline', dict(update_every=n, window=n, keyframes=0))):
            stream = StreamingODIN(model, StreamingConfig(**params, **common, name=sc['scene']))
            if name == 'stream':
                stream.on_update = lambda stats, s=stream, t=tracker: t(s)
            t0 = time.perf_counter()
            updates = stream.run(recording_frames(folder))
            runs[name] = dict(seconds=time.perf_counter() - t0, updates=len(updates),
                              instances=len(stream.instances), voxels=len(stream.map))
            pred = map_prediction(stream, sc['xyz'], args.transfer_radius)
            metrics[name].process({}, [dict(scene_id=sc['scene'], pred_pts_seg=pred,
                                            eval_ann_info=dict(pts_semantic_mask=sem,
                                                               pts_instance_mask=inst))])
        trackers.append(tracker)
        stab = tracker.stability()
        per_scene.append(dict(scene=sc['scene'], frames=n, **{k: v for k, v in runs.items()},
                              id_stability=stab))
        print(f"{sc['scene']}: {n} frames; stream {runs['stream']['updates']} updates "
              f"{runs['stream']['seconds']:.1f} s, {runs['stream']['instances']} instances; "
              f"offline {runs['offline']['instances']} instances; ids stable "
              f"{stab['stable']}/{stab['detected']}", flush=True)
    result = {name: m.compute_metrics(m.results) for name, m in metrics.items()}
    detected = sum(t.stability()['detected'] for t in trackers)
    stable = sum(t.stability()['stable'] for t in trackers)
    summary = dict(
        stream={k: result['stream'].get(k) for k in ('AP', 'AP50', 'AP25', 'mIoU')},
        offline={k: result['offline'].get(k) for k in ('AP', 'AP50', 'AP25', 'mIoU')},
        ap50_ratio=(result['stream']['AP50'] / result['offline']['AP50']
                    if result['offline'].get('AP50') else float('nan')),
        id_stability=dict(detected=detected, stable=stable,
                          fraction=stable / detected if detected else float('nan')),
        params=dict(update_every=args.update_every, window=args.window,
                    keyframes=args.keyframes, transfer_radius=args.transfer_radius, **common),
        checkpoint=args.checkpoint, scenes=per_scene)
    print(f"AP50 stream {summary['stream']['AP50']:.3f} vs offline "
          f"{summary['offline']['AP50']:.3f} (ratio {summary['ap50_ratio']:.3f}); "
          f"AP stream {summary['stream']['AP']:.3f} vs offline {summary['offline']['AP']:.3f}; "
          f"id stability {stable}/{detected} = {summary['id_stability']['fraction']:.3f}")
    return summary


# ------------------------------------------------------------------------------------------------
# long recordings


def run_long_child(args) -> dict:
    """One long-recording stream in this process (called by :func:`run_long` in a subprocess)."""
    import torch
    from mmengine.config import Config

    from projects.odin.apis.inference import init_odin_model
    from projects.odin.apis.stream_sources import recording_frames
    from projects.odin.apis.streaming import StreamingConfig, StreamingODIN, peak_rss_gb
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = init_odin_model(Config.fromfile(args.config), args.checkpoint, device=args.device,
                            sensor_points=True)
    stream = StreamingODIN(model, StreamingConfig(
        update_every=args.update_every, window=args.window, keyframes=args.keyframes,
        voxel_size=args.voxel_size, image_size=tuple(args.image_size) if args.image_size
        else None, score_thr=args.score_thr, min_points=args.min_points))
    t0 = time.perf_counter()
    stream.run(recording_frames(args.recording, max_frames=args.frames))
    wall = time.perf_counter() - t0
    lat = [u.latency_s for u in stream.updates]
    return dict(frames=stream.frames_seen, updates=len(lat), wall_s=wall,
                model_s=[u.model_s for u in stream.updates],
                merge_s=[u.merge_s for u in stream.updates],
                instances=len(stream.instances),
                fps=stream.frames_seen / wall, latency_s=lat,
                map_voxels=len(stream.map), state_mb=stream.nbytes / 2 ** 20,
                peak_rss_gb_self=peak_rss_gb())


def run_long(args) -> dict:
    """Each frame count in a fresh process; peak RSS from ``wait4``, latency per update."""
    bench = _load('benchmark_long_scene')
    n_max = max(args.frames)
    rec = bench.make_long_recording(osp.join(args.work_dir, f'long_{n_max}'), n_max,
                                    hw=tuple(args.hw), render_scale=args.render_scale)
    rows = []
    for n in args.frames:
        out = osp.join(args.work_dir, f'long_child_{n}.json')
        cmd = [sys.executable, osp.abspath(__file__), '_long-child', '--recording', rec,
               '--frames', str(n), '--config', args.config, '--out', out,
               '--update-every', str(args.update_every), '--window', str(args.window),
               '--keyframes', str(args.keyframes), '--voxel-size', str(args.voxel_size),
               '--score-thr', str(args.score_thr), '--min-points', str(args.min_points),
               '--threads', str(args.threads or 0), '--device', args.device]
        if args.checkpoint:
            cmd += ['--checkpoint', args.checkpoint]
        if args.image_size:
            cmd += ['--image-size', *map(str, args.image_size)]
        proc = subprocess.Popen(cmd)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise RuntimeError(f'{n} frames: child exited with {proc.returncode}')
        with open(out) as f:
            row = json.load(f)
        row['peak_rss_gb'] = usage.ru_maxrss / 1024 ** 2  # kilobytes on Linux
        lat = np.asarray(row['latency_s'])
        k = max(1, len(lat) // 5)
        row.update(merge_median_s=float(np.median(row['merge_s'])),
                   latency_first_s=float(np.median(lat[:k])),
                   latency_last_s=float(np.median(lat[-k:])),
                   latency_median_s=float(np.median(lat)))
        rows.append(row)
        print(f"{n} frames: {row['updates']} updates, {row['wall_s']:.1f} s ({row['fps']:.2f} "
              f'frames/s), update latency median {row["latency_median_s"]:.2f} s (first fifth '
              f'{row["latency_first_s"]:.2f}, last fifth {row["latency_last_s"]:.2f}), map '
              f"{row['map_voxels']} voxels, {row['instances']} instances, merge median "
              f"{row['merge_median_s']:.3f} s, state {row['state_mb']:.1f} MB, peak RSS "
              f"{row['peak_rss_gb']:.2f} GB", flush=True)
    first, last = rows[0], rows[-1]
    series = ('latency_s', 'model_s', 'merge_s')
    summary = dict(rows=[{k: v for k, v in r.items() if k not in series} for r in rows],
                   latency_s={r['frames']: r['latency_s'] for r in rows},
                   peak_ratio=last['peak_rss_gb'] / first['peak_rss_gb'],
                   latency_ratio=last['latency_median_s'] / first['latency_median_s'],
                   merge_s={r['frames']: r['merge_s'] for r in rows},
                   params=dict(hw=args.hw, image_size=args.image_size, config=args.config,
                               checkpoint=args.checkpoint, score_thr=args.score_thr,
                               update_every=args.update_every, window=args.window,
                               keyframes=args.keyframes, voxel_size=args.voxel_size,
                               threads=args.threads, device=args.device))
    print(f"peak RSS {last['frames']} / {first['frames']} frames: {summary['peak_ratio']:.3f}; "
          f"median update latency ratio {summary['latency_ratio']:.3f}")
    return summary


# ------------------------------------------------------------------------------------------------
# sustained speed


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float('nan')


def profile_table(profiler, top: int) -> List[dict]:
    """The ``top`` functions of the project (``projects/odin``) by cumulative time.

    Args:
        profiler: a finished ``cProfile.Profile``.
        top: rows to keep.

    Returns:
        list[dict]: ``function`` (path relative to the repository:line(name)), ``calls``,
        ``cumulative_s`` (time in the function and what it called), ``own_s``.
    """
    import pstats
    stats = pstats.Stats(profiler).stats
    rows = []
    for (path, line, name), (_, calls, own, cum, _) in stats.items():
        path = osp.abspath(path)
        if not path.startswith(osp.join(REPO_ROOT, 'projects', 'odin') + os.sep):
            continue
        rows.append(dict(function=f'{osp.relpath(path, REPO_ROOT)}:{line}({name})',
                         calls=int(calls), cumulative_s=float(cum), own_s=float(own)))
    rows.sort(key=lambda r: -r['cumulative_s'])
    return rows[:top]


def _cpu_seconds() -> float:
    """User + system CPU time of this process so far (all its threads)."""
    import resource
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def run_speed(args) -> dict:
    """One stream over a generated recording, timed (see the module docstring)."""
    import torch
    from mmengine.config import Config

    from projects.odin.apis.inference import init_odin_model
    from projects.odin.apis.stream_sources import recording_frames
    from projects.odin.apis.streaming import StreamingConfig, StreamingODIN, peak_rss_gb
    cuda = args.device.startswith('cuda')
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    n = args.frames[0]
    bench = _load('benchmark_long_scene')
    rec = bench.make_long_recording(
        osp.join(args.work_dir, f'speed_{n}_{args.hw[0]}x{args.hw[1]}'), n, hw=tuple(args.hw),
        render_scale=args.render_scale)
    frames = list(recording_frames(rec))
    model = init_odin_model(Config.fromfile(args.config), args.checkpoint, device=args.device,
                            sensor_points=True)
    image_size = tuple(args.image_size) if args.image_size else None
    stream = StreamingODIN(model, StreamingConfig(
        update_every=args.update_every, window=args.window, keyframes=args.keyframes,
        voxel_size=args.voxel_size, image_size=image_size, score_thr=args.score_thr,
        min_points=args.min_points, point_voxel_size=args.point_voxel_size,
        view_chunk=args.view_chunk, hold_res2=not args.recompute_res2))
    stamps: List[float] = []
    cpu_stamps: List[float] = []

    def stamp(stats) -> None:
        stamps.append(time.perf_counter())
        cpu_stamps.append(_cpu_seconds())
    stream.on_update = stamp
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    profiler = None
    if args.profile:
        import cProfile
        profiler = cProfile.Profile()
        profiler.enable()
    t0, c0 = time.perf_counter(), _cpu_seconds()
    stream.run(frames)
    if cuda:
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    cpu = _cpu_seconds() - c0
    if profiler is not None:
        profiler.disable()
    ups = stream.updates
    lat = [u.latency_s for u in ups]
    steady = ups[1:]
    if len(steady):
        # frames that arrived after the first update, over the time after it
        sustained = (ups[-1].frames_seen - ups[0].frames_seen) / (stamps[-1] - stamps[0])
        cpu_per_frame = (cpu_stamps[-1] - cpu_stamps[0]) / (ups[-1].frames_seen -
                                                             ups[0].frames_seen)
    else:
        sustained = cpu_per_frame = float('nan')
    summary = dict(
        device=args.device,
        device_name=torch.cuda.get_device_name(torch.device(args.device)) if cuda else 'cpu',
        torch=torch.__version__, threads=torch.get_num_threads(),
        frames=stream.frames_seen, updates=len(ups), wall_s=wall,
        fps=stream.frames_seen / wall, fps_sustained=sustained, cpu_s=cpu,
        cpu_s_per_frame_sustained=cpu_per_frame,
        fps_cpu_bound=torch.get_num_threads() / cpu_per_frame,
        first_update_s=lat[0] if lat else float('nan'),
        latency_median_s=float(np.median([u.latency_s for u in steady])) if steady
        else float('nan'),
        latency_p90_s=_percentile([u.latency_s for u in steady], 90),
        latency_max_s=max((u.latency_s for u in steady), default=float('nan')),
        prepare_median_s=float(np.median([u.prepare_s for u in steady])) if steady
        else float('nan'),
        model_median_s=float(np.median([u.model_s for u in steady])) if steady
        else float('nan'),
        merge_median_s=float(np.median([u.merge_s for u in steady])) if steady
        else float('nan'),
        views_max=max((u.views for u in ups), default=0),
        instances=len(stream.instances), map_voxels=len(stream.map),
        state_mb=stream.nbytes / 2 ** 20, peak_rss_gb=peak_rss_gb(),
        peak_cuda_gb=torch.cuda.max_memory_allocated() / 2 ** 30 if cuda else None,
        latency_s=lat, model_s=[u.model_s for u in ups],
        params=dict(config=args.config, checkpoint=args.checkpoint, hw=args.hw,
                    image_size=list(stream.image_size), update_every=args.update_every,
                    window=args.window, keyframes=args.keyframes, voxel_size=args.voxel_size,
                    point_voxel_size=args.point_voxel_size, score_thr=args.score_thr,
                    min_points=args.min_points, view_chunk=args.view_chunk,
                    hold_res2=not args.recompute_res2))
    if profiler is not None:
        summary['profile'] = profile_table(profiler, args.profile)
        for row in summary['profile']:
            print(f"  {row['cumulative_s']:8.2f} s {row['calls']:6d} calls  {row['function']}")
    mem = f"peak RSS {summary['peak_rss_gb']:.2f} GB"
    if cuda:
        mem += f", peak CUDA {summary['peak_cuda_gb']:.2f} GB"
    print(f"{summary['device_name']}: {summary['frames']} frames, {summary['updates']} updates "
          f"in {wall:.1f} s: {summary['fps']:.2f} frames/s overall, "
          f"{summary['fps_sustained']:.2f} sustained ({cpu_per_frame:.2f} CPU s per frame: "
          f"{summary['fps_cpu_bound']:.2f} frames/s if {summary['threads']} cores were all "
          f"ours); update latency median "
          f"{summary['latency_median_s']:.3f} s (p90 {summary['latency_p90_s']:.3f}, first "
          f"{summary['first_update_s']:.2f}; model {summary['model_median_s']:.3f}, prepare "
          f"{summary['prepare_median_s']:.3f}, merge {summary['merge_median_s']:.3f}), "
          f"{summary['views_max']} views, {summary['instances']} instances, "
          f"{summary['map_voxels']} voxels, {mem}", flush=True)
    return summary


def _load(name: str):
    from projects.odin.utils.scripts import load_script
    return load_script(osp.join(osp.dirname(osp.abspath(__file__)), f'{name}.py'))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('mode', choices=['quality', 'long', 'speed', '_long-child'])
    parser.add_argument('--config', default=None,
                        help=f'model config (default: {DEMO_CONFIG}; speed: {SPEED_CONFIG})')
    parser.add_argument('--device', default='cpu', help='cpu or cuda[:N]')
    parser.add_argument('--checkpoint', default=None, help='quality: the trained checkpoint')
    parser.add_argument('--data', default='outputs/demo/data/converted',
                        help='quality: the converted synthetic dataset')
    parser.add_argument('--work-dir', default='outputs/benchmark_streaming')
    parser.add_argument('--max-scenes', type=int, default=None)
    parser.add_argument('--update-every', type=int, default=None,
                        help='K (default 3; speed: 10)')
    parser.add_argument('--window', type=int, default=None, help='W (default 6; speed: 20)')
    parser.add_argument('--keyframes', type=int, default=None, help='M (default 4; speed: 10)')
    parser.add_argument('--voxel-size', type=float, default=0.05)
    parser.add_argument('--point-voxel-size', type=float, default=0.02,
                        help='quality / speed: voxel of the fused sensor points ODIN labels '
                        '(StreamingConfig.point_voxel_size)')
    parser.add_argument('--view-chunk', type=int, default=8,
                        help='speed: views per chunk of an update (StreamingConfig.view_chunk; '
                        '0 = the whole window at once)')
    parser.add_argument('--recompute-res2', action='store_true',
                        help='speed: recompute res2 per view chunk for the mask features instead '
                        'of holding it (StreamingConfig.hold_res2=False)')
    parser.add_argument('--score-thr', type=float, default=0.3)
    parser.add_argument('--min-points', type=int, default=20)
    parser.add_argument('--min-iou', type=float, default=0.1)
    parser.add_argument('--min-similarity', type=float, default=0.0)
    parser.add_argument('--none-weight', type=float, default=0.1)
    parser.add_argument('--min-region-size', type=int, default=100)
    parser.add_argument('--transfer-radius', type=float, default=0.1,
                        help='quality: a mesh vertex takes the instance of the nearest map voxel '
                        'within this distance (m)')
    parser.add_argument('--image-size', type=int, nargs=2, default=None, metavar=('H', 'W'))
    parser.add_argument('--frames', type=int, nargs='+', default=None,
                        help='long: frame counts (default 200 1000); speed: one (default 300)')
    parser.add_argument('--hw', type=int, nargs=2, default=None, metavar=('H', 'W'),
                        help='long / speed: size of the generated frames (default 120 160 / '
                        '240 320)')
    parser.add_argument('--render-scale', type=float, default=1.0)
    parser.add_argument('--profile', type=int, default=0, metavar='N',
                        help='speed: run under cProfile and report the N functions of '
                        'projects/odin with the largest cumulative time (adds overhead)')
    parser.add_argument('--recording', default=None, help='(internal) _long-child')
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--out', '--json', dest='out', default=None,
                        help='write the results here (JSON)')
    args = parser.parse_args(argv)
    speed = args.mode == 'speed'
    if args.config is None:
        args.config = osp.join(REPO_ROOT, SPEED_CONFIG if speed else DEMO_CONFIG)
    if args.frames is None:
        args.frames = [300] if speed else [200, 1000]
    if args.hw is None:
        args.hw = [240, 320] if speed else [120, 160]
    for name, quick, issue in (('update_every', 3, 10), ('window', 6, 20), ('keyframes', 4, 10)):
        if getattr(args, name) is None:
            setattr(args, name, issue if speed else quick)
    if speed:
        if len(args.frames) != 1:
            parser.error('speed takes one --frames value')
        if args.image_size is None:
            args.image_size = list(args.hw)
    if args.device.startswith('cuda'):
        import torch
        if not torch.cuda.is_available():
            parser.error(f'--device {args.device}: CUDA is not available in this torch build / '
                         'on this machine')
    elif args.device != 'cpu':
        parser.error(f'--device must be cpu or cuda[:N], got {args.device!r}')
    if args.mode == '_long-child':
        args.frames = args.frames[0]
        args.threads = args.threads or None
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    os.makedirs(args.work_dir, exist_ok=True)
    if args.mode == 'quality':
        if not args.checkpoint:
            print('error: quality needs --checkpoint', file=sys.stderr)
            return 2
        result = run_quality(args)
    elif args.mode == 'long':
        result = run_long(args)
    elif args.mode == 'speed':
        result = run_speed(args)
    else:
        result = run_long_child(args)
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
