"""Test helpers: tiny ODIN inputs and the location of the reference goldens."""
import os
import os.path as osp
from typing import List, Optional, Sequence

import numpy as np
import torch

from projects.odin.utils.scripts import load_script as _load_script

#: the checkout this test support runs from (tests know the checkout; the library does not)
REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
#: the demo config of the checkout (``make demo``)
DEMO_CONFIG = osp.join(REPO_ROOT, 'configs', 'odin', 'synthetic_r18_demo.py')


def load_script(path: str):
    """A script of the checkout (e.g. ``'tools/test.py'``) loaded as a module."""
    return _load_script(path, REPO_ROOT)


def reference_dir() -> str:
    """Folder of the official goldens: ``$ODIN_REFERENCE_DIR`` or ``<repo>/../shared/reference``."""
    return os.environ.get('ODIN_REFERENCE_DIR',
                          osp.normpath(osp.join(REPO_ROOT, '..', 'shared', 'reference')))


def make_tiny_coco(dirpath: str,
                   num_images: int = 4,
                   img_hw: Sequence[int] = (64, 80),
                   classes: Sequence[str] = ('chair', 'table', 'bed'),
                   objects_per_image: int = 2,
                   object_classes: Optional[Sequence[int]] = None,
                   split: str = 'train',
                   seed: int = 0) -> dict:
    """Write a tiny COCO-format instance-segmentation set (PNG images + instances json).

    Every image is a noisy grey background with ``objects_per_image`` non-overlapping
    axis-aligned rectangles (one per vertical strip), each filled with a fixed colour per class
    (so classes are learnable); the annotations are
    polygon masks (the rectangle's corners), boxes ``[x, y, w, h]``, areas, ``iscrowd`` 0, and
    categories with ids 1..K named ``classes``. Layout (as mmdet's ``CocoDataset`` reads it)::

        dirpath/{split}/000000.png ...
        dirpath/annotations/instances_{split}.json

    Args:
        dirpath: output folder (created).
        num_images: images.
        img_hw: image size (H, W).
        classes: category names (label order).
        objects_per_image: rectangles per image.
        object_classes: label indices the rectangles are drawn from (None: all classes); the
            json still lists every class (e.g. a shared label space with a 3D dataset).
        split: split name (image folder and json suffix).
        seed: RNG seed.

    Returns:
        dict: ``data_root`` (with a trailing '/'), ``ann_file`` (relative to it), ``img_prefix``
        (relative, trailing '/'), ``classes`` (tuple), ``ann_path`` (absolute json path).
    """
    import json

    import mmcv
    rng = np.random.RandomState(seed)
    h, w = img_hw
    colours = [(int(c[0]), int(c[1]), int(c[2]))
               for c in np.random.RandomState(1234).randint(0, 255, (len(classes), 3))]
    os.makedirs(osp.join(dirpath, split), exist_ok=True)
    os.makedirs(osp.join(dirpath, 'annotations'), exist_ok=True)
    pool = list(range(len(classes))) if object_classes is None else list(object_classes)
    images, annotations = [], []
    for i in range(num_images):
        img = np.clip(rng.normal(120, 20, (h, w, 3)), 0, 255).astype(np.uint8)
        name = f'{i:06d}.png'
        slot = w // objects_per_image  # one column per object: rectangles never overlap
        for k in range(objects_per_image):
            cls = int(rng.choice(pool))
            bw, bh = rng.randint(max(slot // 3, 2), slot - 1), rng.randint(h // 4, h // 2 + 1)
            x0, y0 = k * slot + rng.randint(0, slot - bw), rng.randint(0, h - bh)
            x1, y1 = x0 + bw, y0 + bh
            img[y0:y1, x0:x1] = colours[cls]
            annotations.append(dict(
                id=len(annotations) + 1, image_id=i + 1, category_id=cls + 1, iscrowd=0,
                bbox=[float(x0), float(y0), float(bw), float(bh)], area=float(bw * bh),
                segmentation=[[float(x0), float(y0), float(x1), float(y0), float(x1),
                               float(y1), float(x0), float(y1)]]))
        mmcv.imwrite(img[..., ::-1], osp.join(dirpath, split, name))  # RGB -> BGR on disk
        images.append(dict(id=i + 1, file_name=name, height=h, width=w))
    data = dict(images=images, annotations=annotations,
                categories=[dict(id=k + 1, name=c, supercategory='thing')
                            for k, c in enumerate(classes)])
    ann_path = osp.join(dirpath, 'annotations', f'instances_{split}.json')
    with open(ann_path, 'w') as f:
        json.dump(data, f)
    return dict(data_root=osp.join(dirpath, ''), ann_file=f'annotations/instances_{split}.json',
                img_prefix=f'{split}/', classes=tuple(classes), ann_path=ann_path)


def _look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Camera-to-world pose (OpenCV axes: x right, y down, z forward)."""
    z = target - eye
    z = z / np.linalg.norm(z)
    x = np.cross(z, np.array([0.0, 0.0, 1.0]))
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = x, y, z, eye
    return pose


def create_odin_inputs(num_views: int = 2,
                       img_hw: Sequence[int] = (32, 32),
                       num_points: int = 300,
                       num_classes: int = 4,
                       num_instances: int = 3,
                       num_superpoints: Optional[int] = 40,
                       mode: str = '3d',
                       batch_size: int = 1,
                       seed: int = 0) -> dict:
    """Build a tiny packed batch as the data pipeline produces it (docs/data_contract.md).

    3D mode: ``num_views`` posed RGB-D views of a synthetic box room (depth ray-cast onto a
    plane-and-boxes scene is approximated by a tilted plane per view), the mesh ``points``
    sampled from the unprojected depth, ``superpoints`` and per-point instance/semantic labels
    (instances = spatial clusters). 2D mode: single images with ``gt_instances``.

    Args:
        num_views: views per scene (3D).
        img_hw: image size (H, W).
        num_points: mesh points per scene (3D).
        num_classes: classes of the labels.
        num_instances: instances per sample.
        num_superpoints: superpoints per scene (None: no ``superpoints`` key).
        mode: '3d' or '2d'.
        batch_size: samples.
        seed: RNG seed.

    Returns:
        dict: ``{'inputs': {...}, 'data_samples': [...]}`` for the model's data preprocessor.
    """
    from mmdet.structures.mask import BitmapMasks
    from mmdet3d.structures import Det3DDataSample, PointData
    from mmengine.structures import InstanceData

    from projects.odin.layers.geometry import unproject_depth
    rng = np.random.RandomState(seed)
    h, w = img_hw
    samples: List = []
    inputs: dict = {'img': []}
    if mode == '2d':
        for _ in range(batch_size):
            img = torch.from_numpy(rng.randint(0, 255, (3, h, w)).astype(np.uint8))
            masks = np.zeros((num_instances, h, w), dtype=np.uint8)
            for i in range(num_instances):
                y0, x0 = rng.randint(0, h // 2), rng.randint(0, w // 2)
                masks[i, y0:y0 + h // 3, x0:x0 + w // 3] = 1
            s = Det3DDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w),
                                              pad_shape=(h, w), batch_input_shape=(h, w),
                                              scale_factor=(1.0, 1.0)))
            s.gt_instances = InstanceData(
                labels=torch.from_numpy(rng.randint(0, num_classes, num_instances)).long(),
                masks=BitmapMasks(masks, h, w),
                bboxes=torch.zeros(num_instances, 4))
            inputs['img'].append(img)
            samples.append(s)
        return dict(inputs=inputs, data_samples=samples)
    for key in ('depths', 'cam2world', 'intrinsics', 'points', 'superpoints'):
        inputs[key] = []
    f = 0.8 * w
    K = np.eye(4)
    K[0, 0], K[1, 1], K[0, 2], K[1, 2] = f, f, (w - 1) / 2, (h - 1) / 2
    for _ in range(batch_size):
        target = np.array([1.0, 1.0, 0.5])
        imgs, depths, cam2world, xyz_all = [], [], [], []
        for v in range(num_views):
            ang = 2 * np.pi * v / max(num_views, 1) + rng.uniform(-0.2, 0.2)
            eye = target + np.array([1.2 * np.cos(ang), 1.2 * np.sin(ang), 0.6])
            pose = _look_at(eye, target)
            ys, xs = np.mgrid[0:h, 0:w]
            depth = 1.3 + 0.3 * (ys / h) + 0.1 * np.sin(xs / 3.0) + rng.uniform(0, 0.02, (h, w))
            depth[rng.rand(h, w) < 0.02] = 0.0
            world = unproject_depth(torch.from_numpy(depth)[None], torch.from_numpy(K)[None],
                                    torch.from_numpy(pose)[None]).numpy().reshape(-1, 3)  # float64
            valid = depth.reshape(-1) > 0
            xyz_all.append(world[valid])
            img = np.clip(128 + 100 * np.sin(world * 3).reshape(h, w, 3), 0, 255)
            imgs.append(torch.from_numpy(img.transpose(2, 0, 1).astype(np.uint8)))
            depths.append(torch.from_numpy(depth.astype(np.float32)))
            cam2world.append(torch.from_numpy(pose.astype(np.float32)))
        xyz = np.concatenate(xyz_all)
        pts = xyz[rng.choice(len(xyz), num_points, replace=len(xyz) < num_points)]
        pts = pts + rng.normal(0, 0.003, pts.shape)
        centers = pts[rng.choice(len(pts), num_instances, replace=False)]
        dist = np.linalg.norm(pts[:, None] - centers[None], axis=-1)
        inst = dist.argmin(1)
        inst[dist.min(1) > np.median(dist.min(1)) * 2] = -1
        sem_of_inst = rng.randint(0, num_classes, num_instances)
        sem = np.where(inst >= 0, sem_of_inst[np.maximum(inst, 0)], num_classes)
        rgb = rng.uniform(0, 1, (num_points, 3))
        inputs['img'].append(torch.stack(imgs))
        inputs['depths'].append(torch.stack(depths))
        inputs['cam2world'].append(torch.stack(cam2world))
        inputs['intrinsics'].append(torch.from_numpy(np.stack([K] * num_views).astype(np.float32)))
        inputs['points'].append(torch.from_numpy(np.concatenate([pts, rgb], 1).astype(np.float32)))
        if num_superpoints:
            sp_centers = pts[rng.choice(len(pts), num_superpoints, replace=False)]
            sp = np.linalg.norm(pts[:, None] - sp_centers[None], axis=-1).argmin(1)
            inputs['superpoints'].append(torch.from_numpy(sp).long())
        s = Det3DDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w),
                                          num_views=num_views))
        s.gt_pts_seg = PointData(pts_semantic_mask=torch.from_numpy(sem).long(),
                                 pts_instance_mask=torch.from_numpy(inst).long())
        s.eval_ann_info = dict(pts_semantic_mask=sem, pts_instance_mask=inst)
        samples.append(s)
    if not num_superpoints:
        inputs.pop('superpoints')
    return dict(inputs=inputs, data_samples=samples)


#: words the tiny test tokenizer learns merges for (any other text falls back to bytes)
_TINY_ROBERTA_CORPUS = (
    'wall floor cabinet bed chair sofa table door window bookshelf picture counter desk '
    'curtain refrigerator shower curtain toilet sink bathtub otherfurniture background '
    'person bicycle car traffic light dining table potted plant teddy bear the a of. ')


def make_tiny_roberta(dirpath: str, hidden_size: int = 32, num_layers: int = 2,
                      vocab_size: int = 400, seed: int = 0) -> str:
    """Write a tiny randomly initialised RoBERTa (model + byte-level BPE tokenizer) to a folder.

    Loadable with ``RobertaModel.from_pretrained(path)`` / ``RobertaTokenizerFast.from_pretrained``
    exactly like a real ``roberta-base`` folder, so tests exercise the real ``pretrained=PATH``
    code path without any download. Idempotent: an existing model in ``dirpath`` is reused.

    Args:
        dirpath: output folder (created).
        hidden_size: RoBERTa hidden size (the projector's input channels).
        num_layers: transformer layers.
        vocab_size: BPE vocabulary size (incl. 256 byte tokens and 5 special tokens).
        seed: torch seed of the random weights.

    Returns:
        str: ``dirpath``.
    """
    import json

    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast
    os.makedirs(dirpath, exist_ok=True)
    if osp.exists(osp.join(dirpath, 'config.json')) and \
            osp.exists(osp.join(dirpath, 'tokenizer_config.json')):
        return dirpath
    special = ['<s>', '<pad>', '</s>', '<unk>', '<mask>']
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([_TINY_ROBERTA_CORPUS] * 4, vocab_size=vocab_size, min_frequency=1,
                            special_tokens=special, show_progress=False)
    bpe.save_model(dirpath)
    with open(osp.join(dirpath, 'vocab.json')) as f:
        vocab = json.load(f)
    with open(osp.join(dirpath, 'merges.txt')) as f:
        merges = [tuple(line.split()) for line in f.read().splitlines()[1:] if line.strip()]
    tokenizer = RobertaTokenizerFast(vocab=vocab, merges=merges)
    tokenizer.save_pretrained(dirpath)
    config = RobertaConfig(vocab_size=len(vocab), hidden_size=hidden_size,
                           num_hidden_layers=num_layers, num_attention_heads=2,
                           intermediate_size=2 * hidden_size, max_position_embeddings=260,
                           pad_token_id=tokenizer.pad_token_id,
                           bos_token_id=tokenizer.bos_token_id,
                           eos_token_id=tokenizer.eos_token_id)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = RobertaModel(config, add_pooling_layer=False)
    from transformers.utils import logging as hf_logging
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(dirpath)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return dirpath
