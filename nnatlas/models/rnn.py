"""Recurrent networks: sequence classifiers, the time-series RNN, the NLP RNN, the char RNN.

Elman (1990), Hochreiter & Schmidhuber (1997), Cho et al. (2014); the recurrent stacks are
``nnatlas.nn.RNN`` / ``LSTM`` / ``GRU`` (written from the gate equations, ``impl="loop"``
or the fused torch kernel), always batch first here.

Dimension letters: B batch, T time steps, F input features, H hidden size, L layers,
D directions (2 when bidirectional), C classes, V vocabulary, K per-step labels.

    rnn / lstm / gru (sequence classifiers; defaults: row-by-row MNIST, F = T = 28):
        x (B, T, F) -> stack of L layers (H = 128, L = 2) -> final hidden state of the last
        layer, both directions concatenated (B, D*H) -> Linear -> logits (B, C = 10)
    time_rnn (seed 000, 5.1):
        x (B, T, F) -> RNN layers -> (B, T, D*H) -> Linear -> per-step logits (B, T, K)
    nlp_rnn (seed 000, 5.2):
        ids (B, T) -> Embedding E (V, H) -> (B, T, H) -> RNN layers -> (B, T, H)
        -> @ E^T (the embedding matrix, tied: counted once) -> logits (B, T, V)
    char_rnn (seed 004, 1; the PyTorch name-classification tutorial):
        for each step: combined = cat(x_t, h) (B, F + H); h = i2h(combined);
        out = log_softmax(i2o(combined)) -> the last step's out (B, C)

How this differs from the seeds: seed 000 draws the cell stack as "RNNCell" boxes; the cell
type (rnn, lstm, gru) is a config field here. Seed 004's GRU stack never iterates over time
and its LSTM class builds its own cell but steps ``nn.LSTMCell``; the stacks here step every
layer over every time step. Seed 004's char RNN has no nonlinearity on the hidden update (it
is a linear recurrence, as in the tutorial it copies); that is kept, and noted on its card.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from nnatlas import nn as atlas_nn
from nnatlas.config import check_fields
from nnatlas.errors import ConfigError, ShapeError, check_input
from nnatlas.nn.names import name
from nnatlas.registry import ModelCard, Paper, Recipe, Seed, configure, register_model

__all__ = [
    "RecurrentClassifierConfig",
    "RecurrentClassifier",
    "TimeRNNConfig",
    "TimeRNN",
    "NLPRNNConfig",
    "NLPRNN",
    "CharRNNConfig",
    "CharRNN",
]

Cell = Literal["rnn", "lstm", "gru"]
Tensor = torch.Tensor

ELMAN_PAPER = Paper(
    authors="Jeffrey L. Elman",
    title="Finding Structure in Time",
    venue="Cognitive Science 14(2)",
    year=1990,
    link="https://doi.org/10.1207/s15516709cog1402_1",
)
LSTM_PAPER = Paper(
    authors="Sepp Hochreiter, Jürgen Schmidhuber",
    title="Long Short-Term Memory",
    venue="Neural Computation 9(8)",
    year=1997,
    link="https://doi.org/10.1162/neco.1997.9.8.1735",
)
GRU_PAPER = Paper(
    authors="Kyunghyun Cho, Bart van Merriënboer, Caglar Gulcehre, Dzmitry Bahdanau, Fethi Bougares, "
    "Holger Schwenk, Yoshua Bengio",
    title="Learning Phrase Representations using RNN Encoder-Decoder for Statistical Machine Translation",
    venue="EMNLP",
    year=2014,
    link="https://arxiv.org/abs/1406.1078",
)
TIED_PAPER = Paper(
    authors="Ofir Press, Lior Wolf",
    title="Using the Output Embedding to Improve Language Models",
    venue="EACL",
    year=2017,
    link="https://arxiv.org/abs/1608.05859",
)


# ----------------------------------------------------------------------------- configs


def _check_stack_fields(config: object) -> None:
    """The fields every stack-based config shares: cell, nonlinearity, dropout, impl."""
    name = type(config).__name__
    cell, nonlinearity = config.cell, config.nonlinearity  # type: ignore[attr-defined]
    if cell not in ("rnn", "lstm", "gru"):
        raise ConfigError(f"{name}.cell must be 'rnn', 'lstm' or 'gru'; got {cell!r}")
    if nonlinearity not in ("tanh", "relu", "sigmoid"):
        raise ConfigError(f"{name}.nonlinearity must be 'tanh', 'relu' or 'sigmoid'; got {nonlinearity!r}")
    if cell != "rnn" and nonlinearity != "tanh":
        raise ConfigError(f"{name}.nonlinearity applies to cell='rnn' only; got {nonlinearity!r} with cell={cell!r}")
    if config.impl not in ("fused", "loop"):  # type: ignore[attr-defined]
        raise ConfigError(f"{name}.impl must be 'fused' or 'loop'; got {config.impl!r}")  # type: ignore[attr-defined]
    if nonlinearity == "sigmoid" and config.impl == "fused":  # type: ignore[attr-defined]
        raise ConfigError(f"{name}: nonlinearity='sigmoid' has no fused kernel; set impl='loop'")
    dropout = config.dropout  # type: ignore[attr-defined]
    if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0.0 <= dropout < 1.0:
        raise ConfigError(f"{name}.dropout must be in [0, 1); got {dropout!r}")


@dataclass(frozen=True)
class RecurrentClassifierConfig:
    """A recurrent stack over (B, T, F) whose last layer's final hidden state is classified."""

    cell: Cell = "lstm"
    input_size: int = 28  # F: one MNIST row per step
    hidden_size: int = 128
    num_layers: int = 2
    num_classes: int = 10
    bidirectional: bool = False
    dropout: float = 0.0  # between stacked layers, in training
    nonlinearity: str = "tanh"  # cell="rnn" only: tanh | relu | sigmoid (seed 000; impl="loop")
    impl: str = "fused"  # "fused" torch kernel or the readable "loop"

    def __post_init__(self) -> None:
        check_fields(self)
        _check_stack_fields(self)


