"""Prediction points: where ODIN predicts 3D masks, and how they map to evaluation points.

ODIN predicts one mask logit per *prediction point* (docs/specification.md §2.6, §2.8, §2.11):

* **sensor points** (:class:`SensorPointsBuilder`): the 2 cm voxels of the stride-4 pixels of
  all views; evaluation points (e.g. the dataset's points) get the logits IDW-interpolated
  (k nearest voxel centroids) from them;
* **mesh points** (:class:`MeshPointsBuilder`): the scene's mesh vertices ("ghost points")
  voxelised at 2 cm; each vertex takes the logit of its voxel;
* **superpoints** (:class:`MeshPointsBuilder` with ``superpoints=True``): mesh voxels averaged
  per superpoint (segment); each vertex takes the logit of its voxel's segment.

A config picks one with ``prediction_points=dict(type='SensorPointsBuilder')`` or
``dict(type='MeshPointsBuilder', voxel_size=0.02, superpoints=True, visibility_thresh=1e-3)``.
The builder (registered in ``TASK_UTILS``) turns a batch into a :class:`PredictionPointSet`
(:class:`SensorPointSet` or :class:`MeshPointSet`), which every later step asks:

* the multi-view encoder: the stride-4 mask features of the prediction points
  (:meth:`PredictionPointSet.mask_features`, with the pixel decoder's stride-4 convs) and whether
  they read backbone res2 per voxel (:attr:`PredictionPointSet.res2_on_voxels`);
* the head: the points' xyz as IDW source of the attention masks (:attr:`src_xyz`,
  :meth:`to_source`) and the training targets (:meth:`build_targets`);
* inference: the logits of the evaluation points (:meth:`lift_logits`).

A new place to predict masks is a subclass of :class:`PredictionPointSet` (these methods) and a
builder registered in ``TASK_UTILS`` that returns it.

The builders' earlier names ``MeshPoints`` and ``SensorPoints`` (``dict(type='MeshPoints')``
in older configs and checkpoints' saved configs) still build them, with a
``DeprecationWarning``.
"""
from dataclasses import dataclass
from typing import TYPE_CHECKING, List, Optional, Sequence

import torch
from mmdet3d.registry import TASK_UTILS
from mmengine.structures import InstanceData
from torch import Tensor

from projects.odin.ops import scatter_mean, scatter_min
from projects.odin.ops.utils import scene_ranges
from projects.odin.structures.geometry import voxelize
from projects.odin.utils.deprecation import warn_moved

from ..structures import neighbors
from ..structures.multiview_geometry import MultiViewGeometry

