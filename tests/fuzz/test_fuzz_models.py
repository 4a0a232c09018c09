"""Random configs and random inputs for every registered model.

Configs: one to three fields of the model's config get random values drawn from the field's
annotation (in range and out of it, and of the wrong type). The model either builds, and then
runs its example input (on the meta device: shapes only) to an output or a ``ShapeError``, or
construction raises ``ValueError`` (``ConfigError``). Anything else is a finding.

Inputs: the example input with its dtype changed, a dimension added, dropped, emptied or
resized. The model returns an output or raises ``ShapeError``; token models also get random
ids on the CPU (out of range -> ``ShapeError``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import typing
from typing import Any, Literal

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import nnatlas
from nnatlas.config import _hints
from nnatlas.errors import ShapeError

MODELS = nnatlas.list_models()
# Per model and target: two derandomised examples in CI (every model, three targets), many in the long profile.
EXAMPLES = int(os.environ.get("NNATLAS_FUZZ_EXAMPLES", "400")) if os.environ.get("NNATLAS_FUZZ") == "long" else 2


@functools.cache
def _config(name: str) -> Any:
    with torch.device("meta"):
        return nnatlas.create(name).config


def _ints() -> st.SearchStrategy[Any]:
    return st.one_of(st.integers(-2, 12), st.sampled_from(["3", 2.5, True, False, None, float("nan")]))


def _values(tp: Any, default: Any) -> st.SearchStrategy[Any]:
    """Values for a field annotated ``tp``: mostly plausible, some out of range, some of the wrong type."""
    origin = typing.get_origin(tp)
    junk = st.sampled_from([None, "x", -1, 1.5, True, (), float("inf")])
    if origin is Literal:
        return st.one_of(st.sampled_from(typing.get_args(tp)), junk)
    if origin is tuple:
        args = typing.get_args(tp)
        item = _ints() if args and args[0] is int else junk
        n = len(default) if isinstance(default, tuple) else 2
        return st.one_of(st.lists(st.integers(1, 8), min_size=max(0, n - 1), max_size=n + 1).map(tuple),
                         st.lists(item, max_size=n + 1).map(tuple), junk)
    if origin is not None:  # X | None
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return st.one_of(st.none(), _values(inner[0], default)) if len(inner) == 1 else junk
    if tp is int:
        return _ints()
    if tp is float:
        return st.one_of(st.floats(-1, 2), st.sampled_from([0.0, 0.5, float("nan"), float("inf"), -1e-9]), junk)
    if tp is bool:
        return st.one_of(st.booleans(), st.sampled_from([0, 1, "yes", None]))
    if tp is str:
        return st.one_of(st.just(default), st.text(max_size=6), junk)
    return junk


@functools.cache
def _field_strategies(name: str) -> dict[str, st.SearchStrategy[Any]]:
    cfg = _config(name)
    hints = _hints(type(cfg))
    return {f.name: _values(hints[f.name], getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


@functools.cache
def _device(name: str) -> str:
    """``meta`` (shapes only, fast at any size), or ``cpu`` for the few models whose forward reads
    values (graphs read their edge indices)."""
    try:
        with torch.device("meta"):
            model = nnatlas.create(name).eval()
        _call(model, _to(nnatlas.example_input(name, 2, small=True), "meta"))
    except (RuntimeError, NotImplementedError):
        return "cpu"
    return "meta"


def _to(x: Any, device: str) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to(device)
    return tuple(_to(t, device) for t in x)


def _call(model: torch.nn.Module, x: Any) -> Any:
    with torch.no_grad():
        return model(*x) if isinstance(x, tuple) else model(x)


@pytest.mark.parametrize("name", MODELS)
@settings(max_examples=EXAMPLES)
@given(data=st.data())
def test_random_config(name: str, data: st.DataObject) -> None:
    fields = _field_strategies(name)
    keys = data.draw(st.lists(st.sampled_from(sorted(fields)), min_size=1, max_size=3, unique=True), label="fields")
    overrides = {k: data.draw(fields[k], label=k) for k in keys}
    device = _device(name)
    try:
        with torch.device(device):
            model = nnatlas.create(name, **overrides).eval()
    except ValueError:
        return
    x = _to(nnatlas.example_input(name, 2, small=True), device)
    try:
        _call(model, x)
    except ShapeError:
        pass  # the example input no longer fits the new config: said at the entry


def _perturb(x: torch.Tensor, data: st.DataObject) -> torch.Tensor:
    """``x`` with a new dtype, or a dimension added, dropped, emptied or resized (values: zeros)."""
    kind = data.draw(st.sampled_from(["dtype", "add", "drop", "empty", "resize"]), label="kind")
    if kind == "dtype":
        dtype = data.draw(st.sampled_from([torch.float16, torch.float64, torch.bfloat16, torch.int64, torch.int32,
                                           torch.bool, torch.complex64]), label="dtype")
        return torch.zeros(x.shape, dtype=dtype, device=x.device)
    shape = list(x.shape)
    if kind == "add":
        shape.insert(data.draw(st.integers(0, len(shape)), label="at"), data.draw(st.integers(1, 3), label="size"))
    elif kind == "drop" and shape:
        shape.pop(data.draw(st.integers(0, len(shape) - 1), label="at"))
    elif kind in ("empty", "resize") and shape:
        at = data.draw(st.integers(0, len(shape) - 1), label="at")
        shape[at] = 0 if kind == "empty" else data.draw(st.integers(1, 2 * shape[at] + 2), label="size")
    return torch.zeros(shape, dtype=x.dtype, device=x.device)


@functools.cache
def _model(name: str) -> torch.nn.Module:
    with torch.device(_device(name)):
        return nnatlas.create(name).eval()


@pytest.mark.parametrize("name", MODELS)
@settings(max_examples=EXAMPLES)
@given(data=st.data())
def test_random_input(name: str, data: st.DataObject) -> None:
    x = _to(nnatlas.example_input(name, 2, small=True), _device(name))
    xs = list(x) if isinstance(x, tuple) else [x]
    i = data.draw(st.integers(0, len(xs) - 1), label="which input")
    xs[i] = _perturb(xs[i], data)
    try:
        _call(_model(name), tuple(xs) if isinstance(x, tuple) else xs[0])
    except ShapeError:
        pass


TOKEN_MODELS = ["transformer_tiny", "bert_tiny", "nlp_rnn", "gpt_mini", "mamba_tiny"]


@functools.cache
def _cpu_model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return nnatlas.create(name).eval()


@pytest.mark.parametrize("name", TOKEN_MODELS)
@settings(max_examples=EXAMPLES)
@given(data=st.data())
def test_random_token_ids(name: str, data: st.DataObject) -> None:
    model = _cpu_model(name)
    vocab = model.config.vocab_size
    x = nnatlas.example_input(name, 2)
    xs = list(x) if isinstance(x, tuple) else [x]
    B = data.draw(st.integers(1, 3), label="B")
    T = data.draw(st.integers(1, 6), label="T")
    ids = data.draw(st.lists(st.integers(-3, vocab + 3), min_size=B * T, max_size=B * T), label="ids")
    xs = [torch.tensor(ids, dtype=torch.long).reshape(B, T) if j == 0 else
          torch.randint(0, vocab, (B, T)) if t.dtype == torch.long and t.dim() == 2 else t for j, t in enumerate(xs)]
    bad = any(not 0 <= v < vocab for v in ids)
    try:
        out = _call(model, tuple(xs) if isinstance(x, tuple) else xs[0])
    except ShapeError:
        return
    assert not bad, "an id out of range was accepted"
    outs = out if isinstance(out, tuple) else (out,)
    assert all(math.isfinite(float(o.float().abs().sum())) for o in outs if isinstance(o, torch.Tensor))


class _Alien:
    """A value no annotation admits."""


@pytest.mark.parametrize("name", MODELS)
def test_every_config_field_is_type_checked(name: str) -> None:
    """Each field given a value of no sensible type is refused (a family that forgets check_fields fails here)."""
    cfg = _config(name)
    for f in dataclasses.fields(cfg):
        with pytest.raises(ValueError, match=f.name), torch.device("meta"):
            nnatlas.create(name, **{f.name: _Alien()})
