"""DenseNet (Huang, Liu, van der Maaten & Weinberger, "Densely Connected Convolutional Networks", CVPR 2017).

Inside a dense block every layer sees the concatenation of all feature maps before it,
x_l = H_l([x_0, x_1, ..., x_{l-1}]) (paper eq. 2), and adds ``growth_rate`` (k) new
channels. H_l is the bottleneck BN-ReLU-1x1 conv (``bn_size`` * k channels)-BN-ReLU-3x3
conv (k channels) of DenseNet-B; transitions between blocks compress the channels by
``compression`` (theta = 0.5, DenseNet-C) with BN-ReLU-1x1 conv and halve H and W with a
2x2 average pool. DenseNet-121 (k = 32, blocks of 6, 12, 24, 16 layers) at 224x224:

    x                                           (B, 3, 224, 224)
    conv0 7x7/2 p3 64, norm0, relu0             (B, 64, 112, 112)
    pool0 max 3x3/2 p1                          (B, 64, 56, 56)
    denseblock1: 6 layers, 64 + 6 * 32          (B, 256, 56, 56)
    transition1: 1x1 conv to 128, avgpool 2     (B, 128, 28, 28)
    denseblock2: 12 layers, 128 + 12 * 32       (B, 512, 28, 28)
    transition2                                 (B, 256, 14, 14)
    denseblock3: 24 layers, 256 + 24 * 32       (B, 1024, 14, 14)
    transition3                                 (B, 512, 7, 7)
    denseblock4: 16 layers, 512 + 16 * 32       (B, 1024, 7, 7)
    norm5, relu, global average pool, flatten   (B, 1024)
    classifier                                  (B, num_classes)   logits

DenseNet-169 has blocks (6, 12, 32, 32) and ends at 1664 channels; DenseNet-201 has
(6, 12, 48, 32) and ends at 1920. The layout and the parameter names follow torchvision
(``norm1``, ``conv1``, ``norm2``, ``conv2``; ``norm``, ``conv`` in a transition) so its
weights map through a short, explicit key map.

Dimension letters: B batch, C channels, H height, W width; k the growth rate.

The seeds: seed 000 draws DenseNet as a body, a dense block, a dense layer (which ends
in the concatenation, as ``DenseLayer`` here does) and a transition. Its transition
max-pools; the paper average-pools (2x2, stride 2), as here. The seed's body also omits
the final BatchNorm + ReLU before the global pool that the paper's pre-activation layout
needs (torchvision's ``norm5``), and ends in a Softmax that the loss holds here.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nnatlas.config import check_fields
from nnatlas.errors import ConfigError, ReferenceMismatchError, check_input
from nnatlas.nn import BatchNorm2d
from nnatlas.nn.names import name
from nnatlas.registry import (
    ModelCard,
    Paper,
    Seed,
    configure,
    create,
    register_model,
    register_reference,
    transfer_state,
)

__all__ = [
    "DenseNetConfig",
    "DenseLayer",
    "DenseBlock",
    "Transition",
    "DenseNet",
    "densenet121",
    "densenet169",
    "densenet201",
]

DENSENET_PAPER = Paper(
    authors="Gao Huang, Zhuang Liu, Laurens van der Maaten, Kilian Q. Weinberger",
    title="Densely Connected Convolutional Networks",
    venue="CVPR",
    year=2017,
    link="https://arxiv.org/abs/1608.06993",
)


@dataclass(frozen=True)
class DenseNetConfig:
    """A DenseNet-BC: growth rate k, layers per block, stem width, bottleneck factor, compression."""

    growth_rate: int = 32
    block_config: tuple[int, ...] = (6, 12, 24, 16)
    num_init_features: int = 64
    bn_size: int = 4  # the 1x1 bottleneck conv makes bn_size * k channels
    compression: float = 0.5  # theta: a transition keeps floor(theta * C) channels
    drop_rate: float = 0.0  # dropout after each layer's 3x3 conv (0 on ImageNet)
    num_classes: int = 1000
    in_channels: int = 3

    def __post_init__(self) -> None:
        check_fields(self)
        if not self.block_config:
            raise ConfigError(
                f"DenseNetConfig.block_config must be ints >= 1 (layers per block); got {self.block_config!r}"
            )
        if not 0.0 < self.compression <= 1.0:
            raise ConfigError(f"DenseNetConfig.compression must be in (0, 1]; got {self.compression!r}")
        if not 0.0 <= self.drop_rate < 1.0:
            raise ConfigError(f"DenseNetConfig.drop_rate must be in [0, 1); got {self.drop_rate!r}")


class DenseLayer(nn.Module):
    """H_l of DenseNet-B, then the concatenation: x -> [x, conv2(relu(norm2(conv1(relu(norm1(x))))))].

    x: (B, C_in, H, W) -> (B, C_in + growth_rate, H, W).
    """

    def __init__(self, in_channels: int, growth_rate: int, bn_size: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.in_channels, self.growth_rate, self.bn_size = in_channels, growth_rate, bn_size
        self._out_dims = f"B, C={in_channels}+{growth_rate}, H, W"  # the diagram's channel arithmetic
        self.norm1 = BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_channels, bn_size * growth_rate, kernel_size=1, bias=False)
        self.norm2 = BatchNorm2d(bn_size * growth_rate)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, kernel_size=3, padding=1, bias=False)
        self.drop_rate = drop_rate

    def extra_repr(self) -> str:
        return f"In={self.in_channels}, BNSize={self.bn_size}, GrowthRate={self.growth_rate}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C_in, H, W) -> (B, C_in + k, H, W)."""
        new = self.conv1(self.relu1(self.norm1(x)))  # (B, bn_size * k, H, W)
        new = self.conv2(self.relu2(self.norm2(new)))  # (B, k, H, W)
        if self.drop_rate > 0:
            new = F.dropout(new, p=self.drop_rate, training=self.training)
        return name(torch.cat([x, new], dim=1), None, dims=self._out_dims)  # (B, C_in + k, H, W)


