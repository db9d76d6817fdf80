"""ODIN head: Mask2Former's masked-attention decoder over 3D voxels or 2D pixels.

One decoder loop (:meth:`ODINHead.iter_predictions`) serves both kinds of batch. 2D batches
behave as mmdet's :class:`Mask2FormerHead` (pixel memory with the sine positional encoding,
point-sampled losses). 3D batches read the multi-view encoder's :class:`MultiViewFeatures`
(docs/specification.md §2.8, §2.10):

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

Class logits come from the configured ``classifier`` (models/classifiers.py): the closed-set
``LinearClassifier`` or the ``OpenVocabClassifier`` (docs/specification.md §2.9), whose K is the
size of the batch's vocabulary and whose text cross-attention conditions the queries before every
decoder layer. The head calls both through one interface, without asking which it has.

The decoder's cross-attention is :class:`~projects.odin.layers.ODINMaskedAttention` (mmcv's
layer, same parameters, run through ``scaled_dot_product_attention`` with one boolean mask for
all heads): the attention weights over every key are never held.
"""
import warnings
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.ops import point_sample
from mmdet.models.dense_heads import Mask2FormerHead
from mmdet.models.utils import get_uncertain_point_coords_with_randomness
from mmdet.utils import reduce_mean
from mmdet3d.registry import MODELS
from mmdet3d.structures import PointData
from mmengine.config import ConfigDict
from mmengine.structures import InstanceData
from torch import Tensor

from ..layers.masked_attention import use_odin_masked_attn
from ..structures import neighbors
from ..structures.multiview_geometry import LevelGeometry, MultiViewGeometry
from .classifiers import BaseClassifier
from .multiview_encoder import ChunkPlan, MultiViewFeatures
from .postprocess import instance_inference, semantic_inference
from .prediction_points import PredictionPointSet


def _pad_last(x: Tensor, size: int) -> Tensor:
    """Zero-pad the last dimension of ``x`` at the end up to ``size``."""
    return F.pad(x, [0, size - x.shape[-1]])


def _to_cfg(cfg):
    return ConfigDict(cfg) if isinstance(cfg, dict) and not isinstance(cfg, ConfigDict) else cfg


#: state-dict entries of the class head before it became ``classifier`` (version 1 of ODINHead)
_V1_CLASSIFIER_KEYS = ('cls_embed.', 'text_encoder.', 'text_cross_attn_layers.')


def _classifier_cfg(classifier: Optional[dict], open_vocab_cfg: Optional[dict],
                    class_names: Optional[Sequence[str]]) -> dict:
    """The classifier config, with the deprecated ``open_vocab_cfg`` / ``class_names`` folded in.

    Raises:
        ValueError: ``open_vocab_cfg`` given with a classifier that is not open-vocabulary.
    """
    cfg = dict(classifier or dict(type='LinearClassifier'))
    if open_vocab_cfg is not None:
        warnings.warn('ODINHead: open_vocab_cfg is deprecated; use '
                      "classifier=dict(type='OpenVocabClassifier', text_encoder=..., "
                      'temperature=..., dropout=...)', DeprecationWarning, stacklevel=3)
        if cfg.get('type') not in ('LinearClassifier', 'OpenVocabClassifier'):
            raise ValueError(f"ODINHead: open_vocab_cfg (deprecated) cannot be combined with "
                             f"classifier type {cfg.get('type')!r}; put its keys into "
                             "classifier=dict(type='OpenVocabClassifier', ...)")
        legacy = dict(open_vocab_cfg)
        if cfg.get('type') == 'OpenVocabClassifier':  # e.g. a --cfg-options override
            legacy['text_encoder'] = dict(cfg.get('text_encoder') or {},
                                          **(legacy.get('text_encoder') or {}))
        cfg = dict(cfg, type='OpenVocabClassifier', **legacy)
    if class_names is not None:
        cfg['class_names'] = class_names
    return cfg


