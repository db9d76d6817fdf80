"""Key mapping from the official ODIN (detectron2) checkpoints to this implementation.

The mapping is rule based and total: every official key is either mapped (possibly with a value
transform, e.g. Swin patch-merging channel order) or explicitly dropped (the loss buffer
``criterion.empty_weight``; in the joint open-vocabulary checkpoint the unused RoBERTa pooler and
RoBERTa's ``position_ids`` / ``token_type_ids`` buffers); anything else raises
:class:`ConversionError`. The frozen RoBERTa-base weights of the joint checkpoint are mapped
into ``decode_head.classifier.text_encoder.roberta`` (same names as transformers'
``RobertaModel``). After mapping, the result is checked against the target model's state dict
(missing, unexpected and mis-shaped keys all raise).

Entry points:

* :func:`convert_official_state_dict` - an official ODIN ``.pth`` state dict.
* :func:`convert_mask2former_state_dict` - the Mask2Former COCO init weights ``m2f_coco*.pkl``
  (detectron2 names, numpy arrays): same mapping minus the 3D parts.
* :func:`infer_architecture` / :func:`odin_model_cfg` - the ODIN model config matching a
  checkpoint (backbone, class count, queries, which 3D layers exist).
* :func:`check_state_dict` - validation against a model's state dict.
"""
import re
from collections import OrderedDict
from typing import Dict, Iterable, List, Optional, Tuple

import torch
from torch import Tensor

from projects.odin.utils.resources import find_resource

__all__ = [
    'ConversionError', 'convert_official_state_dict', 'convert_mask2former_state_dict',
    'infer_architecture', 'odin_model_cfg', 'base_model_cfg', 'check_state_dict',
    'BASE_MODEL_CONFIGS'
]

#: official keys (regexes) with no counterpart here: the loss buffer, RoBERTa's pooler (unused by
#: ODIN, our encoder is built without it) and its id buffers (not persistent in recent
#: transformers)
DROPPED_PATTERNS = (r'criterion\.empty_weight',
                    r'sem_seg_head\.predictor\.lang_encoder\.text_encoder\.'
                    r'(pooler\..+|embeddings\.(position_ids|token_type_ids))')
_BN_PARTS = ('weight', 'bias', 'running_mean', 'running_var')
_DROPPED = [re.compile(p) for p in DROPPED_PATTERNS]


def _is_dropped(key: str) -> bool:
    """Whether an official key is deliberately left out (``DROPPED_PATTERNS``)."""
    return any(p.fullmatch(key) for p in _DROPPED)


