"""ResNet (He, Zhang, Ren & Sun, "Deep Residual Learning for Image Recognition", CVPR 2016).

A residual block learns the change F(x) to its input and adds the input back,
y = relu(F(x) + shortcut(x)), so a deep stack starts near the identity and trains.
Laid out as torchvision lays it out (attribute names included, so its weights map key
for key), ResNet-18 at 224x224:

    x                                   (B, 3, 224, 224)
    conv1 7x7/2 p3, bn1, relu           (B, 64, 112, 112)
    maxpool 3x3/2 p1                    (B, 64, 56, 56)
    layer1: 2 x BasicBlock(64)          (B, 64, 56, 56)
    layer2: 2 x BasicBlock(128), /2     (B, 128, 28, 28)   first block downsamples
    layer3: 2 x BasicBlock(256), /2     (B, 256, 14, 14)
    layer4: 2 x BasicBlock(512), /2     (B, 512, 7, 7)
    avgpool (adaptive to 1x1), flatten  (B, 512)
    fc                                  (B, num_classes)   logits

ResNet-34 stacks (3, 4, 6, 3) basic blocks; ResNet-50 stacks (3, 4, 6, 3) bottleneck
blocks (1x1 reduce, 3x3, 1x1 expand by 4), so its stages end at 256, 512, 1024 and
2048 channels. ResNet-50 here is "V1.5", as torchvision's: a downsampling bottleneck
strides in its 3x3 conv, not in the first 1x1 conv as the paper's Table 1 model does
(same parameters; about +0.5% top-1 in torchvision's measurements).

Dimension letters: B batch, C channels, H height, W width.

The seeds: seed 000 draws ResNet-18 as a body, a "ConvBlock" (identity shortcut) and a
"DownConvBlock" (3x3 stride-2 path plus a 1x1 stride-2 conv shortcut) -- here one
``BasicBlock(in_channels, out_channels, stride)`` that builds its projection shortcut
when the shape changes. The seed's blocks carry no BatchNorm; the paper puts BN after
every conv (and seed 003/004's code does), so this implementation has it. The seed's
"AvgPool 7x7" is adaptive here (equal at 224x224) and its final Softmax is folded into
the loss: the model returns logits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from nnatlas.config import check_fields
from nnatlas.errors import ConfigError, ReferenceMismatchError, check_input
from nnatlas.nn import BatchNorm2d
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

__all__ = ["ResNetConfig", "BasicBlock", "Bottleneck", "ResNet", "resnet18", "resnet34", "resnet50"]

RESNET_PAPER = Paper(
    authors="Kaiming He, Xiangyu Zhang, Shaoqing Ren, Jian Sun",
    title="Deep Residual Learning for Image Recognition",
    venue="CVPR",
    year=2016,
    link="https://arxiv.org/abs/1512.03385",
)

STAGE_WIDTHS = (64, 128, 256, 512)  # the 3x3 conv width of each stage (Table 1)


@dataclass(frozen=True)
class ResNetConfig:
    """A ResNet: block type, blocks per stage, classes and input channels."""

    layers: tuple[int, int, int, int] = (2, 2, 2, 2)
    block: str = "basic"  # "basic" (two 3x3 convs) or "bottleneck" (1x1, 3x3, 1x1 x4)
    num_classes: int = 1000
    in_channels: int = 3

    def __post_init__(self) -> None:
        check_fields(self)  # types, ints >= 1, four stages
        if self.block not in ("basic", "bottleneck"):
            raise ConfigError(f"ResNetConfig.block must be 'basic' or 'bottleneck'; got {self.block!r}")


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False)


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Sequential | None:
    """The projection shortcut W_s x (paper eq. 2, option B): 1x1 conv + BN where the shape changes."""
    if stride == 1 and in_channels == out_channels:
        return None  # identity shortcut (eq. 1)
    return nn.Sequential(_conv1x1(in_channels, out_channels, stride), BatchNorm2d(out_channels))


class BasicBlock(nn.Module):
    """Two 3x3 convs with a shortcut: y = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)).

    Seed 000's "ConvBlock" (stride 1, identity shortcut) and "DownConvBlock" (stride 2,
    1x1 stride-2 conv shortcut) in one module.
    """

    expansion = 1

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, out_channels, stride)
        self.bn1 = BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(out_channels, out_channels)
        self.bn2 = BatchNorm2d(out_channels)
        self.downsample = _shortcut(in_channels, out_channels, stride)
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def extra_repr(self) -> str:
        if self.in_channels == self.out_channels and self.stride == 1:
            return f"C={self.out_channels}"  # the seed's ConvBlock [C=64]
        return f"In={self.in_channels}, Out={self.out_channels}" + (f", S={self.stride}" if self.stride != 1 else "")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C_in, H, W) -> (B, C_out, H / stride, W / stride)."""
        identity = x if self.downsample is None else self.downsample(x)  # (B, C_out, H/s, W/s)
        out = self.relu(self.bn1(self.conv1(x)))  # (B, C_out, H/s, W/s)
        out = self.bn2(self.conv2(out))
        out += identity  # F(x) + x
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce to ``width``, 3x3 at ``width`` (carrying the stride, V1.5), 1x1 expand to 4 x ``width``.

    x: (B, C_in, H, W) -> (B, 4 * width, H / stride, W / stride).
    """

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = _conv1x1(in_channels, width)
        self.bn1 = BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride)  # V1.5: the stride sits here, not in conv1
        self.bn2 = BatchNorm2d(width)
        self.conv3 = _conv1x1(width, out_channels)
        self.bn3 = BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_channels, out_channels, stride)
        self.in_channels, self.width, self.stride = in_channels, width, stride

    def extra_repr(self) -> str:
        return (f"In={self.in_channels}, Width={self.width}, Out={self.width * self.expansion}"
                + (f", S={self.stride}" if self.stride != 1 else ""))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C_in, H, W) -> (B, 4 * width, H / stride, W / stride)."""
        identity = x if self.downsample is None else self.downsample(x)  # (B, 4w, H/s, W/s)
        out = self.relu(self.bn1(self.conv1(x)))  # (B, w, H, W)
        out = self.relu(self.bn2(self.conv2(out)))  # (B, w, H/s, W/s)
        out = self.bn3(self.conv3(out))  # (B, 4w, H/s, W/s)
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    """The stem, four stages of residual blocks, global average pooling and a linear classifier."""

    def __init__(self, config: ResNetConfig) -> None:
        super().__init__()
        self.config = config
        block = BasicBlock if config.block == "basic" else Bottleneck
        self.conv1 = nn.Conv2d(config.in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        channels = 64
        stages = []
        for i, (width, n_blocks) in enumerate(zip(STAGE_WIDTHS, config.layers)):
            stride = 1 if i == 0 else 2  # layer1 follows the max-pool; layers 2-4 halve H and W
            blocks = []
            for j in range(n_blocks):
                blocks.append(block(channels, width, stride if j == 0 else 1))
                channels = width * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, config.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # He et al. 2015 ("Delving deep into rectifiers") init for convs, as the paper trains
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, in_channels, H, W) images -> (B, num_classes) logits."""
        name = f"ResNet({self.config.block}, {self.config.layers})"
        check_input(x, ("B", self.config.in_channels, "H", "W"), model=name, like=self)
        B, C, H, W = x.shape
        x = self.relu(self.bn1(self.conv1(x)))  # (B, 64, H/2, W/2)
        x = self.maxpool(x)  # (B, 64, H/4, W/4)
        x = self.layer1(x)  # (B, 64 e, H/4, W/4)   e = block expansion (1 or 4)
        x = self.layer2(x)  # (B, 128 e, H/8, W/8)
        x = self.layer3(x)  # (B, 256 e, H/16, W/16)
        x = self.layer4(x)  # (B, 512 e, H/32, W/32)
        x = self.avgpool(x).flatten(1)  # (B, 512 e)
        return self.fc(x)  # (B, num_classes)


_SEED_NOTES = (
    "Seed 000 draws ResNet-18's blocks without BatchNorm; the paper (and seed 003/004's code) "
    "has BN after every conv, as here. Seed 000's 'DownConvBlock' is the stride-2 BasicBlock with "
    "a 1x1 stride-2 projection shortcut (here conv + BN, torchvision's 'downsample'). The seed's "
    "fixed 7x7 average pool is adaptive here (equal at 224x224) and its Softmax is folded into the "
    "loss: the model returns logits. Seed 000's body also has no BatchNorm or ReLU in the stem (conv0 "
    "goes straight to the max-pool); here, as in the paper, conv1 - BN - ReLU - max-pool. Its block "
    "drawings end in an 'oup' node that is never defined (Graphviz draws a bare box); the block "
    "diagrams here end in the output tensor."
)


def _card(name: str, title: str, params: int, notes: str, seed: Seed) -> ModelCard:
    return ModelCard(
        name=name,
        family="resnet",
        title=title,
        paper=RESNET_PAPER,
        input_shape=(3, 224, 224),
        small_input_shape=(3, 64, 64),
        output_shape=(1000,),
        task="classification",
        published_params=params,
        seed=seed,
        notes=notes,
    )


@register_model(
    "resnet18",
    card=_card("resnet18", "ResNet-18", 11_689_512, _SEED_NOTES, Seed("000_dead3008ff14f1b5.txt", "3.4 ResNet18")),
)
def resnet18(**overrides) -> ResNet:
    """ResNet-18: basic blocks (2, 2, 2, 2), 11,689,512 parameters."""
    return ResNet(configure(ResNetConfig(layers=(2, 2, 2, 2), block="basic"), overrides))


@register_model(
    "resnet34",
    card=_card(
        "resnet34",
        "ResNet-34",
        21_797_672,
        "Basic blocks (3, 4, 6, 3) with projection shortcuts where the shape changes (paper option B). "
        + _SEED_NOTES,
        Seed("003_979c5363c5233b21.txt", "ResNet"),
    ),
)
def resnet34(**overrides) -> ResNet:
    """ResNet-34: basic blocks (3, 4, 6, 3), 21,797,672 parameters."""
    return ResNet(configure(ResNetConfig(layers=(3, 4, 6, 3), block="basic"), overrides))


@register_model(
    "resnet50",
    card=_card(
        "resnet50",
        "ResNet-50 (V1.5)",
        25_557_032,
        "Bottleneck blocks (3, 4, 6, 3). V1.5 as torchvision: a downsampling bottleneck strides in its "
        "3x3 conv rather than its first 1x1 conv (the paper's V1); parameter count unchanged. "
        "The seeds draw no bottleneck ResNet.",
        Seed("003_979c5363c5233b21.txt", "ResNet"),
    ),
)
def resnet50(**overrides) -> ResNet:
    """ResNet-50 V1.5: bottleneck blocks (3, 4, 6, 3), 25,557,032 parameters."""
    return ResNet(configure(ResNetConfig(layers=(3, 4, 6, 3), block="bottleneck"), overrides))


_TORCHVISION_KEY = re.compile(
    r"(conv1|bn1|fc)\.\w+"  # stem and classifier
    r"|layer[1-4]\.\d+\.(conv[1-3]|bn[1-3]|downsample\.[01])\.\w+"  # blocks
)


def _torchvision_key(key: str) -> str:
    """nnatlas key -> torchvision key: the names are torchvision's, so every known key maps to itself."""
    if not _TORCHVISION_KEY.fullmatch(key):
        raise KeyError(key)
    return key


