import json

import numpy as np
from plyfile import PlyData

from projects.odin.apis import (
    instance_palette,
    masks_to_instance_ids,
    overlay_instances,
    write_instance_ply,
    write_instances_json,
)


def test_palette_distinct_and_reproducible():
    a, b = instance_palette(50), instance_palette(50)
    assert a.shape == (50, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert len({tuple(c) for c in a}) == 50


def test_masks_to_instance_ids_highest_score_wins():
    masks = np.array([[1, 1, 0, 0], [0, 1, 1, 0]], bool)
    ids = masks_to_instance_ids(masks, np.array([0.2, 0.9]))
    assert ids.tolist() == [0, 1, 1, -1]


def test_ply_roundtrip(tmp_path):
    xyz = np.random.rand(20, 3).astype(np.float32)
    ids = np.array([-1] * 5 + [0] * 10 + [3] * 5)
    path = tmp_path / 'out' / 'scene.ply'
    write_instance_ply(str(path), xyz, ids, rgb=np.full((20, 3), 200, np.uint8),
                       labels=np.arange(20))
    v = PlyData.read(str(path))['vertex']
    assert len(v) == 20
    np.testing.assert_allclose(np.stack([v['x'], v['y'], v['z']], 1), xyz)
    assert v['instance'].tolist() == ids.tolist()
    assert v['label'].tolist() == list(range(20))
    colors = np.stack([v['red'], v['green'], v['blue']], 1)
    assert (colors[:5] == 80).all()  # darkened original colour for unassigned points
    assert len({tuple(c) for c in colors[5:]}) == 2


def test_overlay_and_json(tmp_path):
    img = np.zeros((4, 4, 3), np.uint8)
    inst = -np.ones((4, 4), int)
    inst[:2] = 0
    out = overlay_instances(img, inst)
    assert (out[2:] == 0).all() and (out[:2] > 0).any()
    recs = write_instances_json(str(tmp_path / 'i.json'), [1, 0], [0.3, 0.8], [10, 20],
                                ['a', 'b'], extra=dict(scene='s'))
    doc = json.loads((tmp_path / 'i.json').read_text())
    assert doc['num_instances'] == 2 and doc['scene'] == 's'
    assert [r['class_name'] for r in recs] == ['a', 'b']
    assert doc['instances'][0]['score'] == 0.8
