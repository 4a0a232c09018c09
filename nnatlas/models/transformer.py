"""Transformer (Vaswani et al., "Attention Is All You Need", NeurIPS 2017): the encoder-decoder
for sequence transduction, built from the attention layers in :mod:`nnatlas.nn.attention`.

    src_ids (B, S) -> Embedding * sqrt(D) + PE -> Dropout -> (B, S, D)
        -> N x EncoderLayer [self-attention, FFN; post-LN]          -> memory (B, S, D)
    tgt_ids (B, T) -> Embedding * sqrt(D) + PE -> Dropout -> (B, T, D)
        -> N x DecoderLayer [causal self-attention, attention over memory, FFN; post-LN]
        -> (B, T, D) -> x E^T (the output projection is the embedding matrix) -> logits (B, T, V)

PE(pos, 2i) = sin(pos / 10000^(2i/D)), PE(pos, 2i+1) = cos(pos / 10000^(2i/D))   (section 3.5)

B batch, S source length, T target length, D model size (d_model), V vocabulary, N layers.

The base model (Table 3): N = 6 + 6, D = 512, 8 heads, FFN 2048, dropout 0.1, and one
vocabulary of about 37,000 BPE tokens shared by source and target (WMT 2014 En-De), whose
embedding matrix also projects the decoder output (section 3.4). The seed (003) only names
the Transformer. Options the paper does not have: ``final_norm`` adds the LayerNorm that
``torch.nn.Transformer`` puts after each stack (needed to load its weights), ``norm_first``
gives the pre-LN variant. Decoding (:meth:`Transformer.generate`): greedy and beam search with
GNMT's length penalty, over key/value caches (the memory's keys and values computed once per
source, each target position's self-attention keys and values kept and reordered with the
beams, logits for the last position only), so each token costs one position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from nnatlas.config import check_fields
from nnatlas.errors import ConfigError, ReferenceMismatchError, ShapeError, check_input
from nnatlas.nn.attention import KVCache, TransformerDecoderLayer, TransformerEncoderLayer, _activation_name
from nnatlas.nn.names import name
from nnatlas.registry import ModelCard, Paper, Recipe, Seed, configure, register_model, register_reference, transfer_state

__all__ = ["TransformerConfig", "Transformer", "DecoderState", "sinusoidal_positions", "transformer", "transformer_small", "transformer_tiny"]

TRANSFORMER_PAPER = Paper(
    authors="Vaswani, Shazeer, Parmar, Uszkoreit, Jones, Gomez, Kaiser, Polosukhin",
    title="Attention Is All You Need",
    venue="NeurIPS",
    year=2017,
    link="https://arxiv.org/abs/1706.03762",
)


@dataclass(frozen=True)
class TransformerConfig:
    """The encoder-decoder's sizes; the defaults are the paper's base model."""

    vocab_size: int = 37_000  # shared source/target BPE vocabulary (WMT 2014 En-De)
    d_model: int = 512
    num_heads: int = 8
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    dim_feedforward: int = 2048
    dropout: float = 0.1  # P_drop: on embeddings + PE, attention weights, sub-layer outputs
    activation: str = "relu"
    layer_norm_eps: float = 1e-5
    norm_first: bool = False  # False: the paper's post-LN
    final_norm: bool = False  # a LayerNorm after each stack, as torch.nn.Transformer has
    impl: Literal["sdpa", "manual"] = "sdpa"

    def __post_init__(self) -> None:
        check_fields(self)
        if self.d_model % self.num_heads:
            raise ConfigError(
                f"TransformerConfig.d_model must be divisible by num_heads; got {self.d_model} and {self.num_heads}"
            )
        if self.d_model % 2:
            raise ConfigError(f"TransformerConfig.d_model must be even (sin/cos position pairs); got {self.d_model}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"TransformerConfig.dropout must be in [0, 1); got {self.dropout}")
        if self.activation not in ("relu", "gelu"):
            raise ConfigError(f"TransformerConfig.activation must be 'relu' or 'gelu'; got {self.activation!r}")
        if not self.layer_norm_eps > 0:
            raise ConfigError(f"TransformerConfig.layer_norm_eps must be > 0; got {self.layer_norm_eps}")
        if self.impl not in ("sdpa", "manual"):
            raise ConfigError(f"TransformerConfig.impl must be 'sdpa' or 'manual'; got {self.impl!r}")


def sinusoidal_positions(
    T: int, D: int, *, offset: int = 0, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """The fixed positional encodings (T, D) of section 3.5 (D even) for positions offset..offset+T-1."""
    pos = torch.arange(offset, offset + T, device=device, dtype=torch.float32).unsqueeze(1)  # (T, 1)
    inv_freq = torch.exp(torch.arange(0, D, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / D))  # (D/2,)
    pe = torch.zeros(T, D, device=device, dtype=torch.float32)
    pe[:, 0::2] = torch.sin(pos * inv_freq)  # PE(pos, 2i)
    pe[:, 1::2] = torch.cos(pos * inv_freq)  # PE(pos, 2i+1)
    return pe.to(dtype) if dtype is not None else pe


class Encoder(nn.Module):
    """N encoder layers (and the optional final LayerNorm): (B, S, D) -> (B, S, D)."""

    def __init__(
        self,
        num_layers: int,
        d_model: int,
        num_heads: int,
        dim_feedforward: int,
        dropout: float,
        activation: str,
        layer_norm_eps: float,
        norm_first: bool,
        final_norm: bool,
        impl: Literal["sdpa", "manual"],
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerEncoderLayer(
                d_model, num_heads, dim_feedforward, dropout, activation, layer_norm_eps,
                batch_first=True, norm_first=norm_first, impl=impl,
            )
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model, eps=layer_norm_eps) if final_norm else None

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, S, D), key_padding_mask (B, S) bool (True = padding) -> (B, S, D)."""
        for layer in self.layers:
            x = layer(x, src_key_padding_mask=key_padding_mask)
        return self.norm(x) if self.norm is not None else x


