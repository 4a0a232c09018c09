"""Tasks: how a registered model meets a data set, what it minimises, and what it reports.

:func:`resolve` looks at the model's card and config and at the :class:`~nnatlas.data.DataBundle`
and decides, before any training, how the two fit (a :class:`Plan`, plain data written to
``config.json``):

- the config overrides: ``num_classes`` (or ``out_features``) from the data set,
  ``in_channels`` from the images, ``in_features`` for flat models, ``image_size`` where the
  model's config has one;
- the input size: the card's size for small models; for models with adaptive pooling
  (ImageNet-sized ones) the smallest of 32, 64, 96, ... that the model accepts, or
  ``--image-size``;
- channels repeated (1 -> 3) when the model's channel count is fixed, images flattened for
  MLP-like models, per-channel (or per-feature) normalisation from the training split.

A data set that does not fit (a regression set for an image classifier, images for a linear
model of fixed width) is a ``ValueError`` naming both, raised before any work starts.

Tasks (``Task`` subclasses) own the loss and the metrics. Metrics are accumulated as a
vector of float64 sums so that data-parallel ranks combine them with one ``all_reduce``:

- ``classification``: cross entropy; ``loss``, ``acc``. Auxiliary outputs (GoogLeNet's
  classifiers in training mode) add 0.3 x their loss, as in Szegedy et al. (2014).
- ``binary``: one logit per example, BCE with logits; ``loss``, ``acc``.
- ``regression``: MSE on the standardised target; ``loss``, ``mse`` and ``r2`` in the
  target's own units (R² = 1 - SSE / SST).
- ``segmentation``: per-pixel cross entropy; ``loss``, ``pixel_acc``, ``miou`` (mean over
  classes of intersection / union). Models whose output is smaller than the input (U-Net
  2015's unpadded convolutions) are scored on the centre crop of the mask.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset, Subset, TensorDataset

import nnatlas

__all__ = [
    "Plan",
    "Task",
    "ClassificationTask",
    "BinaryTask",
    "RegressionTask",
    "SegmentationTask",
    "make_task",
    "resolve",
    "default_dataset",
    "gather",
    "SMALL_SIZES",
]

log = logging.getLogger(__name__)

TRAINABLE_TASKS = ("classification", "binary", "regression", "segmentation")
SMALL_SIZES = (32, 64, 96, 128, 160, 192, 224)  # tried in order for models that accept several sizes
NORM_SAMPLES = 4096  # normalisation statistics come from the first examples of the training split


# --------------------------------------------------------------------------------------------
# Batches from any map-style data set
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# The plan: plain data, written to config.json, read back by ``nnatlas eval``
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """How batches of one data set become inputs and targets of one model.

    ``kind`` is ``"image"`` (model takes ``(B, C, H, W)``), ``"flat"`` (images flattened to
    ``(B, C*H*W)``) or ``"vector"`` (tabular ``(B, F)``).
    """

    model: str
    data: str
    task: str
    kind: str
    overrides: dict[str, Any]
    size: tuple[int, int] | None  # resize images to (H, W); None keeps the data's size
    repeat: int  # repeat the channel dimension (1 -> 3 for a model with fixed 3 channels)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    target_mean: float = 0.0  # regression targets are standardised with these
    target_std: float = 1.0
    num_classes: int | None = None
    augment: int = 0  # random shift in pixels (training only); 0 for none

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Plan:
        names = {f.name for f in dataclasses.fields(cls)}
        missing = sorted(names - set(doc))
        if missing:
            raise ValueError(f"config.json 'plan' lacks {missing}; it was not written by this nnatlas")
        kw = {k: doc[k] for k in names}
        kw["size"] = tuple(kw["size"]) if kw["size"] is not None else None
        kw["mean"], kw["std"] = tuple(kw["mean"]), tuple(kw["std"])
        return cls(**kw)

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
        """Data-set targets -> what the task's loss takes (masks resized with the images)."""
        if self.task == "regression":
            return (y.float().reshape(-1) - self.target_mean) / self.target_std
        if self.task == "segmentation":
            m = y.long()
            if m.dim() == 4:  # (B, 1, H, W)
                m = m[:, 0]
            if self.size is not None and tuple(m.shape[-2:]) != self.size:
                m = F.interpolate(m[:, None].float(), size=self.size, mode="nearest")[:, 0].long()  # (B, H', W')
            return m
        return y.long().reshape(-1)


def _shift(x: Tensor, pad: int, generator: torch.Generator) -> Tensor:
    """Translate each image by up to ``pad`` pixels (zero fill), offsets drawn from ``generator``."""
    B, C, H, W = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))  # (B, C, H+2p, W+2p)
    offsets = torch.randint(0, 2 * pad + 1, (B, 2), generator=generator).tolist()
    return torch.stack([padded[i, :, dy : dy + H, dx : dx + W] for i, (dy, dx) in enumerate(offsets)])


