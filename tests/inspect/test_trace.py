"""The trace: scoped (nothing left behind, also when the model raises), meta first, one run for every view."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.overrides import _get_current_function_mode_stack

import nnatlas
from nnatlas.errors import ShapeError
from nnatlas.inspect import TraceError, diagram, summary, trace_model


class _Raises(nn.Module):
    """Raises in the middle of its forward, after some layers ran."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.error = error

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x)) + 1
        raise self.error


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("error", [RuntimeError("boom"), ShapeError("_Raises expects input (B, 3, H, W); got x")],
                         ids=["runtime", "shape"])
def test_a_model_that_raises_leaves_nothing_behind(error: Exception) -> None:
    model = _Raises(error).train()
    weight = model.conv.weight
    running = model.bn.running_mean.clone()
    with pytest.raises(ValueError) as info:
        trace_model(model, torch.randn(2, 3, 8, 8), training=False)
    if isinstance(error, ShapeError):
        assert info.value is error  # the model's own message, unchanged
    else:
        assert isinstance(info.value, TraceError) and "boom" in str(info.value) and "(2, 3, 8, 8)" in str(info.value)
    assert _hooks(model) == 0
    assert _get_current_function_mode_stack() == []
    assert model.training and all(m.training for m in model.modules())  # the mode it had
    assert model.conv.weight is weight and weight.device.type == "cpu"
    assert torch.equal(model.bn.running_mean, running)
    # and torch's functions are torch's again: a plain forward records nothing anywhere
    out = nn.Conv2d(3, 4, 3)(torch.randn(1, 3, 5, 5))
    assert out.shape == (1, 4, 3, 3)


class _Counting(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.runs = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.runs += 1
        return torch.softmax(self.fc(x), dim=-1)


def test_trace_once_render_many() -> None:
    model = _Counting()
    t = trace_model(model, torch.randn(2, 4))
    s, d = summary(t), diagram(t)
    deeper, table = diagram(t, depth=None), summary(t, depth=None)
    assert model.runs == 1
    assert s.total_macs == table.total_macs == 2 * 4 * 3
    assert {n.title for n in d.graph.nodes} >= {"Linear", "Softmax"}
    assert deeper.dot() == d.dot()


def test_a_cpu_model_is_traced_on_meta_and_left_on_cpu() -> None:
    model = nnatlas.create("lenet")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    t = trace_model(model, torch.randn(1, 1, 32, 32))
    assert t.device == "meta"
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


class _Item(nn.Module):
    """Data-dependent control flow: cannot run on meta."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.bn = nn.BatchNorm1d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.fc(x))
        steps = int(x.abs().sum().item() > -1) + 1  # always 2, but only real tensors can say so
        for _ in range(steps):
            x = self.fc(x)
        return x


def test_falls_back_to_real_tensors_and_leaves_running_stats_alone() -> None:
    model = _Item().train()
    running = model.bn.running_mean.clone()
    t = trace_model(model, torch.randn(3, 4))
    assert t.device == "cpu"
    assert summary(t).total_macs == 3 * 3 * 4 * 4 + 3 * 4  # three Linear calls and one BatchNorm
    assert torch.equal(model.bn.running_mean, running)
    assert _hooks(model) == 0


def test_a_name_traces_in_training_mode_unless_told() -> None:
    train = diagram("vae", blocks=False)
    evaluate = diagram(trace_model("vae", training=False), blocks=False)
    assert "ε ~ N(0, I)" in train.dot() and "exp" in train.dot()  # z = mu + exp(logvar / 2) * eps
    assert "ε" not in evaluate.dot()


def test_module_without_input_is_a_clear_error() -> None:
    with pytest.raises(TypeError, match="input="):
        summary(nn.Linear(2, 2))
    with pytest.raises(KeyError, match="unknown model"):
        summary("no_such_model")
