"""Network in Network (Lin, Chen & Yan, ICLR 2014), in seed 002's (Dive into Deep Learning) form.

    x (B, 1, 224, 224)
    -> NiNBlock [K=11, S=4, P=0, 1 -> 96]    (B, 96, 54, 54)   -> MaxPool2D [K=3, S=2] (B, 96, 26, 26)
    -> NiNBlock [K=5, S=1, P=2, 96 -> 256]   (B, 256, 26, 26)  -> MaxPool2D [K=3, S=2] (B, 256, 12, 12)
    -> NiNBlock [K=3, S=1, P=1, 256 -> 384]  (B, 384, 12, 12)  -> MaxPool2D [K=3, S=2] (B, 384, 5, 5)
    -> Dropout(0.5) -> NiNBlock [K=3, S=1, P=1, 384 -> L]      (B, L, 5, 5)
    -> global average pooling (B, L, 1, 1) -> flatten -> logits (B, L)

A NiN block is a convolution followed by two 1x1 convolutions (the "micro network": an MLP
applied at every pixel), with a ReLU after each. There is no fully connected layer: the last
block has one channel per class and global average pooling turns each map into a score.
Letters: B batch, L classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nnatlas.config import check_fields
from nnatlas.errors import ConfigError, ShapeError, check_input
from nnatlas.registry import ModelCard, Paper, Seed, configure, register_model


@dataclass(frozen=True)
class NiNConfig:
    in_channels: int = 1
    num_classes: int = 10
    dropout: float = 0.5

    def __post_init__(self) -> None:
        check_fields(self)
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"NiNConfig.dropout must be in [0, 1); got {self.dropout}")


class NiNBlock(nn.Sequential):
    """conv(k, s, p) -> ReLU -> 1x1 conv -> ReLU -> 1x1 conv -> ReLU (seed 002's ``nin_block``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, kernel_size=1),
            nn.ReLU(inplace=True),
        )


class NiN(nn.Module):
    """Four NiN blocks, max-pooling between them, and global average pooling as the classifier."""

    def __init__(self, config: NiNConfig) -> None:
        super().__init__()
        self.config = config
        self.features = nn.Sequential(
            NiNBlock(config.in_channels, 96, kernel_size=11, stride=4, padding=0),
            nn.MaxPool2d(3, stride=2),
            NiNBlock(96, 256, kernel_size=5, stride=1, padding=2),
            nn.MaxPool2d(3, stride=2),
            NiNBlock(256, 384, kernel_size=3, stride=1, padding=1),
            nn.MaxPool2d(3, stride=2),
            nn.Dropout(config.dropout),
            NiNBlock(384, config.num_classes, kernel_size=3, stride=1, padding=1),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W), H and W >= 67 (224 in the seed) -> logits (B, L)."""
        check_input(x, ("B", self.config.in_channels, "H", "W"), model="NiN", like=self)
        if min(x.shape[-2:]) < 67:
            raise ShapeError(
                f"NiN expects input (B, {self.config.in_channels}, H, W) with H, W >= 67; got {tuple(x.shape)}"
            )
        x = self.features(x)  # (B, L, h, w)
        return self.pool(x).flatten(1)  # (B, L)


@register_model(
    "nin",
    card=ModelCard(
        name="nin",
        family="nin",
        title="Network in Network",
        paper=Paper(
            authors="M. Lin, Q. Chen, S. Yan",
            title="Network In Network",
            venue="ICLR",
            year=2014,
            link="https://arxiv.org/abs/1312.4400",
        ),
        input_shape=(1, 224, 224),
        output_shape=(10,),
        task="classification",
        seed=Seed("002_45599a84e7f542eb.txt", "网络中的网络(NiN)"),
        notes=(
            "Seed 002 (d2l) layout: 1 input channel, 96-256-384 blocks, 10 classes, dropout 0.5, global average "
            "pooling instead of fully connected layers. The paper's CIFAR/ImageNet models differ in widths."
        ),
    ),
)
def nin(**overrides) -> NiN:
    return NiN(configure(NiNConfig(), overrides))
