from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.func import jacrev

from advtransfer.errors import AdvTransferTypeError
from advtransfer.models.architectures import two_layer_sigmoid
from advtransfer.theory import sigmoid_net_smoothness


def _jacobian_lipschitz_estimate(model: nn.Module, points: torch.Tensor, steps: float) -> float:
    """max ||J(x) - J(y)||_2 / ||x - y||_2 over pairs (x, x + steps * u) with random u."""
    g = torch.Generator().manual_seed(1)
    jac = jacrev(model)
    best = 0.0
    for x in points:
        u = torch.randn(x.shape, generator=g, dtype=x.dtype)
        y = x + steps * u / u.norm()
        diff = jac(x) - jac(y)
        ratio = torch.linalg.matrix_norm(diff, ord=2).item() / (x - y).norm().item()
        best = max(best, ratio)
    return best


def test_formula_matches_spectral_norms() -> None:
    torch.manual_seed(0)
    model = two_layer_sigmoid(5, 8, 3)
    w1, w2 = model.hidden_layer.weight.detach(), model.fc.weight.detach()
    s1 = torch.linalg.svdvals(w1.double())[0].item()
    s2 = torch.linalg.svdvals(w2.double())[0].item()
    expected = s1**2 * s2 / (6 * math.sqrt(3))
    assert sigmoid_net_smoothness(model) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("steps", [1e-3, 0.3, 3.0])
def test_upper_bounds_finite_difference_estimate(seed: int, steps: float) -> None:
    torch.manual_seed(seed)
    model = two_layer_sigmoid(4, 16, 3).double()
    with torch.no_grad():  # weights large enough that ||W1||_2 > 1 and the curvature matters
        for p in model.parameters():
            p.mul_(3.0)
    beta = sigmoid_net_smoothness(model)
    points = torch.randn(64, 4, dtype=torch.float64)
    estimate = _jacobian_lipschitz_estimate(model, points, steps)
    assert 0.0 < estimate <= beta * (1 + 1e-9)


def test_bound_is_tight_for_a_scalar_network() -> None:
    # f(x) = w2 * sigmoid(w1 x): J(x) = w2 w1 sigmoid'(w1 x) and the Lipschitz constant of J is
    # exactly |w2| w1^2 max|sigmoid''| = beta, attained near sigmoid(w1 x) = (3 +- sqrt 3) / 6.
    model = two_layer_sigmoid(1, 1, 1).double()
    with torch.no_grad():
        model.hidden_layer.weight.fill_(3.0)
        model.hidden_layer.bias.zero_()
        model.fc.weight.fill_(-2.0)
        model.fc.bias.fill_(0.5)
    beta = sigmoid_net_smoothness(model)
    assert beta == pytest.approx(9 * 2 / (6 * math.sqrt(3)), rel=1e-12)
    h = 1e-5
    xs = torch.linspace(-2, 2, 4001, dtype=torch.float64).unsqueeze(1)
    jac = jacrev(model)
    ratios = [
        abs((jac(x) - jac(x + h)).item()) / h
        for x in xs[::10]  # 401 points; spacing 0.01
    ]
    estimate = max(ratios)
    assert estimate <= beta * (1 + 1e-6)
    assert estimate >= 0.99 * beta


def test_accepts_plain_sequential_and_rejects_others() -> None:
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Linear(3, 4), nn.Sigmoid(), nn.Linear(4, 2))
    assert sigmoid_net_smoothness(seq) > 0
    with pytest.raises(AdvTransferTypeError):
        sigmoid_net_smoothness(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)))
    with pytest.raises(AdvTransferTypeError):
        sigmoid_net_smoothness(nn.Linear(3, 4))
