"""``nnatlas sample RUN_DIR --n 64 --out samples.png``: images from a trained generative model.

A thin command over :func:`nnatlas.load` (the run's model in eval mode and its task) and the
task's own ``sample``: the diffusion task's DDIM (``--steps``, ``--eta``) or ancestral DDPM
sampler, the VAE task's decoder means of prior draws. Writes a PNG grid and, with ``--tensors``,
the images themselves (safetensors, float32 in [0, 1]) for a measure of one's own (FID, a judge).
A run of another task kind, or an option its sampler does not read, is refused in one line.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from torch import Tensor

from nnatlas.train import checkpoint as ckpt
from nnatlas.train.tasks.diffusion import DDIM_SEED, DDPM_SEED
from nnatlas.train.tasks.generative import ARTEFACT_SEED, save_grid
from nnatlas.train.trainer import load

__all__ = ["add_sample_parser", "sample_images"]

KINDS = ("diffusion", "vae")
MAX_SAMPLES = 100_000  # a typo guard: 10^5 MNIST images are 300 MB of float32


def sample_images(run_dir: str | Path, n: int, *, sampler: str | None = None, steps: int | None = None, eta: float | None = None,
                  seed: int | None = None, weights: str = "last", device: str = "cpu") -> tuple[Tensor, str]:
    """``n`` images (n, C, H, W) in [0, 1] from the run's model and a one-line description of how they were drawn.

    Diffusion runs: ``sampler`` "ddim" (default; ``steps`` and ``eta`` default the run's --ddim-steps and --ddim-eta)
    or "ddpm" (ancestral, T steps). VAE runs: the decoder's means of z ~ N(0, I); ``sampler``, ``steps`` and
    ``eta`` are diffusion options and refused. The same ``seed`` gives the same images; its default is the seed
    of the run's own grids (``--n 64`` redraws the run's DDIM grid, or its prior samples).
    """
    if not (isinstance(n, int) and 1 <= n <= MAX_SAMPLES):
        raise ValueError(f"--n must be an integer in [1, {MAX_SAMPLES}]; got {n!r}")
    if seed is not None and seed < 0:
        raise ValueError(f"--seed must be >= 0; got {seed}")
    trained = load(run_dir, weights=weights, device=device)
    if trained.kind not in KINDS:
        raise ValueError(f"{run_dir} is a {trained.kind} run ({trained.plan.model}); nnatlas sample takes {' or '.join(KINDS)} runs")
    name = f"{trained.plan.model} ({trained.plan.data}, {trained.weights} weights)"
    if trained.kind == "vae":
        given = [flag for flag, v in (("--sampler", sampler), ("--steps", steps), ("--eta", eta)) if v is not None]
        if given:
            raise ValueError(f"{', '.join(given)}: options of diffusion runs; a vae run decodes prior draws z ~ N(0, I)")
        seed = ARTEFACT_SEED if seed is None else seed
        return trained.task.sample(trained.model, n, seed=seed), f"{name}: decoder means of z ~ N(0, I), seed {seed}"
    task = trained.task
    sampler = sampler or "ddim"
    T = task.diffusion.num_timesteps
    if sampler == "ddpm":
        given = [flag for flag, v in (("--steps", steps), ("--eta", eta)) if v is not None]
        if given:
            raise ValueError(f"{', '.join(given)}: options of --sampler ddim; the ancestral sampler walks all T = {T} steps")
        seed = DDPM_SEED if seed is None else seed
        return task.sample(trained.model, n, sampler="ddpm", seed=seed), f"{name}: ancestral DDPM, {T} steps, seed {seed}"
    steps = int(task.opts["ddim_steps"]) if steps is None else steps
    if not (isinstance(steps, int) and 1 <= steps <= T):
        raise ValueError(f"--steps must be an integer in [1, {T}] (the run's T); got {steps!r}")
    eta = float(task.opts["ddim_eta"]) if eta is None else eta
    task.options["ddim_eta"].validate("eta", eta)  # the task's own rule for --ddim-eta
    seed = DDIM_SEED if seed is None else seed
    images = task.sample(trained.model, n, sampler=sampler, seed=seed, steps=steps, eta=eta)
    return images, f"{name}: DDIM, {steps} steps, eta {eta:g}, seed {seed}"


def _grid_rows(images: Tensor) -> list[tuple[str, Tensor]]:
    """A near-square grid: ceil(sqrt(n)) images per row, at most 32; rows labelled by their first index."""
    cols = min(32, math.ceil(math.sqrt(len(images))))
    return [(str(r), images[r : r + cols]) for r in range(0, len(images), cols)]


def _cmd_sample(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"--out must name a .png file; got {args.out!r}")
    tensors = Path(args.tensors) if args.tensors else None
    if tensors is not None and tensors.suffix != ".safetensors":
        raise ValueError(f"--tensors must name a .safetensors file; got {args.tensors!r}")
    images, how = sample_images(args.run_dir, args.n, sampler=args.sampler, steps=args.steps, eta=args.eta, seed=args.seed,
                                weights=args.weights, device=args.device)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_grid(out, _grid_rows(images), how)
    print(f"wrote {len(images)} samples to {out} ({how})")
    if tensors is not None:
        from safetensors.torch import save

        tensors.parent.mkdir(parents=True, exist_ok=True)
        blob = save({"images": images.float().contiguous()}, metadata={"run": str(args.run_dir), "how": how, "layout": "(N, C, H, W) in [0, 1]"})
        ckpt.atomic_write_bytes(tensors, blob)
        print(f"wrote the images {tuple(images.shape)} to {tensors}")
    return 0


def add_sample_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``nnatlas sample``."""
    p = sub.add_parser("sample", help="draw images from a trained diffusion or VAE run",
                       description="Load RUN_DIR's model (nnatlas.load) and draw --n images with its task's sampler: "
                       "DDIM or ancestral DDPM for diffusion runs, prior draws through the decoder for VAE runs.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a diffusion or vae run folder written by nnatlas train")
    p.add_argument("--n", type=int, default=64, metavar="N", help="how many images (default 64)")
    p.add_argument("--out", default="samples.png", metavar="FILE.png", help="the grid's PNG (default samples.png)")
    p.add_argument("--tensors", default=None, metavar="FILE.safetensors", help="also save the images, float32 (N, C, H, W) in [0, 1]")
    p.add_argument("--sampler", choices=("ddim", "ddpm"), default=None, help="diffusion runs: DDIM (default) or ancestral DDPM (T steps)")
    p.add_argument("--steps", type=int, default=None, metavar="S", help="DDIM steps (default: the run's --ddim-steps)")
    p.add_argument("--eta", type=float, default=None, metavar="E", help="DDIM's eta: 0 deterministic, 1 DDPM-like (default: the run's --ddim-eta, 0)")
    p.add_argument("--seed", type=int, default=None, help="the sampler's generator seed (default: the one of the run's own grids)")
    p.add_argument("--weights", choices=("best", "last"), default="last",
                   help="last.safetensors (default: the end of training, the moving average where --ema) or best.safetensors")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (default cpu)")
    p.set_defaults(func=_cmd_sample)
    return p
