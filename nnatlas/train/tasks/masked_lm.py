"""Masked language modelling: BERT's pre-training task 1 (Devlin et al. 2019, section 3.1), without
next-sentence prediction.

The model: the registered BERT (``bert_tiny``, ``bert_base``) under its masked-LM head,
:class:`nnatlas.models.bert.BertForMaskedLM` (:meth:`MaskedLMTask.build_model`); the task trains
the encoder and the head together, and ``nnatlas.load`` returns both.

The corpus (:meth:`MaskedLMTask.fit`):

- ``tinyshakespeare`` (the default): the text of nanoGPT's 90 % training split, split into lines,
  encoded, and the token stream cut into examples ``[CLS] <seq_len - 2 tokens> [SEP]`` (BERT packs
  its documents into full sequences the same way); the last 10 % is the evaluation split.
- ``multi30k``: the English captions, one sentence an example ``[CLS] tokens [SEP]``; evaluated on
  test2016's English side.

The vocabulary: BERT's uncased WordPiece (``##`` continuations) of ``--wordpiece-vocab`` tokens
(default 8,000: BERT-base's 30,522 would make the 128-wide model's output layer ten times its
encoder), trained with Hugging Face ``tokenizers`` on the training split and saved in the run
folder as ``tokenizer.json``; the model's ``vocab_size`` is the size it reached.

Masking (:func:`mask_tokens`, section 3.1 and appendix A.1): in each sequence 15 % of the real
tokens (rounded, at least one; never ``[CLS]``, ``[SEP]`` or padding) are chosen for prediction,
as the released ``create_pretraining_data.py`` does; a chosen token is replaced by ``[MASK]`` with
probability 0.8, by a random non-special token with 0.1, and left unchanged with 0.1. Training
masks are drawn from the trainer's per-step generator (so a resumed run draws the same); each
evaluation split is masked once with a fixed seed, so every evaluation scores the same positions.

Loss: cross entropy over the chosen positions only (the head's V-wide projection runs on them
alone). Metrics: ``loss`` (nats per predicted token), ``ppl`` = exp(loss), ``acc`` (the share of
predicted tokens whose argmax is the original token: chosen positions only).
Artefacts: ``fill-<step>.txt``, evaluation sequences with their masks filled in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import Tensor, nn

import nnatlas
from nnatlas._io import atomic_write_text
from nnatlas.models.bert import BertForMaskedLM, BertModel
from nnatlas.train.tasks import subword
from nnatlas.train.tasks.base import (
    Batch,
    Option,
    Plan,
    Task,
    check_model_args,
    config_fields,
    positive_int,
    probe,
    register_task,
)

__all__ = ["SPECIALS", "MaskedLMTask", "mask_tokens", "mlm_sums"]

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PAD, UNK, CLS, SEP, MASK = range(len(SPECIALS))
IGNORE = -100  # labels of positions that are not predicted
TOKENIZER_FILE = "tokenizer.json"
MASK_RATE = 0.15  # of each sequence's real tokens are predicted
P_MASK, P_RANDOM = 0.8, 0.1  # of those: [MASK], a random token; the remaining 0.1 stay as they are
EVAL_SEED = 1234  # the evaluation splits' fixed masks
SAMPLES = 4  # sequences in each evaluation's fill-in file


def mask_tokens(ids: Tensor, maskable: Tensor, generator: torch.Generator, vocab_size: int) -> tuple[Tensor, Tensor]:
    """BERT's masking of a batch: ids (B, T), maskable (B, T) bool (real, non-special tokens)
    -> (inputs (B, T), labels (B, T): the original id at chosen positions, IGNORE elsewhere).

    Each row gets round(0.15 n) chosen positions (at least one where n >= 1), n its maskable
    tokens: the positions with the smallest uniform scores. All random numbers are drawn in full
    (B, T) shapes from ``generator``, so the masks depend on the generator and the shapes only.
    """
    B, T = ids.shape
    n = maskable.sum(1)  # (B,)
    k = torch.where(n > 0, (n.double() * MASK_RATE).round().long().clamp_min(1), torch.zeros_like(n))  # (B,)
    scores = torch.rand(B, T, generator=generator).masked_fill(~maskable, 2.0)  # unmaskable positions sort last
    rank = scores.argsort(1).argsort(1)  # (B, T): each position's rank within its row
    chosen = rank < k[:, None]  # (B, T)
    r = torch.rand(B, T, generator=generator)
    random_ids = torch.randint(len(SPECIALS), vocab_size, (B, T), generator=generator)
    inputs = torch.where(chosen & (r < P_MASK), torch.full_like(ids, MASK), ids)  # 80 %: [MASK]
    inputs = torch.where(chosen & (r >= P_MASK) & (r < P_MASK + P_RANDOM), random_ids, inputs)  # 10 %: a random token
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
    return inputs, labels


def mlm_sums(logits: Tensor, labels: Tensor) -> Tensor:
    """(cross-entropy sum, correct, count) over the predicted positions (labels != IGNORE), float64 (3,).

    ``logits`` (..., V) and ``labels`` (...) of the same leading shape: all positions with labels
    IGNORE where nothing is predicted, or the predicted positions alone.
    """
    logits, labels = logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1)
    chosen = labels != IGNORE
    loss = F.cross_entropy(logits, labels, ignore_index=IGNORE, reduction="sum")
    correct = ((logits.argmax(-1) == labels) & chosen).sum()
    return torch.stack([loss.double(), correct.double(), chosen.sum().double()])


def _chunks(ids: Sequence[int], size: int) -> list[list[int]]:
    return [list(ids[i : i + size]) for i in range(0, len(ids), size)]


@register_task
class MaskedLMTask(Task):
    kind = "masked_lm"
    data_kinds = ("language_model", "translation")
    best, mode = "test_loss", "min"
    eval_splits = ("test",)
    num_sums = 3
    options = {
        "wordpiece_vocab": Option(
            int,
            8000,
            "size of the WordPiece vocabulary trained on the training split",
            check=positive_int,
            expect="an integer >= 1",
        ),
        "seq_len": Option(
            int,
            128,
            "tokens per masked-LM example, [CLS] and [SEP] included (BERT's first phase: 128)",
            check=lambda v: positive_int(v) and v >= 3,
            expect="an integer >= 3",
        ),
    }

    def __init__(
        self, plan: Plan, bundle: Any | None, options: Mapping[str, Any], tokenizer: Tokenizer | None = None
    ) -> None:
        super().__init__(plan, bundle, options)
        self.tokenizer: Tokenizer | None = None
        self.examples: dict[str, list[list[int]]] = {}  # split -> [CLS] ids [SEP]
        self.eval_masked: dict[str, tuple[Tensor, Tensor]] = {}  # split -> fixed (inputs, labels) (N, T)
        if tokenizer is not None:
            self._use(tokenizer)

    # -- the corpus ------------------------------------------------------------------------------

    @staticmethod
    def texts(bundle: Any) -> dict[str, list[str]]:
        """The raw text of the training and evaluation splits, as lines (tinyshakespeare) or sentences (Multi30k English)."""
        meta = bundle.meta
        if bundle.task == "language_model" and "vocab" in meta and "train_ids" in meta:
            vocab = meta["vocab"]
            text = {
                split: "".join(vocab[i] for i in meta[key].tolist())
                for split, key in (("train", "train_ids"), ("test", "val_ids"))
            }
            return {split: [line for line in t.split("\n") if line.strip()] for split, t in text.items()}
        if bundle.task == "translation" and "sentences" in meta:
            return {"train": meta["sentences"]["train"]["en"], "test": meta["sentences"]["test_2016_flickr"]["en"]}
        raise ValueError(
            f"data set {bundle.name!r}: the masked_lm task reads a character stream (meta vocab/train_ids/val_ids) "
            "or English sentences (meta['sentences']); this data set has neither"
        )

    def _use(self, tokenizer: Tokenizer) -> None:
        """Take the run's tokenizer and, where the data is here, encode the splits and mask the evaluation ones."""
        self.tokenizer = tokenizer
        if self.bundle is None:
            return
        L = self.opts["seq_len"]
        packed = self.plan.details["packing"] == "stream"
        for split, lines in self.texts(self.bundle).items():
            encoded = [e.ids for e in tokenizer.encode_batch(lines, add_special_tokens=False)]
            if packed:  # one token stream cut into full sequences
                body = _chunks([t for ids in encoded for t in ids], L - 2)
            else:  # one sentence an example
                body = [ids[: L - 2] for ids in encoded if ids]
            self.examples[split] = [[CLS, *ids, SEP] for ids in body]
        V = tokenizer.get_vocab_size()
        for split in self.eval_splits:
            ids, maskable = self._pad(self.examples[split])
            self.eval_masked[split] = mask_tokens(ids, maskable, torch.Generator().manual_seed(EVAL_SEED), V)

    @staticmethod
    def _pad(examples: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor]:
        """Examples as (B, T) ids padded with [PAD], and which positions may be masked (B, T)."""
        B, T = len(examples), max(map(len, examples))
        ids = torch.full((B, T), PAD, dtype=torch.long)
        for i, ex in enumerate(examples):
            ids[i, : len(ex)] = torch.tensor(ex)
        return ids, ids >= len(SPECIALS)

    # -- fitting and files -----------------------------------------------------------------------

    @classmethod
    def fit(
        cls, model_name: str, bundle: Any, options: Mapping[str, Any], model_args: Mapping[str, Any]
    ) -> tuple[Task, nn.Module]:
        where = f"model {model_name!r} on data set {bundle.name!r}"
        opts = {name: options.get(name, opt.default) for name, opt in cls.options.items()}
        fields = config_fields(model_name)
        check_model_args(model_name, fields, model_args)
        if "vocab_size" in model_args:
            raise ValueError(
                f"{where}: --model-arg vocab_size: the vocabulary is the WordPiece's; set its size with --wordpiece-vocab"
            )
        if "max_position_embeddings" in fields and opts["seq_len"] > fields["max_position_embeddings"]:
            raise ValueError(
                f"{where}: --seq-len {opts['seq_len']} exceeds the model's {fields['max_position_embeddings']} positions"
            )
        texts = cls.texts(bundle)
        tokenizer = subword.train_wordpiece(texts["train"], opts["wordpiece_vocab"], SPECIALS, unk=SPECIALS[UNK])
        overrides = {**model_args, "vocab_size": tokenizer.get_vocab_size()}
        details = {
            "tokenizer": TOKENIZER_FILE,
            "tokenizer_sha256": subword.digest(tokenizer),
            "vocab_size": tokenizer.get_vocab_size(),
            "vocabulary": "uncased WordPiece trained on the training split",
            "specials": list(SPECIALS),
            "packing": "stream" if bundle.task == "language_model" else "sentence",
            "corpus": "tinyshakespeare lines packed into full sequences"
            if bundle.task == "language_model"
            else "Multi30k English sentences",
        }
        plan = Plan(model=model_name, data=bundle.name, task=cls.kind, overrides=overrides, details=details)
        task = cls(plan, bundle, options, tokenizer=tokenizer)
        model = task.build_model(where)
        b = task.batch("test", torch.arange(min(2, task.size("test"))), device=torch.device("cpu"))
        out = probe(model, b["input_ids"], b["attention_mask"], None, b["labels"] != IGNORE)
        want = (int((b["labels"] != IGNORE).sum()), tokenizer.get_vocab_size())
        if tuple(out.shape) != want:
            raise ValueError(f"{where}: expected masked-position logits {want}; got {tuple(out.shape)}")
        return task, model

    def build_model(self, where: str | None = None) -> nn.Module:
        """The registered BERT with the plan's overrides under its masked-LM head."""
        with torch.device("meta"):  # only the config is needed from the registered model
            encoder = nnatlas.create(self.plan.model, **self.plan.overrides)
        if not isinstance(encoder, BertModel):
            where = where or f"model {self.plan.model!r}"
            raise ValueError(
                f"{where}: the masked_lm task trains BERT encoders (BertModel) under their masked-LM head; got {type(encoder).__name__}"
            )
        return BertForMaskedLM(encoder.config)

    def save(self, run_dir: Path) -> list[Path]:
        return [subword.save(self._tokenizer(), Path(run_dir) / TOKENIZER_FILE)]

    def restore(self, run_dir: Path) -> None:
        self._use(subword.load(Path(run_dir) / self.plan.details["tokenizer"], self.plan.details["tokenizer_sha256"]))

    def inference(self) -> dict[str, Any]:
        return {
            "tokenizer": self.plan.details["tokenizer"],
            "specials": list(SPECIALS),
            "mask_id": MASK,
            "seq_len": self.opts["seq_len"],
        }

    def _tokenizer(self) -> Tokenizer:
        if self.tokenizer is None:
            raise ValueError("the masked_lm task has no tokenizer: fit trains it, nnatlas.load restores the run's")
        return self.tokenizer

    # -- data ------------------------------------------------------------------------------------

    def size(self, split: str) -> int:
        if split not in self.examples:
            self._tokenizer()
            raise ValueError(
                f"the masked_lm task has no {split!r} data here (splits: {', '.join(self.examples) or 'none, no data set was given'})"
            )
        return len(self.examples[split])

    def batch(
        self, split: str, indices: Tensor, *, device: torch.device, generator: torch.Generator | None = None
    ) -> Batch:
        """``input_ids`` (B, T) masked, ``attention_mask`` (B, T) 1 = token, ``labels`` (B, T): the original
        ids at predicted positions, IGNORE elsewhere. Training masks come from ``generator``; the
        evaluation splits' are fixed (and so are training batches drawn without a generator)."""
        self.size(split)
        if split in self.eval_masked:
            inputs, labels = (t[indices] for t in self.eval_masked[split])
            T = int((inputs != PAD).sum(1).max())
            inputs, labels = inputs[:, :T], labels[:, :T]  # (B, T): this batch's longest example
        else:
            ids, maskable = self._pad([self.examples[split][i] for i in indices.tolist()])
            gen = generator if generator is not None else torch.Generator().manual_seed(EVAL_SEED)
            inputs, labels = mask_tokens(ids, maskable, gen, self._tokenizer().get_vocab_size())
        return {
            "input_ids": inputs.to(device),
            "attention_mask": (inputs != PAD).long().to(device),
            "labels": labels.to(device),
        }

    def report_input(self, device: torch.device) -> Any:
        b = self.batch("test", torch.arange(min(2, self.size("test"))), device=device)
        return b["input_ids"], b["attention_mask"]

    # -- loss and metrics ------------------------------------------------------------------------

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        chosen = batch["labels"] != IGNORE
        logits = model(batch["input_ids"], batch["attention_mask"], None, chosen)  # (N, V): the predicted positions
        return F.cross_entropy(logits.float(), batch["labels"][chosen])

    def sums(self, model: nn.Module, batch: Batch) -> Tensor:
        chosen = batch["labels"] != IGNORE
        logits = model(batch["input_ids"], batch["attention_mask"], None, chosen)  # (N, V)
        return mlm_sums(logits, batch["labels"][chosen])

    def metrics(self, sums: Tensor) -> dict[str, float]:
        loss, correct, n = sums.tolist()
        mean = loss / n if n else math.nan
        return {"loss": mean, "ppl": math.exp(min(mean, 700.0)), "acc": correct / n if n else math.nan}

    # -- artefacts -------------------------------------------------------------------------------

    def artefacts(self, model: nn.Module, folder: Path, tag: str) -> list[Path]:
        if "test" not in self.eval_masked:
            return []
        tok = self._tokenizer()
        device = next(model.parameters()).device
        n = min(SAMPLES, self.size("test"))
        b = self.batch("test", torch.arange(n), device=device)
        with torch.no_grad():
            logits = model(b["input_ids"], b["attention_mask"])  # (B, T, V)
        filled = torch.where(b["labels"] != IGNORE, logits.argmax(-1), b["input_ids"])
        lines = [
            f"# {self.plan.model}, {tag}: evaluation sequences masked, filled by the model, original",
            "# [x]: predicted",
            "",
        ]
        for i in range(n):
            real = b["attention_mask"][i].bool()
            chosen = (b["labels"][i] != IGNORE)[real].tolist()
            original = torch.where(b["labels"][i] != IGNORE, b["labels"][i], b["input_ids"][i])
            for name, ids in (("masked:  ", b["input_ids"][i]), ("filled:  ", filled[i]), ("original:", original)):
                pieces = (tok.id_to_token(j) for j in ids[real].tolist())
                lines.append(f"{name} " + " ".join(f"[{t}]" if c else t for t, c in zip(pieces, chosen)))
            lines.append("")
        path = Path(folder) / f"fill-{tag}.txt"
        atomic_write_text(path, "\n".join(lines) + "\n")
        return [path]
