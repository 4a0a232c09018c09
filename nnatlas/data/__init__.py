"""nnatlas.data: real data sets as :class:`DataBundle` objects, verified and cached.

>>> from nnatlas.data import load
>>> bundle = load("digits")            # offline, ships with scikit-learn: the embedded default
>>> x, y = bundle.train[0]             # x: float32 (1, 8, 8) in [0, 1], y: int64 scalar
>>> bundle.num_classes, bundle.input_shape
(10, (1, 8, 8))

``load(name, data_dir=..., download=...)`` looks for a data set's files in
``<data_dir>/<folder>/`` (the ``shared/data`` layout: original file names, gzipped or not),
verifies them by sha256 and downloads the missing ones from their canonical addresses. Without
network and without the files, one :class:`DataNotFoundError` says what to download where.
``list_datasets()`` lists the names; ``dataset_info(name)`` tells what each one is.
"""

from nnatlas.data import graphs, offline, sequences, text, vision  # noqa: F401  (each registers its data sets)
from nnatlas.data.bundle import TASKS, DataBundle, DatasetInfo, dataset_info, default_data_dir, list_datasets, load
from nnatlas.data.download import RemoteFile, download_url, ensure_files, extract_archive, sha256_file
from nnatlas.data.errors import (
    ChecksumError,
    DataError,
    DataNotFoundError,
    DownloadError,
    UnknownDatasetError,
    UnsafeArchiveError,
)

__all__ = [
    "TASKS",
    "ChecksumError",
    "DataBundle",
    "DataError",
    "DataNotFoundError",
    "DatasetInfo",
    "DownloadError",
    "RemoteFile",
    "UnknownDatasetError",
    "UnsafeArchiveError",
    "dataset_info",
    "default_data_dir",
    "download_url",
    "ensure_files",
    "extract_archive",
    "list_datasets",
    "load",
    "sha256_file",
]
