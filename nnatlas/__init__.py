"""nnatlas: the classic neural network architectures, implemented from scratch in PyTorch,
drawn, measured, verified against the reference implementations, and trainable.

>>> import nnatlas
>>> model = nnatlas.create("resnet18", num_classes=10)
>>> nnatlas.card("resnet18").published_params
11689512
"""

from nnatlas import nn
from nnatlas.errors import ConfigError, ReferenceMismatchError, ShapeError, UnknownModelError
from nnatlas.registry import ModelCard, Paper, Seed, card, create, example_input, from_reference, list_models

from nnatlas import models  # importing the families registers them
from nnatlas.inspect import Diagram, Summary, diagram, summary
from nnatlas.train import load

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "Diagram",
    "ModelCard",
    "Paper",
    "ReferenceMismatchError",
    "Seed",
    "ShapeError",
    "Summary",
    "UnknownModelError",
    "card",
    "create",
    "diagram",
    "example_input",
    "from_reference",
    "list_models",
    "load",
    "nn",
    "summary",
]