class ConversionError(KeyError):
    """Raised for any unmapped, missing or mis-shaped key."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ''


# ---------------------------------------------------------------------------- 3D blocks
def _convert_cross_view(sub: Dict[str, Tensor], prefix: str, out: Dict[str, Tensor]) -> None:
    """Convert one official CrossViewPAnet (its own keys) into ``prefix`` + our keys."""
    from projects.odin.layers.cross_view_attention import convert_official_cross_view_state_dict
    try:
        converted = convert_official_cross_view_state_dict(dict(sub))
    except KeyError as e:
        raise ConversionError(f'unmapped key in 3D block {prefix!r}: {e}') from e
    for k, v in converted.items():
        out[prefix + k] = v


def _group(sd: Dict[str, Tensor], pattern: str) -> Dict[Tuple[str, ...], Dict[str, Tensor]]:
    """Group keys matching ``pattern`` (regex with groups, last group = remainder)."""
    groups: Dict[Tuple[str, ...], Dict[str, Tensor]] = OrderedDict()
    rx = re.compile(pattern)
    for k, v in sd.items():
        m = rx.fullmatch(k)
        if m:
            groups.setdefault(m.groups()[:-1], OrderedDict())[m.groups()[-1]] = v
    return groups


# ---------------------------------------------------------------------------- backbones
def _resnet_key(k: str) -> Optional[str]:
    m = re.fullmatch(r'stem\.conv1\.(weight)', k)
    if m:
        return 'conv1.weight'
    m = re.fullmatch(r'stem\.conv1\.norm\.(\w+)', k)
    if m and m.group(1) in _BN_PARTS:
        return f'bn1.{m.group(1)}'
    m = re.fullmatch(r'res([2-5])\.(\d+)\.(conv[1-3]|shortcut)\.(weight)', k)
    if m:
        stage, blk, conv = int(m.group(1)) - 1, m.group(2), m.group(3)
        name = 'downsample.0' if conv == 'shortcut' else conv
        return f'layer{stage}.{blk}.{name}.weight'
    m = re.fullmatch(r'res([2-5])\.(\d+)\.(conv[1-3]|shortcut)\.norm\.(\w+)', k)
    if m and m.group(4) in _BN_PARTS:
        stage, blk, conv = int(m.group(1)) - 1, m.group(2), m.group(3)
        name = 'downsample.1' if conv == 'shortcut' else 'bn' + conv[-1]
        return f'layer{stage}.{blk}.{name}.{m.group(4)}'
    return None


def _convert_backbone(sd: Dict[str, Tensor], out: Dict[str, Tensor], used: set,
                      with_3d: bool) -> None:
    bb = OrderedDict((k[len('backbone.'):], v) for k, v in sd.items()
                     if k.startswith('backbone.'))
    is_swin = 'patch_embed.proj.weight' in bb
    # 3D fusion blocks: official names -> backbone.fusion_blocks.<i>
    if is_swin:
        cv = _group(bb, r'layers\.(\d+)\.cross_view_attn\.(.+)')
        proj = _group(bb, r'layers\.(\d+)\.(res_to_trans|trans_to_res)\.(.+)')
        stage_of = {key: int(key[0]) for key in cv}
    else:
        cv = _group(bb, r'cross_view_attn\.res(\d)\.(.+)')
        proj = _group(bb, r'(res_to_trans|trans_to_res)\.res(\d)\.(.+)')
        proj = OrderedDict(((k[1], k[0]), v) for k, v in proj.items())
        stage_of = {key: int(key[0]) - 2 for key in cv}
    stages = sorted(set(stage_of.values()))
    if stages and not with_3d:
        raise ConversionError('3D backbone layers found but with_3d=False')
    for key, sub in cv.items():
        idx = stages.index(stage_of[key])
        _convert_cross_view(sub, f'backbone.fusion_blocks.{idx}.attn.', out)
        prefix = f'layers.{key[0]}.cross_view_attn.' if is_swin else \
            f'cross_view_attn.res{key[0]}.'
        used.update('backbone.' + prefix + r for r in sub)
    for (lvl, which), sub in proj.items():
        stage = int(lvl) if is_swin else int(lvl) - 2
        if stage not in stages:
            raise ConversionError(f'backbone {which} of stage {lvl} without a 3D block')
        name = 'in_proj' if which == 'res_to_trans' else 'out_proj'
        for r, v in sub.items():
            if not re.fullmatch(r'[01]\.(weight|bias)', r):
                raise ConversionError(f'unmapped backbone projection key {which}.{lvl}.{r}')
            out[f'backbone.fusion_blocks.{stages.index(stage)}.{name}.{r}'] = v
            prefix = f'layers.{lvl}.{which}.' if is_swin else f'{which}.res{lvl}.'
            used.add('backbone.' + prefix + r)
    rest = OrderedDict((k, v) for k, v in bb.items() if 'backbone.' + k not in used)
    if is_swin:
        from mmdet.models.backbones.swin import swin_converter
        allowed = re.compile(r'(patch_embed\.(proj|norm)\.(weight|bias)|norm[0-3]\.(weight|bias)'
                             r'|layers\.\d+\.blocks\.\d+\.(norm[12]\.(weight|bias)|attn\.'
                             r'(qkv|proj)\.(weight|bias)|attn\.relative_position_(bias_table|'
                             r'index)|mlp\.fc[12]\.(weight|bias))|layers\.\d+\.downsample\.'
                             r'(reduction\.weight|norm\.(weight|bias)))')
        for k in rest:
            if not allowed.fullmatch(k):
                raise ConversionError(f'unmapped Swin backbone key backbone.{k}')
        for k, v in swin_converter(rest).items():
            out[k] = v
        used.update('backbone.' + k for k in rest)
    else:
        for k, v in rest.items():
            new = _resnet_key(k)
            if new is None:
                raise ConversionError(f'unmapped ResNet backbone key backbone.{k}')
            out['backbone.' + new] = v
            if new.endswith('running_var'):
                out['backbone.' + new[:-len('running_var')] + 'num_batches_tracked'] = \
                    torch.tensor(0, dtype=torch.long)
            used.add('backbone.' + k)


# ---------------------------------------------------------------------------- head
_PIXEL_RULES = [
    (r'input_proj\.(\d+)\.0\.(weight|bias)', r'input_convs.\1.conv.\2'),
    (r'input_proj\.(\d+)\.1\.(weight|bias)', r'input_convs.\1.gn.\2'),
    (r'transformer\.level_embed', r'level_encoding.weight'),
    (r'transformer\.encoder\.layers\.(\d+)\.self_attn\.(sampling_offsets|attention_weights|'
     r'value_proj|output_proj)\.(weight|bias)', r'encoder.layers.\1.self_attn.\2.\3'),
    (r'transformer\.encoder\.layers\.(\d+)\.linear1\.(weight|bias)',
     r'encoder.layers.\1.ffn.layers.0.0.\2'),
    (r'transformer\.encoder\.layers\.(\d+)\.linear2\.(weight|bias)',
     r'encoder.layers.\1.ffn.layers.1.\2'),
    (r'transformer\.encoder\.layers\.(\d+)\.norm1\.(weight|bias)', r'encoder.layers.\1.norms.0.\2'),
    (r'transformer\.encoder\.layers\.(\d+)\.norm2\.(weight|bias)', r'encoder.layers.\1.norms.1.\2'),
    (r'mask_features\.(weight|bias)', r'mask_feature.\1'),
    (r'adapter_1\.weight', r'lateral_convs.0.conv.weight'),
    (r'adapter_1\.norm\.(weight|bias)', r'lateral_convs.0.gn.\1'),
    (r'layer_1\.(weight|bias)', r'output_convs.0.conv.\1'),
    (r'layer_1\.norm\.(weight|bias)', r'output_convs.0.gn.\1'),
]

_PREDICTOR_RULES = [
    (r'transformer_cross_attention_layers\.(\d+)\.multihead_attn\.(in_proj_weight|in_proj_bias|'
     r'out_proj\.weight|out_proj\.bias)', r'transformer_decoder.layers.\1.cross_attn.attn.\2'),
    (r'transformer_cross_attention_layers\.(\d+)\.norm\.(weight|bias)',
     r'transformer_decoder.layers.\1.norms.0.\2'),
    (r'transformer_self_attention_layers\.(\d+)\.self_attn\.(in_proj_weight|in_proj_bias|'
     r'out_proj\.weight|out_proj\.bias)', r'transformer_decoder.layers.\1.self_attn.attn.\2'),
    (r'transformer_self_attention_layers\.(\d+)\.norm\.(weight|bias)',
     r'transformer_decoder.layers.\1.norms.1.\2'),
    (r'transformer_ffn_layers\.(\d+)\.linear1\.(weight|bias)',
     r'transformer_decoder.layers.\1.ffn.layers.0.0.\2'),
    (r'transformer_ffn_layers\.(\d+)\.linear2\.(weight|bias)',
     r'transformer_decoder.layers.\1.ffn.layers.1.\2'),
    (r'transformer_ffn_layers\.(\d+)\.norm\.(weight|bias)',
     r'transformer_decoder.layers.\1.norms.2.\2'),
    (r'decoder_norm\.(weight|bias)', r'transformer_decoder.post_norm.\1'),
    (r'(query_feat|query_embed|level_embed)\.weight', r'\1.weight'),
    (r'class_embed\.(weight|bias)', r'classifier.cls_embed.\1'),
    (r'mask_embed\.layers\.0\.(weight|bias)', r'mask_embed.0.\1'),
    (r'mask_embed\.layers\.1\.(weight|bias)', r'mask_embed.2.\1'),
    (r'mask_embed\.layers\.2\.(weight|bias)', r'mask_embed.4.\1'),
    (r'pe_layer\.position_embedding_head\.([013])\.(weight|bias)', r'pos_embed_3d.\1.\2'),
    # open vocabulary (joint 2D-3D checkpoint; names from the official decoder source)
    (r'transformer_text_cross_attention_layers\.(\d+)\.multihead_attn\.(in_proj_weight|'
     r'in_proj_bias|out_proj\.weight|out_proj\.bias)',
     r'classifier.text_cross_attn_layers.\1.attn.attn.\2'),
    (r'transformer_text_cross_attention_layers\.(\d+)\.norm\.(weight|bias)',
     r'classifier.text_cross_attn_layers.\1.norm.\2'),
    (r'lang_pos_embed\.weight', r'classifier.text_encoder.token_pos_embed.weight'),
    (r'lang_encoder\.text_projector\.0\.(weight|bias)',
     r'classifier.text_encoder.text_projector.\1'),
    (r'lang_encoder\.text_encoder\.(.+)', r'classifier.text_encoder.roberta.\1'),
]


def _apply_rules(key: str, rules) -> Optional[str]:
    for pattern, repl in rules:
        if re.fullmatch(pattern, key):
            return re.sub(pattern, repl, key)
    return None


def _convert_head(sd: Dict[str, Tensor], out: Dict[str, Tensor], used: set,
                  with_3d: bool) -> None:
    pd_prefix = 'sem_seg_head.pixel_decoder.'
    pd = OrderedDict((k[len(pd_prefix):], v) for k, v in sd.items() if k.startswith(pd_prefix))
    cv = _group(pd, r'cross_view_attn\.(\d+)\.(.+)')
    if cv and not with_3d:
        raise ConversionError('3D pixel-decoder layers found but with_3d=False')
    for (i, ), sub in cv.items():
        _convert_cross_view(sub, f'decode_head.pixel_decoder.fusion_blocks.{i}.', out)
        used.update(f'{pd_prefix}cross_view_attn.{i}.{r}' for r in sub)
    for k, v in pd.items():
        if pd_prefix + k in used:
            continue
        new = _apply_rules(k, _PIXEL_RULES)
        if new is None:
            raise ConversionError(f'unmapped pixel-decoder key {pd_prefix}{k}')
        out['decode_head.pixel_decoder.' + new] = v
        used.add(pd_prefix + k)
    pr_prefix = 'sem_seg_head.predictor.'
    for k, v in sd.items():
        if not k.startswith(pr_prefix) or _is_dropped(k):
            continue
        new = _apply_rules(k[len(pr_prefix):], _PREDICTOR_RULES)
        if new is None:
            raise ConversionError(f'unmapped decoder key {k}')
        out['decode_head.' + new] = v
        used.add(k)


def convert_official_state_dict(sd: Dict[str, Tensor], with_3d: bool = True) -> 'OrderedDict':
    """Convert an official ODIN state dict to this implementation's keys.

    Args:
        sd: the official ``model`` state dict (detectron2 names).
        with_3d: whether 3D layers may be present (False for plain Mask2Former weights).

    Returns:
        OrderedDict: our state dict (adds ``num_batches_tracked`` = 0 for every ResNet BN).

    Raises:
        ConversionError: on any key that no rule maps.
    """
    out: Dict[str, Tensor] = OrderedDict()
    used: set = set()
    _convert_backbone(sd, out, used, with_3d)
    _convert_head(sd, out, used, with_3d)
    unmapped = [k for k in sd if k not in used and not _is_dropped(k)]
    if unmapped:
        raise ConversionError(f'{len(unmapped)} unmapped official keys, e.g. {unmapped[:5]}')
    return out


# ---------------------------------------------------------------------------- Mask2Former init
#: keys of our model that Mask2Former COCO weights cannot provide (re-initialised, as officially)
M2F_MISSING_PATTERNS = (r'backbone\.fusion_blocks\..*', r'decode_head\.pixel_decoder\.'
                        r'fusion_blocks\..*', r'decode_head\.pos_embed_3d\..*',
                        r'decode_head\.classifier\.cls_embed\..*', r'.*relative_position_index')


def convert_mask2former_state_dict(sd: Dict, model_sd: Optional[Dict[str, Tensor]] = None
                                   ) -> Tuple['OrderedDict', List[str]]:
    """Convert Mask2Former COCO weights (``m2f_coco*.pkl``) for ODIN initialisation.

    Same mapping as :func:`convert_official_state_dict` without 3D layers. The COCO class head
    (81 classes) is dropped, and the stride-4 output conv is dropped when its shape differs
    from the model's (Mask2Former 3x3 vs ODIN 1x1, re-initialised as in the official code).

    Args:
        sd: detectron2 ``model`` dict (numpy arrays or tensors).
        model_sd: our model's state dict, to drop shape-mismatched output convs; optional.

    Returns:
        tuple: converted state dict and the list of dropped official keys.
    """
    tensors = OrderedDict()
    for k, v in sd.items():
        tensors[k] = v if isinstance(v, Tensor) else torch.as_tensor(v)
    dropped = [k for k in tensors if k.startswith('sem_seg_head.predictor.class_embed')]
    for k in dropped:
        tensors.pop(k)
    out = convert_official_state_dict(tensors, with_3d=False)
    if model_sd is not None:
        for k in [k for k in out if k.startswith('decode_head.pixel_decoder.output_convs')]:
            if k not in model_sd or tuple(model_sd[k].shape) != tuple(out[k].shape):
                out.pop(k)
                dropped.append(k)
    return out, dropped


def load_mask2former_pkl(path: str) -> Dict:
    """Read a detectron2 ``.pkl`` (``{'model': {name: ndarray}, ...}``)."""
    import pickle
    with open(path, 'rb') as f:
        data = pickle.load(f, encoding='latin1')
    return data.get('model', data)


# ---------------------------------------------------------------------------- validation
def check_state_dict(converted: Dict[str, Tensor],
                     model_sd: Dict[str, Tensor],
                     allow_missing: Iterable[str] = ()) -> None:
    """Raise if ``converted`` does not exactly fit ``model_sd``.

    Args:
        converted: converted state dict.
        model_sd: target model state dict (tensors or anything with ``.shape``).
        allow_missing: regexes of model keys that may be absent from ``converted``.

    Raises:
        ConversionError: listing unexpected, missing and mis-shaped keys.
    """
    allow = [re.compile(p) for p in allow_missing]
    unexpected = [k for k in converted if k not in model_sd]
    missing = [
        k for k in model_sd if k not in converted and not any(p.fullmatch(k) for p in allow)
    ]
    shapes = [(k, tuple(converted[k].shape), tuple(model_sd[k].shape)) for k in converted
              if k in model_sd and tuple(converted[k].shape) != tuple(model_sd[k].shape)]
    if unexpected or missing or shapes:
        msg = []
        if unexpected:
            msg.append(f'{len(unexpected)} unexpected keys (not in the model): {unexpected[:8]}')
        if missing:
            msg.append(f'{len(missing)} missing keys: {missing[:8]}')
        if shapes:
            msg.append(f'{len(shapes)} shape mismatches (key, checkpoint, model): {shapes[:8]}')
        raise ConversionError('; '.join(msg))


# ---------------------------------------------------------------------------- architectures
def infer_architecture(sd: Dict[str, Tensor]) -> dict:
    """Describe the architecture of an official state dict.

    Returns:
        dict: ``backbone`` ('r50' or 'swin'), ``num_classes``, ``num_queries``,
        ``backbone_fusion_layers`` (layers per fused stage, () if none), ``decoder_fusion``,
        ``open_vocab`` (joint 2D-3D checkpoint with the text head; its ``num_classes`` is then
        the closed-set default 20, the vocabulary comes from the data at run time).
    """
    is_swin = 'backbone.patch_embed.proj.weight' in sd
    layers: Dict[int, int] = {}
    rx = re.compile(r'backbone\.(?:layers\.(\d)\.cross_view_attn|cross_view_attn\.res(\d))\.'
                    r'cross_view_attention_layers\.(\d+)\.norm\.weight')
    for k in sd:
        m = rx.fullmatch(k)
        if m:
            stage = int(m.group(1)) if m.group(1) else int(m.group(2)) - 2
            layers[stage] = max(layers.get(stage, 0), int(m.group(3)) + 1)
    open_vocab = 'sem_seg_head.predictor.lang_pos_embed.weight' in sd
    return dict(
        backbone='swin' if is_swin else 'r50',
        num_classes=(20 if open_vocab else
                     sd['sem_seg_head.predictor.class_embed.weight'].shape[0] - 1),
        num_queries=sd['sem_seg_head.predictor.query_feat.weight'].shape[0],
        fusion_stages=tuple(sorted(layers)),
        backbone_fusion_layers=tuple(layers[s] for s in sorted(layers)),
        decoder_fusion=any(k.startswith('sem_seg_head.pixel_decoder.cross_view_attn.')
                           for k in sd),
        open_vocab=open_vocab)


#: the packaged base model configs of each backbone (projects/odin/.mim/configs, or the checkout's)
BASE_MODEL_CONFIGS = {'r50': 'configs/_base_/models/odin_r50.py',
                      'swin': 'configs/_base_/models/odin_swin.py'}


def base_model_cfg(backbone: str = 'r50') -> dict:
    """The ``model`` dict of a packaged base config (``configs/_base_/models/odin_<backbone>.py``).

    The configs are the one source of the architectures; they are found through
    :func:`projects.odin.utils.resources.find_resource` (the installed package data first, then
    the working directory).

    Args:
        backbone: 'r50' or 'swin'.

    Returns:
        dict: a new plain model config dict.

    Raises:
        ValueError: an unknown backbone.
        FileNotFoundError: the configs are neither installed nor in the working directory.
    """
    from mmengine.config import Config
    if backbone not in BASE_MODEL_CONFIGS:
        raise ValueError(f"backbone must be one of {sorted(BASE_MODEL_CONFIGS)}, got {backbone!r}")
    return Config.fromfile(find_resource(BASE_MODEL_CONFIGS[backbone])).model.to_dict()


def odin_model_cfg(backbone: str = 'r50',
                   num_classes: int = 20,
                   num_queries: int = 100,
                   fusion_stages=(1, 2, 3),
                   backbone_fusion_layers=(2, 6, 2),
                   decoder_fusion: bool = True,
                   open_vocab: bool = False,
                   roberta: Optional[str] = None,
                   **overrides) -> dict:
    """Full-size ODIN model config for an architecture (as in ``configs/_base_/models``).

    Built from the packaged base config of the backbone (:func:`base_model_cfg`); the
    checkpoint's fusion layers, class count and queries replace the config's.

    Args:
        backbone: 'r50' or 'swin' (Swin-B, IN21k-384).
        num_classes: closed-set classes K (head has K+1 outputs).
        num_queries: object queries.
        fusion_stages: backbone stages followed by a 3D block (0 = res2).
        backbone_fusion_layers: attention layers per backbone 3D block.
        decoder_fusion: whether the pixel decoder has its per-level 3D layers.
        open_vocab: open-vocabulary class head (joint 2D-3D checkpoint).
        roberta: RoBERTa folder / cached hub name of the text encoder (open_vocab only).
        **overrides: top-level keys replaced in the model dict.

    Returns:
        dict: model config (for ``MODELS.build`` under the mmdet3d scope).
    """
    model = base_model_cfg(backbone)
    head = model['decode_head']
    model['backbone'].update(fusion_stages=tuple(fusion_stages),
                             fusion_layers=tuple(backbone_fusion_layers))
    head['num_things_classes'] = num_classes
    head['num_queries'] = num_queries
    head['loss_cls']['class_weight'] = [1.0] * num_classes + [0.1]
    if not decoder_fusion:
        head['pixel_decoder']['level_fusion_cfg'] = None
    if open_vocab:
        if roberta is None:
            raise ValueError('an open-vocabulary (joint) ODIN model needs the RoBERTa-base '
                             'folder of its text encoder: pass roberta=PATH')
        head['classifier'] = dict(
            type='OpenVocabClassifier',
            text_encoder=dict(type='ODINTextEncoder', pretrained=roberta, max_seq_len=256),
            temperature=0.07)
    model.update(overrides)
    return model
