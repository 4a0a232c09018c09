"""``nnatlas train`` / ``nnatlas eval`` end to end on tiny data: files, errors, resume after SIGKILL, divergence."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nnatlas.cli import main
from nnatlas.train import TrainConfig, train
from nnatlas.train.checkpoint import MANIFEST, load_checkpoint
from kill_resume import kill_after_first_checkpoint, subprocess_env

TINY = ["--epochs", "2", "--limit-train", "64", "--limit-test", "40", "--batch-size", "16", "--no-progress"]


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "lenett"], "unknown model 'lenett'; did you mean 'lenet'"),
        (["train", "lenet", "--data", "mnistt"], "mnistt"),
        (["train", "lenet", "--epochs", "-1"], "--epochs must be an integer >= 1; got -1"),
        (["train", "lenet", "--batch-size", "0"], "--batch-size must be >= 1; got 0"),
        (["train", "lenet", "--data", "iris"], "the model takes images (1, 32, 32); the data set gives vectors"),
        (["train", "lenet", "--data", "diabetes"], "model 'lenet' (classification) cannot train on data set 'diabetes' (regression); data sets that fit: "),
        (["train", "linear_regression", "--data", "digits"], "(regression) cannot train on data set 'digits' (classification)"),
        (["train", "linear_regression", "--no-augment"], "--augment is not an option of the regression task that linear_regression trains (its options: --image-size)"),
        (["train", "lenet", "--momentum", "0.5"], "--momentum is an option of --optimizer sgd; the run uses adam"),
        (["train", "lenet", "--warmup", "10"], "--warmup is an option of --schedule warmup_cosine or noam; the run uses onecycle"),
        (["train", "lenet", "--image-size", "64"], None),  # lenet's config takes image_size: this one is fine
        (["train", "lenet", "--resume"], "there is no run to resume"),
        (["eval", "nowhere"], "not a run folder"),
    ],
)
def test_bad_arguments_are_one_line_errors_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str | None
) -> None:
    out_dir = tmp_path / "run"
    if message is None:  # a valid size must pass validation; train one step to prove it
        rc, _, err = _cli(capsys, *argv, "--out", str(out_dir), "--epochs", "1", "--limit-train", "8", "--limit-test", "4", "--no-report", "--no-progress")
        assert rc == 0, err
        assert json.loads((out_dir / "config.json").read_text())["plan"]["details"]["size"] == [64, 64]
        return
    extra = ["--out", str(out_dir)] if argv[0] == "train" else []
    rc, out, err = _cli(capsys, *argv, *extra)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"nnatlas {argv[0]}: error: "), err
    assert message in lines[0]
    assert not out_dir.exists()  # nothing was written


def test_tiny_run_writes_every_file_and_eval_recomputes_final(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "lenet"
    rc, out, err = _cli(capsys, "train", "lenet", *TINY, "--out", str(run))
    assert rc == 0, err
    assert "epoch 2/2" in err and "test_acc" in err  # one plain line per epoch off a terminal
    for name in ("config.json", "metrics.jsonl", "final.json", "curves.png", "last.safetensors", "best.safetensors", "model.txt", MANIFEST):
        assert (run / name).is_file(), name
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert {"train_loss", "test_loss", "test_acc", "lr", "time_s"} <= set(rows[0])
    final = json.loads((run / "final.json").read_text())
    assert final["test_acc"] == rows[-1]["test_acc"] and final["epochs"] == 2
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    rc, out, err = _cli(capsys, "eval", str(run), "--json")
    assert rc == 0, err
    recomputed = json.loads(out.strip().splitlines()[-1])
    assert recomputed["test_acc"] == final["test_acc"]
    assert recomputed["test_loss"] == pytest.approx(final["test_loss"], rel=1e-6)

    # The run folder is not overwritten by accident; a finished run resumes to the same result.
    rc, _, err = _cli(capsys, "train", "lenet", *TINY, "--out", str(run))
    assert rc == 2 and "already holds a run" in err
    rc, _, err = _cli(capsys, "train", "lenet", "--out", str(run), "--resume", "--lr", "0.5")
    assert rc == 2 and "lr=" in err
    rc, _, err = _cli(capsys, "train", "lenet", "--out", str(run), "--resume")
    assert rc == 0, err
    assert json.loads((run / "final.json").read_text())["test_acc"] == final["test_acc"]


def test_run_killed_mid_epoch_and_resumed_equals_uninterrupted_run_bitwise(tmp_path: Path) -> None:
    """SIGKILL right after a mid-epoch checkpoint (--checkpoint-every), then --resume: same weights, bit for bit."""
    # mlp with dropout: the masks come from the global torch generator, the order from the seeded shuffle.
    # 960 examples / 16 = 60 steps per epoch; checkpoints at steps 4, 8, ... and at each epoch end.
    args = ["train", "mlp", "--model-arg", "dropout=0.3", "--epochs", "2", "--limit-train", "960", "--limit-test", "40",
            "--batch-size", "16", "--checkpoint-every", "4", "--seed", "3", "--no-report", "--no-progress"]
    cmd = [sys.executable, "-m", "nnatlas", *args]
    env = subprocess_env()
    ref = subprocess.run([*cmd, "--out", str(tmp_path / "ref")], env=env, capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr

    killed = tmp_path / "killed"
    kill_after_first_checkpoint(cmd, killed, env)
    assert not (killed / "final.json").exists(), "the run finished before it was killed"
    state = load_checkpoint(killed, model_name="mlp").state
    assert 0 < state["step_in_epoch"] < 60 and state["epoch"] == 0  # killed mid-epoch

    resumed = subprocess.run([*cmd, "--out", str(killed), "--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming mlp" in resumed.stderr

    a, b = load_file(tmp_path / "ref" / "last.safetensors"), load_file(killed / "last.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k

    def rows(run: Path) -> list[dict]:
        return [{k: v for k, v in json.loads(line).items() if k != "time_s"} for line in (run / "metrics.jsonl").read_text().splitlines()]

    assert rows(tmp_path / "ref") == rows(killed)


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "diverge"
    rc, _, err = _cli(capsys, "train", "linear_regression", "--optimizer", "sgd", "--lr", "1e30", "--schedule", "none",
                      "--batch-size", "16", "--epochs", "3", "--checkpoint-every", "1", "--out", str(run), "--no-progress")
    assert rc == 2
    line = err.strip().splitlines()[-1]
    assert "training diverged: the loss is" in line and "last good checkpoint" in line
    ckpt = load_checkpoint(run, model_name="linear_regression")  # intact, and its weights are finite
    assert all(torch.isfinite(v).all() for k, v in ckpt.tensors.items() if k.startswith("model."))
    assert not (run / "final.json").exists()


@pytest.mark.parametrize(
    ("model", "data", "metric", "floor"),
    [
        ("linear_regression", "diabetes", "test_r2", 0.30),
        ("logistic_regression", "breast-cancer", "test_acc", 0.93),
        ("softmax_regression", "iris", "test_acc", 0.85),
    ],
)
def test_tabular_tasks_learn(tmp_path: Path, model: str, data: str, metric: str, floor: float) -> None:
    # OLS on this split (scikit-learn's, random_state=0) reaches R² 0.33; the defaults get there.
    result = train(TrainConfig(model=model, data=data, epochs=20, out=str(tmp_path / model), report=False), progress=False)
    assert result.final[metric] >= floor, result.history
    if metric == "test_r2":
        assert result.final["test_mse"] > 0


def test_config_for_resume_fills_saved_options(tmp_path: Path) -> None:
    from nnatlas.train.trainer import config_for_run

    run = tmp_path / "r"
    train(TrainConfig(model="mlp", epochs=1, batch_size=16, limit_train=32, limit_test=16, out=str(run), report=False), progress=False)
    cfg = config_for_run("mlp", {"out": str(run), "resume": True})
    assert (cfg.batch_size, cfg.limit_train, cfg.epochs) == (16, 32, 1)
    with pytest.raises(ValueError, match="trains 'mlp', not 'lenet'"):
        config_for_run("lenet", {"out": str(run), "resume": True})


def test_resume_compares_task_options_one_by_one(tmp_path: Path) -> None:
    """A resumed run keeps its saved task options (its recipe's among them); one given that differs from what the run
    used is an error, and so is an option given now that the run saved as None (--ema on a run without it)."""
    from nnatlas.train.trainer import config_for_run

    run = tmp_path / "r"
    run.mkdir()
    saved = {"model": "ddpm_tiny", "steps": 12, "ema": None, "task_options": {"ddim_eta": 1.0, "ddim_steps": 2}}
    used = {"ddim_eta": 1.0, "ddim_steps": 2, "quality_every": 0}  # config.json's whole set, the task's defaults among them
    (run / "config.json").write_text(json.dumps({"config": saved, "task_options": used}))
    cfg = config_for_run("ddpm_tiny", {"out": str(run), "resume": True, "task_options": {"ddim_steps": 2}})
    assert cfg.task_options == {"ddim_eta": 1.0, "ddim_steps": 2} and cfg.resolved().task_options == cfg.task_options
    with pytest.raises(ValueError, match=r"has --ddim-steps=2; got 3"):
        config_for_run("ddpm_tiny", {"out": str(run), "resume": True, "task_options": {"ddim_steps": 3}})
    with pytest.raises(ValueError, match=r"has --quality-every=0; got 5"):  # a default the run used is not free either
        config_for_run("ddpm_tiny", {"out": str(run), "resume": True, "task_options": {"quality_every": 5}})
    with pytest.raises(ValueError, match=r"has ema=None; got 0.9"):
        config_for_run("ddpm_tiny", {"out": str(run), "resume": True, "ema": 0.9})


def test_resume_keeps_the_runs_free_options_unless_given_anew(tmp_path: Path) -> None:
    """--patience, --checkpoint-every, --threads may change on --resume; not given, they are the run's (a run resumed
    without repeating its --patience still stops early), and out / resume / overwrite are never taken from it."""
    from nnatlas.train.trainer import config_for_run

    run = tmp_path / "r"
    run.mkdir()
    saved = {"model": "lenet", "epochs": 3, "patience": 2, "stop_rule": "window", "checkpoint_every": 50, "threads": 2,
             "out": "elsewhere", "resume": False, "overwrite": True}  # fmt: skip
    (run / "config.json").write_text(json.dumps({"config": saved}))
    cfg = config_for_run("lenet", {"out": str(run), "resume": True})
    assert (cfg.patience, cfg.stop_rule, cfg.checkpoint_every, cfg.threads) == (2, "window", 50, 2)
    assert (cfg.out, cfg.resume, cfg.overwrite) == (str(run), True, False)
    cfg = config_for_run("lenet", {"out": str(run), "resume": True, "patience": 5, "checkpoint_every": 0, "threads": 1})
    assert (cfg.patience, cfg.checkpoint_every, cfg.threads) == (5, 0, 1)


def test_ema_is_the_documented_average_of_the_weights_and_copies_counters(tmp_path: Path) -> None:
    """--ema after one update: d = min(ema, 1 / 10), shadow = d * initial + (1 - d) * trained; BatchNorm's
    integer counter is copied, not averaged (lenet_bn has both kinds)."""
    from nnatlas import data
    from nnatlas.train.tasks import task_class

    cfg = TrainConfig(model="lenet_bn", data="digits", steps=1, batch_size=16, ema=0.999, seed=5, out=str(tmp_path / "run"),
                      report=False, checkpoint_every=1)  # fmt: skip
    train(cfg, progress=False)
    tensors = load_checkpoint(tmp_path / "run", model_name="lenet_bn").tensors
    torch.manual_seed(5)  # the trainer's initial weights
    _, init = task_class("classification").fit("lenet_bn", data.load("digits"), {}, {})
    state = init.state_dict()
    floats = [k for k, v in state.items() if v.is_floating_point()]
    assert any(k.endswith("num_batches_tracked") for k in state) and floats
    for k, v in state.items():
        trained, shadow = tensors[f"model.{k}"], tensors[f"ema.{k}"]
        if v.is_floating_point():
            assert torch.allclose(shadow, 0.1 * v + 0.9 * trained, atol=1e-6), k
        else:
            assert torch.equal(shadow, trained) and not torch.equal(shadow, v), k
