"""Time per GCN training run: nnatlas's GCN beside PyG's GCNConv, Kipf & Welling's recipe, A/B alternating.

    .venv/bin/python benchmarks/bench_gcn_train.py --data cora --data-dir ../shared/data --rounds 5 --threads 1
    .venv/bin/python benchmarks/bench_gcn_train.py --data cora --data-dir ../shared/data --threads 1 --clock cpu

All models train with the same plain loop (the recipe of ``nnatlas train gcn``): the whole graph
each epoch, dropout 0.5 on the features and the hidden layer, Adam lr 0.01 with L2 5e-4 on the
first layer only, up to 200 epochs, the validation loss evaluated each epoch, early stopping when
it has not improved for 10 epochs, the test accuracy of the model at the stop. Three columns:
``nnatlas`` given the features as ``nnatlas train gcn`` gives them (a sparse CSR matrix when under
15 % are non-zero, as Cora's: dropout on the stored values and a sparse X W), ``nnatlas-dense``
given the dense matrix, and ``pyg`` (PyG's example, dense features, F.dropout). The rounds
alternate the order of the columns (same seed within a round) so that a machine whose load changes
treats all alike. ``--trainer`` adds a fourth: ``nnatlas.train`` itself with the card's recipe (it
also writes a checkpoint, metrics.jsonl and curves.png at each of its evaluations).

Reported: per run, the time (wall, or with ``--clock cpu`` this thread's CPU time) and the epochs
it ran, and per epoch; the median over rounds, and per epoch against PyG (median over rounds of
the ratio within a round).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

import nnatlas
from nnatlas import data
from nnatlas.train.tasks.graph import density, feature_layout

EPOCHS, PATIENCE, LR, WEIGHT_DECAY, HIDDEN, DROPOUT = 200, 10, 0.01, 5e-4, 16, 0.5


class PygGCN(nn.Module):
    """Kipf & Welling's two-layer model with PyG's GCNConv (PyG's examples/gcn.py)."""

    def __init__(self, in_features: int, hidden: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        from torch_geometric.nn import GCNConv

        self.conv1 = GCNConv(in_features, hidden)
        self.conv2 = GCNConv(hidden, num_classes)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        x = F.dropout(x, self.dropout, self.training)  # (N, F)
        x = F.relu(self.conv1(x, edge_index))  # (N, H)
        x = F.dropout(x, self.dropout, self.training)
        return self.conv2(x, edge_index)  # (N, C)


def run(
    model: nn.Module, g: dict[str, torch.Tensor], clock: Callable[[], float] = time.perf_counter
) -> tuple[float, int, float]:
    """One training run of the recipe: (seconds, epochs run, test accuracy at the stop)."""
    opt = torch.optim.Adam(
        [
            {"params": model.conv1.parameters(), "weight_decay": WEIGHT_DECAY},
            {"params": model.conv2.parameters(), "weight_decay": 0.0},
        ],
        lr=LR,
    )
    x, ei, y = g["x"], g["edge_index"], g["y"]
    best, bad = float("inf"), 0
    start = clock()
    for epoch in range(1, EPOCHS + 1):
        model.train()
        loss = F.cross_entropy(model(x, ei)[g["train_mask"]], y[g["train_mask"]])
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.eval()
        with torch.no_grad():
            out = model(x, ei)
            val = F.cross_entropy(out[g["val_mask"]], y[g["val_mask"]]).item()
        if val < best:
            best, bad = val, 0
        else:
            bad += 1
            if bad >= PATIENCE:
                break
    seconds = clock() - start
    acc = (out.argmax(1) == y)[g["test_mask"]].float().mean().item()
    return seconds, epoch, acc


def trainer_run(name: str, seed: int, data_name: str, data_dir: str | None, threads: int) -> tuple[float, int, float]:
    from nnatlas.train import TrainConfig, train

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = train(
            TrainConfig(
                model=name, data=data_name, data_dir=data_dir, seed=seed, out=tmp, report=False, threads=threads
            ),
            progress=False,
        )
        seconds = time.perf_counter() - start
    return seconds, result.final["steps"], result.final["test_acc"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="cora")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--trainer", action="store_true", help="also time nnatlas.train with the card's recipe")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="cpu: this thread's CPU time (with --threads 1; robust to other processes' load)")
    args = p.parse_args()
    if args.clock == "cpu" and args.threads != 1:
        p.error("--clock cpu measures one thread's CPU time: use it with --threads 1")
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter  # thread_time: CPU seconds of this thread
    torch.set_num_threads(args.threads)
    b = data.load(args.data, data_dir=args.data_dir)
    m = b.meta
    g = {k: m[k] for k in ("x", "y", "edge_index", "train_mask", "val_mask", "test_mask")}
    F_in, C = m["x"].shape[1], b.num_classes

    def ours() -> nn.Module:
        return nnatlas.create("gcn", in_features=F_in, num_classes=C, hidden=HIDDEN, dropout=DROPOUT)

    layout = feature_layout(g["x"])  # what nnatlas train gcn hands the model
    g_train = {**g, "x": g["x"].to_sparse_csr()} if layout == "sparse" else g
    print(f"{args.data}: features {100 * density(g['x']):.1f} % non-zero; nnatlas train gives them {layout}")
    makers: dict[str, tuple[Callable[[], nn.Module], dict[str, torch.Tensor]]] = {
        "nnatlas": (ours, g_train),
        "nnatlas-dense": (ours, g),
        "pyg": (lambda: PygGCN(F_in, HIDDEN, C, DROPOUT), g),
    }
    results: dict[str, list[tuple[float, int, float]]] = {
        k: [] for k in [*makers, *(["trainer"] if args.trainer else [])]
    }
    for make, graph in makers.values():  # warm-up: first-call dispatch and allocations stay out
        run(make(), graph, clock)
    for r in range(args.rounds):
        order = list(makers.items()) if r % 2 == 0 else list(makers.items())[::-1]
        for name, (make, graph) in order:
            torch.manual_seed(r)
            results[name].append(run(make(), graph, clock))
        if args.trainer:
            results["trainer"].append(trainer_run("gcn", r, args.data, args.data_dir, args.threads))
        print(
            f"round {r}: "
            + "  ".join(f"{k} {v[-1][0]:.2f}s/{v[-1][1]} epochs acc {v[-1][2]:.3f}" for k, v in results.items()),
            flush=True,
        )
    print(f"\n{args.data}, {args.rounds} rounds, {args.threads} thread(s), {args.clock} clock, torch {torch.__version__}, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'':<15}{'s/run (median)':>16}{'ms/epoch (median)':>20}{'epochs (mean)':>15}{'test acc (mean)':>17}"
          f"{'vs pyg (median of rounds, ms/epoch)':>38}")
    pyg_per_epoch = [s / e for s, e, _ in results["pyg"]]
    for name, rows in results.items():
        per_epoch = [s / e for s, e, _ in rows]
        ratio = statistics.median(a / b for a, b in zip(per_epoch, pyg_per_epoch))
        print(
            f"{name:<15}{statistics.median(s for s, _, _ in rows):>16.3f}{statistics.median(per_epoch) * 1e3:>20.1f}"
            f"{statistics.mean(e for _, e, _ in rows):>15.1f}{statistics.mean(a for _, _, a in rows):>17.4f}"
            f"{ratio:>38.2f}"
        )


if __name__ == "__main__":
    main()
