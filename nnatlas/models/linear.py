"""Linear models and the multi-layer perceptron (seed 000, first four diagrams).

    linear_regression    x (B, F) -> Linear[F, 1] -> y (B, 1)
    logistic_regression  x (B, F) -> Linear[F, 1] -> logit (B, 1)      P(y=1|x) = sigmoid(logit)
    softmax_regression   x (B, F) -> Linear[F, L] -> logits (B, L)     P(y|x) = softmax(logits)
    mlp                  x (B, 768) -> Linear[768, 512] -> ReLU -> Linear[512, 256] -> ReLU
                                    -> Linear[256, 10] -> logits (B, 10)

Letters: B batch, F features, L labels.

Classifiers return logits, as torch.nn and torchvision do: the sigmoid and the softmax the
seed draws at the top are applied by ``predict_proba`` and folded into the loss for training
(``BCEWithLogitsLoss`` / ``CrossEntropyLoss``), which is the numerically stable form.

Seed errata: seed 000 draws logistic regression identical to softmax regression
(Linear[NFeature, NLabel] + Softmax). Logistic regression has one output, the log-odds,
and a sigmoid. The seed's MLP takes 768 features; 28x28 MNIST has 784 (``in_features=784``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nnatlas.config import check_fields
from nnatlas.errors import ConfigError, check_input
from nnatlas.registry import ModelCard, Paper, Seed, configure, register_model

SEED = "000_dead3008ff14f1b5.txt"


@dataclass(frozen=True)
class LinearConfig:
    """A single affine layer: ``in_features`` -> ``out_features``."""

    in_features: int = 10
    out_features: int = 1

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class MLPConfig:
    """A multi-layer perceptron: ``in_features`` -> ``hidden`` (ReLU after each) -> ``num_classes``."""

    in_features: int = 768
    hidden: tuple[int, ...] = (512, 256)
    num_classes: int = 10
    dropout: float = 0.0

    def __post_init__(self) -> None:
        check_fields(self)
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"MLPConfig.dropout must be in [0, 1); got {self.dropout}")


class _Affine(nn.Module):
    """Shared body of the three linear models: one ``nn.Linear`` named ``linear``."""

    title = "Linear model"

    def __init__(self, config: LinearConfig) -> None:
        super().__init__()
        self.config = config
        self.linear = nn.Linear(config.in_features, config.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, F) -> (B, out_features)."""
        check_input(x, ("B", self.config.in_features), model=self.title, like=self)
        return self.linear(x)  # (B, out_features)


class LinearRegression(_Affine):
    """y = x W^T + b, fitted by least squares (MSE)."""

    title = "LinearRegression"


class LogisticRegression(_Affine):
    """logit = x W^T + b; P(y=1 | x) = sigmoid(logit)."""

    title = "LogisticRegression"

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """P(y=1 | x), shape (B, 1)."""
        return torch.sigmoid(self(x))


class SoftmaxRegression(_Affine):
    """logits = x W^T + b; P(y | x) = softmax(logits) (multinomial logistic regression)."""

    title = "SoftmaxRegression"

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """P(y | x), shape (B, L)."""
        return torch.softmax(self(x), dim=-1)


class MLP(nn.Module):
    """Fully connected layers with ReLU between them; returns logits."""

    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        self.config = config
        sizes = (config.in_features, *config.hidden)
        layers: list[nn.Module] = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(n_in, n_out), nn.ReLU(inplace=True)]
            if config.dropout:
                layers.append(nn.Dropout(config.dropout))
        self.hidden = nn.Sequential(*layers)
        self.classifier = nn.Linear(sizes[-1], config.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, F) -> logits (B, L)."""
        check_input(x, ("B", self.config.in_features), model="MLP", hint="flatten images first", like=self)
        x = self.hidden(x)  # (B, hidden[-1])
        return self.classifier(x)  # (B, L)

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities, shape (B, L)."""
        return torch.softmax(self(x), dim=-1)


COX_1958 = Paper(
    authors="D. R. Cox",
    title="The Regression Analysis of Binary Sequences",
    venue="Journal of the Royal Statistical Society, Series B",
    year=1958,
    link="https://doi.org/10.1111/j.2517-6161.1958.tb00292.x",
)
RUMELHART_1986 = Paper(
    authors="D. E. Rumelhart, G. E. Hinton, R. J. Williams",
    title="Learning representations by back-propagating errors",
    venue="Nature",
    year=1986,
    link="https://doi.org/10.1038/323533a0",
)


@register_model(
    "linear_regression",
    card=ModelCard(
        name="linear_regression",
        family="linear",
        title="Linear regression",
        paper=None,
        input_shape=(10,),
        output_shape=(1,),
        task="regression",
        seed=Seed(SEED, "LinearRegression"),
        notes="Linear[NFeature, 1] as the seed draws it. Default 10 features (scikit-learn's diabetes data).",
    ),
)
def linear_regression(**overrides) -> LinearRegression:
    return LinearRegression(configure(LinearConfig(in_features=10, out_features=1), overrides))


@register_model(
    "logistic_regression",
    card=ModelCard(
        name="logistic_regression",
        family="linear",
        title="Logistic regression",
        paper=COX_1958,
        input_shape=(30,),
        output_shape=(1,),
        task="binary",
        seed=Seed(SEED, "LogisticRegression"),
        notes=(
            "One output, the log-odds, and a sigmoid (predict_proba; BCEWithLogitsLoss in training). "
            "Seed erratum: seed 000 draws logistic regression as softmax regression "
            "(Linear[NFeature, NLabel] + Softmax). Default 30 features (scikit-learn's breast cancer data)."
        ),
    ),
)
def logistic_regression(**overrides) -> LogisticRegression:
    config = configure(LinearConfig(in_features=30, out_features=1), overrides)
    if config.out_features != 1:
        raise ConfigError(f"logistic_regression has exactly one output (the log-odds); got out_features={config.out_features}")
    return LogisticRegression(config)


@register_model(
    "softmax_regression",
    card=ModelCard(
        name="softmax_regression",
        family="linear",
        title="Softmax regression",
        paper=None,
        input_shape=(64,),
        output_shape=(10,),
        task="classification",
        seed=Seed(SEED, "SoftmaxRegression"),
        notes=(
            "Linear[NFeature, NLabel]; returns logits, the seed's Softmax is predict_proba and is folded into "
            "CrossEntropyLoss. Default 64 features and 10 labels (scikit-learn's 8x8 digits, flattened)."
        ),
    ),
)
def softmax_regression(**overrides) -> SoftmaxRegression:
    overrides = dict(overrides)
    if "num_classes" in overrides:  # the name every other classifier uses
        overrides["out_features"] = overrides.pop("num_classes")
    return SoftmaxRegression(configure(LinearConfig(in_features=64, out_features=10), overrides))


@register_model(
    "mlp",
    card=ModelCard(
        name="mlp",
        family="mlp",
        title="Multi-layer perceptron 768-512-256-10",
        paper=RUMELHART_1986,
        input_shape=(768,),
        output_shape=(10,),
        task="classification",
        seed=Seed(SEED, "MLP"),
        notes=(
            "768 -> 512 -> ReLU -> 256 -> ReLU -> 10 as the seed draws it; returns logits (the seed's Softmax is "
            "folded into CrossEntropyLoss). Seed note: 28x28 MNIST digits have 784 pixels, not 768; "
            "use in_features=784 for them."
        ),
    ),
)
def mlp(**overrides) -> MLP:
    return MLP(configure(MLPConfig(), overrides))
