"""One forward pass of our model on a golden's inputs, compared stage by stage.

:func:`forward_and_compare` observes the model from outside: forward hooks (:class:`Recorder`)
record the stages, a hook on the head's attention-mask module compares each mask with the
golden's and injects the golden's, and the k-NN is replaced through
:func:`~projects.odin.parity.knn_ties.substitute_knn`. The comparison of each part of the model
is one function (:func:`_compare_preprocessing`, :func:`_compare_backbone`,
:func:`_compare_pixel_decoder`, :func:`_compare_decoder`, :func:`_compare_outputs`).
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor

from ..structures.multiview_images import MultiViewImages
from .goldens import golden_data
from .knn_ties import KnnSelections, substitute_knn
from .tolerances import MASK_RTOL, TOLERANCE, rel_err

#: one row of the parity table: (stage, value, ok)
Row = Tuple[str, str, bool]
#: the backbone's res3..res5 names of fusion stages 1..3
_RES_NAMES = ['res3', 'res4', 'res5']


class Recorder:
    """Forward hooks storing module outputs under names.

    A module called several times in one pass (per view chunk, per scene) has its tensor
    outputs concatenated along dim 0 (views), in call order.
    """

    def __init__(self) -> None:
        self.data: Dict[str, object] = {}
        self.handles = []

    def hook(self, module, name: str, input_index: Optional[int] = None,
             stop: bool = False) -> None:
        """Store the output (or input ``input_index``) of ``module`` under ``name``.

        With ``stop`` the hook then ends the forward pass (raises :class:`_Stop`).
        """
        def fn(mod, args, out):
            value = args[input_index] if input_index is not None else out
            prev = self.data.get(name)
            if isinstance(prev, Tensor) and isinstance(value, Tensor):
                value = torch.cat([prev, value])
            self.data[name] = value
            if stop:
                raise _Stop(name)
        self.handles.append(module.register_forward_hook(fn))

    def remove(self) -> None:
        """Remove all hooks."""
        for h in self.handles:
            h.remove()
        self.handles = []


def _inject_attn_mask(args: tuple, out: Tensor, refs: List[Tensor],
                      log: List[Tuple[int, int]]) -> Tensor:
    """Forward hook of ``ODINHead.attn_mask_3d``: compare with the golden mask, return it.

    Entries may differ only where the interpolated logit is a near-0 tie (:data:`MASK_RTOL`);
    the golden's mask is returned so that later layers are compared on the same mask.
    """
    i = len(log)
    ref = refs[i] if i < len(refs) else None
    if ref is None or ref.shape != out.shape:
        log.append((-1, -1))
        return out
    diff = torch.nonzero(out != ref.to(out.device))
    unexplained = 0
    if len(diff):
        src_logits, src_xyz, src_offsets, geo, k = args
        from projects.odin.structures import neighbors
        tgt = neighbors.idw(src_logits, src_xyz, src_offsets, geo.voxel_xyz, geo.voxel_offsets,
                            k)  # (N_vox, Q)
        starts = torch.tensor(geo.voxel_starts, device=tgt.device)
        vals = tgt[starts[diff[:, 0]] + diff[:, 2], diff[:, 1]]
        unexplained = int((vals.abs() > MASK_RTOL * tgt.abs().max()).sum())
    log.append((len(diff), unexplained))
    return ref.to(out.device).clone()


#: stages with a forward hook: the resolution search stops the forward pass right after them
HOOKED_STAGES = {'pixel_decoder.output_conv0.out': 'pd.output',
           'pixel_decoder.lateral_conv0.out': 'pd.lateral',
           'pixel_decoder.deform_encoder_out[0]': 'pd.encoder'}


class _Stop(Exception):
    """Raised by a forward hook to end a partial forward pass."""


@dataclass
class _Probes:
    """The hooks of one pass and what they collect.

    Attributes:
        recorder: stage outputs by name.
        mask_refs: the golden's attention mask of every decoder head.
        masks: per decoder head, (differing, unexplained) mask entries.
        memory: the decoder layers' cross-attention keys and their positions, ``(N, Q, C)``.
        handles: the hooks other than the recorder's.
    """

    recorder: Recorder
    mask_refs: List[Tensor]
    masks: List[Tuple[int, int]] = field(default_factory=list)
    memory: Dict[str, Tensor] = field(default_factory=dict)
    handles: list = field(default_factory=list)

    def remove(self) -> None:
        """Remove every hook."""
        self.recorder.remove()
        for h in self.handles:
            h.remove()
        self.handles = []


def _res2_module(backbone) -> Tuple[torch.nn.Module, bool]:
    """The module whose output is backbone res2, and whether that output is Swin tokens."""
    if getattr(backbone, 'res_layers', None):
        return getattr(backbone, backbone.res_layers[0]), False
    return backbone.norm0, True


def _install_probes(model, golden: dict, stop: Optional[str]) -> _Probes:
    """Hook the stages the golden records.

    ``stop`` is the :data:`HOOKED_STAGES` value whose module ends the pass (None: run to the end).
    The backbone outputs res3..res5 are read at the pixel decoder's input projections, res2 at
    the backbone module that outputs it.
    """
    rec = Recorder()
    bb = model.backbone
    for i, blk in enumerate(bb.fusion_blocks):
        stage = bb.fusion_stages[i]
        rec.hook(blk.in_proj, f'bb.in.{stage}')
        rec.hook(blk.attn, f'bb.attn.{stage}')
        rec.hook(blk.out_proj, f'bb.out_proj.{stage}')
    pd = model.decode_head.pixel_decoder
    for i in range(pd.num_encoder_levels):
        rec.hook(pd.input_convs[i], f'bb.out.{pd.backbone_level(i)}', input_index=0)
    rec.hook(_res2_module(bb)[0], 'bb.out.0')
    rec.hook(pd.encoder, 'pd.encoder', stop=stop == 'pd.encoder')
    if pd.fusion_blocks is not None:
        for i, blk in enumerate(pd.fusion_blocks):
            rec.hook(blk, f'pd.fusion.{i}')
    rec.hook(pd.lateral_convs[0], 'pd.lateral', stop=stop == 'pd.lateral')
    rec.hook(pd.output_convs[0], 'pd.output', stop=stop == 'pd.output')
    rec.hook(pd.mask_feature, 'pd.mask_feature')
    head = model.decode_head
    probes = _Probes(rec, [h['attn_mask_next_level'] for h in golden['decoder_heads']])
    probes.handles.append(head.attn_mask_3d.register_forward_hook(
        lambda mod, args, out: _inject_attn_mask(args, out, probes.mask_refs, probes.masks)))
    for li in range(3):
        def grab(mod, args, kwargs, li=li):
            probes.memory[f'decoder.layer{li}.cross_attn.memory'] = kwargs['key'].transpose(0, 1)
            probes.memory[f'decoder.layer{li}.cross_attn.memory_pos'] = \
                kwargs['key_pos'].transpose(0, 1)
        probes.handles.append(head.transformer_decoder.layers[li].register_forward_pre_hook(
            grab, with_kwargs=True))
    return probes


def _run_3d(model, inputs: dict, samples, view_chunk: int, point_chunk: int):
    """Every decoder prediction of a 3D batch (``view_chunk`` views per chunk, 0 = all)."""
    model.test_cfg.update(view_chunk=view_chunk, point_chunk=point_chunk)
    x = model.extract_feat(inputs, samples)
    cls_list, mask_list = model.decode_head(x, samples)
    return cls_list, mask_list, x.pred_counts, x.points


def _partial_error(model, golden: dict, selections: KnnSelections, stop_after: str,
                   view_chunk: int, point_chunk: int) -> float:
    """Summed absolute error of the stage ``stop_after`` (a :data:`HOOKED_STAGES` value).

    The pass ends right after that module, except with several view chunks (the module then runs
    once per chunk and the pass runs to the end).
    """
    probes = _install_probes(model, golden, None if view_chunk else stop_after)
    stage = {v: k for k, v in HOOKED_STAGES.items()}[stop_after]
    G = golden['intermediates']
    ref = G[stage[:-3]][0] if stage.endswith('[0]') else G[stage]
    try:
        with torch.no_grad(), substitute_knn(selections):
            prep = model.data_preprocessor(golden_data(golden), False)
            _run_3d(model, prep['inputs'], prep['data_samples'], view_chunk, point_chunk)
    except _Stop:
        pass
    finally:
        probes.remove()
    return float((probes.recorder.data[stop_after] - ref).abs().sum())


@dataclass
class _Pass:
    """What one full pass produced (besides the probes' records)."""

    inputs: dict
    cls_list: List[Tensor]
    mask_list: List[Tensor]
    points: object
    result: object
    result_pc: object = None


def _full_pass(model, golden: dict, selections: KnnSelections, view_chunk: int,
               point_chunk: int) -> _Pass:
    """The whole forward pass and the post-processing (also of the golden's own logits)."""
    head = model.decode_head
    with torch.no_grad(), substitute_knn(selections):
        data = model.data_preprocessor(golden_data(golden), False)
        inputs, samples = data['inputs'], data['data_samples']
        cls_list, mask_list, counts, points = _run_3d(model, inputs, samples, view_chunk,
                                                      point_chunk)
        logits = points.lift_logits(0, mask_list[-1][0, :, :counts[0]])
        out = _Pass(inputs, cls_list, mask_list, points,
                    head.postprocess_3d(cls_list[-1][0], logits))
        pc = golden.get('postproc_check')
        if pc:
            device = cls_list[-1].device
            lg = points.lift_logits(0, pc['pred_masks_centred'][0].to(device))
            out.result_pc = head.postprocess_3d(pc['pred_logits'][0].to(device), lg)
    return out


class _Table:
    """The rows of the parity table."""

    def __init__(self) -> None:
        self.rows: List[Row] = []

    def cont(self, stage: str, ours: Tensor, ref: Tensor) -> None:
        """A continuous stage: relative error within :data:`TOLERANCE`."""
        e = rel_err(ours, ref)
        self.rows.append((stage, f'{e:.2e}', e <= TOLERANCE))

    def exact(self, stage: str, ok: bool, detail: str = '') -> None:
        """A discrete stage: equal or not."""
        self.rows.append((stage, 'equal' if ok else f'DIFFERENT {detail}', ok))


def _compare_preprocessing(table: _Table, out: _Pass, golden: dict) -> None:
    """Normalised images and the multi-scale point coordinates / pixel-to-voxel maps."""
    G = golden['intermediates']
    # the preprocessor keeps the images as loaded; the model normalises them per view chunk,
    # with the values of MultiViewImages.normalized over all views
    imgs = out.inputs['imgs']
    imgs = imgs.normalized() if isinstance(imgs, MultiViewImages) else imgs.flatten(0, 1)
    table.cont('prep.images_normalized_padded', imgs, G['prep.images_normalized_padded'])
    bi = golden['inputs']['batched_inputs'][0]
    geometry = out.points.geometry
    for j in range(4):
        geo = geometry[3 - j]
        table.cont(f'prep.multi_scale_xyz[{j}]', geo.point_xyz,
                   bi['multi_scale_xyz'][j].reshape(-1, 3))
        ref = G['prep.multi_scale_p2v'][j][0]
        table.exact(f'prep.multi_scale_p2v[{j}]', bool(torch.equal(geo.p2v.cpu(), ref)))


def _compare_knn_graph(table: _Table, name: str, call) -> None:
    """The k-NN graph of one 3D block: equal to the golden's up to near-tie rows."""
    if call is None:
        table.exact(name, False, 'not injected (voxels do not match the golden)')
    elif call.unexplained:
        table.exact(name, False, f'{len(call.unexplained)} rows (not near-ties)')
    else:
        table.rows.append((name, f'{len(call.differing)} tie rows' if call.differing
                           else 'equal', True))


def _compare_backbone(table: _Table, model, arch: dict, out: _Pass, R: dict, golden: dict,
                      selections: KnnSelections) -> None:
    """The backbone's 3D blocks (input, voxels, k-NN graph, attention, output) and res2..res5.

    Sensor points recompute res2 per chunk later: the first pass is compared.
    """
    G = golden['intermediates']
    bb = model.backbone
    swin = arch['backbone'] == 'swin'
    knn_calls = {c.recorded: c for c in selections.calls if c.recorded is not None}
    for stage in bb.fusion_stages:
        nm = _RES_NAMES[stage - 1]
        pre = f'backbone.layers.{stage}.' if swin else 'backbone.'
        cv = f'{pre}cross_view_attn.' if swin else f'backbone.cross_view_attn.{nm}.'
        table.cont(f'{cv}in_features', R[f'bb.in.{stage}'], G[f'{cv}in_features'])
        table.cont(f'{cv}voxel_xyz', out.points.geometry[stage].voxel_xyz, G[f'{cv}voxel_xyz'])
        _compare_knn_graph(table, f'{cv}knn_idx', knn_calls.get(cv))
        last = max(int(k.split('layer')[-1].split('.')[0]) for k in G
                   if k.startswith(cv + 'layer'))
        table.cont(f'{cv}layer{last}.out_voxel', R[f'bb.attn.{stage}'],
                   G[f'{cv}layer{last}.out_voxel'][:, 0])
        tr = f'{pre}trans_to_res.out' if swin else f'backbone.trans_to_res.{nm}.out'
        table.cont(tr, R[f'bb.out_proj.{stage}'], G[tr])
    res2_tokens = _res2_module(bb)[1]
    for j, lvl in enumerate(['res2'] + _RES_NAMES):
        ref = G[f'backbone.out.{lvl}']
        ours = R[f'bb.out.{j}'][:len(ref)]
        if j == 0 and res2_tokens:
            # Swin tokens (N, h*w, C) -> (N, C, h, w)
            ours = ours.view(len(ref), *ref.shape[2:], -1).permute(0, 3, 1, 2)
        table.cont(f'backbone.out.{lvl}', ours, ref)


def _compare_pixel_decoder(table: _Table, model, out: _Pass, R: dict, golden: dict) -> None:
    """Mesh-point maps, the deformable encoder, the 3D layers and the pixel decoder's outputs.

    The multi-scale features are the fused voxels broadcast to the pixels (the forward never
    holds them).
    """
    G = golden['intermediates']
    pd = model.decode_head.pixel_decoder
    ghost = getattr(out.points, 'mesh_voxels', None)
    if ghost is not None:
        table.exact('prep.scannet_p2v_batched',
                    bool(torch.equal(ghost.p2v[0].cpu(), G['prep.scannet_p2v_batched'][0])))
        if ghost.segments is not None:
            table.exact('prep.scannet_segments_batched',
                        bool(torch.equal(ghost.segments[0].cpu(),
                                         G['prep.scannet_segments_batched'][0])))
    table.cont('pixel_decoder.deform_encoder_out[0]', R['pd.encoder'],
               G['pixel_decoder.deform_encoder_out'][0])
    if pd.fusion_blocks is not None:
        for i in range(3):
            key = f'sem_seg_head.pixel_decoder.cross_view_attn.{i}.layer0.out_voxel'
            table.cont(key, R[f'pd.fusion.{i}'], G[key][:, 0])
    for j in range(3):
        ms = out.points.geometry[pd.backbone_level(j)].broadcast(R[f'pd.fusion.{j}'])
        table.cont(f'pixel_decoder.multi_scale_features[{j}]', ms,
                   G['pixel_decoder.multi_scale_features'][j])
    table.cont('pixel_decoder.lateral_conv0.out', R['pd.lateral'],
               G['pixel_decoder.lateral_conv0.out'])
    table.cont('pixel_decoder.output_conv0.out', R['pd.output'],
               G['pixel_decoder.output_conv0.out'])
    table.cont('pixel_decoder.mask_features', R['pd.mask_feature'],
               G['pixel_decoder.mask_features'])


def _compare_decoder(table: _Table, out: _Pass, probes: _Probes, golden: dict) -> None:
    """Decoder keys and positions, attention masks (near-0 logits may flip), predictions."""
    G = golden['intermediates']
    table.cont('decoder.in.mask_features_xyz', out.points.src_xyz,
               G['decoder.in.mask_features_xyz'][0])
    for li in range(3):
        for part in ('memory', 'memory_pos'):
            key = f'decoder.layer{li}.cross_attn.{part}'
            table.cont(key, probes.memory[key], G[key])
    for i in range(len(probes.mask_refs)):
        n_diff, unexplained = probes.masks[i] if i < len(probes.masks) else (-1, -1)
        name = f'decoder_heads[{i}].attn_mask_next_level'
        if n_diff == 0:
            table.exact(name, True)
        elif unexplained == 0:
            table.rows.append((name, f'{n_diff} near-0 logits', True))
        else:
            table.exact(name, False, f'{n_diff} entries ({unexplained} not at a near-0 logit)')
    aux = G['decoder.out.aux_outputs']
    for i in range(len(aux)):
        table.cont(f'decoder.out.aux_outputs[{i}].pred_logits', out.cls_list[i],
                   aux[i]['pred_logits'])
        table.cont(f'decoder.out.aux_outputs[{i}].pred_masks', out.mask_list[i],
                   aux[i]['pred_masks'])
    table.cont('decoder.out.pred_logits', out.cls_list[-1], G['decoder.out.pred_logits'])
    table.cont('decoder.out.pred_masks', out.mask_list[-1], G['decoder.out.pred_masks'])


def forward_and_compare(model, arch: dict, golden: dict, selections: KnnSelections,
                        stop_after: Optional[str] = None, view_chunk: int = 0,
                        point_chunk: int = 0):
    """One forward pass with ``selections`` as the model's k-NN; the table of stage rows.

    The model runs its one 3D forward with ``view_chunk`` views per chunk (0 = all); per-view
    stages are recorded chunk by chunk and concatenated.

    Args:
        model: our model, loaded with the golden's converted weights, in eval mode.
        arch: its architecture (:func:`~projects.odin.conversion.infer_architecture`).
        golden: the loaded golden.
        selections: the k-NN stand-in of this pass.
        stop_after: a :data:`HOOKED_STAGES` value: end the pass after that module and return the
            summed absolute error of its stage instead of the table.
        view_chunk: views per chunk (0 = all).
        point_chunk: pixels per chunk of the point-wise steps (0 = all).

    Returns:
        list[Row] | float: the rows ``(stage, value, ok)``, or the stage's error (``stop_after``).
    """
    if stop_after is not None:
        return _partial_error(model, golden, selections, stop_after, view_chunk, point_chunk)
    probes = _install_probes(model, golden, None)
    try:
        out = _full_pass(model, golden, selections, view_chunk, point_chunk)
    finally:
        probes.remove()
    table = _Table()
    R = probes.recorder.data
    _compare_preprocessing(table, out, golden)
    _compare_backbone(table, model, arch, out, R, golden, selections)
    _compare_pixel_decoder(table, model, out, R, golden)
    _compare_decoder(table, out, probes, golden)
    _compare_outputs(table, 'outputs', out.result, golden['outputs']['processed_results'][0])
    if out.result_pc is not None:
        _compare_outputs(table, 'postproc_check', out.result_pc,
                         golden['postproc_check']['processed_results'][0])
    return table.rows


def _compare_outputs(table: '_Table', prefix: str, ours, ref: dict) -> None:
    """Post-processed semantics and instances (as multisets) against the golden's."""
    rows = table.rows
    ours = ours.cpu()  # the model may have run on a GPU
    sem_ok = torch.equal(ours.pts_semantic_mask, ref['semantic_3d'])
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
    # (class, mask) pairs as multisets, then their scores within the tolerance: score ties make
    # the order ambiguous, and exact float keys would depend on the CPU's last bits
    def key(c, m):
        return int(c), tuple(m.nonzero().flatten().tolist())

    ours_items = sorted((key(c, m), float(s)) for c, m, s in
                        zip(our_classes, our_masks, our_scores))
    ref_items = sorted((key(c, m), float(s)) for c, m, s in
                       zip(ref_classes, ref_masks, ref_scores))
    scale = max(1e-12, float(ref_scores.abs().max()))
    differ = sum(a[0] != b[0] or abs(a[1] - b[1]) > TOLERANCE * scale
                 for a, b in zip(ours_items, ref_items)) + abs(len(ours_items) - len(ref_items))
    rows.append((f'{prefix}.instances (class, mask, score)', 'equal' if not differ else
                 f'{differ} differ', not differ))
