"""Property tests (hypothesis): invariants that must hold for every input, not for one example.

- the attack never leaves its budget or the input bounds, for any norm, eps, solver, model;
- the feature estimators do not depend on how classes are named or in which order samples come;
- a unit's key does not depend on the order in which a configuration's fields are written, and
  changes with any field's value.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import advtransfer
from advtransfer.attacks import norms
from advtransfer.estimators import hscore, logme, regularized_hscore
from tests.conftest import tunit

FAST = settings(max_examples=25, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(seed=st.integers(0, 2**16), norm=st.sampled_from(["l2", "linf"]),
       eps=st.floats(1e-3, 3.0), solver=st.sampled_from(["pgd", "first_order"]),
       objective=st.sampled_from(["deviation", "ce"]), steps=st.integers(1, 4),
       random_start=st.booleans())
def test_attack_stays_in_its_budget_and_bounds(seed, norm, eps, solver, objective, steps,
                                               random_start):
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    x = torch.rand(6, 5, generator=g, dtype=torch.float64)
    delta = advtransfer.attack(model, x, eps=eps, norm=norm, objective=objective, solver=solver,
                               steps=steps, random_start=random_start, bounds=(0, 1),
                               seed=seed)
    assert delta.shape == x.shape and delta.dtype == x.dtype
    assert bool((norms(delta, norm) <= eps * (1 + 1e-9) + 1e-12).all())
    assert bool(((x + delta) >= -1e-12).all() and ((x + delta) <= 1 + 1e-12).all())


def _classes(seed: int, n: int, k: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % k
    rng.shuffle(labels)
    features = rng.normal(size=(n, d)) + 2.0 * np.eye(k, d)[labels]
    return features, labels


@FAST
@given(seed=st.integers(0, 2**16), k=st.integers(2, 4), d=st.integers(4, 8),
       estimator=st.sampled_from([logme, hscore, regularized_hscore]))
def test_feature_estimators_ignore_class_names_and_sample_order(seed, k, d, estimator):
    features, labels = _classes(seed, 40, k, d)
    rng = np.random.default_rng(seed + 1)
    names = rng.permutation(k) + 10  # another name for every class
    order = rng.permutation(len(labels))
    base = estimator(features, labels)
    assert estimator(features, names[labels]) == pytest.approx(base, rel=1e-8, abs=1e-10)
    assert estimator(features[order], labels[order]) == pytest.approx(base, rel=1e-8, abs=1e-10)


configs = st.dictionaries(st.text("abcdefgh_", min_size=1, max_size=6),
                          st.one_of(st.integers(-5, 5), st.floats(-2, 2, allow_nan=False),
                                    st.text("xyz", max_size=3), st.booleans()),
                          min_size=1, max_size=6)


@settings(max_examples=100, deadline=None)
@given(config=configs, data=st.data())
def test_unit_key_ignores_field_order_and_sees_every_value(config, data):
    reordered = dict(reversed(list(config.items())))
    assert tunit("kind", config).key == tunit("kind", reordered).key
    field = data.draw(st.sampled_from(sorted(config)))
    changed = {**config, field: [config[field]]}  # any other value
    assert tunit("kind", changed).key != tunit("kind", config).key
    assert tunit("other", config).key != tunit("kind", config).key


@given(values=st.lists(st.tuples(st.sampled_from([-1.0, 0.0, 0.5, 2.0]),
                                 st.floats(-3, 3, allow_nan=False)), min_size=2, max_size=9))
def test_weighted_tau_equals_scipys_public_function_with_ties_and_constants(values):
    """The fast path of weighted_kendall_tau (scipy's function without its nan-policy wrapper)
    gives exactly what the public scipy.stats.weightedtau gives (NaN for a constant input)."""
    import warnings

    from scipy import stats

    from advtransfer.estimators import weighted_kendall_tau

    s, t = (np.array(v) for v in zip(*values, strict=True))
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        expected = float(stats.weightedtau(s, t).statistic)
    got = weighted_kendall_tau(s, t)
    assert got == expected or (np.isnan(got) and np.isnan(expected))
