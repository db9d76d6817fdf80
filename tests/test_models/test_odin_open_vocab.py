"""Open-vocabulary class head: caption/token map, pooling, background, frozen RoBERTa, training.

A tiny random RoBERTa (hidden 32, 2 layers, byte-level BPE tokenizer) is written to a temporary
folder by :func:`make_tiny_roberta` and loaded through the real ``pretrained=PATH`` code path.
"""
import copy

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config

from odin_testing import REPO_ROOT, create_odin_inputs, make_tiny_roberta
from projects.odin.models.open_vocab import (
    build_caption,
    open_vocab_class_logits,
    pool_token_logits,
    token_class_map,
)

CFG = f'{REPO_ROOT}/configs/odin/odin_tiny_test.py'
VOCAB = ('chair', 'sofa bed', 'table', 'door')


pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def roberta_dir(tmp_path_factory):
    return make_tiny_roberta(str(tmp_path_factory.mktemp('tiny_roberta')))


@pytest.fixture(scope='module')
def encoder(roberta_dir):
    from projects.odin.models.text_encoder import ODINTextEncoder
    return ODINTextEncoder(roberta_dir, embed_dims=16)


def _build(roberta_dir, class_names=VOCAB, **head):
    from mmdet3d.registry import MODELS
    from mmengine.registry import init_default_scope

    import projects.odin  # noqa: F401
    init_default_scope('mmdet3d')
    model_cfg = copy.deepcopy(Config.fromfile(CFG).model)
    model_cfg.decode_head.classifier = dict(
        type='OpenVocabClassifier', class_names=class_names,
        text_encoder=dict(type='ODINTextEncoder', pretrained=roberta_dir))
    model_cfg.decode_head.update(head)
    torch.manual_seed(0)
    model = MODELS.build(model_cfg)
    model.init_weights()
    return model


def _with_vocab(data, names):
    for sample in data['data_samples']:
        sample.set_metainfo(dict(classes=tuple(names)))
    return data


def _token_text(encoder, ids):
    return ''.join(encoder.tokenizer.convert_ids_to_tokens(ids)).replace('Ġ', ' ').strip()


# ---------------------------------------------------------------------------- caption
def test_caption_and_positive_map_with_multi_token_names(encoder):
    names = ('chair', 'sofa bed', 'shower_curtain (tall)', 'otherfurniture')
    caption, ids, pos_map = encoder.tokenize(names)
    # official format: cleaned names joined by '. ', '__background__' cleaned to ' background '
    assert caption == 'chair. sofa bed. shower curtain . otherfurniture.  background '
    assert pos_map.shape == (len(names) + 1, len(ids)) and pos_map.dtype == torch.bool
    expected = ['chair', 'sofa bed', 'shower curtain', 'otherfurniture', 'background']
    for c, text in enumerate(expected):
        assert _token_text(encoder, ids[pos_map[c]]) == text
    assert pos_map[1].sum() >= 2  # 'sofa bed' spans several tokens
    # every token belongs to at most one class; <s>, </s> and the '.' separators to none
    assert pos_map.sum(0).max() == 1
    assert not pos_map[:, 0].any() and not pos_map[:, -1].any()
    dots = ids == encoder.tokenizer.convert_tokens_to_ids('.')
    assert dots.sum() == 4 and not pos_map[:, dots].any()


def test_truncation_and_empty_class_errors(roberta_dir):
    from projects.odin.models.text_encoder import ODINTextEncoder
    short = ODINTextEncoder(roberta_dir, embed_dims=8, max_seq_len=10)
    short.tokenize(('chair', 'table'))  # fits
    cut = r"max_seq_len=10; class\(es\) \['door', '__background__'\] would be cut off"
    with pytest.raises(ValueError, match=cut):
        short.tokenize(('chair', 'table', 'sofa bed', 'door'))
    _, spans = build_caption(('chair', 'table'))
    with pytest.raises(ValueError, match=r"no token for class\(es\) \['table'\]"):
        token_class_map([(0, 0), (0, 5), (0, 0)], spans[:2], ('chair', 'table'))
    with pytest.raises(ValueError, match='empty after cleaning'):
        build_caption(('chair', '(nothing)'))


def test_missing_pretrained_error_names_path_and_remedy(tmp_path):
    from projects.odin.models.text_encoder import ODINTextEncoder
    missing = str(tmp_path / 'no_roberta_here')
    with pytest.raises(FileNotFoundError) as err:
        ODINTextEncoder(missing)
    msg = str(err.value)
    assert missing in msg and 'no such folder' in msg
    assert "save_pretrained" in msg and 'text_encoder.pretrained' in msg
    (tmp_path / 'empty').mkdir()
    with pytest.raises(FileNotFoundError, match='folder exists but does not hold'):
        ODINTextEncoder(str(tmp_path / 'empty'))


