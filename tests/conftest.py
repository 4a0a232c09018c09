"""Shared fixtures: where ../shared/data lives, and a fixed seed for every test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NNATLAS_SHARED", REPO.parent / "shared"))
SHARED_DATA = SHARED / "data"


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One intra-op thread for tests of tiny workloads: on a shared 2-core machine OpenMP's
    spinning workers make millisecond steps 10-50x slower. The previous setting is restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data`` (CI has it); tests that need it skip in a user's clone without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent (it lives beside the repository in CI)")
    return SHARED_DATA