@MODELS.register_module()
class ODINHead(Mask2FormerHead):
    """Mask2Former head that also decodes multi-view 3D scenes.

    Args:
        sample_sizes: training-time number of memory keys kept per level (res5, res4, res3).
        max_train_points: points per scene used for matching and mask losses.
        fusion_head_2d: config of the 2D instance fusion (mmdet's ``MaskFormerFusionHead``;
            its class count is set per batch from the logits and its ``max_per_image`` from
            ``test_cfg.topk``, the instances kept in 2D and 3D).
        classifier: config of the class head (models/classifiers.py), e.g.
            ``dict(type='LinearClassifier')`` (default) or ``dict(type='OpenVocabClassifier',
            text_encoder=dict(type='ODINTextEncoder', pretrained=PATH), temperature=0.07,
            dropout=0.0, class_names=None)``; the decoder sizes are filled in by the head.
        open_vocab_cfg: deprecated alias: its keys go into an ``OpenVocabClassifier``.
        class_names: deprecated alias of ``classifier.class_names``.
        **kwargs: arguments of mmdet's :class:`Mask2FormerHead`.

    State dict: version 2 keeps the class head under ``classifier.``; checkpoints of version 1
    (``cls_embed.*``, ``text_encoder.*``, ``text_cross_attn_layers.*`` directly in the head) are
    renamed when loaded (:meth:`upgrade_state_dict`).
    """

    _version = 2

    def __init__(self,
                 sample_sizes: Sequence[int] = (800, 3200, 12800),
                 max_train_points: int = 50000,
                 fusion_head_2d: Optional[dict] = None,
                 classifier: Optional[dict] = None,
                 open_vocab_cfg: Optional[dict] = None,
                 class_names: Optional[Sequence[str]] = None,
                 **kwargs) -> None:
        kwargs = {k: _to_cfg(v) for k, v in kwargs.items()}
        super().__init__(**kwargs)
        # Mask2FormerHead built a closed-set Linear(C, K+1) as `cls_embed`; the class head is
        # the classifier instead. It is built on a forked random stream and a classifier with a
        # layer of that shape starts from mmdet's one, so closed-set models draw the same random
        # initialisation as before the classifier existed.
        mmdet_cls_embed = self._modules.pop('cls_embed')
        cls_cfg = _classifier_cfg(classifier, open_vocab_cfg, class_names)
        for key, value in (('embed_dims', kwargs['feat_channels']),
                           ('num_classes', self.num_classes), ('num_heads', self.num_heads),
                           ('num_layers', self.num_transformer_decoder_layers)):
            cls_cfg.setdefault(key, value)
        with torch.random.fork_rng(devices=[]):
            self.classifier: BaseClassifier = MODELS.build(cls_cfg)
        own = getattr(self.classifier, 'cls_embed', None)
        if isinstance(own, nn.Linear) and own.weight.shape == mmdet_cls_embed.weight.shape:
            own.load_state_dict(mmdet_cls_embed.state_dict())
        feat_channels = kwargs['feat_channels']
        self.sample_sizes = tuple(sample_sizes)
        self.max_train_points = max_train_points
        self.fusion_head_2d = dict(fusion_head_2d or dict(
            type='mmdet.MaskFormerFusionHead',
            test_cfg=dict(panoptic_on=False, semantic_on=False, instance_on=True, iou_thr=0.8,
                          filter_low_score=False)))
        # the 2D fusion head (no parameters) per K of the logits: the configured K built here,
        # another vocabulary's K (open vocabulary) the first time a batch has it
        self._fusion_heads_2d: Dict[int, nn.Module] = {
            self.num_classes: self._build_fusion_head_2d(self.num_classes)}
        self.attn_mask_3d = AttentionMask3D()
        # mmdet builds mmcv's MultiheadAttention; ours has the same parameters and never holds
        # the (B*heads, Q, keys) attention weights
        use_odin_masked_attn(self.transformer_decoder)
        self._loss_cls_cfg = dict(kwargs['loss_cls'])
        self._vocab_losses: Dict[int, nn.Module] = {}
        # learned absolute-xyz positional encoding of the 3D memory keys
        self.pos_embed_3d = nn.Sequential(
            nn.Conv1d(3, feat_channels, 1), nn.GroupNorm(1, feat_channels), nn.ReLU(inplace=True),
            nn.Conv1d(feat_channels, feat_channels, 1))

    def init_weights(self) -> None:
        """Mask2Former init, then the classifier's own (e.g. its text cross-attention)."""
        super().init_weights()
        self.classifier.init_weights()

    # ------------------------------------------------------------------ checkpoints
    def upgrade_state_dict(self, state_dict: Dict[str, Any], prefix: str,
                           version: Optional[int]) -> None:
        """Rename, in place, the keys of a version-1 head (before the classifier component).

        ``{prefix}cls_embed.*``, ``{prefix}text_encoder.*`` and
        ``{prefix}text_cross_attn_layers.*`` move under ``{prefix}classifier.``. Nothing
        happens for version >= 2; a state dict without version information (None) is upgraded
        only where it has old keys, so converted state dicts of either version load.
        """
        if version is not None and version >= 2:
            return
        for key in [k for k in state_dict if k.startswith(prefix)]:
            rest = key[len(prefix):]
            if rest.startswith(_V1_CLASSIFIER_KEYS):
                state_dict[f'{prefix}classifier.{rest}'] = state_dict.pop(key)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args, **kwargs):
        self.upgrade_state_dict(state_dict, prefix, (local_metadata or {}).get('version'))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args, **kwargs)

    # ------------------------------------------------------------------ vocabulary
    @property
    def open_vocab(self) -> bool:
        """Whether the classifier takes a vocabulary per batch."""
        return self.classifier.open_vocab

    @property
    def class_names(self) -> Optional[tuple]:
        """The classifier's default vocabulary (None: the data samples' or unnamed)."""
        return self.classifier.class_names

    @class_names.setter
    def class_names(self, names: Optional[Sequence[str]]) -> None:
        self.classifier.class_names = tuple(str(n) for n in names) if names is not None \
            else None

    def batch_num_classes(self, batch_data_samples: Optional[Sequence]) -> int:
        """K of a batch (:meth:`BaseClassifier.num_classes`)."""
        return self.classifier.num_classes(batch_data_samples)

    # ------------------------------------------------------------------ forward (2D and 3D)
    def forward(self, x, batch_data_samples: Sequence) -> Tuple[List[Tensor], List[Tensor]]:
        """Every prediction of the decoder (initial + one per layer), as mmdet's Mask2Former.

        Args:
            x: a 2D batch's backbone levels res2..res5 (each (B, C_i, h_i, w_i)), or a 3D
                batch's :class:`MultiViewFeatures` (from the multi-view encoder).
            batch_data_samples: data samples (their ``metainfo['classes']`` is the vocabulary in
                open-vocabulary mode).

        Returns:
            tuple: per prediction the class logits (B, Q, K_batch+1) and the mask logits,
            (B, Q, h, w) in 2D, (B, Q, N_max) over the prediction points in 3D (scene ``b``
            valid up to ``x.pred_counts[b]``).
        """
        cls_list, mask_list = [], []
        for cls_pred, mask_pred in self.iter_predictions(x, batch_data_samples):
            cls_list.append(cls_pred)
            mask_list.append(mask_pred)
        return cls_list, mask_list

    def forward_last(self, x, batch_data_samples: Sequence) -> Tuple[Tensor, Tensor]:
        """The last prediction only (inference): each earlier one is freed once the next exists.

        Returns:
            tuple: class logits and mask logits of the last decoder layer (as :meth:`forward`).
        """
        last = None
        for prediction in self.iter_predictions(x, batch_data_samples):
            last = prediction  # the previous prediction is released here
        return last

    def iter_predictions(self, x, batch_data_samples: Sequence) -> Iterator[Tuple[Tensor, Tensor]]:
        """The masked-attention decoder, one loop for 2D and 3D batches.

        The memory of decoder level l is the pixel-decoder level l (2D: its pixels with the sine
        positional encoding; 3D: its voxels with the learned xyz encoding, :meth:`_memory_3d`);
        masks are query embeddings times the mask features (2D: pixels; 3D: prediction points);
        the attention mask of the next level is ``sigmoid(mask logit) < 0.5`` at its keys
        (2D: bilinear resize; 3D: IDW to the voxels, :class:`AttentionMask3D`); a query whose
        keys are all masked attends to every (non-padded) key.

        Args:
            x: as :meth:`forward`.
            batch_data_samples: data samples.

        Yields:
            tuple: class logits and mask logits of every prediction, initial one first.
        """
        if isinstance(x, MultiViewFeatures):
            levels, masks = self._inputs_3d(x)
        else:
            levels, masks = self._inputs_2d(x)
        batch_size = levels[0].memory.shape[0]
        text = self.classifier.encode(batch_data_samples, batch_size)
        query = self.query_feat.weight.unsqueeze(0).repeat((batch_size, 1, 1))
        query_embed = self.query_embed.weight.unsqueeze(0).repeat((batch_size, 1, 1))
        num_levels = self.num_transformer_feat_level
        cls_pred, mask_pred, attn = self._predict_layer(query, masks, 0, text)
        yield cls_pred, mask_pred
        for i in range(self.num_transformer_decoder_layers):
            level = levels[i % num_levels]
            # fully masked rows attend to every (non-padded) key
            attn = torch.where(attn.all(-1, keepdim=True), level.pad.unsqueeze(1), attn)
            attn = attn.unsqueeze(1)  # (B, 1, Q, keys): one mask for all heads
            query = self.classifier.condition(i, query, query_embed, text)
            query = self.transformer_decoder.layers[i](
                query=query,
                key=level.memory,
                value=level.memory,
                query_pos=query_embed,
                key_pos=level.pos,
                cross_attn_mask=attn,
                query_key_padding_mask=None,
                key_padding_mask=None)
            cls_pred, mask_pred, attn = self._predict_layer(query, masks, (i + 1) % num_levels,
                                                            text)
            yield cls_pred, mask_pred

    def _predict_layer(self, query: Tensor, masks: '_MaskSpace', next_level: int,
                       text: Any = None) -> Tuple[Tensor, Tensor, Tensor]:
        """Prediction head after a decoder layer, and the next level's attention mask.

        Args:
            query: shape (B, Q, C).
            masks: where masks are predicted (:class:`_PixelMasks` / :class:`_PointMasks`).
            next_level: decoder level the attention mask is for.
            text: the batch's class context (:meth:`BaseClassifier.encode`; text tokens in
                open vocabulary, None for the linear classifier).

        Returns:
            tuple: class logits (B, Q, K+1), mask logits and the attention mask (B, Q, N_keys)
            bool, True = masked.
        """
        out = self.transformer_decoder.post_norm(query)
        cls_pred = self.classifier(out, text)
        mask_pred = masks.logits(self.mask_embed(out))
        return cls_pred, mask_pred, masks.attn_mask(mask_pred, next_level).detach()

    def _inputs_2d(self, x: List[Tensor]) -> Tuple[List['_DecoderLevel'], '_PixelMasks']:
        """Decoder levels and mask space of a 2D batch (mmdet's Mask2Former)."""
        batch_size = x[0].shape[0]
        mask_features, multi_scale_memorys = self.pixel_decoder(x)
        levels = []
        for i in range(self.num_transformer_feat_level):
            decoder_input = self.decoder_input_projs[i](multi_scale_memorys[i])
            decoder_input = decoder_input.flatten(2).permute(0, 2, 1)
            mask = decoder_input.new_zeros((batch_size, ) + multi_scale_memorys[i].shape[-2:],
                                           dtype=torch.bool)
            pos = self.decoder_positional_encoding(mask).flatten(2).permute(0, 2, 1)
            levels.append(_DecoderLevel(
                memory=decoder_input + self.level_embed.weight[i].view(1, 1, -1), pos=pos,
                pad=mask.flatten(1)))
        sizes = [m.shape[-2:] for m in multi_scale_memorys[:self.num_transformer_feat_level]]
        return levels, _PixelMasks(mask_features, sizes)

    def _get_targets_single(self, cls_score: Tensor, mask_pred: Tensor,
                            gt_instances: InstanceData, img_meta: dict) -> Tuple[Tensor]:
        """The 2D targets of mmdet for one image, with no-object = K of the logits.

        Returns:
            tuple: as :meth:`Mask2FormerHead._get_targets_single`; ``labels`` (Q,) hold
            ``cls_score.shape[-1] - 1`` for unmatched queries.
        """
        targets = super()._get_targets_single(cls_score, mask_pred, gt_instances, img_meta)
        pos_inds, sampling = targets[4], targets[6]
        labels = targets[0].new_full(targets[0].shape, cls_score.shape[-1] - 1)
        labels[pos_inds] = gt_instances.labels[sampling.pos_assigned_gt_inds]
        return (labels, ) + tuple(targets[1:])

    def _loss_by_feat_single(self, cls_scores: Tensor, mask_preds: Tensor,
                             batch_gt_instances: List[InstanceData],
                             batch_img_metas: List[dict]) -> Tuple[Tensor]:
        """The 2D losses of mmdet for one decoder layer, with the classification loss for K.

        K is read from the logits (the batch's vocabulary in open vocabulary) and the
        classification loss is :meth:`_loss_cls_for` K; nothing of the head is changed. Mask and
        Dice losses are mmdet's: on ``num_points`` importance-sampled points per matched mask.

        Args:
            cls_scores: (B, Q, K+1).
            mask_preds: (B, Q, h, w).
            batch_gt_instances: per image ``labels`` and ``masks``.
            batch_img_metas: per image meta information.

        Returns:
            tuple: ``loss_cls``, ``loss_mask``, ``loss_dice``.
        """
        labels, label_weights, mask_targets, mask_weights, num_gts = self.get_targets(
            list(cls_scores), list(mask_preds), batch_gt_instances, batch_img_metas)
        labels = torch.stack(labels).flatten()
        loss_cls_module = self._loss_cls_for(cls_scores.shape[-1] - 1)
        class_weight = cls_scores.new_tensor(loss_cls_module.class_weight)
        loss_cls = loss_cls_module(cls_scores.flatten(0, 1), labels,
                                   torch.stack(label_weights).flatten(),
                                   avg_factor=class_weight[labels].sum())
        num_masks = max(reduce_mean(cls_scores.new_tensor([num_gts])), 1)
        matched = mask_preds[torch.stack(mask_weights) > 0]
        mask_targets = torch.cat(mask_targets)
        if mask_targets.shape[0] == 0:
            return loss_cls, matched.sum(), matched.sum()
        with torch.no_grad():
            coords = get_uncertain_point_coords_with_randomness(
                matched.unsqueeze(1), None, self.num_points, self.oversample_ratio,
                self.importance_sample_ratio)
            target_points = point_sample(mask_targets.unsqueeze(1).float(), coords).squeeze(1)
        pred_points = point_sample(matched.unsqueeze(1), coords).squeeze(1)
        loss_dice = self.loss_dice(pred_points, target_points, avg_factor=num_masks)
        loss_mask = self.loss_mask(pred_points.reshape(-1), target_points.reshape(-1),
                                   avg_factor=num_masks * self.num_points)
        return loss_cls, loss_mask, loss_dice

    # ------------------------------------------------------------------ 2D inference
    def predict_2d(self, feats: List[Tensor], batch_data_samples: Sequence) -> List[InstanceData]:
        """2D instances: mmdet's prediction + the configured fusion head (K from the logits).

        Returns:
            list[InstanceData]: per image mmdet's ``ins_results``.
        """
        cls, masks = super().predict(feats, batch_data_samples)
        num_classes = cls.shape[-1] - 1
        if num_classes not in self._fusion_heads_2d:
            self._fusion_heads_2d[num_classes] = self._build_fusion_head_2d(num_classes)
        fusion = self._fusion_heads_2d[num_classes]
        fusion.test_cfg = dict(fusion.test_cfg or {},
                               max_per_image=(self.test_cfg or {}).get('topk', 100))
        results = fusion.predict(cls, masks, batch_data_samples, rescale=True)
        return [r['ins_results'] for r in results]

    def _build_fusion_head_2d(self, num_classes: int) -> nn.Module:
        """The configured ``fusion_head_2d`` for K = ``num_classes`` (no parameters)."""
        return MODELS.build(dict(self.fusion_head_2d, num_things_classes=num_classes,
                                 num_stuff_classes=0))

    # ------------------------------------------------------------------ loss / predict
    def loss(self, x, batch_data_samples: Sequence) -> Dict[str, Tensor]:
        """Training losses of a 2D batch (mmdet's) or a 3D batch (:meth:`loss_by_feat_3d`).

        Args:
            x: as :meth:`forward`.
            batch_data_samples: samples with their ground truth (3D: ``gt_pts_seg`` over the
                input points, which the prediction points turn into targets).

        Returns:
            dict[str, Tensor]: ``loss_cls/loss_mask/loss_dice`` of the last prediction and
            ``d{i}.loss_*`` of the earlier ones.
        """
        if not isinstance(x, MultiViewFeatures):
            return super().loss(x, batch_data_samples)
        cls_list, mask_list = self(x, batch_data_samples)
        num_classes = cls_list[0].shape[-1] - 1  # K of the batch (open vocabulary: varies)
        targets = x.points.build_targets(batch_data_samples, num_classes)
        return self.loss_by_feat_3d(cls_list, mask_list, x.pred_counts, targets)

    def predict(self, x, batch_data_samples: Sequence) -> list:
        """Instances of a 2D batch (:meth:`predict_2d`) or of a 3D batch (:meth:`predict_3d`).

        Returns:
            list: per sample an ``InstanceData`` (2D) or a ``PointData`` (3D).
        """
        if not isinstance(x, MultiViewFeatures):
            return self.predict_2d(x, batch_data_samples)
        return self.predict_3d(x, batch_data_samples)

    # ------------------------------------------------------------------ 3D decoder inputs
    def _inputs_3d(self, x: 'MultiViewFeatures') -> Tuple[List['_DecoderLevel'], '_PointMasks']:
        """Decoder levels (voxel memory) and mask space (prediction points) of a 3D batch."""
        pred_counts = x.pred_counts
        n_max = max(pred_counts)
        # one scene: a view of its mask features (no padded copy of (C, N_pred))
        mask_feats = (x.mask_feats[0].unsqueeze(0) if len(x.mask_feats) == 1 else
                      torch.stack([_pad_last(f, n_max) for f in x.mask_feats]))
        levels = self._memory_3d(x.voxel_feats, x.geometry, x.plan)
        return levels, _PointMasks(mask_feats, pred_counts, x.points, levels, self.attn_mask_3d)

    def _memory_3d(self, voxel_feats: List[Tensor], geometry: MultiViewGeometry,
                   plan: ChunkPlan) -> List['_DecoderLevel']:
        """Voxel memory, positional encodings and key padding of every decoder level.

        Args:
            voxel_feats: the pixel decoder's levels (res5, res4, res3) per voxel, each
                (N_vox_l, C).
            geometry: the batch's geometry.
            plan: the batch's chunk plan (pixels per chunk of the positional encoding).

        Returns:
            list[_DecoderLevel]: per level ``memory`` (B, N, C), ``pos`` (B, N, C), ``pad``
            (B, N), its ``geo`` and the training key subsample ``keep`` (or None), where N is
            the largest voxel count of a scene or the subsample's size.
        """
        levels = []
        for i in range(self.num_transformer_feat_level):
            geo = geometry[self.pixel_decoder.backbone_level(i)]
            b = geo.shape[0]
            # the input projection is 1x1 (or identity): applied to the voxels as a 1-wide image
            mem = self.decoder_input_projs[i](voxel_feats[i].t()[None, :, :, None])[0, :, :, 0].t()
            mem = mem + self.level_embed.weight[i].view(1, -1)
            with torch.autocast(device_type=mem.device.type, enabled=False):
                pos = self._pos_3d(geo, plan)
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
            levels.append(_DecoderLevel(mem_b, pos_b, pad, geo, keep))
        return levels

    def _pos_3d(self, geo: LevelGeometry, plan: ChunkPlan) -> Tensor:
        """Positional encoding of the level's keys: the MLP of every pixel's xyz, per voxel.

        ``pos_embed_3d`` (Conv1d - GroupNorm(1) - ReLU - Conv1d) runs on all pixels of a scene
        (GroupNorm statistics per scene) and is averaged per voxel. The pixels go through in
        chunks of ``plan.point_chunk`` (one chunk when 0): the GroupNorm statistics are gathered
        in a first pass (float64 sums), then normalised chunks are averaged into the voxels
        (under activation checkpointing when the plan recomputes).

        Returns:
            Tensor: shape (N_vox, C).
        """
        b, v, h, w = geo.shape
        n_pix = v * h * w
        xyz = geo.point_xyz.float().view(b, n_pix, 3)
        conv1, norm = self.pos_embed_3d[0], self.pos_embed_3d[1]
        acc = geo.voxel_sum()
        ranges = plan.point_ranges(n_pix)
        count = n_pix * conv1.out_channels
        for j in range(b):
            total = sq = 0.0
            for s, e in ranges:
                part_sum, part_sq = plan.run(self._pos_moments, xyz[j:j + 1, s:e])
                total, sq = total + part_sum, sq + part_sq
            mean = total / count
            scale = ((sq / count - mean * mean).clamp(min=0) + norm.eps).rsqrt()
            for s, e in ranges:
                pe = plan.run(self._pos_chunk, xyz[j:j + 1, s:e], mean, scale)
                acc.add(pe, geo.p2v[j * n_pix + s:j * n_pix + e])
        return acc.mean()

    def _pos_moments(self, xyz: Tensor) -> Tuple[Tensor, Tensor]:
        """Float64 sum and sum of squares of ``pos_embed_3d``'s first conv on (1, n, 3) xyz."""
        y = self.pos_embed_3d[0](xyz.transpose(1, 2)).double()
        return y.sum(), (y * y).sum()

    def _pos_chunk(self, xyz: Tensor, mean: Tensor, scale: Tensor) -> Tensor:
        """``pos_embed_3d`` of (1, n, 3) xyz with the scene's GroupNorm statistics, (n, C)."""
        conv1, norm, act, conv2 = self.pos_embed_3d
        y = conv1(xyz.transpose(1, 2))
        y = ((y.double() - mean) * scale).float()
        y = y * norm.weight.view(1, -1, 1) + norm.bias.view(1, -1, 1)
        return conv2(act(y))[0].t()

    # ------------------------------------------------------------------ 3D inference
    def predict_3d(self, x: 'MultiViewFeatures',
                   batch_data_samples: Sequence) -> List[PointData]:
        """3D instances and semantics of every scene, on its evaluation points.

        Args:
            x: the batch's :class:`MultiViewFeatures`.
            batch_data_samples: data samples.

        Returns:
            list[PointData]: per scene ``pts_semantic_mask``, ``pts_instance_mask``,
            ``instance_labels``, ``instance_scores``.
        """
        cls_pred, mask_pred = self.forward_last(x, batch_data_samples)
        return self.predict_by_feat_3d(cls_pred, mask_pred, x.pred_counts, x.points)

    def predict_by_feat_3d(self, cls_logits: Tensor, mask_logits: Tensor,
                           pred_counts: List[int],
                           points: PredictionPointSet) -> List[PointData]:
        """Post-process the last prediction of every scene on its evaluation points.

        Args:
            cls_logits: shape (B, Q, K+1).
            mask_logits: over the prediction points, shape (B, Q, N_max).
            pred_counts: valid prediction points per scene.
            points: the batch's prediction points (:meth:`PredictionPointSet.lift_logits`).

        Returns:
            list[PointData]: as :meth:`predict_3d`.
        """
        results = []
        for b, n in enumerate(pred_counts):
            logits = points.lift_logits(b, mask_logits[b, :, :n])
            results.append(self.postprocess_3d(cls_logits[b], logits))
        return results

    def postprocess_3d(self, cls_logits: Tensor, point_logits: Tensor) -> PointData:
        """Instance (top-k, no NMS) and semantic predictions of one scene.

        The rules of docs/specification.md §2.11.

        Args:
            cls_logits: shape (Q, K+1).
            point_logits: shape (Q, N).

        Returns:
            PointData: predictions over the N points.
        """
        cfg = self.test_cfg or {}
        masks, labels, scores = instance_inference(cls_logits, point_logits,
                                                   cfg.get('topk', 100),
                                                   cfg.get('skip_classes', ()))
        return PointData(
            pts_semantic_mask=semantic_inference(cls_logits, point_logits),
            pts_instance_mask=masks,
            instance_labels=labels,
            instance_scores=scores)

    # ------------------------------------------------------------------ 3D loss
    def loss_by_feat_3d(self, cls_list: List[Tensor], mask_list: List[Tensor],
                        pred_counts: List[int],
                        targets: List[InstanceData]) -> Dict[str, Tensor]:
        """Losses of every prediction against per-scene targets on the prediction points.

        Args:
            cls_list: per prediction, class logits (B, Q, K+1).
            mask_list: per prediction, mask logits (B, Q, N_max).
            pred_counts: valid prediction points per scene.
            targets: per scene ``labels`` (M,) and boolean ``masks`` (M, N_b).

        Returns:
            dict[str, Tensor]: the losses.
        """
        num_masks = sum(len(t.labels) for t in targets)
        num_masks = max(reduce_mean(cls_list[0].new_tensor([float(num_masks)])).item(), 1.0)
        loss_cls = self._loss_cls_for(cls_list[0].shape[-1] - 1)
        losses = {}
        num = len(cls_list)
        for i, (cls_pred, mask_pred) in enumerate(zip(cls_list, mask_list)):
            l_cls, l_mask, l_dice = self._loss_3d_single(cls_pred, mask_pred, pred_counts,
                                                         targets, num_masks, loss_cls)
            prefix = '' if i == num - 1 else f'd{i}.'
            losses[prefix + 'loss_cls'] = l_cls
            losses[prefix + 'loss_mask'] = l_mask
            losses[prefix + 'loss_dice'] = l_dice
        return losses

    def _loss_cls_for(self, num_classes: int) -> nn.Module:
        """The classification loss for K = ``num_classes`` (no-object weight kept).

        The configured module when K is the head's ``num_classes``; else (open vocabulary) the
        same loss config built with class weights ``[1] * K + [w_noobj]``.
        """
        if num_classes == self.num_classes:
            return self.loss_cls
        if num_classes not in self._vocab_losses:
            weights = [1.0] * num_classes + [float(self.class_weight[-1])]
            self._vocab_losses[num_classes] = MODELS.build(
                dict(self._loss_cls_cfg, class_weight=weights))
        return self._vocab_losses[num_classes]

    def _subsample(self, n: int, device) -> Optional[Tensor]:
        if n <= self.max_train_points:
            return None
        return torch.randperm(n, device=device)[:self.max_train_points]

    def _loss_3d_single(self, cls_pred: Tensor, mask_pred: Tensor, pred_counts: List[int],
                        targets: List[InstanceData], num_masks: float, loss_cls: nn.Module):
        batch_size = cls_pred.shape[0]
        num_classes = cls_pred.shape[-1] - 1
        labels = cls_pred.new_full(cls_pred.shape[:2], num_classes, dtype=torch.long)
        mask_terms, dice_terms = [], []
        for b in range(batch_size):
            n = pred_counts[b]
            pred_m = mask_pred[b, :, :n]
            gt = targets[b]
            if len(gt.labels) == 0:
                mask_terms.append(pred_m.sum() * 0)
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
            # per matched mask the BCE mean over its points, summed; Dice summed; both / #masks
            mask_terms.append(self.loss_mask(pm, gm, avg_factor=pm.shape[1] * num_masks))
            dice_terms.append(self.loss_dice(pm, gm, avg_factor=num_masks))
        class_weight = cls_pred.new_tensor(loss_cls.class_weight)
        flat_labels = labels.flatten()
        l_cls = loss_cls(cls_pred.flatten(0, 1), flat_labels,
                         avg_factor=class_weight[flat_labels].sum())
        l_mask = torch.stack(mask_terms).sum()
        l_dice = torch.stack(dice_terms).sum() if dice_terms else mask_pred.sum() * 0
        return l_cls, l_mask, l_dice


