"""Autoencoders and the VAE: the ``reconstruction`` and ``vae`` tasks on image data sets.

Both train on the images of a classification data set (digits offline, MNIST ...) with pixels
in [0, 1]; the labels are not used. :meth:`GenerativeTask.fit` sizes the model for the data
(``in_features = C*H*W`` for the dense models, ``in_channels = C`` for the convolutional one)
and records how images become model inputs (the plan's details):

- ``flat``: images flattened to (B, C*H*W), pixels in [0, 1] (stacked_ae, denoising_ae, vae);
- ``image``: (B, C, H, W) zero-padded to a multiple of the model's down-sampling (MNIST's 28 ->
  32 for conv_ae's three pools), scaled to [-1, 1] for its tanh output; its output is cropped
  and scaled back to [0, 1].

``reconstruction`` (stacked_ae, denoising_ae, conv_ae). Loss: the mean squared error of the
reconstruction against the clean image, in [0, 1] pixel units. A model with ``noise_std > 0``
(the denoising AE, the seed's ``x + 0.5 * randn``) reads a corrupted input in training; the
noise is drawn from the trainer's generator and passed to the model (``model(x, noise=eps)``),
so a killed run resumes bitwise. Metrics: ``mse`` (per pixel), ``psnr`` = the mean over images
of 10 log10(1 / MSE_image) dB (peak 1). A denoising model also reports, on test images
corrupted the same way (a fixed draw per image): ``psnr_noisy`` (corrupted vs clean),
``psnr_denoised`` (its reconstruction of the corrupted image vs clean) and their difference
``denoise_gain_db``. Artefact: a grid of inputs and reconstructions (and corrupted inputs).

``vae``. Likelihood: Bernoulli with the decoder's sigmoid means, on the grey pixels in [0, 1]
as they are (not binarised; ``--binarize`` thresholds them at 0.5), the convention of the
PyTorch VAE example and the small Keras/PyTorch VAEs this one is compared with: its nats are
not those of the binarised-MNIST literature (about 85-95). Loss: the negative ELBO per image,
-E_q[log p(x|z)] + KL(q(z|x) || N(0, I)), one reparameterised sample (eps from the trainer's
generator) and the KL in closed form (Kingma & Welling 2014, appendix B). Metrics (nats per
image, one fixed sample per image): ``neg_elbo`` (= ``loss``), its terms ``recon`` and ``kl``,
and with ``--iw-samples K`` the importance-weighted bound (Burda et al. 2016)
``iwae_nll`` = -log (1/K sum_k p(x, z_k) / q(z_k | x)) >= -log p(x), K = 100 for the figure.
Artefacts: 64 samples from the prior and a latent interpolation between two test images.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import nnatlas
from nnatlas.train import checkpoint as ckpt
from nnatlas.train.tasks.base import (
    Batch,
    Option,
    Plan,
    Task,
    check_model_args,
    config_fields,
    probe,
    register_task,
    unwrap,
)
from nnatlas.train.tasks.vision import gather

__all__ = [
    "GenerativeTask",
    "ReconstructionTask",
    "VAETask",
    "psnr",
    "gaussian_kl",
    "bernoulli_log_likelihood",
    "elbo_terms",
    "log_importance_weights",
    "iwae_bound",
    "save_grid",
]

EVAL_SEED = 20_140_101  # evaluation noise (the denoising test corruption, the ELBO's sample) comes from here
ARTEFACT_SEED = 1234  # the prior samples of the VAE artefact
GRID_IMAGES = 8  # test images per row of the reconstruction grid
PRIOR_SAMPLES = 64
INTERPOLATION_STEPS = 10
IW_CHUNK = 10  # importance samples decoded at once


# --------------------------------------------------------------------------------------------
# Metrics as plain functions (tested on hand-made cases)
# --------------------------------------------------------------------------------------------


def psnr(estimate: Tensor, clean: Tensor, peak: float = 1.0) -> Tensor:
    """Per-image PSNR in dB: 10 log10(peak^2 / MSE) over all but the first dimension -> (B,)."""
    mse = (estimate.double() - clean.double()).pow(2).flatten(1).mean(1)  # (B,)
    return 10.0 * torch.log10(peak**2 / mse.clamp_min(1e-12))


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) per example, summed over Z: -1/2 sum(1 + log sigma^2 - mu^2 - sigma^2) -> (B,)."""
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(-1)


