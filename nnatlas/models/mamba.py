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
    in_proj               (B, L, D) -> (B, L, 2I), split into x and z, each (B, L, I)
    conv1d + SiLU         depthwise, kernel K, causal (K - 1 zero steps before the first)
    x_proj                (B, L, I) -> delta (B, L, R), B (B, L, N), C (B, L, N)
    dt_proj + softplus    delta (B, I, L), positive step sizes
    selective scan        h_t = exp(delta_t A) h_{t-1} + delta_t B_t x_t    (B, I, N) per step
                          y_t = C_t . h_t + D x_t                          (B, I, L)
    gate                  y * SiLU(z)
    out_proj              (B, L, I) -> (B, L, D)

A = -exp(A_log) is (I, N) with A_log initialised to log(1..N) (S4D-Real); D is a learned skip.
The selective scan has two paths chosen by ``scan``: ``"sequential"`` is the recurrence
step by step with the semantics of state-spaces' ``selective_scan_ref`` (autograd through the
loop); ``"parallel"`` (the default) is a chunked scan with its own backward: time-major, the
state laid out (B, N, I) so that one fused in-place op per step runs over a contiguous block
with I innermost, exp(delta A) and delta B u formed one chunk (32 steps) at a time in buffers
reused chunk after chunk (they stay in cache), y = C . h one batched matmul per chunk, and a
reverse-time backward that recomputes each chunk from its entering state, so no (B, I, L, N)
tensor exists at any time (the reference holds several). Its softplus is computed from
vectorised exp and log (torch's CPU softplus is a scalar loop). They are tested equal in forward and gradients;
benchmarks/run.py times both (and transformers' MambaForCausalLM) at mamba-130m's size.

Generation: :meth:`Mamba.step` is the recurrent form (paper section 3.4): each layer carries
the last K - 1 convolution inputs and the SSM state h (B, I, N), so a token costs the same at
any position; :func:`nnatlas.models.generation.generate` drives it.

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
from nnatlas.nn.names import name
from nnatlas.registry import ModelCard, Paper, Recipe, Seed, configure, register_model, register_reference, transfer_state

__all__ = [
    "MambaConfig", "selective_scan", "CausalConv1d", "MambaMixer", "MambaBlock", "Mamba", "MambaState", "MambaLayerState",
    "mamba_130m", "mamba_tiny",
]

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


# the diagram's box for the scan, either path: eq. 2a/2b with A_bar = exp(Δ A), B_bar x = Δ B x (eq. 4)
_SCAN_FORMULA = "h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t x_t,  y_t = C_t h_t"


def _scan_sequential(
    deltaA: torch.Tensor, deltaB_u: torch.Tensor, C: torch.Tensor, h0: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """y_t = C_t . h_t with h_t = deltaA_t * h_{t-1} + deltaB_u_t, one step at a time.

    deltaA, deltaB_u: (B, I, L, N); C: (B, N, L); h0 (B, I, N) or None (zeros) -> y (B, I, L)
    and the last state h_{L-1} (B, I, N). As ``selective_scan_ref``.
    """
    batch, dim, length, dstate = deltaA.shape
    h = deltaA.new_zeros(batch, dim, dstate) if h0 is None else h0  # (B, I, N), h_{-1}
    ys = []
    for t in range(length):
        h = deltaA[:, :, t] * h + deltaB_u[:, :, t]  # (B, I, N)
        ys.append(torch.einsum("bdn,bn->bd", h, C[:, :, t]))  # (B, I)
    return torch.stack(ys, dim=2), h  # (B, I, L), (B, I, N)


def _chunk_states(
    dt: torch.Tensor, du: torch.Tensor, B: torch.Tensor, At: torch.Tensor, h: torch.Tensor,
    dA: torch.Tensor, hs: torch.Tensor,
) -> None:
    """The states of one chunk of c steps, time-major and state-major: dt, du = delta u (c, B, I),
    B (c, B, N), At = A transposed (N, I), h (B, N, I) the state before the chunk; fills the buffers
    dA with exp(delta A) (c, B, N, I) and hs with h_t (c, B, N, I).

    I is the innermost dimension (1536 at mamba-130m's size, N is 16), so every op runs long
    contiguous vectors; one fused in-place op per step writes h_t over delta B u."""
    torch.mul(dt[:, :, None, :], At, out=dA).exp_()  # A_bar = exp(delta A), eq. 4 (ZOH)
    torch.mul(du[:, :, None, :], B[:, :, :, None], out=hs)  # B_bar x = delta B x; becomes h_t in place
    hs[0].addcmul_(dA[0], h)
    for j in range(1, hs.shape[0]):
        hs[j].addcmul_(dA[j], hs[j - 1])  # h_t = A_bar_t h_{t-1} + B_bar_t x_t   (eq. 2a)


class _ChunkedScan(torch.autograd.Function):
    """The selective scan in chunks of c steps with its own backward, memory O(B I N (c + L/c)).

    Forward: for each chunk, exp(delta A) and delta B u of that chunk only, the recurrence one
    fused op per step, y_t = C_t . h_t as one batched matmul per chunk; the state entering each
    chunk is kept. Backward (reverse time, chunk by chunk): recompute the chunk's states from the
    kept one, then g_t = dL/dh_t = C_t dy_t + A_bar_{t+1} g_{t+1} (one fused op per step) and, over
    the chunk at once, dL/dA_bar_t = g_t h_{t-1}, dL/d(delta B u)_t = g_t, dL/dC_t = dy_t h_t. No
    (B, I, L, N) tensor is ever formed, where autograd through a step loop would keep one per step.
    Inputs are time-major: dt, u (L, B, I); A (I, N); B, C (L, B, N); h0 (B, I, N). Inside, states
    are (B, N, I) and the chunk's buffers are allocated once and reused, so they stay in cache.
    """

    @staticmethod
    def forward(ctx, dt, A, B, C, u, h0, chunk):  # noqa: ANN001, ANN205
        L, batch, dim = u.shape
        N = A.shape[1]
        c = min(chunk, L)
        At = A.t().contiguous()  # (N, I)
        du = dt * u  # (L, B, I)
        h = h0.transpose(1, 2).contiguous() if h0 is not None else u.new_zeros(batch, N, dim)  # (B, N, I)
        y = u.new_empty(L, batch, dim)
        dA_buf, hs_buf = u.new_empty(c, batch, N, dim), u.new_empty(c, batch, N, dim)
        starts = []
        for s0 in range(0, L, c):
            s1 = min(L, s0 + c)
            n = s1 - s0
            dA, hs = (dA_buf, hs_buf) if n == c else (dA_buf[:n], hs_buf[:n])  # whole buffers where they fit
            _chunk_states(dt[s0:s1], du[s0:s1], B[s0:s1], At, h, dA, hs)  # (n, B, N, I)
            starts.append(h)
            # y_t = C_t . h_t   (eq. 2b): (n B, 1, N) @ (n B, N, I)
            y[s0:s1] = torch.bmm(C[s0:s1].reshape(n * batch, 1, N), hs.view(n * batch, N, dim)).view(n, batch, dim)
            h = hs[n - 1].clone()  # a copy: the buffer is overwritten by the next chunk
        if any(ctx.needs_input_grad):
            ctx.save_for_backward(dt, A, B, C, u, *starts)
            ctx.chunk, ctx.has_h0 = c, h0 is not None
        return y, h.transpose(1, 2)  # (L, B, I), (B, I, N)

    @staticmethod
    def backward(ctx, dy, dh_last):  # noqa: ANN001, ANN205
        dt, A, B, C, u, *starts = ctx.saved_tensors
        dy = dy.contiguous()  # (L, B, I); autograd may hand it over in the caller's layout
        c = ctx.chunk
        L, batch, dim = u.shape
        N = A.shape[1]
        At = A.t().contiguous()  # (N, I)
        du = dt * u
        g_du, g_dt, g_B, g_C = torch.empty_like(u), torch.empty_like(u), torch.empty_like(B), torch.empty_like(C)
        g_At = torch.zeros_like(At)  # (N, I)
        dA_buf, hs_buf, g_buf = (u.new_empty(c, batch, N, dim) for _ in range(3))
        # dL/dh after the chunk, (B, N, I)
        carry = dh_last.transpose(1, 2).contiguous() if dh_last is not None else u.new_zeros(batch, N, dim)
        for k in reversed(range(len(starts))):
            s0 = k * c
            s1 = min(L, s0 + c)
            n = s1 - s0
            h = starts[k]
            dA, hs, g = (dA_buf, hs_buf, g_buf) if n == c else (dA_buf[:n], hs_buf[:n], g_buf[:n])
            _chunk_states(dt[s0:s1], du[s0:s1], B[s0:s1], At, h, dA, hs)  # recomputed: (n, B, N, I)
            dy_k = dy[s0:s1]  # (n, B, I)
            # dL/dC_t = h_t dy_t: (n B, N, I) @ (n B, I, 1)
            torch.bmm(hs.view(n * batch, N, dim), dy_k.reshape(n * batch, dim, 1), out=g_C[s0:s1].view(n * batch, N, 1))
            torch.mul(dy_k[:, :, None, :], C[s0:s1, :, :, None], out=g)  # (n, B, N, I): dL/dh_t through y_t
            g[n - 1].add_(carry)
            for j in range(n - 2, -1, -1):
                g[j].addcmul_(dA[j + 1], g[j + 1])  # g_t = C_t dy_t + A_bar_{t+1} g_{t+1}
            carry = dA[0] * g[0]  # into the state before the chunk
            # dL/d(delta B u)_t = B_t . g_t and dL/dB_t = g_t (delta u)_t, before g is reused below
            torch.bmm(B[s0:s1].reshape(n * batch, 1, N), g.view(n * batch, N, dim), out=g_du[s0:s1].view(n * batch, 1, dim))
            torch.bmm(g.view(n * batch, N, dim), du[s0:s1].reshape(n * batch, dim, 1), out=g_B[s0:s1].view(n * batch, N, 1))
            # dL/d(delta A)_t = g_t A_bar_t h_{t-1}, with h_{t-1} from the chunk (or its entering state): in g
            g.mul_(dA)
            g[1:].mul_(hs[:-1])
            g[0].mul_(h)
            g_At += torch.mul(g, dt[s0:s1, :, None, :], out=dA).sum((0, 1))  # dA is free now: (N, I)
            torch.sum(torch.mul(g, At, out=dA), 2, out=g_dt[s0:s1])  # (n, B, I): sum over N of . A
        g_dt += g_du * u  # du = delta u
        g_u = g_du * dt
        h0_grad = carry.transpose(1, 2) if ctx.has_h0 else None  # (B, I, N)
        return g_dt, g_At.t(), g_B, g_C, g_u, h0_grad, None


class _Softplus(torch.autograd.Function):
    """softplus(x) = log(1 + e^x) (linear above 20, as F.softplus) from vectorised exp and log.

    torch's CPU softplus and log1p run a scalar loop: 8-10 ms for mamba-130m's (512, 1536) step
    sizes against 3 ms here (torch's took 8 % of a forward pass). log1p(e) is log(u) for u = 1 + e rounded,
    less the rounding error of that sum to first order, ((u - 1) - e) / u, which keeps it accurate
    where e is below float precision (tested against F.softplus). Backward: sigmoid(x), 1 above 20."""

    @staticmethod
    def forward(ctx, x):  # noqa: ANN001, ANN205
        e = torch.exp(x)
        u = e + 1
        err = (u - 1).sub_(e).div_(u)  # the rounding error of 1 + e, relative
        out = torch.where(x > 20, x, u.log_().sub_(err))
        ctx.save_for_backward(x)
        return out

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        (x,) = ctx.saved_tensors
        return grad * torch.sigmoid(x).masked_fill_(x > 20, 1.0)  # 1 on the linear part, as F.softplus


def _scan_chunked(
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    u: torch.Tensor,
    chunk_size: int | None,
    h0: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same recurrence, chunked (:class:`_ChunkedScan`), time-major: delta, u (L, B, I);
    A (I, N); B, C (L, B, N); h0 (B, I, N) or None -> y (L, B, I) and the last state (B, I, N).

    Each step reads and writes contiguous (B, N, I) blocks; chunks of ``chunk_size`` steps
    (default 32) bound the memory and keep a chunk's buffers in cache."""
    dtype = torch.promote_types(u.dtype, A.dtype)
    c = lambda t: t.to(dtype).contiguous()  # noqa: E731
    h0 = c(h0) if h0 is not None else None
    return _ChunkedScan.apply(c(delta), c(A), c(B), c(C), c(u), h0, chunk_size or 32)


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
    return_last_state: bool = False,
    *,
    scan: str = "parallel",
    chunk_size: int | None = None,
    initial_state: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The selective SSM (paper Algorithm 2), with the signature of ``selective_scan_ref``.

    u, delta, z: (B, I, L); A: (I, N); B, C: (B, N, L); D, delta_bias: (I,) -> y (B, I, L), and
    with ``return_last_state`` also the last state h_{L-1} (B, I, N). ``initial_state`` (B, I, N)
    is h_{-1} (default zeros): a prompt continued from a state. ``scan="sequential"`` steps through
    L with autograd (the reference); ``"parallel"`` runs the chunked scan with its own backward
    (``chunk_size`` steps a chunk, default 32), vectorised over batch, channels and states.
    """
    if scan not in SCANS:
        raise ValueError(f"selective_scan: scan must be one of {SCANS}; got {scan!r}")
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"selective_scan: chunk_size must be an int >= 1 or None; got {chunk_size!r}")
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]  # (B, I, L)
    if scan == "sequential":  # selective_scan_ref, line by line
        if delta_softplus:
            delta = F.softplus(delta)
        deltaA = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))  # (B, I, L, N): A_bar = exp(delta A), eq. 4 (ZOH)
        deltaB_u = torch.einsum("bdl,bnl,bdl->bdln", delta, B, u)  # (B, I, L, N): B_bar x = delta B x (simplified)
        y, last = _scan_sequential(deltaA, deltaB_u, C, initial_state)  # (B, I, L), (B, I, N)
        y = name(y.to(u.dtype), "Y", _SCAN_FORMULA, desc="selective scan", dims="B I L")
        if D is not None:
            y = y + u * D[:, None]  # skip connection D x
        if z is not None:
            y = y * F.silu(z)  # gate
    else:  # the same discretisation, chunk by chunk, time-major: no copy where the caller's tensors are (B, L, X)
        tm = lambda t: t.permute(2, 0, 1)  # noqa: E731  (B, X, L) -> (L, B, X), a view
        delta = _Softplus.apply(tm(delta)) if delta_softplus else tm(delta)  # (L, B, I)
        u_tm = tm(u).contiguous()  # (L, B, I)
        y, last = _scan_chunked(delta, A, tm(B), tm(C), u_tm, chunk_size, initial_state)  # (L, B, I), (B, I, N)
        y = name(y.to(u.dtype).permute(1, 2, 0), "Y", _SCAN_FORMULA, desc="selective scan", dims="B I L")  # a view
        if D is not None:
            y = y + u_tm.permute(1, 2, 0) * D[:, None]  # skip connection D x, both operands laid out like y
        if z is not None:
            y = y * F.silu(z)  # gate
    return (y, last) if return_last_state else y


# --- layers, leaf to root --------------------------------------------------------------


class CausalConv1d(nn.Conv1d):
    """Mamba's depthwise causal convolution, time-major: x (B, L, I) -> (B, L, I) with
    out_t = b + sum_k w_k x_{t-K+1+k} (zeros before the first step): ``nn.Conv1d(I, I, K,
    groups=I, padding=K - 1)`` trimmed to its first L outputs, with the same parameters (weight
    (I, 1, K), bias (I,)), so checkpoints map unchanged. Computed as K shifted multiply-adds in
    the (B, L, I) layout the projections produce: a channels-first convolution needs two
    transposing copies around it, which at 2,048 tokens cost more than the scan's exp."""

    def __init__(self, channels: int, kernel_size: int, bias: bool = True) -> None:
        super().__init__(channels, channels, kernel_size, groups=channels, padding=kernel_size - 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, L, I) -> (B, L, I)."""
        L, K = x.shape[1], self.kernel_size[0]
        w = self.weight[:, 0, :]  # (I, K)
        xp = F.pad(x, (0, 0, K - 1, 0))  # (B, K - 1 + L, I): K - 1 zero steps before the first
        out = xp[:, K - 1 :] * w[:, K - 1]  # (B, L, I): w_{K-1} x_t
        for k in range(K - 1):
            out = out.addcmul_(xp[:, k : k + L], w[:, k])  # + w_k x_{t-K+1+k}
        return out if self.bias is None else out.add_(self.bias)


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
        self.conv1d = CausalConv1d(d_inner, d_conv, bias=conv_bias)  # time-major: (B, L, I) -> (B, L, I)
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

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden (B, L, D) -> (B, L, D)."""
        batch, L, _ = hidden.shape
        xz = self.in_proj(hidden)  # (B, L, 2I)
        x, z = xz.chunk(2, dim=-1)  # (B, L, I) each
        z = name(z.transpose(1, 2), "Z", desc="gate", dims="B I L")  # (B, I, L), a view
        x = F.silu(self.conv1d(x))  # (B, L, I): causal, no step sees a later one
        x = name(x.transpose(1, 2), "X", "SiLU(causal conv1d(x))", desc="input projection", dims="B I L")  # a view
        x_dbl = self.x_proj(x.transpose(1, 2))  # (B, L, R + 2N)
        dt, B, C = x_dbl.split([self.dt_rank, self.d_state, self.d_state], dim=-1)  # (B, L, R), (B, L, N) x2
        B, C = name(B, "B", dims="B L N"), name(C, "C", dims="B L N")  # input-dependent: the selection
        delta = self.dt_proj(dt).transpose(1, 2)  # (B, I, L), bias included; softplus in the scan
        delta = name(delta, "Δ", "X W_Δ (low rank)", desc="step size", dims="B I L")
        A = name(-torch.exp(self.A_log.float()), "A", "-exp(A_log)", dims="I N")  # (I, N), negative: a decaying state
        y = selective_scan(
            x, delta, A, B.transpose(1, 2), C.transpose(1, 2), self.D.float(), z=z, delta_softplus=True, scan=self.scan
        )  # (B, I, L)
        return self.out_proj(y.transpose(1, 2))  # (B, L, D)

    def step(self, hidden: torch.Tensor, state: MambaLayerState) -> torch.Tensor:
        """The recurrent form: hidden (B, t, D) the newest positions after those ``state`` holds ->
        (B, t, D), equal to :meth:`forward`'s last t rows; ``state`` is updated in place.

        The causal convolution reads the last K - 1 inputs from ``state.conv`` instead of zero
        padding, the scan starts from ``state.ssm``; one token costs O(I (K + N)) past the
        projections, whatever the length so far."""
        batch, t, _ = hidden.shape
        xz = self.in_proj(hidden).transpose(1, 2)  # (B, 2I, t)
        x, z = xz.chunk(2, dim=1)  # (B, I, t) each
        window = torch.cat([state.conv, x], dim=2)  # (B, I, K - 1 + t): the inputs the convolution sees
        state.conv = window[:, :, -state.conv.shape[2] :] if state.conv.shape[2] else state.conv  # last K - 1
        x = F.silu(F.conv1d(window, self.conv1d.weight, self.conv1d.bias, groups=x.shape[1]))  # (B, I, t)
        x_dbl = self.x_proj(x.transpose(1, 2))  # (B, t, R + 2N)
        dt, B, C = x_dbl.split([self.dt_rank, self.d_state, self.d_state], dim=-1)  # (B, t, R), (B, t, N) x2
        delta = F.softplus(self.dt_proj(dt)).transpose(1, 2)  # (B, I, t)
        A = -torch.exp(self.A_log.float())  # (I, N)
        if t == 1:  # one token: the recurrence once, (B, I, N)
            dA = torch.exp(delta[:, :, 0, None] * A)  # A_bar = exp(delta A)
            state.ssm = dA * state.ssm + (delta[:, :, 0] * x[:, :, 0])[..., None] * B[:, 0, None, :].float()
            y = (state.ssm @ C[:, 0, :, None].float()).to(x.dtype)  # (B, I, 1): C . h
            y = (y + x * self.D[:, None]) * F.silu(z)  # + D x, gate
        else:  # a prompt: the chunked scan from the carried state
            y, state.ssm = selective_scan(
                x, delta, A, B.transpose(1, 2), C.transpose(1, 2), self.D.float(), z=z, return_last_state=True,
                scan=self.scan, initial_state=state.ssm,
            )  # (B, I, t), (B, I, N)
        return self.out_proj(y.transpose(1, 2))  # (B, t, D)


@dataclass
class MambaLayerState:
    """One layer's recurrent state: the last K - 1 inputs of the causal convolution (B, I, K - 1)
    and the SSM state h (B, I, N)."""

    conv: torch.Tensor
    ssm: torch.Tensor


@dataclass
class MambaState:
    """What :meth:`Mamba.step` carries: one :class:`MambaLayerState` per layer. Its size does not
    grow with the sequence."""

    layers: list[MambaLayerState]

    def reorder(self, rows: torch.Tensor) -> None:
        for s in self.layers:
            s.conv, s.ssm = s.conv.index_select(0, rows), s.ssm.index_select(0, rows)


class MambaBlock(nn.Module):
    """Pre-norm residual block: h + mixer(RMSNorm(h))."""

    def __init__(self, d_model: int, mixer: MambaMixer, norm_eps: float) -> None:
        super().__init__()
        self.mixer = mixer
        self.norm = RMSNorm(d_model, eps=norm_eps)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """h (B, L, D) -> (B, L, D)."""
        return h + self.mixer(self.norm(h))

    def step(self, h: torch.Tensor, state: MambaLayerState) -> torch.Tensor:
        """h (B, t, D) the newest positions -> (B, t, D); ``state`` updated in place."""
        return h + self.mixer.step(self.norm(h), state)


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
        self.vocab_size, self.context_length = c.vocab_size, None  # the CausalLM protocol: no position limit
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
        dt_projs = {id(layer.mixer.dt_proj) for layer in self.layers}  # their biases hold the initial step sizes
        for module in self.modules():
            if isinstance(module, nn.Linear) and module.bias is not None and id(module) not in dt_projs:
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

    def init_state(self, batch_size: int) -> MambaState:
        """Zero states for ``batch_size`` sequences: what the model holds before the first token."""
        c, p = self.config, self.embedding.weight
        return MambaState([
            MambaLayerState(
                conv=torch.zeros(batch_size, c.d_inner, c.d_conv - 1, device=p.device, dtype=p.dtype),
                ssm=torch.zeros(batch_size, c.d_inner, c.d_state, device=p.device, dtype=torch.float32),
            )
            for _ in self.layers
        ])

    def step(self, ids: torch.Tensor, state: MambaState) -> tuple[torch.Tensor, MambaState]:
        """The newest token ids (B, t) (t > 1: a prompt) -> (logits of the last position (B, V), the
        state after them). Each token costs the same however long the sequence is."""
        check_input(ids, ("B", "L"), model="Mamba", name="token ids", dtype="int")
        h = self.embedding(ids)  # (B, t, D)
        for layer, layer_state in zip(self.layers, state.layers):
            h = layer.step(h, layer_state)  # (B, t, D)
        return self.lm_head(self.norm_f(h[:, -1])), state  # (B, V)


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
# nanoGPT's CPU recipe (the gpt_mini card's) for a character model on tinyshakespeare, at Mamba's usual
# higher rate; `nnatlas train` sets vocab_size to the data's 65 characters and reads windows of --context.
_CHAR_RECIPE = Recipe(optimizer="adamw", lr=2e-3, schedule="warmup_cosine", warmup=100, min_lr=2e-4, betas=(0.9, 0.99),
                      weight_decay=0.1, clip_grad=1.0, batch_size=12, steps=2000, eval_every=500,
                      source="nanoGPT's CPU run of train_shakespeare_char (gpt_mini's recipe), lr 2e-3")


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
        default_data="tinyshakespeare",
        recipe=_CHAR_RECIPE,
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
        default_data="tinyshakespeare",
        recipe=_CHAR_RECIPE,
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
