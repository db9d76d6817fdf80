"""Reading checkpoints, and checking that one fits the model of a config.

Reading (torch >= 2.6 with mmengine 0.10.7): torch 2.6 changed ``torch.load``'s default to
``weights_only=True``. mmengine 0.10.7 pickles objects such as ``HistoryBuffer`` and ``ConfigDict``
into every checkpoint it saves, and its loaders call ``torch.load`` without ``weights_only``, so
``load_checkpoint``, ``Runner(load_from=...)`` and ``resume=True`` all fail with
``UnpicklingError: Weights only load failed``. Adding safe globals is not enough (the pickles also
reference ``getattr``).

Trust assumption: a checkpoint file is a pickle, and unpickling runs code. The trusted loader
here unpickles **local files only** with ``weights_only=False``, exactly as torch < 2.6 and
mmengine always did. Only load checkpoints you made or obtained from a source you trust (e.g. the
official ODIN release converted by ``tools/model_converters/odin_to_mmdet3d.py``). Remote
(``http(s)://``) checkpoints keep torch's safe default. A file that cannot be read (truncated,
corrupt, not a checkpoint) raises :class:`CheckpointReadError`, one line naming the file.

Scope: importing :mod:`projects.odin` changes nothing in mmengine. The trusted loader is used
where ODIN loads checkpoints and nowhere else:

- our own readers call :func:`read_checkpoint` directly (``init_odin_model``, the demo,
  :func:`check_checkpoint`, the converter);
- mmengine's loaders (``load_checkpoint``, ``Runner(load_from=...)``, ``resume=True``) see it only
  inside :func:`trusted_checkpoint_loading`, a context manager that registers it as mmengine's
  local-file loader and puts the previous loader back on exit;
- :class:`projects.odin.engine.TrustedCheckpointHook` (``default_hooks.trusted_checkpoint`` of
  ``configs/_base_/default_runtime.py``) opens that context for the Runner's own checkpoint
  loading only (from ``before_run`` until the checkpoint is read), so ``tools/train.py --resume``,
  ``load_from`` and ``tools/test.py`` read mmengine's checkpoints.

Fitting: mmengine loads with ``strict=False`` and only *logs* missing, unexpected and mis-shaped
keys, so a checkpoint of another architecture (e.g. ScanNet R50 weights with the Swin-B config)
yields a half-random model that evaluates without complaint. :func:`check_checkpoint` compares a
checkpoint with a model and raises :class:`CheckpointMismatchError` naming the checkpoint, the
config and the first offending keys, and suggests the configs that match the architecture the
converter recorded in ``meta['arch']``; ``allow_partial=True`` (``--allow-partial`` of
``tools/test.py`` and the demo) only logs it. ``tools/test.py``, ``demo/odin_demo.py`` and
:func:`projects.odin.apis.inference.init_odin_model` use it.
"""
import contextlib
import glob
import logging
import os
import os.path as osp
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch
from torch import nn

_logger = logging.getLogger(__name__)
#: keys a model may lack in a checkpoint (BatchNorm counters; mmengine ignores them too)
IGNORED_MISSING = re.compile(r'(^|\.)num_batches_tracked$')


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (base class; the message is meant for the user)."""


class CheckpointReadError(CheckpointError):
    """The file is not a readable checkpoint (truncated, corrupt, or another kind of file)."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's tensors do not fit the model built from the config."""


