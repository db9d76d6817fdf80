"""Prediction points: where ODIN predicts 3D masks, and how they map to evaluation points.

ODIN predicts one mask logit per *prediction point* (docs/specification.md §2.6, §2.8, §2.11):

* **sensor points** (:class:`SensorPoints`): the 2 cm voxels of the stride-4 pixels of all views;
  evaluation points (e.g. the dataset's points) get the logits IDW-interpolated (k nearest voxel
  centroids) from them;
* **mesh points** (:class:`MeshPoints`): the scene's mesh vertices ("ghost points") voxelised at
  2 cm; each vertex takes the logit of its voxel;
* **superpoints** (:class:`MeshPoints` with ``superpoints=True``): mesh voxels averaged per
  superpoint (segment); each vertex takes the logit of its voxel's segment.

A config picks one with ``prediction_points=dict(type='SensorPoints')`` or
``dict(type='MeshPoints', voxel_size=0.02, superpoints=True, visibility_thresh=1e-3)``. The
builder turns a batch into a :class:`PredictionPointSet`, which every later step asks:

* the pixel decoder: on which points the stride-4 mask features are computed
  (:attr:`PredictionPointSet.mesh_voxels`: None = on the res2 pixels);
* the head: the per-scene mask features of the prediction points (:meth:`pool_features`), the
  points' xyz as IDW source of the attention masks (:attr:`src_xyz`, :meth:`to_source`), the
  training targets (:meth:`build_targets`);
* inference: the logits of the evaluation points (:meth:`lift_logits`).
"""
from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch
from mmdet3d.registry import TASK_UTILS
from mmengine.structures import InstanceData
from torch import Tensor

from projects.odin.layers.geometry import voxelize
from projects.odin.ops import scatter_mean, scatter_min
from projects.odin.ops.utils import scene_ranges

from . import neighbors
from .multiview import MultiViewGeometry


@dataclass
class MeshVoxels:
    """Mesh ("ghost") points of a batch, voxelised.

    Attributes:
        voxel_xyz: mesh-voxel centroids of all scenes concatenated, shape (N_mv, 3).
        voxel_offsets: cumulative mesh-voxel count per scene, shape (B,).
        p2v: per scene, kept mesh vertex -> local mesh-voxel id, each (N_b,).
        kept: per scene, indices of the mesh vertices kept (training: those the views observe).
        segments: per scene, mesh voxel -> local segment id (0..S_b-1), each (N_mv_b,), or None.
    """

    voxel_xyz: Tensor
    voxel_offsets: Tensor
    p2v: List[Tensor]
    kept: List[Tensor]
    segments: Optional[List[Tensor]] = None

    @property
    def voxel_counts(self) -> List[int]:
        """Number of mesh voxels of every scene."""
        return [e - s for s, e in scene_ranges(self.voxel_offsets)]


