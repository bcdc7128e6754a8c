from __future__ import annotations

import pytest
import torch
from torch import nn

from advtransfer import AdvTransferError, attack, attacks
from advtransfer.attacks import norms

from .conftest import TinyCNN, two_layer


def linear_model(w: torch.Tensor) -> nn.Module:
    model = nn.Linear(w.shape[1], w.shape[0], bias=False).to(w.dtype)
    with torch.no_grad():
        model.weight.copy_(w)
    return model


@pytest.mark.parametrize("solver,steps", [("pgd", 100), ("first_order", 100)])
def test_linear_l2_attack_reaches_eps_times_top_singular_value(solver, steps):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(5, 12, generator=g, dtype=torch.float64)
    model = linear_model(w)
    x = torch.rand(8, 12, generator=g, dtype=torch.float64)
    delta = attack(model, x, eps=0.3, solver=solver, steps=steps, bounds=None, seed=1)
    deviation = (model(x + delta) - model(x)).norm(dim=1).detach()
    expected = 0.3 * torch.linalg.svdvals(w)[0]
    torch.testing.assert_close(deviation, expected.expand(8), rtol=1e-4, atol=0)


@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("solver", ["pgd", "first_order"])
@pytest.mark.parametrize("objective", ["deviation", "ce"])
@pytest.mark.parametrize("batch", [1, 3, 8])
def test_budget_bounds_shape_dtype_and_input_untouched(norm, solver, objective, batch):
    model = TinyCNN(0)
    x = torch.rand(batch, 1, 8, 8, generator=torch.Generator().manual_seed(batch))
    x_before = x.clone()
    delta = attack(model, x, eps=0.1, norm=norm, objective=objective, solver=solver, steps=3,
                   seed=0)
    assert delta.shape == x.shape and delta.dtype == x.dtype and delta.device == x.device
    assert (norms(delta, norm) <= 0.1 + 1e-6).all()
    assert ((x + delta) >= -1e-7).all() and ((x + delta) <= 1 + 1e-7).all()
    assert torch.equal(x, x_before)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_follows_input(dtype):
    model = two_layer(0, dtype=dtype)
    x = torch.rand(4, 6, dtype=dtype)
    assert attack(model, x, eps=0.1, seed=0).dtype == dtype


