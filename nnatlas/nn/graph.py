"""Graph convolution (Kipf & Welling, 2017) written from its equation, laid out like PyG's ``GCNConv``.

Thomas N. Kipf and Max Welling, "Semi-Supervised Classification with Graph Convolutional
Networks", ICLR 2017, equation 2:

    H' = D^-1/2 (A + I) D^-1/2 H W + b,    D_ii = sum_j (A + I)_ij  (self-loops counted)

Letters: N nodes, E edges, F input features, F' output features.

The adjacency comes in three forms, all read the same way (row i gathers from its
neighbours j, so an edge j -> i is ``A[i, j]`` and column ``(j, i)`` of an edge index):

- a dense float (or bool) tensor A of shape (N, N);
- a torch sparse COO or CSR tensor of shape (N, N);
- an ``edge_index`` (2, E) of integer dtype, PyG-style ``(source, target)`` rows, with
  optional ``edge_weight`` (E,).

For an undirected graph A is symmetric and the direction does not matter. Every form is
turned into an edge list and aggregated with ``index_add`` (the message passing PyG does),
so the three agree exactly and duplicate edges add up. Self-loops follow PyG's
``add_remaining_self_loops``: a node that already has a self-loop keeps its weight,
every other node gets weight 1 (2 with ``improved=True``, Kipf & Welling's A + 2I).
(PyG 2.x drops ``improved`` when called without edge weights, giving its self-loops weight 1;
here the self-loops weigh 2 with or without edge weights.)
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from nnatlas.errors import ShapeError, check_input
from nnatlas.nn.names import name

__all__ = ["SPARSE_LAYOUTS", "GCNConv", "check_node_features", "gcn_norm", "to_edge_index"]


def to_edge_index(
    adjacency: torch.Tensor,
    num_nodes: int,
    edge_weight: torch.Tensor | None = None,
    *,
    model: str = "GCNConv",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Any adjacency form -> ``(edge_index (2, E) int64 as (source, target), edge_weight (E,) or None)``.

    Raises :class:`ShapeError` (naming ``model``) for an adjacency that does not fit ``num_nodes``
    nodes: a dense or sparse matrix that is not (N, N), an edge index that is not (2, E) or
    holds an index outside [0, N), edge weights that are not (E,).
    """
    N = num_nodes
    if not isinstance(adjacency, torch.Tensor):
        raise ShapeError(
            f"{model} expects the adjacency as a tensor: dense or sparse (N, N) or an edge_index (2, E); "
            f"got {type(adjacency).__name__}"
        )
    if adjacency.layout in (torch.sparse_coo, torch.sparse_csr):
        if tuple(adjacency.shape) != (N, N):
            raise ShapeError(f"{model} expects a sparse adjacency ({N}, {N}) for {N} nodes; got {tuple(adjacency.shape)}")
        if edge_weight is not None:
            raise ValueError(f"{model}: edge_weight goes with an edge_index; a sparse adjacency holds its own values")
        coo = (adjacency.to_sparse_coo() if adjacency.layout == torch.sparse_csr else adjacency).coalesce()
        target, source = coo.indices()  # A[i, j]: row i is the target, column j the source
        return torch.stack([source, target]), coo.values()
    if adjacency.layout != torch.strided:
        raise ShapeError(f"{model} expects a dense, COO or CSR adjacency; got layout {adjacency.layout}")
    if adjacency.is_floating_point() or adjacency.dtype == torch.bool:
        if tuple(adjacency.shape) != (N, N):
            raise ShapeError(f"{model} expects a dense adjacency ({N}, {N}) for {N} nodes; got {tuple(adjacency.shape)}")
        if edge_weight is not None:
            raise ValueError(f"{model}: edge_weight goes with an edge_index; a dense adjacency holds its own values")
        target, source = adjacency.nonzero(as_tuple=True)  # (E,) each
        values = adjacency[target, source]  # (E,), differentiable for float A
        return torch.stack([source, target]), None if adjacency.dtype == torch.bool else values
    if adjacency.is_complex():
        raise ShapeError(f"{model} expects a real adjacency; got {adjacency.dtype}")
    # an integer tensor is an edge index
    if adjacency.dim() != 2 or adjacency.shape[0] != 2:
        raise ShapeError(
            f"{model} expects an integer adjacency to be an edge_index (2, E); got {tuple(adjacency.shape)} "
            f"(a dense adjacency must be float or bool)"
        )
    edge_index = adjacency.long()
    if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= N):
        raise ShapeError(
            f"{model} expects edge_index entries in [0, {N}) for {N} nodes; "
            f"got entries in [{int(edge_index.min())}, {int(edge_index.max())}]"
        )
    if edge_weight is not None:
        check_input(edge_weight, (edge_index.shape[1],), model=model, name="edge_weight")
    return edge_index, edge_weight


