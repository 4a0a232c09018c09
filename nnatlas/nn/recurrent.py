"""Recurrent layers written from their gate equations: RNN, LSTM and GRU cells and stacks.

Elman (1990) RNN, Hochreiter & Schmidhuber (1997) LSTM with the forget gate of Gers et al.
(2000), Cho et al. (2014) GRU. Each mirrors its ``torch.nn`` namesake: the same
constructor signature, the same parameter names and shapes (gates stacked in torch's
order, so state dicts are interchangeable) and ``from_reference(torch_module)``.

Dimension letters: B batch, T time steps, I input features, H hidden size, L layers,
D directions (2 when bidirectional), G gates (1 RNN, 4 LSTM, 3 GRU).

The cells (one time step, x (B, I), h (B, H)):

    RNN   h' = act(W_ih x + b_ih + W_hh h + b_hh)              act = tanh | relu | sigmoid
    LSTM  i, f, g, o = W_ih x + b_ih + W_hh h + b_hh   (split into 4 chunks of H, in this order)
          c' = sigmoid(f) * c + sigmoid(i) * tanh(g)
          h' = sigmoid(o) * tanh(c')
    GRU   r, z = sigmoid(W_i{r,z} x + b_i{r,z} + W_h{r,z} h + b_h{r,z})
          n = tanh(W_in x + b_in + r * (W_hn h + b_hn))         (torch's convention: r gates W_hn h + b_hn)
          h' = (1 - z) * n + z * h

The stacks (``RNN``, ``LSTM``, ``GRU``) take x (T, B, I) or (B, T, I) with ``batch_first``
(or unbatched (T, I)) and return the last layer's hidden states (T, B, D*H) with the final
states h_n (L*D, B, H) (and c_n), exactly as ``torch.nn``. Two paths, chosen by ``impl``:

- ``"loop"``: the readable one. Each layer steps its cell's equations over time, the
  reverse direction from the last step to the first; the layer's outputs (both directions
  concatenated) feed the next layer, through dropout in training.
- ``"fused"`` (default): torch's kernel through the public ``torch.lstm``, ``torch.gru``,
  ``torch.rnn_tanh`` and ``torch.rnn_relu`` with the flat weight list.

They are tested equal, forward and gradients. The sigmoid RNN (drawn in seed 000) has no
fused kernel, so ``impl="fused"`` with it raises instead of running other math. On CUDA the
fused path goes through cuDNN, which compacts the separately held weights at every call
(torch warns once; torch.nn keeps them in one flat buffer instead) and computes fp32 in TF32
unless ``torch.backends.cudnn.allow_tf32 = False``: the loop then differs by about 1e-4.

Seed 000 differs: its LSTM cell computes h = c * tanh(o) (correct: o * tanh(c), as here),
its LSTM and GRU digraphs carry each other's names, and its RNN cell uses sigmoid (kept as
``nonlinearity="sigmoid"``; tanh is the default, as in torch). Seed 004's GRU stack never
iterates over time. LSTM projections (``proj_size``) are not implemented.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from nnatlas.errors import ShapeError, check_input
from nnatlas.nn.names import name

__all__ = ["RNNCell", "LSTMCell", "GRUCell", "RNN", "LSTM", "GRU"]

Impl = Literal["fused", "loop"]
Nonlinearity = Literal["tanh", "relu", "sigmoid"]
Tensor = torch.Tensor

_ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid}
_FUSED_RNN = {"tanh": torch.rnn_tanh, "relu": torch.rnn_relu}  # no fused sigmoid kernel exists
_RNN_FORMULAS = {act: f"{sym}(X[t] W + H[t-1] U + b)" for act, sym in (("tanh", "tanh"), ("relu", "ReLU"),
                                                                       ("sigmoid", "σ"))}


def _check_nonlinearity(nonlinearity: str) -> None:
    if nonlinearity not in _ACTIVATIONS:
        raise ValueError(f"nonlinearity must be one of {sorted(_ACTIVATIONS)}; got {nonlinearity!r}")


def _check_sizes(name: str, input_size: int, hidden_size: int) -> None:
    if not (isinstance(input_size, int) and input_size >= 1):
        raise ValueError(f"{name} expects input_size >= 1; got {input_size!r}")
    if not (isinstance(hidden_size, int) and hidden_size >= 1):
        raise ValueError(f"{name} expects hidden_size >= 1; got {hidden_size!r}")


def _gates(x: Tensor, h: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None, b_hh: Tensor | None) -> Tensor:
    """W_ih x + b_ih + W_hh h + b_hh: (B, I), (B, H) -> (B, G*H)."""
    return F.linear(x, w_ih, b_ih) + F.linear(h, w_hh, b_hh)


# ----------------------------------------------------------------------------- cells


class _Cell(nn.Module):
    """Parameters shared by the cells: weight_ih (G*H, I), weight_hh (G*H, H), bias_ih, bias_hh (G*H)."""

    num_gates = 1
    reference: type[nn.Module] = nn.Module

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        _check_sizes(type(self).__name__, input_size, hidden_size)
        factory = {"device": device, "dtype": dtype}
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        G = self.num_gates
        self.weight_ih = nn.Parameter(torch.empty(G * hidden_size, input_size, **factory))
        self.weight_hh = nn.Parameter(torch.empty(G * hidden_size, hidden_size, **factory))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(G * hidden_size, **factory))
            self.bias_hh = nn.Parameter(torch.empty(G * hidden_size, **factory))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """U(-1/sqrt(H), 1/sqrt(H)) for every weight and bias, as torch.nn initialises them."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias}"

    def _check(self, x: Tensor, states: tuple[Tensor | None, ...]) -> tuple[Tensor, tuple[Tensor, ...], bool]:
        """Validate x (B, I) or (I,) and each state (B, H) or (H,); return them batched, zeros for None."""
        name = type(self).__name__
        if not isinstance(x, Tensor) or x.dim() not in (1, 2):
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ShapeError(f"{name} expects input (B, {self.input_size}) or ({self.input_size},); got {got}")
        batched = x.dim() == 2
        spec = ("B", self.input_size) if batched else (self.input_size,)
        check_input(x, spec, model=name, like=self)
        x = x if batched else x.unsqueeze(0)  # (B, I)
        B = x.shape[0]
        out = []
        for s in states:
            if s is None:
                out.append(x.new_zeros(B, self.hidden_size))
                continue
            hspec = (B, self.hidden_size) if batched else (self.hidden_size,)
            check_input(s, hspec, model=name, name="hidden state")
            out.append(s if batched else s.unsqueeze(0))  # (B, H)
        return x, tuple(out), batched

    @classmethod
    def from_reference(cls, module: nn.Module) -> "_Cell":
        """The from-scratch cell holding ``module``'s weights (its torch.nn namesake)."""
        if not isinstance(module, cls.reference):
            got = type(module).__name__
            raise TypeError(f"{cls.__name__}.from_reference expects torch.nn.{cls.__name__}; got {got}")
        w = module.weight_ih
        kwargs = {"nonlinearity": module.nonlinearity} if cls is RNNCell else {}
        cell = cls(module.input_size, module.hidden_size, module.bias, device=w.device, dtype=w.dtype, **kwargs)
        cell.load_state_dict(module.state_dict())
        cell.train(module.training)
        return cell


