# ODIN ResNet-50 trained jointly on ScanNet (3D) and COCO (2D) with the open-vocabulary class
# head: the official recipe of scripts/joint_coco_scannet/scannet_coco_resnet.sh
# (docs/specification.md §2.9, §3.6, §5; checkpoint scannet_coco_joint_49.1_41.2: ScanNet mAP 49.1,
# COCO mAP 41.2). Every iteration is entirely 3D or entirely 2D on all GPUs (30 % ScanNet
# batches of 6 scenes x 25 frames at 256x256, 70 % COCO batches of 16 images with large-scale
# jitter to 1024x1024, half of them at the 3D crop scale 256x256), the smaller dataset tiled;
# 2D batches skip every 3D layer (DDP with find_unused_parameters). Class logits come from a
# frozen RoBERTa reading the dataset's class names (a batch's vocabulary = its dataset's).
# Init from the ScanNet R50 ODIN checkpoint, AdamW 1e-4 (official: 88k iterations, then a
# restart at 1e-5, best at +19k: optim_wrapper.optimizer.lr=1e-5 load_from=<88k checkpoint>).
#
# Differences from the official script (which cannot build its model, docs/specification.md §7): the
# undefined keys get explicit values -- PASS_2D_CROSS_VIEW=False and ADD_TEMPORAL=False (2D
# batches run plain Mask2Former on single images: no 3D or cross-view/temporal layer is ever
# applied to a 2D batch), USE_CONV1D=False; the ScanNet "train_eval" monitoring split is not
# evaluated. See docs/data.md ("Joint 2D-3D training") for the data layout.
#
#   python tools/model_converters/odin_to_mmdet3d.py scannet_resnet_47.8_73.3_32k_1.5k.pth \
#       checkpoints/odin_scannet_r50.pth
#   bash tools/dist_train.sh configs/odin/scannet_coco_joint_r50.py 2
#   python tools/test.py configs/odin/scannet_coco_joint_r50.py CKPT   # ScanNet + COCO metrics
_base_ = [
    '../_base_/models/odin_r50.py', '../_base_/datasets/scannet_mv.py',
    '../_base_/schedules/adamw_iter.py', '../_base_/default_runtime.py'
]

num_classes = 20  # ScanNet; open vocabulary: K is the batch's vocabulary size (20 or 80)
roberta_path = 'checkpoints/roberta-base'  # local RoBERTa-base folder (never downloaded)
model = dict(
    prediction_points=dict(type='MeshPointsBuilder', voxel_size=0.02, superpoints=True,
                           visibility_thresh=1e-3),  # USE_GHOST_POINTS, USE_SEGMENTS True
    decode_head=dict(
        num_things_classes=num_classes,
        # class weights: 1 per class, last entry = no-object weight (0.1), resized per batch
        loss_cls=dict(class_weight=[1.0] * num_classes + [0.1]),
        classifier=dict(
            type='OpenVocabClassifier',
            text_encoder=dict(type='ODINTextEncoder', pretrained=roberta_path, max_seq_len=256),
            temperature=0.07,
            class_names=None)),  # every sample carries its dataset's `classes`
    test_cfg=dict(skip_classes=(18, 19)))  # wall/floor never reported for ScanNet-20

# ---------------------------------------------------------------- data
# 3D side: the ScanNet pipelines of configs/_base_/datasets/scannet_mv.py
scannet_root = 'data/scannet/'
scannet_cam2img = (577.871, 577.871, 319.5, 239.5)
scannet_train = dict(type='ODINScanNetDataset', data_root=scannet_root,
                     ann_file='scannet_infos_train.pkl', pipeline={{_base_.train_pipeline}},
                     override_cam2img=scannet_cam2img, test_mode=False)
scannet_val = dict(type='ODINScanNetDataset', data_root=scannet_root,
                   ann_file='scannet_infos_val.pkl', pipeline={{_base_.test_pipeline}},
                   override_cam2img=scannet_cam2img, test_mode=True)

# 2D side: COCO 2017 with large-scale jitter (ResizeScale 0.1-2.0 + 1024 crop) and, for half of
# the images, the same jitter at the 3D crop scale (AUGMENT_WITH_3D_SCALE); no flip (the joint
# script's INPUT.RANDOM_FLIP is 'none')
coco_root = 'data/coco/'
image_size_2d = 1024
image_size_3d = 256