@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("solver", ["pgd", "first_order"])
def test_sample_in_batch_equals_sample_alone(norm, solver):
    model = two_layer(3)
    x = torch.rand(5, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    # without a random start the attack is deterministic: the power iteration starts at J^T 1
    kw = dict(eps=0.2, norm=norm, solver=solver, steps=20, random_start=False, bounds=None)
    batched = attack(model, x, seed=7, **kw)
    for i in range(5):
        alone = attack(model, x[i:i + 1], seed=8, **kw)
        # float64, but BLAS may reduce in another order for a batch than for one row: ~1e-8
        # relative has been seen across builds, so allow 1e-6 (float32 would give ~1e-3)
        torch.testing.assert_close(batched[i:i + 1], alone, rtol=1e-6, atol=1e-10)


def test_sample_in_batch_equals_sample_alone_exactly_for_ce_fgsm():
    model = TinyCNN(1)
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    kw = dict(eps=0.05, norm="linf", objective="ce", steps=1, random_start=False)
    batched = attack(model, x, **kw)
    for i in range(4):
        torch.testing.assert_close(batched[i:i + 1], attack(model, x[i:i + 1], **kw))


def test_per_sample_eps_equals_scalar_eps():
    model = two_layer(1)
    x = torch.rand(4, 6, dtype=torch.float64)
    a = attack(model, x, eps=0.2, bounds=None, seed=3)
    b = attack(model, x, eps=torch.full((4,), 0.2, dtype=torch.float64), bounds=None, seed=3)
    torch.testing.assert_close(a, b)
    eps = torch.tensor([0.1, 0.2, 0.3, 0.4])
    d = attack(model, x, eps=eps, bounds=None, seed=3)
    assert (d.norm(dim=1) <= eps.double() + 1e-9).all()
    assert (d.norm(dim=1) >= 0.9 * eps.double()).all()


def test_same_generator_same_delta_and_different_seed_differs():
    model = two_layer(2)
    x = torch.rand(6, 6, dtype=torch.float64)
    a = attack(model, x, eps=0.2, bounds=None, seed=torch.Generator().manual_seed(5))
    b = attack(model, x, eps=0.2, bounds=None, seed=torch.Generator().manual_seed(5))
    c = attack(model, x, eps=0.2, bounds=None, steps=1, seed=6)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("objective", ["deviation", "ce"])
def test_pgd_beats_same_norm_random_noise(norm, objective):
    from advtransfer.attacks import adversarial_loss, per_sample_eps, random_on_sphere

    model = TinyCNN(2)
    model.eval()
    x = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    delta = attack(model, x, eps=0.1, norm=norm, objective=objective, seed=0)
    noise = random_on_sphere(x, per_sample_eps(0.1, x), norm, torch.Generator().manual_seed(1))
    noise = (x + noise).clamp(0, 1) - x
    with torch.no_grad():
        clean = model(x)
        adv = adversarial_loss(model(x + delta), clean, objective)
        rnd = adversarial_loss(model(x + noise), clean, objective)
        base = adversarial_loss(clean, clean, objective)
    assert (adv - base).mean() > max(2 * float((rnd - base).mean()), 0.0)


def test_fgsm_linf_ce_is_eps_sign_gradient():
    model = TinyCNN(3)
    model.eval()
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.25
    delta = attack(model, x, eps=0.05, norm="linf", objective="ce", steps=1, random_start=False)
    xg = x.clone().requires_grad_(True)
    y = model(x).argmax(1)
    torch.nn.functional.cross_entropy(model(xg), y, reduction="sum").backward()
    torch.testing.assert_close(delta, 0.05 * xg.grad.sign())


def test_model_state_restored_even_on_error():
    model = TinyCNN(0)
    model.train()
    model.fc.weight.requires_grad_(False)
    model.conv.weight.grad = torch.ones_like(model.conv.weight)
    grad_before = model.conv.weight.grad.clone()
    x = torch.rand(3, 1, 8, 8)
    attack(model, x, eps=0.1, seed=0)
    assert model.training and model.bn.training and model.drop.training
    assert model.fc.weight.requires_grad is False and model.conv.weight.requires_grad is True
    assert torch.equal(model.conv.weight.grad, grad_before) and model.fc.bias.grad is None

    class Boom(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(64, 2)
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            if self.calls > 2:
                raise RuntimeError("boom")
            return self.lin(x.flatten(1))

    boom = Boom()
    boom.train()
    with pytest.raises(AdvTransferError, match="raised RuntimeError"):
        attack(boom, x, eps=0.1, seed=0)
    assert boom.training and boom.lin.weight.requires_grad and boom.lin.weight.grad is None


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(eps=0.0), "eps"),
        (dict(eps=-1.0), "eps"),
        (dict(eps=float("nan")), "eps"),
        (dict(eps=float("inf")), "eps"),
        (dict(eps=0.1, norm="l1"), "norm"),
        (dict(eps=0.1, objective="kl"), "objective"),
        (dict(eps=0.1, solver="cw"), "solver"),
        (dict(eps=0.1, steps=0), "steps"),
        (dict(eps=0.1, tol=-1e-3), "tol"),
        (dict(eps=0.1, tol=1.0), "tol"),
        (dict(eps=0.1, step_size=-1.0), "step_size"),
        (dict(eps=0.1, bounds=(1.0, 0.0)), "bounds"),
        (dict(eps=torch.tensor([0.1, -0.1, 0.1])), "eps"),
        (dict(eps=torch.tensor([0.1, 0.1])), "eps"),
    ],
)
def test_bad_arguments_name_the_parameter(kwargs, match):
    with pytest.raises(AdvTransferError, match=match):
        attack(two_layer(0), torch.rand(3, 6, dtype=torch.float64), **kwargs)


