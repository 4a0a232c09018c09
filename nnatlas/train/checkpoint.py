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
"""

from __future__ import annotations

import hashlib
import json
import logging
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
    for old in (run_dir / CHECKPOINT_DIR).glob("step-*"):
        if old not in keep:
            old.unlink(missing_ok=True)
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
    return run_dir / rel


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
    if state.get("format") != FORMAT or state.get("model") != model_name or state.get("step") != manifest.get("step"):
        raise CheckpointError(f"{run_dir / manifest['state']} does not belong with the manifest (format, model or step differ)")
    return Checkpoint(tensors=tensors, state=state, path=run_dir / manifest["state"])


def load_model_state(ckpt: Checkpoint, model: torch.nn.Module, what: str) -> None:
    """Load the ``model.*`` tensors of ``ckpt`` into ``model`` after checking that they fit."""
    state = ckpt.subset("model")
    _check_state_fits(model, state, what)
    model.load_state_dict(state, strict=True)

