"""LeNet: the convolutional network of LeCun et al., in the seeds' modern forms and as published in 1998.

Seed 000 ("3.1 LeNet", registered as ``lenet``), ReLU and max-pooling:

    x (B, 1, 32, 32)
    -> conv1 [K=5, 1 -> 6] -> ReLU      (B, 6, 28, 28)
    -> pool1 max [K=2, S=2]             (B, 6, 14, 14)
    -> conv2 [K=5, 6 -> 16] -> ReLU     (B, 16, 10, 10)
    -> pool2 max [K=2, S=2]             (B, 16, 5, 5)
    -> flatten                          (B, 400)
    -> fc1 400 -> 120 -> ReLU -> fc2 120 -> 84 -> ReLU -> fc3 84 -> L     logits (B, L)

Seed 002 (Dive into Deep Learning, ``lenet_d2l``) takes 28x28 images, pads conv1 by 2 (so
the maps are the same 28, 14, 10, 5) and uses sigmoids and average pooling. d2l's batch-norm
chapter (``lenet_bn``) puts a BatchNorm after every convolution and hidden linear layer and
drops the padding: 28 -> 24 -> 12 -> 8 -> 4, so fc1 reads 16 * 4 * 4 = 256 features.

The 1998 paper's LeNet-5 (``lenet5_1998``) differs in every layer but the sizes:

    x (B, 1, 32, 32)
    -> C1 conv [K=5, 1 -> 6] -> f                          (B, 6, 28, 28)     156 parameters
    -> S2 2x2 sum * coefficient + bias, per map -> f       (B, 6, 14, 14)      12
    -> C3 conv [K=5, 6 -> 16], Table I connections -> f    (B, 16, 10, 10)  1,516
    -> S4 2x2 sum * coefficient + bias, per map -> f       (B, 16, 5, 5)       32
    -> C5 conv [K=5, 16 -> 120] -> f                       (B, 120, 1, 1)  48,120
    -> F6 120 -> 84 -> f                                   (B, 84)         10,164
    -> RBF: y_i = sum_j (x_j - w_ij)^2, w fixed +-1        penalties (B, 10)   0 trainable
    logits = -y                                            (B, 10)

with the squashing function f(a) = A tanh(S a), A = 1.7159, S = 2/3 (paper, Appendix A):
60,000 trainable parameters in all.

Seed 000 draws the modern simplification and calls it LeNet; its shapes are right. The 1998
model is added from the paper. Seed 000's output label misspells BatchSize as "BatchSise".

Letters: B batch, L classes. Classifiers return logits (the softmax of the seed's drawing is
folded into the loss, as torchvision does).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nnatlas.config import check_fields
from nnatlas.errors import ConfigError, check_input
from nnatlas.nn import BatchNorm1d, BatchNorm2d
from nnatlas.registry import ModelCard, Paper, Seed, configure, register_model

__all__ = [
    "LeNetConfig",
    "LeNet",
    "LeNet5Config",
    "LeNet5",
    "Squash",
    "Subsampling",
    "PartialConv2d",
    "RBFOutput",
    "C3_TABLE",
    "digit_prototypes",
]

LENET_1998 = Paper(
    authors="Y. LeCun, L. Bottou, Y. Bengio, P. Haffner",
    title="Gradient-Based Learning Applied to Document Recognition",
    venue="Proceedings of the IEEE 86(11)",
    year=1998,
    link="https://doi.org/10.1109/5.726791",
)
BATCH_NORM = Paper(
    authors="S. Ioffe, C. Szegedy",
    title="Batch Normalization: Accelerating Deep Network Training by Reducing Internal Covariate Shift",
    venue="ICML",
    year=2015,
    link="https://arxiv.org/abs/1502.03167",
)


# ---------------------------------------------------------------------------------------------
# LeNet in the seeds' modern form: one config, three variants
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LeNetConfig:
    """Two 5x5 convolutions with pooling, then three linear layers (120, 84, classes).

    ``padding`` pads conv1 (2 in d2l, so a 28x28 image gives seed 000's 28x28 maps);
    ``activation`` is ``"relu"`` or ``"sigmoid"``, ``pool`` is ``"max"`` or ``"avg"``;
    ``batch_norm`` puts a BatchNorm after every convolution and hidden linear layer.
    """

    in_channels: int = 1
    num_classes: int = 10
    image_size: int = 32
    padding: int = 0
    activation: str = "relu"
    pool: str = "max"
    batch_norm: bool = False

    def __post_init__(self) -> None:
        check_fields(self, minimum={"padding": 0})
        if self.activation not in ("relu", "sigmoid"):
            raise ConfigError(f"LeNetConfig.activation must be 'relu' or 'sigmoid'; got {self.activation!r}")
        if self.pool not in ("max", "avg"):
            raise ConfigError(f"LeNetConfig.pool must be 'max' or 'avg'; got {self.pool!r}")
        if self.feature_size < 1:
            raise ConfigError(
                f"LeNetConfig.image_size {self.image_size} with padding {self.padding} leaves no feature map "
                f"after two 5x5 convolutions and two 2x2 pools; it must be >= {16 - 2 * self.padding}"
            )

    @property
    def feature_size(self) -> int:
        """Side of the map fc1 reads: ((size + 2 padding - 4) / 2 - 4) / 2, floored (5 in the seeds)."""
        return ((self.image_size + 2 * self.padding - 4) // 2 - 4) // 2


def _activation(name: str) -> nn.Module:
    return nn.ReLU() if name == "relu" else nn.Sigmoid()


def _pool(name: str) -> nn.Module:
    return nn.MaxPool2d(2, stride=2) if name == "max" else nn.AvgPool2d(2, stride=2)


class LeNet(nn.Module):
    """Seed 000's LeNet (and d2l's): conv-act-pool twice, then 120 -> 84 -> L."""

    def __init__(self, config: LeNetConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        norm2d = BatchNorm2d if c.batch_norm else (lambda n: nn.Identity())
        norm1d = BatchNorm1d if c.batch_norm else (lambda n: nn.Identity())
        s = c.feature_size
        self.conv1 = nn.Conv2d(c.in_channels, 6, kernel_size=5, padding=c.padding)
        self.bn1 = norm2d(6)
        self.act1 = _activation(c.activation)
        self.pool1 = _pool(c.pool)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5)
        self.bn2 = norm2d(16)
        self.act2 = _activation(c.activation)
        self.pool2 = _pool(c.pool)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(16 * s * s, 120)
        self.bn3 = norm1d(120)
        self.act3 = _activation(c.activation)
        self.fc2 = nn.Linear(120, 84)
        self.bn4 = norm1d(84)
        self.act4 = _activation(c.activation)
        self.fc3 = nn.Linear(84, c.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, S, S) with S = config.image_size -> logits (B, L)."""
        c = self.config
        check_input(x, ("B", c.in_channels, c.image_size, c.image_size), model="LeNet", like=self)
        B, C, H, W = x.shape
        x = self.pool1(self.act1(self.bn1(self.conv1(x))))  # (B, 6, 28, 28) -> (B, 6, 14, 14)
        x = self.pool2(self.act2(self.bn2(self.conv2(x))))  # (B, 16, 10, 10) -> (B, 16, 5, 5)
        x = self.flatten(x)  # (B, 400)
        x = self.act3(self.bn3(self.fc1(x)))  # (B, 120)
        x = self.act4(self.bn4(self.fc2(x)))  # (B, 84)
        return self.fc3(x)  # (B, L)


