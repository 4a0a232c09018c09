"""``nnatlas verify``: every check a user can rerun, per model, as a table and as JSON for the atlas.

Four kinds of check:

- **params**: the trainable parameters (counted on the ``meta`` device) against a *published*
  figure, which always comes with its source: torchvision's weight metadata (exact counts) or
  a paper (a rounded figure, compared within its rounding). A card figure without a source is
  shown as *computed*, never as published.
- **macs**: multiply-accumulates of one example at the card's size (the inspector's count)
  against torchvision's published GFLOPS (which torchvision counts as multiply-adds); others
  are *computed*.
- **reference**: equality with each reference implementation that is installed (torchvision,
  torch.nn, transformers, PyG). The reference is built small with random weights, converted by
  the model's registered converter (``register_reference``) or, for recurrent and graph models,
  the layer's ``from_reference``; outputs and gradients (of every parameter that maps one to
  one onto a reference tensor, and of a float input) are compared with the tolerance stated in
  the result. A reference library that is not installed gives *not checked*, never *pass*.
- **contract**: eval forward on the small example input (finite, the card's output shape),
  train forward and backward (every trainable parameter gets a gradient).

Results are cached per model under a key made of the sources the model is built from, this
file and the library versions, so an atlas rebuild re-verifies only what changed.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.metadata
import json
import logging
import math
import os
import re
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

import nnatlas
from nnatlas import registry

__all__ = [
    "Check",
    "ModelReport",
    "PublishedFigure",
    "PUBLISHED_PARAMS",
    "TOLERANCE",
    "verify_model",
    "verify",
    "format_table",
    "add_verify_parser",
    "default_cache_dir",
]

log = logging.getLogger(__name__)

STATUSES = ("pass", "fail", "not checked", "computed", "none")
TOLERANCE = 1e-4
TOLERANCE_TEXT = "max |ours - reference| / max(1, max |reference|) <= 1e-4 per tensor (float32)"
MACS_TOLERANCE = 0.02  # torchvision rounds its GFLOPS to 3 decimals and counts a few operations differently
_PACKAGE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class PublishedFigure:
    """A figure a publication gives, with the rounding it was given at (0 for an exact count)."""

    value: float
    precision: float
    source: str


# Parameter counts papers print (rounded); torchvision's weight metadata covers its models exactly.
PUBLISHED_PARAMS: dict[str, PublishedFigure] = {
    "bert_base": PublishedFigure(110e6, 5e6, "Devlin et al. 2019, section 3: BERT-BASE, total parameters 110M "
                                             "(two significant figures)"),
    "ddpm": PublishedFigure(35.7e6, 0.05e6, "Ho et al. 2020, section 4: the CIFAR10 model has 35.7 million parameters"),
    "lenet5_1998": PublishedFigure(60_000, 500, "LeCun et al. 1998, section II.B: LeNet-5 has 60,000 trainable "
                                               "parameters"),
}

# nnatlas name -> torchvision builder name, where torchvision has the same architecture with weights metadata
_TORCHVISION = {
    **{n: n for n in ("alexnet", "resnet18", "resnet34", "resnet50", "densenet121", "densenet169", "densenet201",
                      "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn", "vit_b_16")},
    "googlenet_bn": "googlenet",
}


@dataclass(frozen=True)
class Check:
    """One check's outcome. ``status`` is one of ``STATUSES``; ``detail`` says what was compared."""

    kind: str  # "params", "macs", "reference" or "contract"
    status: str
    label: str
    detail: str
    ours: float | None = None
    published: float | None = None
    source: str = ""
    tolerance: str = ""


