"""A progress bar over views and stages of one ODIN forward, driven by forward hooks.

The model is not changed: :class:`ViewProgress` registers forward hooks on the modules that every
view passes once per forward (the backbone stages and the pixel decoder's deformable encoder, see
:func:`progress_modules`) and counts the views of each call (the batch dimension of its input).
The unchunked path calls each module once with every view (a few steps); the bounded path
(``model.test_cfg['view_chunk']``) calls them once per chunk of views (many steps). The bar's
total is fixed before the forward from the model's configuration (:func:`view_passes`), so its
percentage never runs ahead of the work; the bar is a ``tqdm`` bar.
"""
import logging
from typing import IO, List, Optional, Tuple

from torch import Tensor, nn

logger = logging.getLogger(__name__)


def progress_modules(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """The modules every view passes once per forward, in execution order.

    ResNet backbones: ``backbone.layer1..layer4`` (``res_layers``); Swin: the last block of
    ``backbone.stages[i]``;
    then ``decode_head.pixel_decoder.encoder`` when the head has one.

    Args:
        model: an ODIN detector.

    Returns:
        list of (name, module).

    Raises:
        ValueError: the model has no backbone stage to follow.
    """
    mods: List[Tuple[str, nn.Module]] = []
    backbone = getattr(model, 'backbone', None)
    if backbone is not None and getattr(backbone, 'res_layers', None):
        mods += [(f'res{i + 2}', getattr(backbone, name))
                 for i, name in enumerate(backbone.res_layers)]
    elif backbone is not None and isinstance(getattr(backbone, 'stages', None), nn.ModuleList):
        # ODIN's Swin runs a stage's blocks and its patch merging as separate steps (the fusion
        # block sits between them), so the stage's last block is what every view passes once
        mods += [(f'stage{i + 1}', stage.blocks[-1] if len(getattr(stage, 'blocks', ())) else
                  stage) for i, stage in enumerate(backbone.stages)]
    if not mods:
        raise ValueError(f'{type(model).__name__}: no backbone stages (res_layers or stages) to '
                         'follow for a progress bar')
    pixel_decoder = getattr(getattr(model, 'decode_head', None), 'pixel_decoder', None)
    encoder = getattr(pixel_decoder, 'encoder', None)
    if isinstance(encoder, nn.Module):
        mods.append(('encoder', encoder))
    return mods


def view_passes(model: nn.Module) -> List[int]:
    """How often every view passes each module of :func:`progress_modules` in one 3D predict.

    Once, except the first backbone stage in the bounded path (``test_cfg.view_chunk`` > 0)
    with sensor prediction points (``prediction_points=dict(type='SensorPointsBuilder')``, the
    demo's): there the multi-view encoder recomputes res2 per chunk for the mask features
    (``Res2Features.pool_map``) instead of keeping it for all views, so it runs twice.

    Args:
        model: an ODIN detector.

    Returns:
        list[int]: passes per followed module, in :func:`progress_modules` order.
    """
    from projects.odin.models.prediction_points import SensorPointsBuilder
    passes = [1] * len(progress_modules(model))
    test_cfg = getattr(model, 'test_cfg', None) or {}
    sensor = isinstance(getattr(model, 'prediction_points', None), SensorPointsBuilder)
    if int(test_cfg.get('view_chunk') or 0) > 0 and sensor:
        passes[0] = 2
    return passes


def _batch_size(args: tuple, kwargs: dict) -> int:
    """Views in a call: the first dimension of its first tensor input (``query`` for encoders)."""
    for value in list(args) + [kwargs.get('query'), *kwargs.values()]:
        if isinstance(value, Tensor) and value.dim() > 0:
            return int(value.shape[0])
    return 0


class ViewProgress:
    """Context manager: a ``tqdm`` bar of views × stages during one forward.

    The total is fixed up front: ``num_views`` × the passes of :func:`view_passes` summed over
    the followed modules. Should the forward pass the modules more often than planned, the bar
    stops at 100 % (a warning is logged) rather than growing its total or exceeding 100 %.

    Example::

        with ViewProgress(model, num_views=len(prepared.inputs['img'])):
            inference_recording(model, prepared)

    Attributes:
        num_views: views of the recording.
        stages: names of the followed modules (:func:`progress_modules`).
        passes: (S,) planned passes of every view through each followed module.
        total: views × stages of one forward (fixed).
        calls: (S,) calls seen per followed module.
        views: (S,) views seen per followed module.

    Args:
        model: an ODIN detector.
        num_views: views of the sample that will be run.
        stream: where the bar is written. Defaults to ``sys.stderr`` (tqdm's default).
        enabled: draw the bar (the counters are kept either way). Defaults to True.
        min_interval: least seconds between redraws. Defaults to 0.2.
        passes: planned passes per followed module. Defaults to None: :func:`view_passes`.
    """

    def __init__(self, model: nn.Module, num_views: int, stream: Optional[IO] = None,
                 enabled: bool = True, min_interval: float = 0.2,
                 passes: Optional[List[int]] = None) -> None:
        if num_views < 1:
            raise ValueError(f'num_views must be >= 1, got {num_views}')
        self.model = model
        self.num_views = int(num_views)
        self.stream = stream
        self.enabled = enabled
        self.min_interval = min_interval
        self._mods = progress_modules(model)
        self.stages = [name for name, _ in self._mods]
        self.passes = list(passes) if passes is not None else view_passes(model)
        if len(self.passes) != len(self._mods) or min(self.passes) < 1:
            raise ValueError(f'passes must hold one count >= 1 per followed module '
                             f'{self.stages}, got {self.passes}')
        self.total = self.num_views * sum(self.passes)
        self.calls = [0] * len(self._mods)
        self.views = [0] * len(self._mods)
        self._handles: list = []
        self._bar = None
        self._warned = False

    @property
    def done(self) -> int:
        """Views × stages passed so far (may exceed :attr:`total` only if the plan was wrong)."""
        return sum(self.views)

    def __enter__(self) -> 'ViewProgress':
        from tqdm import tqdm
        self._bar = tqdm(total=self.total, desc='ODIN', unit='view-stage', file=self.stream,
                         disable=not self.enabled, mininterval=self.min_interval, miniters=1,
                         leave=True)
        for i, (_, module) in enumerate(self._mods):
            self._handles.append(module.register_forward_hook(self._hook(i), with_kwargs=True))
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _hook(self, index: int):
        def hook(module, args, kwargs, output):
            n = _batch_size(args, kwargs)
            self.calls[index] += 1
            self.views[index] += n
            if self.done > self.total and not self._warned:
                self._warned = True
                logger.warning('progress: the forward passed %s more often than planned '
                               '(%s passes per view); the bar stops at 100%%',
                               self.stages[index], self.passes)
            bar = self._bar
            if bar is not None:
                bar.set_postfix_str(f'{self.stages[index]} ({self.calls[index]} calls)',
                                    refresh=False)
                bar.update(max(0, min(n, self.total - bar.n)))
        return hook


__all__ = ['ViewProgress', 'progress_modules', 'view_passes']
