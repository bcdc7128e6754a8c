r"""H-score and its shrinkage-regularised variant.

References:

* Yajie Bao, Yang Li, Shao-Lun Huang, Lin Zhang, Lizhong Zheng, Amir Zamir, Leonidas Guibas.
  *An Information-Theoretic Approach to Transferability in Task Transfer Learning.* ICIP 2019.
* Shibal Ibrahim, Natalia Ponomareva, Rahul Mazumder. *Newer is not always better: Rethinking
  transferability metrics, their peculiarities, stability and performance.* ECML-PKDD 2022
  (arXiv:2110.06893).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from advtransfer.estimators._validate import features_and_labels

__all__ = ["hscore", "regularized_hscore"]




def _between_class_scatter(f: np.ndarray, codes: np.ndarray, n_classes: int) -> np.ndarray:
    r"""Return :math:`\sum_c n_c (\mu_c - \mu)(\mu_c - \mu)^\top`, i.e. ``N cov(E[f|y])``."""
    counts = np.bincount(codes, minlength=n_classes).astype(np.float64)
    sums = np.zeros((n_classes, f.shape[1]), dtype=np.float64)
    np.add.at(sums, codes, f)
    centred_means = sums / counts[:, None] - f.mean(axis=0)
    return centred_means.T @ (counts[:, None] * centred_means)


def _trace_pinv_product(cov: np.ndarray, other: np.ndarray, n: int) -> float:
    r"""Return :math:`\operatorname{tr}(\mathrm{cov}^{+}\,\mathrm{other})`, ``cov`` symmetric PSD.

    The pseudo-inverse drops eigenvalues below ``max(N, D) * machine-eps * largest eigenvalue``
    (the rank tolerance of :func:`numpy.linalg.matrix_rank`), so exactly collinear features are
    ignored instead of being amplified by round-off.
    """
    evals, evecs = np.linalg.eigh(cov)
    top = float(evals[-1]) if evals.size else 0.0
    if top <= 0:
        return 0.0
    keep = evals > top * max(n, cov.shape[0]) * np.finfo(np.float64).eps
    v = evecs[:, keep]
    projected = np.sum(v * (other @ v), axis=0)  # v_j^T other v_j for every kept j
    return float(np.sum(projected / evals[keep]))


def hscore(features: Any, labels: Any) -> float:
    r"""H-score of ``features`` for predicting ``labels`` (Bao et al., ICIP 2019).

    .. math::

        \mathcal{H}(f) = \operatorname{tr}\bigl(\operatorname{cov}(f)^{+}\,
            \operatorname{cov}(\mathbb{E}[f \mid y])\bigr),

    where :math:`\operatorname{cov}(f)` is the covariance of the ``(N, D)`` features,
    :math:`\mathbb{E}[f \mid y]` replaces every sample's feature vector by the mean of its class
    (so its covariance is the sample-weighted between-class covariance
    :math:`\frac1N \sum_c n_c (\mu_c - \mu)(\mu_c - \mu)^\top`) and :math:`^{+}` is the
    Moore-Penrose pseudo-inverse. Both covariances use the same normalisation, which cancels.
    The score is invariant to invertible linear maps of the features, lies in
    :math:`[0, \min(D, C - 1)]`, and is about :math:`D (C - 1) / N` for features independent of
    the labels.

    Parameters
    ----------
    features:
        ``(N, D)`` features of the target data (numpy or torch), ``N >= 2``.
    labels:
        ``(N,)`` target class labels of any values (at least 2 classes).

    Returns
    -------
    float
        H-score (higher is better).
    """
    f, codes, n_classes = features_and_labels(features, labels)
    n = f.shape[0]
    centred = f - f.mean(axis=0)
    cov_f = centred.T @ centred / n
    cov_g = _between_class_scatter(f, codes, n_classes) / n
    return _trace_pinv_product(cov_f, cov_g, n)


def regularized_hscore(features: Any, labels: Any) -> float:
    r"""Shrinkage-regularised H-score :math:`\mathcal{H}_\alpha` (Ibrahim et al., 2022).

    The empirical feature covariance is replaced by the Ledoit-Wolf estimate
    (:class:`sklearn.covariance.LedoitWolf`)

    .. math::

        \operatorname{cov}_\alpha(f) = (1 - \alpha)\operatorname{cov}(f) + \alpha\,
            \frac{\operatorname{tr}\operatorname{cov}(f)}{D} I_D,

    with the data-driven shrinkage :math:`\alpha \in [0, 1]`, and, following the paper, the
    same factor :math:`(1 - \alpha)` is applied to the between-class covariance:

    .. math::

        \mathcal{H}_\alpha(f) = \operatorname{tr}\bigl(\operatorname{cov}_\alpha(f)^{-1}
            (1 - \alpha)\operatorname{cov}(\mathbb{E}[f \mid y])\bigr).

    With :math:`\alpha = 0` this is :func:`hscore`. Both covariances are normalised by
    :math:`N` (Ledoit-Wolf's convention); the authors' code divides the between-class term by
    :math:`N - 1` instead, which scales the score by :math:`N / (N - 1)`. A pseudo-inverse is
    used so that all-constant features give 0 rather than an error.

    Parameters
    ----------
    features:
        ``(N, D)`` features of the target data (numpy or torch), ``N >= 2``.
    labels:
        ``(N,)`` target class labels of any values (at least 2 classes).

    Returns
    -------
    float
        Regularised H-score (higher is better).
    """
    from sklearn.covariance import LedoitWolf

    f, codes, n_classes = features_and_labels(features, labels)
    n = f.shape[0]
    estimator = LedoitWolf(assume_centered=False).fit(f)
    alpha = float(estimator.shrinkage_)
    cov_alpha = np.asarray(estimator.covariance_, dtype=np.float64)
    cov_g = _between_class_scatter(f, codes, n_classes) / n
    return _trace_pinv_product(cov_alpha, (1.0 - alpha) * cov_g, n)