class AttentionMask3D(nn.Module):
    """Masked-attention mask of a 3D decoder level (docs/specification.md §2.8).

    The mask logits of the prediction points are IDW-interpolated (k nearest) to the level's
    voxel centroids; a voxel is masked for a query when ``sigmoid(logit) < 0.5``. One module
    (without parameters) computes the mask of every 3D decoder level.
    """

    def forward(self, src_logits: Tensor, src_xyz: Tensor, src_offsets: Tensor,
                geo: LevelGeometry, num_neighbors: int) -> Tensor:
        """Attention mask of every scene.

        Args:
            src_logits: ``(N_src, Q)`` logits of the mask-feature points of all scenes.
            src_xyz: ``(N_src, 3)`` their xyz.
            src_offsets: ``(B,)`` cumulative count per scene.
            geo: the decoder level's voxel geometry.
            num_neighbors: k of the IDW.

        Returns:
            ``(B, Q, N_vox_max)`` bool, True = masked (padding voxels masked), before the
            fully-masked-row fix of the decoder.
        """
        tgt = neighbors.idw(src_logits, src_xyz, src_offsets, geo.voxel_xyz, geo.voxel_offsets,
                            num_neighbors)  # (N_vox, Q)
        counts = geo.voxel_counts
        raw = torch.ones(len(counts), src_logits.shape[1], max(counts), dtype=torch.bool,
                         device=src_logits.device)
        for j, (s, n) in enumerate(zip(geo.voxel_starts, counts)):
            raw[j, :, :n] = tgt[s:s + n].t().sigmoid() < 0.5
        return raw


