"""The training loop: one process or many (torchrun), resumable to the bit.

:func:`train` runs a :class:`TrainConfig` and leaves a run folder::

    config.json        the configuration and the resolved plan (overrides, input size, normalisation)
    metrics.jsonl      one JSON object per epoch: epoch, train_loss, test_* metrics, lr, time_s
    final.json         the final metrics (the last epoch's), the best epoch, times
    curves.png         losses and metrics per epoch
    last.safetensors   the weights at the end;  best.safetensors  at the best evaluation
    checkpoint.manifest.json + checkpoints/   the resumable state (see ``checkpoint.py``)
    model.txt, summary.txt, model.svg         the model report

Reproducibility: randomness never comes from a generator whose state would have to be
guessed after a crash. The data order of epoch ``e`` is a permutation drawn from a generator
seeded with ``(seed, e)``; the augmentation of step ``s`` on rank ``r`` from ``(seed, r, s)``;
and the global torch generator (dropout) is re-seeded from ``(seed, r, s)`` before every
step. A checkpoint therefore needs only the step counters to continue the same stream of
batches and masks; it also stores the torch, CUDA, Python and NumPy generator states and
restores them on resume for any code outside the loop that draws from them.
"""

from __future__ import annotations

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
from torch.utils.data import Dataset, Subset

import nnatlas
from nnatlas.inspect.diagram import GraphvizMissingError
from nnatlas.train import checkpoint as ckpt
from nnatlas.train.distributed import DistContext, setup, shard_order
from nnatlas.train.tasks import Plan, Task, check_fit, default_dataset, gather, make_task, resolve

__all__ = ["TrainConfig", "TrainResult", "DivergedError", "train", "evaluate", "evaluate_run", "config_for_run", "write_model_report"]

log = logging.getLogger(__name__)

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("none", "cosine", "step", "onecycle")
AMP = ("off", "auto", "bf16", "fp16")
DEFAULT_LR = {"sgd": 0.05, "adam": 3e-3, "adamw": 3e-3}
TABULAR_LR_SCALE = 30  # linear models on a few hundred tabular rows take few steps: a larger rate (0.09 for adam)
DEFAULT_WEIGHT_DECAY = {"sgd": 0.0, "adam": 0.0, "adamw": 0.01}
# Options that may differ when a run is resumed; every other one must equal the saved run's.
RESUME_FREE = frozenset({"device", "threads", "out", "resume", "overwrite", "data_dir", "report", "compile", "checkpoint_every", "patience"})


class DivergedError(ValueError):
    """The loss became NaN or infinite; the run stopped before the bad step changed any weight."""


