"""BERT (Devlin et al., "BERT: Pre-training of Deep Bidirectional Transformers for Language
Understanding", NAACL 2019): a Transformer encoder over word, position and segment embeddings.

    input_ids (B, T), token_type_ids (B, T), attention_mask (B, T) (1 = token, 0 = padding)
        -> word + position + token-type embeddings -> LayerNorm -> Dropout -> (B, T, H)
        -> L x post-LN Transformer encoder layer [self-attention, GELU FFN]     -> (B, T, H)
        -> pooler: tanh(W h_[CLS] + b)                                         -> (B, H)
    returns (sequence_output (B, T, H), pooled_output (B, H))

    masked-LM head (pre-training, section 3.1 task 1): h (B, T, H) -> Linear -> GELU -> LayerNorm
        -> x E_word^T + b (the word-embedding matrix, tied) -> logits (B, T, V)

B batch, T tokens, H hidden size, F intermediate (FFN) size, V vocabulary, L layers.

The encoder layer is :class:`nnatlas.nn.TransformerEncoderLayer` (post-LN, as the original
Transformer, exact erf GELU, LayerNorm eps 1e-12) less torch.nn's dropout on the GELU output:
BERT drops out attention probabilities, the attention output and the FFN output only. BERT-base: L 12, H 768, 12 heads, F 3072,
V 30,522 (uncased WordPiece), 512 positions, 2 segments: 109,482,240 parameters with the
pooler (Hugging Face's BertModel; the paper rounds to 110M). The seed (003) only names BERT.
Weights are initialised as in the released code: normal(0, 0.02), zero biases.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from nnatlas.config import check_fields
from nnatlas.errors import ConfigError, ReferenceMismatchError, ShapeError, check_input
from nnatlas.nn.attention import MultiheadAttention, TransformerEncoderLayer
from nnatlas.nn.names import name
from nnatlas.registry import ModelCard, Paper, Recipe, Seed, configure, register_model, register_reference, transfer_state

__all__ = [
    "BertConfig",
    "BertEmbeddings",
    "BertLayer",
    "BertPooler",
    "BertMLMHead",
    "BertModel",
    "BertForMaskedLM",
    "bert_base",
    "bert_tiny",
]

BERT_PAPER = Paper(
    authors="Devlin, Chang, Lee, Toutanova",
    title="BERT: Pre-training of Deep Bidirectional Transformers for Language Understanding",
    venue="NAACL",
    year=2019,
    link="https://arxiv.org/abs/1810.04805",
)


@dataclass(frozen=True)
class BertConfig:
    """Sizes of a BERT encoder; the defaults are BERT-base (uncased)."""

    vocab_size: int = 30_522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    dropout: float = 0.1  # hidden and attention-probability dropout (both 0.1 in the paper)
    layer_norm_eps: float = 1e-12
    impl: Literal["sdpa", "manual"] = "sdpa"

    def __post_init__(self) -> None:
        check_fields(self)
        if self.hidden_size % self.num_heads:
            raise ConfigError(
                f"BertConfig.hidden_size must be divisible by num_heads; got {self.hidden_size} and {self.num_heads}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"BertConfig.dropout must be in [0, 1); got {self.dropout}")
        if not self.layer_norm_eps > 0:
            raise ConfigError(f"BertConfig.layer_norm_eps must be > 0; got {self.layer_norm_eps}")
        if self.impl not in ("sdpa", "manual"):
            raise ConfigError(f"BertConfig.impl must be 'sdpa' or 'manual'; got {self.impl!r}")


class BertEmbeddings(nn.Module):
    """Token + learned position + segment embeddings, LayerNorm, dropout: (B, T) ids -> (B, T, H)."""

    def __init__(
        self, vocab_size: int, hidden_size: int, max_positions: int, type_vocab_size: int, eps: float, dropout: float
    ) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, hidden_size)
        self.position_embeddings = nn.Embedding(max_positions, hidden_size)
        self.token_type_embeddings = nn.Embedding(type_vocab_size, hidden_size)
        self.norm = nn.LayerNorm(hidden_size, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        """input_ids (B, T), token_type_ids (B, T) -> (B, T, H)."""
        B, T = input_ids.shape
        input_ids = name(input_ids, "ids", desc="token ids", dims="B T")
        token_type_ids = name(token_type_ids, "segments", desc="token types", dims="B T")
        positions = torch.arange(T, device=input_ids.device)  # (T,)
        x = self.word_embeddings(input_ids)  # (B, T, H)
        x = x + self.position_embeddings(positions) + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.norm(x))  # (B, T, H)


class BertLayer(TransformerEncoderLayer):
    """One BERT encoder layer: the post-LN :class:`TransformerEncoderLayer` with exact GELU and
    dropout exactly where BERT has it, three places: the attention probabilities, the attention
    output (``BertSelfOutput``) and the feed-forward output (``BertOutput``). torch.nn's layer
    also drops out the GELU output inside the feed-forward block; BERT's ``BertIntermediate``
    does not, so that one is an identity here. Under one seed the train-mode output equals
    transformers' (the same masks on the same tensors, in the same order). (B, T, H) -> (B, T, H)."""

    def __init__(
        self, hidden_size: int, num_heads: int, intermediate_size: int, dropout: float, eps: float, impl: str
    ) -> None:
        super().__init__(
            hidden_size, num_heads, intermediate_size, dropout, activation="gelu", layer_norm_eps=eps,
            batch_first=True, norm_first=False, impl=impl,
        )
        self.dropout = nn.Identity()  # no dropout on GELU(W_1 x + b_1): BertIntermediate has none


