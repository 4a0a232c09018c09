"""DenseNet: layer, block and transition on their own, the channel schedule, and equality with torchvision."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import nnatlas
from nnatlas.errors import ConfigError, ReferenceMismatchError, ShapeError
from nnatlas.models.densenet import DenseBlock, DenseLayer, DenseNetConfig, Transition, _torchvision_key
from model_checks import assert_grads_and_buffers_match


def _body_shapes(model: torch.nn.Module, x: torch.Tensor) -> list[tuple[int, ...]]:
    """(C, H, W) after the stem and after every dense block and transition, stepping through the submodules."""
    shapes = []
    with torch.no_grad():
        x = model.pool0(model.relu0(model.norm0(model.conv0(x))))
        shapes.append(tuple(x.shape[1:]))
        for i in range(1, 5):
            x = getattr(model, f"denseblock{i}")(x)
            shapes.append(tuple(x.shape[1:]))
            if i < 4:
                x = getattr(model, f"transition{i}")(x)
                shapes.append(tuple(x.shape[1:]))
    return shapes


def test_densenet121_channels_follow_seed_000() -> None:
    with torch.device("meta"):  # shapes only: the meta device skips the arithmetic (the contract test runs it)
        model = nnatlas.create("densenet121").eval()
        shapes = _body_shapes(model, torch.empty(1, 3, 224, 224))
    channels = [c for c, _, _ in shapes]
    sizes = [h for _, h, _ in shapes]
    assert channels == [64, 256, 128, 512, 256, 1024, 512, 1024]
    assert sizes == [56, 56, 28, 28, 14, 14, 7, 7]
    assert all(h == w for _, h, w in shapes)


@pytest.mark.parametrize("name, final", [("densenet169", 1664), ("densenet201", 1920)])
def test_deeper_variants_final_channels(name: str, final: int) -> None:
    with torch.device("meta"):  # shapes only
        model = nnatlas.create(name).eval()
        shapes = _body_shapes(model, torch.empty(1, 3, 224, 224))
    assert shapes[-1] == (final, 7, 7)
    assert model.classifier.in_features == final


def test_dense_layer_concatenates_its_input() -> None:
    layer = DenseLayer(64, growth_rate=32, bn_size=4).eval()
    x = torch.randn(1, 64, 8, 8)
    with torch.no_grad():
        y = layer(x)
    assert y.shape == (1, 96, 8, 8)
    torch.testing.assert_close(y[:, :64], x, rtol=0, atol=0)  # the input passes through untouched
    assert layer.conv1.out_channels == 128 and layer.conv2.kernel_size == (3, 3)


def test_dense_block_grows_by_k_per_layer() -> None:
    block = DenseBlock(6, 64, growth_rate=32, bn_size=4)
    assert [layer.norm1.num_features for layer in block.layers] == [64 + 32 * i for i in range(6)]
    with torch.no_grad():
        assert block.eval()(torch.randn(1, 64, 4, 4)).shape == (1, 256, 4, 4)


def test_transition_average_pools() -> None:
    t = Transition(4, 2).eval()
    x = torch.randn(1, 4, 6, 6)
    with torch.no_grad():
        expected = F.avg_pool2d(t.conv(F.relu(t.norm(x))), 2)  # the paper's 2x2 average pool (not the seed's max)
        torch.testing.assert_close(t(x), expected)
        assert not torch.allclose(t(x), F.max_pool2d(t.conv(F.relu(t.norm(x))), 2))


@pytest.mark.parametrize(
    "overrides",
    [
        {"growth_rate": -1},
        {"bn_size": 0},
        {"num_init_features": -1},
        {"block_config": ()},
        {"block_config": (6, 0)},
        {"compression": 0.0},
        {"compression": 1.5},
        {"drop_rate": 1.0},
    ],
)
def test_config_rejects(overrides: dict) -> None:
    with pytest.raises(ValueError):
        DenseNetConfig(**overrides)
    with pytest.raises(ConfigError):
        nnatlas.create("densenet121", **overrides)


def test_small_config_forward() -> None:
    model = nnatlas.create("densenet121", growth_rate=4, block_config=(2, 2), num_init_features=8, num_classes=3).eval()
    assert not hasattr(model, "transition2")
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3)  # 8 + 8 -> 8 (theta 0.5) -> 8 + 8 = 16 features
    assert model.num_features == 16


def test_wrong_channels_name_the_model() -> None:
    with pytest.raises(ShapeError, match=r"DenseNet.*expects input \(B, 3, H, W\); got \(2, 1, 32, 32\)"):
        nnatlas.create("densenet121", block_config=(1, 1))(torch.randn(2, 1, 32, 32))


def test_card_records_seed_errata() -> None:
    assert "max-pool" in nnatlas.card("densenet121").notes


# --- torchvision ------------------------------------------------------------------------


def test_matches_torchvision_densenet121() -> None:
    """Eval outputs, train-mode gradients of every mapped parameter, and BN running statistics after the step."""
    tv = pytest.importorskip("torchvision")
    ref = tv.models.densenet121(num_classes=10)
    ours = nnatlas.from_reference("densenet121", ref)
    assert ours.config.num_classes == 10
    x = torch.randn(2, 3, 32, 32)  # small: the last block runs at 1x1

    ours.eval(), ref.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=0)  # fp32, same kernels

    ours.train(), ref.train()
    target = torch.tensor([3, 7])
    F.cross_entropy(ours(x), target).backward()
    F.cross_entropy(ref(x), target).backward()
    assert_grads_and_buffers_match(ours, ref, _torchvision_key)


def test_config_read_from_reference() -> None:
    tv = pytest.importorskip("torchvision")
    with torch.device("meta"):
        ref = tv.models.DenseNet(
            growth_rate=12, block_config=(6, 12, 24, 16), num_init_features=24, bn_size=2, drop_rate=0.1, num_classes=7
        )
        ours = nnatlas.from_reference("densenet121", ref)
    c = ours.config
    assert (c.growth_rate, c.num_init_features, c.bn_size, c.drop_rate, c.num_classes) == (12, 24, 2, 0.1, 7)


@pytest.mark.parametrize("name", ["densenet121", "densenet169", "densenet201"])
def test_key_map_covers_every_variant(name: str) -> None:
    tv = pytest.importorskip("torchvision")
    with torch.device("meta"):  # keys and shapes only
        ref = getattr(tv.models, name)()
        ours = nnatlas.from_reference(name, ref)
    assert sorted(_torchvision_key(k) for k in ours.state_dict()) == sorted(ref.state_dict())
    assert _torchvision_key("denseblock2.layers.0.norm1.weight") == "features.denseblock2.denselayer1.norm1.weight"


def test_mismatched_reference_raises() -> None:
    tv = pytest.importorskip("torchvision")
    with torch.device("meta"):
        with pytest.raises(ReferenceMismatchError, match="dense blocks"):
            nnatlas.from_reference("densenet169", tv.models.densenet121())

        extra = tv.models.densenet121()
        extra.register_buffer("extra", torch.zeros(1))
        with pytest.raises(ReferenceMismatchError, match="not used.*extra"):
            nnatlas.from_reference("densenet121", extra)

        missing = tv.models.densenet121()
        missing.features.transition1.norm = torch.nn.Identity()
        with pytest.raises(ReferenceMismatchError, match="transition1.norm"):
            nnatlas.from_reference("densenet121", missing)

        wrong = tv.models.densenet121()
        wrong.features.transition2.conv = torch.nn.Conv2d(512, 256, 3, bias=False)
        with pytest.raises(ReferenceMismatchError, match="shapes differ"):
            nnatlas.from_reference("densenet121", wrong)
