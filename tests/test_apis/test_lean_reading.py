"""The demo's reading path keeps little per frame, with the same results as the plain path.

* ``ODINSensorPoints(voxel_size=...)`` fuses view by view: the same points, colours, labels and
  pixel-to-point map (int32) as fusing every pixel at once (the reference below);
* ``LoadRecordingFrames(resize=...)`` resizes each frame as it is read, as a separate
  ``ODINResize`` would.
"""
import numpy as np
import torch
from mmcv.transforms import Compose
from mmengine.registry import init_default_scope
from rgbd_makers import make_scannet

from projects.odin.apis.inference import (
    fold_resize_into_loading,
    prepare_recording,
    recording_pipeline,
)
from projects.odin.datasets.recordings import load_rgbd_folder
from projects.odin.datasets.transforms import ODINSensorPoints, unproject


def _views(num_views=5, hw=(20, 28), seed=0):
    """Overlapping views of a bumpy wall: cameras shifted by a few cm, random holes."""
    rng = np.random.default_rng(seed)
    h, w = hw
    k = np.eye(4)
    k[0, 0] = k[1, 1] = 20.0
    k[0, 2], k[1, 2] = (w - 1) / 2, (h - 1) / 2
    res = dict(img=[], depths=[], cam2img=[], cam2world=[], inst_maps=[], sem_maps=[])
    for v in range(num_views):
        depth = (1.5 + 0.3 * rng.random((h, w))).astype(np.float32)
        depth[rng.random((h, w)) < 0.1] = 0
        pose = np.eye(4)
        pose[:3, 3] = [0.03 * v, -0.02 * v, 0.0]
        res['img'].append(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        res['depths'].append(depth)
        res['cam2img'].append(k)
        res['cam2world'].append(pose)
        res['inst_maps'].append(rng.integers(0, 5, (h, w)))
        res['sem_maps'].append(rng.integers(0, 3, (h, w)))
    return res


def _fuse_all_at_once(res, voxel_size):
    """Reference: unproject every valid pixel, then keep each voxel's first point."""
    xyz, rgb, inst, owner = [], [], [], []
    for i, (d, k, p) in enumerate(zip(res['depths'], res['cam2img'], res['cam2world'])):
        mask = d > 0
        xyz.append(unproject(d, k, p, mask))
        rgb.append(res['img'][i][mask].astype(np.float64))
        inst.append(res['inst_maps'][i][mask])
        owner.append(np.flatnonzero(mask.ravel()) + i * d.size)
    xyz, rgb, inst, owner = map(np.concatenate, (xyz, rgb, inst, owner))
    keys = np.floor(xyz / voxel_size).astype(np.int64)
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    p2p = np.full(len(res['depths']) * res['depths'][0].size, -1, np.int64)
    p2p[owner] = inverse.ravel()
    pts = np.concatenate([xyz[first], rgb[first]], 1).astype(np.float32)
    return pts, inst[first], p2p.reshape(len(res['depths']), *res['depths'][0].shape)


def test_view_by_view_fusion_equals_fusing_all_pixels():
    voxel = 0.1  # pixels are ~8 cm apart, views shifted by 3 cm: voxels within and across views
    ref_pts, ref_inst, ref_p2p = _fuse_all_at_once(_views(), voxel)
    out = ODINSensorPoints(voxel_size=voxel)(_views())
    pts = out['points'].tensor.numpy()
    per_view = 0
    for v in range(5):
        one = {key: value[v:v + 1] for key, value in _views().items()}
        per_view += len(ODINSensorPoints(voxel_size=voxel)(one)['points'])
    # neighbouring views share voxels, so the merge across views is exercised
    assert len(pts) < 0.9 * per_view
    assert per_view < 0.9 * sum(int((d > 0).sum()) for d in _views()['depths'])
    np.testing.assert_array_equal(pts, ref_pts)
    np.testing.assert_array_equal(out['pts_instance_mask'], ref_inst)
    assert out['pixel_to_point'].dtype == np.int32
    np.testing.assert_array_equal(out['pixel_to_point'], ref_p2p)


def test_fusion_keeps_views_without_valid_depth():
    res = _views(num_views=3)
    res['depths'][1][:] = 0
    ref_pts, _, ref_p2p = _fuse_all_at_once(res, 0.05)
    res = _views(num_views=3)
    res['depths'][1][:] = 0
    out = ODINSensorPoints(voxel_size=0.05)(res)
    np.testing.assert_array_equal(out['points'].tensor.numpy(), ref_pts)
    np.testing.assert_array_equal(out['pixel_to_point'], ref_p2p)
    assert (out['pixel_to_point'][1] == -1).all()


def test_resize_while_reading_equals_resize_step(tmp_path):
    init_default_scope('mmdet3d')
    import projects.odin.datasets  # noqa: F401
    seq = load_rgbd_folder(str(make_scannet(tmp_path / 'rec', n=3)))
    steps = recording_pipeline(None, image_size=(6, 8), point_voxel_size=0.01)
    folded = fold_resize_into_loading(steps)
    assert [t['type'] for t in folded][:2] == ['LoadRecordingFrames', 'ODINSensorPoints']
    assert folded[0]['resize'] == dict(size=(6, 8))
    assert [t['type'] for t in steps][:2] == ['LoadRecordingFrames', 'ODINResize']  # untouched
    a = Compose(steps)(dict(recording=seq))
    b = Compose(folded)(dict(recording=seq))
    for key in ('img', 'depths', 'intrinsics', 'points'):
        assert torch.equal(a['inputs'][key], b['inputs'][key]), key
    for key in ('scale_factor', 'img_shape', 'ori_shape', 'pad_shape'):
        assert a['data_samples'].metainfo[key] == b['data_samples'].metainfo[key], key
    np.testing.assert_array_equal(a['data_samples'].pixel_to_point,
                                  b['data_samples'].pixel_to_point)
    prep = prepare_recording(seq, image_size=(6, 8), point_voxel_size=0.01)
    assert prep.pixel_to_point.dtype == np.int32 and prep.images.dtype == np.uint8


def test_fusion_beyond_the_packed_key_range():
    """A view 30 km away (beyond the packed keys' range) fuses as the others (unpacked keys)."""
    from projects.odin.datasets.transforms import _unpack_voxel_keys, _voxel_keys
    xyz = np.array([[0.01, -0.03, 5.0], [-20000.0, 3.0, -1.0], [1.0, 2.0, 3.0]])
    keys = _voxel_keys(xyz, 0.02)
    assert keys.ndim == 1
    np.testing.assert_array_equal(_unpack_voxel_keys(keys), np.floor(xyz / 0.02))
    # packed keys sort as the index triplets
    np.testing.assert_array_equal(np.argsort(keys),
                                  np.lexsort(np.floor(xyz / 0.02).T[::-1]))
    assert _voxel_keys(xyz * 2, 0.02).ndim == 2
    res = _views(num_views=3)
    res['cam2world'][2] = res['cam2world'][2].copy()
    res['cam2world'][2][0, 3] = 30000.0
    ref_pts, _, ref_p2p = _fuse_all_at_once(res, 0.1)
    out = ODINSensorPoints(voxel_size=0.1)(_views(num_views=3) | {
        'cam2world': res['cam2world']})
    np.testing.assert_array_equal(out['points'].tensor.numpy(), ref_pts)
    np.testing.assert_array_equal(out['pixel_to_point'], ref_p2p)
