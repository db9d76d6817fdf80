"""Run the GPU recipes without an accelerator (used by ``tools/train.py`` and ``tools/test.py``).

MMEngine assumes a GPU in two places that the official ODIN recipes reach:

* ``AmpOptimWrapper`` asserts an accelerator (``AmpOptimizerWrapper is only available training on
  gpu``), and every ODIN config trains with it, as the official scripts do (``SOLVER.AMP``).
  :func:`fp32_without_accelerator` swaps it for the plain fp32 ``OptimWrapper`` (dropping the
  AMP-only arguments such as ``loss_scale``) and returns the one warning line to log.
* The ``pytorch`` launcher calls ``torch.cuda.set_device`` before it creates the process group
  (NCCL by default), and ``Runner.wrap_model`` passes ``device_ids=[LOCAL_RANK]`` to
  ``DistributedDataParallel``, which DDP refuses for a CPU module.
  :func:`distributed_without_accelerator` creates the process group itself with gloo (MMEngine
  then finds it initialised and skips its own launcher) and builds DDP without device ids.

Both only act where MMEngine itself would find no CUDA/NPU/MLU/MUSA device, so GPU runs are
unchanged. One more step MMEngine leaves to the caller, with or without a GPU: the Runner never
destroys the process group. :func:`close_process_group` does, at the end of
``tools/train.py``/``tools/test.py``; a gloo process that exits with its group alive can abort
during interpreter shutdown (``terminate called without an active exception``, SIGABRT)
although its work has finished. This is a front-end concern: nothing here touches the model.
"""
import datetime
import os
from typing import Optional

import torch
import torch.distributed as torch_dist
from mmengine.config import Config, ConfigDict

#: arguments that only ``AmpOptimWrapper`` accepts (mmengine 0.10)
AMP_ONLY_ARGS = ('loss_scale', 'dtype', 'use_fsdp')


def has_accelerator() -> bool:
    """Whether MMEngine's AMP wrapper and ``pytorch`` launcher find a device they support.

    Returns:
        bool: True with CUDA, or an Ascend NPU, Cambricon MLU or Moore Threads MUSA device.
    """
    from mmengine import device
    checks = ('is_cuda_available', 'is_npu_available', 'is_mlu_available', 'is_musa_available')
    return any(getattr(device, name)() for name in checks if hasattr(device, name))


def _is_amp_wrapper(optim_wrapper: dict) -> bool:
    wrapper_type = optim_wrapper.get('type', 'OptimWrapper')
    name = wrapper_type if isinstance(wrapper_type, str) else wrapper_type.__name__
    return name.split('.')[-1] == 'AmpOptimWrapper'


def fp32_without_accelerator(cfg: Config, amp_requested: bool = False) -> Optional[str]:
    """Train in fp32 where mixed precision is impossible (no accelerator).

    With an accelerator nothing changes. Without one, an ``AmpOptimWrapper`` in
    ``cfg.optim_wrapper`` becomes an ``OptimWrapper`` with the same optimizer, gradient
    clipping, accumulation and parameter-wise settings; the AMP-only arguments
    (:data:`AMP_ONLY_ARGS`) are dropped.

    Args:
        cfg: the full config (modified in place).
        amp_requested: whether the user asked for AMP (``tools/train.py --amp``); the returned
            line then says why the flag is ignored.

    Returns:
        str | None: the warning line to log once, or None when nothing changed.
    """
    if has_accelerator():
        return None
    optim_wrapper = cfg.get('optim_wrapper')
    is_amp = optim_wrapper is not None and _is_amp_wrapper(optim_wrapper)
    if is_amp:
        optim_wrapper.type = 'OptimWrapper'
        dropped = [k for k in AMP_ONLY_ARGS if optim_wrapper.pop(k, None) is not None]
    if amp_requested:
        return ('--amp is ignored: no CUDA device, and mixed precision (mmengine AmpOptimWrapper) '
                'needs a GPU; training in fp32 with OptimWrapper.')
    if is_amp:
        extra = f' (dropped {", ".join(dropped)})' if dropped else ''
        return ('No CUDA device: the config\'s mixed precision (AmpOptimWrapper) needs a GPU, '
                f'training in fp32 with OptimWrapper instead{extra}.')
    return None


