r"""NCTI: Neural Collapse Transferability Index.

Reference: Zijian Wang, Yadan Luo, Liang Zheng, Zi Huang, Mahsa Baktashmotlagh. *How Far
Pre-trained Models Are from Neural Collapse on the Target Dataset Informs their
Transferability.* ICCV 2023, pp. 5549-5558 (CVF open access; no arXiv id was found).
Reference implementation: BUserName/NCTI, ``metrics.py`` (``NCTI_Score``: the three raw terms
per model, computed with scikit-learn's ``PCA`` and ``LinearDiscriminantAnalysis``) and
``evaluate_metric_group1_cpu.py`` (the min-max normalisation over the model pool and the sum).

NCTI is a *pool* score: :func:`ncti_parts` computes a candidate's three raw terms, and
:func:`ncti` normalises each term over the candidates given and sums them, so a candidate's
score depends on which other candidates are in the pool.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import linalg
from scipy.special import log_softmax
from sklearn.decomposition import PCA

from advtransfer.errors import AdvTransferError, AdvTransferTypeError
from advtransfer.estimators._validate import features_and_labels

__all__ = ["NCTIParts", "ncti", "ncti_parts"]

#: PCA dimension of the published code (``PCA(n_components=64)``).
PCA_DIM = 64
#: Number of leading principal components whose variances set the shrinkage (the code's 32).
VARIANCE_COMPONENTS = 32
#: Floor of the shrinkage ``exp(-sum of variances)``; at the floor the code uses no shrinkage.
SHRINKAGE_FLOOR = 1e-10
#: Rank tolerance of the unshrunk (scikit-learn ``solver="svd"``) discriminant.
SVD_TOL = 1e-4
#: Within-class standard deviation, relative to the total one, below which the features count
#: as having no within-class variation (round-off level).
WITHIN_FLOOR = 1e-10
#: Relative spread below which a term counts as constant over the pool in :func:`ncti`.
CONSTANT_RTOL = 1e-12


@dataclass(frozen=True)
class NCTIParts:
    r"""The three raw NCTI terms of one candidate model; each is *higher = better*.

    Attributes
    ----------
    vc:
        Within-class variability collapse, :math:`-\log \sum_c \lVert P_c \rVert_*` (or
        :math:`-\sum_c \lVert P_c \rVert_*` with ``vc_log=False``), where :math:`P_c` holds the
        discriminant's class posteriors of the samples of class :math:`c`. The code returns
        :math:`+\log\sum_c\lVert P_c\rVert_*` and *subtracts* its normalised value; the sign is
        flipped here so that all three terms are higher-better.
    seli:
        Simplex-ETF / SELI geometry of the class means, :math:`\lVert Z - \bar Z \rVert_*`, the
        nuclear norm of the centred features projected on the discriminant directions.
    ncc:
        Nearest-centre classifier, the mean posterior of the true class, in :math:`(0, 1]`.
    """

    vc: float
    seli: float
    ncc: float


def _discriminant(x: np.ndarray, codes: np.ndarray, n_classes: int,
                  shrinkage: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Projected features ``(N, min(C-1, D))`` and class log-posteriors ``(N, C)``.

    Mirrors scikit-learn's ``LinearDiscriminantAnalysis`` (1.x): ``solver="eigen"`` with a
    fixed ``shrinkage`` when one is given, ``solver="svd"`` (no shrinkage) otherwise.
    """
    n, d = x.shape
    counts = np.bincount(codes, minlength=n_classes).astype(np.float64)
    priors = counts / n
    means = np.zeros((n_classes, d))
    np.add.at(means, codes, x)
    means /= counts[:, None]
    centred = x - means[codes]
    n_components = min(n_classes - 1, d)
    total = x - x.mean(axis=0)
    if not np.sum(centred**2) > WITHIN_FLOOR**2 * np.sum(total**2):
        raise AdvTransferError(
            "features must vary within the classes; the within-class scatter is zero (to "
            "round-off), so NCTI's discriminant is undefined")

    if shrinkage is not None:
        s_w = centred.T @ centred / n
        s_t = total.T @ total / n

        def shrink(cov: np.ndarray) -> np.ndarray:
            out = (1.0 - shrinkage) * cov
            out[np.diag_indices(d)] += shrinkage * np.trace(cov) / d
            return out

        s_w, s_t = shrink(s_w), shrink(s_t)
        try:
            evals, evecs = linalg.eigh(s_t - s_w, s_w)
        except linalg.LinAlgError as exc:
            raise AdvTransferError(
                "features give a singular within-class scatter; NCTI's discriminant is "
                "undefined (do the features vary within the classes?)") from exc
        evecs = evecs[:, np.argsort(evals)[::-1]]
        projected = x @ evecs[:, :n_components]
        coef = (means @ evecs) @ evecs.T  # = means S_w^{-1}
        intercept = -0.5 * np.einsum("cd,cd->c", means, coef) + np.log(priors)
        return projected, log_softmax(x @ coef.T + intercept, axis=1)

    # Unshrunk: whiten the within-class scatter (per-feature scaling, then SVD with rank
    # truncation), then rotate onto the span of the weighted class means.
    std = centred.std(axis=0)
    std[std == 0] = 1.0
    _, s, vt = linalg.svd(centred / std / math.sqrt(n), full_matrices=False)
    rank = int(np.sum(s > SVD_TOL))
    if rank == 0:
        raise AdvTransferError(
            "features must vary within the classes; the within-class scatter is zero, so "
            "NCTI's discriminant is undefined")
    whiten = (vt[:rank] / std).T / s[:rank]
    xbar = priors @ means
    weighted = (np.sqrt(n * priors / (n_classes - 1))[:, None] * (means - xbar)) @ whiten
    _, s2, vt2 = linalg.svd(weighted, full_matrices=False)
    rank2 = int(np.sum(s2 > SVD_TOL * s2[0])) if s2.size and s2[0] > 0 else 0
    scalings = whiten @ vt2.T[:, :rank2]
    coef = (means - xbar) @ scalings
    intercept = -0.5 * np.sum(coef**2, axis=1) + np.log(priors)
    logits = (x - xbar) @ scalings @ coef.T + intercept
    projected = ((x - xbar) @ scalings)[:, :n_components]
    return projected, log_softmax(logits, axis=1)


