"""configs/odin/metafile.yml and model-index.yml follow the OpenMMLab model-index schema and cover
every model config of configs/odin (not the CPU-test configs); docs/model_zoo_peers.yml too."""
import glob
import math
import os.path as osp
import re

import pytest

from odin_testing import REPO_ROOT
from projects.odin.utils.model_zoo import (
    ODIN_INDEX,
    PEERS_INDEX,
    ModelIndexError,
    load_model_index,
)

COLLECTION_METADATA = ('Training Data', 'Training Techniques', 'Training Resources',
                       'Architecture')
TASKS = {'3D Instance Segmentation', '3D Semantic Segmentation', 'Instance Segmentation'}
DATASETS = {'ScanNet', 'ScanNet200', 'S3DIS', 'Matterport3D', 'AI2THOR', 'COCO',
            'ODIN synthetic world'}
HF = 'https://huggingface.co/katefgroup/odin/resolve/main/'


@pytest.fixture(scope='module')
def odin_index():
    return load_model_index(osp.join(REPO_ROOT, ODIN_INDEX))


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def test_root_index_imports_the_odin_metafile(odin_index):
    collections, models = odin_index
    assert [c['Name'] for c in collections] == ['ODIN']
    assert {m['_file'] for m in models} == {osp.join(REPO_ROOT, 'configs', 'odin',
                                                     'metafile.yml')}


def test_collection_fields(odin_index):
    (col, ), _ = odin_index
    for key in COLLECTION_METADATA:
        assert col['Metadata'].get(key), key
    assert col['Paper']['URL'] == 'https://arxiv.org/abs/2401.02416'
    assert 'ODIN' in col['Paper']['Title']
    assert osp.isfile(osp.join(REPO_ROOT, col['README']))
    assert osp.isfile(osp.join(REPO_ROOT, col['Code']['URL']))


def test_every_model_entry(odin_index):
    collections, models = odin_index
    names = [m['Name'] for m in models]
    assert len(names) == len(set(names)), 'model names must be unique'
    for m in models:
        name = m['Name']
        assert m['In Collection'] in {c['Name'] for c in collections}, name
        assert osp.isfile(osp.join(REPO_ROOT, m['Config'])), (name, m['Config'])
        meta = m['Metadata']
        source = meta['Results Source']
        if source.startswith('published'):
            # official checkpoints: results, download link, conversion command, resources
            assert m['Results'], name
            assert meta['Training Resources'] == '2x A100-40GB GPUs', name
            url = m['Weights']
            assert url.startswith(HF) and url.endswith('.pth'), name
            ckpt = url[len(HF):]
            assert m['Converted From']['Weights'] == url, name
            conv = m['Conversion'].split()
            assert conv[:3] == ['python', 'tools/model_converters/odin_to_mmdet3d.py', ckpt], name
            assert osp.isfile(osp.join(REPO_ROOT, conv[1]))
            # the dataset named for the class names is the config's dataset
            if '--dataset' in conv:
                ds = conv[conv.index('--dataset') + 1]
                assert osp.basename(m['Config']).startswith(ds), (name, ds)
        elif source.startswith('measured'):
            assert m['Results'] and 'Weights' not in m, name
        else:
            assert source.startswith('none'), (name, source)
            assert 'Results' not in m and 'Weights' not in m, name
        for r in m.get('Results', []):
            assert r['Task'] in TASKS, (name, r['Task'])
            assert r['Dataset'] in DATASETS, (name, r['Dataset'])
            assert r['Metrics'], name
            for metric, value in r['Metrics'].items():
                assert _is_number(value) and 0 < value <= 100, (name, metric, value)


def test_every_config_appears(odin_index):
    """Every model config is a zoo entry; the tiny CPU-test configs (``*_test.py``) are not.

    The test configs are not models anyone would download or evaluate, so listing them in the
    zoo (as was done before) made ``mim search`` and the zoo tool show them as models.
    """
    _, models = odin_index
    listed = {m['Config'] for m in models}
    every = {osp.relpath(p, REPO_ROOT)
             for p in glob.glob(osp.join(REPO_ROOT, 'configs', 'odin', '*.py'))}
    test_cfgs = {c for c in every if c.endswith('_test.py')}
    assert len(test_cfgs) == 3, test_cfgs  # odin_tiny_test, odin_tiny_joint(_ov)_test
    assert listed & test_cfgs == set(), 'CPU-test configs listed as zoo models'
    configs = every - test_cfgs
    assert configs - listed == set(), 'configs without a metafile entry'
    # every dataset config of the official recipes has published results
    published = {m['Config'] for m in models
                 if m['Metadata']['Results Source'].startswith('published')}
    dataset_cfgs = {c for c in configs
                    if re.match(r'configs/odin/(scannet|scannet200|s3dis|matterport3d|ai2thor)_'
                                r'(r50|swin)\.py$', c)}
    assert len(dataset_cfgs) == 10 and dataset_cfgs <= published


def test_published_numbers_match_the_checkpoint_names(odin_index):
    """The official file names carry the main metric (e.g. scannet_resnet_47.8_73.3_...)."""
    _, models = odin_index
    for m in models:
        if 'Weights' not in m:
            continue
        first = float(re.search(r'_(\d+\.\d)_', osp.basename(m['Weights'])).group(1))
        values = [v for r in m['Results'] for k, v in r['Metrics'].items()
                  if k in ('AP', 'mIoU')]
        assert first in values, (m['Name'], first, values)


def test_peers_file(odin_index):
    collections, models = load_model_index(osp.join(REPO_ROOT, PEERS_INDEX))
    assert {c['Name'] for c in collections} >= {'OneFormer3D', 'Mask3D', 'SPFormer'}
    for c in collections:
        assert c['Paper']['URL'].startswith('https://arxiv.org/abs/'), c['Name']
        assert 'not MMDet3D core' in c['Metadata']['Codebase'], c['Name']
    for m in models:
        assert m['In Collection'] in {c['Name'] for c in collections}
        assert m['Metadata']['Input'] in ('mesh', 'sensor RGB-D')
        for r in m['Results']:
            assert r['Task'] in TASKS and r['Dataset'] in DATASETS
            assert all(_is_number(v) for v in r['Metrics'].values())


def test_bad_index_files_are_reported(tmp_path):
    (tmp_path / 'a.yml').write_text('Import:\n  - missing.yml\n')
    with pytest.raises(ModelIndexError, match='missing.yml'):
        load_model_index(str(tmp_path / 'a.yml'))
    (tmp_path / 'b.yml').write_text('- just\n- a list\n')
    with pytest.raises(ModelIndexError, match='mapping'):
        load_model_index(str(tmp_path / 'b.yml'))
    (tmp_path / 'c.yml').write_text('Import:\n  - c.yml\n')
    with pytest.raises(ModelIndexError, match='imported twice'):
        load_model_index(str(tmp_path / 'c.yml'))
