"""ODIN backbones: mmdet ResNet / Swin Transformer with residual 3D fusion blocks.

After stages res3, res4 and res5 (2, 6 and 2 attention layers, docs/specification.md §2.5) a
residual block ``x + out_proj(3D-attention(in_proj(x)))`` fuses the features of all views of a scene
in 3D. The blocks live under ``backbone.fusion_blocks`` so that the optimiser keeps their full
learning rate while the 2D backbone is trained with a x0.1 multiplier.
"""
from typing import Any, List, Optional, Sequence, Tuple

import torch.nn as nn
from mmdet.models.backbones import ResNet, SwinTransformer
from mmdet3d.registry import MODELS
from mmengine.model import BaseModule, ModuleList
from torch import Tensor

from ..structures.multiview_geometry import LevelGeometry


class ResidualFusionBlock(BaseModule):
    """Residual 3D cross-view fusion block inserted after a backbone stage.

    ``x + out_proj(broadcast(fusion(pool(in_proj(x)))))`` with 1x1 conv + GroupNorm
    projections to ``embed_dims`` and back (docs/specification.md §2.5; the residual branch is not
    zero-initialised). The steps are separate because pooling and broadcasting run per chunk of
    views and the fusion once per level: ``in_proj`` (per chunk, then pooled into voxel sums),
    :meth:`fuse_voxels` (once) and :meth:`forward` (per chunk, the residual added).

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

    def fuse_voxels(self, voxel_feats: Tensor, geometry: LevelGeometry) -> Tensor:
        """The 3D attention over the level's voxels (in_proj'd features pooled per voxel).

        Args:
            voxel_feats: shape (N_vox, embed_dims).
            geometry: voxelisation of this level.

        Returns:
            Tensor: fused voxel features, shape (N_vox, embed_dims).
        """
        return self.attn(voxel_feats, geometry.voxel_xyz, geometry.knn_idx)

    def forward(self, x: Tensor, fused: Tensor, geometry: LevelGeometry, start: int) -> Tensor:
        """Add the 3D residual to the views ``start:start+n``: ``x + out_proj(broadcast(fused))``.

        Args:
            x: stage output of those views, shape (n, C, h, w).
            fused: :meth:`fuse_voxels` of the whole level, shape (N_vox, embed_dims).
            geometry: voxelisation of this level.
            start: flattened (``B*V``) index of the first view.

        Returns:
            Tensor: the fused stage output, shape (n, C, h, w).
        """
        return x + self.out_proj(geometry.broadcast_views(fused, start, start + x.shape[0]))


def _build_fusion_blocks(channels: Sequence[int], fusion_stages: Sequence[int],
                         fusion_layers: Sequence[int], fusion_cfg: dict) -> ModuleList:
    assert len(fusion_stages) == len(fusion_layers), 'one layer count per fusion stage'
    return ModuleList([
        ResidualFusionBlock(channels[s], n, **fusion_cfg)
        for s, n in zip(fusion_stages, fusion_layers)
    ])


#: what a backbone carries from one stage to the next (ResNet: a tensor; Swin: tokens, hw)
StageState = Any


class _FusionStages:
    """Adds ``fusion_blocks`` after some stages of an mmdet backbone (mixin of the two below).

    Args of the backbones: ``fusion_stages`` (stages followed by a fusion block, 0 = res2),
    ``fusion_layers`` (attention layers of each block) and ``fusion_cfg`` (extra arguments of
    :class:`ResidualFusionBlock`); every other argument goes to the mmdet backbone.

    A backbone using it defines the stage steps :meth:`stem_forward`, :meth:`stage_forward`,
    :meth:`stage_output`, :meth:`fusion_map` and :meth:`from_fusion_map`; the mixin composes them
    into the 2D :meth:`forward`, and the multi-view encoder composes them, view-chunked and with
    the fusion blocks, for 3D batches: both run exactly the same per-view operations.
    """

    def _add_fusion_blocks(self, channels: Sequence[int], fusion_stages: Sequence[int],
                           fusion_layers: Sequence[int], fusion_cfg: Optional[dict]) -> None:
        self.fusion_stages = tuple(fusion_stages)
        self.fusion_blocks = _build_fusion_blocks(channels, self.fusion_stages, fusion_layers,
                                                  fusion_cfg or {})

    @property
    def num_stage_steps(self) -> int:
        """Number of stages (res2..res5)."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> List[Tensor]:
        """2D features (no 3D fusion): the stage steps composed over a batch of images.

        3D batches run the same stage steps view-chunked, with the fusion blocks, in
        :class:`~projects.odin.models.multiview_encoder.MultiViewEncoder`.

        Args:
            x: normalised images, shape (N, 3, H, W).

        Returns:
            list[Tensor]: res2..res5 (those in ``out_indices``), each (N, C_i, H/s, W/s).
        """
        state = self.stem_forward(x)
        outs = []
        for i in range(self.num_stage_steps):
            state, out = self.stage_output(i, self.stage_forward(i, state))
            if out is not None:
                outs.append(out)
        return outs

    def output_level(self, i: int) -> int:
        """Index among the outputs (0 = res2) of stage ``i`` (which must be in ``out_indices``)."""
        return len([j for j in self.out_indices if j < i])

    def fusion_block(self, i: int) -> Optional[ResidualFusionBlock]:
        """The fusion block after stage ``i``, or None."""
        if i not in self.fusion_stages:
            return None
        return self.fusion_blocks[self.fusion_stages.index(i)]


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

    # stage steps of :class:`_FusionStages` (the state is the feature map (N, C, h, w))
    @property
    def num_stage_steps(self) -> int:
        """Number of residual stages."""
        return len(self.res_layers)

    def stem_forward(self, x: Tensor) -> Tensor:
        """Stem (deep or plain) and max-pool: (N, 3, H, W) -> (N, C, H/4, W/4)."""
        if self.deep_stem:
            x = self.stem(x)
        else:
            x = self.relu(self.norm1(self.conv1(x)))
        return self.maxpool(x)

    def stage_forward(self, i: int, state: Tensor) -> Tensor:
        """Residual stage ``i``."""
        return getattr(self, self.res_layers[i])(state)

    def stage_output(self, i: int, state: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        """The state and, if stage ``i`` is an output, its output (the same map)."""
        return state, (state if i in self.out_indices else None)

    def fusion_map(self, state: Tensor) -> Tensor:
        """The map a fusion block reads, (N, C, h, w)."""
        return state

    def from_fusion_map(self, state: Tensor, fmap: Tensor) -> Tensor:
        """The state holding a fused map (N, C, h, w)."""
        return fmap


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

    # stage steps of :class:`_FusionStages` (the state is (tokens (N, h*w, C), (h, w)))
    @property
    def num_stage_steps(self) -> int:
        """Number of Swin stages."""
        return len(self.stages)

    def stem_forward(self, x: Tensor) -> tuple:
        """Patch embedding (+ absolute position embedding): tokens and their grid."""
        x, hw_shape = self.patch_embed(x)
        if self.use_abs_pos_embed:
            x = x + self.absolute_pos_embed
        return self.drop_after_pos(x), hw_shape

    def stage_forward(self, i: int, state: tuple) -> tuple:
        """The Swin blocks of stage ``i`` (not its patch merging)."""
        x, hw_shape = state
        for block in self.stages[i].blocks:
            x = block(x, hw_shape)
        return x, hw_shape

    def stage_output(self, i: int, state: tuple) -> Tuple[tuple, Optional[Tensor]]:
        """Patch merging of stage ``i``, and its normalised output map if it is an output."""
        x, hw_shape = state
        out = None
        if i in self.out_indices:
            out = getattr(self, f'norm{i}')(x)
            out = out.view(-1, *hw_shape, self.num_features[i]).permute(0, 3, 1, 2).contiguous()
        if self.stages[i].downsample:
            x, hw_shape = self.stages[i].downsample(x, hw_shape)
        return (x, hw_shape), out

    def fusion_map(self, state: tuple) -> Tensor:
        """The tokens as the map a fusion block reads, (N, C, h, w)."""
        x, hw_shape = state
        n, _, c = x.shape
        # shape (N, h*w, C) -> (N, C, h, w)
        return x.transpose(1, 2).reshape(n, c, *hw_shape)

    def from_fusion_map(self, state: tuple, fmap: Tensor) -> tuple:
        """The state holding a fused map (N, C, h, w) as tokens."""
        return fmap.flatten(2).transpose(1, 2), state[1]