def ncti_parts(features: Any, labels: Any, *, pca_dim: int | None = PCA_DIM,
               variance_components: int = VARIANCE_COMPONENTS,
               pca_solver: Literal["full", "randomized"] = "full", random_state: int = 0,
               vc_log: bool = True) -> NCTIParts:
    r"""The three raw NCTI terms of one candidate model (combine a pool with :func:`ncti`).

    1. The features are reduced to ``pca_dim`` principal components (default 64, the code's),
       :math:`H \in \mathbb{R}^{N \times k}`. With :math:`s` the sum of the ``variance_components``
       (default 32) largest principal variances (unbiased, :math:`1/(N-1)`), the shrinkage is
       :math:`\lambda = e^{-s}`.
    2. A linear discriminant is fitted to :math:`(H, y)`: if :math:`\lambda > 10^{-10}`, with
       the within-class scatter :math:`S_W = \frac1N\sum_i (h_i - \mu_{y_i})(h_i -
       \mu_{y_i})^\top` shrunk to :math:`\tilde S_W = (1-\lambda) S_W + \lambda
       \frac{\operatorname{tr} S_W}{k} I` (scikit-learn ``solver="eigen"``); otherwise
       (:math:`s \ge 10 \ln 10`, typical for raw network features) without shrinkage
       (``solver="svd"``, whitening :math:`S_W` up to a rank tolerance of ``1e-4``). It gives
       the projection :math:`Z = H U` on the :math:`\min(C-1, k)` leading discriminant
       directions and the posteriors :math:`p(c \mid h_i) = \operatorname{softmax}_c
       \bigl(-\frac12 (h_i - \mu_c)^\top \tilde S_W^{-1} (h_i - \mu_c) + \log \pi_c\bigr)`,
       collected in :math:`P \in [0, 1]^{N \times C}`, with :math:`P_c` the rows of class
       :math:`c`.
    3. The terms, each higher-better:

       .. math::

           S_{vc} = -\log \sum_{c=1}^{C} \lVert P_c \rVert_*, \qquad
           S_{seli} = \lVert Z - \mathbf{1}\bar z^\top \rVert_*, \qquad
           S_{ncc} = \frac1N \sum_{i=1}^N p(y_i \mid h_i),

       with :math:`\lVert\cdot\rVert_*` the nuclear norm (sum of singular values).

    Paper and code. The paper (Eq. for :math:`S_{vc}`) writes
    :math:`S_{vc} = -\sum_c \lVert Z_c \rVert_*` without the logarithm; the code takes the
    log before normalising, which changes the min-max normalised values. The default follows
    the code (``vc_log=True``); ``vc_log=False`` gives the paper's form. The paper's
    :math:`S_{seli}` is the nuclear norm of the features; the code uses the (centred)
    discriminant projection :math:`Z`, as here. The code runs scikit-learn's PCA with its default
    solver (randomized and unseeded on large inputs) and a fixed 64 components (failing for
    fewer than 64 samples or features); here the exact SVD is the default
    (``pca_solver="full"``; ``"randomized"`` is seeded with ``random_state``) and the number of
    components is capped at :math:`\min(N - 1, D)`. The unshrunk discriminant divides the
    within-class scatter by :math:`N` as current scikit-learn does (older versions divided by
    :math:`N - C`, which changes the raw terms but not the normalised NCTI of a pool scored on
    the same data). On its own, :math:`S_{vc}` is largest for posteriors that are constant
    within each class, which includes uninformative, uniform posteriors; it is meant to be read
    together with the other two terms.

    Invariances. The terms are invariant to the order of the samples and to relabelling the
    classes; with PCA (the default) they are invariant to rotations and translations of the
    feature space (the principal axes rotate with the data; a sign flip of an axis does not
    change any term).

    Parameters
    ----------
    features:
        ``(N, D)`` features of the target data (numpy or torch), ``N >= 3``; they must vary
        within the classes (within-class spread above ``1e-10`` of the total spread).
    labels:
        ``(N,)`` target class labels of any values (at least 2 classes).
    pca_dim:
        Number of principal components (a positive integer), or ``None`` to use the features
        as given (the principal variances for the shrinkage are then still computed).
    variance_components:
        Number of leading principal variances summed for the shrinkage (a positive integer;
        all of them if there are fewer).
    pca_solver:
        ``"full"`` (exact SVD, default) or ``"randomized"``.
    random_state:
        Seed of the randomized PCA (a non-negative integer).
    vc_log:
        ``True`` (code, default): :math:`S_{vc} = -\log\sum_c\lVert P_c\rVert_*`; ``False``
        (paper): :math:`-\sum_c\lVert P_c\rVert_*`.

    Returns
    -------
    NCTIParts
        The raw terms ``vc``, ``seli`` and ``ncc``, all higher-better.
    """
    if pca_dim is not None and (isinstance(pca_dim, bool) or not isinstance(pca_dim, int)
                                or pca_dim < 1):
        raise AdvTransferError(f"pca_dim must be a positive integer or None; got {pca_dim!r}")
    if (isinstance(variance_components, bool) or not isinstance(variance_components, int)
            or variance_components < 1):
        raise AdvTransferError(
            f"variance_components must be a positive integer; got {variance_components!r}")
    if pca_solver not in ("full", "randomized"):
        raise AdvTransferError(f"pca_solver must be 'full' or 'randomized'; got {pca_solver!r}")
    if isinstance(random_state, bool) or not isinstance(random_state, int) or random_state < 0:
        raise AdvTransferError(
            f"random_state must be a non-negative integer; got {random_state!r}")
    if not isinstance(vc_log, bool):
        raise AdvTransferError(f"vc_log must be True or False; got {vc_log!r}")
    h, codes, n_classes = features_and_labels(features, labels, min_samples=3)
    n = h.shape[0]

    if pca_dim is not None:
        k = min(pca_dim, n - 1, h.shape[1])
        pca = PCA(n_components=k, svd_solver=pca_solver,
                  random_state=random_state if pca_solver == "randomized" else None)
        h = pca.fit_transform(h)
        variances = np.asarray(pca.explained_variance_, dtype=np.float64)
    else:
        sv = linalg.svdvals(h - h.mean(axis=0))
        variances = sv**2 / (n - 1)
    s = float(np.sum(variances[:variance_components]))
    shrinkage = math.exp(-s)
    projected, log_post = _discriminant(
        h, codes, n_classes, shrinkage if shrinkage > SHRINKAGE_FLOOR else None)

    post = np.exp(log_post)
    ncc = float(np.mean(post[np.arange(n), codes]))
    nuclear = sum(float(np.sum(linalg.svdvals(post[codes == c]))) for c in range(n_classes))
    vc = -math.log(nuclear) if vc_log else -nuclear
    seli = float(np.sum(linalg.svdvals(projected - projected.mean(axis=0))))
    return NCTIParts(vc=vc, seli=seli, ncc=ncc)


