"""``nnatlas sample``: images from tiny diffusion and VAE runs equal their tasks' samplers with the
options given (DDIM steps and eta, the ancestral sampler, prior draws), the default seed redraws the
run's own grid, the PNG and safetensors files are whole, and wrong input is one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import nnatlas
from nnatlas.cli import main
from nnatlas.train.cli_sample import sample_images
from nnatlas.train.tasks.diffusion import DDIM_SEED, DDPM_SEED
from nnatlas.train.tasks.generative import ARTEFACT_SEED

# ddpm_tiny at its smallest (see test_task_diffusion.py): T = 20, 8x8 digits, milliseconds a step
SMALL = ["--model-arg", "ch=8", "--model-arg", "num_groups=4", "--model-arg", "num_timesteps=20",
         "--ddim-steps", "4", "--ddpm-samples", "0", "--quality-samples", "0", "--test-images", "16"]  # fmt: skip
QUIET = ["--limit-train", "64", "--limit-test", "16", "--batch-size", "16", "--no-report", "--no-progress"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sample")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for model, extra in (("ddpm_tiny", SMALL), ("vae", ["--model-arg", "latent_size=3"]), ("mlp", [])):
            assert main(["train", model, "--steps", "2", *QUIET, *extra, "--out", str(root / model)]) == 0
    finally:
        torch.set_num_threads(before)
    return {m: root / m for m in ("ddpm_tiny", "vae", "mlp")}


def test_diffusion_samples_are_the_tasks_sampler_with_the_options_given(runs: dict[str, Path], tmp_path: Path) -> None:
    trained = nnatlas.load(runs["ddpm_tiny"], weights="last")
    task, model = trained.task, trained.model
    out, tensors = tmp_path / "grid" / "s.png", tmp_path / "s.safetensors"
    argv = ["sample", str(runs["ddpm_tiny"]), "--n", "10", "--steps", "3", "--eta", "0.5", "--seed", "7"]
    assert main([*argv, "--out", str(out), "--tensors", str(tensors)]) == 0
    images = load_file(tensors)["images"]
    assert images.shape == (10, 1, 8, 8) and images.dtype == torch.float32 and 0 <= images.min() and images.max() <= 1
    assert torch.equal(images, task.sample(model, 10, steps=3, eta=0.5, seed=7))
    assert not torch.equal(images, task.sample(model, 10, steps=3, eta=0.0, seed=7))  # eta reaches the sampler
    assert out.read_bytes().startswith(b"\x89PNG")
    with safe_open(tensors, framework="pt") as f:
        assert "DDIM, 3 steps, eta 0.5, seed 7" in f.metadata()["how"]

    default, how = sample_images(runs["ddpm_tiny"], 64)  # the run's DDIM grid: its --ddim-steps, --ddim-eta (the card's 1), seed
    assert torch.equal(default, task.sample(model, 64, seed=DDIM_SEED, steps=4, eta=1.0)) and "DDIM, 4 steps, eta 1," in how
    task.opts["ddim_eta"] = 0.5  # the run's --ddim-eta is the task's default eta
    assert torch.equal(task.sample(model, 3, steps=3), task.sample(model, 3, steps=3, eta=0.5))
    ancestral, how = sample_images(runs["ddpm_tiny"], 5, sampler="ddpm")
    assert torch.equal(ancestral, task.sample(model, 5, sampler="ddpm", seed=DDPM_SEED)) and "20 steps" in how


def test_vae_samples_are_decoder_means_of_prior_draws(runs: dict[str, Path]) -> None:
    trained = nnatlas.load(runs["vae"], weights="last")
    images, how = sample_images(runs["vae"], 6, seed=11)
    z = torch.randn(6, 3, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        expected = trained.model.decode(z).reshape(6, 1, 8, 8)
    torch.testing.assert_close(images, expected, rtol=0, atol=0)
    assert "seed 11" in how and torch.equal(sample_images(runs["vae"], 6)[0], trained.task.sample(trained.model, 6, seed=ARTEFACT_SEED))


@pytest.mark.parametrize(
    ("run", "extra", "message"),
    [
        ("mlp", [], "is a classification run (mlp); nnatlas sample takes diffusion or vae runs"),
        ("vae", ["--eta", "1"], "--eta: options of diffusion runs"),
        ("ddpm_tiny", ["--sampler", "ddpm", "--steps", "5"], "--steps: options of --sampler ddim"),
        ("ddpm_tiny", ["--steps", "21"], "--steps must be an integer in [1, 20]"),
        ("ddpm_tiny", ["--eta", "nan"], "--eta must be a number >= 0"),
        ("ddpm_tiny", ["--n", "0"], "--n must be an integer in [1, 100000]"),
        ("ddpm_tiny", ["--seed", "-1"], "--seed must be >= 0"),
        ("ddpm_tiny", ["--out", "x.jpg"], "--out must name a .png file"),
        ("ddpm_tiny", ["--tensors", "x.pt"], "--tensors must name a .safetensors file"),
    ],
)
def test_wrong_input_is_one_line_and_writes_nothing(run: str, extra: list[str], message: str, runs: dict[str, Path],
                                                    tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["sample", str(runs[run]), "--n", "2", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nnatlas sample: error: ") and message in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_a_folder_that_is_no_run_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sample", str(tmp_path)]) == 2
    assert "is not a run folder" in capsys.readouterr().err