class PredictionPointSet:
    """The prediction points of one batch (see the module docstring).

    Args:
        geometry: the batch's multi-view geometry (res2..res5).
        mesh_voxels: the mesh voxels in mesh / superpoint mode, None for sensor points.
    """

    def __init__(self, geometry: MultiViewGeometry,
                 mesh_voxels: Optional[MeshVoxels] = None) -> None:
        self.geometry = geometry
        self.mesh_voxels = mesh_voxels

    # ------------------------------------------------------------------ feature side
    @property
    def _voxels(self):
        """(xyz, offsets, counts) of the voxels carrying mask features."""
        if self.mesh_voxels is None:
            res2 = self.geometry[0]
            return res2.voxel_xyz, res2.voxel_offsets, res2.voxel_counts
        mv = self.mesh_voxels
        return mv.voxel_xyz, mv.voxel_offsets, mv.voxel_counts

    @property
    def src_xyz(self) -> Tensor:
        """Xyz of the points carrying mask features (IDW source of attention masks), (N_src, 3)."""
        return self._voxels[0]

    @property
    def src_offsets(self) -> Tensor:
        """Cumulative count of those points per scene, shape (B,)."""
        return self._voxels[1]

    def pool_features(self, mask_features) -> List[Tensor]:
        """Mask features of the prediction points, per scene.

        Args:
            mask_features: the pixel decoder's stride-4 features: averaged per res2 voxel
                (N_vox2, C) (sensor points), or a list of (C, N_mv_b) per scene (mesh voxels).

        Returns:
            list[Tensor]: per scene (C, N_pred_b).
        """
        if self.mesh_voxels is None:
            offsets = self.geometry[0].voxel_offsets
            return [mask_features[s:e].t() for s, e in scene_ranges(offsets)]
        per_scene = list(mask_features)
        segments = self.mesh_voxels.segments
        if segments is None:
            return per_scene
        return [scatter_mean(f.t(), seg, int(seg.max()) + 1).t()
                for f, seg in zip(per_scene, segments)]

    def to_source(self, b: int, logits: Tensor) -> Tensor:
        """Logits of scene ``b``'s prediction points ``(Q, N_pred_b)`` on its feature points."""
        if self.mesh_voxels is not None and self.mesh_voxels.segments is not None:
            return logits[:, self.mesh_voxels.segments[b]]
        return logits

    # ------------------------------------------------------------------ evaluation side
    def lift_logits(self, b: int, logits: Tensor, points: Optional[Tensor] = None) -> Tensor:
        """Lift scene ``b``'s mask logits to its evaluation points.

        Args:
            b: scene index.
            logits: shape (Q, N_pred_b).
            points: evaluation points (N, 3+) (sensor points; None = the res2 pixels). Mesh
                modes evaluate on the kept mesh vertices and ignore it.

        Returns:
            Tensor: shape (Q, N).
        """
        if self.mesh_voxels is not None:
            return self.to_source(b, logits)[:, self.mesh_voxels.p2v[b]]
        res2 = self.geometry[0]
        s, e = scene_ranges(res2.voxel_offsets)[b]
        if points is None:
            ps, pe = scene_ranges(res2.point_offsets)[b]
            return logits[:, res2.p2v[ps:pe] - s]
        pts = points[:, :3].float()
        src = res2.voxel_xyz[s:e]
        out = neighbors.idw(logits.t(), src, src.new_tensor([e - s]).long(), pts,
                            pts.new_tensor([len(pts)]).long(), self.geometry.num_neighbors)
        return out.t()

    # ------------------------------------------------------------------ training targets
    def build_targets(self, batch_data_samples: Sequence, points: Sequence[Tensor],
                      num_classes: int) -> List[InstanceData]:
        """Per-scene boolean instance masks on the prediction points.

        A prediction point belongs to an instance if more than half of its member points do
        (mesh modes: kept vertices per voxel, then voxels per superpoint); sensor voxels take the
        labels of their nearest input point. Instances whose majority label is < 0 or
        >= ``num_classes`` are dropped.

        Args:
            batch_data_samples: samples with ``gt_pts_seg.pts_instance_mask`` /
                ``pts_semantic_mask`` over ``points``.
            points: per scene the input points (N_b, 3+).
            num_classes: K of the batch.

        Returns:
            list[InstanceData]: per scene ``labels`` (M,) and ``masks`` (M, N_pred_b) bool.
        """
        targets = []
        for b, sample in enumerate(batch_data_samples):
            gt = sample.gt_pts_seg
            device = points[b].device
            inst = gt.pts_instance_mask.to(device).long()
            sem = gt.pts_semantic_mask.to(device).long()
            if self.mesh_voxels is not None:
                mv = self.mesh_voxels
                inst, sem = inst[mv.kept[b]], sem[mv.kept[b]]
                p2v, n_vox = mv.p2v[b], mv.voxel_counts[b]
            else:
                res2 = self.geometry[0]
                s, e = scene_ranges(res2.voxel_offsets)[b]
                n_vox = e - s
                pts = points[b][:, :3].float()
                nn_idx, _ = neighbors.knn(res2.voxel_xyz[s:e], pts, 1,
                                          pts.new_tensor([n_vox]).long(),
                                          pts.new_tensor([len(pts)]).long())
                inst, sem = inst[nn_idx[:, 0]], sem[nn_idx[:, 0]]
                p2v = torch.arange(n_vox, device=device)
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
                n_pred = n_vox if self.mesh_voxels is None or self.mesh_voxels.segments is None \
                    else int(self.mesh_voxels.segments[b].max()) + 1
                targets.append(InstanceData(labels=inst.new_zeros(0),
                                            masks=inst.new_zeros(0, n_pred, dtype=torch.bool)))
                continue
            m = torch.stack(masks).float()  # (M, N)
            frac = scatter_mean(m.t(), p2v, n_vox).t()  # (M, N_vox)
            if self.mesh_voxels is not None and self.mesh_voxels.segments is not None:
                seg = self.mesh_voxels.segments[b]
                frac = scatter_mean(frac.t(), seg, int(seg.max()) + 1).t()
            targets.append(InstanceData(labels=torch.stack(labels), masks=frac > 0.5))
        return targets


