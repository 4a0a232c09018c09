"""Normalisation layers written from their equations: batch norm, local response norm, RMSNorm.

Each has two paths chosen by ``impl``: ``"reference"`` computes the paper's equation in
plain tensor ops, ``"fused"`` (the default) calls the ``torch.nn.functional`` kernel.
They are tested equal, running statistics included.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from nnatlas.errors import ShapeError

__all__ = ["BatchNorm1d", "BatchNorm2d", "LocalResponseNorm", "RMSNorm"]

Impl = Literal["fused", "reference"]


def _check_impl(impl: str) -> None:
    if impl not in ("fused", "reference"):
        raise ValueError(f"impl must be 'fused' or 'reference'; got {impl!r}")


class _BatchNorm(nn.Module):
    """Batch normalisation (Ioffe & Szegedy, 2015) over every dimension but the channels (dim 1).

    y = (x - E[x]) / sqrt(Var[x] + eps) * gamma + beta

    In training the batch statistics normalise (biased variance) and the running estimates
    move by ``momentum`` (the unbiased variance, as torch.nn does; ``momentum=None`` takes a
    cumulative average). In evaluation the running estimates normalise.
    """

    _ranks: tuple[int, ...] = ()

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        impl: Impl = "fused",
    ) -> None:
        super().__init__()
        if num_features < 1:
            raise ValueError(f"{type(self).__name__} expects num_features >= 1; got {num_features}")
        _check_impl(impl)
        factory = {"device": device, "dtype": dtype}
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats, self.impl = affine, track_running_stats, impl
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features, **factory))  # gamma
            self.bias = nn.Parameter(torch.zeros(num_features, **factory))  # beta
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **factory))
            self.register_buffer("running_var", torch.ones(num_features, **factory))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"track_running_stats={self.track_running_stats}, impl={self.impl!r}"
        )

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() not in self._ranks or x.shape[1] != self.num_features:
            want = " or ".join(f"{r}-d" for r in self._ranks)
            raise ShapeError(
                f"{type(self).__name__}({self.num_features}) expects a {want} input with {self.num_features} "
                f"channels at dim 1; got {tuple(x.shape)}"
            )

    def _momentum(self) -> float:
        """The running-average factor of this step (after counting it)."""
        if self.momentum is None:  # cumulative moving average
            return 1.0 / float(self.num_batches_tracked)
        return self.momentum

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C) or (B, C, L) for 1d, (B, C, H, W) for 2d -> the same shape."""
        self._check(x)
        use_batch_stats = self.training or not self.track_running_stats
        factor = 0.0
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            factor = self._momentum()
        if self.impl == "fused":
            return F.batch_norm(
                x,
                self.running_mean,  # None when not tracking; updated in place by `factor` in training
                self.running_var,
                self.weight,
                self.bias,
                use_batch_stats,
                factor,
                self.eps,
            )
        return self._reference(x, use_batch_stats, factor)

    def _reference(self, x: torch.Tensor, use_batch_stats: bool, factor: float) -> torch.Tensor:
        dims = [0, *range(2, x.dim())]  # every dimension but the channels
        view = (1, -1) + (1,) * (x.dim() - 2)  # (1, C, 1, 1) broadcasts over (B, C, H, W)
        if use_batch_stats:
            mean = x.mean(dims)  # E[x] per channel
            var = x.var(dims, unbiased=False)  # Var[x], biased: this is what normalises
            if self.training and self.track_running_stats:
                n = x.numel() // x.shape[1]
                with torch.no_grad():  # running estimates use the unbiased variance, n / (n - 1)
                    self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), factor)
                    unbiased = var.detach() * (n / max(n - 1, 1))
                    self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)
        else:
            mean, var = self.running_mean, self.running_var
        y = (x - mean.view(view)) * torch.rsqrt(var.view(view) + self.eps)  # x_hat
        if self.affine:
            y = y * self.weight.view(view) + self.bias.view(view)  # gamma * x_hat + beta
        return y

    @classmethod
    def from_reference(cls, module: nn.modules.batchnorm._BatchNorm, *, impl: Impl = "fused") -> "_BatchNorm":
        """The from-scratch layer holding ``module``'s weights and running statistics."""
        expected = getattr(nn, cls.__name__)
        if not isinstance(module, expected):
            raise TypeError(f"{cls.__name__}.from_reference expects torch.nn.{cls.__name__}; got {type(module).__name__}")
        p = next(iter(module.state_dict().values()), None)
        layer = cls(
            module.num_features,
            eps=module.eps,
            momentum=module.momentum,
            affine=module.affine,
            track_running_stats=module.track_running_stats,
            device=p.device if p is not None else None,
            dtype=module.weight.dtype if module.affine else None,
            impl=impl,
        )
        layer.load_state_dict(module.state_dict())
        layer.train(module.training)
        return layer


