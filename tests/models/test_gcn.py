"""The two-layer GCN equals PyG's stacked GCNConv, ``gnn`` is seed 004's A H W, the graph
is validated at the entry, and the GCN learns node labels from the graph alone."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import nnatlas
from nnatlas.errors import ShapeError
from nnatlas.models.gcn import GCN


def _random_graph(n: int, p: float, seed: int) -> torch.Tensor:
    """An undirected Erdos-Renyi graph as an edge_index (2, E), both directions."""
    g = torch.Generator().manual_seed(seed)
    upper = torch.triu(torch.rand(n, n, generator=g) < p, diagonal=1)
    i, j = upper.nonzero(as_tuple=True)
    return torch.cat([torch.stack([i, j]), torch.stack([j, i])], dim=1)


def test_two_layers_equal_pyg_stack() -> None:
    pyg = pytest.importorskip("torch_geometric.nn")
    model = nnatlas.create("gcn", in_features=30, hidden=16, num_classes=5).eval()
    conv1, conv2 = pyg.GCNConv(30, 16), pyg.GCNConv(16, 5)
    with torch.no_grad():
        for conv in (conv1, conv2):
            conv.bias.normal_()
    model.conv1.load_state_dict(conv1.state_dict())
    model.conv2.load_state_dict(conv2.state_dict())
    x, edge_index = torch.randn(40, 30), _random_graph(40, 0.1, seed=0)
    expected = conv2(F.relu(conv1(x, edge_index)), edge_index)  # Kipf & Welling eq. 9, eval: no dropout
    out = model(x, edge_index)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)  # float32, different summation order
    grad = torch.randn_like(out)
    ours = torch.autograd.grad(out, list(model.parameters()), grad)
    theirs = torch.autograd.grad(expected, [*conv1.parameters(), *conv2.parameters()], grad)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_gnn_is_seed_004_layer() -> None:
    model = nnatlas.create("gnn", in_features=6, hidden=8, num_classes=3).eval()
    x = torch.randn(10, 6)
    A = torch.zeros(10, 10)
    edge_index = _random_graph(10, 0.4, seed=1)
    A[edge_index[1], edge_index[0]] = 1.0
    # seed 004: x = adj @ x; x = x @ W; x = x + b; relu  (W stored transposed, as lin.weight)
    h = F.relu(A @ x @ model.conv1.lin.weight.T + model.conv1.bias)
    expected = A @ h @ model.conv2.lin.weight.T + model.conv2.bias  # raw logits: the seed's last ReLU is dropped
    torch.testing.assert_close(model(x, A), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model(x, edge_index), expected, rtol=1e-5, atol=1e-5)


def test_gcn_adjacency_forms_agree() -> None:
    model = nnatlas.create("gcn", in_features=7).eval()
    x, edge_index = torch.randn(15, 7), _random_graph(15, 0.3, seed=2)
    A = torch.zeros(15, 15)
    A[edge_index[1], edge_index[0]] = 1.0
    out = model(x, edge_index)
    torch.testing.assert_close(model(x, A), out, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(model(x, A.to_sparse()), out, rtol=1e-6, atol=1e-6)


def test_bad_graph_inputs_name_the_model() -> None:
    model = nnatlas.create("gcn")
    x, edge_index = nnatlas.example_input("gcn")
    with pytest.raises(ShapeError, match=r"GCN expects edge_index entries in \[0, 12\)"):
        model(x, edge_index + 1)
    with pytest.raises(ShapeError, match=r"GCN expects a dense adjacency \(12, 12\)"):
        model(x, torch.ones(12, 11))
    with pytest.raises(ShapeError, match=r"GCN expects node features x \(N, 1433\); got \(12, 100\)"):
        model(torch.randn(12, 100), edge_index)
    with pytest.raises(ShapeError, match="GNN expects"):
        nnatlas.create("gnn")(x.unsqueeze(0), edge_index)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="dropout"):
        nnatlas.create("gcn", dropout=1.0)
    with pytest.raises(ValueError, match="improved"):
        nnatlas.create("gnn", improved=True)
    with torch.device("meta"):
        model = nnatlas.create("gcn")
    assert sum(p.numel() for p in model.parameters()) == 1433 * 16 + 16 + 16 * 7 + 7  # 23,063


def _train(model: GCN, x: torch.Tensor, adjacency: torch.Tensor, y: torch.Tensor, train: torch.Tensor) -> float:
    """Kipf & Welling's recipe (Adam 0.01, weight decay 5e-4, 200 epochs); accuracy on the unlabelled nodes."""
    opt = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=5e-4)
    for _ in range(200):
        model.train()
        loss = F.cross_entropy(model(x, adjacency)[train], y[train])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        pred = model(x, adjacency).argmax(1)
    return (pred[~train] == y[~train]).float().mean().item()


def test_learns_communities_from_the_graph_alone() -> None:
    """Three planted communities (p_in 0.3, p_out 0.02), featureless nodes (identity features),
    two labelled nodes per community: the labels can only come through the edges."""
    g = torch.Generator().manual_seed(0)
    n, k = 60, 3
    y = torch.arange(n) % k
    p = torch.where(y[:, None] == y[None, :], 0.3, 0.02)
    upper = torch.triu(torch.rand(n, n, generator=g) < p, diagonal=1)
    A = (upper | upper.T).float()
    train = torch.zeros(n, dtype=torch.bool)
    train[: 2 * k] = True  # nodes 0..5: two of each community
    torch.manual_seed(0)
    model = nnatlas.create("gcn", in_features=n, num_classes=k)
    accuracy = _train(model, torch.eye(n), A, y, train)
    assert accuracy > 0.85, accuracy  # chance is 1/3


def test_learns_karate_club() -> None:
    nx = pytest.importorskip("networkx")
    graph = nx.karate_club_graph()
    n = graph.number_of_nodes()
    edges = torch.tensor(list(graph.edges())).T
    edge_index = torch.cat([edges, edges.flip(0)], dim=1)  # (2, 156)
    y = torch.tensor([graph.nodes[i]["club"] == "Officer" for i in range(n)]).long()
    train = torch.zeros(n, dtype=torch.bool)
    train[[0, 1, 2, 32, 33, 31]] = True  # the two leaders and two of their nearest members each
    torch.manual_seed(0)
    model = nnatlas.create("gcn", in_features=n, num_classes=2)
    accuracy = _train(model, torch.eye(n), edge_index, y, train)
    assert accuracy > 0.8, accuracy
