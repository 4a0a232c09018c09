"""The autoencoder family: noise only in training, the VAE's sampling, loss and draws, the conv AE's range."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import nnatlas
from nnatlas.errors import ShapeError
from nnatlas.models.autoencoder import vae_loss


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny inputs: threads only contend

SMALL = {"in_features": 12, "hidden_sizes": (8, 4)}


def test_denoising_ae_corrupts_in_training_only_and_targets_the_clean_input() -> None:
    dae = nnatlas.create("denoising_ae", **SMALL)
    sae = nnatlas.create("stacked_ae", **SMALL).eval()
    sae.load_state_dict(dae.state_dict())
    x = torch.rand(5, 12)
    dae.train()
    assert not torch.allclose(dae(x), dae(x)), "no fresh noise in training"
    dae.eval()
    torch.testing.assert_close(dae(x), sae(x))  # eval reads x itself: the stacked AE
    torch.testing.assert_close(dae.loss(x), F.mse_loss(sae(x), x))
    dae.train()
    torch.manual_seed(3)
    noisy = x + 0.5 * torch.randn_like(x)
    torch.manual_seed(3)
    torch.testing.assert_close(dae.loss(x), F.mse_loss(sae(noisy), x))  # corrupted input, clean target


def test_stacked_ae_layers_follow_the_seed() -> None:
    model = nnatlas.create("stacked_ae")
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(768, 512), (512, 256), (256, 512), (512, 768)]
    assert sum(isinstance(m, torch.nn.Sigmoid) for m in model.modules()) == 3


def test_vae_samples_in_training_and_is_deterministic_in_eval() -> None:
    vae = nnatlas.create("vae", latent_size=3, **SMALL)
    x = torch.rand(4, 12)
    vae.train()
    r1, mu1, lv1 = vae(x)
    r2, mu2, lv2 = vae(x)
    torch.testing.assert_close(mu1, mu2)
    torch.testing.assert_close(lv1, lv2)
    assert not torch.allclose(r1, r2), "training forward does not sample z"
    vae.eval()
    r3, mu3, _ = vae(x)
    torch.testing.assert_close(r3, vae(x)[0])
    torch.testing.assert_close(r3, vae.decode(mu3))  # z = mu in eval
    assert ((r3 > 0) & (r3 < 1)).all()


def test_vae_loss_is_bce_plus_closed_form_kl() -> None:
    vae = nnatlas.create("vae", latent_size=3, **SMALL).train()
    x = torch.rand(4, 12)
    recon, mu, logvar = vae(x)
    loss = vae_loss(recon, x, mu, logvar)
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in vae.parameters())
    # KL(N(mu, s^2) || N(0, 1)) per dimension is log(1/s) + (s^2 + mu^2)/2 - 1/2
    s = torch.exp(0.5 * logvar)
    kl = (torch.log(1 / s) + (s**2 + mu**2) / 2 - 0.5).sum() / 4
    bce = -(x * recon.log() + (1 - x) * (1 - recon).log()).sum() / 4
    torch.testing.assert_close(loss, bce + kl, rtol=1e-4, atol=1e-4)  # fp32 sums of 48 and 12 terms
    zero = torch.zeros(4, 3)
    torch.testing.assert_close(vae_loss(recon, x, zero, zero), bce, rtol=1e-4, atol=1e-4)  # KL vanishes at N(0, I)


def test_vae_sample_shape_and_generator() -> None:
    vae = nnatlas.create("vae")
    draws = vae.sample(4)
    assert draws.shape == (4, 768)
    a = vae.sample(2, generator=torch.Generator().manual_seed(7))
    b = vae.sample(2, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError):
        vae.sample(0)


def test_conv_ae_shapes_and_signed_output() -> None:
    model = nnatlas.create("conv_ae").eval()
    x = torch.randn(2, 3, 32, 32)  # any size divisible by 8
    code = model.encoder(x)
    assert code.shape == (2, 32, 4, 4)
    y = model(x)
    assert y.shape == x.shape
    assert (y.abs() < 1).all()
    assert (y < 0).any(), "tanh after a ReLU could not go negative (the seed's last block); this one must"
    with pytest.raises(ShapeError, match="divisible by 8"):
        model(torch.randn(1, 3, 36, 36))