@register_reference("resnet18", "resnet34", "resnet50")
def _from_torchvision(name: str, ref: nn.Module) -> ResNet:
    """Build ``name`` from a ``torchvision.models.ResNet``: classes and input channels from ``ref``,
    weights through the key map."""
    want = {
        "resnet18": ("BasicBlock", (2, 2, 2, 2)),
        "resnet34": ("BasicBlock", (3, 4, 6, 3)),
        "resnet50": ("Bottleneck", (3, 4, 6, 3)),
    }[name]
    try:
        got = (type(ref.layer1[0]).__name__, tuple(len(getattr(ref, f"layer{i}")) for i in range(1, 5)))
        num_classes, in_channels = ref.fc.out_features, ref.conv1.in_channels
    except (AttributeError, TypeError, IndexError) as err:
        got_type = f"{type(ref).__name__} ({err})"
        raise ReferenceMismatchError(f"{name} expects a torchvision ResNet as reference; got {got_type}") from None
    if got != want:
        raise ReferenceMismatchError(
            f"{name} expects a torchvision ResNet of {want[0]}s {want[1]}; got {got[0]}s {got[1]}"
        )
    for m in ref.modules():  # ResNeXt / dilated variants share the key names but not the arithmetic
        if isinstance(m, nn.Conv2d) and (m.groups != 1 or m.dilation != (1, 1)):
            raise ReferenceMismatchError(f"{name} expects plain convs (groups=1, dilation=1); the reference has {m}")
    model = create(name, num_classes=num_classes, in_channels=in_channels)
    transfer_state(model, ref.state_dict(), _torchvision_key, source=f"torchvision {type(ref).__name__}")
    return model.train(ref.training)
