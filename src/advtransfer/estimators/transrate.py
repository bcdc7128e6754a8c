r"""TransRate: transferability as a coding-rate difference of features.

Reference: Long-Kai Huang, Junzhou Huang, Yu Rong, Qiang Yang, Ying Wei. *Frustratingly Easy
Transferability Estimation.* ICML 2022 (arXiv:2106.09362).

Preprocessing differs between the published codes: the authors' repository (Long-Kai/TransRate,
``generate_transrate/transrate.py``) divides every (centred) feature vector by its L2 norm; the
benchmark code of liu-dian/transferability_metric reduces to 64 PCA dimensions, centres and
scales the whole matrix to unit Frobenius norm. Both make the score independent of the overall
feature scale, which the bare coding rate is not (it compares the features with ``eps``).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np

from advtransfer.errors import AdvTransferError
from advtransfer.estimators._validate import as_class_labels, as_features, check_n_samples

__all__ = ["PREPROCESSING", "transrate"]

#: The accepted ``preprocess`` values of :func:`transrate`.
PREPROCESSING = ("frobenius", "standardize", "l2", "center")


def _preprocess(z: np.ndarray, how: str) -> np.ndarray:
    """Centred features, then scaled as ``how`` says (see :func:`transrate`)."""
    z = z - z.mean(axis=0)
    if how == "standardize":
        sd = z.std(axis=0)
        return z / np.where(sd > 0, sd, 1.0)
    if how == "l2":
        norms = np.linalg.norm(z, axis=1, keepdims=True)
        return z / np.where(norms > 0, norms, 1.0)
    if how == "frobenius":
        total = np.linalg.norm(z)
        return z / total if total > 0 else z
    return z


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


def transrate(features: Any, labels: Any, *, eps: float = 1e-4,
              preprocess: Literal["frobenius", "standardize", "l2", "center"] = "frobenius",
              ) -> float:
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
    the scale of the features relative to ``eps``, so the features are first preprocessed:

    * ``"frobenius"`` (default): centred, then the matrix divided by its Frobenius norm,
      :math:`Z / \sqrt{\operatorname{tr}(Z Z^\top)}`, as the field's benchmark code does
      (liu-dian/transferability_metric, which also reduces to 64 PCA dimensions first; apply
      such a reduction beforehand if wanted). The score no longer depends on the overall
      feature scale: 16 informative dimensions multiplied by 1e-3 moved the centred-only score
      from 1.33 to 0.0037;
    * ``"standardize"``: centred and divided by each dimension's standard deviation (constant
      dimensions stay 0): invariant to rescaling any single feature, but it also blows rarely
      active ReLU units up to unit variance, and on the digits test pool it ranked three
      random MLPs (TransRate 19.5-24.0) above the target-trained one (18.5), which the
      Frobenius scaling ranks first (0.92 against 0.63-0.76);
    * ``"l2"``: centred, then every sample divided by its L2 norm (the authors' code);
    * ``"center"``: centred only (this library's behaviour before; scale-dependent).

    Parameters
    ----------
    features:
        ``(N, D)`` features of the target data (numpy or torch), ``N >= 2``.
    labels:
        ``(N,)`` target class labels of any values (at least 2 classes).
    eps:
        Distortion constant (positive, finite); ``1e-4`` as in the reference code.
    preprocess:
        One of :data:`PREPROCESSING` (see above).

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
    if preprocess not in PREPROCESSING:
        raise AdvTransferError(f"preprocess must be one of {list(PREPROCESSING)}; got "
                               f"{preprocess!r}")
    z = as_features(features, "features")
    codes, n_classes = as_class_labels(labels, "labels")
    check_n_samples(z.shape[0], "features", codes.shape[0], "labels")

    z = _preprocess(z, preprocess)
    rate = _coding_rate(z, float(eps))
    conditional = sum(_coding_rate(z[codes == c], float(eps)) for c in range(n_classes))
    return float(rate - conditional / n_classes)
