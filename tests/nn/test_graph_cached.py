"""GCNConv's cached normalisation (PyG's cached=True): the same outputs and gradients as
normalising at every call, the first call's graph reused until reset_cache, and against PyG."""

from __future__ import annotations

import pytest
import torch

from nnatlas.nn import GCNConv

N = 7


def _ring(offset: int) -> torch.Tensor:
    nodes = torch.arange(N)
    pairs = torch.stack([nodes, (nodes + offset) % N])
    return torch.cat([pairs, pairs.flip(0)], dim=1)  # (2, 2N), undirected


def _directed() -> tuple[torch.Tensor, torch.Tensor]:
    """A directed weighted graph with a duplicate edge (2 -> 0 twice): Â is not symmetric, so a
    backward that used Â instead of Â^T would show."""
    edge_index = torch.tensor([[0, 1, 2, 2, 3, 4, 5, 6, 2], [1, 2, 0, 4, 1, 6, 3, 2, 0]])
    return edge_index, torch.rand(edge_index.shape[1], generator=torch.Generator().manual_seed(2)) + 0.5


@pytest.mark.parametrize("graph", ["ring", "directed"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cached_equals_uncached_forward_and_grad(graph: str, dtype: torch.dtype) -> None:
    """The cached layer aggregates with CSR matmuls, the plain one with the edge list."""
    torch.manual_seed(0)
    plain = GCNConv(5, 3).to(dtype)
    cached = GCNConv(5, 3, cached=True).to(dtype)
    cached.load_state_dict(plain.state_dict())
    edges = (_ring(1), None) if graph == "ring" else _directed()
    x = torch.randn(N, 5, dtype=dtype, requires_grad=True)
    tol = dict(rtol=1e-6, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)  # sums reordered
    for _ in range(2):  # the second call reads the cache
        a, b = plain(x, *edges), cached(x, *edges)
        assert cached._cached_csr is not None  # the sparse path ran
        torch.testing.assert_close(a, b, **tol)
        ga = torch.autograd.grad(a.square().sum(), [x, *plain.parameters()])
        gb = torch.autograd.grad(b.square().sum(), [x, *cached.parameters()])
        for p, q in zip(ga, gb):
            torch.testing.assert_close(p, q, **tol)


def test_cache_keeps_the_first_graph_until_reset() -> None:
    torch.manual_seed(0)
    layer = GCNConv(5, 3, cached=True)
    x = torch.randn(N, 5)
    first = layer(x, _ring(1))
    assert torch.equal(layer(x, _ring(2)), first)  # as PyG: the cached graph wins
    layer.reset_cache()
    assert not torch.allclose(layer(x, _ring(2)), first)


def test_cached_matches_pyg_cached() -> None:
    pyg = pytest.importorskip("torch_geometric.nn")
    torch.manual_seed(1)
    ref = pyg.GCNConv(5, 3, cached=True)
    layer = GCNConv.from_reference(ref)
    assert layer.cached
    x = torch.randn(N, 5)
    for edges in (_ring(1), _ring(3)):  # both keep the first graph
        torch.testing.assert_close(layer(x, edges), ref(x, edges), rtol=1e-5, atol=1e-5)  # float32 summation order
