"""Downloads that verify what they fetch, and archive extraction that stays inside its folder.

Three layers, each usable alone:

- :func:`download_url` fetches one address into one file: a bounded number of tries, a
  timeout per read, an overall deadline, a minimum rate, a size cap (the file's known size, else
  the announced ``Content-Length``, else ``max_size``), a tqdm bar only on a terminal, the body streamed into a temporary file in the target
  folder, checked against the ``Content-Length`` and the sha256, ``fsync``-ed and renamed into
  place. Whatever fails, the temporary file is removed: the target either holds the verified
  file or does not exist.
- :func:`ensure_files` makes a data set's folder hold its files: a file already there (in its
  canonical form or an accepted alternative, e.g. uncompressed) is verified and used as it is;
  the missing ones are downloaded, or, when that cannot happen, one :class:`DataNotFoundError`
  lists every missing file, its address and the folder to put it in.
- :func:`extract_archive` unpacks a tar or zip file after checking *every* member first: no
  absolute paths, no ``..``, no links that point outside the target, no devices or FIFOs. It
  then extracts with :mod:`tarfile`'s ``"data"`` filter as a second line of defence, into a
  temporary sibling folder that is renamed into place at the end.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import shutil
import socket
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from nnatlas._io import atomic_open, fsync_dir
from nnatlas.data.errors import ChecksumError, DataError, DataNotFoundError, DownloadError, UnsafeArchiveError

__all__ = ["RemoteFile", "download_url", "ensure_files", "extract_archive", "sha256_file"]

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
MAX_SIZE = 1 << 30  # the cap for a file of unknown size whose server announces none (CIFAR-10: 163 MiB)
RATE_GRACE_S = 15.0  # seconds before the minimum rate applies (TLS set-up, slow starts)
_USER_AGENT = "nnatlas-data/0.1 (+https://pypi.org/project/nnatlas)"


@dataclass(frozen=True)
class RemoteFile:
    """One file of a data set: where it lives in the data set's folder, where to fetch it, its sha256.

    ``name`` is a relative POSIX path inside the data set's folder and keeps the original file
    name. ``alternatives`` are other forms a data folder may hold instead, as ``(name, sha256)``
    pairs; a sha256 of ``None`` accepts the file unverified by hash (the loader then checks the
    format), which is used only for uncompressed copies whose canonical digest is unpublished.
    """

    name: str
    url: str
    sha256: str
    size: int | None = None
    alternatives: tuple[tuple[str, str | None], ...] = field(default=())

    def __post_init__(self) -> None:
        if len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256):
            raise ValueError(f"RemoteFile {self.name!r}: sha256 must be 64 lowercase hex digits; got {self.sha256!r}")
        for name in (self.name, *(a for a, _ in self.alternatives)):
            _check_relative(name, what="RemoteFile name")


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file's bytes, as lowercase hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# one file


def _is_transient(err: BaseException) -> bool:
    """Whether another try may succeed: timeouts, resets, truncation and 5xx/408/429 answers.

    An unknown host name is not retried: offline machines get their message at once.
    """
    if isinstance(err, urllib.error.HTTPError):
        return err.code >= 500 or err.code in (408, 429)
    if isinstance(err, urllib.error.URLError) and isinstance(err.reason, socket.gaierror):
        return False
    return isinstance(err, (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException,
                            DownloadError))


def _progress(total: int | None, desc: str, enabled: bool | None) -> contextlib.AbstractContextManager:
    """A tqdm bar on a terminal, a no-op elsewhere (logs and CI stay clean)."""
    show = sys.stderr.isatty() if enabled is None else enabled
    if not show:
        return contextlib.nullcontext(None)
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, leave=False)


@dataclass(frozen=True)
class _Limits:
    """What one transfer may take: a wall-clock deadline (``time.monotonic``), a minimum average
    rate after a grace period, and a byte cap."""

    deadline: float
    min_rate: float
    max_size: int


def _fetch_once(url: str, dest: Path, sha256: str, size: int | None, timeout: float, progress: bool | None,
                limits: _Limits) -> None:
    """One transfer into a temporary file beside ``dest``; renamed into place only when verified."""
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    digest = hashlib.sha256()
    received = 0
    started = time.monotonic()
    with atomic_open(dest) as out, urllib.request.urlopen(request, timeout=timeout) as response:
        header = response.headers.get("Content-Length")
        announced = int(header) if header is not None and header.isdigit() else None
        if size is not None and announced is not None and announced > size:
            raise ChecksumError(f"{url} announces {announced} bytes (Content-Length) for a file of {size} bytes; "
                                f"the server would send other bytes than the canonical file; nothing was kept")
        expected = announced if announced is not None else size
        cap = size if size is not None else announced if announced is not None else limits.max_size
        with _progress(expected, dest.name, progress) as bar:
            while True:
                try:
                    chunk = response.read1(_CHUNK)  # what has arrived: a trickling server cannot hold one read open
                except http.client.IncompleteRead as err:
                    raise DownloadError(
                        f"download of {url} was cut off after {received + len(err.partial)} of "
                        f"{expected} bytes; try again later") from err
                if not chunk:
                    break
                if received + len(chunk) > cap:
                    raise ChecksumError(f"{url} sent more than {cap} bytes, the size of {dest.name}; the server sends "
                                        f"other bytes than the canonical file; nothing was kept")
                now = time.monotonic()
                if now > limits.deadline:
                    raise _TooSlow(f"download of {url} ran past its deadline after {received + len(chunk)} bytes "
                                   f"in {now - started:.0f} s; try again later or raise the deadline")
                if now - started > RATE_GRACE_S and (received + len(chunk)) / (now - started) < limits.min_rate:
                    raise DownloadError(f"download of {url} is too slow: {received + len(chunk)} bytes in "
                                        f"{now - started:.0f} s, under the minimum {limits.min_rate:.0f} B/s; "
                                        f"try again later")
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        if header is not None and expected is not None and received != expected:
            raise DownloadError(f"download of {url} was cut off: the server announced {expected} bytes "
                                f"(Content-Length) and sent {received}; try again later")
        got = digest.hexdigest()
        if got != sha256:  # raised inside atomic_open: the partial file is removed, nothing is kept
            raise ChecksumError(f"{url} gave a file of {received} bytes with sha256 {got}; expected {sha256}. "
                                f"The server sent other bytes than the canonical file; nothing was kept")


class _TooSlow(DownloadError):
    """The overall deadline passed: never retried (another try would start past it)."""


def download_url(
    url: str,
    dest: str | os.PathLike[str],
    *,
    sha256: str,
    size: int | None = None,
    timeout: float = 30.0,
    tries: int = 3,
    backoff: float = 1.0,
    progress: bool | None = None,
    deadline: float = 1800.0,
    min_rate: float = 1024.0,
    max_size: int = MAX_SIZE,
) -> Path:
    """Download ``url`` to ``dest`` and verify its sha256; the file appears only once verified.

    Args:
        url: the address (``http``, ``https``).
        dest: the file to write; its folder is created.
        sha256: the expected digest (lowercase hex).
        size: the expected size in bytes: a server that announces or sends more is refused at once
            (and the progress bar uses it when the server sends no length).
        timeout: seconds a connection or a read may stall before the try fails.
        deadline: seconds all tries together may take; a transfer still running then fails.
        min_rate: bytes per second a transfer must average after its first ``RATE_GRACE_S`` seconds.
        max_size: the byte cap when neither ``size`` nor a ``Content-Length`` is known.
        tries: how many tries in all for transient failures (timeouts, resets, truncation, 5xx).
        backoff: seconds before the second try, doubled for each further one.
        progress: show a tqdm bar; ``None`` shows one only when stderr is a terminal.

    Returns:
        ``dest`` as a :class:`~pathlib.Path`.

    Raises:
        ChecksumError: the bytes are not the expected ones (not retried; nothing is kept).
        DownloadError: the transfer failed ``tries`` times, or the server refused it.
    """
    if tries < 1:
        raise ValueError(f"download_url: tries must be >= 1; got {tries}")
    if timeout <= 0:
        raise ValueError(f"download_url: timeout must be > 0 seconds; got {timeout}")
    if deadline <= 0 or min_rate < 0 or max_size < 1:
        raise ValueError(f"download_url: deadline must be > 0, min_rate >= 0, max_size >= 1; "
                         f"got {deadline}, {min_rate}, {max_size}")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    limits = _Limits(time.monotonic() + deadline, min_rate, max_size)
    attempt = 1
    while True:
        try:
            logger.info("downloading %s -> %s (try %d of %d)", url, dest, attempt, tries)
            _fetch_once(url, dest, sha256, size, min(timeout, deadline), progress, limits)
            return dest
        except (OSError, http.client.HTTPException) as err:  # ChecksumError is a ValueError: never retried
            out_of_time = time.monotonic() + backoff * 2 ** (attempt - 1) > limits.deadline
            if not _is_transient(err) or attempt >= tries or isinstance(err, _TooSlow) or out_of_time:
                if isinstance(err, DownloadError):
                    raise
                raise DownloadError(f"could not download {url} after {attempt} tr{'y' if attempt == 1 else 'ies'}: "
                                    f"{err}") from err
            wait = backoff * 2 ** (attempt - 1)
            logger.warning("download of %s failed (%s); trying again in %.1f s", url, err, wait)
            time.sleep(wait)
            attempt += 1


# ---------------------------------------------------------------------------------------------
# a data set's folder


def _locate(folder: Path, file: RemoteFile) -> tuple[Path, str | None] | None:
    """The first form of ``file`` present in ``folder``, with the sha256 it must have."""
    for name, sha in ((file.name, file.sha256), *file.alternatives):
        path = folder / name
        if path.is_file():
            return path, sha
    return None


def _verify_local(path: Path, sha256: str | None, file: RemoteFile) -> None:
    if sha256 is None:
        logger.debug("%s has no published sha256; its format is checked by the loader", path)
        return
    got = sha256_file(path)
    if got != sha256:
        form = file.name if path.name == PurePosixPath(file.name).name else f"{path.name}, the uncompressed {file.name}"
        raise ChecksumError(f"{path} has sha256 {got}; expected {sha256} (the canonical {form}). "
                            f"It is corrupted or a different file: delete it, and it will be downloaded "
                            f"again from {file.url}")


def missing_message(dataset: str, folder: Path, files: Sequence[RemoteFile], reason: str) -> str:
    """The one message that says what to download from where into which folder."""
    lines = [f"data set {dataset!r}: {len(files)} file(s) missing from {folder} and {reason}.",
             f"Download these into {folder} (original names; .gz files may also be stored uncompressed):"]
    lines += [f"  {f.name}  <-  {f.url}  (sha256 {f.sha256})" for f in files]
    lines.append("and load again, or point --data-dir / NNATLAS_DATA at a folder that already holds them.")
    return "\n".join(lines)


def ensure_files(
    dataset: str,
    folder: str | os.PathLike[str],
    files: Sequence[RemoteFile],
    *,
    download: bool = True,
    timeout: float = 30.0,
    tries: int = 3,
) -> dict[str, Path]:
    """Make ``folder`` hold every file of a data set, verified; return each file's local path.

    Files already in ``folder`` (in canonical form or an accepted alternative) are checked against
    their sha256 and used as they are. The missing ones are downloaded when ``download`` is true.

    Returns:
        ``{file.name: path}``; the path may be an alternative form (e.g. the uncompressed file).

    Raises:
        DataNotFoundError: files are missing and cannot be downloaded (``download=False``, no
            network, the folder is read-only); the message lists them all with their addresses.
        ChecksumError: a local or downloaded file is not the canonical one.
    """
    folder = Path(folder)
    found: dict[str, Path] = {}
    missing: list[RemoteFile] = []
    for file in files:
        hit = _locate(folder, file)
        if hit is None:
            missing.append(file)
            continue
        path, sha = hit
        _verify_local(path, sha, file)
        found[file.name] = path
    if not missing:
        return found
    if not download:
        reason = "downloads are switched off (download=False)"
        raise DataNotFoundError(missing_message(dataset, folder, missing, reason))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = tempfile.TemporaryFile(dir=folder)
        probe.close()
    except OSError as err:
        reason = f"the folder is not writable ({err})"
        raise DataNotFoundError(missing_message(dataset, folder, missing, reason)) from err
    for i, file in enumerate(missing):
        try:
            found[file.name] = download_url(file.url, folder / file.name, sha256=file.sha256, size=file.size,
                                            timeout=timeout, tries=tries)
        except DownloadError as err:
            reason = f"the download failed ({err})"
            raise DataNotFoundError(missing_message(dataset, folder, missing[i:], reason)) from err
    return found


# ---------------------------------------------------------------------------------------------
# archives


def _check_relative(name: str, *, what: str) -> PurePosixPath:
    """``name`` as a relative path without ``..`` (POSIX or Windows spelling), or UnsafeArchiveError."""
    unified = name.replace("\\", "/")
    path = PurePosixPath(unified)
    if not unified or path.is_absolute() or (len(unified) > 1 and unified[1] == ":"):
        raise UnsafeArchiveError(f"{what} {name!r} is an absolute path; expected a path relative to the target")
    if ".." in path.parts:
        raise UnsafeArchiveError(f"{what} {name!r} climbs out with '..'; expected a path inside the target")
    return path


def _inside(root: Path, path: Path) -> bool:
    return path == root or root in path.parents


def _check_tar_member(member: tarfile.TarInfo, root: Path) -> None:
    rel = _check_relative(member.name, what="archive member")
    target = (root / rel).resolve()
    if not _inside(root, target):
        raise UnsafeArchiveError(f"archive member {member.name!r} resolves to {target}, outside {root}")
    if member.issym():
        link = _check_relative(member.linkname, what=f"symlink {member.name!r} -> target")
        if not _inside(root, (root / rel.parent / link).resolve()):
            raise UnsafeArchiveError(f"symlink {member.name!r} -> {member.linkname!r} points outside {root}")
    elif member.islnk():
        link = _check_relative(member.linkname, what=f"hardlink {member.name!r} -> target")
        if not _inside(root, (root / link).resolve()):
            raise UnsafeArchiveError(f"hardlink {member.name!r} -> {member.linkname!r} points outside {root}")
    elif not (member.isfile() or member.isdir()):
        raise UnsafeArchiveError(f"archive member {member.name!r} is a device, FIFO or other special file; "
                                 f"expected regular files and folders only")


def _check_zip_member(info: zipfile.ZipInfo, root: Path) -> None:
    rel = _check_relative(info.filename, what="archive member")
    if not _inside(root, (root / rel).resolve()):
        raise UnsafeArchiveError(f"archive member {info.filename!r} resolves outside {root}")
    mode = info.external_attr >> 16
    kind = mode & 0o170000
    if kind not in (0, 0o100000, 0o040000):  # unset (DOS), regular file, folder
        raise UnsafeArchiveError(f"archive member {info.filename!r} is a symlink or special file (mode {oct(mode)}); "
                                 f"expected regular files and folders only")


@contextlib.contextmanager
def _staging(dest: Path) -> Iterator[Path]:
    """A temporary sibling of ``dest`` that becomes ``dest`` on success and vanishes on failure."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part"))
    try:
        yield tmp
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def extract_archive(archive: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """Extract a tar (any compression) or zip file into the new folder ``dest``, safely.

    Every member is checked before anything is written; a bad one refuses the whole archive.
    The members land in a temporary sibling folder that is renamed to ``dest`` at the end, so
    ``dest`` is complete or absent.

    Raises:
        UnsafeArchiveError: a member is absolute, climbs out with ``..``, is a link pointing
            outside, or is a device/FIFO.
        DataError: the file is neither a tar nor a zip archive.
        FileExistsError: ``dest`` already exists (remove it first; nothing is merged).
    """
    archive, dest = Path(archive), Path(dest)
    if dest.exists():
        raise FileExistsError(f"extract_archive: {dest} already exists; remove it to extract {archive.name} again")
    if zipfile.is_zipfile(archive):
        try:
            with zipfile.ZipFile(archive) as zf:
                infos = zf.infolist()
                root = dest.resolve()
                for info in infos:
                    _check_zip_member(info, root)
                with _staging(dest) as tmp:
                    for info in infos:
                        target = tmp / _check_relative(info.filename, what="archive member")
                        if info.is_dir():
                            target.mkdir(parents=True, exist_ok=True)
                            continue
                        target.parent.mkdir(parents=True, exist_ok=True)
                        with zf.open(info) as src, open(target, "wb") as out:
                            shutil.copyfileobj(src, out, _CHUNK)
        except (zipfile.BadZipFile, EOFError, zlib.error) as err:
            raise DataError(f"{archive} is damaged ({type(err).__name__}: {err})") from err
        return dest
    try:
        tf = tarfile.open(archive, "r:*")
    except tarfile.TarError as err:
        raise DataError(f"{archive} is neither a tar nor a zip archive ({err})") from err
    with tf:
        try:
            members = tf.getmembers()
            root = dest.resolve()
            for member in members:
                _check_tar_member(member, root)
            with _staging(dest) as tmp:
                if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: the stdlib's own guard as well
                    tf.extractall(tmp, members=members, filter="data")
                else:  # older Pythons: the checks above are the guard
                    tf.extractall(tmp, members=members)
        except tarfile.FilterError as err:  # the stdlib refused what our checks let through
            raise UnsafeArchiveError(f"{archive}: {err}") from err
        except (tarfile.TarError, EOFError, zlib.error) as err:
            raise DataError(f"{archive} is damaged ({type(err).__name__}: {err})") from err
    return dest
