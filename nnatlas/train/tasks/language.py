"""The language-model task: causal next-token prediction on a character stream (tinyshakespeare).

A model of this kind is a :class:`~nnatlas.models.generation.CausalLM` (GPT, the RNN language
models, Mamba): token ids (B, T) -> next-token logits (B, T, V). The data set gives two token
streams (``meta["train_ids"]``, ``meta["val_ids"]``: nanoGPT's 90/10 split of the text) and the
vocabulary (``meta["vocab"]``), whose size goes into the model's ``vocab_size``.

Windows of T tokens (T = the model's ``context_length``; ``--context`` for models without one,
default :data:`DEFAULT_CONTEXT`) are drawn as nanoGPT's ``get_batch``:

- training: every example is a window at a uniformly random offset of the training stream,
  drawn from the trainer's per-step ``generator`` (so a killed run resumes bitwise); the
  indices the trainer passes only say how many. One "epoch" is ``len(train_ids) // T``
  windows, as many characters as the training text holds; ``--limit-train`` shortens the
  epoch, the offsets still range over the whole stream;
- evaluation (the ``test`` split is nanoGPT's validation split, the last 10 % of the text):
  the WHOLE split in non-overlapping windows, so every validation character after the first is
  predicted exactly once. The first character of the stream is never a target (nothing comes
  before it). When the M = len(val_ids) - 1 targets do not fill whole windows, the last window
  is moved back to end at the stream's end (a full window of T, with more context than a short
  one) and only its last M mod T positions are scored (the batch's ``mask``); each window
  starts from an empty state, as nanoGPT's evaluation does.

Metrics (float64 sums: [loss sum over scored positions, positions]): ``loss`` in nats per
character, ``bpc`` = loss / ln 2 bits per character, ``ppl`` = exp(loss) the perplexity.

Artefacts: at each evaluation a text sample (:data:`SAMPLE_TOKENS` characters from the fixed
prompt ``"\\n"``, temperature :data:`SAMPLE_TEMPERATURE`, its own seeded generator) through
:func:`nnatlas.models.generation.generate`. :meth:`LanguageModelTask.inference` returns the
vocabulary and the window; :meth:`encode`/:meth:`decode` turn text into ids and back
(``nnatlas generate``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import nnatlas
from nnatlas.models.generation import generate
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

__all__ = ["LanguageModelTask", "DEFAULT_CONTEXT", "eval_windows"]

DEFAULT_CONTEXT = 128  # T for models without a context length (RNNs, Mamba): char-rnn-sized windows
SAMPLE_PROMPT = "\n"  # nanoGPT's sample.py starts from a newline
SAMPLE_TOKENS = 300
SAMPLE_TEMPERATURE = 0.8  # nanoGPT's sample.py
SAMPLE_SEED = 1337  # the same draws at every evaluation, so samples differ only by the weights


def eval_windows(n_ids: int, T: int) -> tuple[list[int], int]:
    """Where the evaluation windows of a stream of ``n_ids`` tokens start, and how many positions of
    the last one are scored (all T but for a partial last window; see the module docstring).

    Window i reads ids[s : s + T] and predicts ids[s + 1 : s + T + 1]; the targets 1 .. n_ids - 1
    are each scored exactly once.
    """
    M = n_ids - 1  # targets
    if M < 1:
        raise ValueError(f"a language-model split needs at least 2 tokens; got {n_ids}")
    T = min(T, M)
    full, rest = divmod(M, T)
    starts = [i * T for i in range(full)]
    if rest:
        starts.append(M - T)  # moved back to end at the stream's end; only the last `rest` positions count
    return starts, rest or T


@register_task
class LanguageModelTask(Task):
    """Causal next-token prediction on a token stream (see the module docstring)."""

    kind, best, mode = "language_model", "test_loss", "min"
    data_kinds = ("language_model",)
    eval_splits = ("test",)  # nanoGPT's validation split (the data set's test split)
    num_sums = 2
    options = {
        "context": Option(int, None, f"window length T (default: the model's context_length, else {DEFAULT_CONTEXT})",
                          check=positive_int, expect="an integer >= 1"),
    }

    def __init__(self, plan: Plan, bundle: Any | None, options: Mapping[str, Any]) -> None:
        super().__init__(plan, bundle, options)
        self.vocab: list[str] = list(plan.details["vocab"])
        self.stoi = {c: i for i, c in enumerate(self.vocab)}
        self.T: int = int(plan.details["context"])
        if bundle is not None:
            self.streams = {"train": bundle.meta["train_ids"].long(), "test": bundle.meta["val_ids"].long()}
            self.starts, self.last_scored = eval_windows(len(self.streams["test"]), self.T)

    # -- fitting ------------------------------------------------------------------------------

    @classmethod
    def fit(cls, model_name: str, bundle: Any, options: Mapping[str, Any], model_args: Mapping[str, Any]) -> tuple[Task, nn.Module]:
        where = f"model {model_name!r} on data set {bundle.name!r}"
        opts = {name: options.get(name, opt.default) for name, opt in cls.options.items()}
        fields = config_fields(model_name)
        check_model_args(model_name, fields, model_args)
        if "vocab_size" not in fields:
            raise ValueError(f"{where}: the model's config has no vocab_size; a language model needs one")
        vocab = list(bundle.meta["vocab"])
        overrides = {"vocab_size": len(vocab), **model_args}
        model = nnatlas.create(model_name, **overrides)
        V = getattr(model, "vocab_size", None)
        ctx = getattr(model, "context_length", "absent")
        if V is None or ctx == "absent" or not hasattr(model, "step"):
            raise ValueError(f"{where}: the model is not a CausalLM (vocab_size, context_length, init_state, step)")
        if V < len(vocab):
            raise ValueError(f"{where}: vocab_size={V} is smaller than the data's {len(vocab)} characters")
        T = opts["context"] or ctx or DEFAULT_CONTEXT
        if ctx is not None and T > ctx:
            raise ValueError(f"{where}: --context {T} is longer than the model's context_length {ctx}; "
                             f"give --model-arg context_length={T} or a shorter --context")
        plan = Plan(model=model_name, data=bundle.name, task=cls.kind, overrides=overrides,
                    details={"vocab": vocab, "context": int(T)})
        task = cls(plan, bundle, options)
        b = task.batch("test", torch.arange(min(2, task.size("test"))), device=torch.device("cpu"))
        out = probe(model, b["x"])
        if not isinstance(out, Tensor) or out.shape != (*b["x"].shape, V):
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"{where}: expected logits {(*b['x'].shape, V)}; the model gives {got}")
        return task, model

    # -- data ---------------------------------------------------------------------------------

    def _stream(self, split: str) -> Tensor:
        if self.bundle is None:
            raise ValueError("this language-model task was rebuilt without its data (nnatlas.load); pass bundle=")
        if split not in self.streams:
            raise ValueError(f"the language_model task has splits 'train' and 'test'; got {split!r}")
        return self.streams[split]

    def size(self, split: str) -> int:
        if split == "train":
            return max(1, (len(self._stream("train")) - 1) // self.T)
        self._stream(split)
        return len(self.starts)

    def batch(self, split: str, indices: Tensor, *, device: torch.device, generator: torch.Generator | None = None) -> Batch:
        """Windows x (B, T) and their next tokens y (B, T); ``mask`` (B, T) marks the scored targets.

        Training with a ``generator``: random offsets (nanoGPT's ``get_batch``); without one
        (the model report, fixed batches) the i-th non-overlapping window. Evaluation: the
        i-th window of :func:`eval_windows`.
        """
        ids = self._stream(split)
        B = len(indices)
        if split == "train":
            T = min(self.T, len(ids) - 1)
            if generator is not None:
                starts = torch.randint(0, len(ids) - T, (B,), generator=generator)  # (B,) uniform offsets
            else:
                starts = (indices.long() * T) % (len(ids) - T)
            mask = None
        else:
            T = min(self.T, len(ids) - 1)
            starts = torch.as_tensor([self.starts[int(i)] for i in indices], dtype=torch.long)
            mask = torch.ones(B, T, dtype=torch.bool)
            if self.last_scored < T:
                last = indices.long() == len(self.starts) - 1
                mask[last, : T - self.last_scored] = False  # targets the previous window already scored
        pos = starts[:, None] + torch.arange(T)  # (B, T)
        out = {"x": ids[pos].to(device, non_blocking=True), "y": ids[pos + 1].to(device, non_blocking=True)}
        if mask is not None:
            out["mask"] = mask.to(device)
        return out

    def report_input(self, device: torch.device) -> Any:
        return self.batch("train", torch.arange(2), device=device)["x"]

    # -- loss and metrics -----------------------------------------------------------------------

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        logits = model(batch["x"])  # (B, T, V)
        return F.cross_entropy(logits.flatten(0, 1).float(), batch["y"].flatten())  # mean nats per target

    def sums(self, model: nn.Module, batch: Batch) -> Tensor:
        logits = model(batch["x"])  # (B, T, V)
        nll = F.cross_entropy(logits.flatten(0, 1).float(), batch["y"].flatten(), reduction="none")  # (B*T,)
        mask = batch.get("mask")
        if mask is not None:
            nll = nll[mask.flatten()]
        return torch.stack([nll.double().sum(), torch.tensor(float(nll.numel()), dtype=torch.float64, device=nll.device)])

    def metrics(self, sums: Tensor) -> dict[str, float]:
        total, n = sums.tolist()
        loss = total / n if n else math.nan
        return {"loss": loss, "bpc": loss / math.log(2), "ppl": math.exp(loss) if loss < 700 else math.inf}

    # -- text, samples, inference ---------------------------------------------------------------

    def encode(self, text: str) -> Tensor:
        """Text -> token ids (1, len(text)); a character outside the vocabulary is a ``ValueError``."""
        missing = sorted({c for c in text if c not in self.stoi})
        if missing:
            raise ValueError(f"the prompt has characters outside the run's vocabulary of {len(self.vocab)}: {''.join(missing)!r}")
        return torch.tensor([[self.stoi[c] for c in text]], dtype=torch.long)

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        """Token ids -> text."""
        return "".join(self.vocab[int(i)] for i in ids)

    def sample(self, model: nn.Module, prompt: str, tokens: int, *, temperature: float = 1.0, top_k: int | None = None,
               seed: int = 0) -> str:
        """``prompt`` and ``tokens`` generated characters (the model in eval mode)."""
        device = next(model.parameters()).device
        gen = torch.Generator(device=device).manual_seed(seed)
        ids = generate(model, self.encode(prompt).to(device), tokens, temperature=temperature, top_k=top_k, generator=gen)
        return self.decode(ids[0].tolist())

    def artefacts(self, model: nn.Module, folder: Path, tag: str) -> list[Path]:
        prompt = SAMPLE_PROMPT if SAMPLE_PROMPT in self.stoi else self.vocab[0]
        text = self.sample(model, prompt, SAMPLE_TOKENS, temperature=SAMPLE_TEMPERATURE, seed=SAMPLE_SEED)
        path = folder / "samples" / f"{tag}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return [path]

    def inference(self) -> dict[str, Any]:
        return {"vocab": self.vocab, "context": self.T}
