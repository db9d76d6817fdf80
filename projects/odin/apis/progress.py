"""A progress bar over views and stages of one ODIN forward, driven by forward hooks.

The model is not changed: :class:`ViewProgress` registers forward hooks on the modules that every
view passes once per forward (the backbone stages and the pixel decoder's deformable encoder, see
:func:`progress_modules`) and counts the views of each call (the batch dimension of its input).
The unchunked path calls each module once with every view (a few steps); the bounded path
(``model.test_cfg['view_chunk']``) calls them once per chunk of views (many steps).
"""
import sys
import time
from typing import IO, List, Optional, Tuple

from torch import Tensor, nn


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


def _batch_size(args: tuple, kwargs: dict) -> int:
    """Views in a call: the first dimension of its first tensor input (``query`` for encoders)."""
    for value in list(args) + [kwargs.get('query'), *kwargs.values()]:
        if isinstance(value, Tensor) and value.dim() > 0:
            return int(value.shape[0])
    return 0


class ViewProgress:
    """Context manager: a single-line progress bar of views × stages during a forward.

    Example::

        with ViewProgress(model, num_views=len(prepared.inputs['img'])):
            inference_recording(model, prepared)

    Attributes:
        num_views: views of the recording.
        stages: names of the followed modules (:func:`progress_modules`).
        calls: (S,) calls seen per followed module.
        views: (S,) views seen per followed module.

    Args:
        model: an ODIN detector.
        num_views: views of the sample that will be run.
        stream: where the bar is written. Defaults to ``sys.stderr``.
        enabled: draw the bar (the counters are kept either way). Defaults to True.
        min_interval: seconds between redraws. Defaults to 0.2.
        width: characters of the bar. Defaults to 30.
    """

    def __init__(self, model: nn.Module, num_views: int, stream: Optional[IO] = None,
                 enabled: bool = True, min_interval: float = 0.2, width: int = 30) -> None:
        if num_views < 1:
            raise ValueError(f'num_views must be >= 1, got {num_views}')
        self.model = model
        self.num_views = int(num_views)
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.min_interval = min_interval
        self.width = width
        self._mods = progress_modules(model)
        self.stages = [name for name, _ in self._mods]
        self.calls = [0] * len(self._mods)
        self.views = [0] * len(self._mods)
        self._handles: list = []
        self._start = 0.0
        self._last_draw = -1.0

    @property
    def total(self) -> int:
        """Views × stages of one forward (grows if a module is run more often)."""
        return max(self.num_views * len(self._mods), sum(self.views))

    @property
    def done(self) -> int:
        """Views × stages passed so far."""
        return sum(self.views)

    def __enter__(self) -> 'ViewProgress':
        self._start = time.monotonic()
        for i, (_, module) in enumerate(self._mods):
            self._handles.append(module.register_forward_hook(self._hook(i), with_kwargs=True))
        self._draw(force=True)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if self.enabled:
            self._draw(force=True)
            self.stream.write('\n')
            self.stream.flush()

    def _hook(self, index: int):
        def hook(module, args, kwargs, output):
            self.calls[index] += 1
            self.views[index] += _batch_size(args, kwargs)
            self._draw(stage=index)
        return hook

    def line(self, stage: Optional[int] = None) -> str:
        """The bar's text, e.g. ``ODIN  42% |####--| 336/800 view-stages res4 (3 calls) 12s``."""
        frac = self.done / self.total if self.total else 0.0
        filled = int(round(frac * self.width))
        bar = '#' * filled + '-' * (self.width - filled)
        where = ''
        if stage is not None:
            where = f' {self.stages[stage]} ({self.calls[stage]} calls)'
        return (f'ODIN {100 * frac:3.0f}% |{bar}| {self.done}/{self.total} view-stages'
                f'{where} {time.monotonic() - self._start:.0f}s')

    def _draw(self, stage: Optional[int] = None, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last_draw < self.min_interval:
            return
        self._last_draw = now
        self.stream.write('\r' + self.line(stage))
        self.stream.flush()


__all__ = ['ViewProgress', 'progress_modules']
