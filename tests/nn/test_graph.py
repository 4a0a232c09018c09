"""GCNConv: the three adjacency forms agree, the dense equation of Kipf & Welling holds, and
``from_reference`` equals PyG's GCNConv in outputs and gradients."""

from __future__ import annotations

import pytest
import torch

from nnatlas.errors import ShapeError
from nnatlas.nn import GCNConv

N, F_IN, F_OUT = 9, 5, 4


def _graph(with_loops: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """An undirected weighted graph on N nodes, node 8 isolated; optionally two self-loops."""
    g = torch.Generator().manual_seed(3)
    pairs = torch.tensor([[0, 1], [0, 2], [1, 2], [2, 3], [3, 4], [4, 5], [5, 6], [6, 7], [1, 7], [0, 5]]).T
    weight = torch.rand(pairs.shape[1], generator=g, dtype=torch.float64) + 0.5
    edge_index = torch.cat([pairs, pairs.flip(0)], dim=1)  # (2, 20), both directions
    edge_weight = torch.cat([weight, weight])
    if with_loops:
        edge_index = torch.cat([edge_index, torch.tensor([[3, 6], [3, 6]])], dim=1)
        edge_weight = torch.cat([edge_weight, torch.tensor([0.7, 3.0], dtype=torch.float64)])
    return edge_index, edge_weight


def _dense(edge_index: torch.Tensor, edge_weight: torch.Tensor) -> torch.Tensor:
    A = torch.zeros(N, N, dtype=edge_weight.dtype)
    A[edge_index[1], edge_index[0]] = edge_weight  # A[i, j]: edge j -> i
    return A


def _layer(**kwargs: bool) -> GCNConv:
    torch.manual_seed(0)
    layer = GCNConv(F_IN, F_OUT, **kwargs).double()
    with torch.no_grad():
        layer.bias.normal_()  # nonzero, so a missing bias would show
    return layer


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
@pytest.mark.parametrize("with_loops", [False, True])
@pytest.mark.parametrize("improved", [False, True])
def test_adjacency_forms_agree(with_loops: bool, improved: bool) -> None:
    layer = _layer(improved=improved)
    x = torch.randn(N, F_IN, dtype=torch.float64)
    edge_index, edge_weight = _graph(with_loops)
    A = _dense(edge_index, edge_weight)
    out = layer(x, edge_index, edge_weight)
    for adjacency in (A, A.to_sparse_coo(), A.to_sparse_csr()):
        torch.testing.assert_close(layer(x, adjacency), out, rtol=1e-12, atol=1e-12)  # same edges, float64


def test_equals_kipf_welling_dense_equation() -> None:
    layer = _layer()
    x = torch.randn(N, F_IN, dtype=torch.float64)
    A = _dense(*_graph())
    A_hat = A + torch.eye(N, dtype=torch.float64)  # A + I
    d = A_hat.sum(1)  # D_ii = sum_j A_hat_ij, self-loop counted
    expected = torch.diag(d**-0.5) @ A_hat @ torch.diag(d**-0.5) @ x @ layer.lin.weight.T + layer.bias
    torch.testing.assert_close(layer(x, A), expected, rtol=1e-12, atol=1e-12)


def test_unnormalised_is_a_h_w() -> None:
    layer = _layer(normalize=False, add_self_loops=False)
    x = torch.randn(N, F_IN, dtype=torch.float64)
    A = _dense(*_graph(with_loops=True))
    torch.testing.assert_close(layer(x, A), A @ x @ layer.lin.weight.T + layer.bias, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="normalize"):
        GCNConv(F_IN, F_OUT, normalize=False)  # self-loops come with the normalisation, as in PyG


def test_bool_adjacency_and_unweighted_edge_index_agree() -> None:
    layer = _layer()
    x = torch.randn(N, F_IN, dtype=torch.float64)
    edge_index, _ = _graph()
    torch.testing.assert_close(layer(x, _dense(edge_index, torch.ones(edge_index.shape[1])) > 0), layer(x, edge_index))


def test_bad_inputs_raise_shape_error() -> None:
    layer = GCNConv(F_IN, F_OUT)
    x = torch.randn(N, F_IN)
    edge_index, _ = _graph()
    with pytest.raises(ShapeError, match=r"expects x \(N, 5\); got \(9, 6\)"):
        layer(torch.randn(N, 6), edge_index)
    with pytest.raises(ShapeError, match=r"entries in \[0, 9\)"):
        layer(x, torch.tensor([[0, 9], [1, 2]]))
    with pytest.raises(ShapeError, match=r"entries in \[0, 9\)"):
        layer(x, torch.tensor([[0, -1], [1, 2]]))
    with pytest.raises(ShapeError, match=r"\(9, 9\)"):
        layer(x, torch.ones(N, N + 1))
    with pytest.raises(ShapeError, match=r"\(2, E\)"):
        layer(x, torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(ShapeError, match="edge_weight"):
        layer(x, edge_index, torch.ones(3))


def _pyg_layer(**kwargs: bool) -> torch.nn.Module:
    pyg = pytest.importorskip("torch_geometric.nn")
    torch.manual_seed(1)
    ref = pyg.GCNConv(F_IN, F_OUT, **kwargs)
    with torch.no_grad():
        if ref.bias is not None:
            ref.bias.normal_()
    return ref


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"improved": True}, {"bias": False}, {"normalize": False, "add_self_loops": False}, {"add_self_loops": False}],
    ids=["default", "improved", "no-bias", "unnormalised", "no-self-loops"],
)
@pytest.mark.parametrize("with_loops", [False, True])
def test_from_reference_equals_pyg(kwargs: dict[str, bool], with_loops: bool) -> None:
    ref = _pyg_layer(**kwargs).eval()
    layer = GCNConv.from_reference(ref).eval()
    assert set(layer.state_dict()) == set(ref.state_dict())  # lin.weight (out, in) and bias, as PyG
    edge_index, edge_weight = _graph(with_loops)
    edge_weight = edge_weight.float()
    x = torch.randn(N, F_IN)
    x_ref, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    for weights in (None, edge_weight):
        # PyG 2.x ignores improved=True without edge weights (its self-loops then weigh 1, not 2);
        # with explicit unit weights it computes A + 2I, which nnatlas always does
        ref_weights = torch.ones(edge_index.shape[1]) if weights is None and ref.improved else weights
        out_ref = ref(x_ref, edge_index, ref_weights)
        out = layer(x_ours, edge_index, weights)
        torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-5)  # float32, different summation order
        grad = torch.randn_like(out)
        g_ref = torch.autograd.grad(out_ref, [x_ref, *ref.parameters()], grad)
        g_ours = torch.autograd.grad(out, [x_ours, *layer.parameters()], grad)
        for a, b in zip(g_ours, g_ref):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # the dense form of the same graph gives PyG's answer too
    torch.testing.assert_close(layer(x, _dense(edge_index, edge_weight)), ref(x, edge_index, edge_weight), rtol=1e-5, atol=1e-5)


