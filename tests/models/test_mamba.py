"""Mamba: the parallel scan equals the sequential one (forward and gradients), the layout
and parameter count of state-spaces' mamba-130m, and equality with Hugging Face's Mamba."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

import nnatlas
from nnatlas.errors import ShapeError
from nnatlas.models.mamba import Mamba, MambaConfig, selective_scan


def _scan_inputs(batch: int, dim: int, length: int, dstate: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)

    def rand(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=g, dtype=dtype) * scale).requires_grad_()

    return dict(
        u=rand(batch, dim, length),
        delta=rand(batch, dim, length, scale=0.5),
        A=(-torch.rand(dim, dstate, generator=g, dtype=dtype) * 4 - 0.1).requires_grad_(),
        B=rand(batch, dstate, length),
        C=rand(batch, dstate, length),
        D=rand(dim),
        z=rand(batch, dim, length),
        delta_bias=rand(dim, scale=0.5),
    )


def _scan_ref_literal(u, delta, A, B, C, D, z, delta_bias):  # noqa: ANN001, ANN202
    """state-spaces/mamba's selective_scan_ref, written out independently of nnatlas."""
    delta = F.softplus(delta + delta_bias[..., None])
    deltaA = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))
    deltaB_u = torch.einsum("bdl,bnl,bdl->bdln", delta, B, u)
    x = A.new_zeros((u.shape[0], u.shape[1], A.shape[1]))
    ys = []
    for i in range(u.shape[2]):
        x = deltaA[:, :, i] * x + deltaB_u[:, :, i]
        ys.append(torch.einsum("bdn,bn->bd", x, C[:, :, i]))
    out = torch.stack(ys, dim=2) + u * D[:, None]
    return out * F.silu(z)


def _grads(inputs: dict[str, torch.Tensor], out: torch.Tensor, weight: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.autograd.grad((out * weight).sum(), list(inputs.values())))


def test_sequential_scan_is_selective_scan_ref() -> None:
    inputs = _scan_inputs(2, 5, 13, 3, torch.float64)
    ours = selective_scan(**inputs, delta_softplus=True, scan="sequential")
    torch.testing.assert_close(ours, _scan_ref_literal(**inputs), rtol=0, atol=1e-12)  # same ops, float64


@pytest.mark.parametrize(
    "length, chunk_size",
    [(1, None), (16, None), (37, None), (64, 8), (30, 1), (30, 30), (30, 64)],
)
def test_parallel_scan_equals_sequential_float64(length: int, chunk_size: int | None) -> None:
    inputs = _scan_inputs(2, 6, length, 4, torch.float64)
    seq = selective_scan(**inputs, delta_softplus=True, scan="sequential")
    par = selective_scan(**inputs, delta_softplus=True, scan="parallel", chunk_size=chunk_size)
    torch.testing.assert_close(par, seq, rtol=1e-10, atol=1e-10)  # same math, summed in another order
    weight = torch.randn(seq.shape, dtype=torch.float64)
    for g_par, g_seq in zip(_grads(inputs, par, weight), _grads(inputs, seq, weight)):
        torch.testing.assert_close(g_par, g_seq, rtol=1e-9, atol=1e-9)


def test_parallel_scan_equals_sequential_float32() -> None:
    inputs = _scan_inputs(2, 16, 100, 8, torch.float32)
    seq = selective_scan(**inputs, delta_softplus=True, scan="sequential")
    par = selective_scan(**inputs, delta_softplus=True, scan="parallel")
    torch.testing.assert_close(par, seq, rtol=1e-4, atol=1e-5)  # float32 rounding of a 100-step recurrence
    weight = torch.randn(seq.shape)
    for g_par, g_seq in zip(_grads(inputs, par, weight), _grads(inputs, seq, weight)):
        torch.testing.assert_close(g_par, g_seq, rtol=1e-4, atol=1e-4)


def test_parallel_scan_survives_strong_decay() -> None:
    """Large steps (delta * A down to about -2000 over the sequence) underflow decays to 0
    instead of overflowing, as a log-space cumsum would."""
    inputs = _scan_inputs(1, 4, 64, 4, torch.float32)
    with torch.no_grad():
        inputs["delta_bias"].fill_(8.0)  # softplus(8) ~ 8 per step
    seq = selective_scan(**inputs, delta_softplus=True, scan="sequential")
    par = selective_scan(**inputs, delta_softplus=True, scan="parallel")
    assert torch.isfinite(par).all()
    torch.testing.assert_close(par, seq, rtol=1e-4, atol=1e-5)


def test_unknown_scan_raises() -> None:
    with pytest.raises(ValueError, match="scan"):
        selective_scan(**_scan_inputs(1, 2, 3, 2, torch.float32), scan="fast")
    with pytest.raises(ValueError, match="scan"):
        nnatlas.create("mamba_tiny", scan="cuda")


