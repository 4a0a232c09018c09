"""DDPM: the official CIFAR-10 layout and parameter count, the schedules, q_sample's
moments, the loss, and the ancestral and DDIM samplers (shapes, seeding, DDIM(eta=1) = DDPM)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import nnatlas
from nnatlas.errors import ShapeError
from nnatlas.models.diffusion import (
    DDPMUNet,
    GaussianDiffusion,
    cosine_beta_schedule,
    linear_beta_schedule,
    timestep_embedding,
)


def test_ddpm_parameter_count_and_layout() -> None:
    with torch.device("meta"):
        model = nnatlas.create("ddpm")
    assert sum(p.numel() for p in model.parameters()) == 35_746_307 == nnatlas.card("ddpm").published_params
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    # names and shapes of the official model's PyTorch port (pesser/pytorch_diffusion)
    assert shapes["temb.dense.0.weight"] == (512, 128)
    assert shapes["down.0.block.0.conv1.weight"] == (128, 128, 3, 3)
    assert shapes["down.1.block.0.nin_shortcut.weight"] == (256, 128, 1, 1)
    assert shapes["down.1.attn.1.proj_out.weight"] == (256, 256, 1, 1)
    assert shapes["down.2.downsample.conv.weight"] == (256, 256, 3, 3)
    assert "down.3.downsample.conv.weight" not in shapes and "down.0.attn.0.q.weight" not in shapes
    assert shapes["mid.attn_1.q.weight"] == (256, 256, 1, 1)
    assert shapes["up.3.block.0.conv1.weight"] == (256, 512, 3, 3)
    assert shapes["up.0.block.2.nin_shortcut.weight"] == (128, 256, 1, 1)
    assert shapes["up.1.attn.2.norm.weight"] == (256,)
    assert shapes["up.1.upsample.conv.weight"] == (256, 256, 3, 3)
    assert "up.0.upsample.conv.weight" not in shapes
    assert shapes["conv_out.weight"] == (3, 128, 3, 3)
    assert sum(k.endswith("conv1.weight") for k in shapes) == 4 * 2 + 2 + 4 * 3  # down, mid, up ResnetBlocks


def test_timestep_embedding() -> None:
    emb = timestep_embedding(torch.tensor([0, 7]), 8)
    torch.testing.assert_close(emb[0], torch.tensor([0.0] * 4 + [1.0] * 4))  # sin 0, cos 0
    freqs = torch.tensor([10000.0 ** (-k / 3) for k in range(4)])
    torch.testing.assert_close(emb[1], torch.cat([torch.sin(7 * freqs), torch.cos(7 * freqs)]))


def test_linear_schedule() -> None:
    betas = linear_beta_schedule()
    assert betas.shape == (1000,) and betas[0].item() == pytest.approx(1e-4) and betas[-1].item() == pytest.approx(0.02)
    alpha_bar_T = GaussianDiffusion(betas).alpha_bars[-1].item()
    assert alpha_bar_T == pytest.approx(4.0e-5, rel=0.02)  # x_T is nearly pure noise: sqrt(alpha_bar_T) ~ 0.006


def test_cosine_schedule() -> None:
    diffusion = GaussianDiffusion.cosine(1000)
    ab = diffusion.alpha_bars
    assert ((ab > 0) & (ab < 1)).all()
    assert (ab[1:] < ab[:-1]).all()  # strictly decreasing
    assert ((diffusion.betas > 0) & (diffusion.betas <= 0.999)).all()
    assert ab[0].item() > 0.9999 and ab[-1].item() < 1e-4
    # slower than linear in the middle: the reason for the cosine schedule (Nichol & Dhariwal, Fig. 5)
    assert ab[500] > GaussianDiffusion.linear().alpha_bars[500] * 5

    def f(t: int, s: float = 0.008) -> float:
        return math.cos((t / 1000 + s) / (1 + s) * math.pi / 2) ** 2

    # alpha_bars[t] (0-based) is the paper's alpha_bar(t + 1) = f(t + 1) / f(0), away from the clip at T
    assert ab[499].item() == pytest.approx(f(500) / f(0), rel=1e-9)
    assert cosine_beta_schedule(1000)[0].item() == pytest.approx(1 - f(1) / f(0), rel=1e-9)


def test_bad_schedule_raises() -> None:
    with pytest.raises(ValueError, match="betas"):
        GaussianDiffusion(torch.tensor([0.1, 1.0]))


def test_q_sample_moments() -> None:
    diffusion = GaussianDiffusion.linear()
    g = torch.Generator().manual_seed(0)
    n = 200_000
    x0 = torch.full((n, 1), 1.5)
    for step in (0, 250, 999):
        t = torch.full((n,), step)
        xt = diffusion.q_sample(x0, t, torch.randn(n, 1, generator=g))
        ab = diffusion.alpha_bars[step].item()
        # standard error of the mean ~ 1/sqrt(n) = 0.0022; of the variance ~ sqrt(2/n) = 0.0032
        assert xt.mean().item() == pytest.approx(math.sqrt(ab) * 1.5, abs=0.01)
        assert xt.var().item() == pytest.approx(1 - ab, abs=0.01)


def _tiny_denoiser() -> DDPMUNet:
    """A small DDPM U-Net whose output layers are not zero (the official init zeroes them, and
    a model that predicts 0 would make the sampler tests blind to the model)."""
    torch.manual_seed(0)
    model = nnatlas.create("ddpm_tiny", ch=8, image_size=8, ch_mult=(1, 2), attn_resolutions=(4,), num_timesteps=20)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d) and not module.weight.any():
                nn.init.normal_(module.weight, std=0.05)
    return model.eval()


def test_loss_is_epsilon_mse() -> None:
    model = _tiny_denoiser()  # eval: no dropout, so the two computations see the same network
    diffusion = GaussianDiffusion.linear(20)
    x0 = torch.rand(4, 1, 8, 8) * 2 - 1
    loss = diffusion.loss(model, x0, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)  # the same draws by hand: t first, then the noise
    t = torch.randint(0, 20, (4,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    expected = ((model(diffusion.q_sample(x0, t, noise), t) - noise) ** 2).mean()  # L_simple
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert model.conv_in.weight.grad is not None and model.conv_in.weight.grad.abs().sum() > 0


def test_min_snr_weights_cap_the_x0_error_weight_at_gamma() -> None:
    diffusion = GaussianDiffusion.linear()
    ab = diffusion.alpha_bars
    snr = ab / (1 - ab)
    torch.testing.assert_close(diffusion.snr(), snr)
    assert bool((snr[1:] < snr[:-1]).all())  # falls with t
    w = diffusion.min_snr_weights(5.0)
    noisy = snr <= 5
    assert 0 < int((~noisy).sum()) < 200 and bool(w[noisy].eq(1).all())  # the first ~130 of T = 1000 steps are weighed less
    torch.testing.assert_close(w[~noisy], 5 / snr[~noisy])
    torch.testing.assert_close(w * snr, snr.clamp(max=5.0))  # the x_0 error's weight: min(SNR_t, gamma)
    assert bool(diffusion.min_snr_weights(1e9).eq(1).all())
    for bad in (0.0, -1.0, math.nan):
        with pytest.raises(ValueError, match="gamma > 0"):
            diffusion.min_snr_weights(bad)


def test_min_snr_loss_weighs_each_images_error_by_its_steps_weight() -> None:
    model = _tiny_denoiser()
    diffusion = GaussianDiffusion.linear(20)
    x0 = torch.rand(6, 1, 8, 8) * 2 - 1
    loss = diffusion.loss(model, x0, generator=torch.Generator().manual_seed(5), min_snr_gamma=2.0)
    g = torch.Generator().manual_seed(5)
    t = torch.randint(0, 20, (6,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    per_image = ((model(diffusion.q_sample(x0, t, noise), t) - noise) ** 2).mean(dim=(1, 2, 3))  # (B,)
    snr = (diffusion.alpha_bars / (1 - diffusion.alpha_bars))[t].float()
    torch.testing.assert_close(loss, (torch.minimum(snr, torch.tensor(2.0)) / snr * per_image).mean())
    assert loss < diffusion.loss(model, x0, generator=torch.Generator().manual_seed(5))  # weights <= 1, some < 1 here
    big = diffusion.loss(model, x0, generator=torch.Generator().manual_seed(5), min_snr_gamma=1e9)  # every weight 1
    torch.testing.assert_close(big, diffusion.loss(model, x0, generator=torch.Generator().manual_seed(5)))


@pytest.mark.parametrize("sampler", ["ancestral", "ddim"])
def test_samplers_shape_and_seeding(sampler: str) -> None:
    model = _tiny_denoiser()
    diffusion = GaussianDiffusion.linear(20)

    def run(seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        if sampler == "ancestral":
            return diffusion.sample(model, (2, 1, 8, 8), generator=g)
        return diffusion.ddim_sample(model, (2, 1, 8, 8), steps=5, eta=0.5, generator=g)

    a = run(0)
    assert a.shape == (2, 1, 8, 8) and torch.isfinite(a).all()
    torch.testing.assert_close(run(0), a, rtol=0, atol=0)  # same seed, same samples
    assert not torch.allclose(run(1), a)
    model.train()
    run(0)
    assert model.training  # the sampler ran in eval mode and gave the mode back


def test_ddim_with_eta_one_and_every_step_is_ddpm() -> None:
    """DDIM with eta = 1 over all T steps has sigma_t^2 = the posterior variance and the same
    mean as the ancestral step (Song et al., section 4.1): with one generator the samples agree."""
    model = _tiny_denoiser()
    diffusion = GaussianDiffusion.linear(20)
    ddpm = diffusion.sample(model, (2, 1, 8, 8), generator=torch.Generator().manual_seed(3), variance="posterior")
    ddim = diffusion.ddim_sample(model, (2, 1, 8, 8), steps=20, eta=1.0, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(ddim, ddpm, rtol=1e-4, atol=1e-4)  # float32 arithmetic in two algebraic forms


def test_ddim_eta_zero_is_deterministic_given_x_T() -> None:
    model = _tiny_denoiser()
    diffusion = GaussianDiffusion.cosine(20)
    a = diffusion.ddim_sample(model, (1, 1, 8, 8), steps=4, generator=torch.Generator().manual_seed(0))
    b = diffusion.ddim_sample(model, (1, 1, 8, 8), steps=4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match="steps"):
        diffusion.ddim_sample(model, (1, 1, 8, 8), steps=21)


def test_bad_inputs_raise() -> None:
    model = nnatlas.create("ddpm_tiny").eval()
    x, t = nnatlas.example_input("ddpm_tiny", 2)
    with pytest.raises(ShapeError, match=r"DDPM expects t \(2\)"):
        model(x, t[:1])
    with pytest.raises(ShapeError, match="integer"):
        model(x, t.float())
    with pytest.raises(ShapeError, match=r"t in \[0, 1000\)"):
        model(x, torch.tensor([0, 1000]))
    with pytest.raises(ShapeError, match=r"DDPM expects x \(B, 1, 28, 28\); got \(2, 3, 28, 28\)"):
        model(torch.randn(2, 3, 28, 28), t)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="num_groups"):
        nnatlas.create("ddpm", num_groups=48)
    with pytest.raises(ValueError, match="attn_resolutions"):
        nnatlas.create("ddpm", attn_resolutions=(12,))
    with pytest.raises(ValueError, match="image_size"):
        nnatlas.create("ddpm", image_size=30)
