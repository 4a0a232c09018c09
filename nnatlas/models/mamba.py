"""Mamba: a language model built from selective state spaces (Gu & Dao, 2023).

Albert Gu and Tri Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces",
arXiv:2312.00752, 2023. Layout and parameter names follow the reference implementation
(state-spaces/mamba, ``MambaLMHeadModel``), so its checkpoints map key for key once the
``backbone.`` prefix is dropped.

Letters: B batch, L sequence length, D d_model, I d_inner = expand * D, N d_state,
R dt_rank, K d_conv, V vocabulary. In code the paper's selective matrices keep their names
``B`` and ``C``; the batch size is then called ``batch``.

    ids (B, L) int64
    embedding                                   (B, L, D)
    n_layer x MambaBlock: h = h + mixer(norm(h))  (B, L, D)   pre-norm residual, RMSNorm
    norm_f (RMSNorm)                            (B, L, D)
    lm_head, tied to the embedding              (B, L, V)

    MambaMixer (one layer)
    in_proj               (B, L, D) -> (B, L, 2I), split into x and z, each (B, I, L)
    conv1d + SiLU         depthwise, kernel K, padding K - 1 trimmed to the first L: causal
    x_proj                (B, L, I) -> delta (B, L, R), B (B, L, N), C (B, L, N)
    dt_proj + softplus    delta (B, I, L), positive step sizes
    selective scan        h_t = exp(delta_t A) h_{t-1} + delta_t B_t x_t    (B, I, N) per step
                          y_t = C_t . h_t + D x_t                          (B, I, L)
    gate                  y * SiLU(z)
    out_proj              (B, L, I) -> (B, L, D)

A = -exp(A_log) is (I, N) with A_log initialised to log(1..N) (S4D-Real); D is a learned skip.
The selective scan has two paths chosen by ``scan``: ``"sequential"`` is the recurrence
step by step with the semantics of state-spaces' ``selective_scan_ref``; ``"parallel"`` is
a chunked two-level scan in torch ops (about 3 sqrt(L) Python steps instead of L). They
are tested equal in forward and gradients. On CPU (benchmarks/bench_scan.py, L = 1024) the
parallel scan is 1.3-3x faster in the forward pass and 20-90x in forward + backward: the
reference's backward is quadratic in L, since autograd writes a full-size gradient for
every per-step slice of deltaA and deltaB_u.

The seeds only name Mamba (seed 003); this is the paper's architecture. mamba_130m:
24 layers, D = 768, N = 16, K = 4, expand 2, R = 48, V = 50,277 padded to a multiple of 8
(50,280), 129,135,360 parameters with the head tied.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nnatlas.config import check_fields
from nnatlas.errors import ConfigError, ShapeError, check_input
from nnatlas.nn import RMSNorm
from nnatlas.registry import ModelCard, Paper, Seed, configure, register_model, register_reference, transfer_state

__all__ = ["MambaConfig", "selective_scan", "MambaMixer", "MambaBlock", "Mamba", "mamba_130m", "mamba_tiny"]

MAMBA_PAPER = Paper(
    authors="Albert Gu, Tri Dao",
    title="Mamba: Linear-Time Sequence Modeling with Selective State Spaces",
    venue="arXiv:2312.00752 (COLM 2024)",
    year=2023,
    link="https://arxiv.org/abs/2312.00752",
)

SCANS = ("parallel", "sequential")


@dataclass(frozen=True)
class MambaConfig:
    """Sizes of a Mamba language model; defaults are mamba-130m."""

    vocab_size: int = 50280  # 50,277 GPT-NeoX tokens padded to a multiple of 8
    d_model: int = 768
    n_layer: int = 24
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: int = 48  # ceil(d_model / 16) in the reference
    norm_eps: float = 1e-5
    dt_min: float = 0.001  # initial step sizes are log-uniform in [dt_min, dt_max]
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4
    conv_bias: bool = True
    bias: bool = False  # in_proj and out_proj
    tie_embeddings: bool = True
    scan: str = "parallel"  # or "sequential"

    def __post_init__(self) -> None:
        check_fields(self)
        if not self.norm_eps > 0:
            raise ConfigError(f"MambaConfig.norm_eps must be > 0; got {self.norm_eps!r}")
        if not 0 < self.dt_min <= self.dt_max:
            raise ConfigError(f"MambaConfig needs 0 < dt_min <= dt_max; got dt_min={self.dt_min}, dt_max={self.dt_max}")
        if not self.dt_init_floor > 0:
            raise ConfigError(f"MambaConfig.dt_init_floor must be > 0; got {self.dt_init_floor!r}")
        if self.scan not in SCANS:
            raise ConfigError(f"MambaConfig.scan must be one of {SCANS}; got {self.scan!r}")

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model


# --- the selective scan ----------------------------------------------------------------


def _scan_sequential(deltaA: torch.Tensor, deltaB_u: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """y_t = C_t . h_t with h_t = deltaA_t * h_{t-1} + deltaB_u_t, one step at a time.

    deltaA, deltaB_u: (B, I, L, N); C: (B, N, L) -> y (B, I, L). As ``selective_scan_ref``.
    """
    batch, dim, length, dstate = deltaA.shape
    h = deltaA.new_zeros(batch, dim, dstate)  # (B, I, N), h_{-1} = 0
    ys = []
    for t in range(length):
        h = deltaA[:, :, t] * h + deltaB_u[:, :, t]  # (B, I, N)
        ys.append(torch.einsum("bdn,bn->bd", h, C[:, :, t]))  # (B, I)
    return torch.stack(ys, dim=2)  # (B, I, L)


def _scan_chunked(
    delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, u: torch.Tensor, chunk_size: int | None
) -> torch.Tensor:
    """The same recurrence as a two-level scan over chunks of length c (default ~sqrt(L)).

    Splits time into L/c chunks and works on all chunks at once, time-major, so each step
    reads contiguous (L/c, B, I, N) blocks; exp(delta A) and delta B u are formed one step at
    a time, never for the whole sequence:
    1. inside every chunk, scan from a zero state: local states s_t, their outputs C_t . s_t,
       and the running products of decays P_t = prod_{s <= t in the chunk} exp(delta_s A);
    2. across chunks, carry the state entering each chunk: H_k = P_last H_{k-1} + s_last;
    3. add what the carried state contributes: y_t += C_t . (P_t * H_k). Exact, since the
       recurrence is linear in h; decays multiply in (0, 1], so nothing overflows (as a
       log-space cumsum can).
    About 2c + L/c Python steps instead of L. delta, u: (B, I, L); A: (I, N); B, C: (B, N, L)
    -> y (B, I, L).
    """
    batch, dim, length = u.shape
    c = chunk_size or max(1, math.isqrt(length))
    pad = (-length) % c  # padded steps (delta = 0: decay 1, input 0) come after every real one
    n_chunks = (length + pad) // c

    def chunked(t: torch.Tensor) -> torch.Tensor:  # (B, X, L) -> (L/c, c, B, X), time-major
        return F.pad(t, (0, pad)).permute(2, 0, 1).reshape(n_chunks, c, batch, t.shape[1])

    dt = chunked(delta)  # (L/c, c, B, I)
    du = chunked(delta * u)  # (L/c, c, B, I)
    B_, C_ = chunked(B), chunked(C)  # (L/c, c, B, N)

    s = u.new_zeros(n_chunks, batch, dim, A.shape[1])  # (L/c, B, I, N): local state, zero at each chunk start
    P = torch.ones_like(s)  # running product of decays
    y_local, decays = [], []
    for j in range(c):
        a = torch.exp(dt[:, j, :, :, None] * A)  # (L/c, B, I, N): exp(delta A)
        s = a * s + du[:, j, :, :, None] * B_[:, j, :, None, :]  # + delta B u
        P = P * a
        decays.append(P)
        y_local.append(torch.einsum("kbdn,kbn->kbd", s, C_[:, j]))  # (L/c, B, I)

    carry = [s.new_zeros(s.shape[1:])]  # (B, I, N): the state entering chunk 0
    for k in range(n_chunks - 1):
        carry.append(P[k] * carry[-1] + s[k])  # P and s now hold each chunk's last step
    H = torch.stack(carry)  # (L/c, B, I, N)

    y_carry = [torch.einsum("kbdn,kbn->kbd", decays[j] * H, C_[:, j]) for j in range(c)]  # (L/c, B, I) each
    y = torch.stack(y_local, dim=1) + torch.stack(y_carry, dim=1)  # (L/c, c, B, I)
    return y.reshape(n_chunks * c, batch, dim)[:length].permute(1, 2, 0)  # (B, I, L)


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    *,
    scan: str = "parallel",
    chunk_size: int | None = None,
) -> torch.Tensor:
    """The selective SSM (paper Algorithm 2), with the signature of ``selective_scan_ref``.

    u, delta, z: (B, I, L); A: (I, N); B, C: (B, N, L); D, delta_bias: (I,) -> y (B, I, L).
    ``scan="sequential"`` steps through L; ``"parallel"`` runs the chunked scan
    (``chunk_size`` defaults to about sqrt(L)).
    """
    if scan not in SCANS:
        raise ValueError(f"selective_scan: scan must be one of {SCANS}; got {scan!r}")
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]  # (B, I, L)
    if delta_softplus:
        delta = F.softplus(delta)
    if scan == "sequential":  # selective_scan_ref, line by line
        deltaA = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))  # (B, I, L, N): A_bar = exp(delta A), eq. 4 (ZOH)
        deltaB_u = torch.einsum("bdl,bnl,bdl->bdln", delta, B, u)  # (B, I, L, N): B_bar x = delta B x (simplified)
        y = _scan_sequential(deltaA, deltaB_u, C)  # (B, I, L)
    else:  # the same discretisation, laid out time-major
        y = _scan_chunked(delta, A, B, C, u, chunk_size)  # (B, I, L)
    if D is not None:
        y = y + u * D[:, None]  # skip connection D x
    if z is not None:
        y = y * F.silu(z)  # gate
    return y


# --- layers, leaf to root --------------------------------------------------------------


class MambaMixer(nn.Module):
    """One Mamba mixer: projections, causal conv, selective scan, gate (paper Figure 3)."""

    def __init__(
        self,
        d_model: int,
        d_inner: int,
        d_state: int,
        d_conv: int,
        dt_rank: int,
        *,
        conv_bias: bool = True,
        bias: bool = False,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        scan: str = "parallel",
    ) -> None:
        super().__init__()
        if scan not in SCANS:
            raise ValueError(f"MambaMixer: scan must be one of {SCANS}; got {scan!r}")
        self.d_state, self.dt_rank, self.scan = d_state, dt_rank, scan
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=bias)  # x and z
        self.conv1d = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1, bias=conv_bias)
        self.x_proj = nn.Linear(d_inner, dt_rank + 2 * d_state, bias=False)  # delta (low rank), B, C
        self.dt_proj = nn.Linear(dt_rank, d_inner, bias=True)
        A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(d_inner, 1)  # (I, N): S4D-Real, A_n = -n
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(d_inner))
        self.out_proj = nn.Linear(d_inner, d_model, bias=bias)

        # delta starts log-uniform in [dt_min, dt_max]: dt_proj's bias is softplus^-1 of it
        with torch.no_grad():
            nn.init.uniform_(self.dt_proj.weight, -(dt_rank**-0.5), dt_rank**-0.5)
            u = torch.rand(d_inner, device=self.dt_proj.bias.device)
            dt = torch.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=dt_init_floor)
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        self.dt_proj.bias._no_reinit = True  # type: ignore[attr-defined]  (Mamba._init_weights leaves it)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden (B, L, D) -> (B, L, D)."""
        batch, L, _ = hidden.shape
        xz = self.in_proj(hidden).transpose(1, 2)  # (B, 2I, L)
        x, z = xz.chunk(2, dim=1)  # (B, I, L) each
        x = F.silu(self.conv1d(x)[..., :L])  # (B, I, L): the first L outputs see no future step
        x_dbl = self.x_proj(x.transpose(1, 2))  # (B, L, R + 2N)
        dt, B, C = x_dbl.split([self.dt_rank, self.d_state, self.d_state], dim=-1)  # (B, L, R), (B, L, N) x2
        delta = self.dt_proj(dt).transpose(1, 2)  # (B, I, L), bias included; softplus in the scan
        A = -torch.exp(self.A_log.float())  # (I, N), negative: a decaying state
        y = selective_scan(
            x, delta, A, B.transpose(1, 2), C.transpose(1, 2), self.D.float(), z=z, delta_softplus=True, scan=self.scan
        )  # (B, I, L)
        return self.out_proj(y.transpose(1, 2))  # (B, L, D)


