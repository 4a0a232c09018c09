"""``nnatlas verify``: published figures need a source, a broken weight mapping is reported as a
failure, a missing reference library is "not checked" (never "pass"), results are cached."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import nnatlas
from nnatlas import registry, verify
from nnatlas.cli import main
from nnatlas.errors import ReferenceMismatchError


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Small workloads on a shared machine (see tests/conftest.py)."""


def test_published_counts_carry_their_source() -> None:
    pytest.importorskip("torchvision")
    check = verify._check_params("resnet18", 11_689_512)
    assert check.status == "pass" and check.published == 11_689_512
    assert "torchvision ResNet18_Weights.IMAGENET1K_V1" in check.source
    assert verify._check_params("resnet18", 11_689_513).status == "fail"
    # a paper's rounded figure is compared within its rounding, and says so
    rounded = verify._check_params("lenet5_1998", 60_000)
    assert rounded.status == "pass" and "LeCun" in rounded.source and rounded.tolerance == "+/- 500"
    # a card figure without a source is computed, never published
    lenet = nnatlas.card("lenet")
    assert lenet.published_params is not None and "lenet" not in verify.PUBLISHED_PARAMS
    computed = verify._check_params("lenet", lenet.published_params)
    assert computed.status == "computed" and computed.published is None and computed.source == ""


def test_macs_against_torchvision_gflops() -> None:
    pytest.importorskip("torchvision")
    ok = verify._check_macs("resnet18", 1_816_557_056)
    assert ok.status == "pass" and ok.published == pytest.approx(1.814e9)
    assert verify._check_macs("resnet18", 2_500_000_000).status == "fail"
    assert verify._check_macs("lenet", 400_000).status == "computed"


def test_reference_equality_passes_for_resnet18() -> None:
    pytest.importorskip("torchvision")
    (case,) = verify.reference_cases("resnet18")
    check = verify._check_reference("resnet18", case)
    assert check.status == "pass", check.detail
    assert "parameter gradients" in check.detail and "1e-4" in check.tolerance


def test_a_broken_weight_mapping_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torchvision")
    honest = registry._CONVERTERS["resnet18"]

    def swapped(name: str, ref: torch.nn.Module) -> torch.nn.Module:
        """Loads every weight, but conv1 and conv2 of one block trade places (same shapes)."""
        model = honest(name, ref)
        block = model.layer1[0]
        with torch.no_grad():
            w1 = block.conv1.weight.clone()
            block.conv1.weight.copy_(block.conv2.weight)
            block.conv2.weight.copy_(w1)
        return model

    monkeypatch.setitem(registry._CONVERTERS, "resnet18", swapped)
    (case,) = verify.reference_cases("resnet18")
    check = verify._check_reference("resnet18", case)
    assert check.status == "fail" and "outputs differ" in check.detail

    def refusing(name: str, ref: torch.nn.Module) -> torch.nn.Module:
        raise ReferenceMismatchError("ResNet from torchvision: reference keys not used: ['fc.bias']")

    monkeypatch.setitem(registry._CONVERTERS, "resnet18", refusing)
    check = verify._check_reference("resnet18", case)
    assert check.status == "fail" and "fc.bias" in check.detail


def test_a_missing_reference_library_is_not_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    real = verify._version
    monkeypatch.setattr(verify, "_version", lambda dist: None if dist == "torchvision" else real(dist))
    (case,) = verify.reference_cases("resnet18")
    check = verify._check_reference("resnet18", case)
    assert check.status == "not checked" and "torchvision is not installed" in check.detail


def test_contract_and_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, bool]] = []
    (report,) = verify.verify(["lenet"], tmp_path, lambda n, r, cached: seen.append((n, cached)))
    kinds = {c.kind: c.status for c in report.checks}
    assert kinds == {"params": "computed", "macs": "computed", "reference": "none", "contract": "pass"}
    (again,) = verify.verify(["lenet"], tmp_path, lambda n, r, cached: seen.append((n, cached)))
    assert seen == [("lenet", False), ("lenet", True)] and again.to_json() == report.to_json()
    monkeypatch.setattr(verify, "cache_key", lambda name: "changed")  # a source edit changes the key
    verify.verify(["lenet"], tmp_path, lambda n, r, cached: seen.append((n, cached)))
    assert seen[-1] == ("lenet", False) and [p.name for p in tmp_path.iterdir()] == ["lenet-changed.json"]


def test_a_contract_failure_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = registry._entry("lenet")
    card = entry.card
    wrong = type(card)(**{**card.__dict__, "output_shape": (7,)})
    monkeypatch.setitem(registry._MODELS, "lenet", type(entry)(entry.factory, wrong, entry.example))
    check = verify._check_contract("lenet")
    assert check.status == "fail" and "the card says" in check.detail


def test_cli_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "v.json"
    assert main(["verify", "linear_regression", "--json", str(out), "--cache", str(tmp_path / "c"), "-q"]) == 0
    table = capsys.readouterr().out
    assert "linear_regression" in table and "checks:" in table and "contract" in table
    data = json.loads(out.read_text())
    assert data[0]["name"] == "linear_regression" and {c["kind"] for c in data[0]["checks"]} >= {"params", "contract"}
    assert main(["verify", "nothing*"]) == 2
