# S3DIS (13 classes, Area 5 = val) as posed multi-view RGB-D rooms (2D-3D-S frames, per-frame
# intrinsics, 1080x1080) + room points. Official recipe (odin_reference.md §3.3-3.4, §5,
# scripts/s3dis/s3dis_resnet_scratch.sh): train: 25 consecutive frames (random stride 1-4,
# wrap-around), per-frame ResizeScale(0.1-2.0, p=0.5) + 256x256 crop, colour jitter, 3D
# augmentation, camera drop; no superpoints (one segment per point, USE_SEGMENTS False);
# inpainted depth (INPUT.INPAINT_DEPTH True, inherited from configs/scannet_context/3d.yaml);
# 4 scenes/iteration on 2 GPUs. test: at most 450 frames (uniform), 256x256.
# Data: python tools/create_data.py s3dis --root-path data/s3dis_raw --out-dir data/s3dis \
#           --inpaint-depth
dataset_type = 'ODINS3DISDataset'
data_root = 'data/s3dis/'
num_views = 25
image_size = 256
test_short_edge = 256
test_max_size = 256
test_max_frames = 450
backend_args = None

load_points = dict(type='LoadPointsFromFile', coord_type='DEPTH', shift_height=False,
                   use_color=True, load_dim=6, use_dim=[0, 1, 2, 3, 4, 5],
                   backend_args=backend_args)
load_masks = dict(type='LoadAnnotations3D', with_bbox_3d=False, with_label_3d=False,
                  with_mask_3d=True, with_seg_3d=True, backend_args=backend_args)

train_pipeline = [
    dict(type='LoadODINFrames', num_views=num_views, sampling='chunk', max_stride=4,
         use_inpainted_depth=True),
    load_points,
    load_masks,
    dict(type='LoadODINSuperpoints', use_superpoints=False),
    dict(type='ODINPointSegClassMapping'),
    dict(type='ODINRandomResizeCrop', crop_size=(image_size, image_size), scale_range=(0.1, 2.0),
         prob=0.5),
    dict(type='ODINColorJitter', brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, prob=0.8),
    dict(type='ODINGlobalAug3D'),
    dict(type='NormalizePointsColor', color_mean=None),
    dict(type='PackODINInputs'),
]
test_pipeline = [
    dict(type='LoadODINFrames', num_views=test_max_frames, sampling='uniform',
         use_inpainted_depth=True),
    load_points,
    load_masks,
    dict(type='LoadODINSuperpoints', use_superpoints=False),
    dict(type='ODINPointSegClassMapping'),
    dict(type='ODINResize', short_edge=test_short_edge, max_size=test_max_size),
    dict(type='NormalizePointsColor', color_mean=None),
    dict(type='PackODINInputs'),
]

train_dataloader = dict(
    batch_size=2,  # per GPU (official: 4 scenes on 2 GPUs)
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='odin_collate', camera_drop_prob=0.5),
    dataset=dict(type=dataset_type, data_root=data_root, ann_file='s3dis_infos_train.pkl',
                 pipeline=train_pipeline, test_mode=False, backend_args=backend_args))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, ann_file='s3dis_infos_val.pkl',
                 pipeline=test_pipeline, test_mode=True, backend_args=backend_args))
test_dataloader = val_dataloader

val_evaluator = dict(type='ODINSegMetric', dataset='s3dis')
test_evaluator = val_evaluator