def bernoulli_log_likelihood(probs: Tensor, x: Tensor) -> Tensor:
    """log p(x | probs) = sum_i x_i log p_i + (1 - x_i) log(1 - p_i) over the last dimension -> (...,).

    The logs are clamped at -100 as ``F.binary_cross_entropy`` does, so it equals -BCE(sum).
    """
    return -F.binary_cross_entropy(probs, x.expand_as(probs), reduction="none").sum(-1)


def elbo_terms(
    x: Tensor,
    mu: Tensor,
    logvar: Tensor,
    eps: Tensor,
    decode: Callable[[Tensor], Tensor],
    log_likelihood: Callable[[Tensor, Tensor], Tensor],
) -> tuple[Tensor, Tensor]:
    """The ELBO's two terms per example, (reconstruction log-likelihood (B,), KL (B,)).

    E_q[log p(x | z)] is estimated from the draws ``eps`` (K, B, Z) (z = mu + sigma eps, averaged
    over K); the KL is in closed form. ELBO = recon - KL.
    """
    z = mu + torch.exp(0.5 * logvar) * eps  # (K, B, Z)
    K, B, Z = z.shape
    recon = log_likelihood(decode(z.reshape(K * B, Z)).reshape(K, B, -1), x).mean(0)  # (B,)
    return recon, gaussian_kl(mu, logvar)


def log_importance_weights(
    x: Tensor,
    mu: Tensor,
    logvar: Tensor,
    eps: Tensor,
    decode: Callable[[Tensor], Tensor],
    log_likelihood: Callable[[Tensor, Tensor], Tensor],
) -> Tensor:
    """log w_k = log p(x | z_k) + log p(z_k) - log q(z_k | x) for z_k = mu + sigma eps_k -> (K, B).

    p(z) = N(0, I); q(z | x) = N(mu, sigma^2), so log p(z) - log q(z|x) = 1/2 sum(eps^2 - z^2 + log sigma^2).
    """
    z = mu + torch.exp(0.5 * logvar) * eps  # (K, B, Z)
    K, B, Z = z.shape
    log_px = log_likelihood(decode(z.reshape(K * B, Z)).reshape(K, B, -1), x)  # (K, B)
    return log_px + 0.5 * (eps.pow(2) - z.pow(2) + logvar).sum(-1)


def iwae_bound(log_w: Tensor) -> Tensor:
    """The importance-weighted lower bound on log p(x): logsumexp_k log w_k - log K -> (B,)."""
    return torch.logsumexp(log_w, 0) - math.log(log_w.shape[0])


# --------------------------------------------------------------------------------------------
# Pictures
# --------------------------------------------------------------------------------------------


