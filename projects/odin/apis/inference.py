"""Run ODIN on a posed RGB-D recording (sensor-point mode), as the demo does."""
import logging
import os.path as osp
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from projects.odin.datasets.recordings import RGBDSequence, unproject_frame  # noqa: F401

logger = logging.getLogger(__name__)


@dataclass
class PreparedRecording:
    """A recording turned into one ODIN sample.

    Attributes:
        inputs: ``img`` (V,3,H,W) uint8, ``depths`` (V,H,W) float32 metres, ``poses`` (V,4,4)
            camera-to-world, ``intrinsics`` (V,4,4), ``points`` (N,6) xyz + rgb/255 of the fused
            cloud (see docs/data_contract.md).
        metainfo: data-sample metainfo (``scene_id``, ``img_path``, ``num_views``...).
        images: (V,H,W,3) uint8 resized RGB frames (for overlays).
        pixel_to_point: (V,H,W) int64 index of each pixel's fused point, -1 for invalid depth.
    """

    inputs: dict
    metainfo: dict
    images: np.ndarray
    pixel_to_point: np.ndarray


#: test-pipeline steps that read a dataset's files and labels: a recording replaces them by
#: ``LoadRecordingFrames`` (and its points by the fused ``ODINSensorPoints``)
DATASET_STEPS = ('LoadODINFrames', 'LoadPointsFromFile', 'LoadAnnotations3D',
                 'LoadODINSuperpoints', 'ODINPointSegClassMapping', 'ODINSensorPoints')


def recording_pipeline(cfg=None, image_size: Optional[Tuple[int, int]] = (240, 320),
                       point_voxel_size: float = 0.02, max_depth: Optional[float] = None,
                       progress: bool = False) -> List[dict]:
    """The test pipeline of a config, turned into the pipeline of a posed RGB-D recording.

    As ``mmdet3d.apis.inference_detector`` does for point clouds: the config's
    ``test_dataloader.dataset.pipeline`` is kept, except that the steps reading the dataset's
    files and labels (:data:`DATASET_STEPS`) become ``LoadRecordingFrames``, the points are the
    recording's fused sensor points (``ODINSensorPoints(voxel_size=point_voxel_size)``, placed
    before the colour normalisation / packing) and ``ODINResize`` gets the fixed ``image_size``.
    Without a config (or a test pipeline in it) the pipeline is
    ``LoadRecordingFrames -> ODINResize -> ODINSensorPoints -> NormalizePointsColor ->
    PackODINInputs``. :func:`prepare_recording` runs it with the resize folded into the
    loading step (:func:`fold_resize_into_loading`).

    Args:
        cfg: a model config (``mmengine.Config``) or None.
        image_size: (H, W) of the model input, or None for the config's test resize (no resize
            without one).
        point_voxel_size: voxel size of the fused cloud in metres. Defaults to 0.02.
        max_depth: depth beyond this (metres) is invalid. Defaults to None.
        progress: progress bar while reading frames. Defaults to False.

    Returns:
        list[dict]: transform configs.
    """
    from projects.odin.datasets.formatting import ODIN_META_KEYS
    steps: List[dict] = []
    try:
        steps = [dict(t) for t in cfg.test_dataloader.dataset.pipeline]
    except (AttributeError, KeyError, TypeError):
        pass
    if not steps:
        steps = [dict(type='NormalizePointsColor', color_mean=None),
                 dict(type='PackODINInputs')]
    out = [dict(type='LoadRecordingFrames', max_depth=max_depth, progress=progress)]
    if image_size is not None and not any(t['type'] == 'ODINResize' for t in steps):
        out.append(dict(type='ODINResize', size=tuple(image_size)))
    fuse = dict(type='ODINSensorPoints', stride=1, voxel_size=point_voxel_size)
    for t in steps:
        if t['type'] in DATASET_STEPS:
            continue
        if t['type'] == 'ODINResize' and image_size is not None:
            t = dict(type='ODINResize', size=tuple(image_size))
        if t['type'] in ('NormalizePointsColor', 'PackODINInputs') and fuse is not None:
            out.append(fuse)
            fuse = None
        if t['type'] == 'PackODINInputs':
            t = dict(t, keys=('img', 'depths', 'cam2world', 'intrinsics', 'points'),
                     meta_keys=tuple(t.get('meta_keys', ODIN_META_KEYS)) + ('pixel_to_point',))
        out.append(t)
    return out


def fold_resize_into_loading(steps: List[dict]) -> List[dict]:
    """Move an ``ODINResize`` that directly follows ``LoadRecordingFrames`` into it.

    ``LoadRecordingFrames(resize=...)`` resizes every frame as it is read, with the same result
    as the separate step, so a long recording is never held at its full resolution.

    Args:
        steps: transform configs (:func:`recording_pipeline`); not modified.

    Returns:
        list[dict]: the same pipeline with the resize folded in (unchanged if there is none).
    """
    steps = [dict(t) for t in steps]
    if len(steps) > 1 and steps[0]['type'] == 'LoadRecordingFrames' and \
            steps[1]['type'] == 'ODINResize':
        steps[0]['resize'] = {k: v for k, v in steps[1].items() if k != 'type'}
        del steps[1]
    return steps


