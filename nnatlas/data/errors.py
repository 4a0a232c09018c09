"""Errors the data loaders raise on purpose.

Each says what was expected and what came, and the fix last. They subclass the built-in
exception a caller would catch anyway: content that is wrong is a ``ValueError``
(:class:`DataError`), a file that cannot be had is an ``OSError`` (:class:`DownloadError`,
:class:`DataNotFoundError`). ``except (DataError, OSError)`` catches everything a loader raises.
"""

from __future__ import annotations

from collections.abc import Iterable

from nnatlas.errors import did_you_mean

__all__ = [
    "ChecksumError",
    "DataError",
    "DataNotFoundError",
    "DownloadError",
    "UnknownDatasetError",
    "UnsafeArchiveError",
]


class DataError(ValueError):
    """A file whose content is not what its format promises, or a bad loader argument."""


class ChecksumError(DataError):
    """A file whose sha256 is not the canonical one (a corrupted download or a foreign file)."""


class UnsafeArchiveError(DataError):
    """An archive member that would land outside the target folder, or is a link or device."""


class UnknownDatasetError(DataError):
    """A data set name that is not registered; the message suggests the closest names."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        known = list(known)
        self.name = name
        self.suggestions, hint = did_you_mean(name, known)
        super().__init__(f"unknown data set {name!r}{hint} (nnatlas.data.list_datasets() lists all {len(known)})")


class DownloadError(OSError):
    """A transfer that failed: no connection, an HTTP error, a timeout or a truncated body."""


class DataNotFoundError(FileNotFoundError):
    """The files of a data set are neither in the data folder nor downloadable now.

    The message lists every missing file, the address to fetch it from and the folder to put it in.
    """
