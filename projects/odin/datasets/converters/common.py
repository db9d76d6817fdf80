"""Shared machinery of the raw-data converters: staging, atomic writes, resumability, workers.

Every converter describes its work as a list of :class:`SceneJob` and a module-level function
``process(job, stage_dir) -> SceneResult``. :func:`run_conversion` then

* skips scenes whose done marker ``OUT/.done/<scene>.json`` exists and was written with the same
  options (a re-run resumes; ``overwrite=True`` forces a redo),
* runs the others in a process pool (``workers > 1``) or in-process, with a tqdm progress bar,
* lets each scene write into its own staging folder ``OUT/.staging/<scene>/`` and, only when the
  whole scene succeeded, moves the files into place (``os.replace``) and writes the marker last,
  so an interrupted or failing scene never leaves half-written outputs and never touches what
  earlier runs produced,
* turns expected problems (:class:`SceneSkip`) and unexpected errors into logged skips, and
* writes the info files ``OUT/<prefix>_infos_<split>.pkl`` (mmdet3d v2: ``metainfo`` +
  ``data_list``) from all done markers, plus ``OUT/<prefix>_summary.json`` with what was
  converted, skipped and why, and the per-scene counts of dropped frames.
"""
from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import pickle
import shutil
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np

from ..scannet_raw import atomic_write_bytes, atomic_write_text

logger = logging.getLogger('odin.create_data')
INFO_VERSION = '1.1'
MARKER_VERSION = 1


class SceneSkip(Exception):
    """An expected reason to skip a whole scene (empty mesh, no valid frame, missing file)."""


@dataclass
class SceneJob:
    """One unit of conversion work.

    Attributes:
        scene (str): Scene / room / region id (unique within the dataset, used in file names).
        split (str): Split the scene belongs to ('train', 'val', 'test', ...).
        params (dict): Converter-specific inputs (paths, options); must be picklable.
    """

    scene: str
    split: str
    params: dict = field(default_factory=dict)


@dataclass
class SceneResult:
    """What a converter produced for one scene.

    Attributes:
        info (dict): The scene's ``data_list`` entry; paths relative to the output root.
        dropped (dict): Reason -> number of frames dropped (e.g. ``invalid_pose``).
        notes (list[str]): Human-readable remarks logged by the parent process.
    """

    info: dict
    dropped: Dict[str, int] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------
# writing helpers used by the converters (all atomic)

def write_bin(path: Union[str, Path], array: np.ndarray) -> None:
    """Write a raw little-endian array (mmdet3d ``.bin`` convention) atomically."""
    atomic_write_bytes(path, np.ascontiguousarray(array).tobytes())


def write_image(path: Union[str, Path], image: np.ndarray, quality: int = 95) -> None:
    """Write an RGB uint8 (H, W, 3) image (jpg/png) or a uint16 (H, W) png atomically."""
    import cv2
    path = str(path)
    ext = os.path.splitext(path)[1].lower()
    if image.ndim == 3:
        image = image[..., ::-1]
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext in ('.jpg', '.jpeg') else []
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(image), params)
    if not ok:
        raise OSError(f'{path}: cannot encode image')
    atomic_write_bytes(path, buf.tobytes())


def write_matrix(path: Union[str, Path], mat: np.ndarray) -> None:
    """Write a matrix as whitespace-separated text (ScanNet pose/intrinsic txt) atomically."""
    rows = [' '.join(f'{float(x):.8f}' for x in row) for row in np.asarray(mat).reshape(-1, 4)]
    atomic_write_text(path, '\n'.join(rows) + '\n')


def inpaint_depth(depth: np.ndarray, radius: int = 5) -> np.ndarray:
    """Fill zero pixels of a uint16 depth image with OpenCV's Telea inpainting (radius 5).

    Args:
        depth (np.ndarray): (H, W) uint16, 0 = missing.
        radius (int): Inpainting radius in pixels. Defaults to 5 (as the official export).

    Returns:
        np.ndarray: (H, W) uint16 with holes filled (unchanged if there is no hole).
    """
    import cv2
    mask = (depth == 0).astype(np.uint8)
    if not mask.any() or mask.all():
        return depth.copy()
    return cv2.inpaint(np.ascontiguousarray(depth, np.uint16), mask, radius, cv2.INPAINT_TELEA)


