"""GoogLeNet / Inception v1 (Szegedy et al., "Going Deeper with Convolutions", 2014; CVPR 2015).

An Inception block runs four paths side by side on the same input and concatenates
their outputs on the channels: a 1x1 conv; a 1x1 "reduce" conv then a 3x3 conv; a 1x1
reduce then a 5x5 conv; a 3x3 max-pool (stride 1) then a 1x1 "pool proj" conv. The 1x1
reductions keep the 3x3 and 5x5 convs cheap. GoogLeNet as published (Table 1):

    x                                              (B, 3, 224, 224)
    conv1 7x7/2 64, maxpool1 3x3/2, lrn1           (B, 64, 56, 56)
    conv2 1x1 64, conv3 3x3 192, lrn2, maxpool2    (B, 192, 28, 28)
    inception3a, 3b                                (B, 256 | 480, 28, 28)
    maxpool3 3x3/2                                 (B, 480, 14, 14)
    inception4a -> aux1 (training)                 (B, 512, 14, 14)
    inception4b, 4c, 4d -> aux2 (training)         (B, 512 | 512 | 528, 14, 14)
    inception4e                                    (B, 832, 14, 14)
    maxpool4 3x3/2                                 (B, 832, 7, 7)
    inception5a, 5b                                (B, 832 | 1024, 7, 7)
    avgpool 7x7/1, flatten, dropout 0.4            (B, 1024)
    fc                                             (B, num_classes)   logits

Every conv is followed by a ReLU; there is no BatchNorm (it came a year later, in
Inception v2). The two auxiliary classifiers (``aux_logits=True``) each take an avgpool
5x5/3 (14x14 -> 4x4), a 1x1 conv to 128, FC 1024 + ReLU, dropout 0.7 and FC to the
classes; in training the model returns ``(logits, aux2, aux1)`` and the paper adds the
auxiliary losses with weight 0.3. In evaluation it returns the logits only. All max-pools
round up (ceil mode, as Caffe), which gives Table 1's sizes (112 -> 56 -> 28 -> 14 -> 7).

``layout="torchvision"`` (registered as ``googlenet_bn``) is torchvision's GoogLeNet,
the one its ImageNet weights fit: every conv is conv (no bias) + BatchNorm(eps=0.001) +
ReLU, no LRN, the "5x5" path uses a 3x3 kernel (torchvision issue #906), maxpool4 is
2x2/2, the pools before the classifiers are adaptive (any input from 15x15 up), dropout
0.2, and ``transform_input`` rescales ImageNet-normalised input to the [-1, 1] range the
ported weights expect.

Dimension letters: B batch, C channels, H height, W width.

The seed (002, Dive into Deep Learning style) gives the Inception block as
``Inception(c1, c2, c3, c4)`` with c2, c3 (reduce, out) pairs and paths p1..p4; here it
is ``Inception(in_channels, c1, c2, c3, c4)`` with the paths named ``branch1..branch4``
(torchvision's names, so its weights map key for key). Seed 002's table (Inception 0.16 M
parameters, 128 MFLOPs) is block 3a: 163,328 conv weights and 128 M multiply-adds at 28x28.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from torch import nn

from nnatlas.config import check_fields
from nnatlas.errors import ConfigError, ReferenceMismatchError, check_input
from nnatlas.nn import BatchNorm2d, LocalResponseNorm
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
    "GoogLeNetConfig",
    "GoogLeNetOutputs",
    "BasicConv2d",
    "Inception",
    "InceptionAux",
    "GoogLeNet",
    "googlenet",
    "googlenet_bn",
    "INCEPTION_CHANNELS",
]

GOOGLENET_PAPER = Paper(
    authors="Christian Szegedy, Wei Liu, Yangqing Jia, Pierre Sermanet, Scott Reed, Dragomir Anguelov, "
    "Dumitru Erhan, Vincent Vanhoucke, Andrew Rabinovich",
    title="Going Deeper with Convolutions",
    venue="arXiv:1409.4842 (ILSVRC 2014; CVPR 2015)",
    year=2014,
    link="https://arxiv.org/abs/1409.4842",
)

Layout = Literal["paper", "torchvision"]

# Table 1: in_channels, #1x1, (#3x3 reduce, #3x3), (#5x5 reduce, #5x5), pool proj
INCEPTION_CHANNELS: dict[str, tuple[int, int, tuple[int, int], tuple[int, int], int]] = {
    "3a": (192, 64, (96, 128), (16, 32), 32),
    "3b": (256, 128, (128, 192), (32, 96), 64),
    "4a": (480, 192, (96, 208), (16, 48), 64),
    "4b": (512, 160, (112, 224), (24, 64), 64),
    "4c": (512, 128, (128, 256), (24, 64), 64),
    "4d": (512, 112, (144, 288), (32, 64), 64),
    "4e": (528, 256, (160, 320), (32, 128), 128),
    "5a": (832, 256, (160, 320), (32, 128), 128),
    "5b": (832, 384, (192, 384), (48, 128), 128),
}


def _check_layout(layout: str) -> None:
    if layout not in ("paper", "torchvision"):
        raise ConfigError(f"GoogLeNet layout must be 'paper' or 'torchvision'; got {layout!r}")


@dataclass(frozen=True)
class GoogLeNetConfig:
    """GoogLeNet: the layout (paper or torchvision), classes, and the auxiliary classifiers."""

    layout: str = "paper"  # "paper": conv + ReLU, LRN, real 5x5; "torchvision": conv + BN + ReLU, "5x5" is 3x3
    num_classes: int = 1000
    in_channels: int = 3
    aux_logits: bool = False  # the two auxiliary classifiers (training only)
    transform_input: bool = False  # torchvision's ImageNet-normalised -> [-1, 1] input rescaling
    dropout: float = 0.4  # before the final fc (the paper's 40%; torchvision 0.2)
    aux_dropout: float = 0.7
    aux_weight: float = 0.3  # training adds each auxiliary loss times this (Szegedy et al. 2014: 0.3)

    def __post_init__(self) -> None:
        check_fields(self)
        _check_layout(self.layout)
        for name in ("dropout", "aux_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"GoogLeNetConfig.{name} must be in [0, 1); got {value!r}")
        if self.transform_input and self.in_channels != 3:
            raise ConfigError(
                f"GoogLeNetConfig.transform_input needs in_channels=3 (RGB); got in_channels={self.in_channels}"
            )


class GoogLeNetOutputs(NamedTuple):
    """Training-mode output with auxiliary classifiers, in torchvision's order."""

    logits: torch.Tensor  # (B, num_classes)
    aux_logits2: torch.Tensor  # (B, num_classes), from inception4d
    aux_logits1: torch.Tensor  # (B, num_classes), from inception4a


