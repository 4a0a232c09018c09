"""The training loop: one process or many (torchrun), resumable to the bit.

The trainer knows batches, a loss and metrics only through the run's :class:`~nnatlas.train.tasks.Task`
(chosen by the model card's task kind); it owns the rest: optimizer and schedule, evaluation,
checkpoints and exact resume, data parallelism, mixed precision.

:func:`train` runs a :class:`TrainConfig` and leaves a run folder::

    config.json        the resolved configuration (the card's recipe filled in) and the task's plan
    metrics.jsonl      one JSON object per evaluation: epoch, step, train_loss, test_* metrics, lr, time_s
    final.json         the final metrics (the last evaluation's), the best evaluation, times
    curves.png         losses and metrics per evaluation
    artefacts/         what the task writes at each evaluation (samples, plots) and manifest.json
    last.safetensors   the weights at the end;  best.safetensors  at the best evaluation
    checkpoint.manifest.json + checkpoints/   the resumable state (see ``checkpoint.py``)
    model.txt, summary.txt, model.svg         the model report

A run is ``epochs`` passes over the training split, or ``steps`` optimizer steps (language
models); it evaluates at the end of each epoch, every ``eval_every`` steps, and at the end.

Reproducibility: randomness never comes from a generator whose state would have to be
guessed after a crash. The data order of epoch ``e`` is a permutation drawn from a generator
seeded with ``(seed, e)``; the task's batch randomness (augmentation, masking, noise) of step
``s`` on rank ``r`` from ``(seed, r, s)``; and the global torch generator (dropout) is
re-seeded from ``(seed, r, s)`` before every step. A checkpoint therefore needs only the step
counters to continue the same stream of batches and masks; it also stores the torch, CUDA,
Python and NumPy generator states and restores them on resume for any code outside the loop
that draws from them.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import io
import json
import logging
import math
import random
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import nnatlas
from nnatlas.train import checkpoint as ckpt
from nnatlas.train.distributed import DistContext, setup, shard_order
from nnatlas.train.rundir import RunDir
from nnatlas.train.tasks import Plan, Task, check_fit, task_class

__all__ = ["TrainConfig", "TrainResult", "DivergedError", "train", "evaluate", "evaluate_run", "config_for_run", "write_model_report", "load", "Trained"]

log = logging.getLogger(__name__)

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("none", "cosine", "step", "onecycle", "warmup_cosine", "noam")
WARMUP_SCHEDULES = ("warmup_cosine", "noam")  # the schedules that read --warmup (and --min-lr)
AMP = ("off", "auto", "bf16", "fp16")
DEFAULT_LR = {"sgd": 0.05, "adam": 3e-3, "adamw": 3e-3}
DEFAULT_WEIGHT_DECAY = {"sgd": 0.0, "adam": 0.0, "adamw": 0.01}
# What a run uses where neither the command line nor the card's recipe says (nnatlas.registry.Recipe's fields).
DEFAULTS: dict[str, Any] = {"optimizer": "adam", "schedule": "onecycle", "batch_size": 32, "epochs": 8, "momentum": 0.9, "warmup": 100,
                            "stop_rule": "best"}
STOP_RULES = ("best", "window")  # how --patience counts (see Trainer._stop_due)
RECIPE_FIELDS = tuple(f.name for f in dataclasses.fields(nnatlas.registry.Recipe) if f.name not in ("source", "task_options"))
CURVES_EVERY_S = 10.0  # curves.png is redrawn at most this often during a run, and once at its end
# Options that may differ when a run is resumed (given anew; not given, the saved run's); every other one must equal the
# saved run's. PER_CALL ones are never taken from the saved run.
RESUME_FREE = frozenset({"device", "threads", "out", "resume", "overwrite", "data_dir", "report", "compile", "checkpoint_every", "patience", "stop_rule"})
PER_CALL = frozenset({"out", "resume", "overwrite"})


class DivergedError(ValueError):
    """The loss became NaN or infinite; the run stopped before the bad step changed any weight."""


@dataclass
class TrainConfig:
    """Everything a run depends on (``config.json`` holds it, resolved).

    ``None`` in a recipe field (optimizer ... clip_grad) means "the card's recipe, else
    :data:`DEFAULTS`"; :meth:`resolved` fills them in. ``task_options`` are the options of the
    model's task (``image_size``, ``beam_size`` ...), refused when the task does not declare them.
    """

    model: str
    data: str | None = None  # None: the card's default data set
    data_dir: str | None = None
    epochs: int | None = None
    steps: int | None = None  # optimizer steps instead of epochs
    eval_every: int | None = None  # steps between evaluations (besides each epoch's end)
    batch_size: int | None = None
    lr: float | None = None  # None: DEFAULT_LR[optimizer] x the task's scale
    optimizer: str | None = None
    schedule: str | None = None
    warmup: int | None = None  # warm-up steps of warmup_cosine and noam
    min_lr: float | None = None  # warmup_cosine's floor (None: lr / 10)
    betas: tuple[float, float] | None = None  # Adam's (None: torch's (0.9, 0.999))
    weight_decay: float | None = None  # None: DEFAULT_WEIGHT_DECAY[optimizer]
    momentum: float | None = None  # SGD only
    clip_grad: float | None = None
    ema: float | None = None  # decay of an exponential moving average of the weights (None: none); see _Run._update_ema
    seed: int = 0
    device: str = "auto"
    threads: int | None = None  # torch intra-op threads on CPU; None: torch's default
    amp: str = "off"
    compile: bool = False
    patience: int | None = None
    stop_rule: str | None = None  # None: the card's recipe, else "best"
    checkpoint_every: int = 0  # steps between extra checkpoints; 0: at each evaluation only
    limit_train: int | None = None
    limit_test: int | None = None
    model_args: dict[str, Any] = field(default_factory=dict)
    task_options: dict[str, Any] = field(default_factory=dict)
    out: str | None = None  # None: runs/MODEL
    resume: bool = False
    overwrite: bool = False
    report: bool = True

    def resolved(self) -> TrainConfig:
        """This config with the data set and every recipe field filled in (given > card's recipe > DEFAULTS);
        the recipe's task options under the given ones (a resumed run keeps its saved ones)."""
        card = nnatlas.card(self.model)  # UnknownModelError (a KeyError) with suggestions
        recipe = card.training.values()
        filled: dict[str, Any] = {} if self.resume else {"task_options": {**card.training.task_options, **self.task_options}}
        for name in RECIPE_FIELDS:
            if getattr(self, name) is None:
                filled[name] = recipe.get(name, DEFAULTS.get(name))
        if self.steps is not None and self.epochs is None:
            filled["epochs"] = None  # steps given on the command line replace the recipe's epochs
        elif self.epochs is not None and self.steps is None:
            filled["steps"] = None
        if filled.get("betas") is not None:
            filled["betas"] = tuple(filled["betas"])
        optimizer = self.optimizer or filled.get("optimizer")
        schedule = self.schedule or filled.get("schedule")
        # Defaults of options that only some choices read stay unset for the others (config.json shows what was used).
        if optimizer != "sgd" and "momentum" in filled:
            filled["momentum"] = None
        if optimizer == "sgd" and "betas" in filled:
            filled["betas"] = None
        if (self.patience if self.patience is not None else filled.get("patience")) is None and "stop_rule" in filled:
            filled["stop_rule"] = None  # read only with early stopping
        if schedule not in WARMUP_SCHEDULES:
            for name in ("warmup", "min_lr"):
                if name in filled:
                    filled[name] = None
        return dataclasses.replace(self, data=self.data or card.data, **filled)

    def validate(self) -> None:
        """Raise ``ValueError`` (one line) for any option that cannot run; no work is done."""
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ValueError(msg)

        def count(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        nnatlas.card(self.model)
        need(self.epochs is None or (count(self.epochs) and self.epochs >= 1), f"--epochs must be an integer >= 1; got {self.epochs}")
        need(self.steps is None or (count(self.steps) and self.steps >= 1), f"--steps must be an integer >= 1; got {self.steps}")
        need(self.epochs is not None or self.steps is not None, "give --epochs or --steps")
        need(self.eval_every is None or (count(self.eval_every) and self.eval_every >= 1), f"--eval-every must be >= 1 steps; got {self.eval_every}")
        need(self.batch_size is None or self.batch_size >= 1, f"--batch-size must be >= 1; got {self.batch_size}")
        need(self.optimizer is None or self.optimizer in OPTIMIZERS, f"--optimizer must be one of {', '.join(OPTIMIZERS)}; got {self.optimizer!r}")
        need(self.schedule is None or self.schedule in SCHEDULES, f"--schedule must be one of {', '.join(SCHEDULES)}; got {self.schedule!r}")
        need(self.amp in AMP, f"--amp must be one of {', '.join(AMP)}; got {self.amp!r}")
        need(self.lr is None or (math.isfinite(self.lr) and self.lr > 0), f"--lr must be a positive number; got {self.lr}")
        need(self.min_lr is None or (math.isfinite(self.min_lr) and self.min_lr >= 0), f"--min-lr must be >= 0; got {self.min_lr}")
        need(self.warmup is None or (count(self.warmup) and self.warmup >= 0), f"--warmup must be an integer >= 0 steps; got {self.warmup}")
        need(self.betas is None or (len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas)), f"--betas must be two numbers in [0, 1); got {self.betas}")
        need(self.weight_decay is None or self.weight_decay >= 0, f"--weight-decay must be >= 0; got {self.weight_decay}")
        need(self.momentum is None or 0 <= self.momentum < 1, f"--momentum must be in [0, 1); got {self.momentum}")
        need(self.clip_grad is None or self.clip_grad > 0, f"--clip-grad must be > 0; got {self.clip_grad}")
        need(self.ema is None or 0 < self.ema < 1, f"--ema must be a decay in (0, 1), e.g. 0.999; got {self.ema}")
        need(self.patience is None or self.patience >= 1, f"--patience must be >= 1; got {self.patience}")
        need(self.stop_rule is None or self.stop_rule in STOP_RULES, f"--stop-rule must be one of {', '.join(STOP_RULES)}; got {self.stop_rule!r}")
        need(self.checkpoint_every >= 0, f"--checkpoint-every must be >= 0 steps; got {self.checkpoint_every}")
        need(self.limit_train is None or self.limit_train >= 1, f"--limit-train must be >= 1; got {self.limit_train}")
        need(self.limit_test is None or self.limit_test >= 1, f"--limit-test must be >= 1; got {self.limit_test}")
        need(self.seed >= 0, f"--seed must be >= 0; got {self.seed}")
        need(self.threads is None or self.threads >= 1, f"--threads must be >= 1; got {self.threads}")
        need(self.momentum is None or self.optimizer in (None, "sgd"), f"--momentum is an option of --optimizer sgd; the run uses {self.optimizer}")
        need(self.betas is None or self.optimizer != "sgd", "--betas is an option of --optimizer adam/adamw; the run uses sgd")
        for name in ("warmup", "min_lr"):
            need(getattr(self, name) is None or self.schedule in (None, *WARMUP_SCHEDULES),
                 f"--{name.replace('_', '-')} is an option of --schedule {' or '.join(WARMUP_SCHEDULES)}; the run uses {self.schedule}")
        _device(self.device)
        self.check_task_options()

    def check_task_options(self) -> None:
        """Refuse an option the model's task does not declare, and check the ones it does."""
        kind = nnatlas.card(self.model).task
        declared = task_class(kind, model=self.model).options
        for name, value in self.task_options.items():
            if name not in declared:
                known = ", ".join("--" + n.replace("_", "-") for n in declared) or "none"
                raise ValueError(f"--{name.replace('_', '-')} is not an option of the {kind} task that {self.model} trains (its options: {known})")
            declared[name].validate(name, value)

    @property
    def run_dir(self) -> Path:
        return Path(self.out) if self.out else Path("runs") / self.model


@dataclass
class TrainResult:
    """What :func:`train` returns: the final metrics, the run folder, the trained model and its task."""

    final: dict[str, Any]
    history: list[dict[str, Any]]
    run_dir: Path
    model: nn.Module
    plan: Plan
    task: Task


def config_for_run(model: str, given: Mapping[str, Any]) -> TrainConfig:
    """A :class:`TrainConfig` from explicitly given options.

    Without ``resume`` the card's recipe and the defaults fill the rest (see
    :meth:`TrainConfig.resolved`). With ``resume`` the saved run's ``config.json`` fills the
    rest, and a given option that differs from the saved one (other than those in
    ``RESUME_FREE``) is an error: the resumed run would not be the same run. A ``RESUME_FREE`` option
    that is not given keeps the run's (its ``--patience``, ``--checkpoint-every``, ``--threads``).
    """
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(given) - names)
    if unknown:
        raise TypeError(f"TrainConfig has no option {unknown}")
    cfg = TrainConfig(model=model, **given)
    if not cfg.resume:
        return cfg
    path = cfg.run_dir / "config.json"
    if not path.is_file():
        raise ValueError(f"--resume: {path} does not exist; there is no run to resume in {cfg.run_dir}")
    doc = _read_json(path)
    saved = doc["config"]
    if saved.get("model") != model:
        raise ValueError(f"--resume: the run in {cfg.run_dir} trains {saved.get('model')!r}, not {model!r}")
    # task options one by one: those given must equal the ones the run used (config.json's whole set, the task's
    # defaults included), the rest come from the run (its recipe's among them)
    absent = object()
    used = {**doc.get("task_options", {}), **saved.get("task_options", {})}
    pairs = [(k, v, saved.get(k, absent)) for k, v in given.items() if k != "task_options"]
    pairs += [(f"--{k.replace('_', '-')}", v, used.get(k, absent)) for k, v in given.get("task_options", {}).items()]
    for key, value, was in pairs:
        if key not in RESUME_FREE and was is not absent and was != _jsonable(value):
            raise ValueError(f"--resume: the run in {cfg.run_dir} has {key}={was!r}; got {value!r} (resume with the same options, or train into a new --out)")
    merged = {k: v for k, v in saved.items() if k in names and k not in PER_CALL}
    merged.update({k: v for k, v in given.items() if k != "task_options"})
    merged["task_options"] = {**saved.get("task_options", {}), **given.get("task_options", {})}
    merged.pop("model", None)
    if merged.get("betas") is not None:
        merged["betas"] = tuple(merged["betas"])
    return TrainConfig(model=model, **merged)


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise ValueError(f"--device must be auto, cpu, cuda or cuda:N; got {spec!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {spec}: CUDA is not available on this machine; use --device cpu")
    return dev


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from ``parts``, stable across runs, processes and platforms."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def _jsonable(doc: Any) -> Any:
    """``doc`` as it reads back from JSON (tuples become lists, keys strings)."""
    return json.loads(json.dumps(doc))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text("utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None


def _write_json(path: Path, doc: Any) -> None:
    ckpt.atomic_write_text(path, json.dumps(doc, indent=1, allow_nan=True) + "\n")


def _amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    if amp == "off":
        return None
    if amp == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16
    if amp == "fp16" and device.type != "cuda":
        raise ValueError(f"--amp fp16 needs a CUDA device (gradient scaling); got {device}; use --amp bf16 on CPU")
    return torch.bfloat16 if amp == "bf16" else torch.float16


def _load_data(cfg: TrainConfig, ctx: DistContext) -> Any:
    from nnatlas import data

    def load() -> Any:
        return data.load(cfg.data, data_dir=cfg.data_dir)

    # Rank 0 first, so that a download happens once; the others read what it left.
    bundle = load() if ctx.is_main else None
    ctx.barrier()
    return bundle if bundle is not None else load()


def _batches(order: Tensor, batch_size: int) -> list[Tensor]:
    batches = list(order.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:  # batch norm cannot train on one example
        batches.pop()
    return batches


def _make_optimizer(cfg: TrainConfig, params: Iterator[nn.Parameter], lr: float, device: torch.device) -> torch.optim.Optimizer:
    """SGD, Adam or AdamW as configured. On CUDA, Adam(W) is torch's fused one (one kernel for all the
    parameters instead of a dozen per tensor group, as nanoGPT does): a small model's step is bound by
    kernel launches there. Elsewhere torch's default (foreach) implementation."""
    wd = cfg.weight_decay if cfg.weight_decay is not None else DEFAULT_WEIGHT_DECAY[cfg.optimizer]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum or 0.0, weight_decay=wd)
    betas = tuple(cfg.betas) if cfg.betas is not None else (0.9, 0.999)
    fused = {"fused": True} if device.type == "cuda" else {}
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=wd, **fused)
    return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=wd, **fused)


