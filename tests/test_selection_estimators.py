"""Every estimator behind ``rank(methods=...)`` gives what the estimator function gives on the
candidate's features (or outputs, or gradients), and the pool-normalised ones are their
normalisation over exactly the candidates ranked together."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from advtransfer import selection
from advtransfer.estimators import etran, etran_parts, lgc, ncti, ncti_parts, per_sample_gradients
from advtransfer.methods import (
    BASE_FEATURE_METHODS,
    ESTIMATOR_METHODS,
    PED_METHODS,
    POOL_METHODS,
    method_label,
)
from advtransfer.selection import _ESTIMATORS, estimation, rank


def _pool(n: int = 3) -> dict[str, nn.Module]:
    out = {}
    for i in range(n):
        torch.manual_seed(10 + i)
        out[f"m{i}"] = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    return out


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(90, 6, generator=g)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()


@pytest.fixture(scope="module")
def ranked(data) -> selection.RankingResult:
    methods = [*ESTIMATOR_METHODS, *POOL_METHODS]
    return rank(_pool(), data, None, methods=methods)


def test_every_feature_estimator_is_the_function_on_the_penultimate_features(ranked, data):
    y = data[1].numpy()
    for name, model in _pool().items():
        feats = selection.candidate_outputs(model, data).features.double().numpy()
        for m in BASE_FEATURE_METHODS:
            assert ranked.scores[m][name] == pytest.approx(_ESTIMATORS[m](feats, y), rel=1e-9,
                                                           abs=1e-12), m
        from advtransfer.estimators import ped
        for m in PED_METHODS:
            base = _ESTIMATORS[m.removeprefix("ped_")]
            assert ranked.scores[m][name] == pytest.approx(ped(base, feats, y), rel=1e-9,
                                                           abs=1e-12), m


def test_pooled_estimators_normalise_over_the_ranked_pool(ranked, data):
    y = data[1].numpy()
    feats = {n: selection.candidate_outputs(m, data).features.double().numpy()
             for n, m in _pool().items()}
    names = list(feats)
    expect = {"ncti": ncti([ncti_parts(feats[n], y) for n in names]),
              "etran": etran([etran_parts(feats[n], y) for n in names])}
    for method, values in expect.items():
        assert [ranked.scores[method][n] for n in names] == pytest.approx(values, rel=1e-9)
        for part in POOL_METHODS[method]:
            assert method_label(part).startswith(method_label(method) + " part")
    # the raw parts do not depend on the pool; the pooled score does
    alone = rank({"m0": _pool()["m0"], "m1": _pool()["m1"]}, data, None,
                 methods=["ncti", "ncti_vc"])
    assert alone.scores["ncti_vc"]["m0"] == ranked.scores["ncti_vc"]["m0"]
    pair = ncti([ncti_parts(feats[n], y) for n in ("m0", "m1")])
    assert [alone.scores["ncti"][n] for n in ("m0", "m1")] == pytest.approx(pair, rel=1e-9)


def test_lgc_is_the_label_gradient_correlation_of_all_parameters(ranked, data):
    x, y = data
    for name, model in _pool().items():
        grads = per_sample_gradients(model, x).double().numpy()
        assert ranked.scores["lgc"][name] == pytest.approx(lgc(grads, y.numpy()), rel=1e-6)


def test_a_candidate_without_features_is_nan_for_feature_and_pooled_methods(data):
    pool = {**_pool(2), "conv": nn.Sequential(nn.Unflatten(1, (1, 6)), nn.Conv1d(1, 3, 6),
                                              nn.Flatten())}
    with pytest.warns(UserWarning, match="conv"):
        r = rank(pool, data, None, methods=["sfda", "ncti", "lgc", "leep"])
    assert math.isnan(r.scores["sfda"]["conv"]) and math.isnan(r.scores["ncti"]["conv"])
    assert all(np.isfinite(r.scores["ncti"][n]) for n in ("m0", "m1"))
    assert np.isfinite(r.scores["lgc"]["conv"]) and np.isfinite(r.scores["leep"]["conv"])


def test_lgc_beyond_the_gradient_budget_is_nan_with_a_warning(data, monkeypatch):
    monkeypatch.setattr(estimation, "GRADIENT_BUDGET", 100)
    with pytest.warns(UserWarning, match="gradient budget"):
        r = rank(_pool(1), data, None, methods=["lgc", "logme"])
    assert math.isnan(r.scores["lgc"]["m0"]) and np.isfinite(r.scores["logme"]["m0"])