@dataclass
class TrainConfig:
    """Everything a run depends on (``config.json`` holds it)."""

    model: str
    data: str | None = None  # None: the model's default data set (see tasks.default_dataset)
    data_dir: str | None = None
    epochs: int = 8
    batch_size: int = 32
    lr: float | None = None  # None: DEFAULT_LR[optimizer]
    optimizer: str = "adam"
    schedule: str = "onecycle"
    weight_decay: float | None = None  # None: DEFAULT_WEIGHT_DECAY[optimizer]
    momentum: float = 0.9  # SGD only
    seed: int = 0
    device: str = "auto"
    threads: int | None = None  # torch intra-op threads on CPU; None: torch's default
    amp: str = "off"
    compile: bool = False
    image_size: int | None = None
    augment: bool = True  # random shifts for image classification
    clip_grad: float | None = None
    patience: int | None = None
    checkpoint_every: int = 0  # steps between mid-epoch checkpoints; 0: at the end of each epoch only
    limit_train: int | None = None
    limit_test: int | None = None
    model_args: dict[str, Any] = field(default_factory=dict)
    out: str | None = None  # None: runs/MODEL
    resume: bool = False
    overwrite: bool = False
    report: bool = True

    def validate(self) -> None:
        """Raise ``ValueError`` (one line) for any option that cannot run; no work is done."""
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ValueError(msg)

        nnatlas.card(self.model)  # UnknownModelError (a KeyError) with suggestions
        need(isinstance(self.epochs, int) and self.epochs >= 1, f"--epochs must be an integer >= 1; got {self.epochs}")
        need(self.batch_size >= 1, f"--batch-size must be >= 1; got {self.batch_size}")
        need(self.optimizer in OPTIMIZERS, f"--optimizer must be one of {', '.join(OPTIMIZERS)}; got {self.optimizer!r}")
        need(self.schedule in SCHEDULES, f"--schedule must be one of {', '.join(SCHEDULES)}; got {self.schedule!r}")
        need(self.amp in AMP, f"--amp must be one of {', '.join(AMP)}; got {self.amp!r}")
        need(self.lr is None or (math.isfinite(self.lr) and self.lr > 0), f"--lr must be a positive number; got {self.lr}")
        need(self.weight_decay is None or self.weight_decay >= 0, f"--weight-decay must be >= 0; got {self.weight_decay}")
        need(0 <= self.momentum < 1, f"--momentum must be in [0, 1); got {self.momentum}")
        need(self.clip_grad is None or self.clip_grad > 0, f"--clip-grad must be > 0; got {self.clip_grad}")
        need(self.patience is None or self.patience >= 1, f"--patience must be >= 1; got {self.patience}")
        need(self.checkpoint_every >= 0, f"--checkpoint-every must be >= 0 steps; got {self.checkpoint_every}")
        need(self.limit_train is None or self.limit_train >= 2, f"--limit-train must be >= 2; got {self.limit_train}")
        need(self.limit_test is None or self.limit_test >= 1, f"--limit-test must be >= 1; got {self.limit_test}")
        need(self.image_size is None or self.image_size >= 1, f"--image-size must be >= 1; got {self.image_size}")
        need(self.seed >= 0, f"--seed must be >= 0; got {self.seed}")
        need(self.threads is None or self.threads >= 1, f"--threads must be >= 1; got {self.threads}")
        _device(self.device)

    @property
    def run_dir(self) -> Path:
        return Path(self.out) if self.out else Path("runs") / self.model

    def learning_rate(self, plan: Plan) -> float:
        """``lr``, or the optimizer's default (scaled up for tabular data, see ``TABULAR_LR_SCALE``)."""
        if self.lr is not None:
            return self.lr
        return DEFAULT_LR[self.optimizer] * (TABULAR_LR_SCALE if plan.kind == "vector" else 1)


@dataclass
class TrainResult:
    """What :func:`train` returns: the final metrics, the run folder and the trained model."""

    final: dict[str, Any]
    history: list[dict[str, Any]]
    run_dir: Path
    model: nn.Module
    plan: Plan


