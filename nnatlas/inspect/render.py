"""Stage 3 of the inspector: a graph becomes Graphviz DOT text, in the seeds' style.

Pure functions of a :class:`~nnatlas.inspect.graph.Graph` and a :class:`Style`. As the seeds
draw: bottom to top (``rankdir=BT``), white text on ``#30638e`` boxes, each layer labelled
with its hyper-parameters, each block with the arguments that define it (its
``extra_repr()``: ``DenseBlock [NLayers=6, BNSize=4, GrowthRate=32]``) and numbered where the
model has several (``DenseBlock1`` .. ``DenseBlock4``), tensors as rounded records
(``Mrecord``) labelled with their shape and, where the model named them
(:func:`nnatlas.nn.names.name`), their name: ``F[t] (forget gate)``. Operations a model
named with a formula are one box holding the formula (``O[t] ⊙ tanh(C[t])``).

Shapes are written in PyTorch's order, batch first, with the axis letters the model files
use: ``[B, C=6, H=28, W=28]`` (the seeds' ``W=28, H=28, C=6``), ``[B, T=35, V=10000]``; a
model may give the letters and the arithmetic of an axis (``C=64+6×32=256``);
``Style(axis_names=False)`` writes bare sizes ``[B, 6, 28, 28]``. A tensor node is drawn
where a layer changes the shape (after the activation that follows it, as the seeds place
it) and on every edge into or out of a collapsed box (``DenseLayer x 6``); a recurrent edge
carries its number of steps (``x 100``); a tied weight is a dashed edge labelled with the
transposed weight.

``lang="zh"`` translates every descriptive word (input/output, tensor descriptions, block
hyper-parameter names) from one table, :data:`TRANSLATIONS`, and keeps layer type names
(Conv2D, Linear) as the seeds do.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from nnatlas.inspect.graph import Edge, Graph, Node
from nnatlas.inspect.trace import Shape

__all__ = ["Style", "TRANSLATIONS", "LANGS", "to_dot", "format_shape"]

#: href(block name) -> the URL a block box links to in SVG (None: no link)
Href = Callable[[str], "str | None"]


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
    axis_names: bool = True  # [B, C=64, H=56, W=56]; False: [B, 64, 56, 56]


#: Every descriptive word a drawing writes, per language (English is the key). Layer type
#: names, symbols (F[t], μ) and numbers are not translated, as the seeds write them.
TRANSLATIONS: dict[str, dict[str, str]] = {
    "zh": {
        # inputs and outputs
        "input": "输入", "output": "输出", "token ids": "单词ID", "logits": "单词概率对数",
        # recurrent cells (the seed's words where it has them)
        "previous hidden state": "短期历史", "previous cell state": "长期历史", "hidden state": "短期记忆",
        "cell state": "长期记忆", "input gate": "记忆门", "forget gate": "遗忘门", "output gate": "输出门",
        "cell candidate": "长期候补", "reset gate": "复位门", "update gate": "更新门", "candidate": "候补",
        "hidden states": "隐状态", "embedded tokens": "词向量",
        # autoencoders
        "mean": "均值", "log variance": "对数方差", "latent": "隐变量", "noise": "噪声", "reconstruction": "重建",
        "corrupted input": "加噪输入",
        # attention and transformers
        "queries": "查询", "keys": "键", "values": "值", "attention weights": "注意力权重",
        "attention output": "注意力输出", "mask": "掩码", "heads": "多头", "sequence": "序列",
        "patch embeddings": "图块嵌入", "class token": "分类词元", "positions": "位置编码",
        "encoder output": "编码器输出", "pooled": "池化输出", "token types": "句子类型",
        # mamba, gcn, diffusion, pointer network
        "step size": "步长", "discretised A": "离散化A", "discretised B": "离散化B", "output of the scan": "扫描输出",
        "selective scan": "选择性扫描", "input projection": "输入投影", "gate": "门",
        "normalised adjacency": "归一化邻接矩阵", "node features": "节点特征", "adjacency": "邻接矩阵",
        "noisy image": "加噪图像", "time step": "时间步", "time embedding": "时间嵌入",
        "predicted noise": "预测噪声", "pointer distribution": "指针分布", "encoder states": "编码器状态",
        "decoder state": "解码器状态", "scores": "得分",
        # block hyper-parameter names (extra_repr keys)
        "NLayers": "层数", "BNSize": "瓶颈倍数", "GrowthRate": "增长率", "CompRate": "压缩率",
        "layers": "层数", "bidirectional": "双向", "heads=": "头数=",
    },
}
LANGS = ("en", *TRANSLATIONS)
_IO = ("input", "output")


def _tr(text: str, lang: str) -> str:
    return TRANSLATIONS.get(lang, {}).get(text, text)


def _axis_letters(shape: Shape, batch: int | None, dims: str | None) -> list[str] | None:
    """The axis names of a tensor: the model's ``dims`` when they fit, else B, C, H, W / B, T, D / B, D."""
    if dims:
        parts = [p.strip() for p in (dims.split(",") if "," in dims else dims.split())]
        if len(parts) == len(shape):
            return parts
    if batch is None or not shape or shape[0] != batch:
        return None
    return {2: ["B", "D"], 3: ["B", "T", "D"], 4: ["B", "C", "H", "W"], 5: ["B", "C", "D", "H", "W"]}.get(len(shape))