def _lsj(size):
    return [
        dict(type='mmdet.RandomResize', scale=(size, size), ratio_range=(0.1, 2.0),
             keep_ratio=True, resize_type='mmdet.Resize'),
        dict(type='mmdet.RandomCrop', crop_size=(size, size), crop_type='absolute',
             recompute_bbox=True, allow_negative_crop=True),
    ]


coco_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='mmdet.LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='mmdet.RandomChoice', transforms=[_lsj(image_size_2d), _lsj(image_size_3d)],
         prob=[0.5, 0.5]),
    dict(type='mmdet.FilterAnnotations', min_gt_bbox_wh=(1e-5, 1e-5), by_mask=True),
    dict(type='mmdet.PackDetInputs'),
]
coco_test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='mmdet.Resize', scale=(1333, 800), keep_ratio=True),
    dict(type='mmdet.LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='mmdet.PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
coco_train = dict(type='mmdet.CocoDataset', data_root=coco_root,
                  ann_file='annotations/instances_train2017.json',
                  data_prefix=dict(img='train2017/'), filter_cfg=dict(filter_empty_gt=True),
                  pipeline=coco_train_pipeline)
coco_val = dict(type='mmdet.CocoDataset', data_root=coco_root,
                ann_file='annotations/instances_val2017.json', data_prefix=dict(img='val2017/'),
                test_mode=True, pipeline=coco_test_pipeline)

train_dataloader = dict(
    _delete_=True,
    batch_size=3,  # only the fallback for tasks missing from batch_sizes
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='ODINMultiTaskSampler', shuffle=True),  # tiles ScanNet to COCO's size
    # per GPU on 2 GPUs: official IMS_PER_BATCH_3D 6 / IMS_PER_BATCH_2D 16, PROB [0.3, 0.7]
    batch_sampler=dict(type='ODINMultiTaskBatchSampler', batch_sizes={'3d': 3, '2d': 8},
                       task_probs={'3d': 0.3, '2d': 0.7}),
    collate_fn=dict(type='odin_multitask_collate', camera_drop_prob=0.5),
    dataset=dict(type='ODINMultiTaskDataset', tasks=('3d', '2d'),
                 datasets=[scannet_train, coco_train]))
val_dataloader = dict(
    _delete_=True,
    batch_size=1,  # official TEST_IMS_PER_BATCH 2 on 2 GPUs
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='odin_multitask_collate'),
    dataset=dict(type='ODINMultiTaskDataset', tasks=('3d', '2d'),
                 datasets=[scannet_val, coco_val]))
test_dataloader = val_dataloader

# one run reports scannet/{AP,AP50,AP25,mIoU,...} and coco/segm_{mAP,...}
val_evaluator = dict(
    _delete_=True,
    type='ODINMultiTaskMetric',
    task_metrics={'3d': dict(type='ODINSegMetric', dataset='scannet'),
                  '2d': dict(type='mmdet.CocoMetric',
                             ann_file=coco_root + 'annotations/instances_val2017.json',
                             metric=['segm'], format_only=False)},
    prefixes={'3d': 'scannet', '2d': 'coco'})
test_evaluator = val_evaluator

# ---------------------------------------------------------------- schedule / runtime
max_iters = 88000
train_cfg = dict(max_iters=max_iters, val_interval=4000)
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=0, end=max_iters)]
optim_wrapper = dict(
    optimizer=dict(lr=1e-4),
    # WEIGHT_DECAY_EMBED 0 also for the text tokens' learned position embedding
    paramwise_cfg=dict(custom_keys={'token_pos_embed': dict(decay_mult=0.0)}))
# 2D iterations leave every 3D layer unused
model_wrapper_cfg = dict(type='MMDistributedDataParallel', find_unused_parameters=True)
# loss_3d / loss_2d logged separately next to the mixed `loss`
custom_hooks = [dict(type='RNGStateHook'), dict(type='ODINTaskLossHook')]
load_from = 'checkpoints/odin_scannet_r50.pth'  # converted ScanNet R50 ODIN checkpoint
