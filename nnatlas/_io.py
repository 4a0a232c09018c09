"""Atomic files: readers see the old file or the whole new one, never a part.

Every file nnatlas writes (downloads, checkpoints, weights, metrics, diagrams) goes through
:func:`atomic_open`: a temporary file beside the target, ``fsync``, ``os.replace``, then an
``fsync`` of the folder so the rename survives a crash. On any error the temporary file is
removed and the old file, if any, is untouched.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_open", "atomic_write_bytes", "atomic_write_text", "fsync_dir"]


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: some platforms cannot open folders)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


_STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS})


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, *, suffix: str = ".part") -> Iterator[BinaryIO]:
    """Open a binary file whose content replaces ``path`` only when the block ends without error.

    >>> with atomic_open("weights.bin") as f:  # doctest: +SKIP
    ...     f.write(data)
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    except OSError as err:  # name the file the caller asked for, not the temporary one
        raise type(err)(err.errno, f"cannot write {path}: {err.strerror}") from None
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a finished file gets the usual mode
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:  # a full disk says which file it could not write (the old one is untouched)
        if err.filename is None and err.errno in _STORAGE_ERRNOS:
            raise type(err)(err.errno, f"cannot write {path}: {err.strerror} (its previous version, if any, "
                                       f"is untouched)") from None
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()  # renamed away on success; partial on failure
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path) as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))
