"""VGG (Simonyan & Zisserman, ICLR 2015): five blocks of 3x3 convolutions, torchvision's layout.

VGG-16 (configuration D), as seed 000 "3.3 VGG16" draws the body:

    x (B, 3, 224, 224)
    -> block1: 2 x [conv 3x3 P=1 -> (BN) -> ReLU], 3 -> 64,    max-pool 2   (B, 64, 112, 112)
    -> block2: 2 x [...], 64 -> 128                                          (B, 128, 56, 56)
    -> block3: 3 x [...], 128 -> 256                                         (B, 256, 28, 28)
    -> block4: 3 x [...], 256 -> 512                                         (B, 512, 14, 14)
    -> block5: 3 x [...], 512 -> 512                                         (B, 512, 7, 7)
    -> adaptive avgpool 7x7 (B, 512, 7, 7) -> flatten (B, 25088)
    -> fc1 4096 -> ReLU -> Dropout -> fc2 4096 -> ReLU -> Dropout -> fc3 L    logits (B, L)

VGG-11/13/16/19 (configurations A, B, D, E) have (1,1,2,2,2), (2,2,2,2,2), (2,2,3,3,3) and
(2,2,4,4,4) convolutions per block; the ``_bn`` variants put a BatchNorm after every
convolution (torchvision's addition, not in the paper). The adaptive pool (torchvision's)
lets inputs of any size >= 32 through.

Seed errata: seed 000's conv block draws one ReLU after two convolutions (VGG has a ReLU after
every convolution, and blocks 3-5 of VGG-16 have three) and its head has four Linear layers
(4096, 4096, 1000, then 1000 -> 1000); VGG has three. Seed 002's ``vgg_block`` is right and is
:func:`vgg_block` here.

Letters: B batch, L classes. Classifiers return logits (softmax folded into the loss).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from nnatlas.config import check_fields
from nnatlas.errors import ConfigError, ReferenceMismatchError, ShapeError, check_input
from nnatlas.nn import BatchNorm2d
from nnatlas.registry import ModelCard, Paper, Seed, configure, register_model, register_reference, transfer_state

__all__ = ["VGGConfig", "vgg_block", "VGG", "torchvision_key_map"]

VGG_PAPER = Paper(
    authors="K. Simonyan, A. Zisserman",
    title="Very Deep Convolutional Networks for Large-Scale Image Recognition",
    venue="ICLR",
    year=2015,
    link="https://arxiv.org/abs/1409.1556",
)

LAYERS = {11: (1, 1, 2, 2, 2), 13: (2, 2, 2, 2, 2), 16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}
PAPER_CONFIG = {11: "A", 13: "B", 16: "D", 19: "E"}


@dataclass(frozen=True)
class VGGConfig:
    """``layers``: convolutions in each of the five blocks; ``channels``: each block's width."""

    layers: tuple[int, ...] = LAYERS[16]
    channels: tuple[int, ...] = (64, 128, 256, 512, 512)
    in_channels: int = 3
    num_classes: int = 1000
    batch_norm: bool = False
    hidden: int = 4096
    pool_size: int = 7
    dropout: float = 0.5

    def __post_init__(self) -> None:
        check_fields(self)
        if not self.layers:
            raise ConfigError(f"VGGConfig.layers must be convolution counts >= 1; got {self.layers}")
        if len(self.channels) != len(self.layers) or any(c < 1 for c in self.channels):
            raise ConfigError(
                f"VGGConfig.channels must give one width >= 1 per block ({len(self.layers)}); got {self.channels}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"VGGConfig.dropout must be in [0, 1); got {self.dropout}")

    @property
    def min_size(self) -> int:
        """Each block halves the map: inputs need 2 ** blocks pixels a side (32 for five blocks)."""
        return 2 ** len(self.layers)


def vgg_block(num_convs: int, in_channels: int, out_channels: int, batch_norm: bool = False) -> nn.Sequential:
    """``num_convs`` x [conv 3x3 P=1 -> (BN) -> ReLU], then max-pool 2: (B, in, H, W) -> (B, out, H/2, W/2).

    Seed 002's ``vgg_block``, with names (conv1, bn1, relu1, ..., pool) for the diagram.
    """
    block = nn.Sequential()
    for i in range(1, num_convs + 1):
        block.add_module(f"conv{i}", nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1))
        if batch_norm:
            block.add_module(f"bn{i}", BatchNorm2d(out_channels))
        block.add_module(f"relu{i}", nn.ReLU(inplace=True))
        in_channels = out_channels
    block.add_module("pool", nn.MaxPool2d(kernel_size=2, stride=2))
    return block


