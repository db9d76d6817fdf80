"""The class head as a registered component, its checkpoint keys, and losses without state swaps."""
import copy
import warnings

import pytest
import torch
from mmdet.models.dense_heads import Mask2FormerHead
from mmengine.config import Config
from mmengine.structures import InstanceData

from odin_testing import REPO_ROOT, make_tiny_roberta

CFG = f'{REPO_ROOT}/configs/odin/odin_tiny_test.py'

pytestmark = pytest.mark.usefixtures('one_thread')


def _model_cfg(**head):
    from mmengine.registry import init_default_scope

    import projects.odin  # noqa: F401
    init_default_scope('mmdet3d')
    cfg = copy.deepcopy(Config.fromfile(CFG).model)
    cfg.decode_head.update(head)
    return cfg


def _build(**head):
    from mmdet3d.registry import MODELS
    torch.manual_seed(0)
    model = MODELS.build(_model_cfg(**head))
    model.init_weights()
    return model


@pytest.fixture(scope='module')
def roberta_dir(tmp_path_factory):
    return make_tiny_roberta(str(tmp_path_factory.mktemp('tiny_roberta')))


def test_classifiers_are_registered_and_built_from_config():
    from mmdet3d.registry import MODELS

    from projects.odin.models.classifiers import LinearClassifier, OpenVocabClassifier
    assert MODELS.get('LinearClassifier') is LinearClassifier
    assert MODELS.get('OpenVocabClassifier') is OpenVocabClassifier
    head = _build().decode_head
    assert isinstance(head.classifier, LinearClassifier) and not head.open_vocab
    assert not hasattr(head, 'cls_embed')  # one class head: the classifier's
    assert head.classifier.cls_embed.weight.shape == (head.num_classes + 1, 32)
    # the one interface: K, context, per-layer conditioning (identity), logits
    assert head.classifier.num_classes([]) == head.batch_num_classes([]) == 4
    assert head.classifier.encode([], 2) is None
    query = torch.randn(2, 8, 32)
    assert head.classifier.condition(3, query, torch.randn(2, 8, 32), None) is query
    assert head.classifier(query, None).shape == (2, 8, 5)


def test_closed_set_initialisation_is_mmdet_mask2former_s():
    """Building the classifier leaves the random stream and mmdet's class layer as they were."""
    cfg = _model_cfg().decode_head
    m2f_cfg = {k: v for k, v in cfg.items()
               if k not in ('type', 'sample_sizes', 'max_train_points', 'classifier')}
    from mmdet3d.registry import MODELS
    torch.manual_seed(0)
    ours = MODELS.build(cfg)
    after_ours = torch.randn(4)
    torch.manual_seed(0)
    theirs = Mask2FormerHead(**m2f_cfg)
    torch.nn.Conv1d(3, 32, 1), torch.nn.GroupNorm(1, 32), torch.nn.Conv1d(32, 32, 1)  # pos_embed_3d
    after_theirs = torch.randn(4)
    torch.testing.assert_close(ours.classifier.cls_embed.weight, theirs.cls_embed.weight)
    torch.testing.assert_close(ours.classifier.cls_embed.bias, theirs.cls_embed.bias)
    torch.testing.assert_close(ours.mask_embed[0].weight, theirs.mask_embed[0].weight)
    torch.testing.assert_close(after_ours, after_theirs)


def test_open_vocab_classifier_from_config_and_deprecated_alias(roberta_dir):
    from projects.odin.models.classifiers import OpenVocabClassifier
    enc = dict(type='ODINTextEncoder', pretrained=roberta_dir)
    head = _build(classifier=dict(type='OpenVocabClassifier', text_encoder=enc,
                                  class_names=('a', 'b', 'c'))).decode_head
    assert isinstance(head.classifier, OpenVocabClassifier) and head.open_vocab
    assert head.batch_num_classes([]) == 3 and head.class_names == ('a', 'b', 'c')
    text = head.classifier.encode([], 2)
    query = torch.randn(2, 8, 32)
    conditioned = head.classifier.condition(0, query, torch.zeros_like(query), text)
    assert conditioned.shape == query.shape and not torch.allclose(conditioned, query)
    assert head.classifier(query, text).shape == (2, 8, 4)
    head.class_names = ['x', 'y']  # what set_vocabulary does
    assert head.classifier.class_names == ('x', 'y') and head.batch_num_classes([]) == 2
    # the deprecated spelling builds the same classifier, with a warning naming the new one
    with pytest.warns(DeprecationWarning, match="classifier=dict\\(type='OpenVocabClassifier'"):
        old = _build(open_vocab_cfg=dict(text_encoder=enc, temperature=0.05),
                     class_names=('a', 'b')).decode_head
    assert isinstance(old.classifier, OpenVocabClassifier)
    assert old.classifier.temperature == 0.05 and old.class_names == ('a', 'b')
    with pytest.raises(ValueError, match='needs a text_encoder'):
        _build(classifier=dict(type='OpenVocabClassifier'))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', DeprecationWarning)
        with pytest.raises(ValueError, match='cannot be combined with classifier type'):
            _build(classifier=dict(type='SomethingElse'), open_vocab_cfg=dict(text_encoder=enc))


