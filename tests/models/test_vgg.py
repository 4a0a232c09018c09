"""VGG family: block structure (the seed's errata corrected), 224 -> 7 maps, torchvision equivalence and key maps."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nnatlas
from nnatlas.models.vgg import LAYERS, VGGConfig, torchvision_key_map, vgg_block

VARIANTS = ["vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn"]


def test_vgg_block_reads_like_the_seed() -> None:
    """Seed 002's vgg_block: num_convs x (conv 3x3 p1, ReLU), then a 2x2 max-pool."""
    block = vgg_block(3, 128, 256)
    assert [type(m) for m in block] == [nn.Conv2d, nn.ReLU] * 3 + [nn.MaxPool2d]
    assert [n for n, _ in block.named_children()] == ["conv1", "relu1", "conv2", "relu2", "conv3", "relu3", "pool"]
    assert block.conv1.in_channels == 128 and block.conv2.in_channels == 256
    assert block(torch.randn(1, 128, 8, 8)).shape == (1, 256, 4, 4)
    bn_block = vgg_block(2, 3, 8, batch_norm=True)
    assert [type(m).__name__ for m in bn_block] == ["Conv2d", "BatchNorm2d", "ReLU"] * 2 + ["MaxPool2d"]
    assert isinstance(bn_block.bn1, nnatlas.nn.BatchNorm2d)


def test_vgg16_has_a_relu_after_every_conv_and_three_linear_layers() -> None:
    """The seed draws one ReLU per two convs and four Linear layers; VGG-16 has neither."""
    with torch.device("meta"):
        model = nnatlas.create("vgg16")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    relus_in_blocks = [m for b in model.blocks for m in b if isinstance(m, nn.ReLU)]
    assert len(convs) == len(relus_in_blocks) == 13
    assert [sum(isinstance(m, nn.Conv2d) for m in b) for b in model.blocks] == [2, 2, 3, 3, 3]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(25088, 4096), (4096, 4096), (4096, 1000)]


def test_vgg16_feature_maps_112_56_28_14_7() -> None:
    with torch.device("meta"):
        model = nnatlas.create("vgg16").eval()
        seen: dict[str, tuple[int, ...]] = {}
        for i in range(1, 6):
            block = getattr(model, f"block{i}")
            block.register_forward_hook(lambda m, a, o, i=i: seen.__setitem__(f"block{i}", tuple(o.shape)))
        model.avgpool.register_forward_hook(lambda m, a, o: seen.__setitem__("avgpool", tuple(o.shape)))
        out = model(torch.randn(1, 3, 224, 224))
    assert seen == {
        "block1": (1, 64, 112, 112),
        "block2": (1, 128, 56, 56),
        "block3": (1, 256, 28, 28),
        "block4": (1, 512, 14, 14),
        "block5": (1, 512, 7, 7),
        "avgpool": (1, 512, 7, 7),
    }
    assert out.shape == (1, 1000)


@pytest.mark.parametrize("name", VARIANTS)
def test_depth_and_batch_norm_per_variant(name: str) -> None:
    with torch.device("meta"):
        model = nnatlas.create(name)
    depth = int(name[3:5])
    assert model.config.layers == LAYERS[depth]
    convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    assert convs + 3 == depth  # 8, 10, 13 or 16 convolutions and three linear layers
    assert model.config.batch_norm == name.endswith("_bn")
    assert sum(isinstance(m, nnatlas.nn.BatchNorm2d) for m in model.modules()) == (convs if name.endswith("_bn") else 0)


def test_small_inputs_and_the_size_check() -> None:
    model = nnatlas.create("vgg11", num_classes=3, hidden=16).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 48)).shape == (1, 3)
    expected = r"VGG expects input \(B, 3, H, W\) with H, W >= 32; got \(1, 3, 31, 64\)"
    with pytest.raises(nnatlas.ShapeError, match=expected):
        model(torch.randn(1, 3, 31, 64))


@pytest.mark.parametrize(
    "overrides",
    [
        {"num_classes": 0},
        {"in_channels": 0},
        {"hidden": 0},
        {"pool_size": 0},
        {"layers": ()},
        {"layers": (1, 1, 0, 2, 2)},
        {"channels": (64, 128, 256, 512)},  # four widths for five blocks
        {"dropout": -0.1},
    ],
)
def test_invalid_configs_raise(overrides: dict) -> None:
    with pytest.raises(nnatlas.ConfigError):
        nnatlas.create("vgg11", **overrides)