class MambaBlock(nn.Module):
    """Pre-norm residual block: h + mixer(RMSNorm(h))."""

    def __init__(self, d_model: int, mixer: MambaMixer, norm_eps: float) -> None:
        super().__init__()
        self.mixer = mixer
        self.norm = RMSNorm(d_model, eps=norm_eps)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """h (B, L, D) -> (B, L, D)."""
        return h + self.mixer(self.norm(h))


class Mamba(nn.Module):
    """A Mamba language model: token ids (B, L) -> next-token logits (B, L, V)."""

    def __init__(self, config: MambaConfig) -> None:
        super().__init__()
        self.config = c = config
        self.embedding = nn.Embedding(c.vocab_size, c.d_model)
        self.layers = nn.ModuleList(
            MambaBlock(
                c.d_model,
                MambaMixer(
                    c.d_model,
                    c.d_inner,
                    c.d_state,
                    c.d_conv,
                    c.dt_rank,
                    conv_bias=c.conv_bias,
                    bias=c.bias,
                    dt_min=c.dt_min,
                    dt_max=c.dt_max,
                    dt_init_floor=c.dt_init_floor,
                    scan=c.scan,
                ),
                c.norm_eps,
            )
            for _ in range(c.n_layer)
        )
        self.norm_f = RMSNorm(c.d_model, eps=c.norm_eps)
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        self._init_weights()
        if c.tie_embeddings:
            self.lm_head.weight = self.embedding.weight

    @torch.no_grad()
    def _init_weights(self) -> None:
        """state-spaces' ``_init_weights``: embedding N(0, 0.02), zero biases, and each
        out_proj scaled by 1/sqrt(n_layer) (GPT-2's rescaling of residual branches)."""
        nn.init.normal_(self.embedding.weight, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear) and module.bias is not None and not getattr(module.bias, "_no_reinit", False):
                nn.init.zeros_(module.bias)
        for layer in self.layers:
            w = layer.mixer.out_proj.weight
            nn.init.kaiming_uniform_(w, a=math.sqrt(5))
            w.div_(math.sqrt(self.config.n_layer))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, L) int64 token ids -> logits (B, L, V)."""
        check_input(ids, ("B", "L"), model="Mamba", name="token ids", dtype="int")
        V = self.config.vocab_size
        if ids.numel() and not ids.is_meta and (int(ids.min()) < 0 or int(ids.max()) >= V):
            raise ShapeError(
                f"Mamba expects token ids in [0, {V}); got ids in [{int(ids.min())}, {int(ids.max())}] "
                f"with shape {tuple(ids.shape)}"
            )
        h = self.embedding(ids)  # (B, L, D)
        for layer in self.layers:
            h = layer(h)  # (B, L, D)
        h = self.norm_f(h)  # (B, L, D)
        return self.lm_head(h)  # (B, L, V)


# --- variants --------------------------------------------------------------------------

_EXAMPLE_LENGTH = 8


def _token_ids(vocab_size: int) -> object:
    def example(batch_size: int, gen: torch.Generator) -> torch.Tensor:
        return torch.randint(0, vocab_size, (batch_size, _EXAMPLE_LENGTH), generator=gen)

    return example


_NOTES = (
    "Parameter names follow state-spaces/mamba (embedding, layers.N.mixer.{in_proj, conv1d, x_proj, dt_proj, "
    "A_log, D, out_proj}, layers.N.norm, norm_f, lm_head tied to the embedding); its checkpoints map after "
    "dropping the 'backbone.' prefix, Hugging Face's MambaForCausalLM through from_reference. "
    "The selective scan runs as a chunked parallel scan by default; scan='sequential' is the step-by-step "
    "reference (selective_scan_ref semantics). Seed 003 only names Mamba."
)

_TINY = MambaConfig(vocab_size=256, d_model=64, n_layer=2, d_state=8, d_conv=4, expand=2, dt_rank=4)


@register_model(
    "mamba_130m",
    card=ModelCard(
        name="mamba_130m",
        family="mamba",
        title="Mamba-130M",
        paper=MAMBA_PAPER,
        input_shape=(_EXAMPLE_LENGTH,),
        output_shape=(_EXAMPLE_LENGTH, 50280),
        task="language_model",
        published_params=129_135_360,
        seed=Seed("003_979c5363c5233b21.txt", "Mamba (named only)"),
        notes="24 layers, d_model 768, d_state 16, d_conv 4, expand 2, dt_rank 48, vocabulary 50,277 padded to "
        "50,280; 129,135,360 parameters with the tied head (state-spaces/mamba-130m). " + _NOTES,
        input_dtype="int",
    ),
    example_input=_token_ids(50280),
)
def mamba_130m(**overrides: object) -> Mamba:
    return Mamba(configure(MambaConfig(), overrides))


@register_model(
    "mamba_tiny",
    card=ModelCard(
        name="mamba_tiny",
        family="mamba",
        title="Mamba (tiny)",
        paper=MAMBA_PAPER,
        input_shape=(_EXAMPLE_LENGTH,),
        output_shape=(_EXAMPLE_LENGTH, _TINY.vocab_size),
        task="language_model",
        seed=Seed("003_979c5363c5233b21.txt", "Mamba (named only)"),
        notes="A small config for tests and quick training: byte vocabulary (256), 2 layers, d_model 64, "
        "d_state 8, dt_rank 4. " + _NOTES,
        input_dtype="int",
    ),
    example_input=_token_ids(_TINY.vocab_size),
)
def mamba_tiny(**overrides: object) -> Mamba:
    return Mamba(configure(_TINY, overrides))


@register_reference("mamba_130m", "mamba_tiny")
def _from_transformers(name: str, ref: nn.Module) -> Mamba:
    """Hugging Face ``MambaForCausalLM`` -> :class:`Mamba` with its weights."""
    if type(ref).__name__ != "MambaForCausalLM":
        raise TypeError(f"{name}: from_reference expects transformers' MambaForCausalLM; got {type(ref).__name__}")
    rc = ref.config
    config = configure(
        MambaConfig(),
        dict(
            vocab_size=rc.vocab_size,
            d_model=rc.hidden_size,
            n_layer=rc.num_hidden_layers,
            d_state=rc.state_size,
            d_conv=rc.conv_kernel,
            expand=rc.intermediate_size // rc.hidden_size,
            dt_rank=int(rc.time_step_rank),
            norm_eps=rc.layer_norm_epsilon,
            conv_bias=rc.use_conv_bias,
            bias=rc.use_bias,
            tie_embeddings=bool(rc.tie_word_embeddings),
        ),
    )
    if config.d_inner != rc.intermediate_size:
        raise ConfigError(f"{name}: intermediate_size {rc.intermediate_size} is not a multiple of hidden_size {rc.hidden_size}")
    p = next(ref.parameters())
    with torch.device(p.device):
        model = Mamba(config).to(p.dtype)

    def key(ours: str) -> str:
        if ours == "embedding.weight":
            return "backbone.embeddings.weight"
        if ours == "lm_head.weight":
            return "lm_head.weight"
        return "backbone." + ours  # layers.N.mixer.*, layers.N.norm.weight, norm_f.weight

    return transfer_state(model, ref.state_dict(), key, source="transformers MambaForCausalLM")
