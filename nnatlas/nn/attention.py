"""Multi-head attention and the Transformer encoder and decoder layers, written from the paper.

Vaswani et al., "Attention Is All You Need", NeurIPS 2017, section 3.2:

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k) + M) V                       (eq. 1)
    MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O,
        head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)

Shapes (batch first inside; ``batch_first=False`` inputs are (L, B, E) as in torch.nn):

    query (B, L, E), key (B, S, E_k), value (B, S, E_v)
      -> q (B, H, L, D), k (B, H, S, D), v (B, H, S, D)       with D = E / H
      -> scores (B, H, L, S) -> weights (B, H, L, S) -> (B, H, L, D) -> (B, L, E)

B batch, L target (query) length, S source (key) length, E embedding size, H heads,
D head size, F feed-forward size.

Each layer mirrors its ``torch.nn`` namesake: the same constructor signature, the same
parameter names (``in_proj_weight``, ``in_proj_bias``, ``out_proj``; ``self_attn``,
``multihead_attn``, ``linear1``, ``linear2``, ``norm1``..``norm3``) so state dicts map 1:1,
the same mask conventions (bool: True = masked out; float: added to the scores) and a
``from_reference(torch_module)`` classmethod. ``impl`` picks the attention kernel:
``"manual"`` computes eq. 1 in plain tensor ops, ``"sdpa"`` (the default) calls
``F.scaled_dot_product_attention``; they are tested equal in forward and gradients.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from nnatlas.errors import ShapeError
from nnatlas.nn.names import name

__all__ = [
    "MultiheadAttention",
    "TransformerEncoderLayer",
    "TransformerDecoderLayer",
    "attention",
    "attention_weights",
    "causal_mask",
    "KVCache",
]

Impl = Literal["sdpa", "manual"]
Activation = str | Callable[[torch.Tensor], torch.Tensor]


_SDPA_FORMULA = "softmax(Q Kᵀ / √d + M) V"  # eq. 1, per head (the diagram's box for the fused kernel)
_WEIGHTS_FORMULA = "softmax(Q Kᵀ / √d + M)"


def _check_impl(impl: str) -> None:
    if impl not in ("sdpa", "manual"):
        raise ValueError(f"impl must be 'sdpa' or 'manual'; got {impl!r}")


def causal_mask(L: int, S: int | None = None, *, device: torch.device | str | None = None) -> torch.Tensor:
    """Bool (L, S) mask, True above the diagonal: position i may not attend to j > i."""
    S = L if S is None else S
    return torch.ones(L, S, dtype=torch.bool, device=device).triu(1)


def _additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A bool mask (True = masked) as the float mask added to the scores: -inf where masked."""
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))
    if not mask.is_floating_point():
        raise TypeError(f"attention masks must be bool or floating; got {mask.dtype}")
    return mask.to(dtype)


def attention_weights(
    q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None = None, *, is_causal: bool = False
) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d_k) + M): q (B, H, L, D), k (B, H, S, D) -> weights (B, H, L, S), rows summing to 1."""
    L, S = q.shape[-2], k.shape[-2]
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, L, S): Q K^T / sqrt(d_k)
    if is_causal:
        scores = scores.masked_fill(causal_mask(L, S, device=q.device), float("-inf"))
    elif mask is not None:
        scores = scores + mask  # + M
    return scores.softmax(dim=-1)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    is_causal: bool = False,
    dropout_p: float = 0.0,
    impl: Impl = "sdpa",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scaled dot-product attention, eq. 1: q (B, H, L, D), k (B, H, S, D), v (B, H, S, Dv).

    ``mask`` is a float mask broadcastable to (B, H, L, S), added to the scores (-inf
    masks out); ``is_causal`` masks j > i instead (no ``mask`` then). Returns the output
    (B, H, L, Dv) and, on the manual path, the attention weights (B, H, L, S) after
    dropout (``None`` on the sdpa path).
    """
    _check_impl(impl)
    if is_causal and mask is not None:
        raise ValueError("attention takes either is_causal or a mask; merge the causal mask into `mask`")
    if impl == "sdpa":
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal)
        return name(out, "heads", _SDPA_FORMULA, desc="attention output", dims="B h L d"), None
    weights = attention_weights(q, k, mask, is_causal=is_causal)  # (B, H, L, S)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    weights = name(weights, "A", _WEIGHTS_FORMULA, desc="attention weights", dims="B h L S")
    return name(weights @ v, "heads", "A V", desc="attention output", dims="B h L d"), weights  # (B, H, L, Dv)


