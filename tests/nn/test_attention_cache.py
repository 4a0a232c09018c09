"""MultiheadAttention's cached path (incremental decoding) against its full forward, and KVCache."""

from __future__ import annotations

import pytest
import torch

from nnatlas.nn.attention import KVCache, MultiheadAttention, causal_mask

E, H = 16, 4


@pytest.mark.parametrize("impl", ["sdpa", "manual"])
def test_self_attention_step_by_step_equals_causal_forward(impl: str) -> None:
    torch.manual_seed(0)
    mha = MultiheadAttention(E, H, batch_first=True, impl=impl).eval()
    x = torch.randn(2, 9, E)
    full, _ = mha(x, x, x, attn_mask=causal_mask(9), need_weights=False)
    cache = KVCache(2, H, E // H, capacity=2)  # grows on the way
    parts = [mha.forward_cached(x[:, :4], cache)]  # 4 positions at once, then one at a time
    parts += [mha.forward_cached(x[:, t : t + 1], cache) for t in range(4, 9)]
    assert len(cache) == 9
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=1e-5, atol=1e-6)  # fp32 summation order


def test_cross_attention_with_padding_equals_forward() -> None:
    torch.manual_seed(0)
    mha = MultiheadAttention(E, H, batch_first=True).eval()
    q, mem = torch.randn(3, 5, E), torch.randn(3, 7, E)
    pad = torch.zeros(3, 7, dtype=torch.bool)
    pad[1, 4:] = True
    full, _ = mha(q, mem, mem, key_padding_mask=pad, need_weights=False)
    cached = mha.forward_cached(q, memory_kv=mha.project_kv(mem), key_padding_mask=pad)
    torch.testing.assert_close(cached, full, rtol=1e-5, atol=1e-6)


def test_reorder_selects_rows() -> None:
    cache = KVCache(3, 1, 2, capacity=4)
    k = torch.arange(3.0).view(3, 1, 1, 1).expand(3, 1, 2, 2)
    cache.append(k, k + 10)
    cache.reorder(torch.tensor([2, 2, 0]))
    keys, values = cache.append(torch.zeros(3, 1, 1, 2), torch.zeros(3, 1, 1, 2))
    assert keys[:, 0, 0, 0].tolist() == [2.0, 2.0, 0.0] and values[:, 0, 1, 0].tolist() == [12.0, 12.0, 10.0]


def test_cached_path_refuses_what_it_does_not_support() -> None:
    x = torch.randn(2, 3, E)
    with pytest.raises(ValueError, match="batch_first"):
        MultiheadAttention(E, H).forward_cached(x, KVCache(2, H, E // H))
    mha = MultiheadAttention(E, H, batch_first=True)
    with pytest.raises(ValueError, match="either a cache"):
        mha.forward_cached(x)
