"""ScanNet / ScanNet200 converter: raw release (``.sens`` + meshes + annotations) -> ODIN data.

Input (the raw ScanNet v2 release, or the synthetic world, which uses the same layout)::

    RAW/scans/<scene>/<scene>.sens, <scene>_vh_clean_2.ply, <scene>_vh_clean_2.labels.ply,
                      <scene>.aggregation.json, <scene>_vh_clean_2.0.010000.segs.json, <scene>.txt
    RAW/scans_test/<scene>/...      (no annotation files)
    RAW/scannetv2-labels.combined.tsv  (ScanNet200 only: raw category -> ScanNet200 id)
    RAW/scannetv2_{train,val,test}.txt or RAW/meta_data/... or --split-dir (optional split lists)

Output (paths in the infos are relative to OUT)::

    OUT/frames/<scene>/color/<frame>.jpg            colour resized to the depth resolution
    OUT/frames/<scene>/depth/<frame>.png            uint16 millimetres, 0 = invalid
    OUT/frames/<scene>/depth_inpainted/<frame>.png  (--inpaint-depth) OpenCV Telea, radius 5
    OUT/frames/<scene>/pose/<frame>.txt             4x4 camera-to-world
    OUT/frames/<scene>/intrinsic/intrinsic_depth.txt
    OUT/points/<scene>.bin          float32 (N, 6): mesh vertices x y z r g b (0-255)
    OUT/semantic_mask/<scene>.bin   int64 (N,): NYU40 id (scannet) / ScanNet200 raw id (scannet200)
    OUT/instance_mask/<scene>.bin   int64 (N,): instance id (aggregation segGroup id), -1 = none
    OUT/super_points/<scene>.bin    int64 (N,): superpoint id, contiguous from 0
    OUT/<scannet|scannet200>_infos_<split>.pkl, OUT/<...>_summary.json
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..scannet_raw import (
    read_aggregation,
    read_axis_align,
    read_label_ply,
    read_label_tsv,
    read_mesh_ply,
    read_segs,
)
from ..sens_data import SensorDataError, SensorDataReader
from .common import (
    SceneJob,
    SceneResult,
    SceneSkip,
    inpaint_depth,
    k4,
    logger,
    mat_list,
    read_split_file,
    run_conversion,
    write_bin,
    write_image,
    write_matrix,
)

# Known annotation bugs of the ScanNet-20 (NYU40) labels, fixed as the official preprocessing
# does: the vertices of these instances (aggregation id) are removed from the scene.
SCANNET20_BAD_INSTANCES: Dict[str, int] = {
    'scene0270_00': 50,
    'scene0270_02': 50,
    'scene0384_00': 149,
}

SPLITS = ('train', 'val', 'test')


def find_split_lists(root: Path, split_dir: Optional[str]) -> Dict[str, List[str]]:
    """Find ``scannetv2_<split>.txt`` lists in ``split_dir``, ``root`` or ``root/meta_data``."""
    dirs = [Path(split_dir)] if split_dir else [root, root / 'meta_data', root / 'Tasks' /
                                                  'Benchmark']
    out = {}
    for split in SPLITS:
        for d in dirs:
            p = d / f'scannetv2_{split}.txt'
            if p.is_file():
                out[split] = read_split_file(p)
                break
    if split_dir and not out:
        raise FileNotFoundError(f'{split_dir}: no scannetv2_{{train,val,test}}.txt split lists')
    return out


def collect_jobs(root: str, split_dir: Optional[str] = None,
                 scenes: Optional[List[str]] = None) -> List[SceneJob]:
    """List the scenes to convert and their splits.

    Scenes under ``scans_test/`` are 'test' scenes. Scenes under ``scans/`` get their split from
    the split lists; without any list every scene goes to the split 'all' (logged).
    """
    root_p = Path(root)
    if not (root_p / 'scans').is_dir() and not (root_p / 'scans_test').is_dir():
        raise FileNotFoundError(f'{root}: neither scans/ nor scans_test/ found (expected the raw '
                                'ScanNet layout)')
    lists = find_split_lists(root_p, split_dir)
    split_of = {s: split for split, names in lists.items() for s in names}
    if not lists:
        logger.warning('scannet: no split lists found under %s; all scenes go to split "all"',
                       root)
    jobs = []
    for sub in ('scans', 'scans_test'):
        d = root_p / sub
        if not d.is_dir():
            continue
        for scene in sorted(os.listdir(d)):
            if not (d / scene).is_dir():
                continue
            if scenes is not None and scene not in scenes:
                continue
            if sub == 'scans_test':
                split = 'test'
            elif lists:
                split = split_of.get(scene)
                if split is None:
                    logger.info('scannet: %s is in no split list; not converted', scene)
                    continue
            else:
                split = 'all'
            jobs.append(SceneJob(scene, split, dict(scan_dir=str(d / scene))))
    missing = [s for names in lists.values() for s in names
               if not (root_p / 'scans' / s).is_dir() and not (root_p / 'scans_test' / s).is_dir()]
    if missing and scenes is None:
        logger.warning('scannet: %d scene(s) of the split lists are missing under %s (e.g. %s)',
                       len(missing), root, missing[:3])
    return jobs


def load_mesh_annotations(scan_dir: Path, scene: str, label_space: str,
                          tsv: Optional[Dict[str, Dict[str, int]]]
                          ) -> Tuple[np.ndarray, Optional[np.ndarray], Optional[np.ndarray],
                                     Optional[np.ndarray], List[str]]:
    """Load the mesh vertices and their labels.

    Args:
        scan_dir (Path): ``scans/<scene>``.
        scene (str): Scene id.
        label_space (str): 'nyu40' (ScanNet-20: semantic = ``labels.ply`` NYU40 id) or
            'scannet200' (semantic = tsv ``id`` of the aggregation label).
        tsv (dict, optional): Parsed ``scannetv2-labels.combined.tsv`` (needed for scannet200).

    Returns:
        tuple: points (N, 6) float32, semantic (N,) int64 or None, instance (N,) int64 or None,
        superpoints (N,) int64 or None, notes.
    """
    notes = []
    xyz, rgb, _ = read_mesh_ply(scan_dir / f'{scene}_vh_clean_2.ply')
    if len(xyz) == 0:
        raise SceneSkip(f'{scan_dir / f"{scene}_vh_clean_2.ply"}: mesh has no vertices')
    if not np.isfinite(xyz).all():
        raise SceneSkip(f'{scan_dir / f"{scene}_vh_clean_2.ply"}: non-finite vertex coordinates')
    points = np.concatenate([xyz, rgb.astype(np.float32)], 1).astype(np.float32)
    n = len(points)
    segs_path = scan_dir / f'{scene}_vh_clean_2.0.010000.segs.json'
    agg_path = scan_dir / f'{scene}.aggregation.json'
    lab_path = scan_dir / f'{scene}_vh_clean_2.labels.ply'
    seg = read_segs(segs_path, n) if segs_path.is_file() else None
    if not agg_path.is_file() and not lab_path.is_file():
        superpoints = None if seg is None else np.unique(seg, return_inverse=True)[1]
        return points, None, None, superpoints, ['no annotation files (unlabelled scene)']
    if seg is None:
        raise FileNotFoundError(f'{segs_path}: segment file missing but the scene is annotated')
    groups = read_aggregation(agg_path)
    instance = np.full(n, -1, np.int64)
    seg_ids = set(np.unique(seg).tolist())
    for g in groups:
        unknown = [s for s in g['segments'] if s not in seg_ids]
        if unknown:
            notes.append(f'{agg_path.name}: segGroup {g["id"]} ({g["label"]}) refers to '
                         f'{len(unknown)} unknown segment id(s); ignored')
        instance[np.isin(seg, g['segments'])] = g['id']
    if label_space == 'nyu40':
        lab_xyz, semantic = read_label_ply(lab_path)
        if len(lab_xyz) != n or not np.allclose(lab_xyz, xyz, atol=1e-5):
            raise ValueError(f'{lab_path}: vertices differ from {scene}_vh_clean_2.ply '
                             f'({len(lab_xyz)} vs {n} vertices)')
    else:
        if tsv is None:
            raise FileNotFoundError('scannetv2-labels.combined.tsv is required for scannet200')
        semantic = np.zeros(n, np.int64)
        unknown_labels = set()
        for g in groups:
            row = tsv.get(g['label'])
            if row is None:
                unknown_labels.add(g['label'])
                continue
            semantic[instance == g['id']] = row['id']
        if unknown_labels:
            notes.append(f'labels not in the tsv (left unannotated): {sorted(unknown_labels)}')
    superpoints = np.unique(seg, return_inverse=True)[1].astype(np.int64)
    bad = SCANNET20_BAD_INSTANCES.get(scene) if label_space == 'nyu40' else None
    if bad is not None and (instance == bad).any():
        keep = instance != bad
        notes.append(f'known annotation bug: removed {int((~keep).sum())} vertices of '
                     f'instance {bad}')
        points, semantic, instance = points[keep], semantic[keep], instance[keep]
        superpoints = np.unique(superpoints[keep], return_inverse=True)[1].astype(np.int64)
    return points, semantic.astype(np.int64), instance, superpoints, notes


def process_scene(job: SceneJob, stage: Path) -> SceneResult:
    """Convert one ScanNet scene (see the module docstring for the outputs)."""
    p = job.params
    scene = job.scene
    scan_dir = Path(p['scan_dir'])
    sens_path = scan_dir / f'{scene}.sens'
    if not sens_path.is_file():
        raise SceneSkip(f'{sens_path}: .sens file not found')
    tsv = read_label_tsv(p['tsv']) if p.get('tsv') else None
    points, semantic, instance, superpoints, notes = load_mesh_annotations(
        scan_dir, scene, p['label_space'], tsv)
    axis_align = read_axis_align(scan_dir / f'{scene}.txt')

    # frames
    try:
        reader = SensorDataReader(sens_path)
    except SensorDataError as exc:
        raise SceneSkip(f'unreadable .sens: {exc}') from exc
    hdr = reader.header
    dh, dw = hdr.depth_height, hdr.depth_width
    k_depth = k4(hdr.intrinsic_depth)
    if not np.isfinite(k_depth).all() or k_depth[0, 0] <= 0 or k_depth[1, 1] <= 0:
        raise SceneSkip(f'{sens_path}: invalid depth intrinsics {k_depth[:3, :3].tolist()}')
    rel = Path('frames') / scene
    write_matrix(stage / rel / 'intrinsic' / 'intrinsic_depth.txt', k_depth)
    dropped = dict(invalid_pose=0, zero_depth=0, corrupt=0)
    images = {}
    import cv2
    interp = dict(nearest=cv2.INTER_NEAREST, area=cv2.INTER_AREA,
                  linear=cv2.INTER_LINEAR)[p['color_interp']]
    try:
        for frame in reader.iter_frames(p['frame_skip']):
            pose = frame.camera_to_world.astype(np.float64)
            if not np.isfinite(pose).all():
                dropped['invalid_pose'] += 1
                continue
            try:
                depth = reader.decode_depth(frame)
                color = reader.decode_color(frame)
            except SensorDataError as exc:
                dropped['corrupt'] += 1
                notes.append(f'dropped frame: {exc}')
                continue
            if not depth.any():
                dropped['zero_depth'] += 1
                continue
            if color.shape[:2] != (dh, dw):
                color = cv2.resize(color, (dw, dh), interpolation=interp)
            fid = f'{frame.index:06d}'
            entry = dict(img_path=str(rel / 'color' / f'{fid}.jpg'),
                         depth_map=str(rel / 'depth' / f'{fid}.png'),
                         height=dh, width=dw, cam2img=mat_list(k_depth),
                         cam2world=mat_list(pose), frame_idx=frame.index)
            write_image(stage / entry['img_path'], color, p['jpeg_quality'])
            write_image(stage / entry['depth_map'], depth)
            if p['inpaint_depth']:
                entry['depth_inpainted_map'] = str(rel / 'depth_inpainted' / f'{fid}.png')
                write_image(stage / entry['depth_inpainted_map'], inpaint_depth(depth))
            write_matrix(stage / rel / 'pose' / f'{fid}.txt', pose)
            images[fid] = entry
    except SensorDataError as exc:
        raise SceneSkip(f'corrupt .sens: {exc}') from exc
    if not images:
        raise SceneSkip(f'{sens_path}: no valid frame among {len(reader)} '
                        f'(frame_skip {p["frame_skip"]}, dropped {dropped})')

    info = dict(sample_idx=scene, scene_id=scene,
                lidar_points=dict(num_pts_feats=6, lidar_path=f'points/{scene}.bin'),
                axis_align_matrix=mat_list(axis_align), num_points=int(len(points)),
                depth_scale=1000.0, images=images)
    write_bin(stage / info['lidar_points']['lidar_path'], points.astype(np.float32))
    if semantic is not None:
        info['pts_semantic_mask_path'] = f'semantic_mask/{scene}.bin'
        info['pts_instance_mask_path'] = f'instance_mask/{scene}.bin'
        write_bin(stage / info['pts_semantic_mask_path'], semantic.astype(np.int64))
        write_bin(stage / info['pts_instance_mask_path'], instance.astype(np.int64))
        info['num_instances'] = int(len(np.unique(instance[instance >= 0])))
    if superpoints is not None:
        info['super_pts_path'] = f'super_points/{scene}.bin'
        write_bin(stage / info['super_pts_path'], superpoints.astype(np.int64))
    return SceneResult(info, dropped, notes)


def convert_scannet(root_path: str,
                     out_dir: str,
                     dataset: str = 'scannet',
                     frame_skip: int = 20,
                     inpaint: bool = False,
                     workers: int = 1,
                     overwrite: bool = False,
                     split_dir: Optional[str] = None,
                     scenes: Optional[List[str]] = None,
                     color_interp: str = 'nearest',
                     jpeg_quality: int = 95,
                     prefix: Optional[str] = None,
                     progress: bool = True) -> dict:
    """Convert a raw ScanNet release (or the synthetic world) for ODIN.

    Args:
        root_path (str): Raw root (contains ``scans/``).
        out_dir (str): Output root.
        dataset (str): 'scannet' (NYU40 labels) or 'scannet200' (ScanNet200 raw ids).
        frame_skip (int): Keep every ``frame_skip``-th sensor frame. Defaults to 20.
        inpaint (bool): Also write OpenCV-inpainted depth. Defaults to False.
        workers (int): Parallel processes. Defaults to 1.
        overwrite (bool): Redo finished scenes. Defaults to False.
        split_dir (str, optional): Folder with ``scannetv2_<split>.txt``.
        scenes (list[str], optional): Only these scenes.
        color_interp (str): Colour resize filter: 'nearest' (as the official export), 'area',
            'linear'. Defaults to 'nearest'.
        jpeg_quality (int): Quality of the written colour JPEGs. Defaults to 95.
        prefix (str, optional): Info file prefix. Defaults to ``dataset``.
        progress (bool): Show a progress bar. Defaults to True.

    Returns:
        dict: The conversion summary.
    """
    if dataset not in ('scannet', 'scannet200'):
        raise ValueError(f'dataset must be scannet or scannet200, got {dataset!r}')
    if frame_skip < 1:
        raise ValueError(f'frame_skip must be >= 1, got {frame_skip}')
    label_space = 'nyu40' if dataset == 'scannet' else 'scannet200'
    tsv = None
    if label_space == 'scannet200':
        tsv_path = Path(root_path) / 'scannetv2-labels.combined.tsv'
        if not tsv_path.is_file():
            raise FileNotFoundError(f'{tsv_path}: needed for ScanNet200 labels (part of the '
                                    'ScanNet release)')
        tsv = str(tsv_path)
    jobs = collect_jobs(root_path, split_dir, scenes)
    options = dict(frame_skip=frame_skip, inpaint_depth=bool(inpaint), label_space=label_space,
                   color_interp=color_interp, jpeg_quality=jpeg_quality)
    for job in jobs:
        job.params.update(options, tsv=tsv)
    meta = dict(label_space=label_space, frame_skip=frame_skip, depth_scale=1000.0,
                inpaint_depth=bool(inpaint))
    return run_conversion(dataset, jobs, process_scene, out_dir, options, meta, workers,
                          overwrite, prefix, progress)
