"""The multi-view encoder: ODIN's one 3D forward of backbone, 3D fusion and pixel decoder.

Every per-view operation of ODIN (backbone stages, frozen BatchNorm, GroupNorm per map, Swin
windows, the deformable encoder, the stride-4 convs) acts on each view alone; every cross-view
operation (fusion layers, decoder memory, mask features of the prediction points) reads voxels.
So a 3D batch runs *stage-major over chunks of views*: each per-view segment runs on one chunk at
a time and hands its features to voxel sums
(:class:`~projects.odin.structures.multiview_geometry.VoxelSum`); each fusion runs once on the
voxels; the fused voxels are broadcast back per chunk. The whole batch is one chunk
(``view_chunk=0``), so training, inference and the bounded-memory settings all run this one
orchestration (docs/model.md §5).

In training with ``view_chunk > 0`` every chunk's segment runs under
``torch.utils.checkpoint`` (``use_reentrant=False``): its activations are recomputed in the
backward pass, so the step holds one chunk's activations plus the stage boundaries (voxel sums,
pre-fusion states, the encoder's input projections), see docs/training.md.

The encoder owns no parameters: it orchestrates the detector's ``backbone`` and the head's
``pixel_decoder``, whose state-dict keys (``backbone.*``, ``decode_head.pixel_decoder.*``) stay
those of the official checkpoints.
"""
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple, Union

from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..structures.multiview_geometry import LevelGeometry, MultiViewGeometry, VoxelSum
from ..structures.multiview_images import MultiViewImages
from .prediction_points import PredictionPointSet

#: the images of a 3D batch: as loaded (normalised per chunk) or normalised, (B*V, 3, H, W)
Images = Union[MultiViewImages, Tensor]


def chunk_images(imgs: Images, start: int, end: int) -> Tensor:
    """Normalised, padded images of the flattened views ``start..end``, (n, 3, H, W).

    A :class:`MultiViewImages` is normalised here, for these views only (the float images of
    all views are never held); a tensor is taken as already normalised.
    """
    if isinstance(imgs, MultiViewImages):
        return imgs.normalized(start, end)
    return imgs[start:end]


class ChunkPlan:
    """How a 3D batch is cut into view chunks and how each chunk's work runs.

    Args:
        num_views: views of the batch (``B*V``, flattened).
        view_chunk: views per chunk (0 = all views in one chunk).
        point_chunk: pixels per chunk of the point-wise steps (the keys' positional encoding;
            0 = all pixels of a scene at once).
        recompute: run every chunk's work under ``torch.utils.checkpoint`` (training in bounded
            memory: activations recomputed in the backward pass).
        hold_res2_views: batches of at most this many views hold every chunk's res2 from the
            backbone pass for the stride-4 mask features instead of recomputing it (stem and
            first stage) per chunk; more memory (256 floats per stride-4 pixel: 4.9 MB per
            240x320 view), less time. 0 = only a batch of one chunk holds it. The results are
            the same either way (the same chunks run the same operations).

    Raises:
        ValueError: a negative ``view_chunk``, ``point_chunk`` or ``hold_res2_views``.
    """

    def __init__(self, num_views: int, view_chunk: int = 0, point_chunk: int = 0,
                 recompute: bool = False, hold_res2_views: int = 0) -> None:
        if view_chunk < 0:
            raise ValueError(f'view_chunk must be >= 0 (0 = all views), got {view_chunk}')
        if point_chunk < 0:
            raise ValueError(f'point_chunk must be >= 0 (0 = all pixels), got {point_chunk}')
        if hold_res2_views < 0:
            raise ValueError(f'hold_res2_views must be >= 0, got {hold_res2_views}')
        step = view_chunk or num_views
        self.ranges: List[Tuple[int, int]] = [(s, min(s + step, num_views))
                                              for s in range(0, num_views, step)]
        self.point_chunk = point_chunk
        self.recompute = recompute
        self.hold_res2_views = hold_res2_views

    @property
    def num_views(self) -> int:
        """Views of the batch (the end of the last chunk)."""
        return self.ranges[-1][1] if self.ranges else 0

    @property
    def holds_res2(self) -> bool:
        """Whether res2 is held from the backbone pass (else recomputed per chunk when needed).

        Held for one chunk, or for at most ``hold_res2_views`` views; never under
        recomputation (the backward pass rebuilds the activations anyway).
        """
        return not self.recompute and (len(self.ranges) <= 1
                                       or self.num_views <= self.hold_res2_views)

    def __len__(self) -> int:
        return len(self.ranges)

    def point_ranges(self, num_points: int) -> List[Tuple[int, int]]:
        """``(start, end)`` ranges of ``point_chunk`` points covering ``0..num_points``."""
        step = self.point_chunk if 0 < self.point_chunk < num_points else max(num_points, 1)
        return [(s, min(s + step, num_points)) for s in range(0, num_points, step)]

    def run(self, fn: Callable, *args):
        """``fn(*args)``, under activation checkpointing when :attr:`recompute`."""
        if self.recompute:
            return checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)


