from __future__ import annotations

import pytest
import torch
from torch import nn

from advtransfer import AdvTransferError, attack
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
    delta = attack(model, x, eps=0.3, solver=solver, steps=steps, bounds=None, generator=1)
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
                   generator=0)
    assert delta.shape == x.shape and delta.dtype == x.dtype and delta.device == x.device
    assert (norms(delta, norm) <= 0.1 + 1e-6).all()
    assert ((x + delta) >= -1e-7).all() and ((x + delta) <= 1 + 1e-7).all()
    assert torch.equal(x, x_before)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_follows_input(dtype):
    model = two_layer(0, dtype=dtype)
    x = torch.rand(4, 6, dtype=dtype)
    assert attack(model, x, eps=0.1, generator=0).dtype == dtype


@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("solver", ["pgd", "first_order"])
def test_sample_in_batch_equals_sample_alone(norm, solver):
    model = two_layer(3)
    x = torch.rand(5, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    # without a random start the attack is deterministic: the power iteration starts at J^T 1
    kw = dict(eps=0.2, norm=norm, solver=solver, steps=20, random_start=False, bounds=None)
    batched = attack(model, x, generator=7, **kw)
    for i in range(5):
        alone = attack(model, x[i:i + 1], generator=8, **kw)
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
    a = attack(model, x, eps=0.2, bounds=None, generator=3)
    b = attack(model, x, eps=torch.full((4,), 0.2, dtype=torch.float64), bounds=None, generator=3)
    torch.testing.assert_close(a, b)
    eps = torch.tensor([0.1, 0.2, 0.3, 0.4])
    d = attack(model, x, eps=eps, bounds=None, generator=3)
    assert (d.norm(dim=1) <= eps.double() + 1e-9).all()
    assert (d.norm(dim=1) >= 0.9 * eps.double()).all()


def test_same_generator_same_delta_and_different_seed_differs():
    model = two_layer(2)
    x = torch.rand(6, 6, dtype=torch.float64)
    a = attack(model, x, eps=0.2, bounds=None, generator=torch.Generator().manual_seed(5))
    b = attack(model, x, eps=0.2, bounds=None, generator=torch.Generator().manual_seed(5))
    c = attack(model, x, eps=0.2, bounds=None, steps=1, generator=6)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("objective", ["deviation", "ce"])
def test_pgd_beats_same_norm_random_noise(norm, objective):
    from advtransfer.attacks import adversarial_loss, per_sample_eps, random_on_sphere

    model = TinyCNN(2)
    model.eval()
    x = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    delta = attack(model, x, eps=0.1, norm=norm, objective=objective, generator=0)
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
    attack(model, x, eps=0.1, generator=0)
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
        attack(boom, x, eps=0.1, generator=0)
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
    ref = attack(base, x, eps=0.1, generator=0)
    with pytest.warns(UserWarning, match="using element 0"):
        torch.testing.assert_close(attack(Tup(), x, eps=0.1, generator=0), ref)
    torch.testing.assert_close(attack(Tup(), x, eps=0.1, generator=0, output=0), ref)
    torch.testing.assert_close(attack(Dct(), x, eps=0.1, generator=0), ref)
    torch.testing.assert_close(attack(Dct(), x, eps=0.1, generator=0, output="logits"), ref)
    torch.testing.assert_close(attack(Pair(), x, eps=0.1, generator=0, output=1), ref)
