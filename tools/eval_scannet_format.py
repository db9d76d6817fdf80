"""Evaluate ScanNet-format 3D instance predictions offline, like the official benchmark script.

Usage:
    python tools/eval_scannet_format.py --gt-dir GT --pred-dir PRED \
        --dataset {scannet,scannet200} [--json OUT] [--strict]

GT: ``GT/<scene>.txt``, one integer per mesh vertex (``*_vh_clean_2.ply`` order), ``label_id * 1000
+ instance_id``. Predictions: the benchmark submission format, ``PRED/<scene>.txt`` listing
``pred_mask/<file> <label_id> <confidence>`` with one 0/1 per vertex in each mask file
(``tools/test.py ... --cfg-options test_evaluator.submission_prefix=DIR`` writes them to
``DIR/instance``). The numbers equal ScanNet's ``evaluate_semantic_instance.py``; ``--json`` writes
AP / AP50 / AP25 as fractions (NaN -> null), per class and, for ScanNet200, for the head / common /
tail subsets.

Like the official script, a prediction whose label id is not an evaluated instance class is skipped
(neither a true nor a false positive); those whose id is not a label id of the dataset at all (e.g.
12 for ScanNet200) are counted in one warning line. ``--strict`` refuses them instead (exit 2).
"""
import argparse
import json
import math
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from projects.odin.class_names import get_class_info  # noqa: E402
from projects.odin.evaluation.functional.instance_eval import format_instance_table  # noqa: E402
from projects.odin.evaluation.functional.scannet_format import (  # noqa: E402
    ScanNetFormatError,
    evaluate_instance_folder,
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='ScanNet-protocol 3D instance evaluation of benchmark-format files')
    parser.add_argument('--gt-dir', required=True, help='folder of <scene>.txt GT files')
    parser.add_argument('--pred-dir', required=True,
                        help='folder of <scene>.txt prediction listings (submission format)')
    parser.add_argument('--dataset', required=True, choices=['scannet', 'scannet200'])
    parser.add_argument('--json', help='write the results to this JSON file')
    parser.add_argument('--strict', action='store_true',
                        help='refuse (exit 2) predictions whose label id is not a label id of the '
                        'dataset; by default they are skipped and counted, as the official '
                        'script skips them')
    # the former opt-in to skipping, now the default; still accepted so old command lines work
    parser.add_argument('--ignore-unknown-labels', action='store_true', help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _frac(v: float):
    v = float(v)
    return None if math.isnan(v) else v


def to_json_dict(avg: dict, class_info: dict) -> dict:
    """Results in the documented JSON schema (fractions, NaN -> null)."""
    out = dict(AP=_frac(avg['all_ap']), AP50=_frac(avg['all_ap_50%']),
               AP25=_frac(avg['all_ap_25%']), per_class={})
    for name in class_info['instance_classes']:
        v = avg['classes'][name]
        out['per_class'][name] = dict(AP=_frac(v['ap']), AP50=_frac(v['ap50%']),
                                      AP25=_frac(v['ap25%']))
    for sname in class_info.get('subsets') or {}:
        out[sname] = dict(AP=_frac(avg[f'{sname}_ap']), AP50=_frac(avg[f'{sname}_ap_50%']),
                          AP25=_frac(avg[f'{sname}_ap_25%']))
    return out


def main(argv=None) -> dict:
    args = parse_args(argv)
    info = get_class_info(args.dataset)
    if args.strict and args.ignore_unknown_labels:
        print('error: --strict and --ignore-unknown-labels contradict each other', file=sys.stderr)
        raise SystemExit(2)
    try:
        avg = evaluate_instance_folder(args.gt_dir, args.pred_dir, info,
                                       strict=args.strict,
                                       log=lambda msg: print(msg, file=sys.stderr))
    except ScanNetFormatError as e:
        print(f'error: {e}', file=sys.stderr)
        raise SystemExit(2) from None
    print(f'evaluated {avg["num_scenes"]} scenes ({args.dataset}, '
          f'{len(info["instance_classes"])} classes)')
    print(format_instance_table(avg, info['instance_classes']))
    result = to_json_dict(avg, info)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=2)
        print(f'wrote {args.json}')
    return result


if __name__ == '__main__':
    main()
