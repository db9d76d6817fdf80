# ODIN ResNet-50 on scannet200: the official recipe of scripts/scannet200/scannet200_resnet.sh
# (docs/specification.md §5): AdamW 1e-4, weight decay 0.05 (0 for norms/embeddings), backbone lr x0.1
# except the inserted 3D layers, grad-norm clip 0.01, AMP, constant LR. Published checkpoints:
# 52k at 1e-4, then +5k at 1e-5.
# Second phase: optim_wrapper.optimizer.lr=1e-5, load_from=<1e-4 checkpoint>, keep the best on val.
# Init (load_from):
#   Mask2Former COCO instance weights: python tools/model_converters/odin_to_mmdet3d.py m2f_coco.pkl m2f_init.pth --num-classes 200.
_base_ = [
    '../_base_/models/odin_r50.py', '../_base_/datasets/scannet200_mv.py',
    '../_base_/schedules/adamw_iter.py', '../_base_/default_runtime.py'
]

num_classes = 200
model = dict(
    prediction_points=dict(type='MeshPointsBuilder', voxel_size=0.02, superpoints=True,
                           visibility_thresh=1e-3),  # USE_GHOST_POINTS, USE_SEGMENTS True
    decode_head=dict(
        num_things_classes=num_classes,
        loss_cls=dict(class_weight=[1.0] * num_classes + [0.1])),
    test_cfg=dict(skip_classes=()))  # the official SKIP_CLASSES only act when K == 20

max_iters = 52000
train_cfg = dict(max_iters=max_iters)
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=0, end=max_iters)]