class DenseBlock(nn.Module):
    """``num_layers`` dense layers; layer l sees in_channels + l * k channels.

    x: (B, C_in, H, W) -> (B, C_in + num_layers * k, H, W).
    """

    def __init__(
        self, num_layers: int, in_channels: int, growth_rate: int, bn_size: int, drop_rate: float = 0.0
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            DenseLayer(in_channels + i * growth_rate, growth_rate, bn_size, drop_rate) for i in range(num_layers)
        )
        self.num_layers, self.growth_rate, self.bn_size = num_layers, growth_rate, bn_size
        self._out_dims = f"B, C={in_channels}+{num_layers}×{growth_rate}, H, W"  # the diagram's channel arithmetic

    def extra_repr(self) -> str:
        return f"NLayers={self.num_layers}, BNSize={self.bn_size}, GrowthRate={self.growth_rate}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C_in, H, W) -> (B, C_in + num_layers * k, H, W)."""
        for layer in self.layers:
            x = layer(x)  # (B, C + k, H, W): [x_0, ..., x_l]
        return name(x, None, dims=self._out_dims)  # C = C_in + num_layers * k


class Transition(nn.Module):
    """BN-ReLU-1x1 conv to ``out_channels``, then 2x2 average pooling (stride 2).

    x: (B, C_in, H, W) -> (B, C_out, H/2, W/2).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm = BatchNorm2d(in_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2)  # the seed's max-pool is wrong: the paper averages
        self.compression = out_channels / in_channels  # theta

    def extra_repr(self) -> str:
        return f"CompRate={self.compression:.3g}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C_in, H, W) -> (B, C_out, H/2, W/2)."""
        x = self.conv(self.relu(self.norm(x)))  # (B, C_out, H, W)
        return self.pool(x)  # (B, C_out, H/2, W/2)


