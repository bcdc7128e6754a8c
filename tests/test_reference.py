"""The shared reference attack: attacked once, each candidate measured on its own, against the
all-pairs engine, closed forms, storage, and N + 1 attacks in rank and the recipes."""

from __future__ import annotations

import functools
from collections import Counter

import pytest
import torch
from torch import nn

from advtransfer.attacks import AttackConfig
from advtransfer.errors import AdvTransferError
from advtransfer.experiments.runner import run
from advtransfer.experiments.stages import ReferenceAttackUnit
from advtransfer.metrics import measure_matrix
from advtransfer.reference import (
    ReferenceAttack,
    attack_reference,
    measure_against_reference,
    unit_seed,
)
from advtransfer.selection import rank
from advtransfer.store import Store


def _mlp(seed: int, d: int = 6, h: int = 8, k: int = 4) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, h), nn.Tanh(), nn.Linear(h, k)).double().eval()


DETERMINISTIC = [
    AttackConfig(eps=0.01, solver="first_order", bounds=None),
    AttackConfig(eps=0.05, random_start=False, steps=20, bounds=None),
    AttackConfig(eps=0.05, objective="ce", random_start=False, steps=5, norm="linf",
                 bounds=None),
]


@pytest.mark.parametrize("config", DETERMINISTIC, ids=["first_order", "pgd", "ce-linf"])
def test_equals_the_all_pairs_engine_for_deterministic_attacks(config):
    """With no random draw, attacking the reference once and each candidate alone gives
    exactly the numbers of measure_matrix with the pairs (T, S) and (S, T), whatever the
    batch sizes."""
    ref_model, cand = _mlp(0), _mlp(1, h=5, k=3)
    x = torch.rand(37, 6, dtype=torch.float64)
    expected = measure_matrix([ref_model, cand], ["reference", "cand"], x, config,
                              pairs=[(0, 1), (1, 0)], batch_size=10)
    ref = attack_reference(ref_model, x, config, batch_size=10)
    got = measure_against_reference(cand, ref, config, reference=ref_model, name="cand",
                                    batch_size=16)
    for d, key in (("t2s", (0, 1)), ("s2t", (1, 0))):
        for attr in ("alpha1", "alpha2", "combined"):
            assert getattr(got[d], attr) == pytest.approx(getattr(expected[key], attr),
                                                          rel=1e-9), (d, attr)
        assert got[d].n_samples == 37
        assert got[d].stats.mean_iterations == pytest.approx(
            expected[key].stats.mean_iterations)


