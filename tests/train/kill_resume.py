"""The shared halves of the SIGKILL-and-resume tests every task kind has (imported by tests/train/test_*.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from nnatlas.train.checkpoint import MANIFEST


def subprocess_env() -> dict[str, str]:
    """The environment for an ``nnatlas`` subprocess: no torchrun variables, one OpenMP thread (as in-process)."""
    env = dict(os.environ)
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    env["OMP_NUM_THREADS"] = "1"
    return env


def kill_after_first_checkpoint(cmd: list[str], killed: Path, env: dict[str, str], timeout: float = 300) -> None:
    """Start ``cmd --out killed`` and SIGKILL it as soon as its first checkpoint manifest exists."""
    proc = subprocess.Popen([*cmd, "--out", str(killed)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while not (killed / MANIFEST).exists():
        assert proc.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def assert_same_run(ref: Path, resumed: Path) -> list[dict]:
    """The resumed run equals the uninterrupted one: the same last weights bit for bit, the same metrics rows (times
    aside). Returns the resumed run's rows."""
    a, b = load_file(ref / "last.safetensors"), load_file(resumed / "last.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    def rows(run: Path) -> list[dict]:
        return [
            {k: v for k, v in json.loads(line).items() if k != "time_s"}
            for line in (run / "metrics.jsonl").read_text().splitlines()
        ]

    resumed_rows = rows(resumed)
    assert rows(ref) == resumed_rows
    return resumed_rows