def distributed_without_accelerator(cfg: Config) -> Optional[str]:
    """Prepare a ``--launcher pytorch`` run (torchrun) on CPUs: gloo and DDP without device ids.

    With an accelerator, or without a launcher, nothing changes and MMEngine initialises the
    process group as configured (``env_cfg.dist_cfg``, NCCL in our configs). Otherwise this
    initialises the default process group with the gloo backend from torchrun's environment
    (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``; ``env_cfg.dist_cfg.timeout``
    in seconds is honoured), records ``backend='gloo'`` in the config, and sets
    ``model_wrapper_cfg.device_ids=None`` so that ``Runner.wrap_model`` builds a CPU
    ``DistributedDataParallel`` (the default wrapper, MMEngine's default arguments).

    Args:
        cfg: the full config with ``cfg.launcher`` set (modified in place).

    Returns:
        str | None: a line to log, or None when nothing changed.

    Raises:
        RuntimeError: the ``slurm`` or ``mpi`` launcher without an accelerator (MMEngine's
            launchers for them also select a CUDA device; use ``tools/dist_train.sh``).
    """
    launcher = cfg.get('launcher', 'none')
    if launcher == 'none' or has_accelerator():
        return None
    if launcher != 'pytorch':
        raise RuntimeError(
            f'--launcher {launcher} needs a GPU (MMEngine selects a CUDA device for it); on a '
            'machine without one use --launcher pytorch, e.g. bash tools/dist_train.sh CONFIG N')
    env_cfg = cfg.setdefault('env_cfg', ConfigDict())
    dist_cfg = env_cfg.setdefault('dist_cfg', ConfigDict())
    dist_cfg['backend'] = 'gloo'
    if not torch_dist.is_initialized():
        kwargs = {k: v for k, v in dist_cfg.items() if k != 'backend'}
        if kwargs.get('timeout') is not None:
            kwargs['timeout'] = datetime.timedelta(seconds=kwargs['timeout'])
        torch_dist.init_process_group(backend='gloo', **kwargs)
    wrapper = cfg.get('model_wrapper_cfg')
    if wrapper is None:
        # what Runner.wrap_model builds without a model_wrapper_cfg, minus the device ids
        cfg.model_wrapper_cfg = ConfigDict(
            type='MMDistributedDataParallel', broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False), device_ids=None)
    else:
        from mmengine.registry import MODEL_WRAPPERS
        wrapper_type = wrapper.get('type', 'MMDistributedDataParallel')
        if isinstance(wrapper_type, str):
            wrapper_type = MODEL_WRAPPERS.get(wrapper_type)
        if isinstance(wrapper_type, type) and issubclass(
                wrapper_type, torch.nn.parallel.DistributedDataParallel):
            wrapper['device_ids'] = None
    return (f'No CUDA device: distributed run on CPU with the gloo backend (rank '
            f'{torch_dist.get_rank()} of {torch_dist.get_world_size()}, LOCAL_RANK '
            f'{os.environ.get("LOCAL_RANK", "?")}).')


def close_process_group() -> bool:
    """Destroy the default process group, if any, before the interpreter shuts down.

    MMEngine initialises the group but never destroys it. A process whose gloo group is still
    alive at exit can abort during interpreter finalisation (gloo's worker threads still hold
    work objects when the interpreter is torn down), which turns a finished, successful
    ``torchrun`` job into a failure; PyTorch asks applications to call
    ``destroy_process_group`` on exit for every backend. A no-op outside distributed runs.

    Returns:
        bool: whether a process group was destroyed.
    """
    if not (torch_dist.is_available() and torch_dist.is_initialized()):
        return False
    torch_dist.destroy_process_group()
    return True


def exit_after_run(rc: int = 0) -> None:
    """End a ``tools/train.py`` / ``tools/test.py`` process with exit status ``rc``.

    The process group is destroyed first (:func:`close_process_group`). A distributed process
    then leaves without interpreter finalisation (``os._exit`` after flushing its streams and
    logs): even with the group destroyed, a gloo rank still aborted at exit now and then on a
    loaded 2-core machine ("terminate called without an active exception" after its last log
    line), which fails a job whose work is complete. Non-distributed runs exit normally.

    Args:
        rc: the exit status.
    """
    if close_process_group():
        import logging
        import sys
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(rc)
    raise SystemExit(rc)
