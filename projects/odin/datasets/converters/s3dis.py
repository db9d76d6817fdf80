"""S3DIS converter: 2D-3D-S RGB-D frames + S3DIS room points -> ODIN data (Area 5 = val).

Input::

    RAW/2D-3D-S/area_<a>/data/rgb/camera_<id>_<room>_frame_<n>_domain_rgb.png
    RAW/2D-3D-S/area_<a>/data/depth/camera_<id>_<room>_frame_<n>_domain_depth.png
        (uint16, 1/512 m per unit, 65535 = no measurement)
    RAW/2D-3D-S/area_<a>/data/pose/camera_<id>_<room>_frame_<n>_domain_pose.json
        (``camera_k_matrix`` 3x3, ``camera_rt_matrix`` 3x4 world-to-camera)
    RAW/Stanford3dDataset_v1.2/Area_<k>/<room>/Annotations/<class>_<i>.txt  (x y z r g b lines)

``area_5a`` / ``area_5b`` of 2D-3D-S both belong to ``Area_5``. The room points must be in the
coordinate frame of the camera poses: use the S3DIS v1.2 release (not the "Aligned_Version",
whose rooms are rotated). Scene id ``Area_<k>_<room>``.

Output: ``frames/<scene>/{color,depth,pose,intrinsic}/<frame>`` (with ``inpaint``, also
``depth_inpainted/<frame>.png``: the written depth with its holes filled, OpenCV Telea, radius 5 —
the official S3DIS recipes read inpainted depth), ``points/<scene>.bin`` (x y z r g b
float32), ``semantic_mask/<scene>.bin`` (int64 class id 1..13 of
:data:`projects.odin.class_names.S3DIS_CLASSES`, stairs -> clutter, 0 = unknown),
``instance_mask/<scene>.bin`` (int64 annotation-file index, -1 = none), ``s3dis_infos_<split>.pkl``.
No superpoints (the official model uses one segment per point on S3DIS).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from ...class_names import S3DIS_CLASSES
from .common import SceneJob, SceneResult, SceneSkip, logger, run_conversion, write_bin
from .frames import (
    FrameDrop,
    check_frame,
    new_drop_counter,
    read_color,
    read_depth_raw,
    record_drop,
    resize_frame,
    write_frame,
)

_FRAME_RE = re.compile(r'^camera_(?P<cam>[0-9A-Za-z]+)_(?P<room>.+)_frame_(?P<n>\d+)_domain_'
                       r'(?P<dom>rgb|depth|pose)\.(png|json)$')
S3DIS_DEPTH_UNIT = 512.0  # depth value / 512 = metres
S3DIS_DEPTH_INVALID = 65535


def _area_of(folder: str) -> Optional[int]:
    m = re.match(r'^area_(\d)[a-z]?$', folder, re.IGNORECASE)
    return int(m.group(1)) if m else None


def read_room_points(room_dir: Path) -> Tuple[np.ndarray, np.ndarray, np.ndarray, List[str]]:
    """Read a room's ``Annotations/*.txt``.

    Returns:
        tuple: points (N, 6) float32, semantic (N,) int64 (1..13), instance (N,) int64, notes.
    """
    ann = room_dir / 'Annotations'
    if not ann.is_dir():
        raise SceneSkip(f'{ann}: Annotations folder missing')
    names = {n: i + 1 for i, n in enumerate(S3DIS_CLASSES)}
    pts, sem, inst, notes = [], [], [], []
    for k, f in enumerate(sorted(p for p in ann.iterdir() if p.suffix == '.txt')):
        cls = f.stem.rsplit('_', 1)[0]
        cls = 'clutter' if cls == 'stairs' else cls
        if cls not in names:
            notes.append(f'{f.name}: unknown class {cls!r}; points kept unannotated')
        arr, bad = _parse_xyzrgb(f)
        if bad:
            notes.append(f'{f}: skipped {bad} malformed line(s)')
        pts.append(arr)
        sem.append(np.full(len(arr), names.get(cls, 0), np.int64))
        inst.append(np.full(len(arr), k if cls in names else -1, np.int64))
    if not pts or sum(len(p) for p in pts) == 0:
        raise SceneSkip(f'{ann}: no annotated points')
    return (np.concatenate(pts).astype(np.float32), np.concatenate(sem), np.concatenate(inst),
            notes)


def _parse_xyzrgb(path: Path) -> Tuple[np.ndarray, int]:
    """Parse ``x y z r g b`` lines; malformed lines (a known S3DIS defect) are skipped."""
    text = path.read_bytes().decode('ascii', errors='replace')
    try:
        arr = np.loadtxt(text.splitlines(), dtype=np.float64, ndmin=2)
        if arr.shape[1] == 6:
            return arr, 0
    except ValueError:
        pass
    rows, bad = [], 0
    for line in text.splitlines():
        parts = line.split()
        try:
            vals = [float(x) for x in parts]
        except ValueError:
            vals = []
        if len(vals) == 6:
            rows.append(vals)
        elif parts:
            bad += 1
    return np.asarray(rows, np.float64).reshape(-1, 6), bad


def collect_frames(root: Path) -> Dict[str, List[dict]]:
    """Group 2D-3D-S frames by scene id ``Area_<k>_<room>`` (keyed by their rgb files)."""
    base = root / '2D-3D-S'
    if not base.is_dir():
        raise FileNotFoundError(f'{base}: 2D-3D-S folder not found')
    scenes: Dict[str, List[dict]] = {}
    for area_dir in sorted(base.iterdir()):
        area = _area_of(area_dir.name)
        rgb_dir = area_dir / 'data' / 'rgb'
        if area is None or not rgb_dir.is_dir():
            continue
        for f in sorted(os.listdir(rgb_dir)):
            m = _FRAME_RE.match(f)
            if not m or m.group('dom') != 'rgb':
                continue
            stem = f[:-len('rgb.png')]
            scene = f'Area_{area}_{m.group("room")}'
            scenes.setdefault(scene, []).append(dict(
                fid=f'{m.group("cam")[:8]}_{int(m.group("n")):04d}',
                color=str(rgb_dir / f),
                depth=str(area_dir / 'data' / 'depth' / f'{stem}depth.png'),
                pose=str(area_dir / 'data' / 'pose' / f'{stem}pose.json')))
    return scenes


def _read_pose(path: str) -> Tuple[np.ndarray, np.ndarray]:
    if not os.path.isfile(path):
        raise FrameDrop('missing_file', f'{path}: pose file missing')
    try:
        with open(path, encoding='utf-8') as fh:
            data = json.load(fh)
        k = np.asarray(data['camera_k_matrix'], np.float64).reshape(3, 3)
        rt = np.asarray(data['camera_rt_matrix'], np.float64).reshape(3, 4)
    except (ValueError, KeyError, TypeError) as exc:
        raise FrameDrop('unreadable', f'{path}: bad pose json ({exc})') from exc
    w2c = np.eye(4)
    w2c[:3] = rt
    k4 = np.eye(4)
    k4[:3, :3] = k
    if not np.isfinite(w2c).all() or abs(np.linalg.det(w2c[:3, :3])) < 1e-6:
        raise FrameDrop('invalid_pose', f'{path}: non-finite or singular camera_rt_matrix')
    return np.linalg.inv(w2c), k4


def process_room(job: SceneJob, stage: Path) -> SceneResult:
    """Convert one S3DIS room (frames + annotated points)."""
    p = job.params
    scene = job.scene
    points, semantic, instance, notes = read_room_points(Path(p['room_dir']))
    dropped = new_drop_counter()
    images = {}
    for fr in p['frames']:
        try:
            color = read_color(fr['color'])
            raw = read_depth_raw(fr['depth'])
            pose, k = _read_pose(fr['pose'])
            depth_m = np.where(raw == S3DIS_DEPTH_INVALID, 0.0, raw / S3DIS_DEPTH_UNIT)
            depth_mm = np.clip(np.round(depth_m * 1000.0), 0, 65535).astype(np.uint16)
            check_frame(color, depth_mm, pose, fr['color'], fr['depth'], fr['pose'])
        except FrameDrop as exc:
            record_drop(exc, dropped, notes)
            continue
        color, depth_mm, k, _ = resize_frame(color, depth_mm, k, p['image_size'])
        images[fr['fid']] = write_frame(stage, scene, fr['fid'], color, depth_mm, pose, k,
                                        inpaint=p['inpaint_depth'])
    if not images:
        raise SceneSkip(f'{scene}: no valid frame among {len(p["frames"])} (dropped '
                        f'{ {k: v for k, v in dropped.items() if v} })')
    info = dict(sample_idx=scene, scene_id=scene,
                lidar_points=dict(num_pts_feats=6, lidar_path=f'points/{scene}.bin'),
                pts_semantic_mask_path=f'semantic_mask/{scene}.bin',
                pts_instance_mask_path=f'instance_mask/{scene}.bin',
                axis_align_matrix=np.eye(4).tolist(), num_points=int(len(points)),
                num_instances=int(len(np.unique(instance[instance >= 0]))),
                depth_scale=1000.0, images=dict(sorted(images.items())))
    write_bin(stage / info['lidar_points']['lidar_path'], points)
    write_bin(stage / info['pts_semantic_mask_path'], semantic)
    write_bin(stage / info['pts_instance_mask_path'], instance)
    return SceneResult(info, dropped, notes)


def convert_s3dis(root_path: str,
                  out_dir: str,
                  val_area: int = 5,
                  image_size: Optional[Tuple[int, int]] = None,
                  inpaint: bool = False,
                  workers: int = 1,
                  overwrite: bool = False,
                  rooms: Optional[List[str]] = None,
                  prefix: Optional[str] = None,
                  progress: bool = True) -> dict:
    """Convert S3DIS / 2D-3D-S for ODIN (see the module docstring).

    Args:
        root_path (str): Folder holding ``2D-3D-S/`` and ``Stanford3dDataset_v1.2/``.
        out_dir (str): Output root.
        val_area (int): The validation area (official: 5). Defaults to 5.
        image_size (tuple[int, int], optional): Resize frames to (H, W) (intrinsics updated).
            Defaults to None (keep 1080x1080).
        inpaint (bool): Also write OpenCV-inpainted depth of the (resized) frames (the official
            S3DIS models read it). Defaults to False.
        workers (int): Parallel processes. Defaults to 1.
        overwrite (bool): Redo finished rooms. Defaults to False.
        rooms (list[str], optional): Only these scene ids (``Area_5_office_1``).
        prefix (str, optional): Info file prefix. Defaults to 's3dis'.
        progress (bool): Show a progress bar. Defaults to True.

    Returns:
        dict: The conversion summary.
    """
    root = Path(root_path)
    pts_root = root / 'Stanford3dDataset_v1.2'
    if not pts_root.is_dir():
        raise FileNotFoundError(f'{pts_root}: S3DIS v1.2 point folder not found')
    frames = collect_frames(root)
    jobs = []
    for area_dir in sorted(pts_root.glob('Area_*')):
        area = int(area_dir.name.split('_')[1])
        for room_dir in sorted(d for d in area_dir.iterdir() if d.is_dir()):
            scene = f'Area_{area}_{room_dir.name}'
            if rooms is not None and scene not in rooms:
                continue
            split = 'val' if area == val_area else 'train'
            jobs.append(SceneJob(scene, split, dict(room_dir=str(room_dir),
                                                    frames=frames.get(scene, []),
                                                    image_size=image_size,
                                                    inpaint_depth=bool(inpaint))))
    no_frames = [j.scene for j in jobs if not j.params['frames']]
    if no_frames:
        logger.warning('s3dis: %d room(s) have no 2D-3D-S frames (e.g. %s); they are skipped',
                       len(no_frames), no_frames[:3])
    options = dict(val_area=val_area, image_size=list(image_size) if image_size else None,
                   inpaint_depth=bool(inpaint))
    meta = dict(label_space='s3dis', depth_scale=1000.0, val_area=val_area,
                inpaint_depth=bool(inpaint))
    return run_conversion('s3dis', jobs, process_room, out_dir, options, meta, workers, overwrite,
                          prefix, progress)
