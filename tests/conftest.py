"""Shared pytest fixtures."""
import pytest
import torch


@pytest.fixture(scope='module')
def one_thread():
    """One torch intra-op thread for the module's tests.

    Tiny tensors and full-size model builds gain nothing from a second thread, and on shared
    2-core runners OpenMP oversubscription can slow them down by an order of magnitude. Use with
    ``pytestmark = pytest.mark.usefixtures('one_thread')`` or as a test argument.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
