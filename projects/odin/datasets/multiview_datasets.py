"""Multi-view RGB-D scene datasets (ScanNet, ScanNet200, S3DIS, Matterport3D, AI2THOR).

One item = one scene: the info written by ``tools/create_data.py`` (mesh / sensor point files,
masks, superpoints and a dict of posed frames); the pipeline samples the frames.
"""
from __future__ import annotations

import copy
import os.path as osp
from typing import Callable, List, Optional, Sequence, Union

import numpy as np
from mmdet3d.datasets import Seg3DDataset
from mmdet3d.registry import DATASETS

from .metainfo import (
    AI2THOR_METAINFO,
    MATTERPORT_METAINFO,
    S3DIS_METAINFO,
    SCANNET200_METAINFO,
    SCANNET_METAINFO,
)


@DATASETS.register_module()
class ODINScanNetDataset(Seg3DDataset):
    """ScanNet (20 classes, NYU40 raw ids) as posed multi-view RGB-D scenes + mesh points.

    ``METAINFO`` comes from :mod:`projects.odin.class_names`: ``classes`` in training order
    (wall, floor last for ScanNet-20), ``seg_valid_class_ids`` (raw id of each class),
    ``seg_all_class_ids`` and ``palette``. ``seg_label_mapping`` maps every raw id to its
    training class, everything else to ``ignore_index`` (= number of classes).

    Info entry (see docs/data.md): ``sample_idx``, ``lidar_points.lidar_path``,
    ``pts_semantic_mask_path``, ``pts_instance_mask_path``, ``super_pts_path``,
    ``axis_align_matrix``, ``depth_scale`` and ``images`` = {frame id: ``img_path``, ``depth_map``
    [, ``depth_inpainted_map``], ``height``, ``width``, ``cam2img``, ``cam2world``}.

    Args:
        data_root (str, optional): Root of the converted data; relative paths are joined.
        ann_file (str): Info pkl (relative to ``data_root``).
        metainfo (dict, optional): Override ``classes`` etc. Defaults to None.
        data_prefix (dict): Sub-folders for ``pts``, ``img``, ``depth``, ``pts_instance_mask``,
            ``pts_semantic_mask``, ``sp_pts_mask``. Defaults to '' (paths in the info are
            relative to the data root already).
        pipeline (list): Transforms.
        override_cam2img (Sequence[float], optional): ``(fx, fy, cx, cy)`` used for every frame
            instead of the per-frame intrinsics of the info (official ScanNet setting: the mean
            depth intrinsics 577.871, 577.871, 319.5, 239.5 at 640x480). Defaults to None.
        min_frames (int): Scenes with fewer frames are dropped from the list. Defaults to 1.
        **kwargs: ``Seg3DDataset`` arguments (``test_mode``, ``ignore_index``, ...).
    """

    METAINFO = SCANNET_METAINFO

    def __init__(self,
                 data_root: Optional[str] = None,
                 ann_file: str = '',
                 metainfo: Optional[dict] = None,
                 data_prefix: Optional[dict] = None,
                 pipeline: Sequence[Union[dict, Callable]] = (),
                 modality: Optional[dict] = None,
                 override_cam2img: Optional[Sequence[float]] = None,
                 min_frames: int = 1,
                 **kwargs) -> None:
        if override_cam2img is not None and len(override_cam2img) != 4:
            raise ValueError('override_cam2img must be (fx, fy, cx, cy)')
        self.override_cam2img = override_cam2img
        self.min_frames = min_frames
        if data_prefix is None:
            data_prefix = dict(pts='', img='', depth='', pts_instance_mask='',
                               pts_semantic_mask='', sp_pts_mask='')
        modality = modality or dict(use_lidar=True, use_camera=True)
        metainfo = dict(metainfo) if metainfo else dict(classes=list(self.METAINFO['classes']))
        metainfo.setdefault('classes', list(self.METAINFO['classes']))
        super().__init__(data_root=data_root, ann_file=ann_file, metainfo=metainfo,
                         data_prefix=data_prefix, pipeline=list(pipeline), modality=modality,
                         **kwargs)

    def get_seg_label_mapping(self, metainfo: Optional[dict] = None) -> np.ndarray:
        """Raw id -> training class array sized by the largest raw id (ScanNet200 ids > 200)."""
        valid = list(self.METAINFO['seg_valid_class_ids'])
        all_ids = list(self.METAINFO['seg_all_class_ids'])
        mapping = np.full(max(all_ids + valid) + 1, len(valid), dtype=np.int64)
        for cls_idx, raw in enumerate(valid):
            mapping[raw] = cls_idx
        for raw in self.METAINFO.get('ignore_class_ids', ()):
            mapping[raw] = len(valid)
        return mapping

    def load_data_list(self) -> List[dict]:
        """Load the infos and drop scenes with fewer than ``min_frames`` frames."""
        data_list = super().load_data_list()
        return [d for d in data_list if len(d.get('images') or {}) >= self.min_frames]

    def parse_data_info(self, info: dict) -> dict:
        """Make paths absolute and attach the label mapping and the per-frame intrinsics."""
        info = copy.copy(info)
        images = {}
        for fid, fr in (info.get('images') or {}).items():
            fr = dict(fr)
            fr['img_path'] = osp.join(self.data_prefix.get('img', ''), fr['img_path'])
            for key in ('depth_map', 'depth_inpainted_map'):
                if key in fr:
                    fr[key] = osp.join(self.data_prefix.get('depth', ''), fr[key])
            for key in ('instance_map', 'semantic_map'):
                if key in fr:
                    fr[key] = osp.join(self.data_prefix.get('img', ''), fr[key])
            if self.override_cam2img is not None:
                fx, fy, cx, cy = self.override_cam2img
                k = np.eye(4)
                k[0, 0], k[1, 1], k[0, 2], k[1, 2] = fx, fy, cx, cy
                fr['cam2img'] = k.tolist()
            images[fid] = fr
        info['images'] = images
        if info.get('super_pts_path'):
            info['super_pts_path'] = osp.join(self.data_prefix.get('sp_pts_mask', ''),
                                              info['super_pts_path'])
        info.setdefault('scene_id', info.get('sample_idx'))
        info.setdefault('axis_align_matrix', np.eye(4).tolist())
        info['axis_align_matrix'] = np.asarray(info['axis_align_matrix'], np.float32)
        # what Seg3DDataset.parse_data_info does for point clouds, without its camera-path
        # join (done above with the depth and label maps) and for scenes without a mesh
        lidar = info.get('lidar_points')
        if lidar is not None and self.modality.get('use_lidar', True):
            lidar = dict(lidar, lidar_path=osp.join(self.data_prefix.get('pts', ''),
                                                    lidar['lidar_path']))
            info['lidar_points'], info['lidar_path'] = lidar, lidar['lidar_path']
            if 'num_pts_feats' in lidar:
                info['num_pts_feats'] = lidar['num_pts_feats']
        for key, prefix in (('pts_instance_mask_path', 'pts_instance_mask'),
                            ('pts_semantic_mask_path', 'pts_semantic_mask')):
            if key in info:
                info[key] = osp.join(self.data_prefix.get(prefix, ''), info[key])
        info['seg_label_mapping'] = self.seg_label_mapping
        if self.test_mode and self.load_eval_anns:
            info['eval_ann_info'] = dict()
        info['ignore_index'] = self.ignore_index
        # the vocabulary of the sample (open-vocabulary head; PackODINInputs keeps it in metainfo)
        info['classes'] = tuple(self.metainfo['classes'])
        return info


