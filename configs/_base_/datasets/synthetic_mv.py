# The synthetic labelled world (projects/odin/datasets/synthetic_world.py) converted by the
# ScanNet converter: ScanNet-20 classes (NYU40 ids), mesh vertices + superpoints, small frames
# for CPU training and tests. Same pipeline as ScanNet, sized down: 5 views, 96x96 crops, test at
# the native 120x160 ('small' preset); per-frame intrinsics from the .sens (no ScanNet override).
# Data: python tools/dataset_converters/make_synthetic_world.py --out-dir data/synthetic_raw \
#           --num-scenes 8 --preset small --seed 0
#       python tools/create_data.py scannet --root-path data/synthetic_raw \
#           --out-dir data/synthetic --frame-skip 1 --extra-tag synthetic
dataset_type = 'ODINScanNetDataset'
data_root = 'data/synthetic/'
num_views = 5
image_size = 96
test_short_edge = 120
test_max_size = 160
test_max_frames = -1
backend_args = None

load_points = dict(type='LoadPointsFromFile', coord_type='DEPTH', shift_height=False,
                   use_color=True, load_dim=6, use_dim=[0, 1, 2, 3, 4, 5],
                   backend_args=backend_args)
load_masks = dict(type='LoadAnnotations3D', with_bbox_3d=False, with_label_3d=False,
                  with_mask_3d=True, with_seg_3d=True, backend_args=backend_args)

train_pipeline = [
    dict(type='LoadODINFrames', num_views=num_views, sampling='chunk', max_stride=4),
    load_points,
    load_masks,
    dict(type='LoadODINSuperpoints'),
    dict(type='ODINPointSegClassMapping'),
    dict(type='ODINRandomResizeCrop', crop_size=(image_size, image_size), scale_range=(0.5, 2.0),
         prob=0.5),
    dict(type='ODINColorJitter', brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, prob=0.8),
    dict(type='ODINGlobalAug3D'),
    dict(type='NormalizePointsColor', color_mean=None),
    dict(type='PackODINInputs'),
]
test_pipeline = [
    dict(type='LoadODINFrames', num_views=test_max_frames, sampling='uniform'),
    load_points,
    load_masks,
    dict(type='LoadODINSuperpoints'),
    dict(type='ODINPointSegClassMapping'),
    dict(type='ODINResize', short_edge=test_short_edge, max_size=test_max_size),
    dict(type='NormalizePointsColor', color_mean=None),
    dict(type='PackODINInputs'),
]

train_dataloader = dict(
    batch_size=2,
    num_workers=2,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='odin_collate', camera_drop_prob=0.5),
    dataset=dict(type=dataset_type, data_root=data_root, ann_file='synthetic_infos_train.pkl',
                 pipeline=train_pipeline, test_mode=False, backend_args=backend_args))
val_dataloader = dict(
    batch_size=1,
    num_workers=1,
    persistent_workers=False,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, ann_file='synthetic_infos_val.pkl',
                 pipeline=test_pipeline, test_mode=True, backend_args=backend_args))
test_dataloader = val_dataloader

val_evaluator = dict(type='ODINSegMetric', dataset='scannet')
test_evaluator = val_evaluator
