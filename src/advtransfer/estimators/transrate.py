r"""TransRate: transferability as a coding-rate difference of features.

Reference: Long-Kai Huang, Junzhou Huang, Yu Rong, Qiang Yang, Ying Wei. *Frustratingly Easy
Transferability Estimation.* ICML 2022 (arXiv:2106.09362). Reference implementation: the
authors' repository Long-Kai/TransRate: ``generate_transrate/experiment_builder_get_eigens.py``
(features L2-normalised per sample, then centred), ``generate_transrate/transrate.py``
(``pre_transrate``: every centred sample divided by its L2 norm again, then the eigenvalues of
:math:`Z^\top Z / n` and of every class's :math:`Z_c^\top Z_c / n_c`) and
``extract_result_utils.py`` (``process_transrate_logs``: the rates from those eigenvalues,
``eps=1e-4`` by default).

Preprocessing differs between published codes: the authors' repository normalises every sample
to unit L2 norm (this module's default, ``preprocess="l2"``); a variant used by some benchmark
code reduces to 64 PCA dimensions, centres and scales the whole matrix to unit Frobenius norm
(``preprocess="frobenius"``, this library's default before). Both make the score independent of
the overall feature scale, which the bare coding rate is not (it compares the features with
``eps``).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np

from advtransfer.errors import AdvTransferError
from advtransfer.estimators._validate import features_and_labels

__all__ = ["PREPROCESSING", "transrate"]

#: The accepted ``preprocess`` values of :func:`transrate` (the first is the default).
PREPROCESSING = ("l2", "frobenius", "standardize", "center")

#: Lower bound on the norm in the first per-sample normalisation (the default of
#: ``torch.nn.functional.normalize``, which the authors' code calls).
_NORMALIZE_EPS = 1e-12


def _unit_rows(z: np.ndarray, floor: float) -> np.ndarray:
    """Every row divided by its L2 norm (by ``floor`` where the norm is smaller)."""
    norms = np.linalg.norm(z, axis=1, keepdims=True)
    return z / np.maximum(norms, floor)


def _preprocess(z: np.ndarray, how: str) -> np.ndarray:
    """Features preprocessed as ``how`` says (see :func:`transrate`)."""
    if how == "l2":
        # Authors' order: normalise every sample, centre, normalise every centred sample.
        z = _unit_rows(z, _NORMALIZE_EPS)
        z = z - z.mean(axis=0)
        norms = np.linalg.norm(z, axis=1, keepdims=True)
        return z / np.where(norms > 0, norms, 1.0)  # a sample equal to the mean stays 0
    z = z - z.mean(axis=0)
    if how == "standardize":
        sd = z.std(axis=0)
        return z / np.where(sd > 0, sd, 1.0)
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
              preprocess: Literal["l2", "frobenius", "standardize", "center"] = "l2",
              ) -> float:
    r"""TransRate of ``features`` for ``labels``: :math:`R(Z, \epsilon) - R(Z, \epsilon \mid Y)`.

    The paper defines the rate-distortion (coding rate) of :math:`n` features
    :math:`Z \in \mathbb{R}^{n \times d}` as
    :math:`R(Z, \epsilon) = \tfrac12 \log\det(I + \tfrac{d}{n\epsilon^2} Z^\top Z)`. As in the
    authors' code, ``eps`` here stands for the whole constant :math:`\epsilon^2 / d` (their
    ``eps``, "the value of eps^2", enters as :math:`\log(1 + \lambda / \text{eps})` for the
    eigenvalues :math:`\lambda` of :math:`Z^\top Z / n`), and

    .. math::

        R(Z, \epsilon) = \tfrac12 \log\det\Bigl(I_d + \tfrac{1}{n\,\epsilon} Z^\top Z\Bigr),
        \qquad
        R(Z, \epsilon \mid Y) = \frac{1}{C} \sum_{c=1}^{C} R(Z_c, \epsilon),

    .. math::

        \operatorname{TransRate}(Z, Y) = R(Z, \epsilon) - R(Z, \epsilon \mid Y),

    where :math:`Z_c` holds the :math:`n_c` preprocessed features of class :math:`c` (taken
    from the preprocessed :math:`Z`, not re-centred) and :math:`R(Z_c, \epsilon)` uses
    :math:`n_c`. The class rates are averaged with weight :math:`1/C` as in the code listing of
    the paper's appendix A.7; the paper's equation and the repository's
    ``process_transrate_logs`` weight them by :math:`n_c / n` instead. Both agree for balanced
    classes. ``process_transrate_logs`` by default also divides both rates by the rank of
    :math:`Z^\top Z / n` (``normalize_opt='rank'``), which is not done here, and its
    ``normalize_eigz=True`` (dividing the eigenvalues by their sum) changes nothing after the
    ``"l2"`` preprocessing, whose eigenvalues already sum to 1 (when no sample equals the mean).

    The score depends on the scale of the features relative to ``eps``, so the features are first
    preprocessed:

    * ``"l2"`` (default, the authors' code): every sample divided by its L2 norm (norms below
      ``1e-12`` replaced by ``1e-12``, as ``torch.nn.functional.normalize`` does), the result
      centred by its overall mean, and every centred sample divided by its L2 norm again
      (a sample equal to the mean stays 0, where the reference code would divide by 0).
      Invariant to the scale of every single sample and to any rotation of the feature space,
      not to translation (the first normalisation comes before the centring);
    * ``"frobenius"`` (this library's default before): centred, then the matrix divided by its
      Frobenius norm, :math:`Z / \sqrt{\operatorname{tr}(Z Z^\top)}`, as in a variant used by
      some benchmark code (which also reduces to 64 PCA dimensions first and weights the class
      rates by :math:`n_c / n`; apply such a reduction beforehand if wanted). Invariant to the
      overall scale and translation of the features and to rotation: 16 informative dimensions
      multiplied by 1e-3 moved the centred-only score from 1.33 to 0.0037, this one not at all;
    * ``"standardize"``: centred and divided by each dimension's standard deviation (constant
      dimensions stay 0): invariant to rescaling any single feature, but it also blows rarely
      active ReLU units up to unit variance, and on the digits test pool it ranked three
      random MLPs (TransRate 19.5-24.0) above the target-trained one (18.5), which the
      Frobenius scaling ranks first (0.92 against 0.63-0.76);
    * ``"center"``: centred only (scale-dependent), as the code listing of the paper's
      appendix A.7.

    The authors' repository also has a second pipeline that projects the features onto the
    directions of the class means (``pre_transrate_low_dim_proj``, used for several of their
    experiments); it is not implemented here.

    Parameters
    ----------
    features:
        ``(N, D)`` features of the target data (numpy or torch), ``N >= 2``.
    labels:
        ``(N,)`` target class labels of any values (at least 2 classes).
    eps:
        Distortion constant (positive, finite); ``1e-4`` as in the reference code.
    preprocess:
        One of :data:`PREPROCESSING`: ``"l2"`` (default), ``"frobenius"``, ``"standardize"``,
        ``"center"`` (see above).

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
    z, codes, n_classes = features_and_labels(features, labels)

    z = _preprocess(z, preprocess)
    rate = _coding_rate(z, float(eps))
    conditional = sum(_coding_rate(z[codes == c], float(eps)) for c in range(n_classes))
    return float(rate - conditional / n_classes)
