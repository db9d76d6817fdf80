"""Run several models on the same test split with the same evaluator and print one table.

Every model is evaluated the way ``tools/test.py`` evaluates it (its config and checkpoint,
MMEngine's ``Runner.from_cfg(cfg).test()``), except that ``test_dataloader`` and
``test_evaluator`` are taken from ONE config for all models: the first model's, or
``--data-config``. So every model sees the same scenes through the same pipeline and is scored by
the same metric. The table has the evaluator's metrics, the time per scene (model forward and
metric update of each test iteration, data loading excluded, divided by the batch size; mean over
the scenes) and the peak memory: ``torch.cuda.max_memory_allocated`` on a GPU, else the peak
resident set size of the process from the OS (``resource.getrusage``). Each model runs in a fresh
Python process by default so that these peaks are per model (``--no-isolate`` runs them in this
process; the CPU peak RSS is then the process peak so far, not per model).

Usage:
    python tools/analysis_tools/compare_models.py CFG1 CKPT1 CFG2 CKPT2 [CFG3 CKPT3 ...]
        [--data-config CFG] [--names A B ...] [--cfg-options k=v ...] [--work-dir DIR]
        [--device cpu|cuda] [--threads N] [--no-isolate] [--out RESULTS.json]

``--cfg-options`` apply to every model's config and to the data config (e.g.
``test_dataloader.dataset.data_root=data/scannet/``). See docs/model_zoo.md.
"""
import argparse
import copy
import json
import os
import os.path as osp
import resource
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, REPO_ROOT)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Evaluate models on the same test split with the same evaluator')
    parser.add_argument('models', nargs='*', metavar='CFG CKPT',
                        help='config and checkpoint of each model, in pairs')
    parser.add_argument('--data-config', default=None,
                        help='config whose test_dataloader and test_evaluator every model uses '
                        '(default: the first model\'s config)')
    parser.add_argument('--names', nargs='+', default=None,
                        help='a name per model for the table (default: config file names)')
    parser.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                        help='overrides for every model config and the data config')
    parser.add_argument('--work-dir', default=None,
                        help='logs of each model go to WORK_DIR/<name> (default: a temp dir)')
    parser.add_argument('--device', choices=['auto', 'cpu', 'cuda'], default='auto',
                        help='cpu hides the GPUs from the runs; auto: a GPU when there is one')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads per run')
    parser.add_argument('--no-isolate', action='store_true',
                        help='run every model in this process instead of a fresh one each')
    parser.add_argument('--out', default=None, help='also write the results as json')
    parser.add_argument('--worker', default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is None:
        if len(args.models) < 2 or len(args.models) % 2:
            parser.error(f'expected CFG CKPT pairs, got {len(args.models)} path(s): '
                         f'{" ".join(args.models)}')
        if args.names is not None and len(args.names) != len(args.models) // 2:
            parser.error(f'--names has {len(args.names)} names for {len(args.models) // 2} models')
    return args


def _cfg_options(items: Sequence[str]) -> Dict[str, object]:
    """``k=v`` strings -> a dict for ``Config.merge_from_dict`` (values parsed as mmengine does)."""
    from mmengine.config import DictAction
    out: Dict[str, object] = {}
    for item in items:
        if '=' not in item:
            raise ValueError(f'--cfg-options: expected KEY=VALUE, got {item!r}')
        key, val = item.split('=', 1)
        out[key] = DictAction._parse_iterable(val)
    return out


def build_test_config(config: str, checkpoint: str, data_config: str, work_dir: str,
                      cfg_options: Optional[Dict[str, object]] = None):
    """The config ``tools/test.py CONFIG CHECKPOINT`` would run, on the data config's test set.

    Args:
        config: the model's config.
        checkpoint: its checkpoint.
        data_config: the config whose ``test_dataloader`` / ``test_evaluator`` are used.
        work_dir: the run's work dir.
        cfg_options: overrides applied to both configs.

    Returns:
        mmengine.Config
    """
    from mmengine.config import Config

    from projects.odin.utils.scripts import load_script
    test_tool = load_script('tools/test.py', REPO_ROOT)
    cfg = test_tool.build_config(test_tool.parse_args([config, checkpoint, '--work-dir',
                                                       work_dir]))
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    data = Config.fromfile(data_config)
    if cfg_options:
        data.merge_from_dict(cfg_options)
    for key in ('test_dataloader', 'test_evaluator'):
        if data.get(key) is None:
            raise KeyError(f'{data_config} has no {key}; pass a --data-config that has one')
        cfg[key] = copy.deepcopy(data[key])
    cfg.test_cfg = cfg.get('test_cfg') or dict(type='TestLoop')
    return cfg


def evaluate_model(config: str, checkpoint: str, data_config: str, work_dir: str,
                   cfg_options: Optional[Dict[str, object]] = None,
                   threads: Optional[int] = None) -> Dict[str, object]:
    """Evaluate one model in this process (MMEngine Runner, as tools/test.py).

    Returns:
        dict: ``metrics`` (the evaluator's numeric outputs), ``scenes``, ``s_per_scene`` (mean
        seconds of model forward + metric update per scene), ``peak_mem_gb`` and ``mem_kind``
        (``'cuda max_memory_allocated'`` or ``'peak RSS'``), ``device``, ``dataset`` (type,
        data_root, ann_file) and ``evaluator`` (type).
    """
    import torch
    from mmengine.hooks import Hook
    from mmengine.runner import Runner
    if threads:
        torch.set_num_threads(threads)
    cfg = build_test_config(config, checkpoint, data_config, work_dir, cfg_options)

    class SceneTimerHook(Hook):
        """Seconds from before to after each test iteration (forward + evaluator.process)."""

        priority = 'VERY_LOW'

        def __init__(self) -> None:
            self.times: List[float] = []
            self.scenes: List[int] = []
            self._t0 = 0.0

        def before_test_iter(self, runner, batch_idx, data_batch=None) -> None:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self._t0 = time.perf_counter()

        def after_test_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self._t0)
            self.scenes.append(len(outputs) if outputs is not None else 1)

    runner = Runner.from_cfg(cfg)
    timer = SceneTimerHook()
    runner.register_hook(timer)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    metrics = runner.test()
    if cuda:
        peak, kind = torch.cuda.max_memory_allocated() / 2**30, 'cuda max_memory_allocated'
    else:
        # Linux reports ru_maxrss in KiB (macOS in bytes)
        scale = 1 if sys.platform == 'darwin' else 1024
        peak, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**30, 'peak RSS'
    ds = cfg.test_dataloader.dataset
    while 'dataset' in ds:
        ds = ds.dataset
    n = sum(timer.scenes)
    return dict(
        metrics={k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))},
        scenes=n, s_per_scene=sum(timer.times) / max(n, 1), peak_mem_gb=peak, mem_kind=kind,
        device='cuda' if cuda else 'cpu',
        dataset=dict(type=ds.get('type'), data_root=ds.get('data_root'),
                     ann_file=ds.get('ann_file')),
        evaluator=cfg.test_evaluator.get('type') if isinstance(cfg.test_evaluator, dict)
        else [e.get('type') for e in cfg.test_evaluator])


