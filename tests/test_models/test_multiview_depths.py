"""3D depth maps kept as given and made float32 per view chunk: the values of padding them all.

Before, the preprocessor stacked every sample's depth maps into one zero-padded float32 tensor
(B, V, Hp, Wp): a copy of the depth of all views whenever a batch had several samples, needed
padding or did not hold float32. These tests fail if that tensor is built again.
"""
import copy
from typing import List

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from odin_testing import build_tiny_model, create_odin_inputs

pytestmark = pytest.mark.usefixtures('one_thread')


def _depths(shapes, num_views=3, dtype=torch.float32, seed=0) -> List[torch.Tensor]:
    """Depth maps (V, H, W) per sample, with invalid (0) pixels; metres for float dtypes."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for h, w in shapes:
        d = torch.rand(num_views, h, w, generator=g, dtype=torch.float64) * 5
        d[d < 0.5] = 0
        out.append((d * 1000).round().to(dtype) if not dtype.is_floating_point else d.to(dtype))
    return out


def _padded_before(depths, hw) -> torch.Tensor:
    """The preprocessor's depths before: each sample ``.float()``, zero padded, stacked."""
    hp, wp = hw
    return torch.stack([F.pad(d.float(), (0, wp - d.shape[-1], 0, hp - d.shape[-2]))
                        for d in depths])


def _batch(shapes, num_views=3, dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    inputs = dict(img=[], cam2world=[], intrinsics=[],
                  depths=_depths(shapes, num_views, dtype))
    for h, w in shapes:
        inputs['img'].append(torch.randint(0, 256, (num_views, 3, h, w), generator=g,
                                           dtype=torch.uint8))
        inputs['cam2world'].append(torch.eye(4).repeat(num_views, 1, 1))
        inputs['intrinsics'].append(torch.eye(4).repeat(num_views, 1, 1))
    return dict(inputs=inputs, data_samples=None)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64, torch.float16, torch.uint16])
@pytest.mark.parametrize('shapes', [[(64, 96)], [(50, 70), (64, 40)]])
def test_chunks_bit_equal_whole_batch_padding(shapes, dtype):
    from projects.odin.structures import MultiViewDepths
    depths = _depths(shapes, dtype=dtype)
    hw = (64, 96)
    ref = _padded_before(depths, hw)
    mv = MultiViewDepths(depths, hw)
    assert mv.shape == ref.shape and mv.num_views == ref.shape[0] * ref.shape[1]
    flat = ref.flatten(0, 1)
    n = flat.shape[0]
    for step in (1, 2, 4, n):  # chunks crossing sample boundaries too
        for s in range(0, n, step):
            assert torch.equal(mv.padded(s, min(s + step, n)), flat[s:s + step])
    for i, (h, w) in enumerate(shapes):
        for s, e in ((0, 1), (1, 3), (0, 3)):
            # the unprojection's region: inside the sample's image, and beyond its depth maps
            for rh, rw in ((h, w), (h - 3, w - 5), (64, 96)):
                got = mv.region(i, s, e, rh, rw)
                assert got.dtype == torch.float32
                assert torch.equal(got, ref[i, s:e, :rh, :rw])
    assert torch.equal(mv.to_tensor(), ref)
    # padding is zero, the depth maps are not all zero
    assert (mv.to_tensor()[1:, :, 64:, 40:] == 0).all() if len(shapes) > 1 else True
    assert (mv.region(0, 0, 1, *shapes[0]) > 0).any()
    sel = mv.select_views(torch.tensor([2, 0]))
    assert torch.equal(sel.to_tensor(), ref[:, [2, 0]])


def test_bad_input():
    from projects.odin.structures import MultiViewDepths
    with pytest.raises(ValueError, match=r'\(V, H, W\)'):
        MultiViewDepths([torch.zeros(4, 32)], (32, 32))
    with pytest.raises(ValueError, match='do not fit'):
        MultiViewDepths([torch.zeros(2, 40, 32)], (32, 32))
    with pytest.raises(ValueError, match='same number of views'):
        MultiViewDepths([torch.zeros(2, 8, 8), torch.zeros(3, 8, 8)], (32, 32))
    with pytest.raises(ValueError, match='real-valued'):
        MultiViewDepths([torch.zeros(2, 8, 8, dtype=torch.bool)], (32, 32))
    with pytest.raises(ValueError, match='at least one sample'):
        MultiViewDepths([], (32, 32))
    mv = MultiViewDepths([torch.ones(2, 8, 8)], (32, 32))
    with pytest.raises(ValueError, match='out of range'):
        mv.region(0, 1, 3, 8, 8)
    with pytest.raises(ValueError, match='out of range'):
        mv.padded(0, 3)
    with pytest.raises(ValueError, match='outside the padded size'):
        mv.region(0, 0, 1, 33, 8)


