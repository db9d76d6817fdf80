"""One offline GPU check of ODIN: install, build, test, benchmark, train; one report.

On a GPU machine without network (``make gpu-check WHEELHOUSE=DIR``)::

    python tools/gpu_check.py --wheelhouse DIR [--quick] [--out DIR]

1. ``install``: every wheel of DIR into ``WORK/site`` (``pip --no-index --find-links DIR
   --no-deps``; torch is never installed: the machine's own CUDA build is used);
2. ``mmcv_build`` (not with ``--quick``): mmcv's sdist from DIR, built in place with CUDA for
   the visible GPU's architecture (``TORCH_CUDA_ARCH_LIST`` from its compute capability,
   ``MAX_JOBS = nproc - 3``), in the background while the steps that do not need mmcv run;
3. ``ops_build``: our ops with CUDA (``FORCE_CUDA=1 tools/build_ops.py --force``);
4. ``throw_probe``: a compiled op given a bad argument must raise, in a subprocess (a CUDA build
   once died with SIGSEGV there); with mmcv also mmcv's deformable attention op;
5. ``cuda_tests``: the CUDA tests and the argument/size checks of ``tests/test_ops`` (again
   with mmcv, for the test that dispatches to mmcv's op, with the decoder attention's tests
   against mmcv's layer);
6. ``bench_ops``: ``benchmark_ops.py --device cuda`` at 20k and 200k voxels (block) and kNN
   100k/400k points; (with mmcv:) ``bench_model`` (``benchmark_model.py --device cuda``),
   ``bench_long`` (``benchmark_long_scene.py --device cuda``: R50 1000 frames and Swin-B 250
   frames bounded, R50 250 frames unchunked - the size that died with signal 11);
7. (with mmcv:) ``train_swin`` / ``train_r50``: ``configs/odin/scannet200_swin.py`` and
   ``configs/odin/scannet_r50.py`` on generated ScanNet-layout data (the synthetic world through
   our ScanNet converter), the configs' AMP and batch, ``--iters`` iterations (50): losses,
   s/iter, peak CUDA memory; ``test_metrics``: the R50 checkpoint evaluated on the GPU and on the
   CPU (metrics must agree to 1e-4).

Each step runs in its own subprocess with its own timeout; a step killed by a signal is recorded
in ``crashes`` and the check goes on. ``OUT/gpu_check.json`` + ``OUT/gpu_check.md`` (and
``OUT/logs.txt``, the tails of every step's log) are written after every step, so a run cut
short still leaves its report. ``--dry-run`` runs every step's logic on the CPU at tiny sizes
(no mmcv or CUDA build, no CUDA-only tests) and writes the same report shape.
Copy ``gpu_check.json`` of a real run to ``docs/benchmarks/gpu_check.json``.
"""
import argparse
import datetime
import glob
import json
import os
import os.path as osp
import platform
import re
import subprocess
import sys
import tarfile
import threading
import time
from typing import Dict, List, Optional

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CHILD_TAG = 'GPU_CHECK_RESULT '
#: the check's deadline (epoch seconds): no step's timeout runs more than 20 s past it
_DEADLINE: Optional[float] = None
#: top-level figures of the report (None until a step fills them)
FIGURES = ('block_fwd_s', 'block_fwd_speedup', 'block_fwd_bwd_s', 'block_fwd_bwd_speedup',
           'block_memory_ratio', 'block_fwd_bwd_speedup_200k', 'block_memory_ratio_200k',
           'knn_100k_s', 'knn_400k_s', 'msda_fwd_bwd_speedup', 'whole_model_speedup',
           'whole_model_s', 'whole_model_rel_err', 'train_swin_peak_gb', 'train_swin_s_per_iter',
           'train_swin_loss_first', 'train_swin_loss_last', 'train_r50_peak_gb',
           'train_r50_s_per_iter', 'train_r50_loss_first', 'train_r50_loss_last',
           'test_metrics_gpu', 'test_metrics_cpu', 'test_metrics_max_abs_diff',
           'long_r50_1000_bounded_s_per_frame', 'long_r50_1000_bounded_cuda_gb',
           'long_swin_250_bounded_s_per_frame', 'long_swin_250_bounded_cuda_gb',
           'long_r50_250_unchunked_s_per_frame', 'long_r50_250_unchunked_cuda_gb',
           'mmcv_build_s', 'ops_build_s', 'throw_probe', 'goldens',
           'stream_fps', 'stream_latency_s', 'stream_cuda_gb', 'knn_400k_grid_twin_s',
           'knn_grid_twin_equal', 'block_fwd_bwd_speedup_twins')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--wheelhouse', default=None,
                        help='folder of wheels + the mmcv sdist (tools/fill_wheelhouse.sh)')
    parser.add_argument('--out', default=os.environ.get('OUT') or 'outputs/gpu_check',
                        help='report folder (default: $OUT or outputs/gpu_check)')
    parser.add_argument('--work', default=None,
                        help='scratch folder (default: /tmp/odin_gpu_check)')
    parser.add_argument('--quick', action='store_true',
                        help='ops only (no mmcv build, no model steps): under 3 minutes')
    parser.add_argument('--dry-run', action='store_true',
                        help='every step on the CPU at tiny sizes (no builds, no CUDA tests)')
    parser.add_argument('--device', default=None, help='cuda (default) or cpu (with --dry-run)')
    parser.add_argument('--iters', type=int, default=50, help='training iterations per config')
    parser.add_argument('--budget', type=float, default=530.0,
                        help='seconds for the whole check; steps that cannot start in time are '
                        'skipped and reported')
    parser.add_argument('--goldens', default=None,
                        help='folder of the official goldens + statedict_*.tsv (default: '
                        '$ODIN_REFERENCE_DIR, else ../shared/reference, else .gpu/reference)')
    parser.add_argument('--steps', default=None,
                        help='comma-separated subset of steps (default: all of the mode)')
    parser.add_argument('--child', default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.device = args.device or ('cpu' if args.dry_run else 'cuda')
    if args.device == 'cpu' and not args.dry_run:
        parser.error('--device cpu is only meaningful with --dry-run')
    return args


# ------------------------------------------------------------------------------------------------
# the report


class Report:
    """The JSON + markdown report, rewritten after every step (thread-safe)."""

    def __init__(self, out: str, meta: dict):
        self.out = out
        self.lock = threading.Lock()
        self.data = dict(meta, tests_failed=[], crashes=[], steps={}, skipped={})
        self.data.update({k: None for k in FIGURES})
        self.logs: Dict[str, str] = {}
        os.makedirs(out, exist_ok=True)

    def step(self, name: str, result: dict, log_tail: str) -> None:
        with self.lock:
            self.data['steps'][name] = result
            self.logs[name] = log_tail
            if result.get('signal'):
                self.data['crashes'].append(dict(step=name, signal=result['signal']))
            self.write()

    def set(self, **figures) -> None:
        with self.lock:
            self.data.update(figures)
            self.write()

    def skip(self, name: str, why: str) -> None:
        with self.lock:
            self.data['skipped'][name] = why
            self.write()

    def write(self) -> None:
        with open(osp.join(self.out, 'gpu_check.json'), 'w') as f:
            json.dump(self.data, f, indent=1, default=str)
        with open(osp.join(self.out, 'gpu_check.md'), 'w') as f:
            f.write(render_markdown(self.data))
        with open(osp.join(self.out, 'logs.txt'), 'w') as f:
            for name, tail in self.logs.items():
                f.write(f'===== {name}\n{tail}\n')


def render_markdown(d: dict) -> str:
    """The human-readable report."""
    lines = [f"# ODIN GPU check ({d['mode']}) - {d['date']}", '',
             f"device: {d['device']}; CUDA {d['cuda']}; torch {d['torch']}; Python "
             f"{d['python']}; {d['cpu_count']} CPUs", '',
             '| step | status | seconds |', '|---|---|---:|']
    for name, r in d['steps'].items():
        lines.append(f"| {name} | {r['status']} | {r['seconds']:.1f} |")
    for name, why in d['skipped'].items():
        lines.append(f'| {name} | skipped: {why} | |')
    lines += ['', f"crashes: {d['crashes'] or 'none'}",
              f"tests failed: {d['tests_failed'] or 'none'}", '', '| figure | value |',
              '|---|---|']
    for key in FIGURES:
        value = d.get(key)
        if isinstance(value, float):
            value = f'{value:.4g}'
        lines.append(f'| {key} | {value if value is not None else "-"} |')
    return '\n'.join(lines) + '\n'


# ------------------------------------------------------------------------------------------------
# running steps


def run_step(report: Report, name: str, cmd: List[str], timeout: float,
             env: Optional[dict] = None, cwd: str = ROOT) -> dict:
    """Run one step in a subprocess; record status, signal, seconds and the log's tail.

    Returns:
        dict: ``status`` (``ok``, ``failed (exit N)``, ``crashed (signal N)``, ``timed out``),
        ``rc``, ``signal``, ``seconds``, ``result`` (the child's tagged JSON line, if any) and
        ``log`` (the whole output).
    """
    t0 = time.time()
    if _DEADLINE is not None:
        timeout = max(30.0, min(timeout, _DEADLINE + 20 - t0))
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=timeout)
        rc, out = proc.returncode, proc.stdout + proc.stderr
        timed_out = False
    except subprocess.TimeoutExpired as exc:
        rc, timed_out = None, True
        out = ((exc.stdout or b'').decode(errors='replace') if isinstance(exc.stdout, bytes)
               else (exc.stdout or '')) + ((exc.stderr or b'').decode(errors='replace')
                                           if isinstance(exc.stderr, bytes) else (exc.stderr or ''))
    signal = -rc if rc is not None and rc < 0 else (rc - 128 if rc in (134, 136, 137, 139)
                                                    else None)
    if timed_out:
        status = f'timed out after {timeout:.0f} s'
    elif signal:
        status = f'crashed (signal {signal})'
    elif rc:
        status = f'failed (exit {rc})'
    else:
        status = 'ok'
    child = None
    for line in out.splitlines():
        if line.startswith(CHILD_TAG):
            child = json.loads(line[len(CHILD_TAG):])
    result = dict(status=status, rc=rc, signal=signal, seconds=time.time() - t0)
    report.step(name, result, '\n'.join(out.splitlines()[-40:]))
    return dict(result, result=child, log=out)


