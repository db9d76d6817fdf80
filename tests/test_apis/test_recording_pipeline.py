"""The inference API composes the config's test pipeline (as mmdet3d's inference_detector):
dataset loading steps become LoadRecordingFrames, points the fused sensor points."""
import numpy as np
import pytest
import torch
from mmengine.config import Config
from rgbd_makers import make_scannet

from projects.odin.apis.inference import demo_image_size, prepare_recording, recording_pipeline
from projects.odin.datasets.recordings import load_rgbd_folder

DEMO_CONFIG = 'configs/odin/synthetic_r18_demo.py'


def test_pipeline_is_the_configs_test_pipeline():
    cfg = Config.fromfile(DEMO_CONFIG)
    steps = recording_pipeline(cfg, image_size=(24, 32), point_voxel_size=0.05, max_depth=3.0)
    assert [t['type'] for t in steps] == ['LoadRecordingFrames', 'ODINResize', 'ODINSensorPoints',
                                          'NormalizePointsColor', 'PackODINInputs']
    assert steps[0]['max_depth'] == 3.0 and steps[1]['size'] == (24, 32)
    assert steps[2]['voxel_size'] == 0.05
    # the config's own resize rule when no size is given
    own = next(t for t in cfg.test_dataloader.dataset.pipeline if t['type'] == 'ODINResize')
    assert recording_pipeline(cfg, image_size=None)[1] == dict(own)
    # without a config: no resize unless a size is given
    assert [t['type'] for t in recording_pipeline(None, image_size=None)] == [
        'LoadRecordingFrames', 'ODINSensorPoints', 'NormalizePointsColor', 'PackODINInputs']


def test_config_resize_and_fixed_size_agree(tmp_path):
    cfg = Config.fromfile(DEMO_CONFIG)
    seq = load_rgbd_folder(str(make_scannet(tmp_path / 'rec', n=2)))
    size = demo_image_size(cfg, seq)  # the config's ODINResize rule on the depth size
    by_cfg = prepare_recording(seq, image_size=None, cfg=cfg)
    fixed = prepare_recording(seq, image_size=size, cfg=cfg)
    assert tuple(by_cfg.inputs['img'].shape[-2:]) == tuple(size)
    for key in ('img', 'depths', 'intrinsics', 'points'):
        assert torch.equal(by_cfg.inputs[key], fixed.inputs[key]), key
    np.testing.assert_array_equal(by_cfg.pixel_to_point, fixed.pixel_to_point)
    # the fused cloud: every point is some valid pixel's, every valid pixel has a point
    valid = fixed.inputs['depths'].numpy() > 0
    assert ((fixed.pixel_to_point >= 0) == valid).all()
    assert set(np.unique(fixed.pixel_to_point[valid])) == set(range(len(fixed.inputs['points'])))


def test_max_depth_and_metainfo(tmp_path):
    seq = load_rgbd_folder(str(make_scannet(tmp_path / 'rec', n=2)))
    with pytest.raises(ValueError, match='no view has a pixel with valid depth'):
        prepare_recording(seq, image_size=(12, 16), max_depth=1.4)  # the makers' depth: 1.5 m
    far = prepare_recording(seq, image_size=(12, 16), max_depth=1.6)
    full = prepare_recording(seq, image_size=(12, 16))
    assert torch.equal(far.inputs['points'], full.inputs['points'])
    prep = prepare_recording(seq, image_size=(12, 16))
    meta = prep.metainfo
    assert meta['scene_id'] == seq.scene_name and meta['num_views'] == 2
    assert meta['img_path'] == list(seq.color_paths) and meta['img_shape'] == (12, 16)
    assert 'pixel_to_point' not in meta and prep.images.shape == (2, 12, 16, 3)
