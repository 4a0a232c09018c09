"""The learning-rate schedules and the recipe resolution order (command line > card recipe > defaults)."""

from __future__ import annotations

import math

import pytest

import nnatlas
from nnatlas.registry import Recipe
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
