r"""SFDA: Self-challenging Fisher Discriminant Analysis.

Reference: Wenqi Shao, Xun Zhao, Yixiao Ge, Zhaoyang Zhang, Lei Yang, Xiaogang Wang, Ying Shan,
Ping Luo. *Not All Models Are Equal: Predicting Model Transferability in a Self-challenging
Fisher Space.* ECCV 2022 (arXiv:2207.03036). Reference implementation: TencentARC/SFDA,
``metrics.py`` (``SFDA_Score``, class ``SFDA``, ``_cov``, ``_class_means``) and ``utils.py``
(``iterative_A``, the power iteration for the regularisation strength).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from scipy import linalg
from scipy.special import log_softmax, softmax

from advtransfer.errors import AdvTransferError
from advtransfer.estimators._validate import features_and_labels

__all__ = ["sfda"]

#: Constant ``a`` in the data-dependent regularisation strength ``exp(-a * sigma_max(S_W))``.
SHRINKAGE_RATE = 5.0
#: Lower bound of the data-dependent regularisation strength (the code's value).
SHRINKAGE_FLOOR = 1e-10
#: Within-class standard deviation, relative to the total one, below which the features count
#: as having no within-class variation (round-off level).
WITHIN_FLOOR = 1e-10
#: Number of (double) power-iteration steps of the code's ``iterative_A``.
POWER_ITERATIONS = 3


def _largest_eigenvalue(a: np.ndarray, method: str) -> float:
    """Largest eigenvalue of the symmetric PSD matrix ``a``.

    ``"power"`` repeats the reference ``iterative_A`` (start from the row sums, three double
    steps, return :math:`x^\\top A y` for the last two normalised iterates); if the start vector
    vanishes (below ``1e-10`` relative to ``a``, e.g. when every row of ``a`` sums to 0) or an
    iterate does, it falls back to the exact value, where the reference code would return NaN
    (or, at round-off level, an arbitrary eigenvalue).
    """
    if method == "power":
        x = a.sum(axis=1)
        y = x
        # A start vector at round-off level (rows summing to 0 in exact arithmetic) is treated
        # as zero: iterating it would return an arbitrary eigenvalue rather than the largest.
        ok = bool(np.linalg.norm(x) > 1e-10 * np.linalg.norm(a) * np.sqrt(a.shape[0]))
        for _ in range(POWER_ITERATIONS):
            if not ok:
                break
            t = a @ x
            nt = np.linalg.norm(t)
            if not nt > 0:
                ok = False
                break
            y = t / nt
            t = a @ y
            nt = np.linalg.norm(t)
            if not nt > 0:
                ok = False
                break
            x = t / nt
        if ok:
            return float(x @ a @ y)
    return float(linalg.eigvalsh(a)[-1])


def _shrunk(cov: np.ndarray, shrinkage: float) -> np.ndarray:
    """``(1 - s) * cov + s * (tr(cov) / D) * I`` (the code's ``_cov`` shrinkage)."""
    d = cov.shape[0]
    out = (1.0 - shrinkage) * cov
    out[np.diag_indices(d)] += shrinkage * np.trace(cov) / d
    return out


def _fda_log_posteriors(x: np.ndarray, codes: np.ndarray, n_classes: int,
                        shrinkage: float | None, eigenvalue: str) -> tuple[np.ndarray, float]:
    """Class log-posteriors of the regularised Fisher discriminant and the strength used."""
    n, d = x.shape
    counts = np.bincount(codes, minlength=n_classes).astype(np.float64)
    priors = counts / n
    means = np.zeros((n_classes, d))
    np.add.at(means, codes, x)
    means /= counts[:, None]
    centred = x - means[codes]
    s_w = centred.T @ centred / n  # = sum_c prior_c * (population covariance of class c)
    spread = x - x.mean(axis=0)
    if not np.trace(s_w) > WITHIN_FLOOR**2 * float(np.sum(spread**2)) / n:
        raise AdvTransferError(
            "features must vary within at least one class: the within-class scatter is zero, "
            "so the Fisher discriminant of SFDA is undefined")
    if shrinkage is None:
        shrinkage = max(float(np.exp(-SHRINKAGE_RATE * _largest_eigenvalue(s_w, eigenvalue))),
                        SHRINKAGE_FLOOR)
    b = _shrunk(s_w, shrinkage)
    try:
        factor = linalg.cho_factor(b)
    except linalg.LinAlgError as exc:
        raise AdvTransferError(
            f"features give a singular within-class scatter at shrinkage={shrinkage:.3g}; pass "
            "a larger shrinkage (a number in (0, 1])") from exc
    # In the code, coef_ = means V V^T with V the generalised eigenvectors of (S_B, B) normalised
    # to V^T B V = I, i.e. coef_ = means B^{-1}: all D eigenvectors are kept.
    coef = linalg.cho_solve(factor, means.T).T  # (C, D)
    intercept = -0.5 * np.einsum("cd,cd->c", means, coef) + np.log(priors)
    return log_softmax(x @ coef.T + intercept, axis=1), float(shrinkage)


def sfda(features: Any, labels: Any, *, shrinkage: float | None = None,
         eigenvalue: Literal["power", "exact"] = "power",
         score: Literal["probability", "log"] = "probability") -> float:
    r"""SFDA score: class posteriors after a regularised Fisher projection and ConfMix.

    With features :math:`x_i \in \mathbb{R}^D`, :math:`C` classes of sizes :math:`N_c`, priors
    :math:`\pi_c = N_c / N`, class means :math:`\mu_c` and the within-class scatter
    :math:`S_W = \frac{1}{N}\sum_i (x_i - \mu_{y_i})(x_i - \mu_{y_i})^\top`:

    1. Regularisation strength (data-dependent unless ``shrinkage`` is given)

       .. math::

           \lambda = \max\bigl(e^{-a\,\sigma_{\max}(S_W)},\, 10^{-10}\bigr), \quad a = 5,

       and the regularised within-class scatter
       :math:`\tilde S_W = (1 - \lambda) S_W + \lambda \frac{\operatorname{tr} S_W}{D} I`.
       The Fisher projection :math:`U` solves :math:`\tilde S_B u = \eta\, \tilde S_W u`
       (:math:`\tilde S_B = \tilde S_T - \tilde S_W`, :math:`\tilde S_T` the total scatter
       shrunk the same way), normalised to :math:`U^\top \tilde S_W U = I`.
    2. Class posteriors in the Fisher space (Gaussian classes with shared covariance,
       Bayes' rule):

       .. math::

           p(c \mid x) = \operatorname{softmax}_c\Bigl(x^\top U U^\top \mu_c
               - \tfrac12 \mu_c^\top U U^\top \mu_c + \log \pi_c\Bigr).

    3. Self-challenging ConfMix: with :math:`\bar\mu_{-c} = \frac{1}{C-1}\sum_{k \ne c} \mu_k`
       and the softened confidence
       :math:`t_i = \operatorname{softmax}_c\bigl(p(c \mid x_i)\bigr)_{y_i}`,

       .. math::

           \tilde x_i = t_i\, x_i + (1 - t_i)\, \bar\mu_{-y_i},

       then steps 1-2 are repeated on :math:`\tilde x` with the same :math:`\lambda`, giving
       :math:`\tilde p`, and

       .. math::

           \operatorname{SFDA} = \frac{1}{N} \sum_{i=1}^{N} \tilde p(y_i \mid \tilde x_i)
           \quad\text{(code, default)}, \qquad
           \frac{1}{N} \sum_{i=1}^{N} \log \tilde p(y_i \mid \tilde x_i)
           \quad\text{(paper, ``score="log"``)}.

    The published code keeps all :math:`D` generalised eigenvectors, so :math:`U U^\top =
    \tilde S_W^{-1}` and step 2 is exactly linear discriminant analysis with the covariance
    :math:`\tilde S_W` (the between-class scatter then does not affect the score); it is
    computed that way here (a Cholesky solve), which equals the code's eigenvector route.

    Paper and code. (i) The code's score is the mean posterior of the true class, not its
    log ("the log function is ignored in case of instability"); the default follows the code
    (a value in :math:`(0, 1]`), ``score="log"`` gives the log form (in :math:`(-\infty, 0]`).
    (ii) :math:`\sigma_{\max}(S_W)` is computed by the code with three steps of a power
    iteration started from the row sums of :math:`S_W` (``iterative_A``), an approximation of
    the largest eigenvalue; that is the default, ``eigenvalue="exact"`` uses the exact value.
    Where the code's iteration breaks down (zero start vector, e.g. features whose coordinates
    sum to a constant), the exact value is used instead of the code's NaN (or, when the row sums
    vanish only up to round-off, instead of an arbitrary eigenvalue). (iii) The code shrinks
    towards :math:`\frac{\operatorname{tr} S_W}{D} I` (scikit-learn's shrinkage form) where the
    paper writes :math:`\lambda I`; the code's form is used. (iv) The code softens the
    posteriors with a second softmax before ConfMix; followed. (v) The code's ConfMix
    overwrites its input array; here the caller's features are not modified.

    Invariances. The score is invariant to the order of the samples, to relabelling the
    classes and to translating the features. With ``eigenvalue="exact"`` or a fixed
    ``shrinkage`` it is invariant to rotations of the feature space; the default power
    iteration starts from the row sums of :math:`S_W`, which depend on the basis, so there it is
    invariant only approximately (exactly when :math:`\lambda` sits at its floor). It is not
    invariant to the feature scale unless ``shrinkage`` is fixed (:math:`\lambda` depends on
    :math:`\sigma_{\max}(S_W)`).

    Parameters
    ----------
    features:
        ``(N, D)`` features of the target data (numpy or torch), ``N >= 2``; they must vary
        within at least one class (within-class spread above ``1e-10`` of the total spread).
    labels:
        ``(N,)`` target class labels of any values (at least 2 classes).
    shrinkage:
        ``None`` (default, the data-dependent :math:`\lambda` above) or a fixed regularisation
        strength in ``[0, 1]``.
    eigenvalue:
        How :math:`\sigma_{\max}(S_W)` is obtained: ``"power"`` (the code, default) or
        ``"exact"``. Ignored when ``shrinkage`` is given.
    score:
        ``"probability"`` (the code, default) or ``"log"`` (the paper).

    Returns
    -------
    float
        SFDA score (higher is better).
    """
    if shrinkage is not None and (isinstance(shrinkage, bool)
                                  or not isinstance(shrinkage, (int, float))
                                  or not 0.0 <= float(shrinkage) <= 1.0):
        raise AdvTransferError(f"shrinkage must be None or a number in [0, 1]; got {shrinkage!r}")
    if eigenvalue not in ("power", "exact"):
        raise AdvTransferError(f"eigenvalue must be 'power' or 'exact'; got {eigenvalue!r}")
    if score not in ("probability", "log"):
        raise AdvTransferError(f"score must be 'probability' or 'log'; got {score!r}")
    x, codes, n_classes = features_and_labels(features, labels)
    rows = np.arange(codes.shape[0])

    log_p, lam = _fda_log_posteriors(
        x, codes, n_classes, None if shrinkage is None else float(shrinkage), eigenvalue)
    confidence = softmax(np.exp(log_p), axis=1)[rows, codes][:, None]
    counts = np.bincount(codes, minlength=n_classes).astype(np.float64)
    means = np.zeros((n_classes, x.shape[1]))
    np.add.at(means, codes, x)
    means /= counts[:, None]
    outer = (means.sum(axis=0) - means) / (n_classes - 1)
    mixed = confidence * x + (1.0 - confidence) * outer[codes]

    log_p2, _ = _fda_log_posteriors(mixed, codes, n_classes, lam, eigenvalue)
    true_log = log_p2[rows, codes]
    if score == "log":
        return float(np.mean(true_log))
    return float(np.mean(np.exp(true_log)))
