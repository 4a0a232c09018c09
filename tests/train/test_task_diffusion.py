"""The diffusion task: the Fréchet distance against closed forms, the judge's summary on hand-made
logits, the samplers against an oracle denoiser, fitting and batching, the weights' moving average
(--ema), and SIGKILL + --resume bitwise for ddpm_tiny."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from kill_resume import kill_after_first_checkpoint, subprocess_env
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import TensorDataset

import nnatlas
from nnatlas.cli import main
from nnatlas.data import DataBundle
from nnatlas.models.diffusion import GaussianDiffusion
from nnatlas.train import TrainConfig
from nnatlas.train.checkpoint import load_checkpoint
from nnatlas.train.tasks.diffusion import (
    DiffusionTask,
    frechet_distance,
    gaussian_frechet_distance,
    judge_run,
    judge_summary,
    penultimate_features,
)
from nnatlas.train.tasks.vision import gather

CPU = torch.device("cpu")
# A few milliseconds a step on 8x8 digits: the U-Net at its smallest that keeps ddpm_tiny's three levels.
SMALL = ["--model-arg", "ch=8", "--model-arg", "num_groups=4", "--model-arg", "num_timesteps=20"]
QUICK = ["--ddim-steps", "2", "--ddpm-samples", "0", "--quality-samples", "0", "--test-images", "16"]


def _exact_moments(mean: np.ndarray, cov: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n points whose sample mean and sample covariance (n - 1) are exactly ``mean`` and ``cov``."""
    z = np.random.default_rng(seed).standard_normal((n, len(mean)))
    z -= z.mean(0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T  # whitened: sample covariance I
    return mean + z @ np.linalg.cholesky(cov).T


def test_frechet_distance_of_a_set_with_itself_is_zero() -> None:
    feats = torch.randn(300, 12, generator=torch.Generator().manual_seed(0)) @ torch.randn(12, 12, generator=torch.Generator().manual_seed(1))
    assert frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-7)
    assert frechet_distance(feats, feats + 1.0) == pytest.approx(12.0, rel=1e-7)  # shifted by 1 in each of 12 dims


def test_frechet_distance_of_two_gaussians_is_the_closed_form() -> None:
    # diagonal covariances commute: d^2 = ||mu1 - mu2||^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)  # 7.25 + 4 + 1 = 12.25
    assert gaussian_frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(want, rel=1e-10)
    x, y = _exact_moments(mu1, np.diag(a), 500, 0), _exact_moments(mu2, np.diag(b), 700, 1)
    assert frechet_distance(x, y) == pytest.approx(want, rel=1e-8)
    # a rotated covariance: N(0, R diag(a) R^T) against N(0, diag(a)), with R a 90-degree turn in the plane
    # of dims 0 and 1, is diag(4, 1, .25) against diag(1, 4, .25): d^2 = 2 (2 - 1)^2 = 2
    rot = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    assert gaussian_frechet_distance(np.zeros(3), rot @ np.diag(a) @ rot.T, np.zeros(3), np.diag(a)) == pytest.approx(2.0, rel=1e-8)
    with pytest.raises(ValueError, match="feature sets"):
        frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))


def test_judge_summary_on_hand_made_logits() -> None:
    p = torch.tensor([[0.95, 0.05, 0.0], [0.5, 0.5, 0.0], [0.0, 0.05, 0.95], [0.0, 0.1, 0.9], [0.2, 0.0, 0.8]])
    s = judge_summary(torch.log(p.clamp_min(1e-30)), num_classes=3)  # softmax(log p) = p
    assert s["samples"] == 5
    assert s["confident_share"] == pytest.approx(3 / 5)  # 0.95, 0.95, 0.9 (>= 0.9 counts); not 0.5 or 0.8
    assert s["class_histogram"] == pytest.approx([2 / 5, 0.0, 3 / 5])  # the tie 0.5/0.5 goes to the first class
    assert (s["min_class_share"], s["max_class_share"]) == pytest.approx((0.0, 3 / 5))
    assert s["mean_confidence"] == pytest.approx((0.95 + 0.5 + 0.95 + 0.9 + 0.8) / 5)


def test_penultimate_features_are_the_input_of_the_last_linear_layer() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    x = torch.randn(5, 2, 2)
    logits, feats = penultimate_features(net, x)
    assert torch.equal(feats, net[2](net[1](net[0](x)))) and torch.equal(logits, net(x))
    assert not net._forward_hooks and not net[3]._forward_hooks  # the hook is gone


