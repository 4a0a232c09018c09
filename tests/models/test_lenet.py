"""LeNet family: the seeds' intermediate shapes, the 1998 LeNet-5's parts and 60,000 parameters, configs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nnatlas
from nnatlas.models.lenet import C3_TABLE, LeNet5Config, LeNetConfig, PartialConv2d, Squash, digit_prototypes
from model_checks import shapes_after, trainable


@pytest.mark.parametrize("name", ["lenet", "lenet_d2l"])
def test_seed_000_feature_maps(name: str) -> None:
    """Seed 000 draws 28x28x6 -> 14x14x6 -> 10x10x16 -> 5x5x16; d2l's padding gives the same from 28x28."""
    model = nnatlas.create(name).eval()
    x = nnatlas.example_input(name, batch_size=2)
    seen = shapes_after(model, ["conv1", "pool1", "conv2", "pool2", "flatten", "fc1", "fc2", "fc3"], x)
    assert seen == {
        "conv1": (2, 6, 28, 28),
        "pool1": (2, 6, 14, 14),
        "conv2": (2, 16, 10, 10),
        "pool2": (2, 16, 5, 5),
        "flatten": (2, 400),
        "fc1": (2, 120),
        "fc2": (2, 84),
        "fc3": (2, 10),
    }


def test_variants_differ_as_the_seeds_say() -> None:
    seed000, d2l, bn = nnatlas.create("lenet"), nnatlas.create("lenet_d2l"), nnatlas.create("lenet_bn")
    assert isinstance(seed000.act1, nn.ReLU) and isinstance(seed000.pool1, nn.MaxPool2d)
    assert isinstance(d2l.act1, nn.Sigmoid) and isinstance(d2l.pool1, nn.AvgPool2d)
    assert d2l.conv1.padding == (2, 2) and seed000.conv1.padding == (0, 0)
    assert isinstance(bn.bn1, nnatlas.nn.BatchNorm2d) and isinstance(bn.bn3, nnatlas.nn.BatchNorm1d)
    assert trainable(d2l) == 61_706
    assert trainable(bn) == 44_878  # 156+12 + 2,416+32 + 30,840+240 + 10,164+168 + 850
    assert bn.fc1.in_features == 16 * 4 * 4  # d2l's LeNet-BN: no padding, 28 -> 24 -> 12 -> 8 -> 4


def test_lenet_d2l_matches_the_seed_code() -> None:
    """Seed 002's nn.Sequential, weights copied in order, gives the same logits."""
    seed = nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5, padding=2), nn.Sigmoid(),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Conv2d(6, 16, kernel_size=5), nn.Sigmoid(),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), nn.Sigmoid(),
        nn.Linear(120, 84), nn.Sigmoid(),
        nn.Linear(84, 10),
    )  # fmt: skip
    model = nnatlas.create("lenet_d2l")
    ours = [model.conv1, model.conv2, model.fc1, model.fc2, model.fc3]
    theirs = [m for m in seed if isinstance(m, (nn.Conv2d, nn.Linear))]
    for a, b in zip(ours, theirs):
        a.load_state_dict(b.state_dict())
    x = torch.randn(3, 1, 28, 28)
    torch.testing.assert_close(model(x), seed(x), rtol=0, atol=1e-6)  # same ops in the same order


def test_lenet_bn_trains_batch_statistics() -> None:
    model = nnatlas.create("lenet_bn").train()
    model(torch.randn(8, 1, 28, 28))
    assert int(model.bn1.num_batches_tracked) == 1 and int(model.bn4.num_batches_tracked) == 1
    assert not torch.equal(model.bn3.running_mean, torch.zeros(120))


# --- LeNet-5, 1998 --------------------------------------------------------------------------


