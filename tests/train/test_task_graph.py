"""The node_classification task: the karate club loader, metric plumbing on hand-made logits, Kipf &
Welling's parameter groups, a karate run that learns, ``--seeds``, and SIGKILL + --resume bitwise."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nnatlas
from nnatlas import data
from nnatlas.cli import main
from nnatlas.train import TrainConfig, train
from nnatlas.train.checkpoint import load_checkpoint
from nnatlas.train.tasks import task_class
from nnatlas.train.tasks.graph import IGNORE_INDEX, NodeClassificationTask, feature_layout
from kill_resume import assert_same_run, kill_after_first_checkpoint, subprocess_env

CPU = torch.device("cpu")


def test_karate_club_is_zacharys_graph_with_two_labelled_leaders() -> None:
    b = data.load("karate")
    m = b.meta
    assert b.task == "node_classification" and b.num_classes == 2 and b.input_shape == (34, 34)
    assert m["edge_index"].shape == (2, 156)  # 78 friendships, both directions
    src, dst = m["edge_index"]
    assert set(zip(src.tolist(), dst.tolist())) == set(zip(dst.tolist(), src.tolist()))  # undirected
    masks = torch.stack([m["train_mask"], m["val_mask"], m["test_mask"]])
    assert torch.equal(masks.sum(0), torch.ones(34, dtype=torch.long))  # every node in exactly one split
    assert m["train_mask"].nonzero().flatten().tolist() == [0, 33]
    assert m["y"][0] == 0 and m["y"][33] == 1  # Mr. Hi's faction, the officer's faction
    assert int(m["y"].sum()) == 17  # the club split 17 / 17
    assert m["val_mask"].sum() == 8 and m["test_mask"].sum() == 24


class _FixedLogits(nn.Module):
    """Returns the same logits whatever the graph (metric plumbing)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits.clone())

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return self.logits


def test_loss_and_accuracy_count_only_the_nodes_of_the_split() -> None:
    task, _ = NodeClassificationTask.fit("gcn", data.load("karate"), {}, {})
    y = data.load("karate").meta["y"]
    logits = torch.zeros(34, 2)
    logits[torch.arange(34), y] = 2.0  # every node right ...
    logits[4] = torch.tensor([0.0, 0.0]) if y[4] == 0 else logits[4]  # a tie on val node 4 (argmax 0)
    logits[8, y[8]], logits[8, 1 - y[8]] = -1.0, 1.0  # ... but val node 8 wrong
    model = _FixedLogits(logits)
    for split, mask in (("val", "val_mask"), ("test", "test_mask"), ("train", "train_mask")):
        b = task.batch(split, torch.tensor([0]), device=CPU)
        sel = data.load("karate").meta[mask]
        want_loss = F.cross_entropy(logits[sel], y[sel]).item()
        want_acc = (logits[sel].argmax(1) == y[sel]).float().mean().item()
        got = task.metrics(task.sums(model, b))
        assert got["loss"] == pytest.approx(want_loss, rel=1e-6) and got["acc"] == pytest.approx(want_acc)
        assert (b["y"] != IGNORE_INDEX).sum() == sel.sum()
        assert task.loss(model, b).item() == pytest.approx(want_loss, rel=1e-6)
    assert task.metrics(task.sums(model, task.batch("val", torch.tensor([0]), device=CPU)))["acc"] == pytest.approx(
        7 / 8
    )
    assert task.size("train") == task.size("val") == task.size("test") == 1


