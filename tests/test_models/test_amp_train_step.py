"""A training step under mixed precision (the recipes train with AMP).

The first GPU training (H200, ``configs/odin/scannet200_swin.py`` with AmpOptimWrapper) stopped in
the cross-view block: half-precision projections met float32 softmax weights in a compiled
attention op. On a CPU, autocast runs in bfloat16 and exercises the same mixed-precision path of
every ODIN layer.
"""
import torch

from odin_testing import build_tiny_model, create_odin_inputs


def test_train_step_under_cpu_autocast():
    model = build_tiny_model(train=True)
    data = model.data_preprocessor(
        create_odin_inputs(num_views=3, img_hw=(40, 48), num_points=120), True)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        losses = model.loss(data['inputs'], data['data_samples'])
    total = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert len(grads) > 50
    assert all(g.isfinite().all() for g in grads)
    # the fused attention block took part: its parameters received gradients
    attn = [p for n, p in model.named_parameters() if 'fusion_blocks' in n and 'in_proj' in n]
    assert attn and all(p.grad is not None and p.grad.abs().sum() > 0 for p in attn)
