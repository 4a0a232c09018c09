"""U-Net (Ronneberger, Fischer & Brox, MICCAI 2015): a contracting path, an expanding path, skips.

As seed 003 shows it (milesial/Pytorch-UNet, registered as ``unet``), padded convolutions keep
the size, so the output map is the input's size:

    x (B, 3, H, W)
    -> inc    DoubleConv 3 -> 64                       x1 (B, 64, H, W)
    -> down1  maxpool 2 + DoubleConv 64 -> 128         x2 (B, 128, H/2, W/2)
    -> down2  ... 128 -> 256                           x3 (B, 256, H/4, W/4)
    -> down3  ... 256 -> 512                           x4 (B, 512, H/8, W/8)
    -> down4  ... 512 -> 1024 / f                      x5 (B, 1024/f, H/16, W/16)
    -> up1(x5, x4): up-sample x2, pad to x4, cat [x4, up], DoubleConv -> 512 / f     (B, 512/f, H/8, W/8)
    -> up2(., x3) -> 256 / f -> up3(., x2) -> 128 / f -> up4(., x1) -> 64           (B, 64, H, W)
    -> outc   1x1 conv 64 -> L                         logits (B, L, H, W)

DoubleConv = 2 x [conv 3x3 P=1 -> BatchNorm -> ReLU]. The up-sampling is a 2x2 transposed
convolution halving the channels (f = 1), or with ``bilinear=True`` a bilinear up-sampling that
keeps them, in which case down4 and up1-up3 halve their outputs (f = 2) so the concatenation
has the same width, and each Up's DoubleConv narrows through in/2 mid channels.

The 2015 paper (``unet_2015``) uses unpadded ("valid") 3x3 convolutions without batch norm, so
every convolution takes 2 pixels and the skip is centre-cropped to the up-sampled map:

    x (B, 1, 572, 572) -> 570 -> 568 (x1) -> pool 284 -> 282 -> 280 (x2) -> pool 140 -> 138 -> 136 (x3)
    -> pool 68 -> 66 -> 64 (x4) -> pool 32 -> 30 -> 28 (x5, 1024 maps)
    -> up-conv 2x2 56, crop x4 to 56, cat, 54 -> 52 -> 104 -> 100 -> 200 -> 196 -> 392 -> 390 -> 388
    -> 1x1 conv 64 -> 2                                logits (B, 2, 388, 388)

An input side s works when every pooled map is even: s = 16 m + 60 with m >= 8 (188, 204, ...,
572, ...), and the output side is s - 184.

Seed 003 shows milesial's code with the older conv bias (the repository dropped it before batch
norm; the published 31,037,698 is without it) and a bilinear snippet without align_corners=True.

Letters: B batch, L classes (per-pixel logits; the softmax is folded into the loss).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nnatlas.config import check_fields
from nnatlas.errors import ConfigError, ShapeError, check_input
from nnatlas.nn import BatchNorm2d
from nnatlas.registry import ModelCard, Paper, Recipe, Seed, configure, register_model

__all__ = ["UNetConfig", "DoubleConv", "Down", "Up", "OutConv", "UNet", "valid_unpadded_sizes"]

UNET_PAPER = Paper(
    authors="O. Ronneberger, P. Fischer, T. Brox",
    title="U-Net: Convolutional Networks for Biomedical Image Segmentation",
    venue="MICCAI (LNCS 9351)",
    year=2015,
    link="https://arxiv.org/abs/1505.04597",
)


@dataclass(frozen=True)
class UNetConfig:
    """``padded``: same-size convolutions with batch norm, up-sampled maps padded to the skip
    (milesial); ``padded=False``: the paper's valid convolutions, skips cropped (set
    ``batch_norm=False`` with it for the paper). ``base_channels`` is the first level's width."""

    in_channels: int = 3
    num_classes: int = 2
    base_channels: int = 64
    bilinear: bool = False
    padded: bool = True
    batch_norm: bool = True
    dropout: float = 0.0  # on the bottom map, "at the end of the contracting path" (paper, section 3.1)

    def __post_init__(self) -> None:
        check_fields(self)
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"UNetConfig.dropout must be in [0, 1); got {self.dropout}")
        if self.bilinear and self.base_channels % 2:
            raise ConfigError(f"UNetConfig.base_channels must be even with bilinear=True; got {self.base_channels}")
        if self.bilinear and not self.padded:
            raise ConfigError("UNetConfig: bilinear=True needs padded=True (the unpadded paper net uses up-convs)")


def valid_unpadded_sizes(limit: int = 600) -> list[int]:
    """Input sides up to ``limit`` the unpadded U-Net accepts: 16 m + 60, m >= 8 (188, 204, ..., 572, ...)."""
    return list(range(188, limit + 1, 16))