def test_sparse_features_go_to_the_model_as_csr_unless_told_dense() -> None:
    """Under 15 % non-zeros (karate's identity features: 1/34) the model gets a CSR matrix; the same
    model scores the same on it as on the dense matrix; --feature-layout dense forces dense."""
    bundle = data.load("karate")
    task, model = NodeClassificationTask.fit("gcn", bundle, {}, {})
    dense_task, _ = NodeClassificationTask.fit("gcn", bundle, {"feature_layout": "dense"}, {})
    one = torch.tensor([0])
    x, x_dense = task.batch("train", one, device=CPU)["x"], dense_task.batch("train", one, device=CPU)["x"]
    assert (task.layout, x.layout) == ("sparse", torch.sparse_csr)
    assert (dense_task.layout, x_dense.layout) == ("dense", torch.strided)
    assert torch.equal(x.to_dense(), x_dense) and torch.equal(x_dense, bundle.meta["x"])
    assert task.report_input(CPU)[0].layout == torch.strided  # the report draws the dense model
    model.eval()
    for split in ("val", "test"):
        sparse_sums = task.sums(model, task.batch(split, one, device=CPU))
        dense_sums = dense_task.sums(model, dense_task.batch(split, one, device=CPU))
        torch.testing.assert_close(sparse_sums, dense_sums, rtol=1e-6, atol=1e-6)  # float32 logits, sums reordered


def test_feature_layout_rule() -> None:
    x = torch.zeros(10, 10)
    x[:, 0], x[:4, 1] = 1.0, 1.0  # 14 % non-zero
    assert feature_layout(x) == "sparse" and feature_layout(x, "dense") == "dense"
    x[4, 1] = 1.0  # 15 %: not under the threshold
    assert feature_layout(x) == "dense" and feature_layout(x, "sparse") == "sparse"


def test_feature_layout_option_is_checked(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["train", "gcn", "--feature-layout", "csc", "--out", str(tmp_path / "r")]) == 2
    assert "--feature-layout must be auto, sparse or dense; got 'csc'" in capsys.readouterr().err


def test_weight_decay_is_on_the_first_layer_only() -> None:
    """Kipf & Welling: L2 5e-4 on conv1; the trainer builds its optimizer from the task's groups."""
    task, model = task_class("node_classification").fit("gcn", data.load("karate"), {}, {})
    opt = torch.optim.Adam(task.param_groups(model), lr=0.01, weight_decay=5e-4)
    first = {id(p) for p in model.conv1.parameters()}
    second = {id(p) for p in model.conv2.parameters()}
    assert [{id(p) for p in g["params"]} for g in opt.param_groups] == [first, second]
    assert [g["weight_decay"] for g in opt.param_groups] == [5e-4, 0.0]
    # a zero gradient moves only the decayed layer
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    after = model.state_dict()
    assert not torch.equal(before["conv1.lin.weight"], after["conv1.lin.weight"])
    assert all(torch.equal(before[k], after[k]) for k in after if k.startswith("conv2."))


def test_gcn_recipe_is_kipf_and_wellings() -> None:
    r = nnatlas.card("gcn").training
    assert (r.optimizer, r.lr, r.weight_decay, r.epochs, r.patience, r.batch_size) == ("adam", 0.01, 5e-4, 200, 10, 1)
    assert r.stop_rule == "window"  # their code's rule (train.py), which gave the published figures
    assert nnatlas.card("gcn").data == "karate" and task_class("node_classification").best == "val_loss"


@pytest.mark.parametrize("model", ["gcn", "gnn"])
def test_karate_trains_with_the_default_recipe(model: str, tmp_path: Path) -> None:
    result = train(TrainConfig(model=model, out=str(tmp_path / model), report=False), progress=False)
    final = result.final
    assert final["data"] == "karate" and 1 <= final["steps"] <= 200
    assert final["train_loss"] < result.history[0]["train_loss"]
    assert final["test_acc"] >= 0.75, final  # 24 test members, two labelled leaders; chance is 0.5
    cfg = json.loads((result.run_dir / "config.json").read_text())["config"]
    assert cfg["patience"] == 10 and cfg["weight_decay"] == 5e-4 and cfg["lr"] == 0.01


