"""The language_model task: metric plumbing on hand-made cases, the whole-split evaluation windows,
random training windows from the trainer's generator, the CausalLM step of the RNN language
models, ``nnatlas generate``, SIGKILL + resume bitwise, and two-process gloo DDP."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import nnatlas
from nnatlas.cli import main
from nnatlas.data.bundle import DataBundle
from nnatlas.data.text import CharBlocks
from nnatlas.models.generation import generate
from nnatlas.train import TrainConfig, train
from nnatlas.train.checkpoint import load_checkpoint
from nnatlas.train.tasks.language import LanguageModelTask, eval_windows
from kill_resume import kill_after_first_checkpoint, subprocess_env

VOCAB = list("\n abcdefgh")
# gpt_mini at a size whose steps take milliseconds (the task does not care about the size).
GPT_TINY = ["--model-arg", "d_model=32", "--model-arg", "num_layers=1", "--model-arg", "num_heads=2", "--model-arg", "context_length=16"]


def _bundle(n_train: int = 400, n_val: int = 103, seed: int = 0) -> DataBundle:
    """A tinyshakespeare-shaped bundle over a random stream of VOCAB's characters."""
    g = torch.Generator().manual_seed(seed)
    train_ids = torch.randint(0, len(VOCAB), (n_train,), generator=g)
    val_ids = torch.randint(0, len(VOCAB), (n_val,), generator=g)
    return DataBundle(name="tinyshakespeare", task="language_model", train=CharBlocks(train_ids, 8, 8), test=CharBlocks(val_ids, 8, 8),
                      num_classes=len(VOCAB), input_shape=(8,), meta={"vocab": VOCAB, "train_ids": train_ids, "val_ids": val_ids})


class _Uniform(nn.Module):
    """Equal logits for every token: the loss is ln V at every position."""

    def __init__(self, V: int) -> None:
        super().__init__()
        self.V = V
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.zeros(*ids.shape, self.V) + self.w


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


# --- metrics -------------------------------------------------------------------------------------


def test_metrics_are_nats_bits_and_perplexity_exp_of_the_loss() -> None:
    task, _ = LanguageModelTask.fit("gpt_mini", _bundle(), {"context": 8}, {"d_model": 16, "num_layers": 1, "num_heads": 2})
    m = task.metrics(torch.tensor([7.5, 3.0], dtype=torch.float64))
    assert m["loss"] == pytest.approx(2.5)
    assert m["bpc"] == pytest.approx(2.5 / math.log(2))
    assert m["ppl"] == pytest.approx(math.exp(2.5))


def test_a_uniform_model_scores_ln_v_nats_and_perplexity_v_over_the_whole_split() -> None:
    task, _ = LanguageModelTask.fit("gpt_mini", _bundle(), {"context": 8}, {"d_model": 16, "num_layers": 1, "num_heads": 2})
    model = _Uniform(len(VOCAB))
    sums = sum(task.sums(model, task.batch("test", torch.tensor([i]), device=torch.device("cpu"))) for i in range(task.size("test")))
    assert sums[1] == 102  # 103 validation characters: every one but the first is a target
    m = task.metrics(sums)
    assert m["loss"] == pytest.approx(math.log(len(VOCAB)), rel=1e-6)
    assert m["ppl"] == pytest.approx(len(VOCAB), rel=1e-6)
    assert m["bpc"] == pytest.approx(math.log2(len(VOCAB)), rel=1e-6)


# --- windows -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "T"), [(103, 8), (97, 8), (9, 8), (5, 8), (64, 64), (111_540, 64), (111_540, 256)])
def test_eval_windows_predict_every_character_after_the_first_exactly_once(n: int, T: int) -> None:
    starts, last_scored = eval_windows(n, T)
    T = min(T, n - 1)
    counts = torch.zeros(n, dtype=torch.long)
    for i, s in enumerate(starts):
        first = T - last_scored if i == len(starts) - 1 else 0
        targets = torch.arange(s + 1, s + T + 1)[first:]  # ids[s + 1 : s + T + 1], scored part
        counts[targets] += 1
        assert s >= 0 and s + T + 1 <= n  # every window lies inside the stream
    assert counts[0] == 0 and bool((counts[1:] == 1).all()), counts


