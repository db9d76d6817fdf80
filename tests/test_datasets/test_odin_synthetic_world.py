"""The synthetic labelled world: determinism, classes, exact geometry, ScanNet raw layout."""
import filecmp
import json

import numpy as np
import pytest

from projects.odin.class_names import (
    SCANNET200_BENCHMARK_CLASSES,
    SCANNET200_VALID_CLASS_IDS,
    SCANNET_CLASS_IDS,
    SCANNET_CLASSES,
)
from projects.odin.datasets.scannet_raw import (
    read_aggregation,
    read_label_ply,
    read_label_tsv,
    read_mesh_ply,
    read_segs,
)
from projects.odin.datasets.sens_data import SensorDataReader
from projects.odin.datasets.synthetic_world import (
    SYNTHETIC_CLASSES,
    WorldConfig,
    build_scene,
    class_texture,
    generate_world,
    pixel_rays,
    render,
)


def _ray_mesh_depth(verts, faces, origin, dirs):
    """Independent Moller-Trumbore ray/triangle intersection: first-hit t per ray (inf if none)."""
    v0, v1, v2 = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    e1, e2 = v1 - v0, v2 - v0
    best = np.full(len(dirs), np.inf)
    for i, d in enumerate(dirs):
        p = np.cross(d, e2)
        det = np.einsum('ij,ij->i', e1, p)
        ok = np.abs(det) > 1e-12
        inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
        s = origin - v0
        u = np.einsum('ij,ij->i', s, p) * inv
        q = np.cross(s, e1)
        v = (q @ d) * inv
        t = np.einsum('ij,ij->i', e2, q) * inv
        hit = ok & (u >= -1e-9) & (v >= -1e-9) & (u + v <= 1 + 1e-9) & (t > 1e-9)
        if hit.any():
            best[i] = t[hit].min()
    return best


def test_scenes_have_many_classes_and_instances():
    cfg = WorldConfig.from_preset('tiny')
    scannet20 = set(SCANNET_CLASS_IDS) - {1, 2}
    classes, inst_counts = set(), []
    for idx in range(3):
        scene = build_scene(0, idx, cfg)
        nyu = {m['nyu40'] for m in scene.instances if m['annotated']}
        classes |= nyu & scannet20
        inst_counts.append(sum(m['annotated'] for m in scene.instances))
        assert {1, 2} <= nyu  # walls and floor
    assert len(classes) >= 10, sorted(classes)
    assert min(inst_counts) >= 12


def test_demo_preset_class_textures_and_label_subset():
    cfg = WorldConfig.from_preset('demo')
    assert cfg.class_textures
    base_by_label = {}
    for idx in range(3):
        scene = build_scene(0, idx, cfg)
        labels = {m['label'] for m in scene.instances}
        allowed = set(cfg.floor_labels) | set(cfg.wall_labels) | {'wall', 'floor', 'ceiling',
                                                                     'box'}
        assert labels <= allowed, labels - allowed
        # the first texture of each instance is its class texture, jittered per instance
        for box in scene.boxes:
            if box.instance < 0:
                continue
            label = scene.instances[box.instance]['label']
            base = scene.textures[box.texture, :3]
            base_by_label.setdefault(label, []).append(base)
    for label, bases in base_by_label.items():
        ref = class_texture(label, 0)[0]
        dark = class_texture(label, 1)[0]
        for b in bases:  # every part is the class colour or its darker shade, +- the jitter
            err = min(np.abs(b - ref).max(), np.abs(b - dark).max())
            assert err <= cfg.class_texture_jitter + 1e-9, (label, b, ref)
    colours = {k: class_texture(k)[0] for k in SYNTHETIC_CLASSES}
    names = list(colours)
    gaps = [np.abs(colours[a] - colours[b]).max() for i, a in enumerate(names)
            for b in names[i + 1:]]
    assert min(gaps) > 0.05  # distinct colours per class
    # without class textures the same seed gives random colours, the generator is unchanged
    rand = build_scene(0, 0, WorldConfig.from_preset('tiny'))
    tex = rand.textures[[b.texture for b in rand.boxes if b.instance >= 0], :3]
    assert tex.std(axis=0).min() > 0.1


def test_class_table_matches_class_names():
    name_to_s200 = dict(zip(SCANNET200_BENCHMARK_CLASSES, SCANNET200_VALID_CLASS_IDS))
    nyu_name = dict(zip(SCANNET_CLASS_IDS, SCANNET_CLASSES))
    for name, (nyu, s200, _) in SYNTHETIC_CLASSES.items():
        assert name_to_s200[name] == s200, name
        if nyu in nyu_name and name not in ('couch', 'stool'):
            assert nyu_name[nyu] == name, (name, nyu)


def test_render_agrees_with_mesh_exactly():
    cfg = WorldConfig.from_preset('tiny')
    scene = build_scene(1, 0, cfg)
    pose = scene.poses[2].astype(np.float64)
    out = render(scene, pose, scene.intrinsic_depth, cfg.depth_hw)
    dirs = pixel_rays(pose, scene.intrinsic_depth, cfg.depth_hw)
    rng = np.random.default_rng(0)
    pick = rng.choice(len(dirs), 60, replace=False)
    t_mesh = _ray_mesh_depth(scene.vertices.astype(np.float64), scene.faces, pose[:3, 3],
                             dirs[pick])
    t_img = out['depth'].reshape(-1)[pick]
    assert np.isfinite(t_mesh).all() and (t_img > 0).all()
    # rays have unit camera z, so t is the depth; float32 vertices limit the agreement
    np.testing.assert_allclose(t_img, t_mesh, atol=2e-5)
    # labels: the hit instance's class
    inst = out['instance'].reshape(-1)[pick]
    assert (inst >= 0).all()
    assert len(np.unique(out['instance'])) >= 4
    # textured: colours vary within the image and within instances
    col = out['color'].reshape(-1, 3).astype(float)
    assert col.std(0).min() > 10


