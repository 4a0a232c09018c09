"""Forward + backward time of nnatlas CNNs beside torchvision's, on the same input.

For each model both implementations get the same weights (through ``nnatlas.from_reference``
where a converter exists), the same input and the same loss (the sum of the logits). The
two are timed alternately, one step each in turn, so that load from other processes falls
on both alike; the table gives the median step time and the ratio nnatlas / torchvision.

    .venv/bin/python benchmarks/bench_cnn_vs_torchvision.py --models resnet18 vgg16 --batch 8 --size 224 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torchvision
from torch import nn

import nnatlas


def _step(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        model.zero_grad(set_to_none=True)
        out = model(x)
        out = out[0] if isinstance(out, tuple) else out
        out.sum().backward()
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)

    return run


def _timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# nnatlas name -> (torchvision builder, its arguments) where the two differ
TORCHVISION = {"googlenet_bn": ("googlenet", {"aux_logits": False, "init_weights": True})}


def _torchvision(name: str) -> nn.Module:
    builder, kwargs = TORCHVISION.get(name, (name, {}))
    return getattr(torchvision.models, builder)(**kwargs)


def _models(name: str, device: torch.device) -> tuple[nn.Module, nn.Module, str]:
    """(nnatlas model, torchvision model, how the weights were shared)."""
    ref = _torchvision(name).to(device).train()
    try:
        ours = nnatlas.from_reference(name, ref)
        weights = "shared"
    except KeyError:  # no converter: same architecture, its own random weights (timing is unaffected)
        ours = nnatlas.create(name)
        weights = "own"
    return ours.to(device).train(), ref, weights


def bench(name: str, batch: int, size: int, repeats: int, warmup: int, device: torch.device) -> dict[str, object]:
    ours, ref, weights = _models(name, device)
    x = torch.randn(batch, 3, size, size, device=device)
    run_ours, run_ref = _step(ours, x), _step(ref, x)
    for _ in range(warmup):
        run_ours(), run_ref()
    t_ours, t_ref = [], []
    for _ in range(repeats):  # alternate, so that background load falls on both
        t_ours.append(_timed(run_ours))
        t_ref.append(_timed(run_ref))
    m_ours, m_ref = statistics.median(t_ours), statistics.median(t_ref)
    return {
        "model": name,
        "weights": weights,
        "nnatlas_ms": 1e3 * m_ours,
        "torchvision_ms": 1e3 * m_ref,
        "ratio": m_ours / m_ref,
        "spread": max(t_ours + t_ref) / min(t_ours + t_ref),
    }


def _table(rows: list[dict[str, object]]) -> str:
    head = f"{'model':<12} {'weights':>7} {'nnatlas ms':>11} {'torchvision ms':>15} {'ratio':>6} {'max/min':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['model']:<12} {r['weights']:>7} {r['nnatlas_ms']:>11.1f} {r['torchvision_ms']:>15.1f} "
            f"{r['ratio']:>6.2f} {r['spread']:>8.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["resnet18", "vgg16"], help="nnatlas names with a torchvision twin")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=224, help="input height and width")
    p.add_argument("--repeats", type=int, default=5, help="timed steps per implementation (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per implementation first")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    args = p.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(
        f"forward + backward, train mode, batch {args.batch}, {args.size}x{args.size}, {device}, "
        f"{torch.get_num_threads()} threads, median of {args.repeats} after {args.warmup} warm-up; "
        f"torch {torch.__version__}"
    )
    registered = set(nnatlas.list_models())
    twin = {n: TORCHVISION.get(n, (n, {}))[0] for n in args.models}
    missing = [n for n in args.models if n not in registered or not hasattr(torchvision.models, twin[n])]
    if missing:
        p.error(f"not registered in both nnatlas and torchvision: {', '.join(missing)}")
    rows = [bench(name, args.batch, args.size, args.repeats, args.warmup, device) for name in args.models]
    print(_table(rows))


if __name__ == "__main__":
    main()
