"""MACs and parameter totals of ``nnatlas.summary`` against published figures and hand counts.

torchvision publishes GFLOPS that are multiply-adds at 224x224 (convolutions, linear layers
and attention matmuls). nnatlas also counts normalisations (one MAC per output element),
which moves densenet121 by 0.55%, so the tolerance is the issue's 1%.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import nnatlas
import nnatlas.nn as nnn
from nnatlas.inspect import summary

# torchvision's model documentation, "GFLOPS" column (multiply-adds at 224x224)
TORCHVISION_GMACS = {
    "alexnet": 0.714,
    "vgg16": 15.470,
    "resnet18": 1.814,
    "densenet121": 2.834,
    "googlenet_bn": 1.498,
    "vit_b_16": 17.564,
}


@pytest.mark.parametrize("name", sorted(TORCHVISION_GMACS))
def test_torchvision_published_macs_and_params(name: str) -> None:
    s = summary(name, torch.randn(1, 3, 224, 224))
    assert s.total_macs / 1e9 == pytest.approx(TORCHVISION_GMACS[name], rel=0.01)
    assert s.total_params == nnatlas.card(name).published_params
    assert s.trace.device == "meta"  # shapes only: nothing was computed


def test_bert_base_counts_sequence_length_and_attention() -> None:
    s = summary("bert_base", torch.zeros(1, 128, dtype=torch.long))
    assert s.total_macs / 1e9 == pytest.approx(11.17, rel=0.01)


@pytest.mark.parametrize("lstm", [nnn.LSTM, nn.LSTM], ids=["nnatlas", "torch"])
def test_two_layer_lstm_counts_every_gate_and_step(lstm: type) -> None:
    # 2 layers x 100 steps x batch 2 x 4 gates x (256*256 input + 256*256 hidden)
    s = summary(lstm(256, 256, num_layers=2, batch_first=True), torch.randn(2, 100, 256))
    assert s.total_macs == 2 * 100 * 2 * 4 * (256 * 256 + 256 * 256)
    assert round(s.total_macs / 1e6, 1) == 209.7


def test_linear_counts_every_position_of_a_sequence() -> None:
    s = summary(nn.Linear(256, 256), torch.randn(2, 128, 256))
    assert s.total_macs == 2 * 128 * 256 * 256  # 16.8 M


class _CellLoop(nn.Module):
    def __init__(self, cell: nn.Module) -> None:
        super().__init__()
        self.cell = cell

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = None
        for t in range(x.shape[1]):
            h = self.cell(x[:, t], h)
        return h


@pytest.mark.parametrize("cell", [nnn.GRUCell, nn.GRUCell], ids=["nnatlas", "torch"])
def test_grucell_loop(cell: type) -> None:
    s = summary(_CellLoop(cell(32, 32)), torch.randn(2, 5, 32))
    assert s.total_macs == 5 * 2 * 3 * (32 * 32 + 32 * 32)  # about 0.061 M
    (row,) = [r for r in s.rows if r.path == "cell"]
    assert row.calls == 5


def test_seed_002_inception_table() -> None:
    from nnatlas.models.googlenet import Inception

    x = torch.randn(1, 192, 28, 28)
    block = summary(Inception(192, 64, (96, 128), (16, 32), 32), x)
    conv3 = summary(nn.Conv2d(192, 256, 3, padding=1), x)
    conv5 = summary(nn.Conv2d(192, 256, 5, padding=2), x)
    assert block.total_macs / 1e6 == pytest.approx(128, rel=0.01)
    assert conv3.total_macs / 1e6 == pytest.approx(346, rel=0.01)
    assert conv5.total_macs / 1e6 == pytest.approx(963, rel=0.01)


@pytest.mark.parametrize(
    "module, shape",
    [
        (nn.Conv2d(8, 16, 3, stride=2, groups=2), (2, 8, 15, 15)),
        (nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1), (2, 16, 7, 7)),
        (nn.Conv1d(4, 6, 5), (3, 4, 20)),
        (nn.Linear(10, 7), (4, 5, 10)),
    ],
    ids=["conv2d-groups", "conv-transpose", "conv1d", "linear-3d"],
)
def test_formulas_agree_with_torch_flop_counter(module: nn.Module, shape: tuple[int, ...]) -> None:
    x = torch.randn(shape)
    with FlopCounterMode(display=False) as counter:
        module(x)
    assert summary(module, x).total_macs == counter.get_total_flops() // 2


def test_multihead_attention_matches_flop_counter() -> None:
    mha = nn.MultiheadAttention(64, 4, batch_first=True)
    q, kv = torch.randn(2, 10, 64), torch.randn(2, 12, 64)
    with FlopCounterMode(display=False) as counter:
        mha(q, kv, kv)  # need_weights=True: the bmm path, which the counter sees (not CPU's fused kernel)
    assert summary(mha, (q, kv, kv)).total_macs == counter.get_total_flops() // 2


def test_nnatlas_multihead_attention_counted_like_torch() -> None:
    q = torch.randn(2, 10, 64)
    ours = summary(nnn.MultiheadAttention(64, 4, batch_first=True), (q, q, q)).total_macs
    ref = summary(nn.MultiheadAttention(64, 4, batch_first=True), (q, q, q)).total_macs
    assert ours == ref


def test_norms_cost_one_mac_per_element() -> None:
    x = torch.randn(2, 8, 5, 5)
    assert summary(nnn.BatchNorm2d(8), x).total_macs == x.numel()
    assert summary(nn.LayerNorm(5), x).total_macs == x.numel()
    assert summary(nnn.LocalResponseNorm(5), x).total_macs == x.numel() * 5


class _Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(100, 16)
        self.out = nn.Linear(16, 100, bias=False)
        self.out.weight = self.embed.weight  # tied: one matrix, two uses

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(self.embed(ids))


def test_tied_weights_counted_once() -> None:
    s = summary(_Tied(), torch.zeros(2, 7, dtype=torch.long))
    assert s.total_params == 100 * 16
    assert s.total_macs == 2 * 7 * 16 * 100


def test_gcnconv_counts_the_linear_map_and_the_edges() -> None:
    pyg = pytest.importorskip("torch_geometric.nn")
    x = torch.randn(12, 20)
    edge_index = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7], [1, 2, 3, 4, 5, 6, 7, 0]])
    expected = 12 * 20 * 8 + (8 + 12) * 8  # XW, then 8 edges + 12 self-loops, 8 features each
    assert summary(nnn.GCNConv(20, 8), (x, edge_index)).total_macs == expected
    assert summary(pyg.GCNConv(20, 8), (x, edge_index)).total_macs == expected