# ---------------------------------------------------------------------------- logits
def test_token_to_class_mean_pooling_hand_checked():
    token_logits = torch.arange(7.).view(1, 1, 7).repeat(2, 3, 1)
    pos_map = torch.zeros(3, 7, dtype=torch.bool)
    pos_map[0, [1, 2]] = True  # class 0: tokens 1, 2 -> 1.5
    pos_map[1, 4] = True  # class 1: token 4 -> 4
    pos_map[2, [5, 6]] = True  # background: tokens 5, 6 -> 5.5
    out = pool_token_logits(token_logits, pos_map)
    assert out.shape == (2, 3, 3)
    torch.testing.assert_close(out[0, 0], torch.tensor([1.5, 4.0, 5.5]))
    # cosine / temperature: a query equal to token 4 scores 1/0.07 on class 1
    text = F.normalize(torch.randn(1, 7, 8), dim=-1)
    query = text[:, 4:5] * 3.0
    logits = open_vocab_class_logits(query, text, pos_map, temperature=0.07)
    torch.testing.assert_close(logits[0, 0, 1], torch.tensor(1 / 0.07))
    assert logits.abs().max() <= 1 / 0.07 + 1e-4


def test_text_cross_attention_ignores_padded_tokens():
    from projects.odin.models.open_vocab import TextCrossAttentionLayer
    torch.manual_seed(0)
    layer = TextCrossAttentionLayer(16, 4)
    layer.init_weights()
    query, query_pos = torch.randn(2, 5, 16), torch.randn(2, 5, 16)
    text, text_pos = torch.randn(2, 6, 16), torch.randn(2, 6, 16)
    ref = layer(query, query_pos, text, text_pos, torch.zeros(2, 6, dtype=torch.bool))
    # padding to a longer length (as the official max_length padding) changes nothing
    pad_text = torch.cat([text, torch.randn(2, 4, 16)], 1)
    pad_pos = torch.cat([text_pos, torch.randn(2, 4, 16)], 1)
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[:, 6:] = True
    torch.testing.assert_close(layer(query, query_pos, pad_text, pad_pos, mask), ref)
    assert not torch.allclose(layer(query, query_pos, pad_text, pad_pos, None), ref)


def test_background_tokens_give_the_no_object_logit(roberta_dir):
    model = _build(roberta_dir)
    head = model.decode_head
    text = head.classifier.text_encoder(VOCAB, 1)
    bg_tokens = text['pos_map'][-1]
    # a query aligned with the mean background token direction: no-object (last) wins
    with torch.no_grad():
        head.classifier.cls_embed.weight.copy_(torch.eye(head.classifier.cls_embed.weight.shape[0]))
        head.classifier.cls_embed.bias.zero_()
        bg = F.normalize(text['feats'][0, bg_tokens], dim=-1).mean(0)
        logits = head.classifier(bg.view(1, 1, -1), text)
    assert logits.shape == (1, 1, len(VOCAB) + 1)
    assert logits[0, 0].argmax() == len(VOCAB)
    # unmatched queries are trained towards the background index with the no-object weight
    cls = torch.randn(1, 8, len(VOCAB) + 1)
    from mmengine.structures import InstanceData
    targets = [InstanceData(labels=torch.zeros(0, dtype=torch.long),
                            masks=torch.zeros(0, 5, dtype=torch.bool))]
    losses = head.loss_by_feat_3d([cls], [torch.randn(1, 8, 5)], [5], targets)
    expected = -cls.log_softmax(-1)[..., -1].mean() * head.loss_cls.loss_weight
    torch.testing.assert_close(losses['loss_cls'], expected)
    # the per-batch K is restored after the loss
    assert head.num_classes == 4 and len(head.loss_cls.class_weight) == 5


