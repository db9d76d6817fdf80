"""3D images kept as loaded and normalised per view chunk: whole-batch preprocessing values."""
import copy

import pytest
import torch
from mmdet3d.models.data_preprocessors import Det3DDataPreprocessor

from odin_testing import build_tiny_model, create_odin_inputs

pytestmark = pytest.mark.usefixtures('one_thread')

MEAN, STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)


def _batch(shapes, num_views=3, seed=0):
    """Uint8 3D samples of the given (H, W), with depths and poses."""
    g = torch.Generator().manual_seed(seed)
    inputs = dict(img=[], depths=[], cam2world=[], intrinsics=[])
    for h, w in shapes:
        inputs['img'].append(torch.randint(0, 256, (num_views, 3, h, w), generator=g,
                                           dtype=torch.uint8))
        inputs['depths'].append(torch.rand(num_views, h, w, generator=g) + 0.5)
        inputs['cam2world'].append(torch.eye(4).repeat(num_views, 1, 1))
        inputs['intrinsics'].append(torch.eye(4).repeat(num_views, 1, 1))
    return dict(inputs=inputs, data_samples=None)


def _whole_batch(data, **kwargs):
    """What the preprocessor produced before: mmdet3d's whole-batch normalisation and padding."""
    ref = Det3DDataPreprocessor(mean=MEAN, std=STD, pad_size_divisor=32, **kwargs)
    return ref.simple_process(dict(data, inputs=dict(img=data['inputs']['img'])))['inputs']['imgs']


@pytest.mark.parametrize('bgr_to_rgb', [False, True])
@pytest.mark.parametrize('shapes', [[(64, 96)], [(50, 70), (64, 40)]])
def test_chunks_bit_equal_whole_batch_normalisation(shapes, bgr_to_rgb):
    from projects.odin.models.data_preprocessor import ODINDataPreprocessor
    from projects.odin.structures import MultiViewImages
    data = _batch(shapes)
    ref = _whole_batch(copy.deepcopy(data), bgr_to_rgb=bgr_to_rgb)
    prep = ODINDataPreprocessor(mean=MEAN, std=STD, pad_size_divisor=32, bgr_to_rgb=bgr_to_rgb)
    out = prep.simple_process(copy.deepcopy(data))['inputs']
    imgs = out['imgs']
    assert isinstance(imgs, MultiViewImages)
    assert imgs.raw.dtype == torch.uint8  # a quarter of the float images' bytes
    assert imgs.shape == ref.shape
    assert out['depths'].shape == ref.shape[:2] + ref.shape[-2:]
    flat = ref.flatten(0, 1)
    n = flat.shape[0]
    for step in (1, 2, 4, n):  # chunks crossing sample boundaries too
        for s in range(0, n, step):
            assert torch.equal(imgs.normalized(s, min(s + step, n)), flat[s:s + step])
    assert torch.equal(imgs.to_tensor(), ref)
    # the padded pixels are the pad value, the others not all of it
    h, w = shapes[0]
    if (h, w) != tuple(ref.shape[-2:]):
        assert (imgs.normalized(0, 1)[:, :, h:] == 0).all()
    assert (imgs.normalized(0, 1)[:, :, :h, :w] != 0).any()


def test_frame_selection_and_bad_input():
    from projects.odin.structures import MultiViewImages
    imgs = MultiViewImages.stack([torch.randint(0, 256, (4, 3, 20, 30), dtype=torch.uint8)],
                                 32, mean=torch.tensor(MEAN).view(3, 1, 1),
                                 std=torch.tensor(STD).view(3, 1, 1))
    sel = imgs.select_views(torch.tensor([0, 2]))
    assert torch.equal(sel.normalized(), imgs.normalized()[[0, 2]])
    # float images without normalisation: padding the chunk leaves the stored images alone
    raw = torch.full((1, 2, 3, 32, 32), 7.)
    plain = MultiViewImages(raw, [(20, 30)], None, None, pad_value=-1.)
    chunk = plain.normalized()
    assert (chunk[:, :, 20:] == -1).all() and (chunk[:, :, :20, :30] == 7).all()
    assert (raw == 7).all()
    with pytest.raises(ValueError, match='out of range'):
        imgs.normalized(3, 5)
    with pytest.raises(ValueError, match=r'\(B, V, 3, Hp, Wp\)'):
        MultiViewImages(torch.zeros(4, 3, 32, 32), [(32, 32)], None, None)
    with pytest.raises(ValueError, match='does not fit'):
        MultiViewImages(torch.zeros(1, 4, 3, 32, 32), [(40, 32)], None, None)
    with pytest.raises(ValueError, match='same number of views'):
        MultiViewImages.stack([torch.zeros(2, 3, 8, 8), torch.zeros(3, 3, 8, 8)], 32)


def test_model_logits_equal_prenormalised_images():
    """The tiny model on per-chunk normalised images equals it on whole-batch ones."""
    model = build_tiny_model(view_chunk=2)
    data = create_odin_inputs(num_views=3, img_hw=(40, 48), num_points=120)
    d = model.data_preprocessor(copy.deepcopy(data), False)
    ref_imgs = _whole_batch(copy.deepcopy(data))
    assert torch.equal(d['inputs']['imgs'].to_tensor(), ref_imgs)
    whole = dict(d['inputs'], imgs=ref_imgs)
    with torch.no_grad():
        ours, _ = model(d['inputs'], d['data_samples'], mode='tensor')
        before, _ = model(whole, d['data_samples'], mode='tensor')
    assert len(ours) == len(before) > 0
    for a, b in zip(ours, before):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
