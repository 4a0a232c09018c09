"""``nnatlas translate RUN_DIR TEXT ...``: translate sentences with a trained translation run.

A thin command over :func:`nnatlas.load`: the run's model and its task, which holds the run's
tokenizer and decoding settings (:meth:`nnatlas.train.tasks.translation.TranslationTask.translate`).
A run of another task is refused in one line.
"""

from __future__ import annotations

import argparse

from nnatlas.train.trainer import load

__all__ = ["add_translate_parser"]


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1; got {value}")
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0; got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0; got {value}")
    return value


def _cmd_translate(args: argparse.Namespace) -> int:
    trained = load(args.run_dir, weights=args.weights, device=args.device)
    if trained.kind != "translation":
        raise ValueError(
            f"{args.run_dir} is a {trained.kind} run of {trained.plan.model}; nnatlas translate needs a translation run"
        )
    lines = trained.task.translate(
        trained.model, args.text, beam_size=args.beam_size, length_penalty=args.length_penalty
    )
    for line in lines:
        print(line)
    return 0


def add_translate_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``nnatlas translate``."""
    p = sub.add_parser(
        "translate",
        help="translate sentences with a trained translation run",
        description="Load DIR's model and tokenizer (nnatlas.load) and print one translation per TEXT.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a translation run folder written by nnatlas train")
    p.add_argument("text", nargs="+", metavar="TEXT", help="a sentence in the run's source language (repeatable)")
    p.add_argument(
        "--beam-size",
        type=_at_least_one,
        default=None,
        metavar="K",
        help="beam width; 1 decodes greedily (default: the run's --beam-size)",
    )
    p.add_argument(
        "--length-penalty",
        type=_non_negative,
        default=None,
        metavar="ALPHA",
        help="GNMT length penalty of beam search (default: the run's)",
    )
    p.add_argument(
        "--weights", choices=("best", "last"), default="best", help="best.safetensors (default) or last.safetensors"
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (default cpu)")
    p.set_defaults(func=_cmd_translate)
    return p
