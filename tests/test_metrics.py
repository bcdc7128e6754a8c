from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from advtransfer import AdvTransferError, transfer_matrix, transferability
from advtransfer.metrics import DirectionAccumulator
from advtransfer.theory import first_order_transferability

from .conftest import TinyCNN, two_layer

KEYS = ("alpha1", "alpha2", "combined")


def test_first_order_solver_matches_exact_theory_within_1_percent(x64):
    s, t = two_layer(1), two_layer(2)
    exact = first_order_transferability(s, t, x64)
    got = transferability(s, t, x64, eps=1e-4, solver="first_order", steps=200, bounds=None,
                          generator=0)
    for d in ("source_to_target", "target_to_source"):
        for k in KEYS:
            assert getattr(getattr(got, d), k) == pytest.approx(getattr(getattr(exact, d), k),
                                                                rel=0.01)


def test_pgd_small_eps_within_2_percent_of_exact_theory(x64):
    s, t = two_layer(3), two_layer(4)
    exact = first_order_transferability(s, t, x64)
    got = transferability(s, t, x64, eps=1e-3, solver="pgd", steps=100, bounds=None, generator=0)
    for d in ("source_to_target", "target_to_source"):
        for k in KEYS:
            assert getattr(getattr(got, d), k) == pytest.approx(getattr(getattr(exact, d), k),
                                                                rel=0.02)


def test_alpha_of_a_model_with_itself(x64):
    model = two_layer(5)
    m = transfer_matrix({"a": model, "b": two_layer(6)}, x64, eps=1e-3, bounds=None, generator=0)
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
                           bounds=None, generator=0)
    assert same.source_to_target.alpha1 == pytest.approx(1.0, rel=1e-3)
    assert same.source_to_target.alpha2 == pytest.approx(expected, rel=1e-3)


def test_streaming_equals_one_shot_and_loader_forms_agree(x64):
    s, t = two_layer(1), two_layer(2)
    kw = dict(eps=0.05, solver="first_order", steps=30, bounds=None, generator=0)
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
    sq = DirectionAccumulator(squared=True)
    sq.update(aa, ab, bb)
    r2 = sq.compute()
    np.testing.assert_allclose(r2.alpha1_per_sample, [0.25, 0.25])
    assert r2.alpha2 == pytest.approx(0.5)
    assert r2.combined == pytest.approx((0.25 * np.sqrt(2) / 2) ** 2)


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
    m = transfer_matrix(models, x64, eps=0.01, bounds=None, steps=2, batch_size=8, generator=0)
    assert len(calls) == 4 * 2  # N attacks per batch, two batches
    assert sorted(set(calls)) == sorted(models)
    assert m.alpha1.shape == (4, 4)
    r = m.direction("m0", "m2")
    assert r.attacker == "m0" and r.victim == "m2" and r.alpha1 == m.alpha1[0, 2]


def test_same_generator_same_numbers_and_stats_sane():
    s, t = TinyCNN(0), TinyCNN(1)
    x = torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    a = transferability(s, t, x, eps=0.2, generator=3)
    b = transferability(s, t, x, eps=0.2, generator=3)
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
    transferability(s, t, x, eps=0.1, steps=2, generator=0)
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
