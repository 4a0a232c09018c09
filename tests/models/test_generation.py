"""The one generation loop: cached decoding equals recomputing from scratch (greedy and sampled,
within and past the context), sampling rules, and its errors. Every registered language model
that implements the CausalLM protocol is checked."""

from __future__ import annotations

import pytest
import torch

import nnatlas
from nnatlas.models.generation import CausalLM, generate, sample_next
from nnatlas.models.gpt import GPT, GPTConfig

TINY = GPTConfig(vocab_size=20, context_length=12, num_layers=2, num_heads=2, d_model=16)


def _gpt() -> GPT:
    torch.manual_seed(0)
    model = GPT(TINY).eval()
    with torch.no_grad():  # sharper distributions than N(0, 0.02) init, so tokens vary
        model.wte.weight.mul_(40)
    return model


def _small_lms() -> list[str]:
    """Registered language models that implement the protocol, at a size a test can run."""
    names = []
    for name in nnatlas.list_models():
        if nnatlas.card(name).task != "language_model":
            continue
        with torch.device("meta"):
            model = nnatlas.create(name)
        if isinstance(model, CausalLM) and sum(p.numel() for p in model.parameters()) < 2_000_000:
            names.append(name)
    return names


@pytest.mark.parametrize("name", _small_lms())
def test_cached_generation_equals_recomputation(name: str, one_thread: None) -> None:
    torch.manual_seed(0)
    model = nnatlas.create(name).eval()
    prompt = torch.randint(0, model.vocab_size, (2, 5))
    ctx = model.context_length
    n = 20 if ctx is None else ctx + 6  # past the context where there is one
    cached = generate(model, prompt, n, temperature=0)
    fresh = generate(model, prompt, n, temperature=0, use_cache=False)
    assert cached.shape == (2, 5 + n)
    assert torch.equal(cached, fresh)  # greedy tokens identical
    a = generate(model, prompt, n, temperature=1.0, generator=torch.Generator().manual_seed(3))
    b = generate(model, prompt, n, temperature=1.0, generator=torch.Generator().manual_seed(3), use_cache=False)
    assert torch.equal(a, b)  # same draws on logits within ~1e-6 of each other


def test_cache_logits_match_full_forward_past_the_context() -> None:
    """Past the context, the loop re-encodes the last context_length tokens, as nanoGPT crops."""
    model = _gpt()
    prompt = torch.randint(0, 20, (1, 10))
    out = generate(model, prompt, 8, temperature=0)  # 18 tokens > context 12
    for t in range(10, 18):
        window = out[:, max(0, t - 12) : t]
        with torch.no_grad():
            assert int(model(window)[0, -1].argmax()) == int(out[0, t])


def test_greedy_is_top_k_one_and_temperature_zero() -> None:
    model = _gpt()
    prompt = torch.randint(0, 20, (3, 4))
    greedy = generate(model, prompt, 10, temperature=0)
    top1 = generate(model, prompt, 10, temperature=0.7, top_k=1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(greedy, top1)
    assert torch.equal(greedy[:, :4], prompt)


def test_top_k_restricts_draws() -> None:
    logits = torch.tensor([[0.0, 1.0, 5.0, 4.0, -3.0]]).repeat(500, 1)
    draws = sample_next(logits, 1.0, top_k=2, generator=torch.Generator().manual_seed(0))
    assert set(draws.tolist()) == {2, 3}
    draws = sample_next(logits, 1.0, generator=torch.Generator().manual_seed(0))
    assert {0, 1, 2, 3} <= set(draws.tolist())


def test_zero_new_tokens_returns_the_prompt() -> None:
    prompt = torch.randint(0, 20, (2, 3))
    assert torch.equal(generate(_gpt(), prompt, 0), prompt)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"temperature": -1.0}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": 2.5}, "top_k"),
    ],
)
def test_bad_sampling_arguments_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        generate(_gpt(), torch.zeros(1, 2, dtype=torch.long), 3, **kwargs)


@pytest.mark.parametrize(
    "prompt, match",
    [
        (torch.zeros(1, 2), "integer dtype"),
        (torch.zeros(2, dtype=torch.long), r"\(B, T0\)"),
        (torch.zeros(1, 0, dtype=torch.long), "at least one token"),
        (torch.full((1, 2), 20), r"\[0, 20\)"),
    ],
)
def test_bad_prompts_raise(prompt: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        generate(_gpt(), prompt, 3)


def test_not_a_causal_lm_raises() -> None:
    with pytest.raises(TypeError, match="CausalLM"):
        generate(torch.nn.Linear(2, 2), torch.zeros(1, 2, dtype=torch.long), 3)
