"""The pointer task: tour lengths, Held-Karp, hulls and their coverage on hand-made cases, the paper's
conventions on its files, the metrics through the task, and SIGKILL + --resume bitwise."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from kill_resume import assert_same_run, kill_after_first_checkpoint, subprocess_env
from torch import nn
from torch.utils.data import TensorDataset

from nnatlas import data
from nnatlas.cli import main
from nnatlas.data import DataBundle
from nnatlas.train.checkpoint import load_checkpoint
from nnatlas.train.tasks.pointer import (
    PointerTask,
    brute_force_tour,
    canonical_tour,
    cycle_body,
    held_karp,
    hull_coverage,
    hull_cycle,
    tour_length,
)

pytestmark = pytest.mark.usefixtures("one_thread")

SQUARE = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
SQUARE_AND_CENTRE = np.array([[0.5, 0.5], [1.0, 1.0], [0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # centre first


def _bundle(problem: str, points: torch.Tensor, answers: torch.Tensor) -> DataBundle:
    ds = TensorDataset(points, answers)
    return DataBundle(name=f"hand-{problem}", task="pointer", train=ds, test=ds, num_classes=points.shape[1],
                      input_shape=tuple(points.shape[1:]), meta={"problem": problem})


class _Answers(nn.Module):
    """A stand-in model that 'decodes' fixed outputs: greedy ``greedy``, beam search ``beam``."""

    def __init__(self, greedy: torch.Tensor, beam: torch.Tensor, steps: int, n: int) -> None:
        super().__init__()
        self.greedy, self.beam, self.steps, self.n = greedy, beam, steps, n
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, points: torch.Tensor, targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        log_probs = torch.full((len(points), self.steps, self.n), -math.log(self.n)) + 0 * self.w
        return log_probs, self.greedy

    def beam_search(self, points: torch.Tensor, lengths: None = None, beam_size: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        return self.beam, torch.zeros(len(points))


def test_tour_length_of_a_unit_square() -> None:
    assert tour_length(SQUARE, np.array([0, 1, 2, 3])) == pytest.approx(4.0)
    assert tour_length(SQUARE, np.array([0, 2, 1, 3])) == pytest.approx(2 + 2 * math.sqrt(2))  # the crossing tour
    assert canonical_tour(np.array([2, 1, 0, 3])).tolist() == [0, 1, 2, 3]  # from city 0, smaller neighbour second


@pytest.mark.parametrize("n", [4, 5, 6, 7])
def test_held_karp_equals_brute_force(n: int) -> None:
    points = np.random.default_rng(n).random((6, n, 2))
    tours, lengths = held_karp(points)
    for p, tour, length in zip(points, tours, lengths):
        best, best_length = brute_force_tour(p)
        assert tour.tolist() == best.tolist() and length == pytest.approx(best_length, abs=1e-12)
        assert tour_length(p, tour) == pytest.approx(length, abs=1e-12)


def test_hull_of_a_square_with_a_point_inside() -> None:
    truth = hull_cycle(SQUARE_AND_CENTRE)
    assert truth.tolist() == [1, 4, 2, 3, 1]  # counter-clockwise from the smallest vertex index, closed
    assert cycle_body(truth).tolist() == [1, 4, 2, 3]
    assert hull_coverage(SQUARE_AND_CENTRE, truth, truth) == pytest.approx(1.0)
    assert hull_coverage(SQUARE_AND_CENTRE, np.array([1, 4, 2, 1, -1, -1]), truth) == pytest.approx(0.5)  # a corner missed
    assert hull_coverage(SQUARE_AND_CENTRE, np.array([1, 4, 0, 1, -1, -1]), truth) == pytest.approx(0.25)  # centre for corners
    assert cycle_body(np.array([1, 4, 1, -1, -1, -1])) is None  # two points are no polygon
    assert cycle_body(np.array([1, 4, 4, 2, 1, -1])) is None  # a repeat
    assert cycle_body(np.array([1, 4, 2, 3, 0, 2])) is None  # never closes


def test_hull_exact_match_coverage_and_invalid_through_the_task() -> None:
    points = torch.tensor(SQUARE_AND_CENTRE, dtype=torch.float32).expand(4, 5, 2)
    answer = torch.tensor([2, 5, 3, 4, 2, -100]) - 1  # 1-based as in the file, then 0-based and padded
    answers = torch.where(answer >= 0, answer, -100).expand(4, 6)
    task, _ = PointerTask.fit("pointer_net", _bundle("hull", points, answers), {}, {"hidden_size": 8})
    assert task.steps == 6
    greedy = torch.tensor([[1, 4, 2, 3, 1, -1],  # exact
                           [4, 2, 3, 1, 4, -1],  # the same polygon from another vertex: not the file's sequence
                           [1, 4, 2, 1, -1, -1],  # a corner missed: half the square
                           [1, 4, 4, 2, 3, 1]])  # a repeat: invalid (its points still cover the square)
    model = _Answers(greedy, greedy[[0, 0, 0, 0]], task.steps, 5)
    m = task.metrics(task.sums(model, task.batch("test", torch.arange(4), device=torch.device("cpu"))))
    assert m["exact"] == pytest.approx(0.25) and m["invalid"] == pytest.approx(0.25)
    assert m["coverage"] == pytest.approx((1 + 1 + 0.5 + 1) / 4)
    assert (m["exact_beam"], m["invalid_beam"], m["coverage_beam"]) == pytest.approx((1.0, 0.0, 1.0))
    assert m["loss"] == pytest.approx(math.log(5))  # uniform log-probabilities over the 5 positions


def test_tour_lengths_and_ratio_through_the_task() -> None:
    points = torch.tensor(SQUARE, dtype=torch.float32).expand(2, 4, 2)
    answers = torch.tensor([[0, 3, 2, 1, 0], [0, 1, 2, 3, 0]])  # closed, either direction (the file fixes none)
    task, _ = PointerTask.fit("pointer_net", _bundle("tsp", points, answers), {}, {"hidden_size": 8})
    b = task.batch("test", torch.arange(2), device=torch.device("cpu"))
    assert b["targets"].tolist() == [[0, 1, 2, 3], [0, 1, 2, 3]]  # one direction
    greedy = torch.tensor([[2, 3, 0, 1], [0, 2, 1, 3]])  # optimal (rotated); the crossing tour
    beam = torch.tensor([[0, 1, 2, 3], [0, 1, 1, 3]])  # optimal; invalid
    m = task.metrics(task.sums(_Answers(greedy, beam, 4, 4), b))
    crossing = 2 + 2 * math.sqrt(2)
    assert m["optimal_length"] == pytest.approx(4.0)
    assert m["tour_length"] == pytest.approx((4 + crossing) / 2) and m["length_ratio"] == pytest.approx((4 + crossing) / 8)
    assert m["exact"] == pytest.approx(0.5) and m["invalid"] == 0.0
    assert m["tour_length_beam"] == pytest.approx(4.0) and m["length_ratio_beam"] == pytest.approx(1.0)
    assert m["invalid_beam"] == pytest.approx(0.5)


def test_generated_instances_are_solved_and_come_from_the_generator() -> None:
    task, _ = PointerTask.fit("pointer_net", data.load("sort-10"), {}, {"hidden_size": 8})
    cpu = torch.device("cpu")
    a = task.batch("train", torch.arange(8), device=cpu, generator=torch.Generator().manual_seed(3))
    b = task.batch("train", torch.arange(8), device=cpu, generator=torch.Generator().manual_seed(3))
    c = task.batch("train", torch.arange(8), device=cpu, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a["points"], b["points"]) and not torch.equal(a["points"], c["points"])
    values = a["points"][..., 0].gather(1, a["targets"])  # (8, 10) in the target order
    assert (values.diff(dim=1) > 0).all()


def test_generated_answers_follow_the_papers_files(shared_data: Path) -> None:
    """Generated hulls equal the file's answers; Held-Karp's tours are as short as the file's optimal ones."""
    for name, problem in (("convex-hull-5", "hull"), ("tsp-10", "tsp")):
        bundle = data.load(name, data_dir=shared_data, download=False)
        task, _ = PointerTask.fit("pointer_net", bundle, {}, {"hidden_size": 8})
        b = task.batch("test", torch.arange(40 if problem == "tsp" else 300), device=torch.device("cpu"))
        solved = task.solve(b["points"])
        if problem == "hull":
            assert torch.equal(solved, b["targets"])
        else:
            x = b["points"].double().numpy()
            mine = [tour_length(p, t) for p, t in zip(x, solved.numpy())]
            theirs = [tour_length(p, t) for p, t in zip(x, b["targets"].numpy())]
            np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-6)  # the file's 6 decimals, float32 points


