"""configs/odin/scannet_coco_joint_r50.py: the official joint recipe's values, buildable
pipelines and model, and the COCO side's two scales (LSJ 1024 / 3D crop 256)."""
import copy

import numpy as np
import pytest
from mmengine.config import Config

from odin_testing import REPO_ROOT, make_tiny_coco

CFG = f'{REPO_ROOT}/configs/odin/scannet_coco_joint_r50.py'
SCANNET20 = ('cabinet', 'bed', 'chair', 'sofa', 'table', 'door', 'window', 'bookshelf', 'picture',
             'counter', 'desk', 'curtain', 'refrigerator', 'shower curtain', 'toilet', 'sink',
             'bathtub', 'otherfurniture', 'wall', 'floor')


@pytest.fixture(scope='module')
def cfg():
    from mmengine.registry import init_default_scope

    import projects.odin  # noqa: F401
    init_default_scope('mmdet3d')
    return Config.fromfile(CFG)


def test_official_joint_recipe_values(cfg):
    tl = cfg.train_dataloader
    assert tl.sampler.type == 'ODINMultiTaskSampler' and tl.sampler.shuffle
    bs = tl.batch_sampler
    assert bs.type == 'ODINMultiTaskBatchSampler'
    # per GPU on 2 GPUs = official IMS_PER_BATCH_3D 6 / IMS_PER_BATCH_2D 16, PROB [0.3, 0.7]
    assert {k: 2 * v for k, v in bs.batch_sizes.items()} == {'3d': 6, '2d': 16}
    assert bs.task_probs == {'3d': 0.3, '2d': 0.7}
    assert tl.collate_fn == dict(type='odin_multitask_collate', camera_drop_prob=0.5)
    ds = tl.dataset
    assert ds.type == 'ODINMultiTaskDataset' and tuple(ds.tasks) == ('3d', '2d')
    scannet, coco = ds.datasets
    assert scannet.type == 'ODINScanNetDataset' and coco.type == 'mmdet.CocoDataset'
    frames = scannet.pipeline[0]
    assert frames.type == 'LoadODINFrames' and frames.num_views == 25
    crop = [t for t in scannet.pipeline if t.type == 'ODINRandomResizeCrop'][0]
    assert tuple(crop.crop_size) == (256, 256)
    choice = [t for t in coco.pipeline if t.type == 'mmdet.RandomChoice'][0]
    sizes = [branch[1].crop_size for branch in choice.transforms]
    assert [tuple(s) for s in sizes] == [(1024, 1024), (256, 256)] and choice.prob == [0.5, 0.5]
    assert all(tuple(b[0].ratio_range) == (0.1, 2.0) for b in choice.transforms)
    assert not any('Flip' in t.type for t in coco.pipeline)  # official RANDOM_FLIP none
    resize = [t for t in cfg.test_dataloader.dataset.datasets[1].pipeline
              if t.type == 'mmdet.Resize'][0]
    assert tuple(resize.scale) == (1333, 800)  # COCO test 800 / 1333
    # model: open vocabulary, 2D batches leave 3D layers unused under DDP
    ov = cfg.model.decode_head.classifier
    assert ov.type == 'OpenVocabClassifier' and 'open_vocab_cfg' not in cfg.model.decode_head
    assert ov.text_encoder.type == 'ODINTextEncoder' and ov.temperature == 0.07
    assert cfg.model_wrapper_cfg == dict(type='MMDistributedDataParallel',
                                         find_unused_parameters=True)
    assert cfg.optim_wrapper.optimizer.lr == 1e-4 and cfg.load_from
    assert cfg.train_cfg.max_iters == 88000
    assert any(h.type == 'ODINTaskLossHook' for h in cfg.custom_hooks)
    ev = cfg.test_evaluator
    assert ev.type == 'ODINMultiTaskMetric'
    assert ev.task_metrics['3d'].type == 'ODINSegMetric'
    assert ev.task_metrics['2d'].type == 'mmdet.CocoMetric'
    assert ev.prefixes == {'3d': 'scannet', '2d': 'coco'}


def test_every_pipeline_and_the_model_build(cfg):
    from mmdet3d.registry import MODELS
    from mmengine.dataset import Compose
    for loader in (cfg.train_dataloader, cfg.test_dataloader):
        for ds in loader.dataset.datasets:
            assert len(Compose(copy.deepcopy(ds.pipeline)).transforms) == len(ds.pipeline)
    # closed-set variant (the open-vocabulary head is tested with a tiny RoBERTa in
    # tests/test_models/test_odin_open_vocab*.py)
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.decode_head.classifier = dict(type='LinearClassifier')
    model = MODELS.build(model_cfg)
    assert model.decode_head.num_classes == 20


def test_coco_side_uses_both_scales(cfg, tmp_path):
    """Half the COCO images: LSJ to 1024 (crop <= 1024); the other half: the 3D 256 scale."""
    from mmdet3d.registry import DATASETS
    info = make_tiny_coco(str(tmp_path), num_images=2, img_hw=(240, 320), seed=0)
    coco = copy.deepcopy(cfg.train_dataloader.dataset.datasets[1])
    coco.update(data_root=info['data_root'], ann_file=info['ann_file'],
                data_prefix=dict(img=info['img_prefix']), metainfo=dict(classes=info['classes']))
    ds = DATASETS.build(coco)
    np.random.seed(0)
    shapes = []
    for i in range(24):
        out = ds[i % len(ds)]
        h, w = out['inputs'].shape[-2:]
        shapes.append((h, w))
        masks = out['data_samples'].gt_instances.masks
        assert masks.height == h and masks.width == w  # masks cropped with the image
    assert all(max(s) <= 1024 for s in shapes)
    small = sum(max(s) <= 256 for s in shapes)
    large = sum(max(s) > 256 for s in shapes)
    # 3D-scale branch (p=0.5) always <= 256; the LSJ branch > 256 unless its ratio < ~0.33
    assert small >= 6 and large >= 6, shapes


def test_open_vocabulary_model_builds_and_classifies_both_vocabularies(cfg, tmp_path):
    """The config's OpenVocabClassifier, tiny RoBERTa: 2D logits over the batch's vocabulary."""
    import torch
    from mmdet3d.registry import MODELS

    import odin_testing as testing
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.decode_head.classifier.text_encoder.pretrained = testing.make_tiny_roberta(
        str(tmp_path / 'roberta'))
    model = MODELS.build(model_cfg)
    model.eval()
    data = testing.create_odin_inputs(img_hw=(64, 64), mode='2d', batch_size=1)
    for classes in (('person', 'car', 'dog'), SCANNET20):
        for s in data['data_samples']:
            s.set_metainfo(dict(classes=classes, task='2d'))
        with torch.no_grad():
            cls, _ = model(**model.data_preprocessor(copy.deepcopy(data), False), mode='tensor')
        assert cls[-1].shape[-1] == len(classes) + 1  # K + no-object
