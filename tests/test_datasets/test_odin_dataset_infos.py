"""ODINScanNetDataset.parse_data_info: paths joined without changing the dataset's state."""
import os.path as osp
import pickle

import pytest
from mmengine.registry import init_default_scope

from projects.odin.datasets.scannet_mv_dataset import ODINScanNetDataset

init_default_scope('mmdet3d')


def _raw_infos(root):
    with open(osp.join(root, 'scannet_infos_train.pkl'), 'rb') as fh:
        return pickle.load(fh)['data_list']


@pytest.mark.parametrize('with_mesh', [True, False])
def test_parse_data_info_changes_no_attribute(converted, monkeypatch, with_mesh):
    out, _ = converted
    ds = ODINScanNetDataset(data_root=str(out), ann_file='scannet_infos_train.pkl',
                            lazy_init=True, test_mode=True)
    modality = dict(ds.modality)
    raw = dict(_raw_infos(str(out))[0])
    if not with_mesh:
        raw['lidar_points'] = None
    calls = []
    original = object.__setattr__

    def spy(obj, name, value):
        calls.append(name)
        original(obj, name, value)
    monkeypatch.setattr(ODINScanNetDataset, '__setattr__', spy, raising=False)
    info = ds.parse_data_info(raw)
    monkeypatch.undo()
    assert calls == [] and ds.modality == modality and modality['use_camera']
    frame = next(iter(info['images'].values()))
    assert frame['img_path'].startswith(str(out)) and osp.isfile(frame['img_path'])
    assert osp.isfile(info['pts_instance_mask_path'])
    assert osp.isfile(info['pts_semantic_mask_path'])
    assert 'seg_label_mapping' in info and info['eval_ann_info'] == {}
    if with_mesh:
        assert info['lidar_path'] == info['lidar_points']['lidar_path']
        assert osp.isfile(info['lidar_path'])
        # the raw info (kept by the dataset when serialisation is off) is not modified
        assert not osp.isabs(raw['lidar_points']['lidar_path'])
    else:
        assert 'lidar_path' not in info
