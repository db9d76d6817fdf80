"""The real configs train on a machine without CUDA: ``tools/train.py`` falls back to fp32.

Every ODIN config trains with mmengine's ``AmpOptimWrapper`` (the official recipes use AMP), which
asserts a GPU. Without one ``tools/train.py`` swaps it for the fp32 ``OptimWrapper`` and says so
in one warning line (``projects/odin/utils/device_fallback.py``). One iteration of each config
family (ResNet-50, Swin-B, joint ScanNet + COCO with the open-vocabulary head) runs through
``tools/train.py``'s ``main`` on tiny generated data; only data paths, frame counts, image and
batch sizes, worker counts and iterations are overridden (``--cfg-options``), so the real
architectures, optimizer settings and optimizer wrapper are exercised. CUDA is hidden
(``torch.cuda.is_available`` patched to False), so the fallback is tested on any machine.
"""
import math
import os.path as osp
from typing import Iterator, List, Tuple

import pytest
import torch
from mmengine.config import Config, ConfigDict

from odin_testing import REPO_ROOT, load_script, make_tiny_coco, make_tiny_roberta

FP32_LINE = 'training in fp32'
COCO_CLASSES = ('person', 'bicycle', 'car')  # the first three COCO categories
ODIN_DATASETS = ('ODINScanNetDataset', 'ODINScanNet200Dataset')


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    """A 2-room synthetic world converted as ScanNet and ScanNet200 (inpainted depth, as the
    configs read), a tiny COCO 2017 layout and a tiny RoBERTa folder."""
    from projects.odin.datasets.converters.scannet import convert_scannet
    from projects.odin.datasets.synthetic_world import generate_world
    root = tmp_path_factory.mktemp('cpu_fp32')
    generate_world(root / 'raw', num_scenes=2, seed=0, preset='tiny')  # 1 train + 1 val room
    out = {}
    for name in ('scannet', 'scannet200'):
        convert_scannet(str(root / 'raw'), str(root / name), dataset=name, frame_skip=1,
                        inpaint=True, progress=False)
        out[name] = str(root / name) + '/'
    for split, seed in (('train2017', 0), ('val2017', 1)):
        make_tiny_coco(str(root / 'coco'), num_images=4, split=split, seed=seed,
                       classes=COCO_CLASSES)
    out['coco'] = str(root / 'coco') + '/'
    out['roberta'] = make_tiny_roberta(str(root / 'roberta'))
    out['root'] = root
    return out


def _walk(node, path: str = '') -> Iterator[Tuple[str, object]]:
    """Yield (dotted --cfg-options path, node) for every dict / list node of a config."""
    yield path, node
    items = node.items() if isinstance(node, dict) else (
        enumerate(node) if isinstance(node, (list, tuple)) else ())
    for key, value in items:
        if isinstance(value, (dict, list, tuple)):
            yield from _walk(value, f'{path}.{key}' if path else str(key))


def tiny_overrides(cfg_path: str, data: dict, image_size: int = 64) -> List[str]:
    """--cfg-options pointing a real config at the tiny data, 2 views, small images, 1 iteration.

    Nothing of the model, the optimizer or its wrapper is touched.
    """
    cfg = Config.fromfile(cfg_path)
    opts = ['train_cfg.max_iters=1', 'train_cfg.val_begin=2',  # no validation after it
            'load_from=None']
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        for path, node in _walk(cfg[loader].to_dict(), loader):
            if not isinstance(node, dict):
                continue
            kind = node.get('type')
            if kind in ODIN_DATASETS:
                root = data['scannet200' if '200' in kind else 'scannet']
                # the synthetic rooms have their own intrinsics, not ScanNet's mean ones
                opts += [f'{path}.data_root={root}', f'{path}.override_cam2img=None']
            elif kind == 'mmdet.CocoDataset':
                opts += [f'{path}.data_root={data["coco"]}',
                         f'{path}.metainfo.classes=({",".join(COCO_CLASSES)})']
            elif loader == 'train_dataloader' and kind == 'LoadODINFrames':
                opts.append(f'{path}.num_views=2')
            elif loader == 'train_dataloader' and kind == 'ODINRandomResizeCrop':
                opts.append(f'{path}.crop_size=({image_size},{image_size})')
            elif loader == 'train_dataloader' and kind == 'mmdet.RandomResize':
                opts.append(f'{path}.scale=({image_size},{image_size})')
            elif loader == 'train_dataloader' and kind == 'mmdet.RandomCrop':
                opts.append(f'{path}.crop_size=({image_size},{image_size})')
    train = cfg.train_dataloader
    opts += ['train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False']
    if train.get('batch_sampler', {}).get('batch_sizes'):
        opts += [f'train_dataloader.batch_sampler.batch_sizes.{task}=1'
                 for task in train.batch_sampler.batch_sizes]
    else:
        opts.append('train_dataloader.batch_size=1')
    head = cfg.model.decode_head
    if head.get('classifier', {}).get('type') == 'OpenVocabClassifier':
        opts.append('model.decode_head.classifier.text_encoder.pretrained='
                    f'{data["roberta"]}')
    for path, node in _walk(cfg.val_evaluator.to_dict(), 'val_evaluator'):
        if isinstance(node, dict) and node.get('type') == 'mmdet.CocoMetric':
            opts.append(f'{path}.ann_file={data["coco"]}annotations/instances_val2017.json')
    return opts