def _make_schedule(cfg: TrainConfig, opt: torch.optim.Optimizer, total_steps: int, lr: float) -> torch.optim.lr_scheduler.LRScheduler:
    """A per-step schedule over the whole run (``total_steps`` optimizer steps)."""
    total = max(1, total_steps)
    warmup = cfg.warmup or 0
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    if cfg.schedule == "step":  # x0.1 after each third of the run
        return torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, total // 3), gamma=0.1)
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.LambdaLR(opt, _one_cycle(total))
    if cfg.schedule == "warmup_cosine":
        floor = (cfg.min_lr if cfg.min_lr is not None else lr / 10) / lr
        return torch.optim.lr_scheduler.LambdaLR(opt, _warmup_cosine(total, warmup, floor))
    if cfg.schedule == "noam":
        return torch.optim.lr_scheduler.LambdaLR(opt, _noam(max(1, warmup)))
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)


def _one_cycle(total: int, warmup: float = 0.25, start: float = 0.04, end: float = 1e-4) -> Callable[[int], float]:
    """Smith's 1cycle as a multiplier of ``--lr``: linear warm-up from ``start`` over the first
    ``warmup`` of the run, then cosine annealing to ``end``. Unlike ``OneCycleLR`` it is defined for
    runs of any length (a handful of steps included) and leaves momentum alone."""
    warm = max(1, round(warmup * total))

    def factor(step: int) -> float:
        if step < warm:
            return start + (1.0 - start) * step / warm
        t = min(1.0, (step - warm) / max(1, total - warm))
        return end + (1.0 - end) * 0.5 * (1.0 + math.cos(math.pi * t))

    return factor