def test_lenet5_1998_has_exactly_60000_trainable_parameters() -> None:
    model = nnatlas.create("lenet5_1998")
    per_layer = {
        name: sum(p.numel() for p in getattr(model, name).parameters()) for name in ("C1", "S2", "C3", "S4", "C5", "F6")
    }
    assert per_layer == {"C1": 156, "S2": 12, "C3": 1516, "S4": 32, "C5": 48120, "F6": 10164}
    assert trainable(model) == 60_000
    assert not any(p.requires_grad for p in model.output.parameters())  # the RBF holds no parameters
    assert model.output.prototypes.shape == (10, 84) and "output.prototypes" in model.state_dict()


def test_lenet5_1998_feature_maps() -> None:
    model = nnatlas.create("lenet5_1998").eval()
    seen = shapes_after(model, ["C1", "S2", "C3", "S4", "C5", "F6", "output"], torch.randn(2, 1, 32, 32))
    assert seen == {
        "C1": (2, 6, 28, 28),
        "S2": (2, 6, 14, 14),
        "C3": (2, 16, 10, 10),
        "S4": (2, 16, 5, 5),
        "C5": (2, 120, 1, 1),
        "F6": (2, 84),
        "output": (2, 10),
    }


def test_c3_table_is_table_I() -> None:
    """Table I by its rule: 6 maps of 3 contiguous S2 maps, 6 of 4 contiguous, 3 of 4 non-contiguous, 1 of all."""
    expected = [{j % 6, (j + 1) % 6, (j + 2) % 6} for j in range(6)]
    expected += [{j % 6, (j + 1) % 6, (j + 2) % 6, (j + 3) % 6} for j in range(6)]
    expected += [{0, 1, 3, 4}, {1, 2, 4, 5}, {0, 2, 3, 5}, set(range(6))]
    got = [{i for i in range(6) if C3_TABLE[i][o] == "X"} for o in range(16)]
    assert got == expected
    assert sum(row.count("X") for row in C3_TABLE) == 60


def test_c3_is_a_masked_dense_convolution() -> None:
    """PartialConv2d equals a full conv whose unconnected kernels are zero; unconnected inputs do not matter."""
    c3 = PartialConv2d(C3_TABLE, kernel_size=5)
    nn.init.normal_(c3.weight)
    nn.init.normal_(c3.bias)
    mask = torch.tensor([[C3_TABLE[i][o] == "X" for i in range(6)] for o in range(16)])  # (16, 6)
    dense = torch.zeros(16, 6, 5, 5)
    dense[mask] = c3.weight.detach()  # row-major order over (out, in), as the connections are listed
    x = torch.randn(2, 6, 14, 14)
    torch.testing.assert_close(c3(x), F.conv2d(x, dense, c3.bias.detach()), rtol=1e-5, atol=1e-5)
    # C3 map 0 reads S2 maps 0-2 only: changing map 5 leaves it unchanged
    x2 = x.clone()
    x2[:, 5] += 1.0
    torch.testing.assert_close(c3(x2)[:, 0], c3(x)[:, 0])
    assert not torch.allclose(c3(x2)[:, 15], c3(x)[:, 15])


def test_subsampling_is_a_scaled_2x2_sum_plus_bias() -> None:
    model = nnatlas.create("lenet5_1998")
    s2 = model.S2
    with torch.no_grad():
        s2.weight.copy_(torch.arange(1.0, 7.0))
        s2.bias.copy_(torch.full((6,), 0.5))
    x = torch.arange(2 * 6 * 4 * 4, dtype=torch.float32).reshape(2, 6, 4, 4)
    out = s2(x)
    top_left = x[:, :, :2, :2].sum((-1, -2))  # (2, 6)
    torch.testing.assert_close(out[:, :, 0, 0], top_left * torch.arange(1.0, 7.0) + 0.5)
    assert out.shape == (2, 6, 2, 2)


def test_squash_is_the_papers_scaled_tanh() -> None:
    f = Squash()
    a = torch.tensor([-1.0, 0.0, 1.0, 10.0])
    torch.testing.assert_close(f(a), 1.7159 * torch.tanh(2.0 / 3.0 * a))
    ones = torch.tensor([1.0, -1.0])
    torch.testing.assert_close(f(ones), ones, atol=1e-4, rtol=0)  # f(+-1) = +-1, A and S are chosen for it


