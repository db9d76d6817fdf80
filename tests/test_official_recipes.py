"""Every dataset config has the official recipe's key hyperparameters.

The official training scripts' resolved detectron2 configs live in
``../shared/reference/configs/cfg_<dataset>__<script>.yaml`` (``reference/architectures.tsv``
lists the scripts). Each of our dataset configs names its script in its first comment line
(``the official recipe of scripts/<dataset>/<script>.sh``); :data:`RECIPE` maps one official key
(or a few) to the value it implies for our config, with the reason for each mapping. The test
compares every row for every config and reports all differences at once; it is skipped, with the
reason, when ``../shared`` is not beside the checkout.
"""
import math
import os.path as osp
import re
from functools import cache
from typing import Any, Callable, List, NamedTuple

import pytest
from mmengine.config import Config

from odin_testing import REPO_ROOT as REPO
from odin_testing import reference_dir

REF = reference_dir()  # ../shared/reference beside the checkout, or $ODIN_REFERENCE_DIR
DATASET_CONFIGS = ('scannet_r50', 'scannet_swin', 'scannet200_r50', 'scannet200_swin',
                   's3dis_r50', 's3dis_swin', 'matterport3d_r50', 'matterport3d_swin',
                   'ai2thor_r50', 'ai2thor_swin')
#: every official script trains on 2 GPUs (docs/specification.md §5); IMS_PER_BATCH is the total
OFFICIAL_GPUS = 2

needs_reference = pytest.mark.skipif(
    not osp.isdir(osp.join(REF, 'configs')),
    reason=f'{REF}/configs (the resolved official configs) not found: ../shared is not beside '
    'the checkout')


# --------------------------------------------------------------------------- accessors (ours)

def _transform(pipeline: list, type_: str) -> dict:
    found = [t for t in pipeline if t['type'] == type_]
    assert len(found) == 1, f'{type_}: {len(found)} in the pipeline'
    return found[0]


def _train(cfg: Config) -> list:
    return cfg.train_dataloader.dataset.pipeline


def _test(cfg: Config) -> list:
    return cfg.test_dataloader.dataset.pipeline


def _custom(cfg: Config, key: str) -> dict:
    return cfg.optim_wrapper.paramwise_cfg.custom_keys[key]


def _frames(pipeline: list) -> dict:
    return _transform(pipeline, 'LoadODINFrames')


def _superpoints(cfg: Config) -> tuple:
    """USE_SEGMENTS as ours: the model flag and the loader flag of both pipelines (if any)."""
    points = cfg.model.prediction_points
    out = [points.type == 'MeshPointsBuilder' and bool(points.get('superpoints', True))]
    for pipe in (_train(cfg), _test(cfg)):
        sp = [t for t in pipe if t['type'] == 'LoadODINSuperpoints']
        out.append(bool(sp[0].get('use_superpoints', True)) if sp else False)
    return tuple(out)


def _constant_lr(cfg: Config) -> bool:
    return all(s['type'] == 'ConstantLR' and s.get('factor', 1.0) == 1.0
               for s in cfg.param_scheduler)


def _official_constant_lr(o: dict) -> bool:
    s = o['SOLVER']
    # WarmupMultiStepLR whose steps all lie beyond MAX_ITER and whose warm-up starts at factor
    # 1.0 never changes the learning rate
    return (s['LR_SCHEDULER_NAME'] == 'WarmupMultiStepLR' and s['WARMUP_FACTOR'] == 1.0
            and all(step >= s['MAX_ITER'] for step in s['STEPS']))


def _clip(o: dict) -> Any:
    c = o['SOLVER']['CLIP_GRADIENTS']
    if not c['ENABLED']:
        return None
    # detectron2's 'full_model' clipping = one norm over all parameters = torch's
    # clip_grad_norm_, which mmengine's clip_grad applies
    assert c['CLIP_TYPE'] == 'full_model', c['CLIP_TYPE']
    return (c['CLIP_VALUE'], c['NORM_TYPE'])


_BACKBONES = {'build_resnet_backbone': 'ODINResNet', 'D2SwinTransformer': 'ODINSwinTransformer'}


def _swin(o: dict) -> Any:
    if o['MODEL']['BACKBONE']['NAME'] != 'D2SwinTransformer':
        return None
    s = o['MODEL']['SWIN']
    return (s['EMBED_DIM'], list(s['DEPTHS']), list(s['NUM_HEADS']), s['WINDOW_SIZE'],
            s['PRETRAIN_IMG_SIZE'], s['DROP_PATH_RATE'])


