"""Every side-by-side comparison in one command: nnatlas against its reference, A/B alternating.

    .venv/bin/python benchmarks/run.py                         # the whole table, CPU, 5 rounds
    .venv/bin/python benchmarks/run.py --only generation mamba --repeats 7 --threads 2
    .venv/bin/python benchmarks/run.py --device cuda --amp     # the same on a GPU, bf16 autocast
    .venv/bin/python benchmarks/run.py --list

Each case times A (nnatlas, or the new path) and B (the reference, or the old path) on the same
weights and inputs, one untimed warm-up each, then ``--repeats`` rounds; a round runs A and B
back to back, in alternating order, so drift in the machine's load hits both (a call shorter
than half a second is repeated within a round and its mean taken). Reported per case:

- ratio: the median over rounds of A's time / B's time in that round (< 1: A is faster);
- min-ratio: A's best time / B's best time (the least noisy estimate on a loaded machine);
- noise: the larger relative spread (interquartile range / median) of A's and of B's times;
- check: what was verified before timing (tokens identical, outputs within a tolerance).

On a shared, loaded machine ``--threads 1 --clock cpu`` times each call by the CPU time of the
one thread doing the work, which other processes' scheduling does not inflate (cache and
memory-bandwidth contention still show).

"flat cost" cases time one long generation per round and compare the median per-token time of
its last 64 tokens (A) with its first 64 (B): 1.0 is a flat cost. Results go to
``--out`` (default ``benchmarks/results/<device>``): ``results.json`` (every time, the machine,
torch's threads, the load average) and ``results.md`` (the table, also printed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import nnatlas
from nnatlas import nn as atlas_nn
from nnatlas.nn.attention import KVCache

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("NNATLAS_SHARED", ROOT.parent / "shared")) / "data"


# --- the timing protocol -------------------------------------------------------------------


@dataclass
class Env:
    """What every case gets: the device, whether to autocast to bf16, the rounds to run."""

    device: torch.device
    amp: bool
    repeats: int
    quick: bool
    clock: Callable[[], float] = time.perf_counter  # or time.thread_time: CPU seconds of this thread
    mamba_lengths: tuple[int, ...] = (512, 2048)
    check_tokens: int = 0  # Mamba step: tokens compared with full recomputation (0: all generated)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def autocast(self) -> contextlib.AbstractContextManager:
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)


@dataclass
class Result:
    group: str
    name: str
    a: str
    b: str
    a_times: list[float]
    b_times: list[float]
    ratio: float
    min_ratio: float
    noise: float
    check: str
    unit: str = "s per call"
    notes: str = ""


def _spread(times: list[float]) -> float:
    """Interquartile range over the median (0 for fewer than 4 numbers' worth of spread)."""
    if len(times) < 2:
        return 0.0
    q = statistics.quantiles(times, n=4, method="inclusive")
    return (q[2] - q[0]) / statistics.median(times)


def _result(group: str, name: str, a: str, b: str, ta: list[float], tb: list[float], check: str, **kw) -> Result:
    ratios = [x / y for x, y in zip(ta, tb)]
    return Result(group, name, a, b, ta, tb, statistics.median(ratios), min(ta) / min(tb),
                  max(_spread(ta), _spread(tb)), check, **kw)


MIN_ROUND_S = 0.5  # a round of a fast case repeats its call until it lasts about this long


def ab(env: Env, run_a: Callable[[], object], run_b: Callable[[], object]) -> tuple[list[float], list[float]]:
    """Times of A and B over ``env.repeats`` rounds, alternating which goes first."""

    def timed(fn: Callable[[], object]) -> float:
        env.sync()
        start = env.clock()
        with env.autocast():
            fn()
        env.sync()
        return env.clock() - start

    # warm-up (first-call dispatch, allocator), which also sizes the rounds: calls shorter than
    # MIN_ROUND_S run k times a round and count as the mean, so a scheduler hiccup is diluted
    single = max(timed(run_a), timed(run_b), 1e-6)
    k = max(1, min(200, math.ceil(MIN_ROUND_S / single)))
    repeated = lambda fn: lambda: [fn() for _ in range(k)]  # noqa: E731
    ra, rb = (repeated(run_a), repeated(run_b)) if k > 1 else (run_a, run_b)
    ta, tb = [], []
    for r in range(env.repeats):
        if r % 2 == 0:
            ta.append(timed(ra) / k)
            tb.append(timed(rb) / k)
        else:
            tb.append(timed(rb) / k)
            ta.append(timed(ra) / k)
    return ta, tb


def _train_step(model: nn.Module, inputs: tuple, loss_fn: Callable[[object], torch.Tensor]) -> Callable[[], None]:
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)

    def run() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(*inputs)).backward()
        opt.step()

    return run


