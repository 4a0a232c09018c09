"""Stage 3 of the inspector: a graph becomes Graphviz DOT text, in the seeds' style.

Pure functions of a :class:`~nnatlas.inspect.graph.Graph` and a :class:`Style`. As the seeds
draw: bottom to top (``rankdir=BT``), white text on ``#30638e`` boxes, each layer labelled
with its hyper-parameters, tensors as rounded records (``Mrecord``) labelled with their
shape. Shapes are written in PyTorch's order with the batch dimension as ``B``:
``[B, 6, 28, 28]`` is a batch of 6 feature maps of 28x28 (the seeds' ``W=28, H=28, C=6``).
A tensor node is drawn where a layer changes the shape (after the activation that follows
it, as the seeds place it); edges into and out of collapsed boxes (``DenseLayer x 6``) carry
their shape, and a recurrent edge carries its number of steps (``x 100``).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

from nnatlas.inspect.graph import Edge, Graph, Node
from nnatlas.inspect.trace import Shape

__all__ = ["Style", "to_dot", "format_shape"]


@dataclass(frozen=True)
class Style:
    """Colours, fonts and sizes of a drawing (the seeds' values by default)."""

    fillcolor: str = "#30638e"
    fontcolor: str = "white"
    color: str = "black"
    fontname: str = "Helvetica"
    cjk_fontname: str = "WenQuanYi Zen Hei"  # a font with CJK glyphs for lang="zh"
    fontsize: int = 32
    width: float = 5
    height: float = 2
    edge_fontsize: int = 24
    edge_fontcolor: str = "black"
    wrap: int = 30  # a hyper-parameter line longer than this breaks after a comma


_WORDS = {
    "en": {"input": "input", "output": "output"},
    "zh": {"input": "输入", "output": "输出"},
}


def format_shape(shape: Shape | None, batch: int | None) -> str:
    """``(2, 6, 28, 28)`` with batch 2 -> ``[B, 6, 28, 28]``."""
    if shape is None:
        return "[]"
    dims = [str(d) for d in shape]
    if batch is not None and dims and len(shape) >= 2 and shape[0] == batch:
        dims[0] = "B"
    return "[" + ", ".join(dims) + "]"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _label(lines: list[str], record: bool = False) -> str:
    """A quoted DOT label from text lines; record labels also escape ``{}|<>``."""
    out = []
    for line in lines:
        line = line.replace("\\", "\\\\").replace('"', '\\"')
        if record:
            line = line.translate({ord(c): "\\" + c for c in "{}|<>"})
        out.append(line)
    return '"' + "\\n".join(out) + '"'


def _wrap(text: str, width: int) -> list[str]:
    if len(text) <= width:
        return [text]
    lines, current = [], ""
    for part in text.split(", "):
        candidate = f"{current}, {part}" if current else part
        if current and len(candidate) > width:
            lines.append(current + ",")
            current = part
        else:
            current = candidate
    return lines + [current]


def _box_lines(node: Node, style: Style) -> list[str]:
    if not node.detail:
        return [node.title]
    return [node.title, *_wrap(f"[{node.detail}]", style.wrap)]


def _io_title(node: Node, words: dict[str, str]) -> str:
    """``input`` -> 输入 for lang="zh"; ``input[1]`` -> ``输入[1]``, ``output.mu`` -> ``输出.mu``."""
    for key in ("input", "output"):
        if node.title.startswith(key):
            return words[key] + node.title[len(key):]
    return node.title


# Layers applied element by element: the tensor node goes after them (``conv -> ReLU -> [B, 6, 28, 28]``).
_ELEMENTWISE = re.compile(r"ReLU|Sigmoid|Tanh|GELU|SiLU|ELU|Mish|Hardswish|Softplus|Norm|Dropout")


def _tensor_points(graph: Graph) -> dict[str, Shape]:
    """Nodes after which a tensor node is drawn, with the shape it shows."""
    outs: dict[str, list[Edge]] = defaultdict(list)
    ins: dict[str, list[Edge]] = defaultdict(list)
    for e in graph.edges:
        if e.src != e.dst:
            outs[e.src].append(e)
            ins[e.dst].append(e)
    nodes = {n.id: n for n in graph.nodes}
    points: dict[str, Shape] = {}
    for node in graph.nodes:
        if node.kind in ("input", "output") or node.out_shape is None or node.out_shape == node.in_shape:
            continue
        if node.repeat > 1 or node.steps > 1:
            continue  # collapsed boxes carry shapes on their edges
        current = node
        while len(outs[current.id]) == 1:  # past the activation that follows, as the seeds draw
            nxt = nodes[outs[current.id][0].dst]
            if (not _ELEMENTWISE.search(nxt.title) or nxt.kind not in ("layer", "op")
                    or nxt.in_shape != nxt.out_shape or len(ins[nxt.id]) != 1 or nxt.steps > 1):
                break
            current = nxt
        leaving = outs[current.id]
        shapes = {e.shape for e in leaving}
        if not leaving or len(shapes) != 1 or all(nodes[e.dst].kind == "output" for e in leaving):
            continue
        if any(nodes[e.dst].repeat > 1 or nodes[e.dst].steps > 1 for e in leaving):
            continue
        points[current.id] = shapes.pop()
    return points


def to_dot(graph: Graph, style: Style = Style(), lang: str = "en") -> str:
    """The graph as Graphviz DOT source text."""
    if lang not in _WORDS:
        raise ValueError(f"lang must be one of {sorted(_WORDS)}; got {lang!r}")
    words = _WORDS[lang]
    font = style.cjk_fontname if lang == "zh" else style.fontname
    lines = [
        f"digraph {_quote(graph.name)} {{",
        "\trankdir=BT",
        f"\tnode [style=filled, color={_quote(style.color)}, fontcolor={_quote(style.fontcolor)}, "
        f"fillcolor={_quote(style.fillcolor)}, fontname={_quote(font)}, fontsize={style.fontsize}, "
        f"width={style.width:g}, height={style.height:g}, shape=box]",
        f"\tedge [fontname={_quote(font)}, fontsize={style.edge_fontsize}, fontcolor={_quote(style.edge_fontcolor)}]",
    ]
    points = _tensor_points(graph)
    nodes = {n.id: n for n in graph.nodes}
    for node in graph.nodes:
        if node.kind in ("input", "output"):
            label = _label([_io_title(node, words), format_shape(node.out_shape, graph.batch)], record=True)
            lines.append(f"\t{_quote(node.id)} [label={label}, shape=Mrecord]")
        else:
            lines.append(f"\t{_quote(node.id)} [label={_label(_box_lines(node, style))}]")
        if node.id in points:
            label = _label([format_shape(points[node.id], graph.batch)], record=True)
            lines.append(f"\t{_quote(node.id + '/out')} [label={label}, shape=Mrecord]")
            lines.append(f"\t{_quote(node.id)} -> {_quote(node.id + '/out')}")
    for e in graph.edges:
        src = e.src + "/out" if e.src in points and e.src != e.dst else e.src
        attrs = []
        if e.label:
            attrs.append(f"label={_quote(e.label)}")
        elif e.src not in points and any(nodes[i].repeat > 1 or nodes[i].steps > 1 for i in (e.src, e.dst)):
            attrs.append(f"label={_quote(format_shape(e.shape, graph.batch))}")
        suffix = f" [{', '.join(attrs)}]" if attrs else ""
        lines.append(f"\t{_quote(src)} -> {_quote(e.dst)}{suffix}")
    lines.append("}")
    return "\n".join(lines) + "\n"