def mat_list(mat: np.ndarray) -> List[List[float]]:
    """(4, 4) array -> nested list of Python floats (pickle- and json-friendly)."""
    return [[float(x) for x in row] for row in np.asarray(mat, np.float64).reshape(4, 4)]


def k4(k3: np.ndarray) -> np.ndarray:
    """Embed a 3x3 (or 4x4) intrinsic matrix into a 4x4 float64 one."""
    k3 = np.asarray(k3, np.float64)
    out = np.eye(4)
    out[:3, :3] = k3[:3, :3]
    return out


# ----------------------------------------------------------------------------------------------
# the driver

def _marker_path(out_dir: Path, scene: str) -> Path:
    return out_dir / '.done' / f'{scene}.json'


def _run_one(args) -> dict:
    """Worker entry: run ``process`` on one job inside its staging folder."""
    process, job, out_dir, options = args
    out_dir = Path(out_dir)
    stage = out_dir / '.staging' / job.scene
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    try:
        res = process(job, stage)
    except SceneSkip as exc:
        shutil.rmtree(stage, ignore_errors=True)
        return dict(scene=job.scene, split=job.split, status='skipped', reason=str(exc))
    except Exception as exc:  # any failure becomes a logged skip; nothing is committed
        shutil.rmtree(stage, ignore_errors=True)
        return dict(scene=job.scene, split=job.split, status='error',
                    reason=f'{type(exc).__name__}: {exc}',
                    traceback=traceback.format_exc(limit=3))
    # commit: move every staged file into place, then the marker (last)
    for root, _dirs, files in os.walk(stage):
        for name in files:
            src = Path(root) / name
            dst = out_dir / src.relative_to(stage)
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
    shutil.rmtree(stage, ignore_errors=True)
    marker = dict(version=MARKER_VERSION, options=options, split=job.split, info=res.info,
                  dropped=res.dropped, notes=res.notes)
    atomic_write_text(_marker_path(out_dir, job.scene), json.dumps(marker))
    return dict(scene=job.scene, split=job.split, status='done', dropped=res.dropped,
                notes=res.notes)