class BasicConv2d(nn.Module):
    """conv + ReLU (the paper), or conv without bias + BN(eps=0.001) + ReLU (``batch_norm=True``, torchvision)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        *,
        batch_norm: bool,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=not batch_norm
        )  # the bias is redundant before BN
        self.bn = BatchNorm2d(out_channels, eps=0.001) if batch_norm else None
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C_in, H, W) -> (B, C_out, H', W')."""
        x = self.conv(x)  # (B, C_out, H', W')
        if self.bn is not None:
            x = self.bn(x)
        return self.relu(x)


class Inception(nn.Module):
    """Four parallel paths concatenated on the channels (seed 002's p1..p4 are branch1..branch4).

    ``c1``: the 1x1 path; ``c2``: (reduce, out) of the 1x1 -> 3x3 path; ``c3``: (reduce, out)
    of the 1x1 -> 5x5 path (3x3 in the torchvision layout); ``c4``: the 1x1 after the 3x3
    max-pool. x: (B, in_channels, H, W) -> (B, c1 + c2[1] + c3[1] + c4, H, W).
    """

    def __init__(
        self,
        in_channels: int,
        c1: int,
        c2: tuple[int, int],
        c3: tuple[int, int],
        c4: int,
        *,
        layout: Layout = "paper",
    ) -> None:
        super().__init__()
        _check_layout(layout)
        bn = layout == "torchvision"
        k = 5 if layout == "paper" else 3  # torchvision's "5x5" path is 3x3 (its issue #906)
        self.branch1 = BasicConv2d(in_channels, c1, 1, batch_norm=bn)
        self.branch2 = nn.Sequential(
            BasicConv2d(in_channels, c2[0], 1, batch_norm=bn), BasicConv2d(c2[0], c2[1], 3, padding=1, batch_norm=bn)
        )
        self.branch3 = nn.Sequential(
            BasicConv2d(in_channels, c3[0], 1, batch_norm=bn),
            BasicConv2d(c3[0], c3[1], k, padding=k // 2, batch_norm=bn),
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True),
            BasicConv2d(in_channels, c4, 1, batch_norm=bn),
        )
        self.in_channels = in_channels
        self.out_channels = c1 + c2[1] + c3[1] + c4
        self._extra = f"c1={c1}, c2=({c2[0]}, {c2[1]}), c3=({c3[0]}, {c3[1]}), c4={c4}"
        self._out_dims = f"B, C={c1}+{c2[1]}+{c3[1]}+{c4}, H, W"  # the diagram's channel arithmetic

    def extra_repr(self) -> str:
        return self._extra

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C_in, H, W) -> (B, c1 + c2[1] + c3[1] + c4, H, W)."""
        check_input(x, ("B", self.in_channels, "H", "W"), model="Inception", like=self)
        B, C, H, W = x.shape
        p1 = self.branch1(x)  # (B, c1, H, W)
        p2 = self.branch2(x)  # (B, c2[1], H, W)
        p3 = self.branch3(x)  # (B, c3[1], H, W)
        p4 = self.branch4(x)  # (B, c4, H, W)
        return name(torch.cat([p1, p2, p3, p4], dim=1), None, dims=self._out_dims)  # (B, out_channels, H, W)


class InceptionAux(nn.Module):
    """Auxiliary classifier: avgpool to 4x4, 1x1 conv 128, FC 1024 + ReLU, dropout, FC.

    The paper pools 5x5 with stride 3 (14x14 -> 4x4); torchvision pools adaptively to 4x4.
    x: (B, C_in, 14, 14) -> (B, num_classes).
    """

    def __init__(self, in_channels: int, num_classes: int, *, layout: Layout = "paper", dropout: float = 0.7) -> None:
        super().__init__()
        _check_layout(layout)
        self.pool = nn.AvgPool2d(kernel_size=5, stride=3) if layout == "paper" else nn.AdaptiveAvgPool2d((4, 4))
        self.conv = BasicConv2d(in_channels, 128, 1, batch_norm=layout == "torchvision")
        self.fc1 = nn.Linear(128 * 4 * 4, 1024)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(p=dropout)
        self.fc2 = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C_in, 14, 14) -> (B, num_classes) logits."""
        x = self.pool(x)  # (B, C_in, 4, 4)
        x = self.conv(x).flatten(1)  # (B, 2048)
        x = self.dropout(self.relu(self.fc1(x)))  # (B, 1024)
        return self.fc2(x)  # (B, num_classes)