def _warmup_cosine(total: int, warmup: int, floor: float) -> Callable[[int], float]:
    """nanoGPT's schedule as a multiplier of ``--lr``: linear warm-up over ``warmup`` steps, then
    cosine decay to ``floor`` (= min_lr / lr) at the last step."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        t = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))

    return factor


def _noam(warmup: int) -> Callable[[int], float]:
    """Vaswani et al. (2017) eq. 3 scaled to peak at ``--lr``: lr x min(s / w, sqrt(w / s)) at step s = step + 1."""

    def factor(step: int) -> float:
        s = step + 1
        return min(s / warmup, math.sqrt(warmup / s))

    return factor


def _rng_state() -> tuple[dict[str, Tensor], dict[str, Any]]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    np_state = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(np.asarray(np_state[1], dtype=np.int64))
    py = random.getstate()
    plain = {"python": [py[0], list(py[1]), py[2]], "numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])]}
    return tensors, plain


def _set_rng_state(c: ckpt.Checkpoint) -> None:
    torch.set_rng_state(c.tensors["rng.torch"])
    cuda = sorted((k for k in c.tensors if k.startswith("rng.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1]))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([c.tensors[k] for k in cuda][: torch.cuda.device_count()])
    py = c.state["rng"]["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, pos, has_gauss, cached = c.state["rng"]["numpy"]
    np.random.set_state((name, c.tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


def evaluate(
    model: nn.Module,
    task: Task,
    split: str = "test",
    *,
    limit: int | None = None,
    batch_size: int,
    device: torch.device,
    ctx: DistContext | None = None,
    amp_dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """The task's metrics of ``model`` on ``split`` (each rank scores its share, sums are combined).

    ``limit`` scores the first ``limit`` examples only. Keys are the task's metric names.
    """
    ctx = ctx or DistContext()
    n = task.size(split) if limit is None else min(limit, task.size(split))
    mine = torch.arange(ctx.rank, n, ctx.world_size)  # no padding: every example counts once
    sums: Tensor | None = None
    was = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.autocast(device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
            for idx in mine.split(batch_size):
                s = task.sums(model, task.batch(split, idx, device=device))
                sums = s if sums is None else sums + s
    finally:
        model.train(was)
    if sums is None:  # a rank with no examples contributes zeros
        sums = torch.zeros(task.num_sums, dtype=torch.float64, device=device)
    sums = ctx.all_reduce_sum(sums.to(device))
    return task.metrics(sums.cpu())


# --------------------------------------------------------------------------------------------
# Reports: curves and the model report
# --------------------------------------------------------------------------------------------


def write_curves(path: Path, history: list[dict[str, Any]], title: str) -> None:
    """Losses (left) and test metrics (right) per epoch as a PNG, written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    ax_loss, ax_metric = fig.subplots(1, 2)
    x_key = x_label = "step" if any(h.get("epoch") != round(h.get("epoch", 0)) for h in history) else "epoch"
    epochs = [h[x_key] for h in history]
    loss_keys = ["train_loss"] + [k for k in (history[0] if history else {}) if k.endswith("_loss") and k != "train_loss"]
    for key in loss_keys:
        ax_loss.plot(epochs, [h.get(key, math.nan) for h in history], marker="o", ms=3, label=key[: -len("_loss")])
    ax_loss.set_xlabel(x_label)
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    metric_keys = [k for k in (history[0] if history else {}) if k not in loss_keys and k not in ("epoch", "step", "lr", "time_s")]
    for key in metric_keys:
        ax_metric.plot(epochs, [h.get(key, math.nan) for h in history], marker="o", ms=3, label=key)
    ax_metric.set_xlabel(x_label)
    ax_metric.set_ylabel("metric")
    if metric_keys:
        ax_metric.legend()
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    ckpt.atomic_write_bytes(path, buf.getvalue())


