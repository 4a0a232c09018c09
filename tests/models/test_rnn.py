"""The rnn family: classifiers, time_rnn, nlp_rnn (tied weights), char_rnn (the seed's i2h/i2o step)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nnatlas
from nnatlas.errors import ConfigError, ShapeError


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny inputs: threads only contend

SMALL = {"input_size": 6, "hidden_size": 8, "num_layers": 2}


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@pytest.mark.parametrize(("name", "reference"), [("rnn", nn.RNN), ("lstm", nn.LSTM), ("gru", nn.GRU)])
def test_classifier_parameter_count_equals_torch_stack_plus_linear(name, reference) -> None:
    model = nnatlas.create(name)
    c = model.config
    stack = reference(c.input_size, c.hidden_size, c.num_layers)
    expected = _count(stack) + _count(nn.Linear(c.hidden_size, c.num_classes))
    assert _count(model) == expected


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_classifier_reads_the_final_hidden_state_of_both_directions(name, bidirectional) -> None:
    model = nnatlas.create(name, bidirectional=bidirectional, num_classes=3, **SMALL).eval()
    torch_stack = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[name]
    reference = torch_stack(6, 8, 2, batch_first=True, bidirectional=bidirectional)
    reference.load_state_dict(model.rnn.state_dict())
    x = torch.randn(2, 5, 6)
    out, _ = reference(x)  # (B, T, D*H)
    last = out[:, -1, :8] if not bidirectional else torch.cat([out[:, -1, :8], out[:, 0, 8:]], dim=1)
    torch.testing.assert_close(model(x), model.fc(last), atol=1e-5, rtol=1e-5)  # fp32


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru", "time_rnn"])
def test_loop_and_fused_models_agree(name) -> None:
    fused = nnatlas.create(name, impl="fused", **SMALL).eval()
    loop = nnatlas.create(name, impl="loop", **SMALL).eval()
    loop.load_state_dict(fused.state_dict())
    x = torch.randn(2, 5, 6)
    torch.testing.assert_close(loop(x), fused(x), atol=1e-5, rtol=1e-5)  # fp32


def test_time_rnn_labels_every_step_causally() -> None:
    model = nnatlas.create("time_rnn", **SMALL, num_labels=3).eval()
    x = torch.randn(2, 7, 6)
    y = model(x)
    assert y.shape == (2, 7, 3)
    x2 = x.clone()
    x2[:, 4] += 1.0
    y2 = model(x2)
    torch.testing.assert_close(y2[:, :4], y[:, :4])  # the past does not see the future
    assert not torch.allclose(y2[:, 4:], y[:, 4:])


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_nlp_rnn_ties_the_embedding_and_the_output_layer(cell) -> None:
    model = nnatlas.create("nlp_rnn", cell=cell, vocab_size=20, hidden_size=8, num_layers=2).eval()
    stack = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell](8, 8, 2)
    assert _count(model) == 20 * 8 + _count(stack)  # E counted once: no separate output matrix, no bias
    ids = torch.randint(0, 20, (2, 5))
    logits = model(ids)
    assert logits.shape == (2, 5, 20)
    hidden, _ = model.rnn(model.embedding(ids))
    torch.testing.assert_close(logits, hidden @ model.embedding.weight.T)
    with pytest.raises(ShapeError, match="integer"):
        model(ids.float())


class SeedCharRNN(nn.Module):
    """Seed 004's RNN, verbatim but for the names: one letter at a time, hidden (1, H)."""

    def __init__(self, input_size: int, hidden_size: int, output_size: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.i2h = nn.Linear(input_size + hidden_size, hidden_size)
        self.i2o = nn.Linear(input_size + hidden_size, output_size)
        self.softmax = nn.LogSoftmax(dim=1)

    def forward(self, input, hidden):
        combined = torch.cat((input, hidden), 1)
        hidden = self.i2h(combined)
        output = self.i2o(combined)
        output = self.softmax(output)
        return output, hidden

    def init_hidden(self):
        return torch.zeros(1, self.hidden_size)


def test_char_rnn_equals_the_seed_stepped_letter_by_letter() -> None:
    model = nnatlas.create("char_rnn", n_letters=10, hidden_size=12, n_categories=4).eval()
    seed = SeedCharRNN(10, 12, 4)
    seed.load_state_dict(model.state_dict())
    letters = torch.randint(0, 10, (3, 6))
    x = F.one_hot(letters, 10).float()  # (B, T, F)
    out = model(x)
    for b in range(3):
        hidden = seed.init_hidden()
        for t in range(6):
            output, hidden = seed(x[b, t : t + 1], hidden)
        torch.testing.assert_close(out[b : b + 1], output)
    torch.testing.assert_close(out.exp().sum(1), torch.ones(3))  # log-probabilities
    with pytest.raises(ShapeError, match="T >= 1"):
        model(torch.zeros(2, 0, 10))


def test_config_rejects_inconsistent_choices() -> None:
    with pytest.raises(ConfigError, match="no fused kernel"):
        nnatlas.create("rnn", nonlinearity="sigmoid")
    nnatlas.create("rnn", nonlinearity="sigmoid", impl="loop")
    with pytest.raises(ConfigError, match="cell='rnn' only"):
        nnatlas.create("lstm", nonlinearity="relu")
    with pytest.raises(ConfigError):
        nnatlas.create("time_rnn", cell="transformer")
    with pytest.raises(ConfigError):
        nnatlas.create("gru", dropout=1.0)