@dataclass
class ModelReport:
    name: str
    key: str
    checks: list[Check] = field(default_factory=list)
    seconds: float = 0.0

    def of(self, kind: str) -> list[Check]:
        return [c for c in self.checks if c.kind == kind]

    @property
    def ok(self) -> bool:
        return not any(c.status == "fail" for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "key": self.key, "checks": [dataclasses.asdict(c) for c in self.checks]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelReport:
        return cls(data["name"], data["key"], [Check(**c) for c in data["checks"]])


# --- helpers ----------------------------------------------------------------------------------


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _tensors(out: object) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if hasattr(out, "to_tuple"):  # transformers' ModelOutput
        out = out.to_tuple()
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _tensors(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in _tensors(o)]
    return []


def _call(model: nn.Module, x: object) -> object:
    return model(*x) if isinstance(x, tuple) else model(x)


def _shapes(out: object) -> object:
    if isinstance(out, torch.Tensor):
        return tuple(out.shape)
    return tuple(_shapes(o) for o in out)  # type: ignore[union-attr]


def _expected_shape(card: nnatlas.ModelCard, batch: int) -> object:
    def one(shape: tuple) -> tuple:
        return (batch, *shape) if card.batched else tuple(shape)

    shape = card.output_shape
    return tuple(one(s) for s in shape) if shape and isinstance(shape[0], tuple) else one(shape)  # type: ignore[arg-type]


def _rel_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """max |ours - ref| / max(1, max |ref|): absolute for small values, relative for large ones."""
    if ours.shape != ref.shape:
        return math.inf
    ours, ref = ours.detach().double(), ref.detach().double()
    scale = max(1.0, ref.abs().max().item()) if ref.numel() else 1.0
    return (ours - ref).abs().max().item() / scale if ref.numel() else 0.0


def _family_module(name: str) -> str:
    return registry._entry(name).factory.__module__


def _sources_for(module: str) -> list[Path]:
    """The family file, the nnatlas.models files it imports, and the shared code every model uses."""
    files = {_PACKAGE / (module.replace("nnatlas.", "", 1).replace(".", "/") + ".py")}
    text = next(iter(files)).read_text(encoding="utf-8")
    for dep in re.findall(r"nnatlas\.models\.(\w+)", text):
        path = _PACKAGE / "models" / f"{dep}.py"
        if path.is_file():
            files.add(path)
    for shared in ("registry.py", "errors.py", "verify.py"):
        files.add(_PACKAGE / shared)
    for folder in ("nn", "inspect"):
        files.update((_PACKAGE / folder).glob("*.py"))
    return sorted(files)


def cache_key(name: str) -> str:
    """A hash of everything a model's verification depends on: its sources and the library versions."""
    h = hashlib.sha256(name.encode())
    for path in _sources_for(_family_module(name)):
        h.update(path.relative_to(_PACKAGE).as_posix().encode())
        h.update(path.read_bytes())
    for dist in ("torch", "torchvision", "transformers", "torch-geometric"):
        h.update(f"{dist}={_version(dist)}".encode())
    return h.hexdigest()[:20]


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "nnatlas" / "verify"


# --- params and MACs ----------------------------------------------------------------------------


def _torchvision_meta(name: str) -> tuple[dict[str, Any], str] | None:
    if name not in _TORCHVISION:
        return None
    try:
        import torchvision
    except ImportError:
        return None
    weights = list(torchvision.models.get_model_weights(_TORCHVISION[name]))[0]
    return weights.meta, f"torchvision {type(weights).__name__}.{weights.name} metadata"


def _check_params(name: str, trainable: int) -> Check:
    card = nnatlas.card(name)
    meta = _torchvision_meta(name)
    if meta is not None and "num_params" in meta[0]:
        figure = PublishedFigure(meta[0]["num_params"], 0, meta[1])
    elif name in PUBLISHED_PARAMS:
        figure = PUBLISHED_PARAMS[name]
    elif name in _TORCHVISION:  # torchvision would be the source, and it is not installed
        return Check("params", "not checked", "parameters", f"{trainable:,} trainable; the published figure is "
                     "torchvision's weight metadata and torchvision is not installed", ours=trainable)
    else:
        note = f"; the card's figure {card.published_params:,} has no published source" if card.published_params else ""
        return Check("params", "computed", "parameters", f"{trainable:,} trainable (counted by nnatlas){note}",
                     ours=trainable)
    ok = abs(trainable - figure.value) <= figure.precision
    given = f"{figure.value:,.0f}" + (f" (rounded, +/- {figure.precision:,.0f})" if figure.precision else "")
    return Check("params", "pass" if ok else "fail", "parameters",
                 f"{trainable:,} trainable {'matches' if ok else 'differs from'} the published {given}",
                 ours=trainable, published=figure.value, source=figure.source,
                 tolerance="exact" if not figure.precision else f"+/- {figure.precision:,.0f}")


def _check_macs(name: str, macs: int) -> Check:
    meta = _torchvision_meta(name)
    if meta is None or "_ops" not in meta[0]:
        return Check("macs", "computed", "MACs", f"{macs / 1e9:.3f} G multiply-accumulates for one example at the "
                     "card's input size (counted by nnatlas)", ours=macs)
    published = meta[0]["_ops"] * 1e9
    rel = abs(macs - published) / published
    ok = rel <= MACS_TOLERANCE
    return Check("macs", "pass" if ok else "fail", "MACs",
                 f"{macs / 1e9:.3f} G {'matches' if ok else 'differs from'} the published {meta[0]['_ops']:.3f} "
                 f"GFLOPS ({rel:.1%} apart; torchvision counts multiply-adds)",
                 ours=macs, published=published, source=meta[1], tolerance=f"{MACS_TOLERANCE:.0%}")


# --- references -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RefCase:
    """How to compare one model (or its layer) with one reference implementation."""

    library: str  # the distribution that must be installed ("torchvision", "transformers", "torch", ...)
    label: str  # what the reference is, as the atlas shows it
    build: Callable[[], nn.Module]  # the reference module, small, random weights (seeded)
    convert: Callable[[nn.Module], nn.Module]  # reference -> nnatlas module with the same weights
    inputs: Callable[[torch.Generator], tuple]  # the inputs both take
    run_ref: Callable[[nn.Module, tuple], object] = lambda m, x: m(*x)
    run_ours: Callable[[nn.Module, tuple], object] = lambda m, x: m(*x)


def _perturb(module: nn.Module, gen: torch.Generator) -> nn.Module:
    """Move every weight and running statistic off its initial value (ones, zeros), so nothing matches by
    construction: LayerNorm and BatchNorm scales and biases, BN running statistics."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
        for name, b in module.named_buffers():
            if name.endswith("running_mean"):
                b.normal_(0, 0.1, generator=gen)
            elif name.endswith("running_var"):
                b.uniform_(0.5, 2.0, generator=gen)
    return module


def _convert_with(name: str) -> Callable[[nn.Module], nn.Module]:
    return lambda ref: nnatlas.from_reference(name, ref)


def _images(size: int) -> Callable[[torch.Generator], tuple]:
    return lambda g: (torch.randn(2, 3, size, size, generator=g),)


def _torchvision_case(name: str) -> RefCase:
    tv_name = _TORCHVISION[name]
    size = {"alexnet": 64, "googlenet_bn": 64}.get(name, 32)

    def build() -> nn.Module:
        import torchvision

        torch.manual_seed(0)
        kwargs = {"aux_logits": False, "init_weights": True} if tv_name == "googlenet" else {}
        return _perturb(getattr(torchvision.models, tv_name)(num_classes=10, **kwargs), torch.Generator().manual_seed(1))

    return RefCase("torchvision", f"torchvision.models.{tv_name}", build, _convert_with(name), _images(size))


def _vit_case(name: str) -> RefCase:
    def build() -> nn.Module:
        from torchvision.models.vision_transformer import VisionTransformer

        torch.manual_seed(0)
        ref = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=32, mlp_dim=64,
                                num_classes=10)
        return _perturb(ref, torch.Generator().manual_seed(1))  # torchvision zeroes the head and class token

    return RefCase("torchvision", "torchvision.models.VisionTransformer", build, _convert_with(name), _images(32))


def _bert_case(name: str) -> RefCase:
    def build() -> nn.Module:
        import transformers

        torch.manual_seed(0)
        config = transformers.BertConfig(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                         intermediate_size=48, max_position_embeddings=24, hidden_dropout_prob=0.0,
                                         attention_probs_dropout_prob=0.0)
        return _perturb(transformers.BertModel(config), torch.Generator().manual_seed(1))

    def inputs(g: torch.Generator) -> tuple:
        ids = torch.randint(0, 97, (3, 10), generator=g)
        mask = torch.ones(3, 10, dtype=torch.long)
        mask[1, 7:] = 0
        types = torch.zeros(3, 10, dtype=torch.long)
        types[:, 5:] = 1
        return ids, mask, types

    def run_ref(m: nn.Module, x: tuple) -> object:
        out = m(input_ids=x[0], attention_mask=x[1], token_type_ids=x[2])
        return out.last_hidden_state, out.pooler_output

    return RefCase("transformers", "transformers.BertModel", build, _convert_with(name), inputs, run_ref)


def _mamba_case(name: str) -> RefCase:
    def build() -> nn.Module:
        import transformers

        torch.manual_seed(0)
        config = transformers.MambaConfig(vocab_size=64, hidden_size=16, state_size=4, num_hidden_layers=2,
                                          time_step_rank=3, conv_kernel=4, expand=2)
        return _perturb(transformers.MambaForCausalLM(config), torch.Generator().manual_seed(1))

    return RefCase("transformers", "transformers.MambaForCausalLM", build, _convert_with(name),
                   lambda g: (torch.randint(0, 64, (2, 23), generator=g),), lambda m, x: m(x[0]).logits)


def _gpt_case(name: str) -> RefCase:
    def build() -> nn.Module:
        import transformers

        torch.manual_seed(0)
        config = transformers.GPT2Config(vocab_size=64, n_positions=32, n_embd=16, n_layer=2, n_head=4,
                                         bos_token_id=0, eos_token_id=0)
        return _perturb(transformers.GPT2LMHeadModel(config), torch.Generator().manual_seed(1))

    return RefCase("transformers", "transformers.GPT2LMHeadModel", build, _convert_with(name),
                   lambda g: (torch.randint(0, 64, (2, 23), generator=g),), lambda m, x: m(x[0]).logits)


def _sinusoid(T: int, D: int) -> torch.Tensor:
    """Section 3.5 of Vaswani et al., written here independently of nnatlas's own function."""
    pos = torch.arange(T, dtype=torch.float64)[:, None]
    angle = pos / 10000 ** (torch.arange(0, D, 2, dtype=torch.float64) / D)
    pe = torch.zeros(T, D, dtype=torch.float64)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(angle), torch.cos(angle)
    return pe.float()


def _transformer_case(name: str) -> RefCase:
    V, D, H, FF = 50, 16, 4, 40

    def build() -> nn.Module:
        torch.manual_seed(0)
        t = nn.Transformer(D, H, 2, 3, FF, dropout=0.0, batch_first=True)
        return _perturb(nn.ModuleDict({"transformer": t, "embedding": nn.Embedding(V, D)}),
                        torch.Generator().manual_seed(1))

    def inputs(g: torch.Generator) -> tuple:
        src, tgt = torch.randint(0, V, (3, 7), generator=g), torch.randint(0, V, (3, 6), generator=g)
        src_pad = torch.zeros(3, 7, dtype=torch.bool)
        src_pad[1, -2:] = True
        tgt_pad = torch.zeros(3, 6, dtype=torch.bool)
        tgt_pad[2, -3:] = True
        return src, tgt, src_pad, tgt_pad

    def run_ref(ref: nn.Module, x: tuple) -> object:
        src, tgt, src_pad, tgt_pad = x
        t, emb = ref["transformer"], ref["embedding"]
        s = emb(src) * math.sqrt(D) + _sinusoid(src.shape[1], D)
        u = emb(tgt) * math.sqrt(D) + _sinusoid(tgt.shape[1], D)
        out = t(s, u, tgt_mask=nn.Transformer.generate_square_subsequent_mask(tgt.shape[1]),
                src_key_padding_mask=src_pad, tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=src_pad,
                tgt_is_causal=True)
        return out @ emb.weight.T  # the output projection is the embedding (section 3.4)

    return RefCase("torch", "torch.nn.Transformer + torch.nn.Embedding", build, _convert_with(name), inputs, run_ref)


def _recurrent_case(kind: str) -> RefCase:
    ref_cls = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[kind]

    def build() -> nn.Module:
        torch.manual_seed(0)
        return ref_cls(5, 7, num_layers=2, batch_first=True)

    def convert(ref: nn.Module) -> nn.Module:
        from nnatlas import nn as atlas_nn

        return getattr(atlas_nn, ref_cls.__name__).from_reference(ref, impl="loop")  # the readable path

    return RefCase("torch", f"torch.nn.{ref_cls.__name__} (the model's recurrent layer, loop path)", build, convert,
                   lambda g: (torch.randn(3, 6, 5, generator=g),))


def _gcn_case() -> RefCase:
    def build() -> nn.Module:
        from torch_geometric.nn import GCNConv as PygGCNConv

        torch.manual_seed(0)
        return _perturb(PygGCNConv(6, 4), torch.Generator().manual_seed(1))

    def convert(ref: nn.Module) -> nn.Module:
        from nnatlas.nn.graph import GCNConv

        return GCNConv.from_reference(ref)

    def inputs(g: torch.Generator) -> tuple:
        n = 9
        src = torch.arange(n)
        ring = torch.stack([torch.cat([src, (src + 1) % n, src[:4]]), torch.cat([(src + 1) % n, src, src[:4] + 4])])
        edges = torch.cat([ring, ring.flip(0)[:, -4:]], dim=1)  # a ring with four chords, both directions
        return torch.randn(n, 6, generator=g), edges

    return RefCase("torch-geometric", "torch_geometric.nn.GCNConv (the model's layer)", build, convert, inputs)


def reference_cases(name: str) -> list[RefCase]:
    """The reference comparisons that exist for ``name`` (installed or not)."""
    family = nnatlas.card(name).family
    if family == "vit" and name in registry._CONVERTERS:
        return [_vit_case(name)]
    if name in _TORCHVISION and name in registry._CONVERTERS:
        return [_torchvision_case(name)]
    if family == "bert" and name in registry._CONVERTERS:
        return [_bert_case(name)]
    if family == "mamba" and name in registry._CONVERTERS:
        return [_mamba_case(name)]
    if family == "transformer" and name in registry._CONVERTERS:
        return [_transformer_case(name)]
    if family == "gpt" and name in registry._CONVERTERS:
        return [_gpt_case(name)]
    if family == "rnn":
        with torch.device("meta"):
            cell = getattr(getattr(nnatlas.create(name), "config", None), "cell", None)
        if cell in ("rnn", "lstm", "gru"):  # the model's stack is nnatlas.nn.RNN / LSTM / GRU
            return [_recurrent_case(cell)]
    if name == "gcn":
        return [_gcn_case()]
    return []


def _match_params(ours: nn.Module, ref: nn.Module) -> tuple[list[tuple[str, torch.Tensor, torch.Tensor]], int]:
    """Pairs (name, our parameter, the reference parameter holding the same values); and how many of ours
    have no one-to-one partner (a stacked q/k/v projection, say)."""
    def key(p: torch.Tensor) -> tuple:
        flat = p.detach().flatten()
        return tuple(p.shape), round(flat.double().sum().item(), 6), tuple(round(v, 7) for v in flat[:3].tolist())

    theirs: dict[tuple, list[torch.Tensor]] = {}
    for p in ref.parameters():
        theirs.setdefault(key(p), []).append(p)
    pairs, unmatched = [], 0
    for pname, p in ours.named_parameters():
        found = [q for q in theirs.get(key(p), []) if torch.equal(q.detach(), p.detach())]
        if len(found) == 1:
            pairs.append((pname, p, found[0]))
        else:
            unmatched += 1
    return pairs, unmatched


def _check_reference(name: str, case: RefCase) -> Check:
    label = case.label
    if _version(case.library) is None:
        return Check("reference", "not checked", label, f"{case.library} is not installed")
    try:
        ref = case.build().eval()
        ours = case.convert(ref).eval()
    except Exception as err:  # noqa: BLE001  (a converter's refusal is the result being reported)
        return Check("reference", "fail", label, f"conversion failed: {type(err).__name__}: {err}",
                     tolerance=TOLERANCE_TEXT)
    x = case.inputs(torch.Generator().manual_seed(2))
    x_ref = tuple(t.clone().requires_grad_(t.is_floating_point()) if isinstance(t, torch.Tensor) else t for t in x)
    x_ours = tuple(t.clone().requires_grad_(t.is_floating_point()) if isinstance(t, torch.Tensor) else t for t in x)
    pairs, unmatched = _match_params(ours, ref)
    try:
        out_ref = [t for t in _tensors(case.run_ref(ref, x_ref)) if t.is_floating_point()]
        out_ours = [t for t in _tensors(case.run_ours(ours, x_ours)) if t.is_floating_point()]
    except Exception as err:  # noqa: BLE001
        return Check("reference", "fail", label, f"forward failed: {type(err).__name__}: {err}",
                     tolerance=TOLERANCE_TEXT)
    if len(out_ref) != len(out_ours):
        return Check("reference", "fail", label, f"{len(out_ours)} float outputs, the reference gives {len(out_ref)}",
                     tolerance=TOLERANCE_TEXT)
    out_err = max(_rel_error(a, b) for a, b in zip(out_ours, out_ref))
    sum(t.square().sum() for t in out_ref).backward()
    sum(t.square().sum() for t in out_ours).backward()
    grad_errs = [(_rel_error(p.grad, q.grad) if p.grad is not None and q.grad is not None else math.inf, n)
                 for n, p, q in pairs]
    grad_errs += [(_rel_error(a.grad, b.grad), "input") for a, b in zip(x_ours, x_ref)
                  if isinstance(a, torch.Tensor) and a.requires_grad]
    worst_grad, worst_name = max(grad_errs, default=(0.0, ""))
    ok = out_err <= TOLERANCE and worst_grad <= TOLERANCE and bool(pairs)
    compared = f"{len(pairs)} parameter gradients" + (" and the input's" if any(n == "input" for _, n in grad_errs)
                                                      else "")
    skipped = f"; {unmatched} parameters not one-to-one with a reference tensor" if unmatched else ""
    detail = (f"outputs {'equal' if out_err <= TOLERANCE else 'differ'} (error {out_err:.1e}); {compared}: "
              f"largest error {worst_grad:.1e}" + (f" ({worst_name})" if worst_grad > TOLERANCE else "") + skipped)
    if not pairs:
        detail += "; no parameter matched a reference tensor (the weights were not transferred)"
    return Check("reference", "pass" if ok else "fail", label, detail, ours=max(out_err, worst_grad),
                 tolerance=TOLERANCE_TEXT)


# --- the contract ---------------------------------------------------------------------------------


def _check_contract(name: str) -> Check:
    card = nnatlas.card(name)
    try:
        torch.manual_seed(0)
        model = nnatlas.create(name).eval()
        x = nnatlas.example_input(name, batch_size=2, small=True)
        with torch.no_grad():
            out = _call(model, x)
        problems = []
        if card.small_input_shape is None and _shapes(out) != _expected_shape(card, 2):
            problems.append(f"output shape {_shapes(out)}, the card says {_expected_shape(card, 2)}")
        if any(t.is_floating_point() and not torch.isfinite(t).all() for t in _tensors(out)):
            problems.append("non-finite output")
        model.train()
        out = _call(model, x)
        loss = sum(t.float().sum() for t in _tensors(out) if t.is_floating_point() and t.requires_grad)
        if not isinstance(loss, torch.Tensor):
            problems.append("the train-mode forward returns nothing differentiable")
        else:
            loss.backward()
            missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
            if missing:
                problems.append(f"{len(missing)} parameters without a gradient ({', '.join(missing[:3])})")
        if card.small_input_shape is not None:
            with torch.device("meta"):
                meta_model = nnatlas.create(name).eval()
            got = _shapes(_call(meta_model, nnatlas.example_input(name, 2).to("meta")))
            if got != _expected_shape(card, 2):
                problems.append(f"output shape {got} at the card's size, the card says {_expected_shape(card, 2)}")
    except Exception as err:  # noqa: BLE001  (the failure is the result)
        problems = [f"{type(err).__name__}: {err}"]
    where = "small input " + str(card.small_input_shape) if card.small_input_shape else "example input"
    if problems:
        return Check("contract", "fail", "forward/backward", "; ".join(problems))
    return Check("contract", "pass", "forward/backward",
                 f"eval forward on the {where}: finite, the card's output shape; train backward: every trainable "
                 "parameter gets a gradient")


# --- driver -------------------------------------------------------------------------------------------


def verify_model(name: str) -> ModelReport:
    """Run every check for one model (no cache)."""
    with warnings.catch_warnings():  # the references' deprecation notices are not results; the table is
        warnings.simplefilter("ignore")
        return _verify_model(name)


def _verify_model(name: str) -> ModelReport:
    start = time.perf_counter()
    report = ModelReport(name, cache_key(name))
    try:
        table = nnatlas.summary(name)
        report.checks.append(_check_params(name, table.trainable_params))
        report.checks.append(_check_macs(name, table.total_macs))
    except Exception as err:  # noqa: BLE001
        report.checks.append(Check("params", "fail", "parameters", f"trace failed: {type(err).__name__}: {err}"))
        log.debug("trace of %s failed:\n%s", name, traceback.format_exc())
    cases = reference_cases(name)
    if not cases:
        report.checks.append(Check("reference", "none", "reference",
                                   "no reference implementation of this model is registered"))
    for case in cases:
        report.checks.append(_check_reference(name, case))
    report.checks.append(_check_contract(name))
    report.seconds = time.perf_counter() - start
    return report


def verify(names: Iterable[str], cache_dir: Path | None = None,
           progress: Callable[[str, ModelReport, bool], None] | None = None) -> list[ModelReport]:
    """Reports for ``names``, read from ``cache_dir/<name>-<key>.json`` where the key still holds."""
    reports = []
    for name in names:
        key = cache_key(name)
        path = cache_dir / f"{name}-{key}.json" if cache_dir is not None else None
        cached = False
        if path is not None and path.is_file():
            report = ModelReport.from_json(json.loads(path.read_text(encoding="utf-8")))
            cached = True
        else:
            report = verify_model(name)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                for old in path.parent.glob(f"{name}-*.json"):
                    old.unlink()
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(report.to_json(), indent=1, sort_keys=True), encoding="utf-8")
                tmp.replace(path)
        if progress is not None:
            progress(name, report, cached)
        reports.append(report)
    return reports


