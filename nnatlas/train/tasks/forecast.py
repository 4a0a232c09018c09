"""Forecasting a univariate series: ``time_rnn`` on ``sunspots`` (the default) and ``co2``.

The data sets (``nnatlas.data.sequences``) give windows of ``T`` standardised values,
``x (T, 1)``, and the next value ``y (1,)``, split in time (the last 20 % of the targets are the
held-out tail). Seed 000's time RNN labels every step, ``(B, T, F) -> (B, T, K)``; here it is
configured with ``F = K = 1`` and **every step forecasts the next value**: the output at step
``t`` predicts ``x[t+1]``, the last step's predicts ``y``. The loss is the mean squared error
over all ``T`` steps (standardised units); the metrics score the last step only.

``--relative`` (the default): each window is read relative to its last value and the model
predicts changes, ``x'[t] = (x[t] - x[T-1]) / s`` and ``out[t] ~ (x[t+1] - x[t]) / s`` with
``s`` the standard deviation of the training part's one-step changes; the forecast is
``x[T-1] + s * out[T-1]``. A series with a trend (co2) leaves the training range in its held-out
tail; relative windows keep the model's inputs where it was trained. ``--no-relative`` feeds
levels and reads levels.

Forecasts, all scored on the held-out tail in the data's own units (``meta["mean"]``/``["std"]``):

- one step: ``rmse``, ``mae``, beside ``persistence_rmse``/``_mae`` (the next value is the last
  one) and ``seasonal_rmse``/``_mae`` (seasonal naive: the value one season earlier, ``m``
  steps back);
- multi-step, recursive: from every held-out window the model forecasts ``--horizon`` steps,
  each forecast appended to the window (the oldest value dropped) and fed back in;
  ``multi_rmse``/``multi_mae`` over every step whose truth exists, beside the same horizons of
  persistence (the last value repeated) and seasonal naive (``y[t+h] = y[t+h-km]``, k the
  smallest that reaches back into the known window) as ``multi_persistence_rmse`` and
  ``multi_seasonal_rmse``.

The season ``m`` (``--season``): 11 for ``sunspots`` (yearly values, the ~11-year solar
cycle), 52 for ``co2`` (weekly values, the yearly cycle); 1 for any other series unless given.
The horizon defaults to one season. ``test_rmse`` picks ``best.safetensors``.

Each evaluation writes ``forecast-<tag>.png``: the series around the held-out tail, the
one-step forecasts, and the recursive forecast of the whole tail from its first window.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import nnatlas
from nnatlas.train.tasks.base import (
    Batch,
    Option,
    Plan,
    Task,
    check_model_args,
    config_fields,
    positive_int,
    probe,
    register_task,
)
from nnatlas.train.tasks.vision import gather

__all__ = ["ForecastTask", "SEASONS", "seasonal_naive", "persistence", "forecast_metrics"]

SEASONS = {"sunspots": 11, "co2": 52}  # steps per season, by data set (see the module docstring)
INPUT_FIELDS = ("input_size",)
OUTPUT_FIELDS = ("num_labels", "output_size", "out_features")

# The sum vector: one-step (model, persistence, seasonal naive), then multi-step, each (sse, sae), and counts.
_SUM_NAMES = (
    "loss",
    "sse",
    "sae",
    "p_sse",
    "p_sae",
    "s_sse",
    "s_sae",
    "n",
    "m_sse",
    "m_sae",
    "mp_sse",
    "mp_sae",
    "ms_sse",
    "ms_sae",
    "m_n",
)


def persistence(series: Tensor, pos: Tensor, h: int = 1) -> Tensor:
    """Persistence forecast of ``series[pos + h - 1]`` made at ``pos - 1``: the last known value ``series[pos - 1]``."""
    return series[pos - 1]


def seasonal_naive(series: Tensor, pos: Tensor, season: int, h: int = 1) -> Tensor:
    """Seasonal-naive forecast of ``series[pos + h - 1]`` made at ``pos - 1``: the value ``k`` seasons earlier,
    ``k = ceil(h / season)`` (the nearest season back that is already known). Needs ``pos + h - 1 - k*season >= 0``."""
    k = -(-h // season)
    return series[pos + h - 1 - k * season]


def plot_times(times: Sequence[float]) -> np.ndarray:
    """The series' time column for a plot axis: ``YYYYMMDD`` dates (co2's) as decimal years, else as they are."""
    t = np.asarray(times, dtype=np.float64)
    if len(t) and np.all((t >= 1e7) & (t < 3e7) & (t == np.round(t))):
        import datetime as dt

        def year(v: float) -> float:
            d = dt.date(int(v) // 10000, int(v) // 100 % 100, int(v) % 100)
            return d.year + (d.timetuple().tm_yday - 1) / 365.25

        return np.array([year(v) for v in t])
    return t


def forecast_metrics(sums: Tensor, std: float) -> dict[str, float]:
    """RMSE and MAE in the data's units from the sum vector (errors summed in standardised units)."""
    s = dict(zip(_SUM_NAMES, sums.detach().double().cpu().tolist()))
    n, m = s["n"], s["m_n"]

    def rmse(key: str, count: float) -> float:
        return math.sqrt(s[key] / count) * std if count else math.nan

    def mae(key: str, count: float) -> float:
        return s[key] / count * std if count else math.nan

    return {
        "loss": s["loss"] / n if n else math.nan,
        "rmse": rmse("sse", n),
        "mae": mae("sae", n),
        "persistence_rmse": rmse("p_sse", n),
        "persistence_mae": mae("p_sae", n),
        "seasonal_rmse": rmse("s_sse", n),
        "seasonal_mae": mae("s_sae", n),
        "multi_rmse": rmse("m_sse", m),
        "multi_mae": mae("m_sae", m),
        "multi_persistence_rmse": rmse("mp_sse", m),
        "multi_seasonal_rmse": rmse("ms_sse", m),
    }


