"""The ``digits:`` namespace of :func:`advtransfer.models.create`: small classifiers of
scikit-learn's 8x8 digits (flat 64-pixel inputs or (N, 1, 8, 8) images), named by a pattern
rather than a table:

* ``mlpW``: two hidden ReLU layers of width W
  (:func:`~advtransfer.models.architectures.digits_mlp`);
* ``mlpWxD``: D hidden ReLU layers of width W (:func:`~advtransfer.models.architectures.fc_net`);
* ``cnnW``: the digits CNN of width W (:func:`~advtransfer.models.architectures.digits_cnn`);
* ``linear``: logistic regression on the 64 pixels (its penultimate features are the pixels);
* ``lenet``: :class:`UpsampledLeNet`, LeNet-5 on the digits upsampled to 16 x 16.

``create("digits:mlp32", "random", num_classes=4)``; the model-selection recipes build their
pools' architectures through it (``docs/design.md §4``: one model registry).
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from advtransfer.errors import AdvTransferError, AdvTransferTypeError
from advtransfer.models.architectures import digits_cnn, digits_mlp, fc_net, lenet

__all__ = ["EXAMPLES", "UpsampledLeNet", "build", "check_name"]

_PATTERN = re.compile(r"mlp[1-9]\d*(x[1-9]\d*)?|cnn[1-9]\d*|linear|lenet")
#: Names that :func:`advtransfer.models.list_models` shows for the namespace (any W, D >= 1 work).
EXAMPLES = ("cnn16", "lenet", "linear", "mlp32", "mlp64", "mlp64x3")


class UpsampledLeNet(nn.Module):
    """LeNet-5 on 8x8 digits upsampled (bilinear, differentiable) to ``size`` x ``size``:
    LeNet's two 5x5 convolutions need at least 14 px. Accepts (N, 1, 8, 8) or flat (N, 64)."""

    def __init__(self, num_classes: int, size: int = 16, width: float = 1.0) -> None:
        super().__init__()
        self.size = size
        self.net = lenet(num_classes, in_channels=1, image_size=size, width=width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.reshape(x.shape[0], 1, 8, 8)
        return self.net(F.interpolate(x, size=(self.size, self.size), mode="bilinear",
                                      align_corners=False))


def check_name(name: str) -> None:
    """Raise an :class:`AdvTransferError` naming the accepted patterns unless ``name`` is one."""
    if not isinstance(name, str):
        raise AdvTransferTypeError(f"name must be a str, got {type(name).__name__}")
    if _PATTERN.fullmatch(name) is None:
        raise AdvTransferError(
            f"unknown digits model name {name!r}: use mlpW (digits MLP, two hidden layers of "
            "width W), mlpWxD (D hidden layers of width W), cnnW (digits CNN of width W), "
            "linear or lenet, e.g. digits:mlp32")


def build(name: str, num_classes: int = 10) -> nn.Module:
    """The untrained digits classifier ``name`` (see the module docs) with ``num_classes``
    outputs."""
    check_name(name)
    if name == "linear":
        return fc_net(64, num_classes, hidden=())
    if name == "lenet":
        return UpsampledLeNet(num_classes)
    if "x" in name:
        width, depth = (int(v) for v in name[3:].split("x"))
        return fc_net(64, num_classes, hidden=(width,) * depth)
    width = int(name[3:])
    return digits_mlp(num_classes, hidden=width) if name.startswith("mlp") else \
        digits_cnn(num_classes, width=width)