def _cell(checks: list[Check]) -> str:
    if not checks:
        return "-"
    return ", ".join(c.status for c in checks)


def format_table(reports: list[ModelReport]) -> str:
    """The terminal table: one row per model, the status of each kind of check."""
    rows = [("model", "params", "MACs", "reference", "contract")]
    for r in reports:
        rows.append((r.name, _cell(r.of("params")), _cell(r.of("macs")), _cell(r.of("reference")),
                     _cell(r.of("contract"))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    counts: dict[str, int] = {}
    for r in reports:
        for c in r.checks:
            counts[c.status] = counts.get(c.status, 0) + 1
    lines.append("")
    lines.append("checks: " + ", ".join(f"{counts[s]} {s}" for s in STATUSES if s in counts))
    fails = [f"{r.name}: {c.kind} {c.label}: {c.detail}" for r in reports for c in r.checks if c.status == "fail"]
    lines.extend(f"FAIL {f}" for f in fails)
    return "\n".join(lines)


def _cmd_verify(args: argparse.Namespace) -> int:
    names = nnatlas.list_models(args.pattern)
    if not names:
        raise ValueError(f"no model matches {args.pattern!r}")
    if args.threads:
        torch.set_num_threads(args.threads)
    cache = None if args.no_cache else Path(args.cache) if args.cache else default_cache_dir()

    def progress(name: str, report: ModelReport, cached: bool) -> None:
        if not args.quiet:
            how = "cached" if cached else f"{report.seconds:.1f} s"
            print(f"{name}: {'ok' if report.ok else 'FAIL'} ({how})", file=sys.stderr)

    reports = verify(names, cache, progress)
    print(format_table(reports))
    if args.json:
        Path(args.json).write_text(json.dumps([r.to_json() for r in reports], indent=1, sort_keys=True) + "\n",
                                   encoding="utf-8")
    return 0 if all(r.ok for r in reports) else 1


def add_verify_parser(sub: Any) -> argparse.ArgumentParser:
    """``nnatlas verify [PATTERN] [--json FILE] [--cache DIR | --no-cache]``."""
    p = sub.add_parser("verify", help="check parameter counts, MACs, reference equality and the forward/backward "
                       "contract of each model")
    p.add_argument("pattern", nargs="?", default=None, help="fnmatch pattern, e.g. 'resnet*' (default: every model)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON (the atlas reads this form)")
    p.add_argument("--cache", metavar="DIR", help=f"where results are cached (default {default_cache_dir()})")
    p.add_argument("--no-cache", action="store_true", help="run every check again and cache nothing")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-model progress on stderr")
    p.set_defaults(func=_cmd_verify)
    return p
