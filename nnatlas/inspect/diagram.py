"""Seed-style architecture diagrams: a main drawing whose boxes are the model's blocks, and
one drawing per distinct block type, all from one trace.

>>> d = diagram("resnet18")  # doctest: +SKIP
>>> [b.name for b in d.blocks]  # doctest: +SKIP
['BasicBlock', 'BasicBlock_downsample']
>>> d.render("resnet18.svg")  # doctest: +SKIP
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nnatlas._io import atomic_write_bytes
from nnatlas.inspect.graph import Graph, block_scopes, build_graph
from nnatlas.inspect.render import LANGS, Href, Style, to_dot
from nnatlas.inspect.trace import Recurrence, Trace, trace_model
from nnatlas.inspect.trace import trace as trace_fn

__all__ = ["Diagram", "diagram", "GraphvizMissingError", "write_atomic"]

FORMATS = ("svg", "png", "pdf", "dot")
DOT_TIMEOUT_S = 120
_INSTALL = ("install Graphviz: apt-get install graphviz (Debian/Ubuntu), brew install graphviz (macOS) "
            "or conda install graphviz")


def _find_dot() -> str | None:
    """The path of Graphviz's ``dot``, or None when it is not installed."""
    return shutil.which("dot")


class GraphvizMissingError(OSError):
    """Graphviz's ``dot`` is not on PATH; the DOT text was written instead."""


