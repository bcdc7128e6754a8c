r"""ETran: energy-based transferability estimation (classification part).

Reference: Mohsen Gholami, Mohammad Akbari, Xinglu Wang, Behnam Kamranian, Yong Zhang. *ETran:
Energy-Based Transferability Estimation.* ICCV 2023 (arXiv:2308.02027). Reference
implementation: mgholamikn/ETran, ``metrics.py`` (``Energy_Score``, ``LDA_Score`` with class
``LDA``; the SVD least-squares ``LDA._solve_eigen2``), ``evaluate_metric.py`` (the energy score is
called as ``Energy_Score(features, 0.5, 'bot')``) and ``tw.py`` (the pool combination: every
score min-max scaled over the candidate models, then ``0.15 * energy + 0.85 * lda``).

ETran is a *pool* score: the parts of one model mean nothing on their own scale, they are
rescaled over all candidate models before being added. Hence two functions:
:func:`etran_parts` computes the raw terms of one model (:class:`ETranParts`), :func:`etran`
combines the parts of a whole pool.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy.special import logsumexp, softmax

from advtransfer.errors import AdvTransferError
from advtransfer.estimators._validate import features_and_labels

__all__ = ["DEFAULT_WEIGHTS", "ETranParts", "etran", "etran_parts"]

#: Weights of (energy, lda, svd) in the published classification combination (``tw.py``).
DEFAULT_WEIGHTS: tuple[float, float, float] = (0.15, 0.85, 0.0)
#: Fraction of samples whose energy is averaged: ``Energy_Score(features, 0.5, 'bot')`` keeps
#: ``int(0.5 * 10) * N // 1000`` samples, i.e. the lowest 0.5 %.
ENERGY_FRACTION = 0.005


@dataclass(frozen=True)
class ETranParts:
    """Raw (un-normalised) ETran terms of one candidate model; see :func:`etran_parts`.

    Attributes
    ----------
    energy:
        Energy score :math:`S_{en}` (mean log-sum-exp of the features over the selected samples).
    lda:
        LDA-based classification score :math:`S_{cls} \\in (0, 1]` (mean probability of the
        true class).
    svd:
        SVD-based least-squares score :math:`S_{svd} \\le 0` (minus the mean squared residual
        of the one-hot labels regressed on the features).
    """

    energy: float
    lda: float
    svd: float


def _check_fraction(value: Any, name: str) -> float:
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not (math.isfinite(value) and 0 < value <= 1)):
        raise AdvTransferError(f"{name} must be a number in (0, 1]; got {value!r}")
    return float(value)


def _energy_part(f: np.ndarray, fraction: float) -> float:
    """Mean log-sum-exp of the features over the ``fraction`` of samples with the lowest value."""
    scores = logsumexp(f, axis=1)
    n = scores.shape[0]
    # round() guards against 0.005 * N landing just below an integer (the code uses 5 * N // 1000).
    count = max(1, int(math.floor(round(fraction * n, 9))))
    lowest = np.sort(scores)[:count]
    return float(lowest.mean())


def _lda_part(f: np.ndarray, codes: np.ndarray, n_classes: int,
              lda: Literal["euclidean", "shrunk"]) -> float:
    """Mean posterior of the true class under a Gaussian shared-covariance classifier."""
    n, d = f.shape
    counts = np.bincount(codes, minlength=n_classes).astype(np.float64)
    priors = counts / n
    means = np.zeros((n_classes, d))
    np.add.at(means, codes, f)
    means /= counts[:, None]
    if lda == "euclidean":
        precision_means = means
    else:
        within = np.zeros((d, d))
        for c in range(n_classes):
            centred = f[codes == c] - means[c]
            within += priors[c] * (centred.T @ centred) / counts[c]
        largest = float(np.linalg.eigvalsh(within)[-1])
        shrinkage = max(math.exp(-5.0 * largest), 1e-10)
        shrunk = (1.0 - shrinkage) * within
        shrunk[np.diag_indices(d)] += shrinkage * np.trace(within) / d
        precision_means = np.linalg.solve(shrunk, means.T).T  # rows: Sigma^{-1} mu_c
    logits = f @ precision_means.T - 0.5 * np.sum(means * precision_means, axis=1) + np.log(priors)
    probs = softmax(logits, axis=1)
    return float(probs[np.arange(n), codes].mean())


def _svd_part(f: np.ndarray, codes: np.ndarray, n_classes: int, energy: float) -> float:
    """Minus the mean squared residual of the one-hot labels projected on the top singular space."""
    n = f.shape[0]
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    tol = s[0] * max(f.shape) * np.finfo(np.float64).eps if s.size else 0.0
    rank = int(np.count_nonzero(s > tol))
    if energy < 1.0 and rank > 0:
        cumulative = np.cumsum(s[:rank] ** 2) / np.sum(s[:rank] ** 2)
        rank = min(rank, int(np.searchsorted(cumulative, energy * (1 - 1e-12))) + 1)
    onehot = np.zeros((n, n_classes))
    onehot[np.arange(n), codes] = 1.0
    basis = u[:, :rank]
    residual = onehot - basis @ (basis.T @ onehot)
    return -float(np.mean(residual**2))


def etran_parts(features: Any, labels: Any, *, energy_fraction: float = ENERGY_FRACTION,
                lda: Literal["euclidean", "shrunk"] = "euclidean",
                svd_energy: float = 1.0) -> ETranParts:
    r"""Raw ETran terms (energy, LDA and SVD scores) of one model's target features.

    With :math:`f_n \in \mathbb{R}^D` the features of target sample :math:`n` (penultimate
    layer, as the published code uses them; no projection and no dimension reduction) and
    :math:`y_n` its label:

    **Energy score.** The free energy of the features read as logits is
    :math:`E(f) = -\log \sum_{d} e^{f_d}`; the score averages :math:`-E` over a set
    :math:`\mathcal{S}` of samples:

    .. math::

        S_{en} = \frac{1}{|\mathcal{S}|} \sum_{n \in \mathcal{S}} \log \sum_{d=1}^{D}
            e^{f_{n,d}}.

    The published code (``Energy_Score(features, 0.5, 'bot')``) takes for :math:`\mathcal{S}`
    the :math:`\lfloor 0.005\,N \rfloor` samples with the *lowest* log-sum-exp (the bottom
    0.5 %), which is the default ``energy_fraction=0.005`` (at least one sample is kept; the code
    averages an empty set, NaN, when :math:`N < 200`). ``energy_fraction=1.0`` averages over all
    samples, the paper's plain mean over the target set.

    **LDA-based classification score.** With class means :math:`\mu_c`, priors
    :math:`\pi_c = N_c / N` and a shared covariance :math:`\Sigma`, the discriminant is
    :math:`\delta_c(f) = f^\top \Sigma^{-1} \mu_c - \tfrac12 \mu_c^\top \Sigma^{-1} \mu_c +
    \log \pi_c` and

    .. math::

        S_{cls} = \frac{1}{N} \sum_{n=1}^{N}
            \frac{e^{\delta_{y_n}(f_n)}}{\sum_{c} e^{\delta_c(f_n)}}.

    The paper describes an LDA classifier; the published ``LDA`` class computes a shrunk
    within-class scatter and its Fisher eigenvectors, but then keeps *all* of them (an
    orthonormal basis :math:`V`, so its ``coef_ = means @ V @ V.T`` equals the class means):
    its classifier is :math:`\Sigma = I`, a nearest-class-mean rule in Euclidean distance. That
    is the default ``lda="euclidean"``. ``lda="shrunk"`` uses the textbook LDA discriminant with
    the code's shrunk within-class covariance :math:`\Sigma = (1 - s) S_w + s
    \tfrac{\operatorname{tr} S_w}{D} I`, :math:`S_w = \sum_c \pi_c \operatorname{Cov}_c`
    (biased), :math:`s = \max(e^{-5 \lambda_{\max}(S_w)}, 10^{-10})` (the code approximates
    :math:`\lambda_{\max}` by three power iterations; here it is exact).

    **SVD-based score.** The paper's regression score fits the targets by least squares through
    the SVD :math:`F = U S V^\top` of the (uncentred) feature matrix,
    :math:`\hat x = V S^{-1} U^\top Y`, and scores :math:`-\tfrac{1}{N C}\|F \hat x - Y\|_F^2`.
    For classification :math:`Y` is the one-hot label matrix (so that the score does not depend
    on the label values), and :math:`U` keeps the numerically non-zero singular values
    (``svd_energy=1.0``, the pseudo-inverse of the code's ``_solve_eigen2``) or the fewest
    leading ones whose squared sum reaches ``svd_energy`` of the total (``0.8`` in some
    third-party ports). The published classification pipeline does not use this term (its
    weight in :data:`DEFAULT_WEIGHTS` is 0); with :math:`N \le D` and generic features it is 0
    for every model.

    Invariances: the LDA term (both variants) does not change under rotations and translations
    of the features, the SVD term under rotations; the energy term changes under both, as in the
    paper. All terms are invariant to sample order and to renaming the labels.

    Parameters
    ----------
    features:
        ``(N, D)`` features of the target data (numpy or torch), ``N >= 2``.
    labels:
        ``(N,)`` target class labels of any values (at least 2 classes).
    energy_fraction:
        Fraction of samples, those with the lowest log-sum-exp, that the energy score averages;
        a number in (0, 1]. Default 0.005 (the published code); 1.0 for all samples.
    lda:
        ``"euclidean"`` (default, what the published code computes) or ``"shrunk"``.
    svd_energy:
        Fraction of the squared singular values kept by the SVD score, in (0, 1]; default 1.0
        (all numerically non-zero ones).

    Returns
    -------
    ETranParts
        The three raw terms; combine the parts of all candidate models with :func:`etran`.
    """
    energy_fraction = _check_fraction(energy_fraction, "energy_fraction")
    svd_energy = _check_fraction(svd_energy, "svd_energy")
    if lda not in ("euclidean", "shrunk"):
        raise AdvTransferError(f"lda must be 'euclidean' or 'shrunk'; got {lda!r}")
    f, codes, n_classes = features_and_labels(features, labels)
    return ETranParts(
        energy=_energy_part(f, energy_fraction),
        lda=_lda_part(f, codes, n_classes, lda),
        svd=_svd_part(f, codes, n_classes, svd_energy),
    )


def _min_max(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    if not high > low:
        return np.zeros_like(values)
    return (values - low) / (high - low)


def etran(parts: Sequence[ETranParts], *,
          weights: tuple[float, float, float] = DEFAULT_WEIGHTS) -> list[float]:
    r"""ETran scores of a pool of candidate models from their raw parts.

    **The score of a model depends on the whole pool**: each raw term is min-max scaled over the
    candidate models, :math:`\hat S_m = (S_m - \min_k S_k) / (\max_k S_k - \min_k S_k)`, as the
    published ``tw.py`` does, and

    .. math::

        T_m = w_{en} \hat S_{en,m} + w_{cls} \hat S_{cls,m} + w_{svd} \hat S_{svd,m}.

    Adding or removing a candidate can change every other candidate's score (not only the
    ranking's length), and scores of different pools are not comparable. The published
    classification combination is :math:`0.15\,\hat S_{en} + 0.85\,\hat S_{cls}` (the default
    ``weights=(0.15, 0.85, 0.0)``); the paper adds its scores with equal weights
    (``weights=(1, 1, 1)``; the regression term there is for detection boxes).

    A term that is the same for every candidate (in particular, a pool of one model) carries no
    ranking information; where the code would divide by zero, it contributes 0 here, so a pool
    of one gets ``[0.0]``.

    Parameters
    ----------
    parts:
        Non-empty sequence of :class:`ETranParts`, one per candidate model (from
        :func:`etran_parts`, computed on the same target data).
    weights:
        Three finite non-negative weights (energy, lda, svd), not all zero.

    Returns
    -------
    list[float]
        One score per candidate, in the order given, in :math:`[0, \sum w]` (higher is better).
    """
    if isinstance(parts, ETranParts) or not isinstance(parts, Sequence) or len(parts) == 0:
        raise AdvTransferError(
            "parts must be a non-empty sequence of ETranParts (one per candidate model); "
            f"got {type(parts).__name__}"
        )
    for i, p in enumerate(parts):
        if not isinstance(p, ETranParts):
            raise AdvTransferError(
                f"parts must hold ETranParts (from etran_parts); item {i} is {type(p).__name__}"
            )
    try:
        w = [float(x) for x in weights]
    except (TypeError, ValueError) as exc:
        raise AdvTransferError(
            f"weights must be three finite non-negative numbers; got {weights!r}"
        ) from exc
    if (len(w) != 3 or any(isinstance(x, bool) for x in weights)
            or not all(math.isfinite(x) and x >= 0 for x in w) or sum(w) == 0):
        raise AdvTransferError(
            "weights must be three finite non-negative numbers (energy, lda, svd), not all zero; "
            f"got {weights!r}"
        )
    table = np.array([[p.energy, p.lda, p.svd] for p in parts], dtype=np.float64)
    if not np.all(np.isfinite(table)):
        raise AdvTransferError("parts must hold finite values; found NaN or infinite terms")
    scaled = np.column_stack([_min_max(table[:, j]) for j in range(3)])
    return [float(v) for v in scaled @ np.asarray(w)]
