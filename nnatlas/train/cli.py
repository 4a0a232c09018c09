"""``nnatlas train`` and ``nnatlas eval``: arguments and the work they drive.

Options left out on the command line stay ``None`` here so that ``--resume`` can tell what the
user asked for from what the saved run already holds (see :func:`config_for_run`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

from nnatlas.train.checkpoint import atomic_write_text
from nnatlas.train.tasks.base import Option, all_options
from nnatlas.train.trainer import AMP, DEFAULTS, OPTIMIZERS, SCHEDULES, TrainConfig, config_for_run, evaluate_run, train

__all__ = ["add_train_parser", "add_eval_parser"]


def _model_arg(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. dropout=0.1); got {text!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw  # a bare word is a string
    if isinstance(value, list):
        value = tuple(value)
    return key, value


def _betas(text: str) -> tuple[float, float]:
    try:
        b1, b2 = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two numbers B1,B2 (e.g. 0.9,0.99); got {text!r}") from None
    return b1, b2


def _escaped(text: str) -> str:
    """argparse %-formats every help string (``%(default)s``): a task's own ``%`` must be doubled."""
    return text.replace("%", "%%")


def _add_task_options(p: argparse.ArgumentParser) -> None:
    """One flag per task option (``--image-size``, ...), grouped by the tasks that declare it.

    Every flag defaults to ``None`` (not given); the trainer refuses one that the model's task
    does not declare (:meth:`TrainConfig.check_task_options`).
    """
    groups: dict[tuple[str, ...], argparse._ArgumentGroup] = {}
    for name, (opt, kinds) in all_options().items():
        flag = "--" + name.replace("_", "-")
        key = tuple(kinds)
        if key not in groups:  # one heading per set of tasks that share options
            groups[key] = p.add_argument_group(f"options of the {', '.join(kinds)} task{'s' if len(kinds) > 1 else ''}")
        g = groups[key]
        if opt.type is bool:
            g.add_argument(flag, dest="task_" + name, action="store_true", default=None, help=_escaped(opt.help))
            g.add_argument("--no-" + name.replace("_", "-"), dest="task_" + name, action="store_false", help=f"turn {flag} off")
        else:
            help_text = _escaped(f"{opt.help} (default {opt.default})")
            g.add_argument(flag, dest="task_" + name, type=opt.type, default=None, help=help_text)


class _StderrHandler(logging.StreamHandler):
    """A handler that writes to whatever ``sys.stderr`` is when a record comes (tests swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def _configure_logging() -> None:
    """Rank 0 prints the library's progress lines; the other ranks print warnings only."""
    rank = int(os.environ.get("RANK", "0") or 0)
    logger = logging.getLogger("nnatlas")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s" if rank == 0 else f"[rank {rank}] %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO if rank == 0 else logging.WARNING)


def _cmd_train(args: argparse.Namespace) -> int:
    _configure_logging()
    given = {
        k: v
        for k, v in vars(args).items()
        if k in TrainConfig.__dataclass_fields__ and k != "model" and v is not None
    }
    if args.model_args:
        given["model_args"] = dict(args.model_args)
    else:
        given.pop("model_args", None)
    task_options = {name: getattr(args, "task_" + name) for name in all_options() if getattr(args, "task_" + name) is not None}
    if task_options:
        given["task_options"] = task_options
    for flag in ("resume", "overwrite"):
        if not given.get(flag):
            given.pop(flag, None)
    if args.seeds is not None:
        return _train_seeds(args.model, given, args.seeds, progress=args.progress)
    cfg = config_for_run(args.model, given)
    result = train(cfg, progress=None if args.progress is None else args.progress)
    if int(os.environ.get("RANK", "0") or 0) == 0:
        final = result.final
        metrics = "  ".join(f"{k} {v:.4f}" for k, v in final.items() if k.startswith("test_") and isinstance(v, float))
        print(f"{cfg.model} on {final['data']}: {metrics}  ({final['steps']} steps, {final['epochs']} epochs, {final['train_time_s']:.1f}s training)")
        print(f"run folder: {result.run_dir}")
    return 0