@dataclass(frozen=True)
class TimeRNNConfig:
    """Seed 000's time-series RNN: per-step labels from the last layer's hidden states."""

    cell: Cell = "rnn"
    input_size: int = 16  # F
    hidden_size: int = 64
    num_layers: int = 2
    num_labels: int = 5  # K
    bidirectional: bool = False
    dropout: float = 0.0
    nonlinearity: str = "tanh"
    impl: str = "fused"

    def __post_init__(self) -> None:
        check_fields(self)
        _check_stack_fields(self)


@dataclass(frozen=True)
class NLPRNNConfig:
    """Seed 000's NLP RNN: a language model whose output layer is the (tied) embedding matrix."""

    cell: Cell = "rnn"
    vocab_size: int = 10_000  # V (Penn Treebank's vocabulary)
    hidden_size: int = 256  # H: the embedding width too
    num_layers: int = 2
    dropout: float = 0.0
    nonlinearity: str = "tanh"
    impl: str = "fused"
    tie_weights: bool = True  # logits = H @ E^T (seed 000); False: an output Linear(H, V) with a bias (lstm_lm, gru_lm)

    def __post_init__(self) -> None:
        check_fields(self)
        _check_stack_fields(self)


@dataclass(frozen=True)
class CharRNNConfig:
    """Seed 004's i2h/i2o RNN (PyTorch tutorial sizes: 57 letters, 128 hidden, 18 languages)."""

    n_letters: int = 57  # F: one-hot letters (ASCII letters and " .,;'")
    hidden_size: int = 128
    n_categories: int = 18  # C: languages

    def __post_init__(self) -> None:
        check_fields(self)


# ----------------------------------------------------------------------------- blocks


