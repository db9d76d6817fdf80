"""The ODIN detector: one model for multi-view 3D and single-image 2D segmentation.

Thin, like mmdet's ``MaskFormer``: the detector turns a batch into features (2D: the backbone;
3D: the multi-view encoder over the batch's geometry and prediction points) and the head does
the rest (forward, targets and losses, inference). See ``docs/architecture.md`` for the data
flow.
"""
from typing import Dict, Optional, Sequence

import torch
from mmdet3d.models.detectors import Base3DDetector
from mmdet3d.registry import MODELS, TASK_UTILS
from torch import Tensor

from ..structures.multiview_depths import MultiViewDepths
from ..structures.multiview_geometry import (
    MultiViewGeometry,
    build_multiview_geometry,
    compute_multiscale_xyz,
)
from ..structures.multiview_images import MultiViewImages
from .multiview_encoder import ChunkPlan, MultiViewEncoder, MultiViewFeatures

#: model keys of earlier versions of this project -> what replaces them
_LEGACY_KEYS = {
    'use_ghost_points': "prediction_points=dict(type='MeshPointsBuilder', ...) (True) or "
                        "dict(type='SensorPointsBuilder') (False)",
    'use_superpoints': "prediction_points=dict(type='MeshPointsBuilder', superpoints=...)",
    'mesh_voxel_size': "prediction_points=dict(type='MeshPointsBuilder', voxel_size=...)",
    'visibility_thresh': "prediction_points=dict(type='MeshPointsBuilder', visibility_thresh=...)",
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
        prediction_points: the builder of the points where 3D masks are predicted:
            ``dict(type='MeshPointsBuilder', ...)`` (mesh vertices voxelised, optionally
            averaged per superpoint) or ``dict(type='SensorPointsBuilder')`` (the 2 cm voxels of
            the stride-4 pixels), see :mod:`projects.odin.models.prediction_points`.
        voxel_sizes: voxel edge (m) of the stride 4/8/16/32 levels.
        num_neighbors: k of the voxel k-NN graphs and of every IDW interpolation.
        data_preprocessor: :class:`ODINDataPreprocessor` config.
        train_cfg: ``view_chunk`` (views per chunk of a 3D training step, recomputed in the
            backward pass; 0 = whole batch) and ``point_chunk`` here (:meth:`chunk_plan`);
            the head's training config (assigner, sampler, 2D point sampling).
        test_cfg: ``max_frames`` (frame cap, <= 0 = all), ``view_chunk`` (views per chunk of
            the 3D forward, bounded memory; 0 = whole batch), ``point_chunk`` (pixels per
            chunk of point-wise steps) and ``hold_res2_views`` (batches of at most this many
            views keep res2 for the mask features instead of recomputing it; 0 = never when
            chunked) here (:meth:`chunk_plan`); ``topk``, ``skip_classes`` in the head.
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
        self.prediction_points = TASK_UTILS.build(prediction_points
                                                  or dict(type='MeshPointsBuilder'))
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
            x = batch_inputs[key]
            out[key] = (x.select_views(idx) if isinstance(x, (MultiViewImages, MultiViewDepths))
                        else x[:, idx])
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

    @property
    def multiview_encoder(self) -> MultiViewEncoder:
        """The one 3D forward of the backbone and the pixel decoder (their modules, not copies)."""
        return MultiViewEncoder(self.backbone, self.decode_head.pixel_decoder)

    def chunk_plan(self, num_views: int) -> ChunkPlan:
        """View chunks of a 3D batch: ``train_cfg`` in training, ``test_cfg`` otherwise.

        ``view_chunk`` views per chunk (0 = all), ``point_chunk`` pixels per chunk of the keys'
        positional encoding (0 = all), ``hold_res2_views`` (:class:`ChunkPlan`); in training
        with ``view_chunk > 0`` every chunk's activations are recomputed in the backward pass
        (bounded memory, docs/training.md).
        """
        cfg = (self.train_cfg if self.training else self.test_cfg) or {}
        view_chunk = int(cfg.get('view_chunk') or 0)
        recompute = self.training and view_chunk > 0 and torch.is_grad_enabled()
        return ChunkPlan(num_views, view_chunk, int(cfg.get('point_chunk') or 0), recompute,
                         int(cfg.get('hold_res2_views') or 0))

    def extract_feat(self, batch_inputs: dict, batch_data_samples: Sequence = ()):
        """Features of a batch: backbone levels (2D) or the multi-view encoder's (3D).

        Args:
            batch_inputs: ``imgs`` (B, 3, H, W) of a 2D batch, or ``imgs`` (a
                :class:`MultiViewImages` of (B, V, 3, H, W), or those images normalised),
                ``depths`` (a :class:`MultiViewDepths` of (B, V, H, W), or those depths padded
                to float32), ``cam2world``, ``intrinsics`` (and ``points``, ``superpoints``) of
                a 3D batch.
            batch_data_samples: its data samples (3D: their unpadded ``img_shape``).

        Returns:
            list[Tensor] | MultiViewFeatures: 2D: res2..res5, each (B, C_i, h_i, w_i); 3D: the
            fused voxel levels, the mask features of the prediction points and the points.
        """
        imgs = batch_inputs['imgs']
        if not self.is_3d(batch_inputs):
            return self.backbone(imgs)
        geometry = self.build_geometry(batch_inputs, batch_data_samples)
        points = self.prediction_points(batch_inputs, geometry, self.training)
        if isinstance(imgs, MultiViewImages):
            num_views = imgs.num_views  # normalised per view chunk by the encoder
        else:
            imgs = imgs.flatten(0, 1)  # already normalised (B, V, 3, H, W)
            num_views = imgs.shape[0]
        return self.multiview_encoder(imgs, points, self.chunk_plan(num_views))

    # ------------------------------------------------------------------ modes
    def loss(self, batch_inputs: dict, batch_data_samples: Sequence) -> Dict[str, Tensor]:
        """Training losses (3D or 2D batch)."""
        x = self.extract_feat(batch_inputs, batch_data_samples)
        return self.decode_head.loss(x, batch_data_samples)

    def predict(self, batch_inputs: dict, batch_data_samples: Sequence, **kwargs) -> Sequence:
        """Inference; predictions go to ``pred_pts_seg`` (3D) or ``pred_instances`` (2D)."""
        if self.is_3d(batch_inputs):
            batch_inputs = self._select_frames(batch_inputs)
        x = self.extract_feat(batch_inputs, batch_data_samples)
        results = self.decode_head.predict(x, batch_data_samples)
        field = 'pred_pts_seg' if isinstance(x, MultiViewFeatures) else 'pred_instances'
        for sample, res in zip(batch_data_samples, results):
            setattr(sample, field, res)
        return batch_data_samples

    def _forward(self, batch_inputs: dict, batch_data_samples: Sequence = (), **kwargs):
        """Tensor mode: class and mask logits of every prediction (:meth:`ODINHead.forward`)."""
        x = self.extract_feat(batch_inputs, batch_data_samples)
        return self.decode_head.forward(x, batch_data_samples)
