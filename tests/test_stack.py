"""Smoke tests of the pinned OpenMMLab stack and of the project package."""
import importlib.util

import pytest
import torch


def test_torch_is_the_pinned_build():
    assert torch.__version__.startswith('2.13.0')


def test_no_torchvision_installed():
    # torchvision has no CPU build for torch 2.13; a broken one breaks mmengine's env collection.
    assert importlib.util.find_spec('torchvision') is None


def test_openmmlab_versions():
    import mmcv
    import mmdet
    import mmdet3d
    import mmengine
    assert mmengine.__version__ == '0.10.7'
    assert mmcv.__version__ == '2.1.0'
    assert mmdet.__version__ == '3.3.0'
    assert mmdet3d.__version__ == '1.4.0'


def test_model_registries_import():
    import mmdet.models  # noqa: F401
    import mmdet3d.models  # noqa: F401
    from mmdet.models.backbones import ResNet
    from mmdet3d.registry import MODELS
    net = MODELS.build(dict(type='mmdet.ResNet', depth=18, out_indices=(3, )))
    assert isinstance(net, ResNet)
    assert net(torch.zeros(1, 3, 64, 64))[0].shape == (1, 512, 2, 2)


def test_mmcv_compiled_cpu_op():
    from mmcv.ops import nms
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7])
    dets, keep = nms(boxes, scores, iou_threshold=0.5)
    assert keep.tolist() == [0, 2]
    assert dets.shape == (2, 5)


def test_mmcv_msda_cpu_fallback_samples_the_reference_pixel():
    from mmcv.ops import MultiScaleDeformableAttention
    torch.manual_seed(0)
    attn = MultiScaleDeformableAttention(embed_dims=32, num_heads=4, num_levels=1, num_points=2,
                                         batch_first=True).eval()
    with torch.no_grad():  # no sampling offsets: every point samples its reference location
        attn.sampling_offsets.weight.zero_()
        attn.sampling_offsets.bias.zero_()
    query = torch.randn(1, 16, 32)
    value = torch.randn(1, 16, 32)
    # query i refers to the centre of pixel i of the 4x4 map (normalised, x then y)
    rows, cols = torch.arange(16) // 4, torch.arange(16) % 4
    ref = torch.stack([(cols + 0.5) / 4, (rows + 0.5) / 4], -1).view(1, 16, 1, 2)
    shapes = torch.tensor([[4, 4]])
    start = torch.tensor([0])
    with torch.no_grad():
        out = attn(query, value=value, reference_points=ref, spatial_shapes=shapes,
                   level_start_index=start)
        # bilinear sampling at a pixel centre returns that pixel; the attention weights of the
        # points sum to one, so the output is the projected value of pixel i plus the identity
        expect = attn.output_proj(attn.value_proj(value)) + query
    torch.testing.assert_close(out, expect, rtol=1e-5, atol=1e-5)


def test_project_package_registers():
    from mmdet3d.registry import HOOKS

    import projects.odin  # noqa: F401
    assert HOOKS.get('RNGStateHook') is not None


@pytest.mark.parametrize('scheme_path', ['relative', 'absolute'])
def test_trusted_loader_reads_mmengine_checkpoint(tmp_path, monkeypatch, scheme_path):
    """A checkpoint with mmengine objects inside loads through mmengine under torch 2.13."""
    from mmengine.logging import HistoryBuffer
    from mmengine.runner.checkpoint import _load_checkpoint

    import projects.odin  # noqa: F401
    ckpt = {'state_dict': {'w': torch.ones(2)}, 'message_hub': {'h': HistoryBuffer()}}
    torch.save(ckpt, tmp_path / 'ckpt.pth')
    monkeypatch.chdir(tmp_path)
    path = 'ckpt.pth' if scheme_path == 'relative' else str(tmp_path / 'ckpt.pth')
    loaded = _load_checkpoint(path, map_location='cpu')
    assert torch.equal(loaded['state_dict']['w'], torch.ones(2))
    assert isinstance(loaded['message_hub']['h'], HistoryBuffer)
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        _load_checkpoint(str(tmp_path / 'missing.pth'))
