"""Autoencoders from seed 000: stacked, denoising, variational and convolutional.

Dimension letters: B batch, N input features (768 in the seed), Z latent size, C channels,
H x W image size.

    stacked_ae (Bengio et al., 2007 style, seed 000 4.1):
        x (B, N) -> Linear 512 -> sigmoid -> Linear 256 -> sigmoid          (encoder, code (B, 256))
                 -> Linear 512 -> sigmoid -> Linear N -> reconstruction (B, N)   (decoder)
    denoising_ae (Vincent et al., 2008, seed 000 4.2): the same network; in training the
        encoder reads x + 0.5 * randn (a fresh draw each call), in eval x itself. The target
        is always the clean x: ``model.loss(x)`` = MSE(model(x), x).
    vae (Kingma & Welling, 2014, seed 000 4.3):
        x (B, N) -> Linear 512 -> sigmoid -> Linear 256 -> sigmoid -> mu, logvar = two Linear
        heads (B, Z = 128), logvar = log sigma^2 -> z = mu + exp(logvar / 2) * eps in
        training, z = mu in eval -> Linear 256 -> sigmoid -> Linear 512 -> sigmoid ->
        Linear N -> sigmoid (Bernoulli means) -> (recon (B, N), mu, logvar)
        ``vae_loss`` = BCE(recon, x) + KL(N(mu, sigma^2) || N(0, I)), per example: the negative ELBO.
        ``VAEConfig.activation`` picks the hidden activation: the seed's sigmoid, or ReLU.
    conv_ae (seed 000 4.4): x (B, 3, 256, 256)
        -> 3 x ConvBlock (conv 3x3 p1, BN, ReLU, maxpool 2): 3 -> 16 -> 32 -> 32, (B, 32, 32, 32)
        -> UpConvBlock 32 -> 32, UpConvBlock 32 -> 16 (upsample x2, conv 3x3 p1, BN, ReLU)
        -> upsample x2, conv 3x3 p1 16 -> 3, tanh -> (B, 3, 256, 256)

How this differs from the seed: the seed's feature size is 768 where MNIST has 784 pixels;
768 stays the default and ``in_features`` is configurable. The seed draws no activation
after the stacked AE's last Linear (kept: a linear reconstruction for the MSE loss) and none
after the VAE's (added here: sigmoid, since the Bernoulli likelihood's BCE needs outputs in
(0, 1)). The seed's last conv-AE up block ends in BN and ReLU right before the tanh, which
would confine the output to [0, tanh(inf)) = [0, 1) and never reach an image normalised to
[-1, 1]; here the last up block is upsample + conv only, then tanh.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nnatlas.config import check_fields
from nnatlas.errors import ConfigError, ShapeError, check_input
from nnatlas.nn import BatchNorm2d
from nnatlas.nn.names import name
from nnatlas.registry import ModelCard, Paper, Recipe, Seed, configure, register_model

__all__ = [
    "AutoEncoderConfig",
    "AutoEncoder",
    "VAEConfig",
    "VAE",
    "vae_loss",
    "ConvAEConfig",
    "ConvBlock",
    "UpConvBlock",
    "ConvAutoEncoder",
]

Tensor = torch.Tensor

SAE_PAPER = Paper(
    authors="Yoshua Bengio, Pascal Lamblin, Dan Popovici, Hugo Larochelle",
    title="Greedy Layer-Wise Training of Deep Networks",
    venue="NeurIPS",
    year=2007,
    link="https://papers.nips.cc/paper/3048-greedy-layer-wise-training-of-deep-networks",
)
DAE_PAPER = Paper(
    authors="Pascal Vincent, Hugo Larochelle, Yoshua Bengio, Pierre-Antoine Manzagol",
    title="Extracting and Composing Robust Features with Denoising Autoencoders",
    venue="ICML",
    year=2008,
    link="https://doi.org/10.1145/1390156.1390294",
)
VAE_PAPER = Paper(
    authors="Diederik P. Kingma, Max Welling",
    title="Auto-Encoding Variational Bayes",
    venue="ICLR",
    year=2014,
    link="https://arxiv.org/abs/1312.6114",
)
CAE_PAPER = Paper(
    authors="Jonathan Masci, Ueli Meier, Dan Cireşan, Jürgen Schmidhuber",
    title="Stacked Convolutional Auto-Encoders for Hierarchical Feature Extraction",
    venue="ICANN",
    year=2011,
    link="https://doi.org/10.1007/978-3-642-21735-7_7",
)


def _require_sizes(config: object, field: str) -> None:
    """A tuple of sizes that must not be empty (``check_fields`` has checked each size)."""
    if not getattr(config, field):
        raise ConfigError(f"{type(config).__name__}.{field} must be a non-empty tuple of ints >= 1; got ()")


# ----------------------------------------------------------------------------- configs


@dataclass(frozen=True)
class AutoEncoderConfig:
    """Stacked (``noise_std = 0``) or denoising (``noise_std > 0``) MLP autoencoder."""

    in_features: int = 768  # N (the seed's 768; MNIST is 784)
    hidden_sizes: tuple[int, ...] = (512, 256)  # encoder widths; the decoder mirrors them
    noise_std: float = 0.0  # std of the Gaussian corruption added in training (seed: 0.5 for the DAE)

    def __post_init__(self) -> None:
        check_fields(self, minimum={"noise_std": 0.0})
        _require_sizes(self, "hidden_sizes")


@dataclass(frozen=True)
class VAEConfig:
    """Variational autoencoder with a Gaussian encoder and a Bernoulli (sigmoid) decoder."""

    in_features: int = 768
    hidden_sizes: tuple[int, ...] = (512, 256)
    latent_size: int = 128  # Z
    activation: str = "sigmoid"  # the hidden layers' (the seed's sigmoid; "relu" trains several times faster)

    def __post_init__(self) -> None:
        check_fields(self)
        _require_sizes(self, "hidden_sizes")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"VAEConfig.activation must be one of {', '.join(ACTIVATIONS)}; got {self.activation!r}")


@dataclass(frozen=True)
class ConvAEConfig:
    """Convolutional autoencoder: each block halves (encoder) or doubles (decoder) H and W (the card: 256 x 256)."""

    in_channels: int = 3
    channels: tuple[int, ...] = (16, 32, 32)  # encoder widths; the decoder mirrors them back to in_channels

    def __post_init__(self) -> None:
        check_fields(self)
        _require_sizes(self, "channels")


# ----------------------------------------------------------------------------- blocks


ACTIVATIONS = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU}  # hidden activations a VAE may use (the seed's: sigmoid)


def mlp(sizes: list[int], *, last_activation: bool, hidden: str = "sigmoid", last: str = "sigmoid") -> nn.Sequential:
    """Linear layers through ``sizes`` with ``hidden`` between them and ``last`` after the last one if asked."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[hidden]())
        elif last_activation:
            layers.append(ACTIVATIONS[last]())
    return nn.Sequential(*layers)


