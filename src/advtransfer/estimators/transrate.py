r"""TransRate: transferability as a coding-rate difference of features.

Reference: Long-Kai Huang, Junzhou Huang, Yu Rong, Qiang Yang, Ying Wei. *Frustratingly Easy
Transferability Estimation.* ICML 2022 (arXiv:2106.09362).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from advtransfer.errors import AdvTransferError
from advtransfer.estimators._validate import as_class_labels, as_features, check_n_samples

__all__ = ["transrate"]


def _coding_rate(z: np.ndarray, eps: float) -> float:
    r"""Return :math:`\tfrac12 \log\det(I_d + \tfrac{1}{n\,\epsilon} Z^\top Z)` for ``(n, d)`` Z.

    Uses the smaller of the two Gram matrices (:math:`\log\det(I_d + c Z^\top Z) =
    \log\det(I_n + c Z Z^\top)`, Sylvester's identity) and a Cholesky factorisation, which is
    stable because every eigenvalue of :math:`I + c G` is at least 1.
    """
    n, d = z.shape
    gram = z @ z.T if n < d else z.T @ z
    m = gram.shape[0]
    matrix = np.eye(m) + gram / (n * eps)
    chol = np.linalg.cholesky(matrix)
    return float(np.sum(np.log(np.diagonal(chol))))


def transrate(features: Any, labels: Any, *, eps: float = 1e-4) -> float:
    r"""TransRate of ``features`` for ``labels``: :math:`R(Z, \epsilon) - R(Z, \epsilon \mid Y)`.

    The paper defines the rate-distortion (coding rate) of :math:`n` features
    :math:`Z \in \mathbb{R}^{n \times d}` as
    :math:`R(Z, \epsilon) = \tfrac12 \log\det(I + \tfrac{d}{n\epsilon^2} Z^\top Z)`. Following the
    authors' reference implementation, ``eps`` here stands for the whole constant
    :math:`\epsilon^2 / d`, the features are centred by their overall mean, and the conditional
    rate is the plain average over the :math:`C` classes:

    .. math::

        R(Z, \epsilon) = \tfrac12 \log\det\Bigl(I_d + \tfrac{1}{n\,\epsilon} Z^\top Z\Bigr),
        \qquad
        R(Z, \epsilon \mid Y) = \frac{1}{C} \sum_{c=1}^{C} R(Z_c, \epsilon),

    .. math::

        \operatorname{TransRate}(Z, Y) = R(Z, \epsilon) - R(Z, \epsilon \mid Y),

    where :math:`Z_c` holds the :math:`n_c` (centred) features of class :math:`c` and
    :math:`R(Z_c, \epsilon)` uses :math:`n_c`. The paper weights the class rates by
    :math:`n_c / n` instead of :math:`1/C`; both agree for balanced classes. The score depends on
    the scale of the features relative to ``eps``.

    Parameters
    ----------
    features:
        ``(N, D)`` features of the target data (numpy or torch), ``N >= 2``.
    labels:
        ``(N,)`` target class labels of any values (at least 2 classes).
    eps:
        Distortion constant (positive, finite); ``1e-4`` as in the reference code.

    Returns
    -------
    float
        TransRate (higher is better).
    """
    if (
        isinstance(eps, bool)
        or not isinstance(eps, (int, float))
        or not (math.isfinite(eps) and eps > 0)
    ):
        raise AdvTransferError(f"eps must be a positive finite number; got {eps!r}")
    z = as_features(features, "features")
    codes, n_classes = as_class_labels(labels, "labels")
    check_n_samples(z.shape[0], "features", codes.shape[0], "labels")

    z = z - z.mean(axis=0)
    rate = _coding_rate(z, float(eps))
    conditional = sum(_coding_rate(z[codes == c], float(eps)) for c in range(n_classes))
    return float(rate - conditional / n_classes)