def format_shape(shape: Shape | None, batch: int | None, dims: str | None = None, axis_names: bool = True) -> str:
    """``(2, 6, 28, 28)`` with batch 2 -> ``[B, C=6, H=28, W=28]`` (``[B, 6, 28, 28]`` without axis names).

    ``dims`` gives the letters (``"B T V"``) and may carry an axis's arithmetic:
    ``"B, C=64+6×32, H, W"`` -> ``[B, C=64+6×32=256, H=56, W=56]``.
    """
    if shape is None:
        return "[]"
    letters = _axis_letters(shape, batch, dims) if axis_names else None
    out = []
    for k, d in enumerate(shape):
        if k == 0 and batch is not None and len(shape) >= 2 and d == batch and (not letters or letters[0] == "B"):
            out.append("B")
        elif letters:
            letter = letters[k]
            out.append(f"{letter}={d}" if "=" not in letter else f"{letter}={d}".replace(f"={d}={d}", f"={d}"))
        else:
            out.append(str(d))
    return "[" + ", ".join(out) + "]"


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
    for part in re.split(r", (?![^()]*\))", text):  # not inside parentheses: c2=(96, 128) stays whole
        candidate = f"{current}, {part}" if current else part
        if current and len(candidate) > width:
            lines.append(current + ",")
            current = part
        else:
            current = candidate
    return lines + [current]


def _detail(node: Node, lang: str) -> str:
    """A block's hyper-parameters with their names translated (``NLayers=6`` -> ``层数=6``); layers' kept."""
    if node.kind != "block" or lang not in TRANSLATIONS:
        return node.detail
    parts = []
    for part in node.detail.split(", "):
        key, eq, value = part.partition("=")
        parts.append(_tr(key, lang) + eq + value if eq else _tr(part, lang))
    return ", ".join(parts)


def _box_lines(node: Node, title: str, style: Style, lang: str) -> list[str]:
    if node.kind == "formula":  # a long formula breaks after a top-level " + "
        return _wrap_formula(node.title, style.wrap + 10)
    detail = _detail(node, lang)
    if not detail:
        return [title]
    return [title, *_wrap(f"[{detail}]", style.wrap)]


def _wrap_formula(text: str, width: int) -> list[str]:
    if len(text) <= width:
        return [text]
    lines, current, depth, k = [], "", 0, 0
    while k < len(text):
        ch = text[k]
        depth += ch in "([" and 1 or (-1 if ch in ")]" else 0)
        if depth == 0 and text.startswith(" + ", k) and len(current) >= width // 2:
            lines.append(current)
            current = "+ "
            k += 3
            continue
        current += ch
        k += 1
    return lines + [current]


def _named_title(node: Node, lang: str, role: str | None = None) -> str:
    """``F[t] (forget gate)``, ``H[t] (output, hidden state)``; in zh ``F[t](遗忘门)``."""
    words = [_tr(w, lang) for w in (role, node.desc) if w]
    if lang in TRANSLATIONS:
        return f"{node.label}({'，'.join(words)})" if words else node.label
    return f"{node.label} ({', '.join(words)})" if words else node.label


def _io_title(node: Node, lang: str) -> str:
    """``input`` -> 输入 for lang="zh"; ``input[1]`` -> ``输入[1]``; a named input: ``X[t] (input)``."""
    role = node.kind
    if node.label:
        return _named_title(node, lang, role)
    for key in _IO:
        if node.title.startswith(key):
            return _tr(key, lang) + node.title[len(key):]
    return node.title


# Layers applied element by element: the tensor node goes after them (``conv -> ReLU -> [B, 6, 28, 28]``).
_ELEMENTWISE = re.compile(r"ReLU|Sigmoid|Tanh|GELU|SiLU|ELU|Mish|Hardswish|Softplus|Norm|Dropout")


def _collapsed(node: Node) -> bool:
    return node.repeat > 1 or node.steps > 1


