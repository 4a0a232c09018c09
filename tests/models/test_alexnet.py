"""AlexNet family: the 2012 paper's towers, LRN and shapes; d2l's; torchvision equivalence and key mapping."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nnatlas
from nnatlas.models.alexnet import AlexNetConfig, TowerLRN, torchvision_key_map
from model_checks import shapes_after, trainable


def test_alexnet_2012_feature_maps_55_27_13_6() -> None:
    with torch.device("meta"):
        model = nnatlas.create("alexnet_2012").eval()
        names = ["conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5", "flatten"]
        seen = shapes_after(model, names, torch.randn(1, 3, 227, 227))
    assert seen == {
        "conv1": (1, 96, 55, 55),
        "pool1": (1, 96, 27, 27),
        "conv2": (1, 256, 27, 27),
        "pool2": (1, 256, 13, 13),
        "conv3": (1, 384, 13, 13),
        "conv4": (1, 384, 13, 13),
        "conv5": (1, 256, 13, 13),
        "pool5": (1, 256, 6, 6),
        "flatten": (1, 9216),
    }


def test_alexnet_2012_towers_and_parameter_count() -> None:
    with torch.device("meta"):
        model = nnatlas.create("alexnet_2012")
    assert [getattr(model, f"conv{i}").groups for i in range(1, 6)] == [1, 2, 1, 2, 2]
    assert model.conv2.weight.shape == (256, 48, 5, 5)  # a tower's kernel reads its own 48 maps
    assert model.conv3.weight.shape == (384, 256, 3, 3)  # conv3 reads both towers
    assert model.conv5.weight.shape == (256, 192, 3, 3)
    assert trainable(model) == 60_965_224  # the figure in the card's notes
    assert "60,965,224" in nnatlas.card("alexnet_2012").notes
    names = [n for n, _ in model.classifier.named_children()]
    assert names == ["fc6", "relu6", "drop6", "fc7", "relu7", "drop7", "fc8"]  # dropout after fc6, fc7 (paper)


def test_alexnet_2012_towers_are_independent_where_grouped() -> None:
    """conv2's second tower does not see the first tower's maps; conv3 sees both."""
    model = nnatlas.create("alexnet_2012")
    x = torch.randn(1, 96, 27, 27)
    x2 = x.clone()
    x2[:, :48] += 1.0  # change only tower 1's maps
    with torch.no_grad():
        torch.testing.assert_close(model.conv2(x2)[:, 128:], model.conv2(x)[:, 128:])
        assert not torch.allclose(model.conv2(x2)[:, :128], model.conv2(x)[:, :128])
        y = torch.randn(1, 256, 13, 13)
        y2 = y.clone()
        y2[:, :128] += 1.0
        assert not torch.allclose(model.conv3(y2)[:, 192:], model.conv3(y)[:, 192:])


def test_lrn_uses_the_papers_constants_per_tower() -> None:
    model = nnatlas.create("alexnet_2012")
    for norm in (model.norm1, model.norm2):
        assert isinstance(norm, TowerLRN) and norm.groups == 2
        lrn = norm.lrn
        assert isinstance(lrn, nnatlas.nn.LocalResponseNorm)
        assert (lrn.size, lrn.alpha, lrn.beta, lrn.k) == (5, 5e-4, 0.75, 2.0)  # paper alpha 1e-4 = torch alpha / n
    # the paper's formula, written out: b_i = a_i / (k + 1e-4 * sum_{|j - i| <= 2, same tower} a_j^2) ^ 0.75
    a = torch.randn(2, 8, 3, 3) * 20
    b = TowerLRN(2, size=5, alpha=5e-4, beta=0.75, k=2.0)(a)
    expected = torch.empty_like(a)
    for i in range(8):
        tower = range(0, 4) if i < 4 else range(4, 8)
        window = [j for j in tower if abs(j - i) <= 2]
        expected[:, i] = a[:, i] / (2.0 + 1e-4 * a[:, window].pow(2).sum(1)) ** 0.75
    torch.testing.assert_close(b, expected, rtol=1e-5, atol=1e-6)


def test_alexnet_2012_requires_227() -> None:
    model = nnatlas.create("alexnet_2012")
    with pytest.raises(nnatlas.ShapeError, match=r"AlexNet expects input \(B, 3, 227, 227\); got \(1, 3, 224, 224\)"):
        model(torch.randn(1, 3, 224, 224))


def test_alexnet_d2l_matches_the_seed_code() -> None:
    """Seed 002's nn.Sequential with the same weights gives the same logits (eval mode)."""
    seed = nn.Sequential(
        nn.Conv2d(1, 96, kernel_size=11, stride=4, padding=1), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(96, 256, kernel_size=5, padding=2), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(256, 384, kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 384, kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Flatten(),
        nn.Linear(6400, 4096), nn.ReLU(), nn.Dropout(p=0.5),
        nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(p=0.5),
        nn.Linear(4096, 1000),
    ).eval()  # fmt: skip
    model = nnatlas.create("alexnet_d2l").eval()
    ours = [model.conv1, model.conv2, model.conv3, model.conv4, model.conv5]
    ours += [model.classifier.fc6, model.classifier.fc7, model.classifier.fc8]
    for a, b in zip(ours, [m for m in seed if isinstance(m, (nn.Conv2d, nn.Linear))], strict=True):
        a.load_state_dict(b.state_dict())
    x = torch.randn(1, 1, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), seed(x), rtol=1e-5, atol=1e-5)  # fp32, same ops
    assert trainable(model) == 50_820_776 and "50,820,776" in nnatlas.card("alexnet_d2l").notes
    seen = shapes_after(model, ["conv1", "pool1", "pool2", "pool5", "flatten"], x)
    assert seen["conv1"] == (1, 96, 54, 54) and seen["pool2"] == (1, 256, 12, 12) and seen["flatten"] == (1, 6400)


