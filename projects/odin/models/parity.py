"""Numerical parity with the official ODIN implementation on the reference goldens.

A golden (``/work/shared/reference/golden_<name>.pt``, made by running the official code on CPU)
stores the inputs of one eval forward pass and the tensors at every stage. This module fills the
**official** state-dict keys (``statedict_<name>.tsv``) with the deterministic rule of the
reference README (§3), converts them with :func:`convert_official_state_dict`, runs our model on
the golden inputs and compares every recorded stage.
"""
import math
import os.path as osp
import zlib
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor

from .neighbors import official_cpu_ties
from .official_converter import (
    check_state_dict,
    convert_official_state_dict,
    infer_architecture,
    odin_model_cfg,
)

#: relative error above which a continuous stage fails
TOLERANCE = 1e-4


def fill_value(key: str, shape: Tuple[int, ...]) -> Tensor:
    """The reference's deterministic parameter value of one official state-dict entry."""
    g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    if key.endswith('num_batches_tracked'):
        return torch.zeros(shape)
    if key.endswith('running_var'):
        return 0.5 + torch.rand(shape, generator=g)
    if key.endswith('running_mean'):
        return 0.1 * torch.randn(shape, generator=g)
    if len(shape) == 1 and key.endswith('weight'):
        return 1 + 0.1 * torch.randn(shape, generator=g)
    if len(shape) <= 1:
        return 0.02 * torch.randn(shape, generator=g)
    return torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))


def read_statedict_tsv(path: str) -> 'OrderedDict[str, Tuple[Tuple[int, ...], str]]':
    """Read ``key<TAB>[shape]<TAB>dtype`` lines (comments skipped)."""
    spec = OrderedDict()
    with open(path) as f:
        for line in f:
            if not line.strip() or line.startswith('#'):
                continue
            key, shape, dtype = line.rstrip('\n').split('\t')[:3]
            dims = [int(d) for d in shape.strip('[]').split(',') if d.strip()]
            spec[key] = (tuple(dims), dtype.replace('torch.', ''))
    return spec


def filled_official_state_dict(tsv_path: str) -> 'OrderedDict[str, Tensor]':
    """Official keys with rule-filled float32 values (non-float entries are left out)."""
    out = OrderedDict()
    for key, (shape, dtype) in read_statedict_tsv(tsv_path).items():
        if dtype.startswith('float'):
            out[key] = fill_value(key, shape)
    return out


# ---------------------------------------------------------------------------- model + inputs
DATASET_SETTINGS = {
    # name prefix -> (ghost points, superpoints, skip classes (0-based))
    'scannet_': (True, True, (18, 19)),
    'scannet200': (True, True, ()),
    's3dis': (True, False, ()),
    'matterport': (True, True, ()),
    'ai2thor': (False, False, ()),
    'alfred': (False, False, ()),
}


def _settings(name: str):
    for prefix, val in DATASET_SETTINGS.items():
        if name.startswith(prefix):
            return val
    return True, True, ()


def build_parity_model(golden: dict, reference_dir: str):
    """Build our model for the golden's architecture and load converted rule-filled weights."""
    from mmdet3d.registry import MODELS
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet3d')
    name = golden['meta']['name']
    official = filled_official_state_dict(osp.join(reference_dir, f'statedict_{name}.tsv'))
    arch = infer_architecture(official)
    ghost, superpoints, skip = _settings(name)
    cfg = odin_model_cfg(**arch, use_ghost_points=ghost, use_superpoints=superpoints)
    cfg['test_cfg'].update(skip_classes=skip, topk=100)
    model = MODELS.build(cfg)
    converted = convert_official_state_dict(official)
    model_sd = model.state_dict()
    check_state_dict(converted, model_sd, allow_missing=[r'.*relative_position_index'])
    missing, unexpected = model.load_state_dict(converted, strict=False)
    assert not unexpected and all('relative_position_index' in k for k in missing)
    model.eval()
    return model, arch


