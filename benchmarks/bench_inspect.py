"""nnatlas's inspector against torchinfo and torchview, in one run, on the same model objects.

    .venv/bin/python benchmarks/bench_inspect.py [--models resnet18 densenet121 vit_b_16 bert_base]
                                                 [--repeats 5] [--depth 3]

For each model (built once with ``nnatlas.create``, real weights on the CPU; input 1x3x224x224,
or 1x128 token ids for BERT) it times, median of ``--repeats``:

- table:   ``str(nnatlas.summary(model, x, depth))`` vs ``str(torchinfo.summary(model, input_data=x, depth))``
- graph:   ``nnatlas.diagram(model, x, depth, blocks=False).dot()`` vs
           ``torchview.draw_graph(model, input_data=x, depth).visual_graph.source``
- render:  ``dot -Tsvg`` on each of those two DOT texts
- and the default drawing (depth 1 plus one drawing per block type) rendered to SVG in total.

Prints a Markdown table of seconds and ratios (nnatlas / other; below 1 is faster). The
goal: table ratio <= 1, graph ratio <= 0.5 on every model; the default densenet121 drawing
renders in under 3 s.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable

import torch

import nnatlas

from _timing import median_time  # benchmarks/ is on sys.path when a script runs

RENDER_TIMEOUT_S = 300


def _render(dot_text: str) -> None:
    done = subprocess.run(["dot", "-Tsvg"], input=dot_text.encode(), capture_output=True, timeout=RENDER_TIMEOUT_S,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"dot failed: {done.stderr.decode()[:300]}")


def _render_median(dot_text: str, repeats: int) -> float:
    try:
        return median_time(lambda: _render(dot_text), repeats)
    except subprocess.TimeoutExpired:
        return float("inf")


def _input(name: str) -> torch.Tensor:
    if nnatlas.card(name).input_dtype == "int" or name.startswith("bert"):
        return torch.zeros(1, 128, dtype=torch.long)
    return torch.randn(1, 3, 224, 224)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet18", "densenet121", "vit_b_16", "bert_base"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--depth", type=int, default=3)
    args = parser.parse_args(argv)
    import torchinfo
    import torchview

    rows = []
    for name in args.models:
        model = nnatlas.create(name).eval()
        x = _input(name)
        d = args.depth
        t_ours = median_time(lambda: str(nnatlas.summary(model, x, depth=d)), args.repeats)
        t_info = median_time(lambda: str(torchinfo.summary(model, input_data=x, depth=d, verbose=0)), args.repeats)
        ours_dot = nnatlas.diagram(model, x, depth=d, blocks=False).dot()
        view_dot = torchview.draw_graph(model, input_data=x, depth=d).visual_graph.source
        g_ours = median_time(lambda: nnatlas.diagram(model, x, depth=d, blocks=False).dot(), args.repeats)
        g_view = median_time(lambda: torchview.draw_graph(model, input_data=x, depth=d).visual_graph.source, args.repeats)
        r_ours = _render_median(ours_dot, args.repeats)
        r_view = _render_median(view_dot, args.repeats)
        default = nnatlas.diagram(model, x)
        texts = [default.dot()] + [b.dot() for b in default.blocks]
        r_default = median_time(lambda: [_render(t) for t in texts], args.repeats)
        rows.append((name, t_ours, t_info, g_ours, g_view, r_ours, r_view, r_default, len(texts)))
        print(f"{name}: done", file=sys.stderr, flush=True)

    print(f"median of {args.repeats}, depth {args.depth}, seconds; ratio = nnatlas / other")
    print("| model | summary | torchinfo | ratio | diagram .dot | torchview | ratio | SVG ours | SVG torchview | ratio "
          "| default drawing SVG (files) |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for name, t_ours, t_info, g_ours, g_view, r_ours, r_view, r_default, n in rows:
        print(f"| {name} | {t_ours:.3f} | {t_info:.3f} | {t_ours / t_info:.2f} | {g_ours:.3f} | {g_view:.3f} | "
              f"{g_ours / g_view:.2f} | {r_ours:.2f} | {r_view:.2f} | {r_ours / r_view:.2f} | {r_default:.2f} ({n}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
