"""Model architectures used in the experiments, in sizes from tiny (tests) to full.

Every builder returns a plain :class:`torch.nn.Module` whose ``forward`` maps an input batch to
logits (or, for :func:`two_layer_sigmoid`, to real-valued outputs).

Layer-naming convention (the same for *all* architectures here)
----------------------------------------------------------------
* The final :class:`torch.nn.Linear` is always the attribute ``fc``; the *penultimate features*
  are the input of ``fc`` (capture them with a forward pre-hook on ``model.fc``, or with a
  forward hook on the module named below).
* Models that take images / tensors with more than one dimension have an :class:`torch.nn.Flatten`
  module named ``flatten``.
* Named children, in forward order (registry name in brackets):

  - ``fc_net`` ["fc"], ``fc_net_liang`` ["fc-liang"], ``digits_mlp`` ["digits-mlp"]:
    ``flatten`` -> ``body`` (hidden ``Linear`` + ``ReLU`` layers) -> ``fc``
  - ``lenet`` ["lenet"], ``digits_cnn`` ["digits-cnn"]:
    ``features`` (conv trunk) -> ``flatten`` -> ``classifier`` (hidden layers) -> ``fc``
  - ``alexnet_cifar`` ["alexnet"]:
    ``features`` -> ``avgpool`` -> ``flatten`` -> ``classifier`` -> ``fc``
  - ``alexnet_liang`` ["alexnet-liang"]: ``features`` -> ``flatten`` -> ``fc``
  - ``resnet18_cifar`` ["resnet18"], ``resnet50_cifar`` ["resnet50"]:
    ``conv1`` -> ``bn1`` -> ``relu`` -> ``layer1`` .. ``layer4`` -> ``avgpool`` -> ``flatten``
    -> ``fc`` (the same names as torchvision's ResNet, plus ``flatten``)
  - ``two_layer_sigmoid`` ["two-layer-sigmoid"]: ``hidden_layer`` -> ``act`` -> ``fc``

  So the penultimate features are the output of ``body`` / ``classifier`` / ``flatten``
  (ResNets, ``alexnet-liang``) / ``act`` (sigmoid net), i.e. always the input of ``fc``.

``fc-liang`` and ``alexnet-liang`` are the fully connected network and the AlexNet of Liang et
al.'s released image code (``image_exp/models``), which their CIFAR-10 -> STL-10 architecture
experiment trains; ``fc`` and ``alexnet`` are this library's own, larger-headed variants.

Width multipliers scale every channel count and hidden width as ``max(1, round(width * c))``,
so ``width=0.25`` gives quick, tiny versions for tests and ``--quick`` runs.
"""

from __future__ import annotations

import copy
import difflib
import inspect
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from advtransfer.errors import AdvTransferError, AdvTransferTypeError

__all__ = [
    "ARCHITECTURES",
    "AlexNetCifar",
    "AlexNetLiang",
    "CifarResNet",
    "DigitsCNN",
    "FCNet",
    "LeNet",
    "TwoLayerSigmoid",
    "alexnet_cifar",
    "alexnet_liang",
    "build",
    "digits_cnn",
    "digits_mlp",
    "fc_net",
    "fc_net_liang",
    "head_layer",
    "lenet",
    "replace_head",
    "resnet18_cifar",
    "resnet50_cifar",
    "two_layer_sigmoid",
]



# ---------------------------------------------------------------------------------------------
# argument checks
# ---------------------------------------------------------------------------------------------


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise AdvTransferTypeError(f"{name} must be a positive int, got {value!r}")
    if value < 1:
        raise AdvTransferError(f"{name} must be a positive int, got {value}")
    return value


