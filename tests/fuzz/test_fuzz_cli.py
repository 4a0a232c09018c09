"""Random command lines: exit 0, or an error said in one line (argparse's usage and error for
malformed syntax), never a traceback.

``train`` stops where training would start (``_Run.run`` is replaced by a marker), so that a
valid random command costs nothing and downloads nothing; ``list``, ``show`` and ``eval``
run for real.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nnatlas.cli import build_parser, main
from nnatlas.train import trainer

EXAMPLES = int(os.environ.get("NNATLAS_FUZZ_EXAMPLES", "400")) if os.environ.get("NNATLAS_FUZZ") == "long" else 40


class _Started(BaseException):
    """Training would start here (a BaseException: no handler in the CLI catches it)."""


def _options(command: str) -> list[tuple[str, bool]]:
    """(option, takes a value) of a sub-command, read off the parser."""
    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    return [(opt, a.nargs != 0) for a in sub.choices[command]._actions for opt in a.option_strings
            if opt not in ("-h", "--help")]


VALUES = ["-1", "0", "1", "2", "3", "0.5", "abc", "1e9", "nan", "inf", "", "cpu", "cuda:7", "auto", "digits", "mnist",
          "iris", "..", "/nonexistent/dir", "key=value", "num_classes=x", "0.9,0.99", "1,2", "adam", "sgd", "cosine"]
MODELS = ["lenet", "mlp", "gpt_mini", "linear_regression", "nope", "", "resnet18", "--", "gcn"]


@st.composite
def _argv(draw: st.DrawFn) -> list[str]:
    command = draw(st.sampled_from(["train", "eval", "show", "list", "bogus"]))
    argv = [command]
    if command in ("train", "show", "list"):
        argv.append(draw(st.sampled_from(MODELS)))
    elif command == "eval":
        argv.append(draw(st.sampled_from(["/nonexistent/run", ".", "run"])))
    if command in ("train", "eval", "show"):
        options = _options(command)
        for opt, takes in draw(st.lists(st.sampled_from(options), max_size=5)):
            argv.append(opt)
            if takes:
                argv.append(draw(st.sampled_from(VALUES)))
    return argv


@settings(max_examples=EXAMPLES)
@given(argv=_argv())
def test_random_command_lines(argv: list[str], tmp_path_factory: pytest.TempPathFactory,
                              capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path_factory.mktemp("cli")
    monkeypatch.chdir(work)  # runs/ and relative paths land in a fresh folder
    monkeypatch.setenv("NNATLAS_DATA", str(work / "cache"))  # never the user's cache, never a download
    monkeypatch.setattr(trainer._Run, "run", lambda self: (_ for _ in ()).throw(_Started()))
    capsys.readouterr()
    try:
        rc = main(argv)
    except _Started:
        return
    except SystemExit as exit_:  # argparse: usage and one error line, status 2 (or 0 for --version)
        err = capsys.readouterr().err
        assert exit_.code in (0, 2), (argv, exit_.code)
        assert "Traceback" not in err and (exit_.code == 0 or "error:" in err.splitlines()[-1]), (argv, err)
        return
    err = capsys.readouterr().err
    assert "Traceback" not in err, (argv, err)
    if rc != 0:
        lines = [line for line in err.splitlines() if line.strip()]
        assert rc in (2, 130) and len(lines) == 1 and "error:" in lines[0], (argv, rc, err)


def test_the_marker_stops_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fuzz test's premise: a valid train command reaches _Run.run (and the marker stops it there)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(trainer._Run, "run", lambda self: (_ for _ in ()).throw(_Started()))
    with pytest.raises(_Started):
        main(["train", "mlp", "--epochs", "1"])


@pytest.mark.parametrize("command", ["list", "show", "draw", "train", "eval", "translate", "generate", "sample", "verify", "atlas"])
def test_every_help_prints(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``--help`` of each sub-command prints its options (argparse %-formats help strings: a bare
    ``%`` in a task option's text once made ``nnatlas train --help`` a traceback)."""
    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    if command not in sub.choices:
        pytest.skip(f"no {command!r} sub-command")
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for opt, _ in _options(command):
        assert opt in out
