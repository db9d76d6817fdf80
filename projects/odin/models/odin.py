"""The ODIN detector: one model for multi-view 3D and single-image 2D segmentation.

Thin, like mmdet's ``MaskFormer``: the detector turns a batch into features (backbone with 3D
fusion on the batch's multi-view geometry) and prediction points, and the head does the rest
(forward, targets and losses, inference). See ``docs/architecture.md`` for the data flow.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmdet3d.models.detectors import Base3DDetector
from mmdet3d.registry import MODELS, TASK_UTILS
from torch import Tensor

from .multiview import MultiViewGeometry, build_multiview_geometry, compute_multiscale_xyz
from .prediction_points import PredictionPointSet

#: model keys of earlier versions of this project -> what replaces them
_LEGACY_KEYS = {
    'use_ghost_points': "prediction_points=dict(type='MeshPoints', ...) (True) or "
                        "dict(type='SensorPoints') (False)",
    'use_superpoints': "prediction_points=dict(type='MeshPoints', superpoints=...)",
    'mesh_voxel_size': "prediction_points=dict(type='MeshPoints', voxel_size=...)",
    'visibility_thresh': "prediction_points=dict(type='MeshPoints', visibility_thresh=...)",
}


def _reject_legacy_keys(keys: dict) -> None:
    """Clear error for model keys of an older config (instead of a bare TypeError)."""
    if not keys:
        return
    hints = [f'{k} -> {_LEGACY_KEYS[k]}' for k in keys if k in _LEGACY_KEYS]
    unknown = sorted(k for k in keys if k not in _LEGACY_KEYS)
    if unknown:
        raise TypeError(f'ODIN got unexpected config keys {unknown}')
    raise ValueError('this config uses model keys that were replaced: ' + '; '.join(hints))


@MODELS.register_module()
class ODIN(Base3DDetector):
    """ODIN (Jain et al., CVPR 2024): Mask2Former with interleaved 2D/3D fusion.

    A sample with ``depths`` in its inputs is a scene chunk of V posed RGB-D views (3D mode); a
    sample without is a single image (2D mode, Mask2Former behaviour with the same weights).

    Args:
        backbone: :class:`ODINResNet` / :class:`ODINSwinTransformer` config.
        decode_head: :class:`ODINHead` config.
        prediction_points: where 3D masks are predicted: ``dict(type='MeshPoints', ...)`` (mesh
            vertices voxelised, optionally averaged per superpoint) or
            ``dict(type='SensorPoints')`` (the 2 cm voxels of the stride-4 pixels), see
            :mod:`projects.odin.models.prediction_points`.
        voxel_sizes: voxel edge (m) of the stride 4/8/16/32 levels.
        num_neighbors: k of the voxel k-NN graphs and of every IDW interpolation.
        data_preprocessor: :class:`ODINDataPreprocessor` config.
        train_cfg: head training config (assigner, sampler, 2D point sampling).
        test_cfg: ``max_frames`` (frame cap, <= 0 = all), ``view_chunk`` (> 0: the bounded-
            memory path :meth:`forward_3d_chunked` with that many views per chunk; 0 = whole
            batch) and ``point_chunk`` (pixels per chunk of point-wise steps) here; ``topk``,
            ``skip_classes`` in the head.
        init_cfg: initialisation config.
        **legacy: keys of older configs (``use_ghost_points``, ...): rejected with a message
            naming what replaces them.
    """

    def __init__(self,
                 backbone: dict,
                 decode_head: dict,
                 prediction_points: Optional[dict] = None,
                 voxel_sizes: Sequence[float] = (0.02, 0.04, 0.08, 0.16),
                 num_neighbors: int = 8,
                 data_preprocessor: Optional[dict] = None,
                 train_cfg: Optional[dict] = None,
                 test_cfg: Optional[dict] = None,
                 init_cfg: Optional[dict] = None,
                 **legacy) -> None:
        _reject_legacy_keys(legacy)
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.backbone = MODELS.build(backbone)
        decode_head = dict(decode_head)
        decode_head.update(train_cfg=train_cfg, test_cfg=test_cfg)
        self.decode_head = MODELS.build(decode_head)
        self.prediction_points = TASK_UTILS.build(prediction_points or dict(type='MeshPoints'))
        self.voxel_sizes = tuple(voxel_sizes)
        self.num_neighbors = num_neighbors
        self.train_cfg = train_cfg
        self.test_cfg = dict(test_cfg or {})
        self.num_classes = self.decode_head.num_classes

    # ------------------------------------------------------------------ inputs
    @staticmethod
    def is_3d(batch_inputs: dict) -> bool:
        """3D mode iff the batch carries depth maps."""
        return batch_inputs.get('depths') is not None

    def _select_frames(self, batch_inputs: dict) -> dict:
        """Test-time frame cap: uniform stride ``V // max_frames`` from frame 0."""
        cap = self.test_cfg.get('max_frames', -1)
        num_views = batch_inputs['imgs'].shape[1]
        if self.training or cap is None or cap <= 0 or num_views <= cap:
            return batch_inputs
        idx = torch.arange(0, num_views, num_views // cap, device=batch_inputs['imgs'].device)
        idx = idx[:cap]
        out = dict(batch_inputs)
        for key in ('imgs', 'depths', 'cam2world', 'intrinsics'):
            out[key] = batch_inputs[key][:, idx]
        return out

    def build_geometry(self, batch_inputs: dict,
                       batch_data_samples: Sequence) -> MultiViewGeometry:
        """Unproject, downsample and voxelise every level (res2..res5) of the batch."""
        imgs = batch_inputs['imgs']
        shapes = []
        for sample in batch_data_samples:
            shape = sample.metainfo.get('img_shape', imgs.shape[-2:])
            if isinstance(shape, (list, tuple)) and isinstance(shape[0], (list, tuple)):
                shape = shape[0]
            shapes.append(tuple(shape[:2]))
        xyz = compute_multiscale_xyz(batch_inputs['depths'], batch_inputs['intrinsics'],
                                     batch_inputs['cam2world'], shapes)
        knn_levels = tuple(range(1, len(xyz)))
        return build_multiview_geometry(xyz, self.voxel_sizes, self.num_neighbors, knn_levels)

    def extract_feat(self, batch_inputs: dict, batch_data_samples: Sequence = ()):
        """Backbone features (and, in 3D mode, the multi-view geometry).

        Returns:
            tuple: backbone levels res2..res5 (each (B*V, C, h, w)) and the geometry (None in
            2D mode).
        """
        imgs = batch_inputs['imgs']
        if not self.is_3d(batch_inputs):
            return self.backbone(imgs), None
        geometry = self.build_geometry(batch_inputs, batch_data_samples)
        return self.backbone(imgs.flatten(0, 1), geometry), geometry

    def extract_feat_3d(self, batch_inputs: dict, batch_data_samples: Sequence):
        """Backbone features and the prediction points of a 3D batch.

        Returns:
            tuple: backbone levels res2..res5 (each (B*V, C, h, w)) and the
            :class:`PredictionPointSet` (which carries the geometry).
        """
        feats, geometry = self.extract_feat(batch_inputs, batch_data_samples)
        points = self.prediction_points(batch_inputs, geometry, self.training)
        return feats, points

    # ------------------------------------------------------------------ modes
    def loss(self, batch_inputs: dict, batch_data_samples: Sequence) -> Dict[str, Tensor]:
        """Training losses (3D or 2D batch)."""
        if not self.is_3d(batch_inputs):
            feats, _ = self.extract_feat(batch_inputs)
            return self.decode_head.loss(feats, batch_data_samples)
        feats, points = self.extract_feat_3d(batch_inputs, batch_data_samples)
        return self.decode_head.loss_3d(feats, points, batch_data_samples,
                                        batch_inputs['points'])

    def predict(self, batch_inputs: dict, batch_data_samples: Sequence, **kwargs) -> Sequence:
        """Inference; predictions go to ``pred_pts_seg`` (3D) or ``pred_instances`` (2D)."""
        if not self.is_3d(batch_inputs):
            feats, _ = self.extract_feat(batch_inputs)
            results = self.decode_head.predict_2d(feats, batch_data_samples)
            for sample, res in zip(batch_data_samples, results):
                sample.pred_instances = res
            return batch_data_samples
        batch_inputs = self._select_frames(batch_inputs)
        view_chunk = int(self.test_cfg.get('view_chunk') or 0)
        if view_chunk > 0:
            cls_list, mask_list, counts, points = self.forward_3d_chunked(
                batch_inputs, batch_data_samples, view_chunk,
                int(self.test_cfg.get('point_chunk') or 0))
            results = self.decode_head.predict_by_feat_3d(cls_list[-1], mask_list[-1], counts,
                                                          points, batch_inputs.get('points'))
        else:
            feats, points = self.extract_feat_3d(batch_inputs, batch_data_samples)
            results = self.decode_head.predict_3d(feats, points, batch_data_samples,
                                                  batch_inputs.get('points'))
        for sample, res in zip(batch_data_samples, results):
            sample.pred_pts_seg = res
        return batch_data_samples

    def forward_3d_chunked(self, batch_inputs: dict, batch_data_samples: Sequence,
                           view_chunk: int, point_chunk: int = 0, keep_aux: bool = False
                           ) -> Tuple[List[Tensor], List[Tensor], List[int], PredictionPointSet]:
        """Stage-major, view-chunked 3D forward: exact inference in bounded memory.

        Every per-view operation of ODIN (backbone stages, frozen BN, GroupNorm per map, Swin
        windows, the deformable encoder, the stride-4 convs) runs on ``view_chunk`` views at a
        time; every cross-view operation reads voxels. So features are pooled into voxel sums as
        soon as a chunk has them, fused in 3D once per level, and broadcast back per chunk:

        1. backbone, stage by stage (:meth:`_FusionStages.forward_chunked`); the pixel
           decoder's input projections are taken as soon as a chunk has its res3..res5 (only
           they are kept for all views), res2 is pooled into its voxels (mesh points);
        2. the deformable encoder per chunk, pooled per level; 3D fusion of every level;
        3. stride-4 mask features: mesh points from the pooled res2; sensor points per chunk
           (res2 recomputed, then pooled into the res2 voxels);
        4. the decoder on voxels (:meth:`ODINHead.decode_3d`), keeping only what inference
           needs.

        The result equals :meth:`extract_feat_3d` + :meth:`ODINHead.forward_3d` up to float
        summation order (``test_cfg.view_chunk`` selects this path in :meth:`predict`).

        Args:
            batch_inputs: a 3D batch (``imgs`` (B, V, 3, H, W), ``depths``, ``cam2world``,
                ``intrinsics``, ``points``).
            batch_data_samples: its data samples.
            view_chunk: views per chunk (>= 1).
            point_chunk: pixels per chunk of point-wise steps (0 = all at once).
            keep_aux: keep every decoder prediction (parity checks), not only the last.

        Returns:
            tuple: class logits and mask logits lists (as :meth:`ODINHead.forward_3d`), valid
            prediction points per scene, and the :class:`PredictionPointSet`.
        """
        if view_chunk < 1:
            raise ValueError(f'view_chunk must be >= 1, got {view_chunk}')
        geometry = self.build_geometry(batch_inputs, batch_data_samples)
        points = self.prediction_points(batch_inputs, geometry, self.training)
        head = self.decode_head
        pd = head.pixel_decoder
        imgs = batch_inputs['imgs'].flatten(0, 1)
        n = imgs.shape[0]
        chunks = [(s, min(s + view_chunk, n)) for s in range(0, n, view_chunk)]
        index = {s: c for c, (s, _) in enumerate(chunks)}
        levels = pd.num_encoder_levels
        projs: List[List[Optional[Tensor]]] = [[None] * levels for _ in chunks]
        mesh = points.mesh_voxels
        res2_acc = geometry[0].voxel_sum() if mesh is not None else None

        def sink(level: int, start: int, feats: Tensor) -> None:
            i = pd.encoder_level(level)
            if i is not None:
                projs[index[start]][i] = pd.input_convs[i](feats)
            elif level == 0 and res2_acc is not None:
                geometry[0].pool_views(feats, start, res2_acc)

        self.backbone.forward_chunked(imgs, geometry, chunks, sink)
        accs = [geometry[pd.num_input_levels - i - 1].voxel_sum() for i in range(levels)]
        for c, (s, _) in enumerate(chunks):
            outs = pd.encode_projected(projs[c])
            projs[c] = None
            for i, out in enumerate(outs):
                geometry[pd.num_input_levels - i - 1].pool_views(out, s, accs[i])
        voxel_outs = pd.fuse_levels([a.mean() for a in accs], geometry)
        del accs
        if mesh is not None:
            mask_features = pd.mesh_mask_features(res2_acc.mean(), voxel_outs, geometry, mesh)
        else:
            up = pd.upsample_to_res2(voxel_outs, geometry)
            acc = geometry[0].voxel_sum()
            for s, e in chunks:
                # res2 is recomputed per chunk rather than held for all views
                res2 = self.backbone.forward_first_level(imgs[s:e])
                geometry[0].pool_views(pd.sensor_mask_features(res2, up, geometry, s), s, acc)
            mask_features = acc.mean()
        cls_list, mask_list, counts = head.decode_3d(mask_features, voxel_outs, points,
                                                     batch_data_samples, keep_aux, point_chunk)
        return cls_list, mask_list, counts, points

    def _forward(self, batch_inputs: dict, batch_data_samples: Sequence = (), **kwargs):
        """Tensor mode: class and mask logits of every prediction."""
        if not self.is_3d(batch_inputs):
            feats, _ = self.extract_feat(batch_inputs)
            return self.decode_head.forward(feats, batch_data_samples)
        feats, points = self.extract_feat_3d(batch_inputs, batch_data_samples)
        return self.decode_head.forward_3d(feats, points, batch_data_samples)[:2]