def failed_tests(log: str) -> List[str]:
    """Node ids of the failed/errored tests in a pytest log (``-rfE`` summary lines)."""
    return sorted(set(re.findall(r'^(?:FAILED|ERROR) (\S+)', log, flags=re.M)))


def cuda_arch_list() -> str:
    """``TORCH_CUDA_ARCH_LIST`` for the visible GPU(s), e.g. ``9.0``."""
    import torch
    caps = {torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}
    return ';'.join(f'{a}.{b}' for a, b in sorted(caps))


# ------------------------------------------------------------------------------------------------
# children (run in their own process by the steps)


def child_throw_probe(which: str, device: str) -> dict:
    """Call a compiled op with a bad argument; reaching the return means it raised cleanly."""
    import torch
    out = {}
    if which == 'odin':
        from projects.odin.ops import _ext
        for dev in ['cpu'] + ([device] if device != 'cpu' else []):
            value = torch.rand(1, 22, 2, 4, device=dev)
            shapes = torch.tensor([[3, 5], [2, 2], [1, 3]], device=dev)
            start = torch.tensor([0, 15, 25], device=dev)  # the last level lies outside
            loc = torch.rand(1, 6, 2, 3, 3, 2, device=dev)
            attn = torch.rand(1, 6, 2, 3, 3, device=dev)
            try:
                _ext.ms_deform_attn_forward(value, shapes, start, loc, attn)
                out[f'odin_{dev}'] = 'did not raise'
            except RuntimeError as exc:
                out[f'odin_{dev}'] = 'raised: ' + str(exc).splitlines()[0][:120]
            q = torch.rand(7, 8, device=dev)
            try:
                _ext.knn_gather_dot_forward(q, torch.rand(5, 8, device=dev),
                                            torch.full((7, 3), 9, device=dev), 2)
                out[f'odin_gather_{dev}'] = 'did not raise'
            except RuntimeError as exc:
                out[f'odin_gather_{dev}'] = 'raised: ' + str(exc).splitlines()[0][:120]
    else:
        # mmcv's own CUDA op dies with SIGSEGV on its own failed checks on some machines (any
        # c10::Error through an extension's frames, docs/ops.md): our wrapper must never give it
        # an input that trips them. A batch of 3 with im2col_step 2 (mmcv asserts batch %
        # im2col_step == 0) runs in safe chunks; a level outside the value rows is refused in
        # Python before mmcv is called.
        from projects.odin.ops import multi_scale_deform_attn
        value = torch.rand(3, 22, 2, 4, device=device)
        shapes = torch.tensor([[3, 5], [2, 2], [1, 3]], device=device)
        loc = torch.rand(3, 6, 2, 3, 3, 2, device=device)
        attn = torch.rand(3, 6, 2, 3, 3, device=device)
        res = multi_scale_deform_attn(value, shapes, torch.tensor([0, 15, 19], device=device),
                                      loc, attn, 2)
        out['mmcv_batch_3_step_2'] = f'ran: output {tuple(res.shape)}'
        try:
            multi_scale_deform_attn(value, shapes, torch.tensor([0, 15, 25], device=device), loc,
                                    attn, 2)
            out['mmcv_bad_level'] = 'did not raise'
        except (ValueError, RuntimeError) as exc:
            out['mmcv_bad_level'] = f'raised {type(exc).__name__}: ' + \
                str(exc).splitlines()[0][:100]
    return out


