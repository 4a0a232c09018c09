"""The reconstruction and vae tasks: PSNR/MSE on hand-made images, the denoising metrics, the ELBO and
IWAE bound against closed forms (known Gaussian posterior and likelihood), training randomness from the
trainer's generator, and SIGKILL + --resume bitwise for one model of each kind."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from nnatlas.cli import main
from nnatlas.data import DataBundle
from nnatlas.models.autoencoder import vae_loss
from nnatlas.train.checkpoint import load_checkpoint
from nnatlas.train.tasks.generative import (
    ReconstructionTask,
    VAETask,
    bernoulli_log_likelihood,
    elbo_terms,
    gaussian_kl,
    iwae_bound,
    log_importance_weights,
    psnr,
)
from kill_resume import assert_same_run, kill_after_first_checkpoint, subprocess_env

CPU = torch.device("cpu")


def _bundle(images: torch.Tensor) -> DataBundle:
    ds = TensorDataset(images, torch.zeros(len(images), dtype=torch.long))
    return DataBundle(
        name="hand-made", task="classification", train=ds, test=ds, num_classes=1, input_shape=tuple(images.shape[1:])
    )


class _Constant(nn.Module):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        return torch.full_like(x, self.value) + 0 * self.w


class _Identity(nn.Module):
    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        return x


def test_psnr_of_hand_made_images() -> None:
    clean = torch.zeros(3, 1, 4, 4)
    est = torch.stack([torch.full((1, 4, 4), 0.1), torch.full((1, 4, 4), 0.5), torch.zeros(1, 4, 4)])
    est[2, 0, 0, 0] = 1.0  # one wrong pixel of 16: MSE 1/16
    got = psnr(est, clean)
    assert got.tolist() == pytest.approx([20.0, 10 * math.log10(4), 10 * math.log10(16)], abs=1e-5)  # float32 images


def test_reconstruction_mse_and_psnr_through_the_task() -> None:
    images = torch.stack([torch.zeros(1, 4, 4), torch.full((1, 4, 4), 0.7), torch.full((1, 4, 4), 0.5)])
    task, _ = ReconstructionTask.fit("stacked_ae", _bundle(images), {}, {})
    assert task.layout == "flat" and task.plan.overrides["in_features"] == 16
    b = task.batch("test", torch.arange(3), device=CPU)
    m = task.metrics(task.sums(_Constant(0.5), b))
    # errors 0.5, 0.2, 0 per pixel: MSE 0.25, 0.04, 0 (PSNR capped by the 1e-12 floor: 120 dB)
    assert m["mse"] == pytest.approx((0.25 + 0.04 + 0.0) / 3)
    assert m["psnr"] == pytest.approx((10 * math.log10(4) + 10 * math.log10(25) + 120.0) / 3)
    assert task.loss(_Constant(0.5), b).item() == pytest.approx(m["mse"], rel=1e-6)


def test_conv_autoencoder_pads_mnist_sized_images_and_scores_only_the_image() -> None:
    images = torch.rand(2, 1, 28, 28)
    task, _ = ReconstructionTask.fit("conv_ae", _bundle(images), {}, {})
    assert task.pad == (4, 4) and task.plan.overrides["in_channels"] == 1  # 28 -> 32 for three 2x pools
    b = task.batch("test", torch.arange(2), device=CPU)
    assert b["x"].shape == (2, 1, 32, 32) and b["x"].min() >= -1 and b["x"].max() <= 1  # tanh space
    assert torch.allclose(task.outputs(b["x"]), images)  # inputs -> outputs is the identity on the image
    m = task.metrics(task.sums(_Identity(), b))
    assert m["mse"] == pytest.approx(0.0, abs=1e-12)


def test_denoising_metrics_on_fixed_test_noise() -> None:
    images = torch.rand(6, 1, 16, 16)
    task, _ = ReconstructionTask.fit("denoising_ae", _bundle(images), {}, {})
    assert task.noise_std == 0.5
    b = task.batch("test", torch.arange(6), device=CPU)
    m = task.metrics(task.sums(_Identity(), b))  # a "denoiser" that returns its input gains nothing
    assert m["denoise_gain_db"] == pytest.approx(0.0, abs=1e-9) and m["psnr_denoised"] == pytest.approx(m["psnr_noisy"])
    assert m["psnr_noisy"] == pytest.approx(10 * math.log10(1 / 0.25), abs=0.6)  # x + 0.5 randn: MSE 0.25
    perfect = task.metrics(task.sums(_Constant(0.0), task.batch("test", torch.arange(6), device=CPU)))
    assert perfect["psnr_denoised"] == pytest.approx(perfect["psnr"])  # a constant output ignores the noise
    # the evaluation noise of an image does not depend on the batch it is in
    again = task.batch("test", torch.tensor([3, 4]), device=CPU)
    assert torch.equal(again["eval_noise"], b["eval_noise"][3:5])


def test_training_corruption_comes_from_the_generator_and_reaches_the_model() -> None:
    images = torch.rand(4, 1, 8, 8)
    task, model = ReconstructionTask.fit("denoising_ae", _bundle(images), {}, {})
    b1 = task.batch("train", torch.arange(4), device=CPU, generator=torch.Generator().manual_seed(7))
    b2 = task.batch("train", torch.arange(4), device=CPU, generator=torch.Generator().manual_seed(7))
    assert torch.equal(b1["noise"], b2["noise"]) and "eval_noise" not in b1
    model.train()
    torch.manual_seed(0)  # the model's own randn_like would differ from b1["noise"]
    want = F.mse_loss(model.decoder(model.encoder(b1["x"] + 0.5 * b1["noise"])), b1["x"])
    assert task.loss(model, b1).item() == pytest.approx(want.item(), rel=1e-6)


def test_gaussian_kl_is_the_closed_form() -> None:
    mu, logvar = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    assert torch.allclose(gaussian_kl(mu, logvar), torch.distributions.kl_divergence(q, p).sum(-1), atol=1e-12)


def _gaussian_ll(s2: float):
    """log N(x; mean, s2 I) summed over the last dimension: a Gaussian likelihood with known variance."""

    def ll(mean: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return (-0.5 * math.log(2 * math.pi * s2) - (x - mean) ** 2 / (2 * s2)).sum(-1)

    return ll


def test_elbo_and_iwae_equal_log_evidence_when_the_posterior_is_exact() -> None:
    """p(z) = N(0, I), p(x|z) = N(z, s2 I): the posterior is N(x / (1 + s2), s2 / (1 + s2) I) and
    log p(x) = log N(x; 0, (1 + s2) I). With q the exact posterior every importance weight is p(x)."""
    s2, D = 0.3, 3
    x = torch.tensor([[0.5, -1.0, 2.0], [0.0, 0.3, -0.7]], dtype=torch.float64)  # (B, D)
    mu = x / (1 + s2)
    logvar = torch.full_like(x, math.log(s2 / (1 + s2)))
    log_px = (-0.5 * math.log(2 * math.pi * (1 + s2)) - x**2 / (2 * (1 + s2))).sum(-1)  # (B,)
    ll = _gaussian_ll(s2)
    eps = torch.randn(7, 2, D, dtype=torch.float64)
    log_w = log_importance_weights(x, mu, logvar, eps, lambda z: z, ll)  # (K, B)
    assert torch.allclose(log_w, log_px.expand(7, 2), atol=1e-12)  # every weight, whatever eps
    assert torch.allclose(iwae_bound(log_w), log_px, atol=1e-12)
    # ELBO = E_q[log p(x|z)] - KL: a Monte-Carlo mean, within 4 standard errors of log p(x)
    eps = torch.randn(200_000, 2, D, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    z = mu + (0.5 * logvar).exp() * eps
    per_sample = ll(z, x)  # (K, B)
    recon, kl = elbo_terms(x, mu, logvar, eps, lambda z: z, ll)
    se = per_sample.std(0) / math.sqrt(len(eps))
    assert ((recon - kl - log_px).abs() < 4 * se).all(), (recon - kl, log_px, se)


def test_elbo_reconstruction_term_with_an_inexact_posterior_is_the_closed_form() -> None:
    """E_q[log N(x; z, s2 I)] = -D/2 log(2 pi s2) - (|x - mu|^2 + sum sigma^2) / (2 s2) for q = N(mu, sigma^2)."""
    s2, D = 0.5, 4
    x = torch.randn(3, D, dtype=torch.float64)
    mu, logvar = torch.randn(3, D, dtype=torch.float64), torch.randn(3, D, dtype=torch.float64) - 1
    closed = -0.5 * D * math.log(2 * math.pi * s2) - ((x - mu) ** 2 + logvar.exp()).sum(-1) / (2 * s2)
    eps = torch.randn(200_000, 3, D, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    recon, kl = elbo_terms(x, mu, logvar, eps, lambda z: z, _gaussian_ll(s2))
    se = _gaussian_ll(s2)(mu + (0.5 * logvar).exp() * eps, x).std(0) / math.sqrt(len(eps))
    assert ((recon - closed).abs() < 4 * se).all()
    assert torch.allclose(kl, gaussian_kl(mu, logvar))


def test_bernoulli_log_likelihood_is_minus_the_summed_bce() -> None:
    p, x = torch.rand(4, 10), torch.rand(4, 10)
    assert torch.allclose(bernoulli_log_likelihood(p, x), -F.binary_cross_entropy(p, x, reduction="none").sum(-1))


def test_vae_task_loss_is_the_models_negative_elbo_with_the_generators_draw() -> None:
    images = torch.rand(8, 1, 4, 4)
    task, model = VAETask.fit("vae", _bundle(images), {}, {"latent_size": 3, "hidden_sizes": (12,)})
    b = task.batch("train", torch.arange(8), device=CPU, generator=torch.Generator().manual_seed(3))
    assert b["eps"].shape == (8, 3)
    model.train()
    recon, mu, logvar = model(b["x"], eps=b["eps"])
    assert task.loss(model, b).item() == pytest.approx(vae_loss(recon, b["x"], mu, logvar).item(), rel=1e-6)


def test_vae_metrics_split_the_elbo_and_the_iwae_bound_is_tighter() -> None:
    torch.manual_seed(0)
    images = torch.rand(16, 1, 4, 4)
    task, model = VAETask.fit("vae", _bundle(images), {"iw_samples": 50}, {"latent_size": 2, "hidden_sizes": (12,)})
    m = task.metrics(task.sums(model.eval(), task.batch("test", torch.arange(16), device=CPU)))
    assert m["neg_elbo"] == pytest.approx(m["recon"] + m["kl"]) and m["loss"] == m["neg_elbo"]
    assert m["kl"] > 0 and m["iwae_nll"] < m["neg_elbo"]  # log-mean-exp of 50 weights >= their mean (Jensen)
    again = task.metrics(task.sums(model, task.batch("test", torch.arange(16), device=CPU)))
    assert again == m  # fixed evaluation draws


def test_vae_refuses_vectors() -> None:
    ds = TensorDataset(torch.rand(4, 5), torch.zeros(4, dtype=torch.long))
    bundle = DataBundle(name="vectors", task="classification", train=ds, test=ds, num_classes=1, input_shape=(5,))
    with pytest.raises(ValueError, match="needs float images"):
        VAETask.fit("vae", bundle, {}, {})


@pytest.mark.parametrize("model", ["denoising_ae", "vae"])
def test_killed_mid_epoch_and_resumed_equals_uninterrupted_run_bitwise(model: str, tmp_path: Path) -> None:
    """The corruption (denoising AE) and the reparameterisation draw (VAE) come from the trainer's per-step generator."""
    args = [
        "train",
        model,
        "--epochs",
        "2",
        "--limit-train",
        "320",
        "--limit-test",
        "32",
        "--batch-size",
        "16",
        "--checkpoint-every",
        "4",
        "--seed",
        "1",
        "--no-report",
        "--no-progress",
    ]
    cmd = [sys.executable, "-m", "nnatlas", *args]
    env = subprocess_env()
    # the uninterrupted reference runs in this process (one thread, as the subprocesses): one interpreter start fewer
    assert main([*args, "--out", str(tmp_path / "ref")]) == 0

    killed = tmp_path / "killed"
    kill_after_first_checkpoint(cmd, killed, env)
    assert not (killed / "final.json").exists(), "the run finished before it was killed"
    state = load_checkpoint(killed, model_name=model).state
    assert 0 < state["step_in_epoch"] < 20 and state["epoch"] == 0  # killed mid-epoch

    resumed = subprocess.run(
        [*cmd, "--out", str(killed), "--resume"], env=env, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {model}" in resumed.stderr
    assert_same_run(tmp_path / "ref", killed)