def write_model_report(model: nn.Module, example: Any, out_dir: Path) -> list[Path]:
    """Write the model's description into ``out_dir``; returns the files written.

    ``model.txt`` (the module tree and parameter counts), ``summary.txt`` (``nnatlas.summary``),
    ``model.svg`` and one ``model_<Block>.svg`` per block type (``nnatlas.diagram``; without
    Graphviz, ``model.dot``). The report reaches the inspector through its public API only, and
    a failing report is a logged warning: it never stops a training run.
    """
    out_dir = Path(out_dir)
    written = []
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    ckpt.atomic_write_text(out_dir / "model.txt", f"{model}\n\nparameters: {total:,} ({trainable:,} trainable)\n")
    written.append(out_dir / "model.txt")
    was = model.training
    model.eval()
    try:
        try:
            ckpt.atomic_write_text(out_dir / "summary.txt", str(nnatlas.summary(model, example)) + "\n")
            written.append(out_dir / "summary.txt")
        except Exception as err:  # noqa: BLE001  (any failure of the report is only a warning)
            log.warning("model report: nnatlas.summary failed: %s: %s", type(err).__name__, err)
        try:
            written += nnatlas.diagram(model, example).render_all(out_dir / "model.svg", format="svg")
        except Exception as err:  # noqa: BLE001  (Graphviz missing is an OSError with the fix in its message)
            log.warning("model report: nnatlas.diagram: %s", err)
    finally:
        model.train(was)
    return written


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def _fmt(row: Mapping[str, Any]) -> str:
    """One evaluation's row as a log line: ``train_loss 0.1234  test_acc 0.9812  lr 0.001  3.2s``."""
    parts = []
    for k, v in row.items():
        if k in ("epoch", "step"):
            continue
        if k == "time_s":
            parts.append(f"{v:.1f}s")
        elif k == "lr":
            parts.append(f"lr {v:.3g}")
        else:
            parts.append(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}")
    return "  ".join(parts)


