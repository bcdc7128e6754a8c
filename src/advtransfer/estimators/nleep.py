r"""NLEEP: LEEP on the posteriors of a Gaussian mixture fitted to the target features.

Reference: Yandong Li, Xuhui Jia, Ruoxin Sang, Yukun Zhu, Bradley Green, Liqiang Wang, Boqing
Gong. *Ranking Neural Checkpoints.* CVPR 2021 (arXiv:2011.11200). Reference implementation (the
one the field's benchmarks use): TencentARC/SFDA, ``metrics.py``, function ``NLEEP`` (copied
unchanged into lixiaotong97/PED, ``metrics.py``).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from advtransfer.errors import AdvTransferError
from advtransfer.estimators._validate import features_and_labels
from advtransfer.estimators.leep import leep

__all__ = ["nleep"]

#: Fraction of the variance kept by the PCA step (the reference code's ``PCA(n_components=0.8)``).
VARIANCE = 0.8
#: Gaussian components per target class (the reference code's ``component_ratio=5``).
COMPONENTS_PER_CLASS = 5


def nleep(features: Any, labels: Any, *, variance: float | None = VARIANCE,
          components_per_class: int = COMPONENTS_PER_CLASS, seed: int = 0,
          form: Literal["code", "paper"] = "code") -> float:
    r"""NLEEP score of the target features: LEEP with a Gaussian mixture as the source "head".

    The features are reduced by PCA to the fewest leading principal components that explain
    more than ``variance`` of their total variance (scikit-learn's
    ``PCA(n_components=variance)``, exact SVD). A Gaussian mixture with
    :math:`V = \text{components\_per\_class} \cdot C` components and full covariances is fitted
    to the reduced features :math:`\tilde f_i` (scikit-learn's ``GaussianMixture`` with its
    defaults: k-means initialisation, one initialisation, ``reg_covar=1e-6``, ``tol=1e-3``,
    at most 100 EM steps). Its posteriors :math:`\theta(x_i)_v = p(v \mid \tilde f_i)` play the
    role of the source-class probabilities of LEEP:

    .. math::

        \hat P(y, v) = \frac{1}{N} \sum_{i : y_i = y} \theta(x_i)_v, \qquad
        \hat P(y \mid v) = \frac{\hat P(y, v)}{\sum_{y'} \hat P(y', v)}, \qquad
        p_i = \sum_{v} \hat P(y_i \mid v)\, \theta(x_i)_v .

    The paper defines NLEEP, like LEEP, as the mean log-likelihood of this "expected empirical
    predictor",

    .. math::

        \mathcal{N}\mathrm{LEEP} = \frac{1}{N} \sum_{i=1}^{N} \log p_i \;\in (-\infty, 0],

    while the reference code returns the mean probability :math:`\frac{1}{N}\sum_i p_i \in
    (0, 1]` (no logarithm). ``form="code"`` (default) follows the code; ``form="paper"`` returns
    the mean log-probability (computed by :func:`advtransfer.estimators.leep.leep` on the
    posteriors). Both are increasing in every :math:`p_i` but can rank models differently.

    Differences from the reference code: the mixture is seeded (``seed`` is passed as
    ``random_state``; the reference leaves it unseeded, so its score varies from run to run),
    the PCA uses the exact ``svd_solver="full"`` (the reference's ``"auto"`` also picks an exact
    solver for a variance fraction; the scores agree up to rounding), and a mixture component
    that receives no posterior mass contributes nothing instead of a division by zero.
    ``variance=None`` skips the PCA step (not in the reference).

    Invariances: the score does not depend on the values of the labels. It is invariant to
    rotations and translations of the features and to the order of the samples only up to the
    mixture's k-means initialisation (which draws samples by index with the given seed), i.e.
    exactly when EM reaches the same optimum, as it does for well-separated data.

    Parameters
    ----------
    features:
        ``(N, D)`` features of the target data (numpy or torch), not all constant.
    labels:
        ``(N,)`` target class labels of any values (at least 2 classes).
    variance:
        Fraction of the variance kept by PCA, a float with ``0 < variance < 1``, or ``None`` for
        no PCA.
    components_per_class:
        Number of mixture components per target class, a positive integer;
        ``components_per_class * n_classes`` must not exceed ``N``.
    seed:
        Seed of the mixture's initialisation, a non-negative integer below ``2**32``.
    form:
        ``"code"`` (mean probability, default) or ``"paper"`` (mean log-probability).

    Returns
    -------
    float
        NLEEP (higher is better): in ``(0, 1]`` for ``form="code"``, at most 0 for
        ``form="paper"``.
    """
    if variance is not None and (
        isinstance(variance, bool) or not isinstance(variance, (int, float))
        or not 0.0 < float(variance) < 1.0
    ):
        raise AdvTransferError(
            f"variance must be a float with 0 < variance < 1, or None; got {variance!r}"
        )
    if (isinstance(components_per_class, bool) or not isinstance(components_per_class, int)
            or components_per_class < 1):
        raise AdvTransferError(
            f"components_per_class must be a positive integer; got {components_per_class!r}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise AdvTransferError(
            f"seed must be an integer with 0 <= seed < 2**32; got {seed!r}"
        )
    if form not in ("code", "paper"):
        raise AdvTransferError(f"form must be 'code' or 'paper'; got {form!r}")
    f, codes, n_classes = features_and_labels(features, labels)
    n = f.shape[0]
    n_components = components_per_class * n_classes
    if n_components > n:
        raise AdvTransferError(
            "components_per_class * n_classes (the number of mixture components) must not "
            f"exceed the number of samples; got {components_per_class} * {n_classes} = "
            f"{n_components} > {n}"
        )
    if not np.any(np.ptp(f, axis=0) > 0):
        raise AdvTransferError(
            "features must not be constant: every feature has the same value in all samples"
        )

    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture

    if variance is not None:
        pca = PCA(n_components=float(variance), svd_solver="full").fit(f)
        f = pca.transform(f)
    gmm = GaussianMixture(
        n_components=n_components, covariance_type="full", random_state=seed
    ).fit(f)
    posteriors = gmm.predict_proba(f)  # theta(x_i)_v, shape (N, V)

    if form == "paper":
        return leep(posteriors, codes)
    return float(np.mean(_expected_empirical_prediction(posteriors, codes, n_classes)))


def _expected_empirical_prediction(posteriors: np.ndarray, codes: np.ndarray,
                                   n_classes: int) -> np.ndarray:
    r""":math:`p_i = \sum_v \hat P(y_i \mid v)\, \theta(x_i)_v` for every sample (LEEP's
    expected empirical predictor evaluated at the true label); a column :math:`v` with
    :math:`\hat P(v) = 0` contributes nothing."""
    joint = np.zeros((n_classes, posteriors.shape[1]), dtype=np.float64)
    np.add.at(joint, codes, posteriors)
    joint /= posteriors.shape[0]
    marginal = joint.sum(axis=0)
    conditional = np.divide(joint, marginal, out=np.zeros_like(joint), where=marginal > 0)
    return np.einsum("iv,iv->i", posteriors, conditional[codes])
