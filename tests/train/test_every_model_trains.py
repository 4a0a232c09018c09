"""Every registered model whose task kind nnatlas can train does train: parametrised over ``list_models()``.

For each model of the kinds below (the image kinds have their own tests in test_train_models.py):

- a short run of its default task on its default data (tiny limits, a tiny config where the
  full one costs seconds a step) finishes with finite metrics, weights, and the artefacts its
  task writes (listed in artefacts/manifest.json, every file there);
- fitted to one fixed batch, its loss falls: 30 Adam steps bring it below 80 % of the first.

A model joins as soon as its card names a kind that has a registered task; ``TINY`` holds the
config overrides that keep it fast (add one for a new large model).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

import nnatlas
from nnatlas import data
from nnatlas.train import TrainConfig, train
from nnatlas.train.tasks import Task, task_class, trainable_kinds

# The kinds of the "every model trains" issues (the image kinds are covered by test_train_models.py).
KINDS = ("sequence_classification", "forecast", "language_model", "translation", "masked_lm",
         "reconstruction", "vae", "diffusion", "node_classification", "pointer")

# Config overrides that keep a full-size model to a fraction of a second a step (the model's
# own family, smaller; the full size is checked by the model tests and the contract test).
TINY: dict[str, dict[str, Any]] = {
    "transformer": {"d_model": 32, "num_heads": 2, "num_encoder_layers": 1, "num_decoder_layers": 1,
                    "dim_feedforward": 64, "vocab_size": 500},
    "transformer_small": {"d_model": 32, "num_heads": 2, "num_encoder_layers": 1, "num_decoder_layers": 1,
                          "dim_feedforward": 64, "vocab_size": 500},
    "bert_base": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64},
    "mamba_130m": {"d_model": 32, "n_layer": 1, "dt_rank": 2},
    "gpt_shakespeare": {"d_model": 48, "num_layers": 1, "num_heads": 2, "context_length": 32},
    "nlp_rnn": {"hidden_size": 64},
    "lstm_lm": {"hidden_size": 64},
    "gru_lm": {"hidden_size": 64},
    "ddpm": {"ch": 16, "ch_mult": (1, 2), "num_res_blocks": 1, "num_groups": 8, "num_timesteps": 50},  # T = 50: the DDPM grid in 50 calls
    "ddpm_tiny": {"ch": 16, "num_timesteps": 50},
    "gcn": {"dropout": 0.0},  # karate's two labelled nodes under dropout 0.5 fall too slowly in 30 steps at lr 3e-3
}
STEPS = 3
OVERFIT_STEPS = 30
OVERFIT_BATCH = 4

MODELS = [m for m in nnatlas.list_models() if nnatlas.card(m).task in KINDS and nnatlas.card(m).task in trainable_kinds()]
_BUNDLES: dict[tuple[str, str | None], Any] = {}


def _data_dir(request: pytest.FixtureRequest, name: str) -> str | None:
    """None for the data sets that ship offline; ../shared/data (or a skip) for the others."""
    if data.dataset_info(name).offline:
        return None
    return str(request.getfixturevalue("shared_data"))


def _bundle(name: str, data_dir: str | None) -> Any:
    key = (name, data_dir)
    if key not in _BUNDLES:
        _BUNDLES[key] = data.load(name, data_dir=data_dir)
    return _BUNDLES[key]


def test_every_kind_of_these_issues_is_listed() -> None:
    assert set(KINDS) <= set(nnatlas.registry.TASK_KINDS)


@pytest.mark.parametrize("model", MODELS)
def test_model_trains_a_few_steps_and_writes_its_artefacts(model: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    card = nnatlas.card(model)
    data_dir = _data_dir(request, card.data)
    cfg = TrainConfig(model=model, data_dir=data_dir, steps=STEPS, batch_size=4, limit_train=64, limit_test=16,
                      model_args=TINY.get(model, {}), out=str(tmp_path / model), report=False, lr=1e-3)
    result = train(cfg, progress=False)
    assert result.history, "no evaluation was recorded"
    row = result.history[-1]
    assert math.isfinite(row["train_loss"]), row
    assert all(math.isfinite(v) for k, v in row.items() if k.endswith("_loss")), row
    run = result.run_dir
    assert (run / "last.safetensors").is_file() and (run / "final.json").is_file() and (run / "config.json").is_file()
    config = json.loads((run / "config.json").read_text())
    assert config["plan"]["task"] == card.task and config["config"]["data"] == card.data
    if type(result.task).artefacts is not Task.artefacts:  # the task writes artefacts: they are there
        manifest = json.loads((run / "artefacts" / "manifest.json").read_text())
        files = [f for names in manifest.values() for f in names]
        assert files and all((run / "artefacts" / f).is_file() and (run / "artefacts" / f).stat().st_size > 0 for f in files), manifest
    loaded = nnatlas.load(run)
    assert loaded.kind == card.task and not loaded.model.training


@pytest.mark.parametrize("model", MODELS)
def test_model_overfits_one_fixed_batch(model: str, request: pytest.FixtureRequest) -> None:
    card = nnatlas.card(model)
    bundle = _bundle(card.data, _data_dir(request, card.data))
    cls = task_class(card.task)
    torch.manual_seed(0)
    task, net = cls.fit(model, bundle, {}, TINY.get(model, {}))
    idx = torch.arange(min(OVERFIT_BATCH, task.size("train")))
    batch = task.batch("train", idx, device=torch.device("cpu"), generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    net.train()
    losses = []
    for step in range(OVERFIT_STEPS):
        torch.manual_seed(step)  # the same dropout stream whatever ran before
        loss = task.loss(net, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses), losses
    assert min(losses[-5:]) < 0.8 * losses[0], f"{model}: the loss did not fall on one fixed batch: {losses[0]:.4f} -> {losses[-5:]}"