def ncti(parts: Sequence[NCTIParts]) -> list[float]:
    r"""Pool-normalised NCTI scores of candidate models, in the order given.

    Each raw term of :class:`NCTIParts` is min-max normalised over the candidates and the three
    are summed:

    .. math::

        \operatorname{NCTI}_m = \sum_{t \in \{vc,\, seli,\, ncc\}}
            \frac{S_t^m - \min_{m'} S_t^{m'}}{\max_{m'} S_t^{m'} - \min_{m'} S_t^{m'}}
            \in [0, 3].

    **A candidate's score depends on the pool**: adding or removing a candidate can change the
    minimum or maximum of a term and hence every other candidate's score (and even the order of
    two others). Only scores computed in one call are comparable. The scores are equivariant to
    the order of the candidates (permuting ``parts`` permutes the result).

    A term whose values are all equal (up to a relative ``1e-12``), in particular every term of
    a pool of one candidate, does not discriminate and contributes 0 to every candidate; a pool
    of one candidate therefore scores 0. (The code divides by zero there.)

    The code adds the normalised :math:`S_{seli}` and :math:`S_{ncc}` and *subtracts* the
    normalised :math:`\log\sum_c\lVert P_c\rVert_*`; since :class:`NCTIParts` stores that term
    negated (higher-better), whose normalised value is one minus the code's, these scores equal
    the code's plus 1 (same ranking).

    Parameters
    ----------
    parts:
        A non-empty sequence of :class:`NCTIParts` from :func:`ncti_parts`, one per candidate,
        all computed on the same target data and labels, with finite terms.

    Returns
    -------
    list of float
        The NCTI score of each candidate (higher is better), in the order of ``parts``.
    """
    if isinstance(parts, NCTIParts) or not isinstance(parts, Sequence):
        raise AdvTransferTypeError(
            f"parts must be a sequence of NCTIParts (one per candidate); got "
            f"{type(parts).__name__}")
    if len(parts) == 0:
        raise AdvTransferError("parts must contain at least one NCTIParts; got an empty sequence")
    for i, p in enumerate(parts):
        if not isinstance(p, NCTIParts):
            raise AdvTransferTypeError(
                f"parts must contain only NCTIParts (from ncti_parts); item {i} is "
                f"{type(p).__name__}")
    values = np.array([[p.vc, p.seli, p.ncc] for p in parts], dtype=np.float64)
    if not np.all(np.isfinite(values)):
        bad = int(np.flatnonzero(~np.all(np.isfinite(values), axis=1))[0])
        raise AdvTransferError(f"parts must have finite terms; item {bad} has NaN or infinity")
    lo = values.min(axis=0)
    hi = values.max(axis=0)
    spread = hi - lo
    scale = np.maximum(np.abs(lo), np.abs(hi))
    constant = spread <= CONSTANT_RTOL * scale
    normalised = np.where(constant, 0.0, (values - lo) / np.where(constant, 1.0, spread))
    return [float(v) for v in normalised.sum(axis=1)]