def test_task_batches_cover_the_validation_stream_once_with_the_mask() -> None:
    bundle = _bundle(n_val=103)
    task, _ = LanguageModelTask.fit("gpt_mini", bundle, {"context": 8}, {"d_model": 16, "num_layers": 1, "num_heads": 2})
    val = bundle.meta["val_ids"]
    b = task.batch("test", torch.arange(task.size("test")), device=torch.device("cpu"))
    assert b["x"].shape == b["y"].shape == b["mask"].shape == (13, 8)  # 102 targets: 12 full windows and 6 in the last
    assert int(b["mask"].sum()) == 102 and int(b["mask"][-1].sum()) == 6
    assert torch.equal(b["y"][b["mask"]], val[1:])  # the scored targets, in order, are the stream after its first id
    assert torch.equal(b["x"][:, 1:], b["y"][:, :-1])  # y is x shifted by one


def test_training_windows_come_from_the_generator_at_random_offsets() -> None:
    bundle = _bundle(n_train=400)
    task, _ = LanguageModelTask.fit("gpt_mini", bundle, {"context": 8}, {"d_model": 16, "num_layers": 1, "num_heads": 2})
    assert task.size("train") == 399 // 8
    idx = torch.arange(6)
    a = task.batch("train", idx, device=torch.device("cpu"), generator=torch.Generator().manual_seed(5))
    b = task.batch("train", idx, device=torch.device("cpu"), generator=torch.Generator().manual_seed(5))
    c = task.batch("train", idx, device=torch.device("cpu"), generator=torch.Generator().manual_seed(6))
    assert torch.equal(a["x"], b["x"]) and not torch.equal(a["x"], c["x"])
    ids = bundle.meta["train_ids"]
    for x, y in zip(a["x"], a["y"]):  # each row is a real window of the stream, y one character on
        s = next(s for s in range(len(ids) - 8) if torch.equal(ids[s : s + 8], x))
        assert torch.equal(ids[s + 1 : s + 9], y)


def test_a_context_longer_than_the_model_takes_is_refused() -> None:
    with pytest.raises(ValueError, match="longer than the model's context_length 16"):
        LanguageModelTask.fit("gpt_mini", _bundle(), {"context": 32}, {"context_length": 16, "d_model": 16, "num_layers": 1, "num_heads": 2})


# --- the RNN language models are CausalLMs -------------------------------------------------------


@pytest.mark.parametrize("model_name", ["lstm_lm", "gru_lm", "nlp_rnn"])
def test_rnn_step_continues_like_the_full_forward(model_name: str) -> None:
    torch.manual_seed(0)
    model = nnatlas.create(model_name, vocab_size=11, hidden_size=16).eval()
    ids = torch.randint(0, 11, (3, 9))
    state = model.init_state(3)
    logits_a, state = model.step(ids[:, :5], state)  # prefill
    logits_b, state = model.step(ids[:, 5:], state)  # then the rest, carrying the state
    full = model(ids)
    torch.testing.assert_close(logits_a, full[:, 4], rtol=1e-5, atol=1e-6)  # float32 rounding of two paths
    torch.testing.assert_close(logits_b, full[:, -1], rtol=1e-5, atol=1e-6)
    cached = generate(model, ids[:, :4], 12, temperature=0)
    recomputed = generate(model, ids[:, :4], 12, temperature=0, use_cache=False)
    assert torch.equal(cached, recomputed)


def test_lstm_lm_has_its_own_output_layer_and_nlp_rnn_ties_it() -> None:
    lstm = nnatlas.create("lstm_lm")
    assert lstm.head is not None and lstm.head.weight.data_ptr() != lstm.embedding.weight.data_ptr()
    assert lstm.vocab_size == 65 and lstm.context_length is None
    tied = nnatlas.create("nlp_rnn", vocab_size=50, hidden_size=8)
    assert tied.head is None and not any(n.startswith("head") for n, _ in tied.named_parameters())


# --- runs: generate, resume, DDP ------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import SHARED_DATA

    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent (it lives beside the repository in CI)")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("lm") / "gpt"
        cfg = TrainConfig(model="gpt_mini", data_dir=str(SHARED_DATA), steps=4, eval_every=2, batch_size=4, limit_test=8, out=str(out),
                          report=False, model_args={"d_model": 32, "num_layers": 1, "num_heads": 2, "context_length": 16})
        train(cfg, progress=False)
    finally:
        torch.set_num_threads(before)
    return out


def test_a_run_writes_a_sample_at_each_evaluation_and_loads_with_its_vocabulary(tiny_run: Path) -> None:
    manifest = json.loads((tiny_run / "artefacts" / "manifest.json").read_text())
    assert sorted(manifest) == ["step-00000002", "step-00000004"]
    text = (tiny_run / "artefacts" / manifest["step-00000004"][0]).read_text()
    assert text.startswith("\n") and len(text) == 1 + 300
    loaded = nnatlas.load(tiny_run)
    assert len(loaded.inference["vocab"]) == 65 and loaded.inference["context"] == 16
    assert loaded.task.decode(loaded.task.encode("ROMEO:")[0]) == "ROMEO:"