def train(cfg: TrainConfig, *, progress: bool | None = None) -> TrainResult:
    """Run ``cfg`` (under torchrun: one rank of a data-parallel run) and return the result.

    ``progress``: tqdm bars (default: when stderr is a terminal); otherwise one log line per
    evaluation. Only rank 0 writes files and reports.
    """
    cfg = cfg.resolved()
    cfg.validate()
    from nnatlas import data as _data

    info = _data.dataset_info(cfg.data)  # unknown name: one-line error
    task_cls = check_fit(cfg.model, info)  # before any data is loaded or downloaded
    device = _device(cfg.device)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    ctx = setup(device.type)
    finished = False
    try:
        if device.type == "cuda" and ctx.enabled:
            device = torch.device("cuda", ctx.local_rank)
        result = _Run(cfg, task_cls, device, ctx, progress).run()
        finished = True
        return result
    finally:
        ctx.close(finished=finished)


class _Run:
    def __init__(self, cfg: TrainConfig, task_cls: type[Task], device: torch.device, ctx: DistContext, progress: bool | None) -> None:
        self.cfg, self.task_cls, self.device, self.ctx = cfg, task_cls, device, ctx
        self.run_dir = cfg.run_dir
        self.rundir: RunDir | None = None  # set by _setup: where the run writes until its first checkpoint
        self.progress = (sys.stderr.isatty() if progress is None else progress) and ctx.is_main
        self.amp_dtype = _amp_dtype(cfg.amp, device)
        self._curves_at = -math.inf  # time.monotonic() of the last curves.png

    # -- set-up -------------------------------------------------------------------------------

    def _setup(self) -> None:
        cfg, ctx = self.cfg, self.ctx
        self.rundir = RunDir.prepare(cfg.run_dir, resume=cfg.resume, overwrite=cfg.overwrite, is_main=ctx.is_main)
        self.run_dir = self.rundir.path  # a staging folder while an old run stays in place (see rundir.py)
        self.resume_from = ckpt.load_checkpoint(self.run_dir, model_name=cfg.model) if cfg.resume else None
        if self.resume_from is not None and self.resume_from.state.get("world_size") != ctx.world_size:
            raise ValueError(
                f"--resume: the checkpoint was written by {self.resume_from.state.get('world_size')} processes; this run has {ctx.world_size} (the data order differs)"
            )
        bundle = _load_data(cfg, ctx)
        torch.manual_seed(cfg.seed)  # the initial weights
        self.task, model = self.task_cls.fit(cfg.model, bundle, cfg.task_options, cfg.model_args)
        self.plan = self.task.plan
        self.model = model.to(self.device)
        # --ema: a shadow copy that evaluation, artefacts and the saved weights use (checkpointed as ema.*)
        self.ema = copy.deepcopy(self.model).requires_grad_(False).eval() if cfg.ema else None
        self._ema_pairs: tuple[list[Tensor], list[Tensor], list[tuple[Tensor, Tensor]]] | None = None
        self.n_train = min(self.task.size("train"), cfg.limit_train or math.inf)  # type: ignore[type-var]
        self.steps_per_epoch = len(_batches(torch.empty(-(-self.n_train // ctx.world_size)), cfg.batch_size))
        self.total_steps = cfg.steps if cfg.steps is not None else cfg.epochs * self.steps_per_epoch
        self.lr = cfg.lr if cfg.lr is not None else DEFAULT_LR[cfg.optimizer] * self.task.lr_scale
        self.opt = _make_optimizer(cfg, self.task.param_groups(self.model), self.lr, self.device)
        self.sched = _make_schedule(cfg, self.opt, self.total_steps, self.lr)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.eval_batch = max(cfg.batch_size, 256)

        # Counters (restored on resume).
        self.epoch = 0  # the data epoch being run (0-based)
        self.step_in_epoch = 0  # batches of this epoch already consumed
        self.global_step = 0
        self.loss_sum, self.loss_count = 0.0, 0  # the training loss since the last evaluation
        self.history: list[dict[str, Any]] = []
        self.best_value: float | None = None
        self.best_epoch = 0  # the evaluation (1-based) that gave best_value
        self.bad_evals = 0
        self.train_time = 0.0
        self.samples = 0
        self.run_id = uuid.uuid4().hex
        self.last_checkpoint: int | None = None
        if self.resume_from is not None:
            self._restore(self.resume_from)

        train_model: nn.Module = self.model
        if ctx.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            train_model = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        if cfg.compile:
            train_model = torch.compile(train_model)  # type: ignore[assignment]
        self.train_model = train_model

        if ctx.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if self.resume_from is None:
                _write_json(self.run_dir / "config.json", self._config_doc())
                self.task.save(self.run_dir)  # tokenizers beside the weights
                if cfg.report:
                    self._report()
            else:
                self._write_metrics()
            log.info(
                "%s %s (%s) on %s: %d train / %d test examples, %s x %d steps, %s, %s%s",
                "resuming" if self.resume_from is not None else "training",
                cfg.model, self.task.kind, self.plan.data, self.n_train, self._n_eval("test"),
                f"{cfg.epochs} epochs" if cfg.steps is None else f"{cfg.steps} steps ({cfg.steps / max(1, self.steps_per_epoch):.2f} epochs)",
                1 if cfg.steps is not None else self.steps_per_epoch, self.device,
                f"{ctx.world_size} processes ({ctx.backend})" if ctx.enabled else "1 process",
                f", from step {self.global_step}" if self.resume_from is not None else "",
            )

    def _n_eval(self, split: str) -> int:
        n = self.task.size(split)
        return n if self.cfg.limit_test is None else min(n, self.cfg.limit_test)

    def _report(self) -> None:
        try:
            example = self.task.report_input(self.device)
        except Exception as err:  # noqa: BLE001  (the report never costs a run)
            log.warning("model report: no example input: %s: %s", type(err).__name__, err)
            return
        write_model_report(self.model, example, self.run_dir)

    def _config_doc(self) -> dict[str, Any]:
        return {
            "config": asdict(self.cfg),
            "task_options": self.task.opts,
            "plan": self.plan.to_json(),
            "run_id": self.run_id,
            "world_size": self.ctx.world_size,
            "lr": self.lr,
            "steps_per_epoch": self.steps_per_epoch,
            "total_steps": self.total_steps,
            "eval_batch_size": self.eval_batch,
            "nnatlas": nnatlas.__version__,
            "torch": torch.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    # -- checkpoints ---------------------------------------------------------------------------

    def _save(self) -> None:
        if not self.ctx.is_main:
            return
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        if self.ema is not None:
            tensors.update({f"ema.{k}": v for k, v in self.ema.state_dict().items()})
        opt_tensors, opt_plain = ckpt.optimizer_to_parts(self.opt)
        tensors.update(opt_tensors)
        rng_tensors, rng_plain = _rng_state()
        tensors.update(rng_tensors)
        state = {
            "run_id": self.run_id,
            "world_size": self.ctx.world_size,
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "loss_sum": self.loss_sum,
            "loss_count": self.loss_count,
            "history": self.history,
            "best_value": self.best_value,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_evals,
            "train_time": self.train_time,
            "samples": self.samples,
            "optimizer": opt_plain,
            "scheduler": self.sched.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_plain,
        }
        ckpt.save_checkpoint(self.run_dir, model_name=self.cfg.model, step=self.global_step, tensors=tensors, state=_jsonable(state))
        self.last_checkpoint = self.global_step
        if self.rundir is not None and self.rundir.staged:  # the new run has proven it starts: it replaces the old one
            self.run_dir = self.rundir.commit()

    def _restore(self, c: ckpt.Checkpoint) -> None:
        config = _read_json(self.run_dir / "config.json")
        if config.get("run_id") != c.state.get("run_id"):
            raise ckpt.CheckpointError(f"the checkpoint in {self.run_dir} belongs to another run than its config.json (run ids differ)")
        if config.get("plan") != _jsonable(self.plan.to_json()):
            raise ValueError(f"--resume: the model/data plan differs from the saved run's ({self.run_dir / 'config.json'}); the data or model code changed")
        ckpt.check_run_state(c.state, steps_per_epoch=self.steps_per_epoch, total_steps=self.total_steps, what=str(c.path))
        ckpt.check_rng_tensors(c.tensors, str(c.path))
        ckpt.load_model_state(c, self.model, str(c.path))
        if self.ema is not None:
            ckpt.load_model_state(c, self.ema, str(c.path), prefix="ema")
        ckpt.check_optimizer_fits(self.opt, c.subset("optim"), c.state["optimizer"], str(c.path))
        try:
            ckpt.optimizer_from_parts(self.opt, c.subset("optim"), c.state["optimizer"])
            self.sched.load_state_dict(c.state["scheduler"])
        except (KeyError, ValueError, TypeError) as err:
            raise ckpt.CheckpointError(f"the optimizer or scheduler state in {c.path} does not fit this run: {err}") from None
        if c.state.get("scaler"):
            self.scaler.load_state_dict(c.state["scaler"])
        _set_rng_state(c)
        s = c.state
        self.run_id = s["run_id"]
        self.epoch, self.step_in_epoch, self.global_step = s["epoch"], s["step_in_epoch"], s["global_step"]
        self.loss_sum, self.loss_count = s["loss_sum"], s["loss_count"]
        self.history = s["history"]
        self.best_value, self.best_epoch, self.bad_evals = s["best_value"], s["best_epoch"], s["bad_epochs"]
        self.train_time, self.samples = s["train_time"], s["samples"]
        self.last_checkpoint = self.global_step

    # -- files --------------------------------------------------------------------------------

    def _write_metrics(self, *, final: bool = False) -> None:
        lines = "".join(json.dumps(h) + "\n" for h in self.history)
        ckpt.atomic_write_text(self.run_dir / "metrics.jsonl", lines)
        # curves.png costs ~0.1-1 s of matplotlib: redrawn at most every CURVES_EVERY_S, and at the end
        # (a full-graph GCN run evaluates after each of its 200 one-step epochs)
        due = final or time.monotonic() - self._curves_at >= CURVES_EVERY_S
        if self.history and due:
            write_curves(self.run_dir / "curves.png", self.history, f"{self.cfg.model} on {self.plan.data}")
            self._curves_at = time.monotonic()

    def _artefacts(self, tag: str) -> None:
        """The task's artefacts of this evaluation, listed in artefacts/manifest.json (a failure is a warning)."""
        folder = self.run_dir / "artefacts"
        was = self.model.training
        self.model.eval()
        try:
            folder.mkdir(parents=True, exist_ok=True)
            written = self.task.artefacts(self.eval_model, folder, tag)
        except Exception as err:  # noqa: BLE001  (an artefact never costs a run)
            log.warning("artefacts at %s: %s: %s", tag, type(err).__name__, err)
            return
        finally:
            self.model.train(was)
        if not written:
            if not any(folder.iterdir()):
                folder.rmdir()  # a task without artefacts leaves no empty folder
            return
        manifest_path = folder / "manifest.json"
        manifest = _read_json(manifest_path) if manifest_path.is_file() else {}
        manifest[tag] = sorted(str(Path(p).relative_to(folder)) for p in written)
        _write_json(manifest_path, manifest)

    # -- the loop -----------------------------------------------------------------------------

    def _step(self, idx: Tensor) -> float:
        cfg = self.cfg
        gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "augment", self.ctx.rank, self.global_step))
        batch = self.task.batch("train", idx, device=self.device, generator=gen)
        torch.manual_seed(derive_seed(cfg.seed, "step", self.ctx.rank, self.global_step))  # dropout masks of this step
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.bfloat16, enabled=self.amp_dtype is not None):
            loss = self.task.loss(self.train_model, batch)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        value = loss.detach().float().reshape(1)
        if self.ctx.enabled:  # every rank sees the same value, so every rank stops together
            value = self.ctx.all_reduce_sum(value) / self.ctx.world_size
        v = value.item()
        if not math.isfinite(v):
            kept = (f"the last good checkpoint (step {self.last_checkpoint}) is kept in {self.run_dir}" if self.last_checkpoint is not None
                    else "no checkpoint had been written yet")
            raise DivergedError(
                f"training diverged: the loss is {v} at epoch {self.epoch + 1}, step {self.step_in_epoch + 1} (global step {self.global_step + 1}); "
                f"{kept}; lower --lr or set --clip-grad"
            )
        if cfg.clip_grad is not None:
            self.scaler.unscale_(self.opt)
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_grad)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()
        if self.ema is not None:
            self._update_ema()
        return v

    def _update_ema(self) -> None:
        """shadow <- d shadow + (1 - d) weights with d = min(--ema, (1 + n) / (10 + n)) after n updates: TensorFlow's
        ExponentialMovingAverage with num_updates, so a short run's average does not keep the initial weights.
        Integer buffers (BatchNorm's counter) are copied."""
        d = min(self.cfg.ema, (1 + self.global_step) / (10 + self.global_step))
        if self._ema_pairs is None:  # the same tensors every step (checkpoints load in place): listed once
            pairs = list(zip(self.ema.state_dict().values(), self.model.state_dict().values()))
            floats = [(s, w) for s, w in pairs if s.is_floating_point()]
            self._ema_pairs = ([s for s, _ in floats], [w for _, w in floats], [(s, w) for s, w in pairs if not s.is_floating_point()])
        shadows, weights, counters = self._ema_pairs
        with torch.no_grad():
            torch._foreach_lerp_(shadows, weights, 1 - d)  # one call for all the tensors, not one per tensor
            for shadow, live in counters:
                shadow.copy_(live)

    @property
    def eval_model(self) -> nn.Module:
        """The weights that are evaluated and saved: the moving average under --ema, else the trained ones."""
        return self.ema if self.ema is not None else self.model

    def _evaluate(self, elapsed: float) -> bool:
        """Evaluate, record, write artefacts, save; returns whether early stopping ends the run."""
        cfg, ctx = self.cfg, self.ctx
        if ctx.enabled:  # DDP broadcasts buffers before each forward; after the last one they differ
            for b in self.model.buffers():
                torch.distributed.broadcast(b, src=0)
        row: dict[str, Any] = {
            "epoch": round(self.epoch + self.step_in_epoch / max(1, self.steps_per_epoch), 4),
            "step": self.global_step,
            "train_loss": self.loss_sum / max(1, self.loss_count),
        }
        for split in self.task.eval_splits:
            metrics = evaluate(self.eval_model, self.task, split, limit=cfg.limit_test, batch_size=self.eval_batch, device=self.device, ctx=ctx, amp_dtype=self.amp_dtype)
            row |= {f"{split}_{k}": v for k, v in metrics.items()}
        row["lr"] = self.opt.param_groups[0]["lr"]
        row["time_s"] = round(elapsed, 3)
        self.history.append(row)
        value = row[self.task.best]
        improved = math.isfinite(value) and self.task.improved(value, self.best_value)
        if improved:
            self.best_value, self.best_epoch, self.bad_evals = value, len(self.history), 0
            if ctx.is_main:
                ckpt.save_weights(self.run_dir / "best.safetensors", self.eval_model, model_name=cfg.model, extra={"step": str(self.global_step)})
        else:
            self.bad_evals += 1
        self.loss_sum, self.loss_count = 0.0, 0
        if ctx.is_main:
            self._artefacts(f"step-{self.global_step:08d}")
            self._write_metrics()
            if cfg.steps is None:
                log.info("epoch %g/%d (step %d)  %s", row["epoch"], cfg.epochs, self.global_step, _fmt(row))
            else:
                log.info("step %d/%d (epoch %.2f)  %s", self.global_step, self.total_steps, row["epoch"], _fmt(row))
        self._save()
        return self._stop_due()

    def _stop_due(self) -> bool:
        """Early stopping: ``patience`` evaluations counted by ``stop_rule``.

        ``best``: none of the last ``patience`` evaluations improved on the best value of the task's metric.
        ``window``: the latest value is worse than the mean of the ``patience`` values before it, once more than
        ``patience + 1`` evaluations exist (Kipf & Welling's GCN code: ``epoch > early_stopping and cost_val[-1] >
        np.mean(cost_val[-(early_stopping + 1):-1])``).
        """
        cfg = self.cfg
        if cfg.patience is None:
            return False
        if cfg.stop_rule != "window":
            return self.bad_evals >= cfg.patience
        values = [row[self.task.best] for row in self.history]
        if len(values) <= cfg.patience + 1:
            return False
        window = values[-cfg.patience - 1:-1]
        return self.task.improved(sum(window) / len(window), values[-1])

    def _eval_due(self, end_of_epoch: bool) -> bool:
        cfg = self.cfg
        if self.global_step >= self.total_steps:
            return True
        if cfg.eval_every and self.global_step % cfg.eval_every == 0:
            return True
        return end_of_epoch and cfg.steps is None

    def run(self) -> TrainResult:
        try:
            return self._run()
        except BaseException:
            if self.rundir is not None:
                self.rundir.abort()  # a start that failed before its first checkpoint leaves the old run as it was
            raise

    def _run(self) -> TrainResult:
        self._setup()
        cfg, ctx = self.cfg, self.ctx
        stopped_early = self.resume_from is not None and self._stop_due()
        done = self.global_step >= self.total_steps or stopped_early
        bar = None
        if self.progress and not done:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.total_steps, initial=self.global_step, desc=cfg.model, leave=False, dynamic_ncols=True)
        self.model.train()
        t0 = time.perf_counter()
        try:
            while not done:
                gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "order", self.epoch))
                batches = _batches(shard_order(self.n_train, world_size=ctx.world_size, rank=ctx.rank, generator=gen), cfg.batch_size)
                for b in range(self.step_in_epoch, len(batches)):
                    idx = batches[b]
                    v = self._step(idx)
                    self.global_step += 1
                    self.step_in_epoch = b + 1
                    self.loss_sum += v * len(idx)
                    self.loss_count += len(idx)
                    self.samples += len(idx) * ctx.world_size
                    end_of_epoch = self.step_in_epoch == len(batches)
                    if end_of_epoch:
                        self.epoch += 1
                        self.step_in_epoch = 0
                    if bar is not None:
                        bar.update(1)
                        post = {"loss": f"{self.loss_sum / max(1, self.loss_count):.4f}"}
                        if self.history:  # the last evaluation's metric beside the running loss
                            post[self.task.best] = f"{self.history[-1][self.task.best]:.4f}"
                        bar.set_postfix(post, refresh=False)
                    if self._eval_due(end_of_epoch):
                        dt = time.perf_counter() - t0
                        self.train_time += dt
                        stopped_early = self._evaluate(dt)
                        self.model.train()
                        t0 = time.perf_counter()
                    elif cfg.checkpoint_every and self.global_step % cfg.checkpoint_every == 0:
                        self.train_time += time.perf_counter() - t0
                        t0 = time.perf_counter()
                        self._save()
                    if self.global_step >= self.total_steps or stopped_early:
                        done = True
                        break
        finally:
            if bar is not None:
                bar.close()
        if stopped_early and ctx.is_main:
            if cfg.stop_rule == "window":
                log.info("early stopping: %s is worse than the mean of the %d evaluations before it (best %.4f at evaluation %d)", self.task.best, cfg.patience, self.best_value, self.best_epoch)
            else:
                log.info("early stopping: %s has not improved for %d evaluations (best %.4f at evaluation %d)", self.task.best, self.bad_evals, self.best_value, self.best_epoch)

        ctx.check_in_sync(self.model)
        last = self.history[-1] if self.history else {}
        final = {
            "model": cfg.model,
            "data": self.plan.data,
            "task": self.task.kind,
            "evaluations": len(self.history),
            "epochs": last.get("epoch", 0),
            "steps": self.global_step,
            **{k: v for k, v in last.items() if k not in ("epoch", "step", "lr", "time_s", "train_loss")},
            "train_loss": last.get("train_loss"),
            "best_evaluation": self.best_epoch,
            f"best_{self.task.best}": self.best_value,
            "stopped_early": stopped_early,
            "train_time_s": round(self.train_time, 3),
            "samples_per_s": round(self.samples / self.train_time, 1) if self.train_time > 0 else None,
            "world_size": ctx.world_size,
            "device": str(self.device),
        }
        if ctx.is_main:
            self._write_metrics(final=True)
            ckpt.save_weights(self.run_dir / "last.safetensors", self.eval_model, model_name=cfg.model, extra={"step": str(self.global_step)})
            _write_json(self.run_dir / "final.json", final)
        return TrainResult(final=final, history=self.history, run_dir=self.run_dir, model=self.eval_model, plan=self.plan, task=self.task)


