# A tiny ODIN (ResNet-18 width 16, 32-d transformer) for CPU unit tests; same structure as the
# full models (3D fusion after res3/res4/res5, 3D pixel decoder, masked-attention decoder).
_base_ = ['../_base_/models/odin_r50.py', '../_base_/default_runtime.py']

num_classes = 4
num_queries = 8
dims = 32
model = dict(
    backbone=dict(
        depth=18,
        zero_init_residual=False,
        base_channels=16,
        fusion_layers=(1, 1, 1),
        fusion_cfg=dict(embed_dims=dims, num_heads=4, ffn_dims=64,
                        num_groups=8)),
    decode_head=dict(
        in_channels=[16, 32, 64, 128],
        feat_channels=dims,
        out_channels=dims,
        num_things_classes=num_classes,
        num_queries=num_queries,
        sample_sizes=(16, 32, 64),
        max_train_points=200,
        pixel_decoder=dict(
            norm_cfg=dict(type='GN', num_groups=8),
            level_fusion_cfg=dict(num_layers=1, num_heads=4, ffn_dims=64),
            encoder=dict(
                num_layers=1,
                layer_cfg=dict(
                    self_attn_cfg=dict(embed_dims=dims, num_heads=4, num_points=2),
                    ffn_cfg=dict(embed_dims=dims, feedforward_channels=64))),
            positional_encoding=dict(num_feats=dims // 2, normalize=True)),
        positional_encoding=dict(num_feats=dims // 2, normalize=True),
        transformer_decoder=dict(
            num_layers=3,
            layer_cfg=dict(
                self_attn_cfg=dict(embed_dims=dims, num_heads=4),
                cross_attn_cfg=dict(embed_dims=dims, num_heads=4),
                ffn_cfg=dict(embed_dims=dims, feedforward_channels=64))),
        loss_cls=dict(class_weight=[1.0] * num_classes + [0.1])),
    train_cfg=dict(num_points=64),
    test_cfg=dict(topk=10, max_frames=-1))
