# AI2THOR (117 classes) as posed multi-view RGB-D houses with per-frame 2D instance masks; the
# ground truth lives on the unprojected depth pixels ("sensor points"), no mesh. Official recipe
# (docs/specification.md §3.1-3.4, §5, scripts/ai2thor/ai2thor_resnet.sh): train: 15 consecutive
# frames, 512x512 crops, colour jitter, 3D augmentation, camera drop, raw depth with depth > 15 m
# ignored, supervision/evaluation on a half-resolution pixel grid (stride 2); 4 scenes/iteration
# on 2 GPUs. test: all frames at 512x512.
# Data: python tools/create_data.py ai2thor --root-path data/ai2thor_raw --out-dir data/ai2thor
dataset_type = 'ODINAI2THORDataset'
data_root = 'data/ai2thor/'
num_views = 15
image_size = 512
test_short_edge = 512
test_max_size = 512
test_max_frames = -1
sensor_stride = 2
backend_args = None

train_pipeline = [
    dict(type='LoadODINFrames', num_views=num_views, sampling='chunk', max_stride=4,
         ignore_depth_max=15.0, with_label_maps=True),
    dict(type='ODINRandomResizeCrop', crop_size=(image_size, image_size), scale_range=(0.1, 2.0),
         prob=0.5),
    dict(type='ODINColorJitter', brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, prob=0.8),
    dict(type='ODINSensorPoints', stride=sensor_stride),
    dict(type='ODINPointSegClassMapping'),
    dict(type='ODINGlobalAug3D'),
    dict(type='NormalizePointsColor', color_mean=None),
    dict(type='PackODINInputs'),
]
test_pipeline = [
    dict(type='LoadODINFrames', num_views=test_max_frames, sampling='uniform',
         ignore_depth_max=15.0, with_label_maps=True),
    dict(type='ODINResize', short_edge=test_short_edge, max_size=test_max_size),
    dict(type='ODINSensorPoints', stride=sensor_stride),
    dict(type='ODINPointSegClassMapping'),
    dict(type='NormalizePointsColor', color_mean=None),
    dict(type='PackODINInputs'),
]

train_dataloader = dict(
    batch_size=2,  # per GPU (official: 4 scenes on 2 GPUs)
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='odin_collate', camera_drop_prob=0.5),
    dataset=dict(type=dataset_type, data_root=data_root, ann_file='ai2thor_infos_train.pkl',
                 pipeline=train_pipeline, test_mode=False, backend_args=backend_args))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, ann_file='ai2thor_infos_val.pkl',
                 pipeline=test_pipeline, test_mode=True, backend_args=backend_args))
test_dataloader = val_dataloader

val_evaluator = dict(type='ODINSegMetric', dataset='ai2thor')
test_evaluator = val_evaluator