class _Oracle(nn.Module):
    """The exact noise prediction for data that is one point c: eps = (x_t - sqrt(ab_t) c) / sqrt(1 - ab_t)."""

    def __init__(self, diffusion: GaussianDiffusion, c: torch.Tensor) -> None:
        super().__init__()
        self.ab, self.c = diffusion.alpha_bars.float(), c
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ab = self.ab[t].view(-1, 1, 1, 1)
        return (x - ab.sqrt() * self.c) / (1 - ab).sqrt()


def test_samplers_recover_the_one_point_of_an_oracles_data_clip_and_ddim_eta0_is_deterministic() -> None:
    diffusion = GaussianDiffusion.linear(100, 1e-3, 0.2)
    c = torch.linspace(-0.8, 0.8, 16).view(1, 1, 4, 4)
    oracle = _Oracle(diffusion, c)
    torch.manual_seed(0)
    net = nnatlas.create("ddpm_tiny", image_size=8, ch=8, num_groups=4, attn_resolutions=(4,), num_timesteps=100).eval()
    with torch.no_grad():  # the zero-initialised output conv would predict eps = 0 everywhere
        net.conv_out.weight.normal_(0, 0.1)

    def ddim(seed: int, eta: float = 0.0) -> torch.Tensor:
        return diffusion.ddim_sample(net, (2, 1, 8, 8), steps=5, eta=eta, generator=torch.Generator().manual_seed(seed))

    for clip in (False, True):  # the oracle's x_0 lies in [-1, 1]: clipping changes nothing
        x = diffusion.ddim_sample(oracle, (3, 1, 4, 4), steps=10, generator=torch.Generator().manual_seed(0), clip_denoised=clip)
        assert torch.allclose(x, c.expand_as(x), atol=1e-4)
        x = diffusion.sample(oracle, (3, 1, 4, 4), generator=torch.Generator().manual_seed(0), clip_denoised=clip)
        assert torch.allclose(x, c.expand_as(x), atol=1e-4)
    assert torch.equal(ddim(0), ddim(0))  # eta 0: x_T decides everything
    assert not torch.equal(ddim(0), ddim(1))
    assert not torch.equal(ddim(0), ddim(0, eta=1.0))  # eta 1 adds noise at every step
    # clipped, the last step of either sampler returns the clipped x_0 itself: in [-1, 1] whatever the model says
    gen = torch.Generator().manual_seed(0)
    for x in (diffusion.ddim_sample(net, (2, 1, 8, 8), steps=5, generator=gen, clip_denoised=True),
              diffusion.sample(net, (2, 1, 8, 8), generator=gen, clip_denoised=True)):  # fmt: skip
        assert x.abs().max() <= 1.0 + 1e-4  # float32 round-off: beta_1 / (1 - alpha_bar_1) = 1 + 1.3e-5
    assert diffusion.sample(net, (2, 1, 8, 8), generator=gen).abs().max() > 1.0  # unclipped it strays


def _bundle(images: torch.Tensor) -> DataBundle:
    ds = TensorDataset(images, torch.arange(len(images)) % 10)
    return DataBundle(name="hand-made", task="classification", train=ds, test=ds, num_classes=10, input_shape=tuple(images.shape[1:]))


def test_fit_takes_the_datas_size_and_pads_with_black() -> None:
    task, net = DiffusionTask.fit("ddpm_tiny", _bundle(torch.rand(4, 1, 28, 28)), {}, {})
    assert task.plan.overrides == {"in_channels": 1} and net.config.image_size == 28
    task, net = DiffusionTask.fit("ddpm_tiny", _bundle(torch.rand(4, 1, 8, 8)), {}, {"ch": 8, "num_groups": 4})
    assert net.config.image_size == 8 and net.config.attn_resolutions == (4,)  # attention stays at level 1
    task, net = DiffusionTask.fit("ddpm", _bundle(torch.rand(4, 1, 28, 28)), {}, {"ch": 32, "ch_mult": (1, 2, 2, 2), "num_res_blocks": 1})
    assert net.config.image_size == 32 and net.config.in_channels == 1 and net.config.attn_resolutions == (16,)
    x = task.inputs(torch.ones(1, 1, 28, 28))
    assert x.shape == (1, 1, 32, 32) and x[..., :28, :28].eq(1).all() and x[..., 28:, :].eq(-1).all() and x[..., :, 28:].eq(-1).all()
    assert torch.equal(task.outputs(x), torch.ones(1, 1, 28, 28))
    with pytest.raises(ValueError, match="pixels in \\[0, 1\\]"):
        DiffusionTask.fit("ddpm_tiny", _bundle(torch.rand(4, 1, 28, 28) * 255), {}, {})