class Decoder(nn.Module):
    """N decoder layers with the causal mask on the target (and the optional final LayerNorm)."""

    def __init__(
        self,
        num_layers: int,
        d_model: int,
        num_heads: int,
        dim_feedforward: int,
        dropout: float,
        activation: str,
        layer_norm_eps: float,
        norm_first: bool,
        final_norm: bool,
        impl: Literal["sdpa", "manual"],
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerDecoderLayer(
                d_model, num_heads, dim_feedforward, dropout, activation, layer_norm_eps,
                batch_first=True, norm_first=norm_first, impl=impl,
            )
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model, eps=layer_norm_eps) if final_norm else None

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        memory_key_padding_mask: torch.Tensor | None = None,
        tgt_key_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x (B, T, D), memory (B, S, D), padding masks (B, S), (B, T) -> (B, T, D)."""
        for layer in self.layers:
            x = layer(
                x,
                memory,
                tgt_key_padding_mask=tgt_key_padding_mask,
                memory_key_padding_mask=memory_key_padding_mask,
                tgt_is_causal=True,  # position t attends to targets 0..t only
            )
        return self.norm(x) if self.norm is not None else x


class Transformer(nn.Module):
    """The encoder-decoder Transformer with shared, tied embeddings; returns logits."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = c = config
        self.embedding = nn.Embedding(c.vocab_size, c.d_model)  # shared by source, target and output
        nn.init.normal_(self.embedding.weight, std=c.d_model**-0.5)  # so embedding * sqrt(D) has unit scale
        self.dropout = nn.Dropout(c.dropout)
        stack = (
            c.d_model, c.num_heads, c.dim_feedforward, c.dropout, c.activation, c.layer_norm_eps,
            c.norm_first, c.final_norm, c.impl,
        )
        self.encoder = Encoder(c.num_encoder_layers, *stack)
        self.decoder = Decoder(c.num_decoder_layers, *stack)

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        B, T = ids.shape
        x = self.embedding(ids) * math.sqrt(self.config.d_model)  # (B, T, D), scaled as in section 3.4
        pe = sinusoidal_positions(T, self.config.d_model, device=x.device, dtype=x.dtype)  # PE (T, D)
        x = x + name(pe, "PE", "sin, cos(pos / 10000^(2i/D))", desc="positions", dims="T D")  # + PE
        return self.dropout(x)

    @staticmethod
    def _check_mask(mask: torch.Tensor | None, B: int, T: int, name: str) -> None:
        if mask is None:
            return
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != (B, T):
            got = f"{mask.dtype} {tuple(mask.shape)}" if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ShapeError(f"Transformer expects {name} as a bool ({B}, {T}) tensor, True at padding; got {got}")

    def encode(self, src_ids: torch.Tensor, src_key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """src_ids (B, S) int, src_key_padding_mask (B, S) bool -> memory (B, S, D)."""
        check_input(src_ids, ("B", "S"), model="Transformer", name="src_ids", dtype="int", vocab=self.config.vocab_size)
        self._check_mask(src_key_padding_mask, *src_ids.shape, "src_key_padding_mask")
        x = self._embed(src_ids)  # (B, S, D)
        return self.encoder(x, src_key_padding_mask)  # (B, S, D)

    def decode(
        self,
        tgt_ids: torch.Tensor,
        memory: torch.Tensor,
        memory_key_padding_mask: torch.Tensor | None = None,
        tgt_key_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """tgt_ids (B, T) int, memory (B, S, D) -> logits (B, T, V) for the next token at each position."""
        check_input(tgt_ids, ("B", "T"), model="Transformer", name="tgt_ids", dtype="int", vocab=self.config.vocab_size)
        check_input(memory, (tgt_ids.shape[0], "S", self.config.d_model), model="Transformer", name="memory", like=self)
        self._check_mask(tgt_key_padding_mask, *tgt_ids.shape, "tgt_key_padding_mask")
        self._check_mask(memory_key_padding_mask, *memory.shape[:2], "memory_key_padding_mask")
        x = self._embed(tgt_ids)  # (B, T, D)
        x = self.decoder(x, memory, memory_key_padding_mask, tgt_key_padding_mask)  # (B, T, D)
        return F.linear(x, self.embedding.weight)  # (B, T, V): x E^T, the tied output projection

    def forward(
        self,
        src_ids: torch.Tensor,
        tgt_ids: torch.Tensor,
        src_key_padding_mask: torch.Tensor | None = None,
        tgt_key_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """src_ids (B, S) and tgt_ids (B, T) int64; padding masks (B, S), (B, T) bool, True at
        padding -> logits (B, T, V); position t predicts target t + 1 from targets 0..t."""
        check_input(src_ids, ("B", "S"), model="Transformer", name="src_ids", dtype="int", vocab=self.config.vocab_size)
        check_input(
            tgt_ids, (src_ids.shape[0], "T"), model="Transformer", name="tgt_ids", dtype="int", vocab=self.config.vocab_size
        )
        memory = self.encode(src_ids, src_key_padding_mask)  # (B, S, D)
        return self.decode(tgt_ids, memory, src_key_padding_mask, tgt_key_padding_mask)  # (B, T, V)

    @torch.no_grad()
    def log_prob(
        self, src_ids: torch.Tensor, seqs: torch.Tensor, eos_id: int, src_key_padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Score of each sequence (B, L) that starts with BOS: sum of log p(y_t | y_<t, x) over
        t >= 1 up to and including the first EOS -> (B,). This is what beam search maximises."""
        logp = self(src_ids, seqs[:, :-1], src_key_padding_mask).log_softmax(-1)  # (B, L-1, V)
        token_logp = logp.gather(-1, seqs[:, 1:, None]).squeeze(-1)  # (B, L-1)
        is_eos = (seqs[:, 1:] == eos_id).long()
        counted = (is_eos.cumsum(1) - is_eos) == 0  # tokens up to the first EOS
        return (token_logp * counted).sum(1)

    def init_decoder_state(
        self, memory: torch.Tensor, memory_key_padding_mask: torch.Tensor | None = None, capacity: int = 64
    ) -> DecoderState:
        """Empty self-attention caches and every decoder layer's keys and values of ``memory``
        (B, S, D), computed once per source; ``capacity`` target positions are reserved."""
        c, B = self.config, memory.shape[0]
        caches = [
            KVCache(B, c.num_heads, c.d_model // c.num_heads, capacity, device=memory.device, dtype=memory.dtype)
            for _ in self.decoder.layers
        ]
        memory_kv = [layer.multihead_attn.project_kv(memory) for layer in self.decoder.layers]  # (B, H, S, D) x 2
        return DecoderState(caches, memory_kv, memory_key_padding_mask)

    def decode_step(self, tgt_ids: torch.Tensor, state: DecoderState) -> torch.Tensor:
        """The newest target tokens tgt_ids (B, t) after the ``state.length`` cached ones -> logits
        of the last position (B, V); ``state``'s caches grow by t positions in place.

        Equals ``decode(all targets so far, memory)[:, -1]`` at the cost of t positions: keys and
        values of earlier targets come from the cache, the memory's from ``state``."""
        B, t = tgt_ids.shape
        P, D = state.length, self.config.d_model
        x = self.embedding(tgt_ids) * math.sqrt(D)  # (B, t, D)
        x = self.dropout(x + sinusoidal_positions(t, D, offset=P, device=x.device, dtype=x.dtype))  # + PE(P..P+t-1)
        for layer, cache, kv in zip(self.decoder.layers, state.caches, state.memory_kv):
            x = layer.forward_cached(x, cache, kv, state.memory_key_padding_mask)  # (B, t, D)
        x = x[:, -1]  # (B, D): only the last position is scored
        if self.decoder.norm is not None:
            x = self.decoder.norm(x)
        return F.linear(x, self.embedding.weight)  # (B, V)

    @torch.no_grad()
    def generate(
        self,
        src_ids: torch.Tensor,
        max_len: int,
        bos_id: int,
        eos_id: int,
        beam_size: int = 1,
        src_key_padding_mask: torch.Tensor | None = None,
        pad_id: int | None = None,
        *,
        length_penalty: float = 0.0,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """Decode (B, S) sources into (B, 1 + <= max_len) ids starting with ``bos_id``.

        ``beam_size`` 1 decodes greedily; larger keeps the ``beam_size`` best hypotheses and
        returns the best. Hypotheses are ranked by log P(Y | X) / lp(Y) with GNMT's length
        penalty lp(Y) = ((5 + |Y|) / 6) ** ``length_penalty`` (Wu et al. 2016, eq. 14; |Y| counts
        generated tokens up to and including EOS); ``length_penalty`` 0 ranks by the summed
        log-probability. Finished sequences are filled with ``pad_id`` (default ``eos_id``).
        Decoding stops once every sequence has produced ``eos_id``.

        ``use_cache`` (default) computes the memory's keys and values once per source, keeps each
        decoder layer's self-attention keys and values (reordered with the beams) and scores
        only the last position, so each token costs one position; ``use_cache=False`` re-runs
        the decoder over the whole prefix at every step (the reference the cache is tested
        against). Call ``.eval()`` first: in training mode dropout is active.
        """
        V = self.config.vocab_size
        pad_id = eos_id if pad_id is None else pad_id
        limits = {"max_len": (max_len, 1, None), "beam_size": (beam_size, 1, V)}
        limits |= {"bos_id": (bos_id, 0, V - 1), "eos_id": (eos_id, 0, V - 1), "pad_id": (pad_id, 0, V - 1)}
        for name, (value, low, high) in limits.items():
            if not isinstance(value, int) or value < low or (high is not None and value > high):
                raise ValueError(f"Transformer.generate expects {name} in [{low}, {high or 'inf'}]; got {value!r}")
        if isinstance(length_penalty, bool) or not isinstance(length_penalty, (int, float)) \
                or not 0 <= length_penalty < float("inf"):
            raise ValueError(f"Transformer.generate expects a finite length_penalty >= 0; got {length_penalty!r}")
        memory = self.encode(src_ids, src_key_padding_mask)  # (B, S, D)
        if beam_size == 1:
            step = _NextLogits(self, memory, src_key_padding_mask, max_len + 1, use_cache)
            return self._greedy(step, max_len, bos_id, eos_id, pad_id)
        memory = memory.repeat_interleave(beam_size, dim=0)  # (B*K, S, D): K hypotheses per source
        mask = src_key_padding_mask
        mask = mask.repeat_interleave(beam_size, dim=0) if mask is not None else None
        step = _NextLogits(self, memory, mask, max_len + 1, use_cache)
        return self._beam(step, max_len, bos_id, eos_id, pad_id, beam_size, float(length_penalty))

    def _greedy(self, step: _NextLogits, max_len: int, bos_id: int, eos_id: int, pad_id: int) -> torch.Tensor:
        B, device = step.batch_size, step.device
        ys = torch.full((B, 1), bos_id, dtype=torch.long, device=device)  # (B, 1)
        done = torch.zeros(B, dtype=torch.bool, device=device)
        for _ in range(max_len):
            logits = step(ys)  # (B, V): the next token
            nxt = logits.argmax(-1).masked_fill(done, pad_id)  # (B,)
            ys = torch.cat([ys, nxt[:, None]], dim=1)  # (B, t + 1)
            done |= nxt == eos_id
            if done.all():
                break
        return ys

    def _beam(
        self, step: _NextLogits, max_len: int, bos_id: int, eos_id: int, pad_id: int, K: int, alpha: float
    ) -> torch.Tensor:
        BK, V, device = step.batch_size, self.config.vocab_size, step.device
        B = BK // K
        lp = lambda n: ((5.0 + n) / 6.0) ** alpha  # noqa: E731  GNMT's length penalty, n generated tokens
        ys = torch.full((B * K, 1), bos_id, dtype=torch.long, device=device)  # (B*K, 1)
        scores = torch.full((B, K), float("-inf"), device=device)  # summed log-probabilities
        scores[:, 0] = 0.0  # one live hypothesis at the start, so the first step does not pick K copies
        lengths = torch.zeros(B * K, device=device)  # generated tokens, EOS included
        done = torch.zeros(B * K, dtype=torch.bool, device=device)
        finished_row = torch.full((V,), float("-inf"), device=device)
        finished_row[pad_id] = 0.0  # a finished hypothesis only extends by padding, at no cost
        for _ in range(max_len):
            logp = step(ys).float().log_softmax(-1)  # (B*K, V)
            logp = torch.where(done[:, None], finished_row, logp)
            cand = scores.view(B * K, 1) + logp  # (B*K, V): every hypothesis x every token
            new_len = lengths + (~done).float()  # (B*K,): finished hypotheses keep their length
            ranked = (cand / lp(new_len)[:, None]).view(B, K * V)  # log P / lp(|Y|)
            idx = ranked.topk(K, dim=-1).indices  # (B, K): the K best continuations per source
            scores = cand.view(B, K * V).gather(1, idx)
            beam, token = idx // V, idx % V  # which hypothesis each extends, with which token
            rows = (torch.arange(B, device=device)[:, None] * K + beam).view(-1)  # (B*K,), within each source
            ys = torch.cat([ys[rows], token.view(-1, 1)], dim=1)  # (B*K, t + 1)
            lengths = new_len[rows]
            done = done[rows] | (token.view(-1) == eos_id)
            step.reorder(rows)  # the caches follow their hypotheses
            if done.all():
                break
        best = (scores / lp(lengths.view(B, K))).argmax(-1)  # (B,)
        return ys.view(B, K, -1)[torch.arange(B, device=device), best]  # (B, t + 1)


@dataclass
class DecoderState:
    """What cached decoding carries between steps: one self-attention :class:`KVCache` per
    decoder layer, each layer's keys and values of the memory (B, H, S, D), and the memory's
    padding mask (B, S)."""

    caches: list[KVCache]
    memory_kv: list[tuple[torch.Tensor, torch.Tensor]]
    memory_key_padding_mask: torch.Tensor | None

    @property
    def length(self) -> int:
        return len(self.caches[0])

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep the self-attention caches of batch rows ``rows``. The memory's keys and values stay:
        beam search only reorders hypotheses of one source, which share them."""
        for cache in self.caches:
            cache.reorder(rows)


class _NextLogits:
    """Next-token logits (N, V) for growing target prefixes ys (N, t): from the caches (each
    call feeds the newest token; the first the whole prefix) or, without a cache, by re-running
    the decoder over ys."""

    def __init__(
        self, model: Transformer, memory: torch.Tensor, mask: torch.Tensor | None, capacity: int, use_cache: bool
    ) -> None:
        self.model, self.memory, self.mask = model, memory, mask
        self.batch_size, self.device = memory.shape[0], memory.device
        self.state = model.init_decoder_state(memory, mask, capacity) if use_cache else None

    def __call__(self, ys: torch.Tensor) -> torch.Tensor:
        if self.state is None:
            return self.model.decode(ys, self.memory, self.mask)[:, -1]  # (N, V), every position recomputed
        new = ys if self.state.length == 0 else ys[:, -1:]
        return self.model.decode_step(new, self.state)  # (N, V)

    def reorder(self, rows: torch.Tensor) -> None:
        if self.state is not None:
            self.state.reorder(rows)

def _token_pair(S: int, T: int, vocab: int):
    def example(batch_size: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        src = torch.randint(0, vocab, (batch_size, S), generator=gen)
        tgt = torch.randint(0, vocab, (batch_size, T), generator=gen)
        return src, tgt

    return example


_BASE = TransformerConfig()
_TINY = TransformerConfig(
    vocab_size=1000, d_model=64, num_heads=4, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=256
)
_SMALL = TransformerConfig(
    vocab_size=10_000, d_model=256, num_heads=8, num_encoder_layers=3, num_decoder_layers=3, dim_feedforward=1024
)
_SEED = Seed("003_979c5363c5233b21.txt", "Transformer")
# Multi30k De->En with the paper's optimiser (Adam, beta2 0.98) and warm-up schedule (eq. 3, peak lr at the end of
# the warm-up); the paper's 4,000 warm-up steps of 25,000-token batches shrunk to this ~2,000-token-batch data set.
_MULTI30K = dict(optimizer="adam", betas=(0.9, 0.98), schedule="noam", weight_decay=0.0, batch_size=128)


@register_model(
    "transformer",
    card=ModelCard(
        name="transformer",
        family="transformer",
        title="Transformer (base)",
        paper=TRANSFORMER_PAPER,
        input_shape=((16,), (16,)),
        output_shape=(16, _BASE.vocab_size),
        task="translation",
        published_params=None,
        seed=_SEED,
        default_data="multi30k",
        recipe=Recipe(**_MULTI30K, lr=7e-4, warmup=4000, epochs=20,
                      source="Vaswani et al. 2017 section 5.3: Adam (0.9, 0.98), eq. 3 with 4,000 warm-up steps "
                      "(peak 512^-0.5 x 4000^-0.5 = 7e-4); batches of 128 Multi30k pairs"),
        notes=(
            "Base model: 6+6 post-LN layers, d_model 512, 8 heads, FFN 2048, dropout 0.1, sinusoidal "
            "positions, one 37,000-token embedding shared by source, target and the output projection "
            "(scaled by sqrt(512)). Exact trainable parameters: 63,082,496; the paper reports 65M "
            "(Table 3), a rounded figure whose vocabulary it does not pin down. "
            "Inputs: (src_ids (B, S), tgt_ids (B, T)) int64; output logits (B, T, V)."
        ),
        input_dtype="int",
    ),
    example_input=_token_pair(16, 16, _BASE.vocab_size),
)
def transformer(**overrides) -> Transformer:
    return Transformer(configure(_BASE, overrides))


@register_model(
    "transformer_tiny",
    card=ModelCard(
        name="transformer_tiny",
        family="transformer",
        title="Transformer (tiny)",
        paper=TRANSFORMER_PAPER,
        input_shape=((12,), (10,)),
        output_shape=(10, _TINY.vocab_size),
        task="translation",
        seed=_SEED,
        default_data="multi30k",
        recipe=Recipe(**_MULTI30K, lr=2e-3, warmup=400, epochs=10,
                      source="transformer_small's recipe with a shorter warm-up and a larger peak for the 64-wide model"),
        notes="2+2 layers, d_model 64, 4 heads, FFN 256, vocabulary 1000: the base design at a size that trains "
        "on a CPU.",
        input_dtype="int",
    ),
    example_input=_token_pair(12, 10, _TINY.vocab_size),
)
def transformer_tiny(**overrides) -> Transformer:
    return Transformer(configure(_TINY, overrides))


@register_model(
    "transformer_small",
    card=ModelCard(
        name="transformer_small",
        family="transformer",
        title="Transformer (small, 3+3 layers)",
        paper=TRANSFORMER_PAPER,
        input_shape=((16,), (16,)),
        output_shape=(16, _SMALL.vocab_size),
        task="translation",
        published_params=None,
        seed=_SEED,
        default_data="multi30k",
        recipe=Recipe(**_MULTI30K, lr=1e-3, warmup=1000, epochs=10,
                      source="the Multi30k tutorials' batch of 128 pairs and 10 epochs with the paper's Adam "
                      "(0.9, 0.98) and warm-up schedule, peak 1e-3 (256^-0.5 x 4000^-0.5) after 1,000 steps"),
        notes="3+3 post-LN layers, d_model 256, 8 heads, FFN 1024, one 10,000-token vocabulary shared by source, "
        "target and output projection: 8,089,600 parameters, the small Multi30k Transformer of the common "
        "tutorials (3 layers a stack). nnatlas train gives it a byte-level BPE vocabulary of that size trained "
        "on Multi30k's training split.",
        input_dtype="int",
    ),
    example_input=_token_pair(16, 16, _SMALL.vocab_size),
)
def transformer_small(**overrides) -> Transformer:
    return Transformer(configure(_SMALL, overrides))


@register_reference("transformer", "transformer_small", "transformer_tiny")
def _from_torch(name: str, ref: nn.Module) -> Transformer:
    """``nn.ModuleDict(transformer=torch.nn.Transformer(...), embedding=torch.nn.Embedding(V, D))``
    -> an nnatlas Transformer (``final_norm=True``) holding those weights.

    torch.nn.Transformer has no embeddings; the ``embedding`` beside it plays the shared,
    tied embedding: the reference computes ``t(emb(src) * sqrt(D) + PE, emb(tgt) * sqrt(D) + PE,
    tgt_mask=causal) @ emb.weight.T``. Sizes come from the reference; ``batch_first`` does
    not change the weights.
    """
    if not (
        isinstance(ref, nn.ModuleDict)
        and set(ref.keys()) == {"transformer", "embedding"}
        and isinstance(ref["transformer"], nn.Transformer)
        and isinstance(ref["embedding"], nn.Embedding)
    ):
        raise TypeError(
            f"from_reference({name!r}) expects nn.ModuleDict(transformer=torch.nn.Transformer, "
            f"embedding=torch.nn.Embedding); got {type(ref).__name__}"
        )
    t, emb = ref["transformer"], ref["embedding"]
    enc, dec = t.encoder.layers, t.decoder.layers
    first = enc[0]
    activation = _activation_name(first.activation)
    problems = []
    if not isinstance(activation, str):
        problems.append(f"activation {activation!r} is not relu or gelu")
    if first.linear1.bias is None:
        problems.append("bias=False layers")
    if t.encoder.norm is None or t.decoder.norm is None:
        problems.append("a stack without its final LayerNorm")
    if emb.embedding_dim != t.d_model:
        problems.append(f"embedding size {emb.embedding_dim} != d_model {t.d_model}")
    if problems:
        raise ReferenceMismatchError(f"Transformer cannot hold this reference: {'; '.join(problems)}")
    config = TransformerConfig(
        vocab_size=emb.num_embeddings,
        d_model=t.d_model,
        num_heads=t.nhead,
        num_encoder_layers=len(enc),
        num_decoder_layers=len(dec),
        dim_feedforward=first.linear1.out_features,
        dropout=first.dropout.p,
        activation=activation,
        layer_norm_eps=first.norm1.eps,
        norm_first=first.norm_first,
        final_norm=True,
    )
    with torch.device(emb.weight.device):
        model = Transformer(config).to(emb.weight.dtype)
    # our encoder.* / decoder.* sit under transformer.* in the reference; embedding.weight is shared
    key_map = lambda k: f"transformer.{k}" if k.startswith(("encoder.", "decoder.")) else k  # noqa: E731
    transfer_state(model, ref.state_dict(), key_map, source="torch.nn.Transformer")
    return model.train(t.training)