def save_grid(path: Path, rows: list[tuple[str, Tensor]], title: str) -> Path:
    """A PNG of image rows: each ``(label, images (n, C, H, W) in [0, 1])`` is one labelled row.

    The tiles are laid into one picture (1-pixel white gaps) drawn on one axes: one ``imshow``,
    however many images, so an evaluation's artefact costs a fraction of a second.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = max(len(images) for _, images in rows)
    C, H, W = rows[0][1].shape[1:]
    gap = 1
    canvas = torch.ones(C, len(rows) * (H + gap) - gap, n * (W + gap) - gap)  # (C, rows*H', n*W'), white
    for r, (_, images) in enumerate(rows):
        for c, img in enumerate(images.detach().float().cpu().clamp(0, 1)):
            top, left = r * (H + gap), c * (W + gap)
            canvas[:, top : top + H, left : left + W] = img
    scale = max(0.35, 0.9 / max(1, H / 28))  # inches per tile: 28-pixel digits at about 1 inch
    fig = Figure(figsize=(n * scale * W / H + 1.6, len(rows) * scale + 0.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.imshow(canvas[0] if C == 1 else canvas.permute(1, 2, 0), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([r * (H + gap) + H / 2 for r in range(len(rows))], [label for label, _ in rows], fontsize=9)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    ckpt.atomic_write_bytes(path, buf.getvalue())
    return path


def _seeded_normal(indices: Tensor, shape: tuple[int, ...], salt: int) -> Tensor:
    """One fixed standard-normal draw of ``shape`` per example index (the same whatever the batching) -> (B, *shape)."""
    return torch.stack(
        [torch.randn(shape, generator=torch.Generator().manual_seed(EVAL_SEED + salt + int(i))) for i in indices]
    )


# --------------------------------------------------------------------------------------------
# The tasks
# --------------------------------------------------------------------------------------------


class GenerativeTask(Task):
    """Images in, images out: the shared fitting, batching and image layout of both tasks."""

    data_kinds = ("classification",)  # the images of any image data set; labels are unused
    mode = "min"

    def __init__(self, plan: Plan, bundle: Any | None, options: Mapping[str, Any]) -> None:
        super().__init__(plan, bundle, options)
        d = plan.details
        self.layout: str = d["layout"]  # "flat" or "image"
        self.shape: tuple[int, int, int] = tuple(d["shape"])  # type: ignore[assignment]  # (C, H, W) of the data
        self.pad: tuple[int, int] = tuple(d["pad"])  # type: ignore[assignment]  # rows, columns added at the bottom/right
        self.tanh: bool = d["tanh"]  # model space [-1, 1]
        self.binarize: bool = bool(d.get("binarize", False))

    # -- fitting ------------------------------------------------------------------------------

    @classmethod
    def details(
        cls, model_name: str, fields: Mapping[str, Any], shape: tuple[int, int, int], opts: Mapping[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """(config overrides, plan details) for a model of ``fields`` on images of ``shape``."""
        C, H, W = shape
        card = nnatlas.card(model_name)
        if len(card.input_shape) == 1:  # dense: flattened pixels
            return {"in_features": C * H * W} if "in_features" in fields else {}, {
                "layout": "flat",
                "shape": [C, H, W],
                "pad": [0, 0],
                "tanh": False,
            }
        factor = 2 ** len(fields.get("channels", ()))  # each encoder block halves H and W
        pad = [(-H) % factor, (-W) % factor]
        return {"in_channels": C} if "in_channels" in fields else {}, {
            "layout": "image",
            "shape": [C, H, W],
            "pad": pad,
            "tanh": True,
        }

    @classmethod
    def fit(
        cls, model_name: str, bundle: Any, options: Mapping[str, Any], model_args: Mapping[str, Any]
    ) -> tuple[Task, nn.Module]:
        where = f"model {model_name!r} on data set {bundle.name!r}"
        fields = config_fields(model_name)
        check_model_args(model_name, fields, model_args)
        opts = {name: options.get(name, opt.default) for name, opt in cls.options.items()}
        x0, _ = gather(bundle.train, torch.arange(min(2, len(bundle.train))))
        if x0.dim() == 3:  # (B, H, W) grey images
            x0 = x0.unsqueeze(1)
        if x0.dim() != 4 or not x0.is_floating_point():
            raise ValueError(
                f"{where}: the {cls.kind} task needs float images (C, H, W); the data set gives {tuple(x0.shape[1:])} {x0.dtype}"
            )
        if x0.min() < 0 or x0.max() > 1:
            raise ValueError(
                f"{where}: the {cls.kind} task needs pixels in [0, 1]; the data set's range is [{x0.min():.3g}, {x0.max():.3g}]"
            )
        overrides, details = cls.details(model_name, {**fields, **model_args}, tuple(x0.shape[1:]), opts)
        overrides.update(model_args)
        config = {**fields, **overrides}  # the model's config as it will be built
        details["binarize"] = bool(opts.get("binarize", False))
        details["noise_std"] = float(config.get("noise_std", 0.0))  # the denoising AE's corruption (0: none)
        details["latent_size"] = config.get("latent_size")  # the VAE's Z (None for the autoencoders)
        plan = Plan(model=model_name, data=bundle.name, task=cls.kind, overrides=overrides, details=details)
        model = nnatlas.create(model_name, **overrides)
        task = cls(plan, bundle, options)
        task.check_output(probe(model, task.inputs(task.images(x0))), where)
        return task, model

    def check_output(self, output: Any, where: str) -> None:
        raise NotImplementedError

    # -- images <-> model space ----------------------------------------------------------------

    def images(self, x: Tensor) -> Tensor:
        """Data-set examples -> images (B, C, H, W) in [0, 1] (thresholded at 0.5 with --binarize)."""
        x = x.float()
        if x.dim() == 3:
            x = x.unsqueeze(1)
        return (x > 0.5).float() if self.binarize else x

    def inputs(self, images: Tensor) -> Tensor:
        """Images (B, C, H, W) in [0, 1] -> model inputs: (B, C*H*W), or padded (B, C, H+ph, W+pw) in [-1, 1]."""
        if self.layout == "flat":
            return images.flatten(1)  # (B, C*H*W)
        x = F.pad(images, (0, self.pad[1], 0, self.pad[0]))  # (B, C, H + ph, W + pw)
        return x * 2 - 1 if self.tanh else x

    def outputs(self, out: Tensor) -> Tensor:
        """Model outputs -> images (B, C, H, W) in pixel units (the inverse of :meth:`inputs`)."""
        C, H, W = self.shape
        if self.layout == "flat":
            return out.reshape(out.shape[0], C, H, W)
        out = out[..., :H, :W]  # drop the padding
        return (out + 1) / 2 if self.tanh else out

    # -- data ---------------------------------------------------------------------------------

    def _split(self, split: str) -> Any:
        return getattr(self.bundle, split)

    def size(self, split: str) -> int:
        return len(self._split(split))

    def batch(
        self, split: str, indices: Tensor, *, device: torch.device, generator: torch.Generator | None = None
    ) -> Batch:
        x, _ = gather(self._split(split), indices)
        images = self.images(x.to(device, non_blocking=True))  # (B, C, H, W) in [0, 1]
        b: Batch = {"image": images, "x": self.inputs(images), "index": indices}
        self.randomness(b, generator)
        return b

    def randomness(self, batch: Batch, generator: torch.Generator | None) -> None:
        """Add this batch's training draws (from ``generator``) or its fixed evaluation draws."""

    def report_input(self, device: torch.device) -> Any:
        return self.batch("train", torch.arange(min(2, self.size("train"))), device=device)["x"]

    def inference(self) -> dict[str, Any]:
        return {"input": dict(self.plan.details)}


