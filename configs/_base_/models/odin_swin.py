# ODIN with a Swin-B backbone (IN21k-384, as the official swin_base.yaml): Swin stage outputs
# 128/256/512/1024 channels; the 3D fusion blocks sit after each stage's blocks, before patch
# merging and before the stage's output LayerNorm.
_base_ = ['./odin_r50.py']

model = dict(
    backbone=dict(
        _delete_=True,
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
        fusion_stages=(1, 2, 3),
        fusion_layers=(2, 6, 2),
        fusion_cfg=dict(embed_dims=256, num_heads=8, ffn_dims=1024),
        init_cfg=None),
    decode_head=dict(in_channels=[128, 256, 512, 1024]))
