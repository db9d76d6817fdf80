"""Frame sources for :class:`projects.odin.apis.streaming.StreamingODIN`.

* :func:`recording_frames` replays any recording the demo reads (every layout of the recording
  readers, docs/demo.md) frame by frame;
* :func:`follow_folder` follows a recording folder that a capture program is still writing:
  frames are yielded as they appear, and the stream ends after ``idle_timeout`` seconds without a
  new frame;
* a Python generator needs no adapter: :meth:`StreamingODIN.run` takes any iterable of
  :class:`Frame`, dicts or tuples (:func:`projects.odin.apis.streaming.as_frame`);
* :func:`realsense_frames` reads an Intel RealSense camera when ``pyrealsense2`` is installed
  (optional; a clear error says so when it is not).
"""
import logging
import time
from typing import Callable, Iterator, Optional

import numpy as np

from projects.odin.datasets.recordings import RGBDFolderError, load_rgbd_folder

from .streaming import Frame

logger = logging.getLogger(__name__)


def recording_frames(path: str, layout: str = 'auto', depth_scale: Optional[float] = None,
                     frame_stride: int = 1, max_frames: Optional[int] = None,
                     intrinsics: Optional[str] = None) -> Iterator[Frame]:
    """Replay a recording as a stream, one frame at a time.

    The recording is indexed and validated by the demo's readers
    (:func:`projects.odin.datasets.recordings.load_rgbd_folder`) and every frame is read as the
    offline demo reads it (``RGBDSequence.load_frame``: colour registered to the depth size,
    depth in metres), so a stream and the offline demo see the same frames.

    Args:
        path: a recording folder, a ScanNet ``.sens`` file or a ``transforms.json``.
        layout: the layout or ``'auto'``. Defaults to ``'auto'``.
        depth_scale: raw depth units per metre (None: inferred). Defaults to None.
        frame_stride: keep every K-th frame. Defaults to 1.
        max_frames: at most this many frames spread over the recording. Defaults to None.
        intrinsics: a 3x3 / 4x4 depth intrinsics file overriding the recording's.

    Yields:
        :class:`Frame`, in recording order.

    Raises:
        RGBDFolderError: the recording cannot be used (raised before the first frame).
    """
    seq = load_rgbd_folder(path, layout=layout, depth_scale=depth_scale,
                           frame_stride=frame_stride, max_frames=max_frames,
                           intrinsics_file=intrinsics)
    for i in range(len(seq)):
        rgb, depth = seq.load_frame(i)
        yield Frame(rgb, depth, seq.intrinsics[i], seq.poses[i], str(seq.frame_ids[i]))


def follow_folder(path: str, layout: str = 'auto', depth_scale: Optional[float] = None,
                  intrinsics: Optional[str] = None, poll_s: float = 0.5,
                  idle_timeout: float = 10.0,
                  sleep: Callable[[float], None] = time.sleep,
                  clock: Callable[[], float] = time.monotonic) -> Iterator[Frame]:
    """Follow a recording folder that is still being written.

    Every ``poll_s`` seconds the folder is indexed again by its reader; frames not yielded yet
    are read and yielded in the reader's order. A folder that cannot be indexed yet (empty, or
    a frame whose pose or depth is not written yet, so that the counts disagree) and a frame that
    cannot be read yet are retried at the next poll. The stream ends when no new frame has come
    for ``idle_timeout`` seconds; if the last attempt failed, its error is raised then, so that a
    folder that never becomes readable is reported and not silently ignored.

    Args:
        path: the folder (a layout with one file per frame: scannet, tum, 7scenes, plain,
            nerfstudio, arkitscenes).
        layout: the layout or ``'auto'``. Defaults to ``'auto'``.
        depth_scale: raw depth units per metre (None: inferred from the first frame).
        intrinsics: a depth intrinsics file overriding the recording's.
        poll_s: seconds between two looks at the folder. Defaults to 0.5.
        idle_timeout: end the stream after this many seconds without a new frame. Defaults
            to 10.
        sleep: waits between polls (tests pass a fake). Defaults to ``time.sleep``.
        clock: monotonic clock. Defaults to ``time.monotonic``.

    Yields:
        :class:`Frame`, each frame once.

    Raises:
        RGBDFolderError: the folder is still unusable when the idle timeout expires.
        ValueError: ``poll_s`` or ``idle_timeout`` not positive.
    """
    if not poll_s > 0 or not idle_timeout > 0:
        raise ValueError(f'poll_s and idle_timeout must be > 0, got {poll_s} and {idle_timeout}')
    done = set()
    last_new = clock()
    while True:
        error = None
        try:
            seq = load_rgbd_folder(path, layout=layout, depth_scale=depth_scale,
                                   intrinsics_file=intrinsics)
        except RGBDFolderError as e:
            seq, error = None, e
        if seq is not None:
            for i in range(len(seq)):
                fid = str(seq.frame_ids[i])
                if fid in done:
                    continue
                try:
                    rgb, depth = seq.load_frame(i)
                except RGBDFolderError as e:  # still being written: retry at the next poll
                    error = e
                    break
                done.add(fid)
                last_new = clock()
                yield Frame(rgb, depth, seq.intrinsics[i], seq.poses[i], fid)
        if clock() - last_new >= idle_timeout:
            if error is not None:
                raise RGBDFolderError(f'{path}: no new frame for {idle_timeout:g} s and the '
                                      f'folder is still not usable: {error}')
            logger.info('follow_folder: no new frame in %s for %g s; %d frames', path,
                        idle_timeout, len(done))
            return
        sleep(poll_s)


