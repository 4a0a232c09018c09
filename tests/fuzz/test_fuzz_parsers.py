"""Random bytes into every file parser: a clear data or checkpoint error, never anything else.

Targets: IDX (gzipped or not), CSV series, the Pointer Network text files, Planetoid pickles
(the restricted unpickler), safetensors headers and checkpoint JSON (re-hashed, so that the
content checks run, not just the hashes). Each input starts from a valid file and mutates it
(flipped bytes, truncation, insertion) or is pure noise.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import save as st_save

from nnatlas.data import formats
from nnatlas.data.errors import DataError
from nnatlas.data.graphs import PLANETOID_GLOBALS
from nnatlas.data.sequences import parse_pointer_file, read_series_csv
from nnatlas.train import checkpoint as ckpt


def _mutations(valid: bytes) -> st.SearchStrategy[bytes]:
    """``valid`` with bytes flipped, cut or inserted; or noise of a similar length."""
    flips = st.lists(st.tuples(st.integers(0, max(0, len(valid) - 1)), st.integers(0, 255)), max_size=8).map(
        lambda edits: bytes(_apply(valid, edits)))
    cut = st.integers(0, len(valid)).map(lambda n: valid[:n])
    grow = st.tuples(st.integers(0, len(valid)), st.binary(min_size=1, max_size=64)).map(
        lambda t: valid[: t[0]] + t[1] + valid[t[0]:])
    return st.one_of(flips, cut, grow, st.binary(max_size=2 * len(valid) + 16))


def _apply(data: bytes, edits: list[tuple[int, int]]) -> bytearray:
    out = bytearray(data)
    for i, v in edits:
        if out:
            out[i % len(out)] = v
    return out


def _write(tmp: Path, name: str, data: bytes) -> Path:
    path = tmp / name
    path.write_bytes(data)
    return path


# ----------------------------------------------------------------------------- IDX

_IMAGES = bytes([0, 0, 8, 3]) + struct.pack(">iii", 3, 4, 4) + bytes(range(48))


@given(data=_mutations(_IMAGES), gz=st.booleans())
def test_idx(tmp_path_factory: pytest.TempPathFactory, data: bytes, gz: bool) -> None:
    path = _write(tmp_path_factory.mktemp("idx"), "f-idx3-ubyte", gzip.compress(data) if gz else data)
    try:
        out = formats.read_idx(path, expect_ndim=3)
    except DataError:
        return
    assert out.ndim == 3


# ----------------------------------------------------------------------------- CSV series

_CSV = b"year,value\n1700,5.0\n1701,11.0\n1702,\n1703,23.0\n"


@given(data=_mutations(_CSV))
def test_csv_series(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path = _write(tmp_path_factory.mktemp("csv"), "s.csv", data)
    try:
        t, v, filled = read_series_csv(path, "value", "year")
    except DataError:
        return
    assert len(t) == len(v) and np.isfinite(v).all()


# ----------------------------------------------------------------------------- Pointer Network files

_POINTER = b"0.1 0.2 0.3 0.4 0.5 0.9 output 1 2 3 1\n0.5 0.5 0.1 0.1 0.9 0.2 output 2 3 1 2\n"


@given(data=_mutations(_POINTER))
def test_pointer_file(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path = _write(tmp_path_factory.mktemp("ptr"), "p.txt", data)
    try:
        points, targets, lengths = parse_pointer_file(path)
    except DataError:
        return
    assert points.shape[0] == targets.shape[0] == lengths.shape[0]


# ----------------------------------------------------------------------------- Planetoid pickles

_PICKLES = [pickle.dumps(np.arange(6, dtype=np.float32).reshape(2, 3), protocol=2),
            pickle.dumps(np.eye(3, dtype=np.int32), protocol=4),
            pickle.dumps({0: [1, 2], 1: [0]}, protocol=2)]


@given(data=st.sampled_from(_PICKLES).flatmap(_mutations))
def test_planetoid_pickle(data: bytes) -> None:
    try:
        formats.restricted_load(data, PLANETOID_GLOBALS, what="ind.cora.x")
    except DataError:
        return


# ----------------------------------------------------------------------------- safetensors

_ST = st_save({"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.zeros(3)}, metadata={"format": "x"})


@given(data=_mutations(_ST))
def test_safetensors(data: bytes) -> None:
    try:
        tensors, meta = ckpt.read_safetensors(data, "weights.safetensors")
    except ckpt.CheckpointError:
        return
    assert all(isinstance(t, torch.Tensor) for t in tensors.values()) and isinstance(meta, dict)


@given(header=st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                           lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                           max_leaves=12))
def test_safetensors_header(header: object) -> None:
    """A well-framed file whose JSON header says anything."""
    raw = json.dumps({"w": header} if not isinstance(header, dict) else header).encode()
    data = struct.pack("<Q", len(raw)) + raw + bytes(16)
    try:
        ckpt.read_safetensors(data, "weights.safetensors")
    except ckpt.CheckpointError:
        return


# ----------------------------------------------------------------------------- checkpoint JSON


def _json_values() -> st.SearchStrategy[object]:
    return st.recursive(st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats() | st.text(max_size=8),
                        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                        max_leaves=16)


_STATE_KEYS = ["run_id", "world_size", "epoch", "step_in_epoch", "global_step", "loss_sum", "loss_count", "history",
               "best_value", "best_epoch", "bad_epochs", "train_time", "samples", "optimizer", "scheduler", "scaler", "rng"]


@given(edits=st.dictionaries(st.sampled_from(_STATE_KEYS), _json_values(), min_size=1, max_size=4),
       drop=st.lists(st.sampled_from(_STATE_KEYS), max_size=2))
def test_checkpoint_json(tmp_path_factory: pytest.TempPathFactory, edits: dict[str, object], drop: list[str]) -> None:
    """Re-hashed checkpoint JSON with random values: load and check refuse it, or it is a valid state."""
    run = tmp_path_factory.mktemp("run")
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 3)).sum().backward()
    opt.step()
    opt_tensors, opt_plain = ckpt.optimizer_to_parts(opt)
    import random

    py = random.getstate()
    np_state = np.random.get_state()
    state = {"run_id": "a" * 32, "world_size": 1, "epoch": 1, "step_in_epoch": 2, "global_step": 6, "loss_sum": 1.5,
             "loss_count": 4, "history": [{"epoch": 1}], "best_value": 0.5, "best_epoch": 1, "bad_epochs": 0,
             "train_time": 1.0, "samples": 24, "optimizer": opt_plain, "scheduler": {}, "scaler": {},
             "rng": {"python": [py[0], list(py[1]), py[2]], "numpy": [np_state[0], int(np_state[2]), int(np_state[3]),
                                                                     float(np_state[4])]}}
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()} | opt_tensors
    ckpt.save_checkpoint(run, model_name="m", step=6, tensors=tensors, state=json.loads(json.dumps(state)))
    manifest = json.loads((run / ckpt.MANIFEST).read_text())
    doc = json.loads((run / manifest["state"]).read_text())
    doc.update(edits)
    for key in drop:
        doc.pop(key, None)
    data = json.dumps(doc).encode()
    (run / manifest["state"]).write_bytes(data)
    manifest["files"][manifest["state"]] = hashlib.sha256(data).hexdigest()
    (run / ckpt.MANIFEST).write_text(json.dumps(manifest))
    try:
        c = ckpt.load_checkpoint(run, model_name="m")
        ckpt.check_run_state(c.state, steps_per_epoch=4, total_steps=12, what="ckpt")
        fresh = torch.optim.Adam(model.parameters())
        ckpt.check_optimizer_fits(fresh, c.subset("optim"), c.state["optimizer"], "ckpt")
    except ckpt.CheckpointError:
        return
    ckpt.optimizer_from_parts(fresh, c.subset("optim"), c.state["optimizer"])  # what passes the checks must load