class DoubleConv(nn.Module):
    """(conv 3x3 -> [BN] -> ReLU) x 2: (B, in, H, W) -> (B, out, H, W), or (H - 4, W - 4) unpadded."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        mid_channels: int | None = None,
        padding: int = 1,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        mid_channels = mid_channels or out_channels
        layers: list[nn.Module] = []
        for cin, cout in ((in_channels, mid_channels), (mid_channels, out_channels)):
            # a bias before batch norm is redundant (milesial drops it; the 2015 net, without BN, has it)
            layers.append(nn.Conv2d(cin, cout, kernel_size=3, padding=padding, bias=not batch_norm))
            if batch_norm:
                layers.append(BatchNorm2d(cout))
            layers.append(nn.ReLU(inplace=True))
        self.double_conv = nn.Sequential(*layers)  # milesial's name and indices: its checkpoints load as they are

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.double_conv(x)


class Down(nn.Module):
    """Max-pool 2 then DoubleConv: (B, in, H, W) -> (B, out, H/2, W/2) (less 4 unpadded)."""

    def __init__(self, in_channels: int, out_channels: int, padding: int = 1, batch_norm: bool = True) -> None:
        super().__init__()
        self.maxpool_conv = nn.Sequential(
            nn.MaxPool2d(2), DoubleConv(in_channels, out_channels, padding=padding, batch_norm=batch_norm)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool_conv(x)


class Up(nn.Module):
    """Up-sample x2, match the skip's size, concatenate [skip, up], DoubleConv.

    ``bilinear``: bilinear up-sampling (channels kept, DoubleConv narrows through in/2);
    otherwise a 2x2 transposed convolution to in/2 channels (the paper's "up-conv").
    ``padded``: pad the up-sampled map to the skip (milesial); else centre-crop the skip (paper).
    """

    def __init__(
        self, in_channels: int, out_channels: int, bilinear: bool = False, padded: bool = True, batch_norm: bool = True
    ) -> None:
        super().__init__()
        self.padded = padded
        padding = 1 if padded else 0
        if bilinear:
            self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
            self.conv = DoubleConv(in_channels, out_channels, in_channels // 2, padding=padding, batch_norm=batch_norm)
        else:
            self.up = nn.ConvTranspose2d(in_channels, in_channels // 2, kernel_size=2, stride=2)
            self.conv = DoubleConv(in_channels, out_channels, padding=padding, batch_norm=batch_norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """x: (B, in, h, w), skip: (B, in/2 or in*, H, W) -> (B, out, H, W) padded, (B, out, 2h - 4, 2w - 4) not."""
        x = self.up(x)  # (B, in/2, 2h, 2w) up-conv; (B, in, 2h, 2w) bilinear
        dy, dx = skip.shape[2] - x.shape[2], skip.shape[3] - x.shape[3]
        if self.padded:  # odd sizes: the pooled map lost a row, give it back as zeros
            x = F.pad(x, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])  # (B, ., H, W)
        else:  # the paper's "cropping ... due to the loss of border pixels in every convolution"
            skip = skip[:, :, dy // 2 : dy // 2 + x.shape[2], dx // 2 : dx // 2 + x.shape[3]]  # (B, ., 2h, 2w)
        x = torch.cat([skip, x], dim=1)  # (B, in, ., .)
        return self.conv(x)


class OutConv(nn.Module):
    """1x1 convolution to the classes: (B, in, H, W) -> (B, L, H, W)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class UNet(nn.Module):
    """inc, down1-down4, up1-up4 with skips from the matching level, outc (milesial's names)."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        c, p, bn, bilinear = config.base_channels, (1 if config.padded else 0), config.batch_norm, config.bilinear
        f = 2 if bilinear else 1
        self.inc = DoubleConv(config.in_channels, c, padding=p, batch_norm=bn)
        self.down1 = Down(c, 2 * c, p, bn)
        self.down2 = Down(2 * c, 4 * c, p, bn)
        self.down3 = Down(4 * c, 8 * c, p, bn)
        self.down4 = Down(8 * c, 16 * c // f, p, bn)
        self.drop = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.up1 = Up(16 * c, 8 * c // f, bilinear, config.padded, bn)
        self.up2 = Up(8 * c, 4 * c // f, bilinear, config.padded, bn)
        self.up3 = Up(4 * c, 2 * c // f, bilinear, config.padded, bn)
        self.up4 = Up(2 * c, c, bilinear, config.padded, bn)
        self.outc = OutConv(c, config.num_classes)

    def _check(self, x: torch.Tensor) -> None:
        c = self.config
        check_input(x, ("B", c.in_channels, "H", "W"), model="UNet", like=self)
        H, W = x.shape[-2:]
        if c.padded and min(H, W) < 16:
            raise ShapeError(
                f"UNet expects input (B, {c.in_channels}, H, W) with H, W >= 16 (four 2x2 pools); got {tuple(x.shape)}"
            )
        if not c.padded and any(s < 188 or (s - 60) % 16 for s in (H, W)):
            raise ShapeError(
                f"UNet (unpadded) expects input (B, {c.in_channels}, H, W) with each side 16 m + 60, m >= 8 "
                f"(188, 204, 220, ..., 572, ...: every pooled map even); got {tuple(x.shape)}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> per-pixel logits (B, L, H, W) padded, (B, L, H - 184, W - 184) unpadded."""
        self._check(x)
        B, C, H, W = x.shape
        x1 = self.inc(x)  # (B, 64, H, W)              unpadded 572 -> 568
        x2 = self.down1(x1)  # (B, 128, H/2, W/2)       280
        x3 = self.down2(x2)  # (B, 256, H/4, W/4)       136
        x4 = self.down3(x3)  # (B, 512, H/8, W/8)       64
        x5 = self.drop(self.down4(x4))  # (B, 1024/f, H/16, W/16)  28
        x = self.up1(x5, x4)  # (B, 512/f, H/8, W/8)     52
        x = self.up2(x, x3)  # (B, 256/f, H/4, W/4)      100
        x = self.up3(x, x2)  # (B, 128/f, H/2, W/2)      196
        x = self.up4(x, x1)  # (B, 64, H, W)             388
        return self.outc(x)  # (B, L, H, W)


# ---------------------------------------------------------------------------------------------
# Registered variants
# ---------------------------------------------------------------------------------------------


@register_model(
    "unet",
    card=ModelCard(
        name="unet",
        family="unet",
        title="U-Net (milesial/Pytorch-UNet: padded, batch norm)",
        paper=UNET_PAPER,
        input_shape=(3, 64, 64),
        output_shape=(2, 64, 64),
        task="segmentation",
        published_params=31_037_698,
        recipe=Recipe(optimizer="adam", lr=2e-3, schedule="onecycle", batch_size=4, steps=1500, eval_every=250,
                      source="nnatlas, measured on 2 CPU cores: Adam with 1cycle on random 256x256 tiles (turns, flips) of "
                      "the 25 training slices, 1,500 steps (240 passes over the slices in tiles); the README's figure "
                      "adds --model-arg base_channels=16 (1.9M parameters: 0.6 s a step on one core, 31M at 64)"),
        seed=Seed("003_979c5363c5233b21.txt", "Unet"),
        notes=(
            "Seed 003's code is milesial/Pytorch-UNet: DoubleConv (conv3x3 p1 - BN - ReLU, twice), 4 x Down (maxpool "
            "2 + DoubleConv), 4 x Up (2x2 transposed conv by default, or bilinear=True with halved channels: "
            "17,263,042 parameters), pad the up-sampled map to the skip, concatenate, DoubleConv; 1x1 OutConv. "
            "in_channels 3, 2 classes: 31,037,698 parameters. The repository's convolutions have no bias (it is "
            "redundant before batch norm) and the published count is without it; the seed's older copy keeps the "
            "default bias (31,043,586). Module names and state-dict keys are the repository's. Any input of 16x16 "
            "or more works (odd sizes are padded); the card uses 64x64 so the tests run on CPU. Seed errata: its "
            "bilinear snippet nn.Upsample(scale_factor=2, mode='bilinear') omits the repository's align_corners=True "
            "(kept here; torch's default samples differently); its prose calls the skips a remedy for vanishing "
            "gradients; in U-Net they carry the high-resolution detail the "
            "contracting path pooled away."
        ),
    ),
)
def unet(**overrides) -> UNet:
    return UNet(configure(UNetConfig(), overrides))


@register_model(
    "unet_2015",
    card=ModelCard(
        name="unet_2015",
        family="unet",
        title="U-Net (Ronneberger et al., 2015, as published)",
        paper=UNET_PAPER,
        input_shape=(1, 572, 572),
        output_shape=(2, 388, 388),
        small_input_shape=(1, 188, 188),
        task="segmentation",
        published_params=31_030_658,
        recipe=Recipe(optimizer="adam", lr=1e-3, schedule="onecycle", batch_size=1, steps=1200, eval_every=400,
                      source="the paper's batch: one 572x572 tile a step ('we favor large input tiles over a large batch "
                      "size'); Adam with 1cycle in place of its SGD with momentum 0.99 (it gives no learning rate); "
                      "a CPU budget of steps, measured with --model-arg base_channels=16"),
        seed=Seed("003_979c5363c5233b21.txt", "Unet"),
        notes=(
            "The paper's Figure 1: unpadded 3x3 convolutions with ReLU and no batch norm, 64-128-256-512-1024 maps, "
            "2x2 max-pool, 2x2 up-convolutions halving the maps, the skip centre-cropped and concatenated, 1x1 "
            "convolution to 2 classes; 1 input channel. 572x572 tiles give 388x388 maps (the paper's figure; "
            "tests/models/test_unet.py checks it). Any side 16 m + 60 (m >= 8) works, giving side - 184; the smallest, "
            "188 -> 4, is the card's small input for quick checks. 31,030,658 parameters. "
            "The paper puts dropout 'at the end of the contracting path' without naming the layers: here p = 0.5 on "
            "the bottom level's output. Initial weights keep torch's default (the paper draws N(0, 2/fan-in)). Seed "
            "003 shows only the padded milesial variant (see unet)."
        ),
    ),
)
def unet_2015(**overrides) -> UNet:
    config = UNetConfig(in_channels=1, num_classes=2, padded=False, batch_norm=False, dropout=0.5)
    return UNet(configure(config, overrides))