# --------------------------------------------------------------------------------------------
# Trained models back in Python
# --------------------------------------------------------------------------------------------


@dataclass
class Trained:
    """A trained model with what it needs to be used (:func:`load`).

    ``task`` is the run's task rebuilt from its plan (without data unless ``load`` was given
    some); ``inference`` is what the task says a user needs (input normalisation, vocabulary,
    tokenizer paths); ``config`` the run's resolved configuration.
    """

    model: nn.Module
    task: Task
    plan: Plan
    config: dict[str, Any]
    inference: dict[str, Any]
    run_dir: Path
    weights: str

    @property
    def kind(self) -> str:
        return self.task.kind


def load(run_dir: str | Path, *, weights: str = "best", device: str = "cpu", bundle: Any | None = None) -> Trained:
    """The model a ``nnatlas train`` run left in ``run_dir``, in eval mode, with its task.

    ``weights``: ``"best"`` (``best.safetensors``, the best evaluation; ``last`` where the
    run has no best) or ``"last"``. ``bundle``: the run's data set, when the caller wants to
    evaluate (``nnatlas eval``); without it the task can still encode and decode.
    """
    run_dir = Path(run_dir)
    if weights not in ("last", "best"):
        raise ValueError(f"weights must be 'last' or 'best'; got {weights!r}")
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise ValueError(f"{run_dir} is not a run folder: {cfg_path.name} is absent (nnatlas train writes it)")
    doc = _read_json(cfg_path)
    try:
        saved, plan = doc["config"], Plan.from_json(doc["plan"])
    except (KeyError, TypeError) as err:
        raise ValueError(f"{cfg_path} lacks {err}; it was not written by this nnatlas train") from None
    path = run_dir / f"{weights}.safetensors"
    if weights == "best" and not path.is_file():
        path, weights = run_dir / "last.safetensors", "last"
    if not path.is_file():
        raise ValueError(f"{run_dir} holds no trained weights ({path.name} is absent); the run has not finished an evaluation")
    task_cls = task_class(plan.task, model=plan.model)
    task = task_cls.from_plan(plan, bundle, doc.get("task_options", {}))
    task.run_dir = run_dir  # tasks that saved files (tokenizers) read them from here
    task.restore(run_dir)
    dev = _device(device)
    model = task.build_model()
    ckpt.load_weights(path, model, model_name=plan.model)
    model.to(dev).eval()
    return Trained(model=model, task=task, plan=plan, config=saved, inference=task.inference(), run_dir=run_dir, weights=weights)


