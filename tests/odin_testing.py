"""Test helpers: tiny ODIN inputs and the location of the reference goldens.

Test support, not library code (importable as ``odin_testing``: ``setup.cfg`` puts ``tests/`` on
pytest's path). The tiny packed batch :func:`create_odin_inputs` is shared with the benchmarks
and lives tools-side (``tools/analysis_tools/synthetic_inputs.py``).
"""
import os
import os.path as osp
from typing import Optional, Sequence

import numpy as np
import torch

from projects.odin.utils.scripts import load_script as _load_script

#: the checkout this test support runs from (tests know the checkout; the library does not)
REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
#: the demo config of the checkout (``make demo``)
DEMO_CONFIG = osp.join(REPO_ROOT, 'configs', 'odin', 'synthetic_r18_demo.py')


def load_script(path: str):
    """A script of the checkout (e.g. ``'tools/test.py'``) loaded as a module."""
    return _load_script(path, REPO_ROOT)


#: the tiny packed batch of the data contract (docs/data_contract.md), shared with the benchmarks
create_odin_inputs = load_script('tools/analysis_tools/synthetic_inputs.py').create_odin_inputs


def reference_dir() -> str:
    """Folder of the official goldens: ``$ODIN_REFERENCE_DIR`` or ``<repo>/../shared/reference``."""
    return os.environ.get('ODIN_REFERENCE_DIR',
                          osp.normpath(osp.join(REPO_ROOT, '..', 'shared', 'reference')))


def build_tiny_model(view_chunk: Optional[int] = None, train: bool = False,
                     seed: int = 0) -> torch.nn.Module:
    """The tiny ODIN of ``configs/odin/odin_tiny_test.py`` with seeded initial weights.

    Args:
        view_chunk: ``test_cfg.view_chunk`` to set (None: the config's).
        train: return the model in train mode (default: eval mode).
        seed: torch seed of the weight initialisation.

    Returns:
        The built, initialised model on the CPU.
    """
    from mmdet3d.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import projects.odin  # noqa: F401
    init_default_scope('mmdet3d')
    cfg = Config.fromfile(osp.join(REPO_ROOT, 'configs', 'odin', 'odin_tiny_test.py'))
    torch.manual_seed(seed)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train(train)
    if view_chunk is not None:
        model.test_cfg['view_chunk'] = view_chunk
    return model


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