def _positive_int_or_zero(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


@register_task
class ReconstructionTask(GenerativeTask):
    """Autoencoders: MSE of the reconstruction against the clean image; PSNR; the denoising gain."""

    kind = "reconstruction"
    best = "test_mse"

    def __init__(self, plan: Plan, bundle: Any | None, options: Mapping[str, Any]) -> None:
        super().__init__(plan, bundle, options)
        self.noise_std = float(plan.details.get("noise_std", 0.0))
        self.num_sums = 6 if self.noise_std > 0 else 3

    def check_output(self, output: Any, where: str) -> None:
        if not isinstance(output, Tensor):
            raise ValueError(f"{where}: expected one reconstruction tensor; the model gives {type(output).__name__}")
        C, H, W = self.shape
        want = (C * H * W,) if self.layout == "flat" else (C, H + self.pad[0], W + self.pad[1])
        if tuple(output.shape[1:]) != want:
            raise ValueError(
                f"{where}: expected a reconstruction {want} per image; the model gives {tuple(output.shape[1:])}"
            )

    def randomness(self, batch: Batch, generator: torch.Generator | None) -> None:
        if self.noise_std <= 0:
            return
        x = batch["x"]
        if generator is not None:  # training: the corruption's draw, passed to the model
            batch["noise"] = torch.randn(x.shape, generator=generator).to(x.device)
        else:  # evaluation: a fixed corruption per test image
            batch["eval_noise"] = _seeded_normal(batch["index"], tuple(batch["image"].shape[1:]), salt=0).to(x.device)

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        out = model(batch["x"], noise=batch["noise"]) if "noise" in batch else model(batch["x"])
        return F.mse_loss(self.outputs(out).float(), batch["image"])

    def sums(self, model: nn.Module, batch: Batch) -> Tensor:
        clean = batch["image"]
        recon = self.outputs(model(batch["x"])).float()
        sq = (recon.double() - clean.double()).pow(2).flatten(1).mean(1)  # (B,) per-image MSE
        parts = [
            sq.sum(),
            psnr(recon, clean).sum(),
            torch.tensor(float(len(clean)), dtype=torch.float64, device=clean.device),
        ]
        if self.noise_std > 0:
            noisy = clean + self.noise_std * batch["eval_noise"]  # (B, C, H, W), the seed's x + 0.5 randn, not clipped
            denoised = self.outputs(model(self.inputs(noisy))).float()
            parts += [
                psnr(noisy, clean).sum(),
                psnr(denoised, clean).sum(),
                (denoised.double() - clean.double()).pow(2).flatten(1).mean(1).sum(),
            ]
        return torch.stack(parts)

    def metrics(self, sums: Tensor) -> dict[str, float]:
        s = sums.tolist()
        n = s[2]
        out = {"loss": s[0] / n, "mse": s[0] / n, "psnr": s[1] / n}
        if self.noise_std > 0:
            out |= {
                "psnr_noisy": s[3] / n,
                "psnr_denoised": s[4] / n,
                "denoise_gain_db": (s[4] - s[3]) / n,
                "mse_denoised": s[5] / n,
            }
        return out

    def artefacts(self, model: nn.Module, folder: Path, tag: str) -> list[Path]:
        if self.bundle is None:
            return []
        idx = torch.arange(min(GRID_IMAGES, self.size("test")))
        device = next(model.parameters()).device
        b = self.batch("test", idx, device=device)
        with torch.no_grad():
            rows = [("input", b["image"]), ("reconstruction", self.outputs(model(b["x"])))]
            if self.noise_std > 0:
                noisy = b["image"] + self.noise_std * b["eval_noise"]
                rows += [(f"+ {self.noise_std:g} noise", noisy), ("denoised", self.outputs(model(self.inputs(noisy))))]
        return [
            save_grid(
                folder / f"{tag}-reconstructions.png",
                rows,
                f"{self.plan.model} on {self.plan.data} test images ({tag})",
            )
        ]


VAE_OPTIONS = {
    "iw_samples": Option(
        int,
        0,
        "importance samples K of the IWAE bound on -log p(x) at each evaluation (0: off; 100 for the figure)",
        check=_positive_int_or_zero,
        expect="an integer >= 0",
    ),
    "binarize": Option(bool, False, "threshold the pixels at 0.5 (Bernoulli data) instead of using the grey levels"),
}


@register_task
class VAETask(GenerativeTask):
    """The negative ELBO in nats per image (Bernoulli likelihood), its terms, and the IWAE bound."""

    kind = "vae"
    best = "test_loss"
    options = VAE_OPTIONS

    def __init__(self, plan: Plan, bundle: Any | None, options: Mapping[str, Any]) -> None:
        super().__init__(plan, bundle, options)
        self.iw_samples = int(self.opts["iw_samples"])
        self.num_sums = 4 if self.iw_samples > 0 else 3

    def check_output(self, output: Any, where: str) -> None:
        if not (isinstance(output, tuple) and len(output) == 3):
            raise ValueError(
                f"{where}: expected (recon, mu, logvar) from a VAE; the model gives {type(output).__name__}"
            )
        C, H, W = self.shape
        if output[0].shape[1:] != (C * H * W,):
            raise ValueError(
                f"{where}: expected a reconstruction ({C * H * W},) per image; the model gives {tuple(output[0].shape[1:])}"
            )

    @staticmethod
    def _latent(model: nn.Module) -> int:
        return int(unwrap(model).config.latent_size)

    def randomness(self, batch: Batch, generator: torch.Generator | None) -> None:
        if generator is not None:  # training: the reparameterisation's draw eps (B, Z)
            x = batch["x"]
            batch["eps"] = torch.randn(len(x), int(self.plan.details["latent_size"]), generator=generator).to(x.device)

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        x = batch["x"]
        recon, mu, logvar = model(x, eps=batch.get("eps"))  # (B, N), (B, Z), (B, Z)
        rec = F.binary_cross_entropy(recon.float(), x, reduction="sum")  # -log p(x|z), summed over pixels and batch
        return (rec + gaussian_kl(mu.float(), logvar.float()).sum()) / len(x)  # -ELBO per image

    def sums(self, model: nn.Module, batch: Batch) -> Tensor:
        m = unwrap(model)
        x = batch["x"].float()
        Z = self._latent(model)
        mu, logvar = (t.float() for t in m.encode(x))  # (B, Z) each
        eps = (
            _seeded_normal(batch["index"], (1, Z), salt=1).transpose(0, 1).to(x.device)
        )  # (1, B, Z): one fixed sample per image

        def decode(z: Tensor) -> Tensor:
            return m.decode(z).float()

        recon, kl = elbo_terms(x, mu, logvar, eps, decode, bernoulli_log_likelihood)  # (B,) each
        ones = torch.tensor(float(len(x)), dtype=torch.float64, device=x.device)
        parts = [(-recon).double().sum(), kl.double().sum(), ones]
        if self.iw_samples > 0:
            K = self.iw_samples
            eps = _seeded_normal(batch["index"], (K, Z), salt=2).transpose(0, 1).to(x.device)  # (K, B, Z)
            log_w = torch.cat(
                [
                    log_importance_weights(x, mu, logvar, e, decode, bernoulli_log_likelihood)
                    for e in eps.split(IW_CHUNK)
                ]
            )  # (K, B)
            parts.append((-iwae_bound(log_w.double())).sum())
        return torch.stack(parts)

    def metrics(self, sums: Tensor) -> dict[str, float]:
        s = sums.tolist()
        rec, kl, n = s[0] / s[2], s[1] / s[2], s[2]
        out = {"loss": rec + kl, "neg_elbo": rec + kl, "recon": rec, "kl": kl}
        if self.iw_samples > 0:
            out["iwae_nll"] = s[3] / n
        return out

    @torch.no_grad()
    def sample(self, model: nn.Module, n: int, *, seed: int = ARTEFACT_SEED) -> Tensor:
        """The decoder's Bernoulli means of ``n`` prior draws z ~ N(0, I) from ``torch.Generator().manual_seed(seed)``:
        images (n, C, H, W) in [0, 1]."""
        m = unwrap(model)
        z = torch.randn(n, self._latent(model), generator=torch.Generator().manual_seed(seed))  # (n, Z)
        return m.decode(z.to(next(m.parameters()).device)).reshape(-1, *self.shape).cpu()

    def artefacts(self, model: nn.Module, folder: Path, tag: str) -> list[Path]:
        m = unwrap(model)
        C, H, W = self.shape
        written = []
        with torch.no_grad():
            samples = self.sample(model, PRIOR_SAMPLES)
            rows = [
                (f"{r * 8}-{r * 8 + 7}" if r else "z ~ N(0, I)", samples[r * 8 : r * 8 + 8])
                for r in range(PRIOR_SAMPLES // 8)
            ]
            written.append(
                save_grid(
                    folder / f"{tag}-samples.png",
                    rows,
                    f"{self.plan.model} ({self.plan.data}): decoder means of {PRIOR_SAMPLES} prior samples ({tag})",
                )
            )
            if self.bundle is not None and self.size("test") >= 2:
                b = self.batch("test", torch.arange(2), device=next(m.parameters()).device)
                mu, _ = m.encode(b["x"])  # (2, Z)
                t = torch.linspace(0, 1, INTERPOLATION_STEPS, device=mu.device).unsqueeze(1)  # (T, 1)
                path = (1 - t) * mu[0] + t * mu[1]  # (T, Z): straight line between the two posterior means
                frames = m.decode(path).reshape(-1, C, H, W)
                rows = [("test images", b["image"]), ("interpolation", frames)]
                written.append(
                    save_grid(
                        folder / f"{tag}-interpolation.png",
                        rows,
                        f"{self.plan.model}: z from mu(test 0) to mu(test 1) ({tag})",
                    )
                )
        return written