def recurrent_stack(
    cell: Cell,
    input_size: int,
    hidden_size: int,
    num_layers: int,
    *,
    bidirectional: bool = False,
    dropout: float = 0.0,
    nonlinearity: str = "tanh",
    impl: str = "fused",
) -> nn.Module:
    """A batch-first ``nnatlas.nn`` RNN, LSTM or GRU: (B, T, F) -> (B, T, D*H), final states."""
    kwargs = dict(num_layers=num_layers, batch_first=True, dropout=dropout, bidirectional=bidirectional, impl=impl)
    if cell == "rnn":
        return atlas_nn.RNN(input_size, hidden_size, nonlinearity=nonlinearity, **kwargs)
    stack = {"lstm": atlas_nn.LSTM, "gru": atlas_nn.GRU}[cell]
    return stack(input_size, hidden_size, **kwargs)


def _final_hidden(states: Tensor | tuple[Tensor, Tensor]) -> Tensor:
    """h_n (L*D, B, H) (the LSTM's (h_n, c_n) gives h_n) of the stack's output."""
    return states[0] if isinstance(states, tuple) else states


def _check_lengths(lengths: Tensor, B: int, T: int, model: str) -> Tensor:
    """Per-sequence lengths (B,) of a padded batch, each in 1..T (names of different lengths)."""
    if lengths.shape != (B,) or lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
        raise ShapeError(
            f"{model} expects integer lengths (B,) = ({B},) beside x; got {lengths.dtype} {tuple(lengths.shape)}"
        )
    if bool((lengths < 1).any()) or bool((lengths > T).any()):
        got = f"{lengths.min().item()}..{lengths.max().item()}"
        raise ShapeError(f"{model} expects lengths in 1..T = 1..{T}; got {got}")
    return lengths.long()


# ----------------------------------------------------------------------------- models


class RecurrentClassifier(nn.Module):
    """Sequence classifier: x (B, T, F) -> stack -> last layer's final hidden state -> Linear -> logits (B, C)."""

    def __init__(self, config: RecurrentClassifierConfig) -> None:
        super().__init__()
        self.config = c = config
        self.name = f"{c.cell.upper()} classifier"
        self.rnn = recurrent_stack(
            c.cell, c.input_size, c.hidden_size, c.num_layers,
            bidirectional=c.bidirectional, dropout=c.dropout, nonlinearity=c.nonlinearity, impl=c.impl,
        )  # fmt: skip
        D = 2 if c.bidirectional else 1
        self.fc = nn.Linear(D * c.hidden_size, c.num_classes)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """x (B, T, F) -> logits (B, C); with ``lengths`` (B,) (a padded batch) each sequence is
        classified from the last layer's hidden state at its own last step (unidirectional only)."""
        c = self.config
        check_input(x, ("B", "T", c.input_size), model=self.name, like=self)
        B, T, _ = x.shape
        D = 2 if c.bidirectional else 1
        if lengths is not None:
            if c.bidirectional:
                raise ShapeError(
                    f"{self.name} takes no lengths when bidirectional (the backward pass would start on padding); "
                    "pad-free batches only"
                )
            lengths = _check_lengths(lengths, B, T, self.name)
            output, _ = self.rnn(x)  # (B, T, H)
            last = output[torch.arange(B, device=x.device), lengths - 1]  # h at each sequence's last step: (B, H)
            return self.fc(last)  # (B, C)
        _, states = self.rnn(x)  # output (B, T, D*H) unused; h_n (L*D, B, H)
        h_n = name(_final_hidden(states), "H_n", desc="hidden state", dims="L B H")
        last = h_n[-D:].transpose(0, 1).reshape(B, D * c.hidden_size)  # last layer, both directions: (B, D*H)
        return self.fc(last)  # (B, C)


