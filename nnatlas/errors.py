"""Errors nnatlas raises on purpose.

Each says what was expected and what came, module first and the fix last, and each is a
subclass of the built-in exception a caller would catch anyway (``ValueError``,
``KeyError``), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

import torch

__all__ = ["ShapeError", "UnknownModelError", "ConfigError", "ReferenceMismatchError", "check_input", "did_you_mean"]


class ShapeError(ValueError):
    """An input of the wrong rank, size or dtype, raised at the model's entry."""


class ConfigError(ValueError):
    """A configuration value that cannot build the model (negative sizes, unknown fields)."""


class ReferenceMismatchError(ValueError):
    """A reference module's weights do not map one-to-one onto the nnatlas model."""


def did_you_mean(name: str, known: Iterable[str]) -> tuple[list[str], str]:
    """The closest known names to ``name`` and a message fragment suggesting them ("" if none)."""
    close = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.5)
    return close, (f"; did you mean {', '.join(repr(c) for c in close)}?" if close else "")


class UnknownModelError(KeyError):
    """A model name that is not registered; the message suggests the closest names."""

    def __init__(self, name: object, known: Iterable[str]) -> None:
        known = list(known)
        self.name = name
        if not isinstance(name, str):  # create(None), create(3): no name to compare with
            self.suggestions: list[str] = []
            example = f" such as {known[0]!r}" if known else ""
            super().__init__(f"a model name is a string{example} (nnatlas.list_models() lists all {len(known)}); "
                             f"got {name!r} ({type(name).__name__})")
            return
        self.suggestions, hint = did_you_mean(name, known)
        super().__init__(f"unknown model {name!r}{hint} (nnatlas.list_models() lists all {len(known)})")

    def __str__(self) -> str:  # KeyError would repr() the message, quotes and all
        return str(self.args[0])


Dim = int | str | None  # an exact size, a letter for "any size" (written in the message), or None


def _fmt_spec(spec: Sequence[Dim]) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in spec) + ")"


def check_input(
    x: object,
    spec: Sequence[Dim],
    *,
    model: str,
    name: str = "input",
    dtype: str = "float",
    hint: str = "",
    like: torch.nn.Module | torch.Tensor | None = None,
    vocab: int | None = None,
    min_size: int | None = None,
) -> None:
    """Validate a tensor against a shape spec and raise :class:`ShapeError` if it does not fit.

    ``spec`` holds one entry per dimension: an ``int`` must match exactly, a ``str``
    (``"B"``, ``"H"``) or ``None`` matches any size. ``dtype`` is ``"float"`` (any floating
    dtype), ``"int"`` (any integer dtype: token ids, indices) or ``"any"``.

    The policy every model's entry follows (README, "Inputs"):

    - every dimension named by a letter must be non-empty: a batch of 0 examples (or a
      sequence of 0 tokens) is a :class:`ShapeError`, never a crash deep inside torch;
    - ``like`` (the model, or one of its tensors): a float input must have the model's
      floating dtype; float64 given to a float32 model says how to convert instead of
      failing inside a convolution. Nothing is converted silently;
    - ``vocab``: integer inputs must lie in ``[0, vocab)`` (token ids, segment ids). This
      reads the values (one device sync on a GPU), which an out-of-range id would cost anyway;
    - ``min_size``: the dimensions named ``"H"`` and ``"W"`` must be at least this (a network whose
      pools would otherwise shrink the map to nothing deep inside);
    - NaN and infinite values are not looked for: that is a pass over the input and a device
      sync on every call; they show in the output, and training stops on a non-finite loss.

    >>> check_input(torch.zeros(2, 3, 28, 28), ("B", 1, 32, 32), model="LeNet")
    Traceback (most recent call last):
    ...
    nnatlas.errors.ShapeError: LeNet expects input (B, 1, 32, 32); got (2, 3, 28, 28)
    """
    if not isinstance(x, torch.Tensor):
        raise ShapeError(f"{model} expects {name} as a torch.Tensor of shape {_fmt_spec(spec)}; got {type(x).__name__}")
    got = tuple(x.shape)
    suffix = f" ({hint})" if hint else ""
    if len(got) != len(spec) or any(isinstance(d, int) and d != g for d, g in zip(spec, got)):
        raise ShapeError(f"{model} expects {name} {_fmt_spec(spec)}; got {got}{suffix}")
    if dtype == "float" and not x.is_floating_point():
        raise ShapeError(f"{model} expects {name} of a floating dtype; got {x.dtype} with shape {got}{suffix}")
    if dtype == "int" and (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool):
        raise ShapeError(f"{model} expects {name} of an integer dtype (ids); got {x.dtype} with shape {got}{suffix}")
    empty = [letter for letter, g in zip(spec, got) if not isinstance(letter, int) and g == 0]
    if empty:
        sizes = ", ".join(str(e or "?") for e in empty)
        raise ShapeError(f"{model} expects {name} {_fmt_spec(spec)} with {sizes} >= 1; got {got} "
                         f"(nothing to compute: skip the call for an empty batch)")
    small = [f"{d} >= {min_size}" for d, g in zip(spec, got) if d in ("H", "W") and min_size is not None and g < min_size]
    if small:
        raise ShapeError(f"{model} expects {name} {_fmt_spec(spec)} with {', '.join(small)}; got {got}{suffix}")
    if like is not None and dtype == "float" and x.is_floating_point():
        want = _float_dtype(like)
        if want is not None and x.dtype != want:
            raise ShapeError(f"{model} expects {name} of dtype {want} (the model's parameters); got {x.dtype} "
                             f"with shape {got}; convert the input with x.to({want}), or the model with model.to({x.dtype})")
    if vocab is not None and x.numel() and not x.is_meta:
        low, high = int(x.min()), int(x.max())  # one sync; an id out of range would fail later on the device anyway
        if low < 0 or high >= vocab:
            raise ShapeError(f"{model} expects {name} in [0, {vocab}); got values in [{low}, {high}] "
                             f"with shape {got}{suffix}")


def _float_dtype(like: torch.nn.Module | torch.Tensor) -> torch.dtype | None:
    """The floating dtype of a tensor, or of a module's first floating parameter (None if it has none)."""
    if isinstance(like, torch.Tensor):
        return like.dtype if like.is_floating_point() else None
    for p in like.parameters():
        if p.is_floating_point():
            return p.dtype
    return None
