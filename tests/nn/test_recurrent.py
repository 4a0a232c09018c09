"""nnatlas.nn recurrent layers against torch.nn: cells and stacks, both impls, forward and gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nnatlas import nn as atlas_nn
from nnatlas.errors import ShapeError


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny inputs: threads only contend

I, H, B, T = 5, 7, 3, 4
ATOL = 1e-5  # fp32: the loop sums the same products in another order than torch's kernel

# (nnatlas class, torch class, extra constructor kwargs)
STACKS = [
    pytest.param(atlas_nn.RNN, nn.RNN, {"nonlinearity": "tanh"}, id="rnn_tanh"),
    pytest.param(atlas_nn.RNN, nn.RNN, {"nonlinearity": "relu"}, id="rnn_relu"),
    pytest.param(atlas_nn.LSTM, nn.LSTM, {}, id="lstm"),
    pytest.param(atlas_nn.GRU, nn.GRU, {}, id="gru"),
]
CELLS = [
    pytest.param(atlas_nn.RNNCell, nn.RNNCell, {"nonlinearity": "tanh"}, id="rnn_tanh"),
    pytest.param(atlas_nn.RNNCell, nn.RNNCell, {"nonlinearity": "relu"}, id="rnn_relu"),
    pytest.param(atlas_nn.LSTMCell, nn.LSTMCell, {}, id="lstm"),
    pytest.param(atlas_nn.GRUCell, nn.GRUCell, {}, id="gru"),
]


def _flat(out: object) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for o in out for t in _flat(o)]


def _loss(out: object) -> torch.Tensor:
    # a weighted sum, so every output element's gradient differs (a plain sum hides permutations)
    return sum((t * torch.linspace(0.5, 1.5, t.numel()).view_as(t)).sum() for t in _flat(out))


def _grads(module: nn.Module, inputs: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    grads = {n: p.grad for n, p in module.named_parameters()}
    grads |= {f"input{k}": x.grad for k, x in enumerate(inputs)}
    return grads


def _run_and_compare(ours: nn.Module, ref: nn.Module, inputs: list[torch.Tensor], call) -> None:
    """Forward both on clones of ``inputs``; compare outputs and the gradients of inputs and parameters."""
    mine = [x.clone().requires_grad_(True) for x in inputs]
    theirs = [x.clone().requires_grad_(True) for x in inputs]
    out_a, out_b = call(ours, mine), call(ref, theirs)
    for a, b in zip(_flat(out_a), _flat(out_b), strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, atol=ATOL, rtol=1e-5)  # fp32
    _loss(out_a).backward()
    _loss(out_b).backward()
    ga, gb = _grads(ours, mine), _grads(ref, theirs)
    assert ga.keys() == gb.keys()
    for name in ga:
        assert ga[name] is not None, f"no gradient for {name}"
        torch.testing.assert_close(ga[name], gb[name], atol=ATOL, rtol=1e-5, msg=name)  # fp32


# ----------------------------------------------------------------------------- cells


@pytest.mark.parametrize(("ours", "theirs", "kwargs"), CELLS)
@pytest.mark.parametrize("bias", [True, False])
def test_cell_matches_torch(ours, theirs, kwargs, bias) -> None:
    ref = theirs(I, H, bias=bias, **kwargs).eval()
    cell = ours.from_reference(ref)
    assert list(cell.state_dict()) == list(ref.state_dict())
    x = torch.randn(B, I)
    h = torch.randn(B, H)
    if ours is atlas_nn.LSTMCell:
        c = torch.randn(B, H)
        _run_and_compare(cell, ref, [x, h, c], lambda m, a: m(a[0], (a[1], a[2])))
    else:
        _run_and_compare(cell, ref, [x, h], lambda m, a: m(a[0], a[1]))


@pytest.mark.parametrize(("ours", "theirs", "kwargs"), CELLS)
def test_cell_default_state_and_unbatched(ours, theirs, kwargs) -> None:
    ref = theirs(I, H, **kwargs)
    cell = ours.from_reference(ref)
    x = torch.randn(I)
    for a, b in zip(_flat(cell(x)), _flat(ref(x)), strict=True):
        assert a.shape == (H,)
        torch.testing.assert_close(a, b, atol=ATOL, rtol=1e-5)  # fp32


def test_lstm_cell_equations() -> None:
    """h' = o * tanh(c'), c' = f * c + i * g with gates stacked i, f, g, o (the seed has c * tanh(o))."""
    cell = atlas_nn.LSTMCell(I, H)
    x, h, c = torch.randn(B, I), torch.randn(B, H), torch.randn(B, H)
    z = x @ cell.weight_ih.T + cell.bias_ih + h @ cell.weight_hh.T + cell.bias_hh
    i, f, g, o = z[:, :H].sigmoid(), z[:, H : 2 * H].sigmoid(), z[:, 2 * H : 3 * H].tanh(), z[:, 3 * H :].sigmoid()
    c_next = f * c + i * g
    h_next, c_out = cell(x, (h, c))
    torch.testing.assert_close(c_out, c_next)
    torch.testing.assert_close(h_next, o * torch.tanh(c_next))


