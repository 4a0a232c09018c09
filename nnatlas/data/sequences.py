"""Sequence data: the Pointer Network files (convex hull, TSP) and univariate time series.

Pointer Networks (Vinyals et al. 2015), ``task="pointer"``: one instance a line,
``x1 y1 x2 y2 ... output i1 i2 ... i1`` with 1-based indices of a closed cycle (the hull in
order, or the optimal tour). Items are ``(points, target)``: float32 ``(n, 2)`` and int64
``(m,)`` **0-based** indices including the closing repeat of the first, padded to the longest
target with ``-100`` (``CrossEntropyLoss``'s default ``ignore_index``; hulls vary in length).
Only the authors' *test* files are available, so the last ``test_size`` instances (default
1,000) are the test split and the rest train. ``convex-hull-5``: 5 points; ``tsp-10``: 10
cities (``meta["optimal_tour_length"]`` is the mean optimal length of the test split).
``meta["problem"]`` names the problem (``hull``, ``tsp``) for the pointer task. ``sort-10``
is generated (offline): 10 uniform numbers in [0, 1) as ``(10, 1)`` and the ascending order
``(10,)``, 10,000 train and 1,000 test instances from fixed seeds (``problem="sort"``).

Time series (statsmodels' CSVs), ``task="forecast"``: ``sunspots`` (yearly 1700-2008) and
``co2`` (weekly Mauna Loa 1958-2001; its 59 missing weeks are filled by linear interpolation,
counted in ``meta["filled"]``). The series is split in time: the last ``test_fraction``
(default 20 %) of the *targets* are the test split. Values are standardised with the training
part's mean and std (``meta["mean"]``, ``meta["std"]`` undo it). Items are ``(x, y)``: float32
``(window, 1)`` (time by one feature, the ``(T, D)`` layout of the recurrent models) and the
next value ``(1,)``. :func:`load_csv_series` does the same for any column of any CSV file.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from nnatlas.data.bundle import DataBundle, LoadContext, register_dataset
from nnatlas.data.download import RemoteFile, sha256_file
from nnatlas.data.errors import DataError
from nnatlas.data.formats import read_bytes

__all__ = ["POINTER_FILES", "TIMESERIES_FILES", "load_csv_series", "make_windows", "parse_pointer_file",
           "read_series_csv"]

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100

POINTER_FILES = {
    "convex-hull-5": RemoteFile(
        "convex_hull_5_test.txt",
        "https://raw.githubusercontent.com/JoseVillagranE/Pointer-Networks/"
        "1b57f8e4f654f08b83e299807820e76efa7f1f3a/data/convex_hull_5_test.txt",
        "0e5ba4d58c21f035a18c72403ffc1ef0a4525e8b407369bcb5f4b564561df99e", size=1_291_168),
    "tsp-10": RemoteFile(
        "tsp_10_test_exact.txt",
        "https://raw.githubusercontent.com/jaykim1409/ptrnetwork/"
        "4022039b36c4be2c1ac6311d9b1abc7496042fc0/data/tsp_10_test_exact.txt",
        "31ce95d4227e24a23d2d81972cf002b9c18cc2ac11c9f7fbd9da80d6e7b76be8", size=2_110_000),
}


def parse_pointer_file(path: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Points ``(N, n, 2)`` float32, padded 0-based targets ``(N, m_max)`` int64, target lengths ``(N,)``.

    Raises:
        DataError: a line without ``output``, an odd number of coordinates, instances of
            different sizes, or an index outside ``1..n``; the message gives the line number.
    """
    points: list[list[float]] = []
    targets: list[list[int]] = []
    n_points: int | None = None
    for lineno, line in enumerate(_text(path, "ascii").splitlines(), start=1):
        if not line.strip():
            continue
        head, sep, tail = line.partition(" output ")
        if not sep:
            raise DataError(f"{path}:{lineno}: expected 'x1 y1 ... output i1 i2 ...'; no 'output' found")
        try:
            coords = [float(v) for v in head.split()]
            order = [int(v) - 1 for v in tail.split()]  # 1-based in the file
        except ValueError as err:
            raise DataError(f"{path}:{lineno}: {err}") from err
        if len(coords) % 2 or not coords:
            raise DataError(f"{path}:{lineno}: expected pairs of coordinates; got {len(coords)} numbers")
        n = len(coords) // 2
        if n_points is None:
            n_points = n
        elif n != n_points:
            raise DataError(f"{path}:{lineno}: expected {n_points} points like the lines before; got {n}")
        if not order or min(order) < 0 or max(order) >= n:
            raise DataError(f"{path}:{lineno}: output indices must be in 1..{n}; got {tail.strip()!r}")
        points.append(coords)
        targets.append(order)
    if not points:
        raise DataError(f"{path}: no instances found")
    lengths = torch.tensor([len(t) for t in targets], dtype=torch.int64)
    padded = torch.full((len(targets), int(lengths.max())), IGNORE_INDEX, dtype=torch.int64)
    for i, t in enumerate(targets):
        padded[i, : len(t)] = torch.tensor(t, dtype=torch.int64)
    return torch.tensor(points, dtype=torch.float32).reshape(len(points), -1, 2), padded, lengths