def read_checkpoint(filename: str | os.PathLike,
                    map_location: str | Callable | torch.device | None = 'cpu',
                    mmap: bool = False) -> Any:
    """Load a trusted local checkpoint with full unpickling; a bad file gives a one-line error.

    Args:
        filename: path of a checkpoint written by ``torch.save``.
        map_location: as in :func:`torch.load`. Defaults to ``'cpu'``.
        mmap: memory-map the tensors instead of reading them (fast for a key/shape check; files
            in torch's legacy format are read normally). Defaults to False.

    Returns:
        The unpickled object (usually a dict with ``state_dict``, ``meta``, ``optimizer``...).

    Raises:
        FileNotFoundError: ``filename`` is not an existing file.
        CheckpointReadError: the file cannot be unpickled (truncated, corrupt, not a checkpoint).
    """
    filename = osp.expanduser(os.fspath(filename))
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint file not found: {filename}')
    try:
        if mmap:
            try:
                return torch.load(filename, map_location=map_location, weights_only=False,
                                  mmap=True)
            except Exception:  # legacy (non-zip) format: read it normally below
                pass
        return torch.load(filename, map_location=map_location, weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means an unusable file
        # first line, first sentence (torch appends a paragraph of advice to its zip errors)
        reason = (str(exc).strip().splitlines() or [''])[0].split('. ')[0]
        raise CheckpointReadError(
            f'cannot read checkpoint {filename} ({osp.getsize(filename)} bytes): '
            f'{type(exc).__name__}: {reason} - the file is truncated, corrupt or not a torch '
            'checkpoint (download/convert it again)') from None


def trusted_torch_load(filename: str | os.PathLike,
                       map_location: str | Callable | torch.device | None = None) -> Any:
    """Load a trusted local checkpoint with full unpickling (see :func:`read_checkpoint`).

    Args:
        filename: path of a checkpoint written by ``torch.save``.
        map_location: as in :func:`torch.load`. Defaults to None.

    Returns:
        The unpickled object (usually a dict with ``state_dict``, ``meta``, ``optimizer``...).

    Raises:
        FileNotFoundError: if ``filename`` is not an existing file.
        CheckpointReadError: the file cannot be unpickled.
    """
    return read_checkpoint(filename, map_location=map_location)


def _trusted_local_loader(filename: str, map_location: Any = None) -> Any:
    """Read a local file for mmengine (its loader signature) via :func:`trusted_torch_load`."""
    return trusted_torch_load(filename, map_location=map_location)


@contextlib.contextmanager
def trusted_checkpoint_loading() -> Iterator[None]:
    """Let mmengine's checkpoint loaders read trusted local files, inside this block only.

    Registers :func:`trusted_torch_load` as mmengine's local-file loader (the ``''`` scheme of
    ``mmengine.runner.checkpoint.CheckpointLoader``) and restores the loader that was there
    before on exit, also on error. Nested blocks are fine. Remote schemes are untouched. Inside
    the block, ``load_checkpoint``, ``_load_checkpoint`` and ``Runner.load_checkpoint`` unpickle
    local files fully; see the module docstring for the trust assumption.

    Example:
        >>> with trusted_checkpoint_loading():
        ...     runner.load_checkpoint('work_dirs/x/iter_4000.pth')
    """
    from mmengine.runner.checkpoint import CheckpointLoader
    previous = CheckpointLoader._schemes.get('')
    CheckpointLoader.register_scheme(prefixes='', loader=_trusted_local_loader, force=True)
    try:
        yield
    finally:
        if previous is None:
            CheckpointLoader._schemes.pop('', None)
        else:
            CheckpointLoader.register_scheme(prefixes='', loader=previous, force=True)


# ------------------------------------------------------------------------------------ fitting
@dataclass
class CheckpointFit:
    """How a checkpoint's state dict fits a model.

    Attributes:
        missing: model keys the checkpoint lacks (``num_batches_tracked`` ignored).
        unexpected: checkpoint keys the model does not have.
        mismatched: ``(key, checkpoint shape, model shape)`` of keys present in both.
        num_loaded: checkpoint tensors that fit.
    """

    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    mismatched: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]] = field(default_factory=list)
    num_loaded: int = 0

    @property
    def ok(self) -> bool:
        """Whether every model tensor is in the checkpoint with its shape, and nothing else."""
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self, first: int = 5) -> str:
        """``'3 missing keys (first: a, b, c); ...'`` with at most ``first`` keys per kind."""

        def head(keys: List[str]) -> str:
            more = f', ... {len(keys) - first} more' if len(keys) > first else ''
            return ', '.join(keys[:first]) + more

        parts = []
        if self.missing:
            parts.append(f'{len(self.missing)} missing keys (first: {head(self.missing)})')
        if self.unexpected:
            parts.append(f'{len(self.unexpected)} unexpected keys '
                         f'(first: {head(self.unexpected)})')
        if self.mismatched:
            shapes = [f'{k} {list(a)} in the checkpoint vs {list(b)} in the model'
                      for k, a, b in self.mismatched]
            parts.append(f'{len(self.mismatched)} mis-shaped keys (first: {head(shapes)})')
        return '; '.join(parts)


