"""Readers for the canonical file formats: IDX, gzip-or-plain files, and restricted pickles.

- IDX (LeCun's MNIST format): a big-endian header ``0x00 0x00 dtype ndim``, then ``ndim``
  big-endian int32 sizes, then the values. MNIST, Fashion-MNIST and KMNIST use it.
- :func:`read_bytes` reads ``name.gz`` or ``name`` by the gzip magic, not the suffix.
- :func:`restricted_load` unpickles with an allow-list of globals: the numpy and scipy.sparse
  constructors the CIFAR-10 batches and Planetoid ``ind.*`` files need, and nothing else. A
  pickle naming any other global (``os.system``, ``builtins.eval``...) is refused before it runs.
"""

from __future__ import annotations

import codecs
import collections
import copyreg
import gzip
import io
import math
import os
import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

from nnatlas.data.errors import DataError

__all__ = ["CIFAR_GLOBALS", "PLANETOID_GLOBALS", "read_bytes", "read_idx", "read_text_lines", "restricted_load"]

_GZIP_MAGIC = b"\x1f\x8b"

# IDX type byte -> numpy dtype (big-endian)
_IDX_DTYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
               0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_bytes(path: str | os.PathLike[str]) -> bytes:
    """The whole content of a plain or gzipped file (decompressed)."""
    with open(path, "rb") as raw:
        data = raw.read()
    if data[:2] == _GZIP_MAGIC:
        try:
            return gzip.decompress(data)
        except (OSError, EOFError) as err:
            raise DataError(f"{path} starts like gzip but does not decompress ({err}); the file is damaged") from err
    return data


def read_idx(path: str | os.PathLike[str], *, expect_ndim: int, expect_count: int | None = None) -> np.ndarray:
    """Read an IDX file (gzipped or not) into a numpy array in native byte order.

    Args:
        path: the file.
        expect_ndim: 1 for labels (magic 2049), 3 for images (magic 2051).
        expect_count: the first dimension it must have, when known.

    Raises:
        DataError: wrong magic, dimensions, or a body shorter or longer than the header says.
    """
    data = read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file: expected the bytes 00 00 <type> <ndim>; got {data[:4].hex(' ')}")
    dtype, ndim = _IDX_DTYPES[data[2]], data[3]
    if ndim != expect_ndim:
        raise DataError(f"{path}: expected an IDX file of {expect_ndim} dimension(s) "
                        f"(magic {2048 + expect_ndim}); got {ndim} (magic {int.from_bytes(data[:4], 'big')})")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: the IDX header needs {header} bytes for {ndim} dimension(s); the file has {len(data)}")
    shape = tuple(int(v) for v in np.frombuffer(data, dtype=">i4", count=ndim, offset=4))
    if any(d < 0 for d in shape):
        raise DataError(f"{path}: the IDX header announces a negative size {shape}")
    body = len(data) - header
    need = math.prod(shape) * dtype.itemsize  # Python ints: a crafted header cannot overflow into a match
    if body != need:
        raise DataError(f"{path}: the header announces shape {shape} ({need} bytes); the body has {body} bytes")
    if expect_count is not None and shape[0] != expect_count:
        raise DataError(f"{path}: expected {expect_count} items; the header says {shape[0]}")
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only an explicit allow-list of ``(module, name)`` globals.

    The allow-list maps each name a pickle may use (python 2 spellings included) to the object
    it stands for today, so old module paths (``scipy.sparse.csr``, ``numpy.core``) never get imported.
    """

    def __init__(self, file: IO[bytes], allowed: Mapping[tuple[str, str], Callable[[], Any]], **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self._allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        resolve = self._allowed.get((module, name))
        if resolve is None:
            raise DataError(f"refusing to unpickle global {module}.{name}: this data file may only name "
                            f"{sorted(f'{m}.{n}' for m, n in self._allowed)}; it is not the canonical file")
        return resolve()


def _numpy_reconstruct() -> Any:
    return np.ndarray.__reduce__(np.zeros(0))[0]  # numpy's own _reconstruct, wherever this numpy keeps it


def _numpy_scalar() -> Any:
    return np.float64(0).__reduce__()[0]


def _numpy_frombuffer() -> Any:
    return np.zeros(1).__reduce_ex__(5)[0]  # protocol 5 pickles rebuild arrays from a buffer


def _csr_matrix() -> Any:
    import scipy.sparse

    return scipy.sparse.csr_matrix


# numpy moved its internals between 1.x (numpy.core) and 2.x (numpy._core); pickles name either.
_NUMPY: dict[tuple[str, str], Callable[[], Any]] = {
    **{(mod, "_reconstruct"): _numpy_reconstruct for mod in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(mod, "scalar"): _numpy_scalar for mod in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(mod, "_frombuffer"): _numpy_frombuffer for mod in ("numpy.core.numeric", "numpy._core.numeric")},
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    # python 3 writes bytes in protocol-2 pickles as _codecs.encode(str, "latin1") (torch's
    # weights-only unpickler allows it for the same reason); it only encodes text
    ("_codecs", "encode"): lambda: codecs.encode,
}
CIFAR_GLOBALS: Mapping[tuple[str, str], Callable[[], Any]] = _NUMPY
PLANETOID_GLOBALS: Mapping[tuple[str, str], Callable[[], Any]] = {
    **_NUMPY,
    **{(mod, "csr_matrix"): _csr_matrix for mod in ("scipy.sparse.csr", "scipy.sparse._csr", "scipy.sparse")},
    ("collections", "defaultdict"): lambda: collections.defaultdict,
    ("__builtin__", "list"): lambda: list, ("builtins", "list"): lambda: list,
    ("__builtin__", "object"): lambda: object, ("builtins", "object"): lambda: object,
    ("copy_reg", "_reconstructor"): lambda: copyreg._reconstructor,
    ("copyreg", "_reconstructor"): lambda: copyreg._reconstructor,
}


def restricted_load(data: bytes, allowed: Mapping[tuple[str, str], Callable[[], Any]], *, what: str) -> Any:
    """Unpickle ``data`` (python 2 or 3 pickles; bytes decoded as latin-1) allowing only ``allowed`` globals.

    Raises:
        DataError: the pickle names a global outside ``allowed``, or is damaged.
    """
    try:
        return _RestrictedUnpickler(io.BytesIO(data), allowed, encoding="latin1").load()
    except DataError:
        raise
    except Exception as err:  # any unpickling failure means a damaged file
        raise DataError(f"{what} is not a readable pickle ({type(err).__name__}: {err})") from err


def read_text_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file (gzipped or not), without line ends.

    Only ``\\n`` (and ``\\r\\n``) end a line: ``str.splitlines`` would also split on the
    Unicode separators some captions contain, and shift sentence alignment.
    """
    try:
        text = read_bytes(path).decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path} is not UTF-8 text ({err})") from err
    if text.endswith("\n"):
        text = text[:-1]
    return [line.removesuffix("\r") for line in text.split("\n")] if text else []
