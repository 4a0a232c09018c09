"""One intra-op thread for the training tests.

The trainer's tests run small models whose batches take milliseconds; with several threads on
a shared 2-core machine, OpenMP's spinning workers made the same steps 10-50x slower. The
previous setting is restored after each test. Subprocesses get ``OMP_NUM_THREADS=1``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
