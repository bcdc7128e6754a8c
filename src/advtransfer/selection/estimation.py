"""The estimator scores of one candidate, and the pool-level combinations of scores.

:func:`candidate_outputs` runs a candidate once over the target data (penultimate features and
outputs); :func:`estimator_scores` computes the feature/output estimators of
:mod:`advtransfer.estimators` on them and :func:`gradient_scores` LGC on the per-sample parameter
gradients. :func:`combine` gives the pool-level score of a combined method (a rank average,
:func:`rank_average`, or the pool-normalised NCTI / ETran of their raw parts).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import astuple, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from advtransfer.data.batches import labelled
from advtransfer.devices import resolve_device
from advtransfer.errors import AdvTransferError
from advtransfer.estimators import (
    ETranParts,
    NCTIParts,
    etran,
    etran_parts,
    gbc,
    hscore,
    knn_accuracy,
    leep,
    lfc,
    lgc,
    logme,
    nce,
    ncti,
    ncti_parts,
    nleep,
    parc,
    ped,
    per_sample_gradients,
    regularized_hscore,
    sfda,
    tmi,
    transrate,
)
from advtransfer.methods import (
    ADVERSARIAL_METHODS,
    BASE_FEATURE_METHODS,
    COMBINED_METHODS,
    FEATURE_METHODS,
    OUTPUT_METHODS,
    PED_METHODS,
    POOL_METHODS,
    RANK_AVERAGE_METHODS,
    needed_methods,
)
from advtransfer.models.adapters import forward, frozen
from advtransfer.models.features import PenultimateCapture, has_linear
from advtransfer.selection.results import _finite
from advtransfer.training import labelled_loader

__all__ = [
    "GRADIENT_BUDGET",
    "CandidateOutputs",
    "candidate_outputs",
    "combine",
    "estimator_scores",
    "gradient_scores",
    "needs_reference",
    "normalized_ranks",
    "rank_average",
]

#: Most entries (samples x parameters) of the per-sample gradient matrix LGC may hold (float32:
#: 4 bytes each, so about 1 GB).
GRADIENT_BUDGET = 2**28
_ESTIMATORS: dict[str, Callable[..., float]] = {
    "logme": logme, "hscore": hscore, "regularized_hscore": regularized_hscore,
    "transrate": transrate, "gbc": gbc, "nleep": nleep, "parc": parc, "sfda": sfda,
    "knn": knn_accuracy, "lfc": lfc, "tmi": tmi,
}
assert set(_ESTIMATORS) == set(BASE_FEATURE_METHODS)
#: The pool-normalised estimators: name -> (its raw parts from one candidate's features, the
#: parts' type, rebuilt from their stored scores, the normalisation of a pool of parts).
_POOLED: dict[str, tuple[Callable[..., Any], Callable[..., Any],
                         Callable[[Sequence[Any]], list[float]]]] = {
    "ncti": (ncti_parts, NCTIParts, ncti), "etran": (etran_parts, ETranParts, etran),
}



@dataclass(frozen=True)
class CandidateOutputs:
    """One forward pass of a candidate over the target data.

    ``features``: the penultimate features (input of the last ``nn.Linear`` called), or
    ``None`` when the model has no ``nn.Linear``; ``outputs``: the model's outputs (logits);
    ``labels``: the target labels, aligned."""

    features: torch.Tensor | None
    outputs: torch.Tensor
    labels: torch.Tensor


def candidate_outputs(model: nn.Module, data: Any, *, batch_size: int = 256,
                      device: str | torch.device = "auto",
                      name: str = "candidate") -> CandidateOutputs:
    """Penultimate features and outputs of ``model`` on labelled ``data`` in one pass (eval mode
    and gradients restored afterwards; the temporary hooks are removed even on error). The
    penultimate features are the input of the last ``nn.Linear`` *called* in forward
    (:class:`advtransfer.models.features.PenultimateCapture`, which warns when that is a
    guess)."""
    run_on = resolve_device([model], device)
    capture = PenultimateCapture(model, name=name, detach=True) if has_linear(model) else None
    feats, outs, labels = [], [], []
    try:
        with frozen(model), torch.no_grad():
            for batch in labelled_loader(data, batch_size=batch_size, shuffle=False,
                                         name="target_data"):
                x, y = labelled(batch, name="target_data")
                if capture is not None:
                    capture.reset()
                out = forward(model, x.to(run_on), name=name).detach()
                if capture is not None:
                    feats.append(capture.features(out).cpu())
                outs.append(out.cpu())
                labels.append(torch.as_tensor(y).reshape(-1).cpu())
    finally:
        if capture is not None:
            capture.remove()
    return CandidateOutputs(torch.cat(feats) if capture is not None else None, torch.cat(outs),
                            torch.cat(labels))


def estimator_scores(outputs: CandidateOutputs, methods: Sequence[str], *,
                     name: str = "candidate",
                     timings: dict[str, float] | None = None) -> dict[str, float]:
    """The feature/output estimators in ``methods`` for one candidate's
    :class:`CandidateOutputs` (other method names are ignored): the estimators of
    :data:`~advtransfer.methods.BASE_FEATURE_METHODS` on the penultimate features, ``ped_<m>``
    on them after PED, the raw parts of the pool-normalised estimators (``ncti_vc``, ...; one
    computation per estimator gives all its parts), LEEP on the softmax outputs and NCE on the
    arg-max. ``timings``, if given, accumulates each estimator's seconds."""
    scores: dict[str, float] = {}
    y = outputs.labels.numpy()
    feats = None if outputs.features is None else outputs.features.double().numpy()
    for method in methods:
        if method in scores or method not in FEATURE_METHODS and method not in OUTPUT_METHODS:
            continue
        start = time.perf_counter()
        if method in FEATURE_METHODS and feats is None:
            _not_applicable(name, [method], "it has no nn.Linear layer, so no penultimate "
                            "features", scores)
            continue
        if method in _ESTIMATORS:
            scores[method] = float(_ESTIMATORS[method](feats, y))
        elif method in PED_METHODS:
            scores[method] = float(ped(_ESTIMATORS[method.removeprefix("ped_")], feats, y))
        elif method == "leep":
            probs = torch.softmax(outputs.outputs.double(), dim=1).numpy()
            scores[method] = float(leep(probs, y))
        elif method == "nce":
            scores[method] = float(nce(outputs.outputs.argmax(dim=1).numpy(), y))
        else:  # a part of a pool-normalised estimator: all its parts at once
            pooled = next(p for p, parts in POOL_METHODS.items() if method in parts)
            values = astuple(_POOLED[pooled][0](feats, y))
            scores.update(zip(POOL_METHODS[pooled], map(float, values), strict=True))
            method = pooled
        if timings is not None:
            timings[method] = timings.get(method, 0.0) + time.perf_counter() - start
    return scores


