"""Pointer Network (Vinyals, Fortunato & Jaitly, NeurIPS 2015).

A sequence-to-sequence model whose outputs are positions in its input: the attention over
the encoder states is not blended into a context vector, it *is* the output distribution.

Dimension letters: B batch, N input elements (points), P features per element (2 for
planar points), D what the LSTMs read per element, H hidden size.

The embedding (``embedding_size`` D = 128; None reads the raw points, D = P, as the paper
does) is the one departure from the paper, as in its common reproductions (Bello et al.
2016 embed the points the same way): on the raw two coordinates in [0, 1] the LSTMs learn
very slowly (convex hulls of 5 points, batches of 128, Adam 1e-3: 2 % exact after 2,000 steps
on the raw points with H = 256, against 80 % after 1,000 steps with the embedding and H = 128;
the default, H = 256 with the embedding, reaches 0.935 in 8,000 steps).

    points (B, N, P) -> embedding Linear(P, D) -> x (B, N, D)
    x -> encoder LSTM -> e_1..e_N (B, N, H), final state (h, c)
    decoder, step i = 1..S, state initialised with the encoder's final state:
        input d_in: a learned start vector (D,) at i = 1, then the selected element x_{C_{i-1}}
        (h, c) = LSTMCell(d_in, (h, c))                         d_i = h (B, H)
        u_j = v^T tanh(W1 e_j + W2 d_i)                          (B, N)   (paper eq. 3)
        u_j = -1e9 where j may not be chosen (see below)          (finite, so outputs stay finite)
        p(C_i | C_1..C_{i-1}, P) = softmax(u)  -> log_probs[:, i] (B, N)
        C_i = argmax (greedy), the target (teacher forcing), or a beam's choice (beam_search)
    -> log_probs (B, S, N) (step, position), indices (B, S)

What a decoded sequence is, ``output`` (S is the number of decoding steps):

- ``"permutation"`` (S = N): every valid position once (sorting; a TSP tour without its
  closing repeat; the tour is closed by whoever reads it).
- ``"cycle"`` (S = N + 1): distinct positions, then the *first* one again, which ends the
  sequence: the end-of-sequence pointer is the closing repeat. This is the paper's files'
  convention, ``output 1 2 3 5 1`` for a hull of 4 of 5 points, so a hull (a subset of the
  points) is emitted exactly as the file writes it. The first position may be chosen again
  once three positions are chosen (a polygon: a hull in general position has three vertices);
  every step after the closing one holds index -1. Closing on the first point, rather than
  on an extra learned end slot, keeps the stop decision the same decision as every other
  step (point at the next hull vertex, which is then the first one).

``mask_chosen`` (default True): positions already chosen get the -1e9 score, so a
permutation is always one and a cycle never repeats a point before it closes. With False the
decoder is the paper's unconstrained one: it may repeat points (an invalid output, which the
pointer task counts); a cycle then ends when it returns to its first point after three choices
or after N + 1 steps, a permutation after N steps. Padding is masked either way.

``beam_search(points, lengths, beam_size=k)`` keeps the k most probable partial sequences
by the sum of their log-probabilities; a finished beam keeps its score and competes with the
growing ones; the best beam at the end is returned. ``beam_size=1`` is greedy decoding.

With ``lengths`` (B,) the elements of batch row b are points[b, :lengths[b]]: padding is
never chosen, greedy decoding returns a permutation of 0..lengths[b]-1 in indices[b, :lengths[b]],
the steps past the length hold index -1 and log-probability rows of 0 (no distribution; the
loss skips them). The encoder runs each distinct length on its own so that its final state
is the state after the last valid element (no packing, the same math as unpadded).

With ``targets`` (B, S) (a permutation of the valid positions per row, or a cycle as above,
then any negative number, -1 or -100, past its end)
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

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from nnatlas import nn as atlas_nn
from nnatlas.config import check_fields
from nnatlas.errors import ShapeError, check_input
from nnatlas.nn.names import name
from nnatlas.registry import ModelCard, Paper, Recipe, Seed, configure, register_model

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
    output: Literal["permutation", "cycle"] = "permutation"  # what a decoded sequence is (module docstring)
    mask_chosen: bool = True  # chosen positions cannot be chosen again (False: the paper's unconstrained decoder)
    embedding_size: int | None = 128  # D: a linear embedding of each element before the LSTMs (None: raw points)

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


class _DecodeState(NamedTuple):
    """The decoder's state between steps: LSTM (h, c) (B, H), chosen positions (B, N), the first choice,
    the number of choices and whether the row has ended (B,)."""

    h: Tensor
    c: Tensor
    chosen: Tensor
    first: Tensor
    count: Tensor
    done: Tensor


class PointerNet(nn.Module):
    """Pointer network: points (B, N, P) -> (log_probs (B, N, N), indices (B, N))."""

    def __init__(self, config: PointerNetConfig) -> None:
        super().__init__()
        self.config = c = config
        D = c.embedding_size or c.input_size  # what the LSTMs read per element
        self.embedding = nn.Linear(c.input_size, D) if c.embedding_size else None
        self.encoder = atlas_nn.LSTM(D, c.hidden_size, batch_first=True)
        self.decoder = atlas_nn.LSTMCell(D, c.hidden_size)
        self.start = nn.Parameter(torch.empty(D).uniform_(-1.0, 1.0))  # the first decoder input
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

    def num_steps(self, N: int) -> int:
        """S, the decoding steps for N positions: N for a permutation, N + 1 for a cycle (its closing repeat)."""
        return N + 1 if self.config.output == "cycle" else N

    def _check_targets(self, targets: Tensor, valid: Tensor) -> None:
        B, N = valid.shape
        S = self.num_steps(N)
        check_input(targets, (B, S), model="PointerNet", name="targets", dtype="int")
        t = targets.to(valid.device)
        lengths = valid.sum(1)  # (B,)
        m = (t >= 0).sum(1)  # (B,) targets before the padding
        steps = torch.arange(S, device=valid.device).expand(B, S)
        if not torch.equal(t >= 0, steps < m.unsqueeze(1)) or bool((t >= lengths.unsqueeze(1)).any()):
            raise ValueError(f"PointerNet expects targets in [0, length) first, negative after; got {targets.tolist()}")
        if self.config.output == "permutation":
            positions = torch.arange(N, device=valid.device).expand(B, N)
            if not torch.equal(m, lengths) or not torch.equal(t.masked_fill(~valid, N).sort(dim=1).values,
                                                               positions.masked_fill(~valid, N)):
                raise ValueError("PointerNet expects each row of targets to be a permutation of 0..length-1, "
                                 "then negative")
            return
        body = t.masked_fill(steps >= (m - 1).unsqueeze(1), -1)  # (B, S) the cycle without its closing repeat
        counts = F.one_hot(body.clamp(min=0), N).mul((body >= 0).unsqueeze(-1)).sum(1)  # (B, N) times chosen
        last = t.gather(1, (m - 1).clamp(min=0).unsqueeze(1)).squeeze(1)  # (B,) the closing index
        if bool((m < 4).any()) or bool((counts > 1).any()) or not torch.equal(last, t[:, 0]):
            raise ValueError("PointerNet(output='cycle') expects each row of targets to be distinct positions, then "
                             "the first again (at least three before it), then negative")

    def _allowed(self, s: _DecodeState, valid: Tensor) -> Tensor:
        """(B, N) bool: the positions step i may choose (none for a finished row)."""
        allowed = valid & ~s.chosen if self.config.mask_chosen else valid
        if self.config.output == "cycle":  # the closing repeat of the first position, after three choices
            close = F.one_hot(s.first.clamp(min=0), valid.shape[1]).bool() & (s.count >= 3).unsqueeze(1)
            allowed = allowed | close
        return allowed & ~s.done.unsqueeze(1)

    def _scores(self, W1e: Tensor, d_in: Tensor, s: _DecodeState, valid: Tensor) -> tuple[Tensor, Tensor, _DecodeState]:
        """One decoder step: (log-probabilities (B, N), allowed (B, N), the state after the LSTM cell)."""
        h, cell = self.decoder(d_in, (s.h, s.c))  # d_i (B, H)
        scores = name(self.attention(W1e, h), "u", "v tanh(W1 e_j + W2 d_i)", desc="scores", dims="B N")  # u (B, N)
        allowed = self._allowed(s, valid)  # (B, N)
        scores = scores.masked_fill(~allowed, MASKED)
        logp = F.log_softmax(scores, dim=-1)  # (B, N)
        logp = name(logp, "p(C_i | C_<i, P)", "log softmax(u), chosen masked", desc="pointer distribution", dims="B N")
        return logp, allowed, s._replace(h=h, c=cell)

    def _advance(self, s: _DecodeState, pick: Tensor, active: Tensor, limit: Tensor) -> _DecodeState:
        """The state after rows ``active`` chose ``pick`` (B,); ``limit`` (B,) the most choices a row makes."""
        N = s.chosen.shape[1]
        safe = pick.clamp(min=0)  # finished rows read any point; their outputs are ignored
        closes = active & (safe == s.first) & (s.count >= 3) if self.config.output == "cycle" else torch.zeros_like(active)
        first = torch.where(active & (s.count == 0), safe, s.first)
        chosen = s.chosen | (F.one_hot(safe, N).bool() & active.unsqueeze(1))
        count = s.count + active.long()
        done = s.done | closes | (count >= limit)
        return s._replace(chosen=chosen, first=first, count=count, done=done)

    def _start(self, points: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor, _DecodeState, Tensor, Tensor]:
        """Encode: (W1 e (B, N, H), valid (B, N), the initial decoder state, the choice limit (B,), and the
        elements as the LSTMs read them (B, N, D): the points, or their embedding)."""
        valid = self._valid_mask(points, lengths)  # (B, N)
        x = self.embedding(points) if self.embedding is not None else points  # (B, N, D)
        e, h, cell = self._encode(x, lengths)  # (B, N, H), (B, H), (B, H)
        e = name(e, "e", desc="encoder states", dims="B N H")
        W1e = self.attention.W1(e)  # (B, N, H): the encoder half of the scores, once
        B = len(valid)
        zero = torch.zeros(B, dtype=torch.long, device=points.device)
        s = _DecodeState(h, cell, torch.zeros_like(valid), zero - 1, zero, zero.bool())
        limit = valid.sum(1) + (1 if self.config.output == "cycle" else 0)  # (B,)
        return W1e, valid, s, limit, x

    def forward(
        self, points: Tensor, lengths: Tensor | None = None, targets: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """points (B, N, P); lengths (B,) ints or None (all N); targets (B, S) ints or None.

        Returns log_probs (B, S, N): step i's log-probabilities over the N input positions,
        and indices (B, S): the position chosen at each step (the target under teacher
        forcing, else the greedy argmax), -1 after each row's end. S = N for
        ``output="permutation"``, N + 1 for ``"cycle"``.
        """
        c = self.config
        check_input(points, ("B", "N", c.input_size), model="PointerNet", name="points", like=self)
        B, N, _ = points.shape
        W1e, valid, s, limit, x = self._start(points, lengths)
        if targets is not None:
            self._check_targets(targets, valid)
            targets = targets.to(points.device)
        d_in = self.start.expand(B, x.shape[-1])  # (B, D)
        rows = torch.arange(B, device=points.device)
        log_probs, indices = [], []
        for i in range(self.num_steps(N)):
            logp, allowed, s = self._scores(W1e, d_in, s, valid)  # (B, N), (B, N)
            active = allowed.any(dim=-1)  # (B,) rows still decoding
            logp = logp.masked_fill(~active.unsqueeze(1), 0.0)  # finished rows: no distribution
            pick = targets[:, i] if targets is not None else logp.argmax(dim=-1)  # (B,)
            pick = torch.where(active, pick, torch.full_like(pick, -1))
            log_probs.append(logp)
            indices.append(pick)
            s = self._advance(s, pick, active, limit)
            d_in = x[rows, pick.clamp(min=0)]  # the selected input element x_{C_i} (B, D)
        return torch.stack(log_probs, dim=1), torch.stack(indices, dim=1)  # (B, S, N), (B, S)

    def beam_search(self, points: Tensor, lengths: Tensor | None = None, beam_size: int = 4) -> tuple[Tensor, Tensor]:
        """The most probable sequence a beam of ``beam_size`` finds: indices (B, S) (-1 after the end) and its
        log-probability (B,), the sum over its steps. Finished beams keep their score; ``beam_size=1`` is greedy."""
        c = self.config
        check_input(points, ("B", "N", c.input_size), model="PointerNet", name="points", like=self)
        if not isinstance(beam_size, int) or isinstance(beam_size, bool) or beam_size < 1:
            raise ValueError(f"PointerNet.beam_search expects beam_size an integer >= 1; got {beam_size!r}")
        B, N, _ = points.shape
        K = beam_size
        W1e, valid, s, limit, x = self._start(points, lengths)
        W1e, valid, limit = (t.repeat_interleave(K, dim=0) for t in (W1e, valid, limit))  # (B K, ...) beams of a row
        s = _DecodeState(*(t.repeat_interleave(K, dim=0) for t in s))
        pts = x.repeat_interleave(K, dim=0)  # (B K, N, D)
        score = points.new_full((B, K), -math.inf, dtype=torch.float32)
        score[:, 0] = 0.0  # one live beam at the start: the others would repeat it
        history = torch.empty(B, K, 0, dtype=torch.long, device=points.device)
        d_in = self.start.expand(B * K, x.shape[-1])  # (B K, D)
        rows = torch.arange(B * K, device=points.device)
        for i in range(self.num_steps(N)):
            logp, allowed, s = self._scores(W1e, d_in, s, valid)  # (B K, N), (B K, N)
            active = allowed.any(dim=-1)  # (B K,)
            flat = score.reshape(B * K, 1)
            cand = torch.where(allowed, flat + logp.float(), -math.inf)  # (B K, N)
            stay = F.one_hot(torch.zeros_like(rows), N).bool() & ~active.unsqueeze(1)  # a finished beam: one way on
            cand = torch.where(stay, flat, cand)
            top, where = cand.reshape(B, K * N).topk(K, dim=1)  # (B, K)
            parent = torch.div(where, N, rounding_mode="floor")  # (B, K) the beam each survivor extends
            pos = where % N
            take = (torch.arange(B, device=points.device).unsqueeze(1) * K + parent).reshape(-1)  # (B K,)
            s = _DecodeState(*(t[take] for t in s))
            alive = active[take]
            pick = torch.where(alive, pos.reshape(-1), -1)  # (B K,)
            history = torch.cat([history.gather(1, parent.unsqueeze(-1).expand(-1, -1, i)),
                                 pick.reshape(B, K, 1)], dim=2)  # (B, K, i + 1)
            score = top
            s = self._advance(s, pick, alive, limit)
            d_in = pts[rows, pick.clamp(min=0)]  # (B K, D)
            if not bool((~s.done & self._allowed(s, valid).any(-1)).any()):
                history = F.pad(history, (0, self.num_steps(N) - i - 1), value=-1)  # every beam ended
                break
        best = score.argmax(dim=1)  # (B,)
        batch = torch.arange(B, device=points.device)
        return history[batch, best], score[batch, best]


def pointer_loss(log_probs: Tensor, targets: Tensor) -> Tensor:
    """Mean negative log-probability of the target positions over the valid steps (negative targets are skipped)."""
    B, S, N = log_probs.shape  # S steps (N, or N + 1 for a cycle) over N positions
    targets = targets.masked_fill(targets < 0, -1)  # -1 and -100 both mark padding
    return F.nll_loss(log_probs.reshape(B * S, N), targets.reshape(B * S), ignore_index=-1)


_N = 10  # the card's number of points


@register_model(
    "pointer_net",
    card=ModelCard(
        name="pointer_net", family="pointer", title="Pointer Network", paper=POINTER_PAPER,
        input_shape=(_N, 2), output_shape=((_N, _N), (_N,)), task="pointer", default_data="convex-hull-5",
        recipe=Recipe(optimizer="adam", lr=1e-3, schedule="cosine", batch_size=128, steps=8000, eval_every=1000,
                      clip_grad=2.0, source="the paper's batch 128 and gradient clipping at 2 (it used SGD, lr 1); "
                      "Adam 1e-3 with cosine decay as in its common reproductions; 1.02M generated instances"),
        seed=Seed("004_352144fce4abefd7.txt", "PointNet: 指针网络"),
        notes="forward(points, lengths=None, targets=None) -> (log_probs (B, N, N), indices (B, N) int64). "
        "Encoder LSTM, decoder LSTMCell fed the selected input point (a learned start vector first), additive "
        "attention u_j = v^T tanh(W1 e_j + W2 d_i) whose masked log-softmax is the output; chosen and padding "
        "positions get a finite -1e9 score; greedy decoding returns a permutation of the valid inputs; targets "
        "teacher-force; loss: pointer_loss. output='cycle' emits distinct positions then the first again (the "
        "end pointer: hulls in the paper's files' convention), mask_chosen=False the unconstrained decoder; "
        "beam_search(points, lengths, beam_size). H = 256 (the paper: 256 or 512); any N (the card uses 10). Seed 004 "
        "errata: its score is Linear(decoder state) -> one number, so its softmax is over a single entry (always 1); "
        "it feeds the attention read-out back instead of the chosen input, starts from zeros, and never masks "
        "chosen positions (outputs need not be a permutation).",
    ),
    example_input=lambda batch_size, gen: torch.rand(batch_size, _N, 2, generator=gen),
)  # fmt: skip
def pointer_net(**overrides) -> PointerNet:
    return PointerNet(configure(PointerNetConfig(), overrides))
