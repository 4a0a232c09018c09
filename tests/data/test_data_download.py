"""The download path against a loopback HTTP server: verified, cached, atomic, and clean on failure."""

from __future__ import annotations

import gzip
import hashlib
import os
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from nnatlas.data import (
    ChecksumError,
    DataNotFoundError,
    DownloadError,
    RemoteFile,
    download_url,
    ensure_files,
    sha256_file,
)

BODY = os.urandom(300_000)  # several 1 MiB-read chunks would be too slow to matter; 300 kB spans many TCP reads
SHA = hashlib.sha256(BODY).hexdigest()


def _leftovers(folder: Path) -> list[str]:
    """Everything in ``folder`` (temporary ``.part`` files included)."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_good_download_is_verified_and_cached(server, tmp_path):
    url = server.add("/data/blob.bin", BODY)
    file = RemoteFile("blob.bin", url, SHA)
    folder = tmp_path / "cache" / "blobset"

    first = ensure_files("blobset", folder, [file])
    assert first["blob.bin"].read_bytes() == BODY
    assert sha256_file(first["blob.bin"]) == SHA
    assert server.hits["/data/blob.bin"] == 1
    assert _leftovers(folder) == ["blob.bin"]  # no temporary file left beside it

    second = ensure_files("blobset", folder, [file])  # cached: the server is not asked again
    assert second == first
    assert server.hits["/data/blob.bin"] == 1


def test_corrupted_download_raises_and_leaves_nothing(server, tmp_path):
    url = server.add("/bad.bin", BODY[:-1] + bytes([BODY[-1] ^ 0xFF]))  # one flipped byte
    folder = tmp_path / "cache"
    with pytest.raises(ChecksumError, match="expected " + SHA):
        download_url(url, folder / "bad.bin", sha256=SHA, tries=3, backoff=0)
    assert server.hits["/bad.bin"] == 1  # a wrong file is not fetched again and again
    assert _leftovers(folder) == []

    with pytest.raises(ChecksumError):
        ensure_files("badset", folder, [RemoteFile("bad.bin", url, SHA)])
    assert _leftovers(folder) == []


def test_truncated_transfer_raises_after_bounded_tries_without_partial_file(server, tmp_path):
    url = server.add("/cut.bin", BODY, truncate_to=len(BODY) // 3)
    folder = tmp_path / "cache"
    with pytest.raises(DownloadError, match="cut off"):
        download_url(url, folder / "cut.bin", sha256=SHA, tries=2, backoff=0, timeout=5)
    assert server.hits["/cut.bin"] == 2  # retried, but a bounded number of times
    assert _leftovers(folder) == []


def test_truncated_transfer_through_ensure_files_names_what_to_fetch(server, tmp_path):
    url = server.add("/cut.bin", BODY, truncate_to=1000)
    folder = tmp_path / "cache"
    with pytest.raises(DataNotFoundError) as info:
        ensure_files("cutset", folder, [RemoteFile("cut.bin", url, SHA)], tries=1)
    message = str(info.value)
    assert url in message and str(folder) in message and "cut.bin" in message
    assert isinstance(info.value.__cause__, DownloadError)
    assert _leftovers(folder) == []


def test_progress_bar_path(server, tmp_path, capsys):
    url = server.add("/bar.bin", BODY)
    download_url(url, tmp_path / "bar.bin", sha256=SHA, progress=True)
    assert (tmp_path / "bar.bin").read_bytes() == BODY
    assert "bar.bin" in capsys.readouterr().err  # tqdm writes its bar to stderr


def test_transient_server_error_is_retried(server, tmp_path):
    url = server.add("/flaky.bin", BODY, fail_first=1, fail_status=503)
    path = download_url(url, tmp_path / "flaky.bin", sha256=SHA, tries=3, backoff=0)
    assert path.read_bytes() == BODY
    assert server.hits["/flaky.bin"] == 2


def test_not_found_is_not_retried(server, tmp_path):
    url = server.url("/missing.bin")
    with pytest.raises(DownloadError, match="404"):
        download_url(url, tmp_path / "missing.bin", sha256=SHA, tries=3, backoff=0)
    assert server.hits["/missing.bin"] == 1
    assert _leftovers(tmp_path) == []


def test_stalled_server_times_out(server, tmp_path):
    url = server.add("/slow.bin", BODY, delay_s=2.0)
    with pytest.raises(DownloadError):
        download_url(url, tmp_path / "slow.bin", sha256=SHA, tries=1, timeout=0.3)
    assert _leftovers(tmp_path) == []


def test_offline_message_lists_every_missing_file(tmp_path):
    files = [RemoteFile("a.gz", "https://example.invalid/a.gz", "a" * 64),
             RemoteFile("b.txt", "https://example.invalid/b.txt", "b" * 64)]
    folder = tmp_path / "data" / "set"
    with pytest.raises(DataNotFoundError) as info:
        ensure_files("set", folder, files, download=False)
    message = str(info.value)
    for f in files:
        assert f.name in message and f.url in message and f.sha256 in message
    assert str(folder) in message
    assert not folder.exists()  # nothing created when nothing may be downloaded


def test_unwritable_folder_gives_the_offline_message(server, tmp_path):
    url = server.add("/blob.bin", BODY)
    (tmp_path / "a-file").write_bytes(b"")
    folder = tmp_path / "a-file" / "set"  # cannot be created, even by root
    with pytest.raises(DataNotFoundError, match="not writable") as info:
        ensure_files("set", folder, [RemoteFile("blob.bin", url, SHA)])
    assert url in str(info.value)
    assert server.hits["/blob.bin"] == 0


def test_local_file_with_wrong_sha_is_refused(tmp_path):
    (tmp_path / "blob.bin").write_bytes(b"not the canonical bytes")
    file = RemoteFile("blob.bin", "https://example.invalid/blob.bin", SHA)
    with pytest.raises(ChecksumError) as info:
        ensure_files("blobset", tmp_path, [file], download=False)
    assert str(tmp_path / "blob.bin") in str(info.value) and file.url in str(info.value)


def test_uncompressed_alternative_is_accepted_and_verified(tmp_path):
    gz = gzip.compress(BODY)
    file = RemoteFile("blob.bin.gz", "https://example.invalid/blob.bin.gz", hashlib.sha256(gz).hexdigest(),
                      alternatives=(("blob.bin", SHA),))
    (tmp_path / "blob.bin").write_bytes(BODY)
    assert ensure_files("s", tmp_path, [file], download=False)["blob.bin.gz"] == tmp_path / "blob.bin"

    (tmp_path / "blob.bin").write_bytes(BODY[:-1])
    with pytest.raises(ChecksumError):
        ensure_files("s", tmp_path, [file], download=False)


def test_remote_file_rejects_bad_digests_and_paths():
    with pytest.raises(ValueError, match="64 lowercase hex"):
        RemoteFile("x", "https://example.invalid/x", "ABC")
    with pytest.raises(ValueError, match="climbs out"):
        RemoteFile("../x", "https://example.invalid/x", "0" * 64)
    with pytest.raises(ValueError, match="absolute"):
        RemoteFile("/etc/x", "https://example.invalid/x", "0" * 64)


def test_download_arguments_are_validated(tmp_path):
    with pytest.raises(ValueError, match="tries"):
        download_url("http://127.0.0.1:9/x", tmp_path / "x", sha256=SHA, tries=0)
    with pytest.raises(ValueError, match="timeout"):
        download_url("http://127.0.0.1:9/x", tmp_path / "x", sha256=SHA, timeout=0)


def test_unknown_host_fails_at_once(monkeypatch, tmp_path):
    """Offline machines get their message without waiting for retries (no real DNS lookup is made)."""
    calls = []

    def no_dns(request, timeout):
        calls.append(request.full_url)
        raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))

    monkeypatch.setattr(urllib.request, "urlopen", no_dns)
    with pytest.raises(DownloadError, match="after 1 try"):
        download_url("http://data.example.invalid/x", tmp_path / "x", sha256=SHA, tries=3, backoff=0)
    assert len(calls) == 1
    assert _leftovers(tmp_path) == []