class VGG(nn.Module):
    """Blocks of 3x3 convolutions (``block1`` ... ``block5``), adaptive avgpool, three linear layers."""

    def __init__(self, config: VGGConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        in_channels = c.in_channels
        for i, (num_convs, out_channels) in enumerate(zip(c.layers, c.channels), start=1):
            self.add_module(f"block{i}", vgg_block(num_convs, in_channels, out_channels, c.batch_norm))
            in_channels = out_channels
        self.avgpool = nn.AdaptiveAvgPool2d(c.pool_size)
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(
            OrderedDict(
                fc1=nn.Linear(in_channels * c.pool_size**2, c.hidden),
                relu1=nn.ReLU(inplace=True),
                drop1=nn.Dropout(c.dropout),
                fc2=nn.Linear(c.hidden, c.hidden),
                relu2=nn.ReLU(inplace=True),
                drop2=nn.Dropout(c.dropout),
                fc3=nn.Linear(c.hidden, c.num_classes),
            )
        )
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """torchvision's initialisation: Kaiming-normal (fan_out) convs, N(0, 0.01) linears, zero biases."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    @property
    def blocks(self) -> list[nn.Sequential]:
        return [getattr(self, f"block{i}") for i in range(1, len(self.config.layers) + 1)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W), H and W >= 32 (224 in the paper) -> logits (B, L)."""
        c = self.config
        check_input(x, ("B", c.in_channels, "H", "W"), model="VGG", like=self)
        if min(x.shape[-2:]) < c.min_size:
            raise ShapeError(
                f"VGG expects input (B, {c.in_channels}, H, W) with H, W >= {c.min_size}; got {tuple(x.shape)}"
            )
        B, C, H, W = x.shape
        for block in self.blocks:
            x = block(x)  # (B, 64, H/2, W/2), (B, 128, H/4, W/4), ..., (B, 512, H/32, W/32)
        x = self.flatten(self.avgpool(x))  # (B, 512 * 7 * 7)
        return self.classifier(x)  # (B, L)


# ---------------------------------------------------------------------------------------------
# Registered variants
# ---------------------------------------------------------------------------------------------

_PUBLISHED = {  # torchvision's parameter counts (ImageNet, 1000 classes)
    "vgg11": 132_863_336,
    "vgg11_bn": 132_868_840,
    "vgg13": 133_047_848,
    "vgg13_bn": 133_053_736,
    "vgg16": 138_357_544,
    "vgg16_bn": 138_365_992,
    "vgg19": 143_667_240,
    "vgg19_bn": 143_678_248,
}


def _card(name: str, depth: int, batch_norm: bool) -> ModelCard:
    bn = " with BatchNorm" if batch_norm else ""
    notes = (
        f"Configuration {PAPER_CONFIG[depth]} of the paper in torchvision's layout: blocks of "
        f"{'-'.join(map(str, LAYERS[depth]))} 3x3 convolutions (64, 128, 256, 512, 512 channels), a ReLU after "
        "every convolution, 2x2 max-pool after each block, adaptive avgpool 7x7, 25088 -> 4096 -> 4096 -> 1000 with "
        "dropout 0.5 after the first two. At 224x224 the maps are 112/56/28/14/7; the adaptive pool also takes "
        "small inputs (32x32 for quick checks). "
    )
    if batch_norm:
        notes += "BatchNorm after every convolution is torchvision's addition (the paper predates batch norm). "
    notes += (
        "Seed errata (seed 000 '3.3 VGG16'): the conv block draws one ReLU after two convolutions and two "
        "convolutions in every block (VGG has a ReLU after each convolution and three in blocks 3-5 of VGG-16); the "
        "head draws four Linear layers (4096, 4096, 1000, 1000 -> 1000) where VGG has three; the final softmax is "
        "folded into the loss (logits out)."
    )
    return ModelCard(
        name=name,
        family="vgg",
        title=f"VGG-{depth}{bn}",
        paper=VGG_PAPER,
        input_shape=(3, 224, 224),
        output_shape=(1000,),
        task="classification",
        published_params=_PUBLISHED[name],
        seed=Seed("000_dead3008ff14f1b5.txt", "3.3 VGG16"),
        notes=notes,
        small_input_shape=(3, 32, 32),
    )


@register_model("vgg11", card=_card("vgg11", 11, False))
def vgg11(**overrides) -> VGG:
    return VGG(configure(VGGConfig(layers=LAYERS[11]), overrides))


@register_model("vgg13", card=_card("vgg13", 13, False))
def vgg13(**overrides) -> VGG:
    return VGG(configure(VGGConfig(layers=LAYERS[13]), overrides))


@register_model("vgg16", card=_card("vgg16", 16, False))
def vgg16(**overrides) -> VGG:
    return VGG(configure(VGGConfig(layers=LAYERS[16]), overrides))


@register_model("vgg19", card=_card("vgg19", 19, False))
def vgg19(**overrides) -> VGG:
    return VGG(configure(VGGConfig(layers=LAYERS[19]), overrides))


@register_model("vgg11_bn", card=_card("vgg11_bn", 11, True))
def vgg11_bn(**overrides) -> VGG:
    return VGG(configure(VGGConfig(layers=LAYERS[11], batch_norm=True), overrides))


@register_model("vgg13_bn", card=_card("vgg13_bn", 13, True))
def vgg13_bn(**overrides) -> VGG:
    return VGG(configure(VGGConfig(layers=LAYERS[13], batch_norm=True), overrides))


@register_model("vgg16_bn", card=_card("vgg16_bn", 16, True))
def vgg16_bn(**overrides) -> VGG:
    return VGG(configure(VGGConfig(layers=LAYERS[16], batch_norm=True), overrides))


@register_model("vgg19_bn", card=_card("vgg19_bn", 19, True))
def vgg19_bn(**overrides) -> VGG:
    return VGG(configure(VGGConfig(layers=LAYERS[19], batch_norm=True), overrides))


_FACTORIES = {
    "vgg11": vgg11,
    "vgg13": vgg13,
    "vgg16": vgg16,
    "vgg19": vgg19,
    "vgg11_bn": vgg11_bn,
    "vgg13_bn": vgg13_bn,
    "vgg16_bn": vgg16_bn,
    "vgg19_bn": vgg19_bn,
}


# ---------------------------------------------------------------------------------------------
# torchvision reference
# ---------------------------------------------------------------------------------------------


def torchvision_key_map(config: VGGConfig) -> dict[str, str]:
    """nnatlas state-dict key -> torchvision.models.VGG's, for this configuration.

    torchvision numbers one flat ``features`` Sequential: per convolution conv (, bn), relu;
    per block a max-pool. The classifier is Linear, ReLU, Dropout, Linear, ReLU, Dropout, Linear.
    """
    tensors = {
        "conv": ("weight", "bias"),
        "bn": ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"),
    }
    keys: dict[str, str] = {}
    index = 0  # position in torchvision's features
    for b, num_convs in enumerate(config.layers, start=1):
        for i in range(1, num_convs + 1):
            layers = ["conv", "bn"] if config.batch_norm else ["conv"]
            for layer in layers:
                for t in tensors[layer]:
                    keys[f"block{b}.{layer}{i}.{t}"] = f"features.{index}.{t}"
                index += 1
            index += 1  # ReLU
        index += 1  # max-pool
    for ours, theirs in (("fc1", 0), ("fc2", 3), ("fc3", 6)):
        for t in ("weight", "bias"):
            keys[f"classifier.{ours}.{t}"] = f"classifier.{theirs}.{t}"
    return keys


@register_reference(*_FACTORIES)
def _from_torchvision(name: str, ref: nn.Module) -> VGG:
    """torchvision.models.VGG -> the nnatlas variant ``name`` with its classes, input channels and weights."""
    try:
        in_channels = ref.features[0].in_channels
        num_classes = ref.classifier[6].out_features
        dropout = ref.classifier[2].p
        weight = ref.features[0].weight
    except (AttributeError, IndexError, TypeError) as err:
        raise ReferenceMismatchError(
            f"VGG from torchvision expects torchvision.models.VGG (features[0] a Conv2d, classifier[2] Dropout, "
            f"classifier[6] Linear); got {type(ref).__name__} ({err})"
        ) from None
    with torch.device(weight.device):  # built where the reference lives, in its dtype
        model = _FACTORIES[name](in_channels=in_channels, num_classes=num_classes, dropout=dropout).to(weight.dtype)
    transfer_state(model, ref.state_dict(), torchvision_key_map(model.config), source=f"torchvision {name}")
    return model.train(ref.training)
