from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from advtransfer import AdvTransferError, transfer_matrix, transferability
from advtransfer.attacks import AttackConfig, run_attack
from advtransfer.metrics import DirectionAccumulator, measure_matrix
from advtransfer.theory import first_order_transferability

from .conftest import TinyCNN, two_layer

KEYS = ("alpha1", "alpha2", "combined")


def test_first_order_solver_matches_exact_theory_within_1_percent(x64):
    s, t = two_layer(1), two_layer(2)
    exact = first_order_transferability(s, t, x64)
    got = transferability(s, t, x64, eps=1e-4, solver="first_order", steps=200, bounds=None,
                          seed=0)
    for d in ("source_to_target", "target_to_source"):
        for k in KEYS:
            assert getattr(getattr(got, d), k) == pytest.approx(getattr(getattr(exact, d), k),
                                                                rel=0.01)


def test_pgd_small_eps_within_2_percent_of_exact_theory(x64):
    s, t = two_layer(3), two_layer(4)
    exact = first_order_transferability(s, t, x64)
    got = transferability(s, t, x64, eps=1e-3, solver="pgd", steps=100, bounds=None, seed=0)
    for d in ("source_to_target", "target_to_source"):
        for k in KEYS:
            assert getattr(getattr(got, d), k) == pytest.approx(getattr(getattr(exact, d), k),
                                                                rel=0.02)


def test_alpha_of_a_model_with_itself(x64):
    model = two_layer(5)
    m = transfer_matrix({"a": model, "b": two_layer(6)}, x64, eps=1e-3, bounds=None, seed=0)
    np.testing.assert_allclose(np.diag(m.alpha1), 1.0, rtol=0, atol=1e-12)
    # alpha2 of a model with itself: ||E[u u^T]||_F computed here from the deviations
    torch.manual_seed(0)
    exact_self = first_order_transferability(model, model, x64)
    assert exact_self.source_to_target.alpha1 == pytest.approx(1.0, abs=1e-12)
    j = torch.func.vmap(torch.func.jacrev(model))(x64)
    _, _, vh = torch.linalg.svd(j)
    dev = torch.einsum("bkn,bn->bk", j, vh[:, 0, :])
    u = dev / dev.norm(dim=1, keepdim=True)
    expected = torch.linalg.matrix_norm(torch.einsum("bi,bj->ij", u, u) / len(u)).item()
    assert exact_self.source_to_target.alpha2 == pytest.approx(expected, rel=1e-10)
    assert expected < 0.999  # the check is not vacuous: E[u u^T] is not rank one here
    same = transferability(model, model, x64, eps=1e-4, solver="first_order", steps=200,
                           bounds=None, seed=0)
    assert same.source_to_target.alpha1 == pytest.approx(1.0, rel=1e-3)
    assert same.source_to_target.alpha2 == pytest.approx(expected, rel=1e-3)


def test_streaming_equals_one_shot_and_loader_forms_agree(x64):
    s, t = two_layer(1), two_layer(2)
    kw = dict(eps=0.05, solver="first_order", steps=30, bounds=None, seed=0)
    one = transferability(s, t, x64, batch_size=len(x64), **kw)
    for data in (x64, TensorDataset(x64, torch.zeros(len(x64))),
                 DataLoader(TensorDataset(x64), batch_size=3)):
        many = transferability(s, t, data, batch_size=5, **kw)
        for d in ("source_to_target", "target_to_source"):
            a, b = getattr(one, d), getattr(many, d)
            for k in KEYS:
                assert getattr(a, k) == pytest.approx(getattr(b, k), rel=1e-10)
            np.testing.assert_allclose(a.alpha1_per_sample, b.alpha1_per_sample, rtol=1e-10)