class TimeRNN(nn.Module):
    """Seed 000's time-series RNN: x (B, T, F) -> stack -> (B, T, D*H) -> Linear -> per-step logits (B, T, K)."""

    def __init__(self, config: TimeRNNConfig) -> None:
        super().__init__()
        self.config = c = config
        self.rnn = recurrent_stack(
            c.cell, c.input_size, c.hidden_size, c.num_layers,
            bidirectional=c.bidirectional, dropout=c.dropout, nonlinearity=c.nonlinearity, impl=c.impl,
        )  # fmt: skip
        D = 2 if c.bidirectional else 1
        self.fc = nn.Linear(D * c.hidden_size, c.num_labels)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, T, F) -> per-step logits (B, T, K)."""
        check_input(x, ("B", "T", self.config.input_size), model="TimeRNN", like=self)
        hidden, _ = self.rnn(x)  # (B, T, D*H)
        return self.fc(hidden)  # (B, T, K)


class NLPRNN(nn.Module):
    """Seed 000's NLP RNN: ids (B, T) -> Embedding (V, H) -> stack -> @ E^T (tied) -> logits (B, T, V).

    With ``tie_weights=False`` the output layer is its own ``head`` Linear(H, V) (lstm_lm, gru_lm).
    A :class:`~nnatlas.models.generation.CausalLM`: ``step`` carries the stack's hidden state
    (h, and c for the LSTM), so each generated token costs one time step.
    """

    def __init__(self, config: NLPRNNConfig) -> None:
        super().__init__()
        self.config = c = config
        self.vocab_size, self.context_length = c.vocab_size, None  # the CausalLM protocol: no position limit
        self.embedding = nn.Embedding(c.vocab_size, c.hidden_size)  # E (V, H), also the output layer when tied
        self.rnn = recurrent_stack(
            c.cell, c.hidden_size, c.hidden_size, c.num_layers,
            dropout=c.dropout, nonlinearity=c.nonlinearity, impl=c.impl,
        )  # fmt: skip
        self.head = None if c.tie_weights else nn.Linear(c.hidden_size, c.vocab_size)  # W_out (V, H), b_out (V,)

    def _logits(self, hidden: Tensor) -> Tensor:
        """hidden (..., H) -> logits (..., V): H @ E^T when tied, else the head."""
        return F.linear(hidden, self.embedding.weight) if self.head is None else self.head(hidden)

    def forward(self, ids: Tensor) -> Tensor:
        """ids (B, T) integer token ids -> next-token logits (B, T, V)."""
        check_input(ids, ("B", "T"), model="NLPRNN", name="token ids", dtype="int", vocab=self.config.vocab_size)
        ids = name(ids, "ids", desc="token ids", dims="B T")
        x = name(self.embedding(ids), "X", desc="embedded tokens", dims="B T H")  # (B, T, H)
        hidden, _ = self.rnn(x)  # (B, T, H)
        hidden = name(hidden, "H", desc="hidden states", dims="B T H")
        logits = self._logits(hidden)  # hidden @ E^T (tied) or head(hidden): (B, T, V)
        return name(logits, "logits", "H @ Eᵀ" if self.head is None else "H W_outᵀ + b_out", dims="B T V")  # E tied: drawn as a dashed edge

    def init_state(self, batch_size: int) -> Tensor | tuple[Tensor, Tensor]:
        """Zero hidden state (L, B, H), for the LSTM the pair (h, c): the state before the first token."""
        c, p = self.config, self.embedding.weight
        h = torch.zeros(c.num_layers, batch_size, c.hidden_size, device=p.device, dtype=p.dtype)  # (L, B, H)
        return (h, torch.zeros_like(h)) if c.cell == "lstm" else h

    def step(self, ids: Tensor, state: Tensor | tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor | tuple[Tensor, Tensor]]:
        """The newest token ids (B, t) (t > 1: a prompt) and the state before them -> (logits of the
        last position (B, V), the state after them)."""
        check_input(ids, ("B", "T"), model="NLPRNN", name="token ids", dtype="int", vocab=self.config.vocab_size)
        hidden, state = self.rnn(self.embedding(ids), state)  # (B, t, H), states (L, B, H)
        return self._logits(hidden[:, -1]), state  # (B, V)


class CharRNN(nn.Module):
    """Seed 004's i2h/i2o RNN over a whole sequence: x (B, T, F) one-hot letters -> log-probs (B, C).

    The hidden update h = i2h(cat(x_t, h)) has no nonlinearity, as in the seed and the
    tutorial it copies. The output is log_softmax (use ``F.nll_loss``; since log_softmax is
    idempotent under softmax, ``F.cross_entropy`` gives the same loss).
    """

    def __init__(self, config: CharRNNConfig) -> None:
        super().__init__()
        self.config = c = config
        self.i2h = nn.Linear(c.n_letters + c.hidden_size, c.hidden_size)
        self.i2o = nn.Linear(c.n_letters + c.hidden_size, c.n_categories)

    def step(self, x_t: Tensor, hidden: Tensor) -> tuple[Tensor, Tensor]:
        """The seed's forward, one letter: x_t (B, F), hidden (B, H) -> log-probs (B, C), hidden (B, H)."""
        combined = torch.cat((x_t, hidden), dim=1)  # (B, F + H)
        hidden = self.i2h(combined)  # (B, H): linear, no squashing (the seed's recurrence)
        output = F.log_softmax(self.i2o(combined), dim=1)  # (B, C), from the previous hidden state
        return output, hidden

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """x (B, T, F) one-hot letters (T >= 1) -> the last step's log-probabilities (B, C).

        ``lengths`` (B,): a padded batch of names; each name's output is taken at its own last
        letter, ``t = length - 1`` (what follows it is never read)."""
        c = self.config
        check_input(x, ("B", "T", c.n_letters), model="CharRNN", like=self)
        B, T, _ = x.shape
        if T < 1:
            raise ShapeError(f"CharRNN expects input (B, T, {c.n_letters}) with T >= 1 letters; got {tuple(x.shape)}")
        last = None if lengths is None else _check_lengths(lengths, B, T, "CharRNN") - 1  # (B,)
        hidden = x.new_zeros(B, c.hidden_size)  # the seed's init_hidden(), per batch element
        kept = None
        for t in range(T):
            output, hidden = self.step(x[:, t], hidden)  # (B, C), (B, H)
            if last is not None:
                kept = output if kept is None else torch.where((last == t).unsqueeze(1), output, kept)  # (B, C)
        return output if kept is None else kept


