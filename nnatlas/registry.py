"""The model registry: names -> factories, model cards, example inputs and reference converters.

A family file registers each variant with a plain decorator::

    @register_model("resnet18", card=ModelCard(...))
    def resnet18(**overrides) -> ResNet:
        return ResNet(configure(ResNetConfig(layers=(2, 2, 2, 2)), overrides))

and, where a reference implementation exists, a converter that builds the nnatlas model
from the reference module and copies its weights through an explicit key map::

    @register_reference("resnet18", "resnet34", "resnet50")
    def _from_torchvision(name, ref): ...

Nothing is registered at import time of this file; the families register themselves when
``nnatlas.models`` imports them. A duplicate name raises.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import nn

from nnatlas.errors import ConfigError, ReferenceMismatchError, UnknownModelError

__all__ = [
    "Paper",
    "Seed",
    "ModelCard",
    "register_model",
    "register_reference",
    "create",
    "list_models",
    "card",
    "example_input",
    "from_reference",
    "configure",
    "transfer_state",
]

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Paper:
    """The publication a model comes from."""

    authors: str
    title: str
    venue: str
    year: int
    link: str


@dataclass(frozen=True)
class Seed:
    """Where a seed document shows the model: file name (in ``shared/seeds``) and section."""

    file: str
    section: str


@dataclass(frozen=True)
class ModelCard:
    """What a user needs to know about one registered variant, as data.

    ``input_shape`` and ``output_shape`` omit the batch dimension when ``batched`` is true;
    a model with several inputs or outputs gives a tuple of shapes. Tests check every
    field against the live model; the atlas renders it.
    """

    name: str
    family: str
    title: str
    paper: Paper | None
    input_shape: Shape | tuple[Shape, ...]
    output_shape: Shape | tuple[Shape, ...]
    task: str
    published_params: int | None = None
    seed: Seed | None = None
    notes: str = ""
    batched: bool = True
    input_dtype: str = "float"  # "float" or "int" (token ids); tuples of inputs describe themselves in example_input
    small_input_shape: Shape | None = None  # a smaller input the model also takes (quick checks, small-image training)

    @property
    def multi_input(self) -> bool:
        return bool(self.input_shape) and isinstance(self.input_shape[0], tuple)


ExampleFn = Callable[[int, torch.Generator], Any]
Factory = Callable[..., nn.Module]
Converter = Callable[[str, nn.Module], nn.Module]


@dataclass(frozen=True)
class _Entry:
    factory: Factory
    card: ModelCard
    example: ExampleFn | None = None


_MODELS: dict[str, _Entry] = {}
_CONVERTERS: dict[str, Converter] = {}

F = TypeVar("F", bound=Callable[..., Any])


def register_model(name: str, *, card: ModelCard, example_input: ExampleFn | None = None) -> Callable[[F], F]:
    """Register ``factory(**overrides) -> nn.Module`` under ``name`` with its card.

    ``example_input(batch_size, generator)`` builds the input for models that do not take
    a single float tensor of ``card.input_shape`` (token ids, graphs, several inputs).
    """
    if card.name != name:
        raise ValueError(f"register_model({name!r}): the card is named {card.name!r}")

    def decorator(factory: F) -> F:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice ({_MODELS[name].factory.__module__} and {factory.__module__})")
        _MODELS[name] = _Entry(factory, card, example_input)
        return factory

    return decorator


def register_reference(*names: str) -> Callable[[Converter], Converter]:
    """Register ``convert(name, reference_module) -> nnatlas model`` for these model names."""

    def decorator(fn: Converter) -> Converter:
        for name in names:
            if name in _CONVERTERS:
                raise ValueError(f"a reference converter for {name!r} is registered twice")
            _CONVERTERS[name] = fn
        return fn

    return decorator


def _entry(name: str) -> _Entry:
    _load_families()
    try:
        return _MODELS[name]
    except KeyError:
        raise UnknownModelError(name, _MODELS) from None


def _load_families() -> None:
    import nnatlas.models  # noqa: F401  (importing registers every family)


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, sorted; ``pattern`` filters with fnmatch (``"resnet*"``)."""
    _load_families()
    names = sorted(_MODELS)
    return [n for n in names if pattern is None or fnmatch.fnmatchcase(n, pattern)]