def test_accumulator_hand_computed_example():
    # Two samples, 2-d outputs. Sample 1: Delta_AA = (1,0), Delta_AB = (0,2), Delta_BB = (0,4)
    # Sample 2: Delta_AA = (0,3), Delta_AB = (1,0), Delta_BB = (2,0).
    aa = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    ab = torch.tensor([[0.0, 2.0], [1.0, 0.0]])
    bb = torch.tensor([[0.0, 4.0], [2.0, 0.0]])
    acc = DirectionAccumulator()
    acc.update(aa, ab, bb)
    r = acc.compute()
    np.testing.assert_allclose(r.alpha1_per_sample, [0.5, 0.5])
    # E[u_A u_B^T] = 1/2 ([[0,1],[0,0]] + [[0,0],[1,0]]) -> Frobenius sqrt(2)/2
    assert r.alpha2 == pytest.approx(np.sqrt(2) / 2)
    assert r.combined == pytest.approx(0.5 * np.sqrt(2) / 2)
    assert r.alpha1_median == pytest.approx(0.5) and r.alpha1_ladv == pytest.approx(0.25)
    assert r.convention == "icml" and r.n_undefined == 0
    authors = DirectionAccumulator(convention="authors")
    authors.update(aa, ab, bb)
    r2 = authors.compute()
    # the authors' image code: alpha1 unsquared, alpha2 and combined squared Frobenius norms
    # with the unsquared per-sample alpha1 inside combined
    np.testing.assert_allclose(r2.alpha1_per_sample, [0.5, 0.5])
    assert r2.alpha1 == pytest.approx(0.5) and r2.alpha1_ladv == pytest.approx(0.25)
    assert r2.alpha2 == pytest.approx(0.5)
    assert r2.combined == pytest.approx((0.5 * np.sqrt(2) / 2) ** 2)
    with pytest.raises(AdvTransferError, match="convention must be one of"):
        DirectionAccumulator(convention="paper")


def test_undefined_samples_are_left_out_of_every_metric():
    # Samples 1 and 2 as in the hand-computed example; sample 3: B does not move under its own
    # attack (Delta_BB = 0), so alpha1 is undefined there, and it must not count in alpha2 or
    # combined either (the same two samples for all three).
    aa = torch.tensor([[1.0, 0.0], [0.0, 3.0], [1.0, 0.0]])
    ab = torch.tensor([[0.0, 2.0], [1.0, 0.0], [1.0, 0.0]])
    bb = torch.tensor([[0.0, 4.0], [2.0, 0.0], [0.0, 0.0]])
    acc = DirectionAccumulator()
    acc.update(aa, ab, bb)
    with pytest.warns(RuntimeWarning, match="1 of 3 samples"):
        r = acc.compute()
    assert r.n_undefined == 1 and r.n_samples == 3
    assert r.alpha1 == pytest.approx(0.5) and r.alpha1_median == pytest.approx(0.5)
    assert r.alpha2 == pytest.approx(np.sqrt(2) / 2)
    assert r.combined == pytest.approx(0.5 * np.sqrt(2) / 2)


def _svd_top(w: np.ndarray) -> tuple[np.ndarray, float]:
    _, s, vh = np.linalg.svd(w)
    return vh[0], s[0]


@pytest.mark.parametrize("convention", ["icml", "authors"])
def test_conventions_by_hand_on_two_linear_models(convention):
    # f_S(x) = W_S x, f_T(x) = W_T x. The first-order attack is delta = eps v1(W) (exact for a
    # linear model), so per sample Delta_{S->T} = eps W_T v_S, Delta_{T->T} = eps sigma1(W_T)
    # u1(W_T): alpha1^{S->T} = ||W_T v_S|| / sigma1(W_T) for every x, the directions are the same
    # for every x, so ||E[u v^T]||_F = 1 and combined = alpha1 (icml) or alpha1^2 (authors).
    g = torch.Generator().manual_seed(3)
    w_s, w_t = torch.randn(4, 6, generator=g), torch.randn(5, 6, generator=g)
    source, target = nn.Linear(6, 4, bias=False), nn.Linear(6, 5, bias=False)
    with torch.no_grad():
        source.weight.copy_(w_s)
        target.weight.copy_(w_t)
    v_s, _ = _svd_top(w_s.double().numpy())
    v_t, s_t = _svd_top(w_t.double().numpy())
    _, s_s = _svd_top(w_s.double().numpy())
    a_st = np.linalg.norm(w_t.double().numpy() @ v_s) / s_t
    a_ts = np.linalg.norm(w_s.double().numpy() @ v_t) / s_s
    x = torch.rand(10, 6, generator=g)
    r = transferability(source, target, x, eps=0.01, solver="first_order", steps=200,
                        bounds=None, convention=convention, seed=0)
    power = 2 if convention == "authors" else 1
    for d, a1 in ((r.source_to_target, a_st), (r.target_to_source, a_ts)):
        assert d.convention == convention
        assert d.alpha1 == pytest.approx(a1, rel=1e-4)
        assert d.alpha1_median == pytest.approx(a1, rel=1e-4)
        assert d.alpha1_ladv == pytest.approx(a1**2, rel=1e-4)
        assert d.alpha2 == pytest.approx(1.0, rel=1e-4)
        assert d.combined == pytest.approx(a1**power, rel=1e-4)


