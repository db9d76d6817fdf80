"""tools/analysis_tools/model_zoo.py: ODIN beside MMDet3D's metafiles and the peers; the README
block is its output (--check), task/dataset matching."""
import os.path as osp
import shutil

import pytest

from odin_testing import REPO_ROOT, load_script
from projects.odin.utils.model_zoo import (
    README_BEGIN,
    README_END,
    SOURCE_MMDET3D,
    SOURCE_ODIN,
    SOURCE_PEER,
    build_model_zoo,
    installed_mmdet3d_index,
)

tool = load_script('tools/analysis_tools/model_zoo.py')


def _tables_by_key(tables):
    return {(t.task, t.dataset): t for t in tables}


def test_readme_block_is_up_to_date(capsys):
    assert tool.main(['--check']) == 0, capsys.readouterr().err


def test_stale_or_broken_readme_is_detected(tmp_path, capsys):
    readme = tmp_path / 'README.md'
    shutil.copy(osp.join(REPO_ROOT, 'README.md'), readme)
    text = readme.read_text()
    block = text[text.index(README_BEGIN):text.index(README_END)]
    assert '| 47.8 |' in block  # ODIN R50 ScanNet mAP, from the metafile
    readme.write_text(text.replace(block, block.replace('| 47.8 |', '| 48.8 |', 1)))
    assert tool.main(['--check', '--readme', str(readme)]) == 1
    assert 'stale' in capsys.readouterr().err
    assert tool.main(['--write-readme', '--readme', str(readme)]) == 0
    assert readme.read_text() == text
    readme.write_text(text.replace(README_END, ''))
    assert tool.main(['--check', '--readme', str(readme)]) == 2
    assert 'exactly one' in capsys.readouterr().err


def test_odin_beside_the_installed_mmdet3d_methods():
    index, version, message = installed_mmdet3d_index()
    if index is None:
        pytest.skip(message)
    tables, msg = build_model_zoo()
    assert f'mmdet3d {version}' in msg
    by_key = _tables_by_key(tables)
    # ScanNet semantic: PointNet++ of mmdet3d's configs/pointnet2/metafile.yml
    sem = by_key[('3D Semantic Segmentation', 'ScanNet')]
    pn2 = {e.model: e.metrics['mIoU'] for e in sem.entries if e.source == SOURCE_MMDET3D}
    assert pn2['pointnet2_ssg_2xb16-cosine-200e_scannet-seg-xyz-only'] == 53.91
    assert {e.method for e in sem.entries if e.source == SOURCE_MMDET3D} == {'PointNet++'}
    # S3DIS semantic: Area 5 results only (DGCNN's other cross-validation folds stay out)
    s3dis = by_key[('3D Semantic Segmentation', 'S3DIS')]
    core = [e for e in s3dis.entries if e.source == SOURCE_MMDET3D]
    assert {e.method for e in core} >= {'PointNet++', 'PAConv', 'DGCNN'}
    assert all(e.dataset in ('S3DIS', 'S3DIS Area5') for e in core)
    # no detection rows anywhere, no MMDet3D instance segmentation on these datasets
    for t in tables:
        assert all(e.task.lower() == t.task.lower() for e in t.entries)
        if t.task == '3D Instance Segmentation':
            assert not any(e.source == SOURCE_MMDET3D for e in t.entries), t.dataset
    # peers are labelled as such and follow ODIN's rows
    inst = by_key[('3D Instance Segmentation', 'ScanNet')]
    sources = [e.source for e in inst.entries]
    assert sources == sorted(sources, key=[SOURCE_ODIN, SOURCE_MMDET3D, SOURCE_PEER].index)
    assert {e.method for e in inst.entries if e.source == SOURCE_PEER} >= {
        'OneFormer3D', 'Mask3D', 'SPFormer'}


def test_matching_of_tasks_and_dataset_names(tmp_path, capsys):
    """Task case and dataset spellings (ScanNetV2, S3DIS Area5) are folded; other S3DIS areas,
    other tasks and other datasets are not matched."""
    (tmp_path / 'x').mkdir()
    (tmp_path / 'x' / 'metafile.yml').write_text('''
Collections:
  - Name: X
Models:
  - Name: x_scannetv2
    In Collection: X
    Results:
      - Task: 3D semantic segmentation
        Dataset: ScanNetV2
        Metrics: {mIoU: 61.5}
      - Task: 3D Object Detection
        Dataset: ScanNet
        Metrics: {mAP: 70.1}
  - Name: x_s3dis
    In Collection: X
    Results:
      - Task: 3D Semantic Segmentation
        Dataset: S3DIS Area5
        Metrics: {mIoU: 62.5}
      - Task: 3D Semantic Segmentation
        Dataset: S3DIS Area1
        Metrics: {mIoU: 63.5}
      - Task: 3D Semantic Segmentation
        Dataset: SemanticKITTI
        Metrics: {mIoU: 64.5}
''')
    tables, _ = build_model_zoo(mmdet3d_index=str(tmp_path))
    by_key = _tables_by_key(tables)
    found = {(t.dataset, e.model, tuple(e.metrics.values())) for t in tables for e in t.entries
             if e.source == SOURCE_MMDET3D}
    assert found == {('ScanNet', 'x_scannetv2', (61.5, )), ('S3DIS', 'x_s3dis', (62.5, ))}
    assert ('3D Object Detection', 'ScanNet') not in by_key
    # the same through the command line, printed as markdown
    assert tool.main(['--mmdet3d-index', str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert '| X | x_scannetv2 | MMDet3D core | point cloud | 61.5 |' in out
    assert '63.5' not in out and '64.5' not in out and '70.1' not in out
