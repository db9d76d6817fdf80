"""Checkpoints that do not fit the config are refused by tools/test.py, the demo and
init_odin_model (projects/odin/utils/checkpoint.py), unless --allow-partial; unreadable files
give one line.

Tiny models and checkpoints written here: the tiny ODIN config (4 classes) and a 6-class variant
of it stand for "ScanNet R50 weights with the ScanNet200 Swin-B config"; a two-layer toy model
runs the whole tools/test.py loop cheaply.
"""
import glob
import json
import logging
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.model import BaseModel
from mmengine.registry import init_default_scope
from torch import nn
from torch.utils.data import Dataset

from odin_testing import REPO_ROOT, load_script
from projects.odin.utils.checkpoint import (
    CheckpointMismatchError,
    CheckpointReadError,
    check_checkpoint,
    compare_state_dict,
    read_checkpoint,
    suggest_configs,
)

pytestmark = pytest.mark.usefixtures('one_thread')

TINY_CFG = osp.join(REPO_ROOT, 'configs', 'odin', 'odin_tiny_test.py')
# what tools/model_converters/odin_to_mmdet3d.py records for a model like the tiny config's
TINY_ARCH = dict(backbone='r18', num_classes=4, num_queries=8, fusion_stages=(1, 2, 3),
                 backbone_fusion_layers=(1, 1, 1), decoder_fusion=True, open_vocab=False)


def build(cfg_path):
    from mmdet3d.registry import MODELS
    init_default_scope('mmdet3d')
    return MODELS.build(Config.fromfile(cfg_path).model)


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    """The tiny 4-class model's converted-style checkpoint, and a 6-class variant config."""
    root = tmp_path_factory.mktemp('ckptfit')
    torch.manual_seed(0)
    model = build(TINY_CFG)
    ckpt = str(root / 'tiny4.pth')
    torch.save(dict(state_dict=model.state_dict(),
                    meta=dict(kind='odin', arch=TINY_ARCH, source='tiny4_official.pth')), ckpt)
    six = root / 'tiny6.py'
    six.write_text(f'_base_ = [{TINY_CFG!r}]\n'
                   'model = dict(decode_head=dict(\n'
                   '    num_things_classes=6, loss_cls=dict(class_weight=[1.0] * 6 + [0.1])))\n')
    return dict(root=root, model=model, ckpt=ckpt, six=str(six))