def gradient_scores(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor],
                    methods: Sequence[str], *, name: str = "candidate",
                    device: torch.device | str = "cpu",
                    timings: dict[str, float] | None = None) -> dict[str, float]:
    """The gradient estimators in ``methods`` (``lgc``) for one candidate: LGC
    (:func:`advtransfer.estimators.lfc.lgc`) on the per-sample gradients of the sum of the
    model's outputs with respect to all its parameters, on the labelled target ``data``
    (:func:`advtransfer.estimators.lfc.per_sample_gradients`, eval mode). The gradient
    matrix has N x P entries: above :data:`GRADIENT_BUDGET` the candidate gets NaN with a
    warning (pass fewer samples)."""
    if "lgc" not in methods:
        return {}
    start = time.perf_counter()
    scores: dict[str, float] = {}
    x, y = data
    n_params = sum(p.numel() for p in model.parameters())
    if len(x) * n_params > GRADIENT_BUDGET:
        _not_applicable(name, ["lgc"], f"{len(x)} samples x {n_params} parameters exceed the "
                        f"gradient budget of {GRADIENT_BUDGET:.0e} entries; pass fewer samples",
                        scores)
        return scores
    grads = per_sample_gradients(model, x.to(device), chunk_size=64)
    scores["lgc"] = float(lgc(grads.double().cpu().numpy(), y.reshape(-1).cpu().numpy()))
    if timings is not None:
        timings["lgc"] = timings.get("lgc", 0.0) + time.perf_counter() - start
    return scores


