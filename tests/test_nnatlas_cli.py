"""The command line's own commands: list, and one-line errors with exit status 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

import nnatlas
from nnatlas.cli import main


def test_list_prints_every_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == nnatlas.list_models()
    assert any("61,706" in line for line in lines if line.startswith("lenet "))


def test_list_pattern_and_no_match(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "resnet*"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == ["resnet18", "resnet34", "resnet50"]
    assert main(["list", "nosuch*"]) == 2
    assert capsys.readouterr().err.strip() == "nnatlas list: error: no model matches 'nosuch*'"


def test_unknown_model_is_one_line_without_traceback() -> None:
    done = subprocess.run([sys.executable, "-m", "nnatlas", "show", "resnet19"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "did you mean 'resnet18'" in done.stderr
