"""Shared pytest fixtures.

Two environment variables run the suite in the variants that prove it does not depend on the
CPU's float32 rounding (``make test-ties``, docs/model.md "Near-ties in the bounded path"):

* ``ODIN_TEST_TIE_ORDER=reverse``: every k-NN, attention-mask and instance-mask near-tie of the
  model is resolved the other way (instance masks in the model's own predictions;
  :func:`tie_robust.apply_reverse_tie_order`, patched from outside the model for each test);
* ``ODIN_TEST_THREADS=N``: the tests that pin torch to one thread (:func:`one_thread`) use ``N``.
"""
import os

import pytest
import torch


@pytest.fixture(scope='module')
def one_thread():
    """One torch intra-op thread for the module's tests (``ODIN_TEST_THREADS`` overrides it).

    Tiny tensors and full-size model builds gain nothing from a second thread, and on shared
    2-core runners OpenMP oversubscription can slow them down by an order of magnitude. Use with
    ``pytestmark = pytest.mark.usefixtures('one_thread')`` or as a test argument.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get('ODIN_TEST_THREADS') or 1))
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def tie_order(monkeypatch) -> str:
    """The near-tie order of this run: ``ours`` or ``reverse`` (``ODIN_TEST_TIE_ORDER``)."""
    value = os.environ.get('ODIN_TEST_TIE_ORDER')
    order = (value or 'ours').strip().lower()
    if order not in ('ours', 'reverse'):
        raise pytest.UsageError(f"ODIN_TEST_TIE_ORDER must be 'ours' or 'reverse', got {value!r}")
    if order == 'reverse':  # imports the model package only in this variant
        from tie_robust import apply_reverse_tie_order
        apply_reverse_tie_order(monkeypatch)
    return order
