"""The per-layer table: module path, type, output shape, parameters, trainable, MACs.

Built from a :class:`~nnatlas.inspect.trace.Trace` (no second run of the model). Rows are
the modules down to ``depth`` (plain containers are transparent, as in the diagram) and the
functional operations that do multiply-adds (attention matmuls) written outside a layer;
a module called several times (a cell stepped T times) is one row with its calls summed.
Totals count every parameter once (tied and shared weights too) and every MAC of the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from nnatlas.inspect.trace import Trace, trace_model

__all__ = ["Row", "Summary", "summary", "format_count"]


@dataclass(frozen=True)
class Row:
    path: str
    type: str
    depth: int
    output_shape: tuple[int, ...] | None
    params: int
    trainable: int
    macs: int
    calls: int = 1


def format_count(n: float) -> str:
    """``1816557056`` -> ``1.82 G``."""
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f}"


def _bytes(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


class Summary:
    """A model's table of layers and its totals; ``str()`` is the aligned table."""

    def __init__(self, trace: Trace, depth: int | None = 3) -> None:
        if depth is not None and depth < 1:
            raise ValueError(f"depth must be >= 1 (or None for every level); got {depth}")
        self.trace = trace
        self.depth = depth
        self.rows = _rows(trace, depth)
        self.total_params = trace.total_params
        self.trainable_params = trace.trainable_params
        self.total_macs = trace.total_macs(0)
        self.param_bytes = trace.param_bytes
        self.activation_bytes = sum(trace.tensors[t].nbytes for c in trace.calls if not c.children
                                    for t in c.outputs)
        self.input_shapes = [trace.shape(t) for _, t in trace.inputs]

    def __repr__(self) -> str:
        return (f"Summary({self.trace.name!r}, params={self.total_params:,}, "
                f"macs={format_count(self.total_macs)}, rows={len(self.rows)})")

    def _cells(self) -> list[list[str]]:
        out = []
        for r in self.rows:
            shape = "[" + ", ".join(str(d) for d in r.output_shape) + "]" if r.output_shape is not None else "-"
            name = ("  " * r.depth) + (r.path or self.trace.name)
            kind = r.type + (f" x{r.calls}" if r.calls > 1 else "")
            out.append([name, kind, shape, f"{r.params:,}", f"{r.trainable:,}", f"{r.macs:,}"])
        return out

    def _totals(self) -> list[str]:
        shapes = ", ".join("[" + ", ".join(map(str, s)) + "]" for s in self.input_shapes)
        how = "on the meta device (shapes only)" if self.trace.device == "meta" else f"on {self.trace.device}"
        return [
            f"Total params: {self.total_params:,} (trainable {self.trainable_params:,})",
            f"Total MACs: {format_count(self.total_macs)} ({self.total_macs:,})",
            f"Input: {shapes}; activations {_bytes(self.activation_bytes)}; parameters {_bytes(self.param_bytes)}",
            f"Traced {how}",
        ]

    def __str__(self) -> str:
        header = ["Layer", "Type", "Output shape", "Params", "Trainable", "MACs"]
        cells = self._cells()
        widths = [max(len(header[i]), *(len(c[i]) for c in cells)) if cells else len(header[i]) for i in range(6)]

        def line(c: list[str]) -> str:
            left = [c[i].ljust(widths[i]) for i in range(3)]
            right = [c[i].rjust(widths[i]) for i in range(3, 6)]
            return "  ".join(left + right).rstrip()

        rule = "-" * len(line(header))
        return "\n".join([line(header), rule, *(line(c) for c in cells), rule, *self._totals()])

    def to_markdown(self) -> str:
        """The table as GitHub Markdown, totals below it."""
        lines = ["| Layer | Type | Output shape | Params | Trainable | MACs |", "|---|---|---|--:|--:|--:|"]
        for c in self._cells():
            c[0] = "&nbsp;" * (2 * (len(c[0]) - len(c[0].lstrip(" ")))) + f"`{c[0].strip()}`"
            lines.append("| " + " | ".join(c) + " |")
        return "\n".join(lines + [""] + [f"- {t}" for t in self._totals()]) + "\n"

    def to_dict(self) -> dict[str, Any]:
        """Rows and totals as plain JSON-serialisable data."""
        return {
            "model": self.trace.name,
            "device": self.trace.device,
            "input_shapes": [list(s) for s in self.input_shapes],
            "rows": [
                {"path": r.path, "type": r.type, "depth": r.depth,
                 "output_shape": list(r.output_shape) if r.output_shape is not None else None,
                 "params": r.params, "trainable": r.trainable, "macs": r.macs, "calls": r.calls}
                for r in self.rows
            ],
            "total_params": self.total_params,
            "trainable_params": self.trainable_params,
            "total_macs": self.total_macs,
            "activation_bytes": self.activation_bytes,
            "param_bytes": self.param_bytes,
        }


def _rows(trace: Trace, depth: int | None) -> list[Row]:
    level: dict[int, int] = {}  # call -> depth (containers transparent, the model at 0)
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for call in trace.calls:
        if call.parent is None:
            level[call.index] = 0
        else:
            parent = trace.calls[call.parent]
            container = parent.parent is not None and trace.modules[parent.path].container
            level[call.index] = level[call.parent] + (0 if container else 1)
        if call.kind == "module" and trace.modules[call.path].container and call.parent is not None:
            continue
        if depth is not None and level[call.index] > depth:
            continue
        if call.kind == "function" and call.macs == 0:
            continue
        key = (call.kind, call.path if call.kind == "module" else f"{call.path}:{call.type}:{call.callsite}")
        macs = trace.total_macs(call.index)
        shape = trace.shape(call.outputs[0]) if call.outputs else None
        if key in rows:
            row = rows[key]
            row["macs"] += macs
            row["calls"] += 1
            row["output_shape"] = shape
            continue
        if call.kind == "module":
            info = trace.modules[call.path]
            path, kind, params, trainable = call.path, info.type, info.params, info.trainable
        else:
            path, kind, params, trainable = f"{call.path}:{call.type}" if call.path else call.type, call.type, 0, 0
        rows[key] = dict(path=path, type=kind, depth=level[call.index], output_shape=shape, params=params,
                         trainable=trainable, macs=macs, calls=1)
    return [Row(**r) for r in rows.values()]


def summary(model_or_name: nn.Module | str | Trace, input: Any = None, depth: int | None = 3) -> Summary:
    """The per-layer table of a registered model (by name) or of a module on ``input``.

    ``depth`` counts levels below the model, plain containers not counted; ``None`` lists
    every layer. By name, the model is built and traced on the ``meta`` device at batch
    size 1 unless ``input`` is given: nothing is computed, only shapes propagate.

    >>> s = summary("lenet")  # doctest: +SKIP
    >>> s.total_params, s.total_macs  # doctest: +SKIP
    """
    return Summary(trace_model(model_or_name, input), depth)
