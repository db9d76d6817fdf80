"""The demo as library functions: a posed RGB-D recording -> 3D instances written to a folder.

``demo/odin_demo.py`` is a command line over :func:`run_recording_demo`;
:func:`projects.odin.demo.synthetic_demo.run_demo` (``make demo``) calls it directly. Outputs in
``out_dir``: ``<scene>_instances.ply`` (the fused cloud coloured by instance, with
``instance``/``label`` fields), ``views/<frame>.png`` (per-view overlays) and
``<scene>_instances.json`` (one record per instance).

Every frame of the recording is used unless ``max_frames`` / ``frame_stride`` thin it (a speed
option). The model runs its bounded-memory path (``model.test_cfg.view_chunk``, default
:data:`DEFAULT_VIEW_CHUNK` views per chunk), a progress bar follows the views through the
backbone stages and the pixel decoder (:class:`projects.odin.demo.progress.ViewProgress`), and
``max_memory_gb`` refuses, before anything heavy runs, a recording whose estimated peak memory
(:mod:`projects.odin.demo.memory`) exceeds the budget, naming the frame count that fits.
"""
import os
import os.path as osp
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple

import numpy as np

from projects.odin.apis.export import (
    flatten_instances,
    overlay_instances,
    write_instance_ply,
    write_instances_json,
)
from projects.odin.datasets.recordings import RGBDFolderError, RGBDSequence, load_rgbd_folder

from .memory import check_memory_budget
from .progress import ViewProgress

#: views per chunk of the bounded-memory inference path the demo uses unless the config (or
#: ``--cfg-options model.test_cfg.view_chunk=N``) sets one; 0 = the unchunked path.
DEFAULT_VIEW_CHUNK = 8


class DemoError(Exception):
    """A problem of the user's input (recording, config, checkpoint, vocabulary).

    The command line prints :meth:`cli_line` to stderr and exits with status 2.

    Attributes:
        after_progress: the error interrupted a progress bar (the CLI starts a new line).
    """

    def __init__(self, message: str, after_progress: bool = False) -> None:
        super().__init__(message)
        self.after_progress = after_progress

    def cli_line(self) -> str:
        """``error: <message>`` (after a newline when it interrupted a progress bar)."""
        return ('\n' if self.after_progress else '') + f'error: {self}'


@dataclass
class DemoResult:
    """What :func:`run_recording_demo` wrote.

    Attributes:
        ply_path: the instance-coloured point cloud.
        json_path: the instance records.
        views_dir: the folder of per-view overlays.
        num_instances: instances written.
    """

    ply_path: str
    json_path: str
    views_dir: str
    num_instances: int


def open_recording(folder: str, layout: str = 'auto', depth_scale: Optional[float] = None,
                   frame_stride: int = 1, max_frames: Optional[int] = None,
                   intrinsics: Optional[str] = None,
                   log: Callable[[str], None] = print) -> RGBDSequence:
    """Read and validate a recording and log its summary line.

    ``max_frames`` None keeps every frame (after ``frame_stride``).

    Raises:
        DemoError: the recording cannot be read (the reader's message).
    """
    try:
        seq = load_rgbd_folder(folder, layout=layout, depth_scale=depth_scale,
                               frame_stride=frame_stride, max_frames=max_frames,
                               intrinsics_file=intrinsics)
    except RGBDFolderError as e:
        raise DemoError(str(e)) from None
    log(f'{seq.layout} recording: {len(seq)} frames ({len(seq.skipped)} skipped), '
        f'depth {seq.depth_hw[1]}x{seq.depth_hw[0]}, {seq.depth_units}')
    return seq


