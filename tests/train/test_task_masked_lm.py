"""The masked_lm task: accuracy on predicted positions only, BERT's 15 % and 80/10/10 on a large sample,
fixed evaluation masks, the model under its masked-LM head, a SIGKILLed run resumed bitwise."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch.utils.data import TensorDataset

import nnatlas
from nnatlas.data.bundle import DataBundle
from nnatlas.models.bert import BertForMaskedLM
from nnatlas.train.checkpoint import load_checkpoint
from nnatlas.train.tasks.masked_lm import CLS, IGNORE, MASK, PAD, SEP, SPECIALS, MaskedLMTask, mask_tokens, mlm_sums
from kill_resume import kill_after_first_checkpoint, subprocess_env

TINY = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64}
EN = [
    "A man rides a bicycle down the street.",
    "Two dogs are playing in the snow.",
    "A woman reads a book while it is raining.",
    "Children play soccer on a green meadow.",
    "An elderly gentleman wears a blue hat.",
    "A girl eats an ice cream.",
    "Three men work on a construction site.",
    "The dog jumps over the fence.",
] * 4


def _bundle() -> DataBundle:
    sentences = {
        "train": {"en": EN, "de": EN},
        "val": {"en": EN[:4], "de": EN[:4]},
        "test_2016_flickr": {"en": EN[:8], "de": EN[:8]},
    }
    empty = TensorDataset(torch.zeros(1, 1), torch.zeros(1, 1))
    return DataBundle(
        name="multi30k",
        task="translation",
        train=empty,
        test=empty,
        num_classes=None,
        input_shape=(1,),
        meta={"sentences": sentences},
    )


def test_masked_accuracy_counts_predicted_positions_only() -> None:
    V = 6
    logits = torch.full((1, 4, V), -5.0)
    logits[0, 0, 2] = logits[0, 1, 3] = logits[0, 2, 4] = logits[0, 3, 5] = 5.0  # argmax 2, 3, 4, 5
    labels = torch.tensor(
        [[2, IGNORE, 1, IGNORE]]
    )  # position 0 right, 2 wrong; 1 and 3 (argmax != anything) not predicted
    loss, correct, n = mlm_sums(logits, labels).tolist()
    assert (correct, n) == (1.0, 2.0)
    expected = F.cross_entropy(logits[0, [0, 2]], torch.tensor([2, 1]), reduction="sum")
    assert loss == pytest.approx(expected.item(), rel=1e-6)
    task = MaskedLMTask.__new__(MaskedLMTask)
    assert task.metrics(mlm_sums(logits, labels))["acc"] == 0.5
    # Predicting the unpredicted positions right or wrong changes nothing.
    logits[0, 1] = logits[0, 3] = 0.0
    assert mlm_sums(logits, labels)[1:].tolist() == [1.0, 2.0]


def test_bert_masking_proportions_on_a_large_sample() -> None:
    g = torch.Generator().manual_seed(0)
    V, B, T = 1000, 4000, 64
    ids = torch.randint(len(SPECIALS), V, (B, T), generator=g)
    lengths = torch.randint(3, T + 1, (B,), generator=g)
    ids[torch.arange(T)[None, :] >= lengths[:, None]] = PAD
    ids[:, 0] = CLS
    ids[torch.arange(B), lengths - 1] = SEP
    maskable = ids >= len(SPECIALS)
    inputs, labels = mask_tokens(ids, maskable, torch.Generator().manual_seed(1), V)
    chosen = labels != IGNORE
    assert not (chosen & ~maskable).any()  # never [CLS], [SEP] or padding
    assert torch.equal(labels[chosen], ids[chosen]) and torch.equal(inputs[~chosen], ids[~chosen])
    n = maskable.sum(1)
    assert torch.equal(
        chosen.sum(1), (n.double() * 0.15).round().long().clamp_min(1)
    )  # 15 % of each sequence, at least one
    masked = (inputs == MASK) & chosen
    kept = (inputs == ids) & chosen
    replaced = chosen & ~masked & ~kept
    total = chosen.sum().item()
    assert total > 15_000  # the tolerances below are > 3 standard deviations of these shares
    # 80 / 10 / 10; a random token equals the original with probability 1 / (V - 5): counted as kept.
    assert masked.sum().item() / total == pytest.approx(0.8, abs=0.01)
    assert replaced.sum().item() / total == pytest.approx(0.1 * (1 - 1 / (V - 5)), abs=0.008)
    assert kept.sum().item() / total == pytest.approx(0.1 + 0.1 / (V - 5), abs=0.008)
    assert (inputs[replaced] >= len(SPECIALS)).all()  # random tokens are never special
    again = mask_tokens(ids, maskable, torch.Generator().manual_seed(1), V)
    assert torch.equal(again[0], inputs) and torch.equal(again[1], labels)


def test_task_batches_fixed_evaluation_masks_and_the_model_under_its_head() -> None:
    torch.manual_seed(0)
    task, model = MaskedLMTask.fit("bert_tiny", _bundle(), {"wordpiece_vocab": 200, "seq_len": 16}, TINY)
    assert isinstance(model, BertForMaskedLM) and model.config.vocab_size == task.tokenizer.get_vocab_size()
    assert task.size("train") == len(EN) and task.size("test") == 8
    b = task.batch("test", torch.arange(4), device=torch.device("cpu"))
    again = task.batch("test", torch.arange(4), device=torch.device("cpu"))
    assert all(torch.equal(b[k], again[k]) for k in b)  # every evaluation scores the same positions
    assert (b["input_ids"][:, 0] == CLS).all() and b["input_ids"].shape[1] <= 16
    assert torch.equal(b["attention_mask"], (b["input_ids"] != PAD).long())
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    t1 = task.batch("train", torch.arange(8), device=torch.device("cpu"), generator=g1)
    t2 = task.batch("train", torch.arange(8), device=torch.device("cpu"), generator=g2)
    assert all(torch.equal(t1[k], t2[k]) for k in t1)  # training masks come from the trainer's generator alone
    # The task's sums equal the full-logit computation restricted to predicted positions.
    model.eval()
    with torch.no_grad():
        full = model(b["input_ids"], b["attention_mask"])  # (B, T, V)
        sums = task.sums(model, b)
    torch.testing.assert_close(sums, mlm_sums(full, b["labels"]), rtol=1e-5, atol=1e-4)  # float32 head on fewer rows


def test_options_and_model_args_are_checked() -> None:
    with pytest.raises(ValueError, match="--wordpiece-vocab"):
        MaskedLMTask.fit("bert_tiny", _bundle(), {}, {**TINY, "vocab_size": 100})
    with pytest.raises(ValueError, match="exceeds the model's 512 positions"):
        MaskedLMTask.fit("bert_tiny", _bundle(), {"seq_len": 600}, TINY)
    with pytest.raises(ValueError, match="seq-len must be an integer >= 3"):
        MaskedLMTask.options["seq_len"].validate("seq_len", 2)


def _env() -> dict[str, str]:
    return {**subprocess_env(), "TOKENIZERS_PARALLELISM": "false"}


def test_run_killed_and_resumed_equals_uninterrupted_run_bitwise(tmp_path: Path, shared_data: Path) -> None:
    """bert_tiny (dropout on, random masks) on tinyshakespeare: SIGKILL after a mid-run checkpoint, --resume, same weights."""
    model_args = [a for k, v in TINY.items() for a in ("--model-arg", f"{k}={v}")]
    args = [
        "train",
        "bert_tiny",
        "--data-dir",
        str(shared_data),
        *model_args,
        "--wordpiece-vocab",
        "500",
        "--seq-len",
        "32",
        "--steps",
        "16",
        "--eval-every",
        "8",
        "--batch-size",
        "8",
        "--limit-train",
        "96",
        "--limit-test",
        "16",
        "--checkpoint-every",
        "2",
        "--seed",
        "2",
        "--threads",
        "1",
        "--no-report",
        "--no-progress",
    ]
    cmd = [sys.executable, "-m", "nnatlas", *args]
    ref = subprocess.run(
        [*cmd, "--out", str(tmp_path / "ref")], env=_env(), capture_output=True, text=True, timeout=300
    )
    assert ref.returncode == 0, ref.stderr

    killed = tmp_path / "killed"
    kill_after_first_checkpoint(cmd, killed, _env())
    assert not (killed / "final.json").exists(), "the run finished before it was killed"
    assert 0 < load_checkpoint(killed, model_name="bert_tiny").state["global_step"] < 16
    resumed = subprocess.run(
        [*cmd, "--out", str(killed), "--resume"], env=_env(), capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr

    a, b = load_file(tmp_path / "ref" / "last.safetensors"), load_file(killed / "last.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows = lambda run: [
        {k: v for k, v in json.loads(line).items() if k != "time_s"}
        for line in (run / "metrics.jsonl").read_text().splitlines()
    ]
    assert rows(tmp_path / "ref") == rows(killed) and len(rows(killed)) == 2
    assert {"test_loss", "test_ppl", "test_acc"} <= set(rows(killed)[-1])
    fills = sorted((killed / "artefacts").glob("fill-*.txt"))
    assert len(fills) == 2 and "[CLS]" in fills[-1].read_text()
    trained = nnatlas.load(killed)
    assert isinstance(trained.model, BertForMaskedLM) and trained.inference["mask_id"] == MASK
