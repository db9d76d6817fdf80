"""How much memory a demo run will take, before it runs: a documented linear estimate.

Peak resident memory of ``demo/odin_demo.py`` (reading, preparation, model, inference) grows
linearly with the frame count:

    peak GB ≈ base_gb + frames × per_frame_mb / 1024 × (H × W) / (H_ref × W_ref)

with one (base, slope) pair per backbone family and inference path, the per-frame slope scaled by
the model input's pixel count. The pairs and the measurements they rest on are data, not code:
:data:`MEMORY_COSTS_FILE` (``memory_costs.yml`` next to this module) gives for each line the
command that measured it (``tools/analysis_tools/benchmark_long_scene.py`` for the bounded path),
the table of docs/demo.md ("Memory per frame") holding the measurements, and the measured points,
on or below the line. The estimate is used to refuse a run that would exceed
``--max-memory-gb`` with the largest frame count that fits, instead of letting the operating
system kill the process.
"""
import math
import os.path as osp
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

#: the measured lines of the estimate (YAML; see its header)
MEMORY_COSTS_FILE = osp.join(osp.dirname(osp.abspath(__file__)), 'memory_costs.yml')


@dataclass(frozen=True)
class MemoryCost:
    """Peak resident memory of a run as a line in the frame count.

    Attributes:
        base_gb: peak at zero frames (interpreter, libraries, weights, frame-independent work).
        per_frame_mb: extra peak per frame at ``ref_hw``.
        ref_hw: model input (H, W) of the slope.
        command: the command that measured the points.
        table: where the measurements are documented (docs/demo.md).
        measured: ((frames, peak GB), ...) measured at ``measured_hw``; the line lies on or above
            each.
        measured_hw: model input (H, W) of ``measured``.
        note: how the line relates to the measurements.
    """

    base_gb: float
    per_frame_mb: float
    ref_hw: Tuple[int, int]
    command: str = ''
    table: str = ''
    measured: Tuple[Tuple[int, float], ...] = ()
    measured_hw: Tuple[int, int] = (240, 320)
    note: str = ''

    @property
    def source(self) -> str:
        """Where the figures come from: the table and the command."""
        return f'{self.table}; measured with: {self.command}'

    def peak_gb(self, num_frames: int, image_size: Sequence[int]) -> float:
        """Estimated peak GB of ``num_frames`` frames at ``image_size`` (H, W)."""
        scale = image_size[0] * image_size[1] / (self.ref_hw[0] * self.ref_hw[1])
        return self.base_gb + num_frames * self.per_frame_mb / 1024 * scale


def load_memory_costs(path: str = MEMORY_COSTS_FILE) -> Dict[Tuple[str, str], MemoryCost]:
    """Read the measured lines: ``{(backbone family, path): MemoryCost}``.

    Args:
        path: a YAML file ``{family: {path: {base_gb, per_frame_mb, ref_hw, ...}}}``.

    Returns:
        One :class:`MemoryCost` per (family, path).

    Raises:
        ValueError: an entry without ``base_gb``, ``per_frame_mb`` or ``ref_hw``.
    """
    import yaml
    with open(path) as f:
        doc = yaml.safe_load(f)
    costs = {}
    for family, paths in doc.items():
        for kind, entry in paths.items():
            missing = {'base_gb', 'per_frame_mb', 'ref_hw'} - set(entry)
            if missing:
                raise ValueError(f'{path}: {family}/{kind} lacks {sorted(missing)}')
            costs[(family, kind)] = MemoryCost(
                base_gb=float(entry['base_gb']), per_frame_mb=float(entry['per_frame_mb']),
                ref_hw=tuple(entry['ref_hw']), command=entry.get('command', ''),
                table=entry.get('table', ''),
                measured=tuple((int(n), float(gb)) for n, gb in entry.get('measured', ())),
                measured_hw=tuple(entry.get('measured_hw', entry['ref_hw'])),
                note=entry.get('note', ''))
    return costs


#: (backbone family, path) -> cost. ``path`` is ``'unchunked'`` (``test_cfg.view_chunk`` unset
#: or 0) or ``'bounded'`` (``view_chunk`` > 0). Voxels grow with the scanned surface, so a larger
#: scene than the benchmark's room adds a scene-dependent term to the base.
MEMORY_COSTS = load_memory_costs()