def _no_grad(fn: Callable[[], object]) -> Callable[[], object]:
    def run() -> object:
        with torch.no_grad():
            return fn()

    return run


# --- generation ----------------------------------------------------------------------------


def _unused_token(ids: torch.Tensor, vocab: int) -> int:
    """A token id that ``ids`` never holds: as EOS it keeps decoding going for max_len tokens."""
    seen = set(ids.flatten().tolist())
    return next(t for t in range(vocab - 1, -1, -1) if t not in seen)


def _torch_transformer_pair(env: Env, vocab: int) -> tuple[nn.ModuleDict, nn.Module]:
    c = nnatlas.create("transformer").config
    torch.manual_seed(0)
    t = nn.Transformer(c.d_model, c.num_heads, c.num_encoder_layers, c.num_decoder_layers, c.dim_feedforward,
                       dropout=c.dropout, batch_first=True)
    ref = nn.ModuleDict({"transformer": t, "embedding": nn.Embedding(vocab, c.d_model)}).to(env.device).eval()
    ours = nnatlas.from_reference("transformer", ref).eval()
    return ref, ours


def _torch_greedy(ref: nn.ModuleDict, src: torch.Tensor, max_len: int, bos: int, eos: int) -> torch.Tensor:
    """The plain torch.nn.Transformer greedy loop (PyTorch's translation tutorial): memory once,
    the decoder re-run over the whole prefix for every token, the last position projected."""
    from nnatlas.models.transformer import sinusoidal_positions

    t, emb = ref["transformer"], ref["embedding"]
    D = t.d_model

    def embed(ids: torch.Tensor) -> torch.Tensor:
        return emb(ids) * math.sqrt(D) + sinusoidal_positions(ids.shape[1], D, device=ids.device)

    memory = t.encoder(embed(src))
    ys = torch.full((src.shape[0], 1), bos, dtype=torch.long, device=src.device)
    done = torch.zeros(src.shape[0], dtype=torch.bool, device=src.device)
    for _ in range(max_len):
        mask = nn.Transformer.generate_square_subsequent_mask(ys.shape[1], device=src.device)
        out = t.decoder(embed(ys), memory, tgt_mask=mask, tgt_is_causal=True)
        nxt = F.linear(out[:, -1], emb.weight).argmax(-1).masked_fill(done, eos)
        ys = torch.cat([ys, nxt[:, None]], 1)
        done |= nxt == eos
        if done.all():
            break
    return ys


def case_transformer_greedy(env: Env) -> list[Result]:
    V = nnatlas.create("transformer").config.vocab_size
    ref, ours = _torch_transformer_pair(env, V)
    B, S, N = (2, 16, 16) if env.quick else (8, 32, 64)
    src = torch.randint(4, V, (B, S), generator=torch.Generator().manual_seed(0)).to(env.device)
    with torch.no_grad():
        probe = ours.generate(src, N, bos_id=1, eos_id=0)
        eos = _unused_token(probe, V)
        a = ours.generate(src, N, bos_id=1, eos_id=eos)
        b = _torch_greedy(ref, src, N, 1, eos)
    same = torch.equal(a, b)
    ta, tb = ab(env, _no_grad(lambda: ours.generate(src, N, bos_id=1, eos_id=eos)),
                _no_grad(lambda: _torch_greedy(ref, src, N, 1, eos)))
    return [_result("generation", f"transformer greedy {N} tokens (B {B}, S {S}, V {V})", "nnatlas cached",
                    "torch.nn.Transformer loop", ta, tb, f"tokens identical: {same}, {a.shape[1] - 1} tokens")]


