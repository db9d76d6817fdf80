"""Test (evaluate) an ODIN model with MMEngine's Runner.

Usage:
    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--show-dir DIR] [--show]
        [--cfg-options key=value ...] [--launcher {none,pytorch,slurm,mpi}] [--allow-partial]

A checkpoint that does not fit the config's model (missing, unexpected or mis-shaped keys) is
refused before testing (exit 2) unless ``--allow-partial``; so is an unreadable file.
Distributed testing: ``tools/dist_test.sh`` (torchrun); without a GPU it runs with gloo.
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.config import Config, ConfigDict, DictAction  # noqa: E402
from mmengine.registry import RUNNERS  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

from projects.odin.utils.device_fallback import (  # noqa: E402
    distributed_without_accelerator,
    exit_after_run,
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test (and evaluate) an ODIN model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file (our format; convert official '
                        'ODIN checkpoints with tools/model_converters/odin_to_mmdet3d.py)')
    parser.add_argument('--work-dir', help='the dir to save evaluation results')
    parser.add_argument('--show', action='store_true', help='show results in a window')
    parser.add_argument('--show-dir', help='directory (under the work dir) for visualisations')
    parser.add_argument('--wait-time', type=float, default=2, help='seconds between shows')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override settings of the config, e.g. test_dataloader.dataset.max_frames=50')
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    parser.add_argument('--allow-partial', action='store_true',
                        help='test a checkpoint that does not fit the config (only the tensors '
                        'that fit are loaded); refused by default')
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def trigger_visualization_hook(cfg: Config, args: argparse.Namespace) -> Config:
    """Switch the config's visualisation hook on for ``--show`` / ``--show-dir``."""
    default_hooks = cfg.setdefault('default_hooks', ConfigDict())
    if 'visualization' not in default_hooks:
        raise RuntimeError('--show/--show-dir need a `visualization` hook in default_hooks')
    hook = default_hooks['visualization']
    hook['draw'] = True
    if args.show:
        hook['show'] = True
        hook['wait_time'] = args.wait_time
    if args.show_dir:
        hook['test_out_dir'] = args.show_dir
    return cfg


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
    cfg.load_from = args.checkpoint
    if args.show or args.show_dir:
        cfg = trigger_visualization_hook(cfg, args)
    return cfg


def check_checkpoint_fits(runner: Runner, args: argparse.Namespace) -> None:
    """Refuse (CheckpointError) a checkpoint that does not fit the runner's model."""
    from mmengine.model import is_model_wrapper

    from projects.odin.utils.checkpoint import check_checkpoint
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    check_checkpoint(model, args.checkpoint, config=args.config,
                     allow_partial=args.allow_partial, logger=runner.logger)


def main(argv=None) -> int:
    from projects.odin.utils.checkpoint import CheckpointError
    args = parse_args(argv)
    cfg = build_config(args)
    note = distributed_without_accelerator(cfg)  # no GPU: gloo instead of NCCL
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    if note:
        runner.logger.info(note)
    try:
        check_checkpoint_fits(runner, args)
        runner.test()
    except (CheckpointError, FileNotFoundError) as e:
        if not isinstance(e, CheckpointError) and osp.isfile(args.checkpoint):
            raise  # a missing data file: keep the traceback
        print(f'error: {e}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    exit_after_run(main())  # closes the process group (a live gloo group can abort at exit)