def golden_data(golden: dict) -> dict:
    """Our data-preprocessor input (DATA_CONTRACT.md) for the golden's batched input."""
    from mmdet3d.structures import Det3DDataSample
    bi = golden['inputs']['batched_inputs'][0]
    imgs = torch.stack(bi['images'])
    inputs = dict(
        img=[imgs],
        depths=[torch.stack(bi['depths'])],
        poses=[torch.stack(bi['poses'])],
        intrinsics=[torch.stack(bi['intrinsics'])])
    if bi.get('use_ghost', False) and 'scannet_coords' in bi:
        inputs['points'] = [torch.cat([bi['scannet_coords'], bi['scannet_color'] / 255.], 1)]
        inputs['superpoints'] = [bi['scannet_segments'].long()]
    else:
        # sensor points: depth-valid pixels of the half-resolution unprojected frames
        xyz = bi['original_xyz'][:, ::2, ::2]
        valid = torch.stack(bi['valids'])[:, ::2, ::2]
        inputs['points'] = [xyz[valid]]
    sample = Det3DDataSample(metainfo=dict(img_shape=tuple(imgs.shape[-2:]),
                                           ori_shape=tuple(imgs.shape[-2:]),
                                           num_views=imgs.shape[0]))
    return dict(inputs=inputs, data_samples=[sample])


# ---------------------------------------------------------------------------- comparison
def rel_err(ours: Tensor, ref: Tensor) -> float:
    """Max |ours - ref| / max |ref| (shape mismatch -> inf)."""
    ours, ref = ours.detach().float(), ref.detach().float()
    if tuple(ours.shape) != tuple(ref.shape):
        return float('inf')
    if ref.numel() == 0:
        return 0.0
    return ((ours - ref).abs().max() / ref.abs().max().clamp_min(1e-12)).item()


class Recorder:
    """Forward hooks storing module outputs under names."""

    def __init__(self) -> None:
        self.data: Dict[str, object] = {}
        self.handles = []

    def hook(self, module, name: str, input_index: Optional[int] = None) -> None:
        """Store the output (or input ``input_index``) of ``module`` under ``name``."""
        def fn(mod, args, out):
            self.data[name] = args[input_index] if input_index is not None else out
        self.handles.append(module.register_forward_hook(fn))

    def remove(self) -> None:
        """Remove all hooks."""
        for h in self.handles:
            h.remove()


