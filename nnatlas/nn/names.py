"""Names for tensors, written where the model computes them: ``name(f, "F[t]", "σ(X[t] W_f + ...)")``.

A model calls :func:`name` beside the line that computes a tensor, with the symbol the paper
(or the seed's drawing) gives it, optionally its formula, a few words of what it is, and the
letters of its axes. Outside a trace the call returns the tensor and does nothing else (one
context-variable read); while the inspector traces a model it sets a recorder for the
duration of the run (:func:`recording`, a :class:`contextvars.ContextVar`: nothing global is
patched) and the diagram labels the tensor, and draws the operations that made it as one box
with the formula:

    f = name(torch.sigmoid(f), "F[t]", "σ(X[t] W_f + H[t-1] U_f + b_f)", desc="forget gate", dims="B H")

``dims`` names the axes, batch first, separated by spaces or commas (``"B T V"``); an axis
may carry the arithmetic that explains its size (``"B, C=64+6×32, H, W"`` draws
``C=64+6×32=256``). ``label=None`` names only the axes. Models never import the inspector.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch

__all__ = ["name", "recording", "Recorder"]

#: ``recorder(tensor, label, formula, desc, dims)``, called by :func:`name` while set.
Recorder = Callable[[torch.Tensor, "str | None", "str | None", "str | None", "str | None"], None]

_RECORDER: ContextVar[Recorder | None] = ContextVar("nnatlas_name_recorder", default=None)


def name(tensor: torch.Tensor, label: str | None, formula: str | None = None, *, desc: str | None = None,
         dims: str | None = None) -> torch.Tensor:
    """Return ``tensor`` unchanged; a running trace records its ``label``, ``formula``, ``desc`` and ``dims``."""
    record = _RECORDER.get()
    if record is not None:
        record(tensor, label, formula, desc, dims)
    return tensor


@contextmanager
def recording(recorder: Recorder) -> Iterator[None]:
    """Within the block (and only in this thread or task) :func:`name` calls ``recorder``."""
    token = _RECORDER.set(recorder)
    try:
        yield
    finally:
        _RECORDER.reset(token)