@dataclass
class MultiViewFeatures:
    """What the 3D decoder reads from the multi-view encoder.

    Attributes:
        voxel_feats: the fused pixel-decoder levels per voxel, lowest resolution first (res5,
            res4, res3), each (N_vox_l, C).
        mask_feats: stride-4 mask features of the prediction points, per scene (C, N_pred_b).
        points: the batch's prediction points (and its geometry).
        plan: the chunk plan of the batch (the decoder's point-wise steps follow it).
    """

    voxel_feats: List[Tensor]
    mask_feats: List[Tensor]
    points: PredictionPointSet
    plan: ChunkPlan

    @property
    def geometry(self) -> MultiViewGeometry:
        """The batch's multi-view geometry."""
        return self.points.geometry

    @property
    def pred_counts(self) -> List[int]:
        """Prediction points of every scene."""
        return [f.shape[1] for f in self.mask_feats]


class Res2Features:
    """Backbone res2 of a 3D batch, as the prediction points ask for it.

    Either averaged per res2 voxel (pooled while the backbone ran,
    ``PredictionPointSet.res2_on_voxels``) or per pixel, chunk by chunk: held from the backbone
    pass when the plan holds it (:attr:`ChunkPlan.holds_res2`: one chunk, or few enough views),
    else recomputed per chunk (stem and the first stage, about a fifth of a ResNet's work) so
    that it is never held for all views.
    """

    def __init__(self, encoder: 'MultiViewEncoder', imgs: Images, plan: ChunkPlan,
                 geo: LevelGeometry, voxel_sum: Optional[VoxelSum],
                 held: List[Optional[Tensor]]) -> None:
        self._encoder = encoder
        self._imgs = imgs
        self._plan = plan
        self._geo = geo
        self._sum = voxel_sum
        self._held = held

    def voxel_mean(self) -> Tensor:
        """Res2 averaged per res2 voxel, (N_vox2, C2)."""
        if self._sum is None:
            raise RuntimeError('res2 was not pooled into voxels: the prediction points must set '
                               'res2_on_voxels = True to read it per voxel')
        return self._sum.mean()

    def pool_map(self, fn: Callable[[Tensor, int], Tensor]) -> Tensor:
        """Per-pixel features of every chunk from its res2, averaged into the res2 voxels.

        Args:
            fn: ``fn(res2 of a chunk (n, C2, h, w), first view) -> (n, C, h, w)``.

        Returns:
            Tensor: shape (N_vox2, C).
        """
        acc = self._geo.voxel_sum()
        for c, (s, e) in enumerate(self._plan.ranges):
            held, self._held[c] = self._held[c], None
            if held is not None:
                out = self._plan.run(fn, held, s)
            else:
                out = self._plan.run(self._recomputed, fn, s, e)
            self._geo.pool_views(out, s, acc)
        return acc.mean()

    def _recomputed(self, fn: Callable[[Tensor, int], Tensor], start: int, end: int):
        return fn(self._encoder.first_level(chunk_images(self._imgs, start, end)), start)