def test_bad_inputs_and_models():
    model = two_layer(0)
    with pytest.raises(AdvTransferError, match="bounds"):
        attack(model, torch.rand(3, 6, dtype=torch.float64) + 2, eps=0.1)
    with pytest.raises(AdvTransferError, match="non-empty"):
        attack(model, torch.rand(0, 6, dtype=torch.float64), eps=0.1)
    with pytest.raises(AdvTransferError, match="NaN"):
        attack(model, torch.full((2, 6), float("nan"), dtype=torch.float64), eps=0.1)

    class NaNModel(nn.Module):
        def forward(self, x):
            return x * float("nan")

    with pytest.raises(AdvTransferError, match="NaN or inf"):
        attack(NaNModel(), torch.rand(2, 6), eps=0.1)

    class WrongBatch(nn.Module):
        def forward(self, x):
            return x[:1]

    with pytest.raises(AdvTransferError, match="batch size"):
        attack(WrongBatch(), torch.rand(2, 6), eps=0.1)
    with pytest.raises(AdvTransferError, match="at least 2 outputs"):
        attack(two_layer(0, k=1), torch.rand(2, 6, dtype=torch.float64), eps=0.1, objective="ce")


def test_output_adapters_accept_tuples_and_dicts():
    base = two_layer(0)

    class Tup(nn.Module):
        def forward(self, x):
            return base(x), "aux"

    class Dct(nn.Module):
        def forward(self, x):
            return {"logits": base(x), "aux": 1}

    class Pair(nn.Module):  # the output that matters is the second element
        def forward(self, x):
            return x[:, :1] * 0.0, base(x)

    x = torch.rand(3, 6, dtype=torch.float64)
    ref = attack(base, x, eps=0.1, seed=0)
    with pytest.warns(UserWarning, match="using element 0"):
        torch.testing.assert_close(attack(Tup(), x, eps=0.1, seed=0), ref)
    torch.testing.assert_close(attack(Tup(), x, eps=0.1, seed=0, output=0), ref)
    torch.testing.assert_close(attack(Dct(), x, eps=0.1, seed=0), ref)
    torch.testing.assert_close(attack(Dct(), x, eps=0.1, seed=0, output="logits"), ref)
    torch.testing.assert_close(attack(Pair(), x, eps=0.1, seed=0, output=1), ref)


def _alphas(d_aa: torch.Tensor, d_ab: torch.Tensor, d_bb: torch.Tensor) -> tuple[float, float]:
    """alpha1 (mean ratio) and alpha2 = ||E[u_AA u_AB^T]||_F from the three deviations."""
    alpha1 = (d_ab.norm(dim=1) / d_bb.norm(dim=1)).mean()
    u_a = d_aa / d_aa.norm(dim=1, keepdim=True)
    u_b = d_ab / d_ab.norm(dim=1, keepdim=True)
    return float(alpha1), float(torch.linalg.matrix_norm(u_a.T @ u_b / len(u_a)))


def _exact_alphas(a: nn.Module, b: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """First-order alphas of attacks on a applied to b: Delta_{A->B} = J_B v1(J_A)."""
    ja, jb = (torch.func.vmap(torch.func.jacrev(m))(x).detach() for m in (a, b))
    va, vb = torch.linalg.svd(ja).Vh[:, 0], torch.linalg.svd(jb).Vh[:, 0]
    apply = lambda j, v: torch.einsum("bkn,bn->bk", j, v)  # noqa: E731
    return _alphas(apply(ja, va), apply(jb, va), apply(jb, vb))


def _measured_alphas(a: nn.Module, b: nn.Module, x: torch.Tensor,
                     **kw) -> tuple[float, float]:
    eps = 1e-4
    da = attack(a, x, eps=eps, bounds=None, seed=0, **kw)
    db = attack(b, x, eps=eps, bounds=None, seed=0, **kw)
    with torch.no_grad():
        return _alphas(a(x + da) - a(x), b(x + da) - b(x), b(x + db) - b(x))


def _wide(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 256), nn.Tanh(), nn.Linear(256, 10)).double()


