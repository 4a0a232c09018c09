"""Planetoid citation graphs: Cora, CiteSeer, PubMed (Yang et al. 2016; the GCN paper's split).

The ``ind.<name>.*`` files of ``kimiyoung/planetoid`` are python-2 pickles: ``x``, ``tx``,
``allx`` are ``scipy.sparse.csr_matrix`` features of the labelled training nodes, the test
nodes and all non-test nodes; ``y``, ``ty``, ``ally`` the one-hot labels; ``graph`` a
``defaultdict(list)`` of neighbours; ``test.index`` the test node ids, one a line. They are
read with a restricted unpickler (numpy, scipy.sparse.csr_matrix, defaultdict, list only).

Preprocessing follows PyTorch Geometric's ``read_planetoid_data`` (and Kipf's ``load_data``):

- nodes are ``allx`` rows then ``tx`` rows; the test rows are put back in the order of their
  sorted ids (``x[test_index] = x[sorted_test_index]``);
- CiteSeer's ``test.index`` has gaps (isolated nodes without features): ``tx``/``ty`` are padded
  with zero rows over ``range(min, max + 1)``, so those nodes get zero features and label 0 and
  belong to no split;
- edges come from the neighbour dict, self loops dropped, duplicates merged, sorted by
  (target, source) like PyG's ``coalesce`` (both directions are listed in the files);
- masks: train = the first ``len(y)`` nodes (20 per class), val = the next 500, test = the
  1,000 ids of ``test.index``;
- features are row-normalised (each row sums to 1, as PyG's ``NormalizeFeatures`` and the GCN
  paper) unless ``normalize_features=False``.

The bundle (``task="node_classification"``): ``train`` and ``test`` each hold ONE item
``(x, y)`` where ``x`` is the float32 feature matrix ``(N, F)`` and ``y`` the int64 labels
``(N,)`` with ``-100`` (``torch.nn.CrossEntropyLoss``'s default ``ignore_index``) on every node
outside that split, so ``F.cross_entropy(model(x, edge_index), y)`` is the split's loss.
``meta`` holds the graph: ``edge_index`` (int64 ``(2, E)``), ``x``, ``y`` (all labels),
``train_mask``, ``val_mask``, ``test_mask`` (bool ``(N,)``), ``val`` (the validation split as a
one-item dataset), ``num_nodes``, ``num_edges`` (directed count), ``classes``.

``karate`` (offline, from networkx): Zachary's karate club, 34 members, 78 friendships, the two
factions the club split into as labels, identity features; the two faction leaders (nodes 0 and
33) are the labelled training nodes, nodes 4, 8, ..., 32 the validation split, the other 24 the test split.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from nnatlas.data.bundle import DataBundle, LoadContext, register_dataset
from nnatlas.data.download import RemoteFile
from nnatlas.data.errors import DataError
from nnatlas.data.formats import PLANETOID_GLOBALS, restricted_load

__all__ = ["IGNORE_INDEX", "PLANETOID_FILES", "GraphSplit", "read_planetoid"]

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
_COMMIT = "af6abf468a772cc055bec88c52e4d6f51b7c37e3"
_URL = f"https://github.com/kimiyoung/planetoid/raw/{_COMMIT}/data"
_PARTS = ("x", "y", "tx", "ty", "allx", "ally", "graph", "test.index")
_SHA256 = {
    "cora": ("23cfa55d91c6f624233f5eb7b6e3f141f1bd2b2ae39608a63cf5d084bb27baab",
             "94465c14eb53e04ca262198dcbb2521ee8af60fb3f3d546cd6ca24a511b0e7d1",
             "b9afbaa4a400df991f6f02ef677e1e44da55ffc04801fd02f9e673987829226a",
             "41f5ac76596a1699cc33f53084a2419e92961c42bb75f36fc38e616d348532ad",
             "9419ba2f26f5c35243db64aba110e0f35a04851609e0dc5433450676ca6b8543",
             "2b998f5cc7fedc86e7f97ca2498f47a1ffc1462c29e2d578b23bf3f62b6e7d71",
             "58f13302f39dde8852dad6fe6d15b89b077b6d7f837626bce671ef80344b383d",
             "297ce89af2b51a6a194181c7dbe1796c6a1cf9cd9349a88383b1b1e227867875"),
    "citeseer": ("d20de19150741e555de0ed037195630fc194114ebc7fd72ced62810148aa22f6",
                 "8ba87e515d8e3ee3cf52f6d2c5b86aa73f11ecad825a808455209ec26cd54924",
                 "539a8906a2da97628d212f2fdd668c109a8b3f0d36574b59e5d3fd5b5303da21",
                 "55e5bd1ba1e733a04598753ad1a8d57957f4b8f89e74519f41f4f4938767e4ce",
                 "2ac30345d95c9ec933a817ee0bdd6a5f077f8c184a20e696910192d534414668",
                 "f704b2d986dde6c2669934de1f3ae5696a6cf9455c0f6b2646a2d135ea0a1c95",
                 "d79a4ef9d3e7169aee8946145f6b7306e35bc79bffad26346cfb94e10e9912a7",
                 "2af990671580b6b2df5d158d1038f8292e30c9cd821b5453f399659b25b723d4"),
    "pubmed": ("fbe9cb5c47200d1b7769a26e579be3b7130b556831f9d850e77c4c74f2599b33",
               "e6c807633307a07ed659249006536a147c7999c797f11a2560752990181b41b3",
               "4eb5f5d0f30f26497eb0ac6ac9719d09c67e284f1ed0385c93f3ef27a671da3d",
               "ee2e0d4819d9fbcc403689c3bf2e49face401b605932f093bc58ab6461130fdd",
               "508e538e2abdccdd54c4d3e9f49d638b4af7107d85845f66ddea5a5152658b7e",
               "0c37bbe3b5014ec365e9d393cf4791925e5ed94fb194305d74f064a8d7b50f0e",
               "5b89f0036ca22909471f1e6558eb42fa06e0c730a577bde5b058b40638f81dc9",
               "b101d421688bbaecbd82e8a18f1e282378d6830f3a37666f28ebc47f844341b5"),
}
PLANETOID_FILES: dict[str, list[RemoteFile]] = {
    name: [RemoteFile(f"ind.{name}.{part}", f"{_URL}/ind.{name}.{part}", sha)
           for part, sha in zip(_PARTS, shas, strict=True)]
    for name, shas in _SHA256.items()
}
_CLASSES = {
    "cora": ["Case_Based", "Genetic_Algorithms", "Neural_Networks", "Probabilistic_Methods",
             "Reinforcement_Learning", "Rule_Learning", "Theory"],
    "citeseer": ["Agents", "AI", "DB", "IR", "ML", "HCI"],
    "pubmed": ["Diabetes Mellitus Experimental", "Diabetes Mellitus Type 1", "Diabetes Mellitus Type 2"],
}
_GCN_ACCURACY = {"cora": 0.815, "citeseer": 0.703, "pubmed": 0.790}


class GraphSplit(Dataset):
    """A whole graph as one item ``(x, y)``: features ``(N, F)`` and labels ``(N,)`` masked to one split."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> None:
        self.x = x
        self.y = torch.where(mask, y, torch.full_like(y, IGNORE_INDEX))
        self.mask = mask

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if index not in (0, -1):
            raise IndexError(f"GraphSplit holds one graph; index {index} is out of range")
        return self.x, self.y