# --------------------------------------------------------------------------------------------
# Tasks
# --------------------------------------------------------------------------------------------


class Task:
    """Loss and metrics of one kind of problem. Metrics accumulate as a float64 sum vector."""

    name: str = ""
    num_sums: int = 3  # length of the sum vector
    best: str = "loss"  # the metric that picks best.safetensors and drives early stopping
    mode: str = "min"  # "min" or "max" for ``best``

    def loss(self, output: Any, target: Tensor) -> Tensor:
        raise NotImplementedError

    def sums(self, output: Any, target: Tensor) -> Tensor:
        """This batch's contribution to the metric sums (float64, on the output's device)."""
        raise NotImplementedError

    def metrics(self, sums: Tensor) -> dict[str, float]:
        raise NotImplementedError

    def check_output(self, output: Any, target: Tensor, where: str) -> None:
        """Raise ``ValueError`` when ``output`` cannot be scored against ``target``."""
        raise NotImplementedError

    def improved(self, new: float, old: float | None) -> bool:
        if old is None:
            return True
        return new > old if self.mode == "max" else new < old


def _main(output: Any) -> Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


class ClassificationTask(Task):
    name, best, mode = "classification", "acc", "max"
    aux_weight = 0.3  # Szegedy et al. 2014: auxiliary classifiers' losses weighted by 0.3

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes

    def loss(self, output: Any, target: Tensor) -> Tensor:
        if isinstance(output, (tuple, list)):
            main, *aux = output
            return F.cross_entropy(main.float(), target) + self.aux_weight * sum(F.cross_entropy(a.float(), target) for a in aux)
        return F.cross_entropy(output.float(), target)

    def sums(self, output: Any, target: Tensor) -> Tensor:
        logits = _main(output).float()
        loss = F.cross_entropy(logits, target, reduction="sum")
        correct = (logits.argmax(1) == target).sum()
        return torch.stack([loss.double(), correct.double(), torch.tensor(float(target.numel()), dtype=torch.float64, device=logits.device)])

    def metrics(self, sums: Tensor) -> dict[str, float]:
        loss, correct, n = sums.tolist()
        return {"loss": loss / n, "acc": correct / n}

    def check_output(self, output: Any, target: Tensor, where: str) -> None:
        out = _main(output)
        if out.dim() != 2 or out.shape[1] != self.num_classes:
            raise ValueError(f"{where}: expected logits (B, {self.num_classes}) for {self.num_classes} classes; the model gives {tuple(out.shape)}")