def test_mamba_130m_layout_and_parameter_count() -> None:
    with torch.device("meta"):
        model = nnatlas.create("mamba_130m")
    n = sum(p.numel() for p in model.parameters())
    assert n == 129_135_360 == nnatlas.card("mamba_130m").published_params
    assert model.lm_head.weight is model.embedding.weight  # tied
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    # state-spaces/mamba-130m's checkpoint keys (without "backbone.") and shapes
    expected_layer = {
        "mixer.A_log": (1536, 16),
        "mixer.D": (1536,),
        "mixer.in_proj.weight": (3072, 768),
        "mixer.conv1d.weight": (1536, 1, 4),
        "mixer.conv1d.bias": (1536,),
        "mixer.x_proj.weight": (80, 1536),
        "mixer.dt_proj.weight": (1536, 48),
        "mixer.dt_proj.bias": (1536,),
        "mixer.out_proj.weight": (768, 1536),
        "norm.weight": (768,),
    }
    expected = {f"layers.{i}.{k}": s for i in range(24) for k, s in expected_layer.items()}
    expected.update({"embedding.weight": (50280, 768), "norm_f.weight": (768,), "lm_head.weight": (50280, 768)})
    assert shapes == expected


def test_mixer_initialisation() -> None:
    model = nnatlas.create("mamba_tiny")
    c = model.config
    mixer = model.layers[0].mixer
    torch.testing.assert_close(mixer.A_log, torch.log(torch.arange(1, c.d_state + 1.0)).repeat(c.d_inner, 1))
    torch.testing.assert_close(mixer.D, torch.ones(c.d_inner))
    dt = F.softplus(mixer.dt_proj.bias)  # initial step sizes, log-uniform in [dt_min, dt_max]
    assert dt.min() >= c.dt_min * (1 - 1e-4) and dt.max() <= c.dt_max * (1 + 1e-4)


def _tiny(scan: str) -> Mamba:
    torch.manual_seed(0)
    return Mamba(MambaConfig(vocab_size=50, d_model=16, n_layer=2, d_state=4, dt_rank=2, scan=scan)).eval()


def test_model_scans_agree_and_are_causal() -> None:
    seq, par = _tiny("sequential"), _tiny("parallel")
    par.load_state_dict(seq.state_dict())
    ids = torch.randint(0, 50, (2, 20))
    logits = seq(ids)
    torch.testing.assert_close(par(ids), logits, rtol=1e-5, atol=1e-5)  # float32, 20 steps
    changed = ids.clone()
    changed[:, 12] = (ids[:, 12] + 1) % 50
    out = par(changed)
    torch.testing.assert_close(out[:, :12], logits[:, :12], rtol=1e-5, atol=1e-5)  # the past does not see the future
    assert not torch.allclose(out[:, 12:], logits[:, 12:])


def test_bad_token_ids_raise() -> None:
    model = nnatlas.create("mamba_tiny")
    with pytest.raises(ShapeError, match=r"\[0, 256\)"):
        model(torch.tensor([[1, 256]]))
    with pytest.raises(ShapeError, match="expects token ids"):
        model(torch.zeros(2, 3))  # float, not ids


@pytest.mark.parametrize("scan", ["parallel", "sequential"])
def test_equals_transformers_mamba(scan: str) -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.MambaConfig(
        vocab_size=64, hidden_size=16, state_size=4, num_hidden_layers=2, time_step_rank=3, conv_kernel=4, expand=2
    )
    torch.manual_seed(0)
    ref = transformers.MambaForCausalLM(config).eval()
    with torch.no_grad():  # move every weight off its initial value so nothing matches by construction
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    converted = nnatlas.from_reference("mamba_tiny", ref)
    model = Mamba(dataclasses.replace(converted.config, scan=scan)).eval()
    model.load_state_dict(converted.state_dict())
    ids = torch.randint(0, 64, (2, 23))
    ref_logits = ref(ids).logits
    logits = model(ids)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-5)  # float32, different summation order
    ref_logits.square().sum().backward()
    logits.square().sum().backward()
    ours = model.layers[1].mixer
    theirs = ref.backbone.layers[1].mixer
    for name in ("A_log", "D"):
        torch.testing.assert_close(getattr(ours, name).grad, getattr(theirs, name).grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.x_proj.weight.grad, theirs.x_proj.weight.grad, rtol=1e-4, atol=1e-5)


def test_from_reference_rejects_other_modules() -> None:
    with pytest.raises(TypeError, match="MambaForCausalLM"):
        nnatlas.from_reference("mamba_tiny", torch.nn.Linear(2, 2))


