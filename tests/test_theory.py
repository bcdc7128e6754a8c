from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from advtransfer import theory

from .conftest import two_layer


def test_jacobians_match_torch_func(x64):
    model = two_layer(0)
    expected = torch.func.vmap(torch.func.jacrev(model))(x64)
    torch.testing.assert_close(theory.jacobians(model, x64), expected)


def test_gradient_matching_zero_for_linear_image_and_positive_otherwise(x64):
    s = two_layer(1)
    a = torch.randn(2, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    class Mapped(nn.Module):
        def forward(self, x):
            return s(x) @ a.T

    res = theory.gradient_matching_distance(s, Mapped(), x64)
    assert res.distance < 1e-10
    np.testing.assert_allclose(res.A, a.numpy(), atol=1e-8)
    other = theory.gradient_matching_distance(s, two_layer(2), x64)
    assert other.distance > 1e-3 and 0 < other.relative_distance <= 1 + 1e-12


@pytest.mark.parametrize("slope", [-1.3, 0.0, 0.4, 2.5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_theorem1_is_an_exact_identity_for_every_scalar_slope(seed, slope, x64):
    s, t = two_layer(10 + seed, k=1), two_layer(20 + seed, k=1)
    tau = theory.tau1_tau2(s, t, x64, A=np.array([[slope]]))
    j_s = theory.jacobians(s, x64)[:, 0, :]
    j_t = theory.jacobians(t, x64)[:, 0, :]
    lhs = (j_t - slope * j_s).pow(2).sum(dim=1).mean().item()
    rhs = ((1 - torch.as_tensor(tau.tau1_per_sample) * tau.tau2)
           * j_t.pow(2).sum(dim=1)).mean().item()
    assert lhs == pytest.approx(rhs, abs=1e-6, rel=1e-6)
    # and through the public checker with the projected least-squares slope
    tb = theory.theorem_bounds(s, t, x64)
    assert tb.theorem1.lhs == pytest.approx(tb.identity_rhs, rel=1e-6, abs=1e-6)
    assert tb.theorem1.holds


def test_tau_values_are_in_range_and_tau1_hand_checked(x64):
    s, t = two_layer(3), two_layer(4)
    tau = theory.tau1_tau2(s, t, x64)
    assert 0 <= tau.tau1 <= 1 and tau.tau2 <= 1
    j_s, j_t = theory.jacobians(s, x64), theory.jacobians(t, x64)
    v_s = torch.linalg.svd(j_s)[2][:, 0, :]
    v_t = torch.linalg.svd(j_t)[2][:, 0, :]
    cos2 = ((v_s * v_t).sum(1) ** 2).numpy()
    np.testing.assert_allclose(tau.tau1_per_sample, cos2, rtol=1e-10)
    assert np.linalg.norm(tau.A, 2) <= tau.radius + 1e-10
    same = theory.tau1_tau2(s, s, x64)
    assert same.tau1 == pytest.approx(1.0) and same.tau2 == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(4))
def test_theorems_2_and_3_hold_on_random_smooth_networks(seed):
    x = torch.rand(32, 6, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x = x / x.norm(dim=1, keepdim=True).max()  # Theorem 3 needs ||x|| <= 1
    s, t = two_layer(30 + seed), two_layer(40 + seed)
    tb = theory.theorem_bounds(s, t, x)
    assert not tb.theorem1.applies
    assert tb.theorem2.applies and tb.theorem2.holds, tb.theorem2
    assert tb.theorem2_authors.holds, tb.theorem2_authors
    assert tb.theorem3.applies and tb.theorem3.holds, tb.theorem3
    y = t(x).detach() + 0.1
    assert theory.theorem_bounds(s, t, x, y).theorem3.holds


def test_theorem3_not_applicable_reasons(x64):
    s = nn.Sequential(nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    t = two_layer(1, k=2)
    tb = theory.theorem_bounds(s, t, x64 / 10)
    assert not tb.theorem3.applies and "beta" in tb.theorem3.note
    tb = theory.theorem_bounds(two_layer(0), t.double(), x64 * 10)
    assert not tb.theorem3.applies and "||x|| <= 1" in tb.theorem3.note
    assert theory.theorem_bounds(s, t, x64 / 10, beta=1.0).theorem3.applies


def test_smoothness_bound_upper_bounds_finite_differences():
    model = two_layer(7)
    beta = theory.smoothness_bound(model)
    g = torch.Generator().manual_seed(0)
    worst = 0.0
    for _ in range(50):
        a = torch.randn(1, 6, generator=g, dtype=torch.float64)
        b = a + 0.01 * torch.randn(1, 6, generator=g, dtype=torch.float64)
        ja, jb = theory.jacobians(model, a)[0], theory.jacobians(model, b)[0]
        worst = max(worst, (torch.linalg.matrix_norm(ja - jb, 2) / (a - b).norm()).item())
    assert 0 < worst <= beta


def _numpy_tau2(j_s: np.ndarray, j_t: np.ndarray) -> tuple[float, bool]:
    """tau2 (S -> T) from the definition, in numpy: A = B C^+ scaled to spectral norm r when it
    exceeds r, tau2 = <2 Delta_ST - A Delta_SS, A Delta_SS>_D / ||Delta_ST||_D^2."""
    v_s = np.linalg.svd(j_s)[2][:, 0, :]
    d_ss = np.einsum("bkn,bn->bk", j_s, v_s)
    d_st = np.einsum("bkn,bn->bk", j_t, v_s)
    n = len(v_s)
    a = (d_st.T @ d_ss / n) @ np.linalg.pinv(d_ss.T @ d_ss / n)
    r = np.sqrt((d_st**2).sum() / (d_ss**2).sum())
    projected = np.linalg.norm(a, 2) > r
    if projected:
        a = a * r / np.linalg.norm(a, 2)
    mapped = d_ss @ a.T
    return float(((2 * d_st - mapped) * mapped).sum() / (d_st**2).sum()), projected


@pytest.mark.parametrize("seed", range(3))
def test_vector_tau2_scales_the_whole_map_like_the_definition(seed, x64):
    s, t = two_layer(50 + seed, k=3), two_layer(60 + seed, k=3)
    jac = torch.func.vmap(torch.func.jacrev(s))(x64).detach().numpy()
    jac_t = torch.func.vmap(torch.func.jacrev(t))(x64).detach().numpy()
    expected, projected = _numpy_tau2(jac, jac_t)
    assert projected  # the case where scaling and clipping singular values differ
    tau = theory.tau1_tau2(s, t, x64)
    assert tau.tau2 == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert np.linalg.norm(tau.A, 2) == pytest.approx(tau.radius, rel=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_theorem2_authors_version_spectral_lhs_and_bound_without_lipschitz(seed, x64):
    s, t = two_layer(70 + seed, k=3), two_layer(80 + seed, k=4)
    tb = theory.theorem_bounds(s, t, x64)
    j_s = torch.func.vmap(torch.func.jacrev(s))(x64).detach().numpy()
    j_t = torch.func.vmap(torch.func.jacrev(t))(x64).detach().numpy()
    a = tb.tau.A
    gap = j_t - np.einsum("dm,bmn->bdn", a, j_s)
    lhs = np.mean([np.linalg.norm(g, 2) ** 2 for g in gap])
    sv_s, sv_t = np.linalg.svd(j_s, compute_uv=False), np.linalg.svd(j_t, compute_uv=False)
    lam_s, lam_t = sv_s[:, 1] / sv_s[:, 0], sv_t[:, 1] / sv_t[:, 0]
    tau1, tau2 = tb.tau.tau1_per_sample, tb.tau.tau2
    first = (1 - tau1 * tau2 + (1 - tau1) * (1 - tau2) * lam_t**2) * sv_t[:, 0] ** 2
    second = ((lam_t**2 + lam_s**2) * sv_s[:, 0] ** 2
              * np.mean(sv_t[:, 0] ** 2) / np.mean(sv_s[:, 0] ** 2))
    bound = np.mean(5 * (first + second))
    authors = tb.theorem2_authors
    assert authors.lhs == pytest.approx(lhs, rel=1e-9)
    assert authors.bound == pytest.approx(bound, rel=1e-9)
    assert authors.holds
    # the paper's version measures the gap in the Frobenius norm, never below the spectral one
    frobenius = np.mean((gap**2).sum(axis=(1, 2)))
    assert tb.theorem2.lhs == pytest.approx(frobenius, rel=1e-9)
    assert tb.theorem2.lhs >= authors.lhs * (1 - 1e-12) and tb.theorem2.lhs > authors.lhs


@pytest.mark.parametrize("seed", range(3))
def test_theorem2_per_sample_and_with_constants_against_numpy(seed, x64):
    """Both forms of the paper's Theorem 2 bound, recomputed in numpy from the Jacobians: the
    per-sample average E_x[...] and the form with the constants E tau1 and max_x lambda, which
    is never smaller; the lhs (Frobenius) is shared."""
    s, t = two_layer(90 + seed, k=3), two_layer(100 + seed, k=2)
    tb = theory.theorem_bounds(s, t, x64)
    j_s = torch.func.vmap(torch.func.jacrev(s))(x64).detach().numpy()
    j_t = torch.func.vmap(torch.func.jacrev(t))(x64).detach().numpy()
    sv_s, sv_t = np.linalg.svd(j_s, compute_uv=False), np.linalg.svd(j_t, compute_uv=False)
    lam_s, lam_t = sv_s[:, 1] / sv_s[:, 0], sv_t[:, 1] / sv_t[:, 0]
    lip2 = sv_t[:, 0].max() ** 2
    tau1_x, tau2 = tb.tau.tau1_per_sample, tb.tau.tau2
    per_sample = np.mean((1 - tau1_x * tau2) + (1 - tau1_x) * (1 - tau2) * lam_t**2
                         + (lam_t + lam_s) ** 2) * 5 * lip2
    tau1, lt, ls = tau1_x.mean(), lam_t.max(), lam_s.max()
    constants = ((1 - tau1 * tau2) + (1 - tau1) * (1 - tau2) * lt**2 + (lt + ls) ** 2) * 5 * lip2
    assert tb.theorem2.bound == pytest.approx(per_sample, rel=1e-9)
    assert tb.theorem2_constants.bound == pytest.approx(constants, rel=1e-9)
    assert tb.theorem2_constants.bound > tb.theorem2.bound  # the lambdas vary over the data
    assert tb.theorem2_constants.lhs == tb.theorem2.lhs
    assert tb.theorem2.holds and tb.theorem2_constants.holds
    assert "per sample" in tb.theorem2.note and "max lambda" in tb.theorem2_constants.note


def test_theorem2_forms_agree_where_the_lambdas_are_constant(x64):
    """Scalar outputs: every lambda is 0 and the per-sample mean of 1 - tau1(x) tau2 is
    1 - tau1 tau2, so the two forms of the bound coincide."""
    s, t = two_layer(110, k=1), two_layer(111, k=1)
    tb = theory.theorem_bounds(s, t, x64)
    assert tb.theorem2_constants.bound == pytest.approx(tb.theorem2.bound, rel=1e-12)