# --- torchvision ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", VARIANTS)
def test_key_map_covers_the_torchvision_state_dict(name: str) -> None:
    """Every variant's explicit key map is one-to-one with torchvision's keys and shapes (meta: no memory)."""
    tv = pytest.importorskip("torchvision")
    with torch.device("meta"):
        ref = getattr(tv.models, name)()
        model = nnatlas.create(name)
    keys = torchvision_key_map(model.config)
    ours, theirs = model.state_dict(), ref.state_dict()
    assert set(keys) == set(ours)
    assert sorted(keys.values()) == sorted(theirs)
    for k, v in ours.items():
        assert v.shape == theirs[keys[k]].shape, k


@pytest.mark.parametrize("name", ["vgg11", "vgg11_bn"])
def test_from_torchvision_matches_outputs_and_gradients(name: str) -> None:
    tv = pytest.importorskip("torchvision")
    ref = getattr(tv.models, name)(num_classes=10).eval()
    if name.endswith("_bn"):  # non-trivial running statistics, so eval mode really uses them
        with torch.no_grad():
            for m in ref.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.normal_(0, 0.1)
                    m.running_var.uniform_(0.5, 2.0)
                    m.weight.normal_(1, 0.1)
                    m.bias.normal_(0, 0.1)
    model = nnatlas.from_reference(name, ref)
    assert model.config.num_classes == 10 and not model.training
    keys = torchvision_key_map(model.config)
    x, target = torch.randn(2, 3, 32, 32), torch.tensor([1, 9])
    out, ref_out = model(x), ref(x)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-5)  # fp32, the same kernels
    F.cross_entropy(ref_out, target).backward()
    F.cross_entropy(out, target).backward()
    ref_params = dict(ref.named_parameters())
    for key, p in model.named_parameters():
        theirs = ref_params[keys[key]].grad
        # max-norm closeness: assert_close's element-wise temporaries over fc1's 102M entries take ~20 s on CPU
        assert (p.grad - theirs).abs().max() <= 1e-6 + 1e-4 * theirs.abs().max(), key

    # training mode: batch statistics, running-stat updates and dropout masks (same seed) agree
    ref.train()
    model.train()
    torch.manual_seed(3)
    expected = ref(x)
    torch.manual_seed(3)
    torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-5)
    if name.endswith("_bn"):
        torch.testing.assert_close(model.block3.bn2.running_var, ref.features[12].running_var)


def test_mismatched_reference_raises() -> None:
    tv = pytest.importorskip("torchvision")
    with torch.device("meta"):  # the error comes before any weight is copied: no memory, no time
        extra = tv.models.vgg11()
        extra.register_buffer("scale", torch.ones(1))  # a key nnatlas has no place for
        missing = tv.models.vgg11()
        missing.features[8] = nn.Identity()  # conv4 gone: its keys are absent
        misshaped = tv.models.vgg11()
        misshaped.features[3] = nn.Conv2d(64, 96, 3, padding=1)
        for ref, what in ((extra, "not used"), (missing, "without"), (misshaped, "shapes differ")):
            with pytest.raises(nnatlas.ReferenceMismatchError, match=what):
                nnatlas.from_reference("vgg11", ref)
        with pytest.raises(nnatlas.ReferenceMismatchError):
            nnatlas.from_reference("vgg11", tv.models.vgg13())  # VGG-13 weights do not fit VGG-11
        with pytest.raises(nnatlas.ReferenceMismatchError, match="not used"):
            nnatlas.from_reference("vgg11", tv.models.vgg11_bn())  # batch-norm weights left over
        not_vgg = tv.models.vgg11()
        not_vgg.features[0] = nn.Identity()
        with pytest.raises(nnatlas.ReferenceMismatchError, match="expects torchvision.models.VGG"):
            nnatlas.from_reference("vgg11", not_vgg)


def test_a_tiny_config_builds_and_runs() -> None:
    """Three narrow blocks: the config, not the class, fixes the depth (tiny configs keep tests fast)."""
    config = VGGConfig(layers=(1, 2, 1), channels=(4, 8, 8), num_classes=5, hidden=16, pool_size=2)
    assert config.min_size == 8
    overrides = {"layers": config.layers, "channels": config.channels, "hidden": 16, "pool_size": 2}
    model = nnatlas.create("vgg11", num_classes=5, **overrides)
    assert model.config == dataclasses.replace(config, batch_norm=False)
    out = model(torch.randn(2, 3, 8, 8))
    assert out.shape == (2, 5)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
