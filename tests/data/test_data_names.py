"""The ``names`` data set: the stratified split on hand-made names, and the loader on the local files."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from nnatlas.data import DataError, load
from nnatlas.data.names import LANGUAGES, fold_ascii, stratified_split


def test_fold_ascii_is_the_tutorials() -> None:
    assert fold_ascii("Ślusàrski") == "Slusarski"  # accents dropped, letters kept
    assert (
        fold_ascii("O'Néal-Smith 2") == "O'NealSmith "
    )  # the tutorial's 57 letters only: '-' and digits go, the space stays


def test_stratified_split_holds_out_distinct_names_per_label_with_every_copy() -> None:
    names = ["a", "a", "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "x", "y"]
    labels = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1]
    train, test = stratified_split(names, labels, 0.2, seed=0)
    assert sorted(train + test) == list(range(len(names))) and not set(train) & set(test)
    held = {(labels[i], names[i]) for i in test}
    assert sum(1 for key in held if key[0] == 0) == 2  # 20 % of label 0's ten distinct names
    assert sum(1 for key in held if key[0] == 1) == 1  # at least one of label 1's two
    assert all((labels[i], names[i]) not in held for i in train)  # copies of a held-out name are all held out
    assert stratified_split(names, labels, 0.2, seed=0) == (train, test)  # seeded
    assert stratified_split(names, labels, 0.2, seed=1) != (train, test)
    with pytest.raises(DataError, match="test_fraction"):
        stratified_split(names, labels, 1.0, seed=0)


def test_names_on_the_local_files(shared_data) -> None:
    b = load("names", data_dir=shared_data, download=False)
    assert (b.task, b.num_classes, b.meta["classes"]) == ("sequence_classification", 18, list(LANGUAGES))
    assert len(b.train) + len(b.test) == 20_074
    assert b.meta["counts"]["Russian"] == 9_408 and b.meta["counts"]["Vietnamese"] == 73
    # Stratified: every language on both sides, each holding out about 10 % of its distinct names.
    y_train = Counter(b.train.tensors[1].tolist())
    y_test = Counter(b.test.tensors[1].tolist())
    assert set(y_train) == set(y_test) == set(range(18))
    train_names = set(zip(b.train.tensors[1].tolist(), b.meta["names_train"]))
    test_names = set(zip(b.test.tensors[1].tolist(), b.meta["names_test"]))
    assert not train_names & test_names  # no (language, name) on both sides
    for label in range(18):
        distinct = sum(1 for k in train_names | test_names if k[0] == label)
        held = sum(1 for k in test_names if k[0] == label)
        assert abs(held - 0.1 * distinct) <= 1, (LANGUAGES[label], held, distinct)
    # Codes: 1..K over the training names' alphabet, 0 after each name.
    codes, _ = b.train[0]
    n = int(b.meta["lengths_train"][0])
    alphabet = b.meta["alphabet"]
    assert "".join(alphabet[c - 1] for c in codes[:n].tolist()) == b.meta["names_train"][0]
    assert torch.all(codes[n:] == 0)
    assert set("".join(b.meta["names_train"])) == set(alphabet) and len(alphabet) == 55  # 52 letters and " ',"
