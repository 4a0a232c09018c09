"""BERT against Hugging Face transformers (optional, skipped per test): BertModel and BertForMaskedLM
with mapped weights give the same outputs and gradients with an attention mask and token types."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import nnatlas
from nnatlas.errors import ReferenceMismatchError, ShapeError
from nnatlas.models.bert import BertConfig, BertForMaskedLM, BertModel, _hf_key

HF_SMALL = dict(
    vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
    max_position_embeddings=24, type_vocab_size=2, layer_norm_eps=1e-12,
)


def _inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 97, (3, 10), generator=g)
    mask = torch.ones(3, 10, dtype=torch.long)
    mask[1, 7:] = 0
    mask[2, 4:] = 0
    types = torch.zeros(3, 10, dtype=torch.long)
    types[:, 5:] = 1
    return ids, mask, types


def _hf(cls_name: str, **config) -> torch.nn.Module:
    """A small transformers BERT (``cls_name``), or skip the test when transformers is absent."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    return getattr(transformers, cls_name)(transformers.BertConfig(**HF_SMALL, **config)).eval()


@pytest.mark.parametrize("impl", ["sdpa", "manual"])
def test_matches_transformers_bert_model(impl: str) -> None:
    ref = _hf("BertModel")
    converted = nnatlas.from_reference("bert_base", ref)
    assert converted.config == BertConfig(
        vocab_size=97, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=48, max_position_embeddings=24
    )
    ours = BertModel(dataclasses.replace(converted.config, impl=impl)).eval()
    ours.load_state_dict(converted.state_dict())

    ids, mask, types = _inputs()
    seq, pooled = ours(ids, mask, types)
    ref_out = ref(input_ids=ids, attention_mask=mask, token_type_ids=types)
    assert seq.shape == (3, 10, 32) and pooled.shape == (3, 32)
    # every position, padded ones too (they still attend to the tokens); fp32
    torch.testing.assert_close(seq, ref_out.last_hidden_state, rtol=0, atol=1e-5)
    torch.testing.assert_close(pooled, ref_out.pooler_output, rtol=0, atol=1e-5)

    (seq.square().sum() + pooled.sum()).backward()
    (ref_out.last_hidden_state.square().sum() + ref_out.pooler_output.sum()).backward()
    ref_params = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        ref_key = _hf_key(name)
        if ".in_proj_" in ref_key:  # compare with the three Linears, stacked
            kind = ref_key.rsplit("_", 1)[1]
            base = ref_key.rsplit(".", 1)[0]
            ref_grad = torch.cat([ref_params[f"{base}.{n}.{kind}"].grad for n in ("query", "key", "value")])
        else:
            ref_grad = ref_params[ref_key].grad
        # fp32: the embeddings' gradients reach ~20 here, so the absolute tolerance scales with the largest
        scale = max(1.0, ref_grad.abs().max().item())
        torch.testing.assert_close(p.grad, ref_grad, rtol=1e-4, atol=1e-5 * scale, msg=name)


def test_matches_transformers_masked_lm() -> None:
    ref = _hf("BertForMaskedLM")
    ours = BertForMaskedLM.from_reference(ref, impl="manual").eval()
    # the tied decoder matrix is held once on both sides
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())
    ids, mask, types = _inputs()
    logits = ours(ids, mask, types)
    ref_logits = ref(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
    assert logits.shape == (3, 10, 97)
    torch.testing.assert_close(logits, ref_logits, rtol=0, atol=1e-5)  # fp32


def test_padding_and_token_types_change_what_they_should() -> None:
    torch.manual_seed(2)
    model = nnatlas.create("bert_tiny", vocab_size=50, max_position_embeddings=16).eval()
    ids, mask, types = (t[:, :8] % 50 for t in _inputs())
    seq, _ = model(ids, mask, types)
    other = ids.clone()
    other[2, 4:] = (other[2, 4:] + 1) % 50  # only padded tokens of sequence 2 change
    seq2, _ = model(other, mask, types)
    torch.testing.assert_close(seq[2, :4], seq2[2, :4], rtol=0, atol=1e-6)  # padding is never attended to
    seq3, _ = model(ids, mask, torch.zeros_like(types))
    assert not torch.allclose(seq, seq3)
    seq4, _ = model(ids, torch.ones_like(mask))
    torch.testing.assert_close(seq4, model(ids)[0], rtol=0, atol=0)  # no mask = all ones, types default to 0
    assert not torch.allclose(seq4[2, :4], seq[2, :4])


def test_bad_inputs_raise() -> None:
    model = nnatlas.create("bert_tiny", max_position_embeddings=8)
    with pytest.raises(ShapeError, match="at most 8 tokens"):
        model(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ShapeError, match=r"attention_mask \(2, 4\)"):
        model(torch.zeros(2, 4, dtype=torch.long), torch.ones(2, 5))
    with pytest.raises(TypeError, match="BertModel"):
        nnatlas.from_reference("bert_tiny", torch.nn.Linear(2, 2))


def test_bad_references_raise() -> None:
    relu_bert = _hf("BertModel", hidden_act="relu")
    with pytest.raises(ReferenceMismatchError, match="hidden_act"):
        nnatlas.from_reference("bert_tiny", relu_bert)


def test_base_parameter_count_by_part() -> None:
    with torch.device("meta"):
        model = nnatlas.create("bert_base")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(model.embeddings) == 30_522 * 768 + 512 * 768 + 2 * 768 + 2 * 768
    assert count(model.layers[0]) == 4 * (768 * 768 + 768) + 2 * 768 * 3072 + 3072 + 768 + 2 * 2 * 768
    assert count(model.pooler) == 768 * 768 + 768
    assert count(model) == nnatlas.card("bert_base").published_params == 109_482_240
