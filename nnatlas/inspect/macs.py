"""Multiply-accumulate counts, one formula per layer type, from hyper-parameters and shapes.

The rules reproduce torchvision's published GFLOPS (which are multiply-adds at 224x224:
convolutions, linear layers and attention matmuls, bias and activations free) and extend
them to the layers torchvision's figures do not hold:

=========================  ===============================================================
layer                      MACs
=========================  ===============================================================
Conv1d/2d/3d               out.numel() * in_channels / groups * prod(kernel_size)
ConvTranspose1d/2d/3d      in.numel() * out_channels / groups * prod(kernel_size)
Linear, F.linear           out.numel() * in_features  (every position of a sequence)
Bilinear                   out.numel() * in1_features * in2_features
matmul / bmm / @           out.numel() * inner dimension
scaled_dot_product_attn    B * heads * Lq * Lk * (E + Ev)   (QK^T and AV)
MultiheadAttention         projections (Lq*E*E + Lk*E*kdim + Lk*E*vdim + Lq*E*E) * B
                           + B * Lq * Lk * 2E                (QK^T and AV)
RNN / GRU / LSTM           gates * (in * H + H * H) * B * T  per layer and direction;
                           gates = 1 / 3 / 4; the *Cell variants take T = 1 per call
BatchNorm, LayerNorm,      out.numel()  (the affine x * gamma' + beta' once the statistics
GroupNorm, InstanceNorm,   are folded; torchvision counts none of these, which moves its
RMSNorm                    figures by at most 0.6%: densenet121 2.834 -> 2.850 G)
LocalResponseNorm          out.numel() * size  (the windowed sum of squares)
GCNConv                    N * in * out + (E + N) * out  (XW, then one MAC per edge and
                           feature, self-loops included); dense (N, N): + N * N * out
everything else            0  (activations, pooling, dropout, embedding look-ups, reshapes)
=========================  ===============================================================

Formulas are chosen per module class: ``torch.nn`` classes by ``isinstance``, and any other
class (the ``nnatlas.nn`` mirrors, user layers) by its class name plus the hyper-parameter
attributes the formula reads, so a from-scratch ``LSTM`` exposing ``input_size``,
``hidden_size`` and ``num_layers`` is counted like ``torch.nn.LSTM``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

__all__ = ["module_formula", "function_macs"]

Shapes = Sequence[tuple[int, ...]]
Formula = Callable[[nn.Module, Shapes, Shapes], int]


def _numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def _conv(m: nn.Module, ins: Shapes, outs: Shapes) -> int:
    return _numel(outs[0]) * (m.in_channels // m.groups) * math.prod(m.kernel_size)


def _conv_transpose(m: nn.Module, ins: Shapes, outs: Shapes) -> int:
    return _numel(ins[0]) * (m.out_channels // m.groups) * math.prod(m.kernel_size)


def _linear(m: nn.Module, ins: Shapes, outs: Shapes) -> int:
    return _numel(outs[0]) * m.in_features


def _bilinear(m: nn.Module, ins: Shapes, outs: Shapes) -> int:
    return _numel(outs[0]) * m.in1_features * m.in2_features


def _per_element(m: nn.Module, ins: Shapes, outs: Shapes) -> int:
    return _numel(outs[0])


def _lrn(m: nn.Module, ins: Shapes, outs: Shapes) -> int:
    return _numel(outs[0]) * int(m.size)


_GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}


def _gates(m: nn.Module) -> int:
    for name, gates in _GATES.items():
        if type(m).__name__.startswith(name) or isinstance(m, getattr(nn, name)):
            return gates
    raise TypeError(f"no gate count for {type(m).__name__}; expected a class named RNN*, GRU* or LSTM*")


def _rnn(m: nn.Module, ins: Shapes, outs: Shapes) -> int:
    """Stacked recurrent layer: input (B, T, in) with batch_first, else (T, B, in); unbatched (T, in)."""
    x = ins[0]
    if len(x) == 2:
        batch, steps = 1, x[0]
    elif getattr(m, "batch_first", False):
        batch, steps = x[0], x[1]
    else:
        steps, batch = x[0], x[1]
    hidden = m.hidden_size
    directions = 2 if getattr(m, "bidirectional", False) else 1
    total = 0
    for layer in range(getattr(m, "num_layers", 1)):
        n_in = m.input_size if layer == 0 else hidden * directions
        total += directions * _gates(m) * (n_in * hidden + hidden * hidden)
    return total * batch * steps


def _rnn_cell(m: nn.Module, ins: Shapes, outs: Shapes) -> int:
    batch = ins[0][0] if len(ins[0]) == 2 else 1
    return _gates(m) * (m.input_size * m.hidden_size + m.hidden_size * m.hidden_size) * batch


def _mha(m: nn.Module, ins: Shapes, outs: Shapes) -> int:
    """Query (Lq, B, E) or (B, Lq, E) with batch_first; key and value may be longer (Lk)."""
    q = ins[0]
    k = ins[1] if len(ins) > 1 else q
    embed = m.embed_dim
    kdim = getattr(m, "kdim", embed) or embed
    vdim = getattr(m, "vdim", embed) or embed
    if len(q) == 2:  # unbatched
        batch, lq, lk = 1, q[0], k[0]
    elif getattr(m, "batch_first", False):
        batch, lq, lk = q[0], q[1], k[1]
    else:
        batch, lq, lk = q[1], q[0], k[0]
    projections = lq * embed * embed + lk * embed * kdim + lk * embed * vdim + lq * embed * embed
    attention = 2 * lq * lk * embed  # QK^T and AV over all heads together
    return batch * (projections + attention)


def _gcn(m: nn.Module, ins: Shapes, outs: Shapes) -> int:
    """H' = A_hat (H W): the linear map, then one MAC per edge (self-loops included) and feature.

    The graph comes as ``edge_index`` (2, E) or as a dense adjacency (N, N).
    """
    rows = _numel(outs[0]) // m.out_channels  # nodes (times the batch, if any)
    total = rows * m.in_channels * m.out_channels
    if len(ins) > 1:
        graph = ins[1]
        if len(graph) == 2 and graph[0] == graph[1] and graph[0] != 2:  # dense (N, N)
            total += graph[0] * graph[1] * m.out_channels * (rows // graph[0])
        else:
            edges = graph[-1] + (rows if getattr(m, "add_self_loops", True) else 0)
            total += edges * m.out_channels
    return total


# Each row: (torch.nn classes, class names matched on other classes, attributes those need, formula)
_TABLE: list[tuple[tuple[type, ...], tuple[str, ...], tuple[str, ...], Formula]] = [
    ((nn.Conv1d, nn.Conv2d, nn.Conv3d), ("Conv1d", "Conv2d", "Conv3d"),
     ("in_channels", "groups", "kernel_size"), _conv),
    ((nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d),
     ("ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"), ("out_channels", "groups", "kernel_size"),
     _conv_transpose),
    ((nn.Linear,), ("Linear",), ("in_features",), _linear),
    ((nn.Bilinear,), ("Bilinear",), ("in1_features", "in2_features"), _bilinear),
    ((nn.LSTM, nn.GRU, nn.RNN), ("LSTM", "GRU", "RNN"), ("input_size", "hidden_size"), _rnn),
    ((nn.LSTMCell, nn.GRUCell, nn.RNNCell), ("LSTMCell", "GRUCell", "RNNCell"), ("input_size", "hidden_size"),
     _rnn_cell),
    ((nn.MultiheadAttention,), ("MultiheadAttention",), ("embed_dim",), _mha),
    ((nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm),
     ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "LayerNorm", "GroupNorm", "RMSNorm", "InstanceNorm1d",
      "InstanceNorm2d"), (), _per_element),
    ((nn.LocalResponseNorm,), ("LocalResponseNorm",), ("size",), _lrn),
    ((), ("GCNConv",), ("in_channels", "out_channels"), _gcn),
]

_CACHE: dict[type, Formula | None] = {}


def module_formula(module: nn.Module) -> Formula | None:
    """The MAC formula for this module's class, or ``None`` when the class has none.

    A module with a formula is counted as one layer: the operations inside its forward
    are not traced further.
    """
    cls = type(module)
    if cls not in _CACHE:
        _CACHE[cls] = _lookup(module)
    return _CACHE[cls]


def _lookup(module: nn.Module) -> Formula | None:
    for classes, names, attrs, formula in _TABLE:
        if isinstance(module, classes):
            return formula
    for classes, names, attrs, formula in _TABLE:
        if type(module).__name__ in names and all(hasattr(module, a) for a in attrs):
            return formula
    return None


def function_macs(name: str, args: Sequence[object], kwargs: dict, outs: Shapes) -> int:
    """MACs of a functional call recorded outside any counted layer (``name`` without underscores)."""
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    if not outs:
        return 0
    if name in ("matmul", "bmm", "mm", "mv", "baddbmm", "addmm", "addbmm", "linalg_matmul"):
        pair = tensors[-2:]
        if len(pair) < 2 or pair[0].dim() == 0:
            return 0
        return _numel(outs[0]) * pair[0].shape[-1]
    if name == "linear" and len(tensors) >= 2:
        return _numel(outs[0]) * tensors[1].shape[-1]
    if name in ("conv1d", "conv2d", "conv3d") and len(tensors) >= 2:
        groups = kwargs.get("groups", args[6] if len(args) > 6 else 1)
        weight = tensors[1]
        return _numel(outs[0]) * weight.shape[1] * math.prod(weight.shape[2:]) if groups else 0
    if name == "scaled_dot_product_attention" and len(tensors) >= 3:
        q, k, v = tensors[:3]
        lk = k.shape[-2]
        return _numel(q.shape[:-1]) * lk * (q.shape[-1] + v.shape[-1])
    return 0