def _v1_state_dict(model):
    """The model's state dict as version 1 of ODINHead stored it (class head in the head)."""
    sd = model.state_dict()
    old = type(sd)()
    for k, v in sd.items():
        old[k.replace('decode_head.classifier.', 'decode_head.')] = v.clone()
    old._metadata = copy.deepcopy(sd._metadata)
    old._metadata['decode_head']['version'] = 1
    return old


def test_checkpoints_of_version_1_load_with_renamed_keys(tmp_path):
    from mmengine.runner.checkpoint import load_checkpoint

    from projects.odin.utils.checkpoint import (
        check_checkpoint,
        compare_state_dict,
        trusted_checkpoint_loading,
    )
    source = _build()
    assert source.state_dict()._metadata['decode_head']['version'] == 2
    old = _v1_state_dict(source)
    assert 'decode_head.cls_embed.weight' in old
    assert not any(k.startswith('decode_head.classifier.') for k in old)
    # torch loading (strict): every tensor lands in its new place
    target = _build()
    with torch.no_grad():
        for p in target.decode_head.classifier.parameters():
            p.zero_()
    target.load_state_dict(old, strict=True)
    for k, v in source.state_dict().items():
        torch.testing.assert_close(target.state_dict()[k], v, msg=k)
    assert 'decode_head.cls_embed.weight' in old  # the caller's dict is not modified
    # the checkpoint checker renames the same way (no missing / unexpected keys)
    fit = compare_state_dict(target, old)
    assert fit.ok and fit.num_loaded == len(source.state_dict())
    # mmengine's loader on a file
    path = str(tmp_path / 'v1.pth')
    torch.save(dict(state_dict=old, meta={}), path)
    fresh = _build()
    with torch.no_grad():
        fresh.decode_head.classifier.cls_embed.weight.zero_()
    assert check_checkpoint(fresh, path).ok
    with trusted_checkpoint_loading():
        load_checkpoint(fresh, path, map_location='cpu', strict=True)
    torch.testing.assert_close(fresh.decode_head.classifier.cls_embed.weight,
                               source.decode_head.classifier.cls_embed.weight)
    # a version-2 state dict is taken as it is: old names there are unexpected
    wrong = copy.copy(old)
    wrong._metadata = copy.deepcopy(old._metadata)
    wrong._metadata['decode_head']['version'] = 2
    with pytest.raises(RuntimeError, match='decode_head.cls_embed.weight'):
        _build().load_state_dict(wrong, strict=True)


def _random_2d_batch(num_classes, batch_size=2, num_queries=8, size=(16, 16), layers=2):
    torch.manual_seed(1)
    cls = torch.randn(layers, batch_size, num_queries, num_classes + 1)
    masks = torch.randn(layers, batch_size, num_queries, *size)
    gts = []
    for b in range(batch_size):
        m = torch.zeros(3, *size, dtype=torch.bool)
        m[0, :8], m[1, 8:, :8], m[2, 8:, 8:] = True, True, True
        gts.append(InstanceData(labels=torch.tensor([0, num_classes - 1, b]), masks=m))
    return cls, masks, gts, [dict()] * batch_size


class _SetattrSpy:
    """Records attribute assignments on the given objects (test instrumentation only)."""

    def __init__(self, *objects):
        self.ids = {id(o) for o in objects}
        self.calls = []

    def __call__(self, original):
        spy = self

        def setattr_(obj, name, value):
            if id(obj) in spy.ids:
                spy.calls.append((type(obj).__name__, name))
            return original(obj, name, value)
        return setattr_


def test_2d_loss_with_another_k_changes_nothing_and_equals_a_head_of_that_k(monkeypatch):
    head = _build().decode_head
    head.train()
    k = 7  # a batch vocabulary of 7 names; the config has 4 classes
    before = (head.num_classes, list(head.class_weight), list(head.loss_cls.class_weight))
    spy = _SetattrSpy(head, head.loss_cls)
    monkeypatch.setattr(torch.nn.Module, '__setattr__', spy(torch.nn.Module.__setattr__))
    cls, masks, gts, metas = _random_2d_batch(k)
    torch.manual_seed(2)
    losses = head.loss_by_feat(cls, masks, gts, metas)
    monkeypatch.undo()
    assert spy.calls == []
    assert (head.num_classes, list(head.class_weight), list(head.loss_cls.class_weight)) == before
    assert {'loss_cls', 'loss_mask', 'loss_dice', 'd0.loss_cls'} <= set(losses)
    # the same numbers as a head configured with K = 7 (no-object weight 0.1)
    other = _build(num_things_classes=k, loss_cls=dict(class_weight=[1.0] * k + [0.1]))
    other = other.decode_head
    other.train()
    torch.manual_seed(2)
    expected = other.loss_by_feat(cls, masks, gts, metas)
    for name, value in expected.items():
        torch.testing.assert_close(losses[name], value, msg=name)
    assert losses['loss_cls'] > 0


def test_2d_layer_loss_equals_mmdet_s_for_the_configured_k():
    head = _build().decode_head
    head.train()
    cls, masks, gts, metas = _random_2d_batch(head.num_classes)
    torch.manual_seed(3)
    ours = head._loss_by_feat_single(cls[0], masks[0], gts, metas)
    torch.manual_seed(3)
    theirs = Mask2FormerHead._loss_by_feat_single(head, cls[0], masks[0], gts, metas)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)
    assert all(float(x) > 0 for x in ours)