# ---------------------------------------------------------------------------- model
def test_logit_shapes_3d_and_2d_follow_the_batch_vocabulary(roberta_dir):
    model = _build(roberta_dir)
    model.eval()
    d3 = _with_vocab(create_odin_inputs(num_views=2, img_hw=(32, 32), num_points=100,
                                        batch_size=2), ('a', 'b', 'c'))
    d2 = _with_vocab(create_odin_inputs(img_hw=(32, 32), mode='2d', batch_size=2),
                     ('w', 'x', 'y', 'z', 'v', 'u'))
    with torch.no_grad():
        cls3, _ = model(**model.data_preprocessor(d3, False), mode='tensor')
        cls2, _ = model(**model.data_preprocessor(d2, False), mode='tensor')
        # no metainfo['classes']: the config's class_names
        plain = create_odin_inputs(num_views=2, img_hw=(32, 32), num_points=100)
        cls_cfg, _ = model(**model.data_preprocessor(plain, False), mode='tensor')
    assert len(cls3) == 4 and all(c.shape == (2, 8, 4) for c in cls3)  # deep supervision
    # the queries read the text: another vocabulary changes the masks of later layers
    with torch.no_grad():
        d3_other = _with_vocab(copy.deepcopy(d3), ('door', 'table', 'chair'))
        _, masks_a = model(**model.data_preprocessor(d3, False), mode='tensor')
        _, masks_b = model(**model.data_preprocessor(d3_other, False), mode='tensor')
    torch.testing.assert_close(masks_a[0], masks_b[0])  # initial prediction: before any layer
    assert not torch.allclose(masks_a[-1], masks_b[-1])
    assert all(c.shape == (2, 8, 7) for c in cls2)
    assert cls_cfg[-1].shape == (1, 8, len(VOCAB) + 1)
    # one encoding per vocabulary is cached
    assert len(model.decode_head.classifier.text_encoder._cache) == 4
    mixed = create_odin_inputs(num_views=2, img_hw=(32, 32), num_points=100, batch_size=2)
    mixed['data_samples'][0].set_metainfo(dict(classes=('a', 'b')))
    mixed['data_samples'][1].set_metainfo(dict(classes=('a', 'c')))
    with pytest.raises(ValueError, match='ONE vocabulary'):
        model(**model.data_preprocessor(mixed, False), mode='tensor')
    model.decode_head.class_names = None
    with pytest.raises(ValueError, match=r'metainfo\["classes"\].*class_names'):
        model(**model.data_preprocessor(plain, False), mode='tensor')


def test_open_vocab_3d_training_frozen_encoder_and_predictions(roberta_dir):
    from transformers import RobertaModel
    model = _build(roberta_dir)
    model.train()
    roberta = model.decode_head.classifier.text_encoder.roberta
    assert not roberta.training and not any(p.requires_grad for p in roberta.parameters())
    # init_weights kept the pretrained weights
    ref = RobertaModel.from_pretrained(roberta_dir, add_pooling_layer=False).state_dict()
    before = {k: v.clone() for k, v in roberta.state_dict().items()}
    assert all(torch.equal(before[k], ref[k]) for k in before)
    proj_before = model.decode_head.classifier.text_encoder.text_projector.weight.clone()
    data = _with_vocab(create_odin_inputs(num_views=2, img_hw=(32, 32), num_points=200),
                       VOCAB)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    history = []
    for _ in range(15):
        losses = model(**model.data_preprocessor(data, True), mode='loss')
        total = sum(v for k, v in losses.items() if 'loss' in k)
        opt.zero_grad()
        total.backward()
        assert all(p.grad is None for p in roberta.parameters())
        opt.step()
        history.append(total.item())
    assert {'loss_cls', 'd0.loss_cls', 'd2.loss_dice'} <= set(losses)
    assert sum(history[-3:]) < 0.7 * sum(history[:3]), history
    assert all(torch.equal(before[k], v) for k, v in roberta.state_dict().items())
    classifier = model.decode_head.classifier
    assert not torch.equal(proj_before, classifier.text_encoder.text_projector.weight)
    assert classifier.text_cross_attn_layers[0].attn.attn.in_proj_weight.grad is not None
    model.eval()
    with torch.no_grad():
        pred = model(**model.data_preprocessor(data, False), mode='predict')[0].pred_pts_seg
    assert pred.instance_labels.shape == (10, )
    assert pred.instance_labels.max() < len(VOCAB) and pred.pts_semantic_mask.max() < len(VOCAB)
    # a 2D batch with another vocabulary: labels within that vocabulary
    d2 = _with_vocab(create_odin_inputs(img_hw=(32, 32), mode='2d', num_classes=6), 'abcdef')
    model.train()
    losses = model(**model.data_preprocessor(d2, True), mode='loss')
    assert torch.isfinite(sum(v for k, v in losses.items() if 'loss' in k))
    model.eval()
    with torch.no_grad():
        inst = model(**model.data_preprocessor(d2, False), mode='predict')[0].pred_instances
    assert len(inst.labels) == 10 and inst.labels.max() < 6
    # the per-batch K is not stored anywhere: the configured 2D fusion head keeps no K
    assert 'num_things_classes' not in model.decode_head.fusion_head_2d
    assert model.decode_head.num_classes == 4