class BertPooler(nn.Module):
    """tanh(W h_[CLS] + b): the sentence representation for classification, (B, T, H) -> (B, H)."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """h (B, T, H) -> (B, H)."""
        return torch.tanh(self.dense(h[:, 0]))  # (B, H): the first token is [CLS]


class BertMLMHead(nn.Module):
    """The masked-LM head: Linear -> GELU -> LayerNorm -> x E_word^T + b, (B, T, H) -> (B, T, V).

    The decoder matrix is the word-embedding matrix, passed to ``forward`` so that it is
    held once (by the embeddings); the head owns only its own output bias.
    """

    def __init__(self, hidden_size: int, vocab_size: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.norm = nn.LayerNorm(hidden_size, eps=eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, h: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        """h (B, T, H), word_embeddings (V, H) -> logits (B, T, V)."""
        x = self.norm(F.gelu(self.dense(h)))  # (B, T, H)
        return F.linear(x, word_embeddings, self.bias)  # (B, T, V)


def _init_bert_weights(module: nn.Module) -> None:
    """The released code's initialisation: normal(0, 0.02) weights, zero biases, unit LayerNorms."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, MultiheadAttention):
            nn.init.normal_(m.in_proj_weight, std=0.02)  # W^Q, W^K, W^V stacked
            nn.init.zeros_(m.in_proj_bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class BertModel(nn.Module):
    """The BERT encoder with its pooler; returns (sequence_output (B, T, H), pooled_output (B, H))."""

    def __init__(self, config: BertConfig, add_pooling_layer: bool = True) -> None:
        super().__init__()
        self.config = c = config
        self.embeddings = BertEmbeddings(
            c.vocab_size, c.hidden_size, c.max_position_embeddings, c.type_vocab_size, c.layer_norm_eps, c.dropout
        )
        self.layers = nn.ModuleList(
            BertLayer(c.hidden_size, c.num_heads, c.intermediate_size, c.dropout, c.layer_norm_eps, c.impl)
            for _ in range(c.num_layers)
        )
        self.pooler = BertPooler(c.hidden_size) if add_pooling_layer else None
        _init_bert_weights(self)

    def _check(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, token_type_ids: torch.Tensor | None
    ) -> None:
        c = self.config
        check_input(input_ids, ("B", "T"), model="BertModel", name="input_ids", dtype="int", vocab=c.vocab_size)
        B, T = input_ids.shape
        if T > c.max_position_embeddings:
            raise ShapeError(f"BertModel expects at most {c.max_position_embeddings} tokens; got input_ids {(B, T)}")
        if attention_mask is not None:
            check_input(
                attention_mask, (B, T), model="BertModel", name="attention_mask", dtype="any",
                hint="1 = token, 0 = padding",
            )
            if not attention_mask.is_meta and bool(((attention_mask != 0) & (attention_mask != 1)).any()):
                raise ShapeError(f"BertModel expects attention_mask of 0 and 1 (1 = token, 0 = padding); got values "
                                 f"{attention_mask.unique()[:8].tolist()}")
        if token_type_ids is not None:
            check_input(
                token_type_ids, (B, T), model="BertModel", name="token_type_ids", dtype="int", vocab=c.type_vocab_size
            )

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """input_ids (B, T) int64; attention_mask (B, T), 1 = attend, 0 = padding (default all 1);
        token_type_ids (B, T), the segment of each token (default all 0)
        -> (sequence_output (B, T, H), pooled_output (B, H), or None without a pooler)."""
        self._check(input_ids, attention_mask, token_type_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        padding = attention_mask == 0 if attention_mask is not None else None  # (B, T) bool, True = masked
        x = self.embeddings(input_ids, token_type_ids)  # (B, T, H)
        for layer in self.layers:
            x = layer(x, src_key_padding_mask=padding)  # (B, T, H)
        pooled = self.pooler(x) if self.pooler is not None else None  # (B, H)
        return x, pooled


class BertForMaskedLM(nn.Module):
    """BERT without the pooler plus the masked-LM head: (B, T) ids -> logits (B, T, V)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.bert = BertModel(config, add_pooling_layer=False)
        self.mlm = BertMLMHead(config.hidden_size, config.vocab_size, config.layer_norm_eps)
        _init_bert_weights(self.mlm)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        masked_positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """input_ids, attention_mask, token_type_ids (B, T) as :class:`BertModel` -> logits (B, T, V);
        with ``masked_positions`` (B, T) bool, the logits of those positions only, (N, V) in row-major
        order (pre-training scores the ~15 % masked tokens: the head's V-wide projection runs on them alone)."""
        h, _ = self.bert(input_ids, attention_mask, token_type_ids)  # (B, T, H)
        if masked_positions is not None:
            if masked_positions.dtype != torch.bool or masked_positions.shape != input_ids.shape:
                raise ShapeError(f"BertForMaskedLM expects masked_positions as a bool {tuple(input_ids.shape)} tensor; "
                                 f"got {masked_positions.dtype} {tuple(masked_positions.shape)}")
            h = h[masked_positions]  # (N, H)
        return self.mlm(h, self.bert.embeddings.word_embeddings.weight)  # (B, T, V) or (N, V)

    @classmethod
    def from_reference(cls, ref: nn.Module, *, impl: Literal["sdpa", "manual"] = "sdpa") -> "BertForMaskedLM":
        """A Hugging Face ``BertForMaskedLM`` -> this model holding its weights (the tied decoder once)."""
        if type(ref).__name__ != "BertForMaskedLM":
            raise TypeError(
                f"BertForMaskedLM.from_reference expects transformers' BertForMaskedLM; got {type(ref).__name__}"
            )
        model = cls(_config_from_hf(ref.config, impl))
        state = _fuse_qkv(ref.state_dict(), model.config.num_layers, prefix="bert.")
        decoder = ref.cls.predictions.decoder
        if decoder.weight is not ref.bert.embeddings.word_embeddings.weight:
            raise ReferenceMismatchError("BertForMaskedLM: the reference's decoder is not tied to its word embeddings")
        del state["cls.predictions.decoder.weight"]  # the word-embedding matrix again
        if "cls.predictions.decoder.bias" in state:
            if not torch.equal(state["cls.predictions.decoder.bias"], state["cls.predictions.bias"]):
                raise ReferenceMismatchError(
                    "BertForMaskedLM: the reference's decoder bias differs from predictions.bias"
                )
            del state["cls.predictions.decoder.bias"]  # cls.predictions.bias again

        def key_map(key: str) -> str:
            return "bert." + _hf_key(key.removeprefix("bert.")) if key.startswith("bert.") else _HF_MLM_KEYS[key]

        transfer_state(model, state, key_map, source="transformers BertForMaskedLM")
        return model.train(ref.training)


def _bert_example(T: int, vocab: int):
    def example(batch_size: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ids = torch.randint(0, vocab, (batch_size, T), generator=gen)
        mask = torch.ones(batch_size, T, dtype=torch.long)
        mask[1:, T - T // 4 :] = 0  # later sequences end in padding
        types = torch.zeros(batch_size, T, dtype=torch.long)
        types[:, T // 2 :] = 1  # sentence A, then sentence B
        return ids, mask, types

    return example


_SEED = Seed("003_979c5363c5233b21.txt", "BERT")
_BASE = BertConfig()
_TINY = BertConfig(hidden_size=128, num_layers=2, num_heads=2, intermediate_size=512)


@register_model(
    "bert_base",
    card=ModelCard(
        name="bert_base",
        family="bert",
        title="BERT-base",
        paper=BERT_PAPER,
        input_shape=((16,), (16,), (16,)),
        output_shape=((16, 768), (768,)),
        task="masked_lm",
        published_params=109_482_240,
        seed=_SEED,
        default_data="tinyshakespeare",
        recipe=Recipe(optimizer="adamw", lr=1e-4, betas=(0.9, 0.999), weight_decay=0.01, schedule="warmup_cosine", warmup=10_000,
                      batch_size=256, steps=1_000_000, eval_every=10_000,
                      source="Devlin et al. 2019 appendix A.2: Adam 1e-4, beta (0.9, 0.999), L2 0.01, 10,000 warm-up steps, "
                      "batch 256, 1M steps (linear decay there; cosine here)"),
        notes="12 post-LN layers, H 768, 12 heads, FFN 3072 (exact GELU), LayerNorm eps 1e-12, WordPiece "
        "vocabulary 30,522, 512 positions, 2 segments, tanh pooler on [CLS]. Inputs (input_ids, "
        "attention_mask (1 = keep), token_type_ids); outputs (sequence (B, T, H), pooled (B, H)). The paper "
        "says 110M; 109,482,240 is Hugging Face's BertModel with its pooler.",
        input_dtype="int",
    ),
    example_input=_bert_example(16, _BASE.vocab_size),
)
def bert_base(**overrides) -> BertModel:
    return BertModel(configure(_BASE, overrides))


@register_model(
    "bert_tiny",
    card=ModelCard(
        name="bert_tiny",
        family="bert",
        title="BERT (tiny)",
        paper=BERT_PAPER,
        input_shape=((16,), (16,), (16,)),
        output_shape=((16, 128), (128,)),
        task="masked_lm",
        seed=_SEED,
        default_data="tinyshakespeare",
        recipe=Recipe(optimizer="adamw", lr=1e-3, betas=(0.9, 0.999), weight_decay=0.01, schedule="warmup_cosine", warmup=200,
                      batch_size=32, steps=2000, eval_every=250,
                      source="BERT's optimiser (appendix A.2: AdamW, weight decay 0.01, warm-up then decay) with a larger "
                      "rate for the 2-layer model and a CPU budget of steps"),
        notes="2 layers, H 128, 2 heads, FFN 512 with the BERT-base vocabulary: the size of Google's BERT-Tiny.",
        input_dtype="int",
    ),
    example_input=_bert_example(16, _TINY.vocab_size),
)
def bert_tiny(**overrides) -> BertModel:
    return BertModel(configure(_TINY, overrides))


def _config_from_hf(hf, impl: Literal["sdpa", "manual"] = "sdpa") -> BertConfig:
    """Our config from a transformers ``BertConfig`` (refusing what this BERT does not build)."""
    problems = []
    if hf.hidden_act != "gelu":
        problems.append(f"hidden_act {hf.hidden_act!r} (this BERT uses the exact 'gelu')")
    if getattr(hf, "position_embedding_type", "absolute") != "absolute":
        problems.append(f"position_embedding_type {hf.position_embedding_type!r}")
    if getattr(hf, "is_decoder", False):
        problems.append("a decoder configuration")
    if hf.hidden_dropout_prob != hf.attention_probs_dropout_prob:
        problems.append(
            f"hidden dropout {hf.hidden_dropout_prob} != attention dropout {hf.attention_probs_dropout_prob}"
        )
    if problems:
        raise ReferenceMismatchError(f"BertModel cannot hold this reference: {'; '.join(problems)}")
    return BertConfig(
        vocab_size=hf.vocab_size,
        hidden_size=hf.hidden_size,
        num_layers=hf.num_hidden_layers,
        num_heads=hf.num_attention_heads,
        intermediate_size=hf.intermediate_size,
        max_position_embeddings=hf.max_position_embeddings,
        type_vocab_size=hf.type_vocab_size,
        dropout=hf.hidden_dropout_prob,
        layer_norm_eps=hf.layer_norm_eps,
        impl=impl,
    )


def _fuse_qkv(state: dict[str, torch.Tensor], num_layers: int, prefix: str = "") -> dict[str, torch.Tensor]:
    """Hugging Face keeps query, key and value as three Linears; stack them as in_proj (3H, H)."""
    state = dict(state)
    for i in range(num_layers):
        p = f"{prefix}encoder.layer.{i}.attention.self."
        for kind in ("weight", "bias"):
            parts = [state.pop(f"{p}{name}.{kind}") for name in ("query", "key", "value")]
            state[f"{p}in_proj_{kind}"] = torch.cat(parts)  # [W^Q; W^K; W^V]
    return state


# our key -> Hugging Face's (after _fuse_qkv), one rule per part of a layer
_HF_RULES = (
    (r"embeddings\.norm\.", "embeddings.LayerNorm."),
    (r"layers\.(\d+)\.self_attn\.in_proj_", r"encoder.layer.\1.attention.self.in_proj_"),
    (r"layers\.(\d+)\.self_attn\.out_proj\.", r"encoder.layer.\1.attention.output.dense."),
    (r"layers\.(\d+)\.norm1\.", r"encoder.layer.\1.attention.output.LayerNorm."),
    (r"layers\.(\d+)\.linear1\.", r"encoder.layer.\1.intermediate.dense."),
    (r"layers\.(\d+)\.linear2\.", r"encoder.layer.\1.output.dense."),
    (r"layers\.(\d+)\.norm2\.", r"encoder.layer.\1.output.LayerNorm."),
)


_HF_MLM_KEYS = {
    "mlm.dense.weight": "cls.predictions.transform.dense.weight",
    "mlm.dense.bias": "cls.predictions.transform.dense.bias",
    "mlm.norm.weight": "cls.predictions.transform.LayerNorm.weight",
    "mlm.norm.bias": "cls.predictions.transform.LayerNorm.bias",
    "mlm.bias": "cls.predictions.bias",
}


def _hf_key(key: str) -> str:
    for pattern, replacement in _HF_RULES:
        ref_key, n = re.subn("^" + pattern, replacement, key)
        if n:
            return ref_key
    return key  # embeddings.{word,position,token_type}_embeddings, pooler.dense: the same names


@register_reference("bert_base", "bert_tiny")
def _from_transformers(name: str, ref: nn.Module) -> BertModel:
    """A Hugging Face ``BertModel`` (with its pooler) -> an nnatlas BertModel with its sizes and weights."""
    if type(ref).__name__ != "BertModel" or not hasattr(ref, "config"):
        raise TypeError(f"from_reference({name!r}) expects transformers' BertModel; got {type(ref).__name__}")
    if ref.pooler is None:
        raise ReferenceMismatchError(
            f"from_reference({name!r}) expects a BertModel with its pooler (add_pooling_layer=True)"
        )
    config = _config_from_hf(ref.config)
    weight = ref.embeddings.word_embeddings.weight
    with torch.device(weight.device):
        model = BertModel(config).to(weight.dtype)
    state = _fuse_qkv(ref.state_dict(), config.num_layers)
    transfer_state(model, state, _hf_key, source="transformers BertModel")
    return model.train(ref.training)