def prepare_recording(seq: RGBDSequence,
                      image_size: Optional[Tuple[int, int]] = (240, 320),
                      point_voxel_size: float = 0.02,
                      max_depth: Optional[float] = None,
                      progress: bool = False,
                      cfg=None) -> PreparedRecording:
    """Feed a recording through the (test) pipeline of :func:`recording_pipeline`.

    Every frame is resized to ``image_size`` (``ODINResize``: colour area/bilinear, depth
    nearest, intrinsics scaled), its valid depth is unprojected
    (:func:`projects.odin.structures.geometry.unproject_depth`), and the fused cloud is voxelised at
    ``point_voxel_size`` (first point of each voxel kept): these are the points ODIN labels.

    Args:
        seq: a validated recording (:func:`load_rgbd_folder`).
        image_size: (H, W) of the model input, or None to keep the depth resolution (or use the
            config's test resize).
        point_voxel_size: voxel size of the output cloud in metres. Defaults to 0.02.
        max_depth: depth beyond this (metres) is treated as invalid. Defaults to None.
        progress: show a progress bar while reading frames. Defaults to False.
        cfg: the model's config, whose test pipeline is used. Defaults to None.

    Returns:
        The prepared sample.
    """
    from mmcv.transforms import Compose
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet3d')
    import projects.odin.datasets  # noqa: F401  (registers the transforms)
    pipeline = Compose(fold_resize_into_loading(
        recording_pipeline(cfg, image_size, point_voxel_size, max_depth, progress)))
    packed = pipeline(dict(recording=seq))
    sample = packed['data_samples']
    metainfo = dict(sample.metainfo)
    pixel_to_point = metainfo.pop('pixel_to_point')
    metainfo.setdefault('pad_shape', metainfo['img_shape'])
    metainfo.update(axis_align_matrix=np.eye(4), box_type_3d='depth')
    inputs = dict(packed['inputs'])
    inputs['points'] = inputs['points'].float()
    images = inputs['img'].permute(0, 2, 3, 1).numpy()
    return PreparedRecording(inputs=inputs, metainfo=metainfo, images=images,
                             pixel_to_point=pixel_to_point)


def init_odin_model(config, checkpoint: Optional[str] = None, device: str = 'cpu',
                    cfg_options: Optional[dict] = None, sensor_points: bool = False,
                    allow_partial: bool = False) -> nn.Module:
    """Build an ODIN model from a config and load a checkpoint (mmdet3d's ``init_model``).

    Args:
        config: config file path or a loaded ``mmengine.Config`` (not modified).
        checkpoint: checkpoint path (our format). Defaults to None (random weights).
        device: torch device. Defaults to ``'cpu'``.
        cfg_options: config overrides. Defaults to None.
        sensor_points: predict on the fused sensor points given as ``inputs['points']`` (the demo;
            ``prediction_points=dict(type='SensorPointsBuilder')``) whatever mode the config
            trains in. The weights are the same in both modes. Defaults to False.
        allow_partial: load a checkpoint that does not fit the config's model (the tensors that
            fit; a warning lists the rest) instead of raising. Defaults to False.

    Returns:
        The model in eval mode, with the config as ``model.cfg``.

    Raises:
        FileNotFoundError: no such config or checkpoint.
        projects.odin.utils.CheckpointReadError: the checkpoint file cannot be read.
        projects.odin.utils.CheckpointMismatchError: the checkpoint does not fit the model (see
            :func:`projects.odin.utils.check_checkpoint`) and ``allow_partial`` is False.
    """
    from mmdet3d.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from projects.odin.utils.checkpoint import load_checked_checkpoint
    if isinstance(config, str) and not osp.isfile(config):
        raise FileNotFoundError(f'config not found: {config}')
    if checkpoint is not None and not osp.isfile(checkpoint):
        raise FileNotFoundError(f'checkpoint not found: {checkpoint}')
    # mmdet3d.apis.init_model builds ODIN configs too (tests/test_apis/test_init_model.py); this
    # variant also switches to sensor points, needs no test dataloader in the config and falls
    # back to the config's class names.
    config_path = config if isinstance(config, str) else getattr(config, 'filename', None)
    cfg = Config.fromfile(config) if isinstance(config, str) else config.copy()
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if sensor_points:
        cfg.model.prediction_points = dict(type='SensorPointsBuilder')
    cfg.model.train_cfg = None
    init_default_scope(cfg.get('default_scope', 'mmdet3d'))
    model = MODELS.build(cfg.model)
    model.dataset_meta = {}
    if checkpoint is not None:
        ckpt = load_checked_checkpoint(model, checkpoint, config=config_path,
                                       allow_partial=allow_partial)
        meta = ckpt.get('meta', {}) if isinstance(ckpt, dict) else {}
        model.dataset_meta = dict(meta.get('dataset_meta') or {})
    if not model.dataset_meta.get('classes') and cfg.get('class_names'):
        model.dataset_meta['classes'] = list(cfg.class_names)
    model.cfg = cfg
    model.to(device)
    model.eval()
    return model