# ---------------------------------------------------------------------------------------------
# LeNet-5 as published (1998): squashing, trainable subsampling, Table I, RBF output
# ---------------------------------------------------------------------------------------------

# Table I of the paper: which S2 maps (rows) each C3 map (columns) reads. The first six C3
# maps read three contiguous S2 maps, the next six four contiguous, the next three four
# non-contiguous, the last all six: 60 of the 96 possible connections.
C3_TABLE = (
    "X...XXX..XXXX.XX",
    "XX...XXX..XXXX.X",
    "XXX...XXX..X.XXX",
    ".XXX..XXXX..X.XX",
    "..XXX..XXXX.XX.X",
    "...XXX..XXXX.XXX",
)

# The RBF prototypes: the paper sets them by hand to +-1 as "a stylized image of the
# corresponding character class drawn on a 7x12 bitmap" (section II-B). The paper does not
# print its bitmaps, so these are drawn here, one digit per 7-wide column, '#' = +1, '.' = -1.
_DIGIT_BITMAPS = """
....... ....... ....... ....... ....... ....... ....... ....... ....... .......
..###.. ...#... .####.. .####.. ....##. ######. ..###.. ####### ..###.. ..###..
.#...#. ..##... #....#. #....#. ...#.#. #...... .#..... .....#. .#...#. .#...#.
#.....# .#.#... .....#. .....#. ..#..#. #...... #...... .....#. .#...#. #.....#
#.....# ...#... .....#. ....#.. .#...#. #####.. #...... ....#.. ..###.. #.....#
#.....# ...#... ....#.. ..##... #....#. .....#. #.###.. ....#.. .#...#. .#...##
#.....# ...#... ...#... ....#.. ####### ......# ##...#. ...#... #.....# ..###.#
#.....# ...#... ..#.... .....#. .....#. ......# #.....# ...#... #.....# ......#
#.....# ...#... .#..... .....#. .....#. ......# #.....# ..#.... #.....# .....#.
.#...#. ...#... #...... #....#. .....#. #....#. .#...#. ..#.... .#...#. ....#..
..###.. .#####. ######. .####.. .....#. .####.. ..###.. ..#.... ..###.. .##....
....... ....... ....... ....... ....... ....... ....... ....... ....... .......
"""


