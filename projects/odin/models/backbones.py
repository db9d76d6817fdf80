"""ODIN backbones: mmdet ResNet / Swin Transformer with residual 3D fusion blocks.

After stages res3, res4 and res5 (2, 6 and 2 attention layers, docs/specification.md §2.5) a
residual block ``x + out_proj(3D-attention(in_proj(x)))`` fuses the features of all views of a scene
in 3D. The blocks live under ``backbone.fusion_blocks`` so that the optimiser keeps their full
learning rate while the 2D backbone is trained with a x0.1 multiplier.
"""
from typing import List, Optional, Sequence

import torch.nn as nn
from mmdet.models.backbones import ResNet, SwinTransformer
from mmdet3d.registry import MODELS
from mmengine.model import BaseModule, ModuleList
from torch import Tensor

from .multiview import LevelGeometry, MultiViewGeometry


class ResidualFusionBlock(BaseModule):
    """Residual 3D cross-view fusion block inserted after a backbone stage.

    ``x + out_proj(broadcast(fusion(pool(in_proj(x)))))`` with 1x1 conv + GroupNorm
    projections to ``embed_dims`` and back (docs/specification.md §2.5; the residual branch is not
    zero-initialised).

    Args:
        in_channels: channels of the stage output.
        num_layers: attention layers of the block.
        embed_dims: width of the 3D attention.
        num_groups: GroupNorm groups of the projections.
        init_cfg: initialisation config.
        **fusion_cfg: the 3D fusion layer's config: ``type`` (default ``'CrossViewAttention'``)
            and its arguments (``num_heads``, ``ffn_dims``, ...).
    """

    def __init__(self,
                 in_channels: int,
                 num_layers: int,
                 embed_dims: int = 256,
                 num_groups: int = 32,
                 init_cfg=None,
                 **fusion_cfg) -> None:
        super().__init__(init_cfg=init_cfg)
        self.in_proj = nn.Sequential(
            nn.Conv2d(in_channels, embed_dims, 1), nn.GroupNorm(num_groups, embed_dims))
        cfg = dict(type='CrossViewAttention', embed_dims=embed_dims, num_layers=num_layers)
        cfg.update(fusion_cfg)
        self.attn = MODELS.build(cfg)
        self.out_proj = nn.Sequential(
            nn.Conv2d(embed_dims, in_channels, 1), nn.GroupNorm(num_groups, in_channels))

    def init_weights(self) -> None:
        """Caffe2-xavier init of the projections (as detectron2's c2_xavier_fill)."""
        super().init_weights()
        for seq in (self.in_proj, self.out_proj):
            nn.init.kaiming_uniform_(seq[0].weight, a=1)
            nn.init.zeros_(seq[0].bias)

    def forward(self, x: Tensor, geometry: LevelGeometry) -> Tensor:
        """Fuse the views of every scene in 3D.

        Args:
            x: stage output, shape (B*V, C, h, w).
            geometry: voxelisation of this level.

        Returns:
            Tensor: ``x`` plus the 3D residual, shape (B*V, C, h, w).
        """
        y = self.in_proj(x)
        voxel_feats = geometry.pool(y)  # (N_vox, 256)
        voxel_feats = self.attn(voxel_feats, geometry.voxel_xyz, geometry.knn_idx)
        return x + self.out_proj(geometry.broadcast(voxel_feats))


def _build_fusion_blocks(channels: Sequence[int], fusion_stages: Sequence[int],
                         fusion_layers: Sequence[int], fusion_cfg: dict) -> ModuleList:
    assert len(fusion_stages) == len(fusion_layers), 'one layer count per fusion stage'
    return ModuleList([
        ResidualFusionBlock(channels[s], n, **fusion_cfg)
        for s, n in zip(fusion_stages, fusion_layers)
    ])


class _FusionStages:
    """Adds ``fusion_blocks`` after some stages of an mmdet backbone (mixin of the two below).

    Args of the backbones: ``fusion_stages`` (stages followed by a fusion block, 0 = res2),
    ``fusion_layers`` (attention layers of each block) and ``fusion_cfg`` (extra arguments of
    :class:`ResidualFusionBlock`); every other argument goes to the mmdet backbone.
    """

    def _add_fusion_blocks(self, channels: Sequence[int], fusion_stages: Sequence[int],
                           fusion_layers: Sequence[int], fusion_cfg: Optional[dict]) -> None:
        self.fusion_stages = tuple(fusion_stages)
        self.fusion_blocks = _build_fusion_blocks(channels, self.fusion_stages, fusion_layers,
                                                  fusion_cfg or {})


