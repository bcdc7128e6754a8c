from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from advtransfer.errors import AdvTransferError, AdvTransferTypeError
from advtransfer.models.architectures import (
    ARCHITECTURES,
    CifarResNet,
    TwoLayerSigmoid,
    alexnet_cifar,
    alexnet_liang,
    build,
    digits_cnn,
    digits_mlp,
    fc_net,
    fc_net_liang,
    head_layer,
    lenet,
    replace_head,
    resnet18_cifar,
    resnet50_cifar,
    two_layer_sigmoid,
)
from advtransfer.models.wrappers import Normalized

# (builder, kwargs, input shape, expected output shape)
CASES: list[tuple[Any, dict[str, Any], tuple[int, ...], tuple[int, ...]]] = [
    (fc_net, {"in_shape": (3, 32, 32), "num_classes": 10, "hidden": (32, 16)},
     (2, 3, 32, 32), (2, 10)),
    (fc_net, {"in_shape": 12, "num_classes": 4, "hidden": ()}, (2, 12), (2, 4)),
    (fc_net, {"in_shape": [3, 4], "num_classes": 2, "hidden": 8, "width": 0.5}, (2, 3, 4), (2, 2)),
    (lenet, {"num_classes": 10}, (2, 3, 32, 32), (2, 10)),
    (lenet, {"num_classes": 7, "in_channels": 1, "image_size": 28, "width": 0.5},
     (2, 1, 28, 28), (2, 7)),
    (alexnet_cifar, {"num_classes": 10, "width": 0.125}, (2, 3, 32, 32), (2, 10)),
    (alexnet_cifar, {"num_classes": 5, "width": 0.125, "in_channels": 1}, (2, 1, 32, 32), (2, 5)),
    (fc_net_liang, {"num_classes": 10, "width": 0.125}, (2, 3, 32, 32), (2, 10)),
    (alexnet_liang, {"num_classes": 10, "width": 0.125}, (2, 3, 32, 32), (2, 10)),
    (alexnet_liang, {"num_classes": 4, "width": 0.125, "image_size": 96}, (2, 3, 96, 96), (2, 4)),
    (resnet18_cifar, {"num_classes": 10, "width": 0.125}, (2, 3, 32, 32), (2, 10)),
    (resnet50_cifar, {"num_classes": 100, "width": 0.25}, (2, 3, 32, 32), (2, 100)),
    (digits_mlp, {}, (2, 1, 8, 8), (2, 10)),
    (digits_mlp, {"num_classes": 3, "hidden": 16}, (2, 64), (2, 3)),
    (digits_cnn, {"width": 4}, (2, 1, 8, 8), (2, 10)),
    (digits_cnn, {"num_classes": 4, "width": 2}, (2, 64), (2, 4)),
    (two_layer_sigmoid, {"in_features": 5, "hidden": 7, "out_features": 3}, (2, 5), (2, 3)),
]  # fmt: skip


def _case_id(case: tuple[Any, dict[str, Any], tuple[int, ...], tuple[int, ...]]) -> str:
    return f"{case[0].__name__}-{'-'.join(map(str, case[2]))}"


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_output_shape_and_head_convention(case: Any) -> None:
    builder, kwargs, in_shape, out_shape = case
    torch.manual_seed(0)
    model = builder(**kwargs).eval()
    x = torch.rand(in_shape)
    captured: list[torch.Tensor] = []
    head = head_layer(model)
    handle = head.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    with torch.no_grad():
        y = model(x)
    handle.remove()
    assert y.shape == out_shape
    assert torch.isfinite(y).all()
    # The final Linear is the attribute ``fc`` and the penultimate features are its input.
    assert isinstance(model.fc, nn.Linear) and head is model.fc
    assert head.out_features == out_shape[1]
    assert len(captured) == 1 and captured[0].shape == (in_shape[0], head.in_features)


def test_image_models_have_flatten_module_feeding_fc() -> None:
    for model in (lenet(10), alexnet_cifar(10, width=0.125), resnet18_cifar(10, width=0.125)):
        names = dict(model.named_children())
        assert isinstance(names["flatten"], nn.Flatten)
        assert list(names)[-1] == "fc"


