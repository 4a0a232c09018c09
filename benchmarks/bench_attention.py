"""SDPA against the readable attention path: time both, print the ratios as a table.

    .venv/bin/python benchmarks/bench_attention.py                 # CPU, B=8, H=8, T=256/512, D=64
    .venv/bin/python benchmarks/bench_attention.py --device cuda --dtype float16

Times :func:`nnatlas.nn.attention.attention` (q, k, v of shape (B, H, T, D)) with
``impl="manual"`` (softmax(QK^T / sqrt(D) + M) V in plain ops) and ``impl="sdpa"``
(``F.scaled_dot_product_attention``), without a mask and causal, forward alone and forward
plus backward. Each figure is the median of ``--repeats`` timed runs after one warm-up; the
ratio is manual time / sdpa time (above 1: sdpa is faster). Not a unit test: nothing here
asserts, and CPU figures depend on the threads the machine gives.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch

from nnatlas.nn.attention import attention

from _timing import median_time  # benchmarks/ is on sys.path when a script runs


def _case(
    shape: tuple[int, int, int, int],
    causal: bool,
    backward: bool,
    impl: str,
    repeats: int,
    device: torch.device,
    dtype: torch.dtype,
) -> float:
    """Milliseconds for attention on q, k, v of ``shape`` (B, H, T, D)."""
    g = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(shape, generator=g, device=device, dtype=dtype, requires_grad=backward) for _ in range(3))

    def run() -> None:
        if backward:
            out, _ = attention(q, k, v, is_causal=causal, impl=impl)
            out.sum().backward()
        else:
            with torch.no_grad():
                attention(q, k, v, is_causal=causal, impl=impl)

    return median_time(run, repeats, device) * 1e3  # ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"attention (B={args.batch}, H={args.heads}, D={args.head_dim}), {args.dtype}, {where}, "
        f"torch {torch.__version__}, median of {args.repeats}"
    )
    print()
    print("| T | mask | pass | manual ms | sdpa ms | manual / sdpa |")
    print("|---:|---|---|---:|---:|---:|")
    for T in args.lengths:
        shape = (args.batch, args.heads, T, args.head_dim)
        for causal in (False, True):
            for backward in (False, True):
                ms = {
                    impl: _case(shape, causal, backward, impl, args.repeats, device, dtype)
                    for impl in ("manual", "sdpa")
                }
                print(f"| {T} | {'causal' if causal else 'none'} | {'fwd+bwd' if backward else 'fwd'} | "
                      f"{ms['manual']:.2f} | {ms['sdpa']:.2f} | {ms['manual'] / ms['sdpa']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
