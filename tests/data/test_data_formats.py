"""File formats: IDX, restricted pickles, CIFAR-10 batches end to end over the loopback server."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from nnatlas.data import DataError, RemoteFile, load, vision
from nnatlas.data.formats import CIFAR_GLOBALS, PLANETOID_GLOBALS, read_idx, read_text_lines, restricted_load


def _idx(array: np.ndarray) -> bytes:
    type_byte = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C}[array.dtype]
    return bytes([0, 0, type_byte, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape) + array.tobytes()


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_idx_round_trip(tmp_path, compress):
    images = np.random.default_rng(0).integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
    raw = _idx(images)
    path = tmp_path / "imgs"
    path.write_bytes(gzip.compress(raw) if compress else raw)
    np.testing.assert_array_equal(read_idx(path, expect_ndim=3, expect_count=3), images)


def test_idx_big_endian_values_come_out_native(tmp_path):
    values = np.array([1, 256, -5], dtype=">i4")
    (tmp_path / "v").write_bytes(_idx(values))
    out = read_idx(tmp_path / "v", expect_ndim=1)
    assert out.dtype.isnative and out.tolist() == [1, 256, -5]


def test_idx_errors_say_what_was_expected(tmp_path):
    images = np.zeros((2, 28, 28), dtype=np.uint8)
    (tmp_path / "short").write_bytes(_idx(images)[:-10])
    with pytest.raises(DataError, match="body has"):
        read_idx(tmp_path / "short", expect_ndim=3)
    (tmp_path / "ok").write_bytes(_idx(images))
    with pytest.raises(DataError, match="expected 5 items"):
        read_idx(tmp_path / "ok", expect_ndim=3, expect_count=5)
    with pytest.raises(DataError, match="magic 2049"):
        read_idx(tmp_path / "ok", expect_ndim=1)
    (tmp_path / "text").write_bytes(b"hello world")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(tmp_path / "text", expect_ndim=1)
    (tmp_path / "badgz").write_bytes(b"\x1f\x8b" + b"garbage")
    with pytest.raises(DataError, match="does not decompress"):
        read_idx(tmp_path / "badgz", expect_ndim=1)


class _Evil:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return os.mkdir, (self.path,)


@pytest.mark.parametrize("allowed", [CIFAR_GLOBALS, PLANETOID_GLOBALS], ids=["cifar", "planetoid"])
def test_restricted_unpickler_refuses_foreign_globals(tmp_path, allowed):
    target = tmp_path / "pwned"
    payload = pickle.dumps({"data": _Evil(str(target))}, protocol=2)
    with pytest.raises(DataError, match="refusing to unpickle global"):
        restricted_load(payload, allowed, what="evil pickle")
    assert not target.exists()  # the call never ran


def test_restricted_unpickler_loads_numpy_and_sparse():
    scipy_sparse = pytest.importorskip("scipy.sparse")
    from collections import defaultdict

    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    graph = defaultdict(list, {0: [1, 2], 1: [0]})
    matrix = scipy_sparse.csr_matrix(array)
    for protocol in (2, pickle.HIGHEST_PROTOCOL):
        out = restricted_load(pickle.dumps({"a": array, "n": np.int64(3)}, protocol=protocol), CIFAR_GLOBALS, what="t")
        np.testing.assert_array_equal(out["a"], array)
        assert out["n"] == 3
        g = restricted_load(pickle.dumps(graph, protocol=protocol), PLANETOID_GLOBALS, what="t")
        assert dict(g) == dict(graph)
        m = restricted_load(pickle.dumps(matrix, protocol=protocol), PLANETOID_GLOBALS, what="t")
        np.testing.assert_array_equal(m.toarray(), array)


def test_damaged_pickle_is_a_data_error():
    with pytest.raises(DataError, match="not a readable pickle"):
        restricted_load(b"\x80\x02}q\x00(", CIFAR_GLOBALS, what="cut pickle")


def test_text_lines_split_only_on_newlines(tmp_path):
    (tmp_path / "t.gz").write_bytes(gzip.compress("one\u2028still one\r\ntwo\n".encode()))
    assert read_text_lines(tmp_path / "t.gz") == ["one\u2028still one", "two"]


# ---------------------------------------------------------------------------------------------
# CIFAR-10 end to end: a small archive of the canonical layout, served over loopback


def _cifar_archive(n_train_per_batch: int, n_test: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    first_image, first_label = None, None
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, n in [*((f"data_batch_{i}", n_train_per_batch) for i in range(1, 6)), ("test_batch", n_test)]:
            data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
            labels = rng.integers(0, 10, size=n).tolist()
            if first_image is None:
                first_image, first_label = data[0], labels[0]
            # python-2 style: bytes keys, as the canonical batches give with encoding="bytes"
            blob = pickle.dumps({b"batch_label": b"x", b"labels": labels, b"data": data, b"filenames": []}, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tf.addfile(info, io.BytesIO(blob))
    return buf.getvalue(), first_image, np.array(first_label)


def test_cifar10_downloads_extracts_and_loads(server, tmp_path, monkeypatch):
    blob, image, label = _cifar_archive(4, 3)
    url = server.add("/cifar-10-python.tar.gz", blob)
    served = RemoteFile("cifar-10-python.tar.gz", url, hashlib.sha256(blob).hexdigest())
    monkeypatch.setattr(vision, "CIFAR10_FILES", [served])
    monkeypatch.setattr(vision, "_CIFAR_COUNTS", (20, 3))

    bundle = load("cifar10", data_dir=tmp_path)
    assert (len(bundle.train), len(bundle.test)) == (20, 3)
    x, y = bundle.train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    # channel planes R, G, B of 1024 pixels each, row-major
    torch.testing.assert_close(x, torch.from_numpy(image.reshape(3, 32, 32)).float() / 255)
    assert int(y) == int(label)
    folder = tmp_path / "cifar-10"
    assert sorted(p.name for p in folder.iterdir()) == ["cifar-10-batches-py", "cifar-10-python.tar.gz"]

    load("cifar10", data_dir=tmp_path)  # the extracted batches are used as they are
    assert server.hits["/cifar-10-python.tar.gz"] == 1


def test_cifar10_refuses_a_batch_with_foreign_globals(tmp_path, monkeypatch):
    batches = tmp_path / "cifar-10" / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    for name in vision._CIFAR_BATCHES:
        (batches / name).write_bytes(pickle.dumps({"data": _Evil(str(tmp_path / "pwned"))}, protocol=2))
    with pytest.raises(DataError, match="refusing"):
        load("cifar10", data_dir=tmp_path, download=False)
    assert not (tmp_path / "pwned").exists()


def test_cifar10_offline_message(tmp_path):
    from nnatlas.data import DataNotFoundError

    with pytest.raises(DataNotFoundError, match=r"cifar-10-python\.tar\.gz") as info:
        load("cifar10", data_dir=tmp_path, download=False)
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert not Path(tmp_path / "cifar-10").exists() or not any((tmp_path / "cifar-10").iterdir())
