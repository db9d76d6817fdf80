"""ODIN pixel decoder: mmdet's MSDeformAttn pixel decoder followed by 3D fusion.

Per view, the 6-layer multi-scale deformable encoder runs exactly as in Mask2Former. In 3D
batches every encoder level is then replaced by the output of a 1-layer 3D attention block over
the level's voxels, and the stride-4 level is built in 3D (docs/specification.md §2.6):

* mesh prediction points: backbone res2 features and the fused res3 level are IDW-interpolated
  (k nearest) onto the 2 cm mesh voxels ("ghost points"), so mask features live on mesh voxels;
* sensor-point mode: the fused res3 level is IDW-interpolated onto the 2 cm res2 voxels and
  broadcast to the res2 pixels instead of bilinear upsampling;
* 2D mode: Mask2Former's bilinear FPN step (:meth:`ODINPixelDecoder.forward`).

In 3D the module provides the steps (:meth:`encode_projected`, :meth:`fuse_levels`,
:meth:`stride4`) and the level mapping (:meth:`backbone_level`); the multi-view encoder
(``multiview_encoder.py``) runs them over view chunks and the prediction points decide where the
stride-4 features are computed.

The stride-4 output conv is 1x1 (not 3x3) as in every 3D-capable official model.
"""
import warnings
from typing import Any, List, Optional, Tuple

import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmdet.models.layers import MSDeformAttnPixelDecoder
from mmdet3d.registry import MODELS
from mmengine.model import ModuleList
from torch import Tensor

from projects.odin.layers.deform_attn_layer import use_odin_ms_deform_attn

from ..structures.multiview_geometry import MultiViewGeometry

#: marks an argument left unset (``None`` is a value: no 3D fusion layers)
_UNSET = object()


def _renamed_fusion_cfg(level_fusion_cfg: Optional[dict], fusion_cfg: Any) -> Optional[dict]:
    """``level_fusion_cfg``, or the value of its old name ``fusion_cfg`` with a warning.

    Raises:
        ValueError: both names given with different values (the config is ambiguous).
    """
    if fusion_cfg is _UNSET:
        return level_fusion_cfg
    warnings.warn('ODINPixelDecoder: fusion_cfg is deprecated and will be removed: use '
                  'level_fusion_cfg (the per-level 3D fusion layer; the backbone\'s fusion_cfg '
                  'keeps its name)', DeprecationWarning, stacklevel=3)
    if level_fusion_cfg is not None and level_fusion_cfg != fusion_cfg:
        raise ValueError('ODINPixelDecoder got both level_fusion_cfg and its deprecated name '
                         f'fusion_cfg, with different values ({level_fusion_cfg!r} vs '
                         f'{fusion_cfg!r}): set only level_fusion_cfg')
    return fusion_cfg


