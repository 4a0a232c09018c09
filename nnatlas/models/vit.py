"""Vision Transformer (Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for
Image Recognition at Scale", ICLR 2021), in torchvision's layout.

    x (B, C, H, W) -> Conv2d(C, D, P, stride P): one token per P x P patch -> (B, D, H/P, W/P)
        -> flatten -> (B, N, D) with N = HW / P^2
        -> prepend the class token -> (B, N + 1, D) -> + learned positions E_pos -> Dropout
        -> L x pre-LN Transformer encoder layer [x + MSA(LN(x)); x + MLP(LN(x)), GELU MLP]
        -> LayerNorm -> the class token's state (B, D) -> Linear head -> logits (B, K)

B batch, C channels, H = W image size, P patch size, N patches, D hidden size, L layers, K classes.

The encoder layer is :class:`nnatlas.nn.TransformerEncoderLayer` with ``norm_first=True`` and
GELU: the paper's block is the Transformer's encoder block with the LayerNorm moved before
each sub-layer (eq. 2-3). ViT-B/16: D 768, 12 layers, 12 heads, MLP 3072, LayerNorm eps 1e-6,
86,567,656 parameters (torchvision). The paper's pre-training head (a hidden tanh layer) is
replaced by one linear layer at fine-tuning, which is what torchvision and this file build.
The seed (003) only names ViT. Attention dropout equals ``dropout`` (torchvision defaults
both to 0).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from nnatlas.config import check_fields
from nnatlas.errors import ConfigError, ReferenceMismatchError, check_input
from nnatlas.nn.attention import TransformerEncoderLayer
from nnatlas.nn.names import name
from nnatlas.registry import ModelCard, Paper, Seed, configure, register_model, register_reference, transfer_state

__all__ = ["ViTConfig", "VisionTransformer", "vit_b_16", "vit_tiny"]

VIT_PAPER = Paper(
    authors="Dosovitskiy, Beyer, Kolesnikov, Weissenborn, Zhai, Unterthiner, Dehghani, Minderer, Heigold, Gelly, "
    "Uszkoreit, Houlsby",
    title="An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale",
    venue="ICLR",
    year=2021,
    link="https://arxiv.org/abs/2010.11929",
)


@dataclass(frozen=True)
class ViTConfig:
    """Sizes of a Vision Transformer; the defaults are ViT-B/16."""

    image_size: int = 224
    patch_size: int = 16
    in_channels: int = 3
    num_layers: int = 12
    num_heads: int = 12
    hidden_dim: int = 768
    mlp_dim: int = 3072
    num_classes: int = 1000
    dropout: float = 0.0
    layer_norm_eps: float = 1e-6
    impl: Literal["sdpa", "manual"] = "sdpa"

    def __post_init__(self) -> None:
        check_fields(self)
        if self.image_size % self.patch_size:
            raise ConfigError(
                f"ViTConfig.image_size must be a multiple of patch_size; got {self.image_size} and {self.patch_size}"
            )
        if self.hidden_dim % self.num_heads:
            raise ConfigError(
                f"ViTConfig.hidden_dim must be divisible by num_heads; got {self.hidden_dim} and {self.num_heads}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"ViTConfig.dropout must be in [0, 1); got {self.dropout}")
        if not self.layer_norm_eps > 0:
            raise ConfigError(f"ViTConfig.layer_norm_eps must be > 0; got {self.layer_norm_eps}")
        if self.impl not in ("sdpa", "manual"):
            raise ConfigError(f"ViTConfig.impl must be 'sdpa' or 'manual'; got {self.impl!r}")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


class VisionTransformer(nn.Module):
    """ViT: patches as tokens, a class token, learned positions, a pre-LN encoder; returns logits."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.config = c = config
        # patch embedding E: a P x P convolution with stride P is a linear map of each flattened patch
        self.conv_proj = nn.Conv2d(c.in_channels, c.hidden_dim, kernel_size=c.patch_size, stride=c.patch_size)
        self.class_token = nn.Parameter(torch.zeros(1, 1, c.hidden_dim))  # x_class
        self.pos_embedding = nn.Parameter(torch.empty(1, c.num_patches + 1, c.hidden_dim))  # E_pos
        self.dropout = nn.Dropout(c.dropout)
        self.layers = nn.ModuleList(
            TransformerEncoderLayer(
                c.hidden_dim, c.num_heads, c.mlp_dim, c.dropout, activation="gelu", layer_norm_eps=c.layer_norm_eps,
                batch_first=True, norm_first=True, impl=c.impl,
            )
            for _ in range(c.num_layers)
        )
        self.ln = nn.LayerNorm(c.hidden_dim, eps=c.layer_norm_eps)
        self.head = nn.Linear(c.hidden_dim, c.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """torchvision's initialisation (zero head and class token, as in the paper's fine-tuning)."""
        fan_in = self.conv_proj.in_channels * self.config.patch_size**2
        nn.init.trunc_normal_(self.conv_proj.weight, std=math.sqrt(1 / fan_in))
        nn.init.zeros_(self.conv_proj.bias)
        nn.init.normal_(self.pos_embedding, std=0.02)
        for layer in self.layers:
            for linear in (layer.linear1, layer.linear2):
                nn.init.xavier_uniform_(linear.weight)
                nn.init.normal_(linear.bias, std=1e-6)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) images at the configured size -> logits (B, K)."""
        c = self.config
        check_input(x, ("B", c.in_channels, c.image_size, c.image_size), model="VisionTransformer", like=self)
        B = x.shape[0]
        x = self.conv_proj(x)  # (B, D, H/P, W/P): one D-vector per patch
        x = x.flatten(2).transpose(1, 2)  # (B, N, D)
        x = name(x, "X_p E", desc="patch embeddings", dims="B T D")
        x = torch.cat([self.class_token.expand(B, -1, -1), x], dim=1)  # (B, N + 1, D)
        x = name(x + self.pos_embedding, "z_0", "[x_class; X_p E] + E_pos", dims="B T D")  # (eq. 1)
        x = self.dropout(x)  # z_0 = [x_class; x_p E] + E_pos   (eq. 1)
        for layer in self.layers:
            x = layer(x)  # (B, N + 1, D)                                           (eq. 2-3)
        x = self.ln(x[:, 0])  # (B, D): y = LN(z_L^0); LN is per token, so only the class token needs it (eq. 4)
        return self.head(x)  # (B, K)


def _vit(config: ViTConfig, overrides: dict) -> VisionTransformer:
    return VisionTransformer(configure(config, overrides))


_SEED = Seed("003_979c5363c5233b21.txt", "ViT")
_B16 = ViTConfig()
_TINY = ViTConfig(
    image_size=28, patch_size=7, in_channels=1, num_layers=4, num_heads=4, hidden_dim=64, mlp_dim=128, num_classes=10
)


@register_model(
    "vit_b_16",
    card=ModelCard(
        name="vit_b_16",
        family="vit",
        title="ViT-B/16",
        paper=VIT_PAPER,
        input_shape=(3, 224, 224),
        output_shape=(1000,),
        task="classification",
        published_params=86_567_656,
        seed=_SEED,
        notes="torchvision's layout: conv patch embedding 16x16, class token, learned positions, 12 pre-LN "
        "layers (D 768, 12 heads, GELU MLP 3072, LayerNorm eps 1e-6), final LayerNorm, linear head. "
        "Parameter count as torchvision's vit_b_16.",
    ),
)
def vit_b_16(**overrides) -> VisionTransformer:
    return _vit(_B16, overrides)


@register_model(
    "vit_tiny",
    card=ModelCard(
        name="vit_tiny",
        family="vit",
        title="ViT (tiny, digits)",
        paper=VIT_PAPER,
        input_shape=(1, 28, 28),
        output_shape=(10,),
        task="classification",
        seed=_SEED,
        notes="28x28x1 digits cut into 16 patches of 7x7; D 64, 4 layers, 4 heads, MLP 128.",
    ),
)
def vit_tiny(**overrides) -> VisionTransformer:
    return _vit(_TINY, overrides)


# torchvision key -> ours, one rule per part of the model
_TV_RULES = (
    (r"encoder\.pos_embedding", "pos_embedding"),
    (r"encoder\.layers\.encoder_layer_(\d+)\.ln_1\.", r"layers.\1.norm1."),
    (r"encoder\.layers\.encoder_layer_(\d+)\.self_attention\.", r"layers.\1.self_attn."),
    (r"encoder\.layers\.encoder_layer_(\d+)\.ln_2\.", r"layers.\1.norm2."),
    (r"encoder\.layers\.encoder_layer_(\d+)\.mlp\.0\.", r"layers.\1.linear1."),
    (r"encoder\.layers\.encoder_layer_(\d+)\.mlp\.3\.", r"layers.\1.linear2."),
    (r"encoder\.ln\.", "ln."),
    (r"heads\.head\.", "head."),
)


def _ours(torchvision_key: str) -> str:
    for pattern, replacement in _TV_RULES:
        key, n = re.subn("^" + pattern, replacement, torchvision_key)
        if n:
            return key
    return torchvision_key  # conv_proj.*, class_token: the same names


@register_reference("vit_b_16", "vit_tiny")
def _from_torchvision(name: str, ref: nn.Module) -> VisionTransformer:
    """torchvision.models.VisionTransformer -> an nnatlas ViT with its sizes and weights."""
    if type(ref).__name__ != "VisionTransformer" or not hasattr(ref, "encoder") or not hasattr(ref, "heads"):
        raise TypeError(
            f"from_reference({name!r}) expects torchvision.models.VisionTransformer; got {type(ref).__name__}"
        )
    problems = []
    if ref.representation_size is not None:
        problems.append("a pre-logits (representation) layer")
    if not isinstance(ref.conv_proj, nn.Conv2d):
        problems.append("a convolutional stem")
    if ref.attention_dropout != ref.dropout:
        problems.append(f"attention_dropout {ref.attention_dropout} != dropout {ref.dropout}")
    if problems:
        raise ReferenceMismatchError(f"VisionTransformer cannot hold this reference: {'; '.join(problems)}")
    layers = ref.encoder.layers
    config = ViTConfig(
        image_size=ref.image_size,
        patch_size=ref.patch_size,
        in_channels=ref.conv_proj.in_channels,
        num_layers=len(layers),
        num_heads=layers[0].num_heads,
        hidden_dim=ref.hidden_dim,
        mlp_dim=ref.mlp_dim,
        num_classes=ref.heads.head.out_features,
        dropout=ref.dropout,
        layer_norm_eps=ref.encoder.ln.eps,
    )
    weight = ref.conv_proj.weight
    with torch.device(weight.device):
        model = VisionTransformer(config).to(weight.dtype)
    to_ref = {_ours(k): k for k in ref.state_dict()}  # invert the rules: transfer_state maps ours -> theirs
    transfer_state(model, ref.state_dict(), to_ref, source="torchvision VisionTransformer")
    return model.train(ref.training)
