"""Subword vocabularies for the text tasks, trained with Hugging Face ``tokenizers`` on a training split.

- :func:`train_bpe`: byte-level BPE (GPT-2's pre-tokenizer and decoder). Every string encodes (no
  unknown token: the 256 bytes are in the alphabet) and ``decode(encode(s)) == s`` exactly, so a
  translation is detokenised by decoding its ids: case, spaces and punctuation come back as written.
- :func:`train_wordpiece`: BERT's WordPiece (lower-cased, accents kept, ``##`` continuations), its
  pieces chosen from ``tokenizers``' deterministic BPE (see there why).

A tokenizer is saved into the run folder as ``<name>.json`` (:func:`save`), and its SHA-256 goes into
the plan, so that a resumed run refuses a different vocabulary and :func:`load` refuses a changed file.
Training is deterministic: the same sentences give the same file on every run and machine.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from nnatlas._io import atomic_write_text

__all__ = ["digest", "load", "save", "train_bpe", "train_wordpiece"]


def train_bpe(sentences: Sequence[str], vocab_size: int, specials: Sequence[str]) -> Tokenizer:
    """A byte-level BPE vocabulary of at most ``vocab_size`` tokens (``specials`` first, ids 0, 1, ...)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(specials),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(sentences, trainer=trainer)
    return tok


def train_wordpiece(texts: Sequence[str], vocab_size: int, specials: Sequence[str], unk: str) -> Tokenizer:
    """BERT's uncased WordPiece: a vocabulary of at most ``vocab_size`` tokens (``specials`` first).

    ``tokenizers``' own ``WordPieceTrainer`` is not deterministic across processes (its ``##``
    continuation alphabet comes out of a hash map, so ties between merges break differently: three
    runs on tinyshakespeare gave three vocabularies), and a run must rebuild the same vocabulary
    when it resumes. So the pieces come from its deterministic BPE trainer on the same normalised,
    pre-tokenised words: each word's BPE segmentation gives its first piece as is and the others
    as ``##piece``; the vocabulary is every character in both forms (no seen character is unknown)
    and then the most used pieces (ties in string order). Encoding is ``tokenizers``' WordPiece
    (greedy longest match), decoding joins ``##`` pieces.
    """
    bpe = Tokenizer(models.BPE(unk_token=unk))
    bpe.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=False, clean_text=True)
    bpe.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    bpe.train_from_iterator(
        texts, trainer=trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(specials), show_progress=False)
    )
    counts: Counter[str] = Counter()
    chars: set[str] = set()
    for enc in bpe.encode_batch(list(texts), add_special_tokens=False):
        previous = None
        for piece, word in zip(enc.tokens, enc.word_ids):
            counts[piece if word != previous else "##" + piece] += 1
            chars.update(piece)
            previous = word
    alphabet = sorted(chars) + ["##" + c for c in sorted(chars)]
    rest = sorted((p for p in counts if p not in set(alphabet) and p not in specials), key=lambda p: (-counts[p], p))
    tokens = [*specials, *alphabet, *rest][: max(vocab_size, len(specials) + len(alphabet))]
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(tokens)}, unk_token=unk))
    tok.normalizer = bpe.normalizer
    tok.pre_tokenizer = bpe.pre_tokenizer
    tok.decoder = decoders.WordPiece()
    return tok


def digest(tok: Tokenizer) -> str:
    """SHA-256 of the tokenizer's JSON (what :func:`save` writes)."""
    return hashlib.sha256(tok.to_str().encode("utf-8")).hexdigest()


def save(tok: Tokenizer, path: Path) -> Path:
    """Write the tokenizer's JSON to ``path`` atomically."""
    atomic_write_text(Path(path), tok.to_str())
    return Path(path)


def load(path: Path, sha256: str) -> Tokenizer:
    """The tokenizer saved in ``path``; ``ValueError`` when it is absent or not the run's (its hash differs)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(
            f"{path} is absent: the run's tokenizer was not saved (nnatlas train writes it at the run's start)"
        )
    text = path.read_text("utf-8")
    got = hashlib.sha256(text.encode("utf-8")).hexdigest()
    if got != sha256:
        raise ValueError(
            f"{path} is not the tokenizer this run trained with (SHA-256 {got[:12]}..., config.json says {sha256[:12]}...)"
        )
    return Tokenizer.from_str(text)
