"""Translation: a source sentence in, a target sentence out (the Transformer on Multi30k, German -> English).

The vocabulary (:meth:`TranslationTask.fit`): ONE byte-level BPE vocabulary for both languages,
trained with Hugging Face ``tokenizers`` on the training split's source and target sentences
(:func:`nnatlas.train.tasks.subword.train_bpe`). Shared, because the Transformer ties one embedding
matrix to source, target and output projection (section 3.4; section 5.1 shares its BPE vocabulary
between English and German the same way); byte-level, because then every sentence encodes
without an unknown token and decoding the ids gives back the text exactly, so a translation is
detokenised by decoding it. Its size is the model config's ``vocab_size`` (10,000 for
``transformer_small``; ``--model-arg vocab_size=N`` asks for another), and the model is built with
the size the BPE reached (smaller when the training text runs out of merges). It is saved in the
run folder as ``tokenizer.json`` (:meth:`TranslationTask.save`).

Examples: ``src`` is ``tokens <eos>``, ``tgt`` is ``<bos> tokens <eos>``; a batch pads both to its
longest sentence with ``<pad>``. The decoder reads ``tgt[:, :-1]`` and is scored on ``tgt[:, 1:]``.
Masks: the source padding mask (B, S) goes to the encoder's self-attention and the decoder's
attention over the memory. The target needs none: padding only follows a sentence's last token,
the causal mask keeps every real position from seeing it, and padded positions are left out of
the loss (``ignore_index``).

Loss: cross entropy with label smoothing ``--label-smoothing`` (0.1, the paper's eps_ls), mean
over target tokens. Metrics (float64 sums, so data-parallel ranks add them): ``loss`` (cross
entropy without smoothing, nats per target token), ``ppl`` = exp(loss), ``acc`` (next-token
accuracy under teacher forcing), ``bleu`` (greedy decoding) and ``bleu_beam`` (beam search,
``--beam-size`` 4 and GNMT's length penalty ``--length-penalty`` 0.6, the paper's values), both
corpus BLEU by ``sacrebleu`` (its defaults: 13a tokenisation, cased, exponential smoothing) of the
decoded text against the raw reference sentences, on test2016 only (decoding a split costs far
more than scoring it). Corpus BLEU is a function of summed n-gram statistics, so each batch
contributes its sacrebleu statistics (hypothesis and reference lengths, matched and total n-grams
of orders 1-4) and :meth:`TranslationTask.metrics` computes BLEU from the sums: the same number
as ``sacrebleu.corpus_bleu`` over the whole split. Decoding stops at the batch's longest source
length + 50 tokens (section 6.1: input length + 50). Evaluation runs on ``val`` (its loss picks
``best.safetensors``) and ``test`` (test2016, with BLEU).

Artefacts: ``translations-<step>.txt``, the first test sentences with their reference, greedy
and beam translations. :meth:`TranslationTask.translate` serves ``nnatlas translate``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from sacrebleu.metrics import BLEU
from tokenizers import Tokenizer
from torch import Tensor, nn

import nnatlas
from nnatlas._io import atomic_write_text
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
    unwrap,
)

__all__ = ["SPECIALS", "TranslationTask", "bleu_from_stats", "bleu_stats"]

SPECIALS = ("<pad>", "<bos>", "<eos>")
PAD, BOS, EOS = 0, 1, 2
IGNORE = -100  # target positions left out of the loss (padding)
TOKENIZER_FILE = "tokenizer.json"
EXTRA_TOKENS = 50  # decoding stops at the batch's longest source length + 50 (section 6.1)
SAMPLES = 8  # test sentences in each evaluation's translations file
DATA_SPLITS = {"train": "train", "val": "val", "test": "test_2016_flickr"}  # our split -> Multi30k's file stem
DECODED_SPLITS = (
    "test",
)  # the splits scored by BLEU; val is scored by teacher-forced loss (it picks best.safetensors)
BLEU_STATS = 10  # hypothesis length, reference length, 4 matched n-gram counts, 4 total n-gram counts


def bleu_stats(hypotheses: Sequence[str], references: Sequence[str]) -> Tensor:
    """sacrebleu's corpus statistics of these sentence pairs, float64 (10,): summed over batches they
    are the whole corpus's statistics."""
    s = BLEU().corpus_score(list(hypotheses), [list(references)])
    return torch.tensor([s.sys_len, s.ref_len, *s.counts, *s.totals], dtype=torch.float64)