def test_linear_models_closed_form():
    """f_T(x) = A x, f_S(x) = W x, first-order L2 attacks (the top right singular vectors v):
    alpha1^{T->S} = ||W v_A|| / sigma1(W), alpha1^{S->T} = ||A v_W|| / sigma1(A), and alpha2
    = 1 for every sample (every deviation is along a fixed direction)."""
    torch.manual_seed(3)
    a, w = torch.randn(3, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    t = nn.Linear(5, 3, bias=False).double()
    s = nn.Linear(5, 4, bias=False).double()
    t.weight.data, s.weight.data = a.clone(), w.clone()
    x = torch.rand(9, 5, dtype=torch.float64)
    config = AttackConfig(eps=0.1, solver="first_order", bounds=None)
    out = measure_against_reference(s, attack_reference(t, x, config), config, reference=t)
    v_a, v_w = torch.linalg.svd(a).Vh[0], torch.linalg.svd(w).Vh[0]
    s_a, s_w = torch.linalg.matrix_norm(a, 2), torch.linalg.matrix_norm(w, 2)
    assert out["t2s"].alpha1 == pytest.approx(float((w @ v_a).norm() / s_w), rel=1e-6)
    assert out["s2t"].alpha1 == pytest.approx(float((a @ v_w).norm() / s_a), rel=1e-6)
    assert out["t2s"].alpha2 == pytest.approx(1.0, rel=1e-6)
    assert out["s2t"].alpha2 == pytest.approx(1.0, rel=1e-6)


def test_alpha1_of_a_model_with_itself_is_one():
    m = _mlp(4)
    x = torch.rand(20, 6, dtype=torch.float64)
    config = AttackConfig(eps=0.01, solver="first_order", bounds=None)
    out = measure_against_reference(m, attack_reference(m, x, config), config, reference=m)
    assert out["t2s"].alpha1 == pytest.approx(1.0, rel=1e-9)
    assert out["s2t"].alpha1 == pytest.approx(1.0, rel=1e-9)


def test_per_sample_eps_and_noise_baseline_travel_with_the_reference():
    m, c = _mlp(0), _mlp(2)
    x = torch.rand(12, 6, dtype=torch.float64)
    eps = torch.linspace(0.01, 0.1, 12, dtype=torch.float64)
    config = AttackConfig(eps=eps, solver="first_order", bounds=None)
    ref = attack_reference(m, x, config, noise_baseline=True, batch_size=5)
    assert torch.equal(ref.eps, eps) and ref.random_deviation is not None
    assert torch.allclose(ref.delta.norm(dim=1), eps)  # L2 first order: ||delta|| = eps
    out = measure_against_reference(c, ref, config, reference=m, noise_baseline=True,
                                    batch_size=7)
    assert out["s2t"].stats.mean_random_deviation == pytest.approx(
        float(ref.random_deviation.mean()))
    with pytest.raises(AdvTransferError, match="eps holds 12 per-sample values but x has 5"):
        attack_reference(m, x[:5], config)
    with pytest.raises(AdvTransferError, match="needs a reference attack computed with"):
        measure_against_reference(c, attack_reference(m, x, config), config, reference=m,
                                  noise_baseline=True)
    with pytest.raises(AdvTransferError, match="pass reference="):
        measure_against_reference(c, ref, config, directions=["s2t"])
    with pytest.raises(AdvTransferError, match="directions must be"):
        measure_against_reference(c, ref, config, directions=["up"])


def test_reference_attack_saves_and_the_store_reuses_it(tmp_path):
    m = _mlp(0)
    x = torch.rand(10, 6, dtype=torch.float64)
    config = AttackConfig(eps=0.05, steps=3, bounds=None)
    ref = attack_reference(m, x, config, seed=5, noise_baseline=True)
    back = ReferenceAttack.load(ref.save(tmp_path / "ref.safetensors"))
    for k, v in ref.tensors().items():
        assert torch.equal(getattr(back, k), v), k
    calls = Counter()

    def compute():
        calls["n"] += 1
        return ref.tensors()

    def unit(eps: float) -> ReferenceAttackUnit:
        return ReferenceAttackUnit(reference="r", inputs={}, attack={"eps": eps})

    store = Store(tmp_path / "run")
    first = store.tensors(unit(0.05), compute)
    again = Store(tmp_path / "run").tensors(unit(0.05), compute)
    assert calls["n"] == 1 and all(torch.equal(first[k], again[k]) for k in first)
    Store(tmp_path / "run").tensors(unit(0.1), compute)
    assert calls["n"] == 2  # another configuration is another unit


def test_a_candidates_scores_do_not_depend_on_the_pool():
    """Random starts are seeded by (seed, name): ranking {a, b, c} or {c} alone, in any order,
    gives c the same scores (adding a candidate computes only that candidate)."""
    torch.manual_seed(0)
    x, y = torch.rand(40, 6), torch.arange(40) % 3
    ref = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    pool = {n: functools.partial(_float_mlp, i) for i, n in enumerate("abc")}
    kw = {"methods": ["alpha1", "alpha2", "combined_s2t", "logme"], "steps": 3, "seed": 2,
          "attack_samples": 24}
    whole = rank(pool, (x, y), ref, **kw)
    alone = rank({"c": pool["c"]}, (x, y), ref, **kw)
    reordered = rank(dict(reversed(list(pool.items()))), (x, y), ref, **kw)
    for m in kw["methods"]:
        assert alone.scores[m]["c"] == whole.scores[m]["c"], m
        assert reordered.scores[m] == whole.scores[m], m
    assert unit_seed(2, "c") != unit_seed(2, "b") != unit_seed(3, "b")


def _float_mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 5)).eval()


def test_rank_costs_n_plus_one_attacks_also_with_feature_methods(attacks):
    torch.manual_seed(0)
    x, y = torch.rand(30, 6), torch.arange(30) % 3
    ref = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    pool = {f"m{i}": functools.partial(_float_mlp, i) for i in range(5)}
    rank(pool, (x, y), ref, methods=["alpha1", "alpha2_s2t"], steps=2, attack_samples=30,
         batch_size=64)
    assert attacks == Counter({"reference": 1, **{n: 1 for n in pool}})  # N + 1
    attacks.clear()
    rank(pool, (x, y), ref, methods=["alpha1_features"], steps=2, attack_samples=30,
         batch_size=64)  # the features are attacked instead of the outputs: still N + 1
    assert attacks == Counter({"reference": 1, **{f"{n}_features": 1 for n in pool}})


