"""The sequence_classification task: metric plumbing on hand-made cases, padded names read to their own
last letter, row-by-row images, and a SIGKILLed run resumed bitwise."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import nnatlas
from nnatlas.data import DataBundle, load
from nnatlas.train.checkpoint import load_checkpoint
from nnatlas.train.tasks.sequence import SequenceClassificationTask, confusion_metrics
from kill_resume import assert_same_run, kill_after_first_checkpoint, subprocess_env

CPU = torch.device("cpu")


def test_confusion_metrics_on_a_hand_made_matrix() -> None:
    # 3 classes; rows true, columns predicted: class 0 4/5 right, class 1 1/2, class 2 never seen.
    confusion = torch.tensor([[4, 1, 0], [1, 1, 0], [0, 0, 0]], dtype=torch.float64)
    sums = torch.cat([torch.tensor([7.0, 5.0, 7.0], dtype=torch.float64), confusion.flatten()])
    metrics, matrix = confusion_metrics(sums, 3)
    assert metrics["loss"] == pytest.approx(1.0) and metrics["acc"] == pytest.approx(5 / 7)
    assert metrics["macro_acc"] == pytest.approx((4 / 5 + 1 / 2) / 2)  # the class without examples does not count
    assert torch.equal(matrix, confusion)


class _Fixed(nn.Module):
    """Returns the logits it was given, whatever the input (to score known predictions)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.logits[: len(x)]


def _names_bundle() -> DataBundle:
    """Four names over the alphabet 'abc' (codes 1..3, 0 pads), two languages."""
    codes = torch.tensor([[1, 2, 0, 0], [3, 0, 0, 0], [1, 1, 1, 2], [2, 3, 1, 0]])
    y = torch.tensor([0, 1, 1, 0])
    ds = TensorDataset(codes, y)
    return DataBundle(
        name="toy-names",
        task="sequence_classification",
        train=ds,
        test=ds,
        num_classes=2,
        input_shape=(4,),
        meta={"alphabet": "abc", "classes": ["A", "B"]},
    )


def test_sums_count_the_confusion_of_known_predictions() -> None:
    torch.manual_seed(0)
    task, _ = SequenceClassificationTask.fit("char_rnn", _names_bundle(), {}, {"hidden_size": 8})
    batch = task.batch("test", torch.arange(4), device=CPU)
    logits = torch.tensor([[2.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 0.0]])  # predicts 0, 0, 1, 0; truth 0, 1, 1, 0
    sums = task.sums(_Fixed(logits), batch)
    metrics = task.metrics(sums)
    assert metrics["acc"] == pytest.approx(3 / 4) and metrics["macro_acc"] == pytest.approx((2 / 2 + 1 / 2) / 2)
    assert task.confusion.tolist() == [[2.0, 0.0], [1.0, 1.0]]
    expected = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 1, 0]))
    assert metrics["loss"] == pytest.approx(expected.item(), rel=1e-6)


def test_names_are_padded_and_read_to_their_own_last_letter() -> None:
    torch.manual_seed(0)
    task, net = SequenceClassificationTask.fit("char_rnn", _names_bundle(), {}, {"hidden_size": 8})
    assert task.plan.overrides == {"n_letters": 4, "n_categories": 2, "hidden_size": 8}  # 3 letters + unknown
    batch = task.batch("train", torch.arange(4), device=CPU)
    x, lengths = batch["x"], batch["lengths"]
    assert x.shape == (4, 4, 4) and lengths.tolist() == [2, 1, 4, 3]
    assert x[1, 1:].abs().sum() == 0 and x[0, :2].sum() == 2  # zero vectors after the end, one-hot before
    net.eval()
    with torch.no_grad():
        padded = net(x, lengths)
        for i, n in enumerate(lengths.tolist()):  # each name alone, unpadded: the same output
            torch.testing.assert_close(
                padded[i], net(x[i : i + 1, :n])[0], rtol=1e-6, atol=1e-6
            )  # batch 1 vs 4: matmul rounding
    # The LSTM classifier takes lengths too: its output at each name's last step.
    lstm = nnatlas.create("lstm", input_size=4, num_classes=2, hidden_size=8, num_layers=2).eval()
    with torch.no_grad():
        out = lstm(x, lengths)
        for i, n in enumerate(lengths.tolist()):
            torch.testing.assert_close(out[i], lstm(x[i : i + 1, :n])[0], rtol=1e-5, atol=1e-6)  # float32, same kernel
    # Characters the training names never had map to the unknown slot.
    one_hot, n = task.encode(["ab", "az"])
    assert n.tolist() == [2, 2] and one_hot[1, 1].argmax() == 3


