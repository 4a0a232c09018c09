"""Text data sets: tinyshakespeare (character language model) and Multi30k (En-De translation).

``tinyshakespeare`` (``task="language_model"``): Karpathy's 1,115,394-character file, the
vocabulary the sorted set of its 65 characters, split like nanoGPT: the first 90 % train, the
last 10 % validation (``test`` is that validation split; ``meta["test_is"]`` says so). Items are
``(x, y)`` int64 ``(T,)`` blocks with ``y`` shifted one character on; blocks start every
``stride`` characters (default: ``block_size``, so one epoch reads the text once). The whole
token streams are ``meta["train_ids"]``/``meta["val_ids"]`` for random-offset sampling.

``multi30k`` (``task="translation"``): task 1 of Multi30k (Elliott et al. 2016), 29,000 /
1,014 / 1,000 (test_2016_flickr) caption pairs. Sentences are lower-cased and split into
words and punctuation (``\\w+|[^\\w\\s]``); vocabularies come from the training split
(tokens seen at least ``min_freq`` times) with ``<pad>=0, <unk>=1, <bos>=2, <eos>=3``. Items
are ``(src, tgt)`` int64 ``(max_len,)``, padded with 0: ``src`` is ``tokens <eos>``, ``tgt`` is
``<bos> tokens <eos>``; longer sentences are cut to fit (the count is in ``meta["truncated"]``).
``meta`` has the vocabularies, the validation split (``val``) and the raw test sentences
(``test_sources``, ``test_references``) for BLEU.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset, TensorDataset

from nnatlas.data.bundle import DataBundle, LoadContext, register_dataset
from nnatlas.data.download import RemoteFile
from nnatlas.data.errors import DataError
from nnatlas.data.formats import read_bytes, read_text_lines

__all__ = ["MULTI30K_FILES", "SPECIALS", "TINYSHAKESPEARE_FILE", "CharBlocks", "tokenize"]

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# tinyshakespeare

TINYSHAKESPEARE_FILE = RemoteFile(
    "input.txt", "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
    "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed", size=1_115_394)


class CharBlocks(Dataset):
    """Blocks of ``block_size`` token ids and the same block shifted by one, every ``stride`` tokens."""

    def __init__(self, ids: torch.Tensor, block_size: int, stride: int) -> None:
        if ids.dim() != 1 or len(ids) <= block_size:
            raise DataError(f"CharBlocks needs a 1-d stream longer than block_size={block_size}; "
                            f"got {tuple(ids.shape)}")
        self.ids, self.block_size, self.stride = ids, block_size, stride

    def __len__(self) -> int:
        return (len(self.ids) - 1 - self.block_size) // self.stride + 1

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"CharBlocks index {index} out of range for {n} blocks")
        s = index * self.stride
        return self.ids[s: s + self.block_size], self.ids[s + 1: s + 1 + self.block_size]  # (T,), (T,)


@register_dataset("tinyshakespeare", summary="tinyshakespeare, 1.1M characters, 65-char vocabulary, 90/10 split",
                  task="language_model")
def _tinyshakespeare(ctx: LoadContext, *, block_size: int = 256, stride: int | None = None) -> DataBundle:
    if block_size < 1 or (stride is not None and stride < 1):
        raise DataError(f"tinyshakespeare: block_size and stride must be >= 1; got {block_size} and {stride}")
    path = ctx.files("tinyshakespeare", "tinyshakespeare", [TINYSHAKESPEARE_FILE])[TINYSHAKESPEARE_FILE.name]
    try:
        text = read_bytes(path).decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path} is not UTF-8 text ({err})") from err
    vocab = sorted(set(text))
    stoi = {c: i for i, c in enumerate(vocab)}
    ids = torch.tensor([stoi[c] for c in text], dtype=torch.int64)
    cut = int(0.9 * len(ids))
    train_ids, val_ids = ids[:cut], ids[cut:]
    stride = block_size if stride is None else stride
    return DataBundle(
        name="tinyshakespeare", task="language_model",
        train=CharBlocks(train_ids, block_size, stride), test=CharBlocks(val_ids, block_size, stride),
        num_classes=len(vocab), input_shape=(block_size,),
        meta={"vocab": vocab, "stoi": stoi, "train_ids": train_ids, "val_ids": val_ids, "block_size": block_size,
              "stride": stride, "num_chars": len(text), "test_is": "validation: the last 10 % of the text",
              "split": f"first 90 % train ({len(train_ids):,} chars) / last 10 % validation ({len(val_ids):,})",
              "reference": "nanoGPT baby GPT (6 layers, 384 dims, context 256): best val loss 1.4697",
              "source": "https://github.com/karpathy/char-rnn (data/tinyshakespeare/input.txt)",
              "licence": "Shakespeare (public domain); the repository states no licence"},
    )


# ---------------------------------------------------------------------------------------------
# Multi30k

_M30K_URL = "https://github.com/multi30k/dataset/raw/a3d2e0d26b56f3846f66a952536ffed4e401d05a/data/task1/raw"
_M30K_SHA = {
    "train.en": "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f",
    "train.de": "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6",
    "val.en": "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28",
    "val.de": "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a",
    "test_2016_flickr.en": "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9",
    "test_2016_flickr.de": "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8",
}
MULTI30K_FILES = {stem: RemoteFile(f"{stem}.gz", f"{_M30K_URL}/{stem}.gz", sha, alternatives=((stem, None),))
                  for stem, sha in _M30K_SHA.items()}
_M30K_LINES = {"train": 29_000, "val": 1_014, "test_2016_flickr": 1_000}
SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>")
PAD, UNK, BOS, EOS = range(4)
_TOKEN = re.compile(r"\w+|[^\w\s]")


def tokenize(sentence: str) -> list[str]:
    """Lower-cased words and punctuation marks: ``"Two young, White males."`` -> two young , white males ."""
    return _TOKEN.findall(sentence.lower())


def _vocab(sentences: Sequence[list[str]], min_freq: int) -> list[str]:
    counts = Counter(tok for s in sentences for tok in s)
    # most frequent first, ties alphabetical: the same vocabulary on every machine
    words = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
    return [*SPECIALS, *words]


def _encode(sentences: Sequence[list[str]], stoi: dict[str, int], max_len: int, bos: bool) -> tuple[torch.Tensor, int]:
    """Token lists as a padded (N, max_len) id matrix; returns it and how many were cut."""
    out = torch.full((len(sentences), max_len), PAD, dtype=torch.int64)
    room = max_len - 1 - int(bos)
    cut = 0
    for i, sent in enumerate(sentences):
        if len(sent) > room:
            cut += 1
            sent = sent[:room]
        ids = ([BOS] if bos else []) + [stoi.get(t, UNK) for t in sent] + [EOS]
        out[i, : len(ids)] = torch.tensor(ids, dtype=torch.int64)
    return out, cut


@register_dataset("multi30k", summary="Multi30k task 1 En-De captions, 29000/1014/1000 pairs", task="translation")
def _multi30k(ctx: LoadContext, *, src: str = "en", tgt: str = "de", max_len: int = 64,
              min_freq: int = 2) -> DataBundle:
    if {src, tgt} != {"en", "de"}:
        raise DataError(f"multi30k: src and tgt must be 'en' and 'de' (either way round); got {src!r} and {tgt!r}")
    if max_len < 3 or min_freq < 1:
        raise DataError(f"multi30k: max_len must be >= 3 and min_freq >= 1; got {max_len} and {min_freq}")
    paths = ctx.files("multi30k", "multi30k", list(MULTI30K_FILES.values()))
    raw: dict[str, dict[str, list[str]]] = {}
    for split, count in _M30K_LINES.items():
        raw[split] = {}
        for lang in ("en", "de"):
            path = paths[MULTI30K_FILES[f"{split}.{lang}"].name]
            lines = read_text_lines(path)
            if len(lines) != count:
                raise DataError(f"{path}: expected {count} sentences (one a line); got {len(lines)}")
            raw[split][lang] = lines
    tokens = {split: {lang: [tokenize(s) for s in raw[split][lang]] for lang in ("en", "de")} for split in raw}
    src_vocab, tgt_vocab = _vocab(tokens["train"][src], min_freq), _vocab(tokens["train"][tgt], min_freq)
    src_stoi = {t: i for i, t in enumerate(src_vocab)}
    tgt_stoi = {t: i for i, t in enumerate(tgt_vocab)}
    splits: dict[str, TensorDataset] = {}
    truncated: dict[str, int] = {}
    for split in raw:
        s_ids, s_cut = _encode(tokens[split][src], src_stoi, max_len, bos=False)
        t_ids, t_cut = _encode(tokens[split][tgt], tgt_stoi, max_len, bos=True)
        splits[split], truncated[split] = TensorDataset(s_ids, t_ids), s_cut + t_cut
    if any(truncated.values()):
        logger.info("multi30k: sentences cut to max_len=%d: %s", max_len, truncated)
    meta: dict[str, Any] = {
        "src": src, "tgt": tgt, "src_vocab": src_vocab, "tgt_vocab": tgt_vocab, "specials": list(SPECIALS),
        "pad_index": PAD, "unk_index": UNK, "bos_index": BOS, "eos_index": EOS, "max_len": max_len,
        "src_vocab_size": len(src_vocab), "tgt_vocab_size": len(tgt_vocab), "truncated": truncated,
        "val": splits["val"], "test_sources": raw["test_2016_flickr"][src],
        "test_references": raw["test_2016_flickr"][tgt],
        "sentences": raw,  # split -> language -> the raw lines (subword tokenizers train on these)
        "tokenizer": r"lower-cased re.findall(r'\w+|[^\w\s]')", "min_freq": min_freq,
        "split": "29,000 train / 1,014 val / 1,000 test (test_2016_flickr) sentence pairs",
        "source": "https://github.com/multi30k/dataset (data/task1/raw)",
        "licence": "no licence stated; cite Elliott et al. 2016 (captions from Flickr30K)",
    }
    return DataBundle(name="multi30k", task="translation", train=splits["train"], test=splits["test_2016_flickr"],
                      num_classes=len(tgt_vocab), input_shape=(max_len,), meta=meta)
