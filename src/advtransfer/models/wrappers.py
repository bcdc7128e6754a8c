"""Input-space wrappers so that attack budgets are always measured in the data's own range.

A model trained on normalised inputs ``(x - mean) / std`` (or on inputs mapped to ``[-1, 1]``) is
wrapped so that it takes raw inputs, e.g. images in ``[0, 1]``; an ``L_p`` budget ``eps`` and the
clamp to the valid range then refer to raw inputs for every model being compared.

Both wrappers are pure functions of their input (no in-place operations on ``x``), so they work
under :mod:`torch.func` (``grad``, ``jacrev``, ``vmap``). They do *not* forward unknown attributes
to the wrapped model: use ``.inner`` explicitly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from advtransfer.errors import AdvTransferError, AdvTransferTypeError

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "InputRange",
    "Normalized",
]

#: Per-channel statistics commonly used for ImageNet-pretrained torchvision / timm models.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Per-channel statistics of the CIFAR-10 training set.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def _check_model(model: object) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise AdvTransferTypeError(f"model must be an nn.Module, got {type(model).__name__}")
    return model


def _channel_vector(value: float | Sequence[float] | torch.Tensor, name: str) -> torch.Tensor:
    if isinstance(value, bool):
        raise AdvTransferTypeError(f"{name} must be a number or a sequence of numbers, got bool")
    try:
        tensor = torch.as_tensor(value, dtype=torch.float32).detach().clone()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise AdvTransferTypeError(
            f"{name} must be a number or a sequence of numbers (one per channel), got {value!r}"
        ) from exc
    if tensor.dim() > 1 or tensor.numel() == 0:
        raise AdvTransferError(
            f"{name} must be a number or a non-empty 1-d sequence (one value per channel), "
            f"got shape {tuple(tensor.shape)}"
        )
    if not torch.isfinite(tensor).all():
        raise AdvTransferError(f"{name} must be finite, got {value!r}")
    return tensor.reshape(-1)


class Normalized(nn.Module):
    """``Normalized(model, mean, std)(x) = model((x - mean) / std)``, per channel (dim 1).

    ``mean`` and ``std`` are numbers or one value per channel; they are stored as non-persistent
    buffers (they follow ``.to(device)`` but are not part of the ``state_dict``, which therefore
    is the inner model's state dict with the prefix ``inner.``). Inputs must have at least two
    dimensions ``(N, C, ...)``; ``C`` must equal the number of channels of ``mean`` / ``std``
    unless those have a single value.

    Attributes:
        inner: the wrapped model.
        mean, std: 1-d float buffers.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        model: nn.Module,
        mean: float | Sequence[float] | torch.Tensor,
        std: float | Sequence[float] | torch.Tensor,
    ) -> None:
        super().__init__()
        self.inner = _check_model(model)
        mean_t = _channel_vector(mean, "mean")
        std_t = _channel_vector(std, "std")
        if (std_t <= 0).any():
            raise AdvTransferError(f"std must be positive, got {std!r}")
        if mean_t.numel() != std_t.numel() and 1 not in (mean_t.numel(), std_t.numel()):
            raise AdvTransferError(
                f"mean and std must have the same number of channels, got {mean_t.numel()} "
                f"and {std_t.numel()}"
            )
        channels = max(mean_t.numel(), std_t.numel())
        self.register_buffer("mean", mean_t.expand(channels).clone(), persistent=False)
        self.register_buffer("std", std_t.expand(channels).clone(), persistent=False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``(x - mean) / std`` with the statistics broadcast along dim 1."""
        if x.dim() < 2:
            raise AdvTransferError(
                f"Normalized expects inputs of shape (N, C, ...), got shape {tuple(x.shape)}"
            )
        channels = self.mean.numel()
        if channels != 1 and x.shape[1] != channels:
            raise AdvTransferError(
                f"Normalized has {channels} channels of mean/std but the input has "
                f"{x.shape[1]} channels (shape {tuple(x.shape)})"
            )
        view = (1, -1) + (1,) * (x.dim() - 2)
        # Floating inputs keep their dtype; integer inputs (e.g. uint8) are promoted to float.
        dtype = x.dtype if x.is_floating_point() else self.mean.dtype
        mean = self.mean.to(dtype=dtype).reshape(view)
        std = self.std.to(dtype=dtype).reshape(view)
        return (x - mean) / std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(self.normalize(x))

    def extra_repr(self) -> str:
        return f"mean={self.mean.tolist()}, std={self.std.tolist()}"


def _range(value: object, name: str) -> tuple[float, float]:
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or len(value) != 2
        or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value)
    ):
        raise AdvTransferTypeError(f"{name} must be a pair of numbers (lo, hi), got {value!r}")
    lo, hi = float(value[0]), float(value[1])
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise AdvTransferError(f"{name} must be finite with lo < hi, got {value!r}")
    return lo, hi


class InputRange(nn.Module):
    """Map inputs linearly from ``from_range`` to ``to_range`` before calling the model.

    ``y = to_lo + (x - from_lo) * (to_hi - to_lo) / (from_hi - from_lo)``; with the defaults
    ``y = 2x - 1`` maps images in ``[0, 1]`` to ``[-1, 1]`` (the range used by the paper's image
    code). Inputs outside ``from_range`` are mapped by the same affine formula (no clamping).

    Attributes:
        inner: the wrapped model.
        from_range, to_range: the two ``(lo, hi)`` pairs as floats.
    """

    def __init__(
        self,
        model: nn.Module,
        from_range: tuple[float, float] = (0.0, 1.0),
        to_range: tuple[float, float] = (-1.0, 1.0),
    ) -> None:
        super().__init__()
        self.inner = _check_model(model)
        self.from_range = _range(from_range, "from_range")
        self.to_range = _range(to_range, "to_range")
        self.scale = (self.to_range[1] - self.to_range[0]) / (
            self.from_range[1] - self.from_range[0]
        )

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """Return the affinely mapped input (a new tensor; ``x`` is not modified)."""
        return (x - self.from_range[0]) * self.scale + self.to_range[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(self.transform(x))

    def extra_repr(self) -> str:
        return f"from_range={self.from_range}, to_range={self.to_range}"