@pytest.fixture
def no_cuda(monkeypatch):
    """A machine without CUDA, even where one is present."""
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)


@pytest.mark.parametrize('name,amp_flag,save', [
    ('scannet200_r50', False, True),
    ('scannet200_swin', True, False),  # Swin-B: no 1.4 GB checkpoint; --amp is ignored
    ('scannet_coco_joint_r50', False, False),
])
def test_real_config_trains_one_iteration_in_fp32(name, amp_flag, save, data, no_cuda,
                                                  one_thread):
    from mmengine.optim import AmpOptimWrapper, OptimWrapper
    cfg_path = osp.join(REPO_ROOT, 'configs', 'odin', f'{name}.py')
    assert Config.fromfile(cfg_path).optim_wrapper.type == 'AmpOptimWrapper'  # the real recipe
    work_dir = str(data['root'] / f'work_{name}')
    opts = tiny_overrides(cfg_path, data)
    if not save:
        opts.append('default_hooks.checkpoint.save_last=False')
    argv = [cfg_path, '--work-dir', work_dir] + (['--amp'] if amp_flag else [])
    runner = load_script('tools/train.py').main(argv + ['--cfg-options'] + opts)

    assert type(runner.optim_wrapper) is OptimWrapper
    assert not isinstance(runner.optim_wrapper, AmpOptimWrapper)
    assert runner.iter == 1
    # the real optimizer recipe survived the swap (AdamW, clip 0.01, backbone lr x0.1)
    assert type(runner.optim_wrapper.optimizer).__name__ == 'AdamW'
    assert runner.optim_wrapper.clip_grad_kwargs == dict(max_norm=0.01, norm_type=2)
    lrs = {g['lr'] for g in runner.optim_wrapper.optimizer.param_groups}
    assert lrs == {1e-4, 1e-5}, lrs
    # exactly one warning line, in the run's log file, saying why
    with open(osp.join(runner.log_dir, f'{runner.timestamp}.log')) as f:
        lines = [ln for ln in f if FP32_LINE in ln]
    assert len(lines) == 1, lines
    assert 'WARNING' in lines[0] and 'GPU' in lines[0]
    assert ('--amp is ignored' in lines[0]) == amp_flag
    # a finite loss from a full forward/backward/step of the real model
    losses = runner.message_hub.get_scalar('train/loss').data[0]
    assert len(losses) == 1 and math.isfinite(float(losses[0])) and float(losses[0]) > 0
    grad_norm = runner.message_hub.get_scalar('train/grad_norm').data[0]
    assert math.isfinite(float(grad_norm[-1])) and float(grad_norm[-1]) > 0
    if name == 'scannet_coco_joint_r50':  # the iteration's task got its own loss entry
        tasks = [t for t in ('3d', '2d')
                 if 'train/loss_' + t in runner.message_hub.log_scalars]
        assert len(tasks) == 1, tasks
    ckpt_path = osp.join(work_dir, 'iter_1.pth')
    assert osp.isfile(ckpt_path) == save
    if save:
        ckpt = torch.load(ckpt_path, map_location='cpu', weights_only=False, mmap=True)
        assert ckpt['meta']['iter'] == 1
        assert 'loss_scaler' not in ckpt['optimizer']  # an fp32 wrapper's state
        assert ckpt['optimizer']['state']  # AdamW moments after one step
        assert set(ckpt['state_dict']) == set(runner.model.state_dict())
    del runner