def case_transformer_beam(env: Env) -> list[Result]:
    V = nnatlas.create("transformer").config.vocab_size
    _, ours = _torch_transformer_pair(env, V)
    B, S, N, K = (1, 8, 8, 4) if env.quick else (4, 32, 64, 4)
    src = torch.randint(4, V, (B, S), generator=torch.Generator().manual_seed(1)).to(env.device)
    with torch.no_grad():
        probe = ours.generate(src, N, bos_id=1, eos_id=0, beam_size=K)
        eos = _unused_token(probe, V)
        kw = dict(bos_id=1, eos_id=eos, beam_size=K, length_penalty=0.6)
        a = ours.generate(src, N, **kw)
        b = ours.generate(src, N, use_cache=False, **kw)
    ta, tb = ab(env, _no_grad(lambda: ours.generate(src, N, **kw)),
                _no_grad(lambda: ours.generate(src, N, use_cache=False, **kw)))
    return [_result("generation", f"transformer beam {K}, {N} tokens, lp 0.6 (B {B})", "cached", "no cache",
                    ta, tb, f"beams identical: {torch.equal(a, b)}, {a.shape[1] - 1} tokens")]


def _step_times(env: Env, model: nn.Module, prompt: torch.Tensor, n: int,
                init: Callable[[int], object] | None = None,
                step: Callable[[torch.Tensor, object], tuple[torch.Tensor, object]] | None = None,
                ) -> tuple[list[float], torch.Tensor]:
    """Greedy decoding through ``step(ids, state) -> (last logits (B, V), state)`` (default
    ``model.step``), timing every token (prefill excluded); ``init`` makes the empty state (default
    ``model.init_state``)."""
    times = []
    step = step or model.step
    with torch.no_grad(), env.autocast():
        state = (init or model.init_state)(prompt.shape[0])
        logits, state = step(prompt, state)
        ids = prompt
        for _ in range(n):
            nxt = logits.argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt], 1)
            env.sync()
            start = env.clock()
            logits, state = step(nxt, state)
            env.sync()
            times.append(env.clock() - start)
    return times, ids


def _flat_cost(env: Env, group: str, label: str, model: nn.Module, prompt: torch.Tensor, n: int, check: str) -> Result:
    _step_times(env, model, prompt, min(n, 16))  # warm-up
    ta, tb = [], []
    for _ in range(env.repeats):
        times, _ = _step_times(env, model, prompt, n)
        ta.append(statistics.median(times[-64:]))
        tb.append(statistics.median(times[:64]))
    return _result(group, label, "last 64 tokens", "first 64 tokens", ta, tb, check, unit="s per token")


class _ConcatCache(KVCache):
    """The cache most decoders write (nanoGPT-style loops, transformers' DynamicCache): torch.cat of the
    whole history with the new keys and values at every step. Compared with nnatlas's preallocated
    KVCache, which writes the new position in place and attends over a view."""

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        first = self.length == 0
        self.k = k if first else torch.cat([self.k, k], 2)
        self.v = v if first else torch.cat([self.v, v], 2)
        self.length += k.shape[2]
        return self.k, self.v


