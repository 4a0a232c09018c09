"""Pointer Networks' problems: sorting, planar convex hulls and the travelling salesman (``pointer``).

The problem comes from the data set (``meta["problem"]``): ``sort`` (``sort-10``), ``hull``
(``convex-hull-5``) or ``tsp`` (``tsp-10``). Training instances are generated: each step draws
its batch of uniform points in the unit square (uniform numbers in [0, 1) for sorting) from
the trainer's per-step generator and solves it exactly, so every step sees new instances and a
killed run resumes bitwise (``--train-data file`` trains on the data set's training split
instead). Evaluation is on the data set's test split: for the paper's files, its last 1,000
instances, with the authors' answers.

What the model emits (the paper's files' convention, 0-based here, 1-based in the files):

- ``sort``: the positions in ascending order of value (a permutation, ``output="permutation"``).
- ``hull``: the hull vertices counter-clockwise from the vertex of the smallest input position,
  then that vertex again: ``output 1 2 3 5 1`` (``output="cycle"``: the closing repeat is the
  end-of-sequence pointer, see ``nnatlas.models.pointer_net``). Every line of
  ``convex_hull_5_test.txt`` follows this rule (scipy's ``ConvexHull`` vertices, which run
  counter-clockwise in 2-D, rotated to the smallest index); the generated hulls are made so.
- ``tsp``: an optimal tour from city 0 as a permutation (``output="permutation"``); it is closed
  back to city 0 when scored. The file starts every tour at city 1 but follows no direction
  rule (in 27 % of its lines the second city has the larger index than the last), so the task
  writes every tour, generated or read, in one direction: the second city is the smaller-indexed
  neighbour of city 0. Generated tours are optimal: :func:`held_karp` solves a batch of
  instances exactly with the Held-Karp dynamic program over subsets (vectorised in NumPy,
  O(2^n n^2) per instance: about 1 ms per 10-city instance).

Loss: the mean negative log-probability of the target positions (teacher forcing, chosen
positions masked). Metrics (float64 sums), each for greedy decoding and for beam search
(``_beam``, width ``--beam-size``, the sum of log-probabilities):

- ``exact``: the share of instances whose output equals the answer (a TSP tour in either
  direction: the file fixes none);
- ``invalid``: the share of outputs that are not a permutation (sort, TSP) or not a closed
  cycle of three or more distinct points (hull); masking makes them impossible unless the model
  is built with ``mask_chosen=False``;
- hull: ``coverage``, the area of the convex hull of the emitted points over the true hull's
  area (the paper's "area coverage"), averaged over instances (an invalid output counts with
  the hull of its points; fewer than three points cover 0);
- TSP: ``tour_length``, the mean closed length of the valid tours, ``optimal_length``, the
  mean length of the answers' tours, and ``length_ratio``, the first over the mean optimal
  length of the same instances (1.0 is optimal).

Artefact: ``pointer-<step>.png``, six test instances with the true and the predicted
(beam search) hull or tour.
"""

from __future__ import annotations

import io
import itertools
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import nnatlas
from nnatlas.models.pointer_net import pointer_loss
from nnatlas.train import checkpoint as ckpt
from nnatlas.train.tasks.base import (
    Batch,
    Option,
    Plan,
    Task,
    check_model_args,
    config_fields,
    positive_int,
    probe,
    register_task,
    unwrap,
)
from nnatlas.train.tasks.vision import gather

__all__ = [
    "PointerTask",
    "PROBLEMS",
    "held_karp",
    "brute_force_tour",
    "canonical_tour",
    "tour_length",
    "hull_cycle",
    "polygon_area",
    "hull_coverage",
    "cycle_body",
]

PROBLEMS = ("sort", "hull", "tsp")
OUTPUT = {"sort": "permutation", "hull": "cycle", "tsp": "permutation"}  # the model's decoding per problem
PAD = -1  # target steps after the end
REPORT_SEED = 2015  # the instances of the model report (no training generator there)
PICTURES = 6  # test instances in each evaluation's picture
DECODERS = ("", "_beam")  # metric suffixes: greedy decoding, beam search
PER_DECODER = 5  # exact, invalid, tour length (valid), optimal length of those, coverage