def test_raw_layout_deterministic_and_consistent(tmp_path):
    kw = dict(num_scenes=1, preset='tiny', num_frames=4, num_invalid_poses=1)
    s1 = generate_world(tmp_path / 'a', seed=5, **kw)
    generate_world(tmp_path / 'b', seed=5, **kw)
    generate_world(tmp_path / 'c', seed=6, **kw)
    name = 'scene0000_00'
    files = sorted(p.name for p in (tmp_path / 'a' / 'scans' / name).iterdir())
    assert files == sorted([f'{name}.sens', f'{name}.txt', f'{name}.aggregation.json',
                            f'{name}_vh_clean_2.ply', f'{name}_vh_clean_2.labels.ply',
                            f'{name}_vh_clean_2.0.010000.segs.json'])
    match, mismatch, errors = filecmp.cmpfiles(tmp_path / 'a' / 'scans' / name,
                                               tmp_path / 'b' / 'scans' / name, files,
                                               shallow=False)
    assert mismatch == [] and errors == []
    assert not filecmp.cmp(tmp_path / 'a' / 'scans' / name / f'{name}_vh_clean_2.ply',
                           tmp_path / 'c' / 'scans' / name / f'{name}_vh_clean_2.ply',
                           shallow=False)
    d = tmp_path / 'a' / 'scans' / name
    xyz, rgb, faces = read_mesh_ply(d / f'{name}_vh_clean_2.ply')
    lab_xyz, label = read_label_ply(d / f'{name}_vh_clean_2.labels.ply')
    seg = read_segs(d / f'{name}_vh_clean_2.0.010000.segs.json', len(xyz))
    groups = read_aggregation(d / f'{name}.aggregation.json')
    tsv = read_label_tsv(tmp_path / 'a' / 'scannetv2-labels.combined.tsv')
    np.testing.assert_array_equal(xyz, lab_xyz)
    assert faces.shape[1] == 3 and faces.max() < len(xyz) and len(xyz) > 500
    assert rgb.std() > 10
    # every segment belongs to at most one instance; instance labels agree with labels.ply
    owner = {}
    for g in groups:
        for sid in g['segments']:
            assert sid not in owner
            owner[sid] = g
        members = np.isin(seg, g['segments'])
        assert members.any()
        assert (label[members] == tsv[g['label']]['nyu40id']).all()
    unannotated = ~np.isin(seg, list(owner))
    assert (label[unannotated] == 0).all() and unannotated.any()  # the clutter box
    # the .sens: 4 frames, one invalid pose, depth/colour sizes of the preset
    r = SensorDataReader(d / f'{name}.sens')
    assert (r.header.depth_height, r.header.depth_width) == (48, 64)
    assert (r.header.color_height, r.header.color_width) == (96, 128)
    frames = list(r.iter_frames())
    bad = [f.index for f in frames if not np.isfinite(f.camera_to_world).all()]
    assert bad == s1['scenes'][name]['invalid_pose_frames'] and len(bad) == 1
    assert json.loads((tmp_path / 'a' / 'synthetic_world.json').read_text())['seed'] == 5


def test_presets_and_errors():
    with pytest.raises(KeyError, match='unknown preset'):
        WorldConfig.from_preset('huge')
    with pytest.raises(ValueError, match='num_scenes'):
        generate_world('/nonexistent', num_scenes=0)


def test_prepare_synthetic_dataset_is_resumable(tmp_path):
    from projects.odin.datasets.synthetic_world import prepare_synthetic_dataset
    res = prepare_synthetic_dataset(tmp_path, num_scenes=2, seed=2, num_frames=3)
    assert res['ann_files'] == {'train': 'synthetic_infos_train.pkl',
                                'val': 'synthetic_infos_val.pkl'}
    assert res['summary']['converted'] == ['scene0000_00', 'scene0001_00']
    again = prepare_synthetic_dataset(tmp_path, num_scenes=2, seed=2, num_frames=3)
    assert again['summary']['resumed'] == ['scene0000_00', 'scene0001_00']


def test_windowed_raycast_equals_brute_force():
    from projects.odin.datasets.synthetic_world import raycast, raycast_image
    cfg = WorldConfig.from_preset('tiny')
    scene = build_scene(4, 1, cfg)
    k = scene.intrinsic_color
    for pose in scene.poses[::3].astype(np.float64):
        a = raycast(scene, pose[:3, 3], pixel_rays(pose, k, cfg.color_hw))
        b = raycast_image(scene, pose, k, cfg.color_hw)
        np.testing.assert_allclose(a[0], b[0], rtol=1e-12)  # t (inf where nothing is hit)
        np.testing.assert_array_equal(a[1], b[1])  # box
        np.testing.assert_array_equal(a[2], b[2])  # face
        np.testing.assert_allclose(a[3], b[3], atol=1e-12)  # normal