def test_sigmoid_rnn_cell_is_the_seed_equation() -> None:
    cell = atlas_nn.RNNCell(I, H, nonlinearity="sigmoid")
    x, h = torch.randn(B, I), torch.randn(B, H)
    expected = torch.sigmoid(x @ cell.weight_ih.T + cell.bias_ih + h @ cell.weight_hh.T + cell.bias_hh)
    torch.testing.assert_close(cell(x, h), expected)


def test_cell_errors() -> None:
    cell = atlas_nn.GRUCell(I, H)
    with pytest.raises(ShapeError, match=r"expects input .*got \(3, 6\)"):
        cell(torch.randn(B, I + 1))
    with pytest.raises(ShapeError, match="hidden state"):
        cell(torch.randn(B, I), torch.randn(B + 1, H))
    with pytest.raises(ShapeError):
        cell(torch.randint(0, 3, (B, I)))
    with pytest.raises(TypeError):
        atlas_nn.GRUCell.from_reference(nn.LSTMCell(I, H))
    with pytest.raises(ValueError):
        atlas_nn.RNNCell(I, H, nonlinearity="gelu")
    with pytest.raises(ValueError):
        atlas_nn.LSTMCell(I, -1)


# ----------------------------------------------------------------------------- stacks


def _call_stack(is_lstm: bool):
    def call(m: nn.Module, a: list[torch.Tensor]):
        if len(a) == 1:
            return m(a[0])
        return m(a[0], (a[1], a[2])) if is_lstm else m(a[0], a[1])

    return call