def case_gpt_flat(env: Env) -> list[Result]:
    N = 128 if env.quick else 512
    torch.manual_seed(0)
    model = nnatlas.create("gpt_shakespeare", context_length=N + 64).to(env.device).eval()
    prompt = torch.randint(0, 65, (1, 64), generator=torch.Generator().manual_seed(0)).to(env.device)
    from nnatlas.models.generation import generate
    from nnatlas.models.gpt import GPTState

    with torch.no_grad():
        same = torch.equal(generate(model, prompt, 64, temperature=0),
                           generate(model, prompt, 64, temperature=0, use_cache=False))
    # what a token reads: every weight once, and the cached keys and values of every layer (they grow)
    c = model.config
    weight_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 1e6
    kv_mb = lambda positions: 2 * c.num_layers * positions * c.d_model * 4 / 1e6  # noqa: E731  K and V, float32
    first, last = 64 + 32, 64 + N - 32  # the middle positions of the first and last 64 tokens
    expected = (weight_mb + kv_mb(last)) / (weight_mb + kv_mb(first))
    out = [_flat_cost(env, "generation", f"gpt_shakespeare (context {N + 64}) step cost over {N} tokens",
                      model, prompt, N, f"64 greedy tokens identical to recomputation: {same}; bytes read per "
                      f"token {weight_mb:.0f} MB of weights + K/V {kv_mb(first):.1f} -> {kv_mb(last):.1f} MB: "
                      f"{expected:.2f}x if memory-bound")]
    # the same last 64 tokens with a cache that concatenates: what preallocating saves
    concat = lambda batch: GPTState([_ConcatCache(batch, c.num_heads, c.d_model // c.num_heads, 1)  # noqa: E731
                                     for _ in range(c.num_layers)])
    with torch.no_grad():
        same_concat = torch.equal(_step_times(env, model, prompt, 64)[1], _step_times(env, model, prompt, 64, concat)[1])
    ta, tb = [], []
    for r in range(env.repeats):
        order = [(ta, None), (tb, concat)] if r % 2 == 0 else [(tb, concat), (ta, None)]
        for times, init in order:
            times.append(statistics.median(_step_times(env, model, prompt, N, init)[0][-64:]))
    out.append(_result("generation", f"gpt_shakespeare last 64 of {N} tokens: cache written in place vs torch.cat",
                       "preallocated KVCache", "concatenating cache", ta, tb,
                       f"64 greedy tokens identical: {same_concat}", unit="s per token"))
    model = nnatlas.create("gpt_shakespeare").to(env.device).eval()  # context 256, nanoGPT's baby GPT
    n = 64 if env.quick else 255
    start = prompt[:, :1]
    ta, tb = ab(env, lambda: generate(model, start, n, temperature=0),
                lambda: generate(model, start, n, temperature=0, use_cache=False))
    same = torch.equal(generate(model, start, n, temperature=0), generate(model, start, n, temperature=0,
                                                                           use_cache=False))
    out.append(_result("generation", f"gpt_shakespeare generate {n} tokens", "cached", "no cache (nanoGPT)",
                       ta, tb, f"tokens identical: {same}"))
    return out


def _hf_step(ref: nn.Module) -> Callable[[torch.Tensor, object], tuple[torch.Tensor, object]]:
    """transformers' decoding step with its own cache (past_key_values), in _step_times's form."""

    def step(ids: torch.Tensor, past: object) -> tuple[torch.Tensor, object]:
        out = ref(ids, past_key_values=past, use_cache=True)  # (its newest versions call it `cache`)
        return out.logits[:, -1], out.past_key_values

    return step


def case_gpt_transformers(env: Env) -> list[Result]:
    """The per-token cost of a long generation, nnatlas's GPT beside transformers' GPT-2 holding the same
    weights (gpt_shakespeare's sizes with GPT-2's biases and GELU): how each grows with the context, and
    nnatlas's time per token against transformers' at the start and at the end."""
    transformers = _optional("transformers")
    if transformers is None:
        return []
    from transformers.utils import logging

    logging.set_verbosity_error()
    warnings.filterwarnings("ignore", message=".*past_key_values.*is deprecated", category=FutureWarning)
    N = 128 if env.quick else 512
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=65, n_positions=N + 64, n_embd=384, n_layer=6, n_head=6,
                                     bos_token_id=0, eos_token_id=0)
    ref = transformers.GPT2LMHeadModel(config).to(env.device).eval()
    ours = nnatlas.from_reference("gpt_shakespeare", ref).eval()
    prompt = torch.randint(0, 65, (1, 64), generator=torch.Generator().manual_seed(0)).to(env.device)
    _step_times(env, ours, prompt, 16)  # warm-up
    hf = {"init": lambda batch: None, "step": _hf_step(ref)}  # no cache yet: transformers makes one
    _step_times(env, ref, prompt, 16, **hf)
    first, last = {"ours": [], "ref": []}, {"ours": [], "ref": []}
    same = True
    for r in range(env.repeats):
        for who in (("ours", "ref") if r % 2 == 0 else ("ref", "ours")):
            times, ids = _step_times(env, ours, prompt, N) if who == "ours" else _step_times(env, ref, prompt, N, **hf)
            first[who].append(statistics.median(times[:64]))
            last[who].append(statistics.median(times[-64:]))
            if who == "ours":
                ours_ids = ids
            else:
                same = same and torch.equal(ours_ids, ids)
    check = f"{N} greedy tokens identical to transformers' (same weights): {same}"
    size = f"gpt_shakespeare sizes + GPT-2 biases, context {N + 64}"
    return [
        _result("generation", f"transformers GPT2LMHeadModel ({size}) step cost over {N} tokens", "last 64 tokens",
                "first 64 tokens", last["ref"], first["ref"], check, unit="s per token"),
        _result("generation", f"nnatlas GPT ({size}) step cost over {N} tokens", "last 64 tokens",
                "first 64 tokens", last["ours"], first["ours"], check, unit="s per token"),
        _result("generation", f"per token, first 64 of {N}: nnatlas vs transformers", "nnatlas", "transformers",
                first["ours"], first["ref"], check, unit="s per token"),
        _result("generation", f"per token, last 64 of {N}: nnatlas vs transformers", "nnatlas", "transformers",
                last["ours"], last["ref"], check, unit="s per token"),
    ]


