"""The task interface: everything between a data set and a number.

A :class:`Task` owns, for one task kind of :data:`nnatlas.registry.TASK_KINDS`:

- fitting: which data sets it trains on (``data_kinds``), how a model is configured for one
  (:meth:`Task.fit`: the config overrides, normalisation, vocabularies: a :class:`Plan`, plain
  data written to ``config.json``, from which :meth:`Task.from_plan` rebuilds the task for
  evaluation and for ``nnatlas.load``);
- batches: how examples are drawn and collated (:meth:`Task.batch` returns a dict of tensors on
  the training device: padded sequences and masks, shifted targets, one whole graph ...);
- the model call and the loss (:meth:`Task.loss`), and the metrics as a float64 sum vector
  (:meth:`Task.sums`, :meth:`Task.metrics`) so that data-parallel ranks combine them with one
  ``all_reduce``;
- what it writes at each evaluation (:meth:`Task.artefacts`: text samples, plots) and what a
  trained model needs to be used (:meth:`Task.inference`);
- its own options (``options``: ``--image-size`` for images, ``--beam-size`` for translation);
  the trainer refuses an option the run's task does not declare.

The trainer knows only these methods: batches in, a loss out, metrics, checkpoints, resume,
DDP, AMP and schedules. A task registers itself with :func:`register_task`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

import nnatlas
from nnatlas.registry import TASK_KINDS

__all__ = [
    "Batch",
    "Option",
    "Plan",
    "Task",
    "register_task",
    "task_class",
    "trainable_kinds",
    "check_fit",
    "datasets_for",
    "config_fields",
    "probe",
    "unwrap",
    "positive_int",
]

Batch = dict[str, Any]  # tensors on the training device (and plain values such as a graph's node count)


@dataclass(frozen=True)
class Option:
    """A task-specific option: its type, default and help (``--image-size`` ...)."""

    type: Callable[[str], Any]
    default: Any
    help: str
    check: Callable[[Any], bool] | None = None  # a valid value returns True
    expect: str = ""  # the rule ``check`` enforces, for the error message

    def validate(self, name: str, value: Any) -> None:
        if self.check is not None and value is not None and not self.check(value):
            raise ValueError(f"--{name.replace('_', '-')} must be {self.expect}; got {value!r}")


@dataclass(frozen=True)
class Plan:
    """How one model meets one data set: plain data (``config.json``'s ``plan``).

    ``details`` is the task's own part (input size and normalisation for images, the
    vocabulary for characters, ...), read back by :meth:`Task.from_plan`.
    """

    model: str
    data: str
    task: str
    overrides: dict[str, Any]
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Plan:
        names = {f.name for f in dataclasses.fields(cls)}
        missing = sorted(names - set(doc))
        if missing:
            raise ValueError(f"config.json 'plan' lacks {missing}; it was not written by this nnatlas")
        return cls(**{k: doc[k] for k in names})


class Task:
    """One task kind; a subclass per kind, an instance per run (see the module docstring)."""

    kind: ClassVar[str] = ""
    data_kinds: ClassVar[tuple[str, ...]] = ()  # the DataBundle.task values it trains on
    options: ClassVar[Mapping[str, Option]] = {}
    best: ClassVar[str] = "test_loss"  # the metric that picks best.safetensors and drives early stopping
    mode: ClassVar[str] = "min"  # "min" or "max" for ``best``
    eval_splits: ClassVar[tuple[str, ...]] = ("test",)  # metrics are reported as f"{split}_{name}"
    lr_scale: float = 1.0  # the default learning rate is multiplied by this (tabular data: larger)

    def __init__(self, plan: Plan, bundle: Any | None, options: Mapping[str, Any]) -> None:
        self.plan = plan
        self.bundle = bundle  # None when rebuilt for inference (nnatlas.load) without data
        self.opts = {name: options.get(name, opt.default) for name, opt in self.options.items()}

    # -- fitting ------------------------------------------------------------------------------

    @classmethod
    def fit(cls, model_name: str, bundle: Any, options: Mapping[str, Any], model_args: Mapping[str, Any]) -> tuple[Task, nn.Module]:
        """Configure ``model_name`` for ``bundle``, build it (global torch RNG: seed first), check it fits.

        Raises ``ValueError`` (one line, naming model and data set) when they do not fit.
        """
        raise NotImplementedError

    @classmethod
    def from_plan(cls, plan: Plan, bundle: Any | None, options: Mapping[str, Any]) -> Task:
        """The task of a saved run (``config.json``), with or without its data."""
        return cls(plan, bundle, options)

    @classmethod
    def check_card(cls, card: nnatlas.ModelCard, data: Any) -> None:
        """Raise ``ValueError`` when the card's model cannot take this data set (``DatasetInfo``), before loading it."""

    # -- data ---------------------------------------------------------------------------------

    def size(self, split: str) -> int:
        """The number of examples of ``split`` (``"train"``, ``"test"``, ``"val"``)."""
        return len(getattr(self.bundle, split))

    def batch(self, split: str, indices: Tensor, *, device: torch.device, generator: torch.Generator | None = None) -> Batch:
        """Examples ``indices`` of ``split``, collated, on ``device``; ``generator`` drives training-only randomness."""
        raise NotImplementedError

    def report_input(self, device: torch.device) -> Any:
        """A model input of two examples (the model report's summary and diagram)."""
        b = self.batch("train", torch.arange(min(2, self.size("train"))), device=device)
        return b["x"]

    # -- model, loss, metrics -------------------------------------------------------------------

    num_sums: int = 0

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        raise NotImplementedError

    def sums(self, model: nn.Module, batch: Batch) -> Tensor:
        """This batch's contribution to the metric sums (float64, length ``num_sums``), in eval mode."""
        raise NotImplementedError

    def metrics(self, sums: Tensor) -> dict[str, float]:
        raise NotImplementedError

    def param_groups(self, model: nn.Module) -> Any:
        """What the optimizer updates: ``model.parameters()``, or parameter groups (dicts) where the
        recipe treats parts of the model differently (a group's own ``weight_decay`` overrides the run's)."""
        return model.parameters()

    def improved(self, new: float, old: float | None) -> bool:
        if old is None:
            return True
        return new > old if self.mode == "max" else new < old

    # -- artefacts and inference ----------------------------------------------------------------

    def artefacts(self, model: nn.Module, folder: Path, tag: str) -> list[Path]:
        """Write this evaluation's artefacts (samples, plots) into ``folder``; ``tag`` names the evaluation."""
        return []

    def inference(self) -> dict[str, Any]:
        """What a trained model needs to be used (``nnatlas.load``): normalisation, vocabulary, ..."""
        return {}

    # -- files beside the weights, and the module that is trained ----------------------------------

    def save(self, run_dir: Path) -> list[Path]:
        """Write what the run needs besides its weights and config.json (tokenizers) into ``run_dir``;
        the trainer calls it once, when a new run starts (rank 0). Returns the files written."""
        return []

    def restore(self, run_dir: Path) -> None:
        """Read back what :meth:`save` wrote (``nnatlas.load`` calls it right after :meth:`from_plan`)."""

    def build_model(self) -> nn.Module:
        """The module a saved run's weights belong to (``nnatlas.load``): the registered model with the
        plan's overrides, unless the task trains it under a head of its own (BERT's masked-LM head)."""
        return nnatlas.create(self.plan.model, **self.plan.overrides)


