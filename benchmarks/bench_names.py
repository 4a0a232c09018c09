"""What :func:`nnatlas.nn.names.name` costs outside a trace: forward speed with and without the names.

    .venv/bin/python benchmarks/bench_names.py [--threads 1] [--repeats 200]

- ``name()`` alone: nanoseconds a call (one context-variable read), from a million calls;
- the LSTM cell step (B = 64, I = 256, H = 512; 9 names a step) as shipped, against the same four
  equations without the names (written out below, the step as it was before issue 10);
- scaled dot-product attention (B = 8, heads 8, L = 128, d = 64; 1 name) as shipped, against
  ``F.scaled_dot_product_attention`` called directly;
- a whole ``MultiheadAttention`` forward (E = 512, 8 heads, L = 128, B = 8; 4 names) as shipped,
  against the same forward with ``name`` bound to a bare identity for the run.

Each pair is timed in alternation (A B A B ...; a busy shared machine then slows both alike) and
the table gives the medians in milliseconds and their difference in per cent; a difference
inside the run-to-run noise means "no cost".
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import timeit
from collections.abc import Callable
from unittest import mock

import torch
import torch.nn.functional as F

from nnatlas import nn as atlas_nn
from nnatlas.nn import attention as attention_module
from nnatlas.nn.names import name


def _unnamed_lstm_step(x, h, c, w_ih, w_hh, b_ih, b_hh):  # noqa: ANN001, ANN202
    """LSTMCell.step without the names: the same equations, the same operations."""
    i, f, g, o = (F.linear(x, w_ih, b_ih) + F.linear(h, w_hh, b_hh)).chunk(4, dim=1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return h, c


def _identity(tensor: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
    return tensor


def _paired(with_names: Callable[[], object], without: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median seconds of each, the two timed in alternation (A B A B ...) so that a change in the
    machine's load hits both alike; one untimed warm-up of each first (``_timing.median_time``'s rule)."""
    with_names(), without()
    a, b = [], []
    for _ in range(repeats):
        for fn, times in ((with_names, a), (without, b)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return statistics.median(a), statistics.median(b)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    n = 1_000_000
    t = torch.zeros(1)
    per_call = timeit.timeit(lambda: name(t, "F[t]", "σ(...)", desc="forget gate", dims="B H"), number=n) / n
    empty = timeit.timeit(lambda: _identity(t, "F[t]", "σ(...)", desc="forget gate", dims="B H"), number=n) / n

    rows = []
    with torch.no_grad():
        cell = atlas_nn.LSTMCell(256, 512)
        x, h, c = torch.randn(64, 256), torch.randn(64, 512), torch.randn(64, 512)
        weights = (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
        rows.append(("LSTMCell step (9 names)", *_paired(lambda: atlas_nn.LSTMCell.step(x, h, c, *weights),
                                                        lambda: _unnamed_lstm_step(x, h, c, *weights), args.repeats)))
        q, k, v = (torch.randn(8, 8, 128, 64) for _ in range(3))
        rows.append(("attention, sdpa (1 name)", *_paired(lambda: attention_module.attention(q, k, v),
                                                         lambda: F.scaled_dot_product_attention(q, k, v), args.repeats)))
        mha = atlas_nn.MultiheadAttention(512, 8, batch_first=True).eval()
        xs = torch.randn(8, 128, 512)

        def bare() -> object:
            with mock.patch.object(attention_module, "name", _identity):  # the benchmark's baseline only
                return mha(xs, xs, xs, need_weights=False)

        rows.append(("MultiheadAttention forward (4 names)",
                     *_paired(lambda: mha(xs, xs, xs, need_weights=False), bare, args.repeats)))

    print(f"name() outside a trace: {per_call * 1e9:.0f} ns a call (a bare Python identity with the same "
          f"arguments: {empty * 1e9:.0f} ns); {args.threads} thread(s), medians of {args.repeats} alternated runs")
    print("| forward | with names (ms) | without (ms) | difference |")
    print("|---|--:|--:|--:|")
    for label, with_names, without in rows:
        print(f"| {label} | {with_names * 1e3:.3f} | {without * 1e3:.3f} | {100 * (with_names / without - 1):+.1f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
