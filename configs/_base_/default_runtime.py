# Runtime settings shared by every ODIN config (mmdet3d's default runtime plus ODIN's hooks).
default_scope = 'mmdet3d'

custom_imports = dict(imports=['projects.odin'], allow_failed_imports=False)

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    # mmengine's LoggerHook; the test metrics JSON written by one process (dist_test.sh)
    logger=dict(type='ODINLoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=4000, max_keep_ckpts=3),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    # ODIN's masks over points: PLYs + renders + view overlays (tools/test.py --show-dir DIR)
    visualization=dict(type='ODINVisualizationHook'),
    # lets load_from/resume read mmengine's checkpoints under torch >= 2.6, during loading only
    # (scoped trusted local loader, projects/odin/utils/checkpoint.py)
    trusted_checkpoint=dict(type='TrustedCheckpointHook'))

# Restores python/numpy/torch RNG states on resume (mmengine only restores the seed).
custom_hooks = [dict(type='RNGStateHook')]

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))

log_processor = dict(type='LogProcessor', window_size=50, by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=42)