def run_parity(golden_path: str, reference_dir: Optional[str] = None,
               verbose: bool = True,
               official_ties: bool = True) -> Tuple[bool, List[Tuple[str, str, bool]]]:
    """Run the parity check of one golden.

    Args:
        golden_path: ``golden_<name>.pt``.
        reference_dir: folder with ``statedict_<name>.tsv`` (default: the golden's folder).
        verbose: print the table.
        official_ties: order exactly tied kNN candidates as the official CPU harness did
            (:func:`official_cpu_ties`); False uses the default ``projects.odin.ops.knn``.

    Returns:
        tuple: overall pass flag and rows ``(stage, value, ok)``.
    """
    reference_dir = reference_dir or osp.dirname(osp.abspath(golden_path))
    golden = torch.load(golden_path, weights_only=True)
    model, arch = build_parity_model(golden, reference_dir)
    G = golden['intermediates']
    rec = Recorder()
    bb = model.backbone
    names = ['res3', 'res4', 'res5']
    swin = arch['backbone'] == 'swin'
    for i, blk in enumerate(bb.fusion_blocks):
        stage = bb.fusion_stages[i]
        rec.hook(blk.in_proj, f'bb.in.{stage}')
        rec.hook(blk.attn, f'bb.attn.{stage}')
        rec.hook(blk.out_proj, f'bb.out_proj.{stage}')
    pd = model.decode_head.pixel_decoder
    rec.hook(pd.encoder, 'pd.encoder')
    if pd.fusion_blocks is not None:
        for i, blk in enumerate(pd.fusion_blocks):
            rec.hook(blk, f'pd.fusion.{i}')
    rec.hook(pd.lateral_convs[0], 'pd.lateral')
    rec.hook(pd.output_convs[0], 'pd.output')
    data = golden_data(golden)
    record: Dict[str, object] = {}
    with torch.no_grad(), official_cpu_ties(official_ties):
        data = model.data_preprocessor(data, False)
        inputs, samples = data['inputs'], data['data_samples']
        (cls_list, mask_list, counts), geometry, ghost, _ = model._forward_3d(
            inputs, samples, record)
        points = inputs['points']
        logits = model.point_logits(mask_list[-1][0, :, :counts[0]], 0, geometry, ghost,
                                    points[0])
        result = model.postprocess(cls_list[-1][0], logits)
    rec.remove()
    R = rec.data
    rows: List[Tuple[str, str, bool]] = []

    def cont(stage: str, ours, ref) -> None:
        e = rel_err(ours, ref)
        rows.append((stage, f'{e:.2e}', e <= TOLERANCE))

    def exact(stage: str, ok: bool, detail: str = '') -> None:
        rows.append((stage, 'equal' if ok else f'DIFFERENT {detail}', ok))

    cont('prep.images_normalized_padded', inputs['imgs'].flatten(0, 1),
         G['prep.images_normalized_padded'])
    bi = golden['inputs']['batched_inputs'][0]
    for j in range(4):
        geo = geometry[3 - j]
        cont(f'prep.multi_scale_xyz[{j}]', geo.point_xyz, bi['multi_scale_xyz'][j].reshape(-1, 3))
        ref = G['prep.multi_scale_p2v'][j][0]
        exact(f'prep.multi_scale_p2v[{j}]', bool(torch.equal(geo.p2v, ref)))
    for stage in bb.fusion_stages:
        nm = names[stage - 1]
        pre = f'backbone.layers.{stage}.' if swin else 'backbone.'
        cv = f'{pre}cross_view_attn.' if swin else f'backbone.cross_view_attn.{nm}.'
        geo = geometry[stage]
        cont(f'{cv}in_features', R[f'bb.in.{stage}'], G[f'{cv}in_features'])
        cont(f'{cv}voxel_xyz', geo.voxel_xyz, G[f'{cv}voxel_xyz'])
        ref_knn = G[f'{cv}knn_idx'].long()
        same = (torch.sort(geo.knn_idx, 1).values == torch.sort(ref_knn, 1).values).all(1)
        exact(f'{cv}knn_idx', bool(same.all()), f'{(~same).sum().item()} rows')
        last = max(int(k.split('layer')[-1].split('.')[0]) for k in G
                   if k.startswith(cv + 'layer'))
        cont(f'{cv}layer{last}.out_voxel', R[f'bb.attn.{stage}'],
             G[f'{cv}layer{last}.out_voxel'][:, 0])
        tr = f'{pre}trans_to_res.out' if swin else f'backbone.trans_to_res.{nm}.out'
        cont(tr, R[f'bb.out_proj.{stage}'], G[tr])
    for j, lvl in enumerate(['res2', 'res3', 'res4', 'res5']):
        cont(f'backbone.out.{lvl}', record['backbone.out'][j], G[f'backbone.out.{lvl}'])
    if ghost is not None:
        exact('prep.scannet_p2v_batched',
              bool(torch.equal(ghost.p2v[0], G['prep.scannet_p2v_batched'][0])))
        if ghost.segments is not None:
            exact('prep.scannet_segments_batched',
                  bool(torch.equal(ghost.segments[0], G['prep.scannet_segments_batched'][0])))
    enc = R['pd.encoder']
    cont('pixel_decoder.deform_encoder_out[0]', enc, G['pixel_decoder.deform_encoder_out'][0])
    if pd.fusion_blocks is not None:
        for i in range(3):
            key = f'sem_seg_head.pixel_decoder.cross_view_attn.{i}.layer0.out_voxel'
            cont(key, R[f'pd.fusion.{i}'], G[key][:, 0])
    for j in range(3):
        cont(f'pixel_decoder.multi_scale_features[{j}]',
             record['pixel_decoder.multi_scale_features'][j],
             G['pixel_decoder.multi_scale_features'][j])
    cont('pixel_decoder.lateral_conv0.out', R['pd.lateral'], G['pixel_decoder.lateral_conv0.out'])
    cont('pixel_decoder.output_conv0.out', R['pd.output'], G['pixel_decoder.output_conv0.out'])
    mf = record['pixel_decoder.mask_features']
    mf = mf[0][None, :, :, None] if isinstance(mf, list) else mf
    cont('pixel_decoder.mask_features', mf, G['pixel_decoder.mask_features'])
    cont('decoder.in.mask_features_xyz', record['decoder.in.mask_features_xyz'],
         G['decoder.in.mask_features_xyz'][0])
    for li in range(3):
        for part in ('memory', 'memory_pos'):
            key = f'decoder.layer{li}.cross_attn.{part}'
            cont(key, record[key], G[key])
    heads = record['decoder_heads.attn_mask_next_level']
    for i, h in enumerate(golden['decoder_heads']):
        ref = h['attn_mask_next_level']
        ours = heads[i]
        n_diff = (ours != ref).sum().item() if ours.shape == ref.shape else -1
        exact(f'decoder_heads[{i}].attn_mask_next_level', n_diff == 0, f'{n_diff} entries')
    aux = G['decoder.out.aux_outputs']
    for i in range(len(aux)):
        cont(f'decoder.out.aux_outputs[{i}].pred_logits', cls_list[i], aux[i]['pred_logits'])
        cont(f'decoder.out.aux_outputs[{i}].pred_masks', mask_list[i], aux[i]['pred_masks'])
    cont('decoder.out.pred_logits', cls_list[-1], G['decoder.out.pred_logits'])
    cont('decoder.out.pred_masks', mask_list[-1], G['decoder.out.pred_masks'])
    # post-processed outputs (model output and the official post-processing check)
    _compare_outputs(rows, 'outputs', result, golden['outputs']['processed_results'][0])
    pc = golden.get('postproc_check')
    if pc:
        with torch.no_grad(), official_cpu_ties(official_ties):
            lg = model.point_logits(pc['pred_masks_centred'][0], 0, geometry, ghost, points[0])
            res2 = model.postprocess(pc['pred_logits'][0], lg)
        _compare_outputs(rows, 'postproc_check', res2, pc['processed_results'][0])
    ok = all(r[2] for r in rows)
    if verbose:
        w = max(len(r[0]) for r in rows)
        print(f'parity of {osp.basename(golden_path)} ({golden["meta"]["name"]}), tolerance '
              f'{TOLERANCE:g} (max |ours - official| / max |official|)')
        for stage, val, good in rows:
            print(f'{stage:<{w}}  {val:>12}  {"ok" if good else "FAIL"}')
        print('PASS' if ok else 'FAIL')
    return ok, rows


