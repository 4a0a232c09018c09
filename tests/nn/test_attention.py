"""nnatlas.nn attention layers against torch.nn: from_reference equivalence (forward and
gradients), manual vs sdpa equality with masks, and the errors they raise."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nnatlas.errors import ShapeError
from nnatlas.nn import MultiheadAttention, TransformerDecoderLayer, TransformerEncoderLayer
from nnatlas.nn.attention import attention, causal_mask

B, L, S, E, H = 3, 5, 7, 16, 4

# torch.nn's reference warns about mixing bool padding with float causal masks; both are valid here
pytestmark = pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask:UserWarning")


def _grads(module: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad for n, p in module.named_parameters()}


def _assert_grads_equal(ours: nn.Module, ref: nn.Module, atol: float = 1e-5) -> None:
    a, b = _grads(ours), _grads(ref)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name] is not None and b[name] is not None, name
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=atol, msg=name)  # fp32 reduction order


def _padding(batch: int, length: int) -> torch.Tensor:
    """(batch, length) bool, True = padded: row i pads its last i positions (never the whole row)."""
    pad = torch.zeros(batch, length, dtype=torch.bool)
    for i in range(batch):
        if i:
            pad[i, -i:] = True
    return pad


MHA_CASES = {
    "plain": {},
    "batch_first": {"batch_first": True},
    "no_bias": {"bias": False, "batch_first": True},
    "kdim_vdim": {"kdim": 6, "vdim": 10, "batch_first": True},
    "bias_kv_zero_attn": {"add_bias_kv": True, "add_zero_attn": True},
}


@pytest.mark.parametrize("impl", ["manual", "sdpa"])
@pytest.mark.parametrize("case", MHA_CASES)
def test_multihead_attention_matches_torch(case: str, impl: str) -> None:
    kw = MHA_CASES[case]
    torch.manual_seed(0)
    ref = nn.MultiheadAttention(E, H, **kw).eval()
    ours = MultiheadAttention.from_reference(ref, impl=impl)
    assert ours.state_dict().keys() == ref.state_dict().keys()
    bf = kw.get("batch_first", False)
    shape = (lambda n, d: (B, n, d)) if bf else (lambda n, d: (n, B, d))
    q = torch.randn(shape(L, E))
    k = torch.randn(shape(S, kw.get("kdim", E)))
    v = torch.randn(shape(S, kw.get("vdim", E)))
    pad, float_mask = _padding(B, S), torch.randn(L, S)

    out, w = ours(q, k, v, key_padding_mask=pad, attn_mask=float_mask)
    ref_out, ref_w = ref(q, k, v, key_padding_mask=pad, attn_mask=float_mask)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-5)  # fp32, the brief's tolerance
    torch.testing.assert_close(w, ref_w, rtol=0, atol=1e-5)  # head-averaged weights (B, L, S)
    (out.square().sum() + w.square().sum()).backward()  # weights rows sum to 1: square them
    (ref_out.square().sum() + ref_w.square().sum()).backward()
    _assert_grads_equal(ours, ref)


@pytest.mark.parametrize("impl", ["manual", "sdpa"])
def test_multihead_attention_masks_per_head_and_unaveraged_weights(impl: str) -> None:
    torch.manual_seed(1)
    ref = nn.MultiheadAttention(E, H, batch_first=True).eval()
    ours = MultiheadAttention.from_reference(ref, impl=impl)
    q, kv = torch.randn(B, L, E), torch.randn(B, S, E)
    bool_mask = torch.rand(B * H, L, S) > 0.7  # True = may not attend, per head
    bool_mask[..., 0] = False  # every row keeps one key
    out, w = ours(q, kv, kv, attn_mask=bool_mask, average_attn_weights=False)
    ref_out, ref_w = ref(q, kv, kv, attn_mask=bool_mask, average_attn_weights=False)
    assert w.shape == (B, H, L, S)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-5)
    torch.testing.assert_close(w, ref_w, rtol=0, atol=1e-5)
    assert (w[bool_mask.view(B, H, L, S)] == 0).all()


def test_multihead_attention_unbatched_and_causal() -> None:
    torch.manual_seed(2)
    ref = nn.MultiheadAttention(E, H).eval()
    ours = MultiheadAttention.from_reference(ref, impl="manual")
    x = torch.randn(L, E)  # unbatched (L, E)
    mask = causal_mask(L)
    out, w = ours(x, x, x, attn_mask=mask, is_causal=True)
    ref_out, ref_w = ref(x, x, x, attn_mask=mask, is_causal=True)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-5)
    torch.testing.assert_close(w, ref_w, rtol=0, atol=1e-5)
    # is_causal without a mask builds the same mask
    out2, _ = ours(x, x, x, is_causal=True)
    torch.testing.assert_close(out2, ref_out, rtol=0, atol=1e-5)
    assert torch.all(w.triu(1) == 0)


def _mask_inputs(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "q": torch.randn(B, L, E, generator=g, requires_grad=True),
        "kv": torch.randn(B, S, E, generator=g, requires_grad=True),
        "float_mask": torch.randn(L, S, generator=g),
    }


@pytest.mark.parametrize("masks", ["none", "causal", "causal+padding", "padding+float", "per_head_bool"])
def test_manual_and_sdpa_equal_forward_and_grad(masks: str) -> None:
    torch.manual_seed(3)
    manual = MultiheadAttention(E, H, batch_first=True, impl="manual")
    sdpa = MultiheadAttention(E, H, batch_first=True, impl="sdpa")
    sdpa.load_state_dict(manual.state_dict())
    kw: dict = {}
    same_length = masks.startswith("causal")
    t = _mask_inputs(4)
    q = t["q"]
    kv = q if same_length else t["kv"]
    n = L if same_length else S
    if "causal" in masks:
        kw["is_causal"] = True
    if "padding" in masks:
        kw["key_padding_mask"] = _padding(B, n)
    if "float" in masks:
        kw["attn_mask"] = t["float_mask"]
    if masks == "per_head_bool":
        m = torch.rand(B * H, L, S, generator=torch.Generator().manual_seed(5)) > 0.5
        m[..., -1] = False
        kw["attn_mask"] = m
    outs, grads = [], []
    for layer in (manual, sdpa):
        q.grad = None
        out, w = layer(q, kv, kv, need_weights=True, **kw)
        (out.square().sum() + w.square().sum()).backward()  # weights rows sum to 1: square them
        outs.append((out, w))
        grads.append({**_grads(layer), "query": q.grad.clone()})
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=0, atol=1e-5)  # fp32: kernels sum in another order
    torch.testing.assert_close(outs[0][1], outs[1][1], rtol=0, atol=1e-6)  # weights: same formula both paths
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-5, msg=name)


def test_attention_function_paths_agree_with_causal_flag() -> None:
    g = torch.Generator().manual_seed(6)
    q, k, v = (torch.randn(2, H, L, 8, generator=g) for _ in range(3))
    manual, w = attention(q, k, v, is_causal=True, impl="manual")
    fused, none = attention(q, k, v, is_causal=True, impl="sdpa")
    assert none is None and w.shape == (2, H, L, L)
    torch.testing.assert_close(manual, fused, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="impl"):
        attention(q, k, v, impl="flash")  # type: ignore[arg-type]


LAYER_CASES = {
    "post_ln_relu": {},
    "pre_ln_gelu_batch_first": {"norm_first": True, "activation": "gelu", "batch_first": True},
    "no_bias_eps": {"bias": False, "layer_norm_eps": 1e-6, "batch_first": True},
}


@pytest.mark.parametrize("impl", ["manual", "sdpa"])
@pytest.mark.parametrize("case", LAYER_CASES)
def test_encoder_layer_matches_torch(case: str, impl: str) -> None:
    kw = LAYER_CASES[case]
    torch.manual_seed(7)
    ref = nn.TransformerEncoderLayer(E, H, dim_feedforward=32, **kw).eval()
    ours = TransformerEncoderLayer.from_reference(ref, impl=impl)
    assert ours.state_dict().keys() == ref.state_dict().keys()
    bf = kw.get("batch_first", False)
    x = torch.randn((B, S, E) if bf else (S, B, E))
    pad = _padding(B, S)
    # grad is enabled, so torch takes its ordinary (not the fused inference) path
    out = ours(x, src_key_padding_mask=pad)
    ref_out = ref(x, src_key_padding_mask=pad)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-5)
    out.square().sum().backward()
    ref_out.square().sum().backward()
    _assert_grads_equal(ours, ref)


@pytest.mark.parametrize("impl", ["manual", "sdpa"])
@pytest.mark.parametrize("case", LAYER_CASES)
def test_decoder_layer_matches_torch(case: str, impl: str) -> None:
    kw = LAYER_CASES[case]
    torch.manual_seed(8)
    ref = nn.TransformerDecoderLayer(E, H, dim_feedforward=32, **kw).eval()
    ours = TransformerDecoderLayer.from_reference(ref, impl=impl)
    assert ours.state_dict().keys() == ref.state_dict().keys()
    bf = kw.get("batch_first", False)
    tgt = torch.randn((B, L, E) if bf else (L, B, E))
    mem = torch.randn((B, S, E) if bf else (S, B, E))
    masks = {
        "tgt_mask": causal_mask(L),
        "tgt_is_causal": True,
        "tgt_key_padding_mask": _padding(B, L),
        "memory_key_padding_mask": _padding(B, S),
    }
    out = ours(tgt, mem, **masks)
    ref_out = ref(tgt, mem, **masks)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-5)
    out.square().sum().backward()
    ref_out.square().sum().backward()
    _assert_grads_equal(ours, ref)


def test_layers_in_train_mode_use_dropout() -> None:
    torch.manual_seed(9)
    layer = TransformerEncoderLayer(E, H, 32, dropout=0.5, batch_first=True).train()
    x = torch.randn(B, S, E)
    assert not torch.allclose(layer(x), layer(x))
    layer.eval()
    torch.testing.assert_close(layer(x), layer(x), rtol=0, atol=0)


def test_errors_name_what_was_expected() -> None:
    mha = MultiheadAttention(E, H, batch_first=True)
    with pytest.raises(ShapeError, match=r"expects query \(B, L, E\).*got \(2, 3, 5\)"):
        mha(torch.randn(2, 3, 5), torch.randn(2, 3, E), torch.randn(2, 3, E))
    with pytest.raises(ShapeError, match="key_padding_mask"):
        x = torch.randn(2, 3, E)
        mha(x, x, x, key_padding_mask=torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ShapeError, match="attn_mask"):
        x = torch.randn(2, 3, E)
        mha(x, x, x, attn_mask=torch.zeros(4, 4))
    with pytest.raises(ValueError, match="divisible"):
        MultiheadAttention(10, 3)
    with pytest.raises(ValueError, match="impl"):
        TransformerEncoderLayer(E, H, impl="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="activation"):
        TransformerDecoderLayer(E, H, activation="swish")
    with pytest.raises(TypeError, match="expects torch.nn.TransformerEncoderLayer"):
        TransformerEncoderLayer.from_reference(nn.TransformerDecoderLayer(E, H))