class DenseNet(nn.Module):
    """The stem, dense blocks separated by transitions, a final BN-ReLU, global pooling and a classifier."""

    def __init__(self, config: DenseNetConfig) -> None:
        super().__init__()
        self.config = config
        k = config.growth_rate
        stem = config.num_init_features
        self.conv0 = nn.Conv2d(config.in_channels, stem, kernel_size=7, stride=2, padding=3, bias=False)
        self.norm0 = BatchNorm2d(stem)
        self.relu0 = nn.ReLU(inplace=True)
        self.pool0 = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        channels = stem
        n_blocks = len(config.block_config)
        for i, num_layers in enumerate(config.block_config, start=1):
            self.add_module(f"denseblock{i}", DenseBlock(num_layers, channels, k, config.bn_size, config.drop_rate))
            channels += num_layers * k
            if i < n_blocks:
                out = math.floor(channels * config.compression)  # theta * m (paper section 3)
                self.add_module(f"transition{i}", Transition(channels, out))
                channels = out
        self.norm5 = BatchNorm2d(channels)
        self.relu5 = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, config.num_classes)
        self.num_features = channels
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, in_channels, H, W) images -> (B, num_classes) logits."""
        # the stem quarters H and W (rounding up), then each transition halves them (rounding down)
        min_size = 4 * 2 ** (len(self.config.block_config) - 1) - 3  # 29 for four blocks
        check_input(x, ("B", self.config.in_channels, "H", "W"), model=f"DenseNet{self.config.block_config}", like=self,
                    min_size=min_size)
        B, C, H, W = x.shape
        x = self.pool0(self.relu0(self.norm0(self.conv0(x))))  # (B, 64, H/4, W/4)
        n_blocks = len(self.config.block_config)
        for i in range(1, n_blocks + 1):
            x = getattr(self, f"denseblock{i}")(x)  # (B, C + L_i k, h, w)
            if i < n_blocks:
                x = getattr(self, f"transition{i}")(x)  # (B, theta C, h/2, w/2)
        x = self.relu5(self.norm5(x))  # (B, C, H/32, W/32)
        x = self.avgpool(x).flatten(1)  # (B, C)
        return self.classifier(x)  # (B, num_classes)


_SEED_NOTES = (
    "Seed 000 draws the transition with a 2x2 max-pool; the paper (and torchvision) average-pools, "
    "as here. The seed's body also leaves out the final BatchNorm + ReLU (norm5) before the global "
    "pool, which the pre-activation layout needs; it is here. The seed's fixed 7x7 average pool is "
    "adaptive here (equal at 224x224) and its Softmax is folded into the loss: the model returns logits. "
    "The seed's DenseNet drawings never make their tensors records (no shape=Mrecord: they draw as boxes) "
    "and misspell Transition as 'Trasition'; the diagrams here draw tensors as records."
)


BLOCKS = {"densenet121": (6, 12, 24, 16), "densenet169": (6, 12, 32, 32), "densenet201": (6, 12, 48, 32)}


def _card(name: str, title: str, params: int) -> ModelCard:
    return ModelCard(
        name=name,
        family="densenet",
        title=title,
        paper=DENSENET_PAPER,
        input_shape=(3, 224, 224),
        small_input_shape=(3, 64, 64),
        output_shape=(1000,),
        task="classification",
        published_params=params,
        seed=Seed("000_dead3008ff14f1b5.txt", "3.5 DenseNet"),
        notes=f"DenseNet-BC, growth rate 32, bottleneck 4 x 32, compression 0.5, blocks {BLOCKS[name]}. " + _SEED_NOTES,
    )


@register_model(
    "densenet121",
    card=_card("densenet121", "DenseNet-121", 7_978_856),
)
def densenet121(**overrides) -> DenseNet:
    """DenseNet-121: blocks (6, 12, 24, 16), k = 32, 7,978,856 parameters."""
    return DenseNet(configure(DenseNetConfig(block_config=BLOCKS["densenet121"]), overrides))


@register_model(
    "densenet169",
    card=_card("densenet169", "DenseNet-169", 14_149_480),
)
def densenet169(**overrides) -> DenseNet:
    """DenseNet-169: blocks (6, 12, 32, 32), k = 32, 14,149,480 parameters."""
    return DenseNet(configure(DenseNetConfig(block_config=BLOCKS["densenet169"]), overrides))


@register_model(
    "densenet201",
    card=_card("densenet201", "DenseNet-201", 20_013_928),
)
def densenet201(**overrides) -> DenseNet:
    """DenseNet-201: blocks (6, 12, 48, 32), k = 32, 20,013,928 parameters."""
    return DenseNet(configure(DenseNetConfig(block_config=BLOCKS["densenet201"]), overrides))


_STEM = re.compile(r"(conv0|norm0|norm5|transition\d+\.(norm|conv))\.\w+")
_LAYER = re.compile(r"denseblock(\d+)\.layers\.(\d+)\.((?:norm|conv)[12]\.\w+)")
_CLASSIFIER = re.compile(r"classifier\.\w+")


def _torchvision_key(key: str) -> str:
    """nnatlas key -> torchvision key: ``features.`` before the body; dense layers counted from 1 by name.

    ``denseblock1.layers.0.norm1.weight`` -> ``features.denseblock1.denselayer1.norm1.weight``.
    """
    if _CLASSIFIER.fullmatch(key):
        return key
    if _STEM.fullmatch(key):
        return f"features.{key}"
    m = _LAYER.fullmatch(key)
    if m:
        block, index, rest = m.groups()
        return f"features.denseblock{block}.denselayer{int(index) + 1}.{rest}"
    raise KeyError(key)


@register_reference("densenet121", "densenet169", "densenet201")
def _from_torchvision(name: str, ref: nn.Module) -> DenseNet:
    """Build ``name`` from a ``torchvision.models.DenseNet``: sizes from ``ref``, weights via the key map."""
    try:
        features = ref.features
        blocks = tuple(len(getattr(features, f"denseblock{i}")) for i in range(1, 5))
        first = features.denseblock1.denselayer1
        growth_rate = first.conv2.out_channels
        overrides = {
            "growth_rate": growth_rate,
            "bn_size": first.conv1.out_channels // growth_rate,
            "num_init_features": features.conv0.out_channels,
            "drop_rate": float(first.drop_rate),
            "num_classes": ref.classifier.out_features,
            "in_channels": features.conv0.in_channels,
        }
    except (AttributeError, TypeError) as err:
        got = f"{type(ref).__name__} ({err})"
        raise ReferenceMismatchError(f"{name} expects a torchvision DenseNet as reference; got {got}") from None
    if blocks != BLOCKS[name]:
        raise ReferenceMismatchError(f"{name} expects dense blocks {BLOCKS[name]}; the reference has {blocks}")
    model = create(name, **overrides)
    transfer_state(model, ref.state_dict(), _torchvision_key, source=f"torchvision {type(ref).__name__}")
    return model.train(ref.training)
