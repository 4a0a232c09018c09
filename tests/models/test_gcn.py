"""The two-layer GCN equals PyG's stacked GCNConv, ``gnn`` is seed 004's A H W, the graph
is validated at the entry, and the GCN learns node labels from the graph alone."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import nnatlas
from nnatlas.errors import ShapeError
from nnatlas.models.gcn import GCN, sparse_dropout


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


# --- sparse node features (Kipf & Welling's code: sparse X, dropout on its stored values, sparse X W) ---------


def _features(n: int, f: int, density: float, seed: int) -> torch.Tensor:
    """Dense (n, f) features with about ``density`` non-zeros, bag-of-words-like positive values."""
    g = torch.Generator().manual_seed(seed)
    return torch.where(torch.rand(n, f, generator=g) < density, torch.rand(n, f, generator=g) + 0.1, 0.0)


def _uncoalesced(x: torch.Tensor) -> torch.Tensor:
    """x as a COO matrix that stores every entry twice, each holding half of its value."""
    i = x.nonzero().T  # (2, nnz)
    v = x[i[0], i[1]] / 2
    return torch.sparse_coo_tensor(torch.cat([i, i], 1), torch.cat([v, v]), x.shape, check_invariants=True)


SPARSE_FORMS = {
    "coo": lambda x: x.to_sparse_coo(),
    "csr": lambda x: x.to_sparse_csr(),
    "coo-uncoalesced": _uncoalesced,
}


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
@pytest.mark.parametrize("form", list(SPARSE_FORMS))
@pytest.mark.parametrize("name", ["gcn", "gnn"])
def test_sparse_features_equal_dense_in_eval(name: str, form: str) -> None:
    """Eval mode (no dropout): same logits and the same weight gradients from sparse and dense x."""
    torch.manual_seed(0)
    model = nnatlas.create(name, in_features=50, hidden=8, num_classes=4).eval()
    x, edge_index = _features(30, 50, 0.1, seed=1), _random_graph(30, 0.15, seed=2)
    out, out_s = model(x, edge_index), model(SPARSE_FORMS[form](x), edge_index)
    torch.testing.assert_close(out_s, out, rtol=1e-5, atol=1e-6)  # float32, sums reordered
    grad = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out_s, list(model.parameters()), grad),
                    torch.autograd.grad(out, list(model.parameters()), grad)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_sparse_dropout_drops_stored_values_only(layout: str) -> None:
    """Zeros stay zero, survivors are scaled by 1 / (1 - p), and about p of the stored values are dropped."""
    p = 0.3
    x = _features(200, 100, 0.2, seed=3)  # about 4,000 stored values
    xs = SPARSE_FORMS[layout](x)
    dropout = torch.nn.Dropout(p)
    torch.manual_seed(0)
    out = sparse_dropout(xs, dropout)
    assert out.layout == xs.layout
    dense = out.to_dense()
    assert torch.equal(dense[x == 0], torch.zeros(int((x == 0).sum())))  # a zero is never made non-zero
    stored = x != 0
    kept = dense[stored] != 0
    torch.testing.assert_close(dense[stored][kept], x[stored][kept] / (1 - p), rtol=1e-6, atol=0)  # inverted dropout
    n = int(stored.sum())
    rate = 1 - kept.float().mean().item()
    sigma = (p * (1 - p) / n) ** 0.5  # binomial standard deviation of the drop rate, about 0.007 here
    assert abs(rate - p) < 5 * sigma, (rate, p, n)
    dropout.eval()
    assert sparse_dropout(xs, dropout) is xs  # eval: the identity, as nn.Dropout
    assert sparse_dropout(xs, torch.nn.Dropout(0.0)) is xs


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_sparse_train_forward_is_dropout_then_layers_and_reproducible() -> None:
    """Train mode: the model's forward is sparse_dropout(x), conv1, ReLU, dropout, conv2 under one
    global seed (the trainer's per-step seed), bit for bit; another seed gives other masks."""
    torch.manual_seed(0)
    model = nnatlas.create("gcn", in_features=50, hidden=8, num_classes=4).train()
    x, edge_index = _features(30, 50, 0.1, seed=4).to_sparse_csr(), _random_graph(30, 0.15, seed=5)
    torch.manual_seed(7)
    out = model(x, edge_index)
    torch.manual_seed(7)
    h = F.relu(model.conv1(sparse_dropout(x, model.dropout), edge_index))
    expected = model.conv2(model.dropout(h), edge_index)
    assert torch.equal(out, expected)
    torch.manual_seed(7)
    assert torch.equal(model(x, edge_index), out)  # seeded: reproducible
    torch.manual_seed(8)
    assert not torch.equal(model(x, edge_index), out)


def test_bad_sparse_features_name_expected_and_got() -> None:
    model = nnatlas.create("gcn", in_features=50)
    x, edge_index = _features(30, 50, 0.1, seed=6), _random_graph(30, 0.15, seed=7)
    with pytest.raises(ShapeError, match=r"GCN expects node features x \(N, 50\); got \(30, 49\)"):
        model(x[:, :49].to_sparse_coo(), edge_index)
    with pytest.raises(ShapeError, match=r"dense, sparse COO or sparse CSR; got layout torch.sparse_csc"):
        model(x.to_sparse_csc(), edge_index)
    with pytest.raises(ShapeError, match=r"of dtype torch.float32 \(the model's parameters\); got torch.float64"):
        model(x.double().to_sparse_coo(), edge_index)
    with pytest.raises(ShapeError, match="of a floating dtype; got torch.int64"):
        model(x.long().to_sparse_coo(), edge_index)
    hybrid = torch.sparse_coo_tensor(torch.tensor([[0, 3]]), torch.ones(2, 50), (30, 50), check_invariants=True)
    with pytest.raises(ShapeError, match="scalar values \\(dense_dim 0\\); got dense_dim 1"):
        model(hybrid, edge_index)
