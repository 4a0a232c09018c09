"""Checkpoints that are never half-written and never unpickled.

A checkpoint is a pair of files, tensors in safetensors and everything else in JSON::

    DIR/checkpoints/step-00000123.safetensors   model, optimizer tensors, RNG states
    DIR/checkpoints/step-00000123.json          optimizer hyper-parameters, scheduler, counters, history
    DIR/checkpoint.manifest.json                which pair is current, with the sha256 of each file

Every file is written atomically (temporary file, ``fsync``, ``os.replace``, ``fsync`` of the
folder). The pair is written first and the manifest last, so a crash at any moment leaves the
manifest pointing at a complete pair: the previous one or the new one. The previous pair is
deleted only after the manifest names the new one.

Loading reads each file once, checks its sha256 against the manifest, and parses the same bytes:
tensors with ``safetensors`` (no pickle; a file that is not safetensors is refused before any
parsing), the rest with ``json``. A checkpoint whose hashes do not match, whose format tag is
foreign, or whose model differs is refused with :class:`CheckpointError`.

Hashes only prove that the files are the ones the manifest names; a JSON edited and re-hashed
passes them. So the caller also checks every field of the state against its own run
(:func:`check_state` with a schema of :class:`Field`) and the optimizer tensors against the
parameters (:func:`check_optimizer_fits`) before the first step uses them.

Clean-up never follows a link: a ``checkpoints/`` folder that is a symbolic link, or a manifest
member that resolves outside the run folder, is refused; :func:`remove_orphans` deletes the
temporary ``.part`` files a crash left behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from nnatlas._io import atomic_write_bytes, atomic_write_text

__all__ = [
    "CheckpointError",
    "Checkpoint",
    "atomic_write_bytes",
    "atomic_write_text",
    "save_checkpoint",
    "load_checkpoint",
    "has_checkpoint",
    "save_weights",
    "load_weights",
    "read_safetensors",
    "load_model_state",
    "optimizer_to_parts",
    "optimizer_from_parts",
    "check_optimizer_fits",
    "Field",
    "check_state",
    "check_run_state",
    "check_rng_tensors",
    "remove_orphans",
    "MANIFEST",
]

log = logging.getLogger(__name__)

FORMAT = "nnatlas-checkpoint"
WEIGHTS_FORMAT = "nnatlas-weights"
VERSION = 1
MANIFEST = "checkpoint.manifest.json"
CHECKPOINT_DIR = "checkpoints"


class CheckpointError(ValueError):
    """A checkpoint or weights file that cannot be trusted: tampered, half-written, foreign, or a pickle."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------------
# safetensors without surprises
# --------------------------------------------------------------------------------------------


def _sniff(data: bytes, what: str) -> None:
    """Refuse bytes that are not a safetensors file before any parser sees them.

    safetensors starts with the header's length (u64, little-endian) and the JSON header
    (``{``); anything else is refused, and pickles and ``torch.save`` zips are named as such.
    """
    if len(data) >= 9:
        (n,) = struct.unpack("<Q", data[:8])
        if n <= len(data) - 8 and data[8:9] == b"{":
            return
    if data[:2] == b"PK":
        raise CheckpointError(f"{what} is a zip archive (a torch.save file holding pickles), not safetensors; refusing to load it")
    if data[:1] == b"\x80":
        raise CheckpointError(f"{what} is a Python pickle, not safetensors; nnatlas never loads pickles")
    raise CheckpointError(f"{what} is not a safetensors file (its header does not parse); refusing to load it")