def case_mamba_step(env: Env) -> list[Result]:
    from nnatlas.models.generation import generate

    N = 64 if env.quick else 256
    torch.manual_seed(0)
    model = nnatlas.create("mamba_tiny" if env.quick else "mamba_130m").to(env.device).eval()
    V = model.vocab_size
    prompt = torch.randint(0, V, (1, 8), generator=torch.Generator().manual_seed(0)).to(env.device)
    n_check = min(N, env.check_tokens or N)
    with torch.no_grad():
        cached = generate(model, prompt, n_check, temperature=0)
        fresh = generate(model, prompt, n_check, temperature=0, use_cache=False)
    name = "mamba_tiny" if env.quick else "mamba_130m"
    return [_flat_cost(env, "generation", f"{name} step-mode cost over {N} tokens", model, prompt, N,
                       f"{n_check} greedy tokens identical to full recomputation: {torch.equal(cached, fresh)}")]


# --- Mamba's scan ----------------------------------------------------------------------------


def _set_scan(model: nn.Module, scan: str) -> None:
    for layer in model.layers:
        layer.mixer.scan = scan


def case_mamba_scan(env: Env) -> list[Result]:
    transformers = _optional("transformers")
    name = "mamba_tiny" if env.quick else "mamba_130m"
    lengths = (64,) if env.quick else env.mamba_lengths
    c = nnatlas.create(name).config
    out = []
    ours = hf = None
    if transformers is not None:
        hf_config = transformers.MambaConfig(
            vocab_size=c.vocab_size, hidden_size=c.d_model, state_size=c.d_state, num_hidden_layers=c.n_layer,
            conv_kernel=c.d_conv, expand=c.expand, time_step_rank=c.dt_rank, use_conv_bias=c.conv_bias,
            use_bias=c.bias, tie_word_embeddings=True,
        )
        torch.manual_seed(0)
        hf = transformers.MambaForCausalLM(hf_config).to(env.device).eval()
        ours = nnatlas.from_reference(name, hf).eval()
    else:
        ours = nnatlas.create(name).to(env.device).eval()
    for L in lengths:
        ids = torch.randint(0, c.vocab_size, (1, L), generator=torch.Generator().manual_seed(L)).to(env.device)
        with torch.no_grad():
            _set_scan(ours, "sequential")
            ref = ours(ids)
            _set_scan(ours, "parallel")
            fast = ours(ids)
        err = (fast - ref).abs().max().item()

        def run_scan(scan: str, ids: torch.Tensor = ids) -> Callable[[], object]:
            def run() -> object:
                _set_scan(ours, scan)
                with torch.no_grad():
                    return ours(ids)
            return run

        ta, tb = ab(env, run_scan("parallel"), run_scan("sequential"))
        out.append(_result("mamba", f"{name} forward B 1, L {L}", "chunked scan", "sequential scan", ta, tb,
                           f"max abs logit diff {err:.1e}"))
        if hf is not None:
            with torch.no_grad():
                err = (run_scan("parallel")() - hf(ids).logits).abs().max().item()
            ta, tb = ab(env, run_scan("parallel"), _no_grad(lambda ids=ids: hf(ids).logits))
            out.append(_result("mamba", f"{name} forward B 1, L {L}", "chunked scan",
                               "transformers MambaForCausalLM (torch path)", ta, tb, f"max abs logit diff {err:.1e}"))
    # the scan alone, forward + backward, at mamba-130m's width
    from nnatlas.models.mamba import selective_scan

    I, N, L = (64, 8, 64) if env.quick else (c.d_inner, c.d_state, 256)
    g = torch.Generator().manual_seed(0)
    leaf = lambda *s, scale=1.0: (torch.randn(*s, generator=g) * scale).to(env.device).requires_grad_()  # noqa: E731
    inputs = dict(u=leaf(1, I, L), delta=leaf(1, I, L, scale=0.5), A=(-torch.rand(I, N, generator=g) * N).to(
        env.device).requires_grad_(), B=leaf(1, N, L), C=leaf(1, N, L), D=leaf(I), z=leaf(1, I, L))

    def fb(scan: str) -> Callable[[], None]:
        return lambda: selective_scan(**inputs, delta_softplus=True, scan=scan).sum().backward()

    ta, tb = ab(env, fb("parallel"), fb("sequential"))
    out.append(_result("mamba", f"selective_scan forward+backward (I {I}, N {N}, L {L})", "chunked scan",
                       "sequential scan", ta, tb, "equal in tests/models/test_mamba.py"))
    return out


