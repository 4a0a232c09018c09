"""``nnatlas generate RUN_DIR --prompt TEXT --tokens N``: text from a trained language model.

A thin command over :func:`nnatlas.load` (the run's model in eval mode and its task, which
knows the vocabulary) and :func:`nnatlas.models.generation.generate` (the one sampling loop:
temperature, top-k, the model's cache). A run of another task kind is refused in one line.
"""

from __future__ import annotations

import argparse
import sys

import torch

from nnatlas.train.trainer import load

__all__ = ["add_generate_parser", "generate_text"]


def generate_text(run_dir: str, prompt: str, tokens: int, *, temperature: float = 1.0, top_k: int | None = None,
                  seed: int = 0, weights: str = "best", device: str = "cpu") -> str:
    """The prompt and ``tokens`` characters the run's language model writes after it."""
    if tokens < 0:
        raise ValueError(f"--tokens must be >= 0; got {tokens}")
    if not prompt:
        raise ValueError("--prompt must hold at least one character")
    trained = load(run_dir, weights=weights, device=device)
    if trained.kind != "language_model":
        raise ValueError(f"{run_dir} is a {trained.kind} run ({trained.plan.model}); nnatlas generate takes language_model runs")
    torch.manual_seed(seed)  # nothing should draw from it (eval mode), but a model that does stays reproducible
    return trained.task.sample(trained.model, prompt, tokens, temperature=temperature, top_k=top_k, seed=seed)


def _cmd_generate(args: argparse.Namespace) -> int:
    text = generate_text(args.run_dir, args.prompt, args.tokens, temperature=args.temperature, top_k=args.top_k,
                         seed=args.seed, weights=args.weights, device=args.device)
    sys.stdout.write(text + "\n")
    return 0


def add_generate_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``nnatlas generate``."""
    p = sub.add_parser("generate", help="continue a prompt with a trained language model",
                       description="Load RUN_DIR's language model (nnatlas.load) and sample --tokens characters after --prompt.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a language_model run folder written by nnatlas train")
    p.add_argument("--prompt", default="\n", help="the text to continue (default: a newline, as nanoGPT's sample.py)")
    p.add_argument("--tokens", type=int, default=500, metavar="N", help="how many tokens to generate (default 500)")
    p.add_argument("--temperature", type=float, default=1.0, metavar="T", help="softmax temperature; 0 is greedy (default 1.0)")
    p.add_argument("--top-k", type=int, default=None, metavar="K", help="sample from the K most likely tokens only")
    p.add_argument("--seed", type=int, default=0, help="the sampling generator's seed (default 0)")
    p.add_argument("--weights", choices=("best", "last"), default="best", help="best.safetensors or last.safetensors (default best)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (default cpu)")
    p.set_defaults(func=_cmd_generate)
    return p
