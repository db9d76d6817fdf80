"""ODINScanNetDataset.parse_data_info: paths joined without changing the dataset's state."""
import os.path as osp
import pickle

import pytest
from mmengine.registry import init_default_scope

from projects.odin.datasets.multiview_datasets import ODINScanNetDataset

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


def test_info_files_with_the_earlier_pose_key_are_read(converted):
    """Info files of earlier versions call the pose ``cam2global``: read as they are."""
    import numpy as np
    from mmdet3d.registry import DATASETS
    out, _ = converted
    with open(osp.join(out, 'scannet_infos_train.pkl'), 'rb') as fh:
        infos = pickle.load(fh)
    frames = infos['data_list'][0]['images']
    assert all('cam2world' in fr and 'cam2global' not in fr for fr in frames.values())
    for fr in frames.values():
        fr['cam2global'] = fr.pop('cam2world')
    with open(osp.join(out, 'legacy_pose_infos.pkl'), 'wb') as fh:
        pickle.dump(infos, fh)
    pipeline = [dict(type='LoadODINFrames', sampling='all')]
    new, old = (DATASETS.build(dict(type='ODINScanNetDataset', data_root=str(out), ann_file=ann,
                                    pipeline=pipeline))[0]
                for ann in ('scannet_infos_train.pkl', 'legacy_pose_infos.pkl'))
    assert len(old['cam2world']) == len(frames) > 1 and 'cam2global' not in old
    for a, b in zip(old['cam2world'], new['cam2world']):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(new['cam2world'][0], new['cam2world'][1])
    from projects.odin.datasets.loading import frame_pose
    with pytest.raises(KeyError, match=r'no camera pose \(cam2world\)'):
        frame_pose(dict(img_path='f.jpg'))


def test_batches_with_the_earlier_poses_key_are_refused():
    from odin_testing import create_odin_inputs
    from projects.odin.models.data_preprocessor import ODINDataPreprocessor
    data = create_odin_inputs(num_views=2, img_hw=(32, 32), num_points=50)
    data['inputs']['poses'] = data['inputs'].pop('cam2world')
    pre = ODINDataPreprocessor(mean=[0, 0, 0], std=[1, 1, 1])
    with pytest.raises(KeyError, match=r'inputs\["poses"\] is now called inputs\["cam2world"\]'):
        pre(data, False)
