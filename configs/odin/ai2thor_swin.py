# ODIN Swin-B on ai2thor: the official recipe of scripts/ai2thor/ai2thor_swin.sh
# (docs/specification.md §5): AdamW 1e-4, weight decay 0.05 (0 for norms/embeddings), backbone lr x0.1
# except the inserted 3D layers, grad-norm clip 0.01, AMP, constant LR. Published checkpoints:
# 112k at 1e-4, then +4.5k at 1e-5; sensor points, raw depth.
# Second phase: optim_wrapper.optimizer.lr=1e-5, load_from=<1e-4 checkpoint>, keep the best on val.
# Init (load_from):
#   Mask2Former COCO instance weights: python tools/model_converters/odin_to_mmdet3d.py m2f_coco_swin.pkl m2f_init.pth --num-classes 117.
_base_ = [
    '../_base_/models/odin_swin.py', '../_base_/datasets/ai2thor_mv.py',
    '../_base_/schedules/adamw_iter.py', '../_base_/default_runtime.py'
]

num_classes = 117
model = dict(
    prediction_points=dict(_delete_=True, type='SensorPointsBuilder'),  # 2 cm voxels of stride-4 pixels
    decode_head=dict(
        num_things_classes=num_classes,
        loss_cls=dict(class_weight=[1.0] * num_classes + [0.1])),
    test_cfg=dict(skip_classes=()))  # the official SKIP_CLASSES only act when K == 20

train_dataloader = dict(batch_size=1)  # per GPU on 2 GPUs (official IMS_PER_BATCH 2)

max_iters = 112000
train_cfg = dict(max_iters=max_iters)
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=0, end=max_iters)]