def truncated_copy(src, dst):
    with open(src, 'rb') as f:
        data = f.read()
    with open(dst, 'wb') as f:
        f.write(data[:len(data) // 2])
    return str(dst)


# ------------------------------------------------------------------------------- the check
def test_compare_state_dict_finds_every_kind_of_misfit():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    sd = model.state_dict()
    sd['2.weight'] = torch.zeros(5, 4)             # mis-shaped
    del sd['0.bias'], sd['1.num_batches_tracked']  # missing (the BN counter is ignored)
    sd['3.weight'] = torch.zeros(1)                # unexpected
    fit = compare_state_dict(model, sd)
    assert not fit.ok
    assert fit.missing == ['0.bias'] and fit.unexpected == ['3.weight']
    assert fit.mismatched == [('2.weight', (5, 4), (2, 4))]
    assert fit.num_loaded == len(model.state_dict()) - 3
    assert fit.describe() == ('1 missing keys (first: 0.bias); 1 unexpected keys (first: '
                              '3.weight); 1 mis-shaped keys (first: 2.weight [5, 4] in the '
                              'checkpoint vs [2, 4] in the model)')
    many = compare_state_dict(model, {f'x{i}': torch.zeros(1) for i in range(8)})
    assert 'first: x0, x1, x2, x3, x4, ... 3 more' in many.describe()
    assert compare_state_dict(model, model.state_dict()).ok


def test_other_architecture_is_refused_naming_checkpoint_config_keys_and_the_right_config(tiny):
    from projects.odin.apis.inference import init_odin_model
    with pytest.raises(CheckpointMismatchError) as err:
        init_odin_model(tiny['six'], tiny['ckpt'])
    msg = str(err.value)
    assert f'checkpoint {tiny["ckpt"]} does not fit the model of {tiny["six"]}' in msg
    assert ('decode_head.classifier.cls_embed.weight [5, 32] in the checkpoint vs [7, 32] in '
            'the model') in msg
    assert 'mis-shaped keys' in msg and 'missing keys' not in msg
    # the converter's architecture record names the config that fits
    assert 'backbone=r18, num_classes=4' in msg
    assert msg.count('use configs/odin/odin_tiny_test.py.') == 1
    assert '--allow-partial' in msg


def test_issue_example_swin_config_with_r50_weights_suggests_the_r50_config(tiny):
    # the check itself with the arch record of a converted ScanNet200 R50 checkpoint
    meta = dict(kind='odin', arch=dict(backbone='r50', num_classes=200, num_queries=100,
                                       fusion_stages=(1, 2, 3), backbone_fusion_layers=(2, 6, 2),
                                       decoder_fusion=True, open_vocab=False))
    sd = {k: v for k, v in tiny['model'].state_dict().items() if 'backbone' not in k}
    cfg = osp.join(REPO_ROOT, 'configs', 'odin', 'scannet200_swin.py')
    with pytest.raises(CheckpointMismatchError, match=r'missing keys \(first: backbone\.') as err:
        check_checkpoint(tiny['model'], 'r50.pth', config=cfg,
                         checkpoint=dict(state_dict=sd, meta=meta))
    assert 'use configs/odin/scannet200_r50.py.' in str(err.value)


def test_suggest_configs_matches_the_real_configs():
    arch = dict(backbone='r50', num_classes=20, num_queries=100, fusion_stages=(1, 2, 3),
                backbone_fusion_layers=[2, 6, 2], decoder_fusion=True, open_vocab=False)
    assert suggest_configs(arch) == ['configs/odin/scannet_r50.py']
    assert suggest_configs(dict(arch, backbone='swin', num_classes=160)) == [
        'configs/odin/matterport3d_swin.py']
    # the joint checkpoint: open vocabulary, any class count
    assert suggest_configs(dict(arch, open_vocab=True, num_classes=20)) == [
        'configs/odin/scannet_coco_joint_r50.py']
    assert suggest_configs(dict(arch, num_classes=7)) == []


def test_missing_and_unexpected_keys_are_refused(tiny, tmp_path):
    from projects.odin.apis.inference import init_odin_model
    sd = tiny['model'].state_dict()
    dropped = [k for k in sd if k.startswith('decode_head.transformer_decoder.layers.2.')]
    for k in dropped:
        del sd[k]
    sd['decode_head.extra.weight'] = torch.zeros(3)
    ckpt = str(tmp_path / 'holes.pth')
    torch.save(dict(state_dict=sd), ckpt)
    with pytest.raises(CheckpointMismatchError) as err:
        init_odin_model(TINY_CFG, ckpt)
    msg = str(err.value)
    assert f'{len(dropped)} missing keys (first: {dropped[0]}, ' in msg
    assert '1 unexpected keys (first: decode_head.extra.weight)' in msg
    assert TINY_CFG in msg and ckpt in msg
    assert 'converted from' not in msg  # no architecture record, no suggestion


def test_allow_partial_loads_what_fits_and_warns(tiny, caplog):
    from projects.odin.apis.inference import init_odin_model
    with caplog.at_level(logging.WARNING, logger='projects.odin.utils.checkpoint'):
        model = init_odin_model(tiny['six'], tiny['ckpt'], allow_partial=True)
    assert 'does not fit' in caplog.text and '--allow-partial: loading the' in caplog.text
    theirs, ours = tiny['model'].state_dict(), model.state_dict()
    fitting = [k for k in ours if k in theirs and theirs[k].shape == ours[k].shape]
    assert len(fitting) == len(ours) - 2  # all but cls_embed weight and bias
    for k in fitting:
        assert torch.equal(ours[k], theirs[k]), k


def test_a_fitting_checkpoint_loads_silently(tiny, caplog):
    from projects.odin.apis.inference import init_odin_model
    with caplog.at_level(logging.WARNING):
        model = init_odin_model(TINY_CFG, tiny['ckpt'])
    assert 'does not fit' not in caplog.text
    for k, v in tiny['model'].state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k


def test_unreadable_files_give_one_line(tiny, tmp_path):
    from mmengine.runner import load_checkpoint

    from projects.odin.utils.checkpoint import trusted_checkpoint_loading

    def trusted_load_checkpoint(model, path):
        with trusted_checkpoint_loading():  # mmengine's loader inside the scoped trusted one
            return load_checkpoint(model, path)

    from projects.odin.apis.inference import init_odin_model
    cut = truncated_copy(tiny['ckpt'], tmp_path / 'cut.pth')
    junk = tmp_path / 'junk.pth'
    junk.write_bytes(b'\x00not a checkpoint' * 10)
    empty = tmp_path / 'empty.pth'
    empty.write_bytes(b'')
    for path in (cut, str(junk), str(empty)):
        for load in (lambda p: init_odin_model(TINY_CFG, p), read_checkpoint,
                     lambda p: trusted_load_checkpoint(nn.Linear(1, 1), p)):  # mmengine's too
            with pytest.raises(CheckpointReadError) as err:
                load(path)
            msg = str(err.value)
            assert '\n' not in msg and msg.startswith(f'cannot read checkpoint {path} (')
            assert 'truncated, corrupt or not a torch checkpoint' in msg
    notweights = tmp_path / 'list.pth'
    torch.save([1, 2, 3], str(notweights))
    with pytest.raises(CheckpointReadError, match='holds no model weights'):
        init_odin_model(TINY_CFG, str(notweights))


def test_legacy_format_and_ddp_prefix_are_read(tiny, tmp_path):
    ckpt = str(tmp_path / 'legacy.pth')
    sd = {f'module.{k}': v for k, v in tiny['model'].state_dict().items()}
    torch.save(dict(state_dict=sd), ckpt, _use_new_zipfile_serialization=False)
    assert check_checkpoint(tiny['model'], ckpt).ok


# ------------------------------------------------------------------------------- tools/test.py
class CkptFitToyModel(BaseModel):
    """``value = b(a(x))`` per sample; ``b`` starts as weight 1, bias 0."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 4)
        self.b = nn.Linear(4, 1)
        nn.init.constant_(self.b.weight, 1.0)
        nn.init.zeros_(self.b.bias)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        return [dict(value=float(v)) for v in self.b(self.a(inputs))[:, 0]]


class CkptFitToyData(Dataset):
    """Three fixed inputs."""

    def __len__(self):
        return 3

    def __getitem__(self, i):
        return dict(inputs=torch.tensor([1.0, i, -i]))


def _register_toys():
    from mmdet3d.registry import DATASETS, METRICS, MODELS
    from mmengine.evaluator import BaseMetric

    class CkptFitToyMetric(BaseMetric):
        def process(self, data_batch, data_samples):
            self.results.extend(d['value'] for d in data_samples)

        def compute_metrics(self, results):
            return dict(total=float(sum(results)))

    MODELS.register_module(module=CkptFitToyModel, force=True)
    DATASETS.register_module(module=CkptFitToyData, force=True)
    METRICS.register_module(module=CkptFitToyMetric, force=True)


@pytest.fixture(scope='module')
def toy_cfg(tmp_path_factory):
    _register_toys()
    path = tmp_path_factory.mktemp('toycfg') / 'toy.py'
    path.write_text(
        "default_scope = 'mmdet3d'\n"
        "model = dict(type='CkptFitToyModel')\n"
        "test_dataloader = dict(batch_size=2, num_workers=0, dataset=dict(type='CkptFitToyData'),"
        " sampler=dict(type='DefaultSampler', shuffle=False),"
        " collate_fn=dict(type='default_collate'))\n"
        "test_evaluator = dict(type='CkptFitToyMetric')\n"
        "test_cfg = dict(type='TestLoop')\n"
        "log_level = 'WARNING'\n")
    return str(path)


def run_test_py(cfg, ckpt, work_dir, *extra):
    # a distinct experiment name per run: mmengine's logger/visualiser instances are per name
    return load_script('tools/test.py').main([
        cfg, ckpt, '--work-dir', str(work_dir), *extra, '--cfg-options',
        f'experiment_name=ckptfit_{osp.basename(str(work_dir))}'])


def read_metric(work_dir):
    with open(glob.glob(osp.join(str(work_dir), '*', '*.json'))[0]) as f:
        return json.load(f)['total']


def expected_total(a_weight, a_bias, b_weight, b_bias):
    x = torch.stack([CkptFitToyData()[i]['inputs'] for i in range(3)])
    return float(((x @ a_weight.t() + a_bias) @ b_weight.t() + b_bias).sum())


def test_tools_test_loads_a_fitting_checkpoint_and_refuses_a_partial_one(toy_cfg, tmp_path,
                                                                         capsys):
    g = torch.Generator().manual_seed(0)
    full = {'a.weight': torch.randn(4, 3, generator=g), 'a.bias': torch.randn(4, generator=g),
            'b.weight': torch.randn(1, 4, generator=g), 'b.bias': torch.randn(1, generator=g)}
    good, part = str(tmp_path / 'good.pth'), str(tmp_path / 'part.pth')
    torch.save(dict(state_dict=full), good)
    torch.save(dict(state_dict={k: v for k, v in full.items() if k.startswith('a.')}), part)

    assert run_test_py(toy_cfg, good, tmp_path / 'w_good') == 0
    assert read_metric(tmp_path / 'w_good') == pytest.approx(expected_total(*full.values()),
                                                             rel=1e-5)
    capsys.readouterr()
    # b missing: refused before any test iteration, nothing evaluated
    assert run_test_py(toy_cfg, part, tmp_path / 'w_part') == 2
    err = capsys.readouterr().err
    assert err.startswith(f'error: checkpoint {part} does not fit the model of {toy_cfg}: '
                          '2 missing keys (first: b.weight, b.bias)')
    assert not glob.glob(osp.join(str(tmp_path / 'w_part'), '*', '*.json'))
    # --allow-partial: a loaded, b keeps its initialisation (weight 1, bias 0)
    assert run_test_py(toy_cfg, part, tmp_path / 'w_allow', '--allow-partial') == 0
    assert read_metric(tmp_path / 'w_allow') == pytest.approx(
        expected_total(full['a.weight'], full['a.bias'], torch.ones(1, 4), torch.zeros(1)),
        rel=1e-5)


def test_tools_test_refuses_another_architecture_and_unreadable_files(tiny, tmp_path, capsys):
    assert run_test_py(tiny['six'], tiny['ckpt'], tmp_path / 'w6') == 2
    err = capsys.readouterr().err
    assert f'error: checkpoint {tiny["ckpt"]} does not fit the model of {tiny["six"]}' in err
    assert 'decode_head.classifier.cls_embed.weight [5, 32]' in err
    assert 'use configs/odin/odin_tiny_test.py.' in err
    cut = truncated_copy(tiny['ckpt'], tmp_path / 'cut.pth')
    for path in (cut, str(tmp_path / 'absent.pth')):
        assert run_test_py(TINY_CFG, path, tmp_path / 'wcut') == 2
        err = capsys.readouterr().err
        assert err.count('\n') == 1 and err.startswith('error: ') and path in err


# ------------------------------------------------------------------------------- demo
def test_demo_refuses_misfit_and_truncated_checkpoints_unless_allowed(tiny, tmp_path, capsys):
    from rgbd_makers import make_scannet

    from projects.odin.demo.synthetic_demo import DEMO_CONFIG
    demo = load_script('demo/odin_demo.py')
    folder = make_scannet(tmp_path / 'rec')

    def run(ckpt, *extra):
        return demo.main([str(folder), DEMO_CONFIG, ckpt, '--out-dir', str(tmp_path / 'out'),
                          '--image-size', '24', '32', *extra])

    cut = truncated_copy(tiny['ckpt'], tmp_path / 'cut.pth')
    capsys.readouterr()
    assert run(cut) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines()
           if not line.startswith('reading frames')]  # the progress bar
    assert len(err) == 1 and err[0].startswith(f'error: cannot read checkpoint {cut}')
    # the tiny 4-class model's weights with the 20-class demo config
    assert run(tiny['ckpt']) == 2
    err = capsys.readouterr().err
    assert f'does not fit the model of {DEMO_CONFIG}' in err
    assert 'use configs/odin/odin_tiny_test.py.' in err
    assert not (tmp_path / 'out' / 'rec_instances.json').exists()
    assert run(tiny['ckpt'], '--allow-partial') == 0
    assert (tmp_path / 'out' / 'rec_instances.json').exists()
