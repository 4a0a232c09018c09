"""Denoising diffusion (Ho, Jain & Abbeel, 2020): the ``diffusion`` task of ``ddpm_tiny`` and ``ddpm``.

The model is the epsilon-predicting U-Net of :mod:`nnatlas.models.diffusion`, trained on the
images of an image data set (MNIST; the offline default is scikit-learn's 8x8 digits); labels are
not used. :meth:`DiffusionTask.fit` takes the data's size through the model's config:
``in_channels = C`` and ``image_size`` = the side zero-padded up to a multiple of the U-Net's
down-sampling (MNIST's 28 stays 28 for ddpm_tiny's three levels and becomes 32 for ddpm's four;
digits' 8 stays 8); self-attention stays at the same level of the U-Net (ddpm_tiny's 14x14 on
MNIST is 4x4 on digits). Pixels in [0, 1] are scaled to [-1, 1] (x0 = 2 x - 1); samples are
cropped to the data's size and scaled back.

The process: ``GaussianDiffusion`` over T = the model's ``num_timesteps`` (1000), Ho et al.'s
linear betas 1e-4 .. 0.02 scaled by 1000 / T when T differs (Nichol & Dhariwal's rule, so a short
chain ends as noisy), or ``--noise-schedule cosine``.

Loss: L_simple (Algorithm 1), the mean squared error between the noise eps and eps_theta(x_t, t),
with t ~ U{0..T-1} and eps ~ N(0, I) drawn from the trainer's per-step generator (a killed run
resumes bitwise); ``--min-snr-gamma G`` weights each image's error by min(SNR_t, G) / SNR_t (Hang et
al., 2023: the nearly clean steps, where L_simple weighs the x_0 error by SNR_t, count less).
Metric: ``test_loss``, L_simple on the first ``--test-images`` test images with one fixed (t, eps)
per image (seeded by the image's index), so evaluations are comparable.

Artefacts at each evaluation: a grid of samples of the ancestral DDPM sampler (Algorithm 2,
T steps; ``--ddpm-samples`` of them) and one of DDIM (Song et al., 2021; ``--ddim-steps`` 50,
eta 0, ``--ddim-eta``), each from its own fixed ``torch.Generator``; both clip each step's predicted x_0 to [-1, 1]
as the official DDPM code does (``--no-clip-denoised``: the bare equations, which leave some samples in noise). At the last evaluation (and every
``--quality-every`` steps) the sample quality: a LeNet classifies ``--quality-samples`` (1,000)
DDIM samples; ``quality.json`` holds the share classified with confidence >= 0.9, the class
histogram, and the Fréchet distance in the LeNet's penultimate features (the input of its last
linear layer) between the samples and the test set, beside the distance between two halves of
the real test set, and the share the judge classifies confidently among the real test digits (the
ceiling of the samples' share). ``--quality-seeds N`` judges N such sets, from the sample seeds 3, 4, ...:
the share is then their mean, beside its spread and each set's figures (``per_seed``; a 1,000-sample share moves by
about a point from seed to seed), the class extremes are the worst set's. The judge is ``--judge RUN_DIR`` (a run of ``nnatlas train lenet`` on the
same data), or else a LeNet that the task trains once with nnatlas's trainer into ``OUT/judge``
(2 epochs, batch 64: 0.9917 on MNIST in 25 s; reused on resume).
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import nnatlas
from nnatlas.models.diffusion import GaussianDiffusion, cosine_beta_schedule, linear_beta_schedule
from nnatlas.train import checkpoint as ckpt
from nnatlas.train.tasks.base import Batch, Option, Plan, Task, check_model_args, config_fields, probe, register_task
from nnatlas.train.tasks.generative import save_grid
from nnatlas.train.tasks.vision import gather

__all__ = [
    "CONFIDENT",
    "DiffusionTask",
    "frechet_distance",
    "gaussian_frechet_distance",
    "judge_run",
    "judge_summary",
    "penultimate_features",
    "train_judge",
]

log = logging.getLogger(__name__)

EVAL_SEED = 20_200_619  # the fixed (t, eps) of each test image come from EVAL_SEED + its index
DDPM_SEED, DDIM_SEED, QUALITY_SEED = 1, 2, 3  # the samplers' own generators (grids; the judged samples)
GRID_COLUMNS = 8
DDIM_GRID = 64
CONFIDENT = 0.9  # the judge's confidence that counts a sample as a recognisable digit
SAMPLE_CHUNK = 250  # samples denoised at once
SAMPLERS = ("ddim", "ddpm")
JUDGE_RECIPE = {"epochs": 2, "batch_size": 64}  # LeNet on MNIST: test accuracy 0.9917 in 25 s of one core


# --------------------------------------------------------------------------------------------
# Sample quality as plain functions (tested on hand-made cases)
# --------------------------------------------------------------------------------------------


def gaussian_frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """The Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2), squared:

    d^2 = ||mu1 - mu2||^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))   (Dowson & Landau 1982; FID, Heusel et al. 2017).

    The matrix square root is ``scipy.linalg.sqrtm``; where sigma1 sigma2 is near singular it is
    taken of the product with 1e-6 added to both diagonals, and an imaginary part left by round-off
    is dropped (as the reference FID code does).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"gaussian_frechet_distance expects means (D,) and covariances (D, D) alike; got {mu1.shape}, "
                         f"{sigma1.shape}, {mu2.shape}, {sigma2.shape}")  # fmt: skip
    with warnings.catch_warnings():  # singular products (fewer samples than features) are handled below
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(mu1)) * 1e-6
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def frechet_distance(a: Tensor | np.ndarray, b: Tensor | np.ndarray) -> float:
    """The Fréchet distance between the Gaussians fitted to two feature sets ``a`` (N, D) and ``b`` (M, D)."""
    a, b = (np.asarray(v.double().cpu() if isinstance(v, Tensor) else v, np.float64) for v in (a, b))
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"frechet_distance expects two feature sets (N, D), (M, D) with N, M >= 2; got {a.shape}, {b.shape}")
    return gaussian_frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def judge_summary(logits: Tensor, num_classes: int, confident: float = CONFIDENT) -> dict[str, Any]:
    """What a classifier says of samples: logits (N, K) -> the share whose top softmax probability is
    >= ``confident``, the class histogram (shares of N by predicted class, K entries) and its extremes."""
    probs = torch.softmax(logits.double(), dim=1)  # (N, K)
    conf, pred = probs.max(dim=1)  # (N,), (N,)
    hist = torch.bincount(pred, minlength=num_classes).double() / len(pred)  # (K,)
    return {
        "samples": len(pred),
        "confident_share": float((conf >= confident).double().mean()),
        "mean_confidence": float(conf.mean()),
        "class_histogram": [round(v, 6) for v in hist.tolist()],
        "min_class_share": float(hist.min()),
        "max_class_share": float(hist.max()),
    }


