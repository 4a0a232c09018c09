"""Diagrams that teach (issue 10): named tensors and formulas, recurrence, block hyper-parameters, tied
weights, axis names, Chinese labels and block links, checked without the goldens."""

from __future__ import annotations

import re

import pytest
import torch

import nnatlas
import nnatlas.nn as nnn
from nnatlas.inspect import diagram
from nnatlas.inspect.render import TRANSLATIONS, format_shape
from nnatlas.nn.names import name, recording


def _labels(dot: str) -> list[str]:
    """Every label of a DOT text, one string per line of a label."""
    return [line for label in re.findall(r'label="((?:[^"\\]|\\.)*)"', dot) for line in label.split("\\n")]


def _lstm_cell(lang: str = "en") -> str:
    x, h, c = torch.zeros(2, 16), torch.zeros(2, 32), torch.zeros(2, 32)
    return diagram(nnn.LSTMCell(16, 32), (x, (h, c))).dot(lang)


def test_name_is_a_no_op_outside_a_trace_and_scoped_inside() -> None:
    t = torch.ones(3)
    assert name(t, "X") is t
    seen = []
    with recording(lambda *args: seen.append(args[1:])):
        assert name(t, "F[t]", "σ(...)", desc="forget gate", dims="B H") is t
    assert seen == [("F[t]", "σ(...)", "forget gate", "B H")]
    name(t, "after")  # the recorder is gone once the block ends
    assert len(seen) == 1


def test_lstm_cell_names_its_gates_and_states() -> None:
    dot = _lstm_cell()
    for text in ["F[t] (forget gate)", "I[t] (input gate)", "O[t] (output gate)", "CCand[t] (cell candidate)",
                 "X[t] (input)", "H[t-1] (input", "C[t-1] (input", "H[t] (output", "C[t] (output",
                 "σ(X[t] W_f + H[t-1] U_f + b_f)", "O[t] ⊙ tanh(C[t])"]:
        assert text in dot, text
    # the seed's erratum: C[t-1] is read (by the cell-state box), and H[t] = O[t] * tanh(C[t])
    assert '"input hx[1]" -> ' in dot
    assert "C[t] * tanh(O[t])" not in dot


def test_recurrent_layer_is_one_cell_with_its_steps_and_the_same_cell_on_both_paths() -> None:
    fused, loop = (diagram(nnatlas.create("lstm", impl=impl), torch.zeros(1, 28, 28)) for impl in ("fused", "loop"))
    (cell,) = [n for n in fused.graph.nodes if n.block == "LSTMCell"]
    assert cell.title == "LSTMCell x 2" and cell.steps == 28
    assert any(e.src == e.dst == cell.id and e.label == "x 28" for e in fused.graph.edges)
    assert [b.name for b in fused.blocks] == ["LSTMCell"] == [b.name for b in loop.blocks]
    assert fused.blocks[0].dot() == loop.blocks[0].dot()
    assert "F[t] (forget gate)" in fused.blocks[0].dot()


def test_densenet121_blocks_carry_their_hyper_parameters_and_channel_arithmetic() -> None:
    dot = diagram("densenet121", blocks=False).dot()
    for text in ["DenseBlock1", "DenseBlock4", "Transition3", "NLayers=6", "GrowthRate=32", "BNSize=4",
                 "CompRate=0.5", "C=64+6×32=256", "C=512+16×32=1024"]:
        assert text in dot, text


def test_vae_names_mu_log_var_and_z_with_one_sampling_box() -> None:
    dot = diagram("vae", blocks=False).dot()
    for text in ["μ (output, mean)", "log σ² (output, log variance)", "z (latent)", "ε (noise)",
                 "μ + exp(log σ² / 2) ⊙ ε"]:
        assert text in dot, text
    assert '"exp"' not in dot and 'label="×"' not in dot  # the four operations are one box


def test_nlp_rnn_draws_the_tied_weight() -> None:
    d = diagram("nlp_rnn", blocks=False)
    (tied,) = [e for e in d.graph.edges if e.style == "dashed"]
    assert tied.src == "embedding" and tied.label == "embedding.weightᵀ"
    assert d.graph.node(tied.dst).title == "H @ Eᵀ"
    assert "[B, T=35, V=10000]" in d.dot()


def test_axis_names_by_default_and_bare_shapes_on_request() -> None:
    assert format_shape((2, 64, 56, 56), 2) == "[B, C=64, H=56, W=56]"
    assert format_shape((2, 35, 10000), 2, "B T V") == "[B, T=35, V=10000]"
    assert format_shape((2, 256, 56, 56), 2, "B, C=64+6×32, H, W") == "[B, C=64+6×32=256, H=56, W=56]"
    assert format_shape((2, 64, 56, 56), 2, axis_names=False) == "[B, 64, 56, 56]"
    assert "[B, 64, 56, 56]" in diagram("resnet18", blocks=False, bare_shapes=True).dot()


def test_every_tensor_between_boxes_is_a_node_not_an_edge_label() -> None:
    for model in ("resnet18", "densenet121"):
        d = diagram(model)
        for dot in [d.dot()] + [b.dot() for b in d.blocks]:
            assert not re.search(r'-> "[^"]+" \[label="\[', dot), model


def test_chinese_labels_leave_only_type_names_numbers_and_formulas_in_ascii() -> None:
    cell = diagram(nnn.LSTMCell(16, 32), (torch.zeros(2, 16), (torch.zeros(2, 32), torch.zeros(2, 32))))
    drawings = [cell, diagram("vae"), diagram("densenet121"), diagram("nlp_rnn")]
    drawings += [b for d in drawings for b in d.blocks]
    type_names = re.compile(r"^([A-Z][A-Za-z0-9]*( x \d+)?|[+×÷@-]|cat\(dim=\d\)|reshape|select|chunk|split)$")
    hyper = re.compile(r"^\[?[A-Za-z0-9=, ()\[\].+×-]*\]?,?$")  # [K=3, S=1, ...], shapes [B, C=64, ...]
    for d in drawings:
        formulas = [n.title for n in d.graph.nodes if n.kind == "formula"]  # equations: no language
        for line in _labels(d.dot("zh")):
            if line.isascii() and line and not any(line.removeprefix("+ ") in f for f in formulas):
                assert type_names.match(line) or hyper.match(line), (d.name, line)
    assert "遗忘门" in cell.dot("zh") and "输入" in cell.dot("zh") and "增长率=32" in drawings[2].dot("zh")
    assert "均值" in drawings[1].dot("zh") and "输出&短期记忆" not in cell.dot("en")
    assert set(TRANSLATIONS) == {"zh"}


def test_block_boxes_link_to_their_diagrams_in_svg(tmp_path, svg_warnings) -> None:
    d = diagram("resnet18")
    dot = d.dot(href=lambda block: f"{block}.svg")
    assert 'URL="BasicBlock.svg"' in dot and 'target="_top"' in dot
    assert svg_warnings(dot) == ""
    paths = d.render_all(tmp_path / "r.svg", href=lambda block: f"r_{block}.svg", lang="zh")
    svg = paths[0].read_text()
    assert 'href="r_BasicBlock.svg"' in svg and "输入" in svg
    assert "URL=" not in diagram("resnet18").dot(href=lambda block: None)


def test_unknown_language_is_refused() -> None:
    with pytest.raises(ValueError, match="lang"):
        diagram("lenet", blocks=False).dot("fr")
