"""Pointer network: permutations under greedy decoding, padding, teacher forcing, and it learns to sort."""

from __future__ import annotations

import pytest
import torch

import nnatlas
from nnatlas.errors import ShapeError
from nnatlas.models.pointer_net import MASKED, pointer_loss

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny inputs: threads only contend


def _model(hidden_size: int = 16):
    return nnatlas.create("pointer_net", hidden_size=hidden_size)


def test_greedy_output_is_a_permutation() -> None:
    model = _model().eval()
    x = torch.rand(8, 7, 2)
    log_probs, idx = model(x)
    assert log_probs.shape == (8, 7, 7) and idx.shape == (8, 7)
    assert torch.isfinite(log_probs).all()
    for row in idx:
        assert sorted(row.tolist()) == list(range(7))
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(8, 7))
    torch.testing.assert_close(idx, log_probs.argmax(-1))


def test_variable_lengths_never_choose_padding() -> None:
    model = _model().eval()
    x = torch.rand(5, 6, 2)
    lengths = torch.tensor([6, 1, 3, 5, 2])
    x[torch.arange(6).expand(5, 6) >= lengths[:, None]] = 100.0  # loud padding that must not matter
    log_probs, idx = model(x, lengths)
    assert torch.isfinite(log_probs).all()
    for b, n in enumerate(lengths.tolist()):
        assert sorted(idx[b, :n].tolist()) == list(range(n))
        assert (idx[b, n:] == -1).all()
        assert (log_probs[b, :n, n:] <= MASKED / 2).all()  # padding never has probability at a valid step
        # the padded row equals the row run on its own, unpadded
        alone_lp, alone_idx = model(x[b : b + 1, :n])
        torch.testing.assert_close(log_probs[b : b + 1, :n, :n], alone_lp, atol=1e-5, rtol=1e-5)  # fp32
        torch.testing.assert_close(idx[b : b + 1, :n], alone_idx)


