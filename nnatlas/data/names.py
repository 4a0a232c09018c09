"""The ``names`` data set: 20,074 surnames in 18 languages (PyTorch's char-RNN classification tutorial).

``task="sequence_classification"``: one label (the language) per variable-length name.

Files: ``<data_dir>/names/<Language>.txt``, one UTF-8 name a line, as in the tutorial's
``data.zip`` (https://download.pytorch.org/tutorial/data.zip, folder ``data/names/``). That zip
publishes no checksum, so each file is fetched, verified by sha256, from a pinned commit of a
GitHub copy with the same bytes (``IDDT/rnn-examples``; ``../shared/data/MANIFEST.md``).

Text: with ``ascii=True`` (the default, as the tutorial does) each name is folded to ASCII
(``unicodedata.normalize("NFD", ...)``, combining marks dropped) and only the tutorial's 57
letters ``string.ascii_letters + " .,;'"`` are kept; ``ascii=False`` keeps the text as it is.

The alphabet comes from the data: the sorted characters of the *training* names. Items are
``(codes, label)``: int64 ``(L,)`` character codes padded with ``0`` to the longest name
``L`` (``1..K`` index ``meta["alphabet"]``; a test character outside it is ``K + 1``,
unknown) and the language index. ``meta["lengths_train"]`` / ``meta["lengths_test"]`` hold the
lengths (also ``(codes != 0).sum()``), ``meta["classes"]`` the languages in file order
(alphabetical), ``meta["names_train"]`` / ``meta["names_test"]`` the (folded) strings.

Split: stratified by language with a fixed seed; the held-out part is ``test_fraction``
(default 10 %) of each language's *distinct* names, and every copy of a name goes with it. The
files repeat names (``Arabic.txt`` holds 2,000 lines but 108 distinct names), so a split of the
lines would put most test names in the training split too.
"""

from __future__ import annotations

import string
import unicodedata

import torch
from torch.utils.data import TensorDataset

from nnatlas.data.bundle import DataBundle, LoadContext, register_dataset
from nnatlas.data.download import RemoteFile
from nnatlas.data.errors import DataError

__all__ = ["NAMES_FILES", "LANGUAGES", "TUTORIAL_LETTERS", "fold_ascii", "stratified_split", "read_names"]

_URL = "https://raw.githubusercontent.com/IDDT/rnn-examples/d841d14ae88398356bfa5b8e8015016768ed56c0/data/names"
_SHA256 = {
    "Arabic": "6f424a8dbe51cbbbabab7a57d38b617210125e4e3991f3c657cb79b8f104bafc",
    "Chinese": "49263ef55a8cb1740e841d65cad8214b2f9b5b869bc534c811746422496fa91e",
    "Czech": "145bbbd6d0816578f03388e92c264d39ef1c60df920b081d371fa5c5cc055a8e",
    "Dutch": "924f32b635170eae561f84538632138fc07d4c8bbd70ba3fb980de1ecc4d2af3",
    "English": "9cca037066d3d5989e24bc01801416162de506b5e28e15b7c092a47905d29bf2",
    "French": "81e65b36c60ed5b89a17422f6edcadbb89546f38ad69e960e64e7ba682012a95",
    "German": "7449cd590b97a733e18d613a4155decd77ec35dc5f8aadd7a82204dce4f051db",
    "Greek": "3555b5186de7f401e6d991b088e9e644ca3099116477818c25ab5793801389e6",
    "Irish": "cf8c7013256252a88d2503127b87282a11f21b2ff6db1bded68834c19a1ec058",
    "Italian": "f88414c27d0606a11a678b4859277828c2565d6cc4d9ee932deef6e94f3b35e4",
    "Japanese": "e0e717e114fec3e7eade4d9dabe0067c475f43147e36a22b47902ee76ad9e67f",
    "Korean": "cd54221ccb362a6cba4c78828838cf3268a0e59744767a37cf6ec4b74036b136",
    "Polish": "45bab898af2f60ed3a728bbf6980e28821011a7caa53227553b5785903a40826",
    "Portuguese": "50a8735f41f4f73757c8ce5b16cb0275cd86b2b214bcbc8c9805f508cb131c53",
    "Russian": "43b3e64ce351f77f1ac9e0cdf7566012d127f4371875fd25208845b5c9d6f7c3",
    "Scottish": "78d0252711d87d948ea86fe34826c51d2d794a8e52d15b5d6f7b6244d45d62dd",
    "Spanish": "1bcb462ed3316756a85781d68232bddae04498fdddd5d9219c53fd1fbdeba7a7",
    "Vietnamese": "f3f9e4164ab47601178a6e45b216464a64122f49d05541f24bf18a757253281d",
}
LANGUAGES = tuple(_SHA256)  # the class order: alphabetical, as the tutorial's glob returns them
NAMES_FILES = [RemoteFile(f"{lang}.txt", f"{_URL}/{lang}.txt", sha) for lang, sha in _SHA256.items()]
TUTORIAL_LETTERS = string.ascii_letters + " .,;'"  # the tutorial's 57 letters
SPLIT_SEED = 0


