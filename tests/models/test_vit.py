"""ViT against torchvision's VisionTransformer: mapped weights give the same logits and
gradients (reduced sizes), and the full vit_b_16 key map holds (on the meta device)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

import nnatlas
from nnatlas.errors import ReferenceMismatchError, ShapeError
from nnatlas.models.vit import VisionTransformer, ViTConfig, _ours

tv = pytest.importorskip("torchvision.models.vision_transformer")


def _small_reference(patch_size: int) -> nn.Module:
    torch.manual_seed(0)
    ref = tv.VisionTransformer(
        image_size=32, patch_size=patch_size, num_layers=2, num_heads=4, hidden_dim=32, mlp_dim=64, num_classes=10
    )
    with torch.no_grad():  # torchvision zeroes the head and class token; make every weight count
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return ref.eval()


@pytest.mark.parametrize("impl", ["sdpa", "manual"])
@pytest.mark.parametrize("patch_size", [16, 8])
def test_matches_torchvision(patch_size: int, impl: str) -> None:
    ref = _small_reference(patch_size)
    converted = nnatlas.from_reference("vit_tiny", ref)
    c = converted.config
    sizes = (c.image_size, c.patch_size, c.in_channels, c.num_layers, c.num_heads, c.hidden_dim, c.mlp_dim)
    assert sizes == (32, patch_size, 3, 2, 4, 32, 64) and c.num_classes == 10
    ours = VisionTransformer(dataclasses.replace(c, impl=impl)).eval()
    ours.load_state_dict(converted.state_dict())

    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    out, ref_out = ours(x), ref(x)
    assert out.shape == (3, 10)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-5)  # fp32

    out.square().sum().backward()
    ref_out.square().sum().backward()
    ref_params = dict(ref.named_parameters())
    to_ref = {_ours(ref_key): ref_key for ref_key in ref_params}
    assert to_ref.keys() == dict(ours.named_parameters()).keys()
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, ref_params[to_ref[name]].grad, rtol=1e-4, atol=1e-5, msg=name)


def test_full_vit_b_16_key_map_on_meta() -> None:
    with torch.device("meta"):
        ref = tv.vit_b_16()
        ours = nnatlas.from_reference("vit_b_16", ref)
    assert ours.config == ViTConfig()  # every size read off the reference is ViT-B/16's
    assert ours.pos_embedding.is_meta
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters()) == 86_567_656


def test_reference_with_a_representation_layer_is_refused() -> None:
    ref = tv.VisionTransformer(
        image_size=32, patch_size=16, num_layers=1, num_heads=2, hidden_dim=8, mlp_dim=16, representation_size=4
    )
    with pytest.raises(ReferenceMismatchError, match="pre-logits"):
        nnatlas.from_reference("vit_b_16", ref)
    with pytest.raises(TypeError, match="VisionTransformer"):
        nnatlas.from_reference("vit_b_16", nn.Linear(2, 2))


def test_vit_tiny_reads_digits() -> None:
    model = nnatlas.create("vit_tiny").eval()
    assert model.conv_proj.weight.shape == (64, 1, 7, 7) and model.pos_embedding.shape == (1, 17, 64)
    assert all(layer.norm_first for layer in model.layers)
    with pytest.raises(ShapeError, match=r"expects input \(B, 1, 28, 28\); got \(2, 1, 32, 32\)"):
        model(torch.randn(2, 1, 32, 32))
