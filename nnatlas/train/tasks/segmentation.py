"""The segmentation task: one label per pixel, trained on random tiles, scored on whole images.

Ronneberger et al. (2015) train U-Net on tiles of the 512x512 ISBI 2012 slices and predict whole
slices with the overlap-tile strategy; this task does the same for any model that maps images
``(B, C, H, W)`` to per-pixel logits ``(B, L, H - 2 m, W - 2 m)`` (``m`` = 0 for padded
convolutions, 92 for the paper's valid ones):

- training batches (``--crop`` side ``c``): for each slice, an output window of side
  ``o = c - 2 m`` at a random place inside the slice, its input window ``m`` pixels wider on each
  side, the slice mirrored where the input window leaves it (the paper's "missing context is
  extrapolated by mirroring"); then a random multiple of 90 degrees and a random flip, and with
  ``--elastic S`` the paper's elastic deformation (a 3 x 3 grid of displacements drawn from
  N(0, S^2) pixels, interpolated bicubically, image bilinear and mask nearest). Every draw comes
  from the trainer's per-step generator, so a killed run resumes bitwise. Image and mask go
  through the same index arithmetic, so they stay aligned (tests/train/test_task_segmentation.py).
- evaluation: each held-out image at full size; a model with a margin is run on input tiles of
  the mirrored image whose outputs tile the image (the overlap-tile strategy; the tile is the
  smallest the model takes whose output covers the whole image, 700 -> 516 pixels for unet_2015
  on 512x512 slices), a padded model on the whole image at once.

Metrics (float64 sums, so data-parallel ranks combine them with one ``all_reduce``):

- ``loss``: per-pixel cross entropy (without the paper's border weight map);
- ``pixel_error``: the share of pixels misclassified (the ISBI 2012 "pixel error");
- ``fg_iou``: intersection over union of the foreground class (the data set names it in
  ``meta["foreground"]``; ISBI 2012: the membranes, class 0), ``miou`` the mean over classes;
- ``rand_error``: for two-class data, the adapted Rand error
  (``skimage.metrics.adapted_rand_error``, SNEMI3D's definition) between the 4-connected
  components of the true and of the predicted background class (ISBI: the cell interiors), per
  image, averaged over the images. The true foreground (membrane) pixels are ignored, as in
  scikit-image's ``ignore_labels=(0,)``; the predicted components are grown over the predicted
  membrane to meet each other (``skimage.segmentation.expand_labels``), the "border thinning" of
  the ISBI 2012 evaluation, so that a membrane predicted a little thicker than drawn is not scored
  as one large merged segment.

Artefacts: at each evaluation, a PNG of image / truth / prediction of the first held-out image.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import nnatlas
from nnatlas.train import checkpoint as ckpt
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
)
from nnatlas.train.tasks.vision import gather

__all__ = [
    "DEFAULT_CROP",
    "SegmentationPlan",
    "SegmentationTask",
    "augment",
    "elastic_fields",
    "label_regions",
    "rand_error",
    "reflect_index",
    "segmentation_sums",
]

DEFAULT_CROP = 256  # the training tile of models that keep the input size (U-Net with padded convolutions)
EVAL_PIXELS = 1 << 20  # input pixels per forward pass when a margin model predicts tiles of whole images
EVAL_TILE_SEARCH = 64  # input sides tried for the evaluation tile of a margin model
NORM_SAMPLES = 64  # images the normalisation statistics come from


SEGMENTATION_OPTIONS = {
    "crop": Option(
        int,
        None,
        f"training tile side, the model's input (default: {DEFAULT_CROP} for models that keep the size; for models whose "
        "output is smaller, as unet_2015's valid convolutions, the card's input side, 572)",
        check=positive_int,
        expect="an integer >= 1",
    ),
    "elastic": Option(
        float,
        0.0,
        "standard deviation in pixels of the elastic deformation of training tiles (the paper's 10; 0: off)",
        check=lambda v: math.isfinite(v) and v >= 0,
        expect="a number >= 0",
    ),
}


# --------------------------------------------------------------------------------------------
# Index arithmetic shared by images and masks (so they stay aligned)
# --------------------------------------------------------------------------------------------


def reflect_index(start: int, length: int, size: int) -> Tensor:
    """Indices ``start .. start + length - 1`` into an axis of ``size``, mirrored at its ends
    without repeating the edge (numpy's ``"reflect"``: ... 2 1 | 0 1 2 ... n-1 | n-2 n-3 ...)."""
    j = torch.arange(start, start + length)
    if size == 1:
        return torch.zeros_like(j)
    period = 2 * (size - 1)
    j = j.remainder(period)  # the mirrored axis repeats every 2 (n - 1)
    return torch.where(j < size, j, period - j)


def _window(a: Tensor, top: int, left: int, side: int) -> Tensor:
    """The ``side`` x ``side`` window of ``a`` (..., H, W) at (top, left), mirrored outside ``a``."""
    rows = reflect_index(top, side, a.shape[-2]).to(a.device)
    cols = reflect_index(left, side, a.shape[-1]).to(a.device)
    return a[..., rows[:, None], cols[None, :]]


def elastic_fields(n: int, side: int, sigma: float, generator: torch.Generator) -> Tensor:
    """``n`` smooth displacement fields (n, side, side, 2) in pixels: a 3 x 3 grid of N(0, sigma^2)
    displacements (the paper's "random displacement vectors on a coarse 3 by 3 grid"), interpolated bicubically."""
    coarse = torch.randn(n, 2, 3, 3, generator=generator) * sigma  # (n, 2, 3, 3)
    dense = F.interpolate(coarse, size=(side, side), mode="bicubic", align_corners=True)  # (n, 2, side, side)
    return dense.permute(0, 2, 3, 1)  # (n, side, side, 2): (dx, dy)


def _deform(image: Tensor, mask: Tensor, field: Tensor) -> tuple[Tensor, Tensor]:
    """``image`` (C, S, S) bilinear and ``mask`` (S, S) nearest, sampled at the pixel grid plus ``field`` (S, S, 2)."""
    S = image.shape[-1]
    base = torch.linspace(-1.0, 1.0, S)
    gy, gx = torch.meshgrid(base, base, indexing="ij")
    grid = torch.stack([gx, gy], dim=-1) + field * (2.0 / max(1, S - 1))  # (S, S, 2) in grid_sample's [-1, 1]
    grid = grid.unsqueeze(0).to(image)
    warped = F.grid_sample(image.unsqueeze(0), grid, mode="bilinear", padding_mode="reflection", align_corners=True)[0]
    m = F.grid_sample(mask[None, None].float(), grid, mode="nearest", padding_mode="reflection", align_corners=True)
    return warped, m[0, 0].long()


def augment(
    images: Tensor, masks: Tensor, crop: int, margin: int, generator: torch.Generator, elastic: float = 0.0
) -> tuple[Tensor, Tensor]:
    """Random training tiles of ``images`` (B, C, H, W) and ``masks`` (B, H, W), drawn from ``generator``.

    Returns input tiles (B, C, crop, crop) and their target windows (B, o, o), o = crop - 2 margin:
    the output window lies inside the image; the input window around it is mirrored where it leaves
    the image. Then a rotation by k x 90 degrees, a left-right flip, and (``elastic`` > 0) a deformation,
    each the same for the tile and its mask. The draws are made in one fixed order, batch first.
    """
    B, _, H, W = images.shape
    o = crop - 2 * margin
    if o < 1 or o > min(H, W):
        raise ValueError(
            f"segmentation: a {crop}-pixel tile gives a {o}-pixel output window; it must be in 1..{min(H, W)} for {H}x{W} images"
        )
    tops = torch.randint(0, H - o + 1, (B,), generator=generator).tolist()
    lefts = torch.randint(0, W - o + 1, (B,), generator=generator).tolist()
    turns = torch.randint(0, 4, (B,), generator=generator).tolist()
    flips = torch.randint(0, 2, (B,), generator=generator).tolist()
    fields = elastic_fields(B, crop, elastic, generator) if elastic > 0 else None
    xs, ys = [], []
    for i in range(B):
        top, left = tops[i] - margin, lefts[i] - margin  # the input window, margin pixels around the output window
        x = _window(images[i], top, left, crop)  # (C, crop, crop)
        y = _window(masks[i], top, left, crop)  # (crop, crop): the mask of the whole input window, cut below
        x, y = torch.rot90(x, turns[i], dims=(-2, -1)), torch.rot90(y, turns[i], dims=(-2, -1))
        if flips[i]:
            x, y = x.flip(-1), y.flip(-1)
        if fields is not None:
            x, y = _deform(x, y, fields[i])
        xs.append(x)
        ys.append(y[margin : margin + o, margin : margin + o])  # (o, o): the centre the model predicts
    return torch.stack(xs), torch.stack(ys)


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


def label_regions(region: np.ndarray) -> np.ndarray:
    """The 4-connected components of the True pixels of ``region`` (H, W): labels 1..n, 0 elsewhere."""
    from skimage.measure import label

    return label(region, connectivity=1)


def rand_error(pred: np.ndarray, truth: np.ndarray, background: int) -> float:
    """The adapted Rand error between the regions of class ``background`` (the cell interiors) in
    ``pred`` and ``truth`` (H, W) class maps; see the module docstring for the labelling."""
    from skimage.metrics import adapted_rand_error
    from skimage.segmentation import expand_labels

    true_labels = label_regions(truth == background)  # membrane 0: ignored by adapted_rand_error
    pred_labels = expand_labels(label_regions(pred == background), distance=max(pred.shape))  # grown over the membrane
    if true_labels.max() == 0:  # no true region: no pair to score
        return math.nan
    return float(adapted_rand_error(true_labels, pred_labels)[0])


def segmentation_sums(logits: Tensor, target: Tensor, num_classes: int, *, background: int | None = None) -> Tensor:
    """Metric sums of logits (B, L, H, W) against target (B, H, W): float64
    ``[loss, wrong, pixels, rand_error sum, images scored, intersection x L, union x L]``."""
    K = num_classes
    logits = logits.float()
    loss = F.cross_entropy(logits, target, reduction="sum").double()
    pred = logits.argmax(1)  # (B, H, W)
    wrong = (pred != target).sum().double()
    classes = torch.arange(K, device=logits.device).view(K, 1)
    p = pred.reshape(1, -1) == classes  # (K, N)
    t = target.reshape(1, -1) == classes
    inter = (p & t).sum(1).double()
    union = (p | t).sum(1).double()
    rand_sum, rand_n = 0.0, 0
    if background is not None:
        for pm, tm in zip(pred.cpu().numpy(), target.cpu().numpy()):
            r = rand_error(pm, tm, background)
            if not math.isnan(r):
                rand_sum, rand_n = rand_sum + r, rand_n + 1
    counts = loss.new_tensor([float(target.numel()), rand_sum, float(rand_n)])  # float64, on the logits' device
    return torch.cat([loss.view(1), wrong.view(1), counts, inter, union])


# --------------------------------------------------------------------------------------------
# The task
# --------------------------------------------------------------------------------------------


class SegmentationPlan:
    """The plan's ``details``: normalisation, classes, tile and margin (plain data)."""

    def __init__(self, details: Mapping[str, Any]) -> None:
        self.mean: list[float] = list(details["mean"])
        self.std: list[float] = list(details["std"])
        self.num_classes: int = int(details["num_classes"])
        self.classes: list[str] = list(details["classes"])
        self.foreground: int = int(details["foreground"])
        self.crop: int = int(details["crop"])
        self.margin: int = int(details["margin"])
        self.eval_tile: int = int(details["eval_tile"])  # the input side of evaluation tiles (margin models)
        self.elastic: float = float(details["elastic"])

    @property
    def out(self) -> int:
        """The output side of a training tile."""
        return self.crop - 2 * self.margin

    @property
    def background(self) -> int | None:
        """The class whose connected regions the Rand error compares (two-class data only)."""
        return 1 - self.foreground if self.num_classes == 2 else None


@register_task
class SegmentationTask(Task):
    kind, best, mode = "segmentation", "test_pixel_error", "min"
    data_kinds = ("segmentation",)
    options = SEGMENTATION_OPTIONS

    def __init__(self, plan: Plan, bundle: Any | None, options: Mapping[str, Any]) -> None:
        super().__init__(plan, bundle, options)
        self.seg = SegmentationPlan(plan.details)
        self.num_classes = self.seg.num_classes
        self.num_sums = 5 + 2 * self.num_classes

    # -- fitting -------------------------------------------------------------------------------

    @classmethod
    def fit(
        cls, model_name: str, bundle: Any, options: Mapping[str, Any], model_args: Mapping[str, Any]
    ) -> tuple[Task, nn.Module]:
        card = nnatlas.card(model_name)
        where = f"model {model_name!r} on data set {bundle.name!r}"
        opts = {name: options.get(name, opt.default) for name, opt in cls.options.items()}
        fields = config_fields(model_name)
        check_model_args(model_name, fields, model_args)
        if len(card.input_shape) != 3:
            raise ValueError(
                f"{where}: the segmentation task takes models of images (C, H, W); the model takes {card.input_shape}"
            )
        x0, y0 = gather(bundle.train, torch.arange(min(NORM_SAMPLES, len(bundle.train))))
        if x0.dim() != 4 or y0.dim() != 3 or x0.shape[-2:] != y0.shape[-2:]:
            raise ValueError(
                f"{where}: expected images (N, C, H, W) and masks (N, H, W); got {tuple(x0.shape)} and {tuple(y0.shape)}"
            )
        C, H, W = x0.shape[1:]
        K = int(bundle.num_classes)
        overrides: dict[str, Any] = {}
        for field_name, value in (("in_channels", C), ("num_classes", K)):
            if field_name in fields:
                overrides[field_name] = value
        overrides.update(model_args)
        model = nnatlas.create(model_name, **overrides)
        with torch.device("meta"):  # shapes only: the sizes a model takes are tried at no cost
            shape_model = nnatlas.create(model_name, **overrides)

        # The margin: how much narrower the output is than the input, read off the smallest input the card names.
        side = min(card.small_input_shape or card.input_shape, card.input_shape)[1]
        margin = cls._margin(shape_model, C, side, K, where)
        crop = opts["crop"] or (DEFAULT_CROP if margin == 0 else card.input_shape[1])
        if crop != side and cls._margin(shape_model, C, crop, K, where) != margin:
            raise ValueError(
                f"{where}: the model's margin differs between {side}- and {crop}-pixel inputs; it cannot be tiled"
            )
        if not 1 <= crop - 2 * margin <= min(H, W):
            raise ValueError(
                f"{where}: --crop {crop} gives {crop - 2 * margin}-pixel outputs (margin {margin}); they must fit the {H}x{W} images"
            )
        eval_tile = 0 if margin == 0 else cls._eval_tile(shape_model, C, K, max(H, W), margin, crop)
        x = x0.double()
        mean = x.mean(dim=(0, 2, 3)).tolist()
        std = x.std(dim=(0, 2, 3)).clamp_min(1e-6).tolist()
        classes = list(bundle.meta.get("classes", [str(k) for k in range(K)]))
        foreground = int(bundle.meta.get("foreground", 1 if K == 2 else 0))
        details = {
            "mean": mean,
            "std": std,
            "num_classes": K,
            "classes": classes,
            "foreground": foreground,
            "crop": int(crop),
            "margin": margin,
            "eval_tile": eval_tile,
            "elastic": float(opts["elastic"]),
        }
        plan = Plan(model=model_name, data=bundle.name, task=cls.kind, overrides=overrides, details=details)
        return cls(plan, bundle, options), model

    @staticmethod
    def _margin(model: nn.Module, channels: int, side: int, num_classes: int, where: str) -> int:
        """(input side - output side) / 2 for a ``side``-pixel input; ``ValueError`` when the model refuses it."""
        try:
            out = first(probe(model, torch.zeros(1, channels, side, side, device="meta")))
        except (ValueError, RuntimeError) as err:  # ShapeError: a side the model does not take
            raise ValueError(
                f"{where}: the model does not take {side}x{side} tiles (--crop): {str(err).splitlines()[0]}"
            ) from None
        if out.dim() != 4 or out.shape[1] != num_classes:
            raise ValueError(
                f"{where}: expected per-pixel logits (B, {num_classes}, H, W); the model gives {tuple(out.shape)}"
            )
        h, w = out.shape[-2:]
        if h != w or (side - h) % 2 or h > side:
            raise ValueError(
                f"{where}: a {side}x{side} input gives {h}x{w} logits; expected a centred square no larger than the input"
            )
        return (side - h) // 2

    @staticmethod
    def _eval_tile(model: nn.Module, channels: int, num_classes: int, image: int, margin: int, crop: int) -> int:
        """The smallest input side whose output covers a whole ``image``-pixel side (the image mirrored by
        ``margin`` and a little more), among the next EVAL_TILE_SEARCH sides; else the training tile."""
        for side in range(image + 2 * margin, image + 2 * margin + EVAL_TILE_SEARCH):
            try:
                out = first(probe(model, torch.zeros(1, channels, side, side, device="meta")))
            except (ValueError, RuntimeError):
                continue
            if tuple(out.shape[-2:]) == (side - 2 * margin,) * 2:
                return side
        return crop

    # -- data ----------------------------------------------------------------------------------

    def normalise(self, x: Tensor) -> Tensor:
        mean = torch.tensor(self.seg.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.seg.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std

    def batch(
        self, split: str, indices: Tensor, *, device: torch.device, generator: torch.Generator | None = None
    ) -> Batch:
        """Training (``generator`` given): random tiles (B, C, crop, crop) and target windows (B, o, o);
        otherwise whole images (B, C, H, W) and masks (B, H, W)."""
        x, y = gather(getattr(self.bundle, split), indices)
        x, y = x.float(), y.long()
        if generator is not None:
            x, y = augment(x, y, self.seg.crop, self.seg.margin, generator, self.seg.elastic)
        x = self.normalise(x.to(device, non_blocking=True))
        return {"x": x, "y": y.to(device, non_blocking=True)}

    def report_input(self, device: torch.device) -> Any:
        """A training tile's shape: the whole image may be a size the model does not take."""
        b = self.batch(
            "train", torch.arange(min(2, self.size("train"))), device=device, generator=torch.Generator().manual_seed(0)
        )
        return b["x"]

    # -- prediction ----------------------------------------------------------------------------

    def predict(self, model: nn.Module, x: Tensor) -> Tensor:
        """Logits (B, L, H, W) of whole normalised images ``x`` (B, C, H, W).

        A model with a margin runs on tiles of the mirrored image whose outputs tile it (the paper's
        overlap-tile strategy, Figure 2), as large as covers the image in one tile where the model takes
        that size (700 -> 516 for unet_2015 on 512x512 slices); a padded model on the whole image.
        """
        m = self.seg.margin
        if m == 0:
            return first(model(x)).float()
        c = self.seg.eval_tile
        o = c - 2 * m
        B, _, H, W = x.shape
        ny, nx = -(-H // o), -(-W // o)
        padded = _window(x, -m, -m, max(ny, nx) * o + 2 * m)  # (B, C, P, P): the image mirrored by m and more
        corners = [(ty * o, tx * o) for ty in range(ny) for tx in range(nx)]
        tiles = torch.stack([padded[:, :, t : t + c, s : s + c] for t, s in corners], 1).flatten(0, 1)  # (B*T, C, c, c)
        chunk = max(1, EVAL_PIXELS // (c * c))
        outs = torch.cat([first(model(part)).float() for part in tiles.split(chunk)])  # (B*T, L, o, o)
        outs = outs.view(B, len(corners), -1, o, o)
        logits = outs.new_empty(B, outs.shape[2], ny * o, nx * o)
        for k, (t, s) in enumerate(corners):
            logits[:, :, t : t + o, s : s + o] = outs[:, k]
        return logits[:, :, :H, :W]

    # -- loss and metrics ------------------------------------------------------------------------

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        return F.cross_entropy(first(model(batch["x"])).float(), batch["y"])

    def sums(self, model: nn.Module, batch: Batch) -> Tensor:
        return segmentation_sums(
            self.predict(model, batch["x"]), batch["y"], self.num_classes, background=self.seg.background
        )

    def metrics(self, sums: Tensor) -> dict[str, float]:
        s = sums.tolist()
        loss, wrong, n, rand_sum, rand_n = s[:5]
        K = self.num_classes
        inter, union = s[5 : 5 + K], s[5 + K :]
        ious = [i / u for i, u in zip(inter, union) if u > 0]
        fg = self.seg.foreground
        out = {
            "loss": loss / n,
            "pixel_error": wrong / n,
            "fg_iou": inter[fg] / union[fg] if union[fg] > 0 else math.nan,
            "miou": sum(ious) / len(ious) if ious else math.nan,
        }
        if self.seg.background is not None:
            out["rand_error"] = rand_sum / rand_n if rand_n else math.nan
        return out

    # -- artefacts and inference -------------------------------------------------------------------

    def artefacts(self, model: nn.Module, folder: Path, tag: str) -> list[Path]:
        if self.bundle is None or self.size("test") == 0:
            return []
        device = next(model.parameters()).device
        image, truth = gather(self.bundle.test, torch.tensor([0]))
        with torch.no_grad():
            pred = self.predict(model, self.normalise(image.float().to(device))).argmax(1).cpu()
        path = folder / f"{tag}-test0.png"
        save_panels(
            path,
            image[0],
            truth[0],
            pred[0],
            self.seg,
            f"{self.plan.model} on {self.plan.data}, held-out image 0 ({tag})",
        )
        return [path]

    def inference(self) -> dict[str, Any]:
        return {
            "mean": self.seg.mean,
            "std": self.seg.std,
            "classes": self.seg.classes,
            "foreground": self.seg.foreground,
            "tile": self.seg.crop,
            "eval_tile": self.seg.eval_tile,
            "margin": self.seg.margin,
        }


def save_panels(path: Path, image: Tensor, truth: Tensor, pred: Tensor, seg: SegmentationPlan, title: str) -> Path:
    """A PNG of image (C, H, W) in [0, 1] / true classes (H, W) / predicted classes (H, W), the errors in red."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fg = seg.foreground
    fig = Figure(figsize=(9.6, 3.6), dpi=80)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    img = image.float().clamp(0, 1).cpu().numpy()
    truth, pred = truth.cpu().numpy(), pred.cpu().numpy()
    wrong = float((pred != truth).mean())
    errors = np.zeros((*pred.shape, 4), dtype=np.float32)
    errors[pred != truth] = (1.0, 0.0, 0.0, 0.55)  # misclassified pixels in translucent red
    panels = [
        ("image", img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0), None),
        (f"truth ({seg.classes[fg]} black)", (truth != fg).astype(np.float32), None),
        (f"prediction: pixel error {wrong:.4f} (red)", (pred != fg).astype(np.float32), errors),
    ]
    for ax, (name, picture, overlay) in zip(axes, panels):
        ax.imshow(picture, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        if overlay is not None:
            ax.imshow(overlay, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.set_axis_off()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    ckpt.atomic_write_bytes(path, buf.getvalue())
    return path