def _swin_ours(cfg: Config) -> Any:
    b = cfg.model.backbone
    if b.type != 'ODINSwinTransformer':
        return None
    return (b.embed_dims, list(b.depths), list(b.num_heads), b.window_size, b.pretrain_img_size,
            b.drop_path_rate)


class Row(NamedTuple):
    """One recipe entry: the official value, ours, and why they correspond."""
    name: str
    official: Callable[[dict], Any]
    ours: Callable[[Config], Any]
    mapping: str


#: The table: official yaml (dict) -> value; our Config -> value; the documented mapping.
RECIPE: List[Row] = [
    # ---- optimisation
    Row('optimizer', lambda o: o['SOLVER']['OPTIMIZER'].lower(),
        lambda c: c.optim_wrapper.optimizer.type.lower(), 'SOLVER.OPTIMIZER ADAMW = AdamW'),
    Row('lr', lambda o: o['SOLVER']['BASE_LR'], lambda c: c.optim_wrapper.optimizer.lr,
        'SOLVER.BASE_LR = optimizer.lr (the first phase; the 1e-5 restart is a command line)'),
    Row('weight_decay', lambda o: o['SOLVER']['WEIGHT_DECAY'],
        lambda c: c.optim_wrapper.optimizer.weight_decay,
        'SOLVER.WEIGHT_DECAY = optimizer.weight_decay'),
    Row('weight_decay_norm', lambda o: o['SOLVER']['WEIGHT_DECAY_NORM'],
        lambda c: c.optim_wrapper.paramwise_cfg.norm_decay_mult
        * c.optim_wrapper.optimizer.weight_decay,
        'SOLVER.WEIGHT_DECAY_NORM = norm_decay_mult x weight_decay'),
    Row('weight_decay_embed', lambda o: [o['SOLVER']['WEIGHT_DECAY_EMBED']] * 3,
        lambda c: [_custom(c, k)['decay_mult'] * c.optim_wrapper.optimizer.weight_decay
                   for k in ('query_embed', 'query_feat', 'level_embed')],
        'SOLVER.WEIGHT_DECAY_EMBED = decay_mult x weight_decay of the query/level embeddings'),
    Row('backbone_lr_mult', lambda o: (o['SOLVER']['BACKBONE_MULTIPLIER'], 1.0),
        lambda c: (_custom(c, 'backbone')['lr_mult'],
                   _custom(c, 'backbone.fusion_blocks')['lr_mult']),
        'SOLVER.BACKBONE_MULTIPLIER = lr_mult of "backbone"; the 3D layers inserted in the '
        'backbone are not backbone parameters officially, so they keep lr_mult 1'),
    Row('clip_grad', _clip,
        lambda c: (c.optim_wrapper.clip_grad.max_norm, c.optim_wrapper.clip_grad.norm_type)
        if c.optim_wrapper.get('clip_grad') else None,
        'SOLVER.CLIP_GRADIENTS (full_model) CLIP_VALUE, NORM_TYPE = clip_grad max_norm, '
        'norm_type'),
    Row('amp', lambda o: o['SOLVER']['AMP']['ENABLED'],
        lambda c: c.optim_wrapper.type == 'AmpOptimWrapper',
        'SOLVER.AMP.ENABLED = an AmpOptimWrapper'),
    Row('constant_lr', _official_constant_lr, _constant_lr,
        'WarmupMultiStepLR with STEPS beyond MAX_ITER and WARMUP_FACTOR 1 = ConstantLR(1.0)'),
    Row('batch', lambda o: o['SOLVER']['IMS_PER_BATCH'],
        lambda c: c.train_dataloader.batch_size * OFFICIAL_GPUS,
        'SOLVER.IMS_PER_BATCH (scenes, total over the 2 official GPUs) = batch_size per GPU '
        'x 2'),
    # ---- frames and depth
    Row('train_frames', lambda o: o['INPUT']['SAMPLING_FRAME_NUM'],
        lambda c: _frames(_train(c))['num_views'],
        'INPUT.SAMPLING_FRAME_NUM = train LoadODINFrames.num_views'),
    Row('chunk_stride', lambda o: o['INPUT']['CHUNK_AUG_MAX'] - 1
        if o['INPUT']['SAMPLE_CHUNK_AUG'] else 1,
        lambda c: (_frames(_train(c))['sampling'] == 'chunk') * _frames(_train(c))['max_stride'],
        'stride = randint(1, CHUNK_AUG_MAX) <= CHUNK_AUG_MAX - 1 (SAMPLE_CHUNK_AUG) = '
        'max_stride of chunk sampling'),
    Row('test_frames', lambda o: max(o['MAX_FRAME_NUM'], -1),
        lambda c: max(_frames(_test(c))['num_views'], -1)
        if _frames(_test(c))['sampling'] == 'uniform' else 'not uniform',
        'MAX_FRAME_NUM (-1 = all) = uniform test LoadODINFrames.num_views (<= 0 = all)'),
    Row('inpainted_depth', lambda o: (o['INPUT']['INPAINT_DEPTH'],) * 2,
        lambda c: tuple(bool(_frames(p).get('use_inpainted_depth', False))
                        for p in (_train(c), _test(c))),
        'INPUT.INPAINT_DEPTH (depth -> depth_inpainted, every dataset) = use_inpainted_depth '
        'of the train and test LoadODINFrames'),
    Row('ignore_depth_max', lambda o: (None if o['IGNORE_DEPTH_MAX'] <= 0
                                       else o['IGNORE_DEPTH_MAX'],) * 2,
        lambda c: tuple(_frames(p).get('ignore_depth_max') for p in (_train(c), _test(c))),
        'IGNORE_DEPTH_MAX (-1 = off) = ignore_depth_max of both LoadODINFrames (None = off)'),
    # ---- augmentation
    Row('crop', lambda o: (o['INPUT']['IMAGE_SIZE'],) * 2,
        lambda c: tuple(_transform(_train(c), 'ODINRandomResizeCrop')['crop_size']),
        'INPUT.IMAGE_SIZE = the square ODINRandomResizeCrop.crop_size'),
    Row('crop_scale', lambda o: (o['INPUT']['MIN_SCALE'], o['INPUT']['MAX_SCALE']),
        lambda c: tuple(_transform(_train(c), 'ODINRandomResizeCrop')['scale_range']),
        'INPUT.MIN_SCALE, MAX_SCALE = ODINRandomResizeCrop.scale_range'),
    Row('test_resize', lambda o: (o['INPUT']['MIN_SIZE_TEST'], o['INPUT']['MAX_SIZE_TEST']),
        lambda c: (_transform(_test(c), 'ODINResize')['short_edge'],
                   _transform(_test(c), 'ODINResize')['max_size']),
        'ResizeShortestEdge(MIN_SIZE_TEST, MAX_SIZE_TEST) = ODINResize(short_edge, max_size)'),
    Row('color_aug', lambda o: o['INPUT']['COLOR_AUG'],
        lambda c: any(t['type'] == 'ODINColorJitter' for t in _train(c)),
        'INPUT.COLOR_AUG = an ODINColorJitter in the train pipeline'),
    Row('augment_3d', lambda o: o['INPUT']['AUGMENT_3D'],
        lambda c: any(t['type'] == 'ODINGlobalAug3D' for t in _train(c)),
        'INPUT.AUGMENT_3D = an ODINGlobalAug3D in the train pipeline'),
    Row('camera_drop', lambda o: o['INPUT']['CAMERA_DROP'],
        lambda c: c.train_dataloader.collate_fn.get('camera_drop_prob', 0) > 0,
        'INPUT.CAMERA_DROP = odin_collate camera_drop_prob > 0'),
    Row('pixel_mean_std', lambda o: (list(o['MODEL']['PIXEL_MEAN']), list(o['MODEL']['PIXEL_STD'])),
        lambda c: (list(c.model.data_preprocessor.mean), list(c.model.data_preprocessor.std)),
        'MODEL.PIXEL_MEAN / PIXEL_STD = data_preprocessor mean / std (RGB)'),
    # ---- 3D
    Row('voxel_sizes', lambda o: list(o['INPUT']['VOXEL_SIZE']),
        lambda c: list(c.model.voxel_sizes), 'INPUT.VOXEL_SIZE (res2..res5) = model.voxel_sizes'),
    Row('knn', lambda o: o['MODEL']['KNN'], lambda c: c.model.num_neighbors,
        'MODEL.KNN = model.num_neighbors, the k of every 3D attention k-NN graph'),
    Row('interp_neighbors', lambda o: o['INTERP_NEIGHBORS'], lambda c: c.model.num_neighbors,
        'INTERP_NEIGHBORS = model.num_neighbors, the k of every IDW interpolation (decoder '
        'masks, pixel decoder, sensor-point logits)'),
    Row('visibility_thresh', lambda o: o['KNN_THRESH'] if o['USE_GHOST_POINTS'] else None,
        lambda c: c.model.prediction_points.get('visibility_thresh'),
        'KNN_THRESH = model.prediction_points.visibility_thresh (mesh points; sensor points '
        'have none)'),
    Row('ghost_points', lambda o: o['USE_GHOST_POINTS'],
        lambda c: c.model.prediction_points.type == 'MeshPointsBuilder',
        'USE_GHOST_POINTS = model.prediction_points is MeshPointsBuilder (else '
        'SensorPointsBuilder)'),
    Row('superpoints', lambda o: (o['USE_SEGMENTS'], o['USE_SEGMENTS'] and o['USE_GHOST_POINTS'],
                                  o['USE_SEGMENTS'] and o['USE_GHOST_POINTS']),
        _superpoints,
        'USE_SEGMENTS = model.use_superpoints and the LoadODINSuperpoints of both pipelines '
        '(no loader without mesh points)'),
    Row('fusion_layers', lambda o: list(o['MODEL']['CROSS_VIEW_NUM_LAYERS'][1:]),
        lambda c: list(c.model.backbone.fusion_layers),
        'MODEL.CROSS_VIEW_NUM_LAYERS[1:] (res3..res5; none after res2) = backbone.fusion_layers'),
    # ---- backbone
    Row('backbone', lambda o: _BACKBONES[o['MODEL']['BACKBONE']['NAME']],
        lambda c: c.model.backbone.type, 'MODEL.BACKBONE.NAME = backbone.type'),
    Row('swin', _swin, _swin_ours,
        'MODEL.SWIN EMBED_DIM, DEPTHS, NUM_HEADS, WINDOW_SIZE, PRETRAIN_IMG_SIZE, DROP_PATH_RATE '
        '= the same ODINSwinTransformer arguments (Swin configs only)'),
    # ---- head, losses
    Row('num_classes', lambda o: (o['MODEL']['SEM_SEG_HEAD']['NUM_CLASSES'],) * 2,
        lambda c: (c.model.decode_head.num_things_classes,
                   len(c.model.decode_head.loss_cls.class_weight) - 1),
        'SEM_SEG_HEAD.NUM_CLASSES = num_things_classes = len(class_weight) - 1'),
    Row('queries', lambda o: o['MODEL']['MASK_FORMER']['NUM_OBJECT_QUERIES'],
        lambda c: c.model.decode_head.num_queries, 'NUM_OBJECT_QUERIES = decode_head.num_queries'),
    Row('decoder_layers', lambda o: o['MODEL']['MASK_FORMER']['DEC_LAYERS'] - 1,
        lambda c: c.model.decode_head.transformer_decoder.num_layers,
        'DEC_LAYERS counts the prediction from the learnable queries too: num_layers = '
        'DEC_LAYERS - 1'),
    Row('encoder_layers', lambda o: o['MODEL']['SEM_SEG_HEAD']['TRANSFORMER_ENC_LAYERS'],
        lambda c: c.model.decode_head.pixel_decoder.encoder.num_layers,
        'SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS = pixel_decoder.encoder.num_layers'),
    Row('decoder_ffn', lambda o: o['MODEL']['MASK_FORMER']['DIM_FEEDFORWARD'],
        lambda c: c.model.decode_head.transformer_decoder.layer_cfg.ffn_cfg.feedforward_channels,
        'MASK_FORMER.DIM_FEEDFORWARD = decoder ffn feedforward_channels'),
    Row('sample_sizes', lambda o: list(o['SAMPLE_SIZES']),
        lambda c: list(c.model.decode_head.sample_sizes),
        'SAMPLE_SIZES = decode_head.sample_sizes (decoder keys per level)'),
    Row('loss_weights', lambda o: tuple(o['MODEL']['MASK_FORMER'][k] for k in (
        'CLASS_WEIGHT', 'MASK_WEIGHT', 'DICE_WEIGHT', 'NO_OBJECT_WEIGHT')),
        lambda c: (c.model.decode_head.loss_cls.loss_weight,
                   c.model.decode_head.loss_mask.loss_weight,
                   c.model.decode_head.loss_dice.loss_weight,
                   c.model.decode_head.loss_cls.class_weight[-1]),
        'CLASS/MASK/DICE_WEIGHT = loss_cls/loss_mask/loss_dice loss_weight; NO_OBJECT_WEIGHT = '
        'the last class_weight'),
    Row('matcher_costs', lambda o: tuple(o['MODEL']['MASK_FORMER'][k] for k in (
        'CLASS_WEIGHT', 'MASK_WEIGHT', 'DICE_WEIGHT')),
        lambda c: tuple(m['weight'] for m in c.model.train_cfg.assigner.match_costs),
        'the Hungarian matcher costs are the loss weights (class, mask, dice)'),
    Row('train_points', lambda o: (o['MODEL']['MASK_FORMER']['TRAIN_NUM_POINTS'],
                                   o['MODEL']['MASK_FORMER']['TRAIN_NUM_POINTS_2D']),
        lambda c: (c.model.decode_head.max_train_points, c.model.train_cfg.num_points),
        'TRAIN_NUM_POINTS (3D loss/matching points) = decode_head.max_train_points; '
        'TRAIN_NUM_POINTS_2D = train_cfg.num_points'),
    Row('skip_classes', lambda o: tuple(k - 1 for k in o['SKIP_CLASSES'] or ())
        if o['MODEL']['SEM_SEG_HEAD']['NUM_CLASSES'] == 20 else (),
        lambda c: tuple(c.model.test_cfg.skip_classes),
        'SKIP_CLASSES (1-based) act only with 20 classes officially: 0-based test_cfg.'
        'skip_classes there, none elsewhere'),
]