def test_teacher_forcing_reads_the_targets() -> None:
    model = _model().train()
    x = torch.rand(3, 5, 2)
    lengths = torch.tensor([5, 4, 2])
    targets = torch.tensor([[4, 2, 0, 1, 3], [1, 0, 3, 2, -1], [1, 0, -100, -100, -100]])  # any negative pads
    log_probs, idx = model(x, lengths, targets)
    torch.testing.assert_close(idx, targets.clamp(min=-1))  # indices mark finished steps with -1
    picked = log_probs.gather(2, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (B, N)
    valid = targets >= 0
    assert (picked[valid] > MASKED / 2).all()  # a target is never masked by an earlier one
    expected = -picked[valid].mean()
    torch.testing.assert_close(pointer_loss(log_probs, targets), expected)
    for b in range(3):  # earlier targets are masked at later steps
        for i in range(1, int(lengths[b])):
            assert (log_probs[b, i, targets[b, :i]] <= MASKED / 2).all()
    pointer_loss(log_probs, targets).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_bad_lengths_and_targets_raise() -> None:
    model = _model()
    x = torch.rand(2, 4, 2)
    with pytest.raises(ShapeError):
        model(x, torch.tensor([4, 0]))
    with pytest.raises(ShapeError):
        model(x, torch.tensor([4.0, 2.0]))
    with pytest.raises(ValueError, match="permutation"):
        model(x, targets=torch.tensor([[0, 0, 1, 2], [0, 1, 2, 3]]))
    with pytest.raises(ValueError):
        model(x, torch.tensor([4, 2]), targets=torch.tensor([[0, 1, 2, 3], [0, 1, 2, 3]]))


def _sort_batch(gen: torch.Generator, batch: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    points = torch.rand(batch, n, 2, generator=gen)
    return points, points[..., 0].argsort(dim=1)  # order the points by their x coordinate


def test_a_short_training_run_learns_to_sort() -> None:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = _model(hidden_size=32)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    test_x, test_y = _sort_batch(gen, 256, 5)
    model.eval()
    with torch.no_grad():
        before = pointer_loss(model(test_x, targets=test_y)[0], test_y).item()
    model.train()
    for _ in range(200):  # ~5 s on one free core; 50 steps already sort most sequences
        x, y = _sort_batch(gen, 32, 5)
        loss = pointer_loss(model(x, targets=y)[0], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        after = pointer_loss(model(test_x, targets=test_y)[0], test_y).item()
        _, greedy = model(test_x)
    exact = (greedy == test_y).all(dim=1).float().mean().item()
    assert after < 0.5 * before, (before, after)  # held-out loss (log 5! ~ 4.8 per sequence at chance)
    assert exact > 0.2, exact  # chance for an exact permutation of 5 is 1/120


@pytest.mark.parametrize("output", ["permutation", "cycle"])
def test_beam_width_one_is_greedy_and_wider_beams_score_at_least_as_high(output: str) -> None:
    torch.manual_seed(1)
    model = nnatlas.create("pointer_net", hidden_size=16, output=output).eval()
    x = torch.rand(16, 6, 2)
    lengths = torch.tensor([6, 5, 4, 6, 3, 6, 6, 5, 6, 6, 4, 6, 6, 6, 5, 6])
    with torch.no_grad():
        log_probs, greedy = model(x, lengths)
        one, one_score = model.beam_search(x, lengths, beam_size=1)
        wide, wide_score = model.beam_search(x, lengths, beam_size=4)
    assert torch.equal(one, greedy)
    picked = log_probs.gather(2, greedy.clamp(min=0).unsqueeze(-1)).squeeze(-1).masked_fill(greedy < 0, 0.0)
    torch.testing.assert_close(one_score, picked.sum(1))  # a beam's score is its summed log-probability
    assert (wide_score >= one_score - 1e-5).all()  # fp32 sums
    with torch.no_grad():  # the wide beam's score is the model's log-probability of its sequence
        forced, _ = model(x, lengths, targets=wide)
    rescored = forced.gather(2, wide.clamp(min=0).unsqueeze(-1)).squeeze(-1).masked_fill(wide < 0, 0.0).sum(1)
    torch.testing.assert_close(rescored, wide_score, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("output", ["permutation", "cycle"])
def test_masking_never_repeats_a_position(output: str) -> None:
    torch.manual_seed(2)
    x = torch.rand(32, 7, 2)
    for mask in (True, False):
        model = nnatlas.create("pointer_net", hidden_size=16, output=output, mask_chosen=mask).eval()
        with torch.no_grad():
            outputs = [model(x)[1], model.beam_search(x, beam_size=3)[0]]
        repeats = 0
        for idx in outputs:
            assert idx.shape == (32, 7 if output == "permutation" else 8)
            for row in idx.tolist():
                seq = [i for i in row if i >= 0]
                body = seq[:-1] if output == "cycle" and len(seq) > 3 and seq[-1] == seq[0] else seq
                repeats += len(set(body)) != len(body)
                if mask:
                    assert len(set(body)) == len(body), row
                    if output == "cycle":  # closed: distinct positions (three or more), then the first again
                        assert len(seq) >= 4 and seq[-1] == seq[0] and row[len(seq):] == [-1] * (8 - len(seq)), row
                    else:
                        assert sorted(seq) == list(range(7)), row
        if not mask:
            assert repeats > 0  # the unconstrained decoder of an untrained model repeats itself


def test_cycle_targets_teacher_force_and_bad_ones_raise() -> None:
    model = nnatlas.create("pointer_net", hidden_size=16, output="cycle")
    targets = torch.tensor([[0, 1, 3, 0, -1, -1], [2, 0, 1, 4, 2, -100]])
    log_probs, idx = model(torch.rand(2, 5, 2), targets=targets)
    assert log_probs.shape == (2, 6, 5)
    torch.testing.assert_close(idx, targets.clamp(min=-1))
    assert (log_probs[0, 3, 0] > MASKED / 2) and (log_probs[0, 2, 0] <= MASKED / 2)  # the first closes after three
    assert (log_probs[0, 4:] == 0).all()  # finished: no distribution
    for bad in ([0, 1, 0, -1, -1, -1], [0, 1, 1, 2, 0, -1], [0, 1, 2, 3, -1, -1], [0, 1, 2, 0, -1, 3]):
        with pytest.raises(ValueError):
            model(torch.rand(1, 5, 2), targets=torch.tensor([bad]))
