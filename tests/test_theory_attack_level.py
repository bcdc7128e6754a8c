"""first_order_transferability(attack_level=k) against a NumPy computation from closed-form
Jacobians J(x) = W2 diag(s'(W1 x + b1)) W1 of two-layer sigmoid networks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from advtransfer.errors import AdvTransferError
from advtransfer.theory import first_order_transferability

from .conftest import two_layer


def _jacobians(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    w1, b1, w2, _ = (p.detach().numpy() for p in model.parameters())
    s = 1.0 / (1.0 + np.exp(-(x @ w1.T + b1)))
    return np.einsum("dm,bm,mn->bdn", w2, s * (1 - s), w1)


def _by_hand(j_a: np.ndarray, j_b: np.ndarray, k: int) -> tuple[float, float, float]:
    """alpha1, alpha2, combined for the attack along v_{k+1}(J_A), reference sigma_1(J_B)."""
    v = np.linalg.svd(j_a)[2][:, k, :]
    d_aa, d_ab = np.einsum("bdn,bn->bd", j_a, v), np.einsum("bdn,bn->bd", j_b, v)
    a1 = np.linalg.norm(d_ab, axis=1) / np.linalg.svd(j_b, compute_uv=False)[:, 0]
    u_a = d_aa / np.linalg.norm(d_aa, axis=1, keepdims=True)
    u_b = d_ab / np.linalg.norm(d_ab, axis=1, keepdims=True)
    outer = np.einsum("bi,bj->bij", u_a, u_b)
    return (a1.mean(), np.linalg.norm(outer.mean(0)),
            np.linalg.norm((a1[:, None, None] * outer).mean(0)))


@pytest.mark.parametrize("level", [0, 1, 2])
def test_attack_level_matches_the_closed_form(x64, level):
    s, t = two_layer(1), two_layer(2)
    j_s, j_t = _jacobians(s, x64.numpy()), _jacobians(t, x64.numpy())
    r = first_order_transferability(s, t, x64, attack_level=level)
    for d, (j_a, j_b) in ((r.source_to_target, (j_s, j_t)), (r.target_to_source, (j_t, j_s))):
        a1, a2, comb = _by_hand(j_a, j_b, level)
        assert d.alpha1 == pytest.approx(a1, rel=1e-9)
        assert d.alpha2 == pytest.approx(a2, rel=1e-9)
        assert d.combined == pytest.approx(comb, rel=1e-9)
    if level == 0:
        default = first_order_transferability(s, t, x64)
        assert default.source_to_target.alpha1 == r.source_to_target.alpha1


@pytest.mark.parametrize("level", [-1, 3, 1.0, True])
def test_attack_level_out_of_range_is_refused(x64, level):
    with pytest.raises(AdvTransferError, match=r"attack_level must be an integer in \[0, 2\]"):
        first_order_transferability(two_layer(1), two_layer(2), x64, attack_level=level)