class GoogLeNet(nn.Module):
    """The stem, nine Inception blocks in three stages, global average pooling and a linear classifier."""

    def __init__(self, config: GoogLeNetConfig) -> None:
        super().__init__()
        self.config = config
        paper = config.layout == "paper"
        bn = not paper

        def inception(name: str) -> Inception:
            c_in, c1, c2, c3, c4 = INCEPTION_CHANNELS[name]
            return Inception(c_in, c1, c2, c3, c4, layout=config.layout)  # type: ignore[arg-type]

        self.conv1 = BasicConv2d(config.in_channels, 64, 7, stride=2, padding=3, batch_norm=bn)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        # Caffe's LRN, as the paper's model: size 5, alpha 1e-4 (divided by the size, as torch.nn), beta 0.75
        self.lrn1 = LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0) if paper else None
        self.conv2 = BasicConv2d(64, 64, 1, batch_norm=bn)
        self.conv3 = BasicConv2d(64, 192, 3, padding=1, batch_norm=bn)
        self.lrn2 = LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0) if paper else None
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception3a = inception("3a")
        self.inception3b = inception("3b")
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a = inception("4a")
        self.inception4b = inception("4b")
        self.inception4c = inception("4c")
        self.inception4d = inception("4d")
        self.inception4e = inception("4e")
        self.maxpool4 = nn.MaxPool2d(3 if paper else 2, stride=2, ceil_mode=True)  # torchvision's is 2x2
        self.inception5a = inception("5a")
        self.inception5b = inception("5b")
        if config.aux_logits:
            layout, p = config.layout, config.aux_dropout
            self.aux1 = InceptionAux(512, config.num_classes, layout=layout, dropout=p)  # type: ignore[arg-type]
            self.aux2 = InceptionAux(528, config.num_classes, layout=layout, dropout=p)  # type: ignore[arg-type]
        else:
            self.aux1 = self.aux2 = None
        self.avgpool = nn.AvgPool2d(7, stride=1) if paper else nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(p=config.dropout)
        self.fc = nn.Linear(1024, config.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                if self.config.layout == "paper":  # the Caffe model's fillers: xavier, conv bias 0.2
                    nn.init.xavier_uniform_(m.weight)
                    nn.init.constant_(m.bias, 0.2 if isinstance(m, nn.Conv2d) else 0.0)
                else:  # torchvision's
                    nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2, b=2)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
            elif isinstance(m, BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _transform_input(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet-normalised (x - mean) / std -> (x' - 0.5) / 0.5, the range torchvision's ported weights expect."""
        mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
        # scale and shift computed in double, as torchvision does, so that the two agree to the last bit
        scale = x.new_tensor([s / 0.5 for s in std]).view(1, 3, 1, 1)
        shift = x.new_tensor([(m - 0.5) / 0.5 for m in mean]).view(1, 3, 1, 1)
        return x * scale + shift  # (B, 3, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor | GoogLeNetOutputs:
        """x: (B, in_channels, 224, 224) images (any size from 15x15 in the torchvision layout).

        Returns (B, num_classes) logits; in training with ``aux_logits``, ``GoogLeNetOutputs``
        (logits, aux_logits2, aux_logits1), each (B, num_classes).
        """
        c = self.config
        if c.layout == "paper":  # fixed 7x7 and 5x5/3 average pools: the paper's 224x224 only
            check_input(x, ("B", c.in_channels, 224, 224), model="GoogLeNet", like=self)
        else:
            # below 15 x 15 the stride-2 max pools (ceil mode, no padding) leave no map
            check_input(x, ("B", c.in_channels, "H", "W"), model="GoogLeNet (torchvision layout)", like=self, min_size=15)
        B, C, H, W = x.shape
        if c.transform_input:
            x = self._transform_input(x)
        x = self.maxpool1(self.conv1(x))  # (B, 64, H/4, W/4)
        if self.lrn1 is not None:
            x = self.lrn1(x)
        x = self.conv3(self.conv2(x))  # (B, 192, H/4, W/4)
        if self.lrn2 is not None:
            x = self.lrn2(x)
        x = self.maxpool2(x)  # (B, 192, H/8, W/8)
        x = self.inception3b(self.inception3a(x))  # (B, 480, H/8, W/8)
        x = self.maxpool3(x)  # (B, 480, H/16, W/16)
        x = self.inception4a(x)  # (B, 512, H/16, W/16)
        aux1 = self.aux1(x) if self.aux1 is not None and self.training else None  # (B, num_classes)
        x = self.inception4d(self.inception4c(self.inception4b(x)))  # (B, 528, H/16, W/16)
        aux2 = self.aux2(x) if self.aux2 is not None and self.training else None  # (B, num_classes)
        x = self.inception4e(x)  # (B, 832, H/16, W/16)
        x = self.maxpool4(x)  # (B, 832, H/32, W/32)
        x = self.inception5b(self.inception5a(x))  # (B, 1024, H/32, W/32)
        x = self.avgpool(x).flatten(1)  # (B, 1024)
        logits = self.fc(self.dropout(x))  # (B, num_classes)
        if aux1 is not None and aux2 is not None:
            return GoogLeNetOutputs(logits, aux2, aux1)
        return logits


# the paper's model counted (weights and biases); tests/models/test_googlenet.py derives both from Table 1
GOOGLENET_PARAMS = 6_998_552
GOOGLENET_AUX_PARAMS = 13_378_280


@register_model(
    "googlenet",
    card=ModelCard(
        name="googlenet",
        family="googlenet",
        title="GoogLeNet (Inception v1, as published)",
        paper=GOOGLENET_PAPER,
        input_shape=(3, 224, 224),
        output_shape=(1000,),
        task="classification",
        published_params=None,  # the paper gives per-layer figures in Table 1 (weights only, K = 1024), no total
        seed=Seed("002_45599a84e7f542eb.txt", "GoogLeNet"),
        notes=(
            f"As published: conv + ReLU without BatchNorm, LRN after maxpool1 and conv3, a real 5x5 path, "
            f"3x3/2 ceil-mode max-pools, avgpool 7x7/1, dropout 0.4. Computed parameters: {GOOGLENET_PARAMS:,} "
            f"without the auxiliary classifiers (registered default), {GOOGLENET_AUX_PARAMS:,} with "
            f"aux_logits=True; Table 1's weight counts (K = 1024) sum to about 6.8 M. Seed 002 gives only "
            f"the Inception block (in d2l's MXNet form, without in_channels) and a table: 0.16 M parameters "
            f"and 128 MFLOPs are block 3a's 163,328 conv weights and 128 M multiply-adds at 28x28."
        ),
    ),
)
def googlenet(**overrides) -> GoogLeNet:
    """GoogLeNet as in the paper (no BN, LRN, real 5x5), input 224x224."""
    return GoogLeNet(configure(GoogLeNetConfig(layout="paper", dropout=0.4), overrides))


@register_model(
    "googlenet_bn",
    card=ModelCard(
        name="googlenet_bn",
        family="googlenet",
        title="GoogLeNet (torchvision layout, BatchNorm)",
        paper=GOOGLENET_PAPER,
        input_shape=(3, 224, 224),
        small_input_shape=(3, 64, 64),
        output_shape=(1000,),
        task="classification",
        published_params=6_624_904,
        seed=Seed("002_45599a84e7f542eb.txt", "GoogLeNet"),
        notes=(
            "torchvision's GoogLeNet, the layout of its ImageNet weights: conv (no bias) + BN(eps=0.001) + ReLU, "
            "no LRN, the '5x5' path uses a 3x3 kernel (torchvision issue #906), maxpool4 2x2/2, adaptive pools, "
            "dropout 0.2. 6,624,904 parameters (torchvision's figure) without the auxiliary classifiers, the "
            "registered default; aux_logits=True adds them (13,004,888, torchvision's default construction)."
        ),
    ),
)
def googlenet_bn(**overrides) -> GoogLeNet:
    """GoogLeNet in torchvision's layout (BN, 3x3 in the "5x5" path), without aux classifiers by default."""
    return GoogLeNet(configure(GoogLeNetConfig(layout="torchvision", dropout=0.2), overrides))


_TORCHVISION_KEY = re.compile(
    r"conv[1-3]\.(conv|bn)\.\w+"
    r"|inception[345][a-e]\.(branch1|branch[23]\.[01]|branch4\.1)\.(conv|bn)\.\w+"
    r"|aux[12]\.(conv\.(conv|bn)|fc[12])\.\w+"
    r"|fc\.\w+"
)


def _torchvision_key(key: str) -> str:
    """nnatlas key -> torchvision key: the names are torchvision's, so every known key maps to itself."""
    if not _TORCHVISION_KEY.fullmatch(key):
        raise KeyError(key)
    return key


@register_reference("googlenet_bn")
def _from_torchvision(name: str, ref: nn.Module) -> GoogLeNet:
    """Build ``googlenet_bn`` from a ``torchvision.models.GoogLeNet``; classes, aux classifiers,
    transform_input and dropouts come from ``ref``."""
    try:
        aux = bool(ref.aux_logits) and ref.aux1 is not None
        overrides = {
            "num_classes": ref.fc.out_features,
            "in_channels": ref.conv1.conv.in_channels,
            "aux_logits": aux,
            "transform_input": bool(ref.transform_input),
            "dropout": float(ref.dropout.p),
            "aux_dropout": float(ref.aux1.dropout.p) if aux else GoogLeNetConfig.aux_dropout,
        }
    except AttributeError as err:
        got = f"{type(ref).__name__} ({err})"
        raise ReferenceMismatchError(f"{name} expects a torchvision GoogLeNet as reference; got {got}") from None
    model = create(name, **overrides)
    transfer_state(model, ref.state_dict(), _torchvision_key, source=f"torchvision {type(ref).__name__}")
    return model.train(ref.training)