# --- graphs ----------------------------------------------------------------------------------


def _cora(env: Env) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, str]:
    """Cora (x, edge_index, y) from ../shared/data, or a random graph of Cora's size without it."""
    if (SHARED_DATA / "cora").is_dir():
        from nnatlas.data import load

        bundle = load("cora", data_dir=SHARED_DATA, download=False)
        m = bundle.meta
        return m["x"].float().to(env.device), m["edge_index"].to(env.device), m["y"].to(env.device), "Cora"
    g = torch.Generator().manual_seed(0)
    N, E = 2708, 5278
    src, dst = torch.randint(0, N, (2, E), generator=g)
    edge_index = torch.cat([torch.stack([src, dst]), torch.stack([dst, src])], 1)
    x = (torch.rand(N, 1433, generator=g) < 0.0127).float()
    return x.to(env.device), edge_index.to(env.device), torch.randint(0, 7, (N,), generator=g).to(env.device), \
        "random graph of Cora's size (../shared/data/cora absent)"


def case_gcn(env: Env) -> list[Result]:
    pyg = _optional("torch_geometric.nn")
    if pyg is None:
        return []
    x, edge_index, y, what = _cora(env)
    out = []
    for cached in (False, True):
        torch.manual_seed(0)
        ref = pyg.GCNConv(x.shape[1], 16, cached=cached).to(env.device)
        ours = atlas_nn.GCNConv.from_reference(ref)
        err = (ours(x, edge_index) - ref(x, edge_index)).abs().max().item()
        ta, tb = ab(env, lambda: ours(x, edge_index).sum().backward(), lambda: ref(x, edge_index).sum().backward())
        out.append(_result("graph", f"GCNConv(1433, 16) forward+backward, {what}, cached={cached}", "nnatlas",
                           "PyG", ta, tb, f"max abs diff {err:.1e}"))

    class PyGGCN(nn.Module):  # Kipf & Welling's model as PyG's example writes it
        def __init__(self, cached: bool) -> None:
            super().__init__()
            self.conv1 = pyg.GCNConv(x.shape[1], 16, cached=cached)
            self.conv2 = pyg.GCNConv(16, 7, cached=cached)

        def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
            h = F.relu(self.conv1(F.dropout(x, 0.5, self.training), edge_index))
            return self.conv2(F.dropout(h, 0.5, self.training), edge_index)

    # nnatlas train gcn hands features under 15 % non-zero (Cora: 1.3 %) to the model as CSR: dropout on the
    # stored values only and a sparse X W (Kipf & Welling's code); PyG's example drops out the dense matrix
    x_csr = x.to_sparse_csr()
    for cached in (False, True):
        for features, x_ours in (("dense", x), ("sparse CSR, as nnatlas train", x_csr)):
            torch.manual_seed(0)
            ref = PyGGCN(cached).to(env.device).train()
            ours = nnatlas.create("gcn", cached=cached).to(env.device).train()
            ours.conv1.load_state_dict(ref.conv1.state_dict())
            ours.conv2.load_state_dict(ref.conv2.state_dict())
            loss = lambda logits: F.cross_entropy(logits, y)  # noqa: E731
            ta, tb = ab(env, _train_step(ours, (x_ours, edge_index), loss), _train_step(ref, (x, edge_index), loss))
            name = f"gcn train step (2 layers, dropout 0.5), {what}, cached={cached}"
            out.append(_result("graph", name if features == "dense" else f"{name}, nnatlas x {features}", "nnatlas",
                               "PyG", ta, tb, "same weights; GCNConv equal in tests/nn/test_graph.py; sparse x = "
                               "dense x in eval in tests/models/test_gcn.py"))
    return out


# --- BERT ------------------------------------------------------------------------------------


