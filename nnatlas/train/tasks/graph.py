"""Node classification on one graph (Kipf & Welling, 2017): the ``gcn`` and ``gnn`` models.

The whole graph is one example: the training split has size 1 and every step is one full-batch
gradient step (an epoch is one step). :meth:`NodeClassificationTask.batch` returns the graph
with the labels of one split: ``x`` (N, F) node features, ``edge_index`` (2, E) and ``y`` (N,)
with ``-100`` (cross entropy's ``ignore_index``) on every node outside the split, so the loss
of a split is the mean cross entropy over its labelled nodes only.

Splits: ``train``, ``val`` and ``test`` masks as the data set gives them (Planetoid's 20 per
class / 500 / 1,000 nodes on Cora and CiteSeer; two labelled nodes of Zachary's karate club,
see ``nnatlas.data.graphs``). Evaluation scores ``val`` and ``test``; the validation loss picks
``best.safetensors`` and drives early stopping (the recipe's ``patience``: Kipf & Welling stop
when the validation loss has not fallen for 10 epochs).

The optimiser's parameter groups come from the model where it defines ``param_groups()``
(the GCN: weight decay on the first layer only, as the paper does).

Features: sparse ones (under 15 % non-zero, :func:`feature_layout`) go to the model as a torch
sparse CSR matrix, as Kipf & Welling's code keeps them, so the GCN's input dropout and first X W
touch the stored values only (Cora's 2708 x 1433 features are 1.3 % non-zero; karate's identity
features 2.9 %). ``--feature-layout dense`` hands the dense matrix instead (same model, same
distribution of outputs; the dropout masks come from a different random stream).

Metrics (float64 sums): ``loss`` (mean cross entropy over the split's nodes), ``acc``.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import nnatlas
from nnatlas.train.tasks.base import (
    Batch,
    Option,
    Plan,
    Task,
    check_model_args,
    config_fields,
    probe,
    register_task,
    unwrap,
)

__all__ = ["IGNORE_INDEX", "SPARSE_BELOW", "NodeClassificationTask", "feature_layout"]

IGNORE_INDEX = -100  # labels of nodes outside a split (F.cross_entropy's default ignore_index)
SPLITS = ("train", "val", "test")
SPARSE_BELOW = 0.15  # features with fewer non-zeros than this fraction go to the model as a sparse matrix
LAYOUTS = ("auto", "sparse", "dense")
log = logging.getLogger(__name__)

GRAPH_OPTIONS = {
    "feature_layout": Option(
        str,
        "auto",
        "node features to the model as: auto (sparse CSR under 15 % non-zero), sparse or dense",
        check=lambda v: v in LAYOUTS,
        expect="auto, sparse or dense",
    ),
}


def feature_layout(x: Tensor, choice: str = "auto") -> str:
    """``"sparse"`` or ``"dense"``: how node features ``x`` (N, F) go to the model.

    ``auto`` picks sparse when under :data:`SPARSE_BELOW` (15 %) of the entries are non-zero. The
    input dropout and X W, forward and backward, on one CPU thread at Cora's size (2708 x 1433, 16
    outputs), sparse CSR against dense: 1.7 ms against 53 ms at Cora's 1.3 %, 0.16x at 5 %, 0.4x at
    10 % (about PubMed's density), 0.93x at 20 %, 1.7x at 30 % (at PubMed's size, 19717 x 500:
    0.19x, 0.40x, 0.97x, 1.7x): sparse pays up to about 20 %, and 15 % leaves a margin. A model
    that takes dense features only trains with ``choice="dense"`` (``--feature-layout dense``).
    """
    if choice != "auto":
        return choice
    return "sparse" if density(x) < SPARSE_BELOW else "dense"


def density(x: Tensor) -> float:
    """The fraction of non-zero entries of x."""
    return int(torch.count_nonzero(x)) / max(1, x.numel())


def _as_layout(x: Tensor, layout: str) -> Tensor:
    """x as a CSR matrix for ``"sparse"``, unchanged for ``"dense"``."""
    if layout == "dense":
        return x
    with warnings.catch_warnings():  # torch's "CSR support is in beta" notice, not the user's concern
        warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta", UserWarning)
        return x.to_sparse_csr()


@register_task
class NodeClassificationTask(Task):
    """One whole graph a step; cross entropy over the labelled nodes of a split."""

    kind = "node_classification"
    data_kinds = ("node_classification",)
    best, mode = "val_loss", "min"
    eval_splits = ("val", "test")
    num_sums = 3
    options = GRAPH_OPTIONS

    def __init__(self, plan: Plan, bundle: Any | None, options: Mapping[str, Any]) -> None:
        super().__init__(plan, bundle, options)
        self.graph: dict[str, Tensor] = {}
        self.layout: str | None = None  # "sparse" or "dense" features; None without data (nnatlas.load)
        if bundle is not None:
            meta = bundle.meta
            y = meta["y"]
            x = meta["x"].float()
            self.layout = feature_layout(x, self.opts["feature_layout"])
            self.graph = {"x": _as_layout(x, self.layout), "edge_index": meta["edge_index"].long()}
            for split in SPLITS:
                mask = meta[f"{split}_mask"]
                self.graph[f"y_{split}"] = torch.where(mask, y, torch.full_like(y, IGNORE_INDEX))  # (N,)
        self._on: dict[str, dict[str, Tensor]] = {}  # the graph moved to each device once

    # -- fitting ------------------------------------------------------------------------------

    @classmethod
    def fit(
        cls, model_name: str, bundle: Any, options: Mapping[str, Any], model_args: Mapping[str, Any]
    ) -> tuple[Task, nn.Module]:
        where = f"model {model_name!r} on data set {bundle.name!r}"
        fields = config_fields(model_name)
        check_model_args(model_name, fields, model_args)
        missing = [k for k in ("x", "y", "edge_index", "train_mask", "val_mask", "test_mask") if k not in bundle.meta]
        if missing:
            raise ValueError(
                f"{where}: the data set's meta lacks {missing}; a node-classification set gives the graph and its masks"
            )
        N, F_in = bundle.meta["x"].shape
        C = int(bundle.num_classes)
        overrides: dict[str, Any] = {}
        for name, value in (("in_features", F_in), ("num_classes", C)):
            if name in fields:
                overrides[name] = value
        overrides.update(model_args)
        plan = Plan(
            model=model_name,
            data=bundle.name,
            task=cls.kind,
            overrides=overrides,
            details={"num_nodes": int(N), "in_features": int(F_in), "num_classes": C},
        )
        model = nnatlas.create(model_name, **overrides)
        task = cls(plan, bundle, options)
        log.info("node features %.1f %% non-zero: the model gets them %s", 100 * density(bundle.meta["x"]),
                 "as a sparse CSR matrix" if task.layout == "sparse" else "dense")
        out = probe(model, task.graph["x"], task.graph["edge_index"])
        if out.dim() != 2 or tuple(out.shape) != (N, C):
            raise ValueError(
                f"{where}: expected logits (N, C) = ({N}, {C}), one row per node; the model gives {tuple(out.shape)}"
            )
        return task, model

    # -- data ---------------------------------------------------------------------------------

    def size(self, split: str) -> int:
        if split not in SPLITS:
            raise ValueError(f"the node_classification task has splits {SPLITS}; got {split!r}")
        return 1  # the whole graph is one example

    def _graph(self, device: torch.device) -> dict[str, Tensor]:
        key = str(device)
        if key not in self._on:
            self._on[key] = {k: v.to(device) for k, v in self.graph.items()}
        return self._on[key]

    def batch(
        self, split: str, indices: Tensor, *, device: torch.device, generator: torch.Generator | None = None
    ) -> Batch:
        """The whole graph with ``split``'s labels; ``indices`` is ``[0]`` (one graph), ``generator`` unused."""
        self.size(split)
        g = self._graph(device)
        return {"x": g["x"], "edge_index": g["edge_index"], "y": g[f"y_{split}"]}

    def report_input(self, device: torch.device) -> Any:
        """The graph with dense features: the report draws the model as the paper writes it (dropout on x)."""
        g = self._graph(device)
        return (g["x"].to_dense() if g["x"].layout != torch.strided else g["x"], g["edge_index"])

    # -- model, loss, metrics -------------------------------------------------------------------

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        logits = model(batch["x"], batch["edge_index"])  # (N, C)
        return F.cross_entropy(logits.float(), batch["y"], ignore_index=IGNORE_INDEX)

    def sums(self, model: nn.Module, batch: Batch) -> Tensor:
        logits = model(batch["x"], batch["edge_index"]).float()  # (N, C)
        y = batch["y"]
        labelled = y != IGNORE_INDEX  # (N,)
        loss = F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX, reduction="sum")
        correct = (logits.argmax(1) == y)[labelled].sum()
        return torch.stack([loss.double(), correct.double(), labelled.sum().double()])

    def metrics(self, sums: Tensor) -> dict[str, float]:
        loss, correct, n = sums.tolist()
        return {"loss": loss / n, "acc": correct / n} if n else {"loss": float("nan"), "acc": float("nan")}

    def param_groups(self, model: nn.Module) -> Any:
        """The model's own groups where it defines them (GCN: weight decay on ``conv1`` only)."""
        own = getattr(unwrap(model), "param_groups", None)
        return own() if callable(own) else model.parameters()

    def inference(self) -> dict[str, Any]:
        return {"graph": dict(self.plan.details), "ignore_index": IGNORE_INDEX}