def config_for_run(model: str, given: Mapping[str, Any]) -> TrainConfig:
    """A :class:`TrainConfig` from explicitly given options.

    Without ``resume`` the defaults fill the rest. With ``resume`` the saved run's
    ``config.json`` fills the rest, and a given option that differs from the saved one
    (other than those in ``RESUME_FREE``) is an error: the resumed run would not be the
    same run.
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
    saved = _read_json(path)["config"]
    if saved.get("model") != model:
        raise ValueError(f"--resume: the run in {cfg.run_dir} trains {saved.get('model')!r}, not {model!r}")
    for key, value in given.items():
        if key not in RESUME_FREE and key in saved and saved[key] != _jsonable(value):
            raise ValueError(f"--resume: the run in {cfg.run_dir} has {key}={saved[key]!r}; got {value!r} (resume with the same options, or train into a new --out)")
    merged = {k: v for k, v in saved.items() if k in names and k not in RESUME_FREE}
    merged.update(given)
    merged.pop("model", None)
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


def _limit(ds: Dataset, n: int | None) -> Dataset:
    if n is None or n >= len(ds):  # type: ignore[arg-type]
        return ds
    return Subset(ds, range(n))


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
        return data.load(cfg.data or default_dataset(cfg.model), data_dir=cfg.data_dir)

    # Rank 0 first, so that a download happens once; the others read what it left.
    bundle = load() if ctx.is_main else None
    ctx.barrier()
    return bundle if bundle is not None else load()


def _batches(order: Tensor, batch_size: int) -> list[Tensor]:
    batches = list(order.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:  # batch norm cannot train on one example
        batches.pop()
    return batches


def _make_optimizer(cfg: TrainConfig, params: Iterator[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    wd = cfg.weight_decay if cfg.weight_decay is not None else DEFAULT_WEIGHT_DECAY[cfg.optimizer]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=wd)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    return torch.optim.AdamW(params, lr=lr, weight_decay=wd)


def _make_schedule(cfg: TrainConfig, opt: torch.optim.Optimizer, total_steps: int, lr: float) -> torch.optim.lr_scheduler.LRScheduler:
    """A per-step schedule over the whole run (``total_steps`` optimizer steps)."""
    total = max(1, total_steps)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    if cfg.schedule == "step":  # x0.1 after each third of the run
        return torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, total // 3), gamma=0.1)
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.LambdaLR(opt, _one_cycle(total))
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
    plan: Plan,
    ds: Dataset,
    *,
    batch_size: int,
    device: torch.device,
    ctx: DistContext | None = None,
    amp_dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """The task's metrics of ``model`` on ``ds`` (each rank scores its share, sums are combined)."""
    ctx = ctx or DistContext()
    n = len(ds)  # type: ignore[arg-type]
    mine = torch.arange(ctx.rank, n, ctx.world_size)  # no padding: every example counts once
    sums: Tensor | None = None
    was = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.autocast(device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
            for idx in mine.split(batch_size):
                x, y = gather(ds, idx)
                x, y = plan.inputs(x.to(device)), plan.targets(y.to(device))
                s = task.sums(model(x), y)
                sums = s if sums is None else sums + s
    finally:
        model.train(was)
    if sums is None:  # a rank with no test examples contributes zeros
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
    epochs = [h["epoch"] for h in history]
    for key, label in (("train_loss", "train"), ("test_loss", "test")):
        ax_loss.plot(epochs, [h.get(key, math.nan) for h in history], marker="o", ms=3, label=label)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    metric_keys = [k for k in (history[0] if history else {}) if k.startswith("test_") and k != "test_loss"]
    for key in metric_keys:
        ax_metric.plot(epochs, [h.get(key, math.nan) for h in history], marker="o", ms=3, label=key[5:])
    ax_metric.set_xlabel("epoch")
    ax_metric.set_ylabel("test metric")
    if metric_keys:
        ax_metric.legend()
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    ckpt.atomic_write_bytes(path, buf.getvalue())


def write_model_report(model: nn.Module, example: Tensor, out_dir: Path) -> list[Path]:
    """Write the model's description into ``out_dir``; returns the files written.

    ``model.txt`` (the module tree and parameter counts), ``summary.txt`` (``nnatlas.summary``),
    ``model.svg`` and one ``model_<Block>.svg`` per block type (``nnatlas.diagram``; without
    Graphviz, ``model.dot``). A failing report is logged as a warning and does not stop training.
    """
    out_dir = Path(out_dir)
    written = []
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    ckpt.atomic_write_text(out_dir / "model.txt", f"{model}\n\nparameters: {total:,} ({trainable:,} trainable)\n")
    written.append(out_dir / "model.txt")
    was = model.training
    model.eval()
    try:  # the report must not cost the user a training run: a failure is a warning
        try:
            ckpt.atomic_write_text(out_dir / "summary.txt", str(nnatlas.summary(model, example)) + "\n")
            written.append(out_dir / "summary.txt")
        except Exception as err:
            log.warning("model report: nnatlas.summary failed: %s: %s", type(err).__name__, err)
        try:
            written += nnatlas.diagram(model, example).render_all(out_dir / "model.svg", format="svg")
        except GraphvizMissingError as err:
            log.warning("model report: %s", err)
        except Exception as err:
            log.warning("model report: nnatlas.diagram failed: %s: %s", type(err).__name__, err)
    finally:
        model.train(was)
    return written


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def _fmt(row: Mapping[str, Any]) -> str:
    """One epoch's row as a log line: ``train_loss 0.1234  test_acc 0.9812  lr 0.001  3.2s``."""
    parts = []
    for k, v in row.items():
        if k == "epoch":
            continue
        if k == "time_s":
            parts.append(f"{v:.1f}s")
        elif k == "lr":
            parts.append(f"lr {v:.3g}")
        else:
            parts.append(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}")
    return "  ".join(parts)


def _prepare_run_dir(cfg: TrainConfig, ctx: DistContext) -> None:
    """Check the run folder before any work: a new run never overwrites an old one by accident."""
    run = cfg.run_dir
    if cfg.resume:
        if not ckpt.has_checkpoint(run):
            raise ValueError(f"--resume: {run} holds no checkpoint ({ckpt.MANIFEST} is absent); start the run without --resume")
        return
    taken = [p for p in ("config.json", ckpt.MANIFEST, "final.json") if (run / p).exists()]
    if taken and not cfg.overwrite:
        raise ValueError(f"{run} already holds a run ({', '.join(taken)}); pass --resume to continue it, --overwrite to replace it, or another --out")
    if taken and ctx.is_main:
        (run / ckpt.MANIFEST).unlink(missing_ok=True)  # first, so that no stale checkpoint can be resumed
        for p in list((run / ckpt.CHECKPOINT_DIR).glob("step-*")) if (run / ckpt.CHECKPOINT_DIR).is_dir() else []:
            p.unlink()
        for name in ("final.json", "metrics.jsonl", "last.safetensors", "best.safetensors", "curves.png"):
            (run / name).unlink(missing_ok=True)


def train(cfg: TrainConfig, *, progress: bool | None = None) -> TrainResult:
    """Run ``cfg`` (under torchrun: one rank of a data-parallel run) and return the result.

    ``progress``: tqdm bars (default: when stderr is a terminal); otherwise one log line per
    epoch. Only rank 0 writes files and reports.
    """
    cfg.validate()
    from nnatlas import data as _data

    info = _data.dataset_info(cfg.data or default_dataset(cfg.model))  # unknown name: one-line error
    check_fit(cfg.model, info.name, info.task)  # before any data is loaded or downloaded
    device = _device(cfg.device)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    ctx = setup(device.type)
    try:
        if device.type == "cuda" and ctx.enabled:
            device = torch.device("cuda", ctx.local_rank)
        return _Run(cfg, info.name, device, ctx, progress).run()
    finally:
        ctx.close()


class _Run:
    def __init__(self, cfg: TrainConfig, data_name: str, device: torch.device, ctx: DistContext, progress: bool | None) -> None:
        self.cfg, self.device, self.ctx = cfg, device, ctx
        self.data_name = data_name
        self.run_dir = cfg.run_dir
        self.progress = (sys.stderr.isatty() if progress is None else progress) and ctx.is_main
        self.amp_dtype = _amp_dtype(cfg.amp, device)

    # -- set-up -------------------------------------------------------------------------------

    def _setup(self) -> None:
        cfg, ctx = self.cfg, self.ctx
        _prepare_run_dir(cfg, ctx)
        self.resume_from = ckpt.load_checkpoint(self.run_dir, model_name=cfg.model) if cfg.resume else None
        if self.resume_from is not None and self.resume_from.state.get("world_size") != ctx.world_size:
            raise ValueError(
                f"--resume: the checkpoint was written by {self.resume_from.state.get('world_size')} processes; this run has {ctx.world_size} (the data order differs)"
            )
        bundle = _load_data(cfg, ctx)
        self.bundle = bundle
        self.train_ds = _limit(bundle.train, cfg.limit_train)
        self.test_ds = _limit(bundle.test, cfg.limit_test)
        torch.manual_seed(cfg.seed)  # the initial weights
        resolved = resolve(cfg.model, bundle, image_size=cfg.image_size, model_args=cfg.model_args, augment=cfg.augment)
        self.plan = resolved.plan
        self.task = make_task(self.plan)
        self.model = resolved.model.to(self.device)
        self.steps_per_epoch = len(_batches(torch.empty(-(-len(self.train_ds) // ctx.world_size)), cfg.batch_size))  # type: ignore[arg-type]
        self.lr = cfg.learning_rate(self.plan)
        self.opt = _make_optimizer(cfg, self.model.parameters(), self.lr)
        self.sched = _make_schedule(cfg, self.opt, cfg.epochs * self.steps_per_epoch, self.lr)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.eval_batch = max(cfg.batch_size, 256)

        # Counters (restored on resume).
        self.epoch = 0  # the epoch being run (0-based)
        self.step_in_epoch = 0  # batches of this epoch already consumed
        self.global_step = 0
        self.loss_sum, self.loss_count = 0.0, 0  # this epoch's training loss so far
        self.history: list[dict[str, Any]] = []
        self.best_value: float | None = None
        self.best_epoch = 0
        self.bad_epochs = 0
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
                if cfg.report:
                    x, _ = gather(self.train_ds, torch.arange(min(2, len(self.train_ds))))  # type: ignore[arg-type]
                    write_model_report(self.model, self.plan.inputs(x).to(self.device), self.run_dir)
            else:
                self._write_metrics()
            log.info(
                "%s %s on %s: %d train / %d test examples, %s, %d epochs x %d steps, %s, %s%s",
                "resuming" if self.resume_from is not None else "training",
                cfg.model, self.plan.data, len(self.train_ds), len(self.test_ds),  # type: ignore[arg-type]
                f"input {self.plan.size[0]}x{self.plan.size[1]}" if self.plan.size else f"input {tuple(bundle.input_shape)}",
                cfg.epochs, self.steps_per_epoch, self.device,
                f"{ctx.world_size} processes ({ctx.backend})" if ctx.enabled else "1 process",
                f", from epoch {self.epoch + 1} step {self.step_in_epoch}" if self.resume_from is not None else "",
            )

    def _config_doc(self) -> dict[str, Any]:
        return {
            "config": asdict(self.cfg) | {"data": self.plan.data},
            "plan": self.plan.to_json(),
            "run_id": self.run_id,
            "world_size": self.ctx.world_size,
            "lr": self.lr,
            "steps_per_epoch": self.steps_per_epoch,
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
            "bad_epochs": self.bad_epochs,
            "train_time": self.train_time,
            "samples": self.samples,
            "optimizer": opt_plain,
            "scheduler": self.sched.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_plain,
        }
        ckpt.save_checkpoint(self.run_dir, model_name=self.cfg.model, step=self.global_step, tensors=tensors, state=_jsonable(state))
        self.last_checkpoint = self.global_step

    def _restore(self, c: ckpt.Checkpoint) -> None:
        config = _read_json(self.run_dir / "config.json")
        if config.get("run_id") != c.state.get("run_id"):
            raise ckpt.CheckpointError(f"the checkpoint in {self.run_dir} belongs to another run than its config.json (run ids differ)")
        if config.get("plan") != _jsonable(self.plan.to_json()):
            raise ValueError(f"--resume: the model/data plan differs from the saved run's ({self.run_dir / 'config.json'}); the data or model code changed")
        ckpt.load_model_state(c, self.model, str(c.path))
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
        self.best_value, self.best_epoch, self.bad_epochs = s["best_value"], s["best_epoch"], s["bad_epochs"]
        self.train_time, self.samples = s["train_time"], s["samples"]
        self.last_checkpoint = self.global_step

    # -- files --------------------------------------------------------------------------------

    def _write_metrics(self) -> None:
        lines = "".join(json.dumps(h) + "\n" for h in self.history)
        ckpt.atomic_write_text(self.run_dir / "metrics.jsonl", lines)
        if self.history:
            write_curves(self.run_dir / "curves.png", self.history, f"{self.cfg.model} on {self.plan.data}")

    # -- the loop -----------------------------------------------------------------------------

    def _step(self, idx: Tensor) -> float:
        cfg, plan = self.cfg, self.plan
        x, y = gather(self.train_ds, idx)
        aug = torch.Generator().manual_seed(derive_seed(cfg.seed, "augment", self.ctx.rank, self.global_step)) if plan.augment else None
        # Resize, shift and normalise on the training device (the GPU, when there is one).
        x = plan.inputs(x.to(self.device, non_blocking=True), generator=aug)
        y = plan.targets(y.to(self.device, non_blocking=True))
        torch.manual_seed(derive_seed(cfg.seed, "step", self.ctx.rank, self.global_step))  # dropout masks of this step
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.bfloat16, enabled=self.amp_dtype is not None):
            out = self.train_model(x)
        loss = self.task.loss(out, y)
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
        return v

    def _end_epoch(self, epoch_time: float) -> bool:
        """Evaluate, record, save; returns whether early stopping ends the run."""
        cfg, ctx = self.cfg, self.ctx
        if ctx.enabled:  # DDP broadcasts buffers before each forward; after the last one they differ
            for b in self.model.buffers():
                torch.distributed.broadcast(b, src=0)
        metrics = evaluate(self.model, self.task, self.plan, self.test_ds, batch_size=self.eval_batch, device=self.device, ctx=ctx, amp_dtype=self.amp_dtype)
        row: dict[str, Any] = {"epoch": self.epoch + 1, "train_loss": self.loss_sum / max(1, self.loss_count)}
        row |= {f"test_{k}": v for k, v in metrics.items()}
        row["lr"] = self.opt.param_groups[0]["lr"]
        row["time_s"] = round(epoch_time, 3)
        self.history.append(row)
        value = metrics[self.task.best]
        improved = math.isfinite(value) and self.task.improved(value, self.best_value)
        if improved:
            self.best_value, self.best_epoch, self.bad_epochs = value, self.epoch + 1, 0
            if ctx.is_main:
                ckpt.save_weights(self.run_dir / "best.safetensors", self.model, model_name=cfg.model, extra={"epoch": str(self.epoch + 1)})
        else:
            self.bad_epochs += 1
        self.epoch += 1
        self.step_in_epoch = 0
        self.loss_sum, self.loss_count = 0.0, 0
        if ctx.is_main:
            self._write_metrics()
            log.info("epoch %d/%d  %s", row["epoch"], cfg.epochs, _fmt(row))
        self._save()
        return cfg.patience is not None and self.bad_epochs >= cfg.patience

    def run(self) -> TrainResult:
        self._setup()
        cfg, ctx = self.cfg, self.ctx
        stopped_early = self.resume_from is not None and cfg.patience is not None and self.bad_epochs >= cfg.patience
        n = len(self.train_ds)  # type: ignore[arg-type]
        while self.epoch < cfg.epochs and not stopped_early:
            gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "order", self.epoch))
            batches = _batches(shard_order(n, world_size=ctx.world_size, rank=ctx.rank, generator=gen), cfg.batch_size)
            bar = None
            if self.progress:
                from tqdm.auto import tqdm

                bar = tqdm(total=len(batches), initial=self.step_in_epoch, desc=f"epoch {self.epoch + 1}/{cfg.epochs}", leave=False, dynamic_ncols=True)
            self.model.train()
            t0 = time.perf_counter()
            try:
                for b in range(self.step_in_epoch, len(batches)):
                    idx = batches[b]
                    v = self._step(idx)
                    self.global_step += 1
                    self.step_in_epoch = b + 1
                    self.loss_sum += v * len(idx)
                    self.loss_count += len(idx)
                    self.samples += len(idx) * ctx.world_size
                    if bar is not None:
                        bar.update(1)
                        post = {"loss": f"{self.loss_sum / self.loss_count:.4f}"}
                        if self.history:  # the last evaluation's metric beside the running loss
                            key = f"test_{self.task.best}"
                            post[key] = f"{self.history[-1][key]:.4f}"
                        bar.set_postfix(post, refresh=False)
                    if cfg.checkpoint_every and self.global_step % cfg.checkpoint_every == 0 and self.step_in_epoch < len(batches):
                        self.train_time += time.perf_counter() - t0
                        t0 = time.perf_counter()
                        self._save()
            finally:
                if bar is not None:
                    bar.close()
            dt = time.perf_counter() - t0
            self.train_time += dt
            stopped_early = self._end_epoch(dt)
            if stopped_early and ctx.is_main:
                log.info("early stopping: test %s has not improved for %d epochs (best %.4f at epoch %d)", self.task.best, self.bad_epochs, self.best_value, self.best_epoch)

        ctx.check_in_sync(self.model)
        last = self.history[-1] if self.history else {}
        final = {
            "model": cfg.model,
            "data": self.plan.data,
            "epochs": len(self.history),
            **{k: v for k, v in last.items() if k.startswith("test_")},
            "train_loss": last.get("train_loss"),
            "best_epoch": self.best_epoch,
            f"best_test_{self.task.best}": self.best_value,
            "stopped_early": stopped_early,
            "train_time_s": round(self.train_time, 3),
            "samples_per_s": round(self.samples / self.train_time, 1) if self.train_time > 0 else None,
            "world_size": ctx.world_size,
            "device": str(self.device),
        }
        if ctx.is_main:
            ckpt.save_weights(self.run_dir / "last.safetensors", self.model, model_name=cfg.model, extra={"epoch": str(len(self.history))})
            _write_json(self.run_dir / "final.json", final)
        return TrainResult(final=final, history=self.history, run_dir=self.run_dir, model=self.model, plan=self.plan)


def evaluate_run(run_dir: Path, *, weights: str = "last", device: str = "auto", data_dir: str | None = None) -> dict[str, float]:
    """Recompute a run's test metrics from its saved weights (the model is rebuilt from ``config.json``)."""
    run_dir = Path(run_dir)
    if weights not in ("last", "best"):
        raise ValueError(f"weights must be 'last' or 'best'; got {weights!r}")
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise ValueError(f"{run_dir} is not a run folder: {cfg_path.name} is absent")
    doc = _read_json(cfg_path)
    try:
        saved, plan = doc["config"], Plan.from_json(doc["plan"])
    except KeyError as err:
        raise ValueError(f"{cfg_path} lacks {err}; it was not written by nnatlas train") from None
    from nnatlas import data as _data

    bundle = _data.load(plan.data, data_dir=data_dir if data_dir is not None else saved.get("data_dir"))
    test = _limit(bundle.test, saved.get("limit_test"))
    dev = _device(device)
    model = nnatlas.create(plan.model, **plan.overrides)
    ckpt.load_weights(run_dir / f"{weights}.safetensors", model, model_name=plan.model)
    model.to(dev)
    amp = saved.get("amp", "off")
    if amp == "fp16" and dev.type != "cuda":
        log.warning("the run trained with --amp fp16; evaluating on %s in float32, so metrics may differ slightly", dev)
        amp = "off"
    amp_dtype = _amp_dtype(amp, dev)
    metrics = evaluate(model, make_task(plan), plan, test, batch_size=int(doc.get("eval_batch_size", 256)), device=dev, amp_dtype=amp_dtype)
    return {f"test_{k}": v for k, v in metrics.items()}
