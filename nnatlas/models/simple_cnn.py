"""SimpleCNN (seed 004, "SimpleCNN"): the two-convolution CIFAR-sized classifier.

    x (B, 3, 32, 32)
    -> Conv2D [K=3, P=1, 3 -> 32]  -> ReLU -> MaxPool2D [K=2, S=2]   (B, 32, 16, 16)
    -> Conv2D [K=3, P=1, 32 -> 64] -> ReLU -> MaxPool2D [K=2, S=2]   (B, 64, 8, 8)
    -> flatten (B, 4096) -> Linear [4096, 128] -> ReLU -> Linear [128, 10] -> logits (B, 10)

Letters: B batch, C channels, H height, W width.

As the seed writes it, except that the flatten keeps the batch dimension
(``x.flatten(1)``): the seed's ``x.view(-1, 64 * 8 * 8)`` silently folds a wrong-sized
input into a different batch size instead of failing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nnatlas.config import check_fields
from nnatlas.errors import ConfigError, check_input
from nnatlas.registry import ModelCard, Seed, configure, register_model


@dataclass(frozen=True)
class SimpleCNNConfig:
    in_channels: int = 3
    image_size: int = 32  # square input; the classifier's width depends on it
    channels: tuple[int, int] = (32, 64)
    hidden: int = 128
    num_classes: int = 10

    def __post_init__(self) -> None:
        check_fields(self)
        if self.image_size < 4 or self.image_size % 4:
            raise ConfigError(f"SimpleCNNConfig.image_size must be a positive multiple of 4; got {self.image_size}")
        if len(self.channels) != 2 or min(self.channels) < 1:
            raise ConfigError(f"SimpleCNNConfig.channels must be two positive sizes; got {self.channels}")


class SimpleCNN(nn.Module):
    """Two conv-ReLU-pool stages and two linear layers; returns logits."""

    def __init__(self, config: SimpleCNNConfig) -> None:
        super().__init__()
        self.config = config
        c1, c2 = config.channels
        self.conv1 = nn.Conv2d(config.in_channels, c1, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, kernel_size=3, padding=1)
        self.pool = nn.MaxPool2d(2, 2)
        self.relu = nn.ReLU(inplace=True)
        side = config.image_size // 4
        self.fc1 = nn.Linear(c2 * side * side, config.hidden)
        self.fc2 = nn.Linear(config.hidden, config.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, S, S) with S = image_size -> logits (B, num_classes)."""
        s = self.config.image_size
        check_input(x, ("B", self.config.in_channels, s, s), model="SimpleCNN", like=self)
        x = self.pool(self.relu(self.conv1(x)))  # (B, 32, S/2, S/2)
        x = self.pool(self.relu(self.conv2(x)))  # (B, 64, S/4, S/4)
        x = x.flatten(1)  # (B, 64 * S/4 * S/4)
        x = self.relu(self.fc1(x))  # (B, 128)
        return self.fc2(x)  # (B, num_classes)


@register_model(
    "simple_cnn",
    card=ModelCard(
        name="simple_cnn",
        family="simple_cnn",
        title="SimpleCNN (two conv layers, CIFAR-sized)",
        paper=None,
        input_shape=(3, 32, 32),
        output_shape=(10,),
        task="classification",
        published_params=545_098,
        seed=Seed("004_352144fce4abefd7.txt", "SimpleCNN"),
        notes=(
            "As seed 004 writes it (545,098 parameters: 896 + 18,496 + 524,416 + 1,290). The flatten keeps the batch "
            "dimension; the seed's view(-1, 64*8*8) would silently re-batch a wrong-sized input."
        ),
    ),
)
def simple_cnn(**overrides) -> SimpleCNN:
    return SimpleCNN(configure(SimpleCNNConfig(), overrides))