def test_alexnet_accepts_any_size_from_63() -> None:
    model = nnatlas.create("alexnet", num_classes=7).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 63, 80)).shape == (1, 7)
    with pytest.raises(nnatlas.ShapeError, match=r"H, W >= 63; got \(1, 3, 62, 80\)"):
        model(torch.randn(1, 3, 62, 80))


@pytest.mark.parametrize(
    "overrides",
    [
        {"num_classes": 0},
        {"in_channels": 0},
        {"hidden": 0},
        {"channels": (64, 192, 384, 256)},
        {"groups": (1, 3, 1, 1, 1)},  # 64 maps do not split in 3 towers
        {"conv1_padding": -1},
        {"dropout": 1.0},
        {"dropout_at": "middle"},
        {"image_size": 50},
    ],
)
def test_invalid_configs_raise(overrides: dict) -> None:
    with pytest.raises(nnatlas.ConfigError):
        nnatlas.create("alexnet", **overrides)


def test_min_size_and_feature_size() -> None:
    assert AlexNetConfig().min_size == 63
    assert AlexNetConfig(conv1_padding=0).feature_size(227) == 6
    assert AlexNetConfig(conv1_padding=1).feature_size(224) == 5


# --- torchvision ------------------------------------------------------------------------------


def _reference_grads(ref: nn.Module, x: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    ref.zero_grad()
    F.cross_entropy(ref(x), target).backward()
    return {k: p.grad for k, p in ref.named_parameters()}


def test_from_torchvision_matches_outputs_and_gradients() -> None:
    tv = pytest.importorskip("torchvision")
    ref = tv.models.alexnet(num_classes=10).eval()
    model = nnatlas.from_reference("alexnet", ref)
    assert model.config.num_classes == 10 and model.classifier.fc8.out_features == 10
    assert not model.training
    x, target = torch.randn(2, 3, 64, 64), torch.tensor([3, 7])
    torch.testing.assert_close(model(x), ref(x), rtol=0, atol=1e-5)  # fp32, the same kernels
    ref_grads = _reference_grads(ref, x, target)
    F.cross_entropy(model(x), target).backward()
    for key, p in model.named_parameters():
        torch.testing.assert_close(p.grad, ref_grads[torchvision_key_map(key)], rtol=1e-4, atol=1e-6)


def test_from_torchvision_train_mode_draws_the_same_dropout() -> None:
    """Dropout on the inputs of fc6 and fc7, as torchvision places it: the same seed gives the same masks."""
    tv = pytest.importorskip("torchvision")
    ref = tv.models.alexnet(num_classes=5).train()
    model = nnatlas.from_reference("alexnet", ref)
    assert model.training
    x = torch.randn(2, 3, 64, 64)
    torch.manual_seed(1)
    expected = ref(x)
    torch.manual_seed(1)
    torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-5)


def test_key_map_covers_the_torchvision_state_dict() -> None:
    tv = pytest.importorskip("torchvision")
    with torch.device("meta"):
        ref = tv.models.alexnet()
        model = nnatlas.create("alexnet")
    mapped = {torchvision_key_map(k) for k in model.state_dict()}
    assert mapped == set(ref.state_dict())
    for k, v in model.state_dict().items():
        assert v.shape == ref.state_dict()[torchvision_key_map(k)].shape


def test_mismatched_reference_raises() -> None:
    tv = pytest.importorskip("torchvision")
    with torch.device("meta"):  # the error comes before any weight is copied: no memory, no time
        extra = tv.models.alexnet()
        extra.features.add_module("13", nn.Conv2d(256, 256, 1))  # a key nnatlas has no place for
        missing = tv.models.alexnet()
        missing.features[8] = nn.Identity()  # conv4 gone
        misshaped = tv.models.alexnet()
        misshaped.classifier[4] = nn.Linear(4096, 2048)
        for ref, what in ((extra, "not used"), (missing, "without"), (misshaped, "shapes differ")):
            with pytest.raises(nnatlas.ReferenceMismatchError, match=what):
                nnatlas.from_reference("alexnet", ref)
        with pytest.raises(nnatlas.ReferenceMismatchError, match="expects torchvision.models.AlexNet"):
            nnatlas.from_reference("alexnet", nn.Linear(3, 3))


def test_from_torchvision_keeps_the_reference_dtype() -> None:
    tv = pytest.importorskip("torchvision")
    ref = tv.models.alexnet(num_classes=3).double().eval()
    model = nnatlas.from_reference("alexnet", ref)
    assert model.conv1.weight.dtype == torch.float64
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    torch.testing.assert_close(model(x), ref(x), rtol=0, atol=1e-10)  # fp64
