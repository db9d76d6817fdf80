"""Check numerical parity with the official ODIN implementation on a reference golden.

Usage:
    python tools/analysis_tools/check_official_parity.py \
        --golden ../shared/reference/golden_scannet_resnet.pt

Builds our model for the golden's architecture, fills the OFFICIAL state-dict keys
(``statedict_<name>.tsv`` beside the golden) by the reference's deterministic rule, converts them
with the checkpoint converter, runs our model on the golden's inputs and prints the max relative
error of every recorded stage. Exits 1 if any stage exceeds 1e-4 or a discrete output (voxel ids,
k-NN, attention masks, post-processed instances, semantics) differs. Logic:
:mod:`projects.odin.models.parity`.
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
    parser.add_argument('--ops-ties', action='store_true',
                        help='use the default projects.odin.ops kNN tie order instead of the '
                        'official CPU harness order (exact distance ties may then differ)')
    args = parser.parse_args()
    import torch

    import projects.odin.models  # noqa: F401
    from projects.odin.models.parity import run_parity
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    ok, _ = run_parity(args.golden, args.reference_dir, official_ties=not args.ops_ties)
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