def test_one_training_step_lowers_the_loss() -> None:
    model = _tiny("parallel").train()
    ids = torch.randint(0, 50, (4, 16))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        logits = model(ids[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, 50), ids[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1, losses
    assert losses[0] == pytest.approx(math.log(50), abs=0.3)  # near-uniform at initialisation


@pytest.mark.parametrize("scan", ["parallel", "sequential"])
def test_step_form_equals_forward(scan: str) -> None:
    """The recurrent form (prompt prefill, then one token at a time) gives the full forward's logits."""
    torch.manual_seed(0)
    model = Mamba(MambaConfig(vocab_size=50, d_model=16, n_layer=2, d_state=4, d_conv=4, expand=2, dt_rank=2,
                              scan=scan)).eval()
    ids = torch.randint(0, 50, (3, 14))
    with torch.no_grad():
        full = model(ids)  # (3, 14, V)
        state = model.init_state(3)
        logits, state = model.step(ids[:, :2], state)  # prompt shorter than the kernel (K - 1 = 3)
        rows = [logits]
        for t in range(2, 9):
            logits, state = model.step(ids[:, t : t + 1], state)
            rows.append(logits)
        logits, state = model.step(ids[:, 9:], state)  # a second multi-token chunk from a carried state
    torch.testing.assert_close(torch.stack(rows, 1), full[:, 1:9], rtol=1e-5, atol=1e-5)  # fp32 summation order
    torch.testing.assert_close(logits, full[:, -1], rtol=1e-5, atol=1e-5)


def test_chunked_scan_carries_initial_and_last_state() -> None:
    """Two halves scanned with the state carried equal one scan, forward and gradients (float64)."""
    inputs = _scan_inputs(2, 5, 20, 3, torch.float64)
    whole, last = selective_scan(**inputs, delta_softplus=True, return_last_state=True, chunk_size=4)
    first = {k: (v[..., :9] if v.dim() == 3 else v) for k, v in inputs.items()}  # u, delta, B, C, z: (.., L)
    second = {k: (v[..., 9:] if v.dim() == 3 else v) for k, v in inputs.items()}
    y1, h1 = selective_scan(**first, delta_softplus=True, return_last_state=True, chunk_size=4)
    y2, h2 = selective_scan(**second, delta_softplus=True, return_last_state=True, chunk_size=4, initial_state=h1)
    torch.testing.assert_close(torch.cat([y1, y2], -1), whole, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h2, last, rtol=1e-12, atol=1e-12)
    ref_y, ref_h = selective_scan(**inputs, delta_softplus=True, return_last_state=True, scan="sequential")
    torch.testing.assert_close(last, ref_h, rtol=1e-10, atol=1e-10)
    weight = torch.randn(whole.shape, dtype=torch.float64)
    loss = lambda y, h: (y * weight).sum() + h.square().sum()  # noqa: E731  gradients through the last state too
    g_split = torch.autograd.grad(loss(torch.cat([y1, y2], -1), h2), list(inputs.values()))
    g_ref = torch.autograd.grad(loss(ref_y, ref_h), list(inputs.values()))
    for a, b in zip(g_split, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_chunk_size_is_validated() -> None:
    inputs = _scan_inputs(1, 2, 5, 2, torch.float32)
    with pytest.raises(ValueError, match="chunk_size"):
        selective_scan(**inputs, chunk_size=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_parallel_path_softplus_equals_torch(dtype: torch.dtype) -> None:
    """The parallel path's softplus (vectorised exp and log) against F.softplus, values and gradients,
    from deep underflow through the linear range above 20."""
    from nnatlas.models.mamba import _Softplus

    x = torch.cat([torch.linspace(-120, 40, 4001, dtype=dtype), torch.tensor([-1e-8, 0.0, 1e-8, 20.0], dtype=dtype)])
    x.requires_grad_()
    ours, ref = _Softplus.apply(x), F.softplus(x)
    eps, tiny = torch.finfo(dtype).eps, torch.finfo(dtype).tiny
    torch.testing.assert_close(ours, ref, rtol=4 * eps, atol=tiny)  # a few ulps, relative down to the subnormals
    (g_ours,) = torch.autograd.grad(ours.sum(), x)
    (g_ref,) = torch.autograd.grad(ref.sum(), x)
    torch.testing.assert_close(g_ours, g_ref, rtol=4 * eps, atol=tiny)


@pytest.mark.parametrize("bias", [True, False])
def test_causal_conv_equals_torch_conv1d(bias: bool) -> None:
    """CausalConv1d (time-major, shifted multiply-adds) = nn.Conv1d(padding K - 1) trimmed to the first L outputs."""
    from nnatlas.models.mamba import CausalConv1d

    torch.manual_seed(0)
    ours = CausalConv1d(6, 4, bias=bias).double()
    ref = torch.nn.Conv1d(6, 6, 4, groups=6, padding=3, bias=bias).double()
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(2, 11, 6, dtype=torch.float64)  # (B, L, I)
    expected = ref(x.transpose(1, 2))[..., :11].transpose(1, 2)
    torch.testing.assert_close(ours(x), expected, rtol=1e-12, atol=1e-12)  # float64, sums in another order
