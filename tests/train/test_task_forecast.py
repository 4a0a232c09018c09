"""The forecast task: the baselines on series whose errors are known by hand, the sums through the task, the
recursive forecast, and a SIGKILLed run resumed bitwise."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from nnatlas.data import load_csv_series
from nnatlas.train.checkpoint import load_checkpoint
from nnatlas.train.tasks.forecast import ForecastTask, forecast_metrics, persistence, seasonal_naive
from kill_resume import assert_same_run, kill_after_first_checkpoint, subprocess_env

CPU = torch.device("cpu")


def test_baselines_on_a_ramp_and_a_sine() -> None:
    ramp = torch.arange(100.0)  # z[t] = t
    pos = torch.tensor([50, 60, 70])
    assert torch.equal(ramp[pos] - persistence(ramp, pos), torch.ones(3))  # the ramp climbs 1 a step
    assert torch.equal(ramp[pos] - seasonal_naive(ramp, pos, 7), torch.full((3,), 7.0))  # one season of 7 steps back
    # h steps ahead from pos - 1: persistence is h behind; seasonal naive reaches back ceil(h / m) seasons.
    for h in (1, 3, 7, 8, 15):
        assert torch.equal(ramp[pos + h - 1] - persistence(ramp, pos, h), torch.full((3,), float(h)))
        assert torch.equal(
            ramp[pos + h - 1] - seasonal_naive(ramp, pos, 7, h), torch.full((3,), 7.0 * math.ceil(h / 7))
        )
        assert bool((pos + h - 1 - 7 * math.ceil(h / 7) <= pos - 1).all())  # only values known at the forecast's origin
    sine = torch.sin(2 * math.pi * torch.arange(100.0) / 10)  # period 10: seasonal naive is exact
    torch.testing.assert_close(seasonal_naive(sine, pos, 10, 4), sine[pos + 3], atol=1e-5, rtol=0)


def test_forecast_metrics_from_hand_made_sums() -> None:
    # 4 one-step errors (standardised) 1, -1, 2, 0; the persistence and seasonal errors all 1; 3 multi-step errors of 2.
    sums = torch.tensor(
        [6.0, 6.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 12.0, 6.0, 3.0, 3.0, 0.0, 0.0, 3.0], dtype=torch.float64
    )
    m = forecast_metrics(sums, std=10.0)  # metrics in the data's units: x std
    assert (
        m["loss"] == pytest.approx(1.5)
        and m["rmse"] == pytest.approx(math.sqrt(1.5) * 10)
        and m["mae"] == pytest.approx(10.0)
    )
    assert m["persistence_rmse"] == pytest.approx(10.0) and m["seasonal_mae"] == pytest.approx(10.0)
    assert m["multi_rmse"] == pytest.approx(20.0) and m["multi_mae"] == pytest.approx(20.0)
    assert m["multi_persistence_rmse"] == pytest.approx(10.0) and m["multi_seasonal_rmse"] == 0.0


class _Zero(nn.Module):
    """Forecasts no change at every step (a relative-window model that outputs zeros)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x) + 0 * self.w


def _ramp_bundle(tmp_path: Path, n: int = 60, window: int = 6) -> object:
    csv = tmp_path / "ramp.csv"
    csv.write_text("t,v\n" + "".join(f"{t},{2.0 * t + 5.0}\n" for t in range(n)))
    return load_csv_series(csv, "v", time_column="t", window=window, test_fraction=0.25, name="ramp")


