"""Data-parallel training under torchrun: two gloo processes on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

WORKER = Path(__file__).with_name("ddp_worker.py")


def test_two_process_gloo_run_trains_lenet_with_identical_weights_and_rank0_writes_alone(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(WORKER), str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    w0, w1 = load_file(tmp_path / "weights-rank0.safetensors"), load_file(tmp_path / "weights-rank1.safetensors")
    assert w0.keys() == w1.keys()
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    run = tmp_path / "rank0" / "run"
    final = json.loads((run / "final.json").read_text())
    assert final["world_size"] == 2 and final["epochs"] == 1
    assert sorted(p.name for p in (tmp_path / "rank1").iterdir()) == []  # rank 1 wrote nothing
    saved = load_file(run / "last.safetensors")
    assert all(torch.equal(saved[k], w0[k]) for k in w0)
    # 96 examples over 2 ranks in batches of 16: 3 steps per rank, each over 32 examples.
    config = json.loads((run / "config.json").read_text())
    assert config["world_size"] == 2
