# Tiny joint 2D-3D config for CPU tests (tests/test_e2e/test_odin_joint_training.py): the tiny
# ODIN of odin_tiny_test.py trained on a synthetic 3D world (ScanNet-20 classes) and a tiny
# COCO-format set, every iteration all-3D or all-2D (ODINMultiTaskBatchSampler), evaluated on
# both val sets in one run (ODINMultiTaskMetric). Data paths are placeholders set by the test:
# data_root_3d (converted synthetic world, synthetic_infos_{train,val}.pkl) and data_root_2d
# (make_tiny_coco output: {train,val}/*.png, annotations/instances_{train,val}.json).
# Closed-set head with the 20 ScanNet classes; the tiny COCO set shares that label space (its
# categories are the 20 ScanNet names, the images show a few of them).
_base_ = ['./odin_tiny_test.py']

num_classes = 20
model = dict(
    decode_head=dict(
        num_things_classes=num_classes,
        loss_cls=dict(class_weight=[1.0] * num_classes + [0.1])),
    test_cfg=dict(topk=10))

data_root_3d = 'data/synthetic/'
data_root_2d = 'data/tiny_coco/'
coco_classes = ('cabinet', 'bed', 'chair', 'sofa', 'table', 'door', 'window', 'bookshelf',
                'picture', 'counter', 'desk', 'curtain', 'refrigerator', 'shower curtain',
                'toilet', 'sink', 'bathtub', 'otherfurniture', 'wall', 'floor')
num_views = 3
crop_3d = 48
image_size_2d = 64
backend_args = None

load_points = dict(type='LoadPointsFromFile', coord_type='DEPTH', shift_height=False,
                   use_color=True, load_dim=6, use_dim=[0, 1, 2, 3, 4, 5])
load_masks = dict(type='LoadAnnotations3D', with_bbox_3d=False, with_label_3d=False,
                  with_mask_3d=True, with_seg_3d=True)
train_pipeline_3d = [
    dict(type='LoadODINFrames', num_views=num_views, sampling='chunk', max_stride=2),
    load_points, load_masks,
    dict(type='LoadODINSuperpoints'),
    dict(type='ODINPointSegClassMapping'),
    dict(type='ODINRandomResizeCrop', crop_size=(crop_3d, crop_3d), scale_range=(0.8, 1.2),
         prob=0.5),
    dict(type='NormalizePointsColor', color_mean=None),
    dict(type='PackODINInputs'),
]
test_pipeline_3d = [
    dict(type='LoadODINFrames', num_views=-1, sampling='uniform'),
    load_points, load_masks,
    dict(type='LoadODINSuperpoints'),
    dict(type='ODINPointSegClassMapping'),
    dict(type='ODINResize', short_edge=48, max_size=64),
    dict(type='NormalizePointsColor', color_mean=None),
    dict(type='PackODINInputs'),
]
# the COCO side of the joint recipe, scaled down: LSJ to image_size_2d, or (half of the
# images) the 3D crop scale
train_pipeline_2d = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='mmdet.LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='mmdet.RandomChoice', prob=[0.5, 0.5], transforms=[
        [dict(type='mmdet.RandomResize', scale=(image_size_2d, image_size_2d),
              ratio_range=(0.8, 1.25), keep_ratio=True, resize_type='mmdet.Resize'),
         dict(type='mmdet.RandomCrop', crop_size=(image_size_2d, image_size_2d),
              crop_type='absolute', recompute_bbox=True, allow_negative_crop=True)],
        [dict(type='mmdet.RandomResize', scale=(crop_3d, crop_3d), ratio_range=(0.8, 1.25),
              resize_type='mmdet.Resize',
              keep_ratio=True),
         dict(type='mmdet.RandomCrop', crop_size=(crop_3d, crop_3d), crop_type='absolute',
              recompute_bbox=True, allow_negative_crop=True)],
    ]),
    dict(type='mmdet.FilterAnnotations', min_gt_bbox_wh=(1e-5, 1e-5), by_mask=True),
    dict(type='mmdet.PackDetInputs'),
]
test_pipeline_2d = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='mmdet.Resize', scale=(80, 64), keep_ratio=True),
    dict(type='mmdet.LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='mmdet.PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]


def _datasets(split, pipe3d, pipe2d, test_mode):
    return [
        dict(type='ODINScanNetDataset', data_root=data_root_3d,
             ann_file=f'synthetic_infos_{split}.pkl', pipeline=pipe3d, test_mode=test_mode),
        dict(type='mmdet.CocoDataset', data_root=data_root_2d,
             ann_file=f'annotations/instances_{split}.json', data_prefix=dict(img=f'{split}/'),
             metainfo=dict(classes=coco_classes), test_mode=test_mode,
             filter_cfg=None if test_mode else dict(filter_empty_gt=True), pipeline=pipe2d),
    ]


def _repeat(datasets, times):
    # longer epochs over the tiny sets (mmengine's infinite loader pauses at each epoch end)
    return [dict(type='RepeatDataset', times=times, dataset=d) for d in datasets]


train_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='ODINMultiTaskSampler', shuffle=True),
    batch_sampler=dict(type='ODINMultiTaskBatchSampler', batch_sizes={'3d': 1, '2d': 2},
                       task_probs={'3d': 0.5, '2d': 0.5}),
    collate_fn=dict(type='odin_multitask_collate', camera_drop_prob=0.0),
    dataset=dict(type='ODINMultiTaskDataset', tasks=('3d', '2d'),
                 datasets=_repeat(_datasets('train', train_pipeline_3d, train_pipeline_2d, False),
                                  20)))
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='odin_multitask_collate'),
    dataset=dict(type='ODINMultiTaskDataset', tasks=('3d', '2d'),
                 datasets=_datasets('val', test_pipeline_3d, test_pipeline_2d, True)))
test_dataloader = val_dataloader
val_evaluator = dict(
    type='ODINMultiTaskMetric',
    task_metrics={'3d': dict(type='ODINSegMetric', dataset='scannet'),
             '2d': dict(type='mmdet.CocoMetric',
                        ann_file=data_root_2d + 'annotations/instances_val.json',
                        metric=['segm'])},
    prefixes={'3d': 'scannet', '2d': 'coco'})
test_evaluator = val_evaluator

train_cfg = dict(type='IterBasedTrainLoop', max_iters=40, val_interval=1000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.0),
                     clip_grad=dict(max_norm=1.0))
param_scheduler = []
custom_hooks = [dict(type='RNGStateHook'), dict(type='ODINTaskLossHook')]
default_hooks = dict(logger=dict(type='ODINLoggerHook', interval=5),
                     checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=1000),
                     visualization=dict(type='ODINVisualizationHook', draw=False))
randomness = dict(seed=0)
