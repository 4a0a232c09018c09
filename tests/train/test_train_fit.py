"""A model and a data set that cannot go together are refused before any data is loaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from nnatlas.cli import main


@pytest.mark.parametrize(
    "model,data,message",
    [
        ("lenet", "cora", "model 'lenet' (classification) cannot train on data set 'cora' (node_classification); data sets that fit: "),
        ("linear_regression", "mnist", "model 'linear_regression' (regression) cannot train on data set 'mnist' (classification); data sets that fit: diabetes"),
        ("unet", "cifar10", "model 'unet' (segmentation) cannot train on data set 'cifar10' (classification); data sets that fit: isbi2012"),
    ],
)
def test_mismatch_is_refused_before_any_download(
    model: str, data: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "data"  # empty: a download would be attempted if the data were loaded
    out = tmp_path / "run"
    assert main(["train", model, "--data", data, "--data-dir", str(data_dir), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not data_dir.exists() and not out.exists()
