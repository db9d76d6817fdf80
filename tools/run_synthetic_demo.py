"""`make demo`: synthetic world → converter → CPU training → evaluation → demo outputs.

Usage:
    python tools/run_synthetic_demo.py [--work-dir outputs/demo] [--max-iters N]
        [--num-scenes S] [--num-val V] [--seed K] [--threads T]

Steps (each one printed with its wall time):

1. generate the synthetic labelled world in ScanNet's raw layout (.sens, meshes, labels) and
   convert it with ``tools/create_data.py scannet``'s converter (reused on a second run);
2. train ``configs/odin/synthetic_r18_demo.py`` on the training rooms on CPU;
3. evaluate on the held-out rooms with ``ODINSegMetric`` (ScanNet protocol: AP, AP50, AP25, mIoU),
   writing per-scene visualisations (``--show-dir`` of tools/test.py);
4. run ``demo/odin_demo.py`` on the converted frames of a held-out room (instance PLY, view
   overlays, JSON) and render a preview image of the result.

Everything goes under the work dir; ``summary.json`` there holds the figures.
"""
import argparse
import json
import os
import os.path as osp
import sys
import time

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)


from mmengine.config import DictAction  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--work-dir', default='outputs/demo', help='output folder')
    parser.add_argument('--config', default=None, help='model config (default: the demo config)')
    parser.add_argument('--max-iters', type=int, default=None,
                        help='training iterations (default: the config\'s)')
    parser.add_argument('--num-scenes', type=int, default=24, help='synthetic rooms in total')
    parser.add_argument('--num-val', type=int, default=4, help='held-out rooms')
    parser.add_argument('--num-frames', type=int, default=None,
                        help='frames per room (default: the preset\'s)')
    parser.add_argument('--frame-size', type=int, nargs=2, default=None, metavar=('H', 'W'),
                        help='depth / converted frame size (default: the preset\'s; colour is '
                        'rendered at twice this size)')
    parser.add_argument('--preset', default='demo', help='synthetic world preset')
    parser.add_argument('--seed', type=int, default=0, help='world seed')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch CPU threads (default: torch\'s; use 1 on a busy machine)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default=None,
                        help='config overrides, e.g. optim_wrapper.optimizer.lr=1e-3')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    from projects.odin.demo.figure import render_demo_figure
    from projects.odin.demo.synthetic_demo import (
        DEMO_CONFIG,
        evaluate,
        load_demo_config,
        make_synthetic_dataset,
        run_demo,
        train,
    )
    config = args.config or osp.join(REPO_ROOT, DEMO_CONFIG)
    work = osp.abspath(args.work_dir)
    os.makedirs(work, exist_ok=True)
    t_start = time.time()
    times = {}

    def stage(name: str) -> None:
        print(f'\n=== [{time.time() - t_start:7.1f}s] {name}', flush=True)

    stage('1/4 synthetic world + ScanNet converter')
    color_hw = (2 * args.frame_size[0], 2 * args.frame_size[1]) if args.frame_size else None
    data = make_synthetic_dataset(osp.join(work, 'data'), args.num_scenes, args.num_val,
                                  seed=args.seed, preset=args.preset,
                                  num_frames=args.num_frames, depth_hw=args.frame_size,
                                  color_hw=color_hw)
    times['generate'], times['convert'] = data['generate_s'], data['convert_s']
    print(f"{len(data['train'])} training rooms, {len(data['val'])} held-out rooms "
          f"({data['converted']}); generated in {data['generate_s']:.0f}s, converted in "
          f"{data['convert_s']:.0f}s")

    stage('2/4 training on CPU')
    cfg = load_demo_config(data['converted'], osp.join(work, 'train'), config=config,
                           max_iters=args.max_iters, cfg_options=args.cfg_options)
    trained = train(cfg)
    times['train'] = trained['seconds']
    losses = trained['losses']
    k = max(1, len(losses) // 10)
    first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
    print(f"trained {cfg.train_cfg.max_iters} iterations in {trained['seconds']:.0f}s; "
          f'loss {first:.2f} -> {last:.2f}; checkpoint {trained["checkpoint"]}')

    stage('3/4 evaluation on held-out rooms (ODINSegMetric, ScanNet protocol)')
    metrics = evaluate(cfg, trained['checkpoint'], show_dir=osp.join(work, 'test_vis'))
    times['evaluate'] = metrics.pop('seconds')

    stage('4/4 demo on a held-out room')
    scene = data['val'][0]
    folder = osp.join(data['converted'], 'frames', scene)
    demo_out = osp.join(work, 'demo_output')
    t0 = time.time()
    rc = run_demo(folder, config, trained['checkpoint'], demo_out)
    times['demo'] = time.time() - t0
    if rc != 0:
        print(f'demo failed with exit status {rc}', file=sys.stderr)
        return rc
    figure = render_demo_figure(demo_out, osp.join(work, 'demo_figure.png'))
    total = time.time() - t_start
    summary = dict(metrics={k: metrics.get(k) for k in ('AP', 'AP50', 'AP25', 'mIoU')},
                   all_metrics=metrics, iterations=cfg.train_cfg.max_iters,
                   loss_first=first, loss_last=last, seconds=times, total_seconds=total,
                   threads=torch.get_num_threads(), train_rooms=data['train'],
                   val_rooms=data['val'], demo_scene=scene, demo_output=demo_out,
                   figure=figure, checkpoint=trained['checkpoint'])
    with open(osp.join(work, 'summary.json'), 'w') as f:
        json.dump(summary, f, indent=1)
    print('\n=== results on the held-out synthetic rooms ' + '=' * 30)
    for key in ('AP', 'AP50', 'AP25', 'mIoU'):
        value = metrics.get(key)
        print(f'{key:>6}: ' + ('n/a' if value is None else f'{value:.3f}'))
    print('wall time: ' + ', '.join(f'{k} {v:.0f}s' for k, v in times.items()) +
          f'; total {total / 60:.1f} min on {torch.get_num_threads()} threads')
    print(f'demo outputs: {demo_out} (PLY, views/*.png, JSON); preview: {figure}')
    print(f'per-scene test visualisations: {osp.join(work, "test_vis")}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
