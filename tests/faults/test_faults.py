"""Fault injection: SIGKILL at random moments and in the middle of checkpoint writes, a full disk,
a killed DDP rank. After each kill the checkpoint on disk must load (no corrupt files), the run
must resume (no failed resumes), and the finished run's weights must equal, bit for bit, those of
the same run never interrupted.

CI runs a short profile (one model, a few kills); ``NNATLAS_FAULTS=long`` runs three models (one
per task kind: classification, regression, node classification) with ``NNATLAS_FAULT_KILLS``
kills each (default 20), half at random moments and half aimed at checkpoint writes (the harness
watches ``checkpoints/`` and kills as soon as a temporary ``.part`` file appears, or at the random
moment when it sees none in time; ``aimed`` in the printed tally counts the kills that hit a write)::

    NNATLAS_FAULTS=long .venv/bin/python -m pytest -q tests/faults -p no:randomly -s
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nnatlas.train import checkpoint as ckpt

LONG = os.environ.get("NNATLAS_FAULTS") == "long"
KILLS = int(os.environ.get("NNATLAS_FAULT_KILLS", "20")) if LONG else 1


@dataclass(frozen=True)
class Recipe:
    model: str
    data: str
    args: tuple[str, ...]


RECIPES = {
    "classification": Recipe("mlp", "digits", ("--epochs", "4" if LONG else "2", "--batch-size", "16",
                                                "--limit-train", "320", "--limit-test", "64")),
    "regression": Recipe("linear_regression", "diabetes", ("--epochs", "12", "--batch-size", "16", "--limit-test", "64")),
    "node_classification": Recipe("gcn", "karate", ("--epochs", "60",)),
}


def _command(recipe: Recipe, run: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "nnatlas", "train", recipe.model, "--data", recipe.data, *recipe.args,
            "--checkpoint-every", "1", "--threads", "1", "--out", str(run), "--no-report", "--no-progress", *extra]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    return env


def _start(recipe: Recipe, run: Path) -> subprocess.Popen[bytes]:
    extra = ("--resume",) if (run / ckpt.MANIFEST).is_file() else ()
    return subprocess.Popen(_command(recipe, run, *extra), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "last.safetensors")


def _writing(run: Path) -> bool:
    folder = run / ckpt.CHECKPOINT_DIR
    try:
        return any(name.endswith(".part") for name in os.listdir(folder))
    except FileNotFoundError:
        return False


@dataclass
class Tally:
    kills: int = 0
    aimed: int = 0
    corrupt: int = 0
    failed_resumes: int = 0
    differing: int = 0
    runs: int = 0
    notes: list[str] = field(default_factory=list)


def _kill_until_done(recipe: Recipe, run: Path, kills: int, span: float, rng: random.Random, tally: Tally) -> None:
    """Start, kill (at random or mid-write), check the checkpoint, resume; ``kills`` times, then finish."""
    done_kills = 0
    while True:
        proc = _start(recipe, run)
        # every other kill tries to land in a checkpoint write (CI's single kill does)
        aim = done_kills < kills and (done_kills % 2 == 1 or not LONG)
        deadline = time.monotonic() + (rng.uniform(0.3, span) if done_kills < kills else 600)
        hit = False
        while proc.poll() is None and time.monotonic() < deadline:
            if aim and _writing(run):  # a temporary .part file exists: kill now, mid-write
                hit = True
                break
            time.sleep(0.0005 if aim else 0.01)
        if proc.poll() is None and done_kills < kills:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            done_kills += 1
            tally.kills += 1
            tally.aimed += hit  # aimed kills that saw no write in time fall back to the random moment
            if (run / ckpt.MANIFEST).is_file():
                try:
                    ckpt.load_checkpoint(run, model_name=recipe.model)
                except ckpt.CheckpointError as err:
                    tally.corrupt += 1
                    tally.notes.append(f"corrupt after kill {done_kills}: {err}")
            continue
        _, err = proc.communicate(timeout=600)
        if proc.returncode != 0:
            tally.failed_resumes += 1
            tally.notes.append(f"exit {proc.returncode}: {err.decode()[-500:]}")
            return
        if done_kills >= kills:
            return
        # the run finished before the kill: start a fresh one and go on killing
        tally.runs += 1
        run_done = run.with_name(run.name + f"-done{tally.runs}")
        run.rename(run_done)


def _check_equal(ref: Path, run: Path, tally: Tally) -> None:
    a, b = _weights(ref), _weights(run)
    if a.keys() != b.keys() or any(not torch.equal(a[k], b[k]) for k in a):
        tally.differing += 1
        tally.notes.append(f"{run} differs from {ref}")


@pytest.mark.parametrize("kind", list(RECIPES) if LONG else ["classification"])
def test_random_kills_resume_to_the_same_weights(kind: str, tmp_path: Path) -> None:
    recipe = RECIPES[kind]
    ref = tmp_path / "reference"
    t0 = time.monotonic()
    done = subprocess.run(_command(recipe, ref), env=_env(), capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    span = time.monotonic() - t0  # startup plus training: kills land anywhere in it
    tally = Tally()
    run = tmp_path / "killed"
    _kill_until_done(recipe, run, KILLS, span, random.Random(f"{kind}-{KILLS}"), tally)
    for finished in [run, *sorted(tmp_path.glob("killed-done*"))]:
        if (finished / "last.safetensors").is_file():
            _check_equal(ref, finished, tally)
    summary = {"kind": kind, "model": recipe.model, "data": recipe.data, "reference_s": round(span, 1),
               **{k: v for k, v in vars(tally).items() if k != "notes"}}
    print("faults:", json.dumps(summary))
    assert tally.kills == KILLS
    assert (tally.corrupt, tally.failed_resumes, tally.differing) == (0, 0, 0), tally.notes


# ----------------------------------------------------------------------------- a full disk


@pytest.fixture
def small_tmpfs(tmp_path: Path):
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], check=True, capture_output=True,
                       timeout=10)
    except (OSError, subprocess.SubprocessError):
        pytest.skip("cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=10)


def test_a_full_disk_names_the_file_and_keeps_the_previous_checkpoint(small_tmpfs: Path) -> None:
    """The disk fills up while the run trains: the write that fails names its file, the run ends with
    one line, the checkpoint before it is intact, and (long profile) the run resumes once there is room."""
    recipe = RECIPES["classification"]
    run = small_tmpfs / "run"
    longer = ("--epochs", "6")  # time enough to fill the disk while it trains
    proc = subprocess.Popen(_command(recipe, run, *longer), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while not (run / ckpt.MANIFEST).is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        filler = small_tmpfs / "filler"
        with open(filler, "wb") as f:  # fill the disk to the last block while the run goes on
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        _, err_bytes = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = err_bytes.decode()
    assert proc.returncode == 2 and "No space left on device" in err and f"cannot write {run}" in err, err[-2000:]
    assert "Traceback" not in err
    ckpt.load_checkpoint(run, model_name=recipe.model)  # the previous checkpoint, intact
    assert not any(p.name.endswith(".part") for p in run.rglob("*")), "no temporary file is left behind"
    if not LONG:
        return
    filler.unlink()
    third = subprocess.run(_command(recipe, run, *longer, "--resume"), env=_env(), capture_output=True, timeout=300)
    assert third.returncode == 0, third.stderr.decode()[-2000:]


# ----------------------------------------------------------------------------- a killed DDP rank


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _rank_of(pid: int) -> int | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    ranks = [e.split(b"=", 1)[1] for e in env if e.startswith(b"RANK=")]
    return int(ranks[0]) if ranks else None


def _torchrun(recipe: Recipe, run: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
            *_command(recipe, run, *extra)[2:]]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the ranks through /proc")
def test_a_killed_ddp_rank_ends_the_job_in_seconds_and_the_run_resumes(tmp_path: Path) -> None:
    recipe = RECIPES["classification"]
    run = tmp_path / "run"
    job = subprocess.Popen(_torchrun(recipe, run), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while not (run / ckpt.MANIFEST).is_file() and time.monotonic() < deadline and job.poll() is None:
            time.sleep(0.05)
        assert job.poll() is None, "the job ended before the test could kill a rank"
        victim = next((p for p in (c for w in [job.pid, *_children(job.pid)] for c in _children(w)) if _rank_of(p) == 1),
                      None)
        if victim is None:
            pytest.skip("cannot find rank 1 through /proc/PID/task/PID/children on this kernel")
        os.kill(victim, signal.SIGKILL)
        t0 = time.monotonic()
        _, err = job.communicate(timeout=120)
        ended = time.monotonic() - t0
    finally:
        if job.poll() is None:
            job.kill()
    text = err.decode()
    assert job.returncode != 0 and ended < 30, (job.returncode, ended)
    ours = [line for line in text.splitlines() if line.startswith("[rank")]  # the ranks' own output, not torchrun's
    assert not any("Traceback" in line for line in ours), text[-3000:]
    assert "another process of the data-parallel run failed or was killed" in text, text[-3000:]
    ckpt.load_checkpoint(run, model_name=recipe.model)  # the last checkpoint is whole
    if not LONG:
        return  # resuming under torchrun costs another two-process start; the long profile does it
    resumed = subprocess.run(_torchrun(recipe, run, "--resume"), env=_env(), capture_output=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr.decode()[-3000:]
    assert json.loads((run / "final.json").read_text())["world_size"] == 2