class KVCache:
    """The keys and values one self-attention layer has seen, for token-by-token decoding.

    ``k``, ``v`` are buffers (B, H, capacity, D) of which the first ``length`` positions are
    filled; :meth:`append` writes new positions in place (doubling the buffer when full), so a
    decoding step copies only its own keys and values, not the whole history, and its cost
    stays flat. :meth:`reorder` selects batch rows (beam search: which hypothesis each beam
    now extends).
    """

    def __init__(
        self, batch_size: int, num_heads: int, head_dim: int, capacity: int = 64, *,
        device: torch.device | str | None = None, dtype: torch.dtype | None = None,
    ) -> None:
        shape = (batch_size, num_heads, max(1, capacity), head_dim)
        self.k = torch.empty(shape, device=device, dtype=dtype)
        self.v = torch.empty(shape, device=device, dtype=dtype)
        self.length = 0

    def __len__(self) -> int:
        return self.length

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, H, t, D) after the cached positions -> all keys and values (B, H, S + t, D)."""
        n, t = self.length, k.shape[2]
        if n + t > self.k.shape[2]:  # full: double (amortised O(1) per position)
            grow = max(n + t, 2 * self.k.shape[2]) - self.k.shape[2]
            self.k = F.pad(self.k, (0, 0, 0, grow))
            self.v = F.pad(self.v, (0, 0, 0, grow))
        self.k[:, :, n : n + t] = k
        self.v[:, :, n : n + t] = v
        self.length = n + t
        return self.k[:, :, : n + t], self.v[:, :, : n + t]

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep batch rows ``rows`` (B',) int, in that order (beam search's surviving hypotheses)."""
        self.k = self.k.index_select(0, rows)
        self.v = self.v.index_select(0, rows)


