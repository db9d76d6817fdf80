"""``PackODINInputs``: the multi-view RGB-D sample of the ODIN data contract."""
from __future__ import annotations

import numpy as np
import torch
from mmdet3d.datasets.transforms import Pack3DDetInputs
from mmdet3d.registry import TRANSFORMS

ODIN_META_KEYS = ('img_path', 'depth_path', 'ori_shape', 'img_shape', 'pad_shape', 'cam2img',
                  'cam2world', 'scale_factor', 'crop_offset', 'sample_idx', 'scene_id',
                  'num_views', 'frame_ids', 'axis_align_matrix', 'transformation_3d_flow',
                  'global_aug_matrix', 'pcd_rotation', 'pcd_scale_factor', 'num_pts_feats',
                  'lidar_path', 'box_type_3d', 'box_mode_3d', 'task', 'classes')


@TRANSFORMS.register_module()
class PackODINInputs(Pack3DDetInputs):
    """Pack a scene chunk of V posed RGB-D frames (see ``docs/data_contract.md``).

    ``inputs``: ``img`` (V, 3, H, W) uint8, ``depths`` (V, H, W) float32 metres (0 = invalid),
    ``cam2world`` (V, 4, 4) float32 camera-to-world (after 3D augmentation), ``intrinsics``
    (V, 4, 4) float32, ``points`` (N, 3 + C) float32, ``superpoints`` (N,) int64.
    ``data_samples.gt_pts_seg``: ``pts_semantic_mask`` / ``pts_instance_mask`` (N,) int64.
    Metainfo: ``ODIN_META_KEYS`` (per-view lists for paths, ``cam2img``, ``cam2world``);
    ``task`` is ``'3d'`` unless the results say otherwise, ``classes`` (the dataset's class names
    in label order, for the open-vocabulary head) when the dataset puts them in its infos.

    Only ``INPUTS_KEYS`` is extended (and ``depths`` routed to the inputs rather than to
    ``gt_instances_3d``); everything else is mmdet3d's ``Pack3DDetInputs``.

    Args:
        keys (tuple[str]): Keys to pack. Defaults to all ODIN inputs and the point labels.
        meta_keys (tuple[str]): Metainfo keys. Defaults to ``ODIN_META_KEYS``.
    """

    INPUTS_KEYS = ['points', 'img', 'depths', 'cam2world', 'intrinsics', 'superpoints']
    INSTANCEDATA_3D_KEYS = [k for k in Pack3DDetInputs.INSTANCEDATA_3D_KEYS if k != 'depths']

    def __init__(self,
                 keys: tuple = ('img', 'depths', 'cam2world', 'intrinsics', 'points', 'superpoints',
                                'pts_semantic_mask', 'pts_instance_mask'),
                 meta_keys: tuple = ODIN_META_KEYS) -> None:
        super().__init__(keys=keys, meta_keys=meta_keys)

    def pack_single_results(self, results: dict) -> dict:
        """Convert the per-view lists to tensors, then pack as mmdet3d does."""
        if isinstance(results.get('img'), list):
            sizes = {im.shape[:2] for im in results['img']}
            sizes |= {d.shape[:2] for d in results.get('depths', [])}
            if len(sizes) > 1:
                raise ValueError(
                    f'scene {results.get("scene_id", results.get("sample_idx"))}: views of '
                    f'different sizes {sorted(sizes)} cannot be stacked; add a resize/crop '
                    'transform (ODINResize / ODINRandomResizeCrop) before PackODINInputs')
        if 'depths' in results and isinstance(results['depths'], list):
            results['depths'] = torch.from_numpy(
                np.ascontiguousarray(np.stack(results['depths']), dtype=np.float32))
        if 'cam2world' in results:
            results['cam2world'] = torch.from_numpy(
                np.stack([np.asarray(p, np.float32) for p in results['cam2world']]))
        if 'cam2img' in results:
            results['intrinsics'] = torch.from_numpy(
                np.stack([np.asarray(k, np.float32) for k in results['cam2img']]))
        if 'superpoints' in results and not isinstance(results['superpoints'], torch.Tensor):
            results['superpoints'] = torch.from_numpy(
                np.asarray(results['superpoints'], np.int64))
        results.setdefault('transformation_3d_flow', [])
        results.setdefault('task', '3d')
        if 'classes' in results:
            results['classes'] = tuple(results['classes'])
        # the per-frame info dict would otherwise leak unsampled frames into the metainfo
        results.pop('images', None)
        packed = super().pack_single_results(results)
        if 'img' in packed['inputs'] and packed['inputs']['img'].dim() == 4:
            h, w = packed['inputs']['img'].shape[-2:]
            packed['data_samples'].set_metainfo(dict(img_shape=(h, w), pad_shape=(h, w)))
        return packed
