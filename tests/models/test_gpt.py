"""The decoder-only GPT: causality, tied weights, nanoGPT's parameter count and initialisation,
one block against torch.nn.TransformerEncoderLayer(norm_first=True), both attention paths, and
the key/value-cached step against the full forward."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import nnatlas
from nnatlas.errors import ShapeError
from nnatlas.models.gpt import GPT, Block, GPTConfig

TINY = GPTConfig(vocab_size=20, context_length=16, num_layers=2, num_heads=2, d_model=16)


def test_causal_logits_at_t_ignore_later_tokens() -> None:
    model = GPT(TINY).eval()
    ids = torch.randint(0, 20, (2, 12))
    changed = ids.clone()
    changed[:, 7:] = (changed[:, 7:] + 1) % 20  # rewrite every token after position 6
    with torch.no_grad():
        a, b = model(ids), model(changed)
    torch.testing.assert_close(a[:, :7], b[:, :7], rtol=0, atol=0)  # same math on the same rows: bitwise
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def test_output_projection_is_the_token_embedding() -> None:
    model = GPT(TINY)
    assert model.lm_head.weight is model.wte.weight
    names = [n for n, _ in model.named_parameters()]
    assert "lm_head.weight" not in names  # counted once


def _nanogpt_param_count(V: int, T: int, L: int, D: int, bias: bool) -> tuple[int, int]:
    """nanoGPT's GPT written as a sum: per block ln_1, c_attn, c_proj, ln_2, c_fc, c_proj; then ln_f.
    Returns (all parameters, nanoGPT's get_num_params() which leaves out wpe)."""
    ln = D * (2 if bias else 1)
    block = 2 * ln + (3 * D * D + (3 * D if bias else 0)) + (D * D + (D if bias else 0))
    block += (4 * D * D + (4 * D if bias else 0)) + (4 * D * D + (D if bias else 0))
    total = V * D + T * D + L * block + ln
    return total, total - T * D


@pytest.mark.parametrize("bias", [False, True])
def test_gpt_shakespeare_parameter_count_is_nanogpts(bias: bool) -> None:
    with torch.device("meta"):
        model = nnatlas.create("gpt_shakespeare", bias=bias)
    total, non_embedding = _nanogpt_param_count(65, 256, 6, 384, bias)
    assert sum(p.numel() for p in model.parameters()) == total
    if not bias:
        assert total == 10_745_088 and round(non_embedding / 1e6, 2) == 10.65  # nanoGPT prints "10.65M"


def test_init_is_nanogpts() -> None:
    torch.manual_seed(0)
    model = GPT(GPTConfig(num_layers=8, d_model=256, num_heads=4))
    std = lambda t: t.float().std().item()  # noqa: E731
    assert abs(std(model.wte.weight) - 0.02) < 0.001
    assert abs(std(model.blocks[0].self_attn.in_proj_weight) - 0.02) < 0.001
    residual = 0.02 / math.sqrt(2 * 8)
    assert abs(std(model.blocks[3].linear2.weight) - residual) < 0.0005
    assert abs(std(model.blocks[3].self_attn.out_proj.weight) - residual) < 0.0005


@pytest.mark.parametrize("bias", [False, True])
def test_block_equals_torch_encoder_layer_norm_first(bias: bool) -> None:
    """Eval mode: the same weights under the same names give torch's pre-LN layer with a causal mask."""
    D, H = 16, 4
    ref = nn.TransformerEncoderLayer(
        D, H, 4 * D, dropout=0.0, activation="gelu", batch_first=True, norm_first=True, bias=bias
    ).eval()
    block = Block(D, H, 0.0, bias, "manual").eval()
    block.load_state_dict(ref.state_dict())  # strict: the names and shapes map 1:1
    x = torch.randn(3, 10, D)
    mask = nn.Transformer.generate_square_subsequent_mask(10)
    with torch.no_grad():
        torch.testing.assert_close(block(x), ref(x, src_mask=mask, is_causal=True), rtol=1e-5, atol=1e-5)


def test_manual_and_sdpa_paths_agree_forward_and_grad() -> None:
    a = GPT(TINY)
    b = GPT(GPTConfig(**{**TINY.__dict__, "impl": "manual"}))
    b.load_state_dict(a.state_dict())
    ids = torch.randint(0, 20, (2, 16))
    la, lb = a(ids), b(ids)
    torch.testing.assert_close(la, lb, rtol=1e-5, atol=1e-5)
    la.square().sum().backward()
    lb.square().sum().backward()
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=n)


@pytest.mark.parametrize("impl", ["sdpa", "manual"])
def test_cached_step_equals_full_forward(impl: str) -> None:
    model = GPT(GPTConfig(**{**TINY.__dict__, "impl": impl})).eval()
    ids = torch.randint(0, 20, (3, 16))
    with torch.no_grad():
        full = model(ids)  # (3, 16, V)
        state = model.init_state(3)
        logits, state = model.step(ids[:, :5], state)  # a 5-token prompt at once
        rows = [logits]
        for t in range(5, 16):
            logits, state = model.step(ids[:, t : t + 1], state)  # then one token at a time
            rows.append(logits)
    assert state.length == 16
    torch.testing.assert_close(torch.stack(rows, 1), full[:, 4:], rtol=1e-5, atol=1e-5)  # fp32 summation order


def test_inputs_beyond_context_or_vocabulary_are_refused() -> None:
    model = GPT(TINY)
    with pytest.raises(ShapeError, match="context_length=16"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ShapeError, match=r"\[0, 20\)"):
        model(torch.full((1, 4), 20))
    state = model.init_state(1)
    model.step(torch.zeros(1, 16, dtype=torch.long), state)
    with pytest.raises(ShapeError, match="after 16 cached"):
        model.step(torch.zeros(1, 1, dtype=torch.long), state)


def test_registered_variants_are_nanogpts() -> None:
    mini, baby = nnatlas.create("gpt_mini").config, nnatlas.create("gpt_shakespeare").config
    assert (mini.num_layers, mini.num_heads, mini.d_model, mini.context_length, mini.dropout) == (4, 4, 128, 64, 0.0)
    assert (baby.num_layers, baby.num_heads, baby.d_model, baby.context_length, baby.dropout) == (6, 6, 384, 256, 0.2)
    assert mini.vocab_size == baby.vocab_size == 65
    assert nnatlas.card("gpt_mini").task == "language_model"
