"""Pointer Network (Vinyals, Fortunato & Jaitly, NeurIPS 2015).

A sequence-to-sequence model whose outputs are positions in its input: the attention over
the encoder states is not blended into a context vector, it *is* the output distribution.

Dimension letters: B batch, N input elements (points), P features per element (2 for
planar points), H hidden size.

    points (B, N, P) -> encoder LSTM -> e_1..e_N (B, N, H), final state (h, c)
    decoder, step i = 1..N, state initialised with the encoder's final state:
        input d_in: a learned start vector (P,) at i = 1, then the selected point x_{C_{i-1}}
        (h, c) = LSTMCell(d_in, (h, c))                         d_i = h (B, H)
        u_j = v^T tanh(W1 e_j + W2 d_i)                          (B, N)   (paper eq. 3)
        u_j = -1e9 where j is already chosen or is padding        (finite, so outputs stay finite)
        p(C_i | C_1..C_{i-1}, P) = softmax(u)  -> log_probs[:, i] (B, N)
        C_i = argmax (greedy) or the target (teacher forcing)
    -> log_probs (B, N, N) (step, position), indices (B, N)

With ``lengths`` (B,) the elements of batch row b are points[b, :lengths[b]]: padding is
never chosen, greedy decoding returns a permutation of 0..lengths[b]-1 in indices[b, :lengths[b]],
the steps past the length hold index -1 and log-probability rows of 0 (no distribution; the
loss skips them). The encoder runs each distinct length on its own so that its final state
is the state after the last valid element (no packing, the same math as unpadded).

With ``targets`` (B, N) (a permutation of the valid positions per row, then any negative
number, -1 or -100, past the length)
the decoder is teacher-forced: step i reads the target point C_{i-1} and masks the targets
chosen so far; ``pointer_loss`` is the mean negative log-probability of the targets. Without
targets, decoding is greedy (both in training and in evaluation).

How this differs from seed 004: the seed scores each step with Linear(decoder state) -> one
number, so its softmax over a single entry is always 1; it feeds the attention read-out
(a blend of encoder states) back as the next input instead of the selected input element;
it never masks chosen positions (so its outputs need not be a permutation); its decoder
input is zeros rather than a learned start vector; and it has no W1 e_j + W2 d_i attention.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nnatlas import nn as atlas_nn
from nnatlas.config import check_fields
from nnatlas.errors import ConfigError, ShapeError, check_input
from nnatlas.nn.names import name
from nnatlas.registry import ModelCard, Paper, Seed, configure, register_model

__all__ = ["PointerNetConfig", "PointerAttention", "PointerNet", "pointer_loss"]

Tensor = torch.Tensor

MASKED = -1e9  # score of a position that cannot be chosen: finite, so log-softmax stays finite

POINTER_PAPER = Paper(
    authors="Oriol Vinyals, Meire Fortunato, Navdeep Jaitly",
    title="Pointer Networks",
    venue="NeurIPS",
    year=2015,
    link="https://arxiv.org/abs/1506.03134",
)


@dataclass(frozen=True)
class PointerNetConfig:
    """Sizes of the pointer network (the paper uses one layer of 256 or 512 LSTM units)."""

    input_size: int = 2  # P: planar points
    hidden_size: int = 256  # H: encoder, decoder and attention width

    def __post_init__(self) -> None:
        check_fields(self)


class PointerAttention(nn.Module):
    """Additive attention scores u_j = v^T tanh(W1 e_j + W2 d) over the N encoder states."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.W1 = nn.Linear(hidden_size, hidden_size, bias=False)  # on the encoder states
        self.W2 = nn.Linear(hidden_size, hidden_size, bias=False)  # on the decoder state
        self.v = nn.Linear(hidden_size, 1, bias=False)

    def forward(self, W1e: Tensor, d: Tensor) -> Tensor:
        """W1e = W1 e (B, N, H) (computed once per sequence), d (B, H) -> scores u (B, N)."""
        return self.v(torch.tanh(W1e + self.W2(d).unsqueeze(1))).squeeze(-1)  # (B, N)