def test_per_sample_eps_across_batches_and_explicit_output_selection():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(200, 6, generator=g)
    eps = 0.01 + 0.05 * torch.rand(200, generator=g)
    s, t = two_layer(1, dtype=torch.float32), two_layer(2, dtype=torch.float32)
    kw = {"solver": "first_order", "bounds": None, "seed": 0}
    small = transferability(s, t, x, eps=eps, batch_size=64, **kw)  # 4 batches
    whole = transferability(s, t, x, eps=eps, batch_size=256, **kw)  # one batch
    np.testing.assert_allclose(small.source_to_target.alpha1_per_sample,
                               whole.source_to_target.alpha1_per_sample, rtol=1e-4)
    assert small.source_to_target.stats.mean_delta_norm == pytest.approx(float(eps.mean()),
                                                                         rel=1e-4)
    with pytest.raises(AdvTransferError, match="200 per-sample values but data has 150"):
        transferability(s, t, x[:150], eps=eps, batch_size=64, **kw)

    class TwoHeads(nn.Module):  # returns (auxiliary, main): element 1 is the model's output
        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return z[:, :2] * 0.0 + 1.0, self.model(z)

    plain = transferability(s, t, x[:32], eps=0.05, **kw)
    chosen = transferability(TwoHeads(s), TwoHeads(t), x[:32], eps=0.05, output=1, **kw)
    assert chosen.source_to_target.alpha1 == pytest.approx(plain.source_to_target.alpha1)
    keyed = transferability(s, t, x[:32], eps=0.05, output=lambda out: out * 2.0, **kw)
    assert keyed.source_to_target.alpha1 == pytest.approx(plain.source_to_target.alpha1)
    with pytest.warns(UserWarning, match="using element 0"):
        silent = transferability(TwoHeads(s), TwoHeads(t), x[:32], eps=0.05, **kw)
    # the default took element 0, a constant: no model moves and every alpha1 is undefined
    assert silent.source_to_target.n_undefined == 32
    with pytest.raises(AdvTransferError, match="selects nothing"):
        transferability(TwoHeads(s), TwoHeads(t), x[:32], eps=0.05, output=5, **kw)
    with pytest.raises(AdvTransferError, match="must be a torch.nn.Module"):
        transferability(lambda z: z, t, x[:32], eps=0.05, **kw)


def test_large_outputs_use_gram_form_and_agree():
    import advtransfer.metrics as metrics

    g = torch.Generator().manual_seed(0)
    aa, ab, bb = (torch.randn(7, 5, generator=g) for _ in range(3))
    small = DirectionAccumulator()
    small.update(aa, ab, bb)
    old = metrics._MAX_OUTER_ENTRIES
    metrics._MAX_OUTER_ENTRIES = 1
    try:
        big = DirectionAccumulator()
        big.update(aa[:3], ab[:3], bb[:3])
        big.update(aa[3:], ab[3:], bb[3:])
    finally:
        metrics._MAX_OUTER_ENTRIES = old
    a, b = small.compute(), big.compute()
    assert a.alpha2 == pytest.approx(b.alpha2, rel=1e-12)
    assert a.combined == pytest.approx(b.combined, rel=1e-12)