@dataclass
class _DecoderLevel:
    """Keys of one decoder level.

    Attributes:
        memory: (B, N, C) keys and values.
        pos: (B, N, C) their positional encoding.
        pad: (B, N) bool, True = padding key (never attended).
        geo: the level's voxel geometry (3D), else None.
        keep: the training key subsample of the level's voxels (3D), else None.
    """

    memory: Tensor
    pos: Tensor
    pad: Tensor
    geo: Optional[LevelGeometry] = None
    keep: Optional[Tensor] = None


class _MaskSpace:
    """Where a batch's masks are predicted: mask logits and attention masks."""

    def logits(self, mask_embed: Tensor) -> Tensor:
        """Mask logits of the query embeddings ``(B, Q, C)``."""
        raise NotImplementedError

    def attn_mask(self, mask_pred: Tensor, level: int) -> Tensor:
        """Attention mask at the keys of decoder level ``level``.

        Returns:
            ``(B, Q, N_keys)`` bool, True = masked (``sigmoid < 0.5``), before the
            fully-masked-row fix.
        """
        raise NotImplementedError


class _PixelMasks(_MaskSpace):
    """2D: masks on the stride-4 pixels (mmdet's Mask2Former).

    Args:
        features: mask features, (B, C, h, w).
        sizes: ``(h_l, w_l)`` of every decoder level.
    """

    def __init__(self, features: Tensor, sizes: Sequence[Tuple[int, int]]) -> None:
        self.features = features
        self.sizes = list(sizes)

    def logits(self, mask_embed: Tensor) -> Tensor:
        """(B, Q, h, w) mask logits."""
        return torch.einsum('bqc,bchw->bqhw', mask_embed, self.features)

    def attn_mask(self, mask_pred: Tensor, level: int) -> Tensor:
        """Bilinear resize to the level's size, (B, Q, h_l*w_l)."""
        resized = F.interpolate(mask_pred, self.sizes[level], mode='bilinear',
                                align_corners=False)
        return resized.flatten(2).sigmoid() < 0.5


