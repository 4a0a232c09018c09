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

    def __init__(self, name: str, known: Iterable[str]) -> None:
        known = list(known)
        self.name = name
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
) -> None:
    """Validate a tensor against a shape spec and raise :class:`ShapeError` if it does not fit.

    ``spec`` holds one entry per dimension: an ``int`` must match exactly, a ``str``
    (``"B"``, ``"H"``) or ``None`` matches any size. ``dtype`` is ``"float"`` (any floating
    dtype), ``"int"`` (any integer dtype: token ids, indices) or ``"any"``.

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
