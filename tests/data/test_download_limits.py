"""Downloads that cannot hang or fill the disk (issue 13, item 2), and a --data-dir that must exist.

A trickling loopback server (one small write every few milliseconds, forever) used to hold a
download open for as long as it kept sending: the timeout was per read. Now an overall deadline,
a minimum rate and a size cap end it, and nothing is kept.
"""

from __future__ import annotations

import hashlib
import http.server
import threading
import time
from collections.abc import Iterator

import pytest

import nnatlas.data as data
from nnatlas.data import download as dl
from nnatlas.data.download import RemoteFile, download_url, ensure_files
from nnatlas.data.errors import ChecksumError, DataNotFoundError, DownloadError

SHA_OF_NOTHING = hashlib.sha256(b"").hexdigest()


class _Trickle(http.server.BaseHTTPRequestHandler):
    """Announces no length and sends ``step`` bytes every ``pause`` seconds until told to stop."""

    timeout = 5
    step, pause, stop = 64, 0.005, threading.Event()

    def do_GET(self) -> None:  # the stdlib's name
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Connection", "close")
        if self.path == "/announce-big":
            self.send_header("Content-Length", str(40 << 20))
        self.end_headers()
        try:
            while not self.stop.is_set():
                self.wfile.write(b"x" * self.step)
                self.wfile.flush()
                time.sleep(self.pause)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def trickle() -> Iterator[str]:
    _Trickle.stop.clear()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Trickle)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        _Trickle.stop.set()
        httpd.shutdown()
        httpd.server_close()


def test_a_trickling_server_hits_the_overall_deadline(trickle, tmp_path):
    t0 = time.monotonic()
    with pytest.raises(DownloadError, match="deadline"):
        download_url(f"{trickle}/slow", tmp_path / "f.bin", sha256=SHA_OF_NOTHING, deadline=1.0, tries=3, backoff=0.01)
    assert time.monotonic() - t0 < 5, "the deadline covers all tries together"
    assert list(tmp_path.iterdir()) == [], "nothing is kept"


def test_a_slow_server_is_cut_off_by_the_minimum_rate(trickle, tmp_path, monkeypatch):
    monkeypatch.setattr(dl, "RATE_GRACE_S", 0.3)
    with pytest.raises(DownloadError, match="too slow"):
        download_url(f"{trickle}/slow", tmp_path / "f.bin", sha256=SHA_OF_NOTHING, min_rate=10**9, tries=1)
    assert list(tmp_path.iterdir()) == []


def test_the_body_is_capped_at_the_known_size(trickle, tmp_path):
    with pytest.raises(ChecksumError, match="sent more than 1000 bytes"):
        download_url(f"{trickle}/slow", tmp_path / "f.bin", sha256=SHA_OF_NOTHING, size=1000, tries=3)
    assert list(tmp_path.iterdir()) == []


def test_an_announced_body_larger_than_the_file_is_refused_before_reading(trickle, tmp_path):
    t0 = time.monotonic()
    with pytest.raises(ChecksumError, match="announces 41943040 bytes"):
        download_url(f"{trickle}/announce-big", tmp_path / "f.bin", sha256=SHA_OF_NOTHING, size=200_000)
    assert time.monotonic() - t0 < 2
    assert list(tmp_path.iterdir()) == []


def test_without_any_size_the_default_cap_applies(trickle, tmp_path):
    with pytest.raises(ChecksumError, match="sent more than 4096 bytes"):
        download_url(f"{trickle}/slow", tmp_path / "f.bin", sha256=SHA_OF_NOTHING, max_size=4096)


def test_limits_are_validated(tmp_path):
    for bad in ({"deadline": 0}, {"min_rate": -1}, {"max_size": 0}):
        with pytest.raises(ValueError, match="deadline must be > 0"):
            download_url("http://127.0.0.1:9/x", tmp_path / "x", sha256=SHA_OF_NOTHING, **bad)


def test_a_data_dir_that_does_not_exist_is_an_error(tmp_path):
    missing = tmp_path / "typo" / "data"
    with pytest.raises(DataNotFoundError, match="does not exist"):
        data.load("digits", data_dir=missing)
    assert not missing.exists() and not missing.parent.exists(), "no folder is created"


def test_the_uncompressed_mnist_file_is_named_as_itself(tmp_path):
    file = RemoteFile("train-images-idx3-ubyte.gz", "http://127.0.0.1:9/x.gz", SHA_OF_NOTHING,
                      alternatives=(("train-images-idx3-ubyte", "0" * 64),))
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"not the images")
    with pytest.raises(ChecksumError) as info:
        ensure_files("mnist", tmp_path, [file], download=False)
    msg = str(info.value)
    assert "the canonical train-images-idx3-ubyte, the uncompressed train-images-idx3-ubyte.gz" in msg