def _bert_pair(env: Env, layers: int, hidden: int, heads: int, ffn: int, train: bool) -> tuple[nn.Module, nn.Module]:
    transformers = _optional("transformers")
    cfg = transformers.BertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                                  intermediate_size=ffn, attn_implementation="sdpa")
    torch.manual_seed(0)
    ref = transformers.BertModel(cfg).to(env.device).train(train)
    ours = nnatlas.from_reference("bert_base", ref).train(train)
    return ours, ref


def case_bert(env: Env) -> list[Result]:
    if _optional("transformers") is None:
        return []
    out = []
    B, T = (2, 32) if env.quick else (8, 128)
    size = (2, 128, 2, 512) if env.quick else (4, 512, 8, 2048)
    ids = torch.randint(0, 30522, (B, T), generator=torch.Generator().manual_seed(0)).to(env.device)
    mask = torch.ones(B, T, dtype=torch.long, device=env.device)
    mask[1:, T - T // 4:] = 0
    ours, ref = _bert_pair(env, *size, train=True)
    outputs = []
    for run in (lambda: ours(ids, mask)[0], lambda: ref(ids, attention_mask=mask).last_hidden_state):
        torch.manual_seed(0)  # the same dropout masks on both sides iff the same tensors are dropped in one order
        with torch.no_grad():
            outputs.append(run())
    err = (outputs[0] - outputs[1]).abs().max().item()
    ta, tb = ab(env, _train_step(ours, (ids, mask), lambda o: o[0].square().mean()),
                _train_step(ref, (ids, mask), lambda o: o.last_hidden_state.square().mean()))
    out.append(_result("bert", f"BERT train step (L {size[0]}, H {size[1]}, B {B}, T {T}, dropout 0.1)", "nnatlas",
                       "transformers", ta, tb, f"train mode, one seed: max abs diff {err:.1e}"))
    ours, ref = _bert_pair(env, *((2, 128, 2, 512) if env.quick else (12, 768, 12, 3072)), train=False)
    with torch.no_grad():
        err = (ours(ids, mask)[0] - ref(ids, attention_mask=mask).last_hidden_state).abs().max().item()
    ta, tb = ab(env, _no_grad(lambda: ours(ids, mask)), _no_grad(lambda: ref(ids, attention_mask=mask)))
    out.append(_result("bert", f"BERT{'' if env.quick else '-base'} inference (B {B}, T {T})", "nnatlas",
                       "transformers", ta, tb, f"max abs diff {err:.1e}"))
    return out


# --- what was at parity before (it must stay there) ------------------------------------------


def case_parity(env: Env) -> list[Result]:
    out = []
    torchvision = _optional("torchvision")
    if torchvision is not None:
        B, S = (2, 64) if env.quick else (8, 224)
        ref = torchvision.models.resnet18().to(env.device).train()
        ours = nnatlas.from_reference("resnet18", ref).train()
        x = torch.randn(B, 3, S, S, generator=torch.Generator().manual_seed(0)).to(env.device)
        loss = lambda o: o.sum()  # noqa: E731
        ta, tb = ab(env, _train_step(ours, (x,), loss), _train_step(ref, (x,), loss))
        out.append(_result("parity", f"resnet18 train step (B {B}, {S}x{S})", "nnatlas", "torchvision", ta, tb,
                           "same weights"))
        if not env.quick:
            ref = torchvision.models.vit_b_16().to(env.device).eval()
            ours = nnatlas.from_reference("vit_b_16", ref).eval()
            x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0)).to(env.device)
            ta, tb = ab(env, _no_grad(lambda: ours(x)), _no_grad(lambda: ref(x)))
            out.append(_result("parity", "vit_b_16 inference (B 2)", "nnatlas", "torchvision", ta, tb,
                               "same weights"))
    B, T, H = (4, 20, 64) if env.quick else (32, 100, 256)
    x = torch.randn(B, T, H, generator=torch.Generator().manual_seed(0)).to(env.device)
    for kind in ("LSTM", "GRU"):
        ref = getattr(nn, kind)(H, H, num_layers=2, batch_first=True).to(env.device)
        ours = getattr(atlas_nn, kind).from_reference(ref)
        ta, tb = ab(env, _no_grad(lambda: ours(x)), _no_grad(lambda: ref(x)))
        out.append(_result("parity", f"{kind} 2 layers forward (B {B}, T {T}, H {H})", "nnatlas", "torch.nn",
                           ta, tb, "same weights"))
    D = 64 if env.quick else 512
    ref = nn.TransformerEncoderLayer(D, 8, 4 * D, batch_first=True).to(env.device).train()
    ours = atlas_nn.TransformerEncoderLayer.from_reference(ref)
    x = torch.randn(8, 128, D, generator=torch.Generator().manual_seed(0)).to(env.device)
    ta, tb = ab(env, lambda: ours(x).sum().backward(), lambda: ref(x).sum().backward())
    out.append(_result("parity", f"TransformerEncoderLayer forward+backward (B 8, T 128, D {D})", "nnatlas",
                       "torch.nn", ta, tb, "same weights"))
    return out