def test_rbf_logits_are_minus_squared_distances_to_the_prototypes() -> None:
    model = nnatlas.create("lenet5_1998").eval()
    x = torch.randn(3, 1, 32, 32)
    feats: list[torch.Tensor] = []
    handle = model.f6.register_forward_hook(lambda m, i, o: feats.append(o))
    logits = model(x)
    handle.remove()
    expected = -torch.cdist(feats[0], digit_prototypes()).pow(2)  # -y_i = -sum_j (x_j - w_ij)^2
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(model.penalties(x), -logits)


def test_prototypes_are_distinct_plus_minus_one_bitmaps() -> None:
    w = digit_prototypes()
    assert w.shape == (10, 84)
    assert set(w.unique().tolist()) == {-1.0, 1.0}
    hamming = (w.unsqueeze(0) != w.unsqueeze(1)).sum(-1)  # (10, 10)
    off_diagonal = hamming[~torch.eye(10, dtype=torch.bool)]
    assert off_diagonal.min() >= 8, "two digit bitmaps are too alike to tell apart"


def test_prototypes_are_not_trained() -> None:
    model = nnatlas.create("lenet5_1998")
    before = model.output.prototypes.clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = F.cross_entropy(model(torch.randn(4, 1, 32, 32)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    opt.step()
    assert torch.equal(model.output.prototypes, before)
    assert model.C3.weight.grad is not None and model.S2.weight.grad is not None


def test_lenet5_init_follows_appendix_a() -> None:
    model = nnatlas.create("lenet5_1998")
    assert model.C1.weight.abs().max() <= 2.4 / 25
    assert model.F6.weight.abs().max() <= 2.4 / 120
    first_six = model.C3.weight[:18]  # the first six C3 maps read 3 maps each: fan-in 75
    assert first_six.abs().max() <= 2.4 / 75 and model.C3.weight[-6:].abs().max() <= 2.4 / 150


def test_lenet5_num_classes_keeps_the_first_prototypes() -> None:
    model = nnatlas.create("lenet5_1998", num_classes=4)
    assert model(torch.randn(1, 1, 32, 32)).shape == (1, 4)
    torch.testing.assert_close(model.output.prototypes, digit_prototypes()[:4])


# --- configs and inputs ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, overrides",
    [
        ("lenet", {"num_classes": 0}),
        ("lenet", {"in_channels": 0}),
        ("lenet", {"image_size": 12}),  # nothing left after two convs and pools
        ("lenet", {"activation": "tanh"}),
        ("lenet", {"pool": "sum"}),
        ("lenet_d2l", {"padding": -1}),
        ("lenet5_1998", {"num_classes": 0}),
        ("lenet5_1998", {"num_classes": 11}),  # ten digit prototypes
        ("lenet5_1998", {"amplitude": 0.0}),
    ],
)
def test_invalid_configs_raise(name: str, overrides: dict) -> None:
    with pytest.raises(nnatlas.ConfigError):
        nnatlas.create(name, **overrides)


def test_configs_are_frozen_and_derive_the_feature_size() -> None:
    assert LeNetConfig().feature_size == 5 and LeNetConfig(image_size=28, padding=2).feature_size == 5
    assert LeNetConfig(image_size=28).feature_size == 4
    with pytest.raises(AttributeError):
        LeNet5Config().num_classes = 3  # type: ignore[misc]


@pytest.mark.parametrize("name", ["lenet", "lenet_d2l", "lenet_bn", "lenet5_1998"])
def test_wrong_size_names_the_model_and_both_shapes(name: str) -> None:
    model = nnatlas.create(name)
    expected = r"LeNet5? expects input \(B, 1, (32, 32|28, 28)\); got \(2, 3, 30, 30\)"
    with pytest.raises(nnatlas.ShapeError, match=expected):
        model(torch.randn(2, 3, 30, 30))
