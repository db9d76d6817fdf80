"""Training and testing hooks added by ODIN."""
import os
import os.path as osp
import random
from typing import Any, Dict, Optional

import numpy as np
import torch
from mmdet3d.registry import HOOKS
from mmengine.dist import is_main_process
from mmengine.fileio import dump
from mmengine.hooks import Hook, LoggerHook

DATA_BATCH = Optional[Any]


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Save the random-number-generator states in checkpoints and restore them on resume.

    mmengine's ``resume=True`` restores weights, optimizer, schedulers, the iteration counter and
    the seed, and replays the sampler so the same data comes next, but it does not restore the
    state of the global generators (python ``random``, numpy, torch CPU and CUDA). ODIN draws from
    them in the model (decoder key subsampling, loss/matcher point subsets, camera drop, dropout),
    so a resumed run would diverge from an uninterrupted one. This hook stores the states in
    ``checkpoint['rng_state']`` and puts them back right before the first iteration after resuming,
    i.e. after mmengine has replayed the data loader.

    Data-pipeline randomness lives in the loader workers, which mmengine seeds deterministically
    from the seed, rank and worker id, so with ``num_workers > 0`` a resumed run is identical to an
    uninterrupted one. With ``num_workers=0`` the transforms of the first resumed batch run before
    the states are restored and draw different random numbers.
    """

    priority = 'VERY_LOW'

    def __init__(self) -> None:
        self._pending: Dict[str, Any] | None = None

    @staticmethod
    def get_state() -> Dict[str, Any]:
        """Return the states of python ``random``, numpy, torch CPU and (if present) CUDA."""
        state = {
            'python': random.getstate(),
            'numpy': np.random.get_state(),
            'torch': torch.get_rng_state(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state['cuda'] = torch.cuda.get_rng_state_all()
        return state

    @staticmethod
    def set_state(state: Dict[str, Any]) -> None:
        """Restore states produced by :meth:`get_state`."""
        random.setstate(state['python'])
        np.random.set_state(state['numpy'])
        torch.set_rng_state(state['torch'])
        if 'cuda' in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state['cuda'])

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Store the current generator states in the checkpoint."""
        checkpoint['rng_state'] = self.get_state()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Remember the saved states; they are applied before the next training iteration."""
        self._pending = checkpoint.get('rng_state')

    def before_train_iter(self, runner, batch_idx: int, data_batch: DATA_BATCH = None) -> None:
        """Apply the states loaded by a resume (not by ``load_from``: iteration 0), once."""
        if self._pending is not None:
            if runner.iter > 0:
                self.set_state(self._pending)
            self._pending = None


@HOOKS.register_module()
class TrustedCheckpointHook(Hook):
    """Let the Runner read mmengine's own checkpoints (``load_from``, ``resume``) under torch 2.6+.

    mmengine 0.10.7 pickles objects (``HistoryBuffer``, ``ConfigDict``) into the checkpoints it
    saves and reads them back with ``torch.load``'s default, which torch 2.6 made
    ``weights_only=True``, so resuming or ``load_from`` fails. This hook opens
    :func:`projects.odin.utils.checkpoint.trusted_checkpoint_loading` for the Runner's checkpoint
    loading only: from ``before_run`` (called right before ``Runner.load_or_resume``) until the
    checkpoint has been read (``after_load_checkpoint``), or at the latest when the loop starts
    (``before_train``/``before_val``/``before_test``) or the run ends. Outside that window
    mmengine's loader is untouched. ``configs/_base_/default_runtime.py`` registers it as
    ``default_hooks.trusted_checkpoint``; read its trust assumption in that module: only load
    checkpoints you made or obtained from a source you trust.
    """

    priority = 'VERY_HIGH'

    def __init__(self) -> None:
        self._scope: Optional[Any] = None

    def _open(self) -> None:
        from projects.odin.utils.checkpoint import trusted_checkpoint_loading
        self._close()
        self._scope = trusted_checkpoint_loading()
        self._scope.__enter__()

    def _close(self) -> None:
        if self._scope is not None:
            scope, self._scope = self._scope, None
            scope.__exit__(None, None, None)

    def before_run(self, runner) -> None:
        """Open the trusted window: ``load_or_resume`` comes next."""
        self._open()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """The checkpoint has been read: close the window."""
        self._close()

    def before_train(self, runner) -> None:
        """Close the window (nothing was loaded)."""
        self._close()

    def before_val(self, runner) -> None:
        """Close the window (nothing was loaded)."""
        self._close()

    def before_test(self, runner) -> None:
        """Close the window (nothing was loaded)."""
        self._close()

    def after_run(self, runner) -> None:
        """Close the window (safety net)."""
        self._close()


@HOOKS.register_module()
class ODINLoggerHook(LoggerHook):
    """mmengine's ``LoggerHook`` whose test metrics file is written by one process, atomically.

    mmengine's hook dumps the test metrics to ``<log_dir>/<timestamp>.json`` from every rank.
    All ranks share the timestamp, so in a multi-process test (``tools/dist_test.sh``) they
    write the same file at the same moment and it can end up corrupt (one rank's JSON over
    another's longer one leaves trailing bytes). Here only the main process writes it, through a
    temporary file renamed into place; everything else is mmengine's hook.
    """

    def after_test_epoch(self, runner, metrics: Optional[Dict[str, float]] = None) -> None:
        """Log the test metrics and (main process only) write them to the JSON file."""
        tag, log_str = runner.log_processor.get_log_after_epoch(
            runner, len(runner.test_dataloader), 'test', with_non_scalar=True)
        runner.logger.info(log_str)
        if not is_main_process():
            return
        path = osp.join(runner.log_dir, self.json_log_path)
        tmp = f'{path}.tmp{os.getpid()}'
        dump(self._process_tags(tag), tmp, file_format='json')
        os.replace(tmp, path)