def test_sums_through_the_task_on_a_ramp(tmp_path: Path) -> None:
    """A ramp v = 2 t + 5: persistence is 2 off one step ahead and 2h off h steps ahead; seasonal naive (m = 3)
    6 off, then 6 ceil(h/3); a model that forecasts 'no change' is persistence, one step and recursively."""
    bundle = _ramp_bundle(tmp_path)
    torch.manual_seed(0)
    task, _ = ForecastTask.fit("time_rnn", bundle, {"season": 3, "horizon": 4}, {"hidden_size": 8, "num_layers": 1})
    assert task.plan.overrides == {"input_size": 1, "num_labels": 1, "hidden_size": 8, "num_layers": 1}
    assert task.plan.details["season_from"] == "--season" and task.relative
    n_test = task.size("test")
    batch = task.batch("test", torch.arange(n_test), device=CPU)
    assert torch.equal(task.series[batch["pos"]], batch["y"])  # pos points at each window's target
    m = task.metrics(task.sums(_Zero(), batch))
    assert m["persistence_rmse"] == pytest.approx(2.0, rel=1e-5) and m["persistence_mae"] == pytest.approx(
        2.0, rel=1e-5
    )
    assert m["seasonal_rmse"] == pytest.approx(6.0, rel=1e-5)
    assert m["rmse"] == pytest.approx(m["persistence_rmse"], rel=1e-6) and m["multi_rmse"] == pytest.approx(
        m["multi_persistence_rmse"], rel=1e-6
    )
    # Multi-step: horizons 1..4 from each test window, counted where the truth exists (the last windows run off the end)
    errs_p, errs_s = [], []
    for j in range(n_test):
        for h in range(1, 5):
            if j + h - 1 < n_test:
                errs_p.append(2.0 * h)
                errs_s.append(6.0 * math.ceil(h / 3))
    assert m["multi_persistence_rmse"] == pytest.approx(math.sqrt(np.mean(np.square(errs_p))), rel=1e-5)
    assert m["multi_seasonal_rmse"] == pytest.approx(math.sqrt(np.mean(np.square(errs_s))), rel=1e-5)
    # The loss scores every step: step t forecasts x[t+1]; 'no change' is off by one ramp step everywhere.
    step = 2.0 / bundle.meta["std"]
    assert task.loss(_Zero(), batch).item() == pytest.approx(step**2, rel=1e-5)


def test_recursive_forecast_feeds_forecasts_back(tmp_path: Path) -> None:
    bundle = _ramp_bundle(tmp_path)
    task, net = ForecastTask.fit("time_rnn", bundle, {"relative": False}, {"hidden_size": 8, "num_layers": 1})
    net.eval()
    x = task.batch("test", torch.arange(2), device=CPU)["x"]
    with torch.no_grad():
        multi = task.recursive(net, x, 3)
        first = task.one_step(net, x)
        second = task.one_step(net, torch.cat([x[:, 1:], first.view(-1, 1, 1)], 1))
    torch.testing.assert_close(multi[:, 0], first, rtol=0, atol=0)
    torch.testing.assert_close(multi[:, 1], second, rtol=0, atol=0)
    history = (x[0, :, 0].double() * task.std + task.mean).tolist()  # back to the data's units
    out = task.forecast(net, history, 3)
    torch.testing.assert_close(
        torch.tensor(out, dtype=torch.float64), multi[0].double() * task.std + task.mean, rtol=1e-5, atol=1e-4
    )


def test_forecast_run_killed_mid_run_and_resumed_equals_uninterrupted_run_bitwise(
    tmp_path: Path, shared_data: Path
) -> None:
    """time_rnn on sunspots with dropout between layers: SIGKILL after a mid-run checkpoint, --resume, same bits."""
    args = [
        "train",
        "time_rnn",
        "--data-dir",
        str(shared_data),
        "--model-arg",
        "hidden_size=16",
        "--model-arg",
        "dropout=0.3",
        "--steps",
        "24",
        "--eval-every",
        "12",
        "--batch-size",
        "16",
        "--checkpoint-every",
        "4",
        "--seed",
        "3",
        "--no-report",
        "--no-progress",
    ]
    cmd = [sys.executable, "-m", "nnatlas", *args]
    env = subprocess_env()
    ref = subprocess.run([*cmd, "--out", str(tmp_path / "ref")], env=env, capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr

    killed = tmp_path / "killed"
    kill_after_first_checkpoint(cmd, killed, env)
    assert not (killed / "final.json").exists(), "the run finished before it was killed"
    assert 0 < load_checkpoint(killed, model_name="time_rnn").state["global_step"] < 24

    resumed = subprocess.run(
        [*cmd, "--out", str(killed), "--resume"], env=env, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    rows = assert_same_run(tmp_path / "ref", killed)
    assert {"test_rmse", "test_persistence_rmse", "test_seasonal_rmse", "test_multi_rmse"} <= set(rows[-1])
    manifest = json.loads((killed / "artefacts" / "manifest.json").read_text())
    assert any(f.startswith("forecast-") and f.endswith(".png") for files in manifest.values() for f in files)


def test_plot_times_reads_yyyymmdd_dates_as_years() -> None:
    from nnatlas.train.tasks.forecast import plot_times

    years = plot_times([19580329, 19590101, 20011229])
    assert years[1] == 1959.0 and 1958.2 < years[0] < 1958.3 and 2001.9 < years[2] < 2002.0
    assert plot_times([1700.0, 1701.0]).tolist() == [1700.0, 1701.0]  # years stay years