# ------------------------------------------------------------------------------------ loading

def official_script(config_name: str) -> str:
    """``<dataset>/<script>`` from the config's header (``scripts/<dataset>/<script>.sh``)."""
    with open(osp.join(REPO, 'configs', 'odin', f'{config_name}.py')) as f:
        head = f.read(600)
    m = re.search(r'official recipe of scripts/(\w+)/(\w+)\.sh', head)
    assert m, f'configs/odin/{config_name}.py does not name its official script'
    return f'{m.group(1)}/{m.group(2)}'


@cache
def load_official(script: str) -> dict:
    import yaml
    dataset, name = script.split('/')
    with open(osp.join(REF, 'configs', f'cfg_{dataset}__{name}.yaml')) as f:
        return yaml.safe_load(f)


@cache
def load_ours(config_name: str) -> Config:
    return Config.fromfile(osp.join(REPO, 'configs', 'odin', f'{config_name}.py'))


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return (isinstance(a, (int, float)) and isinstance(b, (int, float))
                and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12))
    return a == b


def compare(official: dict, ours: Config) -> List[str]:
    """One line per recipe row whose values differ (or that cannot be evaluated)."""
    bad = []
    for row in RECIPE:
        try:
            want, got = row.official(official), row.ours(ours)
        except (KeyError, AttributeError, AssertionError, TypeError) as e:
            bad.append(f'{row.name}: cannot evaluate ({type(e).__name__}: {e})')
            continue
        if not _same(want, got):
            bad.append(f'{row.name}: official {want!r}, ours {got!r}  [{row.mapping}]')
    return bad