class MemoryBudgetError(ValueError):
    """A run whose estimated peak memory exceeds the given budget (the message says what fits)."""


def backbone_family(cfg) -> str:
    """``'swin'`` for Swin backbones, ``'resnet'`` otherwise (the model's ``backbone.type``)."""
    try:
        kind = str(cfg.model.backbone.type)
    except (AttributeError, KeyError):
        kind = ''
    return 'swin' if 'swin' in kind.lower() else 'resnet'


def inference_path(view_chunk: Optional[int]) -> str:
    """``'bounded'`` when ``view_chunk`` > 0, else ``'unchunked'``."""
    return 'bounded' if view_chunk else 'unchunked'


def memory_cost(cfg, view_chunk: Optional[int] = None) -> MemoryCost:
    """The :data:`MEMORY_COSTS` entry of a config and inference path."""
    return MEMORY_COSTS[(backbone_family(cfg), inference_path(view_chunk))]


def estimate_peak_memory_gb(cfg, num_frames: int, image_size: Sequence[int],
                            view_chunk: Optional[int] = None) -> float:
    """Estimated peak resident memory (GB) of a demo run.

    Args:
        cfg: the model config (``mmengine.Config``).
        num_frames: frames of the recording (after stride and cap).
        image_size: model input (H, W).
        view_chunk: ``test_cfg.view_chunk`` of the run (None/0: the unchunked path).

    Returns:
        GB (2**30 bytes).
    """
    return memory_cost(cfg, view_chunk).peak_gb(num_frames, image_size)


def frames_within_budget(cfg, budget_gb: float, image_size: Sequence[int],
                         view_chunk: Optional[int] = None) -> int:
    """The largest frame count whose estimate is within ``budget_gb`` (0: not even one)."""
    cost = memory_cost(cfg, view_chunk)
    per_frame = cost.peak_gb(1, image_size) - cost.base_gb
    return max(0, int(math.floor((budget_gb - cost.base_gb) / per_frame + 1e-9)))


def check_memory_budget(cfg, num_frames: int, image_size: Sequence[int],
                        budget_gb: Optional[float], view_chunk: Optional[int] = None,
                        frame_stride: int = 1) -> float:
    """Refuse a run whose estimated peak memory exceeds ``budget_gb``.

    Args:
        cfg: the model config.
        num_frames: frames of the recording (after stride and cap).
        image_size: model input (H, W).
        budget_gb: the budget (``--max-memory-gb``); None checks nothing.
        view_chunk: ``test_cfg.view_chunk`` of the run.
        frame_stride: the stride that gave ``num_frames`` (the suggested stride includes it).

    Returns:
        The estimate (GB).

    Raises:
        MemoryBudgetError: the estimate exceeds the budget; the message gives the estimate and
            the largest frame count that fits (with the ``--max-frames`` / ``--frame-stride``
            to get there).
        ValueError: a budget that is not positive.
    """
    estimate = estimate_peak_memory_gb(cfg, num_frames, image_size, view_chunk)
    if budget_gb is None:
        return estimate
    if not budget_gb > 0:
        raise ValueError(f'--max-memory-gb must be positive, got {budget_gb}')
    if estimate <= budget_gb:
        return estimate
    fit = frames_within_budget(cfg, budget_gb, image_size, view_chunk)
    h, w = image_size[:2]
    what = (f'{num_frames} frames at {h}x{w} need ~{estimate:.1f} GB (estimated: '
            f'{backbone_family(cfg)} backbone, {inference_path(view_chunk)} path), more than '
            f'--max-memory-gb {budget_gb:g}')
    if fit < 1:
        base = memory_cost(cfg, view_chunk).base_gb
        raise MemoryBudgetError(f'{what}; not even one frame fits (the model alone needs '
                                f'~{base:.1f} GB)')
    stride = math.ceil(num_frames / fit) * frame_stride
    raise MemoryBudgetError(f'{what}; at most {fit} frames fit: use --max-frames {fit} (frames '
                            f'spread over the recording) or --frame-stride {stride}')


__all__ = ['MemoryCost', 'MEMORY_COSTS', 'MEMORY_COSTS_FILE', 'load_memory_costs',
           'MemoryBudgetError', 'backbone_family', 'inference_path', 'memory_cost',
           'estimate_peak_memory_gb', 'frames_within_budget', 'check_memory_budget']
