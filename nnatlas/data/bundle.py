"""The data API: :class:`DataBundle`, the data set registry, :func:`load` and the data folder.

A loader is a function ``loader(ctx, **options) -> DataBundle`` registered under a name with
:func:`register_dataset`; ``ctx`` (:class:`LoadContext`) says where the data folder is and
whether downloads are allowed. Loaders that need no files (scikit-learn's digits) ignore it.

The data folder is laid out like ``shared/data``: one sub-folder per data set, original file
names, gzipped or not. It is, in order: the ``data_dir`` argument (CLI ``--data-dir``), the
environment variable ``NNATLAS_DATA``, ``$XDG_CACHE_HOME/nnatlas``, ``~/.cache/nnatlas``.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from nnatlas.data.download import RemoteFile, ensure_files
from nnatlas.data.errors import DataError, DataNotFoundError, UnknownDatasetError

__all__ = [
    "TASKS",
    "DataBundle",
    "DatasetInfo",
    "LoadContext",
    "dataset_info",
    "default_data_dir",
    "list_datasets",
    "load",
    "register_dataset",
]

logger = logging.getLogger(__name__)

TASKS = ("classification", "binary", "regression", "segmentation", "node_classification",
         "language_model", "translation", "pointer", "forecast", "sequence_classification")


@dataclass(frozen=True)
class DataBundle:
    """A data set ready for training: two splits, the task and what a model needs to fit it.

    Attributes:
        name: the registered name (``"mnist"``).
        task: one of :data:`TASKS`.
        train: the training split; items are ``(x, y)`` tensors.
        test: the evaluation split (a held-out validation split where the data set has no test
            split; ``meta["test_is"]`` then says so).
        num_classes: the number of classes (vocabulary size for language models, target
            vocabulary for translation), ``None`` for regression and forecasting.
        input_shape: the shape of one ``x`` without the batch dimension.
        meta: everything else: ``source``, ``licence``, ``split`` (how the splits were made,
            their sizes), class names, vocabularies, graph tensors, normalisation statistics.
    """

    name: str
    task: str
    train: Dataset
    test: Dataset
    num_classes: int | None
    input_shape: tuple[int, ...]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise DataError(f"DataBundle {self.name!r}: task must be one of {TASKS}; got {self.task!r}")
        if self.num_classes is not None and self.num_classes < 1:
            raise DataError(f"DataBundle {self.name!r}: num_classes must be >= 1 or None; got {self.num_classes}")

    def __repr__(self) -> str:
        sizes = f"train={_len(self.train)}, test={_len(self.test)}"
        return (f"DataBundle(name={self.name!r}, task={self.task!r}, {sizes}, num_classes={self.num_classes}, "
                f"input_shape={self.input_shape}, meta keys={sorted(self.meta)})")


def _len(ds: Dataset) -> int | str:
    try:
        return len(ds)  # type: ignore[arg-type]
    except TypeError:
        return "?"


@dataclass(frozen=True)
class LoadContext:
    """Where a loader finds its files and whether it may download them."""

    data_dir: Path
    download: bool

    def folder(self, name: str) -> Path:
        """The data set's own sub-folder (``shared/data`` layout: ``<data_dir>/<name>``)."""
        return self.data_dir / name

    def files(self, dataset: str, folder: str, files: Sequence[RemoteFile]) -> dict[str, Path]:
        """Each of ``files`` in ``<data_dir>/<folder>``, verified, downloading the missing ones."""
        return ensure_files(dataset, self.folder(folder), files, download=self.download)


Loader = Callable[..., DataBundle]


@dataclass(frozen=True)
class DatasetInfo:
    """A registry entry: the name, what it is, the task, whether it needs files, its loader."""

    name: str
    summary: str
    task: str
    offline: bool  # True: ships inside an installed package, no data folder needed
    loader: Loader


_REGISTRY: dict[str, DatasetInfo] = {}


def register_dataset(name: str, *, summary: str, task: str, offline: bool = False) -> Callable[[Loader], Loader]:
    """Register ``loader(ctx, **options) -> DataBundle`` under ``name``; a duplicate name raises."""
    if task not in TASKS:
        raise ValueError(f"register_dataset({name!r}): task must be one of {TASKS}; got {task!r}")

    def decorate(loader: Loader) -> Loader:
        if name in _REGISTRY:
            raise ValueError(f"register_dataset: {name!r} is already registered by {_REGISTRY[name].loader.__module__}")
        _REGISTRY[name] = DatasetInfo(name, summary, task, offline, loader)
        return loader

    return decorate


def _canonical(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def list_datasets() -> list[str]:
    """The registered data set names, sorted."""
    return sorted(_REGISTRY)


def dataset_info(name: str) -> DatasetInfo:
    """The registry entry of ``name`` (underscores and case are forgiven)."""
    key = _canonical(name)
    if key not in _REGISTRY:
        raise UnknownDatasetError(name, _REGISTRY)
    return _REGISTRY[key]


def default_data_dir() -> Path:
    """``$NNATLAS_DATA``, else ``$XDG_CACHE_HOME/nnatlas``, else ``~/.cache/nnatlas``.

    An explicit ``data_dir`` (CLI ``--data-dir``) passed to :func:`load` wins over all three.
    """
    env = os.environ.get("NNATLAS_DATA")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "nnatlas"


def load(name: str, *, data_dir: str | os.PathLike[str] | None = None, download: bool = True,
         **options: Any) -> DataBundle:
    """Load a registered data set as a :class:`DataBundle`.

    Args:
        name: a name from :func:`list_datasets` (``"digits"``, ``"mnist"``, ``"cora"``...).
        data_dir: the data folder (``shared/data`` layout); default :func:`default_data_dir`.
        download: fetch missing files from their canonical addresses (verified by sha256).
        **options: loader-specific settings, e.g. ``block_size`` for ``tinyshakespeare`` or
            ``window`` for ``sunspots``; an unknown one raises :class:`DataError`.

    Raises:
        UnknownDatasetError: ``name`` is not registered.
        DataNotFoundError: files are missing and cannot be downloaded (the message lists them).
        ChecksumError, DataError: a file is corrupted or not in the expected format.
    """
    info = dataset_info(name)
    params = inspect.signature(info.loader).parameters
    allowed = [p for p in params if p != "ctx" and params[p].kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise DataError(f"load({info.name!r}): unknown option(s) {unknown}; "
                        f"this data set accepts {allowed or 'no options'}")
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    if data_dir is not None and not root.is_dir():  # a mistyped --data-dir must not start downloads into a new folder
        raise DataNotFoundError(f"load({info.name!r}): the data folder {root} does not exist (or is not a folder); "
                                f"create it, fix the path, or leave data_dir/--data-dir out to use {default_data_dir()}")
    logger.debug("loading %s from %s (download=%s, options=%s)", info.name, root, download, options)
    bundle = info.loader(LoadContext(root, download), **options)
    return bundle


def as_float_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 images ``(N, H, W)`` or ``(N, C, H, W)`` as float32 ``(N, C, H, W)`` in [0, 1]."""
    if images.dtype != torch.uint8:
        raise DataError(f"as_float_images expects uint8 pixels; got {images.dtype}")
    if images.dim() == 3:
        images = images.unsqueeze(1)  # (N, 1, H, W)
    return images.float().div_(255.0)
