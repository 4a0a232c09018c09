"""From-scratch normalisation layers equal their torch.nn namesakes, both paths, over several steps."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import nnatlas
from nnatlas.errors import ShapeError


def _bn_pairs(cls_name: str, shape: tuple[int, ...], momentum: float | None, affine: bool, track: bool):
    ref = getattr(nn, cls_name)(shape[1], momentum=momentum, affine=affine, track_running_stats=track)
    if affine:
        with torch.no_grad():
            ref.weight.uniform_(0.5, 1.5)
            ref.bias.uniform_(-0.5, 0.5)
    return ref


@pytest.mark.parametrize("impl", ["fused", "reference"])
@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("affine,track", [(True, True), (False, True), (True, False)])
@pytest.mark.parametrize("cls_name,shape", [("BatchNorm1d", (8, 5)), ("BatchNorm1d", (4, 5, 7)), ("BatchNorm2d", (4, 3, 6, 5))])
def test_batchnorm_equals_torch_over_steps(cls_name, shape, momentum, affine, track, impl) -> None:
    ref = _bn_pairs(cls_name, shape, momentum, affine, track)
    ours = getattr(nnatlas.nn, cls_name).from_reference(ref, impl=impl)
    for step in range(4):  # train steps move the running statistics
        x = torch.randn(shape) * (step + 1) + step
        xr, xo = x.clone().requires_grad_(), x.clone().requires_grad_()
        yr, yo = ref(xr), ours(xo)
        torch.testing.assert_close(yo, yr, rtol=1e-5, atol=1e-5)  # fp32 rounding of two formulas
        g = torch.randn_like(yr)
        yr.backward(g)
        yo.backward(g)
        torch.testing.assert_close(xo.grad, xr.grad, rtol=1e-4, atol=1e-5)
        if affine:
            torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(ours.bias.grad, ref.bias.grad, rtol=1e-4, atol=1e-5)
    for name, buf in ref.named_buffers():
        torch.testing.assert_close(dict(ours.named_buffers())[name], buf, rtol=1e-6, atol=1e-6)
    ref.eval(), ours.eval()
    x = torch.randn(shape)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


def test_batchnorm_state_dict_keys_match_torch() -> None:
    assert nnatlas.nn.BatchNorm2d(4).state_dict().keys() == nn.BatchNorm2d(4).state_dict().keys()


def test_batchnorm_rejects_wrong_input() -> None:
    with pytest.raises(ShapeError, match=r"\(2, 3, 4\)"):
        nnatlas.nn.BatchNorm2d(3)(torch.randn(2, 3, 4))
    with pytest.raises(ShapeError, match="5 channels"):
        nnatlas.nn.BatchNorm1d(5)(torch.randn(2, 4))
    with pytest.raises(ValueError):
        nnatlas.nn.BatchNorm2d(0)
    with pytest.raises(ValueError, match="impl"):
        nnatlas.nn.BatchNorm2d(3, impl="cuda")
    with pytest.raises(TypeError):
        nnatlas.nn.BatchNorm2d.from_reference(nn.BatchNorm1d(3))


@pytest.mark.parametrize("impl", ["fused", "reference"])
@pytest.mark.parametrize("size,k,alpha", [(5, 2.0, 5e-4), (4, 1.0, 1e-4), (1, 1.0, 1e-2)])
def test_local_response_norm_equals_torch(size, k, alpha, impl) -> None:
    ref = nn.LocalResponseNorm(size, alpha=alpha, beta=0.75, k=k)
    ours = nnatlas.nn.LocalResponseNorm.from_reference(ref, impl=impl)
    x = (torch.randn(2, 7, 5, 4) * 10).requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    y, y2 = ours(x), ref(x2)
    torch.testing.assert_close(y, y2, rtol=1e-5, atol=1e-6)
    y.sum().backward(), y2.sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-4, atol=1e-6)


def test_local_response_norm_3d_and_errors() -> None:
    ours = nnatlas.nn.LocalResponseNorm(3, impl="reference")
    x = torch.randn(2, 6, 9)
    torch.testing.assert_close(ours(x), nn.LocalResponseNorm(3)(x))
    with pytest.raises(ShapeError):
        ours(torch.randn(6, 9))


@pytest.mark.parametrize("impl", ["fused", "reference"])
@pytest.mark.parametrize("eps", [None, 1e-5])
def test_rmsnorm_equals_torch(eps, impl) -> None:
    ref = nn.RMSNorm(8, eps=eps)
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5)
    ours = nnatlas.nn.RMSNorm.from_reference(ref, impl=impl)
    x = torch.randn(3, 5, 8, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    torch.testing.assert_close(ours(x), ref(x2), rtol=1e-5, atol=1e-6)
    ours(x).pow(2).sum().backward()
    ref(x2).pow(2).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=1e-4, atol=1e-5)
    with pytest.raises(ShapeError, match=r"\(3, 5, 7\)"):
        ours(torch.randn(3, 5, 7))
