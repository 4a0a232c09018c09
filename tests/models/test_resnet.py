"""ResNet: blocks on their own, stage shapes, and equality with torchvision through the key map."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import nnatlas
from nnatlas.errors import ConfigError, ReferenceMismatchError, ShapeError
from nnatlas.models.resnet import BasicBlock, Bottleneck, ResNetConfig, _torchvision_key
from model_checks import assert_grads_and_buffers_match


def _stage_shapes(model: torch.nn.Module, x: torch.Tensor) -> list[tuple[int, ...]]:
    """(C, H, W) after the stem's max-pool and after each of layer1..layer4, stepping through the submodules."""
    shapes = []
    with torch.no_grad():
        x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        shapes.append(tuple(x.shape[1:]))
        for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
            x = stage(x)
            shapes.append(tuple(x.shape[1:]))
    return shapes


def test_resnet18_stage_shapes_follow_seed_000() -> None:
    model = nnatlas.create("resnet18").eval()
    shapes = _stage_shapes(model, torch.randn(1, 3, 224, 224))  # a real forward, batch 1
    assert shapes == [(64, 56, 56), (64, 56, 56), (128, 28, 28), (256, 14, 14), (512, 7, 7)]


def test_resnet50_stage_shapes() -> None:
    with torch.device("meta"):  # shapes only: the meta device skips the arithmetic
        model = nnatlas.create("resnet50").eval()
        shapes = _stage_shapes(model, torch.empty(1, 3, 224, 224))
    assert shapes == [(64, 56, 56), (256, 56, 56), (512, 28, 28), (1024, 14, 14), (2048, 7, 7)]


def test_basic_block_identity_and_down_block() -> None:
    block = BasicBlock(64, 64, 1)  # seed 000's ConvBlock
    assert block.downsample is None
    assert sum(p.numel() for p in block.parameters()) == 2 * 64 * 64 * 9 + 2 * 2 * 64
    down = BasicBlock(64, 128, 2).eval()  # seed 000's DownConvBlock: 3x3/2 path, 1x1/2 conv shortcut (+ BN)
    assert down.downsample[0].kernel_size == (1, 1) and down.downsample[0].stride == (2, 2)
    with torch.no_grad():
        assert down(torch.randn(1, 64, 56, 56)).shape == (1, 128, 28, 28)


def test_basic_block_adds_the_identity() -> None:
    block = BasicBlock(8, 8, 1).eval()
    torch.nn.init.zeros_(block.bn2.weight)  # F(x) = 0, so y = relu(x)
    x = torch.randn(2, 8, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(block(x), F.relu(x))


def test_bottleneck_is_v1_5() -> None:
    block = Bottleneck(256, 128, 2).eval()
    assert block.conv1.stride == (1, 1) and block.conv2.stride == (2, 2)  # V1.5: stride in the 3x3
    with torch.no_grad():
        assert block(torch.randn(1, 256, 16, 16)).shape == (1, 512, 8, 8)


@pytest.mark.parametrize(
    "overrides",
    [{"layers": (2, 2, 2)}, {"layers": (2, 0, 2, 2)}, {"block": "wide"}, {"num_classes": 0}, {"in_channels": -1}],
)
def test_config_rejects(overrides: dict) -> None:
    with pytest.raises(ConfigError):
        ResNetConfig(**overrides)


def test_wrong_channels_name_the_model() -> None:
    with pytest.raises(ShapeError, match=r"ResNet.*expects input \(B, 3, H, W\); got \(1, 1, 32, 32\)"):
        nnatlas.create("resnet18")(torch.randn(1, 1, 32, 32))


def test_in_channels_override() -> None:
    model = nnatlas.create("resnet18", in_channels=1, num_classes=7).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 32, 32)).shape == (1, 7)


def test_card_records_seed_errata() -> None:
    assert "BatchNorm" in nnatlas.card("resnet18").notes
    assert "V1.5" in nnatlas.card("resnet50").title


# --- torchvision ------------------------------------------------------------------------


def _assert_equivalent(ours: torch.nn.Module, ref: torch.nn.Module, x: torch.Tensor) -> None:
    """Eval outputs, train-mode gradients of every mapped parameter, and BN running statistics after the step."""
    ours.eval(), ref.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=0)  # fp32, same kernels

    ours.train(), ref.train()
    target = torch.arange(x.shape[0]) % 10
    F.cross_entropy(ours(x), target).backward()
    F.cross_entropy(ref(x), target).backward()
    assert_grads_and_buffers_match(ours, ref, _torchvision_key)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_matches_torchvision(name: str) -> None:
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    ref = getattr(tv.models, name)(num_classes=10)
    ours = nnatlas.from_reference(name, ref)
    assert ours.config.num_classes == 10
    _assert_equivalent(ours, ref, torch.randn(2, 3, 32, 32))  # small: layer4 runs at 1x1


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50"])
def test_key_map_covers_every_variant(name: str) -> None:
    tv = pytest.importorskip("torchvision")
    with torch.device("meta"):  # keys and shapes only
        ref = getattr(tv.models, name)(num_classes=5)
        ours = nnatlas.from_reference(name, ref)
    assert ours.config.num_classes == 5
    assert sorted(_torchvision_key(k) for k in ours.state_dict()) == sorted(ref.state_dict())


def test_mismatched_reference_raises() -> None:
    tv = pytest.importorskip("torchvision")
    with torch.device("meta"):
        with pytest.raises(ReferenceMismatchError, match="Bottleneck"):
            nnatlas.from_reference("resnet50", tv.models.resnet18())  # another architecture
        with pytest.raises(ReferenceMismatchError, match="groups"):
            nnatlas.from_reference("resnet50", tv.models.resnext50_32x4d())

        extra = tv.models.resnet18()
        extra.register_buffer("extra", torch.zeros(1))
        with pytest.raises(ReferenceMismatchError, match="not used.*extra"):
            nnatlas.from_reference("resnet18", extra)

        missing = tv.models.resnet18()
        missing.layer1[0].bn1 = torch.nn.Identity()
        with pytest.raises(ReferenceMismatchError, match="layer1.0.bn1"):
            nnatlas.from_reference("resnet18", missing)

        wide = tv.models.resnet18()
        wide.layer4[1].conv2 = torch.nn.Conv2d(512, 512, 5, padding=2, bias=False)
        with pytest.raises(ReferenceMismatchError, match="shapes differ"):
            nnatlas.from_reference("resnet18", wide)
