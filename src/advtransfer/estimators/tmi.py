r"""TMI: transferability measured by intra-class feature variance.

Reference: Huiwen Xu, U Kang. *Fast and Accurate Transferability Measurement by Evaluating
Intra-class Feature Variance.* ICCV 2023 (arXiv:2308.05986). Reference implementation:
snudatalab/TMI, ``src/trf_measurement.py`` (``TMI`` and the k-nearest-neighbour entropy estimator
``get_h``), called by ``src/main.py`` with ``k=3``.

TMI scores the *spread* of each class in feature space: a pre-trained model whose features keep
a large intra-class variance on the target data (instead of collapsing each class to a point, as
an over-specialised model does) is predicted to transfer better. The variance is measured by the
conditional entropy :math:`H(X \mid Y)` of the features given the label, estimated per class with
the Kozachenko-Leonenko k-nearest-neighbour estimator (not a Gaussian or coding-rate formula).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from scipy.spatial import cKDTree
from scipy.special import digamma, gammaln

from advtransfer.errors import AdvTransferError
from advtransfer.estimators._validate import features_and_labels
from advtransfer.progress import warn

__all__ = ["knn_entropy", "tmi"]


def knn_entropy(x: np.ndarray, *, k: int = 3, norm: Literal["max", "euclidean"] = "max",
                min_dist: float = 1.0) -> float:
    r"""Kozachenko-Leonenko estimate (in nats) of the differential entropy of the rows of ``x``.

    With :math:`n` samples in :math:`d` dimensions and :math:`\varepsilon_i` the distance from
    sample :math:`i` to its ``k``-th nearest other sample (floored at ``min_dist``),

    .. math::

        \hat H = -\psi(k) + \psi(n) + \log c_d + \frac{d}{n} \sum_{i=1}^{n}
            \log (2 \varepsilon_i),

    where :math:`\psi` is the digamma function and :math:`c_d` the volume of the unit ball of the
    norm with diameter 1: :math:`\log c_d = 0` for the max norm, :math:`\frac d2 \log \pi -
    \log \Gamma(\frac d2 + 1) - d \log 2` for the Euclidean norm (the reference code omits the
    :math:`- d \log 2` there, so its Euclidean estimate is :math:`d \log 2` higher; the code's
    formula is kept).

    Parameters
    ----------
    x:
        ``(n, d)`` finite float array with ``n > k`` rows (not validated: :func:`tmi` does).
    k:
        Neighbour rank, a positive integer.
    norm:
        ``"max"`` or ``"euclidean"``.
    min_dist:
        Positive floor on the distances.

    Returns
    -------
    float
        Entropy estimate in nats.
    """
    n, d = x.shape
    if norm == "max":
        p = math.inf
        log_c_d = 0.0
    else:
        p = 2.0
        log_c_d = (d / 2.0) * math.log(math.pi) - float(gammaln(d / 2.0 + 1.0))
    distances, _ = cKDTree(x).query(x, k=k + 1, p=p)
    eps = np.maximum(distances[:, -1], min_dist)
    return float(-digamma(k) + digamma(n) + log_c_d + (d / n) * np.sum(np.log(2.0 * eps)))


def tmi(features: Any, labels: Any, *, k: int = 3, norm: Literal["max", "euclidean"] = "max",
        min_dist: float = 1.0, aggregate: Literal["mean", "sum"] = "mean") -> float:
    r"""TMI: conditional entropy of the features given the class, by k-nearest neighbours.

    For every class :math:`c` with :math:`N_c` samples, :math:`\hat H(X \mid Y = c)` is the
    Kozachenko-Leonenko estimate of :func:`knn_entropy` on that class's features (``k=3``
    neighbours, max norm, distances floored at ``min_dist=1``, as the reference code), and with
    :math:`\pi_c = N_c / N`:

    .. math::

        \operatorname{TMI} = \frac{1}{|\mathcal{C}|} \sum_{c \in \mathcal{C}}
            \pi_c \, \hat H(X \mid Y = c).

    The paper's quantity is the conditional entropy :math:`H(X \mid Y) = \sum_c \pi_c
    H(X \mid Y = c)` (``aggregate="sum"``); the published code takes the *mean* of the
    :math:`\pi_c \hat H_c` over the classes (default ``aggregate="mean"``), i.e. divides by the
    number of classes. On one target dataset the two differ by a factor that is the same for
    every candidate model, so they rank models identically.

    Classes too small for a ``k``-th neighbour follow the code: a class with one sample
    contributes 0 and counts in :math:`|\mathcal{C}|`; a class with :math:`2 \le N_c \le k`
    samples (infinite distance in the code) is left out of the sum and of :math:`|\mathcal{C}|`.
    If no class has more than ``k`` samples the score is 0.

    The floor ``min_dist`` makes the score depend on the feature scale: distances below it are
    all treated as ``min_dist``, so features whose k-NN distances are all below 1 get the same
    score whatever their arrangement (rescale the features, or lower ``min_dist``, in that case).
    The code's centring of the features by their mean does not change any distance and is
    omitted. The score is invariant to translations of the features, to permutations and sign
    flips of the feature coordinates, to sample order and to renaming the labels; with
    ``norm="euclidean"`` also to rotations (the max norm is not rotation-invariant).

    Parameters
    ----------
    features:
        ``(N, D)`` features of the target data (numpy or torch), ``N >= 2``.
    labels:
        ``(N,)`` target class labels of any values (at least 2 classes).
    k:
        Number of nearest neighbours, a positive integer (3 in the code).
    norm:
        ``"max"`` (default, the code's) or ``"euclidean"`` distance.
    min_dist:
        Positive finite floor on the k-NN distances (1.0 in the code's ``TMI``).
    aggregate:
        ``"mean"`` (default, the code) or ``"sum"`` (the paper's :math:`H(X \mid Y)`).

    Returns
    -------
    float
        TMI in nats (higher is better: more intra-class variance).
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise AdvTransferError(f"k must be a positive integer; got {k!r}")
    if norm not in ("max", "euclidean"):
        raise AdvTransferError(f"norm must be 'max' or 'euclidean'; got {norm!r}")
    if (isinstance(min_dist, bool) or not isinstance(min_dist, (int, float))
            or not (math.isfinite(min_dist) and min_dist > 0)):
        raise AdvTransferError(f"min_dist must be a positive finite number; got {min_dist!r}")
    if aggregate not in ("mean", "sum"):
        raise AdvTransferError(f"aggregate must be 'mean' or 'sum'; got {aggregate!r}")
    f, codes, n_classes = features_and_labels(features, labels)

    n = f.shape[0]
    terms: list[float] = []
    floored = True  # whether every k-NN distance of every scored class is below min_dist
    for c in range(n_classes):
        members = f[codes == c]
        n_c = members.shape[0]
        if n_c == 1:
            terms.append(0.0)
        elif n_c > k:
            entropy = knn_entropy(members, k=k, norm=norm, min_dist=float(min_dist))
            terms.append(n_c / n * entropy)
            floored = floored and entropy == knn_entropy(
                np.zeros((n_c, members.shape[1])), k=k, norm=norm, min_dist=float(min_dist))
    if not terms:
        return 0.0
    if floored:
        warn(f"tmi: every {k}-NN distance of the features is below min_dist={min_dist}, so the "
             "score depends only on the class sizes and the feature dimension (the same for "
             "any features of this shape); rescale the features or lower min_dist")
    total = float(np.sum(terms))
    return total / len(terms) if aggregate == "mean" else total
