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


def test_cached_equals_uncached_forward_and_grad() -> None:
    torch.manual_seed(0)
    plain = GCNConv(5, 3)
    cached = GCNConv(5, 3, cached=True)
    cached.load_state_dict(plain.state_dict())
    x = torch.randn(N, 5)
    for _ in range(2):  # the second call reads the cache
        a, b = plain(x, _ring(1)), cached(x, _ring(1))
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # the same ops on the same numbers
        ga = torch.autograd.grad(a.square().sum(), list(plain.parameters()))
        gb = torch.autograd.grad(b.square().sum(), list(cached.parameters()))
        for p, q in zip(ga, gb):
            torch.testing.assert_close(p, q, rtol=0, atol=0)


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
