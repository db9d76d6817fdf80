"""ODIN pixel decoder: mmdet's MSDeformAttn pixel decoder followed by 3D fusion.

Per view, the 6-layer multi-scale deformable encoder runs exactly as in Mask2Former. In 3D
batches every encoder level is then replaced by the output of a 1-layer 3D attention block over
the level's voxels, and the stride-4 level is built in 3D (docs/specification.md §2.6):

* mesh prediction points: backbone res2 features and the fused res3 level are IDW-interpolated
  (k nearest) onto the 2 cm mesh voxels ("ghost points"), so mask features live on mesh voxels;
* sensor-point mode: the fused res3 level is IDW-interpolated onto the 2 cm res2 voxels and
  broadcast to the res2 pixels instead of bilinear upsampling;
* 2D mode: Mask2Former's bilinear FPN step.

The stride-4 output conv is 1x1 (not 3x3) as in every 3D-capable official model.
"""
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmdet.models.layers import MSDeformAttnPixelDecoder
from mmdet3d.registry import MODELS
from mmengine.model import ModuleList
from torch import Tensor

from projects.odin.layers.ms_deform_attn import use_odin_ms_deform_attn

from .multiview import MultiViewGeometry
from .prediction_points import MeshVoxels


@MODELS.register_module()
class ODINPixelDecoder(MSDeformAttnPixelDecoder):
    """MSDeformAttn pixel decoder with per-level 3D fusion and 3D upsampling.

    Args:
        fusion_cfg: config of the per-level 3D fusion layer (e.g.
            ``dict(type='CrossViewAttention', num_layers=1)``; ``embed_dims`` defaults to
            ``feat_channels``), or None for a decoder without 3D fusion layers (ablation
            "no 3D fusion").
        output_kernel_size: kernel of the stride-4 output conv (1 in ODIN, 3 in Mask2Former).
        encoder_chunk_size: views per chunk of the deformable encoder (memory bound).
        **kwargs: arguments of mmdet's ``MSDeformAttnPixelDecoder``.
    """

    def __init__(self,
                 fusion_cfg: Optional[dict] = None,
                 output_kernel_size: int = 1,
                 encoder_chunk_size: int = 100,
                 **kwargs) -> None:
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
        if fusion_cfg is not None:
            cfg = dict(type='CrossViewAttention', embed_dims=feat_channels)
            cfg.update(fusion_cfg)
            self.fusion_blocks = ModuleList(
                [MODELS.build(cfg) for _ in range(self.num_encoder_levels)])

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
            chunks.append(self._encode_chunk([f[s:s + step] for f in feats]))
        return [torch.cat([c[i] for c in chunks]) for i in range(self.num_encoder_levels)]

    def encoder_level(self, level: int) -> Optional[int]:
        """Encoder level (0 = lowest resolution) of backbone level ``level`` (0 = res2), or None."""
        i = self.num_input_levels - level - 1
        return i if 0 <= i < self.num_encoder_levels else None

    def _encode_chunk(self, feats: List[Tensor]) -> List[Tensor]:
        return self.encode_projected([
            self.input_convs[i](feats[self.num_input_levels - i - 1])
            for i in range(self.num_encoder_levels)
        ])

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
            level_idx = self.num_input_levels - i - 1
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

    def forward(self,
                feats: List[Tensor],
                geometry: Optional[MultiViewGeometry] = None,
                mesh: Optional[MeshVoxels] = None) -> tuple:
        """Pixel decoder forward (2D, sensor-point 3D or mesh-point 3D).

        Args:
            feats: backbone levels res2..res5, each (B*V, C_i, h_i, w_i).
            geometry: voxel geometry of res2..res5 (3D batches), None in 2D mode.
            mesh: the mesh voxels when masks are predicted on mesh points, None otherwise.

        Returns:
            tuple: ``mask_features`` and ``multi_scale_features`` (2D); in 3D batches also
            ``voxel_features``.

            - mask_features: 2D mode (B*V, C, H/4, W/4); sensor mode the res2 voxels
              (N_vox2, C); mesh mode a list with one (C, N_mv_b) tensor per scene.
            - multi_scale_features: levels res5, res4, res3, each (B*V, C, h, w) (3D batches:
              the fused, voxel-constant features).
            - voxel_features: the same levels per voxel, each (N_vox_l, C) (what the decoder's
              memory reads).
        """
        outs = self.encode(feats)
        if geometry is None:
            return self._fpn_2d(feats, outs)
        voxel_outs = self.fuse_levels(
            [geometry[self.num_input_levels - i - 1].pool(outs[i])
             for i in range(self.num_encoder_levels)], geometry)
        if self.fusion_blocks is not None:
            for i in range(self.num_encoder_levels):
                outs[i] = geometry[self.num_input_levels - i - 1].broadcast(voxel_outs[i])
        lvl = self.num_input_levels - self.num_encoder_levels - 1
        if mesh is None:
            up = self.upsample_to_res2(voxel_outs, geometry)
            res2 = geometry[lvl]
            acc = res2.voxel_sum()
            res2.pool_views(self.sensor_mask_features(feats[lvl], up, geometry, 0), 0, acc)
            return acc.mean(), outs[:self.num_outs], voxel_outs
        mask_features = self.mesh_mask_features(geometry[lvl].pool(feats[lvl]), voxel_outs,
                                                geometry, mesh)
        return mask_features, outs[:self.num_outs], voxel_outs

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
            geo = geometry[self.num_input_levels - i - 1]
            outs.append(self.fusion_blocks[i](v, geo.voxel_xyz, geo.knn_idx))
        return outs

    def upsample_to_res2(self, voxel_outs: List[Tensor], geometry: MultiViewGeometry) -> Tensor:
        """Sensor points: the fused highest-resolution encoder level IDW'd onto the res2 voxels.

        Returns:
            Tensor: shape (N_vox2, C).
        """
        lvl = self.num_input_levels - self.num_encoder_levels - 1
        res2 = geometry[lvl]
        return geometry.idw(voxel_outs[-1], geometry[lvl + 1], res2.voxel_xyz,
                            res2.voxel_offsets)

    def sensor_mask_features(self, res2_feats: Tensor, up: Tensor, geometry: MultiViewGeometry,
                             start: int) -> Tensor:
        """Stride-4 mask features of a chunk of views (sensor points).

        ``mask_feature(output_conv(lateral_conv(res2) + broadcast(up)))``, per view.

        Args:
            res2_feats: backbone res2 of views ``start:start+n``, (n, C2, h, w).
            up: :meth:`upsample_to_res2`, (N_vox2, C).
            geometry: the batch's geometry.
            start: flattened (``B*V``) index of the first view.

        Returns:
            Tensor: shape (n, C, h, w).
        """
        lvl = self.num_input_levels - self.num_encoder_levels - 1
        res2 = geometry[lvl]
        y = self.lateral_convs[lvl](res2_feats) + res2.broadcast_views(
            up, start, start + res2_feats.shape[0])
        return self.mask_feature(self.output_convs[lvl](y))

    def mesh_mask_features(self, res2_voxel: Tensor, voxel_outs: List[Tensor],
                           geometry: MultiViewGeometry, mesh: MeshVoxels) -> List[Tensor]:
        """Mask features on the mesh voxels (ghost points), per scene.

        Args:
            res2_voxel: backbone res2 averaged per res2 voxel, (N_vox2, C2).
            voxel_outs: :meth:`fuse_levels` output.
            geometry: the batch's geometry.
            mesh: the mesh voxels.

        Returns:
            list[Tensor]: per scene (C, N_mv_b).
        """
        lvl = self.num_input_levels - self.num_encoder_levels - 1
        skip = geometry.idw(res2_voxel, geometry[lvl], mesh.voxel_xyz, mesh.voxel_offsets)
        cur = geometry.idw(voxel_outs[-1], geometry[lvl + 1], mesh.voxel_xyz,
                           mesh.voxel_offsets)
        mask_features = []
        start = 0
        for n in mesh.voxel_counts:
            # shape (N_mv_b, C) -> (1, C, N_mv_b, 1): a 1-pixel-wide image for the 1x1 convs
            s = skip[start:start + n].t()[None, :, :, None]
            c = cur[start:start + n].t()[None, :, :, None]
            y = self.output_convs[lvl](c + self.lateral_convs[lvl](s))
            mask_features.append(self.mask_feature(y)[0, :, :, 0])
            start += n
        return mask_features

    def _fpn_2d(self, feats: List[Tensor], outs: List[Tensor]) -> Tuple[Tensor, List[Tensor]]:
        """Mask2Former's bilinear FPN step for the levels not in the encoder."""
        for i in range(self.num_input_levels - self.num_encoder_levels - 1, -1, -1):
            cur = self.lateral_convs[i](feats[i])
            y = cur + F.interpolate(
                outs[-1], size=cur.shape[-2:], mode='bilinear', align_corners=False)
            outs.append(self.output_convs[i](y))
        return self.mask_feature(outs[-1]), outs[:self.num_outs]