def child_train(config: str, data_root: str, work: str, iters: int, dry_run: bool) -> dict:
    """Train ``config`` on the generated data; losses, s/iter, peak CUDA memory."""
    import torch

    from projects.odin.apis.synthetic_demo import load_demo_config, train
    options = {}
    if dry_run:  # tiny on a CPU: 2 frames per scene, batch 1, no AMP, small images
        options = {'train_dataloader.batch_size': 1, 'train_dataloader.num_workers': 0,
                   'train_dataloader.persistent_workers': False}
    cfg = load_demo_config(data_root, work, config=config, max_iters=iters,
                           cfg_options=options)
    cfg.default_hooks.logger.interval = 1
    _use_synthetic_infos(cfg)
    if dry_run:
        cfg.optim_wrapper.type = 'OptimWrapper'
        cfg.optim_wrapper.pop('loss_scale', None)
        _shrink_frames(cfg, 2)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    out = train(cfg)
    seconds = time.time() - t0
    losses = out['losses']
    k = max(1, len(losses) // 5)
    return dict(iters=iters, seconds=seconds, s_per_iter=seconds / max(iters, 1),
                loss_first=sum(losses[:k]) / k, loss_last=sum(losses[-k:]) / k,
                finite=all(map(_finite, losses)), logged=len(losses),
                peak_gb=torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
                batch=cfg.train_dataloader.batch_size, amp='Amp' in cfg.optim_wrapper.type,
                checkpoint=out['checkpoint'])


def _set_everywhere(node, key: str, value) -> None:
    """Set ``key`` to ``value`` wherever a (nested) config dict has it."""
    if isinstance(node, dict):
        for k in list(node):
            if k == key:
                node[k] = value
            else:
                _set_everywhere(node[k], key, value)
    elif isinstance(node, (list, tuple)):
        for item in node:
            _set_everywhere(item, key, value)


def _use_synthetic_infos(cfg) -> None:
    """Point the config's datasets at the generated data's info files (``synthetic_infos_*``).

    The generated data has no inpainted depth (the recipes read it): the loaders read the raw
    depth instead, which costs the same.
    """
    from projects.odin.apis.synthetic_demo import INFO_PREFIX
    for key in ('train_dataloader', 'test_dataloader'):
        if cfg.get(key):
            _set_everywhere(cfg[key], 'use_inpainted_depth', False)
    for key, split in (('train_dataloader', 'train'), ('test_dataloader', 'val')):
        if not cfg.get(key):
            continue
        dataset = cfg[key].dataset
        while 'dataset' in dataset:  # dataset wrappers
            dataset = dataset.dataset
        dataset.ann_file = f'{INFO_PREFIX}_infos_{split}.pkl'


def _finite(x: float) -> bool:
    return x == x and abs(x) != float('inf')


def _shrink_frames(cfg, frames: int) -> None:
    """Set every ``num_frames``-like key of the dataset pipelines to ``frames`` (dry runs)."""
    def visit(node):
        if isinstance(node, dict):
            for key in list(node):
                if key in ('num_frames', 'max_frames', 'num_views') and isinstance(node[key], int):
                    node[key] = frames
                else:
                    visit(node[key])
        elif isinstance(node, (list, tuple)):
            for item in node:
                visit(item)
    for key in ('train_dataloader', 'test_dataloader'):
        visit(cfg[key])


def child_evaluate(config: str, data_root: str, work: str, checkpoint: str) -> dict:
    """Metrics of ``checkpoint`` on the held-out rooms (the device the process sees)."""
    from projects.odin.apis.synthetic_demo import evaluate, load_demo_config
    cfg = load_demo_config(data_root, work, config=config)
    _use_synthetic_infos(cfg)
    metrics = evaluate(cfg, checkpoint)
    metrics.pop('seconds', None)
    return metrics


def prepared_data(root: str) -> Optional[str]:
    """The converted folder of data generated earlier under ``root`` (e.g. carried), or None."""
    converted = osp.join(root, 'converted')
    done = osp.isfile(osp.join(root, 'dataset_params.json')) and all(
        glob.glob(osp.join(converted, f'*_infos_{split}.pkl')) for split in ('train', 'val'))
    return converted if done else None


def child_make_data(root: str, dry_run: bool) -> dict:
    """Generated ScanNet-layout data (synthetic world through our ScanNet converter)."""
    from projects.odin.apis.synthetic_demo import make_synthetic_dataset
    if dry_run:
        data = make_synthetic_dataset(root, 3, 1, preset='tiny', num_frames=3)
    else:
        data = make_synthetic_dataset(root, 6, 2, preset='small', workers=4)
    return dict(converted=data['converted'], train=data['train'], val=data['val'])


def run_child(spec: dict) -> dict:
    kind = spec.pop('kind')
    return dict(throw_probe=child_throw_probe, train=child_train, evaluate=child_evaluate,
                make_data=child_make_data)[kind](**spec)


# ------------------------------------------------------------------------------------------------
# the check


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        sys.path.insert(0, ROOT)
        print(CHILD_TAG + json.dumps(run_child(json.loads(args.child)), default=str), flush=True)
        return 0
    import torch
    global _DEADLINE
    t_start = time.time()
    deadline = _DEADLINE = t_start + args.budget
    work = osp.abspath(args.work or '/tmp/odin_gpu_check')
    os.makedirs(work, exist_ok=True)
    cuda = args.device.startswith('cuda')
    if cuda and not torch.cuda.is_available():
        raise SystemExit('no CUDA device visible (use --dry-run --device cpu to rehearse on a CPU)')
    mode = 'dry-run' if args.dry_run else ('quick' if args.quick else 'full')
    meta = dict(mode=mode, date=datetime.datetime.now(datetime.UTC).isoformat(
        timespec='seconds'), device=torch.cuda.get_device_name(0) if cuda else 'cpu',
        capability=cuda_arch_list() if cuda else None, cuda=torch.version.cuda,
        torch=torch.__version__, python=platform.python_version(), cpu_count=os.cpu_count(),
        wheelhouse=args.wheelhouse, iters=args.iters)
    report = Report(osp.abspath(args.out), meta)
    wanted = set(args.steps.split(',')) if args.steps else None
    site = osp.join(work, 'site')
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    if not args.dry_run:  # a fresh build for this machine (dry runs reuse the usual cache)
        env['ODIN_CACHE_DIR'] = osp.join(work, 'cache')
    goldens = args.goldens or os.environ.get('ODIN_REFERENCE_DIR') or next(
        (d for d in (osp.join(ROOT, '..', 'shared', 'reference'), osp.join(ROOT, '.gpu',
                                                                            'reference'))
         if osp.isdir(d)), None)
    if goldens:
        env['ODIN_REFERENCE_DIR'] = osp.abspath(goldens)
    env['PYTHONPATH'] = os.pathsep.join([ROOT, site] + (
        [os.environ['PYTHONPATH']] if os.environ.get('PYTHONPATH') else []))
    if cuda:
        env['FORCE_CUDA'] = '1'
    py = sys.executable

    def want(step: str) -> bool:
        if wanted is not None and step not in wanted:
            return False
        if time.time() > deadline:
            report.skip(step, 'out of time budget')
            return False
        return True

    def child(name: str, spec: dict, timeout: float, extra_env: Optional[dict] = None) -> dict:
        cmd = [py, osp.abspath(__file__), '--child', json.dumps(spec)]
        return run_step(report, name, cmd, timeout,
                        env=dict(env, **(extra_env or {})))

    # 1. install the wheelhouse (never torch)
    if want('install'):
        wheels = sorted(glob.glob(osp.join(args.wheelhouse or '', '*.whl')))
        wheels = [w for w in wheels if not osp.basename(w).lower().startswith(('torch-', 'nvidia'))]
        if args.dry_run or not wheels:
            report.skip('install', 'dry run: the environment already has the stack' if
                        args.dry_run else f'no wheels in {args.wheelhouse}')
        else:
            run_step(report, 'install', [py, '-m', 'pip', 'install', '-q', '--no-index',
                                         '--find-links', args.wheelhouse, '--no-deps',
                                         '--no-compile', '--target', site] + wheels, 180, env)

    # 2. mmcv in the background (full mode)
    mmcv_thread = None
    mmcv_state: dict = {}
    if not args.quick and want('mmcv_build'):
        sdists = sorted(glob.glob(osp.join(args.wheelhouse or '', 'mmcv-2.1.0.tar.gz')))
        if args.dry_run:
            report.skip('mmcv_build', 'dry run: the environment\'s mmcv is used')
        elif not sdists:
            report.skip('mmcv_build', f'no mmcv-2.1.0.tar.gz in {args.wheelhouse}')
        elif glob.glob(osp.join(work, 'mmcv-2.1.0', 'mmcv', '_ext*.so')):
            # built by an earlier check in this work folder (the same machine): reuse it
            src = osp.join(work, 'mmcv-2.1.0')
            env['PYTHONPATH'] = src + os.pathsep + env['PYTHONPATH']
            mmcv_state.update(status='ok')
            report.skip('mmcv_build', f'reused the build in {src}')
        else:
            with tarfile.open(sdists[0]) as tar:
                tar.extractall(work)
            src = osp.join(work, 'mmcv-2.1.0')
            flags = '-DNDEBUG -g0 -fwrapv -O3'
            menv = dict(env, MMCV_WITH_OPS='1', FORCE_CUDA='1', CFLAGS=flags, CXXFLAGS=flags,
                        TORCH_CUDA_ARCH_LIST=cuda_arch_list(),
                        MAX_JOBS=str(max(1, (os.cpu_count() or 4) - 3)))

            def build_mmcv():
                r = run_step(report, 'mmcv_build', [py, 'setup.py', 'build_ext', '--inplace'],
                             420, menv, cwd=src)
                mmcv_state.update(r)
                if r['status'] == 'ok':
                    env['PYTHONPATH'] = src + os.pathsep + env['PYTHONPATH']
                    report.set(mmcv_build_s=r['seconds'])

            mmcv_thread = threading.Thread(target=build_mmcv, daemon=True)
            mmcv_thread.start()

    # 3. our ops with CUDA
    if want('ops_build'):
        r = run_step(report, 'ops_build', [py, 'tools/build_ops.py'] +
                     ([] if args.dry_run else ['--force']), 180,
                     dict(env, MAX_JOBS='3'))
        report.set(ops_build_s=r['seconds'])

    # data for the model steps, generated on the CPU while the GPU runs the ops steps
    data_thread = None
    data_state: dict = {}
    if not args.quick and want('make_data'):
        data_dir = osp.join(work, 'data')

        def make_data():
            ready = None if args.dry_run else prepared_data(data_dir)
            if ready:  # generated beforehand (its generator and converter need the stack)
                report.skip('make_data', f'reused the data in {data_dir}')
                data_state.update(result=dict(converted=ready))
                return
            if mmcv_thread is not None:
                mmcv_thread.join()
            data_state.update(child('make_data', dict(kind='make_data', root=data_dir,
                                                       dry_run=args.dry_run), 240))
        data_thread = threading.Thread(target=make_data, daemon=True)
        data_thread.start()

    # 4. the throw probe
    probes = {}
    if want('throw_probe'):
        r = child('throw_probe', dict(kind='throw_probe', which='odin', device=args.device), 60)
        probes.update(r['result'] or {'odin': r['status']})
        report.set(throw_probe=probes)

    # 5. CUDA tests (+ the argument and size checks; on a CPU dry run those alone)
    pytest = [py, '-m', 'pytest', '-q', '-rfE', '-p', 'no:cacheprovider', '--timeout', '300']
    select = 'cuda or checks_its_arguments or test_op_checks or test_op_limits'
    uncollected: List[str] = []
    if want('cuda_tests'):
        # files importing the model stack cannot be collected before mmcv is built: they run
        # again in mmcv_tests; only the tests that ran count here
        r = run_step(report, 'cuda_tests', pytest + ['tests/test_ops', '-k', select,
                                                     '--continue-on-collection-errors'], 240, env)
        failed = failed_tests(r['log'])
        uncollected = [f for f in failed if '::' not in f]
        report.data['tests_failed'].extend(f for f in failed if '::' in f)
        if uncollected:
            report.set(uncollected_before_mmcv=uncollected)

    # 6. ops benchmarks
    if want('bench_ops'):
        small = ['--voxels', '2000', '--knn-points', '2000', '8000', '--repeats', '1',
                 '--brute-max-queries', '2000', '--skip-msda', '--layers', '1']
        full = ['--voxels', '20000', '--knn-points', '100000', '400000', '--repeats', '5']
        out20 = osp.join(work, 'bench_ops_20k.json')
        r = run_step(report, 'bench_ops', [py, 'tools/analysis_tools/benchmark_ops.py',
                                           '--device', args.device, '--json', out20] +
                     (small if args.dry_run else full), 240, env)
        if r['status'] == 'ok':
            b = json.load(open(out20))
            blk, knn = b.get('block', {}), b.get('knn', {})
            fb = blk.get('fwd_bwd', {})
            report.set(block_fwd_s=blk.get('fwd', {}).get('ours_s'),
                       block_fwd_speedup=blk.get('fwd', {}).get('speedup'),
                       block_fwd_bwd_s=fb.get('ours_s'), block_fwd_bwd_speedup=fb.get('speedup'),
                       block_memory_ratio=fb.get('mem_ratio'),
                       msda_fwd_bwd_speedup=b.get('msda', {}).get('fwd_bwd', {}).get('speedup'),
                       knn_100k_s=knn.get('2000' if args.dry_run else '100000', {}).get('ours_s'),
                       knn_400k_s=knn.get('8000' if args.dry_run else '400000', {}).get('ours_s'),
                       knn_400k_grid_twin_s=knn.get('8000' if args.dry_run else '400000',
                                                    {}).get('grid_twin_s'),
                       knn_grid_twin_equal=all(r.get('grid_twin_equal') for r in knn.values()))
    if want('bench_ops_200k'):
        out200 = osp.join(work, 'bench_ops_200k.json')
        n = '4000' if args.dry_run else '200000'
        r = run_step(report, 'bench_ops_200k', [
            py, 'tools/analysis_tools/benchmark_ops.py', '--device', args.device, '--voxels', n,
            '--skip-knn', '--skip-msda', '--repeats', '1' if args.dry_run else '3',
            '--layers', '1' if args.dry_run else '2', '--json', out200], 200, env)
        if r['status'] == 'ok':
            fb = json.load(open(out200)).get('block', {}).get('fwd_bwd', {})
            report.set(block_fwd_bwd_speedup_200k=fb.get('speedup'),
                       block_memory_ratio_200k=fb.get('mem_ratio'))

    if want('bench_ops_twins'):  # the block with the PyTorch twins on the device
        outt = osp.join(work, 'bench_ops_twins.json')
        r = run_step(report, 'bench_ops_twins', [
            py, 'tools/analysis_tools/benchmark_ops.py', '--device', args.device, '--backend',
            'pytorch', '--voxels', '2000' if args.dry_run else '20000', '--skip-knn',
            '--skip-msda', '--repeats', '1' if args.dry_run else '5', '--layers',
            '1' if args.dry_run else '2', '--json', outt], 150, env)
        if r['status'] == 'ok':
            fb = json.load(open(outt)).get('block', {}).get('fwd_bwd', {})
            report.set(block_fwd_bwd_speedup_twins=fb.get('speedup'))
    if args.quick:
        return finish(report, t_start)

    # --- the steps that need mmcv
    if mmcv_thread is not None:
        mmcv_thread.join(max(0.0, deadline - time.time()))
        if mmcv_thread.is_alive() or mmcv_state.get('status') != 'ok':
            for step in ('mmcv_tests', 'bench_model', 'bench_long', 'train_swin', 'train_r50',
                         'test_metrics'):
                report.skip(step, f"mmcv build: {mmcv_state.get('status', 'still running')}")
            return finish(report, t_start)
    if want('mmcv_tests'):
        r = child('throw_probe_mmcv', dict(kind='throw_probe', which='mmcv', device=args.device),
                  60) if cuda else None
        if r is not None:
            probes.update(r['result'] or {'mmcv': r['status']})
            report.set(throw_probe=probes)
        if cuda:
            names = ' or '.join(osp.splitext(osp.basename(f))[0] for f in uncollected)
            keys = 'mmcv or golden' + (f' or (({select}) and ({names}))' if names else '')
            # the decoder's attention against mmcv's layer on CUDA too
            r = run_step(report, 'mmcv_tests', pytest + [
                'tests/test_ops', 'tests/test_models/test_odin_masked_attention.py', '-k', keys],
                180, env)
            report.data['tests_failed'].extend(failed_tests(r['log']))
    if data_thread is not None:
        data_thread.join(max(0.0, deadline - time.time()))
    data_root = ((data_state.get('result') or {}).get('converted'))

    def train(name: str, config: str):
        if not want(name):
            return
        if not data_root:
            report.skip(name, f"no data ({data_state.get('status', 'not generated')})")
            return
        r = child(name, dict(kind='train', config=config, data_root=data_root,
                             work=osp.join(work, name), iters=2 if args.dry_run else args.iters,
                             dry_run=args.dry_run), 300)
        res = r['result'] or {}
        key = name.split('_')[1]
        report.set(**{f'train_{key}_{k}': res.get(k) for k in
                      ('peak_gb', 's_per_iter', 'loss_first', 'loss_last')})
        report.set(**{f'train_{key}': {k: v for k, v in res.items() if k != 'checkpoint'}})
        state[name] = res

    state: Dict[str, dict] = {}
    threads = [threading.Thread(target=train, args=(name, config)) for name, config in (
        ('train_swin', 'configs/odin/scannet200_swin.py'),
        ('train_r50', 'configs/odin/scannet_r50.py'))]
    for t in threads:
        t.start()
        if args.dry_run:  # a CPU has no room for both at once
            t.join()
    # the official goldens on the GPU (float32, no TF32), the stage tables in the log
    if want('goldens'):
        names = ['scannet_resnet', 'scannet200_swin', 'ai2thor_resnet']
        found = [n for n in names if goldens and osp.isfile(osp.join(goldens,
                                                                      f'golden_{n}.pt'))]
        if args.dry_run:
            found = found[:1]
        if not found:
            report.skip('goldens', f'no golden_*.pt in {goldens}')
        results = {}
        # every golden whole-batch; the first also on the bounded path (2 views per chunk):
        # both equal to the golden means bounded and whole-batch agree on this device
        runs = [(name, []) for name in found] + [(name + '_chunked', ['--view-chunk', '2'])
                                                 for name in found[:1]]
        for name, extra in runs:
            golden = osp.join(goldens, f"golden_{name.replace('_chunked', '')}.pt")
            r = run_step(report, f'golden_{name}', [
                py, 'tools/analysis_tools/check_official_parity.py', '--golden', golden,
                '--device', args.device] + extra, 240, env)
            verdict = [ln for ln in r['log'].splitlines() if ln.startswith('parity on ')]
            results[name] = verdict[-1] if verdict else r['status']
            if r['status'] != 'ok':
                report.data['tests_failed'].append(f'golden_{name} on {args.device}')
            report.set(goldens=results)
    # the benchmarks share the GPU with the training runs (figures are marked as such)
    if want('bench_model'):
        outm = osp.join(work, 'bench_model.json')
        extra = ['--views', '2', '--repeats', '1', '--room-spacing', '0.25', '--object-spacing',
                 '0.2', '--config', 'configs/odin/synthetic_r18_demo.py'] if args.dry_run else [
                     '--views', '10', '--repeats', '3']
        r = run_step(report, 'bench_model', [py, 'tools/analysis_tools/benchmark_model.py',
                                             '--device', args.device, '--json', outm] + extra,
                     240, env)
        if r['status'] == 'ok':
            b = json.load(open(outm))
            report.set(whole_model_speedup=b['speedup'],
                       whole_model_s=b['results']['ours']['median_s'],
                       whole_model_rel_err=max(b['rel_err']))
    if want('profile_block'):
        prof = osp.join(report.out, 'profile_block.txt')
        r = run_step(report, 'profile_block', [
            py, 'tools/analysis_tools/benchmark_ops.py', '--device', args.device, '--voxels',
            '2000' if args.dry_run else '20000', '--layers', '1' if args.dry_run else '2',
            '--skip-knn', '--skip-msda', '--repeats', '1', '--profile', prof], 120, env)
    if want('bench_stream'):
        # R50 on 240x320 frames, an update every 10 frames over a 20-frame window + 10 keyframes
        outs = osp.join(work, 'bench_stream.json')
        extra = ['--config', 'configs/odin/synthetic_r18_demo.py', '--frames', '7', '--hw',
                 '24', '32', '--update-every', '3', '--window', '3', '--keyframes', '2'] \
            if args.dry_run else ['--frames', '300']
        r = run_step(report, 'bench_stream', [
            py, 'tools/analysis_tools/benchmark_streaming.py', 'speed', '--device', args.device,
            '--work-dir', osp.join(work, 'stream'), '--json', outs] + extra, 200, env)
        if r['status'] == 'ok' and osp.isfile(outs):
            b = json.load(open(outs))
            report.set(stream_fps=b.get('fps_sustained'),
                       stream_latency_s=b.get('latency_median_s'),
                       stream_cuda_gb=b.get('peak_cuda_gb'),
                       stream={k: v for k, v in b.items() if not isinstance(v, list)})
    if want('bench_long'):
        outl = osp.join(work, 'bench_long.json')
        common = [py, 'tools/analysis_tools/benchmark_long_scene.py', '--device', args.device,
                  '--work-dir', osp.join(work, 'long'), '--json', outl]
        # (model, frames, path, figure prefix); dry runs: the same three runs, 4 frames each
        runs = [('r50_sensor', '1000', 'bounded', 'long_r50_1000_bounded'),
                ('swin_b', '250', 'bounded', 'long_swin_250_bounded'),
                ('r50_sensor', '250', 'unchunked', 'long_r50_250_unchunked')]
        rows, figures = [], {}
        for model, frames, path, key in runs:
            extra = ['--recording-hw', '60', '80', '--image-size', '48', '64'] \
                if args.dry_run else []
            frames = '4' if args.dry_run else frames
            step = f'bench_long_{model}_{frames}_{path}'
            if not want(step):
                continue
            r = run_step(report, step, common + ['--models', model, '--frames', frames,
                                                 '--paths', path] + extra, 300, env)
            got = json.load(open(outl))['rows'] if osp.isfile(outl) else []
            if osp.isfile(outl):
                os.unlink(outl)
            rows += got
            for row in got:
                if 'wall_s' in row:
                    figures[f'{key}_s_per_frame'] = row['wall_s'] / row['frames']
                    figures[f'{key}_cuda_gb'] = row.get('cuda_gb')
        report.set(**{k: v for k, v in figures.items() if k in FIGURES}, long_rows=rows)
    for t in threads:
        t.join(max(0.0, deadline - time.time()))
    ckpt = (state.get('train_r50') or {}).get('checkpoint')
    if want('test_metrics'):
        if not ckpt or not data_root:
            report.skip('test_metrics', 'no R50 checkpoint from train_r50')
        else:
            spec = dict(kind='evaluate', config='configs/odin/scannet_r50.py',
                        data_root=data_root, work=osp.join(work, 'eval'), checkpoint=ckpt)
            rg = child('test_metrics_gpu', spec, 180)
            rc = child('test_metrics_cpu', spec, 240, {'CUDA_VISIBLE_DEVICES': ''})
            mg, mc = rg['result'] or {}, rc['result'] or {}
            common_keys = sorted(set(mg) & set(mc))
            diff = max((abs(mg[k] - mc[k]) for k in common_keys), default=None)
            report.set(test_metrics_gpu=mg, test_metrics_cpu=mc, test_metrics_max_abs_diff=diff)
    return finish(report, t_start)


def finish(report: Report, t_start: float) -> int:
    """Write the final report; 0 when no step crashed and no test failed."""
    report.set(total_s=time.time() - t_start)
    print(render_markdown(report.data))
    print(f'report: {report.out}/gpu_check.json, gpu_check.md, logs.txt')
    bad = report.data['crashes'] or report.data['tests_failed']
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
