"""Every file-based loader on the real files in ``../shared/data`` (skipped where that folder is absent)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from nnatlas.data import DataNotFoundError, RemoteFile, checksum_table, ensure_files, load, load_csv_series
from nnatlas.data.sequences import make_windows

# ---------------------------------------------------------------------------------------------
# the checksum table against the MANIFEST's SHA256SUMS, and the files against both


def _sha256sums(shared: Path) -> dict[str, str]:
    out = {}
    for line in (shared / "SHA256SUMS").read_text().splitlines():
        if line.strip():
            sha, name = line.split(maxsplit=1)
            out[name.strip().lstrip("*")] = sha
    return out


def test_checksum_table_agrees_with_the_manifest(shared_data):
    listed = _sha256sums(shared_data)
    table = checksum_table()
    unused = {"timeseries-statsmodels/macrodata.csv"}  # multivariate; no loader reads it
    assert set(listed) - set(table) == unused
    for name, sha in listed.items():
        if name not in unused:
            assert table[name] == sha, name


def test_shared_files_match_the_loaders_table(shared_data):
    """Hash the real files through the loaders' own verification (``ensure_files`` with download off)."""
    table = checksum_table()
    by_folder: dict[str, list[RemoteFile]] = {}
    for key, sha in table.items():
        folder, name = key.split("/", 1)
        if (shared_data / key).is_file():
            by_folder.setdefault(folder, []).append(RemoteFile(name, f"https://example.invalid/{key}", sha))
    assert sum(len(v) for v in by_folder.values()) == len(_sha256sums(shared_data)) - 1
    for folder, files in by_folder.items():
        ensure_files(folder, shared_data / folder, files, download=False)


# ---------------------------------------------------------------------------------------------
# images