# ----------------------------------------------------------------------------- variants

_SEED000 = "000_dead3008ff14f1b5.txt"
_SEED004 = "004_352144fce4abefd7.txt"
_CLASSIFIER_NOTES = (
    "Defaults (no published model): row-by-row MNIST, T = 28 steps of F = 28 pixels, H = 128, "
    "L = 2, 10 classes; logits from the last layer's final hidden state (both directions when "
    "bidirectional). The stack is nnatlas.nn.{stack} (impl='fused' torch kernel or 'loop' over "
    "the cell equations; state dict identical to torch.nn.{stack}). {extra}"
)


# Row-by-row MNIST as the common PyTorch examples train it (yunjey/pytorch-tutorial's
# recurrent_neural_network: 2 x 128 LSTM, Adam, batch 100, 2 epochs, ~98 %): Adam 1e-3, batch 128,
# 2,000 steps (4.3 MNIST epochs) with cosine decay, evaluated every 500 steps.
_ROWS_RECIPE = Recipe(optimizer="adam", lr=1e-3, schedule="cosine", batch_size=128, steps=2000, eval_every=500,
                      source="row-by-row MNIST LSTM of yunjey/pytorch-tutorial (Adam, 2 x 128, batch 100), "
                             "at lr 1e-3 with cosine decay over 2,000 steps")
_TRAINS_ON = (" nnatlas train NAME: the sequence_classification task reads an image row by row, T = H steps of "
              "F = C*W pixels (input_size follows the data): 8 x 8 on the offline default digits, "
              "28 x 28 with --data mnist.")