_TASKS: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: the task for ``cls.kind``; a second one for the same kind raises."""
    if cls.kind not in TASK_KINDS:
        raise ValueError(f"task {cls.__name__}: kind must be one of {TASK_KINDS}; got {cls.kind!r}")
    if cls.kind in _TASKS:
        raise ValueError(f"task kind {cls.kind!r} is registered twice ({_TASKS[cls.kind].__name__}, {cls.__name__})")
    _TASKS[cls.kind] = cls
    return cls


def all_options() -> dict[str, tuple[Option, list[str]]]:
    """Every task option by name, with the task kinds that declare it (the first declaration's spec)."""
    out: dict[str, tuple[Option, list[str]]] = {}
    for kind, cls in _TASKS.items():
        for name, opt in cls.options.items():
            out.setdefault(name, (opt, []))[1].append(kind)
    return out


def trainable_kinds() -> list[str]:
    return [k for k in TASK_KINDS if k in _TASKS]


def task_class(kind: str, *, model: str | None = None) -> type[Task]:
    """The registered task of ``kind``; a clear error where nnatlas cannot train that kind yet."""
    try:
        return _TASKS[kind]
    except KeyError:
        who = f"model {model!r} does {kind}: " if model else ""
        raise ValueError(f"{who}nnatlas train has no {kind} task yet; it trains {', '.join(trainable_kinds())}") from None


def datasets_for(kind: str) -> list[str]:
    """The registered data sets a model of task ``kind`` can train on."""
    from nnatlas import data

    cls = _TASKS.get(kind)
    if cls is None:
        return []
    return [name for name in data.list_datasets() if data.dataset_info(name).task in cls.data_kinds]


def check_fit(model_name: str, info: Any) -> type[Task]:
    """The task that trains ``model_name`` on the data set ``info``, or a one-line ``ValueError``.

    Needs only the card and the data set's registry entry, so ``train`` calls it before any
    data is loaded or downloaded; :meth:`Task.fit` checks shapes once the data is there.
    """
    card = nnatlas.card(model_name)
    cls = task_class(card.task, model=model_name)
    if info.task not in cls.data_kinds:
        fits = datasets_for(card.task)
        raise ValueError(
            f"model {model_name!r} ({card.task}) cannot train on data set {info.name!r} ({info.task}); "
            f"data sets that fit: {', '.join(fits) or 'none yet'}"
        )
    cls.check_card(card, info)
    return cls


def config_fields(model_name: str) -> dict[str, Any]:
    """The model's config fields and their defaults, read off a model built on the meta device."""
    with torch.device("meta"):
        model = nnatlas.create(model_name)
    config = getattr(model, "config", None)
    if config is None or not dataclasses.is_dataclass(config):
        return {}
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


def check_model_args(model_name: str, fields: Mapping[str, Any], model_args: Mapping[str, Any]) -> None:
    unknown = sorted(set(model_args) - set(fields)) if fields else []
    if unknown:
        raise ValueError(f"--model-arg {unknown[0]}: {model_name}'s config has no such field; fields: {', '.join(sorted(fields))}")


def probe(model: nn.Module, *inputs: Any) -> Any:
    """``model(*inputs)`` in eval mode without gradients (shape checks before training)."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model(*inputs)
    finally:
        model.train(was)


def first(seq: Sequence[Any]) -> Any:
    return seq[0] if isinstance(seq, (tuple, list)) else seq


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel or torch.compile wrapper."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod  # type: ignore[assignment]
    return model


def positive_int(v: Any) -> bool:
    """An ``Option`` check: an int (not a bool) >= 1."""
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1