def _tensor_points(graph: Graph) -> dict[str, Shape]:
    """Nodes after which a tensor node is drawn, with the shape it shows."""
    outs: dict[str, list[Edge]] = defaultdict(list)
    ins: dict[str, list[Edge]] = defaultdict(list)
    for e in graph.edges:
        if e.src != e.dst and not e.style:
            outs[e.src].append(e)
            ins[e.dst].append(e)
    nodes = {n.id: n for n in graph.nodes}
    points: dict[str, Shape] = {}
    for node in graph.nodes:
        if node.kind in ("input", "output", "tensor") or node.out_shape is None:
            continue
        leaving = outs[node.id]
        if any(nodes[e.dst].kind == "tensor" for e in leaving):
            continue  # the model named what leaves: that tensor node is drawn
        into_collapsed = any(_collapsed(nodes[e.dst]) for e in leaving)
        if node.out_shape == node.in_shape and not _collapsed(node) and not into_collapsed:
            continue
        current = node
        while len(outs[current.id]) == 1 and not _collapsed(current):  # past the activation that follows
            nxt = nodes[outs[current.id][0].dst]
            if (not _ELEMENTWISE.search(nxt.title) or nxt.kind not in ("layer", "op")
                    or nxt.in_shape != nxt.out_shape or len(ins[nxt.id]) != 1 or nxt.steps > 1):
                break
            current = nxt
        leaving = outs[current.id]
        shapes = {e.shape for e in leaving}
        if not leaving or len(shapes) != 1 or None in shapes:
            continue
        if all(nodes[e.dst].kind in ("output", "tensor") for e in leaving):
            continue
        points[current.id] = shapes.pop()
    # the inputs of collapsed boxes that no tensor node precedes: a tensor node before them
    for node in graph.nodes:
        if not _collapsed(node):
            continue
        for e in ins[node.id]:
            src = nodes[e.src]
            if src.kind not in ("input", "tensor", "output") and e.src not in points and e.shape is not None \
                    and len({x.shape for x in outs[e.src]}) == 1:
                points[e.src] = e.shape
    return points


def _numbers(graph: Graph) -> dict[str, str]:
    """Block titles numbered in call order where a model has several of one class: ``DenseBlock1``..``4``.

    A collapsed run counts each block it holds, so numbers match the seed's (``ConvBlock3``
    follows ``ConvBlock x 2``); the run itself keeps ``x N``.
    """
    counts: dict[str, int] = defaultdict(int)
    for n in graph.nodes:
        if n.kind == "block" and n.block:
            counts[n.block] += n.repeat
    seen: dict[str, int] = defaultdict(int)
    titles: dict[str, str] = {}
    for n in graph.nodes:
        if n.kind != "block" or not n.block or counts[n.block] < 2:
            continue
        seen[n.block] += n.repeat
        if n.repeat == 1 and n.title.startswith(n.block):
            titles[n.id] = f"{n.block}{seen[n.block]}" + n.title[len(n.block):]
    return titles


def to_dot(graph: Graph, style: Style = Style(), lang: str = "en", href: Href | None = None) -> str:
    """The graph as Graphviz DOT source text.

    ``href(block_name)`` gives the URL a block box links to (SVG ``href``, ``target="_top"``),
    for a reader to descend from the whole to a part.
    """
    if lang not in LANGS:
        raise ValueError(f"lang must be one of {', '.join(LANGS)}; got {lang!r}")
    font = style.cjk_fontname if lang != "en" else style.fontname
    lines = [
        f"digraph {_quote(graph.name)} {{",
        "\trankdir=BT",
        f"\tnode [style=filled, color={_quote(style.color)}, fontcolor={_quote(style.fontcolor)}, "
        f"fillcolor={_quote(style.fillcolor)}, fontname={_quote(font)}, fontsize={style.fontsize}, "
        f"width={style.width:g}, height={style.height:g}, shape=box]",
        f"\tedge [fontname={_quote(font)}, fontsize={style.edge_fontsize}, fontcolor={_quote(style.edge_fontcolor)}]",
    ]

    def shape(s: Shape | None, dims: str | None = None) -> str:
        return format_shape(s, graph.batch, dims, style.axis_names)

    points = _tensor_points(graph)
    numbers = _numbers(graph)
    for node in graph.nodes:
        if node.kind in _IO:
            label = _label([_io_title(node, lang), shape(node.out_shape, node.dims)], record=True)
            lines.append(f"\t{_quote(node.id)} [label={label}, shape=Mrecord]")
        elif node.kind == "tensor":
            text = [_named_title(node, lang)] if node.label else []
            label = _label([*text, shape(node.out_shape, node.dims)], record=True)
            lines.append(f"\t{_quote(node.id)} [label={label}, shape=Mrecord]")
        else:
            title = numbers.get(node.id, node.title)
            attrs = [f"label={_label(_box_lines(node, title, style, lang))}"]
            url = href(node.block) if href is not None and node.block else None
            if url:
                attrs += [f"URL={_quote(url)}", 'target="_top"', f"tooltip={_quote(node.block)}"]
            lines.append(f"\t{_quote(node.id)} [{', '.join(attrs)}]")
        if node.id in points:
            label = _label([shape(points[node.id])], record=True)
            lines.append(f"\t{_quote(node.id + '/out')} [label={label}, shape=Mrecord]")
            lines.append(f"\t{_quote(node.id)} -> {_quote(node.id + '/out')}")
    for e in graph.edges:
        src = e.src + "/out" if e.src in points and e.src != e.dst and not e.style else e.src
        attrs = []
        if e.label:
            attrs.append(f"label={_quote(e.label)}")
        if e.style:
            attrs.append(f"style={e.style}")
        suffix = f" [{', '.join(attrs)}]" if attrs else ""
        lines.append(f"\t{_quote(src)} -> {_quote(e.dst)}{suffix}")
    lines.append("}")
    return "\n".join(lines) + "\n"
