"""Golden DOT files: the seed-style drawings, in English (golden/) and Chinese (golden/zh/).

lenet, resnet18, densenet121 (main and blocks), the RNN, LSTM and GRU cells, vae, nlp_rnn, unet,
a Transformer encoder layer (with its attention) and mamba_tiny (its block and mixer).
A changed drawing fails here until it is accepted on purpose:

    NNATLAS_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/inspect/test_golden.py

Every golden also renders with ``dot -Tsvg`` without a warning.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import nnatlas
import nnatlas.nn as nnn
from nnatlas.inspect import Diagram, diagram

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("NNATLAS_UPDATE_GOLDEN") == "1"


def _cell(cls: type, *states: int) -> Diagram:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, generator=gen)
    hs = tuple(torch.randn(2, 32, generator=gen) for _ in states)
    return diagram(cls(16, 32), (x, hs if len(hs) > 1 else hs[0]))


def _encoder_layer() -> Diagram:
    layer = nnn.TransformerEncoderLayer(32, 4, 64, dropout=0.1, batch_first=True)
    return diagram(layer, torch.randn(2, 5, 32))


CASES = {
    "lenet": lambda: diagram("lenet"),
    "resnet18": lambda: diagram("resnet18"),
    "densenet121": lambda: diagram("densenet121"),
    "rnn_cell": lambda: _cell(nnn.RNNCell, 32),
    "lstm_cell": lambda: _cell(nnn.LSTMCell, 32, 32),
    "gru_cell": lambda: _cell(nnn.GRUCell, 32),
    "vae": lambda: diagram("vae"),
    "nlp_rnn": lambda: diagram("nlp_rnn"),
    "unet": lambda: diagram("unet"),
    "encoder_layer": _encoder_layer,
    "mamba_tiny": lambda: diagram("mamba_tiny"),
}
# the Chinese goldens: the drawings issue 10 names
ZH = ["densenet121", "rnn_cell", "lstm_cell", "gru_cell", "vae", "nlp_rnn", "encoder_layer", "mamba_tiny"]
# the block drawings the seeds have, by name
EXPECTED_BLOCKS = {
    "resnet18": ["BasicBlock", "BasicBlock_downsample"],
    "densenet121": ["DenseBlock", "DenseLayer", "Transition"],
    "nlp_rnn": ["RNNCell"],
    "encoder_layer": ["MultiheadAttention"],
}


def _drawings(name: str, lang: str) -> dict[str, str]:
    d = CASES[name]()
    out = {f"{name}.dot": d.dot(lang)}
    out.update({f"{name}_{b.name}.dot": b.dot(lang) for b in d.blocks})
    return out


@pytest.mark.parametrize("name, lang", [(n, "en") for n in sorted(CASES)] + [(n, "zh") for n in ZH])
def test_golden(name: str, lang: str, svg_warnings) -> None:
    drawings = _drawings(name, lang)
    folder = GOLDEN if lang == "en" else GOLDEN / lang
    if name in EXPECTED_BLOCKS:
        assert sorted(drawings) == sorted([f"{name}.dot"] + [f"{name}_{b}.dot" for b in EXPECTED_BLOCKS[name]])
    if UPDATE:
        folder.mkdir(exist_ok=True)
        for old in [*folder.glob(f"{name}.dot"), *folder.glob(f"{name}_*.dot")]:
            old.unlink()
        for file, text in drawings.items():
            (folder / file).write_text(text, encoding="utf-8")
    files = [*folder.glob(f"{name}.dot"), *folder.glob(f"{name}_*.dot")]
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in files}
    assert sorted(on_disk) == sorted(drawings), "drawings added or gone; NNATLAS_UPDATE_GOLDEN=1 accepts them"
    for file, text in drawings.items():
        assert text == on_disk[file], f"{file} changed; NNATLAS_UPDATE_GOLDEN=1 accepts the new drawing"
        assert svg_warnings(text) == "", file


def test_goldens_cover_the_seed_diagrams() -> None:
    names = {p.name for p in GOLDEN.glob("*.dot")}
    for file in ["lenet.dot", "resnet18.dot", "resnet18_BasicBlock.dot", "resnet18_BasicBlock_downsample.dot",
                 "densenet121.dot", "densenet121_DenseBlock.dot", "densenet121_DenseLayer.dot",
                 "densenet121_Transition.dot", "rnn_cell.dot", "lstm_cell.dot", "gru_cell.dot", "vae.dot",
                 "nlp_rnn.dot", "unet.dot"]:
        assert file in names
    assert {p.name for p in (GOLDEN / "zh").glob("*.dot")} >= {f"{n}.dot" for n in ZH}
    assert "lenet" in nnatlas.list_models()