def test_evaluation_draws_are_fixed_per_image_and_training_draws_come_from_the_generator() -> None:
    task, _ = DiffusionTask.fit("ddpm_tiny", _bundle(torch.rand(6, 1, 8, 8)), {}, {"ch": 8, "num_groups": 4})
    whole = task.batch("test", torch.arange(6), device=CPU)
    part = task.batch("test", torch.tensor([4, 5]), device=CPU)
    assert torch.equal(whole["t"][4:], part["t"]) and torch.equal(whole["noise"][4:], part["noise"])
    assert len(set(whole["t"].tolist())) > 1
    a, b = (task.batch("train", torch.arange(6), device=CPU, generator=torch.Generator().manual_seed(s)) for s in (0, 0))
    c = task.batch("train", torch.arange(6), device=CPU, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a["t"], b["t"]) and torch.equal(a["noise"], b["noise"]) and not torch.equal(a["noise"], c["noise"])
    assert 0 <= int(a["t"].min()) and int(a["t"].max()) < 1000


def test_min_snr_gamma_weighs_the_training_loss_and_leaves_the_test_loss_l_simple() -> None:
    images = torch.rand(6, 1, 8, 8)
    plain, net = DiffusionTask.fit("ddpm_tiny", _bundle(images), {}, {"ch": 8, "num_groups": 4})
    weighted, _ = DiffusionTask.fit("ddpm_tiny", _bundle(images), {"min_snr_gamma": 5.0}, {"ch": 8, "num_groups": 4})
    torch.manual_seed(0)
    for module in net.modules():  # the official init zeroes the output conv: a model predicting 0 hides the weights
        if isinstance(module, nn.Conv2d) and not module.weight.any():
            nn.init.normal_(module.weight, std=0.05)
    batch = plain.batch("train", torch.arange(6), device=CPU, generator=torch.Generator().manual_seed(0))
    batch["t"] = torch.tensor([0, 10, 60, 200, 500, 999])  # three steps with SNR > 5, three below
    per_image = plain._sq_error(net, batch).flatten(1).mean(1)
    snr = plain.diffusion.snr()[batch["t"]].float()
    assert int((snr > 5).sum()) == 3
    torch.testing.assert_close(plain.loss(net, batch), per_image.mean())
    torch.testing.assert_close(weighted.loss(net, batch), (snr.clamp(max=5.0) / snr * per_image).mean())
    torch.testing.assert_close(weighted.sums(net, batch), plain.sums(net, batch))  # the test loss: unweighted L_simple
    for bad in (-1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="--min-snr-gamma must be a number >= 0"):
            TrainConfig(model="ddpm_tiny", steps=1, task_options={"min_snr_gamma": bad}).validate()


def test_ema_is_validated() -> None:
    with pytest.raises(ValueError, match="--ema must be"):
        TrainConfig(model="ddpm_tiny", steps=1, ema=1.0).validate()


def test_ddim_eta_is_validated_and_ddpm_tinys_recipe_sets_it() -> None:
    for bad in (-0.1, math.nan, math.inf):
        with pytest.raises(ValueError, match="--ddim-eta must be a number >= 0"):
            TrainConfig(model="ddpm_tiny", steps=1, task_options={"ddim_eta": bad}).validate()
    TrainConfig(model="ddpm_tiny", steps=1, task_options={"ddim_eta": 1.0}).validate()
    card = {"ddim_eta": 1.0, "quality_seeds": 5}  # the card's recipe: eta 1, the share judged over five sample seeds
    assert TrainConfig(model="ddpm_tiny", steps=1).resolved().task_options == card
    assert TrainConfig(model="ddpm_tiny", steps=1, task_options={"ddim_eta": 0.0}).resolved().task_options == card | {"ddim_eta": 0.0}
    assert TrainConfig(model="ddpm", steps=1).resolved().task_options == {}  # the task's default, Song et al.'s eta 0