@MODELS.register_module()
class ODINResNet(_FusionStages, ResNet):
    """mmdet ResNet (frozen BN) with 3D fusion blocks after res3/res4/res5.

    Fusion arguments as :class:`_FusionStages`.
    """

    def __init__(self, fusion_stages: Sequence[int] = (1, 2, 3),
                 fusion_layers: Sequence[int] = (2, 6, 2), fusion_cfg: Optional[dict] = None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        channels = [self.block.expansion * self.base_channels * 2**i
                    for i in range(self.num_stages)]
        self._add_fusion_blocks(channels, fusion_stages, fusion_layers, fusion_cfg)

    def forward(self, x: Tensor, geometry: Optional[MultiViewGeometry] = None) -> List[Tensor]:
        """Extract features; 3D fusion runs only when ``geometry`` is given (3D batches).

        Args:
            x: normalised images, shape (B*V, 3, H, W).
            geometry: voxel geometry of the levels res2..res5, None in 2D mode.

        Returns:
            list[Tensor]: res2..res5 (those in ``out_indices``), each (B*V, C_i, H/s, W/s).
        """
        if self.deep_stem:
            x = self.stem(x)
        else:
            x = self.relu(self.norm1(self.conv1(x)))
        x = self.maxpool(x)
        outs = []
        for i, layer_name in enumerate(self.res_layers):
            x = getattr(self, layer_name)(x)
            if geometry is not None and i in self.fusion_stages:
                x = self.fusion_blocks[self.fusion_stages.index(i)](x, geometry[i])
            if i in self.out_indices:
                outs.append(x)
        return outs


@MODELS.register_module()
class ODINSwinTransformer(_FusionStages, SwinTransformer):
    """mmdet Swin Transformer with 3D fusion blocks at the end of stages 2-4.

    The fusion block runs after the stage's Swin blocks, before patch merging and before the
    stage's output LayerNorm (docs/specification.md §2.5); fusion arguments as
    :class:`_FusionStages`.
    """

    def __init__(self, fusion_stages: Sequence[int] = (1, 2, 3),
                 fusion_layers: Sequence[int] = (2, 6, 2), fusion_cfg: Optional[dict] = None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self._add_fusion_blocks(self.num_features, fusion_stages, fusion_layers, fusion_cfg)

    def forward(self, x: Tensor, geometry: Optional[MultiViewGeometry] = None) -> List[Tensor]:
        """Extract features; 3D fusion runs only when ``geometry`` is given.

        Args:
            x: normalised images, shape (B*V, 3, H, W).
            geometry: voxel geometry of the levels res2..res5, None in 2D mode.

        Returns:
            list[Tensor]: normalised stage outputs, each (B*V, C_i, H/s, W/s).
        """
        x, hw_shape = self.patch_embed(x)
        if self.use_abs_pos_embed:
            x = x + self.absolute_pos_embed
        x = self.drop_after_pos(x)
        outs = []
        for i, stage in enumerate(self.stages):
            for block in stage.blocks:
                x = block(x, hw_shape)
            if geometry is not None and i in self.fusion_stages:
                n, _, c = x.shape
                # shape (N, h*w, C) -> (N, C, h, w)
                fmap = x.transpose(1, 2).reshape(n, c, *hw_shape)
                fmap = self.fusion_blocks[self.fusion_stages.index(i)](fmap, geometry[i])
                x = fmap.flatten(2).transpose(1, 2)
            out, out_hw_shape = x, hw_shape
            if stage.downsample:
                x, hw_shape = stage.downsample(x, hw_shape)
            if i in self.out_indices:
                out = getattr(self, f'norm{i}')(out)
                out = out.view(-1, *out_hw_shape,
                               self.num_features[i]).permute(0, 3, 1, 2).contiguous()
                outs.append(out)
        return outs
