"""GoogLeNet: the Inception block against seed 002's table, the paper's Table 1, and equality with torchvision."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import nnatlas
from nnatlas.errors import ConfigError, ReferenceMismatchError, ShapeError
from nnatlas.models.googlenet import (
    GOOGLENET_AUX_PARAMS,
    GOOGLENET_PARAMS,
    INCEPTION_CHANNELS,
    GoogLeNetConfig,
    GoogLeNetOutputs,
    Inception,
    _torchvision_key,
)
from nnatlas.nn import BatchNorm2d, LocalResponseNorm
from model_checks import assert_grads_and_buffers_match


def _conv_weights(module: torch.nn.Module) -> int:
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, torch.nn.Conv2d))


def _n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- the Inception block, seed 002 ------------------------------------------------------


def test_inception_3a_matches_seed_002_table() -> None:
    block = Inception(192, 64, (96, 128), (16, 32), 32).eval()  # the seed's (d2l) signature
    assert _conv_weights(block) == 163_328  # the table's "0.16 M" (biases excluded)
    macs = []

    def count(conv: torch.nn.Conv2d, inputs: object, out: torch.Tensor) -> None:
        kh, kw = conv.kernel_size
        macs.append(out.numel() * conv.in_channels * kh * kw)  # one multiply-add per weight per output position

    hooks = [m.register_forward_hook(count) for m in block.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        y = block(torch.randn(1, 192, 28, 28))
    for h in hooks:
        h.remove()
    assert y.shape == (1, 256, 28, 28)
    assert sum(macs) == 163_328 * 28 * 28  # the table's "128 MFLOPs" are multiply-adds: 128.05 M
    assert round(sum(macs) / 1e6) == 128


def test_inception_paths_and_layouts() -> None:
    paper = Inception(192, 64, (96, 128), (16, 32), 32)
    assert paper.branch3[1].conv.kernel_size == (5, 5)  # a real 5x5 path
    assert not any(isinstance(m, BatchNorm2d) for m in paper.modules())
    assert all(m.bias is not None for m in paper.modules() if isinstance(m, torch.nn.Conv2d))
    tv = Inception(192, 64, (96, 128), (16, 32), 32, layout="torchvision")
    assert tv.branch3[1].conv.kernel_size == (3, 3)  # torchvision's "5x5" is 3x3
    assert tv.branch1.bn.eps == 0.001
    assert all(m.bias is None for m in tv.modules() if isinstance(m, torch.nn.Conv2d))
    with pytest.raises(ValueError, match="layout"):
        Inception(192, 64, (96, 128), (16, 32), 32, layout="v3")  # type: ignore[arg-type]


def test_inception_concatenates_the_four_paths() -> None:
    block = Inception(8, 2, (4, 3), (2, 1), 5).eval()
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        y = block(x)
        parts = [block.branch1(x), block.branch2(x), block.branch3(x), block.branch4(x)]
    torch.testing.assert_close(y, torch.cat(parts, 1), rtol=0, atol=0)
    assert y.shape == (2, 11, 6, 6)
    with pytest.raises(ShapeError, match=r"Inception expects input \(B, 8, H, W\); got \(2, 7, 6, 6\)"):
        block(torch.randn(2, 7, 6, 6))


# --- GoogLeNet as published -------------------------------------------------------------


def _table1_params(aux: bool) -> int:
    """Parameters (weights and biases) of the paper's model from Table 1's channels, counted by hand."""

    def conv(c_in: int, c_out: int, k: int) -> int:
        return c_in * c_out * k * k + c_out

    total = conv(3, 64, 7) + conv(64, 64, 1) + conv(64, 192, 3)
    for c_in, c1, (r3, c3), (r5, c5), c4 in INCEPTION_CHANNELS.values():
        total += conv(c_in, c1, 1) + conv(c_in, r3, 1) + conv(r3, c3, 3)
        total += conv(c_in, r5, 1) + conv(r5, c5, 5) + conv(c_in, c4, 1)
    total += 1024 * 1000 + 1000  # fc
    if aux:
        for c_in in (512, 528):  # conv 1x1 128, FC 2048 -> 1024, FC 1024 -> 1000
            total += conv(c_in, 128, 1) + 2048 * 1024 + 1024 + 1024 * 1000 + 1000
    return total


def test_paper_parameter_count() -> None:
    with torch.device("meta"):
        plain, with_aux = nnatlas.create("googlenet"), nnatlas.create("googlenet", aux_logits=True)
    assert _n_params(plain) == _table1_params(aux=False) == GOOGLENET_PARAMS
    assert _n_params(with_aux) == _table1_params(aux=True) == GOOGLENET_AUX_PARAMS
    assert f"{GOOGLENET_PARAMS:,}" in nnatlas.card("googlenet").notes
    # Table 1 counts weights in K = 1024; these rows agree with it (others in the paper's table do not add up)
    assert _conv_weights(plain.inception3a) / 1024 == 159.5  # Table 1: 159K
    assert _conv_weights(plain.inception3b) / 1024 == 379  # Table 1: 380K
    assert (_conv_weights(plain.conv2) + _conv_weights(plain.conv3)) / 1024 == 112  # Table 1: 112K
    assert plain.fc.weight.numel() / 1024 == 1000  # Table 1: 1000K


def _stage_shapes(model: torch.nn.Module, x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    names = ["conv1", "maxpool1", "conv3", "maxpool2", "maxpool3", "maxpool4", "avgpool"]
    names += [f"inception{n}" for n in INCEPTION_CHANNELS]
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [
        getattr(model, n).register_forward_hook(lambda m, i, o, n=n: shapes.__setitem__(n, tuple(o.shape[1:])))
        for n in names
    ]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return shapes


TABLE1_SHAPES = {
    "conv1": (64, 112, 112),
    "maxpool1": (64, 56, 56),
    "conv3": (192, 56, 56),
    "maxpool2": (192, 28, 28),
    "inception3a": (256, 28, 28),
    "inception3b": (480, 28, 28),
    "maxpool3": (480, 14, 14),
    "inception4a": (512, 14, 14),
    "inception4b": (512, 14, 14),
    "inception4c": (512, 14, 14),
    "inception4d": (528, 14, 14),
    "inception4e": (832, 14, 14),
    "maxpool4": (832, 7, 7),
    "inception5a": (832, 7, 7),
    "inception5b": (1024, 7, 7),
    "avgpool": (1024, 1, 1),
}


@pytest.mark.parametrize("name", ["googlenet", "googlenet_bn"])
def test_table1_shapes(name: str) -> None:
    with torch.device("meta"):  # shapes only: the meta device skips the arithmetic (the contract test runs it)
        model = nnatlas.create(name).eval()
        assert _stage_shapes(model, torch.empty(1, 3, 224, 224)) == TABLE1_SHAPES


def test_paper_layout() -> None:
    with torch.device("meta"):
        model = nnatlas.create("googlenet")
    assert isinstance(model.lrn1, LocalResponseNorm) and isinstance(model.lrn2, LocalResponseNorm)
    assert not any(isinstance(m, BatchNorm2d) for m in model.modules())
    assert model.dropout.p == 0.4
    with torch.device("meta"):
        bn = nnatlas.create("googlenet_bn")
    assert bn.lrn1 is None and bn.lrn2 is None and bn.dropout.p == 0.2


def test_paper_aux_classifiers_in_training_only() -> None:
    model = nnatlas.create("googlenet", aux_logits=True, num_classes=5)
    assert model.aux1.pool.kernel_size == 5 and model.aux1.pool.stride == 3  # avgpool 5x5/3
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        out = model.train()(x)
        assert isinstance(out, GoogLeNetOutputs) and [tuple(o.shape) for o in out] == [(1, 5)] * 3
        assert model.eval()(x).shape == (1, 5)


def test_paper_model_needs_224() -> None:
    with pytest.raises(ShapeError, match=r"GoogLeNet expects input \(B, 3, 224, 224\); got \(1, 3, 64, 64\)"):
        nnatlas.create("googlenet")(torch.randn(1, 3, 64, 64))


@pytest.mark.parametrize(
    "overrides",
    [
        {"layout": "v2"},
        {"dropout": 1.0},
        {"aux_dropout": -0.1},
        {"num_classes": 0},
        {"transform_input": True, "in_channels": 1},
    ],
)
def test_config_rejects(overrides: dict) -> None:
    with pytest.raises(ConfigError):
        GoogLeNetConfig(**overrides)


def test_transform_input() -> None:
    model = nnatlas.create("googlenet_bn", transform_input=True)
    x = torch.randn(1, 3, 4, 4)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    expected = (x * std + mean - 0.5) / 0.5  # undo the ImageNet normalisation, then map [0, 1] to [-1, 1]
    torch.testing.assert_close(model._transform_input(x), expected)


# --- torchvision ------------------------------------------------------------------------


@pytest.mark.parametrize("aux", [False, True])
def test_matches_torchvision(aux: bool) -> None:
    """Eval outputs, train-mode gradients of every mapped parameter (aux heads included), BN running statistics."""
    tv = pytest.importorskip("torchvision")
    # dropout 0 so that the train-mode step is deterministic on both sides
    ref = tv.models.googlenet(
        num_classes=10, aux_logits=aux, transform_input=True, init_weights=True, dropout=0.0, dropout_aux=0.0
    )
    ours = nnatlas.from_reference("googlenet_bn", ref)
    c = ours.config
    assert (c.num_classes, c.aux_logits, c.transform_input, c.dropout) == (10, aux, True, 0.0)
    x = torch.randn(2, 3, 64, 64)

    ours.eval(), ref.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=0)  # fp32, same kernels

    ours.train(), ref.train()
    target = torch.tensor([1, 8])
    out_ours, out_ref = ours(x), ref(x)
    out_ours = tuple(out_ours) if aux else (out_ours,)
    out_ref = tuple(out_ref) if aux else (out_ref,)
    assert len(out_ours) == len(out_ref) == (3 if aux else 1)
    for a, b in zip(out_ours, out_ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    sum(F.cross_entropy(o, target) for o in out_ours).backward()
    sum(F.cross_entropy(o, target) for o in out_ref).backward()
    assert_grads_and_buffers_match(ours, ref, _torchvision_key)


@pytest.mark.parametrize("aux", [False, True])
def test_key_map_covers_both_variants(aux: bool) -> None:
    tv = pytest.importorskip("torchvision")
    with torch.device("meta"):  # keys and shapes only
        ref = tv.models.googlenet(aux_logits=aux, init_weights=False)
        ours = nnatlas.from_reference("googlenet_bn", ref)
    assert sorted(_torchvision_key(k) for k in ours.state_dict()) == sorted(ref.state_dict())
    assert (ours.aux1 is not None) == aux


def test_mismatched_reference_raises() -> None:
    tv = pytest.importorskip("torchvision")
    with torch.device("meta"):
        extra = tv.models.googlenet(aux_logits=False, init_weights=False)
        extra.register_buffer("extra", torch.zeros(1))
        with pytest.raises(ReferenceMismatchError, match="not used.*extra"):
            nnatlas.from_reference("googlenet_bn", extra)

        missing = tv.models.googlenet(aux_logits=False, init_weights=False)
        missing.inception3a.branch1.bn = torch.nn.Identity()
        with pytest.raises(ReferenceMismatchError, match="inception3a.branch1.bn"):
            nnatlas.from_reference("googlenet_bn", missing)

        five = tv.models.googlenet(aux_logits=False, init_weights=False)
        five.inception3a.branch3[1].conv = torch.nn.Conv2d(16, 32, 5, padding=2, bias=False)  # a real 5x5
        with pytest.raises(ReferenceMismatchError, match="shapes differ"):
            nnatlas.from_reference("googlenet_bn", five)

        with pytest.raises(ReferenceMismatchError, match="GoogLeNet"):
            nnatlas.from_reference("googlenet_bn", tv.models.resnet18())