def _classifier_card(name: str, title: str, paper: Paper, seed: Seed, stack: str, extra: str) -> ModelCard:
    return ModelCard(
        name=name, family="rnn", title=title, paper=paper, input_shape=(28, 28), output_shape=(10,),
        task="sequence_classification", seed=seed,
        notes=_CLASSIFIER_NOTES.format(stack=stack, extra=extra) + _TRAINS_ON,
        default_data="digits", recipe=_ROWS_RECIPE,
    )  # fmt: skip


@register_model(
    "rnn",
    card=_classifier_card(
        "rnn", "Elman RNN classifier", ELMAN_PAPER, Seed(_SEED000, "5.3 RNN 单元"), "RNN",
        "Seed 000 draws the cell with sigmoid; tanh is the default here (as torch), sigmoid is "
        "nonlinearity='sigmoid' with impl='loop' (no fused kernel).",
    ),
)  # fmt: skip
def rnn(**overrides) -> RecurrentClassifier:
    return RecurrentClassifier(configure(RecurrentClassifierConfig(cell="rnn"), overrides))


@register_model(
    "lstm",
    card=_classifier_card(
        "lstm", "LSTM classifier", LSTM_PAPER, Seed(_SEED000, "5.4 LSTM 单元"), "LSTM",
        "LSTM with the forget gate (Gers et al., 2000). Seed 000's cell computes H = C * tanh(O); "
        "correct (here) is H = O * tanh(C). The seed's LSTM and GRU digraphs carry each other's names. "
        "The seed's LSTM cell declares C[t-1] but never connects it (its cell-state box reads F[t], I[t] "
        "and CCand[t] only); the cell diagram here reads C[t-1]. "
        "Seed 004's LSTM class builds its own cell then steps nn.LSTMCell and returns log_softmax; "
        "this returns logits.",
    ),
)  # fmt: skip
def lstm(**overrides) -> RecurrentClassifier:
    return RecurrentClassifier(configure(RecurrentClassifierConfig(cell="lstm"), overrides))


@register_model(
    "gru",
    card=_classifier_card(
        "gru", "GRU classifier", GRU_PAPER, Seed(_SEED000, "5.5 GRU 单元"), "GRU",
        "torch's GRU convention: n = tanh(W_in x + b_in + r * (W_hn h + b_hn)), h' = (1 - z) * n + z * h "
        "(the paper applies r before W_hn; seed 000 writes h' = (1 - z) * h + z * n, the same model with z "
        "relabelled). Seed 004's GRU stack never iterates over time; this one does. Seed 000's GRU cell "
        "writes U[x] where U[z] is meant (in Z[t]'s formula), and its final box names H[t-1] but has no edge "
        "from it; the cell diagram here draws both.",
    ),
)  # fmt: skip
def gru(**overrides) -> RecurrentClassifier:
    return RecurrentClassifier(configure(RecurrentClassifierConfig(cell="gru"), overrides))


# No published recipe for seed 000's time RNN: Adam with cosine decay, small batches of windows,
# steps rather than epochs (sunspots has 238 training windows, co2 1,780).
_FORECAST_RECIPE = Recipe(optimizer="adam", lr=1e-3, schedule="cosine", batch_size=32, steps=2000, eval_every=200,
                          source="nnatlas (no published recipe): Adam 1e-3, cosine decay, batch 32, 2,000 steps")


