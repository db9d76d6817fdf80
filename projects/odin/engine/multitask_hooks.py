"""Per-task loss logging for joint 2D-3D training."""
from typing import Optional

from mmdet3d.registry import HOOKS
from mmengine.hooks import Hook


@HOOKS.register_module()
class ODINTaskLossHook(Hook):
    """Log the loss of each task separately (``loss_3d`` / ``loss_2d``).

    In joint training every iteration is single-task, so the smoothed ``loss`` mixes two very
    different objectives. After each training iteration this hook reads the batch's task
    (``data_samples[0].metainfo['task']``) and records the total loss (and, with
    ``log_components``, every loss term) as ``train/loss_<task>`` (``train/<term>_<task>``) in
    the message hub; mmengine's ``LogProcessor`` then prints their window means next to the
    usual keys, and the full history stays readable through
    ``runner.message_hub.get_scalar('train/loss_3d')``.

    Args:
        log_components: also log every loss term per task. Defaults to False.
    """

    priority = 'BELOW_NORMAL'

    def __init__(self, log_components: bool = False) -> None:
        self.log_components = log_components

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch: Optional[dict] = None,
                         outputs: Optional[dict] = None) -> None:
        """Record this iteration's losses under its task."""
        if not outputs or not data_batch or not data_batch.get('data_samples'):
            return
        sample = data_batch['data_samples'][0]
        task = sample.metainfo.get('task')
        if task is None:
            inputs = data_batch.get('inputs')
            task = '3d' if isinstance(inputs, dict) and inputs.get('depths') is not None else '2d'
        for key, value in outputs.items():
            if key == 'loss':
                runner.message_hub.update_scalar(f'train/loss_{task}', value)
            elif self.log_components and 'loss' in key:
                runner.message_hub.update_scalar(f'train/{key}_{task}', value)
