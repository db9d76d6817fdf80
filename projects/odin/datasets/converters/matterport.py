"""Matterport3D converter: undistorted frames grouped by region + region meshes -> ODIN data.

Input (the v1 release, unzipped; ``RAW/v1/scans`` or ``RAW/scans``)::

    scans/<house>/undistorted_color_images/<pano>_i<c>_<y>.jpg
    scans/<house>/undistorted_depth_images/<pano>_d<c>_<y>.png      (uint16, 0.25 mm units)
    scans/<house>/undistorted_camera_parameters/<house>.conf
        ``intrinsics_matrix fx 0 cx 0 fy cy 0 0 1`` then ``scan <depth> <color> <16 floats>``
        (camera-to-world of a canonical camera looking along -z with +y up, i.e. OpenGL axes;
        image origin at the bottom-left, per the dataset's data_organization.md)
    scans/<house>/house_segmentations/<house>.house   (``P <pano> <pano_index> <region> ...``)
    scans/<house>/region_segmentations/region<r>.ply, region<r>.vsegs.json,
        region<r>.semseg.json

Every frame belongs to the region of its panorama; one scene = one region ``<house>_region<r>``.
Poses are converted to OpenCV camera axes (``pose @ diag(1, -1, -1, 1)``) and ``cy`` to the
top-left image origin (``H - cy``, as the official ODIN export) so that the standard
unprojection applies; frames are resized to ``image_size`` (default 512x640, the official size)
with intrinsics scaled. Depth is stored in millimetres (value / 4); with ``inpaint`` the resized
depth is also written with its holes filled (``depth_inpainted/``, OpenCV Telea, radius 5; the
official recipes read inpainted depth for Matterport3D too). Classes: exact name lookup
of the ``semseg.json`` label in :data:`projects.odin.class_names.MATTERPORT3D_CLASSES` (raw id =
index + 1; unknown names -> 0, ignored), instances = segGroups, superpoints = ``vsegs``
segments.
Splits: ``scenes_<split>.txt`` (house ids, the official lists) or ``matterport3d_<split>.txt``
(region scene ids) in ``--split-dir`` or the root; otherwise every region goes to 'all'.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from ...class_names import MATTERPORT3D_CLASSES
from ..scannet_raw import read_aggregation, read_mesh_ply, read_segs
from .common import (
    SceneJob,
    SceneResult,
    SceneSkip,
    logger,
    read_split_file,
    run_conversion,
    write_bin,
)
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

OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])


def parse_conf(path: Path) -> List[dict]:
    """Parse an ``undistorted_camera_parameters/<house>.conf``.

    Returns:
        list[dict]: ``depth``, ``color`` (file names), ``k`` (4, 4), ``pose`` (4, 4, as stored).
    """
    if not path.is_file():
        raise SceneSkip(f'{path}: camera parameter file missing')
    out, k = [], None
    with open(path, encoding='utf-8') as fh:
        for ln, line in enumerate(fh, 1):
            parts = line.split()
            if not parts:
                continue
            if parts[0] == 'intrinsics_matrix':
                vals = np.asarray([float(x) for x in parts[1:10]]).reshape(3, 3)
                k = np.eye(4)
                k[:3, :3] = vals
            elif parts[0] == 'scan':
                if k is None or len(parts) != 19:
                    raise ValueError(f'{path}:{ln}: scan line without intrinsics or with '
                                     f'{len(parts) - 3} pose values')
                pose = np.asarray([float(x) for x in parts[3:19]]).reshape(4, 4)
                out.append(dict(depth=parts[1], color=parts[2], k=k.copy(), pose=pose))
    return out


def parse_house_regions(path: Path) -> Dict[str, int]:
    """Panorama name -> region index from a ``.house`` file (``P`` lines)."""
    if not path.is_file():
        raise SceneSkip(f'{path}: house segmentation file missing')
    regions = {}
    with open(path, encoding='utf-8') as fh:
        for line in fh:
            parts = line.split()
            # panorama lines: P <name> <panorama_index> <region_index> 0 px py pz ...
            # (portal lines share the letter but start with an integer index)
            if len(parts) >= 4 and parts[0] == 'P' and not parts[1].isdigit():
                try:
                    regions[parts[1]] = int(parts[3])
                except ValueError:
                    continue
    return regions


def process_region(job: SceneJob, stage: Path) -> SceneResult:
    """Convert one Matterport region (frames + region mesh)."""
    p = job.params
    scene = job.scene
    house_dir = Path(p['house_dir'])
    reg = house_dir / 'region_segmentations' / f'region{p["region"]}'
    xyz, rgb, _ = read_mesh_ply(f'{reg}.ply')
    if len(xyz) == 0:
        raise SceneSkip(f'{reg}.ply: region mesh has no vertices')
    seg = read_segs(f'{reg}.vsegs.json', len(xyz))
    groups = read_aggregation(f'{reg}.semseg.json')
    names = {n: i + 1 for i, n in enumerate(MATTERPORT3D_CLASSES)}
    semantic = np.zeros(len(xyz), np.int64)
    instance = np.full(len(xyz), -1, np.int64)
    unknown = set()
    for g in groups:
        m = np.isin(seg, g['segments'])
        instance[m] = g['id']
        if g['label'] in names:
            semantic[m] = names[g['label']]
        else:
            unknown.add(g['label'])
    notes = [f'labels outside the 160 classes (ignored): {sorted(unknown)}'] if unknown else []
    dropped = new_drop_counter()
    images = {}
    for fr in p['frames']:
        cpath = str(house_dir / 'undistorted_color_images' / fr['color'])
        dpath = str(house_dir / 'undistorted_depth_images' / fr['depth'])
        try:
            color = read_color(cpath)
            raw = read_depth_raw(dpath)
            depth_mm = np.round(raw.astype(np.float64) / 4.0).astype(np.uint16)
            pose = np.asarray(fr['pose'], np.float64) @ OPENGL_TO_OPENCV
            check_frame(color, depth_mm, pose, cpath, dpath, p['conf'])
        except FrameDrop as exc:
            record_drop(exc, dropped, notes)
            continue
        # the .conf intrinsics count rows from the bottom-left image origin; rows are stored
        # top-down, so cy becomes H - cy (the official ODIN export's fix, `512 - cy`)
        k = np.array(fr['k'], np.float64)
        k[1, 2] = depth_mm.shape[0] - k[1, 2]
        color, depth_mm, k, _ = resize_frame(color, depth_mm, k, p['image_size'])
        fid = Path(fr['color']).stem
        images[fid] = write_frame(stage, scene, fid, color, depth_mm, pose, k,
                                  inpaint=p['inpaint_depth'])
    if not images:
        raise SceneSkip(f'{scene}: no valid frame among {len(p["frames"])}')
    points = np.concatenate([xyz, rgb.astype(np.float32)], 1).astype(np.float32)
    info = dict(sample_idx=scene, scene_id=scene,
                lidar_points=dict(num_pts_feats=6, lidar_path=f'points/{scene}.bin'),
                pts_semantic_mask_path=f'semantic_mask/{scene}.bin',
                pts_instance_mask_path=f'instance_mask/{scene}.bin',
                super_pts_path=f'super_points/{scene}.bin',
                axis_align_matrix=np.eye(4).tolist(), num_points=int(len(points)),
                num_instances=len(groups), depth_scale=1000.0,
                images=dict(sorted(images.items())))
    write_bin(stage / info['lidar_points']['lidar_path'], points)
    write_bin(stage / info['pts_semantic_mask_path'], semantic)
    write_bin(stage / info['pts_instance_mask_path'], instance)
    write_bin(stage / info['super_pts_path'],
              np.unique(seg, return_inverse=True)[1].astype(np.int64))
    return SceneResult(info, dropped, notes)


def _split_lists(dirs: List[Path]) -> Tuple[Dict[str, str], Dict[str, str]]:
    houses, regions = {}, {}
    for split in ('train', 'val', 'test'):
        for d in dirs:
            if (d / f'scenes_{split}.txt').is_file():
                houses.update({h: split for h in read_split_file(d / f'scenes_{split}.txt')})
            if (d / f'matterport3d_{split}.txt').is_file():
                regions.update({r: split for r in
                                read_split_file(d / f'matterport3d_{split}.txt')})
    return houses, regions


def convert_matterport(root_path: str,
                       out_dir: str,
                       image_size: Optional[Tuple[int, int]] = (512, 640),
                       inpaint: bool = False,
                       workers: int = 1,
                       overwrite: bool = False,
                       split_dir: Optional[str] = None,
                       houses: Optional[List[str]] = None,
                       prefix: Optional[str] = None,
                       progress: bool = True) -> dict:
    """Convert Matterport3D for ODIN (see the module docstring).

    Args:
        root_path (str): Folder holding ``v1/scans`` or ``scans``.
        out_dir (str): Output root.
        image_size (tuple[int, int], optional): Frame size (H, W). Defaults to (512, 640).
        inpaint (bool): Also write OpenCV-inpainted depth of the resized frames (the official
            Matterport3D models read it). Defaults to False.
        workers (int): Parallel processes. Defaults to 1.
        overwrite (bool): Redo finished regions. Defaults to False.
        split_dir (str, optional): Folder with split lists. Defaults to the root.
        houses (list[str], optional): Only these houses (or region scene ids).
        prefix (str, optional): Info file prefix. Defaults to 'matterport3d'.
        progress (bool): Show a progress bar. Defaults to True.

    Returns:
        dict: The conversion summary.
    """
    root = Path(root_path)
    scans = root / 'v1' / 'scans' if (root / 'v1' / 'scans').is_dir() else root / 'scans'
    if not scans.is_dir():
        raise FileNotFoundError(f'{root}: neither v1/scans nor scans found')
    house_split, region_split = _split_lists([Path(split_dir)] if split_dir else [root])
    if not house_split and not region_split:
        logger.warning('matterport3d: no split lists found; every region goes to split "all"')
    jobs = []
    for house in sorted(os.listdir(scans)):
        hdir = scans / house
        if not hdir.is_dir():
            continue
        conf = hdir / 'undistorted_camera_parameters' / f'{house}.conf'
        try:
            frames = parse_conf(conf)
            pano_region = parse_house_regions(hdir / 'house_segmentations' / f'{house}.house')
        except (SceneSkip, ValueError) as exc:
            logger.warning('matterport3d: skipped house %s (%s)', house, exc)
            continue
        by_region: Dict[int, List[dict]] = {}
        for fr in frames:
            pano = fr['color'].split('_i')[0]
            if pano not in pano_region:
                continue
            by_region.setdefault(pano_region[pano], []).append(fr)
        reg_dir = hdir / 'region_segmentations'
        region_ids = sorted(int(f[6:-4]) for f in os.listdir(reg_dir)
                            if f.startswith('region') and f.endswith('.ply')) \
            if reg_dir.is_dir() else []
        for r in region_ids:
            scene = f'{house}_region{r}'
            if houses is not None and house not in houses and scene not in houses:
                continue
            split = region_split.get(scene, house_split.get(house))
            if split is None:
                if house_split or region_split:
                    continue
                split = 'all'
            jobs.append(SceneJob(scene, split, dict(
                house_dir=str(hdir), region=r, conf=str(conf),
                frames=[dict(fr, k=fr['k'].tolist(), pose=fr['pose'].tolist())
                        for fr in by_region.get(r, [])],
                image_size=list(image_size) if image_size else None,
                inpaint_depth=bool(inpaint))))
    options = dict(image_size=list(image_size) if image_size else None, camera='opengl',
                   inpaint_depth=bool(inpaint))
    meta = dict(label_space='matterport3d', depth_scale=1000.0, inpaint_depth=bool(inpaint))
    return run_conversion('matterport3d', jobs, process_region, out_dir, options, meta, workers,
                          overwrite, prefix, progress)