@MODELS.register_module()
class ODINPixelDecoder(MSDeformAttnPixelDecoder):
    """MSDeformAttn pixel decoder with per-level 3D fusion and 3D upsampling.

    Args:
        level_fusion_cfg: config of the 3D fusion layer applied to every encoder level's
            voxels (e.g. ``dict(type='CrossViewAttention', num_layers=1)``; ``embed_dims``
            defaults to ``feat_channels``), or None for a decoder without 3D fusion layers
            (ablation "no 3D fusion"). The layers are the module's ``fusion_blocks`` (state-dict
            keys ``fusion_blocks.<level>.*``). Not to be confused with the backbone's
            ``fusion_cfg``, which configures its residual fusion blocks (projections and layer).
        output_kernel_size: kernel of the stride-4 output conv (1 in ODIN, 3 in Mask2Former).
        encoder_chunk_size: views per chunk of the deformable encoder (memory bound).
        fusion_cfg: deprecated name of ``level_fusion_cfg`` (accepted with a
            ``DeprecationWarning``).
        **kwargs: arguments of mmdet's ``MSDeformAttnPixelDecoder``.

    Raises:
        ValueError: both ``level_fusion_cfg`` and its deprecated name ``fusion_cfg`` given
            with different values.
    """

    def __init__(self,
                 level_fusion_cfg: Optional[dict] = None,
                 output_kernel_size: int = 1,
                 encoder_chunk_size: int = 100,
                 fusion_cfg: Any = _UNSET,
                 **kwargs) -> None:
        level_fusion_cfg = _renamed_fusion_cfg(level_fusion_cfg, fusion_cfg)
        super().__init__(**kwargs)
        # mmdet builds mmcv's MultiScaleDeformableAttention; ours has the same parameters and
        # runs the core op with our compiled kernel on CPU (mmcv's CUDA op on GPUs)
        use_odin_ms_deform_attn(self.encoder)
        feat_channels = kwargs.get('feat_channels', 256)
        norm_cfg = kwargs.get('norm_cfg', dict(type='GN', num_groups=32))
        act_cfg = kwargs.get('act_cfg', dict(type='ReLU'))
        self.encoder_chunk_size = encoder_chunk_size
        if output_kernel_size != 3:
            self.output_convs = ModuleList([
                ConvModule(
                    feat_channels,
                    feat_channels,
                    kernel_size=output_kernel_size,
                    padding=output_kernel_size // 2,
                    bias=True,
                    norm_cfg=norm_cfg,
                    act_cfg=act_cfg) for _ in self.output_convs
            ])
        self.fusion_blocks = None
        if level_fusion_cfg is not None:
            cfg = dict(type='CrossViewAttention', embed_dims=feat_channels)
            cfg.update(level_fusion_cfg)
            self.fusion_blocks = ModuleList(
                [MODELS.build(cfg) for _ in range(self.num_encoder_levels)])

    # ------------------------------------------------------------------ level mapping
    def backbone_level(self, i: int) -> int:
        """Backbone level (0 = res2) of encoder level ``i`` (0 = lowest resolution).

        The encoder levels, the decoder levels and the voxel geometry of the 3D path are all
        addressed through this one mapping (encoder level 0 = res5 in ODIN).
        """
        return self.num_input_levels - i - 1

    def encoder_level(self, level: int) -> Optional[int]:
        """Encoder level of backbone level ``level`` (0 = res2), or None if it is not one."""
        i = self.num_input_levels - level - 1
        return i if 0 <= i < self.num_encoder_levels else None

    @property
    def mask_level(self) -> int:
        """Backbone level of the stride-4 mask features (res2, the level below the encoder's)."""
        return self.backbone_level(self.num_encoder_levels)

    # ------------------------------------------------------------------ per-view steps
    def encode(self, feats: List[Tensor]) -> List[Tensor]:
        """Run input projections and the deformable encoder per view, in view chunks.

        Args:
            feats: backbone levels res2..res5, each (N, C_i, h_i, w_i).

        Returns:
            list[Tensor]: encoder levels from low to high resolution (res5, res4, res3), each
            (N, C, h_i, w_i).
        """
        n = feats[0].shape[0]
        step = self.encoder_chunk_size if n > self.encoder_chunk_size else n
        chunks = []
        for s in range(0, n, step):
            chunks.append(self.encode_projected([
                self.input_convs[i](feats[self.backbone_level(i)][s:s + step])
                for i in range(self.num_encoder_levels)
            ]))
        return [torch.cat([c[i] for c in chunks]) for i in range(self.num_encoder_levels)]

    def encode_projected(self, projs: List[Tensor]) -> List[Tensor]:
        """The deformable encoder on input-projected levels of a chunk of views.

        Args:
            projs: ``input_convs[i]`` outputs of the encoder levels (lowest resolution first),
                each (N, C, h_i, w_i).

        Returns:
            list[Tensor]: encoder outputs, same shapes.
        """
        batch_size = projs[0].shape[0]
        inputs, pos_list, shapes, refs = [], [], [], []
        for i, proj in enumerate(projs):
            level_idx = self.backbone_level(i)
            feat = proj
            h, w = feat.shape[-2:]
            mask = feat.new_zeros((batch_size, h, w), dtype=torch.bool)
            pos = self.postional_encoding(mask) + self.level_encoding.weight[i].view(1, -1, 1, 1)
            ref = self.point_generator.single_level_grid_priors((h, w), level_idx,
                                                                device=feat.device)
            ref = ref / (feat.new_tensor([[w, h]]) * self.strides[level_idx])
            # shape (N, C, h, w) -> (N, h*w, C)
            inputs.append(proj.flatten(2).permute(0, 2, 1))
            pos_list.append(pos.flatten(2).permute(0, 2, 1))
            shapes.append((h, w))
            refs.append(ref)
        spatial_shapes = torch.tensor(shapes, device=projs[0].device, dtype=torch.long)
        level_start_index = torch.cat(
            (spatial_shapes.new_zeros((1, )), spatial_shapes.prod(1).cumsum(0)[:-1]))
        reference_points = torch.cat(refs)[None, :, None].repeat(
            batch_size, 1, self.num_encoder_levels, 1)
        query = torch.cat(inputs, 1)
        memory = self.encoder(
            query=query,
            query_pos=torch.cat(pos_list, 1),
            key_padding_mask=query.new_zeros(query.shape[:2], dtype=torch.bool),
            spatial_shapes=spatial_shapes,
            reference_points=reference_points,
            level_start_index=level_start_index,
            valid_ratios=reference_points.new_ones((batch_size, self.num_encoder_levels, 2)))
        # shape (N, sum h*w, C) -> per level (N, C, h, w)
        outs = torch.split(memory.permute(0, 2, 1), [h * w for h, w in shapes], dim=-1)
        return [x.reshape(batch_size, -1, h, w) for x, (h, w) in zip(outs, shapes)]

    def forward(self, feats: List[Tensor]) -> Tuple[Tensor, List[Tensor]]:
        """2D pixel decoder (Mask2Former): the encoder per view, then the bilinear FPN step.

        3D batches do not come here: :class:`~projects.odin.models.multiview_encoder.
        MultiViewEncoder` runs the per-view steps (:meth:`encode_projected`,
        :meth:`stride4`) in view chunks and :meth:`fuse_levels` on the voxels.

        Args:
            feats: backbone levels res2..res5, each (N, C_i, h_i, w_i).

        Returns:
            tuple: ``mask_features`` (N, C, H/4, W/4) and ``multi_scale_features`` (levels
            res5, res4, res3, each (N, C, h, w)).
        """
        return self._fpn_2d(feats, self.encode(feats))

    # ------------------------------------------------------------------ 3D steps
    def fuse_levels(self, voxel_feats: List[Tensor], geometry: MultiViewGeometry) -> List[Tensor]:
        """3D fusion of every encoder level over its voxels (identity without fusion layers).

        Args:
            voxel_feats: encoder outputs averaged per voxel, lowest resolution first, each
                (N_vox_l, C).
            geometry: the batch's geometry.

        Returns:
            list[Tensor]: fused voxel features, same shapes.
        """
        if self.fusion_blocks is None:
            return list(voxel_feats)
        outs = []
        for i, v in enumerate(voxel_feats):
            geo = geometry[self.backbone_level(i)]
            outs.append(self.fusion_blocks[i](v, geo.voxel_xyz, geo.knn_idx))
        return outs

    def stride4(self, res2: Tensor, coarse: Tensor) -> Tensor:
        """Stride-4 mask features: ``mask_feature(output_conv(lateral_conv(res2) + coarse))``.

        The 3D replacement of the FPN step: ``coarse`` is the fused highest-resolution encoder
        level brought to the res2 points in 3D (IDW), by the prediction points
        (:meth:`PredictionPointSet.mask_features`).

        Args:
            res2: backbone res2 features, (n, C2, h, w) (mesh points: (1, C2, N, 1)).
            coarse: the upsampled encoder level at the same points, (n, C, h, w).

        Returns:
            Tensor: shape (n, C, h, w).
        """
        lvl = self.mask_level
        return self.mask_feature(self.output_convs[lvl](self.lateral_convs[lvl](res2) + coarse))

    def _fpn_2d(self, feats: List[Tensor], outs: List[Tensor]) -> Tuple[Tensor, List[Tensor]]:
        """Mask2Former's bilinear FPN step for the levels not in the encoder."""
        for i in range(self.mask_level, -1, -1):
            cur = self.lateral_convs[i](feats[i])
            y = cur + F.interpolate(
                outs[-1], size=cur.shape[-2:], mode='bilinear', align_corners=False)
            outs.append(self.output_convs[i](y))
        return self.mask_feature(outs[-1]), outs[:self.num_outs]
