"""The ODIN architectures as package code: the one source of the full-size model configs.

``configs/_base_/models/odin_r50.py`` and ``odin_swin.py`` spell the same dicts out for mmengine
(``tests/test_configs_architecture.py`` checks that they are equal to :func:`odin_r50_model` and
:func:`odin_swin_model`); the checkpoint converter (:func:`official_converter.odin_model_cfg`)
builds its configs from here, so the library never reads the checkout's ``configs/`` folder.
Change an architecture value here and in the config file together.
"""
import copy
from typing import Any, Dict

__all__ = ['SWIN_B', 'SWIN_B_IN_CHANNELS', 'odin_r50_model', 'odin_swin_model']

#: Swin-B (IN21k-384) backbone of ``configs/_base_/models/odin_swin.py`` without its 3D blocks
SWIN_B: Dict[str, Any] = dict(
    type='ODINSwinTransformer',
    pretrain_img_size=384,
    embed_dims=128,
    depths=[2, 2, 18, 2],
    num_heads=[4, 8, 16, 32],
    window_size=12,
    mlp_ratio=4,
    qkv_bias=True,
    qk_scale=None,
    drop_rate=0.0,
    attn_drop_rate=0.0,
    drop_path_rate=0.3,
    patch_norm=True,
    out_indices=(0, 1, 2, 3),
    with_cp=False,
    convert_weights=False,
    init_cfg=None)
#: Swin-B stage channels res2..res5 (the head's ``in_channels``)
SWIN_B_IN_CHANNELS = [128, 256, 512, 1024]