def _storages(tensors) -> set:
    return {t.untyped_storage().data_ptr() for t in tensors}


def _output_tensors(obj) -> List[torch.Tensor]:
    """Every tensor the preprocessor returns (inside lists, dicts and the batch structures)."""
    from projects.odin.structures import MultiViewDepths, MultiViewImages
    leaves, _ = tree_flatten(obj)
    out = []
    for x in leaves:
        if isinstance(x, MultiViewDepths):
            out += x.depths
        elif isinstance(x, MultiViewImages):
            out.append(x.raw)
        elif isinstance(x, torch.Tensor):
            out.append(x)
    return out


@pytest.mark.parametrize('shapes,dtype', [
    ([(64, 96)], torch.float32),  # the usual recording: one sample, no padding
    ([(50, 70), (64, 40)], torch.float32),  # padded and stacked before
    ([(64, 96)], torch.float64),  # converted before
    ([(64, 96)], torch.uint16),  # integer sensor units (converted element-wise where used)
])
def test_preprocessor_returns_no_float_depth_of_all_views(shapes, dtype):
    """No float tensor as large as one sample's depth maps is made by the preprocessor."""
    from projects.odin.models.data_preprocessor import ODINDataPreprocessor
    from projects.odin.structures import MultiViewDepths
    data = _batch(shapes, dtype=dtype)
    given = list(data['inputs']['depths'])
    out = ODINDataPreprocessor().simple_process(data)['inputs']
    depths = out['depths']
    assert isinstance(depths, MultiViewDepths)
    assert all(a is b for a, b in zip(depths.depths, given))  # the very tensors given
    v = given[0].shape[0]
    one_sample = v * min(h * w for h, w in shapes)
    made = [t for t in _output_tensors(out)
            if t.is_floating_point() and t.untyped_storage().data_ptr() not in _storages(given)]
    assert made, 'cam2world and intrinsics are stacked, so some float tensors are made'
    assert max(t.numel() for t in made) < one_sample, [tuple(t.shape) for t in made]
    assert torch.equal(depths.to_tensor(), _padded_before(given, depths.shape[-2:]))


class _FloatDepthWatch(TorchDispatchMode):
    """Records the float tensors of a padded or unpadded depth map's size that ops allocate.

    Outputs that share an input's storage (views, in-place ops) allocate nothing and are left
    out.
    """

    def __init__(self, sizes) -> None:
        super().__init__()
        self.sizes = {tuple(s) for s in sizes}
        self.views: List[int] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        given = _storages(t for t in tree_flatten((args, kwargs))[0]
                          if isinstance(t, torch.Tensor))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.is_floating_point() and t.dim() >= 3 and \
                    tuple(t.shape[-2:]) in self.sizes and \
                    t.untyped_storage().data_ptr() not in given:
                # maps of that size per tensor (views, or views x channels of the images)
                self.views.append(t.numel() // (t.shape[-1] * t.shape[-2]))
        return out


def test_bounded_test_step_builds_no_float_depth_of_all_views():
    """Preprocessor and bounded forward: no float depth-sized maps for all views at once."""
    num_views, view_chunk = 20, 4
    model = build_tiny_model(view_chunk=view_chunk)
    data = create_odin_inputs(num_views=num_views, img_hw=(40, 48), num_points=120)
    watch = _FloatDepthWatch([(40, 48), (64, 64)])  # the images are padded to 64 x 64
    with torch.no_grad(), watch:
        model.test_step(data)
    assert watch.views, 'the unprojection makes float maps of the depth size'
    # the unprojection runs 16 views at a time, the images' chunks are 4 views x 3 channels
    assert max(watch.views) < num_views, max(watch.views)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_bounded_outputs_bit_equal_whole_padded_depths(dtype):
    """The bounded forward on per-chunk depths equals it on the padded float32 depth tensor."""
    model = build_tiny_model(view_chunk=2)
    data = create_odin_inputs(num_views=5, img_hw=(40, 48), num_points=120, batch_size=2)
    data['inputs']['depths'] = [d.to(dtype) for d in data['inputs']['depths']]
    d = model.data_preprocessor(copy.deepcopy(data), False)
    whole = d['inputs']['depths'].to_tensor()
    assert whole.shape == (2, 5, 64, 64) and (whole[..., 40:, :] == 0).all()
    assert (whole > 0).any()
    with torch.no_grad():
        ours_cls, ours_masks = model(d['inputs'], d['data_samples'], mode='tensor')
        ref_cls, ref_masks = model(dict(d['inputs'], depths=whole), d['data_samples'],
                                   mode='tensor')
    assert len(ours_masks) == len(ref_masks) > 0
    for a, b in zip(ours_cls + ours_masks, ref_cls + ref_masks):
        assert torch.equal(a, b)
