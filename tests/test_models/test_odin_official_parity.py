"""Numerical parity with the official implementation on the reference golden(s)."""
import os.path as osp

import pytest

from projects.odin.testing import reference_dir

GOLDEN = osp.join(reference_dir(), 'golden_scannet_resnet.pt')


@pytest.mark.skipif(
    not osp.isfile(GOLDEN) or
    not osp.isfile(osp.join(reference_dir(), 'statedict_scannet_resnet.tsv')),
    reason=f'official golden not found at {GOLDEN} (expected beside the checkout in '
    '../shared/reference or in $ODIN_REFERENCE_DIR)')
def test_parity_scannet_resnet_golden():
    import projects.odin.models  # noqa: F401
    from projects.odin.models.parity import run_parity
    ok, rows = run_parity(GOLDEN, verbose=False)
    failed = [r for r in rows if not r[2]]
    assert ok, f'stages out of tolerance: {failed}'
    stages = {r[0] for r in rows}
    # the comparison covers every stage family of the golden
    for s in ('backbone.out.res5', 'pixel_decoder.mask_features', 'decoder.out.pred_masks',
              'decoder_heads[9].attn_mask_next_level', 'outputs.semantic_3d',
              'postproc_check.instances (class, mask, score)'):
        assert s in stages
