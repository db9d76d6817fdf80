# ODIN with a ResNet-50 backbone (frozen BN), as the official 3d.yaml + scripts (docs/specification.md §2, §5).
# Class-count dependent values are set from `num_classes` by the dataset configs.
num_classes = 20
num_queries = 100
model = dict(
    type='ODIN',
    data_preprocessor=dict(
        type='ODINDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=False,
        pad_size_divisor=32,
        pad_mask=True,
        mask_pad_value=0),
    voxel_sizes=(0.02, 0.04, 0.08, 0.16),  # res2..res5 (INPUT.VOXEL_SIZE)
    num_neighbors=8,  # MODEL.KNN: k of every voxel k-NN graph and IDW interpolation
    # USE_GHOST_POINTS (mesh vertices voxelised at 2 cm), USE_SEGMENTS (superpoints),
    # KNN_THRESH (squared metres: training keeps the mesh points the views observe)
    prediction_points=dict(
        type='MeshPointsBuilder', voxel_size=0.02, superpoints=True, visibility_thresh=1e-3),
    backbone=dict(
        type='ODINResNet',
        depth=50,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        norm_cfg=dict(type='BN', requires_grad=False),  # detectron2 FrozenBN
        norm_eval=True,
        style='pytorch',  # STRIDE_IN_1X1 False
        fusion_stages=(1, 2, 3),  # res3, res4, res5
        fusion_layers=(2, 6, 2),  # CROSS_VIEW_NUM_LAYERS[1:]
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
        # closed-set Linear(C, K+1); open vocabulary: dict(type='OpenVocabClassifier', ...)
        classifier=dict(type='LinearClassifier'),
        fusion_head_2d=dict(  # 2D (COCO) instance inference; max_per_image = test_cfg.topk
            type='mmdet.MaskFormerFusionHead',
            test_cfg=dict(panoptic_on=False, semantic_on=False, instance_on=True, iou_thr=0.8,
                          filter_low_score=False)),
        pixel_decoder=dict(
            type='ODINPixelDecoder',
            num_outs=3,
            norm_cfg=dict(type='GN', num_groups=32),
            act_cfg=dict(type='ReLU'),
            output_kernel_size=1,
            encoder_chunk_size=100,
            # the 3D fusion layer of every encoder level (the backbone's fusion_cfg configures
            # its residual fusion blocks)
            level_fusion_cfg=dict(type='CrossViewAttention', num_layers=1, num_heads=8,
                                  ffn_dims=1024),
            encoder=dict(
                num_layers=6,
                layer_cfg=dict(
                    self_attn_cfg=dict(
                        embed_dims=256, num_heads=8, num_levels=3, num_points=4,
                        im2col_step=64, dropout=0.0, batch_first=True,
                        init_cfg=None),
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
                self_attn_cfg=dict(embed_dims=256, num_heads=8, dropout=0.0, batch_first=True),
                cross_attn_cfg=dict(embed_dims=256, num_heads=8, dropout=0.0, batch_first=True),
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
            type='mmdet.CrossEntropyLoss', use_sigmoid=True, reduction='mean', loss_weight=15.0),
        loss_dice=dict(
            type='mmdet.DiceLoss', use_sigmoid=True, activate=True, reduction='mean',
            naive_dice=True, eps=1.0, loss_weight=6.0)),
    train_cfg=dict(
        num_points=12544,  # 2D (COCO) batches only
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