class BinaryTask(Task):
    name, best, mode = "binary", "acc", "max"

    @staticmethod
    def _logit(output: Any) -> Tensor:
        out = _main(output).float()
        return out.reshape(out.shape[0]) if out.dim() == 2 and out.shape[1] == 1 else out

    def loss(self, output: Any, target: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(self._logit(output), target.float())

    def sums(self, output: Any, target: Tensor) -> Tensor:
        z = self._logit(output)
        loss = F.binary_cross_entropy_with_logits(z, target.float(), reduction="sum")
        correct = ((z > 0).long() == target).sum()
        return torch.stack([loss.double(), correct.double(), torch.tensor(float(target.numel()), dtype=torch.float64, device=z.device)])

    def metrics(self, sums: Tensor) -> dict[str, float]:
        loss, correct, n = sums.tolist()
        return {"loss": loss / n, "acc": correct / n}

    def check_output(self, output: Any, target: Tensor, where: str) -> None:
        out = _main(output)
        if not (out.dim() == 1 or (out.dim() == 2 and out.shape[1] == 1)):
            raise ValueError(f"{where}: expected one logit per example, (B,) or (B, 1); the model gives {tuple(out.shape)}")


class RegressionTask(Task):
    name, best, mode = "regression", "mse", "min"
    num_sums = 5

    def __init__(self, target_mean: float, target_std: float) -> None:
        self.mean, self.std = target_mean, target_std

    @staticmethod
    def _pred(output: Any) -> Tensor:
        out = _main(output).float()
        return out.reshape(out.shape[0])

    def loss(self, output: Any, target: Tensor) -> Tensor:
        return F.mse_loss(self._pred(output), target)

    def sums(self, output: Any, target: Tensor) -> Tensor:
        pred = self._pred(output).double()
        t = target.double()
        y = t * self.std + self.mean  # back to the data's units
        sse_std = ((pred - t) ** 2).sum()
        sse = sse_std * self.std**2
        n = torch.tensor(float(t.numel()), dtype=torch.float64, device=t.device)
        return torch.stack([sse_std, sse, y.sum(), (y**2).sum(), n])

    def metrics(self, sums: Tensor) -> dict[str, float]:
        sse_std, sse, sy, syy, n = sums.tolist()
        sst = syy - sy * sy / n
        return {"loss": sse_std / n, "mse": sse / n, "r2": 1.0 - sse / sst if sst > 0 else math.nan}

    def check_output(self, output: Any, target: Tensor, where: str) -> None:
        out = _main(output)
        if not (out.dim() == 1 or (out.dim() == 2 and out.shape[1] == 1)):
            raise ValueError(f"{where}: expected one prediction per example, (B,) or (B, 1); the model gives {tuple(out.shape)}")


def _center_crop(mask: Tensor, size: Sequence[int]) -> Tensor:
    H, W = mask.shape[-2:]
    h, w = size
    top, left = (H - h) // 2, (W - w) // 2
    return mask[..., top : top + h, left : left + w]


class SegmentationTask(Task):
    name, best, mode = "segmentation", "miou", "max"

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.num_sums = 3 + 2 * num_classes

    def _fit(self, output: Any, target: Tensor) -> tuple[Tensor, Tensor]:
        logits = _main(output).float()
        if tuple(target.shape[-2:]) != tuple(logits.shape[-2:]):
            target = _center_crop(target, logits.shape[-2:])
        return logits, target

    def loss(self, output: Any, target: Tensor) -> Tensor:
        logits, target = self._fit(output, target)
        return F.cross_entropy(logits, target)

    def sums(self, output: Any, target: Tensor) -> Tensor:
        logits, target = self._fit(output, target)
        K = self.num_classes
        loss = F.cross_entropy(logits, target, reduction="sum").double()
        pred = logits.argmax(1)
        correct = (pred == target).sum().double()
        n = torch.tensor(float(target.numel()), dtype=torch.float64, device=logits.device)
        classes = torch.arange(K, device=logits.device).view(K, 1)
        p = pred.reshape(1, -1) == classes  # (K, N)
        t = target.reshape(1, -1) == classes
        inter = (p & t).sum(1).double()
        union = (p | t).sum(1).double()
        return torch.cat([torch.stack([loss, correct, n]), inter, union])

    def metrics(self, sums: Tensor) -> dict[str, float]:
        s = sums.tolist()
        loss, correct, n = s[:3]
        K = self.num_classes
        inter, union = s[3 : 3 + K], s[3 + K :]
        ious = [i / u for i, u in zip(inter, union) if u > 0]
        return {"loss": loss / n, "pixel_acc": correct / n, "miou": sum(ious) / len(ious) if ious else math.nan}

    def check_output(self, output: Any, target: Tensor, where: str) -> None:
        out = _main(output)
        if out.dim() != 4 or out.shape[1] != self.num_classes:
            raise ValueError(f"{where}: expected per-pixel logits (B, {self.num_classes}, H, W); the model gives {tuple(out.shape)}")
        if out.shape[-2] > target.shape[-2] or out.shape[-1] > target.shape[-1]:
            raise ValueError(f"{where}: the model's output {tuple(out.shape[-2:])} is larger than the mask {tuple(target.shape[-2:])}")


def make_task(plan: Plan) -> Task:
    """The :class:`Task` that ``plan`` names."""
    if plan.task == "classification":
        return ClassificationTask(int(plan.num_classes or 0))
    if plan.task == "binary":
        return BinaryTask()
    if plan.task == "regression":
        return RegressionTask(plan.target_mean, plan.target_std)
    if plan.task == "segmentation":
        return SegmentationTask(int(plan.num_classes or 0))
    raise ValueError(f"no training task {plan.task!r}; nnatlas train handles {', '.join(TRAINABLE_TASKS)}")


# --------------------------------------------------------------------------------------------
# Fitting a model to a data set
# --------------------------------------------------------------------------------------------


def default_dataset(model_name: str) -> str:
    """The data set ``nnatlas train MODEL`` uses without ``--data`` (all ship offline)."""
    c = nnatlas.card(model_name)
    task = c.task.lower()
    if "segmentation" in task:
        return "isbi2012-em"
    if "binary" in task:
        return "breast-cancer"
    if task == "regression":
        return "diabetes"
    return "digits"


def _config_fields(model_name: str) -> dict[str, Any]:
    """The model's config fields and their defaults, read off a model built on the meta device."""
    with torch.device("meta"):
        model = nnatlas.create(model_name)
    config = getattr(model, "config", None)
    if config is None or not dataclasses.is_dataclass(config):
        return {}
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


def _stats(x: Tensor, dims: Sequence[int]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    x = x.double()
    mean = x.mean(dim=tuple(dims))
    std = x.std(dim=tuple(dims)).clamp_min(1e-6)
    return tuple(mean.tolist()), tuple(std.tolist())


@dataclass
class Resolved:
    """A model fitted to a data set: the :class:`Plan` and the built model."""

    plan: Plan
    model: nn.Module


def _probe(model: nn.Module, x: Tensor) -> Any:
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model(x)
    finally:
        model.train(was)


def check_fit(model_name: str, data_name: str, data_task: str) -> None:
    """Raise ``ValueError`` (one line) when the model cannot train on a data set of this task.

    Needs only the model's card and the data set's task, so ``train`` calls it before any
    data is loaded or downloaded; :func:`resolve` checks shapes once the data is there.
    """
    card = nnatlas.card(model_name)
    where = f"model {model_name!r} on data set {data_name!r}"
    if data_task not in TRAINABLE_TASKS:
        raise ValueError(f"{where}: data set task {data_task!r} is not one nnatlas train handles ({', '.join(TRAINABLE_TASKS)})")
    if card.multi_input or card.input_dtype != "float" or not card.batched:
        raise ValueError(f"{where}: the model takes {card.input_shape} ({card.input_dtype}); nnatlas train feeds one float tensor per batch")
    if data_task in ("classification", "binary") and card.task.lower() == "regression":
        raise ValueError(f"{where}: {model_name} is a regression model (card task {card.task!r}); the data set is {data_task}")
    if ("segmentation" in card.task.lower()) != (data_task == "segmentation"):
        raise ValueError(f"{where}: the model does {card.task}; the data set is {data_task}")


def resolve(
    model_name: str,
    bundle: Any,
    *,
    image_size: int | None = None,
    model_args: Mapping[str, Any] | None = None,
    augment: bool = True,
) -> Resolved:
    """Fit ``model_name`` to ``bundle``: choose overrides and input size, build the model, check it.

    The model is built with the global torch RNG, so seed it first for reproducible weights.
    Raises ``ValueError`` (one line, naming model and data set) when they do not fit.
    """
    check_fit(model_name, bundle.name, bundle.task)
    card = nnatlas.card(model_name)
    where = f"model {model_name!r} on data set {bundle.name!r}"
    fields = _config_fields(model_name)
    overrides: dict[str, Any] = {}
    model_rank = len(card.input_shape)
    data_shape = tuple(bundle.input_shape)
    image_data = len(data_shape) in (2, 3)
    if image_size is not None and image_size < 1:
        raise ValueError(f"--image-size must be >= 1; got {image_size}")

    # The task, and the output width it needs.
    task = bundle.task
    num_classes = bundle.num_classes
    class_field = "num_classes" if "num_classes" in fields else ("out_features" if "out_features" in fields else None)
    if task == "binary" and class_field is not None and "binary" not in card.task.lower():
        task, num_classes = "classification", 2  # a softmax classifier on a two-class set
    if task in ("classification", "segmentation"):
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
        raise ValueError(f"{where}: the model takes inputs {card.input_shape}; nnatlas train handles images and vectors")

    target_mean, target_std = 0.0, 1.0
    if task == "regression":
        (tm,), (ts,) = _stats(y0.reshape(-1, 1), (0,))
        target_mean, target_std = tm, ts

    user = dict(model_args or {})
    unknown = sorted(set(user) - set(fields)) if fields else []
    if unknown:
        raise ValueError(f"--model-arg {unknown[0]}: {model_name}'s config has no such field; fields: {', '.join(sorted(fields))}")

    # The input size: the card's, a chosen one, or the smallest of SMALL_SIZES the model takes.
    def plan_for(s: tuple[int, int] | None) -> Plan:
        ov = {**overrides, **user}
        if kind == "image" and s is not None and fields.get("image_size") is not None and "image_size" not in user:
            ov["image_size"] = s[0]
        return Plan(
            model=model_name, data=bundle.name, task=task, kind=kind, overrides=ov, size=s, repeat=repeat,
            mean=mean, std=std, target_mean=target_mean, target_std=target_std,
            num_classes=num_classes if task in ("classification", "segmentation") else None,
            augment=(max(1, s[0] // 16) if s is not None else 2) if augment and kind == "image" and task == "classification" else 0,
        )

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
            try:
                out = _probe(model, plan.inputs(xb))
            except (ValueError, RuntimeError) as err:  # ShapeError, or a feature map shrunk to nothing
                errors.append(f"{s[0]}x{s[1]}: {str(err).splitlines()[0]}")
                continue
            make_task(plan).check_output(out, plan.targets(yb), where)
            return Resolved(plan, model)
        raise ValueError(f"{where}: no input size fits ({'; '.join(errors)[:400]})")
    plan = plan_for(size)
    model = nnatlas.create(model_name, **plan.overrides)
    out = _probe(model, plan.inputs(xb))
    make_task(plan).check_output(out, plan.targets(yb), where)
    return Resolved(plan, model)