def test_gpu_behaviour_unchanged(monkeypatch):
    """With CUDA: AMP stays, --amp still switches AMP on, no gloo set-up."""
    from projects.odin.utils import device_fallback as fb
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    assert fb.has_accelerator()
    cfg = Config.fromfile(osp.join(REPO_ROOT, 'configs/odin/scannet200_swin.py'))
    before = cfg.optim_wrapper.to_dict()
    assert fb.fp32_without_accelerator(cfg, amp_requested=True) is None
    assert cfg.optim_wrapper.to_dict() == before
    cfg.launcher = 'pytorch'
    assert fb.distributed_without_accelerator(cfg) is None
    assert cfg.env_cfg.dist_cfg.backend == 'nccl' and 'model_wrapper_cfg' not in cfg
    assert not torch.distributed.is_initialized()
    tool = load_script('tools/train.py')
    tiny = osp.join(REPO_ROOT, 'configs/odin/odin_tiny_joint_test.py')  # plain OptimWrapper
    amp = tool.build_config(tool.parse_args([tiny, '--amp']))
    assert amp.optim_wrapper.type == 'AmpOptimWrapper' and amp.optim_wrapper.loss_scale == 'dynamic'


def test_amp_flag_without_cuda_says_why_it_is_ignored(no_cuda):
    from projects.odin.utils import device_fallback as fb
    tool = load_script('tools/train.py')
    tiny = osp.join(REPO_ROOT, 'configs/odin/odin_tiny_joint_test.py')
    cfg = tool.build_config(tool.parse_args([tiny, '--amp']))
    assert cfg.optim_wrapper.type == 'OptimWrapper' and 'loss_scale' not in cfg.optim_wrapper
    note = fb.fp32_without_accelerator(cfg, amp_requested=True)
    assert note.startswith('--amp is ignored') and 'GPU' in note and FP32_LINE in note
    # an fp32 config without --amp: nothing to say
    assert fb.fp32_without_accelerator(cfg, amp_requested=False) is None


def test_fp32_fallback_keeps_every_optimizer_setting(no_cuda):
    from projects.odin.utils import device_fallback as fb
    cfg = Config.fromfile(osp.join(REPO_ROOT, 'configs/odin/scannet_coco_joint_r50.py'))
    cfg.optim_wrapper.dtype = 'float16'
    before = cfg.optim_wrapper.to_dict()
    note = fb.fp32_without_accelerator(cfg)
    assert FP32_LINE in note and 'loss_scale' in note and 'dtype' in note
    after = cfg.optim_wrapper.to_dict()
    assert after.pop('type') == 'OptimWrapper'
    for key in fb.AMP_ONLY_ARGS:
        before.pop(key, None)
    before.pop('type')
    assert after == before  # optimizer, clip_grad, paramwise_cfg untouched


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_cpu_distributed_setup_uses_gloo_and_ddp_without_device_ids(no_cuda, monkeypatch):
    """The launcher part on one process: gloo group, a DDP that accepts a CPU module (mmengine
    adds ``device_ids=[LOCAL_RANK]`` as a default argument; the config's None must win)."""
    from mmengine.registry import MODEL_WRAPPERS

    from projects.odin.utils import device_fallback as fb
    for key, value in dict(RANK='0', WORLD_SIZE='1', LOCAL_RANK='0', MASTER_ADDR='127.0.0.1',
                           MASTER_PORT=str(_free_port())).items():
        monkeypatch.setenv(key, value)
    cfg = Config.fromfile(osp.join(REPO_ROOT, 'configs/odin/scannet_coco_joint_r50.py'))
    cfg.launcher = 'pytorch'
    cfg.env_cfg.dist_cfg.timeout = 60
    try:
        note = fb.distributed_without_accelerator(cfg)
        assert 'gloo' in note
        assert torch.distributed.get_backend() == 'gloo'
        assert cfg.env_cfg.dist_cfg.backend == 'gloo'
        wrapper = cfg.model_wrapper_cfg
        assert wrapper.device_ids is None and wrapper.find_unused_parameters  # joint recipe kept
        ddp = MODEL_WRAPPERS.build(ConfigDict(wrapper), default_args=dict(
            module=torch.nn.Linear(2, 2), device_ids=[0]))
        assert ddp.device_ids is None
        # no model_wrapper_cfg: mmengine's default wrapper and arguments, minus the device ids
        plain = Config.fromfile(osp.join(REPO_ROOT, 'configs/odin/scannet200_r50.py'))
        plain.launcher = 'pytorch'
        fb.distributed_without_accelerator(plain)
        assert plain.model_wrapper_cfg == dict(type='MMDistributedDataParallel',
                                               broadcast_buffers=False,
                                               find_unused_parameters=False, device_ids=None)
    finally:
        # what tools/train.py and tools/test.py do last: a live gloo group can abort at exit
        closed = fb.close_process_group()
    assert closed and not torch.distributed.is_initialized()
    assert fb.close_process_group() is False  # outside a distributed run: nothing to do
    cfg.launcher = 'slurm'
    with pytest.raises(RuntimeError, match='--launcher slurm needs a GPU'):
        fb.distributed_without_accelerator(cfg)
    cfg.launcher = 'none'
    assert fb.distributed_without_accelerator(cfg) is None