class PointerNet(nn.Module):
    """Pointer network: points (B, N, P) -> (log_probs (B, N, N), indices (B, N))."""

    def __init__(self, config: PointerNetConfig) -> None:
        super().__init__()
        self.config = c = config
        self.encoder = atlas_nn.LSTM(c.input_size, c.hidden_size, batch_first=True)
        self.decoder = atlas_nn.LSTMCell(c.input_size, c.hidden_size)
        self.start = nn.Parameter(torch.empty(c.input_size).uniform_(-1.0, 1.0))  # the first decoder input
        self.attention = PointerAttention(c.hidden_size)

    def _valid_mask(self, points: Tensor, lengths: Tensor | None) -> Tensor:
        """(B, N) bool: True at real elements, False at padding."""
        B, N, _ = points.shape
        positions = torch.arange(N, device=points.device)
        if lengths is None:
            return positions.expand(B, N) >= 0
        check_input(lengths, (B,), model="PointerNet", name="lengths", dtype="int")
        if bool(((lengths < 1) | (lengths > N)).any()):
            raise ShapeError(f"PointerNet expects lengths in [1, N = {N}]; got {lengths.tolist()}")
        return positions < lengths.to(points.device).unsqueeze(1)  # (B, N)

    def _encode(self, points: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """points (B, N, P) -> encoder states (B, N, H) and the state after each row's last valid element."""
        if lengths is None:
            e, (h, c) = self.encoder(points)  # (B, N, H); (1, B, H) each
            return e, h[0], c[0]
        B, N, _ = points.shape
        H = self.config.hidden_size
        e = points.new_zeros(B, N, H)
        h, c = points.new_zeros(B, H), points.new_zeros(B, H)
        for n in torch.unique(lengths).tolist():  # rows of one length run together, without their padding
            rows = (lengths == n).nonzero().squeeze(1).to(points.device)
            e_n, (h_n, c_n) = self.encoder(points[rows, :n])  # (b, n, H); (1, b, H)
            e = e.index_put((rows,), F.pad(e_n, (0, 0, 0, N - n)))  # padding positions keep zeros
            h, c = h.index_put((rows,), h_n[0]), c.index_put((rows,), c_n[0])
        return e, h, c

    def _check_targets(self, targets: Tensor, valid: Tensor) -> None:
        B, N = valid.shape
        check_input(targets, (B, N), model="PointerNet", name="targets", dtype="int")
        steps_valid = valid  # step i is valid iff i < length, the same mask as the positions
        t = targets.to(valid.device)
        in_range = (t >= 0) & (t < valid.sum(1, keepdim=True))
        if bool((steps_valid & ~in_range).any()) or bool((~steps_valid & (t >= 0)).any()):
            raise ValueError("PointerNet expects targets in [0, length) at the first `length` steps, negative after")
        positions = torch.arange(N, device=valid.device).expand(B, N)
        if not torch.equal(t.masked_fill(~steps_valid, N).sort(dim=1).values, positions.masked_fill(~steps_valid, N)):
            raise ValueError("PointerNet expects each row of targets to be a permutation of 0..length-1, then negative")

    def forward(
        self, points: Tensor, lengths: Tensor | None = None, targets: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """points (B, N, P); lengths (B,) ints or None (all N); targets (B, N) ints or None.

        Returns log_probs (B, N, N): step i's log-probabilities over the N input positions,
        and indices (B, N): the position chosen at each step (the target under teacher
        forcing, else the greedy argmax), -1 past each row's length.
        """
        c = self.config
        check_input(points, ("B", "N", c.input_size), model="PointerNet", name="points", like=self)
        B, N, P = points.shape
        valid = self._valid_mask(points, lengths)  # (B, N)
        if targets is not None:
            self._check_targets(targets, valid)
            targets = targets.to(points.device)

        e, h, cell = self._encode(points, lengths)  # (B, N, H), (B, H), (B, H)
        e = name(e, "e", desc="encoder states", dims="B N H")
        W1e = self.attention.W1(e)  # (B, N, H): the encoder half of the scores, once
        chosen = torch.zeros_like(valid)  # (B, N) positions already pointed at
        d_in = self.start.expand(B, P)  # (B, P)
        rows = torch.arange(B, device=points.device)
        log_probs, indices = [], []
        for i in range(N):
            h, cell = self.decoder(d_in, (h, cell))  # d_i (B, H)
            scores = name(self.attention(W1e, h), "u", "v tanh(W1 e_j + W2 d_i)", desc="scores", dims="B N")  # u (B, N)
            allowed = valid & ~chosen  # (B, N)
            scores = scores.masked_fill(~allowed, MASKED)
            logp = F.log_softmax(scores, dim=-1)  # (B, N)
            logp = name(logp, "p(C_i | C_<i, P)", "log softmax(u), chosen masked", desc="pointer distribution", dims="B N")
            active = allowed.any(dim=-1)  # (B,) rows still decoding (i < length)
            logp = logp.masked_fill(~active.unsqueeze(1), 0.0)  # finished rows: no distribution
            pick = targets[:, i] if targets is not None else logp.argmax(dim=-1)  # (B,)
            pick = torch.where(active, pick, torch.full_like(pick, -1))
            log_probs.append(logp)
            indices.append(pick)
            safe = pick.clamp(min=0)  # finished rows read any point; their outputs are ignored
            chosen = chosen | (F.one_hot(safe, N).bool() & active.unsqueeze(1))
            d_in = points[rows, safe]  # the selected input element x_{C_i} (B, P)
        return torch.stack(log_probs, dim=1), torch.stack(indices, dim=1)  # (B, N, N), (B, N)


def pointer_loss(log_probs: Tensor, targets: Tensor) -> Tensor:
    """Mean negative log-probability of the target positions over the valid steps (negative targets are skipped)."""
    B, N, _ = log_probs.shape
    targets = targets.masked_fill(targets < 0, -1)  # -1 and -100 both mark padding
    return F.nll_loss(log_probs.reshape(B * N, N), targets.reshape(B * N), ignore_index=-1)


_N = 10  # the card's number of points


@register_model(
    "pointer_net",
    card=ModelCard(
        name="pointer_net", family="pointer", title="Pointer Network", paper=POINTER_PAPER,
        input_shape=(_N, 2), output_shape=((_N, _N), (_N,)), task="pointer",
        seed=Seed("004_352144fce4abefd7.txt", "PointNet: 指针网络"),
        notes="forward(points, lengths=None, targets=None) -> (log_probs (B, N, N), indices (B, N) int64). "
        "Encoder LSTM, decoder LSTMCell fed the selected input point (a learned start vector first), additive "
        "attention u_j = v^T tanh(W1 e_j + W2 d_i) whose masked log-softmax is the output; chosen and padding "
        "positions get a finite -1e9 score; greedy decoding returns a permutation of the valid inputs; targets "
        "teacher-force; loss: pointer_loss. H = 256 (the paper: 256 or 512); any N (the card uses 10). Seed 004 "
        "errata: its score is Linear(decoder state) -> one number, so its softmax is over a single entry (always 1); "
        "it feeds the attention read-out back instead of the chosen input, starts from zeros, and never masks "
        "chosen positions (outputs need not be a permutation).",
    ),
    example_input=lambda batch_size, gen: torch.rand(batch_size, _N, 2, generator=gen),
)  # fmt: skip
def pointer_net(**overrides) -> PointerNet:
    return PointerNet(configure(PointerNetConfig(), overrides))
