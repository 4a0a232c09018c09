"""``nnatlas show`` and ``nnatlas draw``: output, files, and one-line errors with a non-zero exit."""

from __future__ import annotations

import sys
import os

import pytest

from nnatlas.cli import main


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_show_prints_card_and_summary(capsys) -> None:
    assert main(["show", "lenet", "--depth", "1"]) == 0
    out = capsys.readouterr().out
    assert "LeNet" in out and "published params: 61,706" in out
    assert "Total params: 61,706" in out and "conv1" in out and "Conv2d" in out


def test_show_with_an_input_shape(capsys) -> None:
    assert main(["show", "resnet18", "--input", "1,3,64,64"]) == 0
    assert "Input: [1, 3, 64, 64]" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["show", "lenett"], "unknown model 'lenett'; did you mean 'lenet'"),
        (["show", "lenet", "--input", "1,x,32"], "--input expects positive sizes"),
        (["show", "lenet", "--input", "1,3,32,32"], "expects"),  # LeNet takes one channel
        (["show", "lenet", "--depth", "-1"], "--depth"),
        (["draw", "lenet", "-o", "/no/such/dir/lenet.svg"], "does not exist"),
        (["draw", "lenet", "-o", "x.svg", "--format", "gif"], "--format expects"),
        (["draw", "lenet", "-o", "x.svg", "--lang", "fr"], "lang"),
        (["show", "transformer", "--input", "1,16"], "takes 2 inputs"),
    ],
    ids=["unknown", "malformed-input", "rejected-shape", "depth", "unwritable", "format", "lang", "multi-input"],
)
def test_bad_input_is_one_line_and_non_zero(argv: list[str], needle: str, capsys) -> None:
    assert main(argv) == 2
    line = _error_line(capsys)
    assert line.startswith(f"nnatlas {argv[0]}: error: ") and needle in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_directory(tmp_path, capsys) -> None:
    tmp_path.chmod(0o500)
    try:
        assert main(["draw", "lenet", "-o", str(tmp_path / "lenet.svg")]) == 2
        assert "not writable" in _error_line(capsys)
    finally:
        tmp_path.chmod(0o700)


def test_draw_writes_the_diagram_and_one_file_per_block(tmp_path, capsys) -> None:
    out = tmp_path / "resnet18.svg"
    assert main(["draw", "resnet18", "-o", str(out)]) == 0
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["resnet18.svg", "resnet18_BasicBlock.svg", "resnet18_BasicBlock_downsample.svg"]
    assert capsys.readouterr().out.split() == [str(tmp_path / w) for w in
                                               ["resnet18.svg", "resnet18_BasicBlock.svg",
                                                "resnet18_BasicBlock_downsample.svg"]]


def test_draw_options(tmp_path) -> None:
    assert main(["draw", "lenet", "-o", str(tmp_path / "a"), "--format", "dot", "--lang", "zh", "--no-blocks"]) == 0
    assert "输入" in (tmp_path / "a.dot").read_text()
    assert main(["draw", "densenet121", "-o", str(tmp_path / "d.dot"), "--depth", "2", "--no-blocks"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.dot", "d.dot"]
    assert "[B, C=6, H=28, W=28]" in (tmp_path / "a.dot").read_text()  # axis names by default
    assert main(["draw", "lenet", "-o", str(tmp_path / "b.dot"), "--bare-shapes", "--no-blocks"]) == 0
    assert "[B, 6, 28, 28]" in (tmp_path / "b.dot").read_text()


def test_draw_without_graphviz_writes_dot_and_says_how_to_install(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys.modules["nnatlas.inspect.diagram"], "_find_dot", lambda: None)
    assert main(["draw", "lenet", "-o", str(tmp_path / "lenet.svg")]) == 2
    line = _error_line(capsys)
    assert "apt-get install graphviz" in line and "brew install graphviz" in line
    assert (tmp_path / "lenet.dot").exists() and not (tmp_path / "lenet.svg").exists()