def _first_stop(values: list[float], patience: int, rule: str) -> int | None:
    """The 1-based evaluation at which a rule stops a run whose val losses are ``values`` (None: never)."""
    best, bad = math.inf, 0
    for i, v in enumerate(values):
        if rule == "best":
            best, bad = (v, 0) if v < best else (best, bad + 1)
            if bad >= patience:
                return i + 1
        elif i > patience and v > sum(values[i - patience:i]) / patience:  # Kipf's `epoch > early_stopping and ...`
            return i + 1
    return None


@pytest.mark.parametrize("rule", ["best", "window"])
def test_stop_rules_end_the_run_where_they_say(rule: str, tmp_path: Path) -> None:
    """lr 0.05 without decay overfits karate fast, so both rules fire well before 200 epochs."""
    cfg = TrainConfig(model="gcn", out=str(tmp_path / rule), report=False, lr=0.05, weight_decay=0.0, patience=3, stop_rule=rule)
    result = train(cfg, progress=False)
    losses = [row["val_loss"] for row in result.history]
    assert result.final["stopped_early"] and len(losses) < 200
    assert _first_stop(losses, 3, rule) == len(losses)


def test_seeds_trains_each_seed_into_its_folder_and_writes_mean_and_std(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "runs"
    rc = main(
        [
            "train",
            "gcn",
            "--seeds",
            "3",
            "--seed",
            "5",
            "--epochs",
            "5",
            "--no-report",
            "--no-progress",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    doc = json.loads((out / "seeds.json").read_text())
    assert doc["seeds"] == [5, 6, 7] and sorted(doc["runs"]) == ["5", "6", "7"]
    for s in (5, 6, 7):
        final = json.loads((out / f"seed-{s}" / "final.json").read_text())
        assert final == doc["runs"][str(s)]
        assert json.loads((out / f"seed-{s}" / "config.json").read_text())["config"]["seed"] == s
    accs = [doc["runs"][s]["test_acc"] for s in ("5", "6", "7")]
    mean = sum(accs) / 3
    assert doc["mean"]["test_acc"] == pytest.approx(mean)
    assert doc["std"]["test_acc"] == pytest.approx(math.sqrt(sum((a - mean) ** 2 for a in accs) / 2))
    assert "test_acc" in capsys.readouterr().out
    best = doc["at_best"]
    for s in ("5", "6", "7"):
        rows = [json.loads(line) for line in (out / f"seed-{s}" / "metrics.jsonl").read_text().splitlines()]
        assert best["runs"][s] == rows[doc["runs"][s]["best_evaluation"] - 1]
    assert best["mean"]["test_acc"] == pytest.approx(sum(best["runs"][s]["test_acc"] for s in ("5", "6", "7")) / 3)


def test_seeds_must_be_positive(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["train", "gcn", "--seeds", "0", "--out", str(tmp_path / "r")]) == 2
    assert "--seeds must be an integer >= 1; got 0" in capsys.readouterr().err


def test_gcn_killed_mid_run_and_resumed_equals_uninterrupted_run_bitwise(tmp_path: Path) -> None:
    """Dropout masks of every full-graph step come from the per-step seed: SIGKILL after a checkpoint, --resume, same bits."""
    args = ["train", "gcn", "--epochs", "60", "--patience", "100", "--seed", "2", "--no-report", "--no-progress"]
    cmd = [sys.executable, "-m", "nnatlas", *args]
    env = subprocess_env()
    # the uninterrupted reference runs in this process (one thread, as the subprocesses): one interpreter start fewer
    assert main([*args, "--out", str(tmp_path / "ref")]) == 0

    killed = tmp_path / "killed"
    kill_after_first_checkpoint(cmd, killed, env)
    assert not (killed / "final.json").exists(), "the run finished before it was killed"
    assert 0 < load_checkpoint(killed, model_name="gcn").state["global_step"] < 60

    resumed = subprocess.run(
        [*cmd, "--out", str(killed), "--resume"], env=env, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming gcn" in resumed.stderr
    assert_same_run(tmp_path / "ref", killed)
