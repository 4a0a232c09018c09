"""One type check for every family's config: each field against its annotation.

Every frozen config dataclass calls :func:`check_fields` first thing in ``__post_init__``;
the family then checks only what is its own (divisibility, ranges of rates, one field
against another). The rules, read off the annotations:

- ``int``: an integer, never a ``bool``, ``str`` or ``float`` (``True`` is not one class,
  ``1.5`` is not a layer count); ``>= 1`` unless ``minimum`` names another bound
  (``minimum={"padding": 0}``). Every ``int`` field therefore refuses ``-1``.
- ``float``: an ``int`` or ``float`` (not a ``bool``), finite; ``minimum`` applies too.
- ``bool``: ``True`` or ``False`` only (``1`` and ``"yes"`` are refused).
- ``str``: a string; ``Literal[...]``: one of its values.
- ``tuple[int, ...]`` and ``tuple[int, int]``: a tuple (a list is accepted and stored as a
  tuple) of the given length whose items follow the rules above under the field's name.
- ``X | None``: ``None`` or an ``X``.

A value that breaks a rule raises :class:`~nnatlas.errors.ConfigError` (a ``ValueError``)
naming the field, what it must be and what came, e.g.
``ResNetConfig.num_classes must be an int >= 1; got '10' (str)``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union

from nnatlas.errors import ConfigError

__all__ = ["check_fields"]


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """The resolved annotations of a config class (resolved once per class: they are strings)."""
    return typing.get_type_hints(cls)


def _got(value: object) -> str:
    return f"{value!r} ({type(value).__name__})"


def _check(owner: str, name: str, tp: Any, value: Any, minimum: float | None) -> Any:
    """``value`` checked against ``tp`` (and normalised: lists to tuples, ints to float); or ConfigError."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return _check(owner, name, rest[0], value, minimum)
        return value  # a union of several types: the family checks it
    if origin is Literal:
        allowed = typing.get_args(tp)
        if not isinstance(value, str) or value not in allowed:
            raise ConfigError(f"{owner}.{name} must be one of {', '.join(map(repr, allowed))}; got {_got(value)}")
        return value
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (tuple, list)):
            raise ConfigError(f"{owner}.{name} must be a tuple; got {_got(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            item_types = [args[0]] * len(value)
        else:
            if len(value) != len(args):
                raise ConfigError(f"{owner}.{name} must be a tuple of {len(args)} items; got {_got(value)}")
            item_types = list(args)
        return tuple(_check(owner, name, t, v, minimum) for t, v in zip(item_types, value))
    if tp is bool:
        if type(value) is not bool:
            raise ConfigError(f"{owner}.{name} must be True or False; got {_got(value)}")
        return value
    if tp is int:
        low = 1 if minimum is None else minimum
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ConfigError(f"{owner}.{name} must be an int >= {low}; got {_got(value)}")
        value = int(value)  # numpy integers become plain ints (JSON, hashing, torch sizes)
        if value < low:
            raise ConfigError(f"{owner}.{name} must be an int >= {low}; got {value}")
        return value
    if tp is float:
        bound = "" if minimum is None else f" >= {minimum}"
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ConfigError(f"{owner}.{name} must be a finite number{bound}; got {_got(value)}")
        value = float(value)
        if minimum is not None and value < minimum:
            raise ConfigError(f"{owner}.{name} must be a finite number{bound}; got {value}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{owner}.{name} must be a string; got {_got(value)}")
        return value
    return value  # any other annotation: the family checks it


def check_fields(config: object, *, minimum: Mapping[str, float] | None = None) -> None:
    """Type-check every field of the dataclass ``config`` against its annotation (see the module).

    ``minimum`` gives a field's lower bound where it is not the default (``int`` fields: 1;
    ``float`` fields: none). Lists given for tuple fields are stored as tuples, numpy integers
    as ints and ints given for float fields as floats, so that the frozen config holds the
    annotated types.
    """
    minimum = minimum or {}
    cls = type(config)
    owner = cls.__name__
    hints = _hints(cls)
    for f in dataclasses.fields(config):  # type: ignore[arg-type]
        value = getattr(config, f.name)
        checked = _check(owner, f.name, hints[f.name], value, minimum.get(f.name))
        if checked is not value:
            object.__setattr__(config, f.name, checked)  # frozen: the only way to store the normalised value