def penultimate_features(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """(logits, features) of a classifier on ``x``: the features are the input of its last ``nn.Linear``
    (LeNet's 84 F6 units), read by a hook removed afterwards."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"penultimate_features needs a classifier ending in nn.Linear; {type(model).__name__} has none")
    seen: list[Tensor] = []
    handle = linears[-1].register_forward_hook(lambda mod, inputs, out: seen.append(inputs[0].detach()))
    try:
        logits = probe(model, x)
    finally:
        handle.remove()
    return logits, seen[-1].flatten(1)


# --------------------------------------------------------------------------------------------
# The judge: a LeNet that nnatlas trains
# --------------------------------------------------------------------------------------------


def train_judge(out: Path, data: str, data_dir: str | None) -> Path:
    """Train LeNet on ``data`` with nnatlas's trainer into ``out`` (once: a finished run there is reused)."""
    out = Path(out)
    if (out / "final.json").is_file():
        return out
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        raise ValueError("the diffusion task cannot train its judge inside a data-parallel run; "
                         "train one (nnatlas train lenet --data ...) and pass --judge RUN_DIR")  # fmt: skip
    from nnatlas.train.trainer import TrainConfig, train

    log.info("training the judge: lenet on %s into %s", data, out)
    cfg = TrainConfig(model="lenet", data=data, data_dir=data_dir, out=str(out), overwrite=True, report=False, **JUDGE_RECIPE)
    result = train(cfg, progress=False)
    log.info("the judge: test accuracy %.4f", result.final.get("test_acc", float("nan")))
    return out


def judge_run(
    run_dir: str | Path, *, samples: int = 1000, judge: str | Path | None = None, data_dir: str | None = None,
    weights: str = "last", device: str = "cpu", **options: Any,
) -> dict[str, Any]:
    """The sample quality of a finished ``nnatlas train`` diffusion run, on request: what its last evaluation
    writes to ``quality.json``, for ``samples`` DDIM samples of its ``weights``. ``options`` override the run's
    task options (``ddim_steps=100``, ``ddim_eta=1.0``, ``clip_denoised=False``); the judge is ``judge``, else the run's."""
    from nnatlas import data
    from nnatlas.train.trainer import load

    run_dir = Path(run_dir)
    doc = json.loads((run_dir / "config.json").read_text("utf-8"))
    if doc["plan"]["task"] != DiffusionTask.kind:
        raise ValueError(f"judge_run expects a run of the diffusion task; {run_dir} ran {doc['plan']['task']}")
    bundle = data.load(doc["plan"]["data"], data_dir=data_dir if data_dir is not None else doc["config"].get("data_dir"))
    trained = load(run_dir, weights=weights, device=device, bundle=bundle)
    task = trained.task
    for name, value in options.items():
        if name not in task.options:
            raise ValueError(f"judge_run: the diffusion task has no option {name!r}; options: {', '.join(task.options)}")
        task.options[name].validate(name, value)
        task.opts[name] = value
    verdict = load(Path(judge) if judge else task.judge_dir(run_dir), device=device)
    return task.quality(trained.model, verdict, samples) | {"judge": str(verdict.run_dir), "weights": trained.weights}


# --------------------------------------------------------------------------------------------
# The task
# --------------------------------------------------------------------------------------------


def _rows(images: Tensor, label: str) -> list[tuple[str, Tensor]]:
    """Images (N, C, H, W) as grid rows of GRID_COLUMNS, the first labelled."""
    return [(label if r == 0 else "", images[r : r + GRID_COLUMNS]) for r in range(0, len(images), GRID_COLUMNS)]


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


DIFFUSION_OPTIONS = {
    "noise_schedule": Option(str, "linear", "the beta schedule: linear (Ho et al.) or cosine (Nichol & Dhariwal)",
                             check=lambda v: v in ("linear", "cosine"), expect="linear or cosine"),
    "min_snr_gamma": Option(float, 0.0, "train with Min-SNR-gamma weights min(SNR_t, gamma) / SNR_t on each image's "
                            "squared error (Hang et al., 2023; 5 in the paper); 0: Ho et al.'s unweighted L_simple. "
                            "The test loss stays L_simple",
                            check=lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0,
                            expect="a number >= 0"),
    "test_images": Option(int, 2000, "test images of the test loss (each with a fixed t and noise)",
                          check=lambda v: _count(v) and v >= 1, expect="an integer >= 1"),
    "ddpm_samples": Option(int, 16, "images of the ancestral-sampler grid at each evaluation (T model calls; 0: none)",
                           check=_count, expect="an integer >= 0"),
    "ddim_steps": Option(int, 50, "DDIM steps of the sample grid and of the judged samples",
                         check=lambda v: _count(v) and v >= 1, expect="an integer >= 1"),
    "ddim_eta": Option(float, 0.0, "DDIM's eta for the sample grid and the judged samples (0: deterministic given x_T, "
                       "as Song et al.'s DDIM; 1: DDPM-like noise at each step)",
                       check=lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0,
                       expect="a number >= 0"),
    "quality_samples": Option(int, 1000, "DDIM samples the judge classifies at the last evaluation "
                              "(at most the test images scored, --limit-test; 0: no judging)", check=_count, expect="an integer >= 0"),
    "quality_every": Option(int, 0, "also judge the samples at evaluations every N steps (0: the last only)",
                            check=_count, expect="an integer >= 0"),
    "quality_seeds": Option(int, 1, "judge --quality-samples samples from each of N sample seeds (3, 4, ...) and report "
                            "their mean and spread (a 1,000-sample share varies by about a point from seed to seed)",
                            check=lambda v: _count(v) and v >= 1, expect="an integer >= 1"),
    "clip_denoised": Option(bool, True, "clip each step's predicted x_0 to [-1, 1] while sampling (the official DDPM code's "
                            "clip_denoised; --no-clip-denoised samples with the bare equations)"),
    "judge": Option(str, None, "a run folder of nnatlas train lenet on the same data (default: train one into OUT/judge)"),
}  # fmt: skip


def _fitted_config(fields: Mapping[str, Any], shape: tuple[int, int, int]) -> dict[str, Any]:
    """The U-Net's overrides for images of ``shape``: channels, the padded side, attention at the same levels."""
    C, H, W = shape
    levels = len(fields["ch_mult"])
    factor = 2 ** (levels - 1)
    side = -(-max(H, W) // factor) * factor  # the smallest multiple of the down-sampling that holds the image
    out: dict[str, Any] = {"in_channels": C}
    if side != fields["image_size"]:
        old = [fields["image_size"] // 2**i for i in range(levels)]
        out["image_size"] = side
        out["attn_resolutions"] = tuple(side // 2**old.index(r) for r in fields["attn_resolutions"] if r in old)
    return out


@register_task
class DiffusionTask(Task):
    """Epsilon prediction on images in [-1, 1]; DDPM and DDIM samples; their quality as a LeNet sees it."""

    kind = "diffusion"
    data_kinds = ("classification",)  # the images of any image data set; labels only for the judge
    options = DIFFUSION_OPTIONS
    best, mode = "test_loss", "min"
    num_sums = 2

    def __init__(self, plan: Plan, bundle: Any | None, options: Mapping[str, Any]) -> None:
        super().__init__(plan, bundle, options)
        d = plan.details
        self.shape: tuple[int, int, int] = tuple(d["shape"])  # type: ignore[assignment]  # (C, H, W) of the data
        self.side: int = d["side"]  # the model's image_size (H, W zero-padded at the bottom/right)
        T = int(d["num_timesteps"])
        if d["noise_schedule"] == "cosine":
            betas = cosine_beta_schedule(T)
        else:  # Ho et al.'s 1e-4 .. 0.02 for T = 1000, scaled by 1000 / T otherwise
            betas = linear_beta_schedule(T, 1e-4 * 1000 / T, min(0.02 * 1000 / T, 0.999))
        self.diffusion = GaussianDiffusion(betas)
        gamma = float(self.opts["min_snr_gamma"])  # the training loss's step weights (None: L_simple), computed once
        self.loss_weights = self.diffusion.min_snr_weights(gamma) if gamma else None
        # the judge's features of the test set and the real side of quality.json (computed once)
        self._real: tuple[Tensor, dict[str, Any]] | None = None

    # -- fitting ------------------------------------------------------------------------------

    @classmethod
    def fit(cls, model_name: str, bundle: Any, options: Mapping[str, Any], model_args: Mapping[str, Any]) -> tuple[Task, nn.Module]:
        where = f"model {model_name!r} on data set {bundle.name!r}"
        fields = config_fields(model_name)
        check_model_args(model_name, fields, model_args)
        opts = {name: options.get(name, opt.default) for name, opt in cls.options.items()}
        x0, _ = gather(bundle.train, torch.arange(min(2, len(bundle.train))))
        if x0.dim() == 3:  # (B, H, W) grey images
            x0 = x0.unsqueeze(1)
        if x0.dim() != 4 or not x0.is_floating_point() or x0.min() < 0 or x0.max() > 1:
            raise ValueError(f"{where}: the diffusion task needs float images (C, H, W) with pixels in [0, 1]; "
                             f"the data set gives {tuple(x0.shape[1:])} {x0.dtype}")  # fmt: skip
        shape = tuple(x0.shape[1:])
        overrides = {**_fitted_config({**fields, **model_args}, shape), **model_args}
        config = {**fields, **overrides}
        details = {"shape": list(shape), "side": config["image_size"], "num_timesteps": config["num_timesteps"],
                   "noise_schedule": opts["noise_schedule"]}  # fmt: skip
        plan = Plan(model=model_name, data=bundle.name, task=cls.kind, overrides=overrides, details=details)
        model = nnatlas.create(model_name, **overrides)
        task = cls(plan, bundle, options)
        x = task.inputs(x0)
        out = probe(model, x, torch.zeros(len(x), dtype=torch.long))
        if not isinstance(out, Tensor) or out.shape != x.shape:
            raise ValueError(f"{where}: expected predicted noise shaped like the input {tuple(x.shape)}; the model gives "
                             f"{tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__}")  # fmt: skip
        return task, model

    # -- images <-> model space ----------------------------------------------------------------

    def inputs(self, images: Tensor) -> Tensor:
        """Images (B, C, H, W) in [0, 1] -> x0 (B, C, S, S) in [-1, 1], zero-padded (black) at the bottom/right."""
        _, H, W = self.shape
        x = images.float() * 2 - 1  # [0, 1] -> [-1, 1]
        return F.pad(x, (0, self.side - W, 0, self.side - H), value=-1.0)  # (B, C, S, S)

    def outputs(self, x: Tensor) -> Tensor:
        """Samples (B, C, S, S) in model space -> images (B, C, H, W) in [0, 1] (the inverse of :meth:`inputs`)."""
        _, H, W = self.shape
        return ((x[..., :H, :W].float() + 1) / 2).clamp(0, 1)

    # -- data ---------------------------------------------------------------------------------

    def size(self, split: str) -> int:
        n = len(getattr(self.bundle, split))
        return min(n, int(self.opts["test_images"])) if split == "test" else n

    def batch(self, split: str, indices: Tensor, *, device: torch.device, generator: torch.Generator | None = None) -> Batch:
        x, _ = gather(getattr(self.bundle, split), indices)
        if x.dim() == 3:
            x = x.unsqueeze(1)
        x0 = self.inputs(x.to(device, non_blocking=True))  # (B, C, S, S) in [-1, 1]
        B, T = len(x0), self.diffusion.num_timesteps
        if generator is not None:  # training: this step's t and eps from the trainer's generator
            t = torch.randint(0, T, (B,), generator=generator)
            noise = torch.randn(x0.shape, generator=generator)
        else:  # evaluation: one fixed (t, eps) per example index
            gens = [torch.Generator().manual_seed(EVAL_SEED + int(i)) for i in indices]
            t = torch.stack([torch.randint(0, T, (), generator=g) for g in gens])
            noise = torch.stack([torch.randn(x0.shape[1:], generator=g) for g in gens])
        return {"x": x0, "t": t.to(device), "noise": noise.to(device)}

    def report_input(self, device: torch.device) -> Any:
        b = self.batch("train", torch.arange(min(2, self.size("train"))), device=device, generator=torch.Generator().manual_seed(0))
        return b["x"], b["t"]

    # -- loss and metrics ------------------------------------------------------------------------

    def _sq_error(self, model: nn.Module, batch: Batch) -> Tensor:
        x_t = self.diffusion.q_sample(batch["x"], batch["t"], batch["noise"])  # eq. 4
        return (model(x_t, batch["t"]).float() - batch["noise"]).pow(2)  # (B, C, S, S): ||eps - eps_theta(x_t, t)||^2

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        if self.loss_weights is None:
            return self._sq_error(model, batch).mean()  # L_simple
        return self.diffusion.weighted_mean(self._sq_error(model, batch), batch["t"], self.loss_weights)

    def sums(self, model: nn.Module, batch: Batch) -> Tensor:
        per_image = self._sq_error(model, batch).flatten(1).mean(1).double()  # (B,)
        return torch.stack([per_image.sum(), torch.tensor(float(len(per_image)), dtype=torch.float64, device=per_image.device)])

    def metrics(self, sums: Tensor) -> dict[str, float]:
        s = sums.tolist()
        return {"loss": s[0] / s[1]}

    # -- sampling ------------------------------------------------------------------------------

    def sample(
        self, model: nn.Module, n: int, *, sampler: str = "ddim", seed: int = DDIM_SEED, steps: int | None = None,
        eta: float | None = None,
    ) -> Tensor:
        """``n`` samples as images (n, C, H, W) in [0, 1]: ``sampler`` "ddim" (``steps`` or --ddim-steps; ``eta`` or
        --ddim-eta: 0 is deterministic given x_T, 1 DDPM-like) or "ddpm" (ancestral, T steps), in chunks, from
        ``torch.Generator().manual_seed(seed)``."""
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}; got {sampler!r}")
        device = next(model.parameters()).device
        gen = torch.Generator(device=device).manual_seed(seed)
        C, S = self.shape[0], self.side
        steps = min(steps or int(self.opts["ddim_steps"]), self.diffusion.num_timesteps)
        eta = float(self.opts["ddim_eta"]) if eta is None else eta
        clip = bool(self.opts["clip_denoised"])
        out = []
        for start in range(0, n, SAMPLE_CHUNK):
            shape = (min(SAMPLE_CHUNK, n - start), C, S, S)
            if sampler == "ddpm":
                x = self.diffusion.sample(model, shape, generator=gen, device=device, clip_denoised=clip)
            else:
                x = self.diffusion.ddim_sample(model, shape, steps=steps, eta=eta, generator=gen, device=device, clip_denoised=clip)
            out.append(self.outputs(x).cpu())
        return torch.cat(out)

    # -- the judge -----------------------------------------------------------------------------

    def judge_dir(self, run_dir: Path) -> Path:
        """The judge's run folder: --judge, or OUT/judge trained now (once)."""
        if self.opts["judge"]:
            return Path(self.opts["judge"])
        saved = json.loads((run_dir / "config.json").read_text("utf-8"))["config"]
        return train_judge(run_dir / "judge", self.plan.data, saved.get("data_dir"))

    def quality(self, model: nn.Module, judge: Any, n: int) -> dict[str, Any]:
        """The judge's view of ``n`` DDIM samples beside the test set (see the module docstring)."""
        clf = judge.model
        jdev = next(clf.parameters()).device

        def features(images: Tensor) -> tuple[Tensor, Tensor]:
            outs = [penultimate_features(clf, judge.task.image.inputs(chunk.to(jdev))) for chunk in images.split(500)]
            return torch.cat([o[0] for o in outs]).cpu(), torch.cat([o[1] for o in outs]).cpu()

        if self._real is None:
            test = self.bundle.test
            x, _ = gather(test, torch.arange(len(test)))
            real_logits, real = features(x.unsqueeze(1) if x.dim() == 3 else x)  # (N_test, classes), (N_test, D)
            self._real = real, {
                # the ceiling of confident_share: the judge's share on the real test digits
                "real_confident_share": judge_summary(real_logits, real_logits.shape[1])["confident_share"],
                "fid_lenet_real_halves": frechet_distance(real[0::2], real[1::2]) if len(real) >= 4 else math.nan,
                "real_images": len(real),
            }
        real, real_side = self._real
        seeds = list(range(QUALITY_SEED, QUALITY_SEED + int(self.opts["quality_seeds"])))
        per_seed, pooled = [], []
        for seed in seeds:  # each seed's n samples judged alone: the figure the issue states, and its spread
            logits, feats = features(self.sample(model, n, sampler="ddim", seed=seed))
            pooled.append(logits)
            per_seed.append({"seed": seed, **judge_summary(logits, logits.shape[1]), "fid_lenet": frechet_distance(feats, real)})
        shares = np.array([s["confident_share"] for s in per_seed])
        out = judge_summary(torch.cat(pooled), pooled[0].shape[1])  # the pooled histogram; the share is the seeds' mean
        out |= {
            "samples_per_seed": n,
            "sample_seeds": seeds,
            "confident_share_std": float(shares.std(ddof=1)) if len(seeds) > 1 else 0.0,
            "confident_share_range": [float(shares.min()), float(shares.max())],
            # the class extremes of the worst seed, so "every digit between 5% and 15%" holds for each seed's samples
            "min_class_share": min(s["min_class_share"] for s in per_seed),
            "max_class_share": max(s["max_class_share"] for s in per_seed),
            "ddim_steps": min(int(self.opts["ddim_steps"]), self.diffusion.num_timesteps),
            "ddim_eta": float(self.opts["ddim_eta"]),
            "fid_lenet": float(np.mean([s["fid_lenet"] for s in per_seed])),  # the mean of n-sample distances (comparable for any N)
            **real_side,
            "per_seed": per_seed,
        }
        return out

    # -- artefacts -----------------------------------------------------------------------------

    def artefacts(self, model: nn.Module, folder: Path, tag: str) -> list[Path]:
        title = f"{self.plan.model} on {self.plan.data}"
        steps = min(int(self.opts["ddim_steps"]), self.diffusion.num_timesteps)
        ddim = self.sample(model, DDIM_GRID)
        written = [save_grid(folder / f"{tag}-ddim.png", _rows(ddim, f"DDIM {steps}"), f"{title}: DDIM samples, {steps} steps, eta {float(self.opts['ddim_eta']):g} ({tag})")]
        n_ddpm = int(self.opts["ddpm_samples"])
        if n_ddpm:
            T = self.diffusion.num_timesteps
            ddpm = self.sample(model, n_ddpm, sampler="ddpm", seed=DDPM_SEED)
            written.append(save_grid(folder / f"{tag}-ddpm.png", _rows(ddpm, f"DDPM {T}"), f"{title}: ancestral samples, {T} steps ({tag})"))
        written += self._judged(model, folder, tag)
        return written

    def _judged(self, model: nn.Module, folder: Path, tag: str) -> list[Path]:
        """quality.json at the last evaluation (and every --quality-every steps), when data and samples are asked for."""
        run_dir = folder.parent
        n = int(self.opts["quality_samples"])
        if n == 0 or self.bundle is None or not (run_dir / "config.json").is_file():
            return []
        doc = json.loads((run_dir / "config.json").read_text("utf-8"))
        step = int(tag.rsplit("-", 1)[-1]) if tag.rsplit("-", 1)[-1].isdigit() else -1
        every = int(self.opts["quality_every"])
        if step != doc.get("total_steps") and not (every and step % every == 0):
            return []
        limit = doc["config"].get("limit_test")
        n = min(n, limit) if limit else n
        judge = nnatlas.load(self.judge_dir(run_dir), device=str(next(model.parameters()).device))
        q = self.quality(model, judge, n) | {"step": step, "judge": str(judge.run_dir)}
        lo, hi = q["confident_share_range"]
        spread = f" (mean of {len(q['sample_seeds'])} seeds: {100 * lo:.1f}%..{100 * hi:.1f}%)" if len(q["sample_seeds"]) > 1 else ""
        log.info("sample quality at step %d: %.1f%% of %d DDIM samples confident >= %.1f%s (real test digits %.1f%%), "
                 "classes %.1f%%..%.1f%%, Fréchet (LeNet) %.3f (real halves %.3f)", step, 100 * q["confident_share"],
                 q["samples_per_seed"], CONFIDENT, spread, 100 * q["real_confident_share"], 100 * q["min_class_share"],
                 100 * q["max_class_share"], q["fid_lenet"], q["fid_lenet_real_halves"])  # fmt: skip
        path = folder / f"{tag}-quality.json"
        ckpt.atomic_write_text(path, json.dumps(q, indent=1) + "\n")
        return [path]

    def inference(self) -> dict[str, Any]:
        return {"input": dict(self.plan.details), "pixels": "model space [-1, 1] = 2 x - 1, zero-padded to side"}