def test_from_reference_rejects_other_modules() -> None:
    with pytest.raises(TypeError, match="GCNConv"):
        GCNConv.from_reference(torch.nn.Linear(2, 2))


def _sparse_features(layout: torch.layout, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Node features (N, F_IN) with about 30 % non-zeros, dense and in ``layout``."""
    g = torch.Generator().manual_seed(4)
    x = torch.where(torch.rand(N, F_IN, generator=g) < 0.3, torch.randn(N, F_IN, generator=g), 0.0).to(dtype)
    return x, (x.to_sparse_coo() if layout == torch.sparse_coo else x.to_sparse_csr())


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
@pytest.mark.parametrize("cached", [False, True])
@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr], ids=["coo", "csr"])
def test_sparse_x_equals_dense_x(layout: torch.layout, cached: bool) -> None:
    """X W as a sparse matmul: the dense x's outputs and gradients to lin.weight and bias."""
    layer = _layer(cached=cached)
    x, xs = _sparse_features(layout)
    edge_index, edge_weight = _graph()
    for _ in range(2):  # with cached=True the second call reads the cache
        out, out_s = layer(x, edge_index, edge_weight), layer(xs, edge_index, edge_weight)
        torch.testing.assert_close(out_s, out, rtol=1e-12, atol=1e-12)  # float64, sums reordered
        grad = torch.randn_like(out)
        for a, b in zip(torch.autograd.grad(out_s, list(layer.parameters()), grad),
                        torch.autograd.grad(out, list(layer.parameters()), grad)):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_sparse_x_under_bfloat16_autocast() -> None:
    """torch has no bfloat16 CSR matmul on CPU: the sparse X W runs in x's dtype, the rest autocasts."""
    layer = GCNConv(F_IN, F_OUT)
    x, xs = _sparse_features(torch.sparse_csr, torch.float32)
    edge_index, _ = _graph()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(xs, edge_index)
    out.float().sum().backward()
    assert layer.lin.weight.grad is not None and layer.lin.weight.grad.dtype == torch.float32
    torch.testing.assert_close(out.float(), layer(x, edge_index), rtol=2e-2, atol=2e-2)  # bfloat16 has 8 mantissa bits


def test_bad_sparse_x_raises_shape_error() -> None:
    layer = GCNConv(F_IN, F_OUT)
    edge_index, _ = _graph()
    x, _ = _sparse_features(torch.sparse_coo, torch.float32)
    with pytest.raises(ShapeError, match=r"expects x \(N, 5\) dense, sparse COO or sparse CSR; got layout torch.sparse_csc"):
        layer(x.to_sparse_csc(), edge_index)
    # sparse rows, dense columns: (N, F_IN) with sparse_dim 1, dense_dim 1
    hybrid = torch.sparse_coo_tensor(torch.tensor([[0, 3]]), torch.ones(2, F_IN), (N, F_IN), check_invariants=True)
    with pytest.raises(ShapeError, match="expects sparse x with scalar values \\(dense_dim 0\\); got dense_dim 1"):
        layer(hybrid, edge_index)
    with pytest.raises(ShapeError, match=r"expects x \(N, 5\); got \(9, 4\)"):
        layer(x[:, :4].to_sparse_coo(), edge_index)
