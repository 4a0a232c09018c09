"""Diagrams: blocks, collapsed repeats, skip connections, recurrence, several inputs, zh, rendering."""

from __future__ import annotations

import sys
import subprocess

import pytest
import torch
from torch import nn

import nnatlas
import nnatlas.nn as nnn
from nnatlas.inspect import GraphvizMissingError, diagram
from nnatlas.inspect.graph import Graph


def _in_edges(g: Graph, node_id: str) -> list[str]:
    return [e.src for e in g.edges if e.dst == node_id]


def _titled(g: Graph, title: str) -> list[str]:
    return [n.id for n in g.nodes if n.title == title]


def test_resnet18_blocks_as_the_seed_draws_them() -> None:
    d = diagram("resnet18")
    assert [b.name for b in d.blocks] == ["BasicBlock", "BasicBlock_downsample"]
    assert "BasicBlock x 2" in [n.title for n in d.graph.nodes]
    assert "rankdir=BT" in d.dot() and 'fillcolor="#30638e"' in d.dot() and "shape=Mrecord" in d.dot()
    assert "Conv2D\\n[K=7, S=2, P=3, In=3, Out=64]" in d.dot()
    for block in d.blocks:  # the residual + reads the block's input: a skip connection
        g = block.graph
        (add,) = _titled(g, "+")
        sources = _in_edges(g, add)
        assert len(sources) == 2
        if block.name == "BasicBlock":
            assert "input" in sources
        else:  # the down-sampling block's shortcut is the 1x1 stride-2 convolution
            assert any(n.id.startswith("downsample") for n in g.nodes)
            assert "K=1, S=2" in block.dot()


def test_densenet121_dense_block_layer_and_transition() -> None:
    d = diagram("densenet121")
    blocks = {b.name: b for b in d.blocks}
    assert list(blocks) == ["DenseBlock", "DenseLayer", "Transition"]
    assert "DenseLayer x 6" in [n.title for n in blocks["DenseBlock"].graph.nodes]
    layer = blocks["DenseLayer"].graph
    (cat,) = [n.id for n in layer.nodes if n.title.startswith("cat")]
    assert "input" in _in_edges(layer, cat)  # the concatenation keeps the layer's input
    assert "AvgPool2D" in blocks["Transition"].dot()  # the paper's average pooling, not the seed's max
    # the repeats are collapsed on the main diagram too, with their shapes on the edges
    assert len(d.graph.nodes) < 30
    collapsed = diagram("densenet201", depth=None, blocks=False)
    assert len(collapsed.graph.nodes) < 40


def test_unet_skip_concatenations() -> None:
    d = diagram("unet", depth=2, blocks=False)
    cats = [n.id for n in d.graph.nodes if n.title.startswith("cat")]
    assert len(cats) == 4
    for cat in cats:  # one input from the up path, one from the encoder across the U
        assert len(_in_edges(d.graph, cat)) == 2


