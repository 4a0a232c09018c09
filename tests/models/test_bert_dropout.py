"""BERT applies dropout exactly where the paper's released code (and transformers' BertLayer)
does: the embeddings, then per layer the attention probabilities, the attention output and the
feed-forward output. Counted by intercepting every dropout call, so adding or removing one fails."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from nnatlas.models.bert import BertConfig, BertModel

SMALL = BertConfig(vocab_size=97, hidden_size=32, num_layers=3, num_heads=4, intermediate_size=48,
                   max_position_embeddings=24)


class _CountDropout(TorchFunctionMode):
    """Records the shape of every F.dropout call (nn.Dropout goes through it too)."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.dropout:
            self.shapes.append(tuple(args[0].shape))
        return func(*args, **(kwargs or {}))


def _count(model: torch.nn.Module, *inputs: torch.Tensor) -> list[tuple[int, ...]]:
    counter = _CountDropout()
    with counter:
        model(*inputs)
    return counter.shapes


def test_three_dropouts_per_layer_and_one_after_the_embeddings() -> None:
    # the manual path: the attention dropout is an F.dropout call there (sdpa fuses it into the kernel)
    model = BertModel(BertConfig(**{**SMALL.__dict__, "impl": "manual"})).train()
    ids = torch.randint(0, 97, (2, 10))
    shapes = _count(model, ids)
    B, T, H, heads = 2, 10, 32, 4
    per_layer = [(B, heads, T, T), (B, T, H), (B, T, H)]  # attention probabilities, attention output, FFN output
    assert shapes == [(B, T, H)] + per_layer * 3
    assert (B, T, 48) not in shapes  # never the GELU output (B, T, F)


def test_dropout_sites_match_transformers() -> None:
    transformers = pytest.importorskip("transformers")
    hf = transformers.BertModel(transformers.BertConfig(
        vocab_size=97, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=48,
        max_position_embeddings=24, attn_implementation="eager",
    )).train()
    ours = BertModel(BertConfig(**{**SMALL.__dict__, "impl": "manual"})).train()
    ids = torch.randint(0, 97, (2, 10))
    assert _count(ours, ids) == _count(hf, ids)