if TYPE_CHECKING:  # annotations only (the encoder and the decoder import this module)
    from .multiview_encoder import Res2Features
    from .pixel_decoder import ODINPixelDecoder


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
    """The prediction points of one batch (see the module docstring); base of the two kinds.

    Everything that depends on where masks are predicted is a method of a subclass
    (:class:`SensorPointSet`, :class:`MeshPointSet`); the encoder, the pixel decoder and the head
    call these methods without asking which kind they have.

    Args:
        geometry: the batch's multi-view geometry (res2..res5).
        input_points: per scene the input points (N_b, 3+) (mesh vertices or the dataset's
            evaluation points), or None (sensor points evaluated on the res2 pixels).
    """

    #: whether :meth:`mask_features` reads backbone res2 averaged per res2 voxel (then the
    #: encoder pools res2 as soon as a chunk has it) instead of per pixel
    res2_on_voxels = False

    def __init__(self, geometry: MultiViewGeometry,
                 input_points: Optional[Sequence[Tensor]] = None) -> None:
        self.geometry = geometry
        self.input_points = input_points

    # ------------------------------------------------------------------ feature side
    @property
    def src_xyz(self) -> Tensor:
        """Xyz of the points carrying mask features (IDW source of attention masks), (N_src, 3)."""
        raise NotImplementedError

    @property
    def src_offsets(self) -> Tensor:
        """Cumulative count of those points per scene, shape (B,)."""
        raise NotImplementedError

    def mask_features(self, decoder: 'ODINPixelDecoder', voxel_outs: List[Tensor],
                      res2: 'Res2Features') -> List[Tensor]:
        """Stride-4 mask features of the prediction points, per scene.

        Args:
            decoder: the pixel decoder (its stride-4 convs, :meth:`ODINPixelDecoder.stride4`).
            voxel_outs: the fused encoder levels per voxel, lowest resolution first, each
                (N_vox_l, C).
            res2: backbone res2 of the batch (:class:`Res2Features`).

        Returns:
            list[Tensor]: per scene (C, N_pred_b).
        """
        raise NotImplementedError

    def to_source(self, b: int, logits: Tensor) -> Tensor:
        """Logits of scene ``b``'s prediction points ``(Q, N_pred_b)`` on its feature points."""
        return logits

    # ------------------------------------------------------------------ evaluation side
    def lift_logits(self, b: int, logits: Tensor) -> Tensor:
        """Lift scene ``b``'s mask logits to its evaluation points.

        Args:
            b: scene index.
            logits: shape (Q, N_pred_b).

        Returns:
            Tensor: shape (Q, N): mesh modes on the kept mesh vertices, sensor points on the
            input points (IDW) or, without input points, on the res2 pixels.
        """
        raise NotImplementedError

    # ------------------------------------------------------------------ training targets
    def build_targets(self, batch_data_samples: Sequence,
                      num_classes: int) -> List[InstanceData]:
        """Per-scene boolean instance masks on the prediction points.

        A prediction point belongs to an instance if more than half of its member points do
        (mesh modes: kept vertices per voxel, then voxels per superpoint); sensor voxels take the
        labels of their nearest input point. Instances whose majority label is < 0 or
        >= ``num_classes`` are dropped.

        Args:
            batch_data_samples: samples with ``gt_pts_seg.pts_instance_mask`` /
                ``pts_semantic_mask`` over the input points.
            num_classes: K of the batch.

        Returns:
            list[InstanceData]: per scene ``labels`` (M,) and ``masks`` (M, N_pred_b) bool.
        """
        if self.input_points is None:
            raise ValueError('training targets need inputs["points"] with their labels')
        targets = []
        for b, sample in enumerate(batch_data_samples):
            gt = sample.gt_pts_seg
            device = self.input_points[b].device
            inst = gt.pts_instance_mask.to(device).long()
            sem = gt.pts_semantic_mask.to(device).long()
            inst, sem, p2v, n_vox = self._labels_on_voxels(b, inst, sem)
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
                targets.append(InstanceData(
                    labels=inst.new_zeros(0),
                    masks=inst.new_zeros(0, self._num_pred(b, n_vox), dtype=torch.bool)))
                continue
            m = torch.stack(masks).float()  # (M, N)
            frac = self._voxel_fraction_to_pred(b, scatter_mean(m.t(), p2v, n_vox).t())
            targets.append(InstanceData(labels=torch.stack(labels), masks=frac > 0.5))
        return targets

    def _labels_on_voxels(self, b: int, inst: Tensor, sem: Tensor) -> tuple:
        """Labels of the points that vote for the voxels of scene ``b``.

        Returns:
            tuple: instance and semantic labels of the voting points, their local voxel ids and
            the scene's voxel count.
        """
        raise NotImplementedError

    def _num_pred(self, b: int, n_vox: int) -> int:
        """Prediction points of scene ``b`` (``n_vox`` voxels)."""
        return n_vox

    def _voxel_fraction_to_pred(self, b: int, frac: Tensor) -> Tensor:
        """Per-voxel instance fractions ``(M, n_vox)`` as fractions of the prediction points."""
        return frac


