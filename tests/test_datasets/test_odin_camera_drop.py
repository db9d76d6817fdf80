"""Camera drop has one implementation: ODINCameraDrop (one sample) and odin_collate (a batch)
draw the same views from the same numpy state, and match the official per-batch rule."""
import numpy as np
import pytest
import torch
from mmdet3d.structures import Det3DDataSample

from projects.odin.datasets.transforms import ODINCameraDrop, draw_camera_drop, odin_collate


def _sample(num_views: int) -> dict:
    ds = Det3DDataSample(metainfo=dict(img_path=[f'{i}.jpg' for i in range(num_views)],
                                       cam2world=np.arange(num_views * 16.0).reshape(-1, 4, 4),
                                       num_views=num_views))
    views = torch.arange(num_views, dtype=torch.float32)
    return dict(inputs=dict(img=views.view(-1, 1, 1, 1).expand(-1, 3, 2, 2).clone(),
                            depths=views.view(-1, 1, 1).expand(-1, 2, 2).clone(),
                            cam2world=torch.eye(4).expand(num_views, 4, 4).clone(),
                            intrinsics=torch.eye(4).expand(num_views, 4, 4).clone()),
                data_samples=ds)


@pytest.mark.parametrize('seed', range(6))
def test_transform_and_collate_draw_the_same_views(seed):
    np.random.seed(seed)
    results = ODINCameraDrop(prob=0.7)(dict(img=[np.full((2, 2, 3), i) for i in range(5)],
                                            depths=[np.zeros((2, 2))] * 5))
    np.random.seed(seed)
    batch = odin_collate([_sample(5)], camera_drop_prob=0.7)
    kept = [int(x) for x in batch['inputs']['depths'][0][:, 0, 0]]
    assert [int(im[0, 0, 0]) for im in results['img']] == kept
    assert batch['data_samples'][0].metainfo['img_path'] == [f'{i}.jpg' for i in kept]
    assert batch['data_samples'][0].metainfo['num_views'] == len(kept)


def test_draw_rule():
    np.random.seed(3)
    keeps = draw_camera_drop([4, 6], prob=1.0)
    assert len(keeps) == 2 and len(keeps[0]) == len(keeps[1]) <= 4  # one n for the batch
    assert all(len(set(k.tolist())) == len(k) for k in keeps)  # no view twice
    state = np.random.get_state()[1].copy()
    assert draw_camera_drop([1, 6], prob=1.0) is None  # a one-view sample: nothing drawn
    assert draw_camera_drop([], prob=1.0) is None
    np.testing.assert_array_equal(np.random.get_state()[1], state)
    assert draw_camera_drop([4, 6], prob=0.0) is None
