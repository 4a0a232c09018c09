"""Fused LSTM vs the cell loop vs torch.nn.LSTM: forward and forward + backward, median of N runs.

    .venv/bin/python benchmarks/bench_recurrent.py                      # 2 layers, H 256, B 32, T 100
    .venv/bin/python benchmarks/bench_recurrent.py --device cuda --threads 0

All three hold the same weights (the nnatlas stacks are built with ``from_reference``).
"Forward" runs in eval mode under ``torch.no_grad``; "forward + backward" runs in train mode
(dropout 0) and backpropagates the sum of the output and the final states.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from torch import nn

from nnatlas import nn as atlas_nn

from _timing import median_time  # benchmarks/ is on sys.path when a script runs


def _forward(module: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        module.eval()
        with torch.no_grad():
            module(x)

    return run


def _forward_backward(module: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        module.train()
        module.zero_grad(set_to_none=True)
        out, (h, c) = module(x)
        (out.sum() + h.sum() + c.sum()).backward()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--input", type=int, default=256, help="input features per step")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=100, help="time steps T")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: leave torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)

    reference = nn.LSTM(args.input, args.hidden, args.layers, batch_first=True).to(device)
    candidates = {
        "torch.nn.LSTM": reference,
        "nnatlas fused": atlas_nn.LSTM.from_reference(reference, impl="fused"),
        "nnatlas loop": atlas_nn.LSTM.from_reference(reference, impl="loop"),
    }
    x = torch.randn(args.batch, args.seq, args.input, device=device)

    results = {}
    for name, module in candidates.items():
        fwd = median_time(_forward(module, x), args.repeats, device) * 1e3
        fwd_bwd = median_time(_forward_backward(module, x), args.repeats, device) * 1e3
        results[name] = (fwd, fwd_bwd)

    ref_f, ref_fb = results["torch.nn.LSTM"]
    fused_f, fused_fb = results["nnatlas fused"]
    print(
        f"LSTM L={args.layers} H={args.hidden} I={args.input} B={args.batch} T={args.seq} on {device} "
        f"({torch.get_num_threads()} threads), median of {args.repeats}, torch {torch.__version__}"
    )
    columns = ("fwd ms", "fwd+bwd ms", "fwd / torch", "f+b / torch", "fwd / fused", "f+b / fused")
    header = f"{'impl':<15} " + " ".join(f"{c:>{9 if i == 0 else 11 if i == 1 else 12}}" for i, c in enumerate(columns))
    print(header)
    print("-" * len(header))
    for name, (f, fb) in results.items():
        print(
            f"{name:<15} {f:>9.2f} {fb:>11.2f} {f / ref_f:>12.2f} {fb / ref_fb:>12.2f} "
            f"{f / fused_f:>12.2f} {fb / fused_fb:>12.2f}"
        )


if __name__ == "__main__":
    main()
