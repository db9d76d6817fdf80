"""tools/analysis_tools/benchmark_ops.py at a tiny size: errors against float64 (no timing)."""
import json
import math

import pytest

from odin_testing import load_script

pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def tool():
    return load_script('tools/analysis_tools/benchmark_ops.py')


def test_errors_against_float64_per_pass(tool, tmp_path, capsys):
    out = tmp_path / 'ops.json'
    report = tool.main(['--voxels', '300', '--channels', '32', '--heads', '4', '--ffn', '64',
                        '--repeats', '1', '--skip-knn', '--skip-msda', '--json', str(out)])
    assert json.loads(out.read_text())['block'].keys() == {'fwd', 'fwd_bwd'}
    block = report['block']
    assert set(block['fwd']['ours_err_fp64']) == {'output'}
    tensors = block['fwd_bwd']['ours_err_fp64']
    # the output, the input gradient and the gradient of every parameter of our block
    assert {'output', 'grad:voxel_feats', 'grad:layers.1.ffn_norm.bias'} <= set(tensors)
    assert len(tensors) == 2 + 34
    for r in block.values():
        assert r['ours_err_fp64'].keys() == r['official_err_fp64'].keys()
        for errs in (r['ours_err_fp64'], r['official_err_fp64']):
            # float32 rounding: non-zero, finite and far below 1 (float64 is the reference)
            assert all(0 < e < 1e-4 and math.isfinite(e) for e in errs.values()), errs
        ratio = {k: r['ours_err_fp64'][k] / r['official_err_fp64'][k] for k in r['ours_err_fp64']}
        assert r['err_fp64_ratio'] == pytest.approx(ratio)
        assert r['worst_ratio'] == pytest.approx(max(ratio.values()))
        assert r['fp64_bound_holds'] == (max(ratio.values()) <= tool.FP64_BOUND)
        # both are float32 runs of the same block: the pairwise difference is bounded by the sum
        # of their distances to float64 (triangle inequality, output)
        assert r['output_rel_err'] <= (r['ours_err_fp64']['output']
                                       + r['official_err_fp64']['output']) * (1 + 1e-6)
    printed = capsys.readouterr().out
    assert 'ours_err_fp64' in printed and 'official_err_fp64' in printed
    for name, r in block.items():
        verdict = 'holds' if r['fp64_bound_holds'] else 'DOES NOT HOLD'
        assert f'{name}: ours <= 1.5x official against float64 on every tensor: {verdict}' \
            in printed


def test_fp64_summary_verdict(tool):
    ok = tool.fp64_summary({'a': 1e-7, 'b': 3e-7}, {'a': 1e-7, 'b': 2.5e-7})
    assert ok['fp64_bound_holds'] and ok['worst_ratio_tensor'] == 'b'
    assert ok['worst_ratio'] == pytest.approx(1.2)
    bad = tool.fp64_summary({'a': 1e-7, 'b': 4e-7}, {'a': 1e-7, 'b': 2.5e-7})
    assert not bad['fp64_bound_holds'] and bad['worst_ratio'] == pytest.approx(1.6)
    assert not tool.fp64_summary({'a': 1e-9}, {'a': 0.0})['fp64_bound_holds']
    assert tool.fp64_summary({'a': 0.0}, {'a': 0.0})['fp64_bound_holds']


def test_msda_section(tool, capsys):
    report = tool.main(['--skip-block', '--skip-knn', '--msda-views', '2', '--msda-hw', '40', '72',
                        '--msda-channels', '32', '--msda-heads', '4', '--repeats', '1'])
    assert set(report) == {'meta', 'msda'}
    tensors = {'output', 'grad:value', 'grad:sampling_locations', 'grad:attention_weights'}
    for name, r in report['msda'].items():
        assert r['speedup'] == pytest.approx(r['mmcv_pytorch_s'] / r['ours_s'])
        assert r['ours_peak_mb'] > 0 and r['mmcv_pytorch_peak_mb'] > 0
        expected = {'output'} if name == 'fwd' else tensors
        assert set(r['rel_err']) == set(r['ours_err_fp64']) == expected
        # float32 rounding only: both close to float64 and to each other
        for errs in (r['rel_err'], r['ours_err_fp64'], r['mmcv_pytorch_err_fp64']):
            assert all(0 <= e < 1e-5 and math.isfinite(e) for e in errs.values()), errs
        assert r['max_rel_err'] == max(r['rel_err'].values())
    printed = capsys.readouterr().out
    assert 'levels 5x9 / 3x5 / 2x3' in printed
    for name, r in report['msda'].items():
        assert f"| {name:<7} | {r['ours_s']:8.3f} |" in printed


