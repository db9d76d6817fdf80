# The official ODIN recipe (docs/specification.md §5): AdamW 1e-4, weight decay 0.05 (0 for norms,
# embeddings and Swin position tables), backbone lr x0.1 except the inserted 3D layers,
# full-model gradient-norm clipping at 0.01, AMP, constant learning rate. The published numbers
# come from a manual restart at 1e-5 (set `optim_wrapper.optimizer.lr=1e-5 load_from=...`).
max_iters = 100000

optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999)),
    clip_grad=dict(max_norm=0.01, norm_type=2),
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        custom_keys={
            # 3D layers inside the backbone keep the full learning rate (matched first: longest
            # key wins in mmengine's DefaultOptimWrapperConstructor).
            'backbone.fusion_blocks': dict(lr_mult=1.0, decay_mult=1.0),
            'backbone': dict(lr_mult=0.1, decay_mult=1.0),
            'query_embed': dict(lr_mult=1.0, decay_mult=0.0),
            'query_feat': dict(lr_mult=1.0, decay_mult=0.0),
            'level_embed': dict(lr_mult=1.0, decay_mult=0.0),
            'absolute_pos_embed': dict(decay_mult=0.0),
            'relative_position_bias_table': dict(decay_mult=0.0),
        }))

param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=0, end=max_iters)]

train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=4000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

auto_scale_lr = dict(enable=False, base_batch_size=6)