def _positive_float(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise AdvTransferTypeError(f"{name} must be a positive number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise AdvTransferError(f"{name} must be a positive finite number, got {value}")
    return float(value)


def _dropout(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise AdvTransferTypeError(f"dropout must be a number in [0, 1), got {value!r}")
    if not 0.0 <= value < 1.0:
        raise AdvTransferError(f"dropout must be in [0, 1), got {value}")
    return float(value)


def _scaled(channels: int, width: float) -> int:
    """``max(1, round(width * channels))``."""
    return max(1, int(round(channels * width)))


def _hidden_sizes(hidden: int | Sequence[int], name: str = "hidden") -> tuple[int, ...]:
    if isinstance(hidden, int) and not isinstance(hidden, bool):
        return (_positive_int(hidden, name),)
    if not isinstance(hidden, Sequence) or isinstance(hidden, str):
        raise AdvTransferTypeError(
            f"{name} must be an int or a sequence of positive ints, got {hidden!r}"
        )
    return tuple(_positive_int(h, f"{name}[{i}]") for i, h in enumerate(hidden))


def _mlp_body(in_features: int, hidden: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    previous = in_features
    for size in hidden:
        layers += [nn.Linear(previous, size), nn.ReLU()]
        previous = size
    return nn.Sequential(*layers)


# ---------------------------------------------------------------------------------------------
# fully connected networks
# ---------------------------------------------------------------------------------------------


class FCNet(nn.Module):
    """Fully connected ReLU network: ``flatten -> body -> fc``.

    ``body`` is ``[Linear, ReLU] * len(hidden)``; ``fc`` is the final ``Linear``.
    """

    def __init__(self, in_features: int, num_classes: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.body = _mlp_body(in_features, hidden)
        self.fc = nn.Linear(hidden[-1] if hidden else in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(self.flatten(x)))


def fc_net(
    in_shape: int | Sequence[int],
    num_classes: int,
    hidden: int | Sequence[int] = (512, 256),
    *,
    width: float = 1.0,
) -> FCNet:
    """Fully connected network on flattened inputs.

    Args:
        in_shape: shape of one input without the batch dimension (e.g. ``(3, 32, 32)``) or the
            number of input features.
        num_classes: number of outputs (logits).
        hidden: hidden-layer widths (each followed by ReLU); ``()`` gives a linear model.
        width: multiplier applied to every hidden width.
    """
    if isinstance(in_shape, int) and not isinstance(in_shape, bool):
        in_features = _positive_int(in_shape, "in_shape")
    elif isinstance(in_shape, Sequence) and not isinstance(in_shape, str) and len(in_shape) > 0:
        in_features = math.prod(_positive_int(d, f"in_shape[{i}]") for i, d in enumerate(in_shape))
    else:
        raise AdvTransferTypeError(
            f"in_shape must be an int or a non-empty sequence of positive ints, got {in_shape!r}"
        )
    width = _positive_float(width, "width")
    sizes = tuple(_scaled(h, width) for h in _hidden_sizes(hidden))
    return FCNet(in_features, _positive_int(num_classes, "num_classes"), sizes)


#: Hidden widths of Liang et al.'s fully connected network (``image_exp/models/fc.py``).
LIANG_FC_HIDDEN = (1176, 400, 120, 84)


def fc_net_liang(
    num_classes: int = 10, in_shape: int | Sequence[int] = (3, 32, 32), *, width: float = 1.0
) -> FCNet:
    """Liang et al.'s fully connected network: 3072-1176-400-120-84-``num_classes`` on
    flattened 32 px RGB images, ReLU after every hidden layer, no dropout (their
    ``image_exp/models/fc.py``). ``width`` scales the hidden widths."""
    return fc_net(in_shape, num_classes, LIANG_FC_HIDDEN, width=width)


def digits_mlp(num_classes: int = 10, hidden: int = 64) -> FCNet:
    """Two-hidden-layer ReLU MLP for scikit-learn digits (inputs ``1x8x8`` or ``64`` in [0, 1]).

    ``flatten -> body (Linear(64, hidden), ReLU, Linear(hidden, hidden), ReLU) -> fc``.
    """
    hidden = _positive_int(hidden, "hidden")
    return FCNet(64, _positive_int(num_classes, "num_classes"), (hidden, hidden))


# ---------------------------------------------------------------------------------------------
# convolutional networks
# ---------------------------------------------------------------------------------------------


class LeNet(nn.Module):
    """LeNet-5: two 5x5 conv + max-pool stages, then Linear 120 -> 84 -> ``fc``."""

    def __init__(self, num_classes: int, in_channels: int, image_size: int, width: float) -> None:
        super().__init__()
        c1, c2 = _scaled(6, width), _scaled(16, width)
        h1, h2 = _scaled(120, width), _scaled(84, width)
        side = ((image_size - 4) // 2 - 4) // 2
        if side < 1:
            raise AdvTransferError(
                f"image_size must be at least 14 for lenet (two 5x5 convs and 2x2 pools), "
                f"got {image_size}"
            )
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(
            nn.Linear(c2 * side * side, h1), nn.ReLU(), nn.Linear(h1, h2), nn.ReLU()
        )
        self.fc = nn.Linear(h2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.classifier(self.flatten(self.features(x))))


def lenet(
    num_classes: int, in_channels: int = 3, image_size: int = 32, *, width: float = 1.0
) -> LeNet:
    """LeNet-5 for square ``in_channels x image_size x image_size`` inputs (default CIFAR)."""
    return LeNet(
        _positive_int(num_classes, "num_classes"),
        _positive_int(in_channels, "in_channels"),
        _positive_int(image_size, "image_size"),
        _positive_float(width, "width"),
    )


def _alexnet_features(stem: nn.Conv2d, c: list[int]) -> nn.Sequential:
    """AlexNet's convolutions after ``stem`` (which maps the input to ``c[0]`` channels):
    stem - ReLU - maxpool2 - conv5x5 (c[1]) - ReLU - maxpool2 - conv3x3 (c[2]) - ReLU -
    conv3x3 (c[3]) - ReLU - conv3x3 (c[4]) - ReLU - maxpool2."""
    return nn.Sequential(
        stem, nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c[0], c[1], kernel_size=5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c[1], c[2], kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2d(c[2], c[3], kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2d(c[3], c[4], kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    )


class AlexNetCifar(nn.Module):
    """AlexNet-style network for 32x32 images.

    ``features``: conv5x5(64) - ReLU - maxpool2 - conv5x5(192) - ReLU - maxpool2 - conv3x3(384) -
    ReLU - conv3x3(256) - ReLU - conv3x3(256) - ReLU - maxpool2 (32 px -> 4x4);
    ``avgpool``: adaptive average pool to 4x4 (identity at 32 px, lets other sizes work);
    ``classifier``: Dropout - Linear(4096, 1024) - ReLU - Dropout - Linear(1024, 1024) - ReLU;
    ``fc``: Linear(1024, num_classes). All widths are scaled by ``width``.
    """

    def __init__(self, num_classes: int, in_channels: int, width: float, dropout: float) -> None:
        super().__init__()
        c = [_scaled(n, width) for n in (64, 192, 384, 256, 256)]
        hidden = _scaled(1024, width)
        self.features = _alexnet_features(nn.Conv2d(in_channels, c[0], kernel_size=5, padding=2), c)
        self.avgpool = nn.AdaptiveAvgPool2d((4, 4))
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(c[4] * 16, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
        )
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.classifier(self.flatten(self.avgpool(self.features(x)))))


def alexnet_cifar(
    num_classes: int, width: float = 1.0, *, in_channels: int = 3, dropout: float = 0.5
) -> AlexNetCifar:
    """AlexNet-style network for 32 px images (see :class:`AlexNetCifar`)."""
    return AlexNetCifar(
        _positive_int(num_classes, "num_classes"),
        _positive_int(in_channels, "in_channels"),
        _positive_float(width, "width"),
        _dropout(dropout),
    )


class AlexNetLiang(nn.Module):
    """The CIFAR AlexNet of Liang et al.'s image code (the ``alexnet`` their
    ``image_exp/models`` imports, the one of W. Yang's ``pytorch-classification``: AlexNet's
    convolutions, fully connected layers removed).

    ``features``: conv11x11/4 pad 5 (64) - ReLU - maxpool2 - conv5x5 pad 2 (192) - ReLU -
    maxpool2 - conv3x3 (384) - ReLU - conv3x3 (256) - ReLU - conv3x3 (256) - ReLU - maxpool2
    (32 px -> 8 -> 4 -> 2 -> 1); ``fc``: one Linear on the flattened 256-d features (the authors'
    ``classifier``). No dropout, no batch normalisation. Channels are scaled by ``width``.
    """

    def __init__(self, num_classes: int, in_channels: int, image_size: int, width: float) -> None:
        super().__init__()
        c = [_scaled(n, width) for n in (64, 192, 384, 256, 256)]
        side = ((image_size + 2 * 5 - 11) // 4 + 1) // 8
        if side < 1:
            raise AdvTransferError(
                f"image_size must be at least 29 for alexnet-liang (an 11x11 stride-4 stem and "
                f"three 2x2 pools), got {image_size}"
            )
        self.features = _alexnet_features(
            nn.Conv2d(in_channels, c[0], kernel_size=11, stride=4, padding=5), c)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c[4] * side * side, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.features(x)))


def alexnet_liang(
    num_classes: int = 10, image_size: int = 32, *, in_channels: int = 3, width: float = 1.0
) -> AlexNetLiang:
    """Liang et al.'s CIFAR AlexNet (see :class:`AlexNetLiang`); 2,472,266 parameters for 10
    classes at 32 px."""
    return AlexNetLiang(
        _positive_int(num_classes, "num_classes"),
        _positive_int(in_channels, "in_channels"),
        _positive_int(image_size, "image_size"),
        _positive_float(width, "width"),
    )


if TYPE_CHECKING:  # torchvision is imported lazily: it costs ~1.5 s at start-up
    from torchvision.models.resnet import BasicBlock, Bottleneck


class CifarResNet(nn.Module):
    """ResNet for 32 px images built from torchvision's ``BasicBlock`` / ``Bottleneck``.

    Differences from the ImageNet ResNet: the stem is a 3x3 conv with stride 1 and there is no
    max-pool, so ``layer1`` .. ``layer4`` work at 32, 16, 8 and 4 px. Stage widths are
    ``(64, 128, 256, 512) * width`` (times ``block.expansion`` = 4 at the output of a
    ``Bottleneck``). Modules: ``conv1, bn1, relu, layer1..layer4, avgpool, flatten, fc``.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        num_classes: int,
        in_channels: int = 3,
        width: float = 1.0,
    ) -> None:
        super().__init__()
        planes = [_scaled(p, width) for p in (64, 128, 256, 512)]
        self.inplanes = planes[0]
        self.conv1 = nn.Conv2d(
            in_channels, self.inplanes, kernel_size=3, stride=1, padding=1, bias=False
        )
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, planes[0], layers[0], stride=1)
        self.layer2 = self._make_layer(block, planes[1], layers[1], stride=2)
        self.layer3 = self._make_layer(block, planes[2], layers[2], stride=2)
        self.layer4 = self._make_layer(block, planes[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(planes[3] * block.expansion, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def _make_layer(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        planes: int,
        blocks: int,
        stride: int,
    ) -> nn.Sequential:
        # Same as torchvision.models.resnet.ResNet._make_layer (groups=1, no dilation).
        from torchvision.models.resnet import conv1x1

        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers: list[nn.Module] = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The stem's ReLU is in place but acts on the BatchNorm output, never on ``x``.
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.flatten(self.avgpool(x)))


def resnet18_cifar(num_classes: int, width: float = 1.0, *, in_channels: int = 3) -> CifarResNet:
    """ResNet-18 for CIFAR (``BasicBlock``, layers ``[2, 2, 2, 2]``); see :class:`CifarResNet`."""
    from torchvision.models.resnet import BasicBlock

    return CifarResNet(
        BasicBlock,
        (2, 2, 2, 2),
        _positive_int(num_classes, "num_classes"),
        _positive_int(in_channels, "in_channels"),
        _positive_float(width, "width"),
    )


def resnet50_cifar(num_classes: int, width: float = 1.0, *, in_channels: int = 3) -> CifarResNet:
    """ResNet-50 for CIFAR (``Bottleneck``, layers ``[3, 4, 6, 3]``); see :class:`CifarResNet`."""
    from torchvision.models.resnet import Bottleneck

    return CifarResNet(
        Bottleneck,
        (3, 4, 6, 3),
        _positive_int(num_classes, "num_classes"),
        _positive_int(in_channels, "in_channels"),
        _positive_float(width, "width"),
    )


class DigitsCNN(nn.Module):
    """Small CNN for ``1x8x8`` scikit-learn digits.

    ``features``: conv3x3(w) - ReLU - conv3x3(2w) - ReLU - maxpool2 (8 px -> 4x4);
    ``classifier``: Linear(2w * 16, 4w) - ReLU; ``fc``: Linear(4w, num_classes).
    """

    def __init__(self, num_classes: int, width: int, in_channels: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(nn.Linear(2 * width * 16, 4 * width), nn.ReLU())
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:  # flat (N, 64) digits
            x = x.reshape(x.shape[0], 1, 8, 8)
        return self.fc(self.classifier(self.flatten(self.features(x))))


def digits_cnn(num_classes: int = 10, width: int = 16) -> DigitsCNN:
    """Small CNN for scikit-learn digits; ``width`` is the first conv's channel count (an int).

    Accepts ``(N, 1, 8, 8)`` or flat ``(N, 64)`` inputs in [0, 1].
    """
    return DigitsCNN(_positive_int(num_classes, "num_classes"), _positive_int(width, "width"))


# ---------------------------------------------------------------------------------------------
# one-hidden-layer sigmoid network (theory experiments)
# ---------------------------------------------------------------------------------------------


class TwoLayerSigmoid(nn.Sequential):
    """``f(x) = W2 sigmoid(W1 x + b1) + b2`` as ``Sequential(hidden_layer, act, fc)``.

    It is an :class:`torch.nn.Sequential` (indexable ``[0], [1], [2]``) whose children are also
    the attributes ``hidden_layer`` (``Linear(in_features, hidden)``), ``act`` (``Sigmoid``) and
    ``fc`` (``Linear(hidden, out_features)``).
    """

    hidden_layer: nn.Linear
    act: nn.Sigmoid
    fc: nn.Linear

    def __init__(self, in_features: int, hidden: int, out_features: int) -> None:
        super().__init__(
            OrderedDict(
                hidden_layer=nn.Linear(in_features, hidden),
                act=nn.Sigmoid(),
                fc=nn.Linear(hidden, out_features),
            )
        )


def two_layer_sigmoid(in_features: int, hidden: int, out_features: int) -> TwoLayerSigmoid:
    """One-hidden-layer sigmoid network ``f(x) = W2 sigmoid(W1 x + b1) + b2``."""
    return TwoLayerSigmoid(
        _positive_int(in_features, "in_features"),
        _positive_int(hidden, "hidden"),
        _positive_int(out_features, "out_features"),
    )


# ---------------------------------------------------------------------------------------------
# registry and head utilities
# ---------------------------------------------------------------------------------------------

#: Name -> builder. ``build(name, **kwargs)`` calls ``ARCHITECTURES[name](**kwargs)``.
ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "fc": fc_net,
    "fc-liang": fc_net_liang,
    "lenet": lenet,
    "alexnet": alexnet_cifar,
    "alexnet-liang": alexnet_liang,
    "resnet18": resnet18_cifar,
    "resnet50": resnet50_cifar,
    "digits-mlp": digits_mlp,
    "digits-cnn": digits_cnn,
    "two-layer-sigmoid": two_layer_sigmoid,
}


def build(name: str, **kwargs: Any) -> nn.Module:
    """Build the architecture registered as ``name`` in :data:`ARCHITECTURES` with ``kwargs``.

    Raises:
        AdvTransferError: unknown name (the message lists close matches and all names).
        AdvTransferTypeError: a keyword the builder does not accept (the message lists them).
    """
    return build_registered(ARCHITECTURES, name, "architecture", **kwargs)


def build_registered(builders: dict[str, Callable[..., nn.Module]], name: str, what: str,
                     **kwargs: Any) -> nn.Module:
    """``builders[name](**kwargs)`` for a table of named builders (``what`` names its kind in
    messages): an unknown name lists close matches and every name, a keyword the builder does
    not accept lists the ones it does."""
    if not isinstance(name, str):
        raise AdvTransferTypeError(f"name must be a str, got {type(name).__name__}")
    builder = builders.get(name)
    if builder is None:
        close = difflib.get_close_matches(name, list(builders), n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise AdvTransferError(
            f"unknown {what} name {name!r}.{hint} Accepted: {', '.join(sorted(builders))}")
    signature = inspect.signature(builder)
    try:
        signature.bind(**kwargs)
    except TypeError as exc:
        accepted = ", ".join(signature.parameters)
        raise AdvTransferTypeError(
            f"bad arguments for {what} {name!r}: {exc}. Accepted parameters: {accepted}"
        ) from None
    return builder(**kwargs)


def _unwrap(model: nn.Module) -> nn.Module:
    """Follow ``.inner`` of wrappers (e.g. ``Normalized``) until a module with ``fc``."""
    seen = 0
    while not hasattr(model, "fc") and isinstance(getattr(model, "inner", None), nn.Module):
        model = model.inner  # type: ignore[assignment]
        seen += 1
        if seen > 100:  # pragma: no cover - cyclic wrappers
            break
    return model


def head_layer(model: nn.Module) -> nn.Linear:
    """Return the final linear layer ``model.fc`` (looking through wrappers' ``.inner``).

    Raises:
        AdvTransferTypeError: the model has no ``fc`` attribute or it is not an ``nn.Linear``.
    """
    if not isinstance(model, nn.Module):
        raise AdvTransferTypeError(f"model must be an nn.Module, got {type(model).__name__}")
    inner = _unwrap(model)
    head = getattr(inner, "fc", None)
    if not isinstance(head, nn.Linear):
        what = "has no attribute 'fc'" if head is None else f"has fc of type {type(head).__name__}"
        raise AdvTransferTypeError(
            f"model ({type(inner).__name__}) {what}; head_layer/replace_head need the final layer "
            "to be an nn.Linear attribute named 'fc' (the convention of "
            "advtransfer.models.architectures and of torchvision ResNets)"
        )
    return head


def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """Return a deep copy of ``model`` whose ``fc`` is a fresh ``Linear(fc.in_features, n)``.

    The original model is not modified. The new head has the same dtype and device as the old
    one and PyTorch's default initialisation.
    """
    num_classes = _positive_int(num_classes, "num_classes")
    old = head_layer(model)
    new_model = copy.deepcopy(model)
    inner = _unwrap(new_model)
    inner.fc = nn.Linear(
        old.in_features,
        num_classes,
        bias=old.bias is not None,
        device=old.weight.device,
        dtype=old.weight.dtype,
    )
    return new_model
