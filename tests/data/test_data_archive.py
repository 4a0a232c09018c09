"""Safe archive extraction: every bad member refuses the whole archive and nothing is written."""

from __future__ import annotations

import hashlib
import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from nnatlas.data import DataError, RemoteFile, UnsafeArchiveError, ensure_files, extract_archive


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            else:
                tf.addfile(info)
    return path


def _file(name: str) -> tarfile.TarInfo:
    return tarfile.TarInfo(name)


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def _snapshot(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def box(tmp_path: Path) -> Path:
    """A folder holding the archive and the target; anything written outside the target shows up here."""
    (tmp_path / "box").mkdir()
    return tmp_path / "box"


def test_good_tar_extracts_with_internal_links(box):
    archive = _tar(box / "good.tar.gz", [
        (_file("pkg/a.txt"), b"alpha"),
        (_file("pkg/sub/b.bin"), b"\x00\x01"),
        (_link("pkg/alias.txt", "a.txt"), None),  # a relative link that stays inside is fine
    ])
    dest = extract_archive(archive, box / "out")
    assert (dest / "pkg/a.txt").read_bytes() == b"alpha"
    assert (dest / "pkg/sub/b.bin").read_bytes() == b"\x00\x01"
    assert (dest / "pkg/alias.txt").read_bytes() == b"alpha"
    assert sorted(p.name for p in box.iterdir()) == ["good.tar.gz", "out"]  # no staging folder left


@pytest.mark.parametrize("member, match", [
    (lambda root: (_file("../evil.txt"), b"x"), "climbs out"),
    (lambda root: (_file("pkg/../../evil.txt"), b"x"), "climbs out"),
    (lambda root: (_file(str(root / "evil.txt")), b"x"), "absolute"),
    (lambda root: (_file("..\\evil.txt"), b"x"), "climbs out"),
    (lambda root: (_link("pkg/link", "../../evil.txt"), None), "symlink"),
    (lambda root: (_link("pkg/link", str(root / "evil.txt")), None), "absolute"),
    (lambda root: (_link("pkg/hard", "../evil.txt", tarfile.LNKTYPE), None), "hardlink"),
], ids=["dotdot", "nested-dotdot", "absolute", "backslash-dotdot", "symlink-out", "symlink-absolute",
        "hardlink-out"])
def test_tar_member_escaping_the_target_is_refused(box, member, match):
    archive = _tar(box / "bad.tar.gz", [(_file("pkg/ok.txt"), b"fine"), member(box)])
    before = _snapshot(box)
    with pytest.raises(UnsafeArchiveError, match=match):
        extract_archive(archive, box / "out")
    assert _snapshot(box) == before  # nothing extracted, not even the good member; no staging left


def test_tar_device_and_fifo_members_are_refused(box):
    for kind, name in ((tarfile.CHRTYPE, "dev"), (tarfile.FIFOTYPE, "fifo")):
        info = tarfile.TarInfo(name)
        info.type = kind
        archive = _tar(box / f"{name}.tar", [(info, None)], mode="w")
        with pytest.raises(UnsafeArchiveError, match="special file"):
            extract_archive(archive, box / "out")
        assert not (box / "out").exists()


def test_existing_target_is_not_merged_into(box):
    archive = _tar(box / "good.tar.gz", [(_file("a.txt"), b"alpha")])
    (box / "out").mkdir()
    with pytest.raises(FileExistsError):
        extract_archive(archive, box / "out")


def test_damaged_archive_is_a_data_error_and_leaves_nothing(box):
    payload = bytes(range(256)) * 4000  # incompressible enough that half the file lacks half the members
    members = [(_file(f"pkg/{i}.bin"), payload) for i in range(4)]
    whole = _tar(box / "whole.tar", members, mode="w").read_bytes()
    (box / "cut.tar").write_bytes(whole[: len(whole) // 2])
    before = _snapshot(box)
    with pytest.raises(DataError, match="damaged"):
        extract_archive(box / "cut.tar", box / "out")
    assert _snapshot(box) == before


def test_not_an_archive(box):
    (box / "plain.bin").write_bytes(b"just bytes, not an archive")
    with pytest.raises(DataError, match="neither a tar nor a zip"):
        extract_archive(box / "plain.bin", box / "out")


def _zip(path: Path, entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for info, data in entries:
            zf.writestr(info, data)
    return path


def test_good_zip_extracts(box):
    archive = _zip(box / "good.zip", [("pkg/a.txt", b"alpha"), ("pkg/sub/", b""), ("pkg/sub/b.txt", b"beta")])
    dest = extract_archive(archive, box / "out")
    assert (dest / "pkg/a.txt").read_bytes() == b"alpha"
    assert (dest / "pkg/sub/b.txt").read_bytes() == b"beta"


def _zip_symlink(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target.encode()


@pytest.mark.parametrize("entry, match", [
    (lambda root: ("../evil.txt", b"x"), "climbs out"),
    (lambda root: (str(root / "evil.txt"), b"x"), "absolute"),
    (lambda root: ("C:/evil.txt", b"x"), "absolute"),
    (lambda root: _zip_symlink("pkg/link", "../../evil.txt"), "symlink"),
], ids=["dotdot", "absolute", "drive-letter", "symlink"])
def test_zip_member_escaping_the_target_is_refused(box, entry, match):
    archive = _zip(box / "bad.zip", [("pkg/ok.txt", b"fine"), entry(box)])
    before = _snapshot(box)
    with pytest.raises(UnsafeArchiveError, match=match):
        extract_archive(archive, box / "out")
    assert _snapshot(box) == before


def test_downloaded_archive_with_traversal_member_is_refused(server, box):
    """The whole path: fetch a verified archive over HTTP, then refuse to unpack its bad member."""
    raw = _tar(box / "src.tar.gz", [(_file("data/ok.txt"), b"fine"), (_file("../../escaped.txt"), b"x")]).read_bytes()
    (box / "src.tar.gz").unlink()
    url = server.add("/bundle.tar.gz", raw)
    paths = ensure_files("bundle", box / "cache", [RemoteFile("bundle.tar.gz", url, hashlib.sha256(raw).hexdigest())])
    with pytest.raises(UnsafeArchiveError):
        extract_archive(paths["bundle.tar.gz"], box / "cache" / "extracted")
    assert _snapshot(box) == ["cache", "cache/bundle.tar.gz"]
    assert not (box.parent / "escaped.txt").exists()
