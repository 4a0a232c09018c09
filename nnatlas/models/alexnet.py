"""AlexNet (Krizhevsky, Sutskever & Hinton, NeurIPS 2012) in three layouts.

The 2012 paper (``alexnet_2012``, seed 000 "3.2 AlexNet", whose "x2" marks the two GPU
towers; here the towers are grouped convolutions, groups=2 where a layer reads only its own
tower's maps):

    x (B, 3, 227, 227)
    -> conv1 [K=11, S=4, 3 -> 48x2] -> ReLU -> LRN -> pool1 max [K=3, S=2]     (B, 96, 55, 55) -> (B, 96, 27, 27)
    -> conv2 [K=5, P=2, 48x2 -> 128x2, groups 2] -> ReLU -> LRN -> pool2       (B, 256, 27, 27) -> (B, 256, 13, 13)
    -> conv3 [K=3, P=1, 256 -> 192x2] (reads both towers) -> ReLU              (B, 384, 13, 13)
    -> conv4 [K=3, P=1, 192x2 -> 192x2, groups 2] -> ReLU                      (B, 384, 13, 13)
    -> conv5 [K=3, P=1, 192x2 -> 128x2, groups 2] -> ReLU -> pool5             (B, 256, 13, 13) -> (B, 256, 6, 6)
    -> flatten (B, 9216) -> fc6 4096 -> ReLU -> Dropout -> fc7 4096 -> ReLU -> Dropout -> fc8 L    logits (B, L)

torchvision's single tower (``alexnet``, seed 003's code): 64-192-384-256-256 channels, conv1
padded by 2, no LRN, an adaptive average pool to 6x6 (so any input of 63x63 or more works),
and dropout on the inputs of fc6 and fc7. Seed 002's d2l version (``alexnet_d2l``): one input
channel, conv1 padded by 1 at 224x224 (54 -> 26 -> 12 -> 5), 96-256-384-384-256 channels and
Linear(6400, 4096).

LRN (paper section 3.3): b = a / (k + alpha * sum of a^2 over n = 5 neighbouring maps)^beta with
k = 2, alpha = 1e-4, beta = 0.75; torch divides alpha by n, so it is 5e-4 here. Each GPU
normalised its own maps, so the window stops at the tower boundary (``TowerLRN``).

Seed errata: seed 000 flattens the 6x6x256 map as "reshape([4096])" into a [4096, 4096] Linear6
(it is 9216 -> 4096), draws no LRN and labels fc8 "Linear7"; seed 003's prose puts LRN in every
convolution layer and after pooling, which neither its code nor the paper does.

Letters: B batch, L classes. Classifiers return logits (softmax folded into the loss).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from nnatlas.config import check_fields
from nnatlas.errors import ConfigError, ReferenceMismatchError, ShapeError, check_input
from nnatlas.nn import LocalResponseNorm
from nnatlas.registry import ModelCard, Paper, Seed, configure, register_model, register_reference, transfer_state

__all__ = ["AlexNetConfig", "TowerLRN", "AlexNet", "torchvision_key_map"]

ALEXNET_PAPER = Paper(
    authors="A. Krizhevsky, I. Sutskever, G. E. Hinton",
    title="ImageNet Classification with Deep Convolutional Neural Networks",
    venue="NeurIPS (NIPS 25)",
    year=2012,
    link="https://papers.nips.cc/paper/2012/hash/c399862d3b9d6b76c8436e924a68c45b-Abstract.html",
)


@dataclass(frozen=True)
class AlexNetConfig:
    """Five convolutions (11, 5, 3, 3, 3) with three overlapping max-pools, then three linear layers.

    ``channels`` are the five convolutions' output channels (both towers together);
    ``groups`` the towers each reads within (1 = reads every map). ``image_size=None`` adds
    torchvision's adaptive average pool to 6x6 and accepts any size; an int fixes the input
    size and fc6 reads the pooled map as it comes. ``dropout_at`` is ``"input"`` (torchvision:
    dropout before fc6 and fc7) or ``"output"`` (the paper, d2l: after the ReLUs of fc6 and fc7).
    """

    in_channels: int = 3
    num_classes: int = 1000
    channels: tuple[int, int, int, int, int] = (64, 192, 384, 256, 256)
    groups: tuple[int, int, int, int, int] = (1, 1, 1, 1, 1)
    conv1_padding: int = 2
    lrn: bool = False
    image_size: int | None = None
    hidden: int = 4096
    dropout: float = 0.5
    dropout_at: str = "input"

    def __post_init__(self) -> None:
        check_fields(self, minimum={"conv1_padding": 0})  # types, ints >= 1, five channels and groups
        ins = (self.in_channels, *self.channels[:4])
        for i, (cin, cout, g) in enumerate(zip(ins, self.channels, self.groups), start=1):
            if cin % g or cout % g:
                raise ConfigError(
                    f"AlexNetConfig: conv{i} with groups={g} needs channels divisible by {g}; got {cin} -> {cout}"
                )
        if self.lrn and self.channels[0] % self.groups[1]:
            raise ConfigError(
                f"AlexNetConfig: LRN per tower needs conv1's {self.channels[0]} maps split in {self.groups[1]}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"AlexNetConfig.dropout must be in [0, 1); got {self.dropout}")
        if self.dropout_at not in ("input", "output"):
            raise ConfigError(f"AlexNetConfig.dropout_at must be 'input' or 'output'; got {self.dropout_at!r}")
        if self.image_size is not None and (self.image_size < self.min_size):
            raise ConfigError(f"AlexNetConfig.image_size must be None or >= {self.min_size}; got {self.image_size}")

    def feature_size(self, size: int) -> int:
        """Side of pool5's map for an input side ``size``: conv1 (S=4), then three 3/2 pools."""
        s = (size + 2 * self.conv1_padding - 11) // 4 + 1  # conv1
        for _ in range(3):  # pool1, pool2, pool5 (the convs between keep the size)
            s = (s - 3) // 2 + 1
        return s

    @property
    def min_size(self) -> int:
        """The smallest input side that leaves a 1x1 map after pool5 (63 for torchvision's padding 2)."""
        return 4 * (15 - 1) + 11 - 2 * self.conv1_padding  # conv1 must give 15: 15 -> 7 -> 3 -> 1

    @property
    def fc6_in(self) -> int:
        side = 6 if self.image_size is None else self.feature_size(self.image_size)
        return self.channels[4] * side * side