def test_generate_continues_the_prompt_reproducibly(tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["generate", str(tiny_run), "--prompt", "ROMEO:", "--tokens", "40", "--seed", "3", "--top-k", "5"]
    rc, out, err = _cli(capsys, *args)
    assert rc == 0, err
    text = out[:-1]  # the command ends the text with a newline
    assert text.startswith("ROMEO:") and len(text) == 6 + 40
    assert _cli(capsys, *args)[1] == out  # the same seed, the same text
    rc, greedy, _ = _cli(capsys, "generate", str(tiny_run), "--prompt", "ROMEO:", "--tokens", "40", "--temperature", "0", "--weights", "last")
    trained = nnatlas.load(tiny_run, weights="last")
    ids = generate(trained.model, trained.task.encode("ROMEO:"), 40, temperature=0, use_cache=False)
    assert rc == 0 and greedy[:-1] == trained.task.decode(ids[0])


def test_generate_refuses_a_prompt_outside_the_vocabulary(tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _cli(capsys, "generate", str(tiny_run), "--prompt", "héllo", "--tokens", "3")
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "outside the run's vocabulary" in err and "é" in err


def test_generate_refuses_a_run_of_another_task_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "lenet"
    rc, _, err = _cli(capsys, "train", "lenet", "--epochs", "1", "--limit-train", "8", "--limit-test", "4", "--batch-size", "4",
                      "--out", str(run), "--no-report", "--no-progress")
    assert rc == 0, err
    rc, out, err = _cli(capsys, "generate", str(run), "--prompt", "a", "--tokens", "3")
    assert rc == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "is a classification run (lenet); nnatlas generate takes language_model runs" in lines[0]


def test_lm_run_killed_mid_run_and_resumed_equals_uninterrupted_run_bitwise(tmp_path: Path, shared_data: Path) -> None:
    """gpt_mini (tiny) with dropout: random windows from the step generator, dropout from the global one."""
    args = ["train", "gpt_mini", *GPT_TINY, "--model-arg", "dropout=0.2", "--data-dir", str(shared_data), "--steps", "12",
            "--eval-every", "6", "--limit-test", "8", "--batch-size", "4", "--checkpoint-every", "3", "--seed", "3", "--no-report", "--no-progress"]
    cmd = [sys.executable, "-m", "nnatlas", *args]
    env = subprocess_env()
    ref = subprocess.run([*cmd, "--out", str(tmp_path / "ref")], env=env, capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr

    killed = tmp_path / "killed"
    kill_after_first_checkpoint(cmd, killed, env)
    assert not (killed / "final.json").exists(), "the run finished before it was killed"
    assert 0 < load_checkpoint(killed, model_name="gpt_mini").state["global_step"] < 12

    resumed = subprocess.run([*cmd, "--out", str(killed), "--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming gpt_mini" in resumed.stderr
    a, b = load_file(tmp_path / "ref" / "last.safetensors"), load_file(killed / "last.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k

    def rows(run: Path) -> list[dict]:
        return [{k: v for k, v in json.loads(line).items() if k != "time_s"} for line in (run / "metrics.jsonl").read_text().splitlines()]

    assert rows(tmp_path / "ref") == rows(killed)
    assert (tmp_path / "ref" / "artefacts" / "samples" / "step-00000012.txt").read_text() == (killed / "artefacts" / "samples" / "step-00000012.txt").read_text()


def test_two_process_gloo_run_trains_an_lm_epoch_with_identical_weights(tmp_path: Path, shared_data: Path) -> None:
    worker = Path(__file__).with_name("ddp_lm_worker.py")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(worker), str(tmp_path), str(shared_data)],
        env=subprocess_env(), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    w0, w1 = load_file(tmp_path / "weights-rank0.safetensors"), load_file(tmp_path / "weights-rank1.safetensors")
    assert w0.keys() == w1.keys()
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    run = tmp_path / "rank0" / "run"
    final = json.loads((run / "final.json").read_text())
    assert final["world_size"] == 2 and final["epochs"] == 1 and final["task"] == "language_model"
    assert math.isfinite(final["test_loss"])
    assert sorted(p.name for p in (tmp_path / "rank1").iterdir()) == []  # rank 1 wrote nothing
    # 24 windows over 2 ranks in batches of 4: 3 steps per rank, one epoch.
    assert json.loads((run / "config.json").read_text())["steps_per_epoch"] == 3
