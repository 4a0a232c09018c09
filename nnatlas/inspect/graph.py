"""Stage 2 of the inspector: a trace becomes a graph of nodes and edges, at a depth.

Operations on the plain :class:`~nnatlas.inspect.trace.Trace`, no second run of the model:

- **depth**: the boxes are the modules at that depth below the scope (the model, or one
  block for a block diagram); plain containers (``nn.Sequential``, ``ModuleList``,
  ``ModuleDict``) are transparent, so ResNet's ``layer1`` shows its blocks, not itself.
- **runs**: consecutive blocks of one type, each reading the previous one's output
  (``DenseLayer`` after ``DenseLayer``), collapse into one box ``DenseLayer x 6`` unless
  something outside the run reads what an inner block made (UNet's skip connections).
- **loops**: one module called again and again from the same line (a cell stepped T
  times) is one box with a recurrent edge labelled ``x T``.
- **edges** follow tensors from the call that made them to every call that read them, so
  residual ``+`` and concatenations draw their skip connections.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from nnatlas.inspect.labels import layer_title, op_title
from nnatlas.inspect.trace import Call, Shape, Trace

__all__ = ["Node", "Edge", "Graph", "build_graph", "block_scopes"]

_RESHAPES = ("reshape", "view", "flatten")
_MAX_PERIOD = 4  # a run's period: one block plus up to three operations between blocks


@dataclass(frozen=True)
class Node:
    """A box of the diagram: an input, an output, a layer, a block or an operation."""

    id: str
    kind: str  # "input", "output", "layer", "block", "op", "formula" (named operations) or "tensor"
    title: str
    detail: str = ""  # hyper-parameters, written inside [...]
    path: str = ""
    in_shape: Shape | None = None
    out_shape: Shape | None = None
    repeat: int = 1  # consecutive blocks of one type collapsed into this node
    steps: int = 1  # calls of one module from one place (a recurrent cell)
    macs: int = 0
    params: int = 0
    tensor: int | None = None  # inputs, outputs and tensor nodes: the trace's tensor id
    label: str = ""  # the name a model gave the tensor ("F[t]"), see nnatlas.nn.names
    desc: str = ""  # what it is ("forget gate"), translated by the renderer
    dims: str | None = None  # axis letters ("B T V") the model gave
    block: str = ""  # the block diagram this box is drawn in ("BasicBlock", "LSTMCell")


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    shape: Shape | None = None
    label: str = ""  # "x T" on the recurrent edge of a loop; "embedding.weightᵀ" on a tied weight
    tensor: int | None = None  # the trace's tensor id carried ("" edges of tied weights carry none)
    style: str = ""  # "dashed" for a tied weight


@dataclass
class Graph:
    """Nodes in call order and the edges between them; ``batch`` is the size drawn as ``B``."""

    name: str
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    batch: int | None = None

    def node(self, node_id: str) -> Node:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(f"graph {self.name!r} has no node {node_id!r}")


@dataclass
class _Unit:
    calls: list[int]  # the calls drawn as one node
    kind: str  # "single", "run" (consecutive blocks) or "loop" (one module stepped)
    repeat: int = 1


def _composite(trace: Trace, call: Call) -> bool:
    return call.kind == "module" and bool(call.children) and not trace.modules[call.path].opaque


def _items(trace: Trace, index: int) -> list[int]:
    """The children of a call in call order, with plain containers opened in place."""
    out: list[int] = []
    for c in trace.calls[index].children:
        call = trace.calls[c]
        if call.kind == "module" and trace.modules[call.path].container and call.children:
            out.extend(_items(trace, c))
        else:
            out.append(c)
    return out


def _signature(trace: Trace, call: Call) -> tuple:
    if call.kind == "module":
        return ("module", trace.modules[call.path].signature)
    return ("function", call.type, call.callsite)


def _feeds(trace: Trace, earlier: list[int], later: list[int]) -> bool:
    """Whether any call under ``later`` reads a tensor made by a call under ``earlier``."""
    made = {d for c in earlier for d in trace.descendants(c)}
    return any(trace.tensors[t].producer in made for c in later for d in trace.descendants(c)
               for t in trace.calls[d].inputs)


def _escapes(trace: Trace, inner: list[int], run: list[int]) -> bool:
    """Whether a tensor made before the run's last block is read outside the run (UNet's skips)."""
    made = {d for c in inner for d in trace.descendants(c)}
    within = {d for c in run for d in trace.descendants(c)}
    ancestors = set()
    parent = trace.calls[run[0]].parent
    while parent is not None:
        ancestors.add(parent)
        parent = trace.calls[parent].parent
    for call in trace.calls:
        if call.index in within or call.index in ancestors:
            continue
        if any(trace.tensors[t].producer in made for t in call.inputs):
            return True
    return any(trace.tensors[t].producer in made for _, t in trace.outputs)


def _same_outside_reads(trace: Trace, run: list[int], period: int) -> bool:
    """Whether every block of the run reads from outside it only what the first block reads.

    DenseNet's layers all read the block's input: one box. UNet's up blocks each read another
    skip connection: drawn one by one, so each skip keeps its own edge.
    """
    within = {d for c in run for d in trace.descendants(c)}

    def outside(members: list[int]) -> set[int]:
        return {t for c in members for d in trace.descendants(c) for t in trace.calls[d].inputs
                if trace.tensors[t].producer not in within}

    first = outside(run[:period])
    return all(outside(run[k:k + period]) <= first for k in range(period, len(run), period))


def _units(trace: Trace, items: list[int]) -> list[_Unit]:
    units: list[_Unit] = []
    i = 0
    while i < len(items):
        call = trace.calls[items[i]]
        run = _run_at(trace, items, i) if _composite(trace, call) else None
        if run is not None:
            period, reps = run
            units.append(_Unit(items[i:i + period * reps], "run", reps))
            i += period * reps
        else:
            units.append(_Unit([items[i]], "single"))
            i += 1
    # loops: one module (or one line of code) called again from the same place
    merged: list[_Unit] = []
    by_key: dict[tuple, _Unit] = {}
    for unit in units:
        call = trace.calls[unit.calls[0]]
        key = (call.kind, call.path if call.kind == "module" else call.type, call.callsite)
        if unit.kind == "single" and key in by_key:
            loop = by_key[key]
            loop.calls.append(call.index)
            loop.kind = "loop"
            continue
        if unit.kind == "single":
            by_key[key] = unit
        merged.append(unit)
    return merged


def _run_at(trace: Trace, items: list[int], i: int) -> tuple[int, int] | None:
    """(period, repetitions) of a run of distinct same-type blocks starting at ``items[i]``."""
    sigs = [_signature(trace, trace.calls[c]) for c in items]
    for period in range(1, _MAX_PERIOD + 1):
        j = i + period
        if j >= len(items) or sigs[j] != sigs[i]:
            continue
        if any(trace.calls[c].kind != "function" for c in items[i + 1:j]):
            continue
        reps = 1
        while True:
            start = i + reps * period
            nxt = items[start:start + period]
            prev = items[start - period:start]
            if (len(nxt) < period or sigs[start:start + period] != sigs[i:i + period]
                    or trace.calls[nxt[0]].path == trace.calls[prev[0]].path
                    or not _feeds(trace, prev, nxt)):
                break
            reps += 1
        run = items[i:i + period * reps]
        if reps >= 2 and not _escapes(trace, run[:-period], run) and _same_outside_reads(trace, run, period):
            return period, reps
        return None
    return None


def _channels(shape: Shape | None) -> int | None:
    if not shape:
        return None
    return shape[1] if len(shape) in (4, 5) else shape[-1]  # (B, C, H, W): C; (B, T, D): D


def _in_out(a: Shape | None, b: Shape | None) -> str:
    ci, co = _channels(a), _channels(b)
    if ci is None or co is None:
        return ""
    return f"C={ci}" if ci == co else f"In={ci}, Out={co}"


def build_graph(trace: Trace, scope: int = 0, depth: int | None = 1, *, name: str | None = None,
                input_ids: list[int] | None = None) -> Graph:
    """The graph of ``trace`` below call ``scope`` (0: the whole model) down to ``depth``.

    ``depth=None`` opens every block (runs and loops stay collapsed). The graph's inputs
    are the scope's inputs; its outputs are what the scope returned.
    """
    if depth is not None and depth < 1:
        raise ValueError(f"depth must be >= 1 (or None for every level); got {depth}")
    top = trace.calls[scope]
    graph = Graph(name or (trace.name if scope == 0 else top.type), batch=trace.batch_size)
    vis: dict[int, str] = {}  # call -> id of the node that draws it
    inst: dict[int, int] = {}  # call -> the call at the top of its node (tells loop steps apart)
    first_call: dict[str, int] = {}  # node id -> its first call
    ids: set[str] = set()

    prefix = f"{top.path}." if scope != 0 and top.path else ""

    def new_id(base: str) -> str:
        if scope != 0 and top.path:  # ids relative to the block drawn: "conv1", ":add"
            base = base.removeprefix(prefix) if base.startswith(prefix) else base.removeprefix(top.path)
        base = base or "model"
        candidate, k = base, 2
        while candidate in ids:
            candidate, k = f"{base}#{k}", k + 1
        ids.add(candidate)
        return candidate

    # inputs
    if scope == 0:
        inputs = [(n, t) for n, t in trace.inputs]
    else:
        inputs = [(f"input[{k}]" if len(top.inputs) > 1 else "input", t) for k, t in enumerate(top.inputs)]
    source: dict[int, str] = {}
    for n, t in inputs:
        nid = new_id(n)
        source[t] = nid
        info = trace.tensors[t]  # token ids and masks (B, T) read as a sequence, not features
        seq = ("B T" if len(info.shape) == 2 and info.dtype.startswith(("int", "bool", "uint"))
               and trace.batch_size is not None and info.shape[0] == trace.batch_size else None)
        graph.nodes.append(Node(nid, "input", n, out_shape=trace.shape(t), tensor=t, dims=seq))

    def add(unit: _Unit) -> None:
        first, last = trace.calls[unit.calls[0]], trace.calls[unit.calls[-1]]
        in_shape = trace.shape(first.inputs[0]) if first.inputs else None
        outs = [c for c in unit.calls if trace.calls[c].outputs] or unit.calls
        last = trace.calls[outs[-1]]
        out_shape = trace.shape(last.outputs[0]) if last.outputs else None
        macs = sum(trace.total_macs(c) for c in unit.calls)
        if first.kind == "function":
            title, detail, kind = op_title(first.type), first.args, "op"
            if first.type in _RESHAPES and out_shape is not None:
                detail = ", ".join(str(s) for s in (out_shape[1:] if trace.batch_size else out_shape))
            elif first.type in ("cat", "stack") and first.args:
                title, detail = f"{title}({first.args})", ""
            node_id = new_id(f"{first.path}:{first.type}")
            params = 0
            block, steps = "", (len(unit.calls) if unit.kind == "loop" else 1)
        else:
            info = trace.modules[first.path]
            composite = _composite(trace, first)
            kind = "block" if composite else "layer"
            title = info.type if composite else layer_title(info.type)
            detail = (info.extra or _in_out(in_shape, out_shape)) if composite else info.label
            block = info.type if composite else ""
            steps = len(unit.calls) if unit.kind == "loop" else 1
            rec = info.recurrence
            if info.rebuild is not None:
                block = info.rebuild[0]  # drawn inside by a trace of its own (attention)
            if rec is not None:
                block = rec.cell
            if rec is not None and rec.stack and in_shape is not None and len(in_shape) >= 2:
                # a recurrent stack: its cell stepped T times, as the seeds draw it (the cell's own diagram
                # comes from a trace of the cell, so the fused and the loop path draw the same)
                title = rec.cell + (f" x {rec.num_layers}" if rec.num_layers > 1 else "")
                detail = ", ".join([f"{rec.input_size}, {rec.hidden_size}"]
                                   + (["bidirectional"] if rec.bidirectional else []))
                steps = in_shape[-3 if rec.batch_first is False and len(in_shape) == 3 else -2]
                block = rec.cell
            if unit.kind == "run":
                title = f"{title} x {unit.repeat}"
            node_id = new_id(first.path)
            members = {trace.calls[c].path for c in unit.calls if trace.calls[c].kind == "module"}
            params = sum(trace.modules[p].params for p in members)
        graph.nodes.append(Node(node_id, kind, title, detail, first.path, in_shape, out_shape,
                                repeat=unit.repeat, steps=steps, macs=macs, params=params, block=block))
        if steps > 1 and first.kind == "module" and trace.modules[first.path].recurrence is not None:
            graph.edges.append(Edge(node_id, node_id, label=f"x {steps}"))  # the stack's time loop
        first_call[node_id] = unit.calls[0]
        for c in unit.calls:
            for d in trace.descendants(c):
                vis[d] = node_id
                inst[d] = c

    expanded = {scope}  # calls opened in this graph: names given inside them are drawn

    def expand(index: int, level: int) -> None:
        expanded.add(index)
        for unit in _units(trace, _items(trace, index)):
            call = trace.calls[unit.calls[0]]
            if unit.kind == "single" and _composite(trace, call) and (depth is None or level < depth):
                expand(call.index, level + 1)
            else:
                add(unit)

    if _items(trace, scope):
        expand(scope, 1)
    else:
        add(_Unit([scope], "single"))

    # edges, from the leaves' reads
    seen: set[tuple[str, str]] = set()

    def connect(src: str, dst: str, tid: int, label: str = "") -> None:
        if (src, dst) not in seen:
            seen.add((src, dst))
            graph.edges.append(Edge(src, dst, trace.shape(tid), label, tid))

    for d in sorted(trace.descendants(scope)):  # call order, so the DOT text reads as the forward runs
        call = trace.calls[d]
        if call.children or d not in vis:
            continue
        for t in call.inputs:
            if t in source:
                connect(source[t], vis[d], t)
                continue
            producer = trace.tensors[t].producer
            if producer is None or producer not in vis:
                continue
            steps = graph.node(vis[d]).steps
            if vis[producer] != vis[d]:
                # a loop read from a step that came after the loop's first step: the recurrent edge
                back = steps > 1 and producer > first_call[vis[d]]
                connect(vis[producer], vis[d], t, f"x {steps}" if back else "")
            elif inst[producer] != inst[d] and steps > 1:
                connect(vis[d], vis[d], t, f"x {steps}")  # the same cell, the next step: the recurrent edge
    outputs = trace.outputs if scope == 0 else [
        (f"output[{k}]" if len(top.outputs) > 1 else "output", t) for k, t in enumerate(top.outputs)]
    for n, t in outputs:
        nid = new_id(n)
        graph.nodes.append(Node(nid, "output", n, in_shape=trace.shape(t), out_shape=trace.shape(t), tensor=t))
        producer = trace.tensors[t].producer
        if t in source:
            connect(source[t], nid, t)
        elif producer in vis:
            connect(vis[producer], nid, t)
    _prune_dead_ops(graph)
    _tied_edges(graph, trace, vis)
    _apply_names(graph, trace, expanded)
    return graph


def _tied_edges(graph: Graph, trace: Trace, vis: dict[int, str]) -> None:
    """A dashed edge from the module owning a weight to the operation that reads it elsewhere (tied weights)."""
    drawn = {n.id for n in graph.nodes}
    first = {}
    for c in trace.calls:
        if c.kind == "module" and c.index in vis:
            first.setdefault(c.path, vis[c.index])
    for owner, index, pname in trace.tied:
        src, dst = first.get(owner), vis.get(index)
        if src and dst and src != dst and src in drawn and dst in drawn:
            edge = Edge(src, dst, label=f"{owner}.{pname}ᵀ", style="dashed")
            if edge not in graph.edges:
                graph.edges.append(edge)


def _apply_names(graph: Graph, trace: Trace, expanded: set[int]) -> None:
    """Draw what the model named (:func:`nnatlas.nn.names.name`): tensor nodes, and formula boxes.

    A named tensor read between two boxes becomes a tensor node with its name (a named input or
    output labels that node). A named tensor with a formula whose name was given in a call
    opened here replaces the operations that made it with one box holding the formula: the
    operation that made it and, going back, every operation all of whose results feed only
    such boxes (the LSTM cell's two matrix products, their sum and the chunk into four gates
    become four gate boxes, each reading X[t] and H[t-1]).
    """
    if not trace.names:
        return
    names = trace.names
    nodes = {n.id: n for n in graph.nodes}
    # named inputs and outputs
    io: dict[int, str] = {}
    for i, n in enumerate(graph.nodes):
        if n.kind in ("input", "output") and n.tensor in names:
            nm = names[n.tensor]
            graph.nodes[i] = n = _named(n, nm)
            nodes[n.id] = n
        if n.kind == "output" and n.tensor is not None:
            io.setdefault(n.tensor, n.id)
    # named tensors between boxes: a tensor node (or the output node when the tensor is an output)
    by_tensor: dict[tuple[str, int], list[int]] = {}
    for k, e in enumerate(graph.edges):
        if e.tensor in names and e.src != e.dst and nodes[e.src].kind not in ("input", "tensor"):
            by_tensor.setdefault((e.src, e.tensor), []).append(k)
    for (src, tid), ks in by_tensor.items():
        if all(nodes[graph.edges[k].dst].kind == "output" and graph.edges[k].dst == io.get(tid) for k in ks):
            continue  # only the output reads it: the output node carries the name
        hub = io.get(tid)
        if hub is None:
            nm = names[tid]
            hub = f"{src}/{nm.label or 'tensor'}"
            graph.nodes.insert(graph.nodes.index(nodes[src]) + 1,
                               _named(Node(hub, "tensor", "", out_shape=trace.shape(tid), tensor=tid), nm))
            nodes[hub] = graph.nodes[graph.nodes.index(nodes[src]) + 1]
            graph.edges.append(Edge(src, hub, trace.shape(tid), tensor=tid))
        for k in ks:
            e = graph.edges[k]
            if e.dst != hub:
                graph.edges[k] = Edge(hub, e.dst, e.shape, e.label, e.tensor, e.style)
    _absorb_formulas(graph, trace, expanded)


def _named(node: Node, nm: Any) -> Node:
    shape = nm.shape if node.kind == "tensor" and nm.shape else node.out_shape
    return replace(node, label=nm.label or "", desc=nm.desc or "", dims=nm.dims or node.dims, out_shape=shape)


def _absorb_formulas(graph: Graph, trace: Trace, expanded: set[int]) -> None:
    nodes = {n.id: n for n in graph.nodes}
    outs: dict[str, list[Edge]] = {}
    for e in graph.edges:
        if e.src != e.dst:
            outs.setdefault(e.src, []).append(e)
    formulas: dict[str, str] = {}  # producer node -> formula
    for n in graph.nodes:
        if n.kind not in ("tensor", "output") or n.tensor not in trace.names:
            continue
        nm = trace.names[n.tensor]
        if not nm.formula or nm.scope not in expanded:
            continue
        for e in graph.edges:
            if e.dst == n.id and e.tensor == n.tensor and nodes[e.src].kind in ("op", "layer"):
                p = nodes[e.src]
                if p.steps == 1 and p.repeat == 1 and e.src not in formulas:
                    formulas[e.src] = nm.formula
    if not formulas:
        return
    # absorbed: the operations every path from which ends in a formula box (cycles of a loop included)
    # functional operations only: a layer (Embedding, Linear) keeps its box and feeds the formula
    candidates = {n.id for n in graph.nodes if n.kind == "op" and n.repeat == 1} - set(formulas)
    ins_of: dict[str, list[str]] = {}
    for e in graph.edges:
        if e.src != e.dst:
            ins_of.setdefault(e.dst, []).append(e.src)
    escaping = {n for n in candidates
                if any(e.dst not in candidates and e.dst not in formulas for e in outs.get(n, []))}
    stack = list(escaping)
    while stack:  # whatever feeds an escaping operation escapes too
        for src in ins_of.get(stack.pop(), []):
            if src in candidates and src not in escaping:
                escaping.add(src)
                stack.append(src)
    reaching, stack = set(), list(formulas)
    while stack:
        for src in ins_of.get(stack.pop(), []):
            if src in candidates and src not in reaching:
                reaching.add(src)
                stack.append(src)
    absorbed = set(formulas) | (reaching - escaping)
    ins: dict[str, list[Edge]] = {}
    for e in graph.edges:
        if e.src != e.dst:
            ins.setdefault(e.dst, []).append(e)
    new_edges: list[Edge] = []
    for p, formula in formulas.items():
        stack, seen, reads = [p], {p}, []
        while stack:
            for e in ins.get(stack.pop(), []):
                if e.src in absorbed and e.src not in formulas:
                    if e.src not in seen:
                        seen.add(e.src)
                        stack.append(e.src)
                else:
                    reads.append(e)
        order = {n.id: k for k, n in enumerate(graph.nodes)}
        for e in sorted(reads, key=lambda r: order[r.src]):
            edge = Edge(e.src, p, e.shape, e.label, e.tensor, e.style)
            if all((x.src, x.dst) != (edge.src, edge.dst) for x in new_edges):
                new_edges.append(edge)
        graph.nodes[graph.nodes.index(nodes[p])] = replace(nodes[p], kind="formula", title=formula, detail="")
    gone = absorbed - set(formulas)
    kept = [e for e in graph.edges if e.src not in gone and e.dst not in gone and e.dst not in formulas]
    graph.edges = kept + new_edges
    graph.nodes = [n for n in graph.nodes if n.id not in gone]


def _prune_dead_ops(graph: Graph) -> None:
    """Drop operations whose result nothing reads (a model's ``x.min()`` for a check)."""
    while True:
        read = {e.src for e in graph.edges if e.src != e.dst}
        dead = {n.id for n in graph.nodes if n.kind == "op" and n.id not in read}
        if not dead:
            return
        graph.nodes = [n for n in graph.nodes if n.id not in dead]
        graph.edges = [e for e in graph.edges if e.src not in dead and e.dst not in dead]


def block_scopes(trace: Trace) -> list[tuple[str, int]]:
    """One (name, call index) per distinct block type: class plus structure, first call.

    A block is a module with children of its own that is neither the model, a plain
    container nor a layer counted by a formula. Two blocks of one class that differ in
    structure (a ``BasicBlock`` with a ``downsample`` and one without) are two types; the
    second is named after what it has in addition (``BasicBlock_downsample``).
    """
    first_of_class: dict[str, str] = {}
    seen: dict[str, int] = {}
    out: list[tuple[str, int]] = []
    names: set[str] = set()
    for call in trace.calls[1:]:
        if not _composite(trace, call) or trace.modules[call.path].container:
            continue
        info = trace.modules[call.path]
        if info.signature in seen:
            continue
        seen[info.signature] = call.index
        name = info.type
        if info.type in first_of_class:
            base = trace.modules[first_of_class[info.type]]
            extra = sorted({c.rsplit(".", 1)[-1] for c in info.children}
                           - {c.rsplit(".", 1)[-1] for c in base.children})
            name = f"{info.type}_{'_'.join(extra)}" if extra else info.type
        else:
            first_of_class[info.type] = call.path
        candidate, k = name, 2
        while candidate in names:
            candidate, k = f"{name}_{k}", k + 1
        names.add(candidate)
        out.append((candidate, call.index))
    return out