def evaluate_run(run_dir: Path, *, weights: str = "last", device: str = "auto", data_dir: str | None = None) -> dict[str, float]:
    """Recompute a run's metrics from its saved weights (the model is rebuilt from ``config.json``)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise ValueError(f"{run_dir} is not a run folder: config.json is absent (nnatlas train writes it)")
    doc = _read_json(run_dir / "config.json")
    saved = doc.get("config", {})
    from nnatlas import data as _data

    plan_data = doc.get("plan", {}).get("data")
    bundle = _data.load(plan_data, data_dir=data_dir if data_dir is not None else saved.get("data_dir"))
    dev = _device(device)
    trained = load(run_dir, weights=weights, device=str(dev), bundle=bundle)
    amp = saved.get("amp", "off")
    if amp == "fp16" and dev.type != "cuda":
        log.warning("the run trained with --amp fp16; evaluating on %s in float32, so metrics may differ slightly", dev)
        amp = "off"
    amp_dtype = _amp_dtype(amp, dev)
    out: dict[str, float] = {}
    for split in trained.task.eval_splits:
        metrics = evaluate(trained.model, trained.task, split, limit=saved.get("limit_test"), batch_size=int(doc.get("eval_batch_size", 256)), device=dev, amp_dtype=amp_dtype)
        out |= {f"{split}_{k}": v for k, v in metrics.items()}
    return out