def digit_prototypes() -> torch.Tensor:
    """The 10 RBF prototypes (10, 84): digit d's 7x12 bitmap above, row by row, as +-1."""
    rows = [line.split() for line in _DIGIT_BITMAPS.strip().splitlines()]  # 12 rows x 10 digits
    glyphs = ["".join(row[d] for row in rows) for d in range(10)]  # 10 strings of 12 * 7 = 84
    return torch.tensor([[1.0 if ch == "#" else -1.0 for ch in g] for g in glyphs])  # (10, 84)


@dataclass(frozen=True)
class LeNet5Config:
    """LeNet-5 as published. ``num_classes`` (<= 10) keeps the first prototypes (digits 0, 1, ...)."""

    num_classes: int = 10
    amplitude: float = 1.7159  # A in f(a) = A tanh(S a)
    slope: float = 2.0 / 3.0  # S

    def __post_init__(self) -> None:
        check_fields(self)
        if not 1 <= self.num_classes <= 10:
            raise ConfigError(
                "LeNet5Config.num_classes must be in 1..10 (one hand-drawn digit prototype each); "
                f"got {self.num_classes}"
            )
        if not self.amplitude > 0 or not self.slope > 0:
            raise ConfigError(f"LeNet5Config.amplitude and slope must be > 0; got {self.amplitude}, {self.slope}")


class Squash(nn.Module):
    """The paper's sigmoid: f(a) = A tanh(S a) (Appendix A, eq. 14); f(1) = 1, f(-1) = -1."""

    def __init__(self, amplitude: float = 1.7159, slope: float = 2.0 / 3.0) -> None:
        super().__init__()
        self.amplitude, self.slope = amplitude, slope

    def extra_repr(self) -> str:
        return f"A={self.amplitude}, S={self.slope:.4f}"

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        """a: any shape -> the same shape."""
        return self.amplitude * torch.tanh(self.slope * a)


class Subsampling(nn.Module):
    """S2/S4: each unit adds its 2x2 inputs, multiplies by a trainable coefficient and adds a
    trainable bias, one pair per map (2 parameters a map); the squashing follows outside."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(channels))  # the coefficient
        self.bias = nn.Parameter(torch.empty(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> (B, C, H/2, W/2)."""
        s = F.avg_pool2d(x, 2, stride=2) * 4  # (B, C, H/2, W/2): the sum of each 2x2 window
        return s * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class PartialConv2d(nn.Module):
    """A convolution in which output map o reads input map i only where ``table[i][o]`` is 'X'.

    Only the connected kernels are parameters: ``weight`` holds one (K, K) kernel per
    connection (60 for C3), scattered into a dense (out, in, K, K) kernel for each call.
    """

    def __init__(self, table: tuple[str, ...], kernel_size: int) -> None:
        super().__init__()
        self.in_channels, self.out_channels = len(table), len(table[0])
        pairs = [(o, i) for o in range(self.out_channels) for i in range(self.in_channels) if table[i][o] == "X"]
        self.register_buffer("connections", torch.tensor(pairs, dtype=torch.long), persistent=False)  # (N, 2)
        self.weight = nn.Parameter(torch.empty(len(pairs), kernel_size, kernel_size))  # (N, K, K)
        self.bias = nn.Parameter(torch.empty(self.out_channels))
        self.kernel_size = kernel_size
        maps_read = [sum(row[o] == "X" for row in table) for o in range(self.out_channels)]
        self.fan_in = tuple(maps_read[o] * kernel_size**2 for o, _ in pairs)  # per connection: inputs of its unit

    def extra_repr(self) -> str:
        k, n = self.kernel_size, len(self.weight)
        return f"{self.in_channels}, {self.out_channels}, kernel_size={k}, connections={n}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, in, H, W) -> (B, out, H - K + 1, W - K + 1)."""
        K = self.kernel_size
        dense = self.weight.new_zeros(self.out_channels, self.in_channels, K, K)  # (out, in, K, K)
        dense = dense.index_put((self.connections[:, 0], self.connections[:, 1]), self.weight)  # unconnected stay 0
        return F.conv2d(x, dense, self.bias)


