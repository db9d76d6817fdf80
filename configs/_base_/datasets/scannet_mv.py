# ScanNet (20 classes) as posed multi-view RGB-D scenes + mesh vertices ("ghost points").
# Official recipe (docs/specification.md §3.3-3.4, §5, scripts/scannet/scannet_resnet.sh):
# train: 25 consecutive frames (random stride 1-4, wrap-around), per-frame ResizeScale(0.1-2.0,
# p=0.5) + 256x256 crop, colour jitter (p=0.8), scene-level 3D augmentation, camera drop (p=0.5,
# per batch); inpainted depth; fixed mean depth intrinsics; 6 scenes/iteration on 2 GPUs.
# test: all frames, ResizeShortestEdge(320, max 320) -> 240x320 from 640x480.
# Data: python tools/create_data.py scannet --root-path data/scannet_raw --out-dir data/scannet \
#           --inpaint-depth        (see docs/data.md)
dataset_type = 'ODINScanNetDataset'
data_root = 'data/scannet/'
num_views = 25  # Swin-B: 19
image_size = 256
test_short_edge = 320
test_max_size = 320
test_max_frames = -1  # all frames (ScanNet test server: 250)
# the mean ScanNet depth intrinsics used for every scene by the official code (640x480)
scannet_cam2img = (577.871, 577.871, 319.5, 239.5)
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
    dict(type='LoadODINSuperpoints'),
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
    dict(type='LoadODINSuperpoints'),
    dict(type='ODINPointSegClassMapping'),
    dict(type='ODINResize', short_edge=test_short_edge, max_size=test_max_size),
    dict(type='NormalizePointsColor', color_mean=None),
    dict(type='PackODINInputs'),
]

train_dataloader = dict(
    batch_size=3,  # per GPU (official: 6 scenes on 2 GPUs)
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='odin_collate', camera_drop_prob=0.5),
    dataset=dict(type=dataset_type, data_root=data_root, ann_file='scannet_infos_train.pkl',
                 pipeline=train_pipeline, override_cam2img=scannet_cam2img, test_mode=False,
                 backend_args=backend_args))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, ann_file='scannet_infos_val.pkl',
                 pipeline=test_pipeline, override_cam2img=scannet_cam2img, test_mode=True,
                 backend_args=backend_args))
test_dataloader = val_dataloader

val_evaluator = dict(type='ODINSegMetric', dataset='scannet')
test_evaluator = val_evaluator