class RNNCell(_Cell):
    """Elman RNN cell: h' = act(W_ih x + b_ih + W_hh h + b_hh); mirrors :class:`torch.nn.RNNCell`.

    ``nonlinearity`` is ``"tanh"`` (default), ``"relu"``, or ``"sigmoid"`` (seed 000's drawing).
    """

    num_gates = 1
    reference = nn.RNNCell

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: Nonlinearity = "tanh",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        _check_nonlinearity(nonlinearity)
        super().__init__(input_size, hidden_size, bias, device, dtype)
        self.nonlinearity = nonlinearity

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, nonlinearity={self.nonlinearity!r}"

    @staticmethod
    def step(
        x: Tensor,
        h: Tensor,
        w_ih: Tensor,
        w_hh: Tensor,
        b_ih: Tensor | None,
        b_hh: Tensor | None,
        nonlinearity: str = "tanh",
    ) -> Tensor:
        """One time step: x (B, I), h (B, H) -> h' (B, H)."""
        x, h = name(x, "X[t]", dims="B I"), name(h, "H[t-1]", desc="previous hidden state", dims="B H")
        h = _ACTIVATIONS[nonlinearity](_gates(x, h, w_ih, w_hh, b_ih, b_hh))  # h' = act(x W + h U + b)
        return name(h, "H[t]", _RNN_FORMULAS[nonlinearity], desc="hidden state", dims="B H")

    def forward(self, x: Tensor, hx: Tensor | None = None) -> Tensor:
        """x (B, I) or (I,), hx (B, H) or (H,) (zeros when None) -> h' of hx's shape."""
        x, (h,), batched = self._check(x, (hx,))
        h = self.step(x, h, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh, self.nonlinearity)  # (B, H)
        return h if batched else h.squeeze(0)