@DATASETS.register_module()
class ODINScanNet200Dataset(ODINScanNetDataset):
    """ScanNet200 (200 classes, ScanNet200 raw ids; wall/floor last).

    The 5 classes ODIN drops in training (absent from val/test: luggage, cd case, alarm clock,
    purse, guitar case) map to the ignore index (``METAINFO['ignore_class_ids']``).
    """

    METAINFO = SCANNET200_METAINFO


@DATASETS.register_module()
class ODINS3DISDataset(ODINScanNetDataset):
    """S3DIS (13 classes; raw ids 1..13 as written by the converter; no superpoints)."""

    METAINFO = S3DIS_METAINFO


@DATASETS.register_module()
class ODINMatterport3DDataset(ODINScanNetDataset):
    """Matterport3D regions (160 classes; raw ids 1..160 as written by the converter)."""

    METAINFO = MATTERPORT_METAINFO


@DATASETS.register_module()
class ODINAI2THORDataset(ODINScanNetDataset):
    """AI2THOR houses (117 classes); points are built from the frames (``ODINSensorPoints``)."""

    METAINFO = AI2THOR_METAINFO

    def __init__(self, *args, modality: Optional[dict] = None, **kwargs) -> None:
        super().__init__(*args, modality=modality or dict(use_lidar=False, use_camera=True),
                         **kwargs)
