"""The model registry: names -> factories, model cards, example inputs and reference converters.

A family file registers each variant with a plain decorator::

    @register_model("resnet18", card=ModelCard(...))
    def resnet18(**overrides) -> ResNet:
        return ResNet(configure(ResNetConfig(layers=(2, 2, 2, 2)), overrides))

and, where a reference implementation exists, a converter that builds the nnatlas model
from the reference module and copies its weights through an explicit key map::

    @register_reference("resnet18", "resnet34", "resnet50")
    def _from_torchvision(name, ref): ...

Nothing is registered at import time of this file, and it imports nothing of nnatlas but the
errors: it is the leaf every other part imports. The families register themselves when
``nnatlas.models`` is imported, which the package's ``__init__`` does. A duplicate name raises.

A card names its task kind from one closed vocabulary, :data:`TASK_KINDS`, shared with the data
sets (``DataBundle.task``) and the trainer, and it may name a default data set and a default
training :class:`Recipe`; where it does not, :data:`DEFAULT_DATA` and :data:`DEFAULT_RECIPES`
give its kind's defaults, so ``nnatlas train NAME`` always knows what to do.
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
    "TASK_KINDS",
    "DEFAULT_DATA",
    "DEFAULT_RECIPES",
    "Recipe",
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
    "format_card",
]

Shape = tuple[int, ...]

TASK_KINDS = (
    "classification",  # one label per example (images, vectors)
    "binary",  # one logit per example
    "regression",  # one value per example
    "segmentation",  # one label per pixel
    "sequence_classification",  # one label per sequence (image rows, characters of a name)
    "forecast",  # a time series window -> the next values
    "language_model",  # causal next-token prediction
    "translation",  # source tokens -> target tokens
    "masked_lm",  # masked-token prediction (BERT)
    "reconstruction",  # autoencoders: input -> the same input
    "vae",  # variational autoencoder: the evidence lower bound
    "diffusion",  # denoising diffusion: noise prediction
    "node_classification",  # one label per node of a graph
    "pointer",  # outputs are positions of the input (Pointer Networks)
)


@dataclass(frozen=True)
class Recipe:
    """How a model trains by default: the paper's, or its best-known reproduction's, as data.

    ``None`` leaves a value to the trainer's default. ``steps`` (optimizer steps) and
    ``epochs`` are alternatives; ``eval_every`` (steps) evaluates within long epochs.
    ``source`` says where the recipe comes from.
    """

    optimizer: str | None = None  # "sgd", "adam", "adamw"
    lr: float | None = None
    schedule: str | None = None  # see nnatlas.train.trainer.SCHEDULES
    warmup: int | None = None  # warm-up steps (warmup_cosine, noam)
    min_lr: float | None = None  # the floor of warmup_cosine
    betas: tuple[float, float] | None = None  # Adam's
    weight_decay: float | None = None
    momentum: float | None = None
    batch_size: int | None = None
    epochs: int | None = None
    steps: int | None = None
    eval_every: int | None = None
    clip_grad: float | None = None
    ema: float | None = None  # decay of the weights' exponential moving average (evaluated and saved)
    patience: int | None = None  # early stopping: evaluations without improvement of the task's best metric
    # how patience counts: "best" (no evaluation improved on the best for `patience` evaluations) or "window"
    # (Kipf & Welling's code: the latest is worse than the mean of the `patience` evaluations before it)
    stop_rule: str | None = None
    # the task's own options (nnatlas train --ddim-eta ...) that this model's recipe sets; the command line overrides each
    task_options: Mapping[str, Any] = field(default_factory=dict, hash=False)
    source: str = ""

    def __post_init__(self) -> None:
        if self.epochs is not None and self.steps is not None:
            raise ConfigError(f"Recipe: give epochs or steps, not both; got epochs={self.epochs}, steps={self.steps}")

    def values(self) -> dict[str, Any]:
        """The trainer's fields that are set (``source`` and ``task_options`` aside), by name."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in ("source", "task_options") and getattr(self, f.name) is not None}


# A kind's default data set (all offline where one exists) and recipe, used where a card names none.
DEFAULT_DATA: dict[str, str] = {
    "classification": "digits",
    "binary": "breast-cancer",
    "regression": "diabetes",
    "segmentation": "isbi2012",
    "sequence_classification": "digits",
    "forecast": "sunspots",
    "language_model": "tinyshakespeare",
    "translation": "multi30k",
    "masked_lm": "tinyshakespeare",
    "reconstruction": "digits",
    "vae": "digits",
    "diffusion": "digits",
    "node_classification": "karate",
    "pointer": "convex-hull-5",
}
DEFAULT_RECIPES: dict[str, Recipe] = {
    kind: Recipe(optimizer="adam", schedule="onecycle", batch_size=32, epochs=8, source="nnatlas default") for kind in TASK_KINDS
}


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
    default_data: str | None = None  # None: DEFAULT_DATA[task]
    recipe: Recipe | None = None  # None: DEFAULT_RECIPES[task]

    def __post_init__(self) -> None:
        if self.task not in TASK_KINDS:
            raise ConfigError(f"ModelCard {self.name!r}: task must be one of {', '.join(TASK_KINDS)}; got {self.task!r}")

    @property
    def multi_input(self) -> bool:
        return bool(self.input_shape) and isinstance(self.input_shape[0], tuple)

    @property
    def data(self) -> str:
        """The data set ``nnatlas train`` uses without ``--data``."""
        return self.default_data or DEFAULT_DATA[self.task]

    @property
    def training(self) -> Recipe:
        """The default recipe: the card's own, else its task kind's."""
        return self.recipe or DEFAULT_RECIPES[self.task]


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
    try:
        return _MODELS[name]
    except KeyError:
        raise UnknownModelError(name, _MODELS) from None


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, sorted; ``pattern`` filters with fnmatch (``"resnet*"``)."""
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


def format_card(card: ModelCard) -> str:
    """The card as aligned text lines (``nnatlas show``)."""
    lines = [f"{card.title}  ({card.name}, family {card.family})", f"task:           {card.task}"]
    if card.paper is not None:
        p = card.paper
        lines.append(f"paper:          {p.authors}, \"{p.title}\", {p.venue} {p.year}. {p.link}")
    lines.append(f"input shape:    {card.input_shape}{' (without batch)' if card.batched else ''}")
    lines.append(f"output shape:   {card.output_shape}")
    if card.published_params is not None:
        lines.append(f"published params: {card.published_params:,}")
    if card.seed is not None:
        lines.append(f"seed:           {card.seed.file}, {card.seed.section}")
    lines.append(f"default data:   {card.data}")
    recipe = card.training
    settings = [f"{k}={v}" for k, v in recipe.values().items()] + [f"--{k.replace('_', '-')}={v}" for k, v in recipe.task_options.items()]
    lines.append("default recipe: " + ", ".join(settings) + (f"  ({recipe.source})" if recipe.source else ""))
    if card.notes:
        lines.append("notes:          " + card.notes.strip().replace("\n", "\n                "))
    return "\n".join(lines)