def _compare_outputs(rows, prefix: str, ours, ref: dict) -> None:
    sem_ok = torch.equal(ours.pts_semantic_mask.cpu(), ref['semantic_3d'])
    rows.append((f'{prefix}.semantic_3d', 'equal' if sem_ok else
                 f'{(ours.pts_semantic_mask != ref["semantic_3d"]).sum().item()} differ', sem_ok))
    inst = ref['instances_3d']
    order = ref['instances_3d_order_by_score']
    ref_scores = inst['pred_scores'][order]
    ref_classes = inst['pred_classes'][order]
    ref_masks = inst['pred_masks'][:, order].t()
    o = torch.sort(ours.instance_scores, descending=True, stable=True).indices
    our_scores = ours.instance_scores[o]
    our_classes = ours.instance_labels[o] + 1
    our_masks = ours.pts_instance_mask[o]
    e = rel_err(our_scores, ref_scores) if ref_scores.abs().max() > 0 else \
        our_scores.abs().max().item()
    rows.append((f'{prefix}.instances.pred_scores', f'{e:.2e}', e <= TOLERANCE))
    # compare (class, mask, score) as multisets: ties make the order ambiguous
    def key(c, m, s):
        return (int(c), m.nonzero().flatten().tolist().__hash__() if False else
                hash(tuple(m.nonzero().flatten().tolist())), round(float(s), 5))
    ours_set = sorted(key(c, m, s) for c, m, s in zip(our_classes, our_masks, our_scores))
    ref_set = sorted(key(c, m, s) for c, m, s in zip(ref_classes, ref_masks, ref_scores))
    same = ours_set == ref_set
    rows.append((f'{prefix}.instances (class, mask, score)', 'equal' if same else
                 f'{sum(a != b for a, b in zip(ours_set, ref_set))} differ', same))