def set_vocabulary(model: nn.Module, classes: Optional[Sequence[str]] = None) -> List[str]:
    """The class names a model's predictions refer to; sets an open vocabulary.

    With the open-vocabulary class head (joint 2D-3D model), ``classes`` becomes the vocabulary
    the queries are classified against (any names; default: the checkpoint's dataset classes,
    else the config's ``class_names``), and ``test_cfg.skip_classes`` (ScanNet-20 wall/floor
    indices) is cleared for a user vocabulary. A closed-set model predicts its trained classes:
    ``classes`` may only rename them (same count).

    Args:
        model: an ODIN detector (as returned by :func:`init_odin_model`).
        classes: class names, or None for the model's own.

    Returns:
        list[str]: the names of label ids 0..K-1 (also stored in ``model.dataset_meta``).

    Raises:
        ValueError: an open-vocabulary model without any vocabulary, or a closed-set model
            given a different number of names.
    """
    head = model.decode_head
    meta = dict(getattr(model, 'dataset_meta', None) or {})
    own = list(meta.get('classes') or [])
    if getattr(head, 'open_vocab', False):
        names = list(classes) if classes else (own or list(head.class_names or []))
        if not names:
            raise ValueError('open-vocabulary model without a vocabulary: give the class names '
                             '(demo: --classes NAME [NAME ...])')
        head.class_names = tuple(str(n) for n in names)
        if classes:
            model.test_cfg['skip_classes'] = ()
    else:
        if classes and len(classes) != head.num_classes:
            raise ValueError(f'this closed-set model predicts {head.num_classes} classes, '
                             f'{len(classes)} names were given (only an open-vocabulary model, '
                             'e.g. configs/odin/scannet_coco_joint_r50.py, takes a new '
                             'vocabulary)')
        names = list(classes) if classes else own
    meta['classes'] = [str(n) for n in names]
    model.dataset_meta = meta
    return meta['classes']


def demo_image_size(cfg, seq: RGBDSequence,
                    default: Tuple[int, int] = (240, 320)) -> Tuple[int, int]:
    """Model input size for a recording: the config's test-time resize applied to its frames.

    The ``ODINResize`` (``ResizeShortestEdge`` semantics) of the config's test pipeline is applied
    to the recording's depth size (``seq.depth_hw``); without one, ``default`` is used.

    Args:
        cfg: the model's config (``model.cfg``).
        seq: the recording.
        default: fallback (H, W). Defaults to (240, 320).

    Returns:
        (H, W).
    """
    from projects.odin.datasets.transforms import ODINResize
    pipeline = []
    try:
        pipeline = cfg.test_dataloader.dataset.pipeline
    except (AttributeError, KeyError):
        pass
    resize = next((t for t in pipeline if t.get('type') == 'ODINResize'), None)
    if resize is None or len(seq) == 0 or seq.depth_hw is None:
        return default
    return ODINResize(**{k: v for k, v in resize.items() if k != 'type'}).output_size(
        *seq.depth_hw)


@torch.no_grad()
def inference_recording(model: nn.Module, prepared: PreparedRecording):
    """Run the model on a prepared recording.

    Args:
        model: an ODIN detector in eval mode.
        prepared: output of :func:`prepare_recording`.

    Returns:
        The ``Det3DDataSample`` with ``pred_pts_seg`` (``pts_instance_mask`` (K, N) bool,
        ``instance_labels`` (K,), ``instance_scores`` (K,), ``pts_semantic_mask`` (N,)) on
        ``prepared.inputs['points']``.
    """
    from mmdet3d.structures import Det3DDataSample
    sample = Det3DDataSample(metainfo=prepared.metainfo)
    # a batch of one sample in the collated layout: every input key holds a list over samples
    inputs = {key: [value] for key, value in prepared.inputs.items()}
    return model.test_step(dict(inputs=inputs, data_samples=[sample]))[0]


def select_instances(pred, score_thr: float = 0.3,
                     min_points: int = 50) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep confident predictions for display (ODIN itself does no thresholding).

    Args:
        pred: ``pred_pts_seg`` of :func:`inference_recording`.
        score_thr: minimum score. Defaults to 0.3.
        min_points: minimum mask size. Defaults to 50.

    Returns:
        tuple: masks (K', N) bool, labels (K',), scores (K',) as numpy arrays.
    """
    masks = _np(pred.pts_instance_mask).astype(bool)
    labels, scores = _np(pred.instance_labels), _np(pred.instance_scores)
    keep = (scores >= score_thr) & (masks.sum(1) >= min_points)
    return masks[keep], labels[keep], scores[keep]


def _np(x: Union[torch.Tensor, np.ndarray, Sequence]) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


__all__: List[str] = ['PreparedRecording', 'recording_pipeline', 'fold_resize_into_loading',
                      'prepare_recording',
                      'init_odin_model', 'set_vocabulary', 'demo_image_size',
                      'inference_recording', 'select_instances', 'unproject_frame']
