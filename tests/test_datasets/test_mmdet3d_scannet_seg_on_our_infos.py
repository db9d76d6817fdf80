"""MMDetection3D's own ScanNet segmentation data config reads the infos of our ScanNet converter.

Our infos follow mmdet3d's v2 info contract (``dict(metainfo, data_list)``; ``lidar_points``,
``pts_semantic_mask_path`` (raw NYU40 ids, int64), ``pts_instance_mask_path``). Only what
docs/model_zoo.md lists is changed in mmdet3d's ``_base_/datasets/scannet-seg.py``: ``data_root``,
``data_prefix`` (our paths already include their folder) and the training ``scene_idxs`` file
(made with mmdet3d's own ``ScanNetSegData`` recipe).
"""
import importlib.util
import os.path as osp
import pickle
import shutil

import numpy as np
import pytest

from projects.odin.class_names import SCANNET_CLASSES


def _mim_root():
    spec = importlib.util.find_spec('mmdet3d')
    mim = osp.join(list(spec.submodule_search_locations)[0], '.mim')
    cfg = osp.join(mim, 'configs', '_base_', 'datasets', 'scannet-seg.py')
    if not osp.isfile(cfg):
        pytest.skip(f'the installed mmdet3d ships no configs ({cfg})')
    return mim


def _mmdet3d_seg_config(out):
    """mmdet3d's ScanNet segmentation data config with the documented changes."""
    from mmengine.config import Config
    mim = _mim_root()
    cfg = Config.fromfile(osp.join(mim, 'configs', '_base_', 'datasets', 'scannet-seg.py'))
    root = str(out).rstrip('/') + '/'
    # (1) where the data is; (2) our info paths already start with points/, semantic_mask/, ...
    for key in ('train_dataloader', 'test_dataloader'):
        ds = cfg[key].dataset
        ds.data_root = root
        ds.data_prefix = dict(pts='', pts_instance_mask='', pts_semantic_mask='')
    # (3) the resampled scene indices of training, made by mmdet3d's own recipe
    tool = osp.join(mim, 'tools', 'dataset_converters', 'scannet_data_utils.py')
    spec = importlib.util.spec_from_file_location('mmdet3d_scannet_data_utils', tool)
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    seg = utils.ScanNetSegData(data_root=root, ann_file=osp.join(root, 'scannet_infos_train.pkl'),
                               split='train', num_points=512)  # (8192 for real scenes;
    # the tiny synthetic rooms have fewer points than that, which would give no index at all)
    seg.data_infos = seg.data_infos['data_list']  # our pkl is the v2 dict(metainfo, data_list)
    seg.get_seg_infos()
    assert osp.isfile(osp.join(root, 'seg_info', 'train_resampled_scene_idxs.npy'))
    # relative to data_root (the base config concatenated its own data_root into the string)
    cfg.train_dataloader.dataset.scene_idxs = 'seg_info/train_resampled_scene_idxs.npy'
    return cfg


def test_scannet_seg_dataset_loads_our_infos(converted, tmp_path):
    from mmdet3d.registry import DATASETS
    from mmengine.registry import init_default_scope

    from projects.odin.datasets import ODINScanNetDataset
    init_default_scope('mmdet3d')
    # a copy without the frames: the recipe writes seg_info/ and the fixture is shared
    out = tmp_path / 'scannet'
    shutil.copytree(converted[0], out, ignore=shutil.ignore_patterns('frames', '.staging'))
    cfg = _mmdet3d_seg_config(out)

    test_ds = DATASETS.build(cfg.test_dataloader.dataset)
    with open(out / 'scannet_infos_val.pkl', 'rb') as f:
        ours = pickle.load(f)['data_list']
    assert type(test_ds).__name__ == 'ScanNetSegDataset' and len(test_ds) == len(ours) >= 1
    sample = test_ds[0]
    info = ours[0]
    pts = np.fromfile(out / info['lidar_points']['lidar_path'], np.float32).reshape(-1, 6)
    got = sample['inputs']['points'].numpy()
    np.testing.assert_array_equal(got[:, :3], pts[:, :3])
    np.testing.assert_allclose(got[:, 3:], pts[:, 3:] / 255.0, rtol=1e-6)  # colour / 255
    raw = np.fromfile(out / info['pts_semantic_mask_path'], np.int64)
    eval_sem = np.asarray(sample['data_samples'].eval_ann_info['pts_semantic_mask'])
    np.testing.assert_array_equal(eval_sem, raw)

    # the same class of every point as our own dataset, though the class orders differ
    # (mmdet3d: wall, floor, cabinet, ...; ODIN: ..., wall, floor)
    ours_ds = ODINScanNetDataset(data_root=str(out) + '/', ann_file='scannet_infos_val.pkl',
                                 pipeline=[], test_mode=True)
    mm_names = list(test_ds.metainfo['classes']) + ['<ignore>']
    odin_names = list(SCANNET_CLASSES) + ['<ignore>']
    mm = test_ds.seg_label_mapping[raw]
    od = ours_ds.get_data_info(0)['seg_label_mapping'][raw]
    assert (mm < 20).sum() > 0.5 * raw.size
    mm_named = [mm_names[i].replace('showercurtrain', 'shower curtain') for i in mm]
    assert mm_named == [odin_names[i] for i in od]

    train_ds = DATASETS.build(cfg.train_dataloader.dataset)
    assert len(train_ds) > 0  # the resampled scene indices
    s = train_ds[0]  # PointSegClassMapping + IndoorPatchPointSample on our files
    assert s['inputs']['points'].shape == (8192, 6)
    labels = s['data_samples'].gt_pts_seg.pts_semantic_mask
    assert labels.shape == (8192, ) and 0 <= int(labels.min()) and int(labels.max()) <= 20