def test_killed_mid_epoch_and_resumed_equals_uninterrupted_run_bitwise(tmp_path: Path) -> None:
    """Each step's generated instances come from the trainer's per-step generator."""
    args = ["train", "pointer_net", "--data", "sort-10", "--model-arg", "hidden_size=16", "--steps", "12",
            "--epoch-size", "320", "--limit-test", "32", "--batch-size", "16", "--checkpoint-every", "3",
            "--eval-every", "6", "--beam-size", "2", "--seed", "1", "--no-report", "--no-progress"]
    cmd = [sys.executable, "-m", "nnatlas", *args]
    env = subprocess_env()
    assert main([*args, "--out", str(tmp_path / "ref")]) == 0
    killed = tmp_path / "killed"
    kill_after_first_checkpoint(cmd, killed, env)
    assert not (killed / "final.json").exists(), "the run finished before it was killed"
    assert 0 < load_checkpoint(killed, model_name="pointer_net").state["global_step"] < 12
    resumed = subprocess.run([*cmd, "--out", str(killed), "--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming pointer_net" in resumed.stderr
    assert_same_run(tmp_path / "ref", killed)


def test_train_data_file_reads_the_training_split_and_a_bundle_without_a_problem_is_refused() -> None:
    bundle = data.load("sort-10")
    task, _ = PointerTask.fit("pointer_net", bundle, {"train_data": "file"}, {"hidden_size": 8})
    assert task.size("train") == len(bundle.train)
    b = task.batch("train", torch.tensor([3, 1]), device=torch.device("cpu"))
    assert torch.equal(b["points"], bundle.train.tensors[0][[3, 1]]) and torch.equal(b["targets"], bundle.train.tensors[1][[3, 1]])
    points = torch.rand(2, 4, 2)
    nameless = DataBundle(name="no-problem", task="pointer", train=TensorDataset(points, points[..., 0].argsort(1)),
                          test=TensorDataset(points, points[..., 0].argsort(1)), num_classes=4, input_shape=(4, 2))
    with pytest.raises(ValueError, match="problem"):
        PointerTask.fit("pointer_net", nameless, {}, {"hidden_size": 8})