class BatchNorm1d(_BatchNorm):
    """Batch norm over (B, C) or (B, C, L); mirrors :class:`torch.nn.BatchNorm1d`."""

    _ranks = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch norm over (B, C, H, W); mirrors :class:`torch.nn.BatchNorm2d`."""

    _ranks = (4,)


class LocalResponseNorm(nn.Module):
    """Local response normalisation across channels (Krizhevsky et al., 2012, section 3.3).

    b_c = a_c / (k + alpha / n * sum_{c' in window(c)} a_{c'}^2) ^ beta

    with a window of ``size`` = n channels centred on c (zero beyond the edges). torch.nn
    divides alpha by n; the AlexNet paper does not, so its alpha = 1e-4 is 5e-4 here.
    """

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0, *, impl: Impl = "fused") -> None:
        super().__init__()
        if size < 1:
            raise ValueError(f"LocalResponseNorm expects size >= 1; got {size}")
        _check_impl(impl)
        self.size, self.alpha, self.beta, self.k, self.impl = size, alpha, beta, k, impl

    def extra_repr(self) -> str:
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}, impl={self.impl!r}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, *) with at least 3 dimensions -> the same shape."""
        if x.dim() < 3:
            raise ShapeError(f"LocalResponseNorm expects (B, C, *) with 3 or more dimensions; got {tuple(x.shape)}")
        if self.impl == "fused":
            return F.local_response_norm(x, self.size, self.alpha, self.beta, self.k)
        B, C = x.shape[:2]
        sq = (x * x).reshape(B, 1, C, -1)  # (B, 1, C, rest): channels become a spatial axis
        # window of `size` channels: size // 2 before, (size - 1) // 2 after, as torch.nn places it
        sq = F.pad(sq, (0, 0, self.size // 2, (self.size - 1) // 2))
        window_sum = sq.unfold(2, self.size, 1).sum(-1)  # (B, 1, C, rest)
        div = (self.k + self.alpha / self.size * window_sum).pow(self.beta).reshape(x.shape)
        return x / div

    @classmethod
    def from_reference(cls, module: nn.LocalResponseNorm, *, impl: Impl = "fused") -> "LocalResponseNorm":
        """The from-scratch layer with ``module``'s hyper-parameters (it holds no weights)."""
        if not isinstance(module, nn.LocalResponseNorm):
            raise TypeError(f"LocalResponseNorm.from_reference expects torch.nn.LocalResponseNorm; got {type(module).__name__}")
        return cls(module.size, module.alpha, module.beta, module.k, impl=impl)


class RMSNorm(nn.Module):
    """Root-mean-square normalisation (Zhang & Sennrich, 2019) over the last dimensions.

    y = x / sqrt(mean(x^2) + eps) * g

    Mirrors :class:`torch.nn.RMSNorm` (``eps=None`` uses the dtype's machine epsilon).
    """

    def __init__(
        self,
        normalized_shape: int | tuple[int, ...],
        eps: float | None = None,
        elementwise_affine: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        impl: Impl = "fused",
    ) -> None:
        super().__init__()
        _check_impl(impl)
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        if any(d < 1 for d in shape):
            raise ValueError(f"RMSNorm expects positive normalized_shape; got {shape}")
        self.normalized_shape, self.eps, self.elementwise_affine, self.impl = shape, eps, elementwise_affine, impl
        if elementwise_affine:
            self.weight = nn.Parameter(torch.ones(shape, device=device, dtype=dtype))
        else:
            self.register_parameter("weight", None)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, impl={self.impl!r}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (*, normalized_shape) -> the same shape."""
        n = len(self.normalized_shape)
        if tuple(x.shape[-n:]) != self.normalized_shape:
            raise ShapeError(f"RMSNorm expects input (*, {', '.join(map(str, self.normalized_shape))}); got {tuple(x.shape)}")
        if self.impl == "fused":
            return F.rms_norm(x, self.normalized_shape, self.weight, self.eps)
        eps = self.eps if self.eps is not None else torch.finfo(x.dtype).eps
        dims = tuple(range(-n, 0))
        y = x * torch.rsqrt(x.pow(2).mean(dims, keepdim=True) + eps)
        return y * self.weight if self.weight is not None else y

    @classmethod
    def from_reference(cls, module: nn.Module, *, impl: Impl = "fused") -> "RMSNorm":
        """The from-scratch layer holding ``module``'s (a ``torch.nn.RMSNorm``) weight."""
        if type(module).__name__ != "RMSNorm" or not hasattr(module, "normalized_shape"):
            raise TypeError(f"RMSNorm.from_reference expects torch.nn.RMSNorm; got {type(module).__name__}")
        w = module.weight
        layer = cls(
            tuple(module.normalized_shape),
            eps=module.eps,
            elementwise_affine=module.elementwise_affine,
            device=w.device if w is not None else None,
            dtype=w.dtype if w is not None else None,
            impl=impl,
        )
        layer.load_state_dict(module.state_dict())
        return layer
