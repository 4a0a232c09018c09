"""Checkpoints: atomic pairs with a manifest; tampered, half-written, foreign and pickled ones are refused."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as st_save

from nnatlas.train import checkpoint as ckpt
from nnatlas.train.checkpoint import CheckpointError


def _model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))


def _save(run: Path, model: torch.nn.Module, step: int = 7, name: str = "tiny") -> None:
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    model(torch.randn(5, 4)).sum().backward()
    opt.step()
    opt_tensors, opt_plain = ckpt.optimizer_to_parts(opt)
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()} | opt_tensors
    ckpt.save_checkpoint(run, model_name=name, step=step, tensors=tensors, state={"optimizer": opt_plain, "epoch": 1})


def _manifest(run: Path) -> dict:
    return json.loads((run / ckpt.MANIFEST).read_text())


def _rewrite_with_hash(run: Path, rel: str, data: bytes) -> None:
    """Replace a checkpoint file and fix the manifest's sha256, as an attacker would."""
    (run / rel).write_bytes(data)
    m = _manifest(run)
    m["files"][rel] = hashlib.sha256(data).hexdigest()
    (run / ckpt.MANIFEST).write_text(json.dumps(m))


def test_roundtrip_restores_model_and_optimizer(tmp_path: Path) -> None:
    model = _model()
    _save(tmp_path, model)
    c = ckpt.load_checkpoint(tmp_path, model_name="tiny")
    fresh = _model()
    ckpt.load_model_state(c, fresh, "test")
    for k, v in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    opt = torch.optim.Adam(fresh.parameters(), lr=0.5)
    ckpt.optimizer_from_parts(opt, c.subset("optim"), c.state["optimizer"])
    assert opt.param_groups[0]["lr"] == 0.01 and opt.param_groups[0]["betas"] == (0.9, 0.999)
    assert torch.equal(opt.state[opt.param_groups[0]["params"][0]]["exp_avg"], c.tensors["optim.0.exp_avg"])
    assert c.state["epoch"] == 1 and c.state["step"] == 7


def test_new_checkpoint_replaces_the_old_pair_only_after_the_manifest(tmp_path: Path) -> None:
    model = _model()
    _save(tmp_path, model, step=3)
    _save(tmp_path, model, step=9)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step-000000009.json", "step-000000009.safetensors"]
    assert _manifest(tmp_path)["step"] == 9
    assert not [p for p in tmp_path.rglob("*") if ".tmp-" in p.name]  # no temporary file left behind


def test_tampered_tensor_file_is_refused(tmp_path: Path) -> None:
    _save(tmp_path, _model())
    rel = _manifest(tmp_path)["tensors"]
    data = bytearray((tmp_path / rel).read_bytes())
    data[-1] ^= 0xFF  # one bit of one weight
    (tmp_path / rel).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        ckpt.load_checkpoint(tmp_path, model_name="tiny")


def test_tampered_json_and_half_pair_are_refused(tmp_path: Path) -> None:
    _save(tmp_path, _model())
    rel = _manifest(tmp_path)["state"]
    doc = json.loads((tmp_path / rel).read_text())
    doc["epoch"] = 5
    (tmp_path / rel).write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="sha256"):
        ckpt.load_checkpoint(tmp_path, model_name="tiny")
    (tmp_path / rel).unlink()
    with pytest.raises(CheckpointError, match="missing"):
        ckpt.load_checkpoint(tmp_path, model_name="tiny")


class _Bomb:
    """Unpickling this creates a file: proof that a pickle was loaded."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.makedirs, (self.path,))


@pytest.mark.parametrize("kind", ["pickle", "torch.save"])
def test_checkpoint_holding_a_pickle_is_refused_and_never_unpickled(tmp_path: Path, kind: str) -> None:
    run = tmp_path / "run"
    _save(run, _model())
    sentinel = tmp_path / "unpickled"
    if kind == "pickle":
        data = pickle.dumps({"model.0.weight": _Bomb(str(sentinel))})
    else:
        path = tmp_path / "evil.pt"
        torch.save({"model.0.weight": torch.zeros(3, 4), "bomb": _Bomb(str(sentinel))}, path)
        data = path.read_bytes()
    _rewrite_with_hash(run, _manifest(run)["tensors"], data)  # the hash matches: only the format can stop it
    with pytest.raises(CheckpointError, match="pickle"):
        ckpt.load_checkpoint(run, model_name="tiny")
    assert not sentinel.exists()


def test_foreign_checkpoints_are_refused(tmp_path: Path) -> None:
    _save(tmp_path, _model(), name="tiny")
    with pytest.raises(CheckpointError, match="belongs to model 'tiny'"):
        ckpt.load_checkpoint(tmp_path, model_name="lenet")
    # A valid checkpoint of the same name whose tensors do not fit the model.
    c = ckpt.load_checkpoint(tmp_path, model_name="tiny")
    with pytest.raises(CheckpointError, match="does not belong to this model"):
        ckpt.load_model_state(c, torch.nn.Sequential(torch.nn.Linear(4, 5)), "test")
    # A safetensors file from elsewhere (no nnatlas metadata), hash fixed up.
    _rewrite_with_hash(tmp_path, _manifest(tmp_path)["tensors"], st_save({"w": torch.zeros(2)}))
    with pytest.raises(CheckpointError, match="not an nnatlas checkpoint"):
        ckpt.load_checkpoint(tmp_path, model_name="tiny")
    # A manifest of another format, and one pointing outside the run folder.
    m = _manifest(tmp_path)
    (tmp_path / ckpt.MANIFEST).write_text(json.dumps(m | {"format": "other"}))
    with pytest.raises(CheckpointError, match="not an nnatlas checkpoint manifest"):
        ckpt.load_checkpoint(tmp_path, model_name="tiny")
    (tmp_path / ckpt.MANIFEST).write_text(json.dumps(m | {"tensors": "../../etc/passwd"}))
    with pytest.raises(CheckpointError, match="outside"):
        ckpt.load_checkpoint(tmp_path, model_name="tiny")


def test_weights_file_checks_format_and_model(tmp_path: Path) -> None:
    model = _model()
    ckpt.save_weights(tmp_path / "w.safetensors", model, model_name="tiny")
    fresh = _model()
    ckpt.load_weights(tmp_path / "w.safetensors", fresh, model_name="tiny")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))
    with pytest.raises(CheckpointError, match="weights of 'tiny'"):
        ckpt.load_weights(tmp_path / "w.safetensors", fresh, model_name="lenet")
    (tmp_path / "p.safetensors").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CheckpointError, match="pickle"):
        ckpt.load_weights(tmp_path / "p.safetensors", fresh, model_name="tiny")


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    ckpt.atomic_write_text(target, "old")

    with pytest.raises(TypeError):
        ckpt.atomic_write_bytes(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]
