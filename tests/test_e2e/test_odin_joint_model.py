"""Model side of joint training: 2D batches leave every 3D layer without a gradient, and
alternating 2D / 3D steps run under DDP with ``find_unused_parameters=True`` (as the joint
config sets it)."""
import copy
import re

import pytest
import torch
from mmengine.config import Config

from odin_testing import REPO_ROOT, create_odin_inputs

CFG = f'{REPO_ROOT}/configs/odin/odin_tiny_test.py'
THREE_D_ONLY = re.compile(r'(fusion_blocks|pos_embed_3d)')


pytestmark = pytest.mark.usefixtures('one_thread')


def _model():
    from mmdet3d.registry import MODELS
    from mmengine.registry import init_default_scope

    import projects.odin  # noqa: F401
    init_default_scope('mmdet3d')
    torch.manual_seed(0)
    model = MODELS.build(copy.deepcopy(Config.fromfile(CFG).model))
    model.init_weights()
    return model


def _with_grad(model):
    return {n for n, p in model.named_parameters()
            if p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0}


def _step(model, opt, data):
    d = model.data_preprocessor(copy.deepcopy(data), True)
    losses = model(**d, mode='loss')
    opt.zero_grad(set_to_none=True)
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    grads = _with_grad(model)
    opt.step()
    return grads


def test_2d_batch_gives_no_gradient_to_any_3d_layer():
    model = _model()
    model.train()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    three_d = {n for n in trainable if THREE_D_ONLY.search(n)}
    assert len(three_d) > 20  # backbone + pixel-decoder fusion blocks, decoder 3D pos-embeds
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    d3 = create_odin_inputs(num_views=2, img_hw=(32, 32), num_points=150)
    d2 = create_odin_inputs(img_hw=(32, 32), mode='2d', batch_size=2, num_instances=2)
    # one step of each first: deformable-attention offsets start at exactly 0
    _step(model, opt, d3)
    _step(model, opt, d2)
    grads_3d = _step(model, opt, d3)
    grads_2d = _step(model, opt, d2)
    assert not grads_2d & three_d, sorted(grads_2d & three_d)
    assert three_d <= grads_3d, sorted(three_d - grads_3d)
    # every shared (2D) parameter is trained by 2D batches
    assert grads_2d == trainable - three_d, sorted((trainable - three_d) ^ grads_2d)


def test_alternating_tasks_under_ddp_with_unused_parameters(tmp_path):
    import torch.distributed as dist
    from mmengine.model import MMDistributedDataParallel
    from mmengine.optim import OptimWrapper
    if dist.is_initialized():
        pytest.skip('a process group already exists')
    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/pg', rank=0, world_size=1)
    try:
        model = MMDistributedDataParallel(_model(), find_unused_parameters=True)
        wrapper = OptimWrapper(torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=1e-3))
        d3 = create_odin_inputs(num_views=2, img_hw=(32, 32), num_points=150)
        d2 = create_odin_inputs(img_hw=(32, 32), mode='2d', batch_size=2, num_instances=2)
        fusion = model.module.backbone.fusion_blocks[0].in_proj[0].weight
        for data in (d2, d3, d2):
            before = fusion.detach().clone()
            log = model.train_step(copy.deepcopy(data), wrapper)
            assert torch.isfinite(log['loss'])
            moved = not torch.equal(before, fusion.detach())
            assert moved == ('depths' in data['inputs'])  # 3D layers only move on 3D steps
    finally:
        dist.destroy_process_group()