def bleu_from_stats(stats: Tensor | Sequence[float]) -> float:
    """Corpus BLEU (0-100) from summed :func:`bleu_stats`, as ``sacrebleu.corpus_bleu`` computes it."""
    v = [int(round(x)) for x in (stats.tolist() if isinstance(stats, Tensor) else stats)]
    sys_len, ref_len, counts, totals = v[0], v[1], v[2:6], v[6:10]
    if ref_len == 0:
        return math.nan
    return BLEU.compute_bleu(counts, totals, sys_len, ref_len, smooth_method="exp").score


@register_task
class TranslationTask(Task):
    kind = "translation"
    data_kinds = ("translation",)
    best, mode = "val_loss", "min"
    eval_splits = ("val", "test")
    num_sums = 3 + 2 * BLEU_STATS
    options = {
        "direction": Option(
            str,
            "de-en",
            "source-target languages of Multi30k",
            check=lambda v: v in ("de-en", "en-de"),
            expect="de-en or en-de",
        ),
        "label_smoothing": Option(
            float,
            0.1,
            "label smoothing of the training loss (the paper's 0.1)",
            check=lambda v: 0.0 <= v < 1.0,
            expect="in [0, 1)",
        ),
        "beam_size": Option(
            int,
            4,
            "beam width of the test BLEU's beam search and of nnatlas translate (1: greedy only)",
            check=positive_int,
            expect="an integer >= 1",
        ),
        "length_penalty": Option(
            float,
            0.6,
            "GNMT length penalty alpha of beam search (the paper's 0.6)",
            check=lambda v: 0.0 <= v < math.inf,
            expect=">= 0",
        ),
    }

    def __init__(
        self, plan: Plan, bundle: Any | None, options: Mapping[str, Any], tokenizer: Tokenizer | None = None
    ) -> None:
        super().__init__(plan, bundle, options)
        d = plan.details
        self.source, self.target = d["source"], d["target"]
        self.tokenizer: Tokenizer | None = None
        self.src: dict[str, list[list[int]]] = {}  # split -> token ids of each source sentence (with <eos>)
        self.tgt: dict[str, list[list[int]]] = {}  # split -> <bos> ids <eos>
        self.refs: dict[str, list[str]] = {}  # split -> the raw target sentences (BLEU references)
        self.sources: dict[str, list[str]] = {}
        if tokenizer is not None:
            self._use(tokenizer)

    def _use(self, tokenizer: Tokenizer) -> None:
        """Take the run's tokenizer and, where the data is here, encode every split with it."""
        self.tokenizer = tokenizer
        if self.bundle is None:
            return
        sentences = self.bundle.meta["sentences"]
        for split, stem in DATA_SPLITS.items():
            src, tgt = sentences[stem][self.source], sentences[stem][self.target]
            self.sources[split], self.refs[split] = src, tgt
            self.src[split] = [e.ids + [EOS] for e in tokenizer.encode_batch(src)]
            self.tgt[split] = [[BOS] + e.ids + [EOS] for e in tokenizer.encode_batch(tgt)]

    # -- fitting and files -----------------------------------------------------------------------

    @classmethod
    def fit(
        cls, model_name: str, bundle: Any, options: Mapping[str, Any], model_args: Mapping[str, Any]
    ) -> tuple[Task, nn.Module]:
        where = f"model {model_name!r} on data set {bundle.name!r}"
        opts = {name: options.get(name, opt.default) for name, opt in cls.options.items()}
        fields = config_fields(model_name)
        check_model_args(model_name, fields, model_args)
        if "vocab_size" not in fields:
            raise ValueError(
                f"{where}: the translation task needs a config field vocab_size (one vocabulary shared by source and target)"
            )
        sentences = bundle.meta.get("sentences")
        if not sentences:
            raise ValueError(
                f"{where}: the data set has no raw sentences (meta['sentences']) to train a BPE vocabulary on"
            )
        source, target = opts["direction"].split("-")
        train = sentences[DATA_SPLITS["train"]]
        tokenizer = subword.train_bpe(
            train[source] + train[target], model_args.get("vocab_size", fields["vocab_size"]), SPECIALS
        )
        overrides = {**model_args, "vocab_size": tokenizer.get_vocab_size()}
        details = {
            "source": source,
            "target": target,
            "tokenizer": TOKENIZER_FILE,
            "tokenizer_sha256": subword.digest(tokenizer),
            "vocabulary": "byte-level BPE shared by source and target, trained on the training split",
            "vocab_size": tokenizer.get_vocab_size(),
            "specials": list(SPECIALS),
        }
        plan = Plan(model=model_name, data=bundle.name, task=cls.kind, overrides=overrides, details=details)
        model = nnatlas.create(model_name, **overrides)
        if not callable(getattr(model, "generate", None)):
            raise ValueError(
                f"{where}: the model has no generate(src_ids, max_len, bos_id, eos_id, ...) to decode with"
            )
        task = cls(plan, bundle, options, tokenizer=tokenizer)
        b = task.batch("train", torch.arange(min(2, task.size("train"))), device=torch.device("cpu"))
        out = probe(model, b["src"], b["tgt_in"], b["src_mask"])
        want = (*b["tgt_in"].shape, tokenizer.get_vocab_size())
        if not isinstance(out, Tensor) or tuple(out.shape) != want:
            raise ValueError(
                f"{where}: expected logits {want} from model(src_ids, tgt_ids, src_key_padding_mask); got {getattr(out, 'shape', type(out).__name__)}"
            )
        return task, model

    def save(self, run_dir: Path) -> list[Path]:
        return [subword.save(self._tokenizer(), Path(run_dir) / TOKENIZER_FILE)]

    def restore(self, run_dir: Path) -> None:
        self._use(subword.load(Path(run_dir) / self.plan.details["tokenizer"], self.plan.details["tokenizer_sha256"]))

    def inference(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "tokenizer": self.plan.details["tokenizer"],
            "beam_size": self.opts["beam_size"],
            "length_penalty": self.opts["length_penalty"],
            "pad_id": PAD,
            "bos_id": BOS,
            "eos_id": EOS,
        }

    # -- data ------------------------------------------------------------------------------------

    def _tokenizer(self) -> Tokenizer:
        if self.tokenizer is None:
            raise ValueError("the translation task has no tokenizer: fit trains it, nnatlas.load restores the run's")
        return self.tokenizer

    def _encoded(self, split: str) -> list[list[int]]:
        if split not in self.src:
            self._tokenizer()
            raise ValueError(
                f"the translation task has no {split!r} data here (splits: {', '.join(self.src) or 'none, no data set was given'})"
            )
        return self.src[split]

    def size(self, split: str) -> int:
        return len(self._encoded(split))

    def batch(
        self, split: str, indices: Tensor, *, device: torch.device, generator: torch.Generator | None = None
    ) -> Batch:
        """Sentences ``indices`` of ``split``: ``src`` (B, S) ids, ``src_mask`` (B, S) True at padding,
        ``tgt_in`` (B, T) the decoder's input, ``tgt_out`` (B, T) its targets (IGNORE at padding)."""
        idx = indices.tolist()
        srcs, tgts = [self._encoded(split)[i] for i in idx], [self.tgt[split][i] for i in idx]
        B, S, T = len(idx), max(map(len, srcs)), max(map(len, tgts))
        src = torch.full((B, S), PAD, dtype=torch.long)
        src_mask = torch.ones(B, S, dtype=torch.bool)
        tgt = torch.full((B, T), PAD, dtype=torch.long)
        tgt_out = torch.full((B, T - 1), IGNORE, dtype=torch.long)
        for i, (s, t) in enumerate(zip(srcs, tgts)):
            src[i, : len(s)] = torch.tensor(s)
            src_mask[i, : len(s)] = False
            tgt[i, : len(t)] = torch.tensor(t)
            tgt_out[i, : len(t) - 1] = torch.tensor(t[1:])
        return {
            "src": src.to(device),
            "src_mask": src_mask.to(device),
            "tgt_in": tgt[:, :-1].to(device),
            "tgt_out": tgt_out.to(device),
            "split": split,
            "index": idx,
        }

    def report_input(self, device: torch.device) -> Any:
        b = self.batch("train", torch.arange(min(2, self.size("train"))), device=device)
        return b["src"], b["tgt_in"]

    # -- loss and metrics ------------------------------------------------------------------------

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        logits = model(batch["src"], batch["tgt_in"], batch["src_mask"])  # (B, T, V)
        return F.cross_entropy(
            logits.flatten(0, 1).float(),
            batch["tgt_out"].flatten(),
            ignore_index=IGNORE,
            label_smoothing=self.opts["label_smoothing"],
        )

    def sums(self, model: nn.Module, batch: Batch) -> Tensor:
        logits = model(batch["src"], batch["tgt_in"], batch["src_mask"]).float()  # (B, T, V)
        target = batch["tgt_out"]
        valid = target != IGNORE
        nll = F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=IGNORE, reduction="sum")
        correct = ((logits.argmax(-1) == target) & valid).sum()
        head = torch.stack([nll.double().cpu(), correct.double().cpu(), valid.sum().double().cpu()])
        greedy = beam = torch.zeros(BLEU_STATS, dtype=torch.float64)
        if batch["split"] in DECODED_SPLITS:  # decoding costs many teacher-forced passes: test2016 only
            refs = [self.refs[batch["split"]][i] for i in batch["index"]]
            greedy = bleu_stats(self.decode(model, batch["src"], batch["src_mask"], beam_size=1), refs)
            K = self.opts["beam_size"]
            if K > 1:
                beam = bleu_stats(self.decode(model, batch["src"], batch["src_mask"], beam_size=K), refs)
        return torch.cat([head, greedy, beam]).to(logits.device)

    def metrics(self, sums: Tensor) -> dict[str, float]:
        """``loss``, ``ppl``, ``acc``; and ``bleu`` (greedy), ``bleu_beam`` where the split was decoded."""
        nll, correct, n = sums[:3].tolist()
        loss = nll / n if n else math.nan
        out = {"loss": loss, "ppl": math.exp(min(loss, 700.0)), "acc": correct / n if n else math.nan}
        greedy, beam = sums[3 : 3 + BLEU_STATS], sums[3 + BLEU_STATS :]
        if greedy[1] > 0:  # reference length: this split was decoded
            out["bleu"] = bleu_from_stats(greedy)
        if beam[1] > 0:
            out["bleu_beam"] = bleu_from_stats(beam)
        return out

    # -- decoding --------------------------------------------------------------------------------

    def decode(
        self,
        model: nn.Module,
        src: Tensor,
        src_mask: Tensor,
        *,
        beam_size: int = 1,
        length_penalty: float | None = None,
    ) -> list[str]:
        """Translate a batch of encoded sources (B, S) into detokenised sentences (the model in eval mode)."""
        net = unwrap(model)
        alpha = self.opts["length_penalty"] if length_penalty is None else length_penalty
        ys = net.generate(
            src,
            src.shape[1] + EXTRA_TOKENS,
            BOS,
            EOS,
            beam_size=beam_size,
            src_key_padding_mask=src_mask,
            pad_id=PAD,
            length_penalty=alpha,
        )  # (B, 1 + L): <bos> tokens <eos> <pad> ...
        ids = []
        for row in ys[:, 1:].tolist():
            ids.append(row[: row.index(EOS)] if EOS in row else row)
        return self._tokenizer().decode_batch(ids, skip_special_tokens=True)

    def translate(
        self,
        model: nn.Module,
        sentences: Sequence[str],
        *,
        beam_size: int | None = None,
        length_penalty: float | None = None,
        batch_size: int = 64,
    ) -> list[str]:
        """Raw source sentences -> translations (``beam_size`` default: the run's ``--beam-size``)."""
        tokenizer = self._tokenizer()
        K = self.opts["beam_size"] if beam_size is None else beam_size
        device = next(unwrap(model).parameters()).device
        out: list[str] = []
        for start in range(0, len(sentences), batch_size):
            chunk = [e.ids + [EOS] for e in tokenizer.encode_batch(list(sentences[start : start + batch_size]))]
            S = max(map(len, chunk))
            src = torch.full((len(chunk), S), PAD, dtype=torch.long)
            mask = torch.ones(len(chunk), S, dtype=torch.bool)
            for i, s in enumerate(chunk):
                src[i, : len(s)] = torch.tensor(s)
                mask[i, : len(s)] = False
            with torch.no_grad():
                out += self.decode(model, src.to(device), mask.to(device), beam_size=K, length_penalty=length_penalty)
        return out

    def artefacts(self, model: nn.Module, folder: Path, tag: str) -> list[Path]:
        if "test" not in self.src:
            return []
        n = min(SAMPLES, self.size("test"))
        K = self.opts["beam_size"]
        greedy = self.translate(model, self.sources["test"][:n], beam_size=1)
        beam = self.translate(model, self.sources["test"][:n], beam_size=K) if K > 1 else greedy
        lines = [f"# {self.plan.model}, {self.source} -> {self.target}, {tag}: the first {n} test2016 sentences"]
        for i in range(n):
            lines += [
                "",
                f"source:    {self.sources['test'][i]}",
                f"reference: {self.refs['test'][i]}",
                f"greedy:    {greedy[i]}",
            ]
            if K > 1:
                lines.append(f"beam {K}:    {beam[i]}")
        path = Path(folder) / f"translations-{tag}.txt"
        atomic_write_text(path, "\n".join(lines) + "\n")
        return [path]