def test_alpha1_above_one_is_counted_not_clipped():
    acc = DirectionAccumulator()
    acc.update(torch.ones(3, 2), torch.tensor([[3.0, 0], [1, 0], [0, 1]]),
               torch.tensor([[1.0, 0], [2, 0], [0, 2]]))
    r = acc.compute()
    assert r.n_alpha1_above_one == 1 and r.alpha1_per_sample.max() == pytest.approx(3.0)


def test_matrix_attacks_each_model_once_per_batch(monkeypatch, x64):
    import advtransfer.metrics as metrics

    calls = []
    real = metrics.run_attack

    def counting(model, x, *args, **kwargs):
        calls.append(kwargs.get("name"))
        return real(model, x, *args, **kwargs)

    monkeypatch.setattr(metrics, "run_attack", counting)
    models = {f"m{i}": two_layer(i) for i in range(4)}
    m = transfer_matrix(models, x64, eps=0.01, bounds=None, steps=2, batch_size=8, seed=0)
    assert len(calls) == 4 * 2  # N attacks per batch, two batches
    assert sorted(set(calls)) == sorted(models)
    assert m.alpha1.shape == (4, 4)
    r = m.direction("m0", "m2")
    assert r.attacker == "m0" and r.victim == "m2" and r.alpha1 == m.alpha1[0, 2]


def test_same_generator_same_numbers_and_stats_sane():
    s, t = TinyCNN(0), TinyCNN(1)
    x = torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    a = transferability(s, t, x, eps=0.2, seed=3, noise_baseline=True)
    b = transferability(s, t, x, eps=0.2, seed=3)
    np.testing.assert_array_equal(a.source_to_target.alpha1_per_sample,
                                  b.source_to_target.alpha1_per_sample)
    st = a.source_to_target.stats
    assert st.mean_delta_norm <= 0.2 + 1e-6
    # the victim's own attack moves it more than random noise of the same norm
    assert st.mean_victim_self_deviation > st.mean_random_deviation > 0
    assert a.to_dict()["source_to_target"]["n_samples"] == 12


def test_models_left_as_they_were_even_after_error():
    s, t = TinyCNN(0), TinyCNN(1)
    s.train()
    t.eval()
    t.fc.weight.requires_grad_(False)
    x = torch.rand(4, 1, 8, 8)
    transferability(s, t, x, eps=0.1, steps=2, seed=0)
    assert s.training and s.bn.training and not t.training
    assert s.fc.weight.requires_grad and not t.fc.weight.requires_grad
    assert all(p.grad is None for p in [*s.parameters(), *t.parameters()])
    with pytest.raises(AdvTransferError, match="bounds"):
        transferability(s, t, x + 5, eps=0.1)
    assert s.training and not t.training and s.fc.weight.requires_grad


def test_bad_data_and_models():
    s, t = two_layer(0), two_layer(1)
    with pytest.raises(AdvTransferError, match="empty"):
        transferability(s, t, torch.zeros(0, 6, dtype=torch.float64), eps=0.1)
    with pytest.raises(AdvTransferError, match="batch_size"):
        transferability(s, t, torch.rand(3, 6, dtype=torch.float64), eps=0.1, batch_size=0)
    with pytest.raises(AdvTransferError, match="device"):
        transferability(s, t, torch.rand(3, 6, dtype=torch.float64), eps=0.1, device="tpu")

    class Wrong(nn.Module):
        def forward(self, x):
            return torch.zeros(1, 2)

    with pytest.raises(AdvTransferError, match="target returned an output of shape"):
        transferability(s, Wrong(), torch.rand(3, 6, dtype=torch.float64), eps=0.1)
    with pytest.raises(AdvTransferError, match="steps"):
        transferability(s, t, torch.rand(3, 6, dtype=torch.float64), eps=0.1, steps=0)


