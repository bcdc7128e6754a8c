r"""GBC: Gaussian Bhattacharyya Coefficient class separability.

Reference: Michal Pándy, Andrea Agostinelli, Jasper Uijlings, Vittorio Ferrari, Thomas Mensink.
*Transferability Estimation using Bhattacharyya Class Separability.* CVPR 2022
(arXiv:2111.12780).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from advtransfer.estimators._validate import as_class_labels, as_features, check_n_samples

__all__ = ["gbc"]

#: Lower bound on every per-class, per-dimension variance (the reference code's value).
VARIANCE_FLOOR = 1e-4


def gbc(features: Any, labels: Any) -> float:
    r"""Gaussian Bhattacharyya Coefficient of the target classes in feature space.

    Every class :math:`c` is modelled as a diagonal Gaussian
    :math:`\mathcal{N}(\mu_c, \operatorname{diag}(\sigma_c^2))` with the class mean and the
    (population) per-dimension variance, floored at ``1e-4`` so that constant dimensions and
    single-sample classes stay finite. For two classes, with
    :math:`\bar\sigma^2 = (\sigma_i^2 + \sigma_j^2) / 2`, the Bhattacharyya distance is

    .. math::

        D_B(i, j) = \frac18 \sum_d \frac{(\mu_{i,d} - \mu_{j,d})^2}{\bar\sigma^2_d}
            + \frac12 \sum_d \log \frac{\bar\sigma^2_d}{\sqrt{\sigma^2_{i,d}\,\sigma^2_{j,d}}},

    the coefficient is :math:`BC(i, j) = e^{-D_B(i, j)} \in (0, 1]`, and

    .. math::

        \operatorname{GBC} = -\sum_{i=1}^{C} \sum_{j \ne i} BC(i, j)
            \in [-C(C-1), 0].

    It is near 0 when the classes are well separated and near :math:`-C(C-1)` when their
    distributions coincide. The paper first reduces the features to 64 dimensions with PCA;
    this function uses the features as given, so apply any such reduction beforehand.

    Parameters
    ----------
    features:
        ``(N, D)`` features of the target data (numpy or torch), ``N >= 2``.
    labels:
        ``(N,)`` target class labels of any values (at least 2 classes).

    Returns
    -------
    float
        GBC (higher, i.e. closer to 0, is better).
    """
    f = as_features(features, "features")
    codes, n_classes = as_class_labels(labels, "labels")
    check_n_samples(f.shape[0], "features", codes.shape[0], "labels")

    counts = np.bincount(codes, minlength=n_classes).astype(np.float64)[:, None]
    sums = np.zeros((n_classes, f.shape[1]), dtype=np.float64)
    np.add.at(sums, codes, f)
    means = sums / counts
    sq = np.zeros_like(sums)
    np.add.at(sq, codes, (f - means[codes]) ** 2)
    variances = np.maximum(sq / counts, VARIANCE_FLOOR)
    log_var = np.log(variances)

    total = 0.0
    for i in range(n_classes):
        avg = 0.5 * (variances[i] + variances)  # (C, D), row j: average of classes i and j
        mahalanobis = np.sum((means[i] - means) ** 2 / avg, axis=1) / 8.0
        log_term = 0.5 * np.sum(np.log(avg) - 0.5 * (log_var[i] + log_var), axis=1)
        bc = np.exp(-(mahalanobis + log_term))
        bc[i] = 0.0
        total += float(bc.sum())
    return -total
