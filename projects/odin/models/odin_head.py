"""ODIN head: Mask2Former's masked-attention decoder over 3D voxels or 2D pixels.

2D batches use mmdet's :class:`Mask2FormerHead` unchanged (sine positional encoding, point-sampled
losses). 3D batches (reference §2.8, §2.10):

* memory of level l = the fused pixel-decoder level averaged into its voxels, plus the level
  embedding; key positional encoding = a learned Conv1d-GN-ReLU-Conv1d MLP of every pixel's
  absolute xyz, averaged per voxel;
* masks are dot products of the query embeddings with the mask features of the mesh voxels
  (averaged per superpoint) or of the 2 cm res2 voxels (sensor points);
* the attention mask for the next level is the mask logits IDW-interpolated (k=8) from the
  mask-feature points to that level's voxel centroids, ``sigmoid < 0.5``;
* at training time the keys are randomly subsampled (800/3200/12800 for res5/res4/res3);
* losses: Hungarian matching (mmdet assigner and costs) and CE/BCE/Dice with deep supervision on
  random <= 50k-point subsets, normalised by the mean number of GT masks over GPUs.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.models.dense_heads import Mask2FormerHead
from mmdet.utils import reduce_mean
from mmdet3d.registry import MODELS
from mmengine.config import ConfigDict
from mmengine.structures import InstanceData
from torch import Tensor

from projects.odin.ops import scatter_mean

from .multiview import MultiViewGeometry, pad_to
from .neighbors import idw as idw_interpolate
from .pixel_decoder import GhostPoints


def _to_cfg(cfg):
    return ConfigDict(cfg) if isinstance(cfg, dict) and not isinstance(cfg, ConfigDict) else cfg


@MODELS.register_module()
class ODINHead(Mask2FormerHead):
    """Mask2Former head that also decodes multi-view 3D scenes.

    Args:
        sample_sizes: training-time number of memory keys kept per level (res5, res4, res3).
        num_neighbors: k of the IDW interpolation of attention masks.
        max_train_points: points per scene used for matching and mask losses.
        **kwargs: arguments of mmdet's :class:`Mask2FormerHead`.
    """

    def __init__(self,
                 sample_sizes: Sequence[int] = (800, 3200, 12800),
                 num_neighbors: int = 8,
                 max_train_points: int = 50000,
                 **kwargs) -> None:
        kwargs = {k: _to_cfg(v) for k, v in kwargs.items()}
        super().__init__(**kwargs)
        feat_channels = kwargs['feat_channels']
        self.sample_sizes = tuple(sample_sizes)
        self.num_neighbors = num_neighbors
        self.max_train_points = max_train_points
        # learned absolute-xyz positional encoding of the 3D memory keys
        self.pos_embed_3d = nn.Sequential(
            nn.Conv1d(3, feat_channels, 1), nn.GroupNorm(1, feat_channels), nn.ReLU(inplace=True),
            nn.Conv1d(feat_channels, feat_channels, 1))

    # ------------------------------------------------------------------ 3D forward
    def _memory_3d(self, multi_scale: List[Tensor], geometry: MultiViewGeometry,
                   record: Optional[dict]) -> List[dict]:
        """Voxel memory, positional encodings and key padding of every decoder level."""
        levels = []
        num_geo = len(geometry.levels)
        for i in range(self.num_transformer_feat_level):
            geo = geometry[num_geo - 1 - i]
            b, v, h, w = geo.shape
            mem = geo.pool(self.decoder_input_projs[i](multi_scale[i]))
            mem = mem + self.level_embed.weight[i].view(1, -1)
            # PE of every pixel's xyz (GroupNorm statistics per scene), averaged per voxel
            with torch.autocast(device_type=mem.device.type, enabled=False):
                xyz = geo.point_xyz.float().view(b, v * h * w, 3).transpose(1, 2)
                pe = self.pos_embed_3d(xyz).transpose(1, 2).reshape(-1, mem.shape[1])
                pos = scatter_mean(pe, geo.p2v, geo.num_voxels)
            counts, starts = geo.voxel_counts, geo.voxel_starts
            n_max = max(counts)
            mem_b = mem.new_zeros(b, n_max, mem.shape[1])
            pos_b = pos.new_zeros(b, n_max, pos.shape[1])
            pad = torch.ones(b, n_max, dtype=torch.bool, device=mem.device)
            for j, (s, n) in enumerate(zip(starts, counts)):
                mem_b[j, :n] = mem[s:s + n]
                pos_b[j, :n] = pos[s:s + n]
                pad[j, :n] = False
            keep = None
            if self.training and i < len(self.sample_sizes) and n_max > self.sample_sizes[i]:
                keep = torch.randperm(n_max, device=mem.device)[:self.sample_sizes[i]]
                mem_b, pos_b, pad = mem_b[:, keep], pos_b[:, keep], pad[:, keep]
            if record is not None and i < 3:
                record[f'decoder.layer{i}.cross_attn.memory'] = mem_b.transpose(0, 1)
                record[f'decoder.layer{i}.cross_attn.memory_pos'] = pos_b.transpose(0, 1)
            levels.append(dict(geo=geo, memory=mem_b, pos=pos_b, pad=pad, keep=keep))
        return levels

    def _head_3d(self, query: Tensor, mask_feats: Tensor, pred_counts: List[int],
                 point_logits_fn, src_xyz: Tensor, src_offsets: Tensor,
                 level: dict) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """Prediction head after a decoder layer, plus the next level's attention mask.

        Args:
            query: shape (B, Q, C).
            mask_feats: mask features of the prediction points, padded, shape (B, C, N_max).
            pred_counts: valid prediction points per scene.
            point_logits_fn: maps one scene's (Q, N_pred_b) logits to its mask-feature points.
            src_xyz: xyz of all mask-feature points, shape (N_src, 3).
            src_offsets: cumulative mask-feature point count per scene, shape (B,).
            level: next decoder level (from :meth:`_memory_3d`).

        Returns:
            tuple: cls logits (B, Q, K+1), mask logits (B, Q, N_max), raw attention mask
            (B, Q, N_vox_max) (True = masked, before the all-masked fix) and the attention mask
            repeated over heads and key-subsampled (B*heads, Q, N_keys).
        """
        out = self.transformer_decoder.post_norm(query)
        cls_pred = self.cls_embed(out)
        mask_embed = self.mask_embed(out)
        mask_pred = torch.einsum('bqc,bcn->bqn', mask_embed, mask_feats)
        geo = level['geo']
        src = torch.cat([
            point_logits_fn(j, mask_pred[j, :, :n]).t() for j, n in enumerate(pred_counts)
        ])
        tgt = idw_interpolate(src.detach(), src_xyz, src_offsets, geo.voxel_xyz,
                              geo.voxel_offsets, self.num_neighbors)  # (N_vox, Q)
        n_max = max(geo.voxel_counts)
        raw = torch.ones(query.shape[0], query.shape[1], n_max, dtype=torch.bool,
                         device=query.device)
        for j, (s, n) in enumerate(zip(geo.voxel_starts, geo.voxel_counts)):
            raw[j, :, :n] = tgt[s:s + n].t().sigmoid() < 0.5
        attn = raw if level['keep'] is None else raw[:, :, level['keep']]
        attn = attn.unsqueeze(1).repeat(1, self.num_heads, 1, 1).flatten(0, 1)
        return cls_pred, mask_pred, raw, attn.detach()

    def forward_3d(self,
                   feats: List[Tensor],
                   geometry: MultiViewGeometry,
                   ghost: Optional[GhostPoints] = None,
                   record: Optional[dict] = None) -> Tuple[List[Tensor], List[Tensor], List[int]]:
        """3D forward.

        Args:
            feats: backbone levels res2..res5, each (B*V, C_i, h_i, w_i).
            geometry: voxel geometry of res2..res5.
            ghost: mesh voxels in ghost-point mode, None for sensor points.
            record: if a dict, intermediate tensors are stored in it (parity checks).

        Returns:
            tuple: per prediction (initial + one per layer) the class logits (B, Q, K+1) and
            mask logits (B, Q, N_max), and the valid prediction points per scene (superpoints,
            mesh voxels or res2 voxels).
        """
        mask_features, multi_scale = self.pixel_decoder(feats, geometry, ghost)
        if record is not None:
            record['pixel_decoder.multi_scale_features'] = multi_scale
            record['pixel_decoder.mask_features'] = mask_features
        if ghost is not None:
            per_scene = list(mask_features)  # (C, N_mv_b)
            src_xyz, src_offsets = ghost.voxel_xyz, ghost.voxel_offsets
            if ghost.segments is not None:
                per_scene = [
                    scatter_mean(f.t(), seg, int(seg.max()) + 1).t()
                    for f, seg in zip(per_scene, ghost.segments)
                ]

                def point_logits_fn(j, logits):
                    return logits[:, ghost.segments[j]]
            else:

                def point_logits_fn(j, logits):
                    return logits
        else:
            res2 = geometry[0]
            voxel_feats = res2.pool(mask_features)
            per_scene = [
                voxel_feats[s:s + n].t() for s, n in zip(res2.voxel_starts, res2.voxel_counts)
            ]
            src_xyz, src_offsets = res2.voxel_xyz, res2.voxel_offsets

            def point_logits_fn(j, logits):
                return logits

        pred_counts = [f.shape[1] for f in per_scene]
        n_max = max(pred_counts)
        mask_feats = torch.stack([pad_to(f, n_max) for f in per_scene])
        if record is not None:
            record['decoder.in.mask_features_xyz'] = src_xyz
        levels = self._memory_3d(multi_scale, geometry, record)
        batch_size = mask_feats.shape[0]
        query = self.query_feat.weight.unsqueeze(0).repeat(batch_size, 1, 1)
        query_embed = self.query_embed.weight.unsqueeze(0).repeat(batch_size, 1, 1)
        cls_list, mask_list, raw_list = [], [], []
        cls_pred, mask_pred, raw, attn = self._head_3d(query, mask_feats, pred_counts,
                                                       point_logits_fn, src_xyz, src_offsets,
                                                       levels[0])
        cls_list.append(cls_pred)
        mask_list.append(mask_pred)
        raw_list.append(raw)
        for i in range(self.num_transformer_decoder_layers):
            level = levels[i % self.num_transformer_feat_level]
            # fully masked rows attend to every (non-padded) key
            full = attn.all(-1, keepdim=True)
            pad = level['pad'].unsqueeze(1).repeat(1, self.num_heads, 1).flatten(0, 1)
            attn = torch.where(full, pad.unsqueeze(1).expand_as(attn), attn)
            query = self.transformer_decoder.layers[i](
                query=query,
                key=level['memory'],
                value=level['memory'],
                query_pos=query_embed,
                key_pos=level['pos'],
                cross_attn_mask=attn,
                query_key_padding_mask=None,
                key_padding_mask=None)
            nxt = levels[(i + 1) % self.num_transformer_feat_level]
            cls_pred, mask_pred, raw, attn = self._head_3d(query, mask_feats, pred_counts,
                                                           point_logits_fn, src_xyz, src_offsets,
                                                           nxt)
            cls_list.append(cls_pred)
            mask_list.append(mask_pred)
            raw_list.append(raw)
        if record is not None:
            record['decoder_heads.attn_mask_next_level'] = raw_list
        return cls_list, mask_list, pred_counts

    # ------------------------------------------------------------------ 3D loss
    def loss_3d(self, cls_list: List[Tensor], mask_list: List[Tensor], pred_counts: List[int],
                targets: List[InstanceData]) -> Dict[str, Tensor]:
        """Deep-supervised Hungarian losses on 3D masks.

        Args:
            cls_list: per prediction, class logits (B, Q, K+1).
            mask_list: per prediction, mask logits (B, Q, N_max).
            pred_counts: valid prediction points per scene.
            targets: per scene ``labels`` (M,) and boolean ``masks`` (M, N_b).

        Returns:
            dict[str, Tensor]: ``loss_cls/loss_mask/loss_dice`` of the last prediction and
            ``d{i}.loss_*`` of the earlier ones.
        """
        num_masks = sum(len(t.labels) for t in targets)
        num_masks = max(reduce_mean(cls_list[0].new_tensor([float(num_masks)])).item(), 1.0)
        losses = {}
        num = len(cls_list)
        for i, (cls_pred, mask_pred) in enumerate(zip(cls_list, mask_list)):
            l_cls, l_mask, l_dice = self._loss_3d_single(cls_pred, mask_pred, pred_counts,
                                                         targets, num_masks)
            prefix = '' if i == num - 1 else f'd{i}.'
            losses[prefix + 'loss_cls'] = l_cls
            losses[prefix + 'loss_mask'] = l_mask
            losses[prefix + 'loss_dice'] = l_dice
        return losses

    def _subsample(self, n: int, device) -> Optional[Tensor]:
        if n <= self.max_train_points:
            return None
        return torch.randperm(n, device=device)[:self.max_train_points]

    def _loss_3d_single(self, cls_pred: Tensor, mask_pred: Tensor, pred_counts: List[int],
                        targets: List[InstanceData], num_masks: float):
        batch_size = cls_pred.shape[0]
        labels = cls_pred.new_full(cls_pred.shape[:2], self.num_classes, dtype=torch.long)
        bce_terms, dice_terms = [], []
        for b in range(batch_size):
            n = pred_counts[b]
            pred_m = mask_pred[b, :, :n]
            gt = targets[b]
            if len(gt.labels) == 0:
                bce_terms.append(pred_m.sum() * 0)
                continue
            gt_m = gt.masks.float()
            with torch.no_grad():
                sel = self._subsample(n, pred_m.device)
                pm = pred_m if sel is None else pred_m[:, sel]
                gm = gt_m if sel is None else gt_m[:, sel]
                assign = self.assigner.assign(
                    pred_instances=InstanceData(scores=cls_pred[b].float(), masks=pm.float()),
                    gt_instances=InstanceData(labels=gt.labels, masks=gm))
            pos = torch.nonzero(assign.gt_inds > 0).squeeze(1)
            gt_idx = assign.gt_inds[pos] - 1
            labels[b, pos] = gt.labels[gt_idx]
            sel = self._subsample(n, pred_m.device)
            pm = pred_m[pos] if sel is None else pred_m[pos][:, sel]
            gm = gt_m[gt_idx] if sel is None else gt_m[gt_idx][:, sel]
            bce = F.binary_cross_entropy_with_logits(pm, gm, reduction='none').mean(1)
            bce_terms.append(bce.sum())
            dice_terms.append(self.loss_dice(pm, gm, reduction_override='sum') /
                              self.loss_dice.loss_weight)
        class_weight = cls_pred.new_tensor(self.class_weight)
        flat_labels = labels.flatten()
        loss_cls = self.loss_cls(
            cls_pred.flatten(0, 1),
            flat_labels,
            avg_factor=class_weight[flat_labels].sum())
        loss_mask = self.loss_mask.loss_weight * torch.stack(bce_terms).sum() / num_masks
        if dice_terms:
            loss_dice = self.loss_dice.loss_weight * torch.stack(dice_terms).sum() / num_masks
        else:
            loss_dice = mask_pred.sum() * 0
        return loss_cls, loss_mask, loss_dice
