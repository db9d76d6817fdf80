# A small ODIN trained from scratch on CPU on the synthetic labelled world (`make demo`).
#
# Same components as configs/odin/scannet_r50.py (ODINResNet with 3D fusion after res3-res5,
# 3D deformable pixel decoder, masked-attention decoder over superpoints of the mesh, Hungarian
# CE/BCE/Dice losses, ScanNet-protocol evaluation); only the sizes shrink so that it learns within
# minutes on two CPU cores: ResNet-18 (no ImageNet weights: nothing is downloaded, so BN is
# trained and the backbone keeps the full learning rate), 64-d features, 3 decoder layers,
# 48 queries, 4 views of 64x64 per sample.
#
# Data (tools/run_synthetic_demo.py does all of this):
#   python tools/dataset_converters/make_synthetic_world.py --out-dir data/synthetic_raw \
#       --num-scenes 24 --num-val 4 --preset demo --seed 0
#   python tools/create_data.py scannet --root-path data/synthetic_raw --out-dir data/synthetic \
#       --frame-skip 1 --extra-tag synthetic
#   python tools/train.py configs/odin/synthetic_r18_demo.py
#   python tools/test.py configs/odin/synthetic_r18_demo.py work_dirs/.../iter_N.pth
_base_ = [
    '../_base_/datasets/synthetic_mv.py', '../_base_/models/odin_r50.py',
    '../_base_/schedules/adamw_iter.py', '../_base_/default_runtime.py'
]

num_classes = 20
num_queries = 48
feat = 64
num_views = 4
image_size = 64

model = dict(
    data_preprocessor=dict(pad_size_divisor=32),
    voxel_sizes=(0.04, 0.08, 0.16, 0.32),
    backbone=dict(
        depth=18,
        base_channels=32,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,
        fusion_stages=(1, 2, 3),
        fusion_layers=(1, 1, 1),
        fusion_cfg=dict(embed_dims=feat, num_heads=4, ffn_dims=2 * feat,
                        num_groups=8)),
    decode_head=dict(
        in_channels=[32, 64, 128, 256],
        feat_channels=feat,
        out_channels=feat,
        num_things_classes=num_classes,
        num_queries=num_queries,
        sample_sizes=(400, 1600, 6400),
        max_train_points=20000,
        pixel_decoder=dict(
            norm_cfg=dict(type='GN', num_groups=16),
            level_fusion_cfg=dict(num_layers=1, num_heads=4, ffn_dims=2 * feat),
            encoder=dict(
                num_layers=1,
                layer_cfg=dict(
                    self_attn_cfg=dict(embed_dims=feat, num_heads=4, num_levels=3, num_points=4),
                    ffn_cfg=dict(embed_dims=feat, feedforward_channels=2 * feat))),
            positional_encoding=dict(num_feats=feat // 2, normalize=True)),
        positional_encoding=dict(num_feats=feat // 2, normalize=True),
        transformer_decoder=dict(
            num_layers=3,
            layer_cfg=dict(
                self_attn_cfg=dict(embed_dims=feat, num_heads=4),
                cross_attn_cfg=dict(embed_dims=feat, num_heads=4),
                ffn_cfg=dict(embed_dims=feat, feedforward_channels=4 * feat))),
        loss_cls=dict(class_weight=[1.0] * num_classes + [0.1])),
    test_cfg=dict(topk=num_queries))

# synthetic_mv.py's pipelines with this config's view count and crop size
train_pipeline = [
    dict(type='LoadODINFrames', num_views=num_views, sampling='chunk', max_stride=2),
    {{_base_.load_points}},
    {{_base_.load_masks}},
    dict(type='LoadODINSuperpoints'),
    dict(type='ODINPointSegClassMapping'),
    dict(type='ODINRandomResizeCrop', crop_size=(image_size, image_size), scale_range=(0.8, 1.25),
         prob=0.5),
    dict(type='ODINColorJitter', brightness=0.2, contrast=0.2, saturation=0.2, hue=0.05,
         prob=0.5),
    dict(type='ODINGlobalAug3D'),
    dict(type='NormalizePointsColor', color_mean=None),
    dict(type='PackODINInputs'),
]
test_pipeline = [
    dict(type='LoadODINFrames', num_views=-1, sampling='uniform'),
    {{_base_.load_points}},
    {{_base_.load_masks}},
    dict(type='LoadODINSuperpoints'),
    dict(type='ODINPointSegClassMapping'),
    dict(type='ODINResize', short_edge=image_size, max_size=image_size * 4 // 3),
    dict(type='NormalizePointsColor', color_mean=None),
    dict(type='PackODINInputs'),
]
# The training rooms are repeated so that an "epoch" is long: MMEngine's infinite dataloader
# pauses 2 s at every epoch end, which with 20 rooms would be half of the training time.
train_dataloader = dict(
    batch_size=2, num_workers=0, collate_fn=dict(camera_drop_prob=0.0),
    dataset=dict(
        _delete_=True,
        type='RepeatDataset',
        times=1000,
        dataset=dict(type='ODINScanNetDataset', data_root='data/synthetic/',
                     ann_file='synthetic_infos_train.pkl', pipeline=train_pipeline,
                     test_mode=False)))
val_dataloader = dict(num_workers=0, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

max_iters = 1500
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999),
                   foreach=True),
    clip_grad=dict(max_norm=1.0, norm_type=2),
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        custom_keys={
            'query_embed': dict(decay_mult=0.0),
            'query_feat': dict(decay_mult=0.0),
            'level_embed': dict(decay_mult=0.0),
        }))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=0, end=max_iters, eta_min=1e-5),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters + 1)
default_hooks = dict(
    logger=dict(interval=25),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters, max_keep_ckpts=1))
log_processor = dict(window_size=25)