def run_conversion(name: str,
                   jobs: Sequence[SceneJob],
                   process: Callable[[SceneJob, Path], SceneResult],
                   out_dir: Union[str, Path],
                   options: dict,
                   metainfo: dict,
                   workers: int = 1,
                   overwrite: bool = False,
                   prefix: Optional[str] = None,
                   progress: bool = True) -> dict:
    """Convert ``jobs`` with ``process`` and write infos and a summary.

    Args:
        name (str): Dataset name (logged, stored in the metainfo).
        jobs (Sequence[SceneJob]): The scenes.
        process (Callable): Module-level function ``(job, stage_dir) -> SceneResult`` writing
            its files under ``stage_dir`` with the same relative layout as the output root.
        out_dir (str | Path): Output root.
        options (dict): Options that influence the outputs; a done marker written with other
            options is not reused.
        metainfo (dict): Extra metainfo stored in every info file.
        workers (int): Processes; <= 1 runs in-process. Defaults to 1.
        overwrite (bool): Redo scenes even if done. Defaults to False.
        prefix (str, optional): Info file prefix. Defaults to ``name``.
        progress (bool): Show a tqdm progress bar. Defaults to True.

    Returns:
        dict: the summary (also written to ``OUT/<prefix>_summary.json``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prefix = prefix or name
    options = json.loads(json.dumps(options))
    seen = Counter(j.scene for j in jobs)
    dup = [s for s, c in seen.items() if c > 1]
    if dup:
        raise ValueError(f'{name}: duplicate scene ids {dup[:5]}')
    todo, results = [], []
    for job in jobs:
        marker = _marker_path(out_dir, job.scene)
        if marker.exists() and not overwrite:
            try:
                data = json.loads(marker.read_text())
            except json.JSONDecodeError:
                data = {}
            if data.get('version') == MARKER_VERSION and data.get('options') == options:
                results.append(dict(scene=job.scene, split=job.split, status='resumed',
                                    dropped=data.get('dropped', {})))
                continue
            logger.info('%s: %s was converted with other options; converting again', name,
                        job.scene)
        todo.append(job)
    if results:
        logger.info('%s: %d scene(s) already converted, skipping them (resume)', name,
                    len(results))
    args = [(process, job, str(out_dir), options) for job in todo]
    bar = None
    if progress and todo:
        from tqdm import tqdm
        bar = tqdm(total=len(todo), desc=f'create_data {name}', unit='scene')
    if workers > 1 and len(todo) > 1:
        ctx = mp.get_context('fork')
        with ctx.Pool(min(workers, len(todo))) as pool:
            for res in pool.imap_unordered(_run_one, args):
                results.append(_log_result(name, res))
                if bar is not None:
                    bar.update(1)
    else:
        for a in args:
            results.append(_log_result(name, _run_one(a)))
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    shutil.rmtree(out_dir / '.staging', ignore_errors=True)
    return write_infos(name, out_dir, [j.scene for j in jobs], results, metainfo, prefix,
                       options)


def _log_result(name: str, res: dict) -> dict:
    if res['status'] in ('skipped', 'error'):
        logger.warning('%s: skipped %s (%s)', name, res['scene'], res['reason'])
    else:
        dropped = {k: v for k, v in res.get('dropped', {}).items() if v}
        if dropped:
            logger.warning('%s: %s: dropped frames %s', name, res['scene'], dropped)
        for note in res.get('notes', []):
            logger.info('%s: %s: %s', name, res['scene'], note)
    return res


def write_infos(name: str, out_dir: Path, scenes: Sequence[str], results: List[dict],
                metainfo: dict, prefix: str, options: dict) -> dict:
    """Collect the done markers of ``scenes`` into per-split info pkls and write the summary."""
    by_split: Dict[str, List[dict]] = {}
    current = set(scenes)
    done_dir = out_dir / '.done'
    known = sorted(current | {p.stem for p in done_dir.glob('*.json')} if done_dir.is_dir()
                   else current)
    for scene in known:
        # a scene that failed now but was converted before keeps its earlier, intact outputs;
        # scenes converted by an earlier run (e.g. with --scenes) stay listed if their options
        # match this run's
        marker = _marker_path(out_dir, scene)
        if not marker.exists():
            continue
        try:
            data = json.loads(marker.read_text())
        except json.JSONDecodeError:
            logger.warning('%s: ignoring unreadable marker %s', name, marker)
            continue
        if scene not in current and data.get('options') != options:
            continue
        by_split.setdefault(data['split'], []).append(data['info'])
    info_files = {}
    for split, infos in sorted(by_split.items()):
        meta = dict(dataset=name, info_version=INFO_VERSION, split=split)
        meta.update(metainfo)
        path = out_dir / f'{prefix}_infos_{split}.pkl'
        atomic_write_bytes(path, pickle.dumps(dict(metainfo=meta, data_list=infos),
                                              protocol=pickle.HIGHEST_PROTOCOL))
        info_files[split] = path.name
    dropped_total: Counter = Counter()
    for r in results:
        dropped_total.update(r.get('dropped', {}) or {})
    summary = dict(
        dataset=name,
        options=options,
        info_files=info_files,
        num_scenes=len(scenes),
        converted=sorted(r['scene'] for r in results if r['status'] == 'done'),
        resumed=sorted(r['scene'] for r in results if r['status'] == 'resumed'),
        skipped={r['scene']: r['reason'] for r in results if r['status'] in ('skipped', 'error')},
        dropped_frames={r['scene']: r['dropped'] for r in results
                        if any((r.get('dropped') or {}).values())},
        dropped_frames_total={k: v for k, v in dropped_total.items() if v},
    )
    atomic_write_text(out_dir / f'{prefix}_summary.json', json.dumps(summary, indent=1))
    logger.info(
        '%s: %d converted, %d resumed, %d skipped; dropped frames: %s; infos: %s', name,
        len(summary['converted']), len(summary['resumed']), len(summary['skipped']),
        summary['dropped_frames_total'] or 'none', info_files or 'none')
    for scene, reason in summary['skipped'].items():
        logger.warning('%s: skipped %s: %s', name, scene, reason)
    return summary


def read_split_file(path: Union[str, Path]) -> List[str]:
    """Read a split list (one scene id per line; blank lines and ``#`` comments ignored)."""
    with open(path, encoding='utf-8') as fh:
        return [ln.strip() for ln in fh if ln.strip() and not ln.startswith('#')]
