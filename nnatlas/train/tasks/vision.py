"""Tasks on images and feature vectors: classification, binary, regression (segmentation: ``segmentation.py``).

:meth:`ImageTask.fit` looks at the model's card and config and at the data set and decides how
the two fit (the plan's ``details``):

- the config overrides: ``num_classes`` (or ``out_features``) from the data set,
  ``in_channels`` from the images, ``in_features`` for flat models, ``image_size`` where the
  model's config has one;
- the input size: the card's size for small models; for models with adaptive pooling
  (ImageNet-sized ones) the smallest of 32, 64, 96, ... that the model accepts, or
  ``--image-size``;
- channels repeated (1 -> 3) when the model's channel count is fixed, images flattened for
  MLP-like models, per-channel (or per-feature) normalisation from the training split.

Metrics (float64 sums, combined across ranks with one ``all_reduce``):

- ``classification``: cross entropy; ``loss``, ``acc``. A model whose training output is a
  tuple ``(logits, *auxiliary)`` (GoogLeNet) says in its config how much the auxiliary losses
  weigh (``config.aux_weight``).
- ``binary``: one logit per example, BCE with logits; ``loss``, ``acc``.
- ``regression``: MSE on the standardised target; ``loss``, ``mse`` and ``r2`` in the
  target's own units (R² = 1 - SSE / SST).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset, Subset, TensorDataset

import nnatlas
from nnatlas.train.tasks.base import (
    Batch,
    Option,
    Plan,
    Task,
    check_model_args,
    config_fields,
    first,
    positive_int,
    probe,
    register_task,
    unwrap,
)

__all__ = ["ImagePlan", "ImageTask", "ClassificationTask", "BinaryTask", "RegressionTask", "gather", "SMALL_SIZES"]

SMALL_SIZES = (32, 64, 96, 128, 160, 192, 224)  # tried in order for models that accept several sizes
NORM_SAMPLES = 4096  # normalisation statistics come from the first examples of the training split
TABULAR_LR_SCALE = 30  # linear models on a few hundred tabular rows take few steps: a larger rate (0.09 for adam)


def gather(ds: Dataset, indices: Tensor) -> tuple[Tensor, Tensor]:
    """Stack the items ``indices`` of ``ds`` into ``(x, y)`` batches.

    ``TensorDataset`` (and ``Subset`` of one) is indexed in one operation; any other data set
    item by item.
    """
    base, idx = ds, indices
    while isinstance(base, Subset):
        idx = torch.as_tensor(base.indices)[idx]
        base = base.dataset
    if isinstance(base, TensorDataset) and len(base.tensors) == 2:
        x, y = base.tensors
        return x[idx], y[idx]
    items = [ds[int(i)] for i in indices]
    xs, ys = zip(*items)
    return torch.stack([torch.as_tensor(x) for x in xs]), torch.stack([torch.as_tensor(y) for y in ys])


def _first(ds: Dataset, n: int) -> tuple[Tensor, Tensor]:
    return gather(ds, torch.arange(min(n, len(ds))))  # type: ignore[arg-type]


@dataclass(frozen=True)
class ImagePlan:
    """How batches of images or vectors become model inputs and targets (the plan's details).

    ``kind`` is ``"image"`` (model takes ``(B, C, H, W)``), ``"flat"`` (images flattened to
    ``(B, C*H*W)``) or ``"vector"`` (tabular ``(B, F)``).
    """

    task: str
    kind: str
    size: tuple[int, int] | None  # resize images to (H, W); None keeps the data's size
    repeat: int  # repeat the channel dimension (1 -> 3 for a model with fixed 3 channels)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    target_mean: float = 0.0  # regression targets are standardised with these
    target_std: float = 1.0
    num_classes: int | None = None
    augment: int = 0  # random shift in pixels (training only); 0 for none

    @classmethod
    def from_details(cls, task: str, d: Mapping[str, Any]) -> ImagePlan:
        kw = {k: d[k] for k in ("kind", "repeat", "target_mean", "target_std", "num_classes", "augment")}
        return cls(task=task, size=tuple(d["size"]) if d["size"] is not None else None, mean=tuple(d["mean"]), std=tuple(d["std"]), **kw)

    def details(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("task")
        return d

    def inputs(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Data-set examples ``x`` -> model inputs; ``generator`` turns on the training shift."""
        x = x.float()
        if self.kind == "vector":
            mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device)
            std = torch.tensor(self.std, dtype=x.dtype, device=x.device)
            return (x - mean) / std
        if x.dim() == 3:  # (B, H, W) grey images
            x = x.unsqueeze(1)
        if self.size is not None and tuple(x.shape[-2:]) != self.size:
            shrink = self.size[0] < x.shape[-2] or self.size[1] < x.shape[-1]
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=shrink)  # (B, C, H', W')
        if generator is not None and self.augment > 0:
            x = _shift(x, self.augment, generator)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        x = (x - mean) / std
        if self.repeat > 1:
            x = x.repeat(1, self.repeat, 1, 1)  # (B, C*repeat, H, W)
        if self.kind == "flat":
            x = x.flatten(1)  # (B, C*H*W)
        return x

    def targets(self, y: Tensor) -> Tensor:
        """Data-set targets -> what the task's loss takes."""
        if self.task == "regression":
            return (y.float().reshape(-1) - self.target_mean) / self.target_std
        return y.long().reshape(-1)