def checkpoint_state_dict(checkpoint: Any, filename: str = '<checkpoint>') -> Dict[str, Any]:
    """The model state dict of a loaded checkpoint, as mmengine reads it.

    ``checkpoint['state_dict']`` if present, else the checkpoint itself; a leading ``module.``
    (DDP) is stripped from the keys.

    Raises:
        CheckpointReadError: the file holds no dict of tensors.
    """
    sd = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(sd, dict) or not any(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointReadError(f'{filename} holds no model weights (expected a dict with a '
                                  "'state_dict' of tensors, got "
                                  f'{type(checkpoint).__name__})')
    out = OrderedDict((re.sub(r'^module\.', '', k), v) for k, v in sd.items())
    metadata = getattr(sd, '_metadata', None)
    if metadata is not None:
        out._metadata = metadata
    return out


def upgraded_state_dict(model: nn.Module, state_dict: Dict[str, Any]) -> Dict[str, Any]:
    """A copy of a state dict with the keys renamed as the model's modules rename them on load.

    A module that renamed its parameters declares ``upgrade_state_dict(state_dict, prefix,
    version)`` (e.g. :meth:`ODINHead.upgrade_state_dict`) and calls it from its
    ``_load_from_state_dict``; this applies the same renaming without loading, with each
    module's version from the state dict's ``_metadata`` (None where absent).

    Args:
        model: the model.
        state_dict: the checkpoint's state dict (not modified).

    Returns:
        The renamed copy (with the original ``_metadata``).
    """
    metadata = getattr(state_dict, '_metadata', None)
    out = OrderedDict(state_dict)
    for name, module in model.named_modules():
        upgrade = getattr(module, 'upgrade_state_dict', None)
        if callable(upgrade):
            version = (metadata or {}).get(name, {}).get('version')
            upgrade(out, f'{name}.' if name else '', version)
    if metadata is not None:
        out._metadata = metadata
    return out


def compare_state_dict(model: nn.Module, state_dict: Dict[str, Any]) -> CheckpointFit:
    """Compare a state dict's keys and shapes with a model's (nothing is loaded).

    Args:
        model: the model (its ``state_dict()``: parameters and persistent buffers).
        state_dict: the checkpoint's state dict (see :func:`checkpoint_state_dict`).

    Returns:
        The fit.
    """
    own = model.state_dict()
    state_dict = upgraded_state_dict(model, state_dict)
    fit = CheckpointFit()
    for key, value in own.items():
        if key not in state_dict:
            if not IGNORED_MISSING.search(key):
                fit.missing.append(key)
            continue
        theirs = state_dict[key]
        shape = tuple(theirs.shape) if isinstance(theirs, torch.Tensor) else None
        if shape != tuple(value.shape):
            fit.mismatched.append((key, shape, tuple(value.shape)))
        else:
            fit.num_loaded += 1
    fit.unexpected = [k for k in state_dict if k not in own]
    return fit


def _decoder_fusion_cfg(pixel_decoder: dict) -> Optional[dict]:
    """The pixel decoder's per-level fusion layer config.

    ``level_fusion_cfg``; configs saved before the rename call it ``fusion_cfg``.
    """
    if 'level_fusion_cfg' in pixel_decoder:
        return pixel_decoder['level_fusion_cfg']
    return pixel_decoder.get('fusion_cfg')


def _config_arch(cfg) -> Optional[dict]:
    """The converter's architecture description (``meta['arch']``) of a config's model."""
    model = cfg.get('model', None)
    if not model or model.get('type') != 'ODIN':
        return None
    bb, head = model['backbone'], model['decode_head']
    if 'Swin' in bb['type']:
        backbone = 'swin' if bb.get('embed_dims') == 128 else f'swin{bb.get("embed_dims")}'
    else:
        backbone = f'r{bb.get("depth", 50)}'
    open_vocab = bool(head.get('open_vocab_cfg')) or \
        (head.get('classifier') or {}).get('type') == 'OpenVocabClassifier'
    return dict(backbone=backbone, num_classes=None if open_vocab else head['num_things_classes'],
                num_queries=head['num_queries'], open_vocab=open_vocab,
                backbone_fusion_layers=tuple(bb.get('fusion_layers') or ()),
                decoder_fusion=_decoder_fusion_cfg(head['pixel_decoder']) is not None)


def suggest_configs(arch: dict, config_dir: Optional[str] = None) -> List[str]:
    """The configs whose model has the architecture the converter recorded.

    Compared: backbone, classes (closed-set only), queries, open vocabulary, 3D layers per
    backbone stage and decoder fusion (those of them the record has).

    Args:
        arch: ``meta['arch']`` written by ``tools/model_converters/odin_to_mmdet3d.py``.
        config_dir: folder of configs to search. Defaults to the project's ``configs/odin``
            (:func:`projects.odin.utils.resources.find_resource`: package data or working
            directory).

    Returns:
        Paths of the matching configs (relative to the working directory when inside it),
        sorted.

    Raises:
        FileNotFoundError: no ``config_dir`` given and the project's configs are not found.
    """
    from mmengine.config import Config

    from .resources import find_resource
    config_dir = config_dir or find_resource(osp.join('configs', 'odin'))
    cwd = os.getcwd() + os.sep
    want = dict(arch)
    if want.get('open_vocab'):
        want['num_classes'] = None
    if 'backbone_fusion_layers' in want:
        want['backbone_fusion_layers'] = tuple(want['backbone_fusion_layers'])
    found = []
    for path in sorted(glob.glob(osp.join(config_dir, '*.py'))):
        try:
            have = _config_arch(Config.fromfile(path))
        except Exception:  # noqa: BLE001 - a config that does not parse cannot be suggested
            continue
        if have and all(want[k] == have[k] for k in have if k in want):
            path = osp.abspath(path)
            found.append(osp.relpath(path) if path.startswith(cwd) else path)
    return found


def _arch_hint(meta: dict, config: Optional[str]) -> str:
    arch = meta.get('arch') if isinstance(meta, dict) else None
    if not isinstance(arch, dict) or not arch:
        return ''
    what = ', '.join(f'{k}={v}' for k, v in arch.items() if k != 'roberta')
    hint = f' The checkpoint was converted from a model with {what}'
    if meta.get('kind') == 'mask2former_init':
        return hint + (' from 2D Mask2Former weights: it initialises training (load_from=), it '
                       'is not a trained ODIN model.')
    try:
        found = suggest_configs(arch)
    except FileNotFoundError:  # an installation without configs: no suggestion to make
        return hint + '.'
    matches = [c for c in found if config is None or osp.abspath(c) != osp.abspath(config)]
    if matches:
        return hint + f': use {" or ".join(matches)}.'
    if found:
        return hint + ', the architecture of this config.'
    return hint + '; no config in configs/odin has that architecture.'


def check_checkpoint(model: nn.Module, filename: str, config: Optional[str] = None,
                     allow_partial: bool = False, checkpoint: Any = None,
                     logger: Optional[logging.Logger] = None) -> CheckpointFit:
    """Check that a checkpoint fits a model; raise (or log) a clear report if it does not.

    Args:
        model: the model built from ``config`` (unwrapped from DDP).
        filename: the checkpoint file (read memory-mapped unless ``checkpoint`` is given).
        config: the config's path, named in the report. Defaults to None.
        allow_partial: log the report as a warning instead of raising. Defaults to False.
        checkpoint: the already loaded checkpoint of ``filename``. Defaults to None.
        logger: where the warning goes. Defaults to this module's logger.

    Returns:
        The fit.

    Raises:
        FileNotFoundError: no such file.
        CheckpointReadError: the file is not a readable checkpoint.
        CheckpointMismatchError: it does not fit and ``allow_partial`` is False.
    """
    if checkpoint is None:
        checkpoint = read_checkpoint(filename, map_location='cpu', mmap=True)
    fit = compare_state_dict(model, checkpoint_state_dict(checkpoint, filename))
    if fit.ok:
        return fit
    where = f' of {config}' if config else ''
    meta = checkpoint.get('meta', {}) if isinstance(checkpoint, dict) else {}
    report = (f'checkpoint {filename} does not fit the model{where}: {fit.describe()}.'
              f'{_arch_hint(meta or {}, config)}')
    if not allow_partial:
        raise CheckpointMismatchError(
            report + ' Pass --allow-partial (allow_partial=True) to load the tensors that fit '
            'anyway; the others keep their random initialisation.')
    (logger or _logger).warning(
        f'{report} --allow-partial: loading the {fit.num_loaded} tensors that fit; the others '
        'keep their random initialisation.')
    return fit


def load_checked_checkpoint(model: nn.Module, filename: str, config: Optional[str] = None,
                            allow_partial: bool = False,
                            logger: Optional[logging.Logger] = None) -> Any:
    """Read a checkpoint, :func:`check_checkpoint` it, and load the tensors that fit.

    Args:
        model: the model built from ``config``.
        filename: the checkpoint file.
        config: the config's path, named in the report. Defaults to None.
        allow_partial: load what fits (warning) instead of raising. Defaults to False.
        logger: where the warning goes. Defaults to this module's logger.

    Returns:
        The loaded checkpoint (``meta`` etc.).

    Raises:
        FileNotFoundError, CheckpointReadError, CheckpointMismatchError: see
            :func:`check_checkpoint`.
    """
    checkpoint = read_checkpoint(filename, map_location='cpu')
    fit = check_checkpoint(model, filename, config, allow_partial, checkpoint, logger)
    state_dict = upgraded_state_dict(model, checkpoint_state_dict(checkpoint, filename))
    for key, _, _ in fit.mismatched:
        del state_dict[key]
    model.load_state_dict(state_dict, strict=False)
    return checkpoint
