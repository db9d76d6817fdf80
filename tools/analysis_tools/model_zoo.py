"""ODIN beside MMDetection3D's methods and published peers: one table per task and dataset.

Reads ``model-index.yml`` (-> ``configs/odin/metafile.yml``), the installed mmdet3d's metafiles
(``mmdet3d/.mim/model-index.yml``; or ``--mmdet3d-index``) and ``docs/model_zoo_peers.yml``, and
for every task/dataset that ODIN reports prints ODIN's models beside every MMDet3D model and peer
that report the same task on the same dataset. The README's model-zoo tables are this output
(between the ``model-zoo:begin`` / ``model-zoo:end`` markers), never edited by hand.

Usage:
    python tools/analysis_tools/model_zoo.py                  # print the tables
    python tools/analysis_tools/model_zoo.py --write-readme   # regenerate README.md's block
    python tools/analysis_tools/model_zoo.py --check          # exit 1 if README.md is stale
"""
import argparse
import os.path as osp
import sys

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, REPO_ROOT)

from projects.odin.utils.model_zoo import (  # noqa: E402
    ODIN_INDEX,
    PEERS_INDEX,
    ModelIndexError,
    build_model_zoo,
    render_tables,
    replace_readme_block,
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--index', default=osp.join(REPO_ROOT, ODIN_INDEX),
                        help='our root model-index.yml')
    parser.add_argument('--peers', default=osp.join(REPO_ROOT, PEERS_INDEX),
                        help='published peers (model-index schema)')
    parser.add_argument('--mmdet3d-index', default=None,
                        help="mmdet3d's model-index.yml or a folder of <method>/metafile.yml "
                        "(default: the installed package's mmdet3d/.mim)")
    parser.add_argument('--readme', default=osp.join(REPO_ROOT, 'README.md'))
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument('--write-readme', action='store_true',
                      help='rewrite the generated block of --readme')
    mode.add_argument('--check', action='store_true',
                      help='exit 1 when the generated block of --readme differs from the output')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        tables, message = build_model_zoo(args.index, args.peers, args.mmdet3d_index)
    except ModelIndexError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    block = render_tables(tables, message)
    if not (args.write_readme or args.check):
        print(block, end='')
        print(f'\n[{len(tables)} tables; {message}]', file=sys.stderr)
        return 0
    with open(args.readme, encoding='utf-8') as f:
        text = f.read()
    try:
        new = replace_readme_block(text, block)
    except ModelIndexError as e:
        print(f'error: {args.readme}: {e}', file=sys.stderr)
        return 2
    if args.check:
        if new != text:
            print(f'{args.readme}: the model-zoo block is stale; run python '
                  'tools/analysis_tools/model_zoo.py --write-readme', file=sys.stderr)
            return 1
        print(f'{args.readme}: model-zoo block up to date ({len(tables)} tables)')
        return 0
    if new != text:
        with open(args.readme, 'w', encoding='utf-8') as f:
            f.write(new)
        print(f'{args.readme}: model-zoo block rewritten ({len(tables)} tables)')
    else:
        print(f'{args.readme}: model-zoo block already up to date')
    return 0


if __name__ == '__main__':
    sys.exit(main())