SPARSE_LAYOUTS = (torch.sparse_coo, torch.sparse_csr)  # the sparse node-feature layouts GCNConv and the GCN take


def check_node_features(
    x: torch.Tensor, in_features: int, *, model: str, name: str = "node features x", like: nn.Module | None = None
) -> bool:
    """Node features (N, F) dense, sparse COO or sparse CSR (scalar values) of a floating dtype (the
    parameters' with ``like``) -> whether they are sparse; raises :class:`ShapeError` naming what
    was expected and what came."""
    check_input(x, ("N", in_features), model=model, name=name, like=like)
    if x.layout == torch.strided:
        return False
    if x.layout not in SPARSE_LAYOUTS:
        raise ShapeError(
            f"{model} expects {name} (N, {in_features}) dense, sparse COO or sparse CSR; got layout "
            f"{x.layout}; convert with x.to_sparse_csr()"
        )
    if x.dense_dim() != 0:
        raise ShapeError(
            f"{model} expects sparse {name} with scalar values (dense_dim 0); got dense_dim "
            f"{x.dense_dim()} with shape {tuple(x.shape)}"
        )
    return True


def gcn_norm(
    edge_index: torch.Tensor,
    edge_weight: torch.Tensor | None,
    num_nodes: int,
    *,
    improved: bool = False,
    add_self_loops: bool = True,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The symmetric normalisation D^-1/2 (A + I) D^-1/2 as edge weights.

    edge_index (2, E), edge_weight (E,) or None (ones) -> edge_index (2, E'), weight (E',)
    where E' = E plus the self-loops added. The degree counts incoming weight at the
    target, as PyG's ``gcn_norm`` does (the row sum of A in the dense form).
    """
    N = num_nodes
    if edge_weight is None:
        edge_weight = torch.ones(edge_index.shape[1], dtype=dtype, device=edge_index.device)
    if add_self_loops:
        fill = 2.0 if improved else 1.0  # A + 2I with improved=True
        nodes = torch.arange(N, device=edge_index.device)
        loop_weight = torch.full((N,), fill, dtype=edge_weight.dtype, device=edge_weight.device)
        is_loop = edge_index[0] == edge_index[1]
        if bool(is_loop.any()):  # existing loops keep their weight (most graphs have none: skip the masking)
            loop_weight = loop_weight.index_put((edge_index[0][is_loop],), edge_weight[is_loop])
            edge_index, edge_weight = edge_index[:, ~is_loop], edge_weight[~is_loop]
        edge_index = torch.cat([edge_index, torch.stack([nodes, nodes])], dim=1)  # (2, E')
        edge_weight = torch.cat([edge_weight, loop_weight])  # (E',)
    source, target = edge_index
    deg = edge_weight.new_zeros(N).index_add(0, target, edge_weight)  # D_ii = sum_j A_hat_ij
    deg_inv_sqrt = deg.rsqrt().masked_fill(deg == 0, 0.0)  # isolated nodes without loops: 0, not inf
    # A_hat_ij / sqrt(d_i d_j), gathered with index_select (cheaper backward than advanced indexing)
    return edge_index, deg_inv_sqrt.index_select(0, source) * edge_weight * deg_inv_sqrt.index_select(0, target)


_GCN_FORMULA = "Â H W + b"  # eq. 2 of Kipf & Welling, one box in the diagram


class _SparseAggregate(torch.autograd.Function):
    """out = Â h with Â a CSR matrix (N, N) (row i holds the weights i gathers with), and backward
    dL/dh = Â^T dL/dout with Â^T kept as a second CSR matrix: one sparse matmul each way, where
    the edge-list path runs a gather, a product and a scatter per direction. Â is a constant (a
    cached graph): it gets no gradient."""

    @staticmethod
    def forward(ctx, h, A, At):  # noqa: ANN001, ANN205
        ctx.At = At
        return torch.sparse.mm(A, h)  # (N, F')

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        return torch.sparse.mm(ctx.At, grad), None, None


def _csr_pair(
    edge_index: torch.Tensor, edge_weight: torch.Tensor | None, num_nodes: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Â (N, N) and its transpose as CSR matrices from an edge list (source, target) and weights
    (None: ones); duplicate edges add up, as the edge-list path's index_add does."""
    source, target = edge_index
    w = (edge_weight.detach() if edge_weight is not None else torch.ones(source.shape[0], device=source.device)).to(dtype)

    def csr(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        coo = torch.sparse_coo_tensor(torch.stack([rows, cols]), w, (num_nodes, num_nodes), check_invariants=False)
        with warnings.catch_warnings():  # torch's "CSR support is in beta" notice, not the user's concern
            warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta", UserWarning)
            return coo.coalesce().to_sparse_csr()

    return csr(target, source), csr(source, target)  # Â[i, j] for the edge j -> i, and Â^T


class GCNConv(nn.Module):
    """H' = D^-1/2 (A + I) D^-1/2 H W + b (Kipf & Welling, 2017); mirrors PyG's ``GCNConv``.

    Parameters as PyG holds them: ``lin.weight`` (F', F) and ``bias`` (F',). ``cached=True``
    (as PyG's) checks and normalises the graph of the first call once and reuses it on every
    later call, whatever adjacency is passed: for a fixed graph (transductive training, Cora);
    :meth:`reset_cache` forgets it. A cached graph is also kept as CSR matrices Â and Â^T (float32
    and float64 on CPU and CUDA), so that aggregating is one sparse matmul forward and one
    backward (the edge-list path's result up to the order of the sums; edge weights that need
    a gradient keep the edge-list path).
    ``normalize=False`` aggregates with the raw weights, A H W + b (then self-loops are not
    added, and ``add_self_loops=True`` is refused, as in PyG).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        improved: bool = False,
        add_self_loops: bool = True,
        normalize: bool = True,
        bias: bool = True,
        cached: bool = False,
    ) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"GCNConv expects in_channels, out_channels >= 1; got {in_channels}, {out_channels}")
        if add_self_loops and not normalize:
            raise ValueError("GCNConv: add_self_loops=True needs normalize=True (self-loops are added by the normalisation)")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.improved, self.add_self_loops, self.normalize = improved, add_self_loops, normalize
        self.cached = cached
        self._cached_graph: tuple[torch.Tensor, torch.Tensor | None] | None = None  # (edge_index, weight) after gcn_norm
        self._cached_csr: tuple[torch.Tensor, torch.Tensor] | None = None  # (Â, Â^T) as CSR, with the cached graph
        self.lin = nn.Linear(in_channels, out_channels, bias=False)  # W, stored (F', F)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Glorot-uniform W and zero bias, as Kipf & Welling and PyG initialise."""
        nn.init.xavier_uniform_(self.lin.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        self.reset_cache()

    def reset_cache(self) -> None:
        """Forget the normalised graph kept with ``cached=True`` (call it when the graph changes)."""
        self._cached_graph = self._cached_csr = None

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, improved={self.improved}, "
            f"add_self_loops={self.add_self_loops}, normalize={self.normalize}, bias={self.bias is not None}, "
            f"cached={self.cached}"
        )

    def forward(self, x: torch.Tensor, adjacency: torch.Tensor, edge_weight: torch.Tensor | None = None) -> torch.Tensor:
        """x (N, F) dense or sparse COO/CSR, adjacency (N, N) dense/sparse or edge_index (2, E)
        [+ edge_weight (E,)] -> (N, F')."""
        sparse = check_node_features(x, self.in_channels, model="GCNConv", name="x")
        N = x.shape[0]
        if self._cached_graph is not None:  # cached=True: the graph of the first call, checked and normalised then
            edge_index, edge_weight = self._cached_graph
        else:
            edge_index, edge_weight = to_edge_index(adjacency, N, edge_weight)
            if self.normalize:
                edge_index, edge_weight = gcn_norm(
                    edge_index, edge_weight, N, improved=self.improved, add_self_loops=self.add_self_loops,
                    dtype=x.dtype,
                )
                edge_weight = name(edge_weight, "Â", "D^-1/2 (A + I) D^-1/2", desc="normalised adjacency", dims="E")
            if self.cached:
                self._cached_graph = (edge_index, edge_weight)
                sparse_ok = x.dtype in (torch.float32, torch.float64) and x.device.type in ("cpu", "cuda")
                if sparse_ok and (edge_weight is None or not edge_weight.requires_grad):
                    self._cached_csr = _csr_pair(edge_index, edge_weight, N, x.dtype)
        # (N, F'): H W first, the cheaper order when F' < F. On a sparse x, F.linear is torch's sparse
        # matmul (its backward gives lin.weight dL/dh^T X, touching the stored values only), run in x's
        # dtype under autocast too (torch has no bfloat16 CSR matmul on CPU; the sparse product is cheap)
        if sparse and torch.is_autocast_enabled(x.device.type):
            with torch.autocast(x.device.type, enabled=False):
                h = self.lin(x)
        else:
            h = self.lin(x)
        if self._cached_csr is not None and h.dtype == self._cached_csr[0].dtype:
            out = _SparseAggregate.apply(h, *self._cached_csr)  # (N, F'): Â h, one CSR matmul
            if self.bias is not None:
                out = out + self.bias
            return name(out, "H'", _GCN_FORMULA, desc="node features", dims="N F")  # (N, F')
        source, target = edge_index
        # index_select, not h[source]: its backward is an index_add, where advanced indexing's is an
        # index_put with accumulate (slower on CPU)
        messages = h.index_select(0, source)  # (E', F'): h_j for every edge j -> i
        if edge_weight is not None:
            messages = messages * edge_weight[:, None].to(h.dtype)  # A_hat_ij / sqrt(d_i d_j) h_j
        out = h.new_zeros(N, self.out_channels).index_add_(0, target, messages)  # (N, F'): sum over neighbours
        if self.bias is not None:
            out = out + self.bias
        return name(out, "H'", _GCN_FORMULA, desc="node features", dims="N F")  # (N, F')

    @classmethod
    def from_reference(cls, module: nn.Module) -> "GCNConv":
        """The from-scratch layer holding the weights of a ``torch_geometric.nn.GCNConv``."""
        if type(module).__name__ != "GCNConv" or not hasattr(module, "lin"):
            raise TypeError(f"GCNConv.from_reference expects torch_geometric.nn.GCNConv; got {type(module).__name__}")
        if getattr(module, "flow", "source_to_target") != "source_to_target":
            raise ValueError(f"GCNConv.from_reference supports flow='source_to_target'; got {module.flow!r}")
        w = module.lin.weight
        layer = cls(
            module.in_channels,
            module.out_channels,
            improved=module.improved,
            add_self_loops=module.add_self_loops,
            normalize=module.normalize,
            bias=module.bias is not None,
            cached=bool(getattr(module, "cached", False)),
        ).to(device=w.device, dtype=w.dtype)
        layer.load_state_dict(module.state_dict())
        layer.train(module.training)
        return layer