class MultiheadAttention(nn.Module):
    """Multi-head attention (section 3.2.2); mirrors :class:`torch.nn.MultiheadAttention`.

    Parameters: ``in_proj_weight`` (3E, E) stacks W^Q, W^K, W^V when the key and value
    sizes equal E, otherwise ``q_proj_weight`` (E, E), ``k_proj_weight`` (E, kdim) and
    ``v_proj_weight`` (E, vdim); ``in_proj_bias`` (3E); ``out_proj`` is W^O. ``add_bias_kv``
    appends a learned key and value (``bias_k``, ``bias_v``) to the sequence,
    ``add_zero_attn`` a zero key and value, as torch does.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        add_bias_kv: bool = False,
        add_zero_attn: bool = False,
        kdim: int | None = None,
        vdim: int | None = None,
        batch_first: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        impl: Impl = "sdpa",
    ) -> None:
        super().__init__()
        if embed_dim < 1 or num_heads < 1 or embed_dim % num_heads:
            raise ValueError(
                "MultiheadAttention expects embed_dim >= 1 divisible by num_heads >= 1; "
                f"got {embed_dim} and {num_heads}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"MultiheadAttention expects 0 <= dropout < 1; got {dropout}")
        _check_impl(impl)
        factory = {"device": device, "dtype": dtype}
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.dropout, self.batch_first, self.add_zero_attn, self.impl = dropout, batch_first, add_zero_attn, impl

        if self._qkv_same_embed_dim:
            self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim, **factory))  # [W^Q; W^K; W^V]
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        else:
            self.q_proj_weight = nn.Parameter(torch.empty(embed_dim, embed_dim, **factory))
            self.k_proj_weight = nn.Parameter(torch.empty(embed_dim, self.kdim, **factory))
            self.v_proj_weight = nn.Parameter(torch.empty(embed_dim, self.vdim, **factory))
            self.register_parameter("in_proj_weight", None)
        if bias:
            self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim, **factory))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)  # W^O
        if add_bias_kv:
            self.bias_k = nn.Parameter(torch.empty(1, 1, embed_dim, **factory))
            self.bias_v = nn.Parameter(torch.empty(1, 1, embed_dim, **factory))
        else:
            self.bias_k = self.bias_v = None
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        """torch.nn's initialisation: Xavier-uniform projections, zero biases."""
        if self._qkv_same_embed_dim:
            nn.init.xavier_uniform_(self.in_proj_weight)
        else:
            for w in (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
                nn.init.xavier_uniform_(w)
        if self.in_proj_bias is not None:
            nn.init.zeros_(self.in_proj_bias)
            nn.init.zeros_(self.out_proj.bias)
        if self.bias_k is not None:
            nn.init.xavier_normal_(self.bias_k)
            nn.init.xavier_normal_(self.bias_v)

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, batch_first={self.batch_first}, "
            f"impl={self.impl!r}"
        )

    def _project(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Q W^Q, K W^K, V W^V (plus biases): (B, L, E), (B, S, E), (B, S, E)."""
        E = self.embed_dim
        if self._qkv_same_embed_dim and query is key and key is value:  # self-attention: one GEMM, (B, L, 3E)
            return F.linear(query, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)  # views, no copies
        if self._qkv_same_embed_dim:
            w_q, w_k, w_v = self.in_proj_weight.split(E)
        else:
            w_q, w_k, w_v = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        b_q, b_k, b_v = self.in_proj_bias.split(E) if self.in_proj_bias is not None else (None, None, None)
        return F.linear(query, w_q, b_q), F.linear(key, w_k, b_k), F.linear(value, w_v, b_v)

    def _check(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> None:
        want = "(B, L, E)" if self.batch_first else "(L, B, E)"
        for name, x, size in (("query", query, self.embed_dim), ("key", key, self.kdim), ("value", value, self.vdim)):
            if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[-1] != size:
                got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise ShapeError(
                    f"MultiheadAttention expects {name} {want} with E = {size} (or unbatched 2-d); got {got}"
                )
        b = 0 if self.batch_first else 1
        if not (query.shape[b] == key.shape[b] == value.shape[b]) or key.shape[1 - b] != value.shape[1 - b]:
            raise ShapeError(
                f"MultiheadAttention expects query, key and value with one batch size and key and value of one "
                f"length; got {tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}"
            )

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attend from ``query`` to ``key``/``value``.

        query (B, L, E) (or (L, B, E) unless ``batch_first``; (L, E) unbatched), key (B, S, kdim),
        value (B, S, vdim); ``key_padding_mask`` (B, S); ``attn_mask`` (L, S) or (B * H, L, S);
        masks are bool (True = may not attend) or float (added to the scores). ``is_causal``
        masks j > i when ``attn_mask`` is None (otherwise ``attn_mask`` is taken to be that mask).

        Returns the output, shaped like ``query``, and the attention weights (B, L, S) averaged
        over heads (or (B, H, L, S)) when ``need_weights``, else ``None``. The manual path
        returns the weights it used (after dropout); the sdpa path computes them beside the
        kernel from the same scores, before dropout.
        """
        unbatched = query.dim() == 2
        self_attention = query is key and key is value  # x, x, x: projected by one GEMM in _project
        if unbatched:  # (L, E) -> one sequence
            query, key, value = (x.unsqueeze(1 - int(self.batch_first)) for x in (query, key, value))
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        self._check(query, key, value)
        if not self.batch_first:  # (L, B, E) -> (B, L, E)
            query, key, value = (x.transpose(0, 1) for x in (query, key, value))
        B, L, _ = query.shape
        S, H, D = key.shape[1], self.num_heads, self.head_dim

        if self_attention:  # the reshapes above gave three objects for one tensor
            key = value = query
        q, k, v = self._project(query, key, value)  # (B, L, E), (B, S, E), (B, S, E)
        mask = self._merge_masks(attn_mask, key_padding_mask, is_causal, B, L, S, q.dtype, q.device)
        if self.bias_k is not None:  # one learned key/value appended: S -> S + 1
            k = torch.cat([k, self.bias_k.expand(B, 1, -1)], dim=1)
            v = torch.cat([v, self.bias_v.expand(B, 1, -1)], dim=1)
            mask = F.pad(mask, (0, 1)) if mask is not None else None
        if self.add_zero_attn:  # one zero key/value appended: S -> S + 1
            k = torch.cat([k, k.new_zeros(B, 1, self.embed_dim)], dim=1)
            v = torch.cat([v, v.new_zeros(B, 1, self.embed_dim)], dim=1)
            mask = F.pad(mask, (0, 1)) if mask is not None else None

        q = name(q.view(B, L, H, D).transpose(1, 2), "Q", "X W_Q, h heads", desc="queries", dims="B h L d")
        k = name(k.view(B, -1, H, D).transpose(1, 2), "K", "X W_K, h heads", desc="keys", dims="B h S d")
        v = name(v.view(B, -1, H, D).transpose(1, 2), "V", "X W_V, h heads", desc="values", dims="B h S d")
        if mask is not None:
            mask = name(mask, "M", desc="mask")
        dropout_p = self.dropout if self.training else 0.0
        # with no other mask, the causal case goes to the kernel as a flag (fused kernels skip the mask)
        flag_causal = is_causal and mask is None
        out, weights = attention(q, k, v, mask, is_causal=flag_causal, dropout_p=dropout_p, impl=self.impl)
        out = out.transpose(1, 2).reshape(B, L, self.embed_dim)  # (B, L, E): Concat(head_1..head_H)
        out = self.out_proj(out)  # (B, L, E): W^O

        if need_weights and weights is None:  # sdpa path: the same scores and softmax, no dropout
            weights = attention_weights(q, k, mask, is_causal=flag_causal)
        if not need_weights:
            weights = None
        elif average_attn_weights:
            weights = weights.mean(dim=1)  # (B, L, S)
        if not self.batch_first:
            out = out.transpose(0, 1)  # (L, B, E)
        if unbatched:
            out = out.squeeze(1 - int(self.batch_first))
            weights = weights.squeeze(0) if weights is not None else None
        return out, weights

    def _merge_masks(
        self,
        attn_mask: torch.Tensor | None,
        key_padding_mask: torch.Tensor | None,
        is_causal: bool,
        B: int,
        L: int,
        S: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> torch.Tensor | None:
        """One float mask broadcastable to (B, H, L, S): attn_mask + key_padding_mask (+ causal)."""
        H = self.num_heads
        other_keys = key_padding_mask is not None or self.bias_k is not None or self.add_zero_attn
        if attn_mask is None and is_causal and other_keys:  # the flag cannot combine; spell the mask out
            attn_mask = causal_mask(L, S, device=device)
        mask = None
        if attn_mask is not None:
            if tuple(attn_mask.shape) == (L, S):
                mask = _additive(attn_mask, dtype).view(1, 1, L, S)
            elif tuple(attn_mask.shape) == (B * H, L, S):
                mask = _additive(attn_mask, dtype).view(B, H, L, S)
            else:
                raise ShapeError(
                    f"MultiheadAttention expects attn_mask ({L}, {S}) or ({B * H}, {L}, {S}); "
                    f"got {tuple(attn_mask.shape)}"
                )
        if key_padding_mask is not None:
            if tuple(key_padding_mask.shape) != (B, S):
                raise ShapeError(
                    f"MultiheadAttention expects key_padding_mask ({B}, {S}); got {tuple(key_padding_mask.shape)}"
                )
            pad = _additive(key_padding_mask, dtype).view(B, 1, 1, S)
            mask = pad if mask is None else mask + pad
        return mask

    def _check_cached(self) -> None:
        if not self.batch_first or self.bias_k is not None or self.add_zero_attn or not self._qkv_same_embed_dim:
            raise ValueError(
                "MultiheadAttention's cached path expects batch_first=True, E-sized keys and values and no "
                "add_bias_kv / add_zero_attn; build the layer that way or call forward"
            )

    def project_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of a fixed memory, computed once: memory (B, S, E) -> k, v (B, H, S, D).

        Cross-attention over an encoder output reuses them at every decoding step."""
        self._check_cached()
        B, S, E = memory.shape
        _, w_kv = self.in_proj_weight.split([E, 2 * E])
        b_kv = self.in_proj_bias[E:] if self.in_proj_bias is not None else None
        k, v = F.linear(memory, w_kv, b_kv).view(B, S, 2, self.num_heads, self.head_dim).unbind(2)  # (B, S, H, D)
        return k.transpose(1, 2), v.transpose(1, 2)  # (B, H, S, D) each

    def forward_cached(
        self,
        query: torch.Tensor,
        cache: KVCache | None = None,
        *,
        memory_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        key_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attention for incremental decoding (batch first); the output equals :meth:`forward`'s
        rows for the same positions.

        Self-attention (``cache``): query (B, t, E) holds the t newest positions (t > 1: a
        prompt); their keys and values join ``cache`` and new position i attends to every
        cached position and to new positions <= i. Cross-attention (``memory_kv`` from
        :meth:`project_kv`, ``key_padding_mask`` (B, S) bool): only the queries are projected.
        -> (B, t, E).
        """
        self._check_cached()
        if (cache is None) == (memory_kv is None):
            raise ValueError("MultiheadAttention.forward_cached takes either a cache (self) or memory_kv (cross)")
        B, t, E = query.shape
        H, D = self.num_heads, self.head_dim
        mask = None
        if cache is not None:
            qkv = F.linear(query, self.in_proj_weight, self.in_proj_bias)  # (B, t, 3E): [Q; K; V] of the new positions
            q, k, v = qkv.view(B, t, 3, H, D).transpose(1, 3).unbind(2)  # (B, H, t, D) each
            P = len(cache)  # positions seen before
            k, v = cache.append(k, v)  # (B, H, P + t, D)
            if t > 1:  # new position i (absolute P + i) may not see j > P + i
                mask = _additive(torch.ones(t, P + t, dtype=torch.bool, device=query.device).triu(P + 1), q.dtype)
        else:
            w_q = self.in_proj_weight[:E]
            b_q = self.in_proj_bias[:E] if self.in_proj_bias is not None else None
            q = F.linear(query, w_q, b_q).view(B, t, H, D).transpose(1, 2)  # (B, H, t, D)
            k, v = memory_kv  # (B, H, S, D)
            if key_padding_mask is not None:
                mask = _additive(key_padding_mask, q.dtype).view(B, 1, 1, -1)
        dropout_p = self.dropout if self.training else 0.0
        out, _ = attention(q, k, v, mask, dropout_p=dropout_p, impl=self.impl)  # (B, H, t, D)
        return self.out_proj(out.transpose(1, 2).reshape(B, t, E))  # (B, t, E)

    @classmethod
    def from_reference(cls, module: nn.MultiheadAttention, *, impl: Impl = "sdpa") -> "MultiheadAttention":
        """The from-scratch layer holding ``module``'s (a ``torch.nn.MultiheadAttention``) weights."""
        if not isinstance(module, nn.MultiheadAttention):
            raise TypeError(
                f"MultiheadAttention.from_reference expects torch.nn.MultiheadAttention; got {type(module).__name__}"
            )
        w = module.out_proj.weight
        layer = cls(
            module.embed_dim,
            module.num_heads,
            dropout=module.dropout,
            bias=module.in_proj_bias is not None,
            add_bias_kv=module.bias_k is not None,
            add_zero_attn=module.add_zero_attn,
            kdim=module.kdim,
            vdim=module.vdim,
            batch_first=module.batch_first,
            device=w.device,
            dtype=w.dtype,
            impl=impl,
        )
        layer.load_state_dict(module.state_dict())
        layer.train(module.training)
        return layer


def _activation(activation: Activation) -> Callable[[torch.Tensor], torch.Tensor]:
    if activation == "relu":
        return F.relu
    if activation == "gelu":
        return F.gelu  # the exact erf form, as torch.nn and BERT use
    if callable(activation):
        return activation
    raise ValueError(f"activation must be 'relu', 'gelu' or a callable; got {activation!r}")


def _activation_name(fn: Callable[[torch.Tensor], torch.Tensor]) -> Activation:
    """torch.nn layers store F.relu / F.gelu; give back the string, or the callable itself."""
    return {F.relu: "relu", F.gelu: "gelu"}.get(fn, fn)


def _check_layer_sizes(name: str, d_model: int, nhead: int, dim_feedforward: int, dropout: float) -> None:
    if d_model < 1 or nhead < 1 or d_model % nhead or dim_feedforward < 1:
        raise ValueError(
            f"{name} expects d_model divisible by nhead and dim_feedforward >= 1; "
            f"got d_model={d_model}, nhead={nhead}, dim_feedforward={dim_feedforward}"
        )
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"{name} expects 0 <= dropout < 1; got {dropout}")


def _layer_from_reference(cls: type, module: nn.Module, expected: type, impl: Impl) -> nn.Module:
    """Build ``cls`` with the hyper-parameters of ``module`` (a torch.nn Transformer layer) and its weights."""
    if not isinstance(module, expected):
        raise TypeError(f"{cls.__name__}.from_reference expects torch.nn.{expected.__name__}; got {type(module).__name__}")
    w = module.linear1.weight
    layer = cls(
        module.self_attn.embed_dim,
        module.self_attn.num_heads,
        dim_feedforward=module.linear1.out_features,
        dropout=module.dropout.p,
        activation=_activation_name(module.activation),
        layer_norm_eps=module.norm1.eps,
        batch_first=module.self_attn.batch_first,
        norm_first=module.norm_first,
        bias=module.linear1.bias is not None,
        device=w.device,
        dtype=w.dtype,
        impl=impl,
    )
    layer.load_state_dict(module.state_dict())
    layer.train(module.training)
    return layer


class TransformerEncoderLayer(nn.Module):
    """One encoder layer (section 3.1): self-attention and a position-wise feed-forward network.

    Post-LN (the paper, ``norm_first=False``):  x = LN(x + Dropout(SelfAttn(x))); x = LN(x + Dropout(FFN(x)))
    Pre-LN (``norm_first=True``, ViT):          x = x + Dropout(SelfAttn(LN(x))); x = x + Dropout(FFN(LN(x)))
    FFN(x) = W_2 Dropout(act(W_1 x + b_1)) + b_2                                        (eq. 2)

    Mirrors :class:`torch.nn.TransformerEncoderLayer`; input (B, T, E) with ``batch_first``,
    else (T, B, E); the output has the same shape.
    """

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: Activation = "relu",
        layer_norm_eps: float = 1e-5,
        batch_first: bool = False,
        norm_first: bool = False,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        impl: Impl = "sdpa",
    ) -> None:
        super().__init__()
        _check_layer_sizes("TransformerEncoderLayer", d_model, nhead, dim_feedforward, dropout)
        factory = {"device": device, "dtype": dtype}
        self.self_attn = MultiheadAttention(
            d_model, nhead, dropout, bias=bias, batch_first=batch_first, impl=impl, **factory
        )
        self.linear1 = nn.Linear(d_model, dim_feedforward, bias=bias, **factory)  # W_1
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model, bias=bias, **factory)  # W_2
        self.norm_first = norm_first
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.activation = _activation(activation)
        self.batch_first = batch_first

    def forward(
        self,
        src: torch.Tensor,
        src_mask: torch.Tensor | None = None,
        src_key_padding_mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        """src (B, T, E) (or (T, B, E)); src_mask (T, T) or (B * H, T, T); src_key_padding_mask (B, T) -> like src."""
        x = src
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            x = x + self._ff_block(self.norm2(x))
        else:
            x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal))
            x = self.norm2(x + self._ff_block(x))
        return x

    def _sa_block(
        self, x: torch.Tensor, mask: torch.Tensor | None, key_padding_mask: torch.Tensor | None, is_causal: bool
    ) -> torch.Tensor:
        x = self.self_attn(
            x, x, x, key_padding_mask=key_padding_mask, need_weights=False, attn_mask=mask, is_causal=is_causal
        )[0]
        return self.dropout1(x)

    def _ff_block(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear2(self.dropout(self.activation(self.linear1(x))))  # (.., E) -> (.., F) -> (.., E)
        return self.dropout2(x)

    @classmethod
    def from_reference(cls, module: nn.TransformerEncoderLayer, *, impl: Impl = "sdpa") -> "TransformerEncoderLayer":
        """The from-scratch layer holding ``module``'s (a ``torch.nn.TransformerEncoderLayer``) weights."""
        return _layer_from_reference(cls, module, nn.TransformerEncoderLayer, impl)


class TransformerDecoderLayer(nn.Module):
    """One decoder layer (section 3.1): masked self-attention, attention over the encoder
    output (``memory``) and the feed-forward network, each wrapped like the encoder's.

    Post-LN:  x = LN(x + SelfAttn(x)); x = LN(x + CrossAttn(x, memory)); x = LN(x + FFN(x))

    Mirrors :class:`torch.nn.TransformerDecoderLayer`; tgt (B, T, E), memory (B, S, E) with
    ``batch_first`` (else sequence first); the output is shaped like tgt.
    """

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: Activation = "relu",
        layer_norm_eps: float = 1e-5,
        batch_first: bool = False,
        norm_first: bool = False,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        impl: Impl = "sdpa",
    ) -> None:
        super().__init__()
        _check_layer_sizes("TransformerDecoderLayer", d_model, nhead, dim_feedforward, dropout)
        factory = {"device": device, "dtype": dtype}
        self.self_attn = MultiheadAttention(
            d_model, nhead, dropout, bias=bias, batch_first=batch_first, impl=impl, **factory
        )
        self.multihead_attn = MultiheadAttention(
            d_model, nhead, dropout, bias=bias, batch_first=batch_first, impl=impl, **factory
        )
        self.linear1 = nn.Linear(d_model, dim_feedforward, bias=bias, **factory)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model, bias=bias, **factory)
        self.norm_first = norm_first
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory)
        self.norm3 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.activation = _activation(activation)
        self.batch_first = batch_first

    def forward(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        tgt_mask: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        tgt_key_padding_mask: torch.Tensor | None = None,
        memory_key_padding_mask: torch.Tensor | None = None,
        tgt_is_causal: bool = False,
        memory_is_causal: bool = False,
    ) -> torch.Tensor:
        """tgt (B, T, E), memory (B, S, E); tgt_mask (T, T); memory_mask (T, S); padding masks
        (B, T) and (B, S); ``tgt_is_causal`` masks future target positions -> (B, T, E)."""
        x = tgt
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), tgt_mask, tgt_key_padding_mask, tgt_is_causal)
            x = x + self._mha_block(self.norm2(x), memory, memory_mask, memory_key_padding_mask, memory_is_causal)
            x = x + self._ff_block(self.norm3(x))
        else:
            x = self.norm1(x + self._sa_block(x, tgt_mask, tgt_key_padding_mask, tgt_is_causal))
            x = self.norm2(x + self._mha_block(x, memory, memory_mask, memory_key_padding_mask, memory_is_causal))
            x = self.norm3(x + self._ff_block(x))
        return x

    def _sa_block(
        self, x: torch.Tensor, mask: torch.Tensor | None, key_padding_mask: torch.Tensor | None, is_causal: bool
    ) -> torch.Tensor:
        x = self.self_attn(
            x, x, x, key_padding_mask=key_padding_mask, need_weights=False, attn_mask=mask, is_causal=is_causal
        )[0]
        return self.dropout1(x)

    def _mha_block(
        self,
        x: torch.Tensor,
        mem: torch.Tensor,
        mask: torch.Tensor | None,
        key_padding_mask: torch.Tensor | None,
        is_causal: bool,
    ) -> torch.Tensor:
        x = self.multihead_attn(
            x, mem, mem, key_padding_mask=key_padding_mask, need_weights=False, attn_mask=mask, is_causal=is_causal
        )[0]
        return self.dropout2(x)

    def _ff_block(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear2(self.dropout(self.activation(self.linear1(x))))
        return self.dropout3(x)

    def forward_cached(
        self,
        tgt: torch.Tensor,
        cache: KVCache,
        memory_kv: tuple[torch.Tensor, torch.Tensor],
        memory_key_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One decoding step: tgt (B, t, E) the newest target positions, ``cache`` the self-attention's
        keys and values so far, ``memory_kv`` the memory's keys and values (``multihead_attn.project_kv``)
        -> (B, t, E), equal to :meth:`forward`'s last t rows with ``tgt_is_causal``."""
        x = tgt
        sa = lambda y: self.dropout1(self.self_attn.forward_cached(y, cache))  # noqa: E731
        ca = lambda y: self.dropout2(  # noqa: E731
            self.multihead_attn.forward_cached(y, memory_kv=memory_kv, key_padding_mask=memory_key_padding_mask)
        )
        if self.norm_first:
            x = x + sa(self.norm1(x))
            x = x + ca(self.norm2(x))
            x = x + self._ff_block(self.norm3(x))
        else:
            x = self.norm1(x + sa(x))
            x = self.norm2(x + ca(x))
            x = self.norm3(x + self._ff_block(x))
        return x

    @classmethod
    def from_reference(cls, module: nn.TransformerDecoderLayer, *, impl: Impl = "sdpa") -> "TransformerDecoderLayer":
        """The from-scratch layer holding ``module``'s (a ``torch.nn.TransformerDecoderLayer``) weights."""
        return _layer_from_reference(cls, module, nn.TransformerDecoderLayer, impl)
