# ODIN Swin-B on s3dis: the official recipe of scripts/s3dis/s3dis_swin_finetuned.sh
# (docs/specification.md §5): AdamW 1e-4, weight decay 0.05 (0 for norms/embeddings), backbone lr x0.1
# except the inserted 3D layers, grad-norm clip 0.01, AMP, constant LR. Published checkpoints:
# fine-tuned from the ScanNet Swin-B ODIN: 4.5k at 1e-4, then +3k at 1e-5.
# Second phase: optim_wrapper.optimizer.lr=1e-5, load_from=<1e-4 checkpoint>, keep the best on val.
# Init (load_from):
#   the ScanNet Swin-B ODIN checkpoint (converted with tools/model_converters/odin_to_mmdet3d.py).
_base_ = [
    '../_base_/models/odin_swin.py', '../_base_/datasets/s3dis_mv.py',
    '../_base_/schedules/adamw_iter.py', '../_base_/default_runtime.py'
]

num_classes = 13
model = dict(
    prediction_points=dict(type='MeshPointsBuilder', voxel_size=0.02, superpoints=False,
                           visibility_thresh=1e-3),  # USE_GHOST_POINTS, USE_SEGMENTS False
    decode_head=dict(
        num_things_classes=num_classes,
        loss_cls=dict(class_weight=[1.0] * num_classes + [0.1])),
    test_cfg=dict(skip_classes=()))  # the official SKIP_CLASSES only act when K == 20

train_dataloader = dict(batch_size=1)  # per GPU on 2 GPUs (official IMS_PER_BATCH 2)

max_iters = 4500
train_cfg = dict(max_iters=max_iters)
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=0, end=max_iters)]