@pytest.mark.parametrize("seed", range(10))
def test_first_order_default_matches_jacobian_svd_within_1_percent(seed, x64):
    a, b = two_layer(2 * seed + 1), two_layer(2 * seed + 2)
    for src, dst in ((a, b), (b, a)):
        got, exact = _measured_alphas(src, dst, x64, solver="first_order"), _exact_alphas(
            src, dst, x64)
        assert got == pytest.approx(exact, rel=0.01)


def _near_degenerate_pair() -> tuple[nn.Module, nn.Module, torch.Tensor]:
    x = torch.rand(32, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a, b = _wide(1), _wide(2)
    for m in (a, b):  # the case under test: sigma2/sigma1 about 0.95 on these inputs
        sv = torch.linalg.svdvals(torch.func.vmap(torch.func.jacrev(m))(x).detach())
        assert 0.94 < float((sv[:, 1] / sv[:, 0]).median()) < 0.98
    return a, b, x


def test_first_order_default_on_near_degenerate_wide_nets_within_1_percent():
    a, b, x = _near_degenerate_pair()
    for src, dst in ((a, b), (b, a)):
        got = _measured_alphas(src, dst, x, solver="first_order")
        assert got == pytest.approx(_exact_alphas(src, dst, x), rel=0.01)


@pytest.mark.parametrize("solver", ["first_order", "pgd"])
def test_power_iteration_and_pgd_to_tolerance_within_1_percent(solver, x64, monkeypatch):
    # the power-iteration path (models with many outputs) forced on small nets
    monkeypatch.setattr(attacks, "EXACT_MAX_OUTPUTS", 0)
    for seed in range(5):
        a, b = two_layer(2 * seed + 1), two_layer(2 * seed + 2)
        got = _measured_alphas(a, b, x64, solver=solver)
        assert got == pytest.approx(_exact_alphas(a, b, x64), rel=0.01)


def test_convergence_report():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 12, generator=g, dtype=torch.float64)
    cfg = dict(eps=0.1, bounds=None)
    # exact Jacobian (5 outputs): no iteration needed
    out = attacks.run_attack(linear_model(torch.randn(5, 12, generator=g, dtype=torch.float64)),
                             x, attacks.AttackConfig(solver="first_order", **cfg), None)
    assert out.iterations.tolist() == [0] * 6 and out.converged.all()
    # power iteration on a rank-one linear map with 100 outputs: J^T 1 is already v1
    rank_one = torch.outer(torch.randn(100, generator=g, dtype=torch.float64),
                           torch.randn(12, generator=g, dtype=torch.float64))
    model = linear_model(rank_one)
    out = attacks.run_attack(model, x, attacks.AttackConfig(solver="first_order", **cfg), None)
    assert out.converged.all() and (out.iterations <= 2).all()
    # PGD from the first-order solution of a linear model: the loss no longer changes
    linear = linear_model(torch.randn(5, 12, generator=g, dtype=torch.float64))
    out = attacks.run_attack(linear, x, attacks.AttackConfig(random_start=False, **cfg), None)
    assert out.converged.all() and out.iterations.tolist() == [2] * 6
    # a cap too small to meet the tolerance is reported as such
    out = attacks.run_attack(two_layer(0), x[:, :6], attacks.AttackConfig(steps=3, **cfg), g)
    assert not out.converged.any() and out.iterations.tolist() == [3] * 6
    # ce runs a fixed number of steps: no tolerance to report
    out = attacks.run_attack(linear, x, attacks.AttackConfig(objective="ce", **cfg), g)
    assert out.converged is None and out.iterations.tolist() == [10] * 6


def test_default_steps_and_ce_unchanged():
    assert attacks.AttackConfig(eps=0.1).steps == 100
    assert attacks.AttackConfig(eps=0.1, solver="first_order").steps == 100
    assert attacks.AttackConfig(eps=0.1, objective="ce").steps == 10
    model = TinyCNN(0)
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    kw = dict(eps=0.1, objective="ce", seed=3)
    torch.testing.assert_close(attack(model, x, **kw), attack(model, x, steps=10, tol=0.0, **kw),
                               rtol=0, atol=0)