def test_images_are_read_row_by_row() -> None:
    torch.manual_seed(0)
    bundle = load("digits")
    task, net = SequenceClassificationTask.fit("lstm", bundle, {}, {"hidden_size": 8, "num_layers": 1})
    d = task.plan.details
    assert d["mode"] == "rows" and (d["height"], d["width"], d["features"]) == (8, 8, 8)
    assert task.plan.overrides["input_size"] == 8 and task.plan.overrides["num_classes"] == 10
    batch = task.batch("train", torch.arange(3), device=CPU)
    images = torch.stack([bundle.train[i][0] for i in range(3)])  # (3, 1, 8, 8)
    torch.testing.assert_close(batch["x"][:, 2], (images[:, 0, 2] - d["mean"]) / d["std"])  # step 2 is row 2
    assert net(batch["x"]).shape == (3, 10)


def test_sequence_run_killed_mid_run_and_resumed_equals_uninterrupted_run_bitwise(tmp_path: Path) -> None:
    """lstm on digits (row by row), dropout between layers: SIGKILL after a mid-run checkpoint, --resume, same bits."""
    args = [
        "train",
        "lstm",
        "--model-arg",
        "hidden_size=16",
        "--model-arg",
        "dropout=0.3",
        "--steps",
        "24",
        "--eval-every",
        "12",
        "--batch-size",
        "16",
        "--limit-test",
        "64",
        "--checkpoint-every",
        "4",
        "--seed",
        "3",
        "--no-report",
        "--no-progress",
    ]
    cmd = [sys.executable, "-m", "nnatlas", *args]
    env = subprocess_env()
    ref = subprocess.run([*cmd, "--out", str(tmp_path / "ref")], env=env, capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr

    killed = tmp_path / "killed"
    kill_after_first_checkpoint(cmd, killed, env)
    assert not (killed / "final.json").exists(), "the run finished before it was killed"
    assert 0 < load_checkpoint(killed, model_name="lstm").state["global_step"] < 24

    resumed = subprocess.run(
        [*cmd, "--out", str(killed), "--resume"], env=env, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    rows = assert_same_run(tmp_path / "ref", killed)
    assert {"test_acc", "test_macro_acc"} <= set(rows[-1])
    manifest = json.loads((killed / "artefacts" / "manifest.json").read_text())
    assert any(f.startswith("confusion-") and f.endswith(".png") for files in manifest.values() for f in files)


def test_balanced_draw_gives_every_class_the_same_chance() -> None:
    codes = torch.tensor([[1, 0]] * 18 + [[2, 0]] * 2)  # 18 of class 0, 2 of class 1
    y = torch.tensor([0] * 18 + [1] * 2)
    ds = TensorDataset(codes, y)
    bundle = DataBundle(
        name="toy",
        task="sequence_classification",
        train=ds,
        test=ds,
        num_classes=2,
        input_shape=(2,),
        meta={"alphabet": "ab", "classes": ["A", "B"]},
    )
    task, _ = SequenceClassificationTask.fit("char_rnn", bundle, {}, {"hidden_size": 4})
    assert task.balanced  # the default for names
    drawn = task.batch("train", torch.arange(2000), device=CPU, generator=torch.Generator().manual_seed(0))["y"]
    assert abs(drawn.float().mean().item() - 0.5) < 0.05  # about half from the class of 2 examples
    again = task.batch("train", torch.arange(2000), device=CPU, generator=torch.Generator().manual_seed(0))["y"]
    assert torch.equal(drawn, again)  # the step's generator decides
    plain = task.batch("test", torch.arange(20), device=CPU)["y"]
    assert torch.equal(plain, y)  # evaluation reads the split as it is
    off, _ = SequenceClassificationTask.fit("char_rnn", bundle, {"balanced": False}, {"hidden_size": 4})
    assert torch.equal(off.batch("train", torch.arange(20), device=CPU, generator=torch.Generator())["y"], y)
