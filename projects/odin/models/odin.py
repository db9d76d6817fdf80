"""The ODIN detector: one model for multi-view 3D and single-image 2D segmentation."""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmdet.models.seg_heads import MaskFormerFusionHead
from mmdet3d.models.detectors import Base3DDetector
from mmdet3d.registry import MODELS
from mmdet3d.structures import PointData
from mmengine.structures import InstanceData
from torch import Tensor

from projects.odin.layers.geometry import voxelize
from projects.odin.ops import scatter_mean, scatter_min

from . import neighbors
from .multiview import MultiViewGeometry, build_multiview_geometry, compute_multiscale_xyz
from .pixel_decoder import GhostPoints
from .postprocess import instance_inference, semantic_inference


@MODELS.register_module()
class ODIN(Base3DDetector):
    """ODIN (Jain et al., CVPR 2024): Mask2Former with interleaved 2D/3D fusion.

    A sample with ``depths`` in its inputs is a scene chunk of V posed RGB-D views (3D mode); a
    sample without is a single image (2D mode, Mask2Former behaviour with the same weights).

    Args:
        backbone: :class:`ODINResNet` / :class:`ODINSwinTransformer` config.
        decode_head: :class:`ODINHead` config.
        voxel_sizes: voxel edge (m) of the stride 4/8/16/32 levels.
        num_neighbors: k of the voxel k-NN graphs and IDW interpolations.
        use_ghost_points: predict on the 2 cm-voxelised ``points`` (mesh vertices) instead of the
            2 cm voxels of the stride-4 pixels (sensor points).
        use_superpoints: average mask features over ``superpoints`` (ghost mode only).
        mesh_voxel_size: voxel edge of the ghost points.
        visibility_thresh: at training time only mesh points whose squared distance to the
            chunk's stride-4 points is below this are supervised.
        data_preprocessor: :class:`ODINDataPreprocessor` config.
        train_cfg: head training config (assigner, sampler, 2D point sampling).
        test_cfg: ``topk`` (100), ``skip_classes`` (wall/floor for ScanNet-20), ``max_frames``
            (frame cap, <= 0 = all), ``encoder_chunk_size`` (views per deformable-encoder chunk),
            ``semantic_on`` / ``instance_on``.
        init_cfg: initialisation config.
    """

    def __init__(self,
                 backbone: dict,
                 decode_head: dict,
                 voxel_sizes: Sequence[float] = (0.02, 0.04, 0.08, 0.16),
                 num_neighbors: int = 8,
                 use_ghost_points: bool = True,
                 use_superpoints: bool = True,
                 mesh_voxel_size: float = 0.02,
                 visibility_thresh: float = 1e-3,
                 data_preprocessor: Optional[dict] = None,
                 train_cfg: Optional[dict] = None,
                 test_cfg: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.backbone = MODELS.build(backbone)
        decode_head = dict(decode_head)
        decode_head.update(train_cfg=train_cfg, test_cfg=test_cfg)
        self.decode_head = MODELS.build(decode_head)
        self.voxel_sizes = tuple(voxel_sizes)
        self.num_neighbors = num_neighbors
        self.use_ghost_points = use_ghost_points
        self.use_superpoints = use_superpoints
        self.mesh_voxel_size = mesh_voxel_size
        self.visibility_thresh = visibility_thresh
        self.train_cfg = train_cfg
        self.test_cfg = dict(test_cfg or {})
        self.num_classes = self.decode_head.num_classes
        self.fusion_head_2d = MaskFormerFusionHead(
            num_things_classes=self.num_classes,
            num_stuff_classes=0,
            test_cfg=dict(
                panoptic_on=False,
                semantic_on=False,
                instance_on=True,
                max_per_image=self.test_cfg.get('topk', 100),
                iou_thr=0.8,
                filter_low_score=False))

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
        for key in ('imgs', 'depths', 'poses', 'intrinsics'):
            out[key] = batch_inputs[key][:, idx]
        if batch_inputs.get('multi_scale_xyz') is not None:
            out['multi_scale_xyz'] = [x[:, idx] for x in batch_inputs['multi_scale_xyz']]
        return out

    def build_geometry(self, batch_inputs: dict,
                       batch_data_samples: Sequence) -> MultiViewGeometry:
        """Unproject, downsample and voxelise every level (res2..res5) of the batch."""
        xyz = batch_inputs.get('multi_scale_xyz')
        if xyz is None:
            imgs = batch_inputs['imgs']
            shapes = []
            for sample in batch_data_samples:
                shape = sample.metainfo.get('img_shape', imgs.shape[-2:])
                if isinstance(shape, (list, tuple)) and isinstance(shape[0], (list, tuple)):
                    shape = shape[0]
                shapes.append(tuple(shape[:2]))
            xyz = compute_multiscale_xyz(batch_inputs['depths'], batch_inputs['intrinsics'],
                                         batch_inputs['poses'], shapes, strides=(4, 8, 16, 32))
        num_levels = len(xyz)
        knn_levels = tuple(range(1, num_levels))
        return build_multiview_geometry(xyz, self.voxel_sizes, self.num_neighbors, knn_levels)

    def build_ghost_points(self, points: List[Tensor], superpoints: Optional[List[Tensor]],
                           geometry: MultiViewGeometry) -> Tuple[GhostPoints, List[Tensor]]:
        """Voxelise the mesh points (2 cm) and map superpoints to mesh voxels.

        At training time only the mesh points observed by the chunk are kept (reference §2.7).

        Returns:
            tuple: the :class:`GhostPoints` and, per scene, the indices of the kept points.
        """
        res2 = geometry[0]
        kept, xyz_list = [], []
        starts = [0] + res2.point_offsets.tolist()[:-1]
        for b, pts in enumerate(points):
            xyz = pts[:, :3].float()
            if self.training and self.visibility_thresh is not None:
                s, e = starts[b], res2.point_offsets[b].item()
                src = res2.point_xyz[s:e]
                _, dist = neighbors.knn(xyz, src, 1, xyz.new_tensor([len(xyz)]).long(),
                                        xyz.new_tensor([len(src)]).long())
                idx = torch.nonzero(dist[:, 0]**2 < self.visibility_thresh).squeeze(1)
                if idx.numel() == 0:
                    idx = torch.arange(len(xyz), device=xyz.device)
            else:
                idx = torch.arange(len(xyz), device=xyz.device)
            kept.append(idx)
            xyz_list.append(xyz[idx])
        offsets = torch.cumsum(torch.tensor([len(x) for x in xyz_list]), 0).to(res2.p2v.device)
        p2v, voxel_offsets, voxel_xyz = voxelize(torch.cat(xyz_list), offsets,
                                                 self.mesh_voxel_size)
        p2v_list, segments = [], None
        vstarts = [0] + voxel_offsets.tolist()[:-1]
        pstarts = [0] + offsets.tolist()[:-1]
        for b in range(len(points)):
            p2v_list.append(p2v[pstarts[b]:pstarts[b] + len(xyz_list[b])] - vstarts[b])
        if self.use_superpoints and superpoints is not None:
            segments = []
            for b, sp in enumerate(superpoints):
                n_vox = voxel_offsets[b].item() - vstarts[b]
                seg = scatter_min(sp[kept[b]].long(), p2v_list[b], n_vox)
                segments.append(torch.unique(seg, return_inverse=True)[1])
        ghost = GhostPoints(voxel_xyz, voxel_offsets.long(), p2v_list, segments)
        return ghost, kept

    def extract_feat(self, batch_inputs: dict, batch_data_samples: Sequence = (),
                     record: Optional[dict] = None):
        """Backbone features (and, in 3D mode, the multi-view geometry).

        Returns:
            tuple: backbone levels res2..res5 (each (B*V, C, h, w)) and the geometry (None in
            2D mode).
        """
        imgs = batch_inputs['imgs']
        if not self.is_3d(batch_inputs):
            return self.backbone(imgs), None
        geometry = self.build_geometry(batch_inputs, batch_data_samples)
        feats = self.backbone(imgs.flatten(0, 1), geometry)
        if record is not None:
            record['backbone.out'] = feats
            record['geometry'] = geometry
        return feats, geometry

    # ------------------------------------------------------------------ targets
    def _targets(self, batch_data_samples: Sequence, geometry: MultiViewGeometry,
                 ghost: Optional[GhostPoints], kept: Optional[List[Tensor]],
                 points: List[Tensor]) -> List[InstanceData]:
        """Per-scene boolean instance masks on the prediction points (superpoints / voxels)."""
        targets = []
        num_classes = self.decode_head.batch_num_classes(batch_data_samples)
        for b, sample in enumerate(batch_data_samples):
            gt = sample.gt_pts_seg
            inst = gt.pts_instance_mask.to(points[b].device).long()
            sem = gt.pts_semantic_mask.to(points[b].device).long()
            if ghost is not None:
                inst, sem = inst[kept[b]], sem[kept[b]]
                p2v = ghost.p2v[b]
                n_vox = ghost.voxel_counts[b]
            else:
                res2 = geometry[0]
                s, n_vox = res2.voxel_starts[b], res2.voxel_counts[b]
                pts = points[b][:, :3].float()
                nn_idx, _ = neighbors.knn(res2.voxel_xyz[s:s + n_vox], pts, 1,
                                          pts.new_tensor([n_vox]).long(),
                                          pts.new_tensor([len(pts)]).long())
                inst, sem = inst[nn_idx[:, 0]], sem[nn_idx[:, 0]]
                p2v = torch.arange(n_vox, device=inst.device)
            labels, masks = [], []
            for i in torch.unique(inst):
                if i < 0:
                    continue
                m = inst == i
                lab = torch.mode(sem[m]).values
                if lab < 0 or lab >= num_classes:
                    continue
                labels.append(lab)
                masks.append(m)
            if not masks:
                targets.append(InstanceData(labels=inst.new_zeros(0), masks=inst.new_zeros(
                    0, n_vox, dtype=torch.bool)))
                continue
            m = torch.stack(masks).float()  # (M, N)
            frac = scatter_mean(m.t(), p2v, n_vox).t()  # (M, N_vox)
            if ghost is not None and ghost.segments is not None:
                seg = ghost.segments[b]
                frac = scatter_mean(frac.t(), seg, int(seg.max()) + 1).t()
            targets.append(InstanceData(labels=torch.stack(labels), masks=frac > 0.5))
        return targets

    # ------------------------------------------------------------------ modes
    def _forward_3d(self, batch_inputs: dict, batch_data_samples: Sequence,
                    record: Optional[dict] = None):
        feats, geometry = self.extract_feat(batch_inputs, batch_data_samples, record)
        ghost, kept = None, None
        points = batch_inputs.get('points')
        if self.use_ghost_points:
            if points is None:
                raise ValueError('ghost-point mode needs inputs["points"] (mesh vertices); '
                                 'set use_ghost_points=False for sensor points')
            ghost, kept = self.build_ghost_points(points, batch_inputs.get('superpoints'),
                                                  geometry)
        if record is not None:
            record['ghost'] = ghost
        outs = self.decode_head.forward_3d(feats, geometry, ghost, record, batch_data_samples)
        return outs, geometry, ghost, kept

    def loss(self, batch_inputs: dict, batch_data_samples: Sequence) -> Dict[str, Tensor]:
        """Training losses (3D or 2D batch)."""
        if not self.is_3d(batch_inputs):
            feats, _ = self.extract_feat(batch_inputs)
            return self.decode_head.loss(feats, batch_data_samples)
        (cls_list, mask_list, counts), geometry, ghost, kept = self._forward_3d(
            batch_inputs, batch_data_samples)
        targets = self._targets(batch_data_samples, geometry, ghost, kept,
                                batch_inputs['points'])
        return self.decode_head.loss_3d(cls_list, mask_list, counts, targets)

    def point_logits(self, mask_logits: Tensor, b: int, geometry: MultiViewGeometry,
                     ghost: Optional[GhostPoints], points: Optional[Tensor]) -> Tensor:
        """Lift one scene's mask logits to its evaluation points.

        Ghost mode: superpoint/voxel logits broadcast to every mesh vertex. Sensor mode: the
        2 cm res2-voxel logits IDW-interpolated (k=8) from the voxel centroids to ``points``
        (or broadcast to the stride-4 pixels when ``points`` is None).

        Args:
            mask_logits: shape (Q, N_pred_b).
            b: scene index.
            geometry: multi-view geometry.
            ghost: ghost points or None.
            points: evaluation points of the scene, (N, 3+).

        Returns:
            Tensor: shape (Q, N).
        """
        if ghost is not None:
            if ghost.segments is not None:
                mask_logits = mask_logits[:, ghost.segments[b]]
            return mask_logits[:, ghost.p2v[b]]
        res2 = geometry[0]
        s, n = res2.voxel_starts[b], res2.voxel_counts[b]
        if points is None:
            ps = ([0] + res2.point_offsets.tolist())[b]
            return mask_logits[:, res2.p2v[ps:res2.point_offsets[b].item()] - s]
        pts = points[:, :3].float()
        src = res2.voxel_xyz[s:s + n]
        out = neighbors.idw(mask_logits.t(), src, src.new_tensor([n]).long(), pts,
                            pts.new_tensor([len(pts)]).long(), self.num_neighbors)
        return out.t()

    def predict(self, batch_inputs: dict, batch_data_samples: Sequence, **kwargs) -> Sequence:
        """Inference; predictions go to ``pred_pts_seg`` (3D) or ``pred_instances`` (2D)."""
        if not self.is_3d(batch_inputs):
            feats, _ = self.extract_feat(batch_inputs)
            cls, masks = self.decode_head.predict(feats, batch_data_samples)
            results = self._fuse_2d(cls, masks, batch_data_samples)
            for sample, res in zip(batch_data_samples, results):
                sample.pred_instances = res['ins_results']
            return batch_data_samples
        batch_inputs = self._select_frames(batch_inputs)
        (cls_list, mask_list, counts), geometry, ghost, _ = self._forward_3d(
            batch_inputs, batch_data_samples)
        points = batch_inputs.get('points')
        for b, sample in enumerate(batch_data_samples):
            logits = self.point_logits(mask_list[-1][b, :, :counts[b]], b, geometry, ghost,
                                       None if points is None else points[b])
            sample.pred_pts_seg = self.postprocess(cls_list[-1][b], logits)
        return batch_data_samples

    def _fuse_2d(self, cls: Tensor, masks: Tensor, batch_data_samples: Sequence) -> List[dict]:
        """Instance fusion of mmdet with K taken from the logits (B, Q, K+1) (open vocabulary)."""
        head = self.fusion_head_2d
        num_classes = cls.shape[-1] - 1
        saved = (head.num_classes, head.num_things_classes)
        head.num_classes = head.num_things_classes = num_classes
        try:
            return head.predict(cls, masks, batch_data_samples, rescale=True)
        finally:
            head.num_classes, head.num_things_classes = saved

    def postprocess(self, cls_logits: Tensor, point_logits: Tensor) -> PointData:
        """Instance (top-k, no NMS) and semantic predictions of one scene."""
        masks, labels, scores = instance_inference(
            cls_logits, point_logits, self.test_cfg.get('topk', 100),
            self.test_cfg.get('skip_classes', ()))
        semantic = semantic_inference(cls_logits, point_logits)
        return PointData(
            pts_semantic_mask=semantic,
            pts_instance_mask=masks,
            instance_labels=labels,
            instance_scores=scores)

    def _forward(self, batch_inputs: dict, batch_data_samples: Sequence = (), **kwargs):
        """Tensor mode: class and mask logits of every prediction."""
        if not self.is_3d(batch_inputs):
            feats, _ = self.extract_feat(batch_inputs)
            return self.decode_head.forward(feats, batch_data_samples)
        (cls_list, mask_list, _), _, _, _ = self._forward_3d(batch_inputs, batch_data_samples)
        return cls_list, mask_list