class MultiViewEncoder:
    """Backbone stages, fusion blocks, pixel decoder and mask features of a 3D batch.

    Not a module: it runs the detector's ``backbone`` (an ODIN backbone with stage steps and
    ``fusion_blocks``) and ``pixel_decoder`` (:class:`ODINPixelDecoder`) chunk by chunk, so every
    parameter keeps its place (and state-dict key) in them.

    Args:
        backbone: :class:`ODINResNet` / :class:`ODINSwinTransformer`.
        pixel_decoder: :class:`ODINPixelDecoder`.
    """

    def __init__(self, backbone: nn.Module, pixel_decoder: nn.Module) -> None:
        self.backbone = backbone
        self.pixel_decoder = pixel_decoder

    def __call__(self, imgs: Images, points: PredictionPointSet,
                 plan: ChunkPlan) -> MultiViewFeatures:
        """Encode a 3D batch.

        1. the backbone, stage by stage (:meth:`_backbone`); the pixel decoder's input
           projections are taken as soon as a chunk has res3..res5; res2 is pooled into its
           voxels, held or dropped, as the prediction points need it;
        2. the deformable encoder per chunk, pooled per level; 3D fusion of every level;
        3. the stride-4 mask features of the prediction points
           (:meth:`PredictionPointSet.mask_features`).

        Args:
            imgs: the images of all views: a :class:`MultiViewImages` (normalised here per
                view chunk, where the chunk is first used) or normalised, (B*V, 3, H, W).
            points: the batch's prediction points (with its geometry).
            plan: view chunks and recomputation (:class:`ChunkPlan`).

        Returns:
            MultiViewFeatures: what the decoder reads.
        """
        geometry = points.geometry
        pd = self.pixel_decoder
        mask_geo = geometry[pd.mask_level]
        res2_sum = mask_geo.voxel_sum() if points.res2_on_voxels else None
        hold_res2 = not points.res2_on_voxels and plan.holds_res2
        projs, res2_held = self._backbone(imgs, geometry, plan, res2_sum, hold_res2)
        levels = pd.num_encoder_levels
        accs = [geometry[pd.backbone_level(i)].voxel_sum() for i in range(levels)]
        for c, (s, _) in enumerate(plan.ranges):
            chunk, projs[c] = projs[c], None
            for i, out in enumerate(plan.run(pd.encode_projected, chunk)):
                geometry[pd.backbone_level(i)].pool_views(out, s, accs[i])
            del chunk
        voxel_outs = pd.fuse_levels([a.mean() for a in accs], geometry)
        del accs
        res2 = Res2Features(self, imgs, plan, mask_geo, res2_sum, res2_held)
        mask_feats = points.mask_features(pd, voxel_outs, res2)
        return MultiViewFeatures(voxel_outs, mask_feats, points, plan)

    # ------------------------------------------------------------------ backbone
    def _backbone(self, imgs: Images, geometry: MultiViewGeometry, plan: ChunkPlan,
                  res2_sum: Optional[VoxelSum], hold_res2: bool
                  ) -> Tuple[List[List[Optional[Tensor]]], List[Optional[Tensor]]]:
        """Stage-major backbone with 3D fusion, one segment per fused stage.

        A segment runs, per chunk: the residual of the previous fusion block (its fused voxels
        broadcast to the chunk), the stages up to the next fused stage, and that block's input
        projection, pooled into the stage's voxel sums. Once all chunks are in, the voxels are
        fused once. Only the pre-fusion state of the stage being fused is kept for all views.

        Returns:
            tuple: per chunk the pixel decoder's input projections of the encoder levels
            (lowest resolution first), and per chunk res2 when ``hold_res2`` (else None).
        """
        bb, pd = self.backbone, self.pixel_decoder
        projs: List[List[Optional[Tensor]]] = [[None] * pd.num_encoder_levels for _ in plan.ranges]
        res2_held: List[Optional[Tensor]] = [None] * len(plan)
        # the first segment normalises its chunk's images itself (under recomputation they are
        # rebuilt in the backward pass, not saved)
        states: list = [(imgs, s, e) for s, e in plan.ranges]
        fused: Optional[Tuple[int, Tensor]] = None  # (stage, fused voxels) of the last block
        first = 0
        for end_stage in list(bb.fusion_stages) + [None]:
            last = bb.num_stage_steps - 1 if end_stage is None else end_stage
            acc = geometry[end_stage].voxel_sum() if end_stage is not None else None
            for c, (s, _) in enumerate(plan.ranges):
                state, states[c] = states[c], None
                state, in_feats, outs = plan.run(self._segment, state, fused, geometry, s,
                                                 first, last, end_stage)
                if acc is not None:
                    # pooled outside the segment: a recomputed segment must not add twice
                    geometry[end_stage].pool_views(in_feats, s, acc)
                    states[c] = state
                del state, in_feats
                for level, out in outs.items():
                    enc = pd.encoder_level(level)
                    if enc is not None:
                        projs[c][enc] = out
                    elif level == pd.mask_level:
                        if res2_sum is not None:
                            geometry[level].pool_views(out, s, res2_sum)
                        if hold_res2:
                            res2_held[c] = out
                del outs
            if end_stage is None:
                break
            block = bb.fusion_block(end_stage)
            fused = (end_stage, block.fuse_voxels(acc.mean(), geometry[end_stage]))
            first = end_stage + 1
        return projs, res2_held

    def _segment(self, state, fused: Optional[Tuple[int, Tensor]], geometry: MultiViewGeometry,
                 start: int, first: int, last: int, end_stage: Optional[int]):
        """One chunk's part of a backbone segment (see :meth:`_backbone`).

        Args:
            state: ``(images, start, end)`` of the chunk (first segment, see
                :func:`chunk_images`) or its pre-fusion state of the stage fused last.
            fused: ``(stage, fused voxels (N_vox, embed_dims))`` of that block, or None.
            geometry: the batch's geometry.
            start: first view of the chunk (flattened ``B*V`` index).
            first: first stage to run.
            last: last stage to run (``end_stage`` or the last stage).
            end_stage: the fused stage that ends the segment, or None.

        Returns:
            tuple: the state after ``last`` (pre-fusion when ``end_stage``), the input
            projection of ``end_stage``'s block (n, embed_dims, h, w) or None, and the output
            levels emitted, ``{backbone level: feats}`` (encoder levels already through the
            pixel decoder's input projection).
        """
        bb = self.backbone
        outs: Dict[int, Tensor] = {}
        if fused is None:
            state = bb.stem_forward(chunk_images(*state))
        else:
            stage, voxels = fused
            fmap = bb.fusion_block(stage)(bb.fusion_map(state), voxels, geometry[stage], start)
            state = self._emit(stage, bb.from_fusion_map(state, fmap), outs)
        in_feats = None
        for i in range(first, last + 1):
            state = bb.stage_forward(i, state)
            if i == end_stage:
                in_feats = bb.fusion_block(i).in_proj(bb.fusion_map(state))
            else:
                state = self._emit(i, state, outs)
        return state, in_feats, outs

    def _emit(self, i: int, state, outs: Dict[int, Tensor]):
        """Stage ``i``'s output step; its output level goes into ``outs``."""
        bb, pd = self.backbone, self.pixel_decoder
        state, out = bb.stage_output(i, state)
        if out is not None:
            level = bb.output_level(i)
            enc = pd.encoder_level(level)
            outs[level] = pd.input_convs[enc](out) if enc is not None else out
        return state

    def first_level(self, imgs: Tensor) -> Tensor:
        """Backbone res2 of some views, recomputed (res2 has no fusion block before it).

        Args:
            imgs: normalised images, (n, 3, H, W).

        Returns:
            Tensor: res2, (n, C2, H/4, W/4).

        Raises:
            ValueError: res2 is fused in 3D or not an output of the backbone.
        """
        bb = self.backbone
        if 0 in bb.fusion_stages or 0 not in bb.out_indices:
            raise ValueError('res2 can be recomputed per view only when it is an output and '
                             'has no fusion block')
        return bb.stage_output(0, bb.stage_forward(0, bb.stem_forward(imgs)))[1]
