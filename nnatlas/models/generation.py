"""The one sampling loop for every causal language model (GPT, the RNN language models, Mamba).

A model that generates token by token implements :class:`CausalLM`: ``forward`` over a whole
sequence, plus ``init_state``/``step`` that carry what the model has already read (a
key/value cache per attention layer, an RNN's hidden state, Mamba's convolution and SSM
states), so that each new token costs one position's work. :func:`generate` drives either
path: ``use_cache=True`` (the default) prefills the prompt with one ``step`` and then feeds
one token per step; ``use_cache=False`` recomputes ``forward`` over the whole sequence for
every token (nanoGPT's ``generate``), the reference the cache is tested against.

Sampling, as nanoGPT: logits of the last position / temperature, optionally only the
``top_k`` largest kept, softmax, one multinomial draw; temperature 0 is greedy (argmax).

Shapes: prompt (B, T0) int64 -> (B, T0 + N) for N = ``max_new_tokens``; logits (B, V).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

__all__ = ["CausalLM", "generate", "sample_next"]


@runtime_checkable
class CausalLM(Protocol):
    """Models that generate token by token."""

    vocab_size: int
    context_length: int | None  # the most positions the model sees; None = unbounded (RNN, Mamba)

    def forward(self, ids: Tensor) -> Tensor:
        """(B, T) int64 -> logits (B, T, V)."""
        ...

    def init_state(self, batch_size: int) -> Any:
        """An empty cache / zero hidden state for ``batch_size`` sequences."""
        ...

    def step(self, ids: Tensor, state: Any) -> tuple[Tensor, Any]:
        """ids (B, t) new tokens (t >= 1; t > 1 is the prompt prefill) -> (logits of the LAST
        position (B, V), the new state)."""
        ...


def _check(model: Any, prompt: Tensor, max_new_tokens: int, temperature: float, top_k: int | None) -> None:
    missing = [a for a in ("vocab_size", "context_length", "init_state", "step") if not hasattr(model, a)]
    if missing:
        raise TypeError(f"generate expects a CausalLM (vocab_size, context_length, init_state, step); "
                        f"{type(model).__name__} lacks {', '.join(missing)}")
    integer = isinstance(prompt, Tensor) and not prompt.dtype.is_floating_point and prompt.dtype != torch.bool
    if not integer or prompt.dim() != 2:
        got = f"{prompt.dtype} {tuple(prompt.shape)}" if isinstance(prompt, Tensor) else type(prompt).__name__
        raise ValueError(f"generate expects prompt token ids (B, T0) of an integer dtype; got {got}")
    if prompt.shape[0] < 1 or prompt.shape[1] < 1:
        raise ValueError(f"generate expects a prompt of at least one token per row; got shape {tuple(prompt.shape)}")
    V = model.vocab_size
    if int(prompt.min()) < 0 or int(prompt.max()) >= V:
        raise ValueError(
            f"generate expects prompt ids in [0, {V}); got ids in [{int(prompt.min())}, {int(prompt.max())}]"
        )
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 0:
        raise ValueError(f"generate expects max_new_tokens as an int >= 0; got {max_new_tokens!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature >= 0 \
            or temperature == float("inf"):
        raise ValueError(f"generate expects a finite temperature >= 0 (0 = greedy); got {temperature!r}")
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
        raise ValueError(f"generate expects top_k as an int >= 1 or None; got {top_k!r}")


def sample_next(
    logits: Tensor, temperature: float = 1.0, top_k: int | None = None, generator: torch.Generator | None = None
) -> Tensor:
    """One token per row from logits (B, V) -> (B,) int64: argmax when temperature is 0, else a
    draw from softmax(logits / temperature) restricted to the ``top_k`` largest (ties at the
    k-th value are kept, as nanoGPT)."""
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]  # (B, 1): the k-th largest
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(-1)  # (B, V)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)  # (B,)


@torch.no_grad()
def generate(
    model: CausalLM,
    prompt: Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> Tensor:
    """Continue ``prompt`` (B, T0) int64 by ``max_new_tokens`` tokens -> (B, T0 + N).

    ``temperature`` 0 decodes greedily; ``top_k`` keeps the k most likely tokens; ``generator``
    makes the draws reproducible. ``use_cache=True`` carries the model's state (each token one
    ``step``); ``use_cache=False`` reruns ``forward`` over the window for every token.

    A model with a ``context_length`` sees at most the last ``context_length`` tokens, as
    nanoGPT crops them. With learned absolute positions the window cannot slide inside a
    cache (every cached key was computed at its old position), so once the sequence is
    longer than the context, every further token re-encodes the whole window: a prefill of
    ``context_length`` tokens per token, the same cost as ``use_cache=False``. Within the
    context (prompt + N <= context_length) each token costs one position.

    The model should be in eval mode (dropout would otherwise sample too).
    """
    _check(model, prompt, max_new_tokens, temperature, top_k)
    ctx = model.context_length
    ids = prompt
    window = lambda x: x if ctx is None or x.shape[1] <= ctx else x[:, -ctx:]  # noqa: E731
    state = None
    for i in range(max_new_tokens):
        if not use_cache:
            logits = model(window(ids))[:, -1]  # (B, V): the full forward, last position kept
        elif state is None or (ctx is not None and ids.shape[1] > ctx):
            # the first token, or past the context: (re-)encode the window from an empty state
            state = model.init_state(ids.shape[0])
            logits, state = model.step(window(ids), state)  # (B, V)
        else:
            logits, state = model.step(ids[:, -1:], state)  # (B, V): only the newest token
        nxt = sample_next(logits, temperature, top_k, generator)  # (B,)
        ids = torch.cat([ids, nxt[:, None].to(ids.dtype)], dim=1)  # (B, T0 + i + 1)
    return ids
