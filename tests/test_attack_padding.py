"""AttackConfig.mask_padding: the attack acts on the tokens of an embedded sequence, never on
its padding rows, and its first-order direction is the top singular vector of the Jacobian
restricted to the tokens (closed form for a linear model)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advtransfer import AdvTransferError, attack
from advtransfer.attacks import AttackConfig, padding_mask, random_in_ball, random_on_sphere

B, L, E, K = 4, 6, 3, 5


def _inputs() -> torch.Tensor:
    """Embedded sequences [B, L, E] of lengths 6, 4, 2, 1 (padding rows exactly zero)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, L, E, generator=g, dtype=torch.float64)
    for i, n in enumerate((6, 4, 2, 1)):
        x[i, n:] = 0.0
    return x


class Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.w = nn.Parameter(torch.randn(K, L * E, generator=g, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w.T


def _closed_form(model: Linear, x: torch.Tensor, eps: float) -> torch.Tensor:
    """eps * v1 of W diag(m) per sample (sign: <v1, J^T 1> >= 0, as the attack signs it)."""
    out = []
    for xi in x:
        m = padding_mask(xi[None])[0].expand_as(xi).reshape(-1)
        w = model.w.detach() * m
        v = torch.linalg.svd(w).Vh[0]
        v = v * torch.sign((v * w.sum(0)).sum())
        out.append(eps * v.reshape(L, E))
    return torch.stack(out)


@pytest.mark.parametrize("solver", ["first_order", "pgd"])
def test_the_direction_is_the_top_singular_vector_of_the_masked_jacobian(solver):
    model, x, eps = Linear(), _inputs(), 0.5
    delta = attack(model, x, eps=eps, norm="l2", solver=solver, steps=200, bounds=None,
                   mask_padding=True, seed=0, tol=0.0)
    expected = _closed_form(model, x, eps)
    if solver == "pgd":  # PGD finds the direction up to its sign
        sign = torch.sign((delta * expected).flatten(1).sum(1))[:, None, None]
        expected = expected * sign
    torch.testing.assert_close(delta, expected, atol=1e-6, rtol=1e-6)
    assert torch.all(delta[padding_mask(x).expand_as(x) == 0] == 0)


@pytest.mark.parametrize("kwargs", [
    dict(norm="l2", solver="pgd", objective="deviation"),
    dict(norm="linf", solver="pgd", objective="ce", steps=5),
    dict(norm="l2", solver="first_order", objective="ce"),
    dict(norm="linf", solver="first_order", objective="deviation"),
])
def test_padding_is_never_perturbed_and_is_without_the_mask(kwargs):
    model, x = Linear(), _inputs()
    pad = padding_mask(x).expand_as(x) == 0
    on = attack(model, x, eps=0.3, bounds=None, mask_padding=True, seed=0, **kwargs)
    off = attack(model, x, eps=0.3, bounds=None, seed=0, **kwargs)
    assert torch.all(on[pad] == 0) and on.abs().sum() > 0
    assert off[pad].abs().sum() > 0  # the option is what keeps padding untouched
    assert torch.all(on.flatten(1).norm(dim=1) <= 0.3 + 1e-9) if kwargs["norm"] == "l2" else \
        torch.all(on.abs() <= 0.3 + 1e-12)


def test_random_draws_are_masked_and_keep_their_norm():
    x = _inputs()
    pad = padding_mask(x).expand_as(x) == 0
    eps = torch.full((B,), 0.7, dtype=x.dtype)
    g = torch.Generator().manual_seed(3)
    sphere = random_on_sphere(x, eps, "l2", g, mask_padding=True)
    torch.testing.assert_close(sphere.flatten(1).norm(dim=1), eps)
    ball = random_in_ball(x, eps, "l2", g, mask_padding=True)
    assert torch.all(ball.flatten(1).norm(dim=1) <= eps + 1e-12)
    signs = random_on_sphere(x, eps, "linf", g, mask_padding=True)
    for d in (sphere, ball, signs):
        assert torch.all(d[pad] == 0) and torch.all(d[~pad] != 0)


def test_mask_padding_is_in_the_key_and_checked():
    assert AttackConfig(eps=1.0, mask_padding=True).key() != AttackConfig(eps=1.0).key()
    with pytest.raises(AdvTransferError, match="mask_padding must be True or False"):
        AttackConfig(eps=1.0, mask_padding="yes")
