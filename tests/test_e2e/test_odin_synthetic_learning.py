"""A small ODIN learns on the synthetic world: the `make demo` pipeline, shortened.

Synthetic world ('demo' preset, ScanNet raw layout) -> ScanNet converter -> ODINScanNetDataset ->
training with MMEngine's Runner on CPU -> ODINSegMetric (ScanNet protocol) on held-out rooms,
compared with the same model untrained. About 1 minute on 2 idle cores.
"""
import math

from projects.odin.demo.synthetic_demo import (
    evaluate,
    load_demo_config,
    make_synthetic_dataset,
    train,
)

MAX_ITERS = 200


def test_small_odin_learns_on_held_out_synthetic_rooms(tmp_path):
    data = make_synthetic_dataset(str(tmp_path / 'data'), num_scenes=8, num_val=2, seed=1,
                                  preset='demo', num_frames=8, depth_hw=(48, 64),
                                  color_hw=(96, 128))
    assert len(data['train']) == 6 and len(data['val']) == 2
    cfg = load_demo_config(data['converted'], str(tmp_path / 'work'), max_iters=MAX_ITERS,
                           cfg_options={'default_hooks.logger.interval': 10})

    untrained = evaluate(cfg, None)
    trained = train(cfg)
    after = evaluate(cfg, trained['checkpoint'])

    print(f'\nuntrained: {untrained}\ntrained ({MAX_ITERS} iterations): {after}')
    losses = trained['losses']
    assert len(losses) == MAX_ITERS and all(math.isfinite(v) for v in losses)
    k = MAX_ITERS // 10
    first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
    assert last < 0.5 * first, (first, last)

    for key in ('AP', 'AP50', 'AP25', 'mIoU'):
        assert 0.0 <= after[key] <= 1.0
    assert after['AP25'] >= after['AP50'] >= after['AP']
    # measured 2026-11-21 (seed 1, 2 threads): untrained AP50 0.000 / mIoU 0.006; after 200
    # iterations AP50 0.580 / AP25 0.701 / mIoU 0.313 on the two held-out rooms
    assert untrained['AP50'] < 0.05, untrained
    assert after['AP50'] >= untrained['AP50'] + 0.3, (untrained, after)
    assert after['mIoU'] >= untrained['mIoU'] + 0.15, (untrained, after)