def odin_r50_model(num_classes: int = 20, num_queries: int = 100) -> Dict[str, Any]:
    """The ``model`` of ``configs/_base_/models/odin_r50.py`` (ResNet-50, frozen BN).

    Args:
        num_classes: closed-set classes K (the class head has K+1 outputs).
        num_queries: object queries.

    Returns:
        dict: a new model config dict.
    """
    return dict(
        type='ODIN',
        data_preprocessor=dict(
            type='ODINDataPreprocessor',
            mean=[123.675, 116.28, 103.53],
            std=[58.395, 57.12, 57.375],
            bgr_to_rgb=False,
            pad_size_divisor=32,
            pad_mask=True,
            mask_pad_value=0),
        voxel_sizes=(0.02, 0.04, 0.08, 0.16),
        num_neighbors=8,
        prediction_points=dict(
            type='MeshPoints', voxel_size=0.02, superpoints=True, visibility_thresh=1e-3),
        backbone=dict(
            type='ODINResNet',
            depth=50,
            num_stages=4,
            out_indices=(0, 1, 2, 3),
            frozen_stages=-1,
            norm_cfg=dict(type='BN', requires_grad=False),
            norm_eval=True,
            style='pytorch',
            fusion_stages=(1, 2, 3),
            fusion_layers=(2, 6, 2),
            fusion_cfg=dict(embed_dims=256, num_heads=8, ffn_dims=1024),
            init_cfg=None),
        decode_head=dict(
            type='ODINHead',
            in_channels=[256, 512, 1024, 2048],
            strides=[4, 8, 16, 32],
            feat_channels=256,
            out_channels=256,
            num_things_classes=num_classes,
            num_stuff_classes=0,
            num_queries=num_queries,
            num_transformer_feat_level=3,
            sample_sizes=(800, 3200, 12800),
            max_train_points=50000,
            classifier=dict(type='LinearClassifier'),
            fusion_head_2d=dict(
                type='mmdet.MaskFormerFusionHead',
                test_cfg=dict(panoptic_on=False, semantic_on=False, instance_on=True,
                              iou_thr=0.8, filter_low_score=False)),
            pixel_decoder=dict(
                type='ODINPixelDecoder',
                num_outs=3,
                norm_cfg=dict(type='GN', num_groups=32),
                act_cfg=dict(type='ReLU'),
                output_kernel_size=1,
                encoder_chunk_size=100,
                fusion_cfg=dict(type='CrossViewAttention', num_layers=1, num_heads=8,
                                ffn_dims=1024),
                encoder=dict(
                    num_layers=6,
                    layer_cfg=dict(
                        self_attn_cfg=dict(
                            embed_dims=256, num_heads=8, num_levels=3, num_points=4,
                            im2col_step=64, dropout=0.0, batch_first=True, init_cfg=None),
                        ffn_cfg=dict(
                            embed_dims=256, feedforward_channels=1024, num_fcs=2, ffn_drop=0.0,
                            act_cfg=dict(type='ReLU', inplace=True))),
                    init_cfg=None),
                positional_encoding=dict(num_feats=128, normalize=True),
                init_cfg=None),
            enforce_decoder_input_project=False,
            positional_encoding=dict(num_feats=128, normalize=True),
            transformer_decoder=dict(
                return_intermediate=True,
                num_layers=9,
                layer_cfg=dict(
                    self_attn_cfg=dict(embed_dims=256, num_heads=8, dropout=0.0,
                                       batch_first=True),
                    cross_attn_cfg=dict(embed_dims=256, num_heads=8, dropout=0.0,
                                        batch_first=True),
                    ffn_cfg=dict(
                        embed_dims=256, feedforward_channels=2048, num_fcs=2, ffn_drop=0.0,
                        act_cfg=dict(type='ReLU', inplace=True))),
                init_cfg=None),
            loss_cls=dict(
                type='mmdet.CrossEntropyLoss',
                use_sigmoid=False,
                loss_weight=2.0,
                reduction='mean',
                class_weight=[1.0] * num_classes + [0.1]),
            loss_mask=dict(
                type='mmdet.CrossEntropyLoss', use_sigmoid=True, reduction='mean',
                loss_weight=15.0),
            loss_dice=dict(
                type='mmdet.DiceLoss', use_sigmoid=True, activate=True, reduction='mean',
                naive_dice=True, eps=1.0, loss_weight=6.0)),
        train_cfg=dict(
            num_points=12544,
            oversample_ratio=3.0,
            importance_sample_ratio=0.75,
            assigner=dict(
                type='mmdet.HungarianAssigner',
                match_costs=[
                    dict(type='mmdet.ClassificationCost', weight=2.0),
                    dict(type='mmdet.CrossEntropyLossCost', weight=15.0, use_sigmoid=True),
                    dict(type='mmdet.DiceCost', weight=6.0, pred_act=True, eps=1.0)
                ]),
            sampler=dict(type='mmdet.MaskPseudoSampler'),
            # training in bounded memory (docs/training.md): views per chunk of a 3D step, each
            # chunk recomputed in the backward pass (0 = the whole batch at once), and pixels
            # per chunk of the keys' positional encoding (0 = all)
            view_chunk=0,
            point_chunk=0),
        test_cfg=dict(
            topk=100,
            skip_classes=(),
            max_frames=-1,
            # bounded-memory inference (docs/model.md): views per chunk of every per-view step
            # (0 = all views at once) and pixels per chunk of the keys' positional encoding
            view_chunk=8,
            point_chunk=65536))


def odin_swin_model(num_classes: int = 20, num_queries: int = 100) -> Dict[str, Any]:
    """The ``model`` of ``configs/_base_/models/odin_swin.py`` (Swin-B).

    Swin-B with the R50 model's 3D blocks (after stages res3-res5, 2/6/2 layers) and head.

    Args:
        num_classes: closed-set classes K.
        num_queries: object queries.

    Returns:
        dict: a new model config dict.
    """
    model = odin_r50_model(num_classes, num_queries)
    fusion = model['backbone']
    model['backbone'] = dict(copy.deepcopy(SWIN_B), fusion_stages=fusion['fusion_stages'],
                             fusion_layers=fusion['fusion_layers'],
                             fusion_cfg=fusion['fusion_cfg'])
    model['decode_head']['in_channels'] = list(SWIN_B_IN_CHANNELS)
    return model