def _tour_length(points: torch.Tensor, order: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Length of each closed tour ``(N,)``; the order already repeats its first index at the end."""
    out = torch.zeros(len(points), dtype=torch.float64)
    for i in range(len(points)):
        p = points[i, order[i, : lengths[i]]].double()  # (m, 2)
        out[i] = (p[1:] - p[:-1]).norm(dim=1).sum()
    return out


def _pointer(ctx: LoadContext, name: str, test_size: int, summary: str) -> DataBundle:
    file = POINTER_FILES[name]
    path = ctx.files(name, "pointer-networks", [file])[file.name]
    points, targets, lengths = parse_pointer_file(path)
    n = len(points)
    if not 1 <= test_size < n:
        raise DataError(f"{name}: test_size must be in 1..{n - 1}; got {test_size}")
    cut = n - test_size
    meta = {"ignore_index": IGNORE_INDEX, "target_lengths": lengths, "num_points": points.shape[1],
            "problem": "tsp" if name.startswith("tsp") else "hull",
            "split": f"the authors' test file: instances 0..{cut - 1} train, the last {test_size} test",
            "target": "0-based indices of the closed cycle (first index repeated at the end), padded with -100",
            "source": "https://drive.google.com/drive/folders/0B2fg8yPGn2TCMzBtS0o4Q2RJaEU (Vinyals et al. 2015; "
                      f"mirror {file.url})", "licence": "none stated", "summary": summary}
    if name.startswith("tsp"):
        meta["optimal_tour_length"] = float(_tour_length(points[cut:], targets[cut:], lengths[cut:]).mean())
    return DataBundle(
        name=name, task="pointer",
        train=TensorDataset(points[:cut], targets[:cut]), test=TensorDataset(points[cut:], targets[cut:]),
        num_classes=int(points.shape[1]), input_shape=tuple(points.shape[1:]), meta=meta,
    )


@register_dataset("convex-hull-5", summary="Ptr-Net convex hulls of 5 points, 9000/1000", task="pointer")
def _convex_hull_5(ctx: LoadContext, *, test_size: int = 1000) -> DataBundle:
    return _pointer(ctx, "convex-hull-5", test_size, "convex hull of 5 uniform points in the unit square")


@register_dataset("tsp-10", summary="Ptr-Net optimal TSP tours of 10 cities, 9000/1000", task="pointer")
def _tsp_10(ctx: LoadContext, *, test_size: int = 1000) -> DataBundle:
    return _pointer(ctx, "tsp-10", test_size, "optimal closed tour of 10 uniform cities in the unit square")


@register_dataset("sort-10", summary="sort 10 uniform numbers (generated), 10000/1000", task="pointer", offline=True)
def _sort_10(ctx: LoadContext, *, train_size: int = 10_000, test_size: int = 1000) -> DataBundle:
    def split(seed: int, n: int) -> TensorDataset:
        numbers = torch.rand(n, 10, 1, generator=torch.Generator().manual_seed(seed))  # (n, 10, 1)
        return TensorDataset(numbers, numbers[..., 0].argsort(dim=1))  # (n, 10) positions in ascending order
    return DataBundle(
        name="sort-10", task="pointer", train=split(2015, train_size), test=split(2016, test_size), num_classes=10,
        input_shape=(10, 1), meta={"problem": "sort", "num_points": 10, "target": "0-based positions, ascending",
                                   "split": f"generated: {train_size} train (seed 2015), {test_size} test (seed 2016)",
                                   "source": "generated by nnatlas", "licence": "none needed"},
    )


# ---------------------------------------------------------------------------------------------
# univariate time series

_SM_URL = "https://raw.githubusercontent.com/statsmodels/statsmodels/v0.14.4/statsmodels/datasets"
TIMESERIES_FILES = {
    "sunspots": RemoteFile("sunspots.csv", f"{_SM_URL}/sunspots/sunspots.csv",
                           "f67889b1d9002cd5227f0e0ef54e35b419cdd85a31279adef6f73fb41e5c0a9b", size=2_944),
    "co2": RemoteFile("co2.csv", f"{_SM_URL}/co2/co2.csv",
                      "16695fa2786e53414e5a6b54767a3fdf5de99cfbc68617f69d1362d92776a92f", size=33_974),
}
_COLUMNS = {"sunspots": ("YEAR", "SUNACTIVITY"), "co2": ("date", "co2")}


def _statsmodels_copy(name: str) -> Path | None:
    """statsmodels' own copy of the CSV when it is installed and byte-identical to the canonical file."""
    spec = importlib.util.find_spec("statsmodels")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "datasets" / name / f"{name}.csv"
    if path.is_file() and sha256_file(path) == TIMESERIES_FILES[name].sha256:
        return path
    return None


def _text(path: Path, encoding: str) -> str:
    """The file's text (gzipped or not), or DataError when it is not ``encoding`` text."""
    try:
        return read_bytes(path).decode(encoding)
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: expected {encoding} text; byte {err.start} is {err.object[err.start:err.start + 1]!r}") from err


def read_series_csv(path: str | os.PathLike[str], column: str,
                    time_column: str | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """One column of a CSV file with a header row (gzipped or not) as a float series.

    Returns the time column (the row number when ``time_column`` is None), the values with
    missing cells linearly interpolated, and how many were filled.

    Raises:
        DataError: a missing column, a cell that is not a number, or no values at all.
    """
    path = Path(path)
    try:
        rows = list(csv.DictReader(io.StringIO(_text(path, "utf-8"), newline="")))
    except csv.Error as err:
        raise DataError(f"{path}: not a readable CSV file ({err})") from err
    wanted = [c for c in (column, time_column) if c is not None]
    if not rows or any(c not in rows[0] for c in wanted):
        found = list(rows[0]) if rows else []
        raise DataError(f"{path}: expected a CSV with the column(s) {wanted}; found {found}")
    short = next((i for i, r in enumerate(rows, start=2) if any(r[c] is None for c in wanted)), None)
    if short is not None:
        raise DataError(f"{path}: line {short} has fewer cells than the header; expected a value for {wanted}")
    try:
        values = np.array([float(r[column]) if r[column].strip() else np.nan for r in rows])
        times = (np.array([float(r[time_column]) for r in rows]) if time_column is not None
                 else np.arange(len(rows), dtype=np.float64))
    except ValueError as err:
        raise DataError(f"{path}: expected numbers in {wanted} ({err})") from err
    if np.isinf(values).any() or not np.isfinite(times).all():
        raise DataError(f"{path}: expected finite numbers in {wanted}; found inf or nan")
    missing = np.isnan(values)
    if missing.all():
        raise DataError(f"{path}: the column {column!r} has no values")
    if missing.any():
        idx = np.arange(len(values))
        values[missing] = np.interp(idx[missing], idx[~missing], values[~missing])
    return times, values, int(missing.sum())


def make_windows(series: np.ndarray, window: int,
                 test_fraction: float) -> tuple[TensorDataset, TensorDataset, float, float]:
    """Sliding windows ``(window, 1)`` -> next value ``(1,)``, split in time, standardised with train statistics.

    The first ``1 - test_fraction`` of the targets train; the statistics come from the values the
    training windows see (inputs and targets), so no test value leaks into them.
    """
    n_targets = len(series) - window
    if window < 1 or n_targets < 2:
        raise DataError(f"make_windows: window must be in 1..{len(series) - 2} for a series of {len(series)}; "
                        f"got {window}")
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"make_windows: test_fraction must be in (0, 1); got {test_fraction}")
    n_test = max(1, round(n_targets * test_fraction))
    n_train = n_targets - n_test
    if n_train < 1:
        raise DataError(f"make_windows: no training windows left for window={window}, test_fraction={test_fraction}")
    seen = series[: n_train + window]  # every value a training window or target touches
    mean, std = float(seen.mean()), float(seen.std()) or 1.0
    z = torch.from_numpy((series - mean) / std).float()
    x = z.unfold(0, window, 1)[:n_targets].unsqueeze(-1)  # (n_targets, window, 1)
    y = z[window:].unsqueeze(-1)  # (n_targets, 1)
    return TensorDataset(x[:n_train], y[:n_train]), TensorDataset(x[n_train:], y[n_train:]), mean, std


def _series_bundle(name: str, path: Path, column: str, time_column: str | None, window: int,
                   test_fraction: float, source: str, licence: str) -> DataBundle:
    times, values, filled = read_series_csv(path, column, time_column)
    train, test, mean, std = make_windows(values, window, test_fraction)
    t = times[window + len(train)]
    first_test_time = int(t) if float(t).is_integer() else t
    return DataBundle(
        name=name, task="forecast", train=train, test=test, num_classes=None, input_shape=(window, 1),
        meta={"mean": mean, "std": std, "window": window, "filled": filled, "length": len(values),
              "times": times.tolist(), "values": values.tolist(), "column": column,
              "split": f"in time: {len(train)} windows train, the last {len(test)} (targets from "
                       f"{first_test_time} on) test; standardised with the training part's mean and std",
              "target": "the next value, standardised: value = y * std + mean",
              "source": source, "licence": licence},
    )


def load_csv_series(path: str | os.PathLike[str], column: str, *, time_column: str | None = None,
                    window: int = 12, test_fraction: float = 0.2, name: str | None = None) -> DataBundle:
    """Any univariate series in a CSV file as a forecasting bundle, like ``sunspots`` (see the module doc)."""
    path = Path(path)
    return _series_bundle(name or path.stem, path, column, time_column, window, test_fraction,
                          source=str(path), licence="as stated by the file's source")


def _timeseries(ctx: LoadContext, name: str, window: int, test_fraction: float) -> DataBundle:
    path = _statsmodels_copy(name)
    if path is None:
        file = TIMESERIES_FILES[name]
        path = ctx.files(name, "timeseries-statsmodels", [file])[file.name]
    time_column, column = _COLUMNS[name]
    return _series_bundle(name, path, column, time_column, window, test_fraction,
                          source=f"statsmodels.datasets.{name} (file {path})",
                          licence="public domain (statsmodels' COPYRIGHT); statsmodels is BSD-3-Clause")


@register_dataset("sunspots", summary="yearly sunspot activity 1700-2008 (309 values), windows -> next",
                  task="forecast")
def _sunspots(ctx: LoadContext, *, window: int = 12, test_fraction: float = 0.2) -> DataBundle:
    return _timeseries(ctx, "sunspots", window, test_fraction)


@register_dataset("co2", summary="weekly Mauna Loa CO2 1958-2001 (2284 values), windows -> next", task="forecast")
def _co2(ctx: LoadContext, *, window: int = 52, test_fraction: float = 0.2) -> DataBundle:
    return _timeseries(ctx, "co2", window, test_fraction)