def test_cifar_resnet_structure() -> None:
    r18 = resnet18_cifar(10, width=0.5)
    assert isinstance(r18, CifarResNet)
    assert r18.conv1.kernel_size == (3, 3) and r18.conv1.stride == (1, 1)
    assert r18.conv1.out_channels == 32
    assert not any(isinstance(m, nn.MaxPool2d) for m in r18.modules())
    assert [len(getattr(r18, f"layer{i}")) for i in range(1, 5)] == [2, 2, 2, 2]
    assert all(isinstance(b, BasicBlock) for b in r18.layer1)
    assert r18.fc.in_features == 256

    r50 = resnet50_cifar(10, width=0.25)
    assert [len(getattr(r50, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]
    assert all(isinstance(b, Bottleneck) for b in r50.layer3)
    assert r50.fc.in_features == 128 * 4  # 512 * width * expansion

    # Spatial sizes 32, 16, 8, 4 at the four stages (no stem down-sampling).
    sizes: list[int] = []
    for i in range(1, 5):
        getattr(r18, f"layer{i}").register_forward_hook(
            lambda _m, _i, out: sizes.append(out.shape[-1])
        )
    r18.eval()(torch.rand(1, 3, 32, 32))
    assert sizes == [32, 16, 8, 4]


def test_width_multiplier_scales_parameter_count() -> None:
    def count(m: nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    assert count(resnet18_cifar(10, width=0.25)) < count(resnet18_cifar(10, width=0.5))
    assert count(alexnet_cifar(10, width=0.125)) < count(alexnet_cifar(10, width=0.25))
    assert count(lenet(10, width=0.5)) < count(lenet(10))
    assert count(digits_cnn(width=4)) < count(digits_cnn(width=8))
    # Full-size ResNet-18 for CIFAR has about 11.2M parameters.
    assert 11_000_000 < count(resnet18_cifar(10)) < 11_300_000


def test_two_layer_sigmoid_formula_and_structure() -> None:
    torch.manual_seed(0)
    model = two_layer_sigmoid(4, 6, 2)
    assert isinstance(model, TwoLayerSigmoid) and isinstance(model, nn.Sequential)
    assert model[0] is model.hidden_layer and model[1] is model.act and model[2] is model.fc
    x = torch.randn(3, 4)
    w1, b1 = model.hidden_layer.weight, model.hidden_layer.bias
    w2, b2 = model.fc.weight, model.fc.bias
    expected = torch.sigmoid(x @ w1.T + b1) @ w2.T + b2
    torch.testing.assert_close(model(x), expected)


REGISTRY_KWARGS: dict[str, dict[str, Any]] = {
    "fc": {"in_shape": (3, 8, 8), "num_classes": 3, "hidden": (4,)},
    "lenet": {"num_classes": 3, "width": 0.5},
    "alexnet": {"num_classes": 3, "width": 0.0625},
    "fc-liang": {"num_classes": 3, "width": 0.0625},
    "alexnet-liang": {"num_classes": 3, "width": 0.0625},
    "resnet18": {"num_classes": 3, "width": 0.0625},
    "resnet50": {"num_classes": 3, "width": 0.0625},
    "digits-mlp": {"num_classes": 3, "hidden": 8},
    "digits-cnn": {"num_classes": 3, "width": 2},
    "two-layer-sigmoid": {"in_features": 3, "hidden": 4, "out_features": 3},
}


def test_registry_names_and_build() -> None:
    assert set(ARCHITECTURES) == set(REGISTRY_KWARGS)
    for name, kwargs in REGISTRY_KWARGS.items():
        model = build(name, **kwargs)
        assert model.fc.out_features == 3, name
    assert isinstance(build("resnet18", num_classes=2, width=0.0625), CifarResNet)


def test_build_unknown_name_lists_close_matches() -> None:
    with pytest.raises(AdvTransferError, match="resnet18") as info:
        build("resnet19", num_classes=10)
    assert "unknown architecture" in str(info.value)
    with pytest.raises(AdvTransferTypeError):
        build(18)  # type: ignore[arg-type]


def test_build_bad_keyword_lists_accepted_parameters() -> None:
    with pytest.raises(AdvTransferTypeError, match="num_classes") as info:
        build("lenet", num_classes=10, depth=3)
    assert "image_size" in str(info.value)


@pytest.mark.parametrize(
    ("builder", "kwargs", "error"),
    [
        (lenet, {"num_classes": 0}, AdvTransferError),
        (lenet, {"num_classes": 2.5}, AdvTransferTypeError),
        (lenet, {"num_classes": True}, AdvTransferTypeError),
        (lenet, {"num_classes": 10, "image_size": 8}, AdvTransferError),
        (resnet18_cifar, {"num_classes": 10, "width": -1.0}, AdvTransferError),
        (resnet18_cifar, {"num_classes": 10, "width": float("nan")}, AdvTransferError),
        (alexnet_cifar, {"num_classes": 10, "dropout": 1.0}, AdvTransferError),
        (alexnet_liang, {"num_classes": 10, "image_size": 28}, AdvTransferError),
        (alexnet_liang, {"num_classes": 10, "width": 0.0}, AdvTransferError),
        (fc_net, {"in_shape": "3x32x32", "num_classes": 10}, AdvTransferTypeError),
        (fc_net, {"in_shape": (3, 0), "num_classes": 10}, AdvTransferError),
        (fc_net, {"in_shape": 4, "num_classes": 10, "hidden": (4, -1)}, AdvTransferError),
        (digits_cnn, {"width": 0.5}, AdvTransferTypeError),
        (two_layer_sigmoid, {"in_features": 0, "hidden": 2, "out_features": 1}, AdvTransferError),
    ],
)
def test_builder_argument_checks(builder: Any, kwargs: dict[str, Any], error: type) -> None:
    with pytest.raises(error):
        builder(**kwargs)


def test_head_layer_errors() -> None:
    with pytest.raises(AdvTransferTypeError, match="'fc'"):
        head_layer(nn.Sequential(nn.Linear(2, 2)))

    class ConvHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Conv2d(1, 1, 1)

    with pytest.raises(AdvTransferTypeError, match="Conv2d"):
        head_layer(ConvHead())
    with pytest.raises(AdvTransferTypeError):
        head_layer("model")  # type: ignore[arg-type]


def test_head_layer_looks_through_wrappers() -> None:
    model = lenet(10, width=0.5)
    wrapped = Normalized(model, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert head_layer(wrapped) is model.fc


def test_replace_head() -> None:
    torch.manual_seed(0)
    model = resnet18_cifar(10, width=0.125).eval()
    new = replace_head(model, 3).eval()
    assert new is not model
    assert model.fc.out_features == 10  # original untouched
    assert new.fc.out_features == 3 and new.fc.in_features == model.fc.in_features
    assert torch.equal(new.conv1.weight, model.conv1.weight)
    assert new.conv1.weight.data_ptr() != model.conv1.weight.data_ptr()  # deep copy
    with torch.no_grad():
        assert new(torch.rand(2, 3, 32, 32)).shape == (2, 3)
    # Penultimate features are unchanged.
    feats: dict[str, torch.Tensor] = {}
    model.fc.register_forward_pre_hook(lambda _m, a: feats.__setitem__("old", a[0]))
    new.fc.register_forward_pre_hook(lambda _m, a: feats.__setitem__("new", a[0]))
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        model(x)
        new(x)
    torch.testing.assert_close(feats["old"], feats["new"])


def test_replace_head_through_wrapper_and_dtype() -> None:
    model = digits_mlp(hidden=8).double()
    wrapped = Normalized(model, 0.5, 0.5)
    new = replace_head(wrapped, 4)
    assert isinstance(new, Normalized)
    assert new.inner.fc.out_features == 4 and new.inner.fc.weight.dtype == torch.float64
    assert wrapped.inner.fc.out_features == 10
    assert new(torch.rand(2, 1, 8, 8, dtype=torch.float64)).shape == (2, 4)
    with pytest.raises(AdvTransferError):
        replace_head(model, 0)


def test_fc_net_in_shape_product() -> None:
    model = fc_net((3, 4, 5), 2, hidden=(6,))
    assert model.body[0].in_features == 60
    assert math.isclose(fc_net(10, 2, hidden=(100,), width=0.5).body[0].out_features, 50)


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_fc_liang_is_the_authors_fc_net() -> None:
    # Liang et al., image_exp/models/fc.py: Linear 3072->1176->400->(16*5*5=400)->120->84->10,
    # ReLU after each hidden layer, no dropout. Parameters: sum of in*out + out per layer.
    sizes = [3 * 32 * 32, 1176, 400, 120, 84, 10]
    expected = sum(a * b + b for a, b in zip(sizes, sizes[1:], strict=False))
    assert expected == 4_143_782
    model = fc_net_liang(10)
    assert _count(model) == expected
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == list(
        zip(sizes, sizes[1:], strict=False))
    assert sum(isinstance(m, nn.ReLU) for m in model.modules()) == 4
    assert not any(isinstance(m, nn.Dropout) for m in model.modules())
    assert build("fc-liang").fc.out_features == 10


def test_alexnet_liang_is_the_authors_alexnet() -> None:
    # The CIFAR AlexNet of Liang et al.'s image code: conv 11x11 stride 4 pad 5 (64) - pool -
    # conv 5x5 (192) - pool - conv 3x3 (384, 256, 256) - pool, then a single Linear on the
    # 256-d features. Parameters: sum of k*k*c_in*c_out + c_out per conv, plus 256*10 + 10.
    convs = [(3, 64, 11), (64, 192, 5), (192, 384, 3), (384, 256, 3), (256, 256, 3)]
    expected = sum(k * k * a * b + b for a, b, k in convs) + 256 * 10 + 10
    assert expected == 2_472_266
    model = alexnet_liang(10).eval()
    assert _count(model) == expected
    conv_layers = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [(m.in_channels, m.out_channels, m.kernel_size[0]) for m in conv_layers] == convs
    stem = conv_layers[0]
    assert stem.stride == (4, 4) and stem.padding == (5, 5)
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.features) == 3
    assert not any(isinstance(m, (nn.Dropout, nn.BatchNorm2d)) for m in model.modules())
    # one Linear only, directly on the flattened 1x1x256 feature map
    assert [m for m in model.modules() if isinstance(m, nn.Linear)] == [model.fc]
    with torch.no_grad():
        assert model.features(torch.rand(1, 3, 32, 32)).shape == (1, 256, 1, 1)
    assert model.fc.in_features == 256
