"""End to end on the synthetic world: generate, convert, train, evaluate, run the demo.

The steps of ``make demo`` (``tools/run_synthetic_demo.py``), importable so that the test suite
runs a smaller version of the same code:

1. :func:`make_synthetic_dataset` writes the synthetic labelled world in ScanNet's raw layout
   (:func:`projects.odin.datasets.synthetic_world.generate_world`) and converts it with the
   ScanNet converter of ``tools/create_data.py``;
2. :func:`load_demo_config` points a config (``configs/odin/synthetic_r18_demo.py``) at it;
3. :func:`train` trains with MMEngine's ``Runner`` (the ``tools/train.py`` path);
4. :func:`evaluate` runs the ``tools/test.py`` path (``ODINSegMetric``) on the held-out scenes;
5. :func:`run_demo` runs the demo (:mod:`projects.odin.demo.recording_demo`, what
   ``demo/odin_demo.py`` calls) on the converted frames of a held-out scene.
"""
import json
import os
import os.path as osp
import sys
import time
from typing import Dict, List, Optional, Sequence

from mmengine.config import Config

from projects.odin.utils.resources import resolve_file

#: the demo config, relative to the project root (found by :func:`resolve_file`: package data
#: or working directory; the tools pass the checkout's path)
DEMO_CONFIG = 'configs/odin/synthetic_r18_demo.py'
INFO_PREFIX = 'synthetic'


def make_synthetic_dataset(root: str,
                           num_scenes: int,
                           num_val: int,
                           seed: int = 0,
                           preset: str = 'small',
                           num_frames: Optional[int] = None,
                           depth_hw: Optional[Sequence[int]] = None,
                           color_hw: Optional[Sequence[int]] = None,
                           workers: int = 1) -> Dict[str, object]:
    """Generate the synthetic world under ``root/raw`` and convert it to ``root/converted``.

    Both steps are skipped when their output exists with the same parameters (a stamp file
    records them), so a second ``make demo`` goes straight to training.

    Args:
        root: output folder.
        num_scenes: rooms in total.
        num_val: held-out rooms (the last ones; the ``val`` split).
        seed: world seed.
        preset: generator preset (``tiny``, ``small``, ``default``).
        num_frames: frames per room (preset's when None).
        depth_hw: depth (= converted frame) size (H, W) (preset's when None).
        color_hw: colour size in the ``.sens`` (preset's when None).
        workers: converter processes.

    Returns:
        dict: ``raw`` and ``converted`` folders, ``train`` / ``val`` scene names and the seconds
        spent generating and converting (0 when reused).
    """
    params = dict(num_scenes=num_scenes, num_val=num_val, seed=seed, preset=preset,
                  num_frames=num_frames, depth_hw=list(depth_hw) if depth_hw else None,
                  color_hw=list(color_hw) if color_hw else None)
    raw, converted = osp.join(root, 'raw'), osp.join(root, 'converted')
    stamp = osp.join(root, 'dataset_params.json')
    reuse = osp.isfile(stamp) and _read_json(stamp) == params and all(
        osp.isfile(osp.join(converted, f'{INFO_PREFIX}_infos_{s}.pkl')) for s in ('train', 'val'))
    t0 = time.time()
    if reuse:
        summary = _read_json(osp.join(raw, 'synthetic_world.json'))
        gen_s = conv_s = 0.0
    else:
        # (imported here: reusing a dataset needs neither the stack nor the generator)
        from projects.odin.datasets.converters.scannet import convert_scannet
        from projects.odin.datasets.synthetic_world import generate_world
        if osp.isfile(stamp):
            os.remove(stamp)
        overrides = {k: tuple(v) if isinstance(v, list) else v
                     for k, v in dict(num_frames=num_frames, depth_hw=depth_hw,
                                      color_hw=color_hw).items() if v is not None}
        summary = generate_world(raw, num_scenes=num_scenes, seed=seed, preset=preset,
                                 num_val=num_val, **overrides)
        gen_s = time.time() - t0
        t1 = time.time()
        result = convert_scannet(raw, converted, dataset='scannet', frame_skip=1,
                                 workers=workers, overwrite=True, prefix=INFO_PREFIX,
                                 progress=False)
        if result['skipped']:
            raise RuntimeError(f'the converter skipped scenes: {result["skipped"]}')
        conv_s = time.time() - t1
        with open(stamp, 'w') as f:
            json.dump(params, f)
    return dict(raw=raw, converted=converted, train=list(summary['splits']['train']),
                val=list(summary['splits']['val']), generate_s=gen_s, convert_s=conv_s)