class _PointMasks(_MaskSpace):
    """3D: masks on the prediction points, attention masks on the levels' voxels.

    Args:
        features: mask features of the prediction points, padded, (B, C, N_max).
        counts: valid prediction points per scene.
        points: the batch's prediction points.
        levels: the decoder levels (:meth:`ODINHead._memory_3d`).
        attn_mask_3d: the IDW attention-mask module.
    """

    def __init__(self, features: Tensor, counts: List[int], points: PredictionPointSet,
                 levels: List[_DecoderLevel], attn_mask_3d: nn.Module) -> None:
        self.features = features
        self.counts = counts
        self.points = points
        self.levels = levels
        self.attn_mask_3d = attn_mask_3d

    def logits(self, mask_embed: Tensor) -> Tensor:
        """(B, Q, N_max) mask logits over the prediction points."""
        return torch.einsum('bqc,bcn->bqn', mask_embed, self.features)

    def attn_mask(self, mask_pred: Tensor, level: int) -> Tensor:
        """IDW of the logits to the level's voxels, key-subsampled, (B, Q, N_keys)."""
        src = torch.cat([self.points.to_source(j, mask_pred[j, :, :n]).t()
                         for j, n in enumerate(self.counts)])
        lvl = self.levels[level]
        raw = self.attn_mask_3d(src.detach(), self.points.src_xyz, self.points.src_offsets,
                                lvl.geo, self.points.geometry.num_neighbors)
        return raw if lvl.keep is None else raw[:, :, lvl.keep]
