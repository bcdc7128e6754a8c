r"""Leave-one-out k-nearest-neighbour accuracy on frozen target features.

A classic task-aware baseline of the model-selection literature: score a candidate model by how
well a k-NN classifier on its frozen features predicts the target labels. Used, among others, by

* Joan Puigcerver, Carlos Riquelme, Basil Mustafa, Cedric Renggli, André Susano Pinto, Sylvain
  Gelly, Daniel Keysers, Neil Houlsby. *Scalable Transfer Learning with Expert Models.* ICLR 2021
  (arXiv:2009.13239): kNN accuracy on the downstream data as the cheap proxy that selects the
  expert to fine-tune;
* Cedric Renggli, André Susano Pinto, Luka Rimanic, Joan Puigcerver, Carlos Riquelme, Ce Zhang,
  Mario Lucic. *Which Model to Transfer? Finding the Needle in the Growing Haystack.* CVPR 2022
  (arXiv:2010.06402): kNN evaluation as one of the task-aware search strategies;
* Moein Sorkhei, Christos Matsoukas, Johan Fredin Haslum, Emir Konuk, Kevin Smith. *k-NN as a
  Simple and Effective Estimator of Transferability.* TMLR 2025 (arXiv:2503.18528): the k-NN
  evaluation used for self-supervised features outpredicts 23 transferability metrics.

These papers do not share one reference implementation or one setting of k, the distance and the
normalisation; the settings here (leave-one-out, cosine distance, ``k = 5``, tie-inclusive
neighbourhoods, expected accuracy under random vote tie-breaking) are this library's choice and
are justified in :func:`knn_accuracy`.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from advtransfer.errors import AdvTransferError
from advtransfer.estimators._validate import features_and_labels

__all__ = ["knn_accuracy"]

#: Default number of neighbours.
K = 5
#: Distances closer than this fraction of their scale (2 for cosine distances, the largest
#: squared norm of the centred features for squared Euclidean distances) count as equal: this
#: absorbs the rounding of the Gram-matrix computation, so that e.g. duplicated samples tie.
TIE_TOLERANCE = 1e-9
#: Number of query rows whose distances are held in memory at once.
_BLOCK_ENTRIES = 4_000_000


def knn_accuracy(features: Any, labels: Any, *, k: int = K,
                 metric: Literal["cosine", "euclidean"] = "cosine") -> float:
    r"""Leave-one-out accuracy of a majority-vote k-nearest-neighbour classifier.

    Every sample :math:`i` is classified by its neighbours among the other :math:`N - 1`
    samples (leave-one-out: no split, hence no randomness, and every labelled sample is used).
    With :math:`d_{ij}` the distance and :math:`r_i` the :math:`k`-th smallest of
    :math:`\{d_{ij}\}_{j \ne i}`, the neighbourhood is
    :math:`\mathcal{N}_i = \{j \ne i : d_{ij} \le r_i\}` (all samples tied with the
    :math:`k`-th nearest are included, as in R's ``class::knn``, so that the result does not
    depend on the order of the samples). The votes are :math:`n_i(c) = |\{j \in \mathcal{N}_i :
    y_j = c\}|`, :math:`T_i = \arg\max_c n_i(c)` is the set of winning classes, and

    .. math::

        \operatorname{kNN} = \frac{1}{N} \sum_{i=1}^{N}
            \frac{\mathbb{1}[y_i \in T_i]}{|T_i|} \in [0, 1],

    i.e. a vote tie counts as the expected accuracy of breaking it uniformly at random (R's
    ``class::knn`` breaks it at random; the expectation keeps the score deterministic and
    independent of the label values). Distances that differ by less than the rounding of their
    computation count as equal: cosine distances within :math:`2 \cdot 10^{-9}`, squared
    Euclidean distances within :math:`10^{-9} \max_i \lVert f_i - \bar f\rVert^2`.

    Choices (no reference implementation is shared by the papers cited in the module
    docstring): *leave-one-out* rather than a train/test split, because transferability
    estimators see only the labelled target set; *cosine* distance
    :math:`d_{ij} = 1 - \langle f_i, f_j\rangle / (\lVert f_i\rVert \lVert f_j\rVert)` by default,
    the metric of the k-NN evaluation of self-supervised features that Sorkhei et al. adopt
    (insensitive to the per-sample feature norm, which varies widely between architectures); a
    sample with an all-zero feature vector has cosine similarity 0 to every sample
    (scikit-learn's convention). ``metric="euclidean"`` uses :math:`\lVert f_i - f_j\rVert`.
    *k = 5* uniform votes: small enough for target sets with few samples per class (the vote of
    a class with fewer than :math:`k/2` other samples is otherwise swamped), larger than 1 to
    reduce the variance of the 1-NN rule.

    Invariances: label values, sample order, rotations :math:`F \mapsto F Q` (:math:`Q`
    orthogonal) and a global scale of the features; ``"euclidean"`` is also invariant to
    translations, ``"cosine"`` to a separate positive scale of every sample.

    Parameters
    ----------
    features:
        ``(N, D)`` features of the target data (numpy or torch), ``N >= 2``.
    labels:
        ``(N,)`` target class labels of any values (at least 2 classes).
    k:
        Number of neighbours, an integer with ``1 <= k <= N - 1``.
    metric:
        ``"cosine"`` (default) or ``"euclidean"``.

    Returns
    -------
    float
        Leave-one-out accuracy in ``[0, 1]`` (higher is better).
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise AdvTransferError(f"k must be a positive integer; got {k!r}")
    if metric not in ("cosine", "euclidean"):
        raise AdvTransferError(f"metric must be 'cosine' or 'euclidean'; got {metric!r}")
    f, codes, n_classes = features_and_labels(features, labels)
    n = f.shape[0]
    k = int(k)
    if k > n - 1:
        raise AdvTransferError(
            f"k must be at most the number of samples minus one ({n - 1}); got {k}"
        )

    if metric == "cosine":
        norms = np.linalg.norm(f, axis=1, keepdims=True)
        g = np.divide(f, norms, out=np.zeros_like(f), where=norms > 0)
        sq = None
        tol = TIE_TOLERANCE * 2.0
    else:
        g = f - f.mean(axis=0)  # translation-invariant; reduces cancellation in the Gram trick
        sq = np.einsum("ij,ij->i", g, g)
        tol = TIE_TOLERANCE * float(sq.max())

    onehot = np.zeros((n, n_classes), dtype=np.float64)
    onehot[np.arange(n), codes] = 1.0
    block = max(1, _BLOCK_ENTRIES // n)
    credit = np.empty(n, dtype=np.float64)
    for start in range(0, n, block):
        stop = min(start + block, n)
        gram = g[start:stop] @ g.T
        if sq is None:
            dist = 1.0 - gram
        else:
            dist = np.maximum(sq[start:stop, None] + sq[None, :] - 2.0 * gram, 0.0)
        rows = np.arange(stop - start)
        dist[rows, rows + start] = np.inf  # leave the query itself out
        kth = np.partition(dist, k - 1, axis=1)[:, k - 1]
        votes = (dist <= (kth + tol)[:, None]).astype(np.float64) @ onehot  # (B, C)
        winners = votes == votes.max(axis=1, keepdims=True)
        credit[start:stop] = winners[rows, codes[start:stop]] / winners.sum(axis=1)
    return float(credit.mean())
