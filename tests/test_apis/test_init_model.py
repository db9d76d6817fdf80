"""ODIN configs build through MMDetection3D's own ``init_model`` as well as ``init_odin_model``."""
import os.path as osp

import pytest
import torch

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
# mmdet3d's init_model reads the test dataloader's dataset metainfo: a config with data
CFG = osp.join(REPO_ROOT, 'configs', 'odin', 'synthetic_r18_demo.py')

pytestmark = pytest.mark.usefixtures('one_thread')


def test_mmdet3d_init_model_and_init_odin_model_load_the_same_weights(tmp_path):
    from mmdet3d.apis import init_model

    from projects.odin.apis.inference import init_odin_model
    from projects.odin.class_names import SCANNET_CLASSES
    classes = tuple(SCANNET_CLASSES)

    torch.manual_seed(0)
    ref = init_odin_model(CFG, None)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.01)  # differ from any fresh initialisation
    ckpt = str(tmp_path / 'tiny.pth')
    # as tools/train.py saves it: weights + the dataset's class names in meta
    torch.save(dict(state_dict=ref.state_dict(), meta=dict(dataset_meta=dict(classes=classes))),
               ckpt)

    theirs = init_model(CFG, ckpt, device='cpu')  # mmdet3d's API, as for any MMDet3D model
    ours = init_odin_model(CFG, ckpt)
    assert type(theirs).__name__ == 'ODIN' and not theirs.training
    assert tuple(theirs.dataset_meta['classes']) == classes
    expected = ref.state_dict()
    for model in (theirs, ours):
        state = model.state_dict()
        assert state.keys() == expected.keys()
        for key, value in expected.items():
            assert torch.equal(state[key], value), key


def test_converted_official_checkpoint_loads_through_mmdet3d_init_model(tmp_path, capsys):
    """Official key names -> tools/model_converters/odin_to_mmdet3d.py --dataset scannet ->
    mmdet3d.apis.init_model with configs/odin/scannet_r50.py: every tensor lands where the
    converter says, and the class names travel in the checkpoint's meta."""
    from mmdet3d.apis import init_model

    from odin_testing import load_script, reference_dir
    from projects.odin.class_names import SCANNET_CLASSES
    from projects.odin.conversion import convert_official_state_dict
    from projects.odin.parity import read_statedict_tsv
    tsv = osp.join(reference_dir(), 'statedict_scannet_resnet.tsv')
    if not osp.isfile(tsv):
        pytest.skip(f'reference key list not found: {tsv}')
    gen = torch.Generator().manual_seed(0)
    official = {k: torch.randn(shape, generator=gen).to(getattr(torch, dtype))
                if dtype.startswith('float') else torch.zeros(shape, dtype=getattr(torch, dtype))
                for k, (shape, dtype) in read_statedict_tsv(tsv).items()}
    src, dst = str(tmp_path / 'official.pth'), str(tmp_path / 'converted.pth')
    torch.save(dict(model=official, iteration=1499), src)
    tool = load_script('tools/model_converters/odin_to_mmdet3d.py')
    # a dataset whose class count does not match the checkpoint is refused
    assert tool.main([src, dst, '--dataset', 'scannet200', '--no-check']) == 1
    assert 'scannet200 has 200 classes but the checkpoint predicts 20' in capsys.readouterr().err
    assert tool.main([src, dst, '--dataset', 'scannet', '--no-check']) == 0

    model = init_model(osp.join(REPO_ROOT, 'configs', 'odin', 'scannet_r50.py'), dst,
                       device='cpu')
    assert tuple(model.dataset_meta['classes']) == tuple(SCANNET_CLASSES)
    expected = convert_official_state_dict(official)
    state = model.state_dict()
    assert set(expected) <= set(state)
    for key, value in expected.items():
        assert torch.equal(state[key], value), key
