# Matterport3D (160 classes) as posed multi-view RGB-D regions (undistorted frames resized to
# 512x640, per-frame intrinsics) + region mesh vertices with .vsegs superpoints. Official recipe
# (odin_reference.md §3.3-3.4, §5, scripts/matterport3d/matterport_resnet.sh): train: 11
# consecutive frames (Swin-B: 15), random stride 1-4, wrap-around, ResizeScale(0.1-2.0, p=0.5) +
# 512x512 crop, colour jitter, 3D augmentation, camera drop; 4 scenes/iteration on 2 GPUs;
# inpainted depth (INPUT.INPAINT_DEPTH True, inherited from configs/scannet_context/3d.yaml).
# test: at most 170 frames (uniform), ResizeShortestEdge(512, max 512) -> 410x512.
# Data: python tools/create_data.py matterport3d --root-path data/matterport_raw \
#           --out-dir data/matterport3d --inpaint-depth
dataset_type = 'ODINMatterport3DDataset'
data_root = 'data/matterport3d/'
num_views = 11  # Swin-B: 15
image_size = 512
test_short_edge = 512
test_max_size = 512
test_max_frames = 170
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
    dict(type='LoadODINSuperpoints', use_superpoints=True),
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
    dict(type='LoadODINSuperpoints', use_superpoints=True),
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
    dataset=dict(type=dataset_type, data_root=data_root, ann_file='matterport3d_infos_train.pkl',
                 pipeline=train_pipeline, test_mode=False, backend_args=backend_args))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, ann_file='matterport3d_infos_val.pkl',
                 pipeline=test_pipeline, test_mode=True, backend_args=backend_args))
test_dataloader = val_dataloader

val_evaluator = dict(type='ODINSegMetric', dataset='matterport3d')
test_evaluator = val_evaluator
