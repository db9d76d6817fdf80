"""Size limits of the compiled kernels, checked in Python before a kernel is launched.

Two kinds of kernels run on GPUs:

* our CUDA kernels (``csrc/pytorch/cuda``) index with int64 but launch a 1-D grid of at most
  ``2**30`` blocks of 256 threads (one element per thread), and the relative-position kernel one
  block per (voxel, neighbour) pair (at most ``2**31 - 1`` blocks). The C++ bindings check the
  same limits (``csrc/common/odin_checks.h``); checking here first gives the error without
  entering C++ at all.
* mmcv 2.1.0's multi-scale deformable attention (``ms_deform_attn_cuda.cu``) computes every
  offset in 32-bit ``int`` (``batch * num_query * num_heads * channels`` threads, pointer
  offsets ``n * im2col_step * spatial_size * num_heads * channels``), and it requires the batch
  to be a multiple of ``min(batch, im2col_step)`` (an ``AT_ASSERTM``: a batch of 250 views with
  the default ``im2col_step=64`` trips it). :func:`mmcv_msda_batch_step` picks a batch chunk that
  satisfies both, so :func:`projects.odin.ops.multi_scale_deform_attn` calls mmcv's op on batch
  chunks that never overflow and never trip the assertion.

Everything here is arithmetic on sizes (no tensors), so it is tested on a CPU
(``tests/test_ops/test_op_limits.py``).
"""
from typing import Dict

#: the largest value of a signed 32-bit int (mmcv's MSDA kernel computes offsets in ``int``)
INT32_MAX = 2**31 - 1
#: elements covered by one launch of our 1-D CUDA kernels (2^30 blocks x 256 threads)
CUDA_MAX_ELEMENTS = (1 << 30) * 256
#: blocks of one launch of the one-block-per-pair kernels (``gridDim.x`` limit)
CUDA_MAX_BLOCKS = INT32_MAX

#: the remedy named by the errors of sizes that grow with the number of views
BOUNDED_PATH_HINT = ("in ODIN's unchunked 3D forward these sizes grow with the number of views: "
                     'run the bounded path (model.test_cfg.view_chunk = 8, or the demo\'s '
                     '--view-chunk), which processes views in chunks')


class OpSizeError(ValueError):
    """A problem too large for one launch of a compiled kernel (raised before the launch)."""


def check_cuda_elements(op: str, elements: int, what: str) -> None:
    """Raise :class:`OpSizeError` if one CUDA launch of ``op`` would cover too many elements.

    Args:
        op: the op's name (for the message).
        elements: the elements (threads) the launch needs, e.g. ``N * k * C``.
        what: how ``elements`` is formed (for the message).
    """
    if elements > CUDA_MAX_ELEMENTS:
        raise OpSizeError(f'{op}: {what} = {elements} exceeds the {CUDA_MAX_ELEMENTS} elements '
                          f'of one CUDA launch; {BOUNDED_PATH_HINT}')


def mmcv_msda_sizes(num_keys: int, num_heads: int, head_dims: int, num_queries: int,
                    num_levels: int, num_points: int) -> Dict[str, int]:
    """Per-view element counts that mmcv's CUDA deformable attention indexes with ``int``.

    Args:
        num_keys: ``value``'s ``K``.
        num_heads: ``H``.
        head_dims: ``D``.
        num_queries: ``sampling_locations``' ``Q``.
        num_levels: ``L``.
        num_points: ``P``.

    Returns:
        dict: ``value`` (``num_keys * heads * dims``), ``sampling_locations``
        (``queries * heads * levels * points * 2``), ``output`` (``queries * heads * dims``,
        also the number of threads per view) - each for ONE batch element.
    """
    return dict(value=num_keys * num_heads * head_dims,
                sampling_locations=num_queries * num_heads * num_levels * num_points * 2,
                output=num_queries * num_heads * head_dims)


def mmcv_msda_batch_step(batch: int, num_keys: int, num_heads: int, head_dims: int,
                         num_queries: int, num_levels: int, num_points: int,
                         im2col_step: int = 64, int_max: int = INT32_MAX) -> int:
    """The batch chunk for one call of mmcv's CUDA ``MultiScaleDeformableAttnFunction``.

    A call with ``b`` batch elements and ``im2col_step = step`` is safe when ``b % min(b, step)
    == 0`` (mmcv asserts it) and every ``int`` offset of the call stays below ``int_max``: the
    largest is ``b * max(per-view sizes)`` (:func:`mmcv_msda_sizes`). Calling mmcv on chunks of
    at most the returned size, with ``im2col_step`` equal to the chunk's own batch, satisfies
    both; the results equal one call on the whole batch (mmcv processes the batch in such
    chunks itself).

    Args:
        batch: the batch (views) of the whole call.
        num_keys: ``value``'s ``K``.
        num_heads: ``H``.
        head_dims: ``D``.
        num_queries: ``sampling_locations``' ``Q``.
        num_levels: ``L``.
        num_points: ``P``.
        im2col_step: the layer's ``im2col_step`` (an upper bound of the chunk). Defaults to 64.
        int_max: the largest offset allowed. Defaults to :data:`INT32_MAX` (a parameter so that
            tests can exercise the limit with tiny sizes).

    Returns:
        The chunk size, ``1 <= step <= min(batch, im2col_step)`` (``batch`` >= 1).

    Raises:
        OpSizeError: a single batch element already overflows ``int`` (an image too large for
            mmcv's kernel: reduce the input resolution), or ``im2col_step < 1``.
    """
    if im2col_step < 1:
        raise OpSizeError(f'im2col_step must be >= 1, got {im2col_step}')
    sizes = mmcv_msda_sizes(num_keys, num_heads, head_dims, num_queries, num_levels,
                            num_points)
    name, per_view = max(sizes.items(), key=lambda kv: kv[1])
    if per_view > int_max:
        raise OpSizeError(
            f'multi_scale_deform_attn: one batch element needs {per_view} {name} entries, more '
            f'than the {int_max} that mmcv\'s CUDA kernel can index (32-bit int); reduce the '
            'input resolution')
    return max(1, min(batch, im2col_step, int_max // max(per_view, 1)))
