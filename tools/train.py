"""Train an ODIN model with MMEngine's Runner.

Usage:
    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] [--auto-scale-lr]
        [--cfg-options key=value ...] [--launcher {none,pytorch,slurm,mpi}]

Multi-GPU / multi-node training goes through PyTorch DDP via MMEngine launchers, see
``tools/dist_train.sh`` (torchrun) and the README.

Without a GPU the recipes still run: mixed precision (AmpOptimWrapper, and ``--amp``) falls back to
fp32 with one warning line, and ``--launcher pytorch`` uses the gloo backend
(``projects/odin/utils/device_fallback.py``).
"""
import argparse
import logging
import os
import os.path as osp
import sys

# Make `projects.odin` importable when the script is run from anywhere.
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.logging import print_log  # noqa: E402
from mmengine.registry import RUNNERS  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

from projects.odin.utils.device_fallback import (  # noqa: E402
    distributed_without_accelerator,
    exit_after_run,
    fp32_without_accelerator,
    has_accelerator,
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train an ODIN (MMDetection3D) model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from the given checkpoint; without a value, resume from the latest '
        'checkpoint in the work dir')
    parser.add_argument('--amp', action='store_true', help='enable automatic mixed precision')
    parser.add_argument(
        '--auto-scale-lr', action='store_true',
        help='scale the learning rate linearly with the total batch size')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override settings of the config, e.g. train_dataloader.batch_size=2')
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def build_config(args: argparse.Namespace) -> Config:
    """Load the config and apply the command-line overrides."""
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    if args.amp and has_accelerator():  # without one, main() says why --amp is ignored
        if cfg.optim_wrapper.get('type', 'OptimWrapper') == 'AmpOptimWrapper':
            print_log('AMP is already enabled in the config.', logger='current',
                      level=logging.WARNING)
        else:
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in cfg.auto_scale_lr:
            raise KeyError('--auto-scale-lr needs `auto_scale_lr = dict(enable=..., '
                           'base_batch_size=...)` in the config')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    return cfg


def main(argv=None) -> Runner:
    """Train; returns the runner (for in-process callers such as the tests)."""
    args = parse_args(argv)
    cfg = build_config(args)
    # no GPU: fp32 instead of AMP, gloo instead of NCCL (no-ops with a GPU)
    notes = [(logging.WARNING, fp32_without_accelerator(cfg, amp_requested=args.amp)),
             (logging.INFO, distributed_without_accelerator(cfg))]
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    for level, note in notes:
        if note:
            runner.logger.log(level, note)
    runner.train()
    return runner


if __name__ == '__main__':
    main()
    exit_after_run(0)  # closes the process group (a live gloo group can abort at exit)
