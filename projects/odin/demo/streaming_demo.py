"""The streaming demo (``demo/odin_demo.py ... --stream``): a recording replayed as a stream.

:func:`run_streaming_demo` replays a recording (or follows a folder being written) through
:class:`projects.odin.apis.streaming.StreamingODIN`, prints one line per update and writes to
``out_dir``:

* ``stream.json`` -- the streaming parameters and ``updates``: per update ``frames_seen``,
  ``latency_s``, ``instances``, ``map_voxels``, ``peak_rss_gb`` (and the other fields of
  :class:`projects.odin.apis.streaming.UpdateStats`), plus the final instance list;
* ``<scene>_stream.ply`` -- the final map (voxel centres), coloured by instance, with
  ``instance`` / ``label`` vertex properties;
* ``<scene>_stream_instances.json`` -- one record per map instance;
* with ``save_every_update``: ``updates/<n>.ply``, the map after every update.
"""
import json
import os
import os.path as osp
from typing import Callable, Optional, Sequence, Tuple

from projects.odin.apis.streaming import StreamError, StreamingConfig, StreamingODIN
from projects.odin.datasets.recordings import RGBDFolderError

from .recording_demo import DEFAULT_VIEW_CHUNK, DemoError


def write_map_ply(path: str, stream: StreamingODIN, min_voxels: int = 1) -> int:
    """Write the stream's map as an instance-coloured PLY; returns the instances listed."""
    from projects.odin.visualization import write_instance_ply
    xyz, rgb, inst, label, listed = stream.export(min_voxels)
    write_instance_ply(path, xyz, inst, rgb=rgb, labels=label)
    return len(listed)