def realsense_frames(pose_fn: Callable[[int, np.ndarray, np.ndarray], np.ndarray],
                     width: int = 640, height: int = 480, fps: int = 30,
                     max_frames: Optional[int] = None) -> Iterator[Frame]:
    """Frames of an Intel RealSense depth camera (optional dependency ``pyrealsense2``).

    Depth is aligned to the colour camera, so the intrinsics are the colour stream's. A
    RealSense depth camera measures no pose: ``pose_fn(index, rgb, depth)`` must return the
    camera-to-world 4x4 (OpenCV axes) of each frame, e.g. from a tracking camera or a SLAM
    system; a non-finite pose makes the stream skip the frame.

    Args:
        pose_fn: the pose of each frame.
        width: stream width. Defaults to 640.
        height: stream height. Defaults to 480.
        fps: frames per second. Defaults to 30.
        max_frames: stop after this many frames. Defaults to None (until interrupted).

    Returns:
        An iterator of :class:`Frame` (the camera starts at the first ``next``).

    Raises:
        ImportError: ``pyrealsense2`` is not installed.
        ValueError: ``pose_fn`` is not callable.
    """
    try:
        import pyrealsense2 as rs
    except ImportError as e:
        raise ImportError('reading a RealSense camera needs the optional package pyrealsense2 '
                          '(pip install pyrealsense2); record to a folder instead and replay it '
                          'with recording_frames / follow_folder') from e
    if not callable(pose_fn):
        raise ValueError('a RealSense depth camera gives no pose: pass pose_fn(index, rgb, '
                         'depth) -> 4x4 camera-to-world')
    return _realsense_iter(rs, pose_fn, width, height, fps, max_frames)


def _realsense_iter(rs, pose_fn, width: int, height: int, fps: int,
                    max_frames: Optional[int]) -> Iterator[Frame]:
    pipeline = rs.pipeline()
    config = rs.config()
    config.enable_stream(rs.stream.depth, width, height, rs.format.z16, fps)
    config.enable_stream(rs.stream.color, width, height, rs.format.rgb8, fps)
    profile = pipeline.start(config)
    try:
        scale = profile.get_device().first_depth_sensor().get_depth_scale()  # metres per unit
        align = rs.align(rs.stream.color)
        index = 0
        while max_frames is None or index < max_frames:
            frames = align.process(pipeline.wait_for_frames())
            depth_frame, color_frame = frames.get_depth_frame(), frames.get_color_frame()
            if not depth_frame or not color_frame:
                continue
            intr = color_frame.profile.as_video_stream_profile().get_intrinsics()
            k = np.array([[intr.fx, 0, intr.ppx], [0, intr.fy, intr.ppy], [0, 0, 1]])
            rgb = np.asanyarray(color_frame.get_data()).copy()
            depth = np.asanyarray(depth_frame.get_data()).astype(np.float32) * np.float32(scale)
            yield Frame(rgb, depth, k, np.asarray(pose_fn(index, rgb, depth), np.float64),
                        str(index))
            index += 1
    finally:
        pipeline.stop()


__all__ = ['recording_frames', 'follow_folder', 'realsense_frames']