def _shift(x: Tensor, pad: int, generator: torch.Generator) -> Tensor:
    """Translate each image by up to ``pad`` pixels (zero fill), offsets drawn from ``generator``."""
    B, C, H, W = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))  # (B, C, H+2p, W+2p)
    offsets = torch.randint(0, 2 * pad + 1, (B, 2), generator=generator).tolist()
    return torch.stack([padded[i, :, dy : dy + H, dx : dx + W] for i, (dy, dx) in enumerate(offsets)])


def _stats(x: Tensor, dims: Sequence[int]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    x = x.double()
    mean = x.mean(dim=tuple(dims))
    std = x.std(dim=tuple(dims)).clamp_min(1e-6)
    return tuple(mean.tolist()), tuple(std.tolist())


def _augment_shift(size: tuple[int, int] | None) -> int:
    """The training shift in pixels for image classification: 1/16 of the side (2 at the data's own size)."""
    return max(1, size[0] // 16) if size is not None else 2


IMAGE_OPTIONS = {
    "image_size": Option(int, None, "input size for models that take several sizes (default: the card's, or the smallest of 32, 64, ... that fits)",
                         check=positive_int, expect="an integer >= 1"),
    "augment": Option(bool, True, "random shifts for image classification (--no-augment turns them off)"),
}


class ImageTask(Task):
    """The shared fitting and batching of images and vectors; subclasses add loss and metrics."""

    options = IMAGE_OPTIONS

    def __init__(self, plan: Plan, bundle: Any | None, options: Mapping[str, Any]) -> None:
        super().__init__(plan, bundle, options)
        self.image = ImagePlan.from_details(plan.task, plan.details)
        self.lr_scale = TABULAR_LR_SCALE if self.image.kind == "vector" else 1.0

    def batch(self, split: str, indices: Tensor, *, device: torch.device, generator: torch.Generator | None = None) -> Batch:
        x, y = gather(getattr(self.bundle, split), indices)
        # Resize, shift and normalise on the training device (the GPU, when there is one).
        x = self.image.inputs(x.to(device, non_blocking=True), generator=generator if self.image.augment else None)
        return {"x": x, "y": self.image.targets(y.to(device, non_blocking=True))}

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        return self.criterion(model(batch["x"]), batch["y"], model)

    def sums(self, model: nn.Module, batch: Batch) -> Tensor:
        return self.output_sums(model(batch["x"]), batch["y"])

    def inference(self) -> dict[str, Any]:
        return {"input": self.image.details()}

    # -- subclasses --------------------------------------------------------------------------

    def criterion(self, output: Any, target: Tensor, model: nn.Module) -> Tensor:
        raise NotImplementedError

    def output_sums(self, output: Any, target: Tensor) -> Tensor:
        raise NotImplementedError

    @classmethod
    def check_output(cls, output: Any, target: Tensor, num_classes: int | None, where: str) -> None:
        """Raise ``ValueError`` when ``output`` cannot be scored against ``target``."""
        raise NotImplementedError

    # -- fitting -------------------------------------------------------------------------------

    @classmethod
    def fit(cls, model_name: str, bundle: Any, options: Mapping[str, Any], model_args: Mapping[str, Any]) -> tuple[Task, nn.Module]:
        card = nnatlas.card(model_name)
        where = f"model {model_name!r} on data set {bundle.name!r}"
        opts = {name: options.get(name, opt.default) for name, opt in cls.options.items()}
        image_size, augment = opts["image_size"], opts.get("augment", False)
        fields = config_fields(model_name)
        check_model_args(model_name, fields, model_args)
        overrides: dict[str, Any] = {}
        model_rank = len(card.input_shape)
        data_shape = tuple(bundle.input_shape)
        image_data = len(data_shape) in (2, 3)

        # The task, and the output width it needs.
        task = cls.kind
        num_classes = bundle.num_classes if bundle.task in ("classification", "binary") else None
        if task == "classification" and bundle.task == "binary":
            num_classes = 2  # a softmax classifier on a two-class set
        class_field = "num_classes" if "num_classes" in fields else ("out_features" if "out_features" in fields else None)
        if task == "classification":
            if num_classes is None:
                raise ValueError(f"{where}: the data set has no num_classes")
            if class_field is not None:
                overrides[class_field] = num_classes

        # Inputs.
        x0, y0 = _first(bundle.train, NORM_SAMPLES)
        if x0.dim() == 3 and image_data and len(data_shape) == 2:
            x0 = x0.unsqueeze(1)
        size: tuple[int, int] | None = None
        repeat = 1
        if model_rank == 3:
            kind = "image"
            if not image_data:
                raise ValueError(f"{where}: the model takes images {card.input_shape}; the data set gives vectors {data_shape}")
            C = x0.shape[1]
            if "in_channels" in fields:
                overrides["in_channels"] = C
            elif C != card.input_shape[0]:
                if C == 1:
                    repeat = card.input_shape[0]
                else:
                    raise ValueError(f"{where}: the model takes {card.input_shape[0]} channels and has no in_channels; the images have {C}")
            mean, std = _stats(x0, (0, 2, 3))
        elif model_rank == 1:
            F_model = card.input_shape[0]
            if image_data:
                kind = "flat"
                C, H, W = x0.shape[1:]
                if image_size is not None:
                    size = (image_size, image_size)
                elif "in_features" not in fields and C * H * W != F_model:
                    side = math.isqrt(F_model // C)
                    if C * side * side != F_model:
                        raise ValueError(f"{where}: the model takes {F_model} features and has no in_features; images {tuple(x0.shape[1:])} do not flatten to it")
                    size = (side, side)
                h, w = size or (H, W)
                if "in_features" in fields:
                    overrides["in_features"] = C * h * w
                mean, std = _stats(x0, (0, 2, 3))
            else:
                kind = "vector"
                if x0.dim() != 2:
                    raise ValueError(f"{where}: the model takes vectors ({F_model},); the data set gives {data_shape}")
                if "in_features" in fields:
                    overrides["in_features"] = x0.shape[1]
                elif x0.shape[1] != F_model:
                    raise ValueError(f"{where}: the model takes {F_model} features and has no in_features; the data set has {x0.shape[1]}")
                mean, std = _stats(x0, (0,))
        else:
            raise ValueError(f"{where}: the model takes inputs {card.input_shape}; the {task} task handles images and vectors")

        target_mean, target_std = 0.0, 1.0
        if task == "regression":
            (tm,), (ts,) = _stats(y0.reshape(-1, 1), (0,))
            target_mean, target_std = tm, ts

        # The input size: the card's, a chosen one, or the smallest of SMALL_SIZES the model takes.
        def plan_for(s: tuple[int, int] | None) -> Plan:
            ov = {**overrides, **model_args}
            if kind == "image" and s is not None and fields.get("image_size") is not None and "image_size" not in model_args:
                ov["image_size"] = s[0]
            shift = _augment_shift(s) if augment and kind == "image" and task == "classification" else 0
            image = ImagePlan(task=task, kind=kind, size=s, repeat=repeat, mean=mean, std=std, target_mean=target_mean, target_std=target_std,
                              num_classes=num_classes if task == "classification" else None, augment=shift)
            return Plan(model=model_name, data=bundle.name, task=task, overrides=ov, details=image.details())

        xb, yb = x0[:2], y0[:2]
        if kind == "image":
            card_hw = tuple(card.input_shape[1:])
            if image_size is not None:
                candidates = [(image_size, image_size)]
            elif max(card_hw) <= 64 or fields.get("image_size") is not None:  # small, or a size fixed by the config
                candidates = [card_hw]
            else:
                candidates = [(s, s) for s in SMALL_SIZES if s < max(card_hw)] + [card_hw]
            errors: list[str] = []
            built: tuple[dict[str, Any], nn.Module] | None = None
            for s in candidates:
                plan = plan_for(s)
                if built is None or built[0] != plan.overrides:  # build once unless the config holds the size
                    built = (plan.overrides, nnatlas.create(model_name, **plan.overrides))
                model = built[1]
                image = ImagePlan.from_details(task, plan.details)
                try:
                    out = probe(model, image.inputs(xb))
                except (ValueError, RuntimeError) as err:  # ShapeError, or a feature map shrunk to nothing
                    errors.append(f"{s[0]}x{s[1]}: {str(err).splitlines()[0]}")
                    continue
                cls.check_output(out, image.targets(yb), image.num_classes, where)
                return cls(plan, bundle, options), model
            raise ValueError(f"{where}: no input size fits ({'; '.join(errors)[:400]})")
        plan = plan_for(size)
        model = nnatlas.create(model_name, **plan.overrides)
        image = ImagePlan.from_details(task, plan.details)
        cls.check_output(probe(model, image.inputs(xb)), image.targets(yb), image.num_classes, where)
        return cls(plan, bundle, options), model


def _ones(target: Tensor) -> Tensor:
    return torch.tensor(float(target.numel()), dtype=torch.float64, device=target.device)


@register_task
class ClassificationTask(ImageTask):
    kind, best, mode = "classification", "test_acc", "max"
    data_kinds = ("classification", "binary")
    num_sums = 3

    def criterion(self, output: Any, target: Tensor, model: nn.Module) -> Tensor:
        if isinstance(output, (tuple, list)):  # (logits, *auxiliary logits): the model's config weighs the auxiliary losses
            main, *aux = output
            weight = unwrap(model).config.aux_weight
            return F.cross_entropy(main.float(), target) + weight * sum(F.cross_entropy(a.float(), target) for a in aux)
        return F.cross_entropy(output.float(), target)

    def output_sums(self, output: Any, target: Tensor) -> Tensor:
        logits = first(output).float()
        loss = F.cross_entropy(logits, target, reduction="sum")
        correct = (logits.argmax(1) == target).sum()
        return torch.stack([loss.double(), correct.double(), _ones(target)])

    def metrics(self, sums: Tensor) -> dict[str, float]:
        loss, correct, n = sums.tolist()
        return {"loss": loss / n, "acc": correct / n}

    @classmethod
    def check_output(cls, output: Any, target: Tensor, num_classes: int | None, where: str) -> None:
        out = first(output)
        if out.dim() != 2 or out.shape[1] != num_classes:
            raise ValueError(f"{where}: expected logits (B, {num_classes}) for {num_classes} classes; the model gives {tuple(out.shape)}")


@register_task
class BinaryTask(ImageTask):
    kind, best, mode = "binary", "test_acc", "max"
    options = {"image_size": IMAGE_OPTIONS["image_size"]}  # no augmentation: a shift does not keep a one-logit label meaningful
    data_kinds = ("binary",)
    num_sums = 3

    @staticmethod
    def _logit(output: Any) -> Tensor:
        out = first(output).float()
        return out.reshape(out.shape[0]) if out.dim() == 2 and out.shape[1] == 1 else out

    def criterion(self, output: Any, target: Tensor, model: nn.Module) -> Tensor:
        return F.binary_cross_entropy_with_logits(self._logit(output), target.float())

    def output_sums(self, output: Any, target: Tensor) -> Tensor:
        z = self._logit(output)
        loss = F.binary_cross_entropy_with_logits(z, target.float(), reduction="sum")
        correct = ((z > 0).long() == target).sum()
        return torch.stack([loss.double(), correct.double(), _ones(target)])

    def metrics(self, sums: Tensor) -> dict[str, float]:
        loss, correct, n = sums.tolist()
        return {"loss": loss / n, "acc": correct / n}

    @classmethod
    def check_output(cls, output: Any, target: Tensor, num_classes: int | None, where: str) -> None:
        out = first(output)
        if not (out.dim() == 1 or (out.dim() == 2 and out.shape[1] == 1)):
            raise ValueError(f"{where}: expected one logit per example, (B,) or (B, 1); the model gives {tuple(out.shape)}")


@register_task
class RegressionTask(ImageTask):
    kind, best, mode = "regression", "test_mse", "min"
    options = {"image_size": IMAGE_OPTIONS["image_size"]}
    data_kinds = ("regression",)
    num_sums = 5

    @staticmethod
    def _pred(output: Any) -> Tensor:
        out = first(output).float()
        return out.reshape(out.shape[0])

    def criterion(self, output: Any, target: Tensor, model: nn.Module) -> Tensor:
        return F.mse_loss(self._pred(output), target)

    def output_sums(self, output: Any, target: Tensor) -> Tensor:
        pred = self._pred(output).double()
        t = target.double()
        y = t * self.image.target_std + self.image.target_mean  # back to the data's units
        sse_std = ((pred - t) ** 2).sum()
        sse = sse_std * self.image.target_std**2
        return torch.stack([sse_std, sse, y.sum(), (y**2).sum(), _ones(t)])

    def metrics(self, sums: Tensor) -> dict[str, float]:
        sse_std, sse, sy, syy, n = sums.tolist()
        sst = syy - sy * sy / n
        return {"loss": sse_std / n, "mse": sse / n, "r2": 1.0 - sse / sst if sst > 0 else math.nan}

    @classmethod
    def check_output(cls, output: Any, target: Tensor, num_classes: int | None, where: str) -> None:
        out = first(output)
        if not (out.dim() == 1 or (out.dim() == 2 and out.shape[1] == 1)):
            raise ValueError(f"{where}: expected one prediction per example, (B,) or (B, 1); the model gives {tuple(out.shape)}")