def load_demo_config(data_root: str,
                     work_dir: str,
                     config: str = DEMO_CONFIG,
                     max_iters: Optional[int] = None,
                     cfg_options: Optional[dict] = None) -> Config:
    """Load the demo config and point it at a converted synthetic dataset.

    Args:
        data_root: the converted dataset (``make_synthetic_dataset(...)['converted']``).
        work_dir: logs and checkpoints go here.
        config: config file; a relative path that does not exist from the working directory
            is looked up as a project file (:func:`resolve_file`). Defaults to
            ``configs/odin/synthetic_r18_demo.py``.
        max_iters: training iterations (the config's when None); the schedule is rescaled.
        cfg_options: further overrides (``Config.merge_from_dict`` keys).

    Returns:
        The config.
    """
    cfg = Config.fromfile(resolve_file(config))
    root = data_root.rstrip('/') + '/'
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        dataset = cfg[key].dataset
        while 'dataset' in dataset:  # dataset wrappers (RepeatDataset, ...)
            dataset = dataset.dataset
        dataset.data_root = root
    cfg.work_dir = work_dir
    if max_iters is not None:
        cfg.train_cfg.max_iters = max_iters
        cfg.train_cfg.val_interval = max_iters + 1
        for sched in cfg.param_scheduler:
            if sched.get('end', 0) > max_iters or sched.type == 'CosineAnnealingLR':
                sched.end = max_iters
        cfg.default_hooks.checkpoint.interval = max_iters
    # validation happens once after training, in `evaluate`
    cfg.val_cfg = None
    cfg.val_dataloader = None
    cfg.val_evaluator = None
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def train(cfg: Config) -> Dict[str, object]:
    """Train with MMEngine's Runner (what ``tools/train.py`` does).

    Returns:
        dict: ``checkpoint`` (the last one), ``seconds``, ``losses`` (total loss of every logged
        iteration, in order) and the trained ``model``.
    """
    from mmengine.runner import Runner
    runner = Runner.from_cfg(cfg)
    t0 = time.time()
    model = runner.train()
    seconds = time.time() - t0
    ckpt = osp.join(cfg.work_dir, f'iter_{cfg.train_cfg.max_iters}.pth')
    if not osp.isfile(ckpt):
        raise RuntimeError(f'training finished but {ckpt} was not written')
    losses = _logged_losses(runner)
    return dict(checkpoint=ckpt, seconds=seconds, losses=losses, model=model)


def _logged_losses(runner) -> List[float]:
    """Total training loss of every logged iteration (from the message hub)."""
    hist = runner.message_hub.get_scalar('train/loss')
    return [float(v) for v in hist.data[0]]


def evaluate(cfg: Config, checkpoint: Optional[str], show_dir: Optional[str] = None
             ) -> Dict[str, float]:
    """Evaluate a checkpoint on the held-out split (what ``tools/test.py`` does).

    Args:
        cfg: the config (as returned by :func:`load_demo_config`).
        checkpoint: checkpoint path, or None to evaluate the randomly initialised model.
        show_dir: if set, the visualisation hook writes per-scene PLY/PNGs there.

    Returns:
        dict: the metric's results (``AP``, ``AP50``, ``AP25``, ``mIoU``, ...) and ``seconds``.
    """
    from mmengine.runner import Runner
    cfg = cfg.copy()
    cfg.load_from = checkpoint
    if show_dir is not None:
        hook = cfg.default_hooks.visualization
        hook.draw = True
        hook.test_out_dir = show_dir
    runner = Runner.from_cfg(cfg)
    t0 = time.time()
    metrics = runner.test()
    out = {k.split('/')[-1]: float(v) for k, v in metrics.items()
           if isinstance(v, (int, float))}
    out['seconds'] = time.time() - t0
    return out


def run_demo(folder: str, config: str, checkpoint: str, out_dir: str, **options) -> int:
    """Run the demo (:func:`projects.odin.demo.recording_demo.run_recording_demo`) on a recording.

    Args:
        folder: the recording.
        config: model config file.
        checkpoint: checkpoint file.
        out_dir: output folder.
        **options: keyword options of :func:`run_recording_demo` (``score_thr``...).

    Returns:
        The demo's exit status (0, or 2 after printing the error as the command line does).
    """
    from .recording_demo import DemoError, run_recording_demo
    try:
        run_recording_demo(folder, config, checkpoint, out_dir, **options)
    except DemoError as e:
        print(e.cli_line(), file=sys.stderr)
        return 2
    return 0


def _read_json(path: str):
    with open(path) as f:
        return json.load(f)


__all__ = ['make_synthetic_dataset', 'load_demo_config', 'train', 'evaluate', 'run_demo',
           'DEMO_CONFIG']