def test_killed_mid_run_and_resumed_equals_uninterrupted_run_bitwise(tmp_path: Path) -> None:
    """t and eps come from the trainer's per-step generator; the moving average (--ema) is in the checkpoint,
    and it, not the trained weights, is evaluated, saved and loaded."""
    args = ["train", "ddpm_tiny", "--steps", "12", "--limit-train", "320", "--limit-test", "16", "--batch-size", "16",
            "--checkpoint-every", "4", "--ema", "0.9", "--seed", "1", "--no-report", "--no-progress", *SMALL, *QUICK]  # fmt: skip
    cmd = [sys.executable, "-m", "nnatlas", *args]
    env = subprocess_env()
    assert main([*args, "--out", str(tmp_path / "ref")]) == 0
    ref_ckpt = load_checkpoint(tmp_path / "ref", model_name="ddpm_tiny").tensors
    saved = load_file(tmp_path / "ref" / "last.safetensors")
    assert all(torch.equal(ref_ckpt[f"ema.{k}"], v) for k, v in saved.items())
    assert any(not torch.equal(ref_ckpt[f"model.{k}"], v) for k, v in saved.items())
    loaded = nnatlas.load(tmp_path / "ref", weights="last")
    assert all(torch.equal(loaded.model.state_dict()[k], v) for k, v in saved.items())
    q = judge_run(tmp_path / "ref", samples=8, ddim_steps=2, quality_seeds=1)  # on request: trains the judge into OUT/judge
    assert q["samples"] == 8 and 0 <= q["confident_share"] <= 1 and sum(q["class_histogram"]) == pytest.approx(1.0)
    assert (tmp_path / "ref" / "judge" / "final.json").is_file() and math.isfinite(q["fid_lenet"])
    judge, test = nnatlas.load(tmp_path / "ref" / "judge"), nnatlas.data.load("digits").test  # the run's offline data
    x, _ = gather(test, torch.arange(len(test)))
    real_logits = penultimate_features(judge.model, judge.task.image.inputs(x.unsqueeze(1) if x.dim() == 3 else x))[0]
    assert q["real_confident_share"] == judge_summary(real_logits, 10)["confident_share"]  # the ceiling: real test digits
    # --quality-seeds: each seed's samples judged alone (seed 3 is the one-seed figure), the mean and the worst extremes
    q3 = judge_run(tmp_path / "ref", samples=8, ddim_steps=2, quality_seeds=3)
    assert q3["sample_seeds"] == [3, 4, 5] and q3["samples"] == 24 and q3["samples_per_seed"] == 8
    assert q3["per_seed"][0]["confident_share"] == q["confident_share"] and q3["per_seed"][0]["fid_lenet"] == q["fid_lenet"]
    trained = nnatlas.load(tmp_path / "ref", weights="last")
    trained.task.opts["ddim_steps"] = 2
    for row in q3["per_seed"]:
        logits = penultimate_features(judge.model, judge.task.image.inputs(trained.task.sample(trained.model, 8, seed=row["seed"])))[0]
        assert row["confident_share"] == judge_summary(logits, 10)["confident_share"]
    shares = [row["confident_share"] for row in q3["per_seed"]]
    assert q3["confident_share"] == pytest.approx(sum(shares) / 3) and q3["confident_share_range"] == [min(shares), max(shares)]
    assert q3["confident_share_std"] == pytest.approx(float(np.std(shares, ddof=1)))
    assert q3["min_class_share"] == min(row["min_class_share"] for row in q3["per_seed"])
    assert q3["max_class_share"] == max(row["max_class_share"] for row in q3["per_seed"])
    assert q3["fid_lenet"] == pytest.approx(sum(row["fid_lenet"] for row in q3["per_seed"]) / 3)
    assert judge_run(tmp_path / "ref", samples=2, ddim_steps=1)["sample_seeds"] == [3, 4, 5, 6, 7]  # the card's five
    with pytest.raises(ValueError, match="--quality-seeds must be an integer >= 1"):
        judge_run(tmp_path / "ref", samples=8, quality_seeds=0)

    killed = tmp_path / "killed"
    kill_after_first_checkpoint(cmd, killed, env)
    assert not (killed / "final.json").exists(), "the run finished before it was killed"
    assert 0 < load_checkpoint(killed, model_name="ddpm_tiny").state["global_step"] < 12  # killed mid-run

    resumed = subprocess.run([*cmd, "--out", str(killed), "--resume"], check=False, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming ddpm_tiny" in resumed.stderr
    a, b = load_file(tmp_path / "ref" / "last.safetensors"), load_file(killed / "last.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    got_ckpt = load_checkpoint(killed, model_name="ddpm_tiny").tensors
    assert all(torch.equal(ref_ckpt[k], got_ckpt[k]) for k in ref_ckpt if k.startswith(("model.", "ema.")))
    ref_final = json.loads((tmp_path / "ref" / "final.json").read_text())
    assert ref_final["test_loss"] == json.loads((killed / "final.json").read_text())["test_loss"]
    assert math.isfinite(ref_final["test_loss"])
