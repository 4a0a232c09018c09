"""The training tests run small models whose batches take milliseconds: one intra-op thread
(the shared ``one_thread`` fixture) for all of them. Subprocesses get ``OMP_NUM_THREADS=1``."""

import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Every test in tests/train runs with one thread."""