@pytest.mark.parametrize(("ours", "theirs", "kwargs"), STACKS)
@pytest.mark.parametrize("impl", ["fused", "loop"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_stack_matches_torch(ours, theirs, kwargs, impl, bidirectional) -> None:
    """2 layers, batch_first, with h0 (and c0): from_reference reads the configuration off torch's module."""
    ref = theirs(I, H, num_layers=2, batch_first=True, bidirectional=bidirectional, **kwargs).eval()
    stack = ours.from_reference(ref, impl=impl)
    assert stack.state_dict().keys() == ref.state_dict().keys()
    assert (stack.num_layers, stack.batch_first, stack.bidirectional) == (2, True, bidirectional)
    LD = 2 * (2 if bidirectional else 1)
    x = torch.randn(B, T, I)
    states = [torch.randn(LD, B, H)] * (2 if ours is atlas_nn.LSTM else 1)
    _run_and_compare(stack, ref, [x, *states], _call_stack(ours is atlas_nn.LSTM))


@pytest.mark.parametrize(("ours", "theirs", "kwargs"), STACKS)
@pytest.mark.parametrize("impl", ["fused", "loop"])
def test_stack_time_major_default_state_no_bias(ours, theirs, kwargs, impl) -> None:
    ref = theirs(I, H, num_layers=3, bias=False, bidirectional=True, **kwargs)
    stack = ours.from_reference(ref, impl=impl)
    assert stack.state_dict().keys() == ref.state_dict().keys()
    _run_and_compare(stack, ref, [torch.randn(T, B, I)], _call_stack(ours is atlas_nn.LSTM))


@pytest.mark.parametrize(("ours", "theirs", "kwargs"), STACKS)
@pytest.mark.parametrize("impl", ["fused", "loop"])
def test_stack_unbatched(ours, theirs, kwargs, impl) -> None:
    ref = theirs(I, H, num_layers=2, **kwargs)
    stack = ours.from_reference(ref, impl=impl)
    x = torch.randn(T, I)
    out_a, out_b = stack(x), ref(x)
    assert out_a[0].shape == (T, H)
    for a, b in zip(_flat(out_a), _flat(out_b), strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, atol=ATOL, rtol=1e-5)  # fp32


@pytest.mark.parametrize(("ours", "theirs", "kwargs"), STACKS)
def test_loop_equals_fused_in_training(ours, theirs, kwargs) -> None:
    """The two paths agree, forward and gradients, in train mode (dropout 0 so both are deterministic)."""
    fused = ours(I, H, num_layers=2, batch_first=True, bidirectional=True, impl="fused", **kwargs).train()
    loop = ours(I, H, num_layers=2, batch_first=True, bidirectional=True, impl="loop", **kwargs).train()
    loop.load_state_dict(fused.state_dict())
    LD = 4
    x = torch.randn(B, T, I)
    states = [torch.randn(LD, B, H)] * (2 if ours is atlas_nn.LSTM else 1)
    _run_and_compare(loop, fused, [x, *states], _call_stack(ours is atlas_nn.LSTM))  # atol 1e-5 fp32


@pytest.mark.parametrize("impl", ["fused", "loop"])
def test_dropout_between_layers_only_in_training(impl) -> None:
    stack = atlas_nn.GRU(I, H, num_layers=2, dropout=0.5, impl=impl)
    plain = atlas_nn.GRU(I, H, num_layers=2, dropout=0.0, impl=impl)
    plain.load_state_dict(stack.state_dict())
    x = torch.randn(T, B, I)
    stack.train()
    a, _ = stack(x)
    b, _ = stack(x)
    assert not torch.allclose(a, b), "dropout did not act in training"
    stack.eval()
    torch.testing.assert_close(stack(x)[0], plain(x)[0])  # eval: no dropout
    one = atlas_nn.GRU(I, H, num_layers=1, dropout=0.5, impl=impl).train()
    torch.testing.assert_close(one(x)[0], one(x)[0])  # nothing after the last layer


def test_sigmoid_rnn_loop_only() -> None:
    with pytest.raises(ValueError, match="no fused torch kernel"):
        atlas_nn.RNN(I, H, nonlinearity="sigmoid")
    stack = atlas_nn.RNN(I, H, num_layers=1, nonlinearity="sigmoid", batch_first=True, impl="loop")
    x = torch.randn(B, T, I)
    out, h_n = stack(x)
    h = torch.zeros(B, H)
    for t in range(T):  # the seed's cell: sigmoid(x W + h U + b)
        z = x[:, t] @ stack.weight_ih_l0.T + stack.bias_ih_l0 + h @ stack.weight_hh_l0.T + stack.bias_hh_l0
        h = torch.sigmoid(z)
        torch.testing.assert_close(out[:, t], h)
    torch.testing.assert_close(h_n[0], h)


def test_stack_errors_name_the_layer_and_the_shape() -> None:
    lstm = atlas_nn.LSTM(I, H, num_layers=2, batch_first=True)
    with pytest.raises(ShapeError, match=r"LSTM expects input \(B, T, 5\).*got \(3, 4, 6\)"):
        lstm(torch.randn(B, T, I + 1))
    with pytest.raises(ShapeError, match=r"got \(1, 3, 4, 5\)"):
        lstm(torch.randn(1, B, T, I))
    with pytest.raises(ShapeError, match=r"initial state.*got \(1, 3, 7\)"):
        lstm(torch.randn(B, T, I), (torch.zeros(1, B, H), torch.zeros(2, B, H)))
    with pytest.raises(ShapeError, match="pair"):
        lstm(torch.randn(B, T, I), torch.zeros(2, B, H))
    with pytest.raises(ShapeError, match="floating"):
        lstm(torch.randint(0, 3, (B, T, I)))
    with pytest.raises(TypeError):
        atlas_nn.LSTM.from_reference(nn.GRU(I, H))
    with pytest.raises(ValueError, match="proj_size"):
        atlas_nn.LSTM.from_reference(nn.LSTM(I, H, proj_size=3))
    for bad in ({"num_layers": 0}, {"dropout": 1.5}, {"impl": "cuda"}):
        with pytest.raises(ValueError):
            atlas_nn.GRU(I, H, **bad)
