# ODIN ResNet-50 on ai2thor: the official recipe of scripts/ai2thor/ai2thor_resnet.sh
# (docs/specification.md §5): AdamW 1e-4, weight decay 0.05 (0 for norms/embeddings), backbone lr x0.1
# except the inserted 3D layers, grad-norm clip 0.01, AMP, constant LR. Published checkpoints:
# 56k at 1e-4, then +1.5k at 1e-5; sensor points, raw depth.
# Second phase: optim_wrapper.optimizer.lr=1e-5, load_from=<1e-4 checkpoint>, keep the best on val.
# Init (load_from):
#   Mask2Former COCO instance weights: python tools/model_converters/odin_to_mmdet3d.py m2f_coco.pkl m2f_init.pth --num-classes 117.
_base_ = [
    '../_base_/models/odin_r50.py', '../_base_/datasets/ai2thor_mv.py',
    '../_base_/schedules/adamw_iter.py', '../_base_/default_runtime.py'
]

num_classes = 117
model = dict(
    prediction_points=dict(_delete_=True, type='SensorPointsBuilder'),  # 2 cm voxels of stride-4 pixels
    decode_head=dict(
        num_things_classes=num_classes,
        loss_cls=dict(class_weight=[1.0] * num_classes + [0.1])),
    test_cfg=dict(skip_classes=()))  # the official SKIP_CLASSES only act when K == 20

max_iters = 56000
train_cfg = dict(max_iters=max_iters)
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=0, end=max_iters)]