def _dense(obj: Any, path: Path, what: str) -> np.ndarray:
    if hasattr(obj, "toarray"):
        obj = obj.toarray()
    if not isinstance(obj, np.ndarray) or obj.ndim != 2:
        raise DataError(f"{path}: expected a 2-d {what} matrix; got {type(obj).__name__}")
    return obj.astype(np.float32)


def read_planetoid(name: str, paths: Mapping[str, Path]) -> dict[str, Any]:
    """The graph tensors of one Planetoid data set from its eight ``ind.*`` files (see the module doc)."""
    raw: dict[str, Any] = {}
    for part in _PARTS[:-1]:
        path = paths[f"ind.{name}.{part}"]
        raw[part] = restricted_load(path.read_bytes(), PLANETOID_GLOBALS, what=str(path))
    index_path = paths[f"ind.{name}.test.index"]
    try:
        test_index = np.array([int(line) for line in index_path.read_text().split()], dtype=np.int64)
    except ValueError as err:
        raise DataError(f"{index_path}: expected one integer node id a line ({err})") from err

    x, tx, allx = (_dense(raw[p], paths[f"ind.{name}.{p}"], "feature") for p in ("x", "tx", "allx"))
    y, ty, ally = (_dense(raw[p], paths[f"ind.{name}.{p}"], "one-hot label") for p in ("y", "ty", "ally"))
    if len(x) != len(y) or len(y) > len(allx):
        raise DataError(f"ind.{name}: expected x and y with one row per training node (a prefix of allx); "
                        f"got {len(x)}, {len(y)} and {len(allx)} rows")
    if len(tx) != len(test_index) or len(ty) != len(test_index):
        raise DataError(f"ind.{name}: {len(test_index)} test ids but tx has {len(tx)} rows and ty {len(ty)}")
    sorted_test = np.sort(test_index)
    lo, hi = int(sorted_test[0]), int(sorted_test[-1])
    if name == "citeseer":  # isolated test-range nodes: zero rows over the gaps (Kipf's fix-up)
        tx_full = np.zeros((hi - lo + 1, tx.shape[1]), dtype=np.float32)
        ty_full = np.zeros((hi - lo + 1, ty.shape[1]), dtype=np.float32)
        tx_full[sorted_test - lo], ty_full[sorted_test - lo] = tx, ty
        tx, ty = tx_full, ty_full
    features = np.concatenate([allx, tx])
    onehot = np.concatenate([ally, ty])
    labels = onehot.argmax(axis=1).astype(np.int64)
    # the tx rows are stored in test.index order; node ids are the sorted order
    features[test_index] = features[sorted_test]
    labels[test_index] = labels[sorted_test]
    n = len(labels)

    graph = raw["graph"]
    if not isinstance(graph, dict):
        raise DataError(f"ind.{name}.graph: expected a dict of neighbour lists; got {type(graph).__name__}")
    src = np.fromiter((s for s, nbrs in graph.items() for _ in nbrs), dtype=np.int64)
    dst = np.fromiter((d for nbrs in graph.values() for d in nbrs), dtype=np.int64)
    keep = src != dst  # drop self loops
    src, dst = src[keep], dst[keep]
    if len(src) and (min(src.min(), dst.min()) < 0 or max(src.max(), dst.max()) >= n):
        raise DataError(f"ind.{name}.graph: node ids must be in 0..{n - 1}")
    pairs = np.unique(dst * n + src)  # merge duplicates; sort by (target, source) as PyG's coalesce does
    edge_index = torch.from_numpy(np.stack([pairs % n, pairs // n]))  # (2, E): row 0 source, row 1 target

    train_mask = torch.zeros(n, dtype=torch.bool)
    train_mask[: len(y)] = True
    val_mask = torch.zeros(n, dtype=torch.bool)
    val_mask[len(y): len(y) + 500] = True
    test_mask = torch.zeros(n, dtype=torch.bool)
    test_mask[torch.from_numpy(test_index)] = True
    return {"x": torch.from_numpy(features), "y": torch.from_numpy(labels), "edge_index": edge_index,
            "train_mask": train_mask, "val_mask": val_mask, "test_mask": test_mask}


def _planetoid(ctx: LoadContext, name: str, normalize_features: bool) -> DataBundle:
    paths = ctx.files(name, name, PLANETOID_FILES[name])
    g = read_planetoid(name, paths)
    x = g["x"]
    if normalize_features:  # each row sums to 1 (rows of zeros stay zero)
        x = x / x.sum(dim=1, keepdim=True).clamp(min=1.0)
    y = g["y"]
    n, f = x.shape
    counts = {s: int(g[f"{s}_mask"].sum()) for s in ("train", "val", "test")}
    return DataBundle(
        name=name, task="node_classification",
        train=GraphSplit(x, y, g["train_mask"]), test=GraphSplit(x, y, g["test_mask"]),
        num_classes=len(_CLASSES[name]), input_shape=(n, f),
        meta={"x": x, "y": y, "edge_index": g["edge_index"], "train_mask": g["train_mask"],
              "val_mask": g["val_mask"], "test_mask": g["test_mask"], "val": GraphSplit(x, y, g["val_mask"]),
              "num_nodes": n, "num_edges": int(g["edge_index"].shape[1]), "classes": _CLASSES[name],
              "ignore_index": IGNORE_INDEX, "normalize_features": normalize_features,
              "split": f"Planetoid (Yang et al. 2016): {counts['train']} train / {counts['val']} val / "
                       f"{counts['test']} test nodes", "split_sizes": counts,
              "reference_accuracy": {"gcn_kipf_welling_2017": _GCN_ACCURACY[name]},
              "source": f"https://github.com/kimiyoung/planetoid (commit {_COMMIT})",
              "licence": "MIT (kimiyoung/planetoid); data from LINQS (Sen et al. 2008)"},
    )


@register_dataset("cora", summary="Cora citation graph, 2708 nodes, 1433 features, 7 classes",
                  task="node_classification")
def _cora(ctx: LoadContext, *, normalize_features: bool = True) -> DataBundle:
    return _planetoid(ctx, "cora", normalize_features)


@register_dataset("citeseer", summary="CiteSeer citation graph, 3327 nodes, 3703 features, 6 classes",
                  task="node_classification")
def _citeseer(ctx: LoadContext, *, normalize_features: bool = True) -> DataBundle:
    return _planetoid(ctx, "citeseer", normalize_features)


@register_dataset("pubmed", summary="PubMed citation graph, 19717 nodes, 500 features, 3 classes",
                  task="node_classification")
def _pubmed(ctx: LoadContext, *, normalize_features: bool = True) -> DataBundle:
    return _planetoid(ctx, "pubmed", normalize_features)


# Zachary's karate club (1977): 34 members, 78 friendships, the club's split into two factions.
KARATE_TRAIN = (0, 33)  # the instructor ("Mr. Hi") and the club's officer (John A.): one labelled node per faction
KARATE_VAL = tuple(range(4, 33, 4))  # 4, 8, ..., 32: eight nodes for early stopping; the other 24 are the test split


@register_dataset("karate", summary="Zachary's karate club, 34 nodes, 2 factions, 2 labelled (offline, networkx)",
                  task="node_classification", offline=True)
def _karate(ctx: LoadContext) -> DataBundle:
    """Zachary's karate club from networkx: identity features (Kipf & Welling's featureless graph, section 6.3).

    Labels are the two factions the club split into (networkx's ``club`` attribute: 0 = "Mr. Hi",
    1 = "Officer"). Training labels two nodes, the faction leaders 0 and 33 (one per class); the
    validation split is nodes 4, 8, ..., 32 (8 nodes), the test split the other 24.
    """
    import networkx as nx

    g = nx.karate_club_graph()
    n = g.number_of_nodes()
    clubs = ["Mr. Hi", "Officer"]
    y = torch.tensor([clubs.index(g.nodes[i]["club"]) for i in range(n)], dtype=torch.int64)
    src, dst = zip(*g.edges())  # 78 undirected edges
    both = np.array([src + dst, dst + src], dtype=np.int64)  # (2, 156): each edge in both directions
    pairs = np.unique(both[1] * n + both[0])  # sorted by (target, source) like the Planetoid graphs
    edge_index = torch.from_numpy(np.stack([pairs % n, pairs // n]))
    x = torch.eye(n)  # (N, N) one-hot node ids: the graph is featureless
    masks = {s: torch.zeros(n, dtype=torch.bool) for s in ("train", "val", "test")}
    masks["train"][list(KARATE_TRAIN)] = True
    masks["val"][list(KARATE_VAL)] = True
    masks["test"] = ~(masks["train"] | masks["val"])
    counts = {s: int(m.sum()) for s, m in masks.items()}
    return DataBundle(
        name="karate", task="node_classification",
        train=GraphSplit(x, y, masks["train"]), test=GraphSplit(x, y, masks["test"]),
        num_classes=2, input_shape=(n, n),
        meta={"x": x, "y": y, "edge_index": edge_index, "train_mask": masks["train"], "val_mask": masks["val"],
              "test_mask": masks["test"], "val": GraphSplit(x, y, masks["val"]), "num_nodes": n,
              "num_edges": int(edge_index.shape[1]), "classes": clubs, "ignore_index": IGNORE_INDEX,
              "split": f"train = nodes {list(KARATE_TRAIN)} (the faction leaders), val = nodes {list(KARATE_VAL)}, "
                       f"test = the other {counts['test']}", "split_sizes": counts,
              "source": "networkx.karate_club_graph() (Zachary 1977), offline",
              "licence": "networkx BSD-3-Clause; data from W. W. Zachary (1977)"},
    )