def _run_isolated(spec: dict, device: str) -> Dict[str, object]:
    """Run :func:`evaluate_model` in a fresh Python process (own peak memory)."""
    env = dict(os.environ)
    if device == 'cpu':
        env['CUDA_VISIBLE_DEVICES'] = ''
    with tempfile.TemporaryDirectory() as tmp:
        spec = dict(spec, result=osp.join(tmp, 'result.json'))
        spec_file = osp.join(tmp, 'spec.json')
        with open(spec_file, 'w') as f:
            json.dump(spec, f)
        proc = subprocess.run([sys.executable, osp.abspath(__file__), '--worker', spec_file],
                              env=env, cwd=REPO_ROOT)
        if proc.returncode != 0 or not osp.isfile(spec['result']):
            raise RuntimeError(f'evaluating {spec["config"]} with {spec["checkpoint"]} failed '
                               f'(exit status {proc.returncode}; its log is above)')
        with open(spec['result']) as f:
            return json.load(f)


def _worker(spec_file: str) -> int:
    with open(spec_file) as f:
        spec = json.load(f)
    result = evaluate_model(spec['config'], spec['checkpoint'], spec['data_config'],
                            spec['work_dir'], spec.get('cfg_options'), spec.get('threads'))
    with open(spec['result'], 'w') as f:
        json.dump(result, f)
    return 0