class LSTMCell(_Cell):
    """LSTM cell, gates stacked i, f, g, o; h' = o * tanh(c'). Mirrors :class:`torch.nn.LSTMCell`."""

    num_gates = 4
    reference = nn.LSTMCell

    @staticmethod
    def step(
        x: Tensor, h: Tensor, c: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None, b_hh: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """One time step: x (B, I), h and c (B, H) -> h', c' (B, H)."""
        x, h = name(x, "X[t]", dims="B I"), name(h, "H[t-1]", desc="previous hidden state", dims="B H")
        c = name(c, "C[t-1]", desc="previous cell state", dims="B H")
        i, f, g, o = _gates(x, h, w_ih, w_hh, b_ih, b_hh).chunk(4, dim=1)  # 4 x (B, H)
        i = name(torch.sigmoid(i), "I[t]", "σ(X[t] W_i + H[t-1] U_i + b_i)", desc="input gate", dims="B H")
        f = name(torch.sigmoid(f), "F[t]", "σ(X[t] W_f + H[t-1] U_f + b_f)", desc="forget gate", dims="B H")
        g = name(torch.tanh(g), "CCand[t]", "tanh(X[t] W_c + H[t-1] U_c + b_c)", desc="cell candidate", dims="B H")
        o = name(torch.sigmoid(o), "O[t]", "σ(X[t] W_o + H[t-1] U_o + b_o)", desc="output gate", dims="B H")
        c = f * c + i * g  # c' = f * c + i * g
        c = name(c, "C[t]", "F[t] ⊙ C[t-1] + I[t] ⊙ CCand[t]", desc="cell state", dims="B H")
        h = o * torch.tanh(c)  # h' = o * tanh(c')  (the seed has c * tanh(o))
        return name(h, "H[t]", "O[t] ⊙ tanh(C[t])", desc="hidden state", dims="B H"), c

    def forward(self, x: Tensor, hx: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """x (B, I) or (I,), hx = (h, c) each (B, H) or (H,) (zeros when None) -> (h', c')."""
        h0, c0 = (None, None) if hx is None else hx
        x, (h, c), batched = self._check(x, (h0, c0))
        h, c = self.step(x, h, c, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)  # (B, H) each
        return (h, c) if batched else (h.squeeze(0), c.squeeze(0))


class GRUCell(_Cell):
    """GRU cell, gates stacked r, z, n, in torch's convention; mirrors :class:`torch.nn.GRUCell`."""

    num_gates = 3
    reference = nn.GRUCell

    @staticmethod
    def step(x: Tensor, h: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None, b_hh: Tensor | None) -> Tensor:
        """One time step: x (B, I), h (B, H) -> h' (B, H)."""
        x, h = name(x, "X[t]", dims="B I"), name(h, "H[t-1]", desc="previous hidden state", dims="B H")
        x_r, x_z, x_n = F.linear(x, w_ih, b_ih).chunk(3, dim=1)  # W_i{r,z,n} x + b_i{r,z,n}
        h_r, h_z, h_n = F.linear(h, w_hh, b_hh).chunk(3, dim=1)  # W_h{r,z,n} h + b_h{r,z,n}
        r = name(torch.sigmoid(x_r + h_r), "R[t]", "σ(X[t] W_r + H[t-1] U_r + b_r)", desc="reset gate", dims="B H")
        z = name(torch.sigmoid(x_z + h_z), "Z[t]", "σ(X[t] W_z + H[t-1] U_z + b_z)", desc="update gate", dims="B H")
        n = torch.tanh(x_n + r * h_n)  # candidate: the reset gate scales W_hn h + b_hn
        n = name(n, "HCand[t]", "tanh(X[t] W_h + b_ih + R[t] ⊙ (H[t-1] U_h + b_hh))", desc="candidate", dims="B H")
        h = (1 - z) * n + z * h  # h' = (1 - z) * n + z * h
        return name(h, "H[t]", "(1 - Z[t]) ⊙ HCand[t] + Z[t] ⊙ H[t-1]", desc="hidden state", dims="B H")

    def forward(self, x: Tensor, hx: Tensor | None = None) -> Tensor:
        """x (B, I) or (I,), hx (B, H) or (H,) (zeros when None) -> h' of hx's shape."""
        x, (h,), batched = self._check(x, (hx,))
        h = self.step(x, h, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)  # (B, H)
        return h if batched else h.squeeze(0)


# ----------------------------------------------------------------------------- stacks


class _Stack(nn.Module):
    """L layers of D directions; parameters weight_ih_l{k}[_reverse] etc. exactly as torch.nn names them."""

    num_gates = 1
    reference: type[nn.Module] = nn.Module

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        impl: Impl = "fused",
    ) -> None:
        super().__init__()
        name = type(self).__name__
        _check_sizes(name, input_size, hidden_size)
        if not (isinstance(num_layers, int) and num_layers >= 1):
            raise ValueError(f"{name} expects num_layers >= 1; got {num_layers!r}")
        if not (isinstance(dropout, (int, float)) and 0.0 <= dropout <= 1.0) or isinstance(dropout, bool):
            raise ValueError(f"{name} expects dropout in [0, 1]; got {dropout!r}")
        if impl not in ("fused", "loop"):
            raise ValueError(f"{name} expects impl 'fused' or 'loop'; got {impl!r}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.bidirectional, self.impl = bidirectional, impl
        factory = {"device": device, "dtype": dtype}
        G, H, D = self.num_gates, hidden_size, self.num_directions
        self._weight_names: list[list[str]] = []  # per (layer, direction): w_ih, w_hh[, b_ih, b_hh]
        for layer in range(num_layers):
            layer_in = input_size if layer == 0 else D * H  # deeper layers read both directions
            for direction in range(D):
                sfx = f"_l{layer}" + ("_reverse" if direction == 1 else "")
                shapes = {f"weight_ih{sfx}": (G * H, layer_in), f"weight_hh{sfx}": (G * H, H)}
                if bias:
                    shapes |= {f"bias_ih{sfx}": (G * H,), f"bias_hh{sfx}": (G * H,)}
                for pname, shape in shapes.items():
                    self.register_parameter(pname, nn.Parameter(torch.empty(shape, **factory)))
                self._weight_names.append(list(shapes))
        self.reset_parameters()

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def reset_parameters(self) -> None:
        """U(-1/sqrt(H), 1/sqrt(H)) for every weight and bias, as torch.nn initialises them."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s + f", impl={self.impl!r}"

    def _weights(self, layer: int, direction: int) -> list[Tensor | None]:
        """[w_ih, w_hh, b_ih, b_hh] of one layer and direction (biases None without bias)."""
        ws = [getattr(self, n) for n in self._weight_names[layer * self.num_directions + direction]]
        return ws if self.bias else [*ws, None, None]

    def _flat_weights(self) -> list[Tensor]:
        """Every parameter in torch's flat order: per layer, per direction, w_ih, w_hh[, b_ih, b_hh]."""
        return [getattr(self, n) for names in self._weight_names for n in names]

    # -- entry validation ---------------------------------------------------------

    def _check(self, x: Tensor, states: tuple[Tensor | None, ...]) -> tuple[Tensor, tuple[Tensor, ...], bool]:
        """x (T, B, I) / (B, T, I) / (T, I); states (L*D, B, H) / (L*D, H). Returns them batched, zeros for None."""
        name = type(self).__name__
        I, H, LD = self.input_size, self.hidden_size, self.num_layers * self.num_directions
        layout = "(B, T, {I})" if self.batch_first else "(T, B, {I})"
        if not isinstance(x, Tensor) or x.dim() not in (2, 3):
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ShapeError(f"{name} expects input {layout.format(I=I)} or unbatched (T, {I}); got {got}")
        batched = x.dim() == 3
        spec = (("B", "T", I) if self.batch_first else ("T", "B", I)) if batched else ("T", I)
        check_input(x, spec, model=name, like=self)
        if not batched:
            x = x.unsqueeze(0 if self.batch_first else 1)  # (1, T, I) or (T, 1, I)
        B = x.shape[0 if self.batch_first else 1]
        out = []
        for s in states:
            if s is None:
                out.append(x.new_zeros(LD, B, H))
                continue
            spec = (LD, B, H) if batched else (LD, H)
            check_input(s, spec, model=name, name="initial state (num_layers * num_directions, B, H)")
            out.append(s if batched else s.unsqueeze(1))  # (L*D, B, H)
        return x, tuple(out), batched

    # -- the two paths -------------------------------------------------------------

    def _step(self, x: Tensor, state: tuple[Tensor, ...], weights: list[Tensor | None]) -> tuple[Tensor, ...]:
        """One cell step of this stack's kind: x (B, in), state tuple of (B, H) -> new state tuple."""
        raise NotImplementedError

    def _fused(self, x: Tensor, states: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
        raise NotImplementedError

    def _loop(self, x: Tensor, states: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
        """Step the cell over time, layer by layer, both directions. x (B, T, I) or (T, B, I) as configured."""
        seq = x.transpose(0, 1) if self.batch_first else x  # (T, B, I): time-major for stepping
        T = seq.shape[0]
        finals: list[list[Tensor]] = [[] for _ in states]  # per state kind, L*D tensors of (B, H)
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(self.num_directions):
                k = layer * self.num_directions + direction
                state = tuple(s[k] for s in states)  # each (B, H)
                weights = self._weights(layer, direction)
                hs: list[Tensor] = [seq.new_empty(0)] * T
                for t in range(T) if direction == 0 else reversed(range(T)):  # reverse: last step first
                    state = self._step(seq[t], state, weights)
                    hs[t] = state[0]  # h_t (B, H)
                outputs.append(torch.stack(hs) if T else seq.new_zeros(0, seq.shape[1], self.hidden_size))  # (T, B, H)
                for kind, s in enumerate(state):
                    finals[kind].append(s)
            seq = torch.cat(outputs, dim=-1)  # (T, B, D*H)
            if self.training and self.dropout > 0 and layer < self.num_layers - 1:
                seq = F.dropout(seq, self.dropout, training=True)  # between layers, not after the last
        output = seq.transpose(0, 1) if self.batch_first else seq  # (B, T, D*H) or (T, B, D*H)
        return output, tuple(torch.stack(f) for f in finals)  # each (L*D, B, H)

    def _run(self, x: Tensor, states: tuple[Tensor | None, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
        x, full, batched = self._check(x, states)
        if self.impl == "fused":
            output, finals = self._fused(x, full)
        elif self.impl == "loop":
            output, finals = self._loop(x, full)
        else:
            raise ValueError(f"{type(self).__name__} expects impl 'fused' or 'loop'; got {self.impl!r}")
        if not batched:
            output = output.squeeze(0 if self.batch_first else 1)  # (T, D*H)
            finals = tuple(s.squeeze(1) for s in finals)  # (L*D, H)
        return output, finals

    def _fused_args(self) -> tuple:
        """The trailing arguments of torch.lstm / torch.gru / torch.rnn_*."""
        flags = (self.bias, self.num_layers, self.dropout, self.training, self.bidirectional, self.batch_first)
        return (self._flat_weights(), *flags)

    @classmethod
    def from_reference(cls, module: nn.Module, *, impl: Impl = "fused") -> "_Stack":
        """The from-scratch stack holding ``module``'s weights (its torch.nn namesake), same configuration."""
        if not isinstance(module, cls.reference):
            got = type(module).__name__
            raise TypeError(f"{cls.__name__}.from_reference expects torch.nn.{cls.__name__}; got {got}")
        if getattr(module, "proj_size", 0):
            raise ValueError(f"{cls.__name__}.from_reference: proj_size={module.proj_size} is not implemented")
        w = module.weight_ih_l0
        kwargs = {"nonlinearity": module.nonlinearity} if cls is RNN else {}
        stack = cls(
            module.input_size,
            module.hidden_size,
            module.num_layers,
            bias=module.bias,
            batch_first=module.batch_first,
            dropout=module.dropout,
            bidirectional=module.bidirectional,
            device=w.device,
            dtype=w.dtype,
            impl=impl,
            **kwargs,
        )
        stack.load_state_dict(module.state_dict())
        stack.train(module.training)
        return stack


class RNN(_Stack):
    """Multi-layer Elman RNN; mirrors :class:`torch.nn.RNN` (plus ``nonlinearity="sigmoid"``, loop only)."""

    num_gates = 1
    reference = nn.RNN

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: Nonlinearity = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        impl: Impl = "fused",
    ) -> None:
        _check_nonlinearity(nonlinearity)
        if impl == "fused" and nonlinearity not in _FUSED_RNN:
            raise ValueError(f"RNN(nonlinearity={nonlinearity!r}) has no fused torch kernel; use impl='loop'")
        super().__init__(
            input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, device, dtype, impl=impl
        )
        self.nonlinearity = nonlinearity

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, nonlinearity={self.nonlinearity!r}"

    def _step(self, x: Tensor, state: tuple[Tensor, ...], weights: list[Tensor | None]) -> tuple[Tensor, ...]:
        return (RNNCell.step(x, state[0], *weights, nonlinearity=self.nonlinearity),)

    def _fused(self, x: Tensor, states: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
        kernel = _FUSED_RNN.get(self.nonlinearity)
        if kernel is None:
            raise ValueError(f"RNN(nonlinearity={self.nonlinearity!r}) has no fused torch kernel; use impl='loop'")
        output, h_n = kernel(x, states[0], *self._fused_args())
        return output, (h_n,)

    def forward(self, x: Tensor, hx: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x (T, B, I) or (B, T, I) with batch_first, or (T, I); hx (L*D, B, H) or None.

        Returns output (T, B, D*H) (or (B, T, D*H)) and h_n (L*D, B, H).
        """
        output, (h_n,) = self._run(x, (hx,))
        return output, h_n


class LSTM(_Stack):
    """Multi-layer LSTM; mirrors :class:`torch.nn.LSTM` (without ``proj_size``)."""

    num_gates = 4
    reference = nn.LSTM

    def _step(self, x: Tensor, state: tuple[Tensor, ...], weights: list[Tensor | None]) -> tuple[Tensor, ...]:
        return LSTMCell.step(x, state[0], state[1], *weights)

    def _fused(self, x: Tensor, states: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
        output, h_n, c_n = torch.lstm(x, states, *self._fused_args())
        return output, (h_n, c_n)

    def forward(self, x: Tensor, hx: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """x (T, B, I) or (B, T, I) with batch_first, or (T, I); hx = (h0, c0) each (L*D, B, H), or None.

        Returns output (T, B, D*H) (or (B, T, D*H)) and (h_n, c_n) each (L*D, B, H).
        """
        if hx is not None and not (isinstance(hx, (tuple, list)) and len(hx) == 2):
            raise ShapeError(f"LSTM expects hx as a pair (h0, c0); got {type(hx).__name__}")
        h0, c0 = (None, None) if hx is None else hx
        output, (h_n, c_n) = self._run(x, (h0, c0))
        return output, (h_n, c_n)


class GRU(_Stack):
    """Multi-layer GRU; mirrors :class:`torch.nn.GRU`."""

    num_gates = 3
    reference = nn.GRU

    def _step(self, x: Tensor, state: tuple[Tensor, ...], weights: list[Tensor | None]) -> tuple[Tensor, ...]:
        return (GRUCell.step(x, state[0], *weights),)

    def _fused(self, x: Tensor, states: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
        output, h_n = torch.gru(x, states[0], *self._fused_args())
        return output, (h_n,)

    def forward(self, x: Tensor, hx: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x (T, B, I) or (B, T, I) with batch_first, or (T, I); hx (L*D, B, H) or None.

        Returns output (T, B, D*H) (or (B, T, D*H)) and h_n (L*D, B, H).
        """
        output, (h_n,) = self._run(x, (hx,))
        return output, h_n