class _Counting(nn.Module):
    """Counts forward calls made with autograd on (attack passes) and off (evaluations)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.grad_calls = self.eval_calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            self.grad_calls += 1
        else:
            self.eval_calls += 1
        return self.model(x)


FGSM = AttackConfig(eps=0.1, norm="linf", objective="ce", solver="first_order")


@pytest.mark.parametrize("noise", [False, True])
def test_only_the_passes_the_pairs_need_are_run(noise):
    """Pairs (0, 1), (0, 2) with FGSM, one batch: each model is attacked once (one forward with
    autograd, which also gives f(x)); the evaluations are Delta_{0->0} on model 0 and
    Delta_{0->j}, Delta_{j->j} on each victim j, plus one noise pass per victim when asked."""
    models = [_Counting(TinyCNN(i)) for i in range(3)]
    x = torch.rand(10, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    out = measure_matrix(models, ["a", "b", "c"], x, FGSM, pairs=[(0, 1), (0, 2)],
                         noise_baseline=noise, generator=0)
    assert [m.grad_calls for m in models] == [1, 1, 1]
    assert [m.eval_calls for m in models] == [1, 2 + noise, 2 + noise]
    assert set(out) == {(0, 1), (0, 2)}
    rnd = out[(0, 1)].stats.mean_random_deviation
    assert (rnd > 0) if noise else math.isnan(rnd)


def test_alpha1_alone_skips_the_attackers_own_deviation():
    """alpha2=False: Delta_{0->0} is not evaluated for pairs (0, 1), (0, 2); alpha1 is exactly
    the one computed beside alpha2, and alpha2 and combined are NaN."""
    models = [_Counting(TinyCNN(i)) for i in range(3)]
    x = torch.rand(10, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    pairs = [(0, 1), (0, 2)]
    alone = measure_matrix(models, ["a", "b", "c"], x, FGSM, pairs=pairs, alpha2=False)
    assert [m.eval_calls for m in models] == [0, 2, 2]
    full = measure_matrix(models, ["a", "b", "c"], x, FGSM, pairs=pairs)
    for key in pairs:
        np.testing.assert_array_equal(alone[key].alpha1_per_sample, full[key].alpha1_per_sample)
        assert math.isnan(alone[key].alpha2) and math.isnan(alone[key].combined)
        assert not math.isnan(full[key].alpha2)


def test_skipped_passes_change_no_requested_number():
    """PGD with a random start over several batches (the generator stream matters): the pairs
    asked alone, without the noise baseline, give exactly the numbers of all pairs with it."""
    models = [TinyCNN(i) for i in range(3)]
    x = torch.rand(20, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    config = AttackConfig(eps=0.3, steps=4)
    full = measure_matrix(models, ["a", "b", "c"], x, config, noise_baseline=True,
                          batch_size=8, generator=5)
    some = measure_matrix(models, ["a", "b", "c"], x, config, pairs=[(0, 1), (2, 0)],
                          batch_size=8, generator=5)
    for key, r in some.items():
        f = full[key]
        np.testing.assert_array_equal(r.alpha1_per_sample, f.alpha1_per_sample)
        assert (r.alpha2, r.combined) == (f.alpha2, f.combined)
        assert replace(r.stats, mean_random_deviation=0.0) == \
            replace(f.stats, mean_random_deviation=0.0)


def test_fgsm_clean_output_comes_from_the_attack_pass():
    """The FGSM perturbation equals one signed step of CE(f(x + d), argmax f(x)) computed here
    by hand, and the deviations use that f(x)."""
    model = TinyCNN(3).eval()
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    d = torch.zeros_like(x, requires_grad=True)
    y = model(x + d)
    nn.functional.cross_entropy(y, y.detach().argmax(1), reduction="sum").backward()
    delta = (x + 0.1 * d.grad.sign()).clamp(0, 1) - x
    out = run_attack(model, x, FGSM, None)
    torch.testing.assert_close(out.delta, delta, rtol=0, atol=1e-7)
    torch.testing.assert_close(out.clean, model(x).detach(), rtol=1e-6, atol=1e-7)