# --- the table -------------------------------------------------------------------------------


def _optional(module: str):  # noqa: ANN202
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        return None


CASES: dict[str, Callable[[Env], list[Result]]] = {
    "generation.transformer_greedy": case_transformer_greedy,
    "generation.transformer_beam": case_transformer_beam,
    "generation.gpt": case_gpt_flat,
    "generation.gpt_transformers": case_gpt_transformers,
    "generation.mamba_step": case_mamba_step,
    "mamba.scan": case_mamba_scan,
    "graph.gcn": case_gcn,
    "bert": case_bert,
    "parity": case_parity,
}


def _fmt(seconds: float, unit: str) -> str:
    return f"{seconds * 1e3:.2f} ms" + (" /tok" if unit == "s per token" else "")


def markdown(results: list[Result], header: dict) -> str:
    lines = [
        f"Device {header['device']}, torch {header['torch']}, {header['threads']} threads, {header['clock']} clock, "
        f"{header['repeats']} rounds, "
        f"load average {header['load_before'][0]:.2f} before / {header['load_after'][0]:.2f} after.",
        "",
        "| group | case | A | B | A median | B median | ratio A/B | min-ratio | noise | check |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        lines.append(
            f"| {r.group} | {r.name} | {r.a} | {r.b} | {_fmt(statistics.median(r.a_times), r.unit)} | "
            f"{_fmt(statistics.median(r.b_times), r.unit)} | {r.ratio:.2f} | {r.min_ratio:.2f} | {r.noise:.0%} | "
            f"{r.check} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", default=None, help="run the cases whose key starts with one of these")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds per case (median over rounds)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", action="store_true", help="bf16 autocast around both A and B (CUDA)")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="wall: elapsed time; cpu: this thread's CPU time (needs --threads 1 on CPU), which a "
                   "loaded machine's scheduler does not inflate")
    p.add_argument("--mamba-lengths", type=int, nargs="+", default=[512, 2048], help="mamba_130m forward lengths")
    p.add_argument("--check-tokens", type=int, default=0,
                   help="Mamba step generation: tokens compared with full recomputation (0: all)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the harness runs, not a measurement")
    p.add_argument("--out", type=Path, default=None, help="folder for results.json and results.md")
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    args = p.parse_args(argv)
    if args.list:
        print("\n".join(CASES))
        return 0
    if args.repeats < 1:
        p.error(f"--repeats must be >= 1; got {args.repeats}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "cpu" and (args.threads != 1 or args.device != "cpu"):
        p.error("--clock cpu measures one thread's CPU time: use it with --threads 1 on --device cpu")
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    env = Env(torch.device(args.device), args.amp, args.repeats, args.quick, clock, tuple(args.mamba_lengths),
              args.check_tokens)
    keys = [k for k in CASES if args.only is None or any(k.startswith(o) for o in args.only)]
    if not keys:
        p.error(f"--only {args.only} matches no case; cases: {', '.join(CASES)}")
    header = {"device": str(env.device), "torch": torch.__version__, "threads": torch.get_num_threads(), "clock": args.clock,
              "repeats": args.repeats, "amp": args.amp, "quick": args.quick, "machine": platform.platform(),
              "cpus": os.cpu_count(), "load_before": list(os.getloadavg())}
    out = args.out or ROOT / "benchmarks" / "results" / env.device.type
    out.mkdir(parents=True, exist_ok=True)
    results: list[Result] = []
    for key in keys:
        start = time.perf_counter()
        got = CASES[key](env)
        results.extend(got)
        print(f"# {key}: {len(got)} rows in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
        header["load_after"] = list(os.getloadavg())
        table = markdown(results, header)  # written after every case: a long run leaves what it measured
        (out / "results.json").write_text(json.dumps({**header, "results": [asdict(r) for r in results]}, indent=1))
        (out / "results.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
