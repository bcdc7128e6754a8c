from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import grad, jacrev, vmap

from advtransfer.errors import AdvTransferError, AdvTransferTypeError
from advtransfer.models.architectures import lenet
from advtransfer.models.wrappers import CIFAR10_MEAN, CIFAR10_STD, InputRange, Normalized

MEAN = (0.4, 0.5, 0.6)
STD = (0.2, 0.25, 0.5)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return lenet(10, width=0.5).eval()


def _manual(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


def test_normalized_equals_manual_normalisation() -> None:
    model = _model()
    wrapped = Normalized(model, MEAN, STD)
    assert wrapped.inner is model
    x = torch.rand(4, 3, 32, 32)
    x_copy = x.clone()
    with torch.no_grad():
        torch.testing.assert_close(wrapped(x), model(_manual(x)))
        torch.testing.assert_close(wrapped.normalize(x), _manual(x))
    assert torch.equal(x, x_copy)  # the input is not modified


def test_normalized_gradients_flow_to_input() -> None:
    model = _model()
    wrapped = Normalized(model, MEAN, STD)
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    wrapped(x)[:, 3].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0

    x2 = x.detach().clone().requires_grad_(True)
    model(_manual(x2))[:, 3].sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)

    # torch.func: grad and vmap trace through the wrapper.
    g = grad(lambda z: wrapped(z)[:, 3].sum())(x.detach())
    torch.testing.assert_close(g, x2.grad)
    per_sample = vmap(lambda z: wrapped(z.unsqueeze(0)).squeeze(0))(x.detach())
    torch.testing.assert_close(per_sample, wrapped(x).detach())


def test_normalized_buffers_follow_device_and_dtype_but_not_state_dict() -> None:
    model = _model()
    wrapped = Normalized(model, CIFAR10_MEAN, CIFAR10_STD)
    names = {n for n, _ in wrapped.named_buffers()}
    assert {"mean", "std"} <= names
    assert set(wrapped.state_dict()) == {f"inner.{k}" for k in model.state_dict()}
    wrapped = wrapped.double()
    assert wrapped.mean.dtype == torch.float64
    out = wrapped(torch.rand(1, 3, 32, 32, dtype=torch.float64))
    assert out.dtype == torch.float64


def test_normalized_scalar_statistics_and_other_ranks() -> None:
    wrapped = Normalized(nn.Identity(), 0.5, 0.25)
    x = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(wrapped(x), (x - 0.5) / 0.25)
    # Per-feature normalisation of (N, C) data.
    feat = Normalized(nn.Identity(), [1.0, 2.0], [2.0, 4.0])
    z = torch.tensor([[3.0, 6.0]])
    torch.testing.assert_close(feat(z), torch.tensor([[1.0, 1.0]]))
    # Integer inputs are promoted to float, not truncated.
    ints = Normalized(nn.Identity(), 0.5, 0.5)(torch.tensor([[1, 2]], dtype=torch.uint8))
    torch.testing.assert_close(ints, torch.tensor([[1.0, 3.0]]))


@pytest.mark.parametrize(
    ("mean", "std", "error"),
    [
        (MEAN, (0.2, 0.0, 0.5), AdvTransferError),
        (MEAN, (0.2, 0.3), AdvTransferError),
        ("abc", STD, AdvTransferTypeError),
        ([[0.1, 0.2]], [[0.1, 0.2]], AdvTransferError),
        ([], [], AdvTransferError),
        ((0.1, float("nan"), 0.2), STD, AdvTransferError),
    ],
)
def test_normalized_rejects_bad_statistics(mean: object, std: object, error: type) -> None:
    with pytest.raises(error):
        Normalized(nn.Identity(), mean, std)  # type: ignore[arg-type]


def test_normalized_rejects_wrong_inputs() -> None:
    wrapped = Normalized(nn.Identity(), MEAN, STD)
    with pytest.raises(AdvTransferError, match="channels"):
        wrapped(torch.rand(2, 1, 8, 8))
    with pytest.raises(AdvTransferError, match=r"\(N, C"):
        wrapped(torch.rand(3))
    with pytest.raises(AdvTransferTypeError):
        Normalized(lambda x: x, MEAN, STD)  # type: ignore[arg-type]


def test_no_attribute_forwarding() -> None:
    wrapped = Normalized(_model(), MEAN, STD)
    assert isinstance(wrapped.inner.fc, nn.Linear)
    with pytest.raises(AttributeError):
        _ = wrapped.fc


def test_input_range_default_maps_unit_interval_to_symmetric() -> None:
    wrapped = InputRange(nn.Identity())
    x = torch.tensor([[0.0, 0.25, 0.5, 1.0]])
    torch.testing.assert_close(wrapped(x), torch.tensor([[-1.0, -0.5, 0.0, 1.0]]))
    assert wrapped.from_range == (0.0, 1.0) and wrapped.to_range == (-1.0, 1.0)


def test_input_range_custom_ranges_and_gradient() -> None:
    model = _model()
    wrapped = InputRange(model, from_range=(0, 255), to_range=(0.0, 1.0))
    x = torch.rand(2, 3, 32, 32) * 255
    with torch.no_grad():
        torch.testing.assert_close(wrapped(x), model(x / 255), rtol=1e-5, atol=1e-5)
    # Gradient of the identity map is the scale (to_hi - to_lo) / (from_hi - from_lo).
    ident = InputRange(nn.Identity(), from_range=(-2.0, 2.0), to_range=(0.0, 1.0))
    z = torch.randn(5)
    torch.testing.assert_close(jacrev(ident)(z), torch.eye(5) * 0.25)
    torch.testing.assert_close(ident(torch.tensor([-2.0, 0.0, 2.0])), torch.tensor([0.0, 0.5, 1.0]))


@pytest.mark.parametrize(
    ("from_range", "to_range", "error"),
    [
        ((1.0, 0.0), (-1.0, 1.0), AdvTransferError),
        ((0.0, 1.0), (1.0, 1.0), AdvTransferError),
        ((0.0, float("inf")), (-1.0, 1.0), AdvTransferError),
        ((0.0,), (-1.0, 1.0), AdvTransferTypeError),
        ("01", (-1.0, 1.0), AdvTransferTypeError),
    ],
)
def test_input_range_rejects_bad_ranges(from_range: object, to_range: object, error: type) -> None:
    with pytest.raises(error):
        InputRange(nn.Identity(), from_range, to_range)  # type: ignore[arg-type]


def test_wrappers_compose() -> None:
    model = _model()
    wrapped = InputRange(Normalized(model, MEAN, STD), from_range=(0, 1), to_range=(0, 1))
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(wrapped(x), model(_manual(x)))