def write_demo_outputs(out_dir: str, folder: str, seq: RGBDSequence, prepared, pred_pts_seg,
                       classes: Optional[Sequence[str]], score_thr: float = 0.3,
                       min_points: int = 50) -> DemoResult:
    """Write the PLY, the per-view overlays and the JSON of one recording's predictions.

    One instance per point (the highest score wins); instances left with fewer than
    ``min_points`` points are dropped, so the PLY's instance ids and the JSON's records are the
    same set.

    Args:
        out_dir: output folder (created).
        folder: the recording (its absolute path goes into the JSON).
        seq: the recording.
        prepared: its :class:`projects.odin.apis.inference.PreparedRecording`.
        pred_pts_seg: the model's predictions on ``prepared``'s points.
        classes: class names by label (None: the label numbers).
        score_thr: minimum score of an instance.
        min_points: minimum instance size.

    Returns:
        The written files.
    """
    import cv2

    from projects.odin.apis.inference import select_instances
    masks, labels, scores = select_instances(pred_pts_seg, score_thr, min_points)
    inst_ids, labels, scores, counts = flatten_instances(masks, labels, scores, min_points)
    if not classes:
        classes = [str(i) for i in range(int(labels.max(initial=0)) + 1)]
    scene = prepared.metainfo['scene_id']
    views_dir = osp.join(out_dir, 'views')
    os.makedirs(views_dir, exist_ok=True)
    points = prepared.inputs['points'].numpy()
    ply_path = osp.join(out_dir, f'{scene}_instances.ply')
    point_labels = np.full(len(inst_ids), -1, np.int64)
    point_labels[inst_ids >= 0] = labels[inst_ids[inst_ids >= 0]]
    write_instance_ply(ply_path, points[:, :3], inst_ids,
                       rgb=(points[:, 3:6] * 255).round().astype(np.uint8), labels=point_labels)
    for v, frame_id in enumerate(seq.frame_ids):
        p2p = prepared.pixel_to_point[v]
        view_ids = np.where(p2p >= 0, inst_ids[np.maximum(p2p, 0)], -1)
        overlay = overlay_instances(prepared.images[v], view_ids)
        cv2.imwrite(osp.join(views_dir, f'{frame_id}.png'), overlay[:, :, ::-1])
    json_path = osp.join(out_dir, f'{scene}_instances.json')
    write_instances_json(json_path, labels, scores, counts, classes,
                         extra=dict(scene=scene, folder=osp.abspath(folder),
                                    num_points=int(len(points)), num_views=len(seq),
                                    score_thr=score_thr))
    return DemoResult(ply_path, json_path, views_dir, len(scores))


