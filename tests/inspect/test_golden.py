"""Golden DOT files: the seed-style drawings of lenet, resnet18, densenet121, the LSTM cell, vae and unet.

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


def _lstm_cell() -> Diagram:
    gen = torch.Generator().manual_seed(0)
    x, h, c = (torch.randn(2, n, generator=gen) for n in (16, 32, 32))
    return diagram(nnn.LSTMCell(16, 32), (x, (h, c)))


CASES = {
    "lenet": lambda: diagram("lenet"),
    "resnet18": lambda: diagram("resnet18"),
    "densenet121": lambda: diagram("densenet121"),
    "lstm_cell": _lstm_cell,
    "vae": lambda: diagram("vae"),
    "unet": lambda: diagram("unet"),
}
# the block drawings the seeds have, by name
EXPECTED_BLOCKS = {
    "resnet18": ["BasicBlock", "BasicBlock_downsample"],
    "densenet121": ["DenseBlock", "DenseLayer", "Transition"],
}


def _drawings(name: str) -> dict[str, str]:
    d = CASES[name]()
    out = {f"{name}.dot": d.dot}
    out.update({f"{name}_{b.name}.dot": b.dot for b in d.blocks})
    return out


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name: str, svg_warnings) -> None:
    drawings = _drawings(name)
    if name in EXPECTED_BLOCKS:
        assert sorted(drawings) == sorted([f"{name}.dot"] + [f"{name}_{b}.dot" for b in EXPECTED_BLOCKS[name]])
    if UPDATE:
        for old in GOLDEN.glob(f"{name}.dot"):
            old.unlink()
        for old in GOLDEN.glob(f"{name}_*.dot"):
            old.unlink()
        for file, text in drawings.items():
            (GOLDEN / file).write_text(text, encoding="utf-8")
    files = [*GOLDEN.glob(f"{name}.dot"), *GOLDEN.glob(f"{name}_*.dot")]
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in files}
    assert sorted(on_disk) == sorted(drawings), "drawings added or gone; NNATLAS_UPDATE_GOLDEN=1 accepts them"
    for file, text in drawings.items():
        assert text == on_disk[file], f"{file} changed; NNATLAS_UPDATE_GOLDEN=1 accepts the new drawing"
        assert svg_warnings(text) == "", file


def test_goldens_cover_the_seed_diagrams() -> None:
    names = {p.name for p in GOLDEN.glob("*.dot")}
    for file in ["lenet.dot", "resnet18.dot", "resnet18_BasicBlock.dot", "resnet18_BasicBlock_downsample.dot",
                 "densenet121.dot", "densenet121_DenseBlock.dot", "densenet121_DenseLayer.dot",
                 "densenet121_Transition.dot", "lstm_cell.dot", "vae.dot", "unet.dot"]:
        assert file in names
    assert "lenet" in nnatlas.list_models()
