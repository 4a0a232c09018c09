"""U-Net family: milesial's parameter counts (transposed conv and bilinear), the paper's 572 -> 388, skips."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import nnatlas
from nnatlas.models.unet import DoubleConv, Up, UNetConfig, valid_unpadded_sizes
from model_checks import trainable


def test_unet_parameter_counts_transposed_and_bilinear() -> None:
    with torch.device("meta"):
        assert trainable(nnatlas.create("unet")) == 31_037_698
        assert trainable(nnatlas.create("unet", bilinear=True)) == 17_263_042
        assert trainable(nnatlas.create("unet_2015")) == 31_030_658


def test_bilinear_halves_the_deep_channels() -> None:
    model = nnatlas.create("unet", bilinear=True, base_channels=8)
    assert isinstance(model.up1.up, nn.Upsample) and model.up1.up.mode == "bilinear" and model.up1.up.align_corners
    assert model.down4.maxpool_conv[1].double_conv[0].out_channels == 64  # 16c / 2
    assert model.up1.conv.double_conv[0].out_channels == 64  # mid = in / 2
    assert model.up1.conv.double_conv[3].out_channels == 32  # 8c / 2
    x = torch.randn(2, 3, 37, 50)  # odd sizes: the up-sampled maps are padded to the skips
    assert model(x).shape == (2, 2, 37, 50)
    transposed = nnatlas.create("unet", base_channels=8)
    assert isinstance(transposed.up1.up, nn.ConvTranspose2d) and transposed.up1.up.out_channels == 64
    assert transposed(x).shape == (2, 2, 37, 50)


def test_milesial_state_dict_keys() -> None:
    """Module names and Sequential indices are the repository's, so its checkpoints load by key."""
    with torch.device("meta"):
        keys = set(nnatlas.create("unet").state_dict())
    for key in (
        "inc.double_conv.0.weight",
        "inc.double_conv.1.running_mean",
        "inc.double_conv.4.weight",
        "down1.maxpool_conv.1.double_conv.3.weight",
        "down4.maxpool_conv.1.double_conv.4.bias",
        "up1.up.weight",
        "up4.conv.double_conv.0.weight",
        "outc.conv.weight",
        "outc.conv.bias",
    ):
        assert key in keys, key
    assert "inc.double_conv.0.bias" not in keys  # no conv bias before batch norm


def test_double_conv_matches_the_seed_code() -> None:
    """Seed 003's DoubleConv with the same weights (its conv biases zeroed: milesial dropped them)."""
    seed = nn.Sequential(
        nn.Conv2d(4, 6, kernel_size=3, padding=1), nn.BatchNorm2d(6), nn.ReLU(inplace=True),
        nn.Conv2d(6, 5, kernel_size=3, padding=1), nn.BatchNorm2d(5), nn.ReLU(inplace=True),
    )  # fmt: skip
    ours = DoubleConv(4, 5, 6)
    state = {k: v for k, v in seed.state_dict().items() if k not in ("0.bias", "3.bias")}
    with torch.no_grad():
        seed[0].bias.zero_()
        seed[3].bias.zero_()
    ours.double_conv.load_state_dict(state)
    x = torch.randn(2, 4, 9, 9)
    torch.testing.assert_close(ours(x), seed(x), rtol=1e-5, atol=1e-5)  # train mode: batch statistics
    torch.testing.assert_close(ours.double_conv[1].running_mean, seed[1].running_mean)


def test_up_pads_the_upsampled_map_and_concatenates_skip_first() -> None:
    up = Up(8, 4, bilinear=True)
    x, skip = torch.randn(1, 4, 3, 3), torch.randn(1, 4, 7, 7)  # 3 -> 6, padded to 7
    seen: list[torch.Tensor] = []
    up.conv.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    assert up(x, skip).shape == (1, 4, 7, 7)
    torch.testing.assert_close(seen[0][:, :4], skip)  # torch.cat([x2, x1]): the skip comes first
    assert torch.all(seen[0][:, 4:, 6, :] == 0)  # the padded row


