"""Stage 1 of the inspector: run the model once and record every call as plain data.

Scoped forward pre/post hooks on the model's own modules record each module call (path,
type, input and output shapes, MACs), and a scoped :class:`torch.overrides.TorchFunctionMode`
records the functional operations between them (``+`` of a residual, ``cat``, reshapes,
softmax, the VAE's sampling, attention matmuls). Tensors are followed by identity, so an
edge goes from the call that produced a tensor to every call that reads it; skip
connections are edges like any other. Hooks are removed and the mode exits in ``finally``,
whatever the model raises.

Tracing need not compute: the model runs on the ``meta`` device (parameters swapped for
``meta`` tensors with :func:`torch.func.functional_call`, inputs moved to ``meta``), so
only shapes propagate. A model that cannot run on ``meta`` (``.item()``, data-dependent
decoding) is traced on its real tensors instead.
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

from nnatlas.inspect.macs import function_macs, module_formula
from nnatlas.nn import attention, graph, recurrent
from nnatlas.nn.names import recording

__all__ = ["Call", "ModuleInfo", "Name", "TensorInfo", "Trace", "TraceError", "trace", "trace_model", "CONTAINERS"]

log = logging.getLogger(__name__)

Shape = tuple[int, ...]

#: Plain containers are transparent: their children are drawn as the parent's.
CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)

# Functional ops that only change layout or dtype: their output stands for their input.
_SILENT = frozenset({
    "contiguous", "clone", "detach", "to", "type", "float", "double", "half", "bfloat16", "cpu", "cuda",
    "get", "unsqueeze", "squeeze", "expand", "expand_as", "transpose", "permute", "t", "requires_grad",
    "type_as", "dropout", "alias", "movedim", "swapaxes", "long", "int", "bool", "short", "byte", "char",
})
# Activations whose last positional argument is ``inplace``: F.relu(x, True), F.hardtanh(x, 0, 6, True).
_INPLACE_LAST = frozenset({
    "relu", "relu6", "elu", "leaky_relu", "hardtanh", "silu", "mish", "hardswish", "selu", "celu",
})
_QUIET_KWARGS = frozenset({"inplace", "out", "_stacklevel", "dtype", "layout", "device"})
# Tensor factories that start no data path (zeros for an initial state, arange for positions).
_SOURCES = frozenset({
    "zeros", "ones", "empty", "full", "arange", "zeros_like", "ones_like", "empty_like", "full_like",
    "tensor", "as_tensor", "eye", "linspace", "tril", "triu", "new_zeros", "new_ones", "new_empty", "new_full",
})
# Operations whose output has the input's shape and dtype: on the meta device their output is
# made directly, skipping torch's meta decompositions (batch norm's alone cost ~10 ms a call).
_SHAPE_KEEPING = frozenset({
    "batch_norm", "layer_norm", "group_norm", "instance_norm", "rms_norm", "relu", "relu6", "gelu", "silu",
    "sigmoid", "tanh", "dropout", "softmax", "log_softmax", "hardtanh", "leaky_relu", "elu", "mish",
    "hardswish", "softplus", "local_response_norm",
})
_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep  # the separator keeps torchvision out
_THIS_DIR = os.path.dirname(__file__) + os.sep


class TraceError(ValueError):
    """The model failed on the given input for a reason other than its own input checks."""


@dataclass
class TensorInfo:
    """A tensor seen during the trace: its shape, dtype, size in bytes and the call that made it."""

    shape: Shape
    dtype: str
    nbytes: int
    producer: int | None  # index into Trace.calls; None for model inputs and sources


@dataclass
class Call:
    """One call of a module or of a functional operation."""

    index: int
    kind: str  # "module" or "function"
    path: str  # module path ("" for the root); for a function, the path of the module calling it
    type: str  # class name, or the operation's name ("add", "cat", "reshape")
    parent: int | None
    callsite: tuple[tuple[str, int, int], ...]  # (file, line, bytecode offset) per frame
    inputs: list[int] = field(default_factory=list)  # tensor ids (indices into Trace.tensors)
    outputs: list[int] = field(default_factory=list)
    children: list[int] = field(default_factory=list)
    macs: int = 0  # this call's own MACs: its formula, or its matmul/linear when a function
    counted: bool = False  # True when ``macs`` holds the whole call (children not added again)
    args: str = ""  # short argument text of a function (``dim=1``)


@dataclass(frozen=True)
class Name:
    """What a model said of a tensor with :func:`nnatlas.nn.names.name`, and where."""

    label: str | None  # "F[t]"; None: only the axes are named
    formula: str | None  # "σ(X[t] W_f + H[t-1] U_f + b_f)": the operations that made it, drawn as one box
    desc: str | None  # "forget gate" (translated by the diagram's language table)
    dims: str | None  # "B H", "B, C=64+6×32, H, W"
    scope: int  # the module call whose forward named it
    shape: Shape = ()  # the tensor's shape where it was named (after a transpose, which keeps the tensor id)


@dataclass(frozen=True)
class Recurrence:
    """A recurrent stack (``LSTM``) as the diagram draws it: one cell stepped over time."""

    cell: str  # "LSTMCell"
    input_size: int
    hidden_size: int
    num_layers: int
    bidirectional: bool
    batch_first: bool
    nonlinearity: str | None  # RNN cells: "tanh", "relu" or "sigmoid"
    stack: bool = True  # False for a cell module itself (stepped by the model's own loop)


@dataclass
class ModuleInfo:
    """A module of the model as data: what the table and the diagram need to know about it."""

    path: str
    type: str
    params: int  # unique parameters, recursively (shared weights once)
    trainable: int
    param_bytes: int
    label: str  # hyper-parameters as the diagram writes them: "K=5, S=1, P=0, In=1, Out=6"
    container: bool
    opaque: bool  # counted by a formula as one layer (its inside is not traced)
    leaf: bool
    children: list[str]
    signature: str  # class plus structure: equal signatures draw as the same block type
    extra: str = ""  # a block's own ``extra_repr()``: its hyper-parameters ("NLayers=6, BNSize=4, GrowthRate=32")
    recurrence: Recurrence | None = None  # set for recurrent stacks (nnatlas.nn or torch.nn)
    rebuild: tuple[str, tuple, tuple] | None = None  # a layer drawn inside by a trace of its own: (class, args, kwargs)


@dataclass
class Trace:
    """Everything one forward pass showed; the graph and the table are built from it."""

    name: str
    device: str  # "meta" when only shapes propagated
    calls: list[Call]
    tensors: list[TensorInfo]
    modules: dict[str, ModuleInfo]
    inputs: list[tuple[str, int]]  # (name, tensor id)
    outputs: list[tuple[str, int]]
    total_params: int
    trainable_params: int
    param_bytes: int
    batch_size: int | None
    names: dict[int, Name] = field(default_factory=dict)  # tensor id -> its name (the last one given)
    tied: list[tuple[str, str, str]] = field(default_factory=list)  # (owner path, reader path, parameter name)

    def shape(self, tid: int) -> Shape:
        return self.tensors[tid].shape

    def descendants(self, index: int) -> Iterator[int]:
        stack = [index]
        while stack:
            i = stack.pop()
            yield i
            stack.extend(self.calls[i].children)

    def total_macs(self, index: int) -> int:
        """MACs of a call and everything it called."""
        call = self.calls[index]
        if call.counted:
            return call.macs
        return call.macs + sum(self.total_macs(c) for c in call.children)


def _op_name(func: Any) -> str:
    name = getattr(func, "__name__", None) or type(func).__name__
    name = name.strip("_")
    if name.startswith(("i", "r")) and name[1:] in ("add", "sub", "mul", "truediv", "matmul", "and", "or"):
        name = name[1:]
    if name.endswith("_") and len(name) > 1:
        name = name[:-1]
    return {"truediv": "div", "getitem": "getitem", "concat": "cat", "concatenate": "cat"}.get(name, name)


def _callsite() -> tuple[tuple[str, int, int], ...]:
    """Where the model's code made the call: its frames inside the current ``forward``.

    The frames outside torch and the inspector, from the call up to the module machinery
    that entered this forward, each with its bytecode offset. Two calls share a callsite
    only when the same instructions ran again: a loop (a cell stepped T times), not a helper
    called from two places, nor two multiplications on one line.
    """
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.startswith((_TORCH_DIR, _THIS_DIR)):
        frame = frame.f_back
    site = []
    while frame is not None and not frame.f_code.co_filename.startswith((_TORCH_DIR, _THIS_DIR)) and len(site) < 8:
        site.append((frame.f_code.co_filename, frame.f_lineno, frame.f_lasti))
        frame = frame.f_back
    return tuple(site)


def _tensors(obj: Any) -> list[torch.Tensor]:
    """The tensors inside nested tuples, lists and dicts, in order (called on every op: kept plain)."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [t for item in obj for t in _tensors(item)]
    if isinstance(obj, dict):
        return [t for item in obj.values() for t in _tensors(item)]
    return []


