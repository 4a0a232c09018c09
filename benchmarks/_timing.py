"""The one timer the benchmark scripts share: median wall time after one untimed warm-up."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def median_time(fn: Callable[[], object], repeats: int, device: torch.device | None = None) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs, after one warm-up run (imports, allocator,
    first-call dispatch stay out). On CUDA every run is synchronised before the clock is read."""
    sync = torch.cuda.synchronize if device is not None and device.type == "cuda" else (lambda: None)
    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
