"""One atlas for the whole session: every registered model, both languages, a fake training run;
verification for the three pages the screenshots show (the full ``verify`` costs minutes and is
tested in tests/test_verify.py)."""

from __future__ import annotations

import json
import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import nnatlas
from nnatlas.atlas.build import BuildResult, build
from nnatlas.verify import cache_key

VERIFIED = ("resnet18", "lstm", "transformer_tiny")


def png_bytes(width: int = 8, height: int = 8, shade: int = 128) -> bytes:
    """A valid grey PNG, written by hand so the tests need no imaging library."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + bytes([shade]) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def make_run(folder: Path, model: str = "resnet18") -> Path:
    """A run folder shaped like ``nnatlas train``'s: config, metrics, final, curves, artefacts."""
    (folder / "artefacts").mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"config": {"model": model, "epochs": 2}, "plan": {}}))
    lines = [{"epoch": 1, "train_loss": 1.5, "test_accuracy": 0.61}, {"epoch": 2, "train_loss": 0.9, "test_accuracy": 0.72}]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + "not json\n")
    (folder / "final.json").write_text(json.dumps({"model": model, "epochs": 2, "test_accuracy": 0.72,
                                                   "train_loss": 0.9}))
    (folder / "curves.png").write_bytes(png_bytes(16, 8))
    (folder / "artefacts" / "sample_epoch2.txt").write_text("generated: the quick brown fox\n")
    (folder / "artefacts" / "grid_epoch2.png").write_bytes(png_bytes(8, 8, 200))
    (folder / "artefacts" / "sample_epoch1.txt").write_text("generated: an older sample\n")
    (folder / "artefacts" / "manifest.json").write_text(json.dumps(  # {evaluation tag: [files]}, in order
        {"epoch-001": ["sample_epoch1.txt"],
         "epoch-002": ["sample_epoch2.txt", "grid_epoch2.png", "../../etc/passwd", "missing.png"]}))
    return folder


@dataclass
class Site:
    out: Path
    cache: Path
    runs: list[Path]
    result: BuildResult
    seconds: float
    keys: dict[str, str]  # each model's source key at build time (nnatlas.verify.cache_key)

    def rebuild(self) -> BuildResult:
        return build(self.out, runs=self.runs, lang="both", cache_dir=self.cache, verify=list(VERIFIED))


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    root = tmp_path_factory.mktemp("atlas")
    runs = [make_run(root / "runs" / "resnet18-cifar10")]
    keys = {n: cache_key(n) for n in nnatlas.list_models()}
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = time.perf_counter()
        result = build(root / "site", runs=runs, lang="both", cache_dir=root / "cache", verify=list(VERIFIED))
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(before)
    print(f"\natlas fixture: {result.pages} pages in {seconds:.1f} s ({result.timings})")
    return Site(root / "site", root / "cache", runs, result, seconds, keys)