@register_model(
    "time_rnn",
    card=ModelCard(
        name="time_rnn", family="rnn", title="Time-series RNN", paper=ELMAN_PAPER,
        input_shape=(50, 16), output_shape=(50, 5), task="forecast",
        seed=Seed(_SEED000, "5.1 时序 RNN"),
        notes="Seed 000's sizes are symbolic (NFeature, NHidden, NLabels, NLayers); defaults here: F = 16, "
        "H = 64, L = 2, K = 5, any T (the card uses T = 50). The cell type is a config field (the seed draws "
        "RNNCell; tanh, not the seed's sigmoid, by default). Returns per-step logits. nnatlas train time_rnn: "
        "the forecast task sets F = K = 1 (input_size, num_labels) and every step forecasts the next value of the "
        "series (sunspots by default, co2); scored one step and recursively ahead against persistence and "
        "seasonal naive on the held-out tail.",
        default_data="sunspots", recipe=_FORECAST_RECIPE,
    ),
)  # fmt: skip
def time_rnn(**overrides) -> TimeRNN:
    return TimeRNN(configure(TimeRNNConfig(), overrides))


# A character language model on tinyshakespeare (the language_model task's default data): Adam with a
# short warm-up and cosine decay, clipped gradients (recurrent nets), windows of 128 characters.
_CHAR_LM_RECIPE = Recipe(optimizer="adam", lr=3e-3, schedule="warmup_cosine", warmup=50, min_lr=3e-4, batch_size=32,
                         steps=1000, eval_every=250, clip_grad=1.0,
                         source="nnatlas: Karpathy's char-rnn size (2 x 256) with Adam, windows of 128; 1,000 steps = 4 passes over the text")
# The LSTM model: the same with dropout 0.25 between the layers and 6,000 steps (24 passes over the text);
# measured on 2 quiet CPU cores (--threads 2): whole-split validation 1.463 nats/char in 694 s of training.
_LSTM_LM_RECIPE = Recipe(optimizer="adam", lr=3e-3, schedule="warmup_cosine", warmup=50, min_lr=3e-4, batch_size=32,
                         steps=6000, eval_every=1500, clip_grad=1.0,
                         source="nnatlas: char-rnn size (2 x 256), dropout 0.25, Adam; 1.463 nats/char in 12 minutes on 2 cores")
_NLP_T = 35  # the card's sequence length (PTB's usual BPTT length)


@register_model(
    "nlp_rnn",
    card=ModelCard(
        name="nlp_rnn", family="rnn", title="NLP RNN (tied-embedding language model)", paper=TIED_PAPER,
        input_shape=(_NLP_T,), output_shape=(_NLP_T, 10_000), task="language_model", input_dtype="int",
        seed=Seed(_SEED000, "5.2 NLP RNN"),
        notes="Seed 000 gives VocabSize and NHidden symbolically; defaults here: V = 10,000 (PTB), H = 256, "
        "L = 2, cell 'rnn' (tanh). The output layer is hidden @ E^T with the embedding matrix E, tied "
        "(weight tying, Press & Wolf 2017; Inan et al. 2017): E is one parameter, counted once; no output bias.",
        default_data="tinyshakespeare", recipe=_CHAR_LM_RECIPE,
    ),
    example_input=lambda batch_size, gen: torch.randint(0, 10_000, (batch_size, _NLP_T), generator=gen),
)  # fmt: skip
def nlp_rnn(**overrides) -> NLPRNN:
    return NLPRNN(configure(NLPRNNConfig(), overrides))


_LM_T, _CHARS = 64, 65  # the cards' sequence length; tinyshakespeare's characters
_RECURRENT_LM_NOTES = (
    "Defaults: tinyshakespeare's 65 characters, H = 256, L = 2 (Karpathy's char-rnn size), cell {cell}. The "
    "embedding (V, H) feeds the stack; the output layer is its own Linear(H, V) with a bias (tie_weights=False): "
    "with 65 characters tying would save 17k of 1.1M parameters and take away the output bias (the character "
    "prior) and the freedom of input and output embeddings to differ, so the untied head is kept, as in char-rnn. "
    "A CausalLM: step() carries the stack's hidden state for generation."
)


def _char_ids(batch_size: int, gen: torch.Generator) -> Tensor:
    return torch.randint(0, _CHARS, (batch_size, _LM_T), generator=gen)