def format_table(names: Sequence[str], results: Sequence[Dict[str, object]]) -> str:
    """One markdown table: a row per model, the evaluator's metrics, s/scene and peak memory."""
    metrics: List[str] = []
    for r in results:
        metrics += [k for k in r['metrics'] if k not in metrics]
    kinds = sorted({str(r['mem_kind']) for r in results})
    head = ['model'] + metrics + ['s / scene', f'peak mem GB ({", ".join(kinds)})']
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for name, r in zip(names, results):
        vals = [f'{r["metrics"][k]:.4f}' if k in r['metrics'] else '—' for k in metrics]
        lines.append('| ' + ' | '.join([name] + vals + [f'{r["s_per_scene"]:.3f}',
                                                        f'{r["peak_mem_gb"]:.2f}']) + ' |')
    return '\n'.join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        return _worker(args.worker)
    pairs = [(args.models[i], args.models[i + 1]) for i in range(0, len(args.models), 2)]
    for cfg, ckpt in pairs:
        for path, what in ((cfg, 'config'), (ckpt, 'checkpoint')):
            if not osp.isfile(path):
                print(f'error: {what} not found: {path}', file=sys.stderr)
                return 2
    data_config = args.data_config or pairs[0][0]
    if not osp.isfile(data_config):
        print(f'error: data config not found: {data_config}', file=sys.stderr)
        return 2
    names = args.names or [osp.splitext(osp.basename(c))[0] for c, _ in pairs]
    if len(set(names)) != len(names):  # same config twice with different checkpoints
        names = [f'{n} ({osp.basename(ck)})' for n, (_, ck) in zip(names, pairs)]
    try:
        cfg_options = _cfg_options(args.cfg_options)
    except ValueError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    tmp = None
    if args.work_dir is None:
        tmp = tempfile.TemporaryDirectory()
        work_root = tmp.name
    else:
        work_root = args.work_dir
    if args.device == 'cpu' and args.no_isolate:
        os.environ['CUDA_VISIBLE_DEVICES'] = ''
    results = []
    try:
        for i, ((cfg, ckpt), name) in enumerate(zip(pairs, names)):
            spec = dict(config=osp.abspath(cfg), checkpoint=osp.abspath(ckpt),
                        data_config=osp.abspath(data_config),
                        work_dir=osp.abspath(osp.join(work_root, f'{i}_{osp.basename(cfg)}')),
                        cfg_options=cfg_options, threads=args.threads)
            print(f'[{i + 1}/{len(pairs)}] {name}: {cfg} {ckpt}', flush=True)
            if args.no_isolate:
                results.append(evaluate_model(spec['config'], spec['checkpoint'],
                                              spec['data_config'], spec['work_dir'],
                                              cfg_options, args.threads))
            else:
                results.append(_run_isolated(spec, args.device))
    finally:
        if tmp is not None:
            tmp.cleanup()
    ds = results[0]['dataset']
    evaluator = results[0]['evaluator']
    print(f'\ndata: test_dataloader and test_evaluator of {data_config}: {ds["type"]} '
          f'{ds["data_root"]}{ds["ann_file"]} ({results[0]["scenes"]} scenes), evaluator '
          f'{evaluator}; device {results[0]["device"]}\n')
    print(format_table(names, results))
    if args.no_isolate and results[0]['mem_kind'] == 'peak RSS' and len(results) > 1:
        print('\n(--no-isolate on CPU: peak RSS is the process peak so far, not per model)')
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(dict(data_config=data_config,
                           models=[dict(name=n, config=c, checkpoint=k, **r)
                                   for n, (c, k), r in zip(names, pairs, results)]), f,
                      indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
