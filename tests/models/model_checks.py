"""Checks the model tests share (imported by the test files beside it; not a test module)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn


def trainable(model: nn.Module) -> int:
    """The number of trainable parameters (shared ones once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def shapes_after(model: nn.Module, names: Sequence[str], x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """The output shape of each named submodule on one no-grad forward of ``x``; hooks removed after."""
    seen: dict[str, tuple[int, ...]] = {}
    handles = [
        model.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, tuple(o.shape)))
        for n in names
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return seen


def assert_grads_and_buffers_match(ours: nn.Module, ref: nn.Module, ref_key: Callable[[str], str]) -> None:
    """After the same backward on both: every gradient and every buffer (BN running statistics)
    of ``ours`` equals the reference's under the key map ``ref_key`` (fp32 tolerances)."""
    ref_params = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, ref_params[ref_key(name)].grad, atol=1e-5, rtol=1e-4, msg=name)
    ref_buffers = dict(ref.named_buffers())
    for name, b in ours.named_buffers():
        torch.testing.assert_close(b, ref_buffers[ref_key(name)], atol=1e-6, rtol=1e-5, msg=name)
