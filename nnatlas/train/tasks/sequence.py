"""Sequence classification: one label per sequence (``rnn``, ``lstm``, ``gru``, ``char_rnn``).

Two kinds of data, two ways of making sequences (the plan's ``details["mode"]``):

- ``"rows"`` (image classification sets: ``digits``, ``mnist`` ...): an image is read row by row,
  as seed 004's classifiers read MNIST: ``T = H`` steps of ``F = C*W`` pixels (28 x 28 on MNIST,
  8 x 8 on ``digits``); the model's input size follows the data (``input_size`` or ``n_letters``
  in its config), pixels are normalised with the training split's mean and std.
- ``"letters"`` (``names``): a name is a sequence of one-hot characters over the data set's
  alphabet (its training names' characters, plus one slot for a character the training names
  never had), ``F = K + 1``. Names differ in length: a batch is **padded** to its longest name
  (zero vectors after the end) and the model gets the **lengths** too, ``model(x, lengths)``,
  and returns, for each name, the output of its own last letter (no packing: the cell loop runs
  to the longest name of the batch and each name's output is taken at ``t = length - 1``).

Training draws examples as the trainer's shuffled order says, or, with ``--balanced`` (the default
for ``names``; ``--no-balanced`` turns it off), as the PyTorch tutorial does: for each example of a
batch a class uniformly, then one of its training examples uniformly (from the step's
``generator``, so a killed run resumes bitwise; the whole training split, ``--limit-train`` aside).
``names`` is 47 % Russian and 0.4 % Vietnamese: the shuffled order learns the large classes, the
balanced draw every class (compare ``acc`` and ``macro_acc``).

The loss is cross entropy on the model's output (``char_rnn`` returns log-probabilities;
``log_softmax`` is idempotent, so cross entropy equals the seed's NLL loss on them).

Metrics (float64 sums; the confusion matrix rides along so ranks combine it with one
``all_reduce``): ``loss``, ``acc``, ``macro_acc`` (the mean over classes of each class's
accuracy, i.e. recall; the classes of ``names`` are very unequal: 9,408 Russian, 73 Vietnamese).
Each evaluation writes ``confusion-<tag>.png`` (rows: the true class, normalised; each class's
accuracy beside its name) and ``per-class-<tag>.json`` (per-class accuracy and the raw matrix).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import nnatlas
from nnatlas.train.tasks.base import (
    Batch,
    Option,
    Plan,
    Task,
    check_model_args,
    config_fields,
    probe,
    register_task,
    unwrap,
)
from nnatlas.train.tasks.vision import gather

__all__ = ["SequenceClassificationTask", "confusion_metrics", "plot_confusion"]

NORM_SAMPLES = 4096  # pixel statistics come from the first training images
INPUT_FIELDS = ("input_size", "n_letters")  # the config field that holds F, by family
CLASS_FIELDS = ("num_classes", "n_categories")  # the config field that holds C


def _takes_lengths(model: nn.Module) -> bool:
    return "lengths" in inspect.signature(unwrap(model).forward).parameters


def confusion_metrics(sums: Tensor, num_classes: int) -> tuple[dict[str, float], Tensor]:
    """``loss``, ``acc``, ``macro_acc`` and the confusion matrix ``(C, C)`` (rows true, columns predicted)
    from the sum vector ``[loss, correct, n, confusion...]``."""
    sums = sums.detach().double().cpu()
    loss, correct, n = sums[:3].tolist()
    confusion = sums[3:].reshape(num_classes, num_classes)
    per_class = confusion.diagonal() / confusion.sum(1)  # NaN for a class without examples
    present = per_class[~per_class.isnan()]
    metrics = {
        "loss": loss / n,
        "acc": correct / n,
        "macro_acc": float(present.mean()) if len(present) else float("nan"),
    }
    return metrics, confusion


def plot_confusion(confusion: Tensor, classes: list[str], path: Path, title: str) -> None:
    """The confusion matrix, each row normalised (true class), as a PNG; each class's accuracy beside its name."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    C = len(classes)
    rows = confusion.double()
    norm = rows / rows.sum(1, keepdim=True).clamp_min(1)
    side = max(4.0, 0.38 * C + 2.0)
    fig = Figure(figsize=(side + 1.2, side), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    im = ax.imshow(norm.numpy(), cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    acc = [f"{name} ({norm[i, i]:.2f})" if rows[i].sum() > 0 else f"{name} (-)" for i, name in enumerate(classes)]
    ax.set_xticks(range(C), classes, rotation=90, fontsize=8)
    ax.set_yticks(range(C), acc, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (its accuracy)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, format="png")


@register_task
class SequenceClassificationTask(Task):
    """Image rows or one-hot letters in, one label out (see the module docstring)."""

    kind = "sequence_classification"
    data_kinds = ("classification", "sequence_classification")
    best, mode = "test_acc", "max"
    options = {
        "balanced": Option(
            bool,
            None,
            "training draws a class uniformly, then one of its examples (the PyTorch "
            "tutorial's sampling); default: on for names (letters), off for images (rows)",
        )
    }

    def __init__(self, plan: Plan, bundle: Any | None, options: Mapping[str, Any]) -> None:
        super().__init__(plan, bundle, options)
        d = plan.details
        self.rows = d["mode"] == "rows"
        self.classes: list[str] = list(d["classes"])
        self.num_classes = len(self.classes)
        self.num_sums = 3 + self.num_classes**2
        self.confusion: Tensor | None = None  # the last scored split's (the trainer scores test)
        balanced = self.opts["balanced"]
        self.balanced = (not self.rows) if balanced is None else bool(balanced)
        self._by_class: tuple[Tensor, Tensor, Tensor] | None = None  # (example indices sorted by class, starts, counts)

    # -- fitting ------------------------------------------------------------------------------

    @classmethod
    def check_card(cls, card: nnatlas.ModelCard, data: Any) -> None:
        if len(card.input_shape) != 2:
            raise ValueError(
                f"model {card.name!r} takes inputs {card.input_shape}; "
                "the sequence_classification task feeds (T, F) sequences"
            )

    @classmethod
    def fit(
        cls, model_name: str, bundle: Any, options: Mapping[str, Any], model_args: Mapping[str, Any]
    ) -> tuple[Task, nn.Module]:
        where = f"model {model_name!r} on data set {bundle.name!r}"
        cls.check_card(nnatlas.card(model_name), bundle)
        fields = config_fields(model_name)
        check_model_args(model_name, fields, model_args)
        input_field = next((f for f in INPUT_FIELDS if f in fields), None)
        class_field = next((f for f in CLASS_FIELDS if f in fields), None)
        if input_field is None or class_field is None:
            raise ValueError(
                f"{where}: the model's config names no input size ({'/'.join(INPUT_FIELDS)}) "
                f"or class count ({'/'.join(CLASS_FIELDS)})"
            )
        C = int(bundle.num_classes or 0)
        classes = [str(c) for c in bundle.meta.get("classes", range(C))]
        if C < 2 or len(classes) != C:
            raise ValueError(
                f"{where}: expected a classification set with num_classes >= 2 and one name per class; got {C}"
            )
        if bundle.task == "sequence_classification":
            if "alphabet" not in bundle.meta:
                raise ValueError(
                    f"{where}: a sequence_classification set gives meta['alphabet'] (its characters); this one does not"
                )
            alphabet = bundle.meta["alphabet"]
            details: dict[str, Any] = {
                "mode": "letters",
                "alphabet": alphabet,
                "features": len(alphabet) + 1,
                "classes": classes,
            }
        else:
            x0, _ = gather(bundle.train, torch.arange(min(NORM_SAMPLES, len(bundle.train))))
            if x0.dim() == 3:  # (N, H, W) grey images
                x0 = x0.unsqueeze(1)
            if x0.dim() != 4:
                raise ValueError(f"{where}: the task reads images row by row; the data set gives {tuple(x0.shape[1:])}")
            _, Ch, H, W = x0.shape
            x0 = x0.double()
            details = {
                "mode": "rows",
                "channels": Ch,
                "height": H,
                "width": W,
                "features": Ch * W,
                "mean": float(x0.mean()),
                "std": float(x0.std().clamp_min(1e-6)),
                "classes": classes,
            }
        overrides = {input_field: details["features"], class_field: C, **model_args}
        plan = Plan(model=model_name, data=bundle.name, task=cls.kind, overrides=overrides, details=details)
        model = nnatlas.create(model_name, **overrides)
        task = cls(plan, bundle, options)
        if not task.rows and not _takes_lengths(model):
            raise ValueError(f"{where}: names differ in length and the model's forward takes no lengths")
        batch = task.batch("train", torch.arange(min(2, task.size("train"))), device=torch.device("cpu"))
        out = probe(model, *task._inputs(batch))
        if out.dim() != 2 or out.shape[1] != C:
            raise ValueError(f"{where}: expected logits (B, {C}) for {C} classes; the model gives {tuple(out.shape)}")
        return task, model

    # -- data ---------------------------------------------------------------------------------

    def batch(
        self, split: str, indices: Tensor, *, device: torch.device, generator: torch.Generator | None = None
    ) -> Batch:
        """``x`` (B, T, F), ``y`` (B,), and ``lengths`` (B,) for letters; no randomness (``generator`` unused)."""
        if split == "train" and generator is not None and self.balanced:
            indices = self.balanced_draw(len(indices), generator)
        x, y = gather(getattr(self.bundle, split), indices)
        y = y.long().reshape(-1).to(device)
        if self.rows:
            return {"x": self.rows_of(x.to(device)), "y": y}
        x, lengths = self.letters_of(x)
        return {"x": x.to(device), "lengths": lengths.to(device), "y": y}

    def balanced_draw(self, n: int, generator: torch.Generator) -> Tensor:
        """``n`` training indices: a class uniformly (among those with examples), then one of its examples uniformly."""
        if self._by_class is None:
            _, y = gather(self.bundle.train, torch.arange(len(self.bundle.train)))
            order = torch.argsort(y.long().reshape(-1), stable=True)  # example indices grouped by class
            counts = torch.bincount(y.long().reshape(-1), minlength=self.num_classes)
            starts = torch.cumsum(counts, 0) - counts
            present = counts > 0
            self._by_class = (order, starts[present], counts[present])
        order, starts, counts = self._by_class
        c = torch.randint(len(counts), (n,), generator=generator)  # (n,) classes
        r = torch.rand(n, generator=generator, dtype=torch.float64)
        return order[
            starts[c] + (r * counts[c]).long().clamp_max(counts[c] - 1)
        ]  # (n,) one example of each drawn class

    def rows_of(self, images: Tensor) -> Tensor:
        """Images (B, C, H, W) or (B, H, W) -> normalised row sequences (B, T = H, F = C*W)."""
        d = self.plan.details
        x = images.float()
        if x.dim() == 3:
            x = x.unsqueeze(1)  # (B, 1, H, W)
        B, C, H, W = x.shape
        x = (x - d["mean"]) / d["std"]
        return x.permute(0, 2, 1, 3).reshape(B, H, C * W)  # row h: the C*W pixels of every channel

    def letters_of(self, codes: Tensor) -> tuple[Tensor, Tensor]:
        """Padded codes (B, L) (0 pad, 1..K letters, K+1 unknown) -> one-hot (B, T, K+1), T the longest name
        of the batch (zero vectors after each name's end), and lengths (B,)."""
        lengths = (codes != 0).sum(1)  # (B,)
        T = max(1, int(lengths.max()))
        codes = codes[:, :T]  # (B, T)
        x = F.one_hot((codes - 1).clamp_min(0), self.plan.details["features"]).float()  # (B, T, K+1)
        return x * (codes != 0).unsqueeze(-1), lengths  # padding -> zero vectors

    def encode(self, names: list[str]) -> tuple[Tensor, Tensor]:
        """Strings -> (one-hot (B, T, K+1), lengths (B,)) over the run's alphabet (``nnatlas.load`` users)."""
        index = {c: i + 1 for i, c in enumerate(self.plan.details["alphabet"])}
        unknown = len(index) + 1
        L = max(1, max(len(n) for n in names))
        codes = torch.zeros(len(names), L, dtype=torch.int64)
        for i, name in enumerate(names):
            codes[i, : len(name)] = torch.tensor([index.get(c, unknown) for c in name], dtype=torch.int64)
        return self.letters_of(codes)

    def report_input(self, device: torch.device) -> Any:
        return self.batch("train", torch.arange(min(2, self.size("train"))), device=device)["x"]

    # -- model, loss, metrics -------------------------------------------------------------------

    def _inputs(self, batch: Batch) -> tuple[Tensor, ...]:
        return (batch["x"],) if self.rows else (batch["x"], batch["lengths"])

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        return F.cross_entropy(model(*self._inputs(batch)).float(), batch["y"])

    def sums(self, model: nn.Module, batch: Batch) -> Tensor:
        logits = model(*self._inputs(batch)).float()  # (B, C)
        y = batch["y"]
        pred = logits.argmax(1)
        C = self.num_classes
        confusion = torch.bincount(y * C + pred, minlength=C * C).double()  # (C*C,): row true, column predicted
        loss = F.cross_entropy(logits, y, reduction="sum").double()
        head = torch.stack(
            [loss, (pred == y).sum().double(), torch.tensor(float(len(y)), dtype=torch.float64, device=y.device)]
        )
        return torch.cat([head, confusion])

    def metrics(self, sums: Tensor) -> dict[str, float]:
        metrics, self.confusion = confusion_metrics(sums, self.num_classes)
        return metrics

    # -- artefacts and inference ----------------------------------------------------------------

    def artefacts(self, model: nn.Module, folder: Path, tag: str) -> list[Path]:
        """The last evaluation's confusion matrix (the test split's) as a PNG and per-class accuracies as JSON."""
        if self.confusion is None:
            return []
        confusion = self.confusion
        totals = confusion.sum(1)
        per_class = {
            c: (float(confusion[i, i] / totals[i]) if totals[i] > 0 else None) for i, c in enumerate(self.classes)
        }
        acc = float(confusion.diagonal().sum() / confusion.sum())
        png, js = folder / f"confusion-{tag}.png", folder / f"per-class-{tag}.json"
        plot_confusion(
            confusion,
            self.classes,
            png,
            f"{self.plan.model} on {self.plan.data}: accuracy {acc:.3f} ({int(confusion.sum())} examples)",
        )
        doc = {
            "accuracy": acc,
            "per_class_accuracy": per_class,
            "support": {c: int(t) for c, t in zip(self.classes, totals)},
            "classes": self.classes,
            "confusion": confusion.long().tolist(),
        }
        js.write_text(json.dumps(doc, indent=1) + "\n")
        return [png, js]

    def inference(self) -> dict[str, Any]:
        d = dict(self.plan.details)
        how = (
            "images (B, C, H, W) -> task.rows_of(x) -> (B, H, C*W)"
            if self.rows
            else "names -> task.encode(names) -> model(x, lengths)"
        )
        return {**d, "input": how}
