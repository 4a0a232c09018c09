"""The translation task: BPE round trip, BLEU from summed statistics equal to sacrebleu's after our
detokenisation, batches and masks, option checks, a SIGKILLed run resumed bitwise, ``nnatlas translate``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import sacrebleu
import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import TensorDataset

import nnatlas
from nnatlas.cli import main
from nnatlas.data.bundle import DataBundle
from nnatlas.train.checkpoint import load_checkpoint
from nnatlas.train.tasks import subword
from nnatlas.train.tasks.translation import (
    BOS,
    EOS,
    IGNORE,
    PAD,
    SPECIALS,
    TranslationTask,
    bleu_from_stats,
    bleu_stats,
)
from kill_resume import kill_after_first_checkpoint, subprocess_env

# A tiny parallel corpus (German -> English), with casing, punctuation, umlauts and a hyphen.
DE = [
    "Ein Mann fährt Fahrrad.",
    "Zwei Hunde spielen im Schnee.",
    "Eine Frau liest ein Buch, während es regnet.",
    "Kinder spielen Fußball auf einer grünen Wiese.",
    "Ein älterer Herr trägt einen blauen Hut.",
    "Ein Mädchen isst ein Eis.",
    "Drei Männer arbeiten auf einer Baustelle.",
    "Der Hund springt über den Zaun.",
]
EN = [
    "A man rides a bicycle.",
    "Two dogs are playing in the snow.",
    "A woman reads a book while it is raining.",
    "Children play soccer on a green meadow.",
    "An elderly gentleman wears a blue hat.",
    "A girl eats an ice-cream.",
    "Three men work on a construction site.",
    "The dog jumps over the fence.",
]
# Hypotheses for BLEU: partly right, reordered, a missing word, an empty one.
HYP = [
    "A man rides a bike.",
    "Two dogs play in snow.",
    "A woman is reading a book, while it rains.",
    "Children play football on a green field.",
    "An old man wears a blue hat.",
    "",
    "Three men work on a building site.",
    "The dog jumps over the fence.",
]
TINY = {"d_model": 32, "num_heads": 2, "num_encoder_layers": 1, "num_decoder_layers": 1, "dim_feedforward": 64}


def _bundle() -> DataBundle:
    splits = {"train": (DE, EN), "val": (DE[:4], EN[:4]), "test_2016_flickr": (DE, EN)}
    sentences = {stem: {"de": de, "en": en} for stem, (de, en) in splits.items()}
    empty = TensorDataset(torch.zeros(len(DE), 1), torch.zeros(len(DE), 1))
    return DataBundle(
        name="multi30k",
        task="translation",
        train=empty,
        test=empty,
        num_classes=None,
        input_shape=(1,),
        meta={"sentences": sentences},
    )


def test_byte_level_bpe_decodes_every_sentence_back_exactly() -> None:
    tok = subword.train_bpe(DE + EN, 300, SPECIALS)
    assert [tok.token_to_id(s) for s in SPECIALS] == [PAD, BOS, EOS]
    unseen = ["Ünïcödé — «Zitat» 3,5 km/h!", "  two  spaces ", "Tab\tand\nnewline"]
    for s in DE + EN + HYP + unseen:
        assert tok.decode(tok.encode(s).ids) == s


def test_bleu_from_summed_statistics_equals_sacrebleu_corpus_bleu() -> None:
    ref = sacrebleu.corpus_bleu(HYP, [EN]).score
    assert 10 < ref < 90  # a corpus that exercises every n-gram order, the brevity penalty and smoothing
    sums = bleu_stats(HYP[:3], EN[:3]) + bleu_stats(HYP[3:], EN[3:])  # two batches
    assert bleu_from_stats(sums) == pytest.approx(ref, abs=1e-9)
    assert bleu_from_stats(bleu_stats(EN, EN)) == pytest.approx(100.0)


class _Oracle(nn.Module):
    """A stand-in translation model: ``generate`` returns fixed token ids for each source sentence."""

    def __init__(self, outputs: dict[tuple[int, ...], list[int]], vocab: int) -> None:
        super().__init__()
        self.outputs, self.vocab = outputs, vocab
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, src: torch.Tensor, tgt: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return torch.zeros(*tgt.shape, self.vocab) + self.w

    def generate(
        self, src, max_len, bos_id, eos_id, beam_size=1, src_key_padding_mask=None, pad_id=None, *, length_penalty=0.0
    ):
        rows = []
        for ids, pad in zip(src.tolist(), src_key_padding_mask.tolist()):
            key = tuple(i for i, p in zip(ids, pad) if not p)
            rows.append([bos_id, *self.outputs[key], eos_id])
        T = max(map(len, rows))
        return torch.tensor([r + [pad_id] * (T - len(r)) for r in rows])


def test_task_bleu_through_decoding_equals_sacrebleu_after_detokenisation() -> None:
    """Hypotheses go through the whole path: ids from generate -> cut at <eos> -> decoded -> statistics summed over batches."""
    torch.manual_seed(0)
    task, _ = TranslationTask.fit("transformer_tiny", _bundle(), {"beam_size": 2}, {**TINY, "vocab_size": 300})
    tok = task.tokenizer
    outputs = {tuple(src): tok.encode(h).ids for src, h in zip(task.src["test"], HYP)}
    oracle = _Oracle(outputs, tok.get_vocab_size())
    sums = sum(
        task.sums(oracle, task.batch("test", idx, device=torch.device("cpu")))
        for idx in torch.arange(len(HYP)).split(3)
    )
    m = task.metrics(sums)
    ref = sacrebleu.corpus_bleu(HYP, [EN]).score
    assert m["bleu"] == pytest.approx(ref, abs=1e-9) and m["bleu_beam"] == pytest.approx(ref, abs=1e-9)
    val = task.metrics(task.sums(oracle, task.batch("val", torch.arange(4), device=torch.device("cpu"))))
    assert "bleu" not in val and set(val) == {"loss", "ppl", "acc"}  # val is scored without decoding


def test_batches_pad_and_mask_and_shift() -> None:
    torch.manual_seed(0)
    task, model = TranslationTask.fit("transformer_tiny", _bundle(), {}, {**TINY, "vocab_size": 300})
    b = task.batch("train", torch.tensor([5, 2]), device=torch.device("cpu"))
    src_lens = [len(task.src["train"][i]) for i in (5, 2)]
    tgt = [task.tgt["train"][i] for i in (5, 2)]
    assert b["src_mask"].tolist() == [[j >= n for j in range(b["src"].shape[1])] for n in src_lens]
    assert (b["src"][b["src_mask"]] == PAD).all() and all(b["src"][i, n - 1] == EOS for i, n in enumerate(src_lens))
    for i, t in enumerate(tgt):
        assert b["tgt_in"][i, : len(t) - 1].tolist() == t[:-1] and t[0] == BOS
        assert b["tgt_out"][i, : len(t) - 1].tolist() == t[1:] and (b["tgt_out"][i, len(t) - 1 :] == IGNORE).all()
    assert task.plan.overrides["vocab_size"] == task.tokenizer.get_vocab_size() == model.config.vocab_size <= 300
    # Padding does not change a sentence's logits: the short sentence alone and padded in a batch agree.
    model.eval()
    alone = task.batch("train", torch.tensor([5]), device=torch.device("cpu"))
    with torch.no_grad():
        a = model(alone["src"], alone["tgt_in"], alone["src_mask"])[0]
        p = model(b["src"], b["tgt_in"], b["src_mask"])[0, : a.shape[0]]
    torch.testing.assert_close(p, a, rtol=1e-5, atol=1e-5)  # float32 reassociation only


def test_options_and_model_args_are_checked() -> None:
    with pytest.raises(ValueError, match="config has no such field"):
        TranslationTask.fit("transformer_tiny", _bundle(), {}, {**TINY, "vocab": 300})
    with pytest.raises(ValueError, match="translation task needs a config field vocab_size"):
        TranslationTask.fit("lenet", _bundle(), {}, {})
    with pytest.raises(ValueError, match="de-en or en-de"):
        TranslationTask.options["direction"].validate("direction", "fr-en")
    with pytest.raises(ValueError, match="label-smoothing"):
        TranslationTask.options["label_smoothing"].validate("label_smoothing", 1.0)


def _env() -> dict[str, str]:
    return {**subprocess_env(), "TOKENIZERS_PARALLELISM": "false"}


def test_run_killed_and_resumed_equals_uninterrupted_run_bitwise_then_translates(
    tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """transformer_tiny (dropout on) on Multi30k: SIGKILL after a mid-run checkpoint, --resume, same weights bit for bit."""
    model_args = [a for k, v in TINY.items() for a in ("--model-arg", f"{k}={v}")]
    args = [
        "train",
        "transformer_tiny",
        "--data-dir",
        str(shared_data),
        *model_args,
        "--model-arg",
        "vocab_size=500",
        "--beam-size",
        "2",
        "--steps",
        "16",
        "--batch-size",
        "8",
        "--limit-train",
        "96",
        "--limit-test",
        "8",
        "--checkpoint-every",
        "2",
        "--seed",
        "5",
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
    assert 0 < load_checkpoint(killed, model_name="transformer_tiny").state["global_step"] < 16
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
    assert rows(tmp_path / "ref") == rows(killed)
    assert {"val_loss", "test_bleu", "test_bleu_beam"} <= set(rows(killed)[-1])
    assert (killed / "tokenizer.json").read_bytes() == (tmp_path / "ref" / "tokenizer.json").read_bytes()
    translations = list((killed / "artefacts").glob("translations-*.txt"))
    assert translations and "reference: A man in an orange hat starring at something." in translations[0].read_text()

    # nnatlas.load and nnatlas translate: what the task decodes is what the command prints.
    trained = nnatlas.load(killed)
    expected = trained.task.translate(trained.model, ["Ein Hund läuft.", "Zwei Männer."], beam_size=2)
    assert main(["translate", str(killed), "Ein Hund läuft.", "Zwei Männer.", "--beam-size", "2"]) == 0
    assert capsys.readouterr().out.splitlines() == expected


def test_translate_refuses_a_run_of_another_task(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "mlp"
    assert (
        main(
            [
                "train",
                "mlp",
                "--epochs",
                "1",
                "--limit-train",
                "32",
                "--limit-test",
                "8",
                "--out",
                str(run),
                "--no-report",
                "--no-progress",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["translate", str(run), "Hallo."]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a classification run of mlp; nnatlas translate needs a translation run" in err[0]