def read_safetensors(data: bytes, what: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Parse safetensors ``data`` (tensors, metadata) or raise :class:`CheckpointError`."""
    _sniff(data, what)
    try:
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + n])
        tensors = st_load(data)
    except Exception as err:  # safetensors raises its own error types; all mean "not readable"
        raise CheckpointError(f"{what} is not a readable safetensors file: {err}") from None
    meta = header.get("__metadata__") or {}
    return tensors, dict(meta)


def _cpu_tensors(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU tensors; a tensor sharing storage with an earlier one is copied
    (safetensors stores each storage once and refuses shared ones)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for k, t in tensors.items():
        t = t.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen and t.numel() > 0:
            t = t.clone()
            ptr = t.untyped_storage().data_ptr()
        seen.add(ptr)
        out[k] = t
    return out


# --------------------------------------------------------------------------------------------
# Model weights alone (last.safetensors, best.safetensors)
# --------------------------------------------------------------------------------------------


def save_weights(path: Path, model: torch.nn.Module, *, model_name: str, extra: Mapping[str, str] | None = None) -> None:
    """Write the model's state dict as safetensors, atomically, tagged with the model name."""
    tensors = _cpu_tensors(model.state_dict())
    meta = {"format": WEIGHTS_FORMAT, "version": str(VERSION), "model": model_name, **(extra or {})}
    atomic_write_bytes(Path(path), st_save(tensors, metadata=meta))


def _check_state_fits(model: torch.nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    ours = model.state_dict()
    missing = sorted(set(ours) - set(state))
    extra = sorted(set(state) - set(ours))
    shapes = [f"{k} {tuple(state[k].shape)} (model has {tuple(v.shape)})" for k, v in ours.items() if k in state and state[k].shape != v.shape]
    if missing or extra or shapes:
        parts = []
        if missing:
            parts.append(f"missing {missing[:4]}")
        if extra:
            parts.append(f"unexpected {extra[:4]}")
        if shapes:
            parts.append(f"shapes differ {shapes[:4]}")
        raise CheckpointError(f"{what} does not belong to this model ({'; '.join(parts)})")


def load_weights(path: Path, model: torch.nn.Module, *, model_name: str) -> dict[str, str]:
    """Load weights written by :func:`save_weights` into ``model``; returns the file's metadata."""
    path = Path(path)
    data = path.read_bytes()
    tensors, meta = read_safetensors(data, str(path))
    if meta.get("format") != WEIGHTS_FORMAT:
        raise CheckpointError(f"{path} is not an nnatlas weights file (format {meta.get('format')!r}, expected {WEIGHTS_FORMAT!r})")
    if meta.get("model") != model_name:
        raise CheckpointError(f"{path} holds weights of {meta.get('model')!r}, not {model_name!r}")
    _check_state_fits(model, tensors, str(path))
    model.load_state_dict(tensors, strict=True)
    return meta


# --------------------------------------------------------------------------------------------
# Full training checkpoints
# --------------------------------------------------------------------------------------------


@dataclass
class Checkpoint:
    """A loaded checkpoint: ``tensors`` from safetensors, ``state`` from JSON."""

    tensors: dict[str, torch.Tensor]
    state: dict[str, Any]
    path: Path

    def subset(self, prefix: str) -> dict[str, torch.Tensor]:
        """The tensors under ``prefix.`` with the prefix removed."""
        n = len(prefix) + 1
        return {k[n:]: v for k, v in self.tensors.items() if k.startswith(prefix + ".")}


def optimizer_to_parts(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``opt.state_dict()`` into tensors (``optim.<param>.<name>``) and JSON-ready data."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    plain_state: dict[str, dict[str, Any]] = {}
    for pid, entry in sd["state"].items():
        plain: dict[str, Any] = {}
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{pid}.{name}"] = value
            else:
                plain[name] = value
        plain_state[str(pid)] = plain
    return tensors, {"param_groups": sd["param_groups"], "state": plain_state}


def optimizer_from_parts(opt: torch.optim.Optimizer, tensors: Mapping[str, torch.Tensor], plain: Mapping[str, Any]) -> None:
    """Rebuild and load the optimizer state written by :func:`optimizer_to_parts`."""
    state: dict[int, dict[str, Any]] = {int(pid): dict(entry) for pid, entry in plain["state"].items()}
    for key, value in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    groups = []
    for g in plain["param_groups"]:  # JSON turned tuples (Adam's betas) into lists
        groups.append({k: (tuple(v) if isinstance(v, list) and k != "params" else v) for k, v in g.items()})
    opt.load_state_dict({"state": state, "param_groups": groups})


def check_optimizer_fits(opt: torch.optim.Optimizer, tensors: Mapping[str, torch.Tensor], plain: Mapping[str, Any],
                         what: str) -> None:
    """Refuse optimizer state that does not fit ``opt``'s parameters (before any step uses it).

    The groups must hold as many parameters as ``opt``'s; every per-parameter tensor with
    dimensions (momentum, Adam's moments) must have its parameter's shape; scalars (``step``)
    must be scalars; parameter ids must exist.
    """
    if not isinstance(plain, Mapping) or not isinstance(plain.get("param_groups"), list) \
            or not isinstance(plain.get("state"), Mapping):
        raise CheckpointError(f"{what}: the optimizer state lacks param_groups or state")
    groups = plain["param_groups"]
    if len(groups) != len(opt.param_groups):
        raise CheckpointError(f"{what}: the optimizer has {len(opt.param_groups)} parameter groups; the checkpoint {len(groups)}")
    params = [p for g in opt.param_groups for p in g["params"]]
    for i, (g, ours) in enumerate(zip(groups, opt.param_groups)):
        ids = g.get("params") if isinstance(g, Mapping) else None
        if not isinstance(ids, list) or len(ids) != len(ours["params"]) \
                or any(type(j) is not int or not 0 <= j < len(params) for j in ids):
            raise CheckpointError(f"{what}: parameter group {i} does not list this model's {len(ours['params'])} parameters")
    for pid in plain["state"]:
        if not str(pid).isdigit() or int(pid) >= len(params):
            raise CheckpointError(f"{what}: optimizer state for parameter {pid!r}; the model has {len(params)}")
    for key, value in tensors.items():
        pid, _, name = key.partition(".")
        if not pid.isdigit() or int(pid) >= len(params):
            raise CheckpointError(f"{what}: optimizer tensor {key!r} names no parameter (the model has {len(params)})")
        shape = tuple(params[int(pid)].shape)
        if value.dim() and tuple(value.shape) != shape:
            raise CheckpointError(f"{what}: optimizer tensor {key!r} has shape {tuple(value.shape)}; its parameter has {shape}")
        if not value.is_floating_point() and name != "step":
            raise CheckpointError(f"{what}: optimizer tensor {key!r} is {value.dtype}; expected a floating dtype")


@dataclass(frozen=True)
class Field:
    """What one field of a checkpoint's JSON state may hold: a type, bounds, ``None`` or not.

    ``kind`` is ``int`` (never a bool), ``float`` (an int is fine; finite unless ``finite`` is
    false), ``str``, ``bool``, ``list`` or ``dict``; ``low``/``high`` bound numbers (inclusive)
    and the length of lists.
    """

    kind: type
    low: float | None = None
    high: float | None = None
    nullable: bool = False
    finite: bool = True

    def problem(self, value: Any) -> str | None:
        """Why ``value`` does not fit (a phrase), or None."""
        if value is None:
            return None if self.nullable else "must not be null"
        k = self.kind
        if k is int:
            ok = type(value) is int
        elif k is float:
            ok = type(value) in (int, float) and (not self.finite or math.isfinite(value))
        else:
            ok = type(value) is k
        if not ok:
            return f"must be {'a finite number' if k is float else k.__name__}"
        size = len(value) if k in (list, dict, str) else value if k in (int, float) else None
        if size is not None and ((self.low is not None and size < self.low) or (self.high is not None and size > self.high)):
            what = "its length" if k in (list, dict, str) else "it"
            return f"is out of range: {what} must be in [{self.low}, {self.high}]"
        return None


def check_state(state: Mapping[str, Any], schema: Mapping[str, Field], what: str) -> None:
    """Refuse a checkpoint state with a missing key or a value that breaks ``schema`` (one line, the key named)."""
    for key, spec in schema.items():
        if key not in state:
            raise CheckpointError(f"{what} lacks the field {key!r}; the checkpoint is incomplete or from another version")
        why = spec.problem(state[key])
        if why is not None:
            raise CheckpointError(f"{what}: field {key!r} {why}; got {state[key]!r:.80}")


def check_run_state(state: Mapping[str, Any], *, steps_per_epoch: int, total_steps: int, what: str) -> None:
    """Check the trainer's checkpoint state against the run it is resumed into.

    Every counter has its type and range (``0 <= step_in_epoch < steps_per_epoch``,
    ``global_step <= total_steps`` and equal to ``epoch * steps_per_epoch + step_in_epoch``),
    the history and the best evaluation agree, and the RNG states have their shapes.
    """
    spe = max(1, steps_per_epoch)
    schema = {
        "run_id": Field(str, 1, 64),
        "world_size": Field(int, 1, 1 << 16),
        "epoch": Field(int, 0, total_steps // spe + 1),
        "step_in_epoch": Field(int, 0, spe - 1),
        "global_step": Field(int, 0, total_steps),
        "loss_sum": Field(float),
        "loss_count": Field(int, 0),
        "history": Field(list),
        "best_value": Field(float, nullable=True, finite=False),
        "best_epoch": Field(int, 0),
        "bad_epochs": Field(int, 0),
        "train_time": Field(float, 0),
        "samples": Field(int, 0),
        "optimizer": Field(dict),
        "scheduler": Field(dict),
        "scaler": Field(dict),
        "rng": Field(dict),
    }
    check_state(state, schema, what)
    if state["global_step"] != state["epoch"] * spe + state["step_in_epoch"]:
        raise CheckpointError(f"{what}: global_step {state['global_step']} is not epoch {state['epoch']} x "
                              f"{spe} steps + step_in_epoch {state['step_in_epoch']}; the counters were edited")
    n = len(state["history"])
    if not all(isinstance(h, dict) for h in state["history"]) or state["best_epoch"] > n or state["bad_epochs"] > n:
        raise CheckpointError(f"{what}: the history ({n} evaluations) does not agree with best_epoch "
                              f"{state['best_epoch']} and bad_epochs {state['bad_epochs']}")
    py, np_ = state["rng"].get("python"), state["rng"].get("numpy")
    if not (isinstance(py, list) and len(py) == 3 and type(py[0]) is int and isinstance(py[1], list) and len(py[1]) == 625
            and all(type(v) is int and 0 <= v < 2**32 for v in py[1]) and (py[2] is None or type(py[2]) is float)):
        raise CheckpointError(f"{what}: rng.python is not a Python random state")
    if not (isinstance(np_, list) and len(np_) == 4 and np_[0] == "MT19937" and type(np_[1]) is int
            and 0 <= np_[1] <= 624 and type(np_[2]) is int and type(np_[3]) in (int, float)):
        raise CheckpointError(f"{what}: rng.numpy is not a NumPy random state")


def check_rng_tensors(tensors: Mapping[str, torch.Tensor], what: str) -> None:
    """The RNG tensors the trainer saves: torch's state (uint8, its length) and NumPy's key (624 values)."""
    want = torch.get_rng_state()
    got = tensors.get("rng.torch")
    if got is None or got.dtype != want.dtype or got.shape != want.shape:
        raise CheckpointError(f"{what}: rng.torch is not a torch generator state ({want.dtype} {tuple(want.shape)})")
    np_key = tensors.get("rng.numpy")
    if np_key is None or np_key.shape != (624,) or np_key.is_floating_point():
        raise CheckpointError(f"{what}: rng.numpy is not a NumPy MT19937 key (624 integers)")


def _checkpoint_dir(run_dir: Path) -> Path:
    """``run_dir/checkpoints``, refused when it is a link (clean-up would delete files elsewhere)."""
    folder = run_dir / CHECKPOINT_DIR
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise CheckpointError(f"{folder} is a link or not a folder; nnatlas writes and cleans checkpoints only in a real "
                              f"folder inside the run, so it refuses to touch it (remove the link)")
    return folder


def remove_orphans(run_dir: Path) -> list[Path]:
    """Delete the temporary ``.*.part`` files an interrupted write left in ``run_dir`` and its
    ``checkpoints/`` folder; returns them. Links are not followed and never deleted through."""
    run_dir = Path(run_dir)
    removed: list[Path] = []
    for folder in (run_dir, _checkpoint_dir(run_dir)):
        if not folder.is_dir():
            continue
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith(".") and entry.name.endswith(".part") and entry.is_file(follow_symlinks=False):
                    Path(entry.path).unlink(missing_ok=True)
                    removed.append(Path(entry.path))
    if removed:
        log.info("removed %d unfinished temporary file(s) from an earlier crash in %s", len(removed), run_dir)
    return removed


def _pair_names(step: int) -> tuple[str, str]:
    stem = f"{CHECKPOINT_DIR}/step-{step:09d}"
    return f"{stem}.safetensors", f"{stem}.json"


def has_checkpoint(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a checkpoint manifest."""
    return (Path(run_dir) / MANIFEST).is_file()


def save_checkpoint(run_dir: Path, *, model_name: str, step: int, tensors: Mapping[str, torch.Tensor], state: Mapping[str, Any]) -> Path:
    """Write one checkpoint pair and point the manifest at it; returns the manifest path.

    ``step`` (the global optimizer step) names the pair. The previous pair is removed once the
    manifest no longer names it.
    """
    run_dir = Path(run_dir)
    folder = _checkpoint_dir(run_dir)
    st_name, js_name = _pair_names(step)
    st_bytes = st_save(_cpu_tensors(tensors), metadata={"format": FORMAT, "version": str(VERSION), "model": model_name})
    doc = {"format": FORMAT, "version": VERSION, "model": model_name, "step": step, **state}
    js_bytes = json.dumps(doc, indent=1).encode("utf-8")
    atomic_write_bytes(run_dir / st_name, st_bytes)
    atomic_write_bytes(run_dir / js_name, js_bytes)
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "model": model_name,
        "step": step,
        "files": {st_name: _sha256(st_bytes), js_name: _sha256(js_bytes)},
        "tensors": st_name,
        "state": js_name,
    }
    atomic_write_text(run_dir / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    keep = {run_dir / st_name, run_dir / js_name}
    for old in folder.glob("step-*"):
        if old not in keep:
            old.unlink(missing_ok=True)  # unlink removes a link itself, never its target
    return run_dir / MANIFEST


def _read_manifest(run_dir: Path) -> dict[str, Any]:
    path = run_dir / MANIFEST
    if not path.is_file():
        raise CheckpointError(f"no checkpoint in {run_dir}: {MANIFEST} is absent")
    try:
        manifest = json.loads(path.read_text("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON ({err}); the checkpoint cannot be trusted") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise CheckpointError(f"{path} is not an nnatlas checkpoint manifest (format {got!r}, expected {FORMAT!r})")
    if manifest.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {manifest.get('version')!r}; this nnatlas reads version {VERSION}")
    return manifest


def _safe_member(run_dir: Path, rel: object) -> Path:
    if not isinstance(rel, str) or not rel.startswith(CHECKPOINT_DIR + "/") or ".." in Path(rel).parts:
        raise CheckpointError(f"{run_dir / MANIFEST} names a file outside {CHECKPOINT_DIR}/: {rel!r}")
    _checkpoint_dir(run_dir)
    path = run_dir / rel
    if path.is_symlink():
        raise CheckpointError(f"checkpoint file {path} is a link; refusing to read through it")
    return path


def load_checkpoint(run_dir: Path, *, model_name: str) -> Checkpoint:
    """Read, verify and parse the checkpoint the manifest of ``run_dir`` names."""
    run_dir = Path(run_dir)
    manifest = _read_manifest(run_dir)
    if manifest.get("model") != model_name:
        raise CheckpointError(f"the checkpoint in {run_dir} belongs to model {manifest.get('model')!r}, not {model_name!r}")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise CheckpointError(f"{run_dir / MANIFEST} lists no files")
    blobs: dict[str, bytes] = {}
    for key in ("tensors", "state"):
        rel = manifest.get(key)
        path = _safe_member(run_dir, rel)
        if not path.is_file():
            raise CheckpointError(f"checkpoint file {path} named by the manifest is missing (half-written or deleted checkpoint)")
        data = path.read_bytes()
        if _sha256(data) != files.get(rel):
            raise CheckpointError(
                f"checkpoint file {path} does not match the sha256 in {MANIFEST} (tampered or half-written); refusing to resume from it"
            )
        blobs[key] = data
    tensors, meta = read_safetensors(blobs["tensors"], str(run_dir / manifest["tensors"]))
    if meta.get("format") != FORMAT or meta.get("model") != model_name:
        raise CheckpointError(f"{run_dir / manifest['tensors']} is not an nnatlas checkpoint of {model_name!r} (metadata {meta})")
    try:
        state = json.loads(blobs["state"])
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{run_dir / manifest['state']} is not valid JSON: {err}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{run_dir / manifest['state']} holds {type(state).__name__}, not a JSON object")
    if state.get("format") != FORMAT or state.get("model") != model_name or state.get("step") != manifest.get("step"):
        raise CheckpointError(f"{run_dir / manifest['state']} does not belong with the manifest (format, model or step differ)")
    return Checkpoint(tensors=tensors, state=state, path=run_dir / manifest["state"])


def load_model_state(ckpt: Checkpoint, model: torch.nn.Module, what: str, *, prefix: str = "model") -> None:
    """Load the ``model.*`` tensors (``prefix.*``: ``ema`` for the moving average) of ``ckpt`` into ``model`` after checking that they fit."""
    state = ckpt.subset(prefix)
    _check_state_fits(model, state, what)
    model.load_state_dict(state, strict=True)

