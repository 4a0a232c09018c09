"""Issue 13's "Why" list, one test (or a few) per item; each failed on main before the fix.

Item 3 (inputs and configs) is here; the run-folder items (1, 4, 5, 6) and downloads (2) follow
below and in ``tests/data/test_download_limits.py``. The random versions live in ``tests/fuzz``.
"""

from __future__ import annotations

import pytest
import torch

import nnatlas
from nnatlas.errors import ConfigError, ShapeError, UnknownModelError

# ----------------------------------------------------------------------------- item 3: model entries

def _float_model(name: str) -> tuple[torch.nn.Module, torch.Tensor]:
    x = nnatlas.example_input(name, 2, small=True)
    assert isinstance(x, torch.Tensor) and x.is_floating_point()
    return nnatlas.create(name).eval(), x


@pytest.mark.parametrize("name", ["lenet", "mlp", "simple_cnn"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_float_model_names_the_dtype_it_expects(name: str, dtype: torch.dtype) -> None:
    model, x = _float_model(name)
    with pytest.raises(ShapeError, match=r"expects input of dtype torch.float32.*x.to\(torch.float32\)"):
        model(x.to(dtype))
    model.to(dtype)  # the policy: the model's dtype decides, and a converted model takes the converted input
    if dtype == torch.float64:
        assert model(x.to(dtype)).dtype == dtype


@pytest.mark.parametrize("name", ["lenet", "mlp", "transformer_tiny"])
def test_batch_zero_is_a_shape_error(name: str) -> None:
    x = nnatlas.example_input(name, 2, small=True)
    xs = x if isinstance(x, tuple) else (x,)
    empty = tuple(t[:0] for t in xs)
    with pytest.raises(ShapeError, match=r"B >= 1"):
        nnatlas.create(name).eval()(*empty)


@pytest.mark.parametrize("bad", [-1, 10**7])
def test_token_ids_are_range_checked(bad: int) -> None:
    for name in ("transformer_tiny", "bert_tiny", "nlp_rnn", "gpt_mini"):
        x = nnatlas.example_input(name, 2)
        xs = list(x) if isinstance(x, tuple) else [x]
        xs[0] = xs[0].clone()
        xs[0][0, 0] = bad
        with pytest.raises(ShapeError, match=r"in \[0, \d+\)"):
            nnatlas.create(name).eval()(*xs)


def test_bert_attention_mask_must_be_zeros_and_ones() -> None:
    model = nnatlas.create("bert_tiny", num_layers=1).eval()
    ids = torch.randint(0, 100, (2, 5))
    mask = torch.ones(2, 5, dtype=torch.long)
    model(ids, mask)  # 0/1 is fine
    mask[0, 1] = 10**7
    with pytest.raises(ShapeError, match="attention_mask of 0 and 1"):
        model(ids, mask)


@pytest.mark.parametrize("value", ["10", 1.5, True, None, -1])
@pytest.mark.parametrize("name", ["lenet", "lenet5_1998", "resnet18", "vgg11", "transformer_tiny", "mamba_tiny", "gcn"])
def test_config_types_are_checked_in_one_place(name: str, value: object) -> None:
    field = "vocab_size" if name.startswith(("transformer", "mamba")) else "num_classes"
    with pytest.raises(ConfigError, match=rf"\.{field} must be an int >= 1; got"), torch.device("meta"):
        nnatlas.create(name, **{field: value})


def test_bool_is_not_a_class_count_for_lenet_1998() -> None:
    with pytest.raises(ConfigError, match="num_classes must be an int"):
        nnatlas.create("lenet5_1998", num_classes=True)


@pytest.mark.parametrize("name", [None, 3, ("lenet",)])
def test_create_with_a_non_string_name(name: object) -> None:
    with pytest.raises(UnknownModelError, match="a model name is a string"):
        nnatlas.create(name)  # type: ignore[arg-type]