class SensorPointSet(PredictionPointSet):
    """Prediction points on the 2 cm voxels of the stride-4 pixels (sensor points)."""

    @property
    def src_xyz(self) -> Tensor:
        """The res2 voxel centroids, (N_vox2, 3)."""
        return self.geometry[0].voxel_xyz

    @property
    def src_offsets(self) -> Tensor:
        """Cumulative res2 voxel count per scene, (B,)."""
        return self.geometry[0].voxel_offsets

    def mask_features(self, decoder: 'ODINPixelDecoder', voxel_outs: List[Tensor],
                      res2: 'Res2Features') -> List[Tensor]:
        """Sensor points: mask features per chunk of views, averaged into the res2 voxels.

        The fused highest-resolution level is IDW'd onto the res2 voxels, broadcast to the
        pixels, added to res2 in the stride-4 convs, and averaged into the res2 voxels.
        """
        geometry = self.geometry
        res2_geo = geometry[decoder.mask_level]
        up = geometry.idw(voxel_outs[-1], geometry[decoder.backbone_level(len(voxel_outs) - 1)],
                          res2_geo.voxel_xyz, res2_geo.voxel_offsets)  # (N_vox2, C)

        def chunk_features(feats: Tensor, start: int) -> Tensor:
            coarse = res2_geo.broadcast_views(up, start, start + feats.shape[0])
            return decoder.stride4(feats, coarse)

        mean = res2.pool_map(chunk_features)  # (N_vox2, C)
        return [mean[s:e].t() for s, e in scene_ranges(res2_geo.voxel_offsets)]

    def lift_logits(self, b: int, logits: Tensor) -> Tensor:
        """Sensor points: IDW (k nearest res2 voxels) onto the input points.

        Without input points, every res2 pixel takes the logits of its voxel.
        """
        res2 = self.geometry[0]
        s, e = scene_ranges(res2.voxel_offsets)[b]
        if self.input_points is None:
            ps, pe = scene_ranges(res2.point_offsets)[b]
            return logits[:, res2.p2v[ps:pe] - s]
        pts = self.input_points[b][:, :3].float()
        src = res2.voxel_xyz[s:e]
        out = neighbors.idw(logits.t(), src, src.new_tensor([e - s]).long(), pts,
                            pts.new_tensor([len(pts)]).long(), self.geometry.num_neighbors)
        return out.t()

    def _labels_on_voxels(self, b: int, inst: Tensor, sem: Tensor) -> tuple:
        res2 = self.geometry[0]
        s, e = scene_ranges(res2.voxel_offsets)[b]
        n_vox = e - s
        pts = self.input_points[b][:, :3].float()
        nn_idx, _ = neighbors.knn(res2.voxel_xyz[s:e], pts, 1, pts.new_tensor([n_vox]).long(),
                                  pts.new_tensor([len(pts)]).long())
        p2v = torch.arange(n_vox, device=inst.device)
        return inst[nn_idx[:, 0]], sem[nn_idx[:, 0]], p2v, n_vox