class RBFOutput(nn.Module):
    """Euclidean radial basis function units: y_i = sum_j (x_j - w_ij)^2 (paper, eq. 7).

    The prototypes w are fixed (a buffer, not trained), as the paper keeps them.
    """

    def __init__(self, prototypes: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("prototypes", prototypes.clone())  # (L, 84)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 84) -> penalties y (B, L), >= 0; the closer to prototype i, the smaller y_i."""
        diff = x.unsqueeze(1) - self.prototypes.unsqueeze(0)  # (B, L, 84)
        return diff.pow(2).sum(-1)  # (B, L)


class LeNet5(nn.Module):
    """LeNet-5 as the 1998 paper describes it (section II-B); returns logits = -RBF penalties."""

    def __init__(self, config: LeNet5Config) -> None:
        super().__init__()
        self.config = config
        A, S = config.amplitude, config.slope
        self.C1 = nn.Conv2d(1, 6, kernel_size=5)
        self.f1 = Squash(A, S)
        self.S2 = Subsampling(6)
        self.f2 = Squash(A, S)
        self.C3 = PartialConv2d(C3_TABLE, kernel_size=5)
        self.f3 = Squash(A, S)
        self.S4 = Subsampling(16)
        self.f4 = Squash(A, S)
        self.C5 = nn.Conv2d(16, 120, kernel_size=5)
        self.f5 = Squash(A, S)
        self.F6 = nn.Linear(120, 84)
        self.f6 = Squash(A, S)
        self.output = RBFOutput(digit_prototypes()[: config.num_classes])
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Appendix A: weights uniform in (-2.4 / F_i, 2.4 / F_i), F_i the fan-in of the unit; biases 0."""
        for weight, fan_in in (
            (self.C1.weight, 25),
            (self.S2.weight, 4),
            (self.C3.weight, self.C3.fan_in),  # 75, 100 or 150 by the map's Table I column
            (self.S4.weight, 4),
            (self.C5.weight, 16 * 25),
            (self.F6.weight, 120),
        ):
            bound = 2.4 / torch.tensor(fan_in, dtype=weight.dtype, device=weight.device)
            weight.uniform_(-1.0, 1.0).mul_(bound.reshape(-1, *[1] * (weight.dim() - 1)) if bound.dim() else bound)
        for bias in (self.C1.bias, self.S2.bias, self.C3.bias, self.S4.bias, self.C5.bias, self.F6.bias):
            bias.zero_()

    def penalties(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 1, 32, 32) -> the RBF penalties y (B, L) of the paper; ``forward`` returns -y."""
        check_input(x, ("B", 1, 32, 32), model="LeNet5", like=self)
        B, C, H, W = x.shape
        x = self.f1(self.C1(x))  # (B, 6, 28, 28)
        x = self.f2(self.S2(x))  # (B, 6, 14, 14)
        x = self.f3(self.C3(x))  # (B, 16, 10, 10)
        x = self.f4(self.S4(x))  # (B, 16, 5, 5)
        x = self.f5(self.C5(x))  # (B, 120, 1, 1)
        x = self.f6(self.F6(x.flatten(1)))  # (B, 84)
        return self.output(x)  # (B, L)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 1, 32, 32) -> logits (B, L) = -penalties: argmax is the paper's decision (least penalty)."""
        return -self.penalties(x)


# ---------------------------------------------------------------------------------------------
# Registered variants
# ---------------------------------------------------------------------------------------------

_SEED000 = Seed("000_dead3008ff14f1b5.txt", "3.1 LeNet")
_SEED002 = Seed("002_45599a84e7f542eb.txt", "卷积神经网络(LeNet)")


@register_model(
    "lenet",
    card=ModelCard(
        name="lenet",
        family="lenet",
        title="LeNet (seed 000: ReLU, max-pooling)",
        paper=LENET_1998,
        input_shape=(1, 32, 32),
        output_shape=(10,),
        task="classification",
        published_params=61_706,
        seed=_SEED000,
        notes=(
            "Seed 000's diagram: 32x32x1 -> conv5x5 6 (28x28x6) -> maxpool 2 (14x14x6) -> conv5x5 16 (10x10x16) -> "
            "maxpool 2 (5x5x16) -> 120 -> 84 -> 10 with ReLU. This is the modern simplification, not the paper's "
            "LeNet-5 (see lenet5_1998). The seed draws a final Softmax; the model returns logits (softmax folded into "
            "the cross-entropy loss, as torchvision does). The seed's output label misspells BatchSize as 'BatchSise'. "
            "published_params (61,706) is computed from the seed's layer sizes, not a published figure."
        ),
    ),
)
def lenet(**overrides) -> LeNet:
    return LeNet(configure(LeNetConfig(), overrides))


@register_model(
    "lenet_d2l",
    card=ModelCard(
        name="lenet_d2l",
        family="lenet",
        title="LeNet (d2l: sigmoid, average pooling, 28x28)",
        paper=LENET_1998,
        input_shape=(1, 28, 28),
        output_shape=(10,),
        task="classification",
        seed=_SEED002,
        notes=(
            "Seed 002 code (Dive into Deep Learning 7.6): Conv2d(1, 6, 5, padding=2) - Sigmoid - AvgPool2d(2, 2) - "
            "Conv2d(6, 16, 5) - Sigmoid - AvgPool2d(2, 2) - Flatten - 400 -> 120 -> 84 -> 10 with sigmoids; "
            "Fashion-MNIST sized 28x28 input, padded so the maps are 28, 14, 10, 5 as in seed 000. 61,706 parameters "
            "(the same as lenet; no published figure). Seed errata: none in the code; the final Linear "
            "gives logits (d2l folds the softmax into the loss too)."
        ),
    ),
)
def lenet_d2l(**overrides) -> LeNet:
    return LeNet(configure(LeNetConfig(image_size=28, padding=2, activation="sigmoid", pool="avg"), overrides))


@register_model(
    "lenet_bn",
    card=ModelCard(
        name="lenet_bn",
        family="lenet",
        title="LeNet with batch normalization (d2l)",
        paper=BATCH_NORM,
        input_shape=(1, 28, 28),
        output_shape=(10,),
        task="classification",
        seed=Seed("002_45599a84e7f542eb.txt", "批量规范化(BN)"),
        notes=(
            "Dive into Deep Learning 8.5 (concise version): BatchNorm after each of the two convolutions and the two "
            "hidden linear layers, before the sigmoid; average pooling. As in d2l, conv1 is unpadded, so a 28x28 "
            "image gives 24 -> 12 -> 8 -> 4 and fc1 is 256 -> 120. 44,878 trainable parameters (no published "
            "figure). Seed 002 describes batch normalization (formula, placement before the activation, per "
            "feature for linear layers and per channel for convolutions) but shows no LeNet-BN code; its claim "
            "that BN 'only speeds up convergence and cannot improve accuracy' is the seed's opinion, not the "
            "paper's finding."
        ),
    ),
)
def lenet_bn(**overrides) -> LeNet:
    config = LeNetConfig(image_size=28, padding=0, activation="sigmoid", pool="avg", batch_norm=True)
    return LeNet(configure(config, overrides))


@register_model(
    "lenet5_1998",
    card=ModelCard(
        name="lenet5_1998",
        family="lenet",
        title="LeNet-5 (LeCun et al., 1998, as published)",
        paper=LENET_1998,
        input_shape=(1, 32, 32),
        output_shape=(10,),
        task="classification",
        published_params=60_000,
        seed=_SEED000,
        notes=(
            "The paper's LeNet-5 (section II-B): f(a) = 1.7159 tanh(2a/3) after every layer up to F6; S2/S4 add each "
            "2x2 window, multiply by a trainable coefficient and add a trainable bias per map; C3 follows Table I "
            "(60 of 96 map connections, 1,516 parameters); C5 is a 5x5 convolution on the 5x5 maps (120 maps of "
            "1x1, 48,120); F6 has 84 units; the output layer is 10 Euclidean RBF units whose +-1 prototypes are "
            "stylised 7x12 digit bitmaps, fixed (a buffer). The paper does not print its bitmaps: the ones here are "
            "drawn by hand in lenet.py (_DIGIT_BITMAPS). Trainable parameters: 156 + 12 + 1,516 + 32 + 48,120 + "
            "10,164 = 60,000 (the paper's 'about 60,000'; the RBF adds 840 fixed values). forward returns "
            "logits = -penalties, so cross-entropy on them is a softmax over negative penalties, close to the "
            "paper's MAP criterion (eq. 9) without its constant j; argmax is the least penalty. Weights start "
            "uniform in +-2.4/fan-in (Appendix A). Input normalisation (background -0.1, ink 1.175) is the data's "
            "job. Seed 000 draws the modern simplification (ReLU, max-pooling, full C3, softmax): see lenet."
        ),
    ),
)
def lenet5_1998(**overrides) -> LeNet5:
    return LeNet5(configure(LeNet5Config(), overrides))
