"""The segmentation task: pixel error and IoU on hand-drawn masks, the adapted Rand error against
scikit-image's on hand-labelled segmentations, training tiles that keep image and mask aligned,
the overlap-tile prediction of a model with a margin, and SIGKILL + --resume bitwise."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from kill_resume import assert_same_run, kill_after_first_checkpoint, subprocess_env
from skimage.metrics import adapted_rand_error
from torch import nn
from torch.utils.data import TensorDataset

from nnatlas.cli import main
from nnatlas.data import DataBundle
from nnatlas.train.checkpoint import load_checkpoint
from nnatlas.train.tasks.base import Plan
from nnatlas.train.tasks.segmentation import SegmentationTask, augment, rand_error, reflect_index

CPU = torch.device("cpu")


def _task(
    num_classes: int = 2, foreground: int = 0, margin: int = 0, crop: int = 8, eval_tile: int = 0
) -> SegmentationTask:
    details = {
        "mean": [0.0],
        "std": [1.0],
        "num_classes": num_classes,
        "classes": [str(k) for k in range(num_classes)],
        "foreground": foreground,
        "crop": crop,
        "margin": margin,
        "eval_tile": eval_tile,
        "elastic": 0.0,
    }
    return SegmentationTask(
        Plan(model="unet", data="hand-made", task="segmentation", overrides={}, details=details), None, {}
    )


class _Fixed(nn.Module):
    """Returns one-hot logits of a fixed class map (B, H, W), whatever the input."""

    def __init__(self, pred: torch.Tensor, num_classes: int) -> None:
        super().__init__()
        self.logits = 10.0 * F.one_hot(pred, num_classes).permute(0, 3, 1, 2).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits


def test_pixel_error_and_iou_of_hand_drawn_masks() -> None:
    # fmt: off
    truth = torch.tensor([[0, 0, 1, 1],
                          [0, 0, 1, 1],
                          [1, 1, 1, 1],
                          [1, 1, 1, 1]])
    pred = torch.tensor([[0, 1, 1, 1],
                         [0, 0, 1, 1],
                         [1, 1, 1, 0],
                         [1, 1, 1, 1]])
    # fmt: on
    task = _task(foreground=0)
    m = task.metrics(task.sums(_Fixed(pred[None], 2), {"x": torch.zeros(1, 1, 4, 4), "y": truth[None]}))
    assert m["pixel_error"] == pytest.approx(2 / 16)  # (0, 1) and (2, 3) are wrong
    assert m["fg_iou"] == pytest.approx(3 / 5)  # class 0: 4 true, 4 predicted, 3 shared
    assert m["miou"] == pytest.approx((3 / 5 + 11 / 13) / 2)  # class 1: 12 true, 12 predicted, 11 shared
    # the foreground the data set names is the one scored: class 1 here
    m1 = _task(foreground=1).metrics(task.sums(_Fixed(pred[None], 2), {"x": torch.zeros(1, 1, 4, 4), "y": truth[None]}))
    assert m1["fg_iou"] == pytest.approx(11 / 13) and m1["pixel_error"] == m["pixel_error"]


# A 6 x 6 field, membrane (0) in column 2: two true cells.
TRUTH = np.ones((6, 6), dtype=np.int64)
TRUTH[:, 2] = 0
TRUE_LABELS = np.zeros((6, 6), dtype=np.int64)  # by hand: left cell 1, right cell 2, membrane 0 (ignored)
TRUE_LABELS[:, :2], TRUE_LABELS[:, 3:] = 1, 2


def test_rand_error_of_a_split_equals_scikit_image() -> None:
    # The prediction splits the right cell with a two-pixel-thick membrane (rows 3-4): thinned, row 3 goes
    # to the upper part (one pixel away) and row 4 to the lower part.
    pred = TRUTH.copy()
    pred[3:5, 3:] = 0
    by_hand = np.zeros((6, 6), dtype=np.int64)
    by_hand[:, :3], by_hand[:4, 3:], by_hand[4:, 3:] = 1, 2, 3  # column 2 is ignored: any label
    want = adapted_rand_error(TRUE_LABELS, by_hand)[0]
    assert 0.1 < want < 0.9
    assert rand_error(pred, TRUTH, background=1) == pytest.approx(want, abs=1e-12)


def test_rand_error_of_a_merge_and_of_a_perfect_prediction() -> None:
    merged = np.ones((6, 6), dtype=np.int64)  # no membrane predicted: one region
    assert rand_error(merged, TRUTH, background=1) == pytest.approx(
        adapted_rand_error(TRUE_LABELS, np.ones_like(TRUE_LABELS))[0], abs=1e-12
    )
    assert rand_error(merged, TRUTH, background=1) > 0.3
    assert rand_error(TRUTH.copy(), TRUTH, background=1) == pytest.approx(0.0, abs=1e-12)


def test_task_rand_error_is_the_mean_over_images() -> None:
    split, merged = TRUTH.copy(), np.ones((6, 6), dtype=np.int64)
    split[3:5, 3:] = 0
    pred = torch.from_numpy(np.stack([split, merged]))
    truth = torch.from_numpy(np.stack([TRUTH, TRUTH]))
    task = _task(foreground=0)
    m = task.metrics(task.sums(_Fixed(pred, 2), {"x": torch.zeros(2, 1, 6, 6), "y": truth}))
    want = (rand_error(split, TRUTH, 1) + rand_error(merged, TRUTH, 1)) / 2
    assert m["rand_error"] == pytest.approx(want, abs=1e-12)
    assert "rand_error" not in _task(num_classes=3).metrics(
        torch.zeros(5 + 6, dtype=torch.float64) + 1
    )  # two classes only


@pytest.mark.parametrize("size", [1, 2, 5])
def test_reflect_index_mirrors_like_numpy(size: int) -> None:
    pad = 7
    want = np.pad(np.arange(size), pad, mode="reflect" if size > 1 else "edge")
    assert reflect_index(-pad, size + 2 * pad, size).tolist() == want.tolist()


@pytest.mark.parametrize(("crop", "margin"), [(8, 0), (12, 3)])
def test_training_tiles_keep_image_and_mask_aligned(crop: int, margin: int) -> None:
    gen = torch.Generator().manual_seed(0)
    masks = torch.randint(0, 50, (3, 10, 13), generator=gen)  # every pixel its own label, near enough
    images = torch.stack([masks.float(), -masks.float()], 1)  # (B, 2, H, W): the image carries its mask
    x, y = augment(images, masks, crop, margin, torch.Generator().manual_seed(1))
    o = crop - 2 * margin
    assert x.shape == (3, 2, crop, crop) and y.shape == (3, o, o)
    centre = x[:, :, margin : margin + o, margin : margin + o]
    assert torch.equal(centre[:, 0], y.float()) and torch.equal(centre[:, 1], -y.float())
    again = augment(images, masks, crop, margin, torch.Generator().manual_seed(1))
    assert torch.equal(again[0], x) and torch.equal(again[1], y)  # the draws come from the generator only
    tiles = {
        augment(images, masks, crop, margin, torch.Generator().manual_seed(s))[1][0].sum().item() for s in range(8)
    }
    assert len(tiles) > 1  # and they vary with it


def test_every_rotation_and_flip_is_drawn_and_each_is_a_true_view_of_the_slice() -> None:
    mask = torch.arange(16).view(1, 4, 4)
    views = set()
    for s in range(64):
        _, y = augment(mask[:, None].float(), mask, 4, 0, torch.Generator().manual_seed(s))
        views.add(tuple(y[0].flatten().tolist()))
    # the 8 symmetries of the square of the whole (4 x 4) slice
    want = set()
    for k in range(4):
        for flip in (False, True):
            v = torch.rot90(mask[0], k)
            want.add(tuple((v.flip(-1) if flip else v).flatten().tolist()))
    assert views == want


def test_elastic_deformation_moves_image_and_mask_together() -> None:
    blocks = (
        (torch.arange(4).view(2, 2) % 3 == 0).long().repeat_interleave(16, 0).repeat_interleave(16, 1)
    )  # 32 x 32 blocks
    masks = blocks[None].repeat(2, 1, 1)
    x, y = augment(masks[:, None].float(), masks, 32, 0, torch.Generator().manual_seed(3), elastic=4.0)
    _, y0 = augment(masks[:, None].float(), masks, 32, 0, torch.Generator().manual_seed(3))
    assert not torch.equal(y, y0)  # deformed (the same crop, turn and flip, drawn first)
    agree = (
        ((x[:, 0] > 0.5).long() == y).float().mean().item()
    )  # bilinear image vs nearest mask: only edge pixels differ
    assert agree > 0.95


def test_overlap_tile_prediction_equals_the_model_on_the_mirrored_image() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 2, kernel_size=5)  # valid: margin 2
    task = _task(margin=2, crop=9, eval_tile=9)  # 5 x 5 output tiles
    x = torch.randn(2, 1, 12, 11)
    mirrored = torch.from_numpy(np.pad(x.numpy(), ((0, 0), (0, 0), (2, 2), (2, 2)), mode="reflect"))
    with torch.no_grad():
        assert torch.allclose(task.predict(conv, x), conv(mirrored), atol=1e-6)  # float32 sums in another order


def test_fit_reads_the_margin_and_refuses_a_tile_the_model_cannot_take() -> None:
    images, masks = torch.rand(3, 1, 200, 200), torch.randint(0, 2, (3, 200, 200))
    bundle = DataBundle(
        name="toy",
        task="segmentation",
        train=TensorDataset(images, masks),
        test=TensorDataset(images, masks),
        num_classes=2,
        input_shape=(1, 200, 200),
        meta={"classes": ["membrane", "cell"], "foreground": 0},
    )
    task, _ = SegmentationTask.fit("unet_2015", bundle, {"crop": 204}, {"base_channels": 2})
    d = task.plan.details
    assert (d["margin"], d["crop"], d["eval_tile"]) == (92, 204, 396)  # 396 -> 212 covers 200 in one tile
    assert task.plan.overrides["in_channels"] == 1
    b = task.batch("train", torch.arange(2), device=CPU, generator=torch.Generator().manual_seed(0))
    assert b["x"].shape == (2, 1, 204, 204) and b["y"].shape == (2, 20, 20)
    with pytest.raises(ValueError, match="does not take 200x200 tiles"):
        SegmentationTask.fit("unet_2015", bundle, {"crop": 200}, {"base_channels": 2})
    task, _ = SegmentationTask.fit("unet", bundle, {"crop": 32}, {"base_channels": 2})
    assert (task.plan.details["margin"], task.plan.details["eval_tile"]) == (0, 0)


def test_killed_mid_run_and_resumed_equals_uninterrupted_run_bitwise(tmp_path: Path, shared_data: Path) -> None:
    """The tiles, turns, flips and elastic fields come from the trainer's per-step generator."""
    args = [
        "train",
        "unet",
        "--data",
        "isbi2012",
        "--data-dir",
        str(shared_data),
        "--model-arg",
        "base_channels=4",
        "--crop",
        "48",
        "--elastic",
        "5",
        "--steps",
        "12",
        "--batch-size",
        "2",
        "--limit-test",
        "1",
        "--checkpoint-every",
        "3",
        "--seed",
        "1",
        "--no-report",
        "--no-progress",
    ]
    cmd = [sys.executable, "-m", "nnatlas", *args]
    env = subprocess_env()
    assert main([*args, "--out", str(tmp_path / "ref")]) == 0

    killed = tmp_path / "killed"
    kill_after_first_checkpoint(cmd, killed, env)
    assert not (killed / "final.json").exists(), "the run finished before it was killed"
    assert 0 < load_checkpoint(killed, model_name="unet").state["global_step"] < 12  # killed mid-run
    resumed = subprocess.run(
        [*cmd, "--out", str(killed), "--resume"], check=False, env=env, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming unet" in resumed.stderr
    rows = assert_same_run(tmp_path / "ref", killed)
    row = rows[-1]
    assert 0 <= row["test_pixel_error"] <= 1 and math.isfinite(row["test_rand_error"])
    manifest = json.loads((killed / "artefacts" / "manifest.json").read_text())
    assert manifest == {"step-00000012": ["step-00000012-test0.png"]}