def test_recurrent_cell_drawn_once_with_its_steps(svg_warnings) -> None:
    class Loop(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cell = nnn.LSTMCell(8, 16)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            state = None
            for t in range(x.shape[1]):
                state = self.cell(x[:, t], state)
            return state[0]

    d = diagram(Loop(), torch.randn(2, 100, 8))
    assert len(d.graph.nodes) < 10
    (cell,) = [n for n in d.graph.nodes if n.path == "cell"]
    assert cell.steps == 100
    assert any(e.src == e.dst == cell.id and e.label == "x 100" for e in d.graph.edges)
    assert svg_warnings(d.dot()) == ""


def test_lstm_over_100_steps_stays_small() -> None:
    d = diagram("lstm", torch.randn(1, 100, 28), depth=None)
    assert len(d.graph.nodes) < 30
    assert sum(len(b.graph.nodes) for b in d.blocks) < 30


@pytest.mark.parametrize("name, inputs", [("gcn", 2), ("transformer", 2)])
def test_several_inputs(name: str, inputs: int, svg_warnings) -> None:
    d = diagram(name, blocks=False)
    assert len([n for n in d.graph.nodes if n.kind == "input"]) == inputs
    assert svg_warnings(d.dot()) == ""


def test_tuple_outputs_and_the_sampling_step() -> None:
    d = diagram("vae")
    outputs = [n for n in d.graph.nodes if n.kind == "output"]
    assert len(outputs) == 3  # reconstruction, mu, logvar
    assert "ε ~ N(0, I)" in d.dot()


def test_chinese_labels_with_a_font_that_exists(svg_warnings) -> None:
    d = diagram("lenet", lang="zh")
    assert "输入" in d.dot() and "输出" in d.dot() and "input" not in d.dot().replace('"input"', "")
    font = d.style.cjk_fontname
    assert f'fontname="{font}"' in d.dot()
    listed = subprocess.run(["fc-list", ":lang=zh", "family"], capture_output=True, text=True, check=False).stdout
    if not listed:
        pytest.skip("fontconfig lists no CJK font here (apt-get install fonts-wqy-zenhei)")
    assert font in listed
    assert svg_warnings(d.dot()) == ""


def test_depth_opens_blocks() -> None:
    shallow, deep = diagram("resnet18", depth=1, blocks=False), diagram("resnet18", depth=None, blocks=False)
    assert len(deep.graph.nodes) > len(shallow.graph.nodes)
    assert any(n.title == "+" for n in deep.graph.nodes) and not any(n.title == "+" for n in shallow.graph.nodes)
    with pytest.raises(ValueError, match="depth"):
        diagram("resnet18", depth=0)
    with pytest.raises(ValueError, match="lang"):
        diagram("resnet18", lang="fr")


def test_render_formats_and_atomic_files(tmp_path) -> None:
    d = diagram("lenet", blocks=False)
    for fmt in ("svg", "png", "pdf", "dot"):
        path = d.render(tmp_path / f"lenet.{fmt}")
        assert path.stat().st_size > 0
    assert (tmp_path / "lenet.svg").read_text().lstrip().startswith("<?xml")
    assert (tmp_path / "lenet.dot").read_text() == d.dot()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lenet.dot", "lenet.pdf", "lenet.png", "lenet.svg"]
    with pytest.raises(ValueError, match="format"):
        d.render(tmp_path / "x.gif")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        d.render(tmp_path / "missing" / "x.svg")


def test_without_graphviz_the_dot_text_is_written(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(sys.modules["nnatlas.inspect.diagram"], "_find_dot", lambda: None)
    d = diagram("lenet", blocks=False)
    with pytest.raises(GraphvizMissingError, match="apt-get install graphviz"):
        d.render(tmp_path / "lenet.svg")
    assert (tmp_path / "lenet.dot").read_text() == d.dot()
    assert not (tmp_path / "lenet.svg").exists()


def test_default_densenet121_drawing_renders_quickly(svg_warnings) -> None:
    import time

    d = diagram("densenet121")
    start = time.perf_counter()
    for text in [d.dot()] + [b.dot() for b in d.blocks]:
        assert svg_warnings(text) == ""
    assert time.perf_counter() - start < 3 * 3  # 3 s on an idle machine; the margin is for busy CI cores


def test_dict_outputs_are_named_by_their_keys(svg_warnings) -> None:
    class Heads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Linear(8, 8)
            self.mu, self.logvar = nn.Linear(8, 2), nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            h = torch.relu(self.body(x))
            return {"mu": self.mu(h), "logvar": self.logvar(h)}

    d = diagram(Heads(), torch.randn(3, 8))
    outputs = {n.title: n.out_shape for n in d.graph.nodes if n.kind == "output"}
    assert outputs == {"output.mu": (3, 2), "output.logvar": (3, 2)}
    # the two heads read the same hidden tensor: not collapsed into "Linear x 2"
    assert [n.title for n in d.graph.nodes if n.kind == "layer"].count("Linear") == 3
    assert svg_warnings(d.dot()) == ""
