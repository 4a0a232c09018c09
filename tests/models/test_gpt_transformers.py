"""GPT against transformers' GPT2LMHeadModel (optional): mapped weights give the same logits and
gradients, greedy generation through nnatlas's key/value cache gives transformers' tokens, and a
reference this GPT cannot hold is refused by name."""

from __future__ import annotations

import pytest
import torch

import nnatlas
from nnatlas.errors import ReferenceMismatchError

transformers = pytest.importorskip("transformers")

SMALL = {"n_layer": 2, "n_head": 2, "n_embd": 16, "vocab_size": 23, "n_positions": 40, "bos_token_id": 0, "eos_token_id": 0}


def _reference(**overrides: object) -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.GPT2Config(**{**SMALL, **overrides})
    return transformers.GPT2LMHeadModel(config).eval()


@pytest.mark.parametrize("activation", ["gelu_new", "gelu"])
def test_matches_transformers_logits_and_gradients(activation: str) -> None:
    ref = _reference(activation_function=activation, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    ours = nnatlas.from_reference("gpt_mini", ref)
    assert ours.config.gelu_approximate == ("tanh" if activation == "gelu_new" else "none")
    ids = torch.randint(0, 23, (3, 40), generator=torch.Generator().manual_seed(1))
    a, b = ours(ids), ref(ids).logits
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)  # float32, same operations in another order
    a.square().mean().backward()
    b.square().mean().backward()
    torch.testing.assert_close(ours.blocks[1].linear1.weight.grad, ref.transformer.h[1].mlp.c_fc.weight.grad.t(),
                               rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(ours.wte.weight.grad, ref.transformer.wte.weight.grad, rtol=1e-4, atol=1e-6)


def test_cached_greedy_generation_gives_transformers_tokens() -> None:
    from nnatlas.models.generation import generate

    ref = _reference()
    ours = nnatlas.from_reference("gpt_shakespeare", ref).eval()
    prompt = torch.randint(0, 23, (2, 5), generator=torch.Generator().manual_seed(2))
    theirs = ref.generate(prompt, max_new_tokens=30, do_sample=False, pad_token_id=0)
    assert torch.equal(generate(ours, prompt, 30, temperature=0), theirs)


def test_references_it_cannot_hold_are_refused() -> None:
    with pytest.raises(ReferenceMismatchError, match="n_inner 20"):
        nnatlas.from_reference("gpt_mini", _reference(n_inner=20))
    with pytest.raises(ReferenceMismatchError, match="activation_function 'relu'"):
        nnatlas.from_reference("gpt_mini", _reference(activation_function="relu"))
    with pytest.raises(TypeError, match="GPT2LMHeadModel"):
        nnatlas.from_reference("gpt_mini", torch.nn.Linear(2, 2))