def _mean_std(rows: list[dict[str, Any]]) -> tuple[dict[str, float], dict[str, float]]:
    """Per numeric key of the first row: the mean and the sample standard deviation (n - 1; 0 for one row)."""
    mean, std = {}, {}
    for k, v0 in rows[0].items():
        if not isinstance(v0, (int, float)) or isinstance(v0, bool):
            continue
        values = [float(r[k]) for r in rows if isinstance(r.get(k), (int, float))]
        m = sum(values) / len(values)
        mean[k] = m
        std[k] = (sum((v - m) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else 0.0
    return mean, std


def _train_seeds(model: str, given: dict[str, Any], n: int, *, progress: bool | None) -> int:
    """``--seeds N``: the run N times, seeds S, S+1, ... (S = ``--seed``, default 0), each into OUT/seed-K.

    OUT/seeds.json holds each seed's final metrics (``runs``: the last evaluation, as final.json)
    and its metrics at the best evaluation (``at_best``: the weights of best.safetensors, picked
    by the task's ``best`` metric), with the mean and sample standard deviation of each.
    """
    if n < 1:
        raise ValueError(f"--seeds must be an integer >= 1; got {n}")
    first = given.pop("seed", 0)
    out = TrainConfig(model=model, out=given.pop("out", None)).run_dir
    finals: dict[str, dict[str, Any]] = {}
    at_best: dict[str, dict[str, Any]] = {}
    for seed in range(first, first + n):
        cfg = config_for_run(model, {**given, "seed": seed, "out": str(out / f"seed-{seed}")})
        result = train(cfg, progress=None if progress is None else progress)
        finals[str(seed)] = result.final
        at_best[str(seed)] = result.history[result.final["best_evaluation"] - 1] if result.history else {}
    if int(os.environ.get("RANK", "0") or 0) != 0:
        return 0
    mean, std = _mean_std(list(finals.values()))
    best_mean, best_std = _mean_std(list(at_best.values()))
    doc = {"model": model, "seeds": [int(s) for s in finals], "mean": mean, "std": std, "runs": finals,
           "at_best": {"mean": best_mean, "std": best_std, "runs": at_best}}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "seeds.json", json.dumps(doc, indent=1) + "\n")
    for what, m, sd in (("last evaluation", mean, std), ("best evaluation", best_mean, best_std)):
        shown = [k for k in m if k.startswith("test_")]
        print(f"{model} over {n} seeds, {what}: " + "  ".join(f"{k} {m[k]:.4f} ± {sd[k]:.4f}" for k in shown))
    print(f"training time per run: {mean.get('train_time_s', float('nan')):.1f} ± {std.get('train_time_s', 0.0):.1f} s")
    print(f"runs and seeds.json in: {out}")
    return 0


def add_train_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``nnatlas train``."""
    d = DEFAULTS
    p = sub.add_parser(
        "train",
        help="train a model on a data set (torchrun-ready)",
        description="Train a registered model; writes config.json, metrics.jsonl, final.json, curves.png, "
        "last/best.safetensors and resumable checkpoints into the run folder. "
        "Data-parallel: torchrun --nproc_per_node N -m nnatlas train MODEL ...",
    )
    p.add_argument("model", help="registered model name (nnatlas list)")
    g = p.add_argument_group("data")
    g.add_argument("--data", default=None, help="data set name (default: the model card's, see nnatlas show MODEL)")
    g.add_argument("--data-dir", default=None, help="data folder laid out like shared/data (default: $NNATLAS_DATA or ~/.cache/nnatlas)")
    g.add_argument("--limit-train", type=int, default=None, metavar="N", help="train on the first N examples")
    g.add_argument("--limit-test", type=int, default=None, metavar="N", help="evaluate on the first N examples")
    g = p.add_argument_group("optimisation (defaults: the model card's recipe, see nnatlas show MODEL; else these)")
    g.add_argument("--epochs", type=int, default=None, help=f"epochs (default {d['epochs']})")
    g.add_argument("--steps", type=int, default=None, help="optimizer steps instead of epochs")
    g.add_argument("--eval-every", type=int, default=None, metavar="STEPS", help="also evaluate every STEPS steps")
    g.add_argument("--batch-size", type=int, default=None, help=f"examples per step and process (default {d['batch_size']})")
    g.add_argument("--lr", type=float, default=None, help="learning rate (default 3e-3 for adam/adamw, 0.05 for sgd; x30 for tabular data)")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default=None, help=f"(default {d['optimizer']})")
    g.add_argument("--schedule", choices=SCHEDULES, default=None, help=f"learning-rate schedule per step (default {d['schedule']})")
    g.add_argument("--warmup", type=int, default=None, metavar="STEPS", help="warm-up steps of warmup_cosine and noam")
    g.add_argument("--min-lr", type=float, default=None, help="the floor of warmup_cosine (default lr / 10)")
    g.add_argument("--betas", type=_betas, default=None, metavar="B1,B2", help="Adam's betas (default 0.9,0.999)")
    g.add_argument("--weight-decay", type=float, default=None, help="(default 0, 0.01 for adamw)")
    g.add_argument("--momentum", type=float, default=None, help=f"SGD momentum (default {d['momentum']})")
    g.add_argument("--clip-grad", type=float, default=None, metavar="NORM", help="clip the gradient norm")
    g.add_argument("--ema", type=float, default=None, metavar="DECAY",
                   help="evaluate and save an exponential moving average of the weights (e.g. 0.999)")
    g.add_argument("--patience", type=int, default=None, metavar="EVALS",
                   help="early stopping: stop when the task's best metric has not improved for this many evaluations")
    g.add_argument("--stop-rule", choices=("best", "window"), default=None,
                   help="how --patience counts: best (default) or window (worse than the mean of the PATIENCE evaluations before: Kipf & Welling's code)")
    g.add_argument("--seed", type=int, default=None, help="(default 0)")
    g.add_argument("--seeds", type=int, default=None, metavar="N",
                   help="train N runs, seeds SEED..SEED+N-1, into OUT/seed-K; OUT/seeds.json gets each final, the mean and std")
    g.add_argument("--model-arg", dest="model_args", action="append", type=_model_arg, default=None, metavar="KEY=VALUE",
                   help="a config override for the model, e.g. dropout=0.1 (repeatable)")
    _add_task_options(p)
    g = p.add_argument_group("hardware")
    g.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N (default auto; torchrun ranks take cuda:LOCAL_RANK)")
    g.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's; 1 is fastest on a busy machine)")
    g.add_argument("--amp", nargs="?", const="auto", choices=AMP, default=None, help="mixed precision: bf16, fp16 (CUDA, with gradient scaling), auto")
    g.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    g = p.add_argument_group("run folder")
    g.add_argument("--out", default=None, metavar="DIR", help="run folder (default runs/MODEL)")
    g.add_argument("--resume", action="store_true", default=None, help="continue the run in --out from its last checkpoint")
    g.add_argument("--overwrite", action="store_true", default=None, help="replace a run already in --out")
    g.add_argument("--checkpoint-every", type=int, default=None, metavar="STEPS", help="also checkpoint every STEPS steps (default: each epoch)")
    g.add_argument("--no-report", dest="report", action="store_false", default=None, help="skip the model report (summary, diagram)")
    g.add_argument("--progress", dest="progress", action="store_true", default=None, help="progress bars even when stderr is not a terminal")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="one line per epoch even on a terminal")
    p.set_defaults(func=_cmd_train)
    return p


def _cmd_eval(args: argparse.Namespace) -> int:
    _configure_logging()
    metrics = evaluate_run(args.run_dir, weights=args.weights, device=args.device, data_dir=args.data_dir)
    final_path = os.path.join(args.run_dir, "final.json")
    saved: dict[str, Any] = {}
    if args.weights == "last" and os.path.isfile(final_path):
        with open(final_path, encoding="utf-8") as f:
            saved = json.load(f)
    for k, v in metrics.items():
        ref = saved.get(k)
        note = f"  (final.json {ref:.4f})" if isinstance(ref, float) else ""
        print(f"{k:<14} {v:.4f}{note}")
    if args.json:
        print(json.dumps(metrics))
    return 0


def add_eval_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``nnatlas eval``."""
    p = sub.add_parser("eval", help="recompute a run's test metrics from its saved weights",
                       description="Rebuild the model from DIR/config.json, load DIR/last.safetensors (or best) and evaluate it.")
    p.add_argument("run_dir", metavar="DIR", help="a run folder written by nnatlas train")
    p.add_argument("--weights", choices=("last", "best"), default="last")
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir", default=None, help="data folder (default: the one the run used)")
    p.add_argument("--json", action="store_true", help="also print the metrics as one JSON line")
    p.set_defaults(func=_cmd_eval)
    return p