class MeshPointSet(PredictionPointSet):
    """Prediction points on the mesh voxels (ghost points), optionally per superpoint.

    Args:
        geometry: the batch's multi-view geometry.
        input_points: per scene the mesh vertices (N_b, 3+).
        mesh_voxels: the mesh voxels (and superpoints) of the batch.
    """

    res2_on_voxels = True

    def __init__(self, geometry: MultiViewGeometry, input_points: Sequence[Tensor],
                 mesh_voxels: MeshVoxels) -> None:
        super().__init__(geometry, input_points)
        self.mesh_voxels = mesh_voxels

    @property
    def src_xyz(self) -> Tensor:
        """The mesh-voxel centroids, (N_mv, 3)."""
        return self.mesh_voxels.voxel_xyz

    @property
    def src_offsets(self) -> Tensor:
        """Cumulative mesh-voxel count per scene, (B,)."""
        return self.mesh_voxels.voxel_offsets

    def mask_features(self, decoder: 'ODINPixelDecoder', voxel_outs: List[Tensor],
                      res2: 'Res2Features') -> List[Tensor]:
        """Mesh points: mask features on the mesh voxels, averaged per superpoint.

        Res2 (averaged per res2 voxel) and the fused highest-resolution level are IDW'd onto the
        mesh voxels and go through the stride-4 convs per scene.
        """
        geometry, mesh = self.geometry, self.mesh_voxels
        skip = geometry.idw(res2.voxel_mean(), geometry[decoder.mask_level], mesh.voxel_xyz,
                            mesh.voxel_offsets)
        cur = geometry.idw(voxel_outs[-1],
                           geometry[decoder.backbone_level(len(voxel_outs) - 1)],
                           mesh.voxel_xyz, mesh.voxel_offsets)
        per_scene = []
        for s, e in scene_ranges(mesh.voxel_offsets):
            # shape (N_mv_b, C) -> (1, C, N_mv_b, 1): a 1-pixel-wide image for the 1x1 convs
            feats = decoder.stride4(skip[s:e].t()[None, :, :, None],
                                    cur[s:e].t()[None, :, :, None])
            per_scene.append(feats[0, :, :, 0])
        if mesh.segments is None:
            return per_scene
        return [scatter_mean(f.t(), seg, int(seg.max()) + 1).t()
                for f, seg in zip(per_scene, mesh.segments)]

    def to_source(self, b: int, logits: Tensor) -> Tensor:
        """Superpoint logits copied to their mesh voxels (identity without superpoints)."""
        if self.mesh_voxels.segments is not None:
            return logits[:, self.mesh_voxels.segments[b]]
        return logits

    def lift_logits(self, b: int, logits: Tensor) -> Tensor:
        """Mesh modes: every kept mesh vertex takes the logit of its voxel (or superpoint)."""
        return self.to_source(b, logits)[:, self.mesh_voxels.p2v[b]]

    def _labels_on_voxels(self, b: int, inst: Tensor, sem: Tensor) -> tuple:
        mv = self.mesh_voxels
        return inst[mv.kept[b]], sem[mv.kept[b]], mv.p2v[b], mv.voxel_counts[b]

    def _num_pred(self, b: int, n_vox: int) -> int:
        segments = self.mesh_voxels.segments
        return n_vox if segments is None else int(segments[b].max()) + 1

    def _voxel_fraction_to_pred(self, b: int, frac: Tensor) -> Tensor:
        segments = self.mesh_voxels.segments
        if segments is None:
            return frac
        seg = segments[b]
        return scatter_mean(frac.t(), seg, int(seg.max()) + 1).t()


@TASK_UTILS.register_module()
class SensorPointsBuilder:
    """Builds the sensor prediction points of a batch (a :class:`SensorPointSet`).

    Predict on the 2 cm voxels of the stride-4 pixels, see docs/specification.md §2.6.
    """

    def __call__(self, batch_inputs: dict, geometry: MultiViewGeometry,
                 training: bool) -> PredictionPointSet:
        """The batch's prediction points (the geometry's res2 voxels)."""
        return SensorPointSet(geometry, batch_inputs.get('points'))


@TASK_UTILS.register_module()
class MeshPointsBuilder:
    """Builds the mesh prediction points of a batch (a :class:`MeshPointSet`).

    Predict on the mesh vertices voxelised at ``voxel_size`` (ghost points), optionally averaged
    per superpoint, see docs/specification.md §2.6, §2.7.

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
                             "use prediction_points=dict(type='SensorPointsBuilder') for sensor "
                             'points')
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
        return MeshPointSet(geometry, points, mesh)


def _warn_renamed_builder(old: str, new: str) -> None:
    """Warn once that the prediction-point builder ``old`` is now called ``new``."""
    # skip this function and the alias's __init__: the warning names the code that built it
    warn_moved(f"prediction_points=dict(type='{old}')", f"dict(type='{new}')", skip=2)


@TASK_UTILS.register_module()
class SensorPoints(SensorPointsBuilder):
    """Deprecated name of :class:`SensorPointsBuilder` (builds it, warning once)."""

    def __init__(self) -> None:
        _warn_renamed_builder('SensorPoints', 'SensorPointsBuilder')
        super().__init__()


@TASK_UTILS.register_module()
class MeshPoints(MeshPointsBuilder):
    """Deprecated name of :class:`MeshPointsBuilder` (builds it, warning once)."""

    def __init__(self, voxel_size: float = 0.02, superpoints: bool = True,
                 visibility_thresh: Optional[float] = 1e-3) -> None:
        _warn_renamed_builder('MeshPoints', 'MeshPointsBuilder')
        super().__init__(voxel_size, superpoints, visibility_thresh)