def fold_ascii(name: str) -> str:
    """The tutorial's ``unicodeToAscii``: NFD, combining marks dropped, only :data:`TUTORIAL_LETTERS` kept."""
    return "".join(
        c for c in unicodedata.normalize("NFD", name) if unicodedata.category(c) != "Mn" and c in TUTORIAL_LETTERS
    )


def read_names(text: str, *, ascii: bool) -> list[str]:
    """The names of one file's text, one a line (folded when ``ascii``); names that fold to nothing are dropped."""
    names = [fold_ascii(line) if ascii else line for line in text.splitlines()]
    return [n for n in names if n]


def stratified_split(
    names: list[str], labels: list[int], test_fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Train and test indices: per label, ``test_fraction`` of its distinct names (at least one, when it has
    two or more) are held out with every copy; the draw is seeded, the result sorted."""
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"names: test_fraction must be in (0, 1); got {test_fraction}")
    gen = torch.Generator().manual_seed(seed)
    held: set[tuple[int, str]] = set()
    for label in sorted(set(labels)):
        distinct = sorted({n for n, y in zip(names, labels) if y == label})
        k = min(len(distinct) - 1, max(1, round(len(distinct) * test_fraction)))
        order = torch.randperm(len(distinct), generator=gen).tolist()
        held.update((label, distinct[i]) for i in order[:k])
    test = [i for i, key in enumerate(zip(labels, names)) if key in held]
    train = [i for i, key in enumerate(zip(labels, names)) if key not in held]
    return train, test


def _encode(names: list[str], index: dict[str, int], length: int) -> torch.Tensor:
    """Codes ``(N, length)``: ``index[c]`` (1..K), ``K + 1`` for a character outside it, 0 after the name."""
    unknown = len(index) + 1
    codes = torch.zeros(len(names), length, dtype=torch.int64)
    for i, name in enumerate(names):
        codes[i, : len(name)] = torch.tensor([index.get(c, unknown) for c in name], dtype=torch.int64)
    return codes


@register_dataset(
    "names",
    summary="surnames by language (PyTorch char-RNN tutorial), 20,074 names, 18 languages",
    task="sequence_classification",
)
def _names(ctx: LoadContext, *, ascii: bool = True, test_fraction: float = 0.1, seed: int = SPLIT_SEED) -> DataBundle:
    paths = ctx.files("names", "names", NAMES_FILES)
    names: list[str] = []
    labels: list[int] = []
    for label, file in enumerate(NAMES_FILES):
        try:
            text = paths[file.name].read_bytes().decode("utf-8")
        except UnicodeDecodeError as err:
            raise DataError(f"{paths[file.name]}: expected UTF-8 text ({err})") from err
        found = read_names(text, ascii=ascii)
        names += found
        labels += [label] * len(found)
    train_idx, test_idx = stratified_split(names, labels, test_fraction, seed)
    train_names, test_names = [names[i] for i in train_idx], [names[i] for i in test_idx]
    alphabet = "".join(sorted(set("".join(train_names))))
    index = {c: i + 1 for i, c in enumerate(alphabet)}
    L = max(len(n) for n in names)
    y = torch.tensor(labels, dtype=torch.int64)
    meta = {
        "classes": list(LANGUAGES),
        "alphabet": alphabet,
        "pad": 0,
        "unknown": len(alphabet) + 1,
        "ascii": ascii,
        "names_train": train_names,
        "names_test": test_names,
        "lengths_train": torch.tensor([len(n) for n in train_names]),
        "lengths_test": torch.tensor([len(n) for n in test_names]),
        "counts": {lang: labels.count(i) for i, lang in enumerate(LANGUAGES)},
        "split": f"stratified by language, seed {seed}: {test_fraction:.0%} of each language's distinct names held out "
        f"with every copy; {len(train_idx)} train / {len(test_idx)} test",
        "target": "the language index into meta['classes']",
        "source": "https://download.pytorch.org/tutorial/data.zip (data/names/); files fetched from "
        f"{_URL}/<Language>.txt (same bytes, sha256-pinned)",
        "licence": "pytorch/tutorials is BSD-3-Clause; the name lists carry no separate licence",
    }
    return DataBundle(
        name="names",
        task="sequence_classification",
        train=TensorDataset(_encode(train_names, index, L), y[train_idx]),
        test=TensorDataset(_encode(test_names, index, L), y[test_idx]),
        num_classes=len(LANGUAGES),
        input_shape=(L,),
        meta=meta,
    )
