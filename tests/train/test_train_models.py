"""Every model of the foundation issue trains one short epoch on tiny data (two steps of a few examples).

ImageNet-sized models run at the smallest input size they accept (``SIZES``); the models that
fix their size in the architecture (GoogLeNet as published, 224x224) run at that size.
Segmentation models train on ISBI 2012 from ``../shared/data``.

VGG's classifier at any input size is 25088 -> 4096 -> 4096 (120M parameters); writing it three
times (checkpoint, best, last) dominated this test, so the VGG variants run with their whole
convolutional stack and ``hidden=512`` (``--model-arg hidden=512``). AlexNet keeps its full
classifier, so the full-width path is still covered.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from nnatlas.train import TrainConfig, train

IMAGE_CLASSIFIERS = [
    "mlp", "softmax_regression",
    "lenet", "lenet_d2l", "lenet5_1998", "lenet_bn",
    "alexnet", "alexnet_2012", "alexnet_d2l",
    "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn",
    "nin", "googlenet", "googlenet_bn",
    "resnet18", "resnet34", "resnet50",
    "densenet121", "densenet169", "densenet201",
    "simple_cnn",
]
# The smallest input each accepts (AlexNet's stride-4 stem and NiN's need at least 67 pixels).
SIZES = {"alexnet": 67, "alexnet_2012": 67, "alexnet_d2l": 67, "nin": 67}
SMALL = ("vgg", "resnet", "densenet", "googlenet_bn")


def _size(model: str) -> int | None:
    if model in SIZES:
        return SIZES[model]
    return 32 if model.startswith(SMALL) else None  # None: the card's size, or the trainer's choice


def _check(result, metric: str) -> None:  # noqa: ANN001
    assert len(result.history) == 1
    row = result.history[0]
    assert math.isfinite(row["train_loss"]) and math.isfinite(row[metric]), row
    assert (result.run_dir / "last.safetensors").is_file() and (result.run_dir / "final.json").is_file()


@pytest.mark.parametrize("model", IMAGE_CLASSIFIERS)
def test_image_classifier_trains_one_short_epoch(tmp_path: Path, model: str) -> None:
    cfg = TrainConfig(model=model, data="digits", epochs=1, batch_size=8, limit_train=16, limit_test=8,
                      optimizer="sgd", momentum=0.0, lr=0.01, task_options={"image_size": _size(model)} if _size(model) else {}, out=str(tmp_path / model), report=False,
                      model_args={"hidden": 512} if model.startswith("vgg") else {})
    result = train(cfg, progress=False)
    _check(result, "test_acc")
    assert result.plan.details["num_classes"] == 10


@pytest.mark.parametrize(("model", "data", "metric"), [("linear_regression", "diabetes", "test_r2"), ("logistic_regression", "breast-cancer", "test_acc")])
def test_tabular_model_trains_one_short_epoch(tmp_path: Path, model: str, data: str, metric: str) -> None:
    cfg = TrainConfig(model=model, data=data, epochs=1, batch_size=8, limit_train=16, limit_test=8, out=str(tmp_path / model), report=False)
    _check(train(cfg, progress=False), metric)


# U-Net 2015's unpadded convolutions need at least 188x188 inputs (4x4 outputs); both models are
# scored on two whole 512x512 slices (unet_2015 through one mirrored 700x700 tile each), so both
# train narrow (the full widths cost seconds a slice; the contract test checks them).
@pytest.mark.parametrize(("model", "crop", "args"), [("unet", 32, {"base_channels": 8}), ("unet_2015", 188, {"base_channels": 16})])
def test_segmentation_model_trains_one_short_epoch(tmp_path: Path, shared_data: Path, model: str, crop: int, args: dict) -> None:
    cfg = TrainConfig(model=model, data="isbi2012", data_dir=str(shared_data), epochs=1, batch_size=2, limit_train=4, limit_test=2,
                      optimizer="sgd", lr=0.01, task_options={"crop": crop}, model_args=args, out=str(tmp_path / model), report=False)
    result = train(cfg, progress=False)
    _check(result, "test_pixel_error")
    assert 0.0 <= result.final["test_pixel_error"] <= 1.0 and 0.0 <= result.final["test_rand_error"] <= 1.0