def run_recording_demo(folder: str, config: str, checkpoint: str, out_dir: str, *,
                       max_frames: Optional[int] = None, device: str = 'cpu',
                       layout: str = 'auto', depth_scale: Optional[float] = None,
                       frame_stride: int = 1, intrinsics: Optional[str] = None,
                       image_size: Optional[Tuple[int, int]] = None,
                       max_depth: Optional[float] = None, score_thr: float = 0.3,
                       min_points: int = 50, classes: Optional[Sequence[str]] = None,
                       allow_partial: bool = False, cfg_options: Optional[dict] = None,
                       view_chunk: Optional[int] = None,
                       max_memory_gb: Optional[float] = None, progress: bool = True,
                       log: Callable[[str], None] = print) -> DemoResult:
    """Run ODIN (sensor-point mode) on a recording and write its instances to ``out_dir``.

    Every frame is read and checked before the model is built. The arguments are those of
    ``demo/odin_demo.py`` (see its ``--help`` and docs/demo.md).

    Args:
        folder: recording folder, ScanNet ``.sens`` file or ``transforms.json``.
        config: model config file.
        checkpoint: checkpoint (ours, or converted official weights).
        out_dir: output folder.
        max_frames: keep at most this many frames, spread uniformly over the recording (a
            speed option). Defaults to None (every frame).
        device: 'cpu' or 'cuda[:N]'.
        layout: recording layout or 'auto'.
        depth_scale: raw depth units per metre (None: inferred).
        frame_stride: keep every K-th frame.
        intrinsics: 3x3/4x4 depth intrinsics file.
        image_size: model input (H, W) (None: the config's test size, else 240x320).
        max_depth: depth beyond this (m) is ignored.
        score_thr: minimum score of an instance.
        min_points: minimum instance size.
        classes: open-vocabulary model: names to find; closed-set: new names of its classes.
        allow_partial: run with a checkpoint that does not fit the config.
        cfg_options: config overrides.
        view_chunk: views per chunk of the bounded-memory path (``model.test_cfg.view_chunk``;
            0 = unchunked). Defaults to None: the config's, else :data:`DEFAULT_VIEW_CHUNK`.
        max_memory_gb: refuse the run when its estimated peak memory exceeds this (GB).
            Defaults to None (no check).
        progress: progress bars on stderr (reading frames, views through the model).
            Defaults to True.
        log: where progress lines go. Defaults to ``print``.

    Returns:
        The written files.

    Raises:
        DemoError: unusable recording, config, checkpoint or vocabulary, a negative
            ``view_chunk`` or a run whose estimated memory exceeds ``max_memory_gb``.
    """
    if view_chunk is not None and view_chunk < 0:
        raise DemoError(f'--view-chunk must be >= 0 (0 = unchunked), got {view_chunk}')
    seq = open_recording(folder, layout, depth_scale, frame_stride, max_frames, intrinsics, log)
    from mmengine.config import Config

    from projects.odin.apis.inference import (
        demo_image_size,
        inference_recording,
        init_odin_model,
        prepare_recording,
        set_vocabulary,
    )
    for path, what in ((config, 'config'), (checkpoint, 'checkpoint')):
        if not osp.isfile(path):
            raise DemoError(f'{what} not found: {path}')
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    image_size = tuple(image_size) if image_size else demo_image_size(cfg, seq)
    log(f'input size {image_size[0]}x{image_size[1]}')
    test_cfg = cfg.model.setdefault('test_cfg', {})
    if view_chunk is not None:
        test_cfg['view_chunk'] = view_chunk
    elif test_cfg.get('view_chunk') is None:
        test_cfg['view_chunk'] = DEFAULT_VIEW_CHUNK
    try:
        estimate = check_memory_budget(cfg, len(seq), image_size, max_memory_gb,
                                       test_cfg['view_chunk'], frame_stride)
    except ValueError as e:  # MemoryBudgetError, or a budget that is not positive
        raise DemoError(str(e)) from None
    log(f'view chunk {test_cfg["view_chunk"] or "off (unchunked)"}, estimated peak memory '
        f'~{estimate:.1f} GB' + (f' (budget {max_memory_gb:g} GB)' if max_memory_gb else ''))
    try:
        prepared = prepare_recording(seq, image_size=image_size, max_depth=max_depth,
                                     progress=progress, cfg=cfg)
    except (RGBDFolderError, ValueError) as e:  # unreadable frames, no valid depth at all
        raise DemoError(str(e), after_progress=True) from None
    try:
        # a missing model file (e.g. the RoBERTa folder of an open-vocabulary model), a checkpoint
        # that is unreadable or does not fit the config (CheckpointError is a ValueError) or a
        # vocabulary the model cannot take
        model = init_odin_model(cfg, checkpoint, device=device, sensor_points=True,
                                allow_partial=allow_partial)
        names = set_vocabulary(model, classes)
    except (FileNotFoundError, ValueError) as e:
        raise DemoError(str(e)) from None
    with ViewProgress(model, len(seq), enabled=progress):
        result = inference_recording(model, prepared)
    out = write_demo_outputs(out_dir, folder, seq, prepared, result.pred_pts_seg, names,
                             score_thr, min_points)
    log(f'{out.num_instances} instances → {out.ply_path}, {out.json_path}, '
        f'{len(seq)} overlays in {out.views_dir}')
    return out


__all__ = ['DEFAULT_VIEW_CHUNK', 'DemoError', 'DemoResult', 'open_recording', 'run_recording_demo',
           'write_demo_outputs']
