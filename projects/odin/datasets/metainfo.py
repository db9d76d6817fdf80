"""mmdet3d ``METAINFO`` dicts of the ODIN datasets, built from :mod:`projects.odin.class_names`.

``classes`` are in ODIN's training order, ``seg_valid_class_ids`` the label id (raw id in the
converted ``semantic_mask`` files) of each class, ``seg_all_class_ids`` every label id a file may
contain, ``palette`` a fixed colour per class. ``ignore_class_ids`` are raw ids mapped to the
ignore index although they have a class (ScanNet200: the 5 classes ODIN drops in training).
"""
from typing import List, Tuple

import numpy as np

from ..class_names import SCANNET200_ODIN_DROPPED_CLASS_IDS, get_class_info


def _palette(n: int, seed: int) -> List[Tuple[int, int, int]]:
    rng = np.random.default_rng(seed)
    return [tuple(int(c) for c in row) for row in rng.integers(30, 256, size=(n, 3))]


def make_metainfo(dataset: str) -> dict:
    """Build the ``METAINFO`` of ``dataset`` ('scannet', 'scannet200', 's3dis', ...)."""
    rec = get_class_info(dataset)
    ids = list(rec['class_ids'])
    known = [i for i in rec['known_label_ids'] if i > 0]
    return dict(classes=tuple(rec['classes']), seg_valid_class_ids=tuple(ids),
                seg_all_class_ids=tuple(sorted(set(known) | set(ids))),
                palette=_palette(len(ids), len(ids)), ignore_class_ids=(),
                dataset=dataset)


SCANNET_METAINFO = make_metainfo('scannet')
SCANNET200_METAINFO = dict(make_metainfo('scannet200'),
                           ignore_class_ids=tuple(SCANNET200_ODIN_DROPPED_CLASS_IDS))
S3DIS_METAINFO = make_metainfo('s3dis')
MATTERPORT_METAINFO = make_metainfo('matterport3d')
AI2THOR_METAINFO = make_metainfo('ai2thor')
