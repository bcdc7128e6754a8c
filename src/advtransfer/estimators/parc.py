r"""PARC: Pairwise Annotation Representation Comparison.

Reference: Daniel Bolya, Rohit Mittapalli, Judy Hoffman. *Scalable Diverse Model Selection for
Accessible Transfer Learning.* NeurIPS 2021 (arXiv:2111.06977). Reference implementation:
dbolya/parc, ``methods.py`` (``feature_reduce`` and class ``PARC``; ``demo.py`` uses
``PARC(n_dims=32)``). The same computation is re-used in TencentARC/SFDA, ``metrics.py``
(``PARC`` and ``PARC_Score``); see :func:`parc` for how the two differ.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from scipy import stats
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from advtransfer.errors import AdvTransferError
from advtransfer.estimators._validate import features_and_labels

__all__ = ["parc"]

#: PCA dimension of the published protocol (``PARC(n_dims=32)``; also ``PARC_Score``'s default).
PCA_DIM = 32
#: Decimals to which the feature dissimilarities (in [0, 2]) are rounded before ranking.
DECIMALS = 12
#: Seed of the reference implementation's randomized PCA.
PCA_SEED = 1919


def _reduce(features: np.ndarray, pca_dim: int, solver: str, random_state: int) -> np.ndarray:
    """PCA scores as in the reference ``feature_reduce`` (capped at ``min(N - 1, D)``)."""
    n, d = features.shape
    k = min(pca_dim, n - 1, d)
    if solver == "randomized":
        pca = PCA(n_components=k, svd_solver="randomized", random_state=random_state,
                  iterated_power=1)
    else:
        pca = PCA(n_components=k, svd_solver="full")
    return pca.fit_transform(features)


def parc(features: Any, labels: Any, *, pca_dim: int | None = PCA_DIM,
         pca_solver: Literal["randomized", "full"] = "randomized",
         random_state: int = PCA_SEED, percent: bool = True) -> float:
    r"""PARC: Spearman correlation of the feature and label dissimilarity matrices.

    The features :math:`F \in \mathbb{R}^{N \times D}` are reduced to ``pca_dim`` principal
    components (default 32, the published protocol) and each resulting column is standardised
    to zero mean and unit variance (scikit-learn ``StandardScaler``), giving :math:`\hat F`.
    With :math:`Y \in \{0, 1\}^{N \times C}` the one-hot labels and :math:`\rho(a, b)` the
    Pearson correlation of two vectors (here: of two *samples* across their coordinates), the
    representational dissimilarity matrices are

    .. math::

        D_F = 1 - \bigl[\rho(\hat f_i, \hat f_j)\bigr]_{ij}, \qquad
        D_Y = 1 - \bigl[\rho(y_i, y_j)\bigr]_{ij},

    (for one-hot rows :math:`D_Y` is 0 for a pair of the same class and :math:`C / (C - 1)`
    otherwise), and

    .. math::

        \operatorname{PARC}(F, Y) = 100 \cdot
            \rho_S\bigl(\operatorname{triu}(D_F), \operatorname{triu}(D_Y)\bigr),

    the Spearman rank correlation (ties averaged) of the :math:`N(N-1)/2` entries above the
    diagonal, scaled by 100 as in the published code. The entries of :math:`D_F` are rounded to
    12 decimals before ranking, so that pairs that are equal in exact arithmetic (duplicated
    samples, two coordinates) tie instead of being ordered by round-off (the code ranks the raw
    floating-point values; this only matters for differences below :math:`10^{-12}`). PARC lies
    in :math:`[-100, 100]`; it is high when pairs of the same class have more similar features
    than pairs of different classes.

    Paper and code. The paper defines PARC as the Spearman correlation itself (in
    :math:`[-1, 1]`); the published code multiplies it by 100. The default follows the code
    (``percent=True``); ``percent=False`` gives the paper's scale. The ranking of candidates is
    the same either way. The code's PCA is scikit-learn's randomized solver with
    ``iterated_power=1`` and ``random_state=1919`` (an approximation of the exact principal
    components, deterministic for a given seed); this is the default, ``pca_solver="full"``
    uses the exact SVD. The code caps the number of components at :math:`N`; here it is capped
    at :math:`\min(N - 1, D)`, because centred data have rank at most :math:`N - 1` (the
    :math:`N`-th component is numerical noise that standardisation would blow up to unit
    variance) and scikit-learn cannot extract more than :math:`D` components (the code fails
    there). ``pca_dim=None`` standardises the features as given.

    TencentARC/SFDA's ``metrics.py`` copies the same ``PARC`` class; its ``PARC_Score`` uses
    ``n_dims = 32`` for its default ``ratio=2`` (``int(D * ratio)`` for ``ratio <= 1``) and
    counts the classes from the labels instead of a per-dataset constant (which does not change
    :math:`D_Y`'s ranks). Its subsampling branch for :math:`N > 15000` builds a subsample but then
    scores the full ``X``, so all samples are used, as here.

    Invariances. PARC is invariant to the order of the samples and to relabelling the classes.
    It is *not* invariant to rotations of the feature space: both the per-column
    standardisation and the per-sample correlation (which centres each sample across its
    coordinates) depend on the basis, and even the sign of a single coordinate changes the
    result. With PCA the coordinates are the principal axes, whose signs follow scikit-learn's
    convention (which has changed between scikit-learn versions, so values can differ across
    versions; rankings of candidates are usually unaffected).

    Parameters
    ----------
    features:
        ``(N, D)`` features of the target data (numpy or torch), ``N >= 3``.
    labels:
        ``(N,)`` target class labels of any values (at least 2 classes, and at least one pair of
        samples sharing a class).
    pca_dim:
        Number of principal components (an integer ``>= 2``), or ``None`` for no reduction.
        The per-sample correlation needs at least 2 coordinates.
    pca_solver:
        ``"randomized"`` (the code's, default) or ``"full"`` (exact SVD).
    random_state:
        Seed of the randomized PCA (a non-negative integer; default 1919, the code's).
    percent:
        ``True`` (default, the code) multiplies the correlation by 100; ``False`` returns it in
        :math:`[-1, 1]` (the paper).

    Returns
    -------
    float
        PARC (higher is better).
    """
    if pca_dim is not None and (isinstance(pca_dim, bool) or not isinstance(pca_dim, int)
                                or pca_dim < 2):
        raise AdvTransferError(f"pca_dim must be an integer >= 2 or None; got {pca_dim!r}")
    if pca_solver not in ("randomized", "full"):
        raise AdvTransferError(
            f"pca_solver must be 'randomized' or 'full'; got {pca_solver!r}")
    if isinstance(random_state, bool) or not isinstance(random_state, int) or random_state < 0:
        raise AdvTransferError(
            f"random_state must be a non-negative integer; got {random_state!r}")
    if not isinstance(percent, bool):
        raise AdvTransferError(f"percent must be True or False; got {percent!r}")
    f, codes, n_classes = features_and_labels(features, labels, min_samples=3)
    if f.shape[1] < 2:
        raise AdvTransferError(
            f"features must have at least 2 columns (PARC correlates samples across their "
            f"coordinates); got {f.shape[1]}")
    if np.bincount(codes).max() < 2:
        raise AdvTransferError(
            "labels must contain at least one class with 2 or more samples (PARC compares "
            "same-class with different-class pairs); every sample has its own class")

    if pca_dim is not None:
        f = _reduce(f, pca_dim, pca_solver, random_state)
        if f.shape[1] < 2:
            raise AdvTransferError(
                f"features must span at least 2 principal components for PARC; got "
                f"{f.shape[1]} (N={codes.shape[0]})")
    z = StandardScaler().fit_transform(f)
    z = z - z.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(z, axis=1)
    if np.any(norms <= 1e-12 * max(float(norms.max()), 1.0)):
        bad = int(np.argmin(norms))
        raise AdvTransferError(
            f"features must not contain a sample whose standardised coordinates are all equal "
            f"(its correlation with other samples is undefined); sample {bad} is one")
    z = z / norms[:, None]
    iu = np.triu_indices(z.shape[0], 1)
    # Rounded so that pairs equal in exact arithmetic (duplicated samples, two coordinates)
    # tie instead of being ordered by round-off.
    dist_f = np.round(1.0 - (z @ z.T)[iu], DECIMALS)
    same = codes[iu[0]] == codes[iu[1]]
    dist_y = np.where(same, 0.0, n_classes / (n_classes - 1.0))
    if np.ptp(dist_f) == 0.0:
        raise AdvTransferError(
            "features give identical dissimilarities for every pair of samples; PARC (a rank "
            "correlation) is undefined")
    rho = float(stats.spearmanr(dist_f, dist_y).statistic)
    return 100.0 * rho if percent else rho
