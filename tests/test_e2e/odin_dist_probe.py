"""A test-only hook for the 2-process CPU training test (``test_cpu_distributed.py``).

Imported into the training processes through ``custom_imports`` (the test puts this folder on
``PYTHONPATH``). Every rank records, per training iteration, the batch's task, the identities of
its samples and the rank's own loss, and at the end writes them with the rank's final parameters
to ``OUT_DIR/rank<R>.pt`` (MMEngine's checkpoint holds rank 0 only).
"""
import os.path as osp
from typing import List, Optional

import torch
from mmdet3d.registry import HOOKS
from mmengine.dist import get_dist_info
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper


def _sample_id(sample) -> str:
    """Scene name of a 3D sample, image path of a 2D one."""
    meta = sample.metainfo
    for key in ('scene_id', 'img_path', 'sample_idx'):
        if meta.get(key) is not None:
            return str(meta[key])
    raise KeyError(f'no identity in the sample metainfo: {sorted(meta)}')


@HOOKS.register_module()
class ODINDistProbeHook(Hook):
    """Record what each rank trained on and the weights it ended with.

    Args:
        out_dir: folder of the ``rank<R>.pt`` files.
    """

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir
        self.records: List[dict] = []

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch: Optional[dict] = None,
                         outputs: Optional[dict] = None) -> None:
        """Store this iteration's task, sample identities and local loss."""
        samples = data_batch['data_samples']
        self.records.append(dict(
            iter=runner.iter, task=samples[0].metainfo.get('task'),
            ids=[_sample_id(s) for s in samples], loss=float(outputs['loss'])))

    def after_train(self, runner) -> None:
        """Write the records and this rank's parameters and buffers."""
        rank, world_size = get_dist_info()
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        torch.save(dict(rank=rank, world_size=world_size, records=self.records,
                        wrapper=type(runner.model).__name__,
                        backend=torch.distributed.get_backend()
                        if torch.distributed.is_initialized() else None,
                        state_dict={k: v.detach().cpu().clone()
                                    for k, v in model.state_dict().items()}),
                   osp.join(self.out_dir, f'rank{rank}.pt'))
