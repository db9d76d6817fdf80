"""AI2THOR converter: per-house frame folders with 2D instance masks -> ODIN data.

Input (one folder per house, e.g. as exported from the ``ai2thor`` simulator)::

    RAW/<split>/<house>/color/<frame>.png|.jpg      RGB
    RAW/<split>/<house>/depth/<frame>.png|.npy      uint16 millimetres, or float metres (.npy)
    RAW/<split>/<house>/instance/<frame>.png        uint16 ``class_id * 200 + instance`` (the
                                                     official encoding; 0 = unlabelled pixel)
    RAW/<split>/<house>/pose/<frame>.txt            4x4 camera-to-world, OpenCV camera axes
    RAW/<split>/<house>/intrinsic/<frame>.txt       optional 3x3/4x4; default: 90 deg FoV pinhole

``<split>`` is ``train`` / ``val`` (or list the houses in ``ai2thor_<split>.txt`` with
``--split-dir``). ``class_id`` is 1..117 (:data:`projects.odin.class_names.AI2THOR_CLASSES`); an
instance is one ``class_id * 200 + instance`` code, consistent across the frames of a house.

Output: ``frames/<house>/{color,depth,pose,intrinsic,instance,semantic}/<frame>``, where
``instance/*.png`` holds the house-level instance index + 1 (0 = none) and ``semantic/*.png`` the
class id (0 = none); the info lists ``instance_map`` / ``semantic_map`` per frame and the
``instance_codes`` (original code of each instance index). There is no point file: the ground
truth lives on the unprojected depth pixels (``ODINSensorPoints`` in the pipeline).
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from ...class_names import AI2THOR_CLASSES, AI2THOR_ID_MULTIPLIER
from .common import (
    SceneJob,
    SceneResult,
    SceneSkip,
    logger,
    read_split_file,
    run_conversion,
    write_image,
)
from .frames import (
    FrameDrop,
    check_frame,
    new_drop_counter,
    read_color,
    read_depth_raw,
    record_drop,
    write_frame,
)

_EXTS = ('.png', '.jpg', '.jpeg')


def fov_intrinsics(h: int, w: int, fov_deg: float = 90.0) -> np.ndarray:
    """Pinhole intrinsics (4, 4) of a square-pixel camera with horizontal FoV ``fov_deg``."""
    f = (w / 2.0) / math.tan(math.radians(fov_deg) / 2.0)
    k = np.eye(4)
    k[0, 0] = k[1, 1] = f
    k[0, 2], k[1, 2] = (w - 1) / 2.0, (h - 1) / 2.0
    return k


def _find(folder: Path, stem: str, exts) -> Optional[str]:
    for e in exts:
        if (folder / f'{stem}{e}').is_file():
            return str(folder / f'{stem}{e}')
    return None


def process_house(job: SceneJob, stage: Path) -> SceneResult:
    """Convert one AI2THOR house."""
    p = job.params
    scene = job.scene
    hdir = Path(p['house_dir'])
    cdir = hdir / 'color'
    if not cdir.is_dir():
        raise SceneSkip(f'{cdir}: colour folder missing')
    stems = sorted({Path(f).stem for f in os.listdir(cdir) if Path(f).suffix.lower() in _EXTS})
    if not stems:
        raise SceneSkip(f'{cdir}: no frames')
    dropped = new_drop_counter()
    notes: List[str] = []
    kept = []
    codes = set()
    for stem in stems:
        cpath = _find(cdir, stem, _EXTS)
        dpath = _find(hdir / 'depth', stem, ('.png', '.npy')) or str(hdir / 'depth' /
                                                                    f'{stem}.png')
        ipath = str(hdir / 'instance' / f'{stem}.png')
        ppath = str(hdir / 'pose' / f'{stem}.txt')
        try:
            color = read_color(cpath)
            raw = read_depth_raw(dpath)
            depth_mm = (np.clip(np.round(np.nan_to_num(raw) * 1000.0), 0, 65535)
                        .astype(np.uint16) if dpath.endswith('.npy') else raw.astype(np.uint16))
            if not os.path.isfile(ppath):
                raise FrameDrop('missing_file', f'{ppath}: pose file missing')
            try:
                pose = np.loadtxt(ppath).reshape(4, 4)
            except ValueError as exc:
                raise FrameDrop('unreadable', f'{ppath}: bad pose ({exc})') from exc
            check_frame(color, depth_mm, pose, cpath, dpath, ppath)
            inst = read_depth_raw(ipath).astype(np.int64)
            if inst.shape != depth_mm.shape:
                raise FrameDrop('size_mismatch', f'{ipath} is {inst.shape[1]}x{inst.shape[0]} '
                                f'but {cpath} is {color.shape[1]}x{color.shape[0]}')
        except FrameDrop as exc:
            record_drop(exc, dropped, notes)
            continue
        kpath = _find(hdir / 'intrinsic', stem, ('.txt', ))
        if kpath:
            km = np.loadtxt(kpath)
            k = np.eye(4)
            k[:3, :3] = km[:3, :3]
        else:
            k = fov_intrinsics(*depth_mm.shape, p['fov'])
        codes |= set(np.unique(inst[inst > 0]).tolist())
        kept.append((stem, color, depth_mm, pose, k, inst))
    if not kept:
        raise SceneSkip(f'{scene}: no valid frame among {len(stems)} (dropped '
                        f'{ {k: v for k, v in dropped.items() if v} })')
    codes = sorted(codes)
    classes = {c // AI2THOR_ID_MULTIPLIER for c in codes}
    bad = sorted(c for c in classes if not 1 <= c <= len(AI2THOR_CLASSES))
    if bad:
        notes.append(f'class ids outside 1..{len(AI2THOR_CLASSES)} (kept, ignored in '
                     f'training): {bad}')
    codes_arr = np.asarray(codes, np.int64)
    images = {}
    rel = Path('frames') / scene
    for stem, color, depth_mm, pose, k, inst in kept:
        entry = write_frame(stage, scene, stem, color, depth_mm, pose, k)
        idx = np.zeros(inst.shape, np.uint16)
        nz = inst > 0
        idx[nz] = np.searchsorted(codes_arr, inst[nz]) + 1
        sem = np.where(nz, inst // AI2THOR_ID_MULTIPLIER, 0).astype(np.uint16)
        entry['instance_map'] = str(rel / 'instance' / f'{stem}.png')
        entry['semantic_map'] = str(rel / 'semantic' / f'{stem}.png')
        write_image(stage / entry['instance_map'], idx)
        write_image(stage / entry['semantic_map'], sem)
        images[stem] = entry
    info = dict(sample_idx=scene, scene_id=scene, axis_align_matrix=np.eye(4).tolist(),
                depth_scale=1000.0, instance_codes=[int(c) for c in codes],
                num_instances=len(codes), images=images)
    return SceneResult(info, dropped, notes)


def convert_ai2thor(root_path: str,
                    out_dir: str,
                    fov: float = 90.0,
                    workers: int = 1,
                    overwrite: bool = False,
                    split_dir: Optional[str] = None,
                    scenes: Optional[List[str]] = None,
                    prefix: Optional[str] = None,
                    progress: bool = True) -> dict:
    """Convert AI2THOR frame folders for ODIN (see the module docstring).

    Args:
        root_path (str): Root with ``train/``, ``val/`` house folders (or house folders plus
            split lists).
        out_dir (str): Output root.
        fov (float): Horizontal FoV for frames without an intrinsic file. Defaults to 90.
        workers (int): Parallel processes. Defaults to 1.
        overwrite (bool): Redo finished houses. Defaults to False.
        split_dir (str, optional): Folder with ``ai2thor_<split>.txt`` house lists.
        scenes (list[str], optional): Only these houses.
        prefix (str, optional): Info file prefix. Defaults to 'ai2thor'.
        progress (bool): Show a progress bar. Defaults to True.

    Returns:
        dict: The conversion summary.
    """
    root = Path(root_path)
    if not root.is_dir():
        raise FileNotFoundError(f'{root}: AI2THOR root not found')
    jobs = []
    split_of: Dict[str, str] = {}
    if split_dir:
        for split in ('train', 'val', 'test'):
            f = Path(split_dir) / f'ai2thor_{split}.txt'
            if f.is_file():
                split_of.update({h: split for h in read_split_file(f)})
    candidates = []
    for split in ('train', 'val', 'test'):
        if (root / split).is_dir():
            candidates += [(split, root / split / h) for h in sorted(os.listdir(root / split))]
    if not candidates:
        candidates = [(None, root / h) for h in sorted(os.listdir(root))]
    for split, hdir in candidates:
        if not hdir.is_dir() or (scenes is not None and hdir.name not in scenes):
            continue
        split = split_of.get(hdir.name, split) or 'all'
        jobs.append(SceneJob(hdir.name, split, dict(house_dir=str(hdir), fov=fov)))
    if not jobs:
        logger.warning('ai2thor: no house folders found under %s', root)
    options = dict(fov=fov)
    meta = dict(label_space='ai2thor', depth_scale=1000.0,
                id_multiplier=AI2THOR_ID_MULTIPLIER)
    return run_conversion('ai2thor', jobs, process_house, out_dir, options, meta, workers,
                          overwrite, prefix, progress)