class ConvBlock(nn.Module):
    """conv 3x3 p1 -> BN -> ReLU -> maxpool 2: (B, C_in, H, W) -> (B, C_out, H/2, W/2)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.bn = BatchNorm2d(out_channels)
        self.pool = nn.MaxPool2d(2, 2)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn(self.conv(x)))  # (B, C_out, H, W)
        return self.pool(x)  # (B, C_out, H/2, W/2)


class UpConvBlock(nn.Module):
    """upsample x2 -> conv 3x3 p1 [-> BN -> ReLU]: (B, C_in, H, W) -> (B, C_out, 2H, 2W).

    ``norm_act=False`` leaves the conv's output as it is (the output block, before tanh).
    """

    def __init__(self, in_channels: int, out_channels: int, *, norm_act: bool = True) -> None:
        super().__init__()
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.bn = BatchNorm2d(out_channels) if norm_act else None

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(self.upsample(x))  # (B, C_out, 2H, 2W)
        return F.relu(self.bn(x)) if self.bn is not None else x


# ----------------------------------------------------------------------------- models


class AutoEncoder(nn.Module):
    """Stacked / denoising MLP autoencoder: x (B, N) -> code (B, hidden_sizes[-1]) -> reconstruction (B, N)."""

    def __init__(self, config: AutoEncoderConfig) -> None:
        super().__init__()
        self.config = c = config
        sizes = [c.in_features, *c.hidden_sizes]  # 768, 512, 256
        self.encoder = mlp(sizes, last_activation=True)  # sigmoid after every encoder layer
        self.decoder = mlp(sizes[::-1], last_activation=False)  # 256, 512, 768: the last Linear is the output
        self._noise_formula = f"X + {c.noise_std:g} ε,  ε ~ N(0, I)"  # the diagram's corruption box

    @property
    def _name(self) -> str:
        return "DenoisingAutoEncoder" if self.config.noise_std > 0 else "StackedAutoEncoder"

    def forward(self, x: Tensor, noise: Tensor | None = None) -> Tensor:
        """x (B, N) -> reconstruction (B, N); in training the encoder reads x + noise_std * noise.

        ``noise`` (B, N) is the corruption's standard normal draw; None draws it here (``randn_like``).
        A trainer that owns its randomness passes it. Eval mode and ``noise_std = 0`` ignore it.
        """
        check_input(x, ("B", self.config.in_features), model=self._name, like=self)
        if self.training and self.config.noise_std > 0:
            eps = torch.randn_like(x) if noise is None else noise  # (B, N), ε ~ N(0, I)
            x = x + self.config.noise_std * eps  # corrupt the input, not the target
            x = name(x, "X̃", self._noise_formula, desc="corrupted input", dims="B D")
        code = self.encoder(x)  # (B, 256)
        return self.decoder(code)  # (B, N)

    def loss(self, x: Tensor) -> Tensor:
        """Mean squared error between the reconstruction of (corrupted, in training) x and the clean x."""
        return F.mse_loss(self(x), x)


class VAE(nn.Module):
    """Variational autoencoder: x (B, N) -> (recon (B, N), mu (B, Z), logvar (B, Z))."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = c = config
        sizes = [c.in_features, *c.hidden_sizes]  # 768, 512, 256
        self.encoder = mlp(sizes, last_activation=True, hidden=c.activation, last=c.activation)
        self.fc_mu = nn.Linear(sizes[-1], c.latent_size)  # mu
        self.fc_logvar = nn.Linear(sizes[-1], c.latent_size)  # log sigma^2
        self.decoder = mlp([c.latent_size, *sizes[::-1]], last_activation=True, hidden=c.activation)  # 128, 256, 512, 768 -> sigmoid

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, N) -> mu, logvar (B, Z)."""
        h = self.encoder(x)  # (B, 256)
        mu = name(self.fc_mu(h), "μ", desc="mean", dims="B Z")
        return mu, name(self.fc_logvar(h), "log σ²", desc="log variance", dims="B Z")

    def reparameterize(self, mu: Tensor, logvar: Tensor, eps: Tensor | None = None) -> Tensor:
        """z = mu + exp(logvar / 2) * eps, eps ~ N(0, I), in training; z = mu in eval.

        ``eps`` (B, Z) is the standard normal draw; None draws it here. A trainer that owns its
        randomness passes it.
        """
        if not self.training:
            return mu
        eps = name(torch.randn_like(mu) if eps is None else eps, "ε", desc="noise", dims="B Z")  # ε ~ N(0, I)
        z = mu + torch.exp(0.5 * logvar) * eps  # (B, Z)
        return name(z, "z", "μ + exp(log σ² / 2) ⊙ ε", desc="latent", dims="B Z")

    def decode(self, z: Tensor) -> Tensor:
        """z (B, Z) -> Bernoulli means (B, N) in (0, 1)."""
        return self.decoder(z)

    def forward(self, x: Tensor, eps: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, N) [, eps (B, Z) the reparameterisation's draw] -> recon (B, N), mu (B, Z), logvar (B, Z)."""
        check_input(x, ("B", self.config.in_features), model="VAE", like=self)
        mu, logvar = self.encode(x)  # (B, Z) each
        z = self.reparameterize(mu, logvar, eps)  # (B, Z)
        return name(self.decode(z), "X̂", desc="reconstruction", dims="B D"), mu, logvar

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n draws from the model: z ~ N(0, I) (n, Z) -> decoder -> (n, N)."""
        if type(n) is not int or n < 1:
            raise ValueError(f"VAE.sample expects n >= 1; got {n!r}")
        p = self.fc_mu.weight
        z = torch.randn(n, self.config.latent_size, generator=generator, device=p.device, dtype=p.dtype)
        return self.decode(z)

    def loss(self, x: Tensor) -> Tensor:
        """The negative ELBO of x (values in [0, 1]), averaged over the batch; see :func:`vae_loss`."""
        recon, mu, logvar = self(x)
        return vae_loss(recon, x, mu, logvar)


def vae_loss(recon: Tensor, x: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """Negative ELBO per example: BCE(recon, x) summed over features + KL(q(z|x) || N(0, I)).

    KL = -1/2 * sum_j (1 + log sigma_j^2 - mu_j^2 - sigma_j^2)   (Kingma & Welling, 2014, appendix B)
    Both terms are summed over their dimensions and averaged over the batch. ``x`` in [0, 1].
    """
    B = x.shape[0]
    bce = F.binary_cross_entropy(recon, x, reduction="sum")
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return (bce + kl) / B


class ConvAutoEncoder(nn.Module):
    """Convolutional autoencoder: x (B, C, H, W) -> code (B, 32, H/8, W/8) -> tanh reconstruction (B, C, H, W)."""

    def __init__(self, config: ConvAEConfig) -> None:
        super().__init__()
        self.config = c = config
        down = [c.in_channels, *c.channels]  # 3, 16, 32, 32
        up = down[::-1]  # 32, 32, 16, 3
        self.encoder = nn.Sequential(*(ConvBlock(a, b) for a, b in zip(down[:-1], down[1:])))
        self.decoder = nn.Sequential(
            *(UpConvBlock(a, b) for a, b in zip(up[:-2], up[1:-1])),  # 32 -> 32, 32 -> 16
            UpConvBlock(up[-2], up[-1], norm_act=False),  # 16 -> 3, no BN/ReLU before the tanh
        )

    def forward(self, x: Tensor) -> Tensor:
        """x (B, C, H, W), H and W divisible by 8 -> reconstruction in (-1, 1), same shape."""
        c = self.config
        check_input(x, ("B", c.in_channels, "H", "W"), model="ConvAutoEncoder", like=self)
        B, C, H, W = x.shape
        factor = 2 ** len(c.channels)
        if H % factor or W % factor:
            raise ShapeError(
                f"ConvAutoEncoder expects input (B, {c.in_channels}, H, W) with H, W divisible by {factor}; "
                f"got {tuple(x.shape)}"
            )
        code = self.encoder(x)  # (B, 32, H/8, W/8)
        return torch.tanh(self.decoder(code))  # (B, C, H, W)


# ----------------------------------------------------------------------------- variants

_SEED000 = "000_dead3008ff14f1b5.txt"
_SIZES_NOTE = (
    "The seed's NFeature is 768 (MNIST has 784 pixels): 768 is the default, in_features is configurable. "
    "published_params is counted from the seed's drawn layer sizes (no paper gives a figure)."
)


# No paper gives a recipe for the seed's models; these start from PyTorch's VAE example (Adam 1e-3, batch 128).
# The VAE runs 40 epochs with cosine decay: with activation="relu" it passes -ELBO 100 nats on MNIST at epoch 26
# (a constant rate gives 101.5 after 20 epochs, the anchor's 101.4). The autoencoders: 10 epochs, constant rate.
VAE_RECIPE = Recipe(optimizer="adam", lr=1e-3, schedule="cosine", batch_size=128, epochs=40,
                    source="pytorch/examples vae/main.py (Adam 1e-3, batch 128); 40 epochs, cosine decay (nnatlas)")
AE_RECIPE = Recipe(optimizer="adam", lr=1e-3, schedule="none", batch_size=128, epochs=10,
                   source="pytorch/examples vae/main.py's optimiser (Adam 1e-3, batch 128), 10 epochs")


def _param_count_mlp(sizes: list[int]) -> int:
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


@register_model(
    "stacked_ae",
    card=ModelCard(
        name="stacked_ae", family="autoencoder", title="Stacked autoencoder", paper=SAE_PAPER,
        recipe=AE_RECIPE,
        input_shape=(768,), output_shape=(768,), task="reconstruction",
        published_params=_param_count_mlp([768, 512, 256, 512, 768]),
        seed=Seed(_SEED000, "4.1 栈式自编码器"),
        notes="768-512-256-512-768 with a sigmoid after each hidden layer, as the seed draws; the output "
        "Linear has no activation (the seed draws none), so train with MSE. Trained end to end here, not "
        "greedily layer by layer. " + _SIZES_NOTE,
    ),
)  # fmt: skip
def stacked_ae(**overrides) -> AutoEncoder:
    return AutoEncoder(configure(AutoEncoderConfig(), overrides))


@register_model(
    "denoising_ae",
    card=ModelCard(
        name="denoising_ae", family="autoencoder", title="Denoising autoencoder", paper=DAE_PAPER,
        recipe=AE_RECIPE,
        input_shape=(768,), output_shape=(768,), task="reconstruction",
        published_params=_param_count_mlp([768, 512, 256, 512, 768]),
        seed=Seed(_SEED000, "4.2 去噪自编码器"),
        notes="The stacked AE with additive Gaussian corruption x + 0.5 * randn in training only (eval reads x); "
        "the target is the clean x: model.loss(x) = MSE(model(x), x). Vincent et al. corrupt by masking "
        "(zeroing inputs); the seed's Gaussian noise is the other standard corruption. " + _SIZES_NOTE,
    ),
)  # fmt: skip
def denoising_ae(**overrides) -> AutoEncoder:
    return AutoEncoder(configure(AutoEncoderConfig(noise_std=0.5), overrides))


@register_model(
    "vae",
    card=ModelCard(
        name="vae", family="autoencoder", title="Variational autoencoder", paper=VAE_PAPER,
        recipe=VAE_RECIPE,
        input_shape=(768,), output_shape=((768,), (128,), (128,)), task="vae",
        published_params=_param_count_mlp([768, 512, 256]) + 2 * (256 * 128 + 128)
        + _param_count_mlp([128, 256, 512, 768]),
        seed=Seed(_SEED000, "4.3 变分自编码器"),
        notes="forward returns (recon, mu, logvar) with logvar = log sigma^2; z = mu + exp(logvar / 2) * eps in "
        "training, z = mu in eval. Loss: nnatlas.models.autoencoder.vae_loss (BCE + KL, the negative ELBO) or "
        "model.loss(x), x in [0, 1]; model.sample(n, generator) decodes z ~ N(0, I). Hidden activations are the "
        "seed's sigmoids (activation='relu' in the config: ReLU, which trains several times faster); the seed draws no activation after the last decoder Linear, a sigmoid is added here "
        "(Bernoulli means, needed by the BCE). " + _SIZES_NOTE,
    ),
)  # fmt: skip
def vae(**overrides) -> VAE:
    return VAE(configure(VAEConfig(), overrides))


def _conv_ae_params(chans: list[int]) -> int:
    convs = sum(9 * a * b + b for a, b in zip(chans[:-1], chans[1:]))
    bns = 2 * sum(chans[1:-1])  # BN after every conv but the output one (weight and bias)
    return convs + bns


@register_model(
    "conv_ae",
    card=ModelCard(
        name="conv_ae", family="autoencoder", title="Convolutional autoencoder", paper=CAE_PAPER,
        recipe=AE_RECIPE,
        input_shape=(3, 256, 256), output_shape=(3, 256, 256), task="reconstruction",
        published_params=_conv_ae_params([3, 16, 32, 32, 32, 16, 3]),
        seed=Seed(_SEED000, "4.4 卷积自编码器"),
        notes="Conv blocks (conv 3x3 p1, BN, ReLU, maxpool 2) 3->16->32->32 to (32, 32, 32); up blocks (nearest "
        "upsample x2, conv 3x3 p1, BN, ReLU) 32->32->16, then upsample, conv 16->3 and tanh. The seed's last up "
        "block keeps BN and ReLU before the tanh, which confines outputs to [0, 1) (an image in [-1, 1] cannot be "
        "reconstructed); they are dropped from that block. Any H, W divisible by 8 are accepted. published_params "
        "is the seed's layer sizes summed (no paper figure) as built here: 28,899. As the seed draws it, with "
        "the last block's BN(3), the count is 28,905 (+6).",
    ),
)  # fmt: skip
def conv_ae(**overrides) -> ConvAutoEncoder:
    return ConvAutoEncoder(configure(ConvAEConfig(), overrides))