def normalized_ranks(scores: Mapping[str, float]) -> dict[str, float]:
    r"""Each candidate's rank by ``scores``, scaled to [0, 1] (1 = best, 0 = worst).

    q(c) = (R(c) - 1) / (N - 1), with R(c) in 1..N the ascending rank of the score of c among the
    N candidates (ties share their average rank, :func:`scipy.stats.rankdata`); non-finite
    scores are undefined and ranked below every finite score (tied with each other), as in
    :func:`~advtransfer.selection.results.evaluate_methods`. A single candidate gets q = 1."""
    names = list(scores)
    if not names:
        raise AdvTransferError("scores is empty; pass at least one candidate")
    if len(names) == 1:
        return {names[0]: 1.0}
    from scipy.stats import rankdata

    values = np.array([float(scores[c]) if _finite(scores[c]) else -np.inf for c in names])
    ranks = rankdata(values, method="average")
    return {c: float((r - 1.0) / (len(names) - 1)) for c, r in zip(names, ranks, strict=True)}


def rank_average(*method_scores: Mapping[str, float]) -> dict[str, float]:
    r"""Rank average (Borda count) of several methods' scores of the same candidates.

    s(c) = (1/M) sum_{m=1}^{M} q_m(c), with q_m the normalised rank of c by method m
    (:func:`normalized_ranks`: 1 = best, 0 = worst, ties averaged). Rank averaging is the
    standard scale-free way to combine scores whose units differ (alpha is a ratio in
    [0, ~1], LogME a log evidence per sample, LEEP a log likelihood); it has no weight, so
    nothing is fitted on any target. The combinations named in :data:`RANK_AVERAGE_METHODS`
    (e.g. ``alpha1_features_logme_rankavg``) are this function of their components."""
    if not method_scores:
        raise AdvTransferError("rank_average needs at least one method's scores")
    names = set(method_scores[0])
    if any(set(s) != names for s in method_scores[1:]):
        raise AdvTransferError("rank_average: every method must score the same candidates")
    qs = [normalized_ranks(s) for s in method_scores]
    return {c: float(np.mean([q[c] for q in qs])) for c in method_scores[0]}


def combine(method: str, scores: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """The pool-level score of a combined method (:data:`COMBINED_METHODS`) from its
    components' per-candidate ``scores[component][candidate]``: the rank average
    (:func:`rank_average`) or the pool-normalised NCTI / ETran of their raw parts
    (:func:`advtransfer.estimators.ncti.ncti`, :func:`advtransfer.estimators.etran.etran`). A
    candidate a part could not score (NaN) gets NaN and is left out of the others'
    normalisation."""
    parts = COMBINED_METHODS[method]
    if method in RANK_AVERAGE_METHODS:
        return rank_average(*(scores[c] for c in parts))
    names = list(scores[parts[0]])
    ok = [n for n in names if all(_finite(scores[c][n]) for c in parts)]
    _, make, pool = _POOLED[method]
    values = pool([make(*(scores[c][n] for c in parts)) for n in ok]) if ok else []
    out = dict.fromkeys(names, math.nan)
    out.update(zip(ok, map(float, values), strict=True))
    return out


def needs_reference(methods: Iterable[str]) -> bool:
    """Whether any of ``methods`` (directly or through a combination) is adversarial and so
    needs the reference model."""
    return any(m in ADVERSARIAL_METHODS for m in needed_methods(methods))


def _not_applicable(name: str, methods: Sequence[str], reason: str,
                    scores: dict[str, float]) -> None:
    """NaN for ``methods`` that cannot score candidate ``name`` at all, with a warning: the
    other methods and candidates go on (a NaN ranks below every finite score)."""
    warnings.warn(f"candidate {name!r}: {', '.join(methods)} cannot score it ({reason}); "
                  "NaN for it", UserWarning, stacklevel=3)
    scores.update(dict.fromkeys(methods, math.nan))
