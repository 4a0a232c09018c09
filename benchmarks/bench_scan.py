"""Mamba's selective scan: the chunked parallel scan against the sequential reference, on CPU.

Times ``nnatlas.models.mamba.selective_scan`` with ``scan="sequential"`` and ``scan="parallel"``
on the same inputs (batch B, d_inner I, d_state N, length L; delta_softplus, D and z as in the
mixer), forward under ``no_grad`` and forward + backward, and prints a markdown table of
median times and the speed-up (sequential / parallel).

    .venv/bin/python benchmarks/bench_scan.py                      # L 256 and 1024, I 64..768
    .venv/bin/python benchmarks/bench_scan.py --lengths 1024 --dims 64 1536 --repeats 5 --threads 2

The sequential reference's forward + backward is quadratic in L (autograd writes a full-size
gradient for every per-step slice of deltaA and deltaB_u), so L = 1024 with d_inner 1536
takes minutes per repeat; it is left out of the default dims.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch

from nnatlas.models.mamba import selective_scan

from _timing import median_time  # benchmarks/ is on sys.path when a script runs


def _inputs(batch: int, dim: int, length: int, dstate: int, grad: bool) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)

    def rand(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) * scale).requires_grad_(grad)

    return dict(
        u=rand(batch, dim, length),
        delta=rand(batch, dim, length, scale=0.5),
        A=(-torch.rand(dim, dstate, generator=g) * dstate).requires_grad_(grad),
        B=rand(batch, dstate, length),
        C=rand(batch, dstate, length),
        D=rand(dim),
        z=rand(batch, dim, length),
        delta_bias=rand(dim, scale=0.5),
    )


def bench(batch: int, dim: int, length: int, dstate: int, backward: bool, repeats: int) -> dict[str, float]:
    """Median seconds of each scan for one size."""
    inputs = _inputs(batch, dim, length, dstate, grad=backward)
    out = {}
    for scan in ("sequential", "parallel"):

        def run(scan: str = scan) -> None:
            if backward:
                selective_scan(**inputs, delta_softplus=True, scan=scan).sum().backward()
            else:
                with torch.no_grad():
                    selective_scan(**inputs, delta_softplus=True, scan=scan)

        out[scan] = median_time(run, repeats)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--dims", type=int, nargs="+", default=[64, 256, 768], help="d_inner values")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--d-state", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"selective scan on CPU, B={args.batch}, N={args.d_state}, median of {args.repeats}, "
          f"{torch.get_num_threads()} thread(s), torch {torch.__version__}")  # fmt: skip
    print()
    print("| L | d_inner | pass | sequential (ms) | parallel (ms) | speed-up |")
    print("|---:|---:|---|---:|---:|---:|")
    for length in args.lengths:
        for dim in args.dims:
            for backward in (False, True):
                t = bench(args.batch, dim, length, args.d_state, backward, args.repeats)
                ratio = t["sequential"] / t["parallel"]
                name = "fwd+bwd" if backward else "fwd"
                print(
                    f"| {length} | {dim} | {name} | {t['sequential'] * 1e3:.1f} | {t['parallel'] * 1e3:.1f} | {ratio:.1f}x |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