def _short(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return ""
    if isinstance(value, (int, float, bool, str)):
        return repr(value) if not isinstance(value, float) else f"{value:g}"
    if isinstance(value, (tuple, list, torch.Size)) and all(isinstance(v, int) for v in value) and len(value) <= 6:
        return "(" + ", ".join(str(v) for v in value) + ")"
    return ""


class _Recorder(TorchFunctionMode):
    """Records calls while a forward runs; see :func:`trace`."""

    def __init__(self, paths: dict[int, str], opaque: set[str]) -> None:
        super().__init__()
        self.paths = paths
        self.opaque = opaque
        self.calls: list[Call] = []
        self.tensors: list[TensorInfo] = []
        self.keep: list[torch.Tensor] = []  # holds every seen tensor so that no id() is reused
        self.tid: dict[int, int] = {}  # id(tensor object) -> current tensor id
        self.stack: list[int] = []
        self.busy = False
        self.names: dict[int, Name] = {}
        self.params: dict[int, tuple[str, str]] = {}  # id(parameter) -> (owner module path, parameter name)
        self.reads: list[tuple[str, int, str]] = []  # (owner path, call, parameter) read outside the owner

    # -- tensors -------------------------------------------------------------------------
    def produce(self, t: torch.Tensor, producer: int | None) -> int:
        """A new tensor id for ``t`` (a new one also when an in-place op returns the same object)."""
        self.keep.append(t)
        self.tensors.append(TensorInfo(tuple(t.shape), str(t.dtype).removeprefix("torch."),
                                       t.numel() * t.element_size(), producer))
        self.tid[id(t)] = len(self.tensors) - 1
        return len(self.tensors) - 1

    def known(self, ts: list[torch.Tensor]) -> list[int]:
        return [self.tid[id(t)] for t in ts if id(t) in self.tid]

    def name(self, t: torch.Tensor, label: str | None, formula: str | None, desc: str | None,
             dims: str | None) -> None:
        """:func:`nnatlas.nn.names.name` during the trace: remember the name of a tensor seen so far."""
        if not isinstance(t, torch.Tensor) or id(t) not in self.tid or not self.stack or self.stack[-1] < 0:
            return  # an unseen tensor, or inside a layer drawn as one box
        top = self.stack[-1]
        if self._inside_opaque(top):
            return
        self.names[self.tid[id(t)]] = Name(label, formula, desc, dims, top, tuple(t.shape))

    # -- module hooks ----------------------------------------------------------------------
    def pre_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self.busy = True
        try:
            path = self.paths.get(id(module), "?")
            parent = self.stack[-1] if self.stack else None
            if isinstance(module, nn.Identity) or (parent is not None and (parent < 0 or self._inside_opaque(parent))):
                self.stack.append(-1)  # Identity, or a sub-module of a counted layer: not drawn, not counted
                return
            call = Call(len(self.calls), "module", path, type(module).__name__, parent, _callsite())
            call.inputs = self.known(_tensors((args, kwargs)))
            self.calls.append(call)
            if parent is not None:
                self.calls[parent].children.append(call.index)
            self.stack.append(call.index)
        finally:
            self.busy = False

    def post_hook(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        self.busy = True
        try:
            index = self.stack.pop()
            if index < 0:
                return
            call = self.calls[index]
            outs = _tensors(output)
            leaf = not call.children
            call.outputs = [self.produce(t, index) if leaf or id(t) not in self.tid else self.tid[id(t)] for t in outs]
            formula = module_formula(module)
            if formula is not None and call.outputs:  # no outputs: the forward raised, nothing to count
                ins = [self.tensors[i].shape for i in call.inputs] or [tuple(t.shape) for t in _tensors(args)]
                call.macs = formula(module, ins, [self.tensors[i].shape for i in call.outputs])
                call.counted = True
        finally:
            self.busy = False

    @staticmethod
    def _shortcut(func: Any, args: tuple, kwargs: dict) -> torch.Tensor | None:
        """The output of a shape-keeping op (or a linear map, or a concatenation) on meta tensors, made without
        running the op."""
        x = args[0] if args else None
        name = getattr(func, "__name__", "")
        if name == "cat" and isinstance(x, (list, tuple)) and x and not kwargs.get("out"):
            return _meta_cat(x, args[1] if len(args) > 1 else kwargs.get("dim", 0))
        if not isinstance(x, torch.Tensor) or x.device.type != "meta":
            return None
        if name == "linear" and len(args) > 1 and isinstance(args[1], torch.Tensor) and args[1].dim() == 2:
            # torch's meta linear decomposes into addmm (~5 ms a call); its shape is plain: (..., out)
            if x.shape[-1] != args[1].shape[1]:
                return None  # let torch raise its own shape error
            return x.new_empty((*x.shape[:-1], args[1].shape[0]))
        base = name.rstrip("_")
        if base not in _SHAPE_KEEPING:
            return None
        inplace = (name.endswith("_") or kwargs.get("inplace") is True
                   or (base == "dropout" and len(args) > 3 and args[3] is True)  # F.dropout(x, p, training, inplace)
                   or (base in _INPLACE_LAST and len(args) > 1 and args[-1] is True))  # F.relu(x, True)
        return x if inplace else torch.empty_like(x)

    def _inside_opaque(self, index: int) -> bool:
        call = self.calls[index]
        return call.kind == "module" and call.path in self.opaque and call.parent is not None

    # -- functional operations --------------------------------------------------------------
    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = self._shortcut(func, args, kwargs)
        if out is None:
            out = func(*args, **kwargs)
        if self.busy or not self.stack:
            return out
        top = self.stack[-1]
        if top < 0:
            return out
        name = _op_name(func)
        outs = _tensors(out)
        if name == "setitem" and args and isinstance(args[0], torch.Tensor):
            outs = [args[0]]  # y[s:e] = v writes into y: a new version of y, made from v
        if not outs:
            return out
        parent = self.calls[top]
        if self._inside_opaque(top):
            if not parent.counted:  # a layer without a formula: its matmuls still count
                parent.macs += function_macs(name, args, kwargs, [tuple(t.shape) for t in outs])
            return out
        ins = _tensors((args, kwargs))
        if name in _SILENT:
            source = self.known(ins[:1])
            for t in outs:
                if source:
                    self.keep.append(t)
                    self.tid[id(t)] = source[0]
                else:
                    self.produce(t, None)
            return out
        if name in _SOURCES or (not ins and not name.startswith("rand")):
            for t in outs:
                self.produce(t, None)
            return out
        call = Call(len(self.calls), "function", parent.path, name, top, _callsite())
        call.inputs = [] if name.endswith("_like") else self.known(ins)  # randn_like(mu) reads only mu's shape
        call.args = ", ".join(f"{k}={s}" for k, v in kwargs.items() if k not in _QUIET_KWARGS and (s := _short(v)))
        positional = [a for a in args[1:] if isinstance(a, int) and not isinstance(a, bool)]
        if name in ("cat", "stack", "softmax", "log_softmax", "flatten", "sum", "mean") and positional:
            call.args = f"dim={positional[0]}" if name != "flatten" else f"start_dim={positional[0]}"
        elif name == "chunk" and positional:
            call.args = ", ".join([str(positional[0])] + ([call.args] if call.args else []))
        elif name == "linear" and len(ins) >= 2 and ins[1].dim() == 2:
            call.args = f"{ins[1].shape[1]}, {ins[1].shape[0]}"  # [in, out] as the Linear layer is written
        call.macs = function_macs(name, args, kwargs, [tuple(t.shape) for t in outs])
        call.counted = True
        for t in ins:  # a parameter of another module read here: a tied weight (an NLP RNN's E^T)
            owner = self.params.get(id(t))
            if owner is not None and owner[0] != call.path:  # drawn when the owner ran as a node of its own
                self.reads.append((owner[0], call.index, owner[1]))
        self.calls.append(call)
        parent.children.append(call.index)
        call.outputs = [self.produce(t, call.index) for t in outs]
        for t in outs:  # an in-place write into a view changes its base: later reads of the base see this call
            base = t._base if name.endswith("_") or name == "setitem" or any(t is i for i in ins) else None
            if base is not None and id(base) in self.tid:
                self.produce(base, call.index)
        return out


def _meta_cat(ts: list | tuple, dim: Any) -> torch.Tensor | None:
    """torch.cat's output on meta tensors of one dtype (torch's meta cat costs ~5 ms a call: DenseNet has 58)."""
    first = ts[0]
    if not isinstance(dim, int) or not all(isinstance(t, torch.Tensor) and t.device.type == "meta"
                                           and t.dtype == first.dtype and t.dim() == first.dim() for t in ts):
        return None
    if first.dim() == 0 or not -first.dim() <= dim < first.dim():
        return None  # let torch raise its own error
    d = dim % first.dim()
    if any(t.shape[:d] != first.shape[:d] or t.shape[d + 1:] != first.shape[d + 1:] for t in ts):
        return None
    shape = list(first.shape)
    shape[d] = sum(t.shape[d] for t in ts)
    return first.new_empty(shape)


def _module_table(model: nn.Module) -> tuple[dict[str, ModuleInfo], dict[int, str], set[str]]:
    from nnatlas.inspect.labels import layer_label

    paths: dict[int, str] = {}
    infos: dict[str, ModuleInfo] = {}
    opaque: set[str] = set()
    named = list(model.named_modules())
    for path, module in named:
        paths[id(module)] = path
    # unique parameters per module, bottom-up (deepest paths first)
    own: dict[str, dict[int, nn.Parameter]] = {}
    for path, module in sorted(named, key=lambda pm: -pm[0].count(".") - (pm[0] != "")):
        params = {id(p): p for p in module.parameters(recurse=False)}
        for name, child in module.named_children():
            child_path = f"{path}.{name}" if path else name
            params.update(own.get(child_path, {}))
        own[path] = params
    signatures: dict[str, str] = {}
    for path, module in sorted(named, key=lambda pm: -pm[0].count(".") - (pm[0] != "")):
        kids = [(n, f"{path}.{n}" if path else n) for n, _ in module.named_children()]
        parts: list[str] = []
        for n, child_path in kids:
            sig = signatures[child_path]
            if not parts or parts[-1] != sig:  # repeats of one child type count once
                parts.append(sig)
        signatures[path] = type(module).__name__ + ("(" + ",".join(parts) + ")" if parts else "")
    for path, module in named:
        params = own[path].values()
        formula = module_formula(module)
        leaf = not any(True for _ in module.children())
        if path and (formula is not None or not any(True for _ in module.children())):
            opaque.add(path)
        infos[path] = ModuleInfo(
            path=path,
            type=type(module).__name__,
            params=sum(p.numel() for p in params),
            trainable=sum(p.numel() for p in params if p.requires_grad),
            param_bytes=sum(p.numel() * p.element_size() for p in params),
            label=layer_label(module),
            container=type(module) in CONTAINERS,
            opaque=formula is not None or leaf,
            leaf=leaf,
            children=[f"{path}.{n}" if path else n for n, _ in module.named_children()],
            signature=signatures[path],
            extra=_own_extra_repr(module) if not leaf else "",
            recurrence=_recurrence(module),
            rebuild=_rebuild(module),
        )
    return infos, paths, opaque


def _own_extra_repr(module: nn.Module) -> str:
    """A block's ``extra_repr()`` when its class (not torch's) defines one: the hyper-parameters it draws."""
    defined = type(module).extra_repr
    if defined is nn.Module.extra_repr or (defined.__module__ or "").startswith("torch."):
        return ""
    return module.extra_repr()


def _rebuild(module: nn.Module) -> tuple[str, tuple, tuple] | None:
    """How to build a fresh copy of a layer counted as one box whose inside the diagram still draws."""
    if isinstance(module, attention.MultiheadAttention):
        kwargs = (("batch_first", module.batch_first), ("kdim", module.kdim), ("vdim", module.vdim))
        return ("MultiheadAttention", (module.embed_dim, module.num_heads), kwargs)
    if isinstance(module, graph.GCNConv):
        kwargs = (("improved", module.improved), ("add_self_loops", module.add_self_loops),
                  ("normalize", module.normalize), ("bias", module.bias is not None))
        return ("GCNConv", (module.in_channels, module.out_channels), kwargs)
    return None


def _recurrence(module: nn.Module) -> Recurrence | None:
    """How a recurrent stack (nnatlas's or torch's ``RNN``/``LSTM``/``GRU``) steps its cell; None for others."""
    if isinstance(module, (recurrent._Cell, nn.RNNCellBase)):
        kind = type(module).__name__
        if kind not in ("RNNCell", "LSTMCell", "GRUCell"):
            return None
        nonlinearity = getattr(module, "nonlinearity", None) if kind == "RNNCell" else None
        return Recurrence(kind, module.input_size, module.hidden_size, 1, False, False, nonlinearity, stack=False)
    if not isinstance(module, (recurrent._Stack, nn.RNNBase)):
        return None
    kind = type(module).__name__ if isinstance(module, recurrent._Stack) else module.mode.split("_")[0]
    kind = {"LSTM": "LSTM", "GRU": "GRU", "RNN": "RNN"}.get(kind, kind)
    nonlinearity = getattr(module, "nonlinearity", None) if kind == "RNN" else None
    if isinstance(module, nn.RNNBase) and kind == "RNN":
        nonlinearity = module.mode.removeprefix("RNN_").lower()
    return Recurrence(f"{kind}Cell", module.input_size, module.hidden_size, module.num_layers,
                      bool(module.bidirectional), bool(module.batch_first), nonlinearity)


def _named_leaves(obj: Any, prefix: str) -> list[tuple[str, torch.Tensor]]:
    leaves, _ = pytree.tree_flatten_with_path(obj)
    named = []
    for keypath, leaf in leaves:
        if isinstance(leaf, torch.Tensor):
            key = "".join(f"[{k.idx}]" if hasattr(k, "idx") else f".{getattr(k, 'key', getattr(k, 'name', k))}"
                          for k in keypath)
            named.append((prefix + key, leaf))
    if len(named) == 1:
        named = [(prefix, named[0][1])]
    return named


def _input_names(model: nn.Module, args: tuple) -> list[tuple[str, torch.Tensor]]:
    """The input tensors named after ``forward``'s parameters: ``input`` alone, else ``input src``, ``input hx[0]``."""
    leaves = _named_leaves(args, "input")
    if len(leaves) <= 1:
        return leaves
    try:
        bound = inspect.signature(model.forward).bind(*args)
    except (TypeError, ValueError):
        return leaves
    named = []
    for param, value in bound.arguments.items():
        named.extend(_named_leaves(value, f"input {param}") if _tensors(value) else [])
    return named if len(named) == len(leaves) else leaves


def _to_meta(obj: Any) -> Any:
    return pytree.tree_map(lambda t: t.to("meta") if isinstance(t, torch.Tensor) else t, obj)


def _meta_state(model: nn.Module) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    made: dict[int, torch.Tensor] = {}  # one meta tensor per real tensor, so tied weights stay tied
    named = list(model.named_parameters(remove_duplicate=False)) + list(model.named_buffers(remove_duplicate=False))
    for name, t in named:
        if t is not None and t.device.type != "meta":
            if id(t) not in made:
                made[id(t)] = torch.empty_like(t, device="meta").requires_grad_(t.requires_grad)
            state[name] = made[id(t)]
    return state


def _on_meta(model: nn.Module) -> bool:
    tensors = list(model.parameters()) + list(model.buffers())
    return bool(tensors) and all(t.device.type == "meta" for t in tensors)


def trace(model: nn.Module, inputs: Any, *, name: str | None = None, meta: bool = True,
          batched: bool = True, training: bool | None = None, kwargs: dict[str, Any] | None = None) -> Trace:
    """Run ``model(*inputs)`` once (without gradients) and record it.

    ``inputs`` is a tensor or a tuple of positional inputs. With ``meta=True`` the run
    propagates shapes on the ``meta`` device and falls back to the real tensors when the
    model cannot run there. ``training`` sets the mode for the run (``None``: the model's
    own mode; the graph as trained draws the VAE's sampling, eval mode leaves it out).
    ``batched=False`` says the first dimension is not a batch (graphs).

    Errors the model raises on purpose (``ValueError``, ``TypeError``: a shape it rejects)
    propagate; any other error is re-raised as a :class:`TraceError` (a ``ValueError``)
    naming the model and the input shapes. The model's hooks, training flags, parameters
    and buffers are as before afterwards, also when it raises.
    """
    args = inputs if isinstance(inputs, tuple) else (inputs,)
    name = name or type(model).__name__
    modules, paths, opaque = _module_table(model)
    params = {id(p): p for p in model.parameters()}
    first = _tensors(args)
    shapes = [tuple(t.shape) for t in first]
    if _on_meta(model):
        attempts = ["meta"]
    else:
        attempts = ["meta", "real"] if meta else ["real"]
    errors: list[Exception] = []
    for device in attempts:
        try:
            recorder, outputs, in_named = _run(model, args, paths, opaque, on_meta=device == "meta",
                                               training=training, kwargs=kwargs or {})
        except (ValueError, TypeError, KeyError):
            raise
        except Exception as err:  # noqa: BLE001  (any other failure: try the real tensors, then report)
            errors.append(err)
            log.debug("trace of %s on %s failed: %s", name, device, err)
            continue
        return Trace(
            name=name,
            device="meta" if device == "meta" else str(first[0].device if first else "cpu"),
            calls=recorder.calls,
            tensors=recorder.tensors,
            modules=modules,
            inputs=in_named,
            outputs=[(n, recorder.tid[id(t)]) for n, t in _named_leaves(outputs, "output") if id(t) in recorder.tid],
            total_params=sum(p.numel() for p in params.values()),
            trainable_params=sum(p.numel() for p in params.values() if p.requires_grad),
            param_bytes=sum(p.numel() * p.element_size() for p in params.values()),
            batch_size=shapes[0][0] if batched and shapes and len(shapes[0]) >= 2 else None,
            names=recorder.names,
            tied=recorder.reads,
        )
    err = errors[-1]
    message = (str(err).strip().splitlines() or [""])[0]
    raise TraceError(f"{name} failed on input shapes {shapes}: {type(err).__name__}: {message}") from err


def _run(model: nn.Module, args: tuple, paths: dict[int, str], opaque: set[str], *, on_meta: bool,
         training: bool | None, kwargs: dict[str, Any]) -> tuple[_Recorder, Any, list[tuple[str, int]]]:
    recorder = _Recorder(paths, opaque)
    run_args = _to_meta(args) if on_meta else args
    # On meta every parameter and buffer is swapped for an empty meta tensor; on real tensors
    # the buffers are swapped for copies, so a training-mode trace leaves running statistics as they were.
    state = _meta_state(model) if on_meta else {n: b.clone() for n, b in model.named_buffers() if b is not None}
    for n, p in model.named_parameters(remove_duplicate=False):  # the first name of a shared parameter owns it
        owner, _, pname = n.rpartition(".")
        recorder.params.setdefault(id(state.get(n, p)), (owner, pname))
    named_inputs = _input_names(model, run_args)
    in_named = [(n, recorder.produce(t, None)) for n, t in named_inputs]
    handles = []
    modes = {m: m.training for m in model.modules()}
    try:
        for module in model.modules():
            handles.append(module.register_forward_pre_hook(recorder.pre_hook, with_kwargs=True))
            handles.append(module.register_forward_hook(recorder.post_hook, with_kwargs=True, always_call=True))
        if training is not None:
            model.train(training)
        with torch.no_grad(), recorder, recording(recorder.name):
            outputs = torch.func.functional_call(model, state, run_args, kwargs, tie_weights=True, strict=False)
    finally:
        for h in handles:
            h.remove()
        for m, flag in modes.items():
            m.training = flag
    return recorder, outputs, in_named


# In-place fills and elementwise updates: on a meta tensor they change nothing that can be seen.
_META_INIT = frozenset({
    "normal_", "uniform_", "zero_", "fill_", "copy_", "exponential_", "bernoulli_", "random_", "clamp_", "mul_",
    "add_", "sub_", "div_", "erfinv_", "exp_", "log_", "sqrt_", "abs_", "neg_", "fill_diagonal_", "masked_fill_",
    "trunc_normal_", "kaiming_normal_", "kaiming_uniform_", "xavier_normal_", "xavier_uniform_", "constant_",
    "zeros_", "ones_", "orthogonal_",
})


class _SkipMetaInit(TorchFunctionMode):
    """Builds a model on meta without running its initialisers: there are no values to fill.

    torch runs ``normal_`` and friends on meta through Python decompositions (milliseconds a
    call); skipping them makes building a registered model for a trace nearly free.
    """

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        target = args[0] if args else kwargs.get("tensor")  # torch.nn.init passes ``tensor=`` by keyword
        if (getattr(func, "__name__", "") in _META_INIT and isinstance(target, torch.Tensor)
                and target.device.type == "meta"):
            return target
        return func(*args, **kwargs)


def trace_model(model_or_name: nn.Module | str | Trace, input: Any = None, *, training: bool | None = None) -> Trace:
    """A :class:`Trace` of a registered model (by name) or of a module on ``input``.

    A name builds the model on the ``meta`` device (no memory, no initialisation work) and
    traces it on ``input`` or else the card's example input at batch size 1; a model that
    cannot run on ``meta`` is built again for real. A name traces in training mode (the
    graph as trained, as the seeds draw it) unless ``training=False``; a module traces in
    its own mode unless ``training`` is given. A :class:`Trace` is returned as it is.
    """
    from nnatlas import registry

    if isinstance(model_or_name, Trace):
        return model_or_name
    if isinstance(model_or_name, str):
        name = model_or_name
        card = registry.card(name)  # UnknownModelError for a name that is not registered
        inputs = input if input is not None else registry.example_input(name, 1)
        mode = True if training is None else training
        try:
            with torch.device("meta"), _SkipMetaInit():
                model = registry.create(name)
        except (ValueError, TypeError):
            raise
        except Exception:  # noqa: BLE001  (construction needs real tensors: build it for real)
            model = registry.create(name)
        try:
            return trace(model, inputs, name=name, batched=card.batched, training=mode)
        except TraceError:
            if not _on_meta(model):
                raise
            return trace(registry.create(name), inputs, name=name, meta=False, batched=card.batched, training=mode)
    if not isinstance(model_or_name, nn.Module):
        raise TypeError(f"expected a model name, an nn.Module or a Trace; got {type(model_or_name).__name__}")
    if input is None:
        raise TypeError(f"tracing a {type(model_or_name).__name__} module needs input= (a tensor or a tuple of "
                        "tensors); registered models by name have an example input")
    return trace(model_or_name, input, training=training)
