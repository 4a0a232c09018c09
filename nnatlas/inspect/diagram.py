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
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from torch import nn

from nnatlas._io import atomic_write_bytes
from nnatlas.inspect.graph import Graph, block_scopes, build_graph
from nnatlas.inspect.render import Style, to_dot
from nnatlas.inspect.trace import Trace, trace_model

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
    """One drawing: ``.dot`` is its Graphviz source, ``.blocks`` the drawings of its block types."""

    name: str
    graph: Graph
    style: Style = Style()
    lang: str = "en"
    blocks: list[Diagram] = field(default_factory=list)

    @cached_property
    def dot(self) -> str:
        return to_dot(self.graph, self.style, self.lang)

    def __str__(self) -> str:
        return self.dot

    def __repr__(self) -> str:
        return (f"Diagram({self.name!r}, nodes={len(self.graph.nodes)}, edges={len(self.graph.edges)}, "
                f"blocks={[b.name for b in self.blocks]})")

    def render(self, path: str | os.PathLike, format: str | None = None) -> Path:
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
        if fmt == "dot":
            atomic_write_bytes(path, self.dot.encode())
            return path
        exe = _find_dot()
        if exe is None:
            fallback = path.with_suffix(".dot")
            atomic_write_bytes(fallback, self.dot.encode())
            raise GraphvizMissingError(f"Graphviz's dot is not on PATH, so {path} was not rendered; "
                                       f"the DOT text is in {fallback}; {_INSTALL}")
        try:
            done = subprocess.run([exe, f"-T{fmt}"], input=self.dot.encode(), capture_output=True,
                                  timeout=DOT_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            raise OSError(f"dot took longer than {DOT_TIMEOUT_S} s to lay out {self.name}; "
                          "try a smaller depth") from None
        if done.returncode != 0:
            raise OSError(f"dot failed on {self.name} (exit {done.returncode}): {done.stderr.decode().strip()}")
        atomic_write_bytes(path, done.stdout)
        return path

    def render_all(self, path: str | os.PathLike, format: str | None = None) -> list[Path]:
        """Render this drawing to ``path`` and each block type beside it (``<stem>_<Block>.<format>``)."""
        path = Path(path)
        fmt = (format or path.suffix.lstrip(".") or "svg").lower()
        written = [self.render(path, fmt)]
        for block in self.blocks:
            written.append(block.render(path.with_name(f"{path.stem}_{block.name}.{fmt}"), fmt))
        return written


def diagram(model_or_name: nn.Module | str | Trace, input: Any = None, depth: int | None = 1, blocks: bool = True,
            lang: str = "en", style: Style | None = None) -> Diagram:
    """The diagram of a registered model (by name) or of a module on ``input``.

    ``depth`` is how many levels of blocks are opened (``None``: all); ``blocks=True`` adds
    one diagram per distinct block type (class plus structure), each one level deep.
    ``lang="zh"`` labels input and output 输入/输出 and uses a CJK font.
    """
    if lang not in ("en", "zh"):
        raise ValueError(f"lang must be 'en' or 'zh'; got {lang!r}")
    trace = trace_model(model_or_name, input)
    style = style or Style()
    main = Diagram(trace.name, build_graph(trace, 0, depth), style, lang)
    if blocks:
        for name, index in block_scopes(trace):
            main.blocks.append(Diagram(name, build_graph(trace, index, 1, name=name), style, lang))
    return main