# -------------------------------------------------------------------------------------- tests

@needs_reference
def test_every_dataset_config_names_a_reference_script():
    with open(osp.join(REF, 'architectures.tsv')) as f:
        scripts = {ln.split('\t')[0] for ln in f.read().splitlines()[1:] if ln.strip()}
    for name in DATASET_CONFIGS:
        script = official_script(name)
        assert f'scripts/{script}.sh' in scripts, (name, script)
        dataset, sname = script.split('/')
        assert osp.isfile(osp.join(REF, 'configs', f'cfg_{dataset}__{sname}.yaml')), script


@needs_reference
@pytest.mark.parametrize('name', DATASET_CONFIGS)
def test_recipe_equals_the_official_config(name):
    bad = compare(load_official(official_script(name)), load_ours(name))
    assert not bad, f'configs/odin/{name}.py vs {official_script(name)}:\n' + '\n'.join(bad)


@needs_reference
def test_recipe_comparison_detects_a_difference():
    """The table compares real values: a changed hyperparameter or raw depth is reported."""
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'odin', 'matterport3d_swin.py'))
    official = load_official(official_script('matterport3d_swin'))
    assert compare(official, cfg) == []
    cfg.optim_wrapper.optimizer.lr = 2e-4
    cfg.train_dataloader.dataset.pipeline[0]['use_inpainted_depth'] = False
    cfg.model.decode_head.loss_dice.loss_weight = 5.0
    bad = compare(official, cfg)
    assert [b.split(':')[0] for b in bad] == ['lr', 'inpainted_depth', 'loss_weights'], bad
    assert 'official (True, True), ours (False, True)' in bad[1]
