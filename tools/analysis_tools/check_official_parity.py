"""Check numerical parity with the official ODIN implementation on a reference golden.

Usage:
    python tools/analysis_tools/check_official_parity.py \
        --golden ../shared/reference/golden_scannet_resnet.pt

Builds our model for the golden's architecture, fills the OFFICIAL state-dict keys
(``statedict_<name>.tsv`` beside the golden) by the reference's deterministic rule, converts them
with the checkpoint converter, runs our model on the golden's inputs and prints the max relative
error of every recorded stage. Exits 1 if any stage exceeds 1e-4 or a discrete output (voxel ids,
k-NN, attention masks, post-processed instances, semantics) differs.

Portable across CPUs: a k-NN row may differ from the golden's only where the float64 gap between
the k-th and (k+1)-th neighbour distance is below 1e-6 relative (a near-tie that float32 kernels
of different CPUs resolve differently); the golden's recorded selections are then injected, and
near-ties of k-NN calls the golden does not record (IDW) are resolved by searching their valid
resolutions. The table says how many rows were near-ties and which resolution matched. Logic:
:mod:`projects.odin.parity`.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--golden', required=True, help='golden_<name>.pt')
    parser.add_argument('--reference-dir', default=None,
                        help='folder with statedict_<name>.tsv (default: beside the golden)')
    parser.add_argument('--tie-order', choices=('ours', 'reverse', 'shuffle'), default='ours',
                        help='resolve k-NN near-ties the other way first (simulates a CPU with '
                        'another float32 tie order; the check must still pass)')
    parser.add_argument('--view-chunk', type=int, default=0,
                        help='views per chunk of the model\'s 3D forward (test_cfg.view_chunk; '
                        '0: the whole batch as one chunk)')
    parser.add_argument('--point-chunk', type=int, default=0,
                        help='pixels per chunk of its point-wise steps (test_cfg.point_chunk)')
    parser.add_argument('--max-trials', type=int, default=None,
                        help='most forward passes spent searching near-tie resolutions of the '
                        'k-NN calls the golden does not record')
    parser.add_argument('--device', default='cpu',
                        help='where the model runs (cpu, cuda); stages are compared on the CPU')
    args = parser.parse_args()
    import torch

    import projects.odin.models  # noqa: F401
    from projects.odin.parity import MAX_TRIALS, run_parity
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    if args.device.startswith('cuda'):  # the goldens are float32: no TF32 in cuDNN or cuBLAS
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    ok, rows = run_parity(args.golden, args.reference_dir, tie_order=args.tie_order,
                          max_trials=args.max_trials or MAX_TRIALS, view_chunk=args.view_chunk,
                          point_chunk=args.point_chunk, device=args.device)
    failed = [f'{stage} ({value})' for stage, value, good in rows if not good]
    print(f'parity on {args.device}: ' + ('PASS' if ok else 'FAIL: ' + '; '.join(failed)))
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