def run_streaming_demo(folder: str, config: str, checkpoint: str, out_dir: str, *,
                       update_every: int = 10, window: int = 20, keyframes: int = 10,
                       map_voxel_size: float = 0.05, save_every_update: bool = False,
                       follow: bool = False, idle_timeout: float = 10.0,
                       device: str = 'cpu', layout: str = 'auto',
                       depth_scale: Optional[float] = None, frame_stride: int = 1,
                       max_frames: Optional[int] = None, intrinsics: Optional[str] = None,
                       image_size: Optional[Tuple[int, int]] = None,
                       max_depth: Optional[float] = None, score_thr: float = 0.3,
                       min_points: int = 50, classes: Optional[Sequence[str]] = None,
                       allow_partial: bool = False, cfg_options: Optional[dict] = None,
                       view_chunk: Optional[int] = None,
                       log: Callable[[str], None] = print) -> dict:
    """Replay a recording as a stream through :class:`StreamingODIN` and write its map.

    Args:
        folder: recording folder, ``.sens`` file or ``transforms.json``.
        config: model config file.
        checkpoint: checkpoint.
        out_dir: output folder.
        update_every: run the model every K frames. Defaults to 10.
        window: most recent frames per update. Defaults to 20.
        keyframes: older frames kept for coverage. Defaults to 10.
        map_voxel_size: voxel size of the map (metres). Defaults to 0.05.
        save_every_update: also write the map after every update. Defaults to False.
        follow: the folder is still being written: poll it for new frames and stop after
            ``idle_timeout`` seconds without one. Defaults to False.
        idle_timeout: see ``follow``. Defaults to 10.
        device: 'cpu' or 'cuda[:N]'.
        layout: recording layout or 'auto'.
        depth_scale: raw depth units per metre (None: inferred).
        frame_stride: keep every K-th frame (replay only).
        max_frames: at most this many frames.
        intrinsics: depth intrinsics file.
        image_size: model input (H, W) (None: the config's test size of the first frame).
        max_depth: depth beyond this (m) is ignored.
        score_thr: window instances below this score are not merged.
        min_points: window instances with fewer points are not merged.
        classes: as the offline demo's ``--classes``.
        allow_partial: run with a checkpoint that does not fit the config.
        cfg_options: config overrides.
        view_chunk: views per chunk of the bounded path (None: the config's, else
            :data:`projects.odin.demo.DEFAULT_VIEW_CHUNK`).
        log: where the lines go. Defaults to ``print``.

    Returns:
        dict: the content of ``stream.json`` plus ``ply_path`` and ``json_path``.

    Raises:
        DemoError: an unusable recording, config, checkpoint, frame or parameter.
    """
    from mmengine.config import Config

    from projects.odin.apis.inference import init_odin_model, set_vocabulary
    from projects.odin.apis.stream_sources import follow_folder, recording_frames
    from projects.odin.visualization import write_instances_json
    for path, what in ((config, 'config'), (checkpoint, 'checkpoint')):
        if not osp.isfile(path):
            raise DemoError(f'{what} not found: {path}')
    if view_chunk is not None and view_chunk < 0:
        raise DemoError(f'--view-chunk must be >= 0 (0 = unchunked), got {view_chunk}')
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    chunk = view_chunk if view_chunk is not None else (
        cfg.model.get('test_cfg', {}).get('view_chunk') or DEFAULT_VIEW_CHUNK)
    try:
        params = StreamingConfig(
            update_every=update_every, window=window, keyframes=keyframes,
            voxel_size=map_voxel_size, image_size=None if image_size is None else
            tuple(image_size), max_depth=max_depth, view_chunk=chunk, score_thr=score_thr,
            min_points=min_points, name=osp.basename(osp.normpath(folder)) or 'stream')
    except StreamError as e:
        raise DemoError(str(e)) from None
    try:
        if follow:
            frames = follow_folder(folder, layout=layout, depth_scale=depth_scale,
                                   intrinsics=intrinsics, idle_timeout=idle_timeout)
        else:
            frames = recording_frames(folder, layout=layout, depth_scale=depth_scale,
                                      frame_stride=frame_stride, max_frames=max_frames,
                                      intrinsics=intrinsics)
            frames = _first_checked(frames)  # the recording is validated before the model
    except RGBDFolderError as e:
        raise DemoError(str(e)) from None
    try:
        model = init_odin_model(cfg, checkpoint, device=device, sensor_points=True,
                                allow_partial=allow_partial)
        names = set_vocabulary(model, classes)
    except (FileNotFoundError, ValueError) as e:
        raise DemoError(str(e)) from None
    os.makedirs(out_dir, exist_ok=True)
    scene = params.name
    if save_every_update:
        os.makedirs(osp.join(out_dir, 'updates'), exist_ok=True)

    def on_update(stats) -> None:
        log(stats.line())
        if save_every_update:
            write_map_ply(osp.join(out_dir, 'updates', f'{stats.update + 1:04d}.ply'), stream)

    stream = StreamingODIN(model, params, on_update=on_update)
    log(f'streaming: update every {update_every} frames, window {window} + up to {keyframes} '
        f'keyframes, map voxel {map_voxel_size:g} m, view chunk {chunk or "off"}')
    try:
        stream.run(frames, max_frames=max_frames if follow else None)
    except (RGBDFolderError, StreamError) as e:
        raise DemoError(str(e)) from None
    if not stream.updates:
        raise DemoError(f'{folder}: the stream held no usable frame')
    ply_path = osp.join(out_dir, f'{scene}_stream.ply')
    write_map_ply(ply_path, stream)
    records = stream.instance_records(names)
    display = list(names) if names else [
        str(i) for i in range(max([r['label'] for r in records], default=-1) + 1)]
    json_path = osp.join(out_dir, f'{scene}_stream_instances.json')
    write_instances_json(json_path, [r['label'] for r in records], [r['score'] for r in records],
                         [r['voxels'] for r in records], display,
                         extra=dict(scene=scene, folder=osp.abspath(folder), units='voxels',
                                    voxel_size=map_voxel_size))
    summary = dict(
        scene=scene, folder=osp.abspath(folder), frames=stream.frames_seen,
        skipped=stream.skipped, config=dict(vars(params)), class_names=names,
        updates=[u.to_dict() for u in stream.updates], instances=records,
        retired=list(stream.retired), merged=[list(p) for p in stream.merged])
    with open(osp.join(out_dir, 'stream.json'), 'w') as f:
        json.dump(summary, f, indent=1)
    log(f'{len(records)} instances, {len(stream.map)} voxels after {stream.frames_seen} frames '
        f'and {len(stream.updates)} updates → {ply_path}, {osp.join(out_dir, "stream.json")}')
    return dict(summary, ply_path=ply_path, json_path=json_path)


def _first_checked(frames):
    """Read the first frame now (so that an unusable recording fails before the model loads)."""
    import itertools
    try:
        first = next(frames)
    except StopIteration:
        return iter(())
    return itertools.chain([first], frames)


__all__ = ['run_streaming_demo', 'write_map_ply']