@TASK_UTILS.register_module()
class SensorPoints:
    """Predict on the 2 cm voxels of the stride-4 pixels (sensor points).

    See docs/specification.md §2.6.
    """

    def __call__(self, batch_inputs: dict, geometry: MultiViewGeometry,
                 training: bool) -> PredictionPointSet:
        """The batch's prediction points (the geometry's res2 voxels)."""
        return PredictionPointSet(geometry)


@TASK_UTILS.register_module()
class MeshPoints:
    """Predict on the mesh vertices voxelised at ``voxel_size`` (ghost points).

    See docs/specification.md §2.6, §2.7.

    Args:
        voxel_size: voxel edge of the mesh points (m).
        superpoints: average mask features over ``inputs['superpoints']`` (segments).
        visibility_thresh: at training time only mesh points whose squared distance to the
            chunk's stride-4 points is below this are kept (None keeps all).
    """

    def __init__(self, voxel_size: float = 0.02, superpoints: bool = True,
                 visibility_thresh: Optional[float] = 1e-3) -> None:
        self.voxel_size = voxel_size
        self.superpoints = superpoints
        self.visibility_thresh = visibility_thresh

    def __call__(self, batch_inputs: dict, geometry: MultiViewGeometry,
                 training: bool) -> PredictionPointSet:
        """Voxelise the mesh points and map superpoints to mesh voxels.

        Args:
            batch_inputs: with ``points`` (per scene (N_b, 3+)) and optionally ``superpoints``.
            geometry: the batch's multi-view geometry.
            training: keep only observed mesh points.

        Returns:
            PredictionPointSet: with its :class:`MeshVoxels`.
        """
        points = batch_inputs.get('points')
        if points is None:
            raise ValueError('mesh prediction points need inputs["points"] (mesh vertices); '
                             "use prediction_points=dict(type='SensorPoints') for sensor points")
        res2 = geometry[0]
        kept, xyz_list = [], []
        for (s, e), pts in zip(scene_ranges(res2.point_offsets), points):
            xyz = pts[:, :3].float()
            idx = torch.arange(len(xyz), device=xyz.device)
            if training and self.visibility_thresh is not None:
                src = res2.point_xyz[s:e]
                _, dist = neighbors.knn(xyz, src, 1, xyz.new_tensor([len(xyz)]).long(),
                                        xyz.new_tensor([len(src)]).long())
                visible = torch.nonzero(dist[:, 0]**2 < self.visibility_thresh).squeeze(1)
                if visible.numel():
                    idx = visible
            kept.append(idx)
            xyz_list.append(xyz[idx])
        offsets = torch.cumsum(torch.tensor([len(x) for x in xyz_list]), 0).to(res2.p2v.device)
        p2v, voxel_offsets, voxel_xyz = voxelize(torch.cat(xyz_list), offsets, self.voxel_size)
        vstarts = [s for s, _ in scene_ranges(voxel_offsets)]
        p2v_list = [p2v[s:e] - vstarts[b] for b, (s, e) in enumerate(scene_ranges(offsets))]
        segments = None
        superpoints = batch_inputs.get('superpoints')
        if self.superpoints and superpoints is not None:
            segments = []
            for b, sp in enumerate(superpoints):
                n_vox = int(voxel_offsets[b]) - vstarts[b]
                seg = scatter_min(sp[kept[b]].long(), p2v_list[b], n_vox)
                segments.append(torch.unique(seg, return_inverse=True)[1])
        mesh = MeshVoxels(voxel_xyz, voxel_offsets.long(), p2v_list, kept, segments)
        return PredictionPointSet(geometry, mesh)