@register_model(
    "lstm_lm",
    card=ModelCard(
        name="lstm_lm", family="rnn", title="LSTM language model", paper=LSTM_PAPER,
        input_shape=(_LM_T,), output_shape=(_LM_T, _CHARS), task="language_model", input_dtype="int",
        notes=_RECURRENT_LM_NOTES.format(cell="lstm") + " Dropout 0.25 between the two layers (without it the "
        "model overfits after ~3,000 steps: 1.490 at 4,000).", default_data="tinyshakespeare", recipe=_LSTM_LM_RECIPE,
    ),
    example_input=_char_ids,
)  # fmt: skip
def lstm_lm(**overrides) -> NLPRNN:
    return NLPRNN(configure(NLPRNNConfig(cell="lstm", vocab_size=_CHARS, tie_weights=False, dropout=0.25), overrides))


@register_model(
    "gru_lm",
    card=ModelCard(
        name="gru_lm", family="rnn", title="GRU language model", paper=GRU_PAPER,
        input_shape=(_LM_T,), output_shape=(_LM_T, _CHARS), task="language_model", input_dtype="int",
        notes=_RECURRENT_LM_NOTES.format(cell="gru"), default_data="tinyshakespeare", recipe=_CHAR_LM_RECIPE,
    ),
    example_input=_char_ids,
)  # fmt: skip
def gru_lm(**overrides) -> NLPRNN:
    return NLPRNN(configure(NLPRNNConfig(cell="gru", vocab_size=_CHARS, tie_weights=False), overrides))


def _one_hot_letters(batch_size: int, gen: torch.Generator, T: int = 10, n_letters: int = 57) -> Tensor:
    letters = torch.randint(0, n_letters, (batch_size, T), generator=gen)
    return F.one_hot(letters, n_letters).float()  # (B, T, F)


# The tutorial trains one name a step (SGD 0.005, 100,000 steps, a language drawn uniformly, then a name);
# here batches of 32 names drawn the same way, Adam 3e-3 with cosine decay and clipping (the recurrence
# is linear), 6,000 steps (192,000 names).
_NAMES_RECIPE = Recipe(optimizer="adam", lr=3e-3, schedule="cosine", batch_size=32, steps=6000, eval_every=1000,
                       clip_grad=1.0,
                       source="PyTorch tutorial 'Classifying Names with a Character-Level RNN' (balanced draws), "
                              "batched: Adam 3e-3, batch 32, 6,000 steps, cosine, clip 1")


@register_model(
    "char_rnn",
    card=ModelCard(
        name="char_rnn", family="rnn", title="Char RNN (i2h/i2o name classifier)", paper=None,
        input_shape=(10, 57), output_shape=(18,), task="sequence_classification",
        seed=Seed(_SEED004, "1. RNN"),
        notes="Seed 004's RNN, from the PyTorch tutorial 'Classifying Names with a Character-Level RNN' "
        "(57 letters, 128 hidden, 18 languages). The seed processes one letter per call with a (1, H) hidden "
        "state; here forward runs a whole (B, T, 57) one-hot sequence and returns the last step's output. "
        "As in the seed, the hidden update i2h(cat(x, h)) has no nonlinearity (a linear recurrence; the "
        "tutorial's later version uses nn.RNN with tanh), and the output is log_softmax (log-probabilities, "
        "for NLLLoss) rather than the project's raw logits; each step's output is computed from the previous "
        "hidden state. nnatlas train char_rnn: the names data set (18 languages), one-hot letters over the "
        "training names' alphabet (n_letters follows the data), padded batches with lengths, a language drawn "
        "uniformly and then one of its names (the tutorial's sampling; --no-balanced reads the shuffled split).",
        default_data="names", recipe=_NAMES_RECIPE,
    ),
    example_input=_one_hot_letters,
)  # fmt: skip
def char_rnn(**overrides) -> CharRNN:
    return CharRNN(configure(CharRNNConfig(), overrides))