@dataclass
class Diagram:
    """One drawing: ``.dot()`` is its Graphviz source, ``.blocks`` the drawings of its block types.

    ``lang`` and ``href`` given to :meth:`dot`, :meth:`render` and :meth:`render_all` override
    the diagram's own language (``lang=None``: the one it was made with, ``"en"`` by default);
    ``href(block_name)`` returns the URL a block box links to in SVG (or None or ""), ``block_name``
    being the ``.name`` of a drawing in ``.blocks``, as :meth:`render_all` uses it in file names
    (``"BasicBlock"``, ``"LSTMCell"``).
    """

    name: str
    graph: Graph
    style: Style = Style()
    lang: str = "en"
    blocks: list[Diagram] = field(default_factory=list)  # one per block type and recurrent cell, in call order

    def dot(self, lang: str | None = None, href: Href | None = None) -> str:
        """The Graphviz DOT text of this drawing."""
        return to_dot(self.graph, self.style, lang or self.lang, href)

    def __str__(self) -> str:
        return self.dot()

    def __repr__(self) -> str:
        return (f"Diagram({self.name!r}, nodes={len(self.graph.nodes)}, edges={len(self.graph.edges)}, "
                f"blocks={[b.name for b in self.blocks]})")

    def render(self, path: str | os.PathLike, format: str | None = None, lang: str | None = None,
               href: Href | None = None) -> Path:
        """Write this drawing to ``path`` as svg, png, pdf or dot (default: the path's suffix, else svg).

        ``dot`` lays it out (with a timeout); without Graphviz the DOT text is written beside
        (``path`` with suffix ``.dot``) and :class:`GraphvizMissingError` says how to install it.
        Returns the path written.
        """
        path = Path(path)
        fmt = (format or path.suffix.lstrip(".") or "svg").lower()
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {fmt!r}")
        if not path.parent.is_dir():
            raise FileNotFoundError(f"cannot write {path}: directory {path.parent} does not exist")
        text = self.dot(lang, href)
        if fmt == "dot":
            atomic_write_bytes(path, text.encode())
            return path
        exe = _find_dot()
        if exe is None:
            fallback = path.with_suffix(".dot")
            atomic_write_bytes(fallback, text.encode())
            raise GraphvizMissingError(f"Graphviz's dot is not on PATH, so {path} was not rendered; "
                                       f"the DOT text is in {fallback}; {_INSTALL}")
        try:
            done = subprocess.run([exe, f"-T{fmt}"], input=text.encode(), capture_output=True,
                                  timeout=DOT_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            raise OSError(f"dot took longer than {DOT_TIMEOUT_S} s to lay out {self.name}; "
                          "try a smaller depth") from None
        if done.returncode != 0:
            raise OSError(f"dot failed on {self.name} (exit {done.returncode}): {done.stderr.decode().strip()}")
        atomic_write_bytes(path, done.stdout)
        return path

    def render_all(self, path: str | os.PathLike, format: str | None = None, lang: str | None = None,
                   href: Href | None = None) -> list[Path]:
        """Render this drawing to ``path`` and each block type beside it (``<stem>_<Block>.<format>``)."""
        path = Path(path)
        fmt = (format or path.suffix.lstrip(".") or "svg").lower()
        written = [self.render(path, fmt, lang, href)]
        for block in self.blocks:
            written.append(block.render(path.with_name(f"{path.stem}_{block.name}.{fmt}"), fmt, lang, href))
        return written


def _cell_trace(rec: Recurrence, batch: int) -> Trace:
    """A trace of one cell of a recurrent stack on (B, I): its gates, whatever path the stack runs."""
    from nnatlas.nn import recurrent

    kwargs = {"nonlinearity": rec.nonlinearity} if rec.cell == "RNNCell" and rec.nonlinearity else {}
    with torch.device("meta"):
        cell = getattr(recurrent, rec.cell)(rec.input_size, rec.hidden_size, **kwargs)
        x, h = torch.zeros(batch, rec.input_size), torch.zeros(batch, rec.hidden_size)
    state = (h, torch.zeros_like(h)) if rec.cell == "LSTMCell" else h
    return trace_fn(cell, (x, state), name=rec.cell)


def _inside_trace(trace: Trace, path: str, rebuild: tuple[str, tuple, tuple]) -> Trace | None:
    """A trace of a fresh copy of a layer counted as one box (attention), on the shapes its first call read."""
    import nnatlas.nn

    cls, args, kwargs = rebuild
    arity, options = _REBUILT[cls]
    call = next((c for c in trace.calls if c.kind == "module" and c.path == path), None)
    if call is None or len(call.inputs) < arity:
        return None
    # attention runs on meta; a graph convolution reads its edge list's values, so it runs on small real zeros
    device = "meta" if cls == "MultiheadAttention" else "cpu"
    with torch.device(device):
        module = getattr(nnatlas.nn, cls)(*args, **dict(kwargs))
        inputs = tuple(_stand_in(trace.shape(t), trace.tensors[t].dtype, call.inputs[0] != t and trace.shape(
            call.inputs[0])) for t in call.inputs[:arity])
    return trace_fn(module, inputs, name=cls, batched=trace.batch_size is not None, kwargs=dict(options))


def _stand_in(shape: tuple[int, ...], dtype: str, first: tuple[int, ...] | bool) -> torch.Tensor:
    """Zeros of ``shape``; an integer (2, E) edge list becomes a ring over the first input's N nodes (no self-loops)."""
    if dtype in ("int64", "int32") and len(shape) == 2 and shape[0] == 2 and first:
        k = torch.arange(shape[1])
        return torch.stack([k % first[0], (k + 1) % first[0]])
    return torch.zeros(shape, dtype=getattr(torch, dtype))


# layers drawn inside by a trace of their own: (inputs read, keyword arguments of the drawn call)
_REBUILT = {"MultiheadAttention": (3, {"need_weights": False}), "GCNConv": (2, {})}


def diagram(model_or_name: nn.Module | str | Trace, input: Any = None, depth: int | None = 1, blocks: bool = True,
            lang: str = "en", style: Style | None = None, bare_shapes: bool = False) -> Diagram:
    """The diagram of a registered model (by name) or of a module on ``input``.

    ``depth`` is how many levels of blocks are opened (``None``: all); ``blocks=True`` adds
    one diagram per distinct block type (class plus structure), each one level deep, and one
    per recurrent cell (its gates, traced on one step). ``lang="zh"`` translates every
    descriptive label and uses a CJK font; ``bare_shapes=True`` drops the axis names.
    """
    if lang not in LANGS:
        raise ValueError(f"lang must be one of {', '.join(repr(x) for x in LANGS)}; got {lang!r}")
    trace = trace_model(model_or_name, input)
    style = style or Style()
    if bare_shapes:
        style = replace(style, axis_names=False)
    main = Diagram(trace.name, build_graph(trace, 0, depth), style, lang)
    if blocks:
        for name, index in block_scopes(trace):
            main.blocks.append(Diagram(name, build_graph(trace, index, 1, name=name), style, lang))
        cells = {}
        for info in trace.modules.values():
            if info.path and info.recurrence is not None and info.recurrence.cell not in cells:
                cells[info.recurrence.cell] = info.recurrence
        for info in trace.modules.values():
            if info.path and info.rebuild is not None and info.rebuild[0] not in {b.name for b in main.blocks}:
                inside = _inside_trace(trace, info.path, info.rebuild)
                if inside is not None:
                    main.blocks.append(Diagram(info.rebuild[0], build_graph(inside, 0, 1, name=info.rebuild[0]),
                                               style, lang))
        for name, rec in cells.items():
            if name not in {b.name for b in main.blocks}:
                cell = build_graph(_cell_trace(rec, trace.batch_size or 1), 0, 1, name=name)
                main.blocks.append(Diagram(name, cell, style, lang))
    return main