def test_unet_2015_572_to_388_with_paper_shapes() -> None:
    with torch.device("meta"):
        model = nnatlas.create("unet_2015").eval()
        names = ["inc", "down1", "down2", "down3", "down4", "up1", "up2", "up3", "up4", "outc"]
        seen: dict[str, tuple[int, ...]] = {}
        for n in names:
            model.get_submodule(n).register_forward_hook(lambda m, a, o, n=n: seen.__setitem__(n, tuple(o.shape)))
        out = model(torch.randn(1, 1, 572, 572))
    assert out.shape == (1, 2, 388, 388)
    assert seen == {
        "inc": (1, 64, 568, 568),
        "down1": (1, 128, 280, 280),
        "down2": (1, 256, 136, 136),
        "down3": (1, 512, 64, 64),
        "down4": (1, 1024, 28, 28),
        "up1": (1, 512, 52, 52),
        "up2": (1, 256, 100, 100),
        "up3": (1, 128, 196, 196),
        "up4": (1, 64, 388, 388),
        "outc": (1, 2, 388, 388),
    }


def test_unet_2015_is_the_papers_layers() -> None:
    model = nnatlas.create("unet_2015")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    ups = [m for m in model.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert len(convs) + len(ups) == 23  # "In total the network has 23 convolutional layers": 18 3x3, 4 up-conv, 1x1
    assert all(m.padding == (0, 0) for m in convs)
    assert not any(isinstance(m, nnatlas.nn.BatchNorm2d) for m in model.modules())
    assert [(m.in_channels, m.out_channels, m.kernel_size) for m in ups] == [
        (1024, 512, (2, 2)), (512, 256, (2, 2)), (256, 128, (2, 2)), (128, 64, (2, 2))
    ]  # fmt: skip


def test_unet_2015_crops_the_skip_centre() -> None:
    up = Up(8, 4, padded=False, batch_norm=False)
    x, skip = torch.randn(1, 8, 4, 4), torch.randn(1, 4, 12, 12)  # up-conv 4 -> 8: crop 12 -> 8 at offset 2
    seen: list[torch.Tensor] = []
    up.conv.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    assert up(x, skip).shape == (1, 4, 4, 4)
    torch.testing.assert_close(seen[0][:, :4], skip[:, :, 2:10, 2:10])


def test_unet_2015_runs_on_any_valid_size_and_rejects_the_rest() -> None:
    model = nnatlas.create("unet_2015", base_channels=4).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 188, 204)).shape == (1, 2, 4, 20)
    assert valid_unpadded_sizes(572)[0] == 188 and 572 in valid_unpadded_sizes(572)
    for bad in (187, 190, 172, 572 + 8):
        with pytest.raises(nnatlas.ShapeError, match=r"16 m \+ 60.*188, 204, 220"):
            model(torch.randn(1, 1, bad, 188))


def test_padded_unet_rejects_maps_too_small_to_pool() -> None:
    model = nnatlas.create("unet", base_channels=4)
    with pytest.raises(nnatlas.ShapeError, match=r"H, W >= 16.*got \(1, 3, 15, 32\)"):
        model(torch.randn(1, 3, 15, 32))
    with pytest.raises(nnatlas.ShapeError, match=r"UNet expects input \(B, 3, H, W\); got \(1, 1, 32, 32\)"):
        model(torch.randn(1, 1, 32, 32))


def test_unet_2015_dropout_at_the_bottom_only_in_training() -> None:
    model = nnatlas.create("unet_2015", base_channels=2)
    assert isinstance(model.drop, nn.Dropout) and model.drop.p == 0.5
    x = torch.randn(1, 1, 188, 188)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x))
    assert isinstance(nnatlas.create("unet", base_channels=2).drop, nn.Identity)


@pytest.mark.parametrize(
    "overrides",
    [
        {"num_classes": 0},
        {"in_channels": 0},
        {"base_channels": 0},
        {"base_channels": 3, "bilinear": True},  # odd widths do not halve
        {"bilinear": True, "padded": False},
        {"dropout": 1.0},
    ],
)
def test_invalid_configs_raise(overrides: dict) -> None:
    with pytest.raises(nnatlas.ConfigError):
        nnatlas.create("unet", **overrides)


def test_config_is_frozen() -> None:
    with pytest.raises(AttributeError):
        UNetConfig().bilinear = True  # type: ignore[misc]