class TowerLRN(nn.Module):
    """Local response normalisation within each of ``groups`` towers (maps split evenly on dim 1).

    The paper's towers lived on two GPUs, so a map's window of n neighbours never reached the
    other tower. With groups=1 this is :class:`nnatlas.nn.LocalResponseNorm`.
    """

    def __init__(self, groups: int, size: int, alpha: float, beta: float, k: float) -> None:
        super().__init__()
        self.groups = groups
        self.lrn = LocalResponseNorm(size, alpha=alpha, beta=beta, k=k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> the same shape."""
        B, C, H, W = x.shape
        x = x.reshape(B * self.groups, C // self.groups, H, W)  # (B * towers, C / towers, H, W)
        return self.lrn(x).reshape(B, C, H, W)


class AlexNet(nn.Module):
    """conv1-conv5 with ReLU (LRN after conv1 and conv2 when configured), three max-pools, fc6-fc8."""

    def __init__(self, config: AlexNetConfig) -> None:
        super().__init__()
        self.config = config
        c1, c2, c3, c4, c5 = config.channels
        g1, g2, g3, g4, g5 = config.groups

        def lrn(groups: int) -> nn.Module:  # paper: k=2, n=5, alpha=1e-4 (5e-4 in torch's alpha/n), beta=0.75
            return TowerLRN(groups, size=5, alpha=5e-4, beta=0.75, k=2.0) if config.lrn else nn.Identity()

        p1 = config.conv1_padding
        self.conv1 = nn.Conv2d(config.in_channels, c1, kernel_size=11, stride=4, padding=p1, groups=g1)
        self.relu1 = nn.ReLU(inplace=True)
        self.norm1 = lrn(g2)  # conv1's maps are split as conv2 reads them: one tower a GPU
        self.pool1 = nn.MaxPool2d(3, stride=2)
        self.conv2 = nn.Conv2d(c1, c2, kernel_size=5, padding=2, groups=g2)
        self.relu2 = nn.ReLU(inplace=True)
        self.norm2 = lrn(g2)
        self.pool2 = nn.MaxPool2d(3, stride=2)
        self.conv3 = nn.Conv2d(c2, c3, kernel_size=3, padding=1, groups=g3)
        self.relu3 = nn.ReLU(inplace=True)
        self.conv4 = nn.Conv2d(c3, c4, kernel_size=3, padding=1, groups=g4)
        self.relu4 = nn.ReLU(inplace=True)
        self.conv5 = nn.Conv2d(c4, c5, kernel_size=3, padding=1, groups=g5)
        self.relu5 = nn.ReLU(inplace=True)
        self.pool5 = nn.MaxPool2d(3, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(6) if config.image_size is None else nn.Identity()
        self.flatten = nn.Flatten()
        self.classifier = self._classifier(config)

    @staticmethod
    def _classifier(config: AlexNetConfig) -> nn.Sequential:
        """fc6 -> ReLU -> fc7 -> ReLU -> fc8, with dropout before (torchvision) or after (paper) fc6 and fc7."""
        layers: list[tuple[str, nn.Module]] = []
        for i, (n_in, n_out) in ((6, (config.fc6_in, config.hidden)), (7, (config.hidden, config.hidden))):
            linear = [(f"fc{i}", nn.Linear(n_in, n_out)), (f"relu{i}", nn.ReLU(inplace=True))]
            drop = [(f"drop{i}", nn.Dropout(config.dropout))]
            layers += drop + linear if config.dropout_at == "input" else linear + drop
        layers.append(("fc8", nn.Linear(config.hidden, config.num_classes)))
        return nn.Sequential(OrderedDict(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, S, S), S = config.image_size (any S >= min_size when it is None) -> logits (B, L)."""
        c = self.config
        if c.image_size is not None:
            check_input(x, ("B", c.in_channels, c.image_size, c.image_size), model="AlexNet", like=self)
        else:
            check_input(x, ("B", c.in_channels, "H", "W"), model="AlexNet", like=self)
            if min(x.shape[-2:]) < c.min_size:
                raise ShapeError(
                    f"AlexNet expects input (B, {c.in_channels}, H, W) with H, W >= {c.min_size}; got {tuple(x.shape)}"
                )
        B, C, H, W = x.shape
        x = self.pool1(self.norm1(self.relu1(self.conv1(x))))  # (B, 96, 55, 55) -> (B, 96, 27, 27) at 227
        x = self.pool2(self.norm2(self.relu2(self.conv2(x))))  # (B, 256, 27, 27) -> (B, 256, 13, 13)
        x = self.relu3(self.conv3(x))  # (B, 384, 13, 13)
        x = self.relu4(self.conv4(x))  # (B, 384, 13, 13)
        x = self.pool5(self.relu5(self.conv5(x)))  # (B, 256, 13, 13) -> (B, 256, 6, 6)
        x = self.flatten(self.avgpool(x))  # (B, 9216)
        return self.classifier(x)  # (B, L)


# ---------------------------------------------------------------------------------------------
# Registered variants
# ---------------------------------------------------------------------------------------------


@register_model(
    "alexnet",
    card=ModelCard(
        name="alexnet",
        family="alexnet",
        title="AlexNet (torchvision, one tower)",
        paper=ALEXNET_PAPER,
        input_shape=(3, 224, 224),
        small_input_shape=(3, 64, 64),
        output_shape=(1000,),
        task="classification",
        published_params=61_100_840,
        seed=Seed("003_979c5363c5233b21.txt", "Alexnet"),
        notes=(
            "torchvision's layout, which seed 003's code copies: conv 11/4 p2 64 - pool - conv 5 p2 192 - pool - "
            "conv 3 384, 256, 256 - pool - adaptive avgpool 6x6 - Dropout - 9216 -> 4096 - Dropout - 4096 -> 4096 - "
            "1000. It follows 'One weird trick' (Krizhevsky, 2014), not the 2012 paper (see alexnet_2012): no LRN, no "
            "towers, 64/192/256 maps where the paper has 96/256/256. Seed 003's text describes LRN in every conv "
            "layer and 'pool then LRN' after C1, which its own code (and the paper: LRN after conv1 and conv2, before "
            "pooling) contradicts. The seed's softmax output is folded into the loss: the model returns logits."
        ),
    ),
)
def alexnet(**overrides) -> AlexNet:
    return AlexNet(configure(AlexNetConfig(), overrides))


@register_model(
    "alexnet_2012",
    card=ModelCard(
        name="alexnet_2012",
        family="alexnet",
        title="AlexNet (2012 paper: two towers, LRN)",
        paper=ALEXNET_PAPER,
        input_shape=(3, 227, 227),
        output_shape=(1000,),
        task="classification",
        seed=Seed("000_dead3008ff14f1b5.txt", "3.2 AlexNet"),
        notes=(
            "The 2012 paper's net with seed 000's sizes: 227x227 input (the paper's text says 224, which does not "
            "give its 55x55 maps without padding), conv1 11/4 48x2 (55) - ReLU - LRN - maxpool 3/2 (27) - conv2 5 p2 "
            "128x2 - ReLU - LRN - pool (13) - conv3 3 p1 192x2 (reads both towers) - conv4 192x2 - conv5 128x2 - "
            "pool (6) - fc6 9216 -> 4096 - fc7 4096 - fc8 1000, dropout 0.5 after fc6 and fc7. The towers are "
            "grouped convolutions (groups=2 in conv2, conv4, conv5), LRN runs within each tower (k=2, n=5, "
            "alpha=1e-4, i.e. 5e-4 in torch's alpha/n convention, beta=0.75). Exactly 60,965,224 trainable "
            "parameters (the paper: '60 million'). Initial weights keep torch's defaults (the paper draws "
            "N(0, 0.01) with biases 1 in conv2, conv4, conv5 and fc6, fc7). Seed 000 errata: it draws no LRN; it "
            "flattens the 6x6x256 map with 'reshape([4096])' and draws Linear6 as [4096, 4096], where "
            "6 * 6 * 256 = 9216 and fc6 is 9216 -> 4096; it labels fc8 'Linear7'; it ends in a softmax (the "
            "model returns logits)."
        ),
    ),
)
def alexnet_2012(**overrides) -> AlexNet:
    config = AlexNetConfig(
        channels=(96, 256, 384, 384, 256),
        groups=(1, 2, 1, 2, 2),
        conv1_padding=0,
        lrn=True,
        image_size=227,
        dropout_at="output",
    )
    return AlexNet(configure(config, overrides))


@register_model(
    "alexnet_d2l",
    card=ModelCard(
        name="alexnet_d2l",
        family="alexnet",
        title="AlexNet (d2l: one input channel, Linear(6400, 4096))",
        paper=ALEXNET_PAPER,
        input_shape=(1, 224, 224),
        output_shape=(1000,),
        task="classification",
        seed=Seed("002_45599a84e7f542eb.txt", "深层卷积神经网络(AlexNet)"),
        notes=(
            "Seed 002's code (Dive into Deep Learning 8.1) as written: 1 input channel (Fashion-MNIST resized to "
            "224), conv 11/4 p1 96 (54) - pool (26) - conv 5 p2 256 - pool (12) - conv 3 384, 384, 256 - pool (5) - "
            "Linear(6400, 4096) - ReLU - Dropout - 4096 - ReLU - Dropout - 1000 (d2l trains it with 10 classes). "
            "One tower, no LRN. 50,820,776 trainable parameters (no published figure). Seed errata: none in the "
            "code; it is d2l's as published."
        ),
    ),
)
def alexnet_d2l(**overrides) -> AlexNet:
    config = AlexNetConfig(
        in_channels=1,
        channels=(96, 256, 384, 384, 256),
        conv1_padding=1,
        image_size=224,
        dropout_at="output",
    )
    return AlexNet(configure(config, overrides))


# ---------------------------------------------------------------------------------------------
# torchvision reference
# ---------------------------------------------------------------------------------------------

# nnatlas module -> torchvision module (torchvision.models.AlexNet: features / classifier indices)
_TORCHVISION_MODULES = {
    "conv1": "features.0",
    "conv2": "features.3",
    "conv3": "features.6",
    "conv4": "features.8",
    "conv5": "features.10",
    "classifier.fc6": "classifier.1",
    "classifier.fc7": "classifier.4",
    "classifier.fc8": "classifier.6",
}


def torchvision_key_map(key: str) -> str:
    """nnatlas state-dict key (``conv1.weight``) -> torchvision's (``features.0.weight``); KeyError otherwise."""
    module, _, tensor = key.rpartition(".")
    return f"{_TORCHVISION_MODULES[module]}.{tensor}"


@register_reference("alexnet")
def _from_torchvision(name: str, ref: nn.Module) -> AlexNet:
    """torchvision.models.AlexNet -> ``alexnet`` with its classes, input channels, dropout and weights."""
    try:
        in_channels = ref.features[0].in_channels
        num_classes = ref.classifier[6].out_features
        dropout = ref.classifier[0].p
        weight = ref.features[0].weight
    except (AttributeError, IndexError, TypeError) as err:
        raise ReferenceMismatchError(
            f"AlexNet from torchvision expects torchvision.models.AlexNet (features[0] a Conv2d, classifier[0] "
            f"Dropout, classifier[6] Linear); got {type(ref).__name__} ({err})"
        ) from None
    with torch.device(weight.device):  # built where the reference lives, in its dtype
        model = alexnet(in_channels=in_channels, num_classes=num_classes, dropout=dropout).to(weight.dtype)
    transfer_state(model, ref.state_dict(), torchvision_key_map, source="torchvision AlexNet")
    return model.train(ref.training)
