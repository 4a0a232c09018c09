"""BERT applies dropout exactly where the paper's released code (and transformers' BertLayer)
does: the embeddings, then per layer the attention probabilities, the attention output and the
feed-forward output. Counted by intercepting every dropout call, so adding or removing one fails;
and under one seed the train-mode outputs equal transformers', so a moved one fails too."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

import nnatlas
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


@pytest.mark.parametrize("impl", ["sdpa", "manual"])
def test_train_mode_equals_transformers_under_one_seed(impl: str) -> None:
    # From one seed both models draw the same dropout masks only if they drop out the same tensors
    # (same shapes) in the same order: a dropout added, removed or moved, or another random kernel,
    # changes every later mask (torch.nn's GELU dropout put back: the outputs differ by 0.04, not 1e-6).
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    hf = transformers.BertModel(transformers.BertConfig(
        vocab_size=97, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=48,
        max_position_embeddings=24, attn_implementation="sdpa" if impl == "sdpa" else "eager",
    )).train()
    converted = nnatlas.from_reference("bert_tiny", hf)
    ours = BertModel(dataclasses.replace(converted.config, impl=impl)).train()
    ours.load_state_dict(converted.state_dict())
    ids = torch.randint(0, 97, (2, 10), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, 6:] = 0
    torch.manual_seed(7)
    seq, pooled = ours(ids, mask)
    torch.manual_seed(7)
    ref = hf(ids, attention_mask=mask)
    torch.testing.assert_close(seq, ref.last_hidden_state, rtol=0, atol=1e-5)  # fp32 rounding of the same ops
    torch.testing.assert_close(pooled, ref.pooler_output, rtol=0, atol=1e-5)
    (seq.square().sum() + pooled.sum()).backward()
    (ref.last_hidden_state.square().sum() + ref.pooler_output.sum()).backward()
    hf_self = hf.encoder.layer[0].attention.self
    hf_qkv = torch.cat([hf_self.query.weight.grad, hf_self.key.weight.grad, hf_self.value.weight.grad])
    for ours_grad, hf_grad in ((ours.layers[0].self_attn.in_proj_weight.grad, hf_qkv),
                               (ours.embeddings.word_embeddings.weight.grad, hf.embeddings.word_embeddings.weight.grad),
                               (ours.layers[2].linear2.weight.grad, hf.encoder.layer[2].output.dense.weight.grad)):
        # fp32; the absolute tolerance scales with the largest gradient (the embeddings' reach ~20)
        torch.testing.assert_close(ours_grad, hf_grad, rtol=1e-4, atol=1e-5 * max(1.0, hf_grad.abs().max().item()))
