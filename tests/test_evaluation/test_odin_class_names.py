"""Consistency of the class metadata (counts, id/name pairing, ODIN's re-ordering)."""
import pytest

from projects.odin import class_names as cn


def test_scannet():
    assert len(cn.SCANNET_CLASSES) == len(cn.SCANNET_CLASS_IDS) == 20
    assert cn.SCANNET_CLASSES[-2:] == ('wall', 'floor') and cn.SCANNET_CLASS_IDS[-2:] == (1, 2)
    assert cn.SCANNET_INSTANCE_CLASS_IDS == (3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33,
                                             34, 36, 39)
    assert sorted(cn.SCANNET_SEMANTIC_CLASS_IDS) == sorted(cn.SCANNET_CLASS_IDS)
    assert cn.SCANNET_ODIN_CLASS_NAMES[12] == 'refridgerator'
    assert cn.SCANNET_ODIN_CLASS_NAMES[16] == ' bathtub'


def test_scannet200():
    assert len(cn.SCANNET200_VALID_CLASS_IDS) == len(set(cn.SCANNET200_VALID_CLASS_IDS)) == 200
    assert len(set(cn.SCANNET200_BENCHMARK_CLASSES)) == 200
    assert cn.SCANNET200_CLASSES[:2] == ('chair', 'table')
    assert cn.SCANNET200_CLASSES[-2:] == ('wall', 'floor')
    assert cn.SCANNET200_CLASS_IDS[:2] == (2, 4) and cn.SCANNET200_CLASS_IDS[-2:] == (1, 3)
    # ODIN's SCANNET200_MISSING_IDS_FROM_VAL_TEST are 1-based indices into its ordering
    assert tuple(cn.SCANNET200_CLASSES[i - 1] for i in (197, 182, 165, 158, 152)) == \
        cn.SCANNET200_ODIN_DROPPED_CLASSES
    assert len(cn.SCANNET200_INSTANCE_CLASS_IDS) == 198
    assert 1 not in cn.SCANNET200_INSTANCE_CLASS_IDS and 3 not in cn.SCANNET200_INSTANCE_CLASS_IDS
    head, common, tail = (cn.SCANNET200_HEAD_CLASSES, cn.SCANNET200_COMMON_CLASSES,
                          cn.SCANNET200_TAIL_CLASSES)
    assert (len(head), len(common), len(tail)) == (66, 68, 66)
    assert set(head) | set(common) | set(tail) == set(cn.SCANNET200_BENCHMARK_CLASSES)
    assert len(cn.SCANNET200_TRAIN_ONLY_CLASSES) == 11


@pytest.mark.parametrize('name,num,num_inst', [('scannet', 20, 18), ('scannet200', 200, 198),
                                               ('s3dis', 13, 13), ('matterport3d', 160, 160),
                                               ('ai2thor', 117, 115)])
def test_records(name, num, num_inst):
    rec = cn.get_class_info(name)
    assert rec['num_classes'] == len(rec['classes']) == len(set(rec['classes'])) == num
    assert len(rec['instance_class_ids']) == num_inst
    assert set(rec['instance_class_ids']) <= set(rec['class_ids'])
    assert set(rec['semantic_class_ids']) == set(rec['class_ids'])
    for sub in rec['subsets'].values():
        assert set(sub) <= set(rec['classes'])


def test_ai2thor_and_unknown():
    assert cn.AI2THOR_CLASSES[-2:] == ('Wall', 'Floor') and cn.AI2THOR_ID_MULTIPLIER == 200
    assert cn.get_class_info('ai2thor')['id_multiplier'] == 200
    assert cn.get_class_info('Matterport')['num_classes'] == 160
    with pytest.raises(KeyError, match='unknown dataset'):
        cn.get_class_info('kitti')
