"""The same tests for every registered model, parametrised over ``nnatlas.list_models()``.

Forward on the example input (card's output shape, finite), backward (every trainable
parameter gets a gradient), channels_last equality for image models, the published
parameter count, a wrong input raising ShapeError with both shapes, and every int field
of the config rejecting -1 at construction.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

import nnatlas
from nnatlas.errors import ShapeError

MODELS = nnatlas.list_models()
SEEDS = Path(__file__).resolve().parents[3] / "shared" / "seeds"


def _tensors(out: object) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _tensors(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in _tensors(o)]
    return []


def _shapes(out: object) -> object:
    if isinstance(out, torch.Tensor):
        return tuple(out.shape)
    return tuple(_shapes(o) for o in out)


def _expected(card: nnatlas.ModelCard, batch: int) -> object:
    def one(shape: tuple) -> tuple:
        return (batch, *shape) if card.batched else tuple(shape)

    shape = card.output_shape
    if shape and isinstance(shape[0], tuple):
        return tuple(one(s) for s in shape)
    return one(shape)


def _call(model: torch.nn.Module, x: object) -> object:
    return model(*x) if isinstance(x, tuple) else model(x)


def test_registry_is_not_empty() -> None:
    assert len(MODELS) >= 30, MODELS


@pytest.mark.parametrize("name", MODELS)
def test_card(name: str) -> None:
    c = nnatlas.card(name)
    assert c.name == name
    assert c.family and c.title and c.task
    assert c.published_params is None or c.published_params > 0
    if c.seed is not None and SEEDS.is_dir():
        assert (SEEDS / c.seed.file).is_file(), f"{name}'s card names a seed file that does not exist: {c.seed.file}"
    with torch.device("meta"):
        model = nnatlas.create(name)
    assert dataclasses.is_dataclass(model.config), f"{name} has no .config dataclass"
    assert model.config.__dataclass_params__.frozen, f"{name}'s config is not frozen"


@pytest.mark.parametrize("name", MODELS)
def test_published_parameter_count(name: str) -> None:
    c = nnatlas.card(name)
    if c.published_params is None:
        pytest.skip(f"{name}: no published parameter count")
    with torch.device("meta"):
        model = nnatlas.create(name)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == c.published_params


@pytest.mark.parametrize("name", MODELS)
def test_forward_backward(name: str) -> None:
    """Eval forward (card's shape, finite) and train backward on the small input where the card has one."""
    c = nnatlas.card(name)
    model = nnatlas.create(name).eval()
    x = nnatlas.example_input(name, batch_size=2, small=True)
    with torch.no_grad():
        out = _call(model, x)
    if c.small_input_shape is None:
        assert _shapes(out) == _expected(c, 2)
    for t in _tensors(out):
        if t.is_floating_point():
            assert torch.isfinite(t).all(), f"{name}: non-finite output"

    model.train()
    out = _call(model, x)
    loss = sum(t.float().sum() for t in _tensors(out) if t.is_floating_point() and t.requires_grad)
    assert isinstance(loss, torch.Tensor), f"{name}: train-mode forward returned nothing differentiable"
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"{name}: parameters without a gradient: {missing[:10]}"


SMALL = [n for n in MODELS if nnatlas.card(n).small_input_shape is not None]


@pytest.mark.parametrize("name", SMALL)
def test_card_size_output_shape_on_meta(name: str) -> None:
    """At the card's full input size the output has the card's shape (shapes only, on meta)."""
    with torch.device("meta"):
        model = nnatlas.create(name).eval()
    x = nnatlas.example_input(name, batch_size=2).to("meta")
    out = model(x)
    assert _shapes(out) == _expected(nnatlas.card(name), 2)


@pytest.mark.parametrize("name", MODELS)
def test_channels_last(name: str) -> None:
    x = nnatlas.example_input(name, batch_size=2, small=True)
    if not (isinstance(x, torch.Tensor) and x.dim() == 4 and x.is_floating_point()):
        pytest.skip(f"{name}: not an image model")
    model = nnatlas.create(name).eval()
    with torch.no_grad():
        ref = model(x)
        out = model(x.contiguous(memory_format=torch.channels_last))
    for a, b in zip(_tensors(out), _tensors(ref)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)  # conv algorithms differ by layout


@pytest.mark.parametrize("name", MODELS)
def test_wrong_input_raises_shape_error(name: str) -> None:
    model = nnatlas.create(name).eval()
    x = nnatlas.example_input(name, batch_size=2, small=True)
    first = x[0] if isinstance(x, tuple) else x
    bad_first = first.unsqueeze(0)  # one dimension too many
    bad = (bad_first, *x[1:]) if isinstance(x, tuple) else bad_first
    with pytest.raises(ShapeError) as err:
        _call(model, bad)
    assert str(tuple(bad_first.shape)) in str(err.value), err.value
    assert "expects" in str(err.value)

    wrong_dtype = first.long() if first.is_floating_point() else first.float()
    bad = (wrong_dtype, *x[1:]) if isinstance(x, tuple) else wrong_dtype
    with pytest.raises(ShapeError):
        _call(model, bad)


@pytest.mark.parametrize("name", MODELS)
def test_invalid_config_raises(name: str) -> None:
    with torch.device("meta"):
        config = nnatlas.create(name).config
    int_fields = [
        f.name for f in dataclasses.fields(config) if type(getattr(config, f.name)) is int  # bools excluded
    ]
    for field in int_fields:
        with pytest.raises(ValueError):
            nnatlas.create(name, **{field: -1})
    with pytest.raises(ValueError):
        nnatlas.create(name, no_such_field=1)