def test_paper_recipe_attacks_the_reference_once_for_all_sources(attacks, tmp_path):
    """digits-distribution (the paper's protocol on digits): N sources cost N + 1 attacks per
    batch of attacked inputs, not 2N; a rerun attacks nothing."""
    result = run("digits-distribution", tmp_path / "run", quick=True, progress=False)
    n_sources = len(result["records"])
    assert n_sources >= 3
    batches = attacks["reference"]
    assert batches >= 1
    assert attacks == Counter({"reference": batches, "source": n_sources * batches})
    attacks.clear()
    run("digits-distribution", tmp_path / "run", quick=True, progress=False)
    assert not attacks


def test_model_selection_recipe_attacks_n_plus_one(attacks, tmp_path):
    result = run("digits-model-selection", tmp_path / "run", quick=True, progress=False,
                 overrides=['targets=["ge5"]', 'methods=["alpha1", "alpha1_features", '
                                                   '"logme"]'])
    names = {r["source"] for r in result["records"]}
    assert attacks["reference"] == 1  # shared by the logits and the features units
    assert {n: attacks[n] for n in names} == {n: 1 for n in names}
    assert {n: attacks[f"{n}_features"] for n in names} == {n: 1 for n in names}
    assert sum(attacks.values()) == 2 * len(names) + 1


def test_rank_at_the_published_fgsm_runs_the_passes_it_needs_and_no_more():
    """rank(alpha1, alpha2, combined) with the authors' attack (FGSM from a random start, last
    iterate; correct_only): per image, each candidate runs 4 forward passes (f_S(x), the attack's
    loss, f_S(x + delta_S), f_S(x + delta_T)) and 1 backward; the reference 3 forward (f_T(x),
    which gives its accuracy, the correct-only selection and the attack's labels; the attack's
    loss; f_T(x + delta_T)) and 1 backward. The code before this test ran 6.25 forward passes
    per image and model (a second clean pass per attack, and the best-iterate check), then 4.25
    (three clean passes of the reference)."""
    from advtransfer import rank

    counts = {"forward": 0, "backward": 0}

    class Counting(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            counts["forward"] += len(x)
            y = self.net(x)
            if y.requires_grad:
                y.register_hook(lambda g: counts.__setitem__("backward",
                                                             counts["backward"] + len(g)))
            return y

    torch.manual_seed(0)
    ref, pool = Counting(), {f"s{i}": Counting() for i in range(3)}
    x = torch.rand(48, 12) * 2 - 1
    with torch.no_grad():
        y = ref(x).argmax(1)
    counts.update(forward=0, backward=0)
    rank(pool, (x, y), ref, methods=["alpha1", "alpha2", "combined"], correct_only=True,
         attack_samples=None, eps=0.2, norm="linf", objective="ce", solver="pgd", steps=1,
         step_size=0.2, random_start=True, iterate="last", bounds=(-1.0, 1.0))
    assert counts == {"forward": 48 * (3 + 3 * 4), "backward": 48 * 4}


@pytest.mark.parametrize("attack_samples", [None, 20])
def test_prepare_reference_with_the_callers_clean_pass_is_the_same_attack(attack_samples):
    """rank hands prepare_reference the reference's outputs on all the target data (the pass
    that gives its accuracy): the subset, the correct-only selection and the attack are those
    of the pass prepare_reference makes itself."""
    from advtransfer.selection import prepare_reference

    torch.manual_seed(3)
    ref = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    x = torch.rand(48, 6) * 2 - 1
    y = torch.randint(0, 3, (48,))
    config = AttackConfig(eps=0.3, norm="l2", objective="deviation", solver="pgd", steps=3,
                          bounds=(-1.0, 1.0))
    with torch.no_grad():
        clean = ref(x)
    args = dict(attack_samples=attack_samples, correct_only=True, seed=4)
    own = prepare_reference(ref, (x, y), config, **args)
    given = prepare_reference(ref, (x, y), config, clean=clean, **args)
    assert 0 < len(own) < (attack_samples or 48)  # the correct-only selection dropped some
    for k, v in own.tensors().items():
        torch.testing.assert_close(given.tensors()[k], v, msg=k)
    with pytest.raises(AdvTransferError, match="clean must"):
        prepare_reference(ref, (x, y), config, clean=clean[:5], **args)
    with pytest.raises(AdvTransferError, match="clean must hold"):
        attack_reference(ref, x, config, clean=clean[:5])
