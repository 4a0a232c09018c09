"""The Transformer against torch.nn.Transformer (mapped weights, eval outputs and gradients),
its parameter count, positional encodings, masks, and greedy / beam-search decoding."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

import nnatlas
from nnatlas.errors import ReferenceMismatchError, ShapeError
from nnatlas.models.transformer import Transformer, TransformerConfig, _NextLogits, sinusoidal_positions

V, D, HEADS, FF = 50, 32, 4, 64

# torch.nn's reference warns about mixing bool padding with float causal masks (both valid here) and
# about its nested-tensor fast path, which these (grad-enabled) comparisons never take
pytestmark = pytest.mark.filterwarnings(
    "ignore:Support for mismatched key_padding_mask:UserWarning",
    "ignore:enable_nested_tensor is True:UserWarning",
)


def _pe(T: int, D: int) -> torch.Tensor:
    """Section 3.5 written out element by element, independently of the library."""
    pe = torch.empty(T, D)
    for pos in range(T):
        for i in range(D // 2):
            angle = pos / 10000 ** (2 * i / D)
            pe[pos, 2 * i], pe[pos, 2 * i + 1] = math.sin(angle), math.cos(angle)
    return pe


def test_sinusoidal_positions() -> None:
    torch.testing.assert_close(sinusoidal_positions(20, 16), _pe(20, 16), rtol=0, atol=1e-5)  # fp32 exp vs pow


def _reference(norm_first: bool = False, batch_first: bool = True) -> nn.ModuleDict:
    torch.manual_seed(0)
    t = nn.Transformer(D, HEADS, 2, 3, FF, dropout=0.1, batch_first=batch_first, norm_first=norm_first)
    return nn.ModuleDict({"transformer": t, "embedding": nn.Embedding(V, D)}).eval()


def _reference_logits(ref: nn.ModuleDict, src, tgt, src_pad, tgt_pad) -> torch.Tensor:
    t, emb = ref["transformer"], ref["embedding"]
    S, T = src.shape[1], tgt.shape[1]
    s = emb(src) * math.sqrt(D) + _pe(S, D)
    u = emb(tgt) * math.sqrt(D) + _pe(T, D)
    if not t.batch_first:
        s, u = s.transpose(0, 1), u.transpose(0, 1)
    out = t(
        s,
        u,
        tgt_mask=nn.Transformer.generate_square_subsequent_mask(T),
        src_key_padding_mask=src_pad,
        tgt_key_padding_mask=tgt_pad,
        memory_key_padding_mask=src_pad,
        tgt_is_causal=True,
    )
    if not t.batch_first:
        out = out.transpose(0, 1)
    return out @ emb.weight.T


@pytest.mark.parametrize("impl", ["sdpa", "manual"])
@pytest.mark.parametrize("norm_first", [False, True], ids=["post_ln", "pre_ln"])
def test_matches_torch_transformer(norm_first: bool, impl: str) -> None:
    ref = _reference(norm_first=norm_first, batch_first=not norm_first)  # both layouts load the same weights
    converted = nnatlas.from_reference("transformer_tiny", ref)
    ours = Transformer(dataclasses.replace(converted.config, impl=impl)).eval()
    ours.load_state_dict(converted.state_dict())
    c = converted.config
    assert (c.vocab_size, c.d_model, c.num_heads, c.num_encoder_layers, c.num_decoder_layers) == (V, D, HEADS, 2, 3)
    assert c.final_norm and c.norm_first == norm_first and not converted.training

    g = torch.Generator().manual_seed(1)
    src, tgt = torch.randint(0, V, (3, 7), generator=g), torch.randint(0, V, (3, 6), generator=g)
    src_pad = torch.zeros(3, 7, dtype=torch.bool)
    src_pad[1, -2:] = True
    tgt_pad = torch.zeros(3, 6, dtype=torch.bool)
    tgt_pad[2, -3:] = True
    # grad enabled: torch takes its ordinary path (the inference fast path zeroes padded outputs)
    out = ours(src, tgt, src_pad, tgt_pad)
    ref_out = _reference_logits(ref, src, tgt, src_pad, tgt_pad)
    assert out.shape == (3, 6, V)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-5)  # fp32

    out.square().mean().backward()
    ref_out.square().mean().backward()
    ref_grads = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        ref_name = name if name.startswith("embedding") else f"transformer.{name}"
        torch.testing.assert_close(p.grad, ref_grads[ref_name].grad, rtol=1e-4, atol=1e-5, msg=name)


def test_from_reference_rejects_a_bare_transformer() -> None:
    with pytest.raises(TypeError, match="ModuleDict"):
        nnatlas.from_reference("transformer", nn.Transformer(D, HEADS, 1, 1, FF))
    ref = _reference()
    ref["embedding"] = nn.Embedding(V, D + 1)
    with pytest.raises(ReferenceMismatchError, match="embedding size"):
        nnatlas.from_reference("transformer", ref)


def test_base_parameter_count() -> None:
    with torch.device("meta"):
        model = nnatlas.create("transformer")
    d, f, v = 512, 2048, 37_000
    attn = 4 * d * d + 4 * d
    ffn = d * f + f + f * d + d
    encoder_layer = attn + ffn + 2 * 2 * d
    decoder_layer = 2 * attn + ffn + 3 * 2 * d
    expected = v * d + 6 * encoder_layer + 6 * decoder_layer
    count = sum(p.numel() for p in model.parameters())
    assert count == expected == 63_082_496
    assert "63,082,496" in nnatlas.card("transformer").notes and "65M" in nnatlas.card("transformer").notes
    # source, target and output share one matrix: it is the only (V, D) parameter
    assert [n for n, p in model.named_parameters() if p.shape == (v, d)] == ["embedding.weight"]


def test_output_projection_is_the_embedding() -> None:
    torch.manual_seed(2)
    model = nnatlas.create("transformer_tiny").eval()
    src, tgt = torch.randint(0, 1000, (2, 5)), torch.randint(0, 1000, (2, 4))
    memory = model.encode(src)
    hidden = []
    model.decoder.register_forward_hook(lambda m, i, o: hidden.append(o))
    logits = model.decode(tgt, memory)
    torch.testing.assert_close(logits, hidden[0] @ model.embedding.weight.T, rtol=0, atol=1e-5)


def test_target_is_causal_and_source_padding_is_ignored() -> None:
    torch.manual_seed(3)
    model = nnatlas.create("transformer_tiny").eval()
    src, tgt = torch.randint(0, 1000, (2, 6)), torch.randint(0, 1000, (2, 5))
    out = model(src, tgt)
    changed = tgt.clone()
    changed[:, 3:] = (changed[:, 3:] + 1) % 1000
    out2 = model(src, changed)
    torch.testing.assert_close(out[:, :3], out2[:, :3], rtol=0, atol=1e-5)  # earlier positions do not see later ones
    assert not torch.allclose(out[:, 3:], out2[:, 3:])
    # padded source positions do not matter
    pad = torch.zeros(2, 6, dtype=torch.bool)
    pad[:, 4:] = True
    other = src.clone()
    other[:, 4:] = (other[:, 4:] + 7) % 1000
    torch.testing.assert_close(model(src, tgt, pad), model(other, tgt, pad), rtol=0, atol=1e-5)


def test_bad_inputs_raise() -> None:
    model = nnatlas.create("transformer_tiny")
    src, tgt = torch.randint(0, 1000, (2, 6)), torch.randint(0, 1000, (2, 5))
    with pytest.raises(ShapeError, match=r"expects tgt_ids \(2, T\); got \(3, 5\)"):
        model(src, torch.randint(0, 1000, (3, 5)))
    with pytest.raises(ShapeError, match="bool"):
        model(src, tgt, src_key_padding_mask=torch.zeros(2, 6))
    with pytest.raises(ShapeError, match="integer"):
        model.encode(src.float())


def _tiny_for_decoding() -> Transformer:
    torch.manual_seed(4)
    return Transformer(TransformerConfig(vocab_size=12, d_model=32, num_heads=4, num_encoder_layers=1,
                                         num_decoder_layers=2, dim_feedforward=64)).eval()


def test_greedy_matches_step_by_step_argmax() -> None:
    model = _tiny_for_decoding()
    src = torch.randint(3, 12, (4, 5), generator=torch.Generator().manual_seed(5))
    out = model.generate(src, max_len=6, bos_id=0, eos_id=1)
    assert out.shape[0] == 4 and 2 <= out.shape[1] <= 7 and (out[:, 0] == 0).all()
    for b in range(4):  # re-derive each sequence one token at a time, one source at a time
        ys = torch.tensor([[0]])
        for t in range(1, out.shape[1]):
            if ys[0, -1] == 1:
                assert out[b, t] == 1  # padded with eos after finishing
                ys = torch.cat([ys, torch.tensor([[1]])], 1)
                continue
            nxt = model(src[b : b + 1], ys)[0, -1].argmax()
            assert out[b, t] == nxt
            ys = torch.cat([ys, nxt.view(1, 1)], 1)


def test_beam_one_is_greedy_and_wider_beams_score_at_least_greedy() -> None:
    model = _tiny_for_decoding()
    src = torch.randint(3, 12, (8, 6), generator=torch.Generator().manual_seed(6))
    pad = torch.zeros(8, 6, dtype=torch.bool)
    pad[::2, -2:] = True
    greedy = model.generate(src, 8, bos_id=0, eos_id=1, src_key_padding_mask=pad)
    step = _NextLogits(model, model.encode(src, pad), pad, 9, use_cache=True)
    assert torch.equal(model._beam(step, 8, 0, 1, 1, K=1, alpha=0.0), greedy)
    greedy_score = model.log_prob(src, greedy, eos_id=1, src_key_padding_mask=pad)
    for k in (2, 4):
        beam = model.generate(src, 8, bos_id=0, eos_id=1, beam_size=k, src_key_padding_mask=pad)
        beam_score = model.log_prob(src, beam, eos_id=1, src_key_padding_mask=pad)
        assert (beam_score >= greedy_score - 1e-5).all(), (k, beam_score, greedy_score)  # fp32 re-scoring
    assert (beam_score > greedy_score + 1e-3).any(), "beam search never beat greedy: the test has no power"


def test_generate_validates_arguments() -> None:
    model = _tiny_for_decoding()
    src = torch.randint(3, 12, (1, 4))
    with pytest.raises(ValueError, match="beam_size"):
        model.generate(src, 4, bos_id=0, eos_id=1, beam_size=0)
    with pytest.raises(ValueError, match="eos_id"):
        model.generate(src, 4, bos_id=0, eos_id=12)


@pytest.mark.parametrize("norm_first, final_norm", [(False, False), (True, True)])
def test_decode_step_with_caches_equals_decode(norm_first: bool, final_norm: bool) -> None:
    torch.manual_seed(0)
    model = Transformer(TransformerConfig(vocab_size=30, d_model=32, num_heads=4, num_encoder_layers=1,
                                          num_decoder_layers=2, dim_feedforward=64, norm_first=norm_first,
                                          final_norm=final_norm)).eval()
    src, tgt = torch.randint(0, 30, (3, 7)), torch.randint(0, 30, (3, 9))
    pad = torch.zeros(3, 7, dtype=torch.bool)
    pad[1, -3:] = True
    with torch.no_grad():
        memory = model.encode(src, pad)
        full = model.decode(tgt, memory, pad)  # (3, 9, V)
        state = model.init_decoder_state(memory, pad, capacity=4)  # too small on purpose: the cache grows
        rows = [model.decode_step(tgt[:, :3], state)]  # a 3-token prefix at once
        rows += [model.decode_step(tgt[:, t : t + 1], state) for t in range(3, 9)]
    assert state.length == 9
    torch.testing.assert_close(torch.stack(rows, 1), full[:, 2:], rtol=1e-5, atol=1e-5)  # fp32 summation order


@pytest.mark.parametrize("beam_size, alpha", [(1, 0.0), (4, 0.0), (4, 0.6), (3, 2.0)])
def test_cached_decoding_equals_recomputation(beam_size: int, alpha: float) -> None:
    model = _tiny_for_decoding()
    src = torch.randint(3, 12, (6, 6), generator=torch.Generator().manual_seed(7))
    pad = torch.zeros(6, 6, dtype=torch.bool)
    pad[1::2, -2:] = True
    kw = dict(bos_id=0, eos_id=1, beam_size=beam_size, src_key_padding_mask=pad, length_penalty=alpha)
    cached = model.generate(src, 10, **kw)
    fresh = model.generate(src, 10, use_cache=False, **kw)
    assert torch.equal(cached, fresh)  # identical tokens and beams


def test_length_penalty_favours_longer_hypotheses(monkeypatch: pytest.MonkeyPatch) -> None:
    """GNMT's lp divides (negative) log-probabilities by ((5 + |Y|) / 6)^alpha: larger alpha, longer outputs."""
    model = _tiny_for_decoding()
    src = torch.randint(3, 12, (16, 6), generator=torch.Generator().manual_seed(8))
    step = model.decode_step
    # an EOS that is likely but not certain (+2 on its logit), so the penalty has a choice to make
    monkeypatch.setattr(model, "decode_step", lambda ids, state: step(ids, state) + 2.0 * (torch.arange(12) == 1))

    def lengths(alpha: float) -> torch.Tensor:
        out = model.generate(src, 12, bos_id=0, eos_id=1, beam_size=4, pad_id=2, length_penalty=alpha)
        return (out[:, 1:] != 2).sum(1).float()  # generated tokens up to and including EOS

    short, long = lengths(0.0), lengths(3.0)
    assert long.mean() > short.mean(), (short, long)


@pytest.mark.parametrize("alpha", [-0.5, float("nan"), True])
def test_bad_length_penalty_raises(alpha: float) -> None:
    model = _tiny_for_decoding()
    with pytest.raises(ValueError, match="length_penalty"):
        model.generate(torch.randint(3, 12, (1, 4)), 4, bos_id=0, eos_id=1, beam_size=2, length_penalty=alpha)