@pytest.mark.parametrize("solver", ["pgd", "first_order"])
def test_sample_in_batch_equals_sample_alone_with_power_iteration(solver, monkeypatch):
    monkeypatch.setattr(attacks, "EXACT_MAX_OUTPUTS", 0)
    model = two_layer(3)
    x = torch.rand(5, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    kw = dict(eps=0.2, solver=solver, random_start=False, bounds=None)
    batched = attack(model, x, seed=7, **kw)
    for i in range(5):
        torch.testing.assert_close(batched[i:i + 1], attack(model, x[i:i + 1], seed=8, **kw),
                                   rtol=1e-6, atol=1e-10)


def test_every_direction_result_carries_the_convergence_report():
    import math

    from advtransfer.metrics import measure_matrix

    g = torch.Generator().manual_seed(0)
    models = [linear_model(torch.randn(5, 12, generator=g, dtype=torch.float64)),
              two_layer(0, n=12)]
    x = torch.rand(10, 12, generator=g, dtype=torch.float64)
    out = measure_matrix(models, ["lin", "mlp"], x,
                         attacks.AttackConfig(eps=0.1, bounds=None, steps=3), batch_size=4,
                         generator=0)
    for (i, _), r in out.items():
        # three PGD steps from a random start: the tolerance is not met by either model
        assert r.stats.mean_iterations == 3.0 and r.stats.fraction_converged == 0.0, i
    out = measure_matrix(models[:1], ["lin"], x,
                         attacks.AttackConfig(eps=0.1, bounds=None, random_start=False),
                         batch_size=4)
    assert out[(0, 0)].stats.mean_iterations == 2.0
    assert out[(0, 0)].stats.fraction_converged == 1.0
    out = measure_matrix(models[:1], ["lin"], x,
                         attacks.AttackConfig(eps=0.1, bounds=None, objective="ce"), generator=0)
    assert out[(0, 0)].stats.mean_iterations == 10.0
    assert math.isnan(out[(0, 0)].stats.fraction_converged)


class _Sine(nn.Module):
    """f(x) = sin(3 x): at x = 0 the deviation loss l(d) = sin(3 d)^2 peaks at |d| = pi / 6
    and falls to sin(3)^2 = 0.02 at |d| = 1, so a step of 1 from a start inside (0, pi / 6)
    climbs past the peak and ends lower than it started."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(3 * x)


def test_best_and_last_iterate_on_a_hand_made_landscape():
    x = torch.zeros(32, 1, dtype=torch.float64)
    kw = {"eps": 1.0, "norm": "linf", "objective": "deviation", "steps": 1, "bounds": None}
    last = attack(_Sine(), x, iterate="last", seed=5, **kw)
    best = attack(_Sine(), x, iterate="best", seed=5, **kw)
    # by hand: the random start d0 (the same draw), one signed step of size eps, projected
    d0 = attacks.random_in_ball(x, torch.ones(32, dtype=torch.float64), "linf",
                                torch.Generator().manual_seed(5))
    grad = 6 * torch.sin(3 * d0) * torch.cos(3 * d0)  # d/dd sin(3 d)^2
    d1 = (d0 + torch.sign(grad)).clamp(-1.0, 1.0)
    torch.testing.assert_close(last, d1, rtol=0, atol=1e-12)
    loss = lambda d: torch.sin(3 * d) ** 2  # noqa: E731
    torch.testing.assert_close(best, torch.where(loss(d1) > loss(d0), d1, d0), rtol=0, atol=1e-12)
    differ = (best - last).abs().flatten() > 1e-9
    assert 0 < int(differ.sum()) < 32  # some starts end lower after their step, some not
    assert (loss(best) >= loss(last) - 1e-12).all()


def test_iterate_is_checked_and_ignored_by_the_first_order_solver():
    with pytest.raises(AdvTransferError, match="iterate must be one of"):
        attacks.AttackConfig(eps=0.1, iterate="first")
    x = torch.rand(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    model = two_layer(0)
    a, b = (attack(model, x, eps=0.1, solver="first_order", iterate=i, seed=0)
            for i in ("best", "last"))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