def card(name: str) -> ModelCard:
    """The :class:`ModelCard` of a registered model."""
    return _entry(name).card


def create(name: str, **overrides: Any) -> nn.Module:
    """Build a registered model; ``overrides`` (``num_classes=10``, ``in_channels=1``) go into its config."""
    return _entry(name).factory(**overrides)


def example_input(name: str, batch_size: int = 2, *, seed: int = 0, small: bool = False) -> Any:
    """An input the model accepts at its card's size: a tensor, or a tuple for several inputs.

    ``small=True`` gives the card's ``small_input_shape`` instead where it has one (VGG at
    32x32 rather than 224x224): the same model, a fraction of the arithmetic.
    """
    if batch_size < 1:
        raise ValueError(f"example_input expects batch_size >= 1; got {batch_size}")
    entry = _entry(name)
    gen = torch.Generator().manual_seed(seed)
    c = entry.card
    if small and c.small_input_shape is not None:
        return torch.randn((batch_size, *c.small_input_shape), generator=gen)
    if entry.example is not None:
        return entry.example(batch_size, gen)
    shape = (batch_size, *c.input_shape) if c.batched else tuple(c.input_shape)
    return torch.randn(shape, generator=gen)


def from_reference(name: str, reference_module: nn.Module) -> nn.Module:
    """An nnatlas model holding the weights of a reference implementation's module.

    The nnatlas model takes its configuration (sizes, classes) from the reference module,
    and every weight goes through an explicit key map that fails on any unmapped or
    mis-shaped key (:class:`~nnatlas.errors.ReferenceMismatchError`).
    """
    _entry(name)
    try:
        convert = _CONVERTERS[name]
    except KeyError:
        have = ", ".join(sorted(_CONVERTERS)) or "none"
        raise KeyError(f"model {name!r} has no reference converter; models with one: {have}") from None
    return convert(name, reference_module)


C = TypeVar("C")


def configure(config: C, overrides: Mapping[str, Any]) -> C:
    """``dataclasses.replace`` with a clear error for unknown fields (the config validates the rest)."""
    fields = {f.name for f in dataclasses.fields(config)}  # type: ignore[arg-type]
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConfigError(
            f"{type(config).__name__} has no field {', '.join(map(repr, unknown))}; valid fields: {', '.join(sorted(fields))}"
        )
    return dataclasses.replace(config, **overrides)  # type: ignore[type-var]


def transfer_state(
    model: nn.Module,
    reference_state: Mapping[str, torch.Tensor],
    key_map: Mapping[str, str] | Callable[[str], str],
    *,
    source: str = "reference",
) -> nn.Module:
    """Copy ``reference_state`` into ``model`` through ``key_map`` (nnatlas key -> reference key).

    Every key on both sides must be used exactly once and every shape must agree; otherwise
    :class:`ReferenceMismatchError` lists the offending keys. Returns ``model``.
    """
    ours = model.state_dict()
    lookup = key_map if callable(key_map) else key_map.__getitem__
    mapped: dict[str, torch.Tensor] = {}
    unmapped_ours, bad_shapes, used = [], [], set()
    for key, tensor in ours.items():
        try:
            ref_key = lookup(key)
        except KeyError:
            unmapped_ours.append(key)
            continue
        if ref_key not in reference_state:
            unmapped_ours.append(f"{key} -> {ref_key} (absent from {source})")
            continue
        ref = reference_state[ref_key]
        if tuple(ref.shape) != tuple(tensor.shape):
            bad_shapes.append(f"{key} {tuple(tensor.shape)} <- {ref_key} {tuple(ref.shape)}")
            continue
        used.add(ref_key)
        mapped[key] = ref
    leftover = sorted(set(reference_state) - used)
    problems = []
    if unmapped_ours:
        problems.append(f"nnatlas keys without a {source} weight: {unmapped_ours[:8]}")
    if leftover:
        problems.append(f"{source} keys not used: {leftover[:8]}")
    if bad_shapes:
        problems.append(f"shapes differ: {bad_shapes[:8]}")
    if problems:
        raise ReferenceMismatchError(f"{type(model).__name__} from {source}: " + "; ".join(problems))
    model.load_state_dict(mapped, strict=True)
    return model