# --------------------------------------------------------------------------------------------
# Exact solutions and scores (plain functions, tested on hand-made cases)
# --------------------------------------------------------------------------------------------


def tour_length(points: np.ndarray, tour: np.ndarray) -> float:
    """The closed length of ``tour`` (n,) through ``points`` (n, 2): the last city returns to the first."""
    p = np.asarray(points, dtype=np.float64)[np.asarray(tour)]  # (n, 2)
    return float(np.linalg.norm(p - np.roll(p, -1, axis=0), axis=1).sum())


def canonical_tour(tour: np.ndarray) -> np.ndarray:
    """The tour from city 0, in the direction whose second city is the smaller-indexed neighbour of city 0."""
    t = np.roll(np.asarray(tour), -int(np.argmin(tour)))  # starts at city 0
    return t if len(t) < 3 or t[1] < t[-1] else np.concatenate([t[:1], t[1:][::-1]])


def held_karp(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Optimal closed tours of a batch of instances ``points`` (B, n, 2) by Held-Karp dynamic programming.

    ``cost[S, j]`` is the length of the shortest path from city 0 through the cities of the set S
    (a bit mask over cities 1..n-1) ending at j in S; ``cost[S, j] = min_i cost[S - j, i] + d(i, j)``,
    computed one set size at a time, all instances and sets of a size at once. Returns the tours
    (B, n) (:func:`canonical_tour` form) and their lengths (B,) float64.
    """
    pts = np.asarray(points, dtype=np.float64)
    B, n, _ = pts.shape
    if n < 3:
        tours = np.tile(np.arange(n), (B, 1))
        return tours, np.array([tour_length(p, t) for p, t in zip(pts, tours)])
    d = np.linalg.norm(pts[:, :, None] - pts[:, None], axis=-1)  # (B, n, n)
    m = n - 1  # cities 1..n-1 are bits 0..m-1
    full = (1 << m) - 1
    cost = np.full((B, 1 << m, m), np.inf)
    parent = np.full((B, 1 << m, m), -1, dtype=np.int8)
    for j in range(m):
        cost[:, 1 << j, j] = d[:, 0, j + 1]  # 0 -> j
    sets = np.arange(1 << m)
    size = np.array([int(s).bit_count() for s in sets])  # cities in each set
    for k in range(2, m + 1):
        for j in range(m):
            S = sets[(size == k) & ((sets >> j) & 1 == 1)]  # the sets of size k holding j
            prev = cost[:, S ^ (1 << j), :] + d[:, None, 1:, j + 1]  # (B, |S|, m): ... -> i -> j
            parent[:, S, j] = prev.argmin(-1)
            cost[:, S, j] = prev.min(-1)  # i outside S - j has cost inf
    closing = cost[:, full, :] + d[:, 1:, 0]  # (B, m): back to city 0
    last = closing.argmin(-1)  # (B,)
    lengths = closing.min(-1)
    tours = np.zeros((B, n), dtype=np.int64)
    for b in range(B):
        S, j = full, int(last[b])
        for pos in range(n - 1, 0, -1):  # walk the parents back to city 0
            tours[b, pos] = j + 1
            S, j = S ^ (1 << j), int(parent[b, S, j])
        tours[b] = canonical_tour(tours[b])
    return tours, lengths


def brute_force_tour(points: np.ndarray) -> tuple[np.ndarray, float]:
    """The optimal tour of one small instance (n, 2) by trying every permutation (the check on :func:`held_karp`)."""
    n = len(points)
    best, best_len = None, math.inf
    for rest in itertools.permutations(range(1, n)):
        tour = np.array((0, *rest))
        length = tour_length(points, tour)
        if length < best_len - 1e-12:
            best, best_len = tour, length
    return canonical_tour(best), best_len


def hull_cycle(points: np.ndarray) -> np.ndarray:
    """The convex hull as the paper's files write it: vertices counter-clockwise from the smallest
    position, then that one again (m + 1,)."""
    from scipy.spatial import ConvexHull

    vertices = ConvexHull(np.asarray(points, dtype=np.float64)).vertices  # counter-clockwise in 2-D
    vertices = np.roll(vertices, -int(np.argmin(vertices)))
    return np.concatenate([vertices, vertices[:1]])


def polygon_area(points: np.ndarray) -> float:
    """The area of the convex hull of ``points`` (k, 2); 0 for fewer than three or collinear points."""
    from scipy.spatial import ConvexHull, QhullError

    pts = np.unique(np.asarray(points, dtype=np.float64), axis=0)
    if len(pts) < 3:
        return 0.0
    try:
        return float(ConvexHull(pts).volume)  # in 2-D the "volume" is the area
    except QhullError:  # collinear
        return 0.0


def hull_coverage(points: np.ndarray, emitted: np.ndarray, truth: np.ndarray) -> float:
    """Area of the hull of the emitted points over the area of the true hull (the paper's area coverage)."""
    emitted = np.asarray(emitted)
    emitted = emitted[emitted >= 0]
    true_area = polygon_area(np.asarray(points)[np.asarray(truth)[np.asarray(truth) >= 0]])
    return polygon_area(np.asarray(points)[emitted]) / true_area if true_area > 0 else math.nan


def cycle_body(seq: np.ndarray) -> np.ndarray | None:
    """The distinct positions of a closed cycle ``i1 .. ik i1 -1 ...``, or None when it is not one (k >= 3)."""
    s = np.asarray(seq)
    k = int(np.argmax(s < 0)) if (s < 0).any() else len(s)  # the steps before the first -1
    if (s[k:] >= 0).any():
        return None
    s = s[:k]
    if len(s) < 4 or s[-1] != s[0] or len(set(s[:-1].tolist())) != len(s) - 1:
        return None
    return s[:-1]


def _is_permutation(seq: np.ndarray, n: int) -> bool:
    return len(seq) == n and sorted(np.asarray(seq).tolist()) == list(range(n))


# --------------------------------------------------------------------------------------------
# The task
# --------------------------------------------------------------------------------------------


@register_task
class PointerTask(Task):
    """Generated instances in, positions out: exact-sequence accuracy, hull coverage, tour lengths."""

    kind = "pointer"
    data_kinds = ("pointer",)
    best, mode = "test_loss", "min"
    options = {
        "beam_size": Option(int, 5, "beam width of the test metrics' beam search (1: greedy twice)",
                            check=positive_int, expect="an integer >= 1"),
        "train_data": Option(str, "generated", "generated (new solved instances every step) or file (the data "
                             "set's training split)", check=lambda v: v in ("generated", "file"),
                             expect="generated or file"),
        "epoch_size": Option(int, 100_000, "generated instances that count as one epoch (evaluations, schedules)",
                             check=positive_int, expect="an integer >= 1"),
    }  # fmt: skip

    def __init__(self, plan: Plan, bundle: Any | None, options: Mapping[str, Any]) -> None:
        super().__init__(plan, bundle, options)
        d = plan.details
        self.problem: str = d["problem"]
        self.n: int = int(d["num_points"])
        self.features: int = int(d["features"])
        self.steps = self.n + 1 if OUTPUT[self.problem] == "cycle" else self.n  # S of the model's output
        self.num_sums = 4 + PER_DECODER * len(DECODERS)

    # -- fitting ------------------------------------------------------------------------------

    @classmethod
    def fit(
        cls, model_name: str, bundle: Any, options: Mapping[str, Any], model_args: Mapping[str, Any]
    ) -> tuple[Task, nn.Module]:
        where = f"model {model_name!r} on data set {bundle.name!r}"
        fields = config_fields(model_name)
        check_model_args(model_name, fields, model_args)
        problem = bundle.meta.get("problem")
        if problem not in PROBLEMS:
            raise ValueError(f"{where}: the pointer task needs meta['problem'] in {PROBLEMS}; got {problem!r}")
        if "output" not in fields or "input_size" not in fields:
            raise ValueError(f"{where}: the pointer task needs config fields input_size and output (a pointer network)")
        n, features = (int(v) for v in bundle.input_shape)
        overrides = {"input_size": features, "output": OUTPUT[problem], **model_args}
        details = {"problem": problem, "num_points": n, "features": features,
                   "target": {"sort": "positions in ascending order",
                              "hull": "hull vertices counter-clockwise from the smallest position, then it again",
                              "tsp": "optimal tour from city 0, second city the smaller neighbour of 0"}[problem]}
        plan = Plan(model=model_name, data=bundle.name, task=cls.kind, overrides=overrides, details=details)
        model = nnatlas.create(model_name, **overrides)
        task = cls(plan, bundle, options)
        b = task.batch("test", torch.arange(min(2, task.size("test"))), device=torch.device("cpu"))
        out = probe(model, b["points"])
        if not (isinstance(out, tuple) and tuple(out[0].shape[1:]) == (task.steps, n)):
            raise ValueError(f"{where}: expected (log_probs (B, {task.steps}, {n}), indices) from the model; got "
                             f"{getattr(out[0], 'shape', type(out).__name__) if isinstance(out, tuple) else out}")
        return task, model

    def inference(self) -> dict[str, Any]:
        return {"problem": self.problem, "num_points": self.n, "features": self.features,
                "beam_size": self.opts["beam_size"], "target": self.plan.details["target"]}

    # -- data ---------------------------------------------------------------------------------

    def size(self, split: str) -> int:
        if split == "train" and self.opts["train_data"] == "generated":
            return int(self.opts["epoch_size"])
        return len(getattr(self.bundle, split))

    def solve(self, points: Tensor) -> Tensor:
        """Targets (B, S) of instances ``points`` (B, N, P), -1 after the end (the module docstring's conventions)."""
        B = len(points)
        out = torch.full((B, self.steps), PAD, dtype=torch.long)
        x = points.double().numpy()
        if self.problem == "sort":
            out[:] = torch.from_numpy(np.argsort(x[..., 0], axis=1, kind="stable"))
        elif self.problem == "tsp":
            out[:] = torch.from_numpy(held_karp(x)[0])
        else:
            for b in range(B):
                cycle = hull_cycle(x[b])
                out[b, : len(cycle)] = torch.from_numpy(cycle)
        return out

    def _from_file(self, targets: Tensor) -> Tensor:
        """A data set's targets (B, m) (closed cycles for hulls and tours, -100 padded) -> the model's (B, S)."""
        B = len(targets)
        out = torch.full((B, self.steps), PAD, dtype=torch.long)
        for b, row in enumerate(targets.tolist()):
            row = [i for i in row if i >= 0]
            if self.problem == "tsp":
                row = canonical_tour(np.array(row[:-1])).tolist()  # drop the closing repeat; one direction
            out[b, : len(row)] = torch.tensor(row)
        return out

    def batch(
        self, split: str, indices: Tensor, *, device: torch.device, generator: torch.Generator | None = None
    ) -> Batch:
        """``points`` (B, N, P), ``targets`` (B, S); test batches also the file's answers ``answer`` (B, m)."""
        if split == "train" and self.opts["train_data"] == "generated":
            gen = generator or torch.Generator().manual_seed(REPORT_SEED + int(indices[0]) if len(indices) else 0)
            points = torch.rand(len(indices), self.n, self.features, generator=gen)  # (B, N, P) uniform
            return {"points": points.to(device), "targets": self.solve(points).to(device)}
        points, answer = gather(getattr(self.bundle, split), indices)
        points = points.float()
        return {"points": points.to(device), "targets": self._from_file(answer).to(device), "answer": answer}

    def report_input(self, device: torch.device) -> Any:
        return self.batch("test", torch.arange(min(2, self.size("test"))), device=device)["points"]

    # -- loss and metrics ------------------------------------------------------------------------

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        log_probs, _ = model(batch["points"], targets=batch["targets"])  # (B, S, N)
        return pointer_loss(log_probs.float(), batch["targets"])

    def decode(self, model: nn.Module, points: Tensor, beam_size: int = 1) -> Tensor:
        """Outputs (B, S) of greedy decoding (``beam_size=1``) or beam search, -1 after the end."""
        net = unwrap(model)
        if beam_size == 1:
            return net(points)[1]
        return net.beam_search(points, beam_size=beam_size)[0]

    def _score(self, points: np.ndarray, output: np.ndarray, target: np.ndarray) -> list[float]:
        """[exact, invalid, tour length, its optimal length, coverage] of one output against its target."""
        exact = invalid = length = optimal = coverage = 0.0
        if self.problem == "hull":
            body = cycle_body(output)
            invalid = float(body is None)
            exact = float(np.array_equal(output, target))
            coverage = hull_coverage(points, output, target)  # the hull of whatever points it emitted
        else:
            seq = output[output >= 0]
            invalid = float(not _is_permutation(seq, self.n))
            if self.problem == "sort":
                exact = float(np.array_equal(output, target))
            elif not invalid:
                exact = float(np.array_equal(canonical_tour(seq), target))
                length, optimal = tour_length(points, seq), tour_length(points, target)
        return [exact, invalid, length, optimal, coverage]

    def sums(self, model: nn.Module, batch: Batch) -> Tensor:
        points, targets = batch["points"], batch["targets"]
        log_probs, _ = model(points, targets=targets)  # (B, S, N) teacher-forced
        valid = targets >= 0
        nll = -log_probs.float().gather(2, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)[valid].sum()
        x, t = points.double().cpu().numpy(), targets.cpu().numpy()
        optimal_all = sum(tour_length(x[b], t[b]) for b in range(len(x))) if self.problem == "tsp" else 0.0
        parts = [float(nll.detach()), float(valid.sum()), float(len(x)), optimal_all]
        for K in (1, self.opts["beam_size"]):
            out = self.decode(model, points, K).cpu().numpy()
            parts += np.sum([self._score(x[b], out[b], t[b]) for b in range(len(x))], axis=0).tolist()
        return torch.tensor([float(p) for p in parts], dtype=torch.float64)

    def metrics(self, sums: Tensor) -> dict[str, float]:
        s = sums.tolist()
        nll, steps, n, optimal_all = s[:4]
        out = {"loss": nll / steps if steps else math.nan}
        if self.problem == "tsp":
            out["optimal_length"] = optimal_all / n
        for k, suffix in enumerate(DECODERS):
            exact, invalid, length, optimal, coverage = s[4 + PER_DECODER * k : 4 + PER_DECODER * (k + 1)]
            out[f"exact{suffix}"] = exact / n
            out[f"invalid{suffix}"] = invalid / n
            if self.problem == "hull":
                out[f"coverage{suffix}"] = coverage / n
            if self.problem == "tsp":
                valid = n - invalid
                out[f"tour_length{suffix}"] = length / valid if valid else math.nan
                out[f"length_ratio{suffix}"] = length / optimal if optimal else math.nan
        return out

    # -- the picture ---------------------------------------------------------------------------

    def artefacts(self, model: nn.Module, folder: Path, tag: str) -> list[Path]:
        if self.bundle is None or self.problem == "sort":
            return []
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        k = min(PICTURES, self.size("test"))
        device = next(unwrap(model).parameters()).device
        b = self.batch("test", torch.arange(k), device=device)
        with torch.no_grad():
            out = self.decode(model, b["points"], self.opts["beam_size"]).cpu().numpy()
        x, t = b["points"].cpu().numpy(), b["targets"].cpu().numpy()
        fig = Figure(figsize=(3 * k, 3.4), dpi=100)
        FigureCanvasAgg(fig)
        for i, ax in enumerate(fig.subplots(1, k, squeeze=False)[0]):
            truth, pred = t[i][t[i] >= 0], out[i][out[i] >= 0]
            if self.problem == "tsp":  # close the tours for drawing
                truth, pred = np.append(truth, truth[:1]), np.append(pred, pred[:1])
            ax.plot(*x[i][truth].T, "-", color="tab:green", lw=4, alpha=0.45, label="true")
            ax.plot(*x[i][pred].T, "--", color="tab:red", lw=1.5, label=f"beam {self.opts['beam_size']}")
            ax.plot(*x[i].T, "o", color="black", ms=3)
            score = self._score(x[i].astype(np.float64), out[i], t[i])
            ax.set_title("exact" if score[0] else ("invalid" if score[1] else "differs"), fontsize=9)
            ax.set_xlim(-0.05, 1.05)
            ax.set_ylim(-0.05, 1.05)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
        fig.axes[0].legend(fontsize=7, loc="lower left")
        fig.suptitle(f"{self.plan.model} on {self.plan.data}: the first {k} test instances ({tag})", fontsize=10)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        path = Path(folder) / f"pointer-{tag}.png"
        ckpt.atomic_write_bytes(path, buf.getvalue())
        return [path]