def test_fp64_reference_takes_the_float32_relu_decisions_at_near_ties(tool):
    """An FFN pre-activation within rounding of 0 may land on either side in float32 (another
    CPU, another BLAS path): flipping our run's near-tie pre-activations across 0 - as such a CPU
    would round them - moves the errors against a plain float64 reference by orders of magnitude
    (the gradient of a flipped entry is O(1) vs 0), and leaves the near-tie-aware errors of the
    benchmark where they were."""
    import copy

    import torch
    c, n, layers = 32, 2000, 2
    torch.manual_seed(0)
    xyz = tool.voxel_scene(n, torch.device('cpu'))
    offsets = torch.tensor([n])
    idx, _ = tool.knn(xyz, xyz, 8, offsets, offsets)
    feats, grad_out = torch.randn(n, c), torch.randn(n, c)
    official = tool.NaiveCrossViewAttention(c, layers, 4, 64)
    ours = tool.CrossViewAttention(c, layers, 4, 64, num_neighbors=8)
    ours.load_state_dict(tool.convert_official_cross_view_state_dict(official.state_dict()))
    ref64 = copy.deepcopy(official).double()

    def fwd_bwd(model, dtype=torch.float32):
        model.zero_grad(set_to_none=True)
        f = feats.to(dtype).clone().requires_grad_(True)
        out = model(f, xyz.to(dtype), idx)
        out.backward(grad_out.to(dtype))
        return out.detach(), f.grad

    # the float64 pre-activations: the 3 closest to 0 per layer are near-ties by construction
    z64 = []
    hooks = [m.register_forward_hook(lambda mod, a, z: z64.append(z.detach()[0]))
             for m in tool.ffn_input_linears(ref64)]
    plain = fwd_bwd(ref64, torch.float64)
    plain_grads = {k: p.grad.clone() for k, p in ref64.named_parameters()}
    for h in hooks:
        h.remove()
    picks = []
    for z in z64:
        rms = z.square().mean().sqrt()
        flat = z.abs().flatten().argsort()[:3]
        assert bool((z.flatten()[flat].abs() <= tool.RELU_TIE_RTOL * rms).all())
        picks.append(flat)

    def errors(flip: bool):
        handles = []
        if flip:
            for m, flat in zip(tool.ffn_input_linears(ours), picks):
                def hook(mod, args, z, flat=flat):  # value across 0, derivative kept (1)
                    shift = torch.zeros_like(z)
                    shift.view(-1)[flat] = -2 * z.detach().view(-1)[flat]
                    return z + shift
                handles.append(m.register_forward_hook(hook))
        decisions = []
        with tool.record_relu_decisions(ours, decisions):
            out = fwd_bwd(ours)
        for h in handles:
            h.remove()
        for k, p in ref64.named_parameters():   # the plain reference's gradients
            p.grad = plain_grads[k].clone()
        naive = tool._errors(out, ours, plain, ref64, True)
        stats = dict(adopted=0, unexplained=0)
        with tool.relu_decisions_adopted(ref64, decisions, stats):
            ref = fwd_bwd(ref64, torch.float64)
        return naive, tool._errors(out, ours, ref, ref64, True), stats

    naive0, aware0, stats0 = errors(flip=False)
    naive1, aware1, stats1 = errors(flip=True)
    assert stats0['unexplained'] == stats1['unexplained'] == 0
    assert stats1['adopted'] >= 2 * len(picks)  # the flipped entries (minus a natural flip)
    # near-tie aware: the flips change nothing beyond float32 rounding (they move the flipped
    # values by 2|z| <= 1e-4 RMS, more than a real rounding flip would)
    assert max(aware1.values()) < 1e-5
    assert max(aware1.values()) <= 2 * max(aware0.values()), (aware0, aware1)
    # plain reference: the same flips dominate the gradient errors
    assert max(naive1.values()) > 30 * max(aware1.values()), (naive1, aware1)