def test_mnist(shared_data):
    b = load("mnist", data_dir=shared_data, download=False)
    assert (len(b.train), len(b.test)) == (60_000, 10_000)
    assert (b.task, b.num_classes, b.input_shape) == ("classification", 10, (1, 28, 28))
    x, y = b.train[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert int(y) == 5  # the first MNIST training digit is a 5
    assert b.meta["mean"][0] == pytest.approx(0.1307, abs=1e-4)  # the well-known MNIST statistics
    assert b.meta["std"][0] == pytest.approx(0.3081, abs=1e-4)
    assert torch.bincount(b.test.tensors[1]).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_mnist_accepts_gzip_and_plain_copies_in_any_mix(shared_data, tmp_path):
    """A folder holding the gz files (and one uncompressed) is read as it is: the train images are plain."""
    folder = tmp_path / "mnist"
    shutil.copytree(shared_data / "mnist", folder)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    import gzip

    plain = gzip.decompress((shared_data / "mnist/t10k-labels-idx1-ubyte.gz").read_bytes())
    (folder / "t10k-labels-idx1-ubyte").write_bytes(plain)
    b = load("mnist", data_dir=tmp_path, download=False)
    assert torch.bincount(b.test.tensors[1])[1] == 1135


def test_fashion_mnist_offline_names_both_missing_image_files(shared_data):
    with pytest.raises(DataNotFoundError) as info:
        load("fashion-mnist", data_dir=shared_data, download=False)
    message = str(info.value)
    assert "train-images-idx3-ubyte.gz" in message and "t10k-images-idx3-ubyte.gz" in message
    assert "labels" not in message.split("Download these")[1]  # the labels are there: only the images are asked for
    assert str(shared_data / "fashion-mnist") in message


def test_isbi2012(shared_data):
    b = load("isbi2012", data_dir=shared_data, download=False)
    assert (len(b.train), len(b.test)) == (25, 5)
    assert (b.task, b.num_classes, b.input_shape) == ("segmentation", 2, (1, 512, 512))
    x, y = b.test[4]
    assert x.shape == (1, 512, 512) and x.dtype == torch.float32 and y.shape == (512, 512) and y.dtype == torch.int64
    assert set(torch.cat([b.train.tensors[1], b.test.tensors[1]]).unique().tolist()) == {0, 1}
    assert b.meta["membrane_fraction"] == pytest.approx(0.220, abs=0.005)  # MANIFEST: 22.0 %
    other = load("isbi2012", data_dir=shared_data, download=False, test_slices=10)
    assert (len(other.train), len(other.test)) == (20, 10)


# ---------------------------------------------------------------------------------------------
# graphs


@pytest.mark.parametrize("name, nodes, features, classes, edges, train", [
    ("cora", 2708, 1433, 7, 10_556, 140),
    ("citeseer", 3327, 3703, 6, 9_104, 120),
])
def test_planetoid(shared_data, name, nodes, features, classes, edges, train):
    b = load(name, data_dir=shared_data, download=False)
    m = b.meta
    assert (b.task, b.num_classes, b.input_shape) == ("node_classification", classes, (nodes, features))
    assert (m["num_nodes"], m["num_edges"]) == (nodes, edges)
    assert m["split_sizes"] == {"train": train, "val": 500, "test": 1000}
    assert not (m["train_mask"] & m["val_mask"]).any() and not (m["val_mask"] & m["test_mask"]).any()
    assert torch.bincount(m["y"][m["train_mask"]]).tolist() == [20] * classes
    x, y = b.train[0]
    assert x.shape == (nodes, features) and ((y != -100) == m["train_mask"]).all()
    assert ((b.test[0][1] != -100) == m["test_mask"]).all()
    nonzero = x.sum(1) > 0
    torch.testing.assert_close(x.sum(1)[nonzero], torch.ones(int(nonzero.sum())))  # row-normalised
    ei = m["edge_index"]
    assert (ei[0] != ei[1]).all()
    assert set(map(tuple, ei.t().tolist())) == set(map(tuple, ei.flip(0).t().tolist()))  # undirected
    raw = load(name, data_dir=shared_data, download=False, normalize_features=False)
    assert set(raw.meta["x"].unique().tolist()) == {0.0, 1.0}  # binary bag of words


def test_citeseer_isolated_test_nodes_are_padded(shared_data):
    m = load("citeseer", data_dir=shared_data, download=False, normalize_features=False).meta
    in_no_split = ~(m["train_mask"] | m["val_mask"] | m["test_mask"])
    lo = int(torch.nonzero(m["test_mask"]).min())
    padded = in_no_split.clone()
    padded[:lo] = False
    assert int(padded.sum()) == 15  # MANIFEST: 15 isolated test-range ids without features
    assert m["x"][padded].abs().sum() == 0


@pytest.mark.parametrize("name, folder", [("cora", "Cora"), ("citeseer", "CiteSeer")])
def test_planetoid_matches_pytorch_geometric(shared_data, tmp_path, name, folder):
    pyg = pytest.importorskip("torch_geometric.datasets")
    raw = tmp_path / folder / "raw"
    raw.mkdir(parents=True)
    for f in (shared_data / name).iterdir():
        shutil.copy(f, raw / f.name)
    ref = pyg.Planetoid(str(tmp_path), folder)[0]  # reads raw/ as it is; no download
    m = load(name, data_dir=shared_data, download=False, normalize_features=False).meta
    torch.testing.assert_close(m["x"], ref.x)
    assert torch.equal(m["y"], ref.y)
    assert torch.equal(m["edge_index"], ref.edge_index)
    for split in ("train", "val", "test"):
        assert torch.equal(m[f"{split}_mask"], getattr(ref, f"{split}_mask"))


# ---------------------------------------------------------------------------------------------
# text


def test_tinyshakespeare(shared_data):
    b = load("tinyshakespeare", data_dir=shared_data, download=False, block_size=64)
    m = b.meta
    assert m["num_chars"] == 1_115_394 and len(m["vocab"]) == 65 == b.num_classes
    assert len(m["train_ids"]) == 1_003_854 and len(m["train_ids"]) + len(m["val_ids"]) == 1_115_394
    x, y = b.train[3]
    assert x.shape == y.shape == (64,) and x.dtype == torch.int64
    assert torch.equal(x[1:], y[:-1])
    assert "".join(m["vocab"][i] for i in b.train[0][0][:14]) == "First Citizen:"
    assert len(b.train) == (len(m["train_ids"]) - 65) // 64 + 1
    _, last_y = b.test[len(b.test) - 1]  # the last block ends inside the validation text
    start = (len(b.test) - 1) * 64
    assert torch.equal(last_y, m["val_ids"][start + 1: start + 65]) and start + 65 <= len(m["val_ids"])


def test_multi30k(shared_data):
    b = load("multi30k", data_dir=shared_data, download=False)
    m = b.meta
    assert (len(b.train), len(m["val"]), len(b.test)) == (29_000, 1_014, 1_000)
    assert (b.task, b.input_shape) == ("translation", (64,))
    assert len(m["test_references"]) == len(m["test_sources"]) == 1_000
    src, tgt = b.train[0]
    words = [m["src_vocab"][i] for i in src if i > 3]
    assert words == ["two", "young", ",", "white", "males", "are", "outside", "near", "many", "bushes", "."]
    assert tgt[0] == m["bos_index"] and m["eos_index"] in tgt.tolist()
    assert m["tgt_vocab_size"] == b.num_classes and m["src_vocab"][:4] == ["<pad>", "<unk>", "<bos>", "<eos>"]
    assert sum(m["truncated"].values()) == 0
    de_en = load("multi30k", data_dir=shared_data, download=False, src="de", tgt="en", max_len=16)
    assert de_en.meta["src_vocab"] == m["tgt_vocab"] and de_en.input_shape == (16,)
    assert sum(de_en.meta["truncated"].values()) > 0


# ---------------------------------------------------------------------------------------------
# pointer networks and time series


def test_convex_hull_5_targets_are_the_hulls(shared_data):
    spatial = pytest.importorskip("scipy.spatial")
    b = load("convex-hull-5", data_dir=shared_data, download=False)
    assert (len(b.train), len(b.test)) == (9_000, 1_000) and b.input_shape == (5, 2)
    points, targets = b.train.tensors
    for i in range(200):
        t = targets[i][targets[i] != -100].tolist()
        assert t[0] == t[-1]  # a closed cycle, 0-based
        assert set(t[:-1]) == set(spatial.ConvexHull(points[i].numpy()).vertices.tolist())


def test_tsp_10_tours(shared_data):
    b = load("tsp-10", data_dir=shared_data, download=False)
    points, tours = b.test.tensors
    assert points.shape == (1_000, 10, 2) and tours.shape == (1_000, 11)
    assert (tours[:, 0] == tours[:, -1]).all()
    assert (tours[:, :-1].sort(dim=1).values == torch.arange(10)).all()  # each city once
    assert b.meta["optimal_tour_length"] == pytest.approx(2.867, abs=0.03)  # MANIFEST: mean 2.867 (whole file)


def test_sunspots(shared_data):
    b = load("sunspots", data_dir=shared_data, download=False)
    m = b.meta
    assert m["length"] == 309 and b.input_shape == (12, 1) and b.task == "forecast"
    assert len(b.train) + len(b.test) == 309 - 12
    x, y = b.train[0]
    values = np.array(m["values"])
    # float32 round trip of values up to ~250: 1e-4 absolute is a few ulps
    np.testing.assert_allclose(x.squeeze(1).numpy() * m["std"] + m["mean"], values[:12], rtol=0, atol=1e-4)
    assert float(y) * m["std"] + m["mean"] == pytest.approx(values[12], abs=1e-4)
    assert m["times"][0] == 1700 and values[0] == 5


def test_co2_fills_missing_weeks(shared_data):
    b = load("co2", data_dir=shared_data, download=False, window=8)
    assert b.meta["length"] == 2284 and b.meta["filled"] == 59
    assert torch.isfinite(b.train.tensors[0]).all() and torch.isfinite(b.test.tensors[1]).all()


def test_any_csv_series(tmp_path):
    (tmp_path / "level.csv").write_text("day,level\n" + "".join(f"{d},{'' if d == 3 else d * 2}\n" for d in range(30)))
    b = load_csv_series(tmp_path / "level.csv", "level", time_column="day", window=4, test_fraction=0.25)
    assert (b.name, b.task, b.input_shape, b.meta["filled"]) == ("level", "forecast", (4, 1), 1)
    assert b.meta["values"][3] == 6.0  # interpolated between 4 and 8
    assert (len(b.train), len(b.test)) == (20, 6)  # 26 targets; round(26 * 0.25) = 6
    with pytest.raises(ValueError, match="found"):
        load_csv_series(tmp_path / "level.csv", "height")


def test_make_windows_uses_only_training_values_for_statistics():
    series = np.concatenate([np.zeros(10), np.full(10, 100.0)])
    train, test, mean, _ = make_windows(series, window=2, test_fraction=0.5)
    assert (len(train), len(test)) == (9, 9)
    assert mean == pytest.approx(series[:11].mean())  # inputs and targets of the training windows only
    with pytest.raises(ValueError, match="window"):
        make_windows(series, window=19, test_fraction=0.5)
