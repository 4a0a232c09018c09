"""The learning-rate schedules and the recipe resolution order (command line > card recipe > defaults)."""

from __future__ import annotations

import dataclasses
import math

import pytest

import nnatlas
from nnatlas.registry import Recipe, format_card
from nnatlas.train.trainer import DEFAULTS, TrainConfig, _noam, _warmup_cosine


def test_warmup_cosine_rises_linearly_then_decays_to_the_floor() -> None:
    f = _warmup_cosine(total=1000, warmup=100, floor=0.1)
    assert f(0) == pytest.approx(1 / 101) and f(99) == pytest.approx(100 / 101)
    assert f(100) == pytest.approx(1.0)
    assert f(550) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the decay: the mean of peak and floor
    assert f(1000) == pytest.approx(0.1) and f(5000) == pytest.approx(0.1)


def test_noam_peaks_at_the_warmup_step_and_decays_as_inverse_square_root() -> None:
    f = _noam(4000)
    assert f(3999) == pytest.approx(1.0)
    assert f(1999) == pytest.approx(0.5)
    assert f(15999) == pytest.approx(math.sqrt(4000 / 16000))


def test_resolution_order_is_command_line_then_card_recipe_then_defaults() -> None:
    cfg = TrainConfig(model="lenet").resolved()
    recipe = nnatlas.card("lenet").training
    assert cfg.optimizer == (recipe.optimizer or DEFAULTS["optimizer"]) and cfg.data == nnatlas.card("lenet").data
    assert cfg.momentum is None and cfg.warmup is None  # adam with onecycle reads neither
    cfg = TrainConfig(model="lenet", optimizer="sgd", batch_size=7, steps=5).resolved()
    assert (cfg.optimizer, cfg.batch_size, cfg.steps, cfg.epochs, cfg.momentum) == ("sgd", 7, 5, None, DEFAULTS["momentum"])


def test_a_recipe_gives_epochs_or_steps_not_both() -> None:
    with pytest.raises(ValueError, match="epochs or steps"):
        Recipe(epochs=2, steps=10)


def test_a_recipes_task_options_sit_under_the_command_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    """Recipe.task_options (a card's --ddim-steps ...) fill what the command line leaves; a resumed run keeps its saved ones."""
    card = nnatlas.card("ddpm_tiny")
    recipe = dataclasses.replace(card.training, task_options={"ddim_steps": 3, "test_images": 7})
    real_card = nnatlas.card
    monkeypatch.setattr(nnatlas, "card", lambda name: dataclasses.replace(card, recipe=recipe) if name == "ddpm_tiny" else real_card(name))
    assert TrainConfig(model="ddpm_tiny", steps=1).resolved().task_options == {"ddim_steps": 3, "test_images": 7}
    given = TrainConfig(model="ddpm_tiny", steps=1, task_options={"ddim_steps": 5, "ddim_eta": 1.0}).resolved()
    assert given.task_options == {"ddim_steps": 5, "test_images": 7, "ddim_eta": 1.0}
    assert TrainConfig(model="ddpm_tiny", steps=1, resume=True, task_options={"ddim_steps": 5}).resolved().task_options == {"ddim_steps": 5}
    assert "task_options" not in recipe.values()  # not a trainer field
    assert "--ddim-steps=3, --test-images=7" in format_card(dataclasses.replace(card, recipe=recipe))  # nnatlas show