@register_task
class ForecastTask(Task):
    """Windows in, the next value out, every step of the window forecasting its successor (module docstring)."""

    kind = "forecast"
    data_kinds = ("forecast",)
    best, mode = "test_rmse", "min"
    num_sums = len(_SUM_NAMES)
    options = {
        "relative": Option(
            bool, True, "read each window relative to its last value and forecast changes (--no-relative: levels)"
        ),
        "season": Option(
            int,
            None,
            "the seasonal-naive baseline's period in steps (default: 11 for sunspots, 52 for co2, else 1)",
            check=positive_int,
            expect="an integer >= 1",
        ),
        "horizon": Option(
            int,
            None,
            "steps of the recursive multi-step forecast (default: one season)",
            check=positive_int,
            expect="an integer >= 1",
        ),
    }

    def __init__(self, plan: Plan, bundle: Any | None, options: Mapping[str, Any]) -> None:
        super().__init__(plan, bundle, options)
        d = plan.details
        self.window, self.season, self.horizon = int(d["window"]), int(d["season"]), int(d["horizon"])
        self.relative, self.scale = bool(d["relative"]), float(d["scale"])
        self.mean, self.std = float(d["mean"]), float(d["std"])
        self.series: Tensor | None = None  # the whole standardised series (T_total,)
        if bundle is not None:
            values = np.asarray(bundle.meta["values"], dtype=np.float64)
            self.series = torch.from_numpy((values - self.mean) / self.std).float()  # as make_windows computes it
        self._on: dict[str, Tensor] = {}

    # -- fitting ------------------------------------------------------------------------------

    @classmethod
    def check_card(cls, card: nnatlas.ModelCard, data: Any) -> None:
        if len(card.input_shape) != 2:
            raise ValueError(
                f"model {card.name!r} takes inputs {card.input_shape}; the forecast task feeds windows (T, 1)"
            )

    @classmethod
    def fit(
        cls, model_name: str, bundle: Any, options: Mapping[str, Any], model_args: Mapping[str, Any]
    ) -> tuple[Task, nn.Module]:
        where = f"model {model_name!r} on data set {bundle.name!r}"
        cls.check_card(nnatlas.card(model_name), bundle)
        opts = {name: options.get(name, opt.default) for name, opt in cls.options.items()}
        fields = config_fields(model_name)
        check_model_args(model_name, fields, model_args)
        input_field = next((f for f in INPUT_FIELDS if f in fields), None)
        output_field = next((f for f in OUTPUT_FIELDS if f in fields), None)
        if input_field is None or output_field is None:
            raise ValueError(
                f"{where}: the model's config names no input size ({'/'.join(INPUT_FIELDS)}) "
                f"or output size ({'/'.join(OUTPUT_FIELDS)})"
            )
        meta = bundle.meta
        missing = [k for k in ("values", "mean", "std", "window") if k not in meta]
        if missing:
            raise ValueError(
                f"{where}: a forecast set gives meta {missing} (the series and its standardisation); this one does not"
            )
        window = int(meta["window"])
        n_train = len(bundle.train)
        season = opts["season"] or SEASONS.get(bundle.name, 1)
        horizon = opts["horizon"] or season
        values = np.asarray(meta["values"], dtype=np.float64)
        if window + n_train + len(bundle.test) != len(values):
            raise ValueError(
                f"{where}: expected {len(values)} = window {window} + {n_train} train + {len(bundle.test)} test targets"
            )
        train_part = (values[: window + n_train] - meta["mean"]) / meta["std"]
        scale = (
            (float(np.diff(train_part).std()) or 1.0) if opts["relative"] else 1.0
        )  # s: the spread of one-step changes
        details = {
            "window": window,
            "n_train": n_train,
            "mean": float(meta["mean"]),
            "std": float(meta["std"]),
            "relative": bool(opts["relative"]),
            "scale": scale,
            "season": int(season),
            "horizon": int(horizon),
            "season_from": "--season"
            if opts["season"]
            else (f"SEASONS[{bundle.name!r}]" if bundle.name in SEASONS else "default 1"),
        }
        overrides = {input_field: 1, output_field: 1, **model_args}
        plan = Plan(model=model_name, data=bundle.name, task=cls.kind, overrides=overrides, details=details)
        model = nnatlas.create(model_name, **overrides)
        task = cls(plan, bundle, options)
        x, y = gather(bundle.train, torch.arange(min(2, n_train)))
        pos = torch.arange(min(2, n_train)) + window
        if not torch.equal(task.series[pos], y.reshape(-1).float()):
            raise ValueError(f"{where}: the windows do not follow meta['values'] (target i is values[window + i])")
        out = probe(model, task.inputs(x.float()))
        if out.dim() != 3 or tuple(out.shape[1:]) != (window, 1):
            raise ValueError(
                f"{where}: expected per-step forecasts (B, {window}, 1); the model gives {tuple(out.shape)}"
            )
        return task, model

    # -- data ---------------------------------------------------------------------------------

    def _series(self, device: torch.device) -> Tensor:
        key = str(device)
        if key not in self._on:
            assert self.series is not None, "the task was rebuilt without data"
            self._on[key] = self.series.to(device)
        return self._on[key]

    def batch(
        self, split: str, indices: Tensor, *, device: torch.device, generator: torch.Generator | None = None
    ) -> Batch:
        """``x`` (B, T, 1) standardised windows, ``y`` (B,) the next values, ``pos`` (B,) the targets' places
        in the series; no randomness (``generator`` unused)."""
        x, y = gather(getattr(self.bundle, split), indices)
        offset = self.window + (0 if split == "train" else int(self.plan.details["n_train"]))
        return {
            "x": x.float().to(device),
            "y": y.float().reshape(-1).to(device),
            "pos": (indices.long() + offset).to(device),
        }

    def report_input(self, device: torch.device) -> Any:
        return self.inputs(self.batch("train", torch.arange(min(2, self.size("train"))), device=device)["x"])

    # -- model in, forecasts out ----------------------------------------------------------------

    def inputs(self, x: Tensor) -> Tensor:
        """Standardised windows (B, T, 1) -> the model's input (relative to the last value and scaled, or as is)."""
        return (x - x[:, -1:]) / self.scale if self.relative else x

    def levels(self, x: Tensor, out: Tensor) -> Tensor:
        """The model's per-step output (B, T, 1) -> per-step forecasts of the next value, standardised (B, T)."""
        out = out.float()[..., 0]  # (B, T)
        return x[..., 0] + self.scale * out if self.relative else out

    def one_step(self, model: nn.Module, x: Tensor) -> Tensor:
        """The next value after each window (B, T, 1) -> (B,), standardised."""
        return self.levels(x, model(self.inputs(x)))[:, -1]

    def recursive(self, model: nn.Module, x: Tensor, steps: int) -> Tensor:
        """``steps`` values after each window (B, T, 1), each forecast fed back in: (B, steps), standardised."""
        outs = []
        for _ in range(steps):
            nxt = self.one_step(model, x)  # (B,)
            outs.append(nxt)
            x = torch.cat([x[:, 1:], nxt.view(-1, 1, 1)], dim=1)  # slide: drop the oldest, append the forecast
        return torch.stack(outs, dim=1)  # (B, steps)

    @torch.no_grad()
    def forecast(self, model: nn.Module, history: Sequence[float], steps: int) -> list[float]:
        """The next ``steps`` values after ``history`` (the data's own units, at least ``window`` values)."""
        if len(history) < self.window:
            raise ValueError(f"forecast: needs at least {self.window} values of history; got {len(history)}")
        p = next(model.parameters())
        z = (torch.tensor(list(history[-self.window :]), dtype=torch.float64) - self.mean) / self.std
        out = self.recursive(model, z.float().to(p.device).view(1, -1, 1), steps)[0]
        return (out.double().cpu() * self.std + self.mean).tolist()

    # -- loss, metrics --------------------------------------------------------------------------

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        x, y = batch["x"], batch["y"]
        pred = self.levels(x, model(self.inputs(x)))  # (B, T): step t forecasts x[t+1]
        target = torch.cat([x[:, 1:, 0], y[:, None]], dim=1)  # (B, T)
        return F.mse_loss(pred, target)

    def sums(self, model: nn.Module, batch: Batch) -> Tensor:
        x, y, pos = batch["x"], batch["y"], batch["pos"]
        z = self._series(x.device)
        pred = self.one_step(model, x)  # (B,)
        p = persistence(z, pos)
        s = seasonal_naive(z, pos, self.season)
        out = [
            ((pred - y) ** 2).sum(),
            ((pred - y) ** 2).sum(),
            (pred - y).abs().sum(),
            ((p - y) ** 2).sum(),
            (p - y).abs().sum(),
            ((s - y) ** 2).sum(),
            (s - y).abs().sum(),
            torch.tensor(float(len(y)), device=y.device),
        ]
        # Multi-step: every horizon whose truth lies inside the series.
        multi = self.recursive(model, x, self.horizon)  # (B, H)
        h = torch.arange(1, self.horizon + 1, device=x.device)  # (H,)
        where = pos[:, None] + h[None] - 1  # (B, H): the truth's places
        valid = where < len(z)
        truth = z[where.clamp_max(len(z) - 1)]
        k = -(-h // self.season)  # seasons back
        seasonal = z[(where - k[None] * self.season).clamp_min(0)]
        err_m, err_p, err_s = (multi - truth)[valid], (p[:, None] - truth)[valid], (seasonal - truth)[valid]
        out += [
            (err_m**2).sum(),
            err_m.abs().sum(),
            (err_p**2).sum(),
            err_p.abs().sum(),
            (err_s**2).sum(),
            err_s.abs().sum(),
            valid.sum().float(),
        ]
        return torch.stack([v.double() for v in out])

    def metrics(self, sums: Tensor) -> dict[str, float]:
        return forecast_metrics(sums, self.std)

    # -- artefacts and inference ----------------------------------------------------------------

    @torch.no_grad()
    def artefacts(self, model: nn.Module, folder: Path, tag: str) -> list[Path]:
        """``forecast-<tag>.png``: truth, one-step forecasts and the recursive forecast of the held-out tail."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        if self.bundle is None:
            return []
        p = next(model.parameters())
        z = self._series(p.device)
        n_test = self.size("test")
        start = self.window + int(self.plan.details["n_train"])  # the first held-out target
        idx = torch.arange(n_test)
        x = self.batch("test", idx, device=p.device)["x"]
        one = torch.cat([self.one_step(model, xb) for xb in x.split(512)])  # (N,)
        tail = self.recursive(model, x[:1], n_test)[0]  # (N,) from the first held-out window

        def units(v: Tensor) -> np.ndarray:
            return (v.double().cpu() * self.std + self.mean).numpy()

        times = plot_times(self.bundle.meta.get("times", range(len(z))))
        lo = max(0, start - 2 * n_test)
        fig = Figure(figsize=(10, 4), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.subplots()
        ax.plot(times[lo:], units(z[lo:]), color="0.55", lw=1.2, label="truth")
        ax.plot(times[start:], units(one), color="C0", lw=1.2, label="one-step forecast")
        ax.plot(times[start:], units(tail), color="C3", lw=1.2, ls="--", label=f"recursive from {times[start]:.6g}")
        ax.axvline(times[start], color="0.3", lw=0.8, ls=":")
        rmse = float(((one - z[start:]) ** 2).mean().sqrt()) * self.std
        prmse = float(((z[start - 1 : -1] - z[start:]) ** 2).mean().sqrt()) * self.std
        ax.set_title(
            f"{self.plan.model} on {self.plan.data}: one-step RMSE {rmse:.3g} (persistence {prmse:.3g})", fontsize=10
        )
        ax.set_xlabel("time")
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = folder / f"forecast-{tag}.png"
        fig.savefig(path, format="png")
        return [path]

    def inference(self) -> dict[str, Any]:
        d = dict(self.plan.details)
        d["input"] = "task.forecast(model, history, steps): the next values after history (data units)"
        return d
