r"""LogME: logarithm of maximum evidence of a Bayesian linear model on frozen features.

Reference: Kaichao You, Yong Liu, Jianmin Wang, Mingsheng Long. *LogME: Practical Assessment of
Pre-trained Models for Transfer Learning.* ICML 2021 (arXiv:2102.11005).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from advtransfer.estimators._validate import (
    as_array,
    as_class_labels,
    as_features,
    check_n_samples,
)

__all__ = ["logme"]

#: Guard added to the denominators of the fixed-point updates, as in the reference code.
_EPS = 1e-5
#: Relative change of ``alpha / beta`` below which the fixed-point iteration stops.
_TOL = 1e-6
_MAX_ITER = 200


def logme(features: Any, labels: Any, *, regression: bool = False) -> float:
    r"""Log maximum evidence per sample (LogME) of a linear model on ``features``.

    For each target column :math:`y \in \mathbb{R}^N` (the one-hot indicator of every class in
    classification, or every column of a float target in regression) LogME models
    :math:`y = F w + \varepsilon` with prior :math:`w \sim \mathcal{N}(0, \alpha^{-1} I_D)` and
    noise :math:`\varepsilon \sim \mathcal{N}(0, \beta^{-1} I_N)`, where :math:`F` is the
    :math:`N \times D` feature matrix. The log evidence is

    .. math::

        \mathcal{L}(\alpha, \beta) = \tfrac{D}{2}\log\alpha + \tfrac{N}{2}\log\beta
            - \tfrac12 \log|A| - \tfrac{\beta}{2}\lVert y - F m\rVert^2
            - \tfrac{\alpha}{2}\lVert m\rVert^2 - \tfrac{N}{2}\log 2\pi,

    with :math:`A = \alpha I + \beta F^\top F` and :math:`m = \beta A^{-1} F^\top y`. It is
    maximised by MacKay's fixed-point iteration (Algorithm 1 of the paper, in the SVD form of the
    reference code): with :math:`F = U \operatorname{diag}(s) V^\top`, :math:`\sigma_j = s_j^2`,
    :math:`x = U^\top y` and :math:`t = \alpha / \beta`,

    .. math::

        \gamma = \sum_j \frac{\sigma_j}{\sigma_j + t}, \quad
        \lVert m\rVert^2 = \sum_j \frac{\sigma_j x_j^2}{(\sigma_j + t)^2}, \quad
        \lVert y - Fm\rVert^2 = \sum_j \frac{t^2 x_j^2}{(\sigma_j + t)^2}
            + \bigl(\lVert y\rVert^2 - \lVert x\rVert^2\bigr),

    .. math::

        \alpha \leftarrow \frac{\gamma}{\lVert m\rVert^2}, \qquad
        \beta \leftarrow \frac{N - \gamma}{\lVert y - Fm\rVert^2}.

    The result is :math:`\frac{1}{K}\sum_{k=1}^{K} \mathcal{L}_k(\alpha_k^*, \beta_k^*) / N`,
    the per-sample maximum log evidence averaged over the :math:`K` target columns. Higher means
    the features are expected to transfer better.

    Implementation notes: as in the reference code a guard of ``1e-5`` is added to the
    denominators of the updates. The iteration runs until :math:`t` changes by less than
    ``1e-6`` relative (at most 200 steps; the reference stops at ``1e-3`` or 11 steps), and the
    evidence is evaluated with :math:`m` recomputed at the final :math:`(\alpha, \beta)`. When
    :math:`D > N` the :math:`D - \operatorname{rank}(F)` zero eigenvalues of :math:`F^\top F`
    contribute :math:`\log\alpha` each to :math:`\log|A|`; the reference's truncated-SVD code
    drops them, which this implementation does not.

    The evidence need not have an interior maximum: for features that explain the target no
    better than noise it keeps increasing as :math:`\alpha \to \infty` (the model
    :math:`w = 0`), and the fixed point the reference code reports is then slightly below the
    supremum (typically by :math:`10^{-4}`-:math:`10^{-3}` per sample). To return the maximum
    evidence proper, the result for each column is the larger of the fixed point and the
    boundary values :math:`\alpha = \infty` (:math:`y \sim \mathcal{N}(0, \beta^{-1} I)` with
    :math:`\beta = N / \lVert y\rVert^2`) and, when :math:`\operatorname{rank} F = N`,
    :math:`\beta = \infty` (:math:`y \sim \mathcal{N}(0, \alpha^{-1} F F^\top)`). For
    informative features (the case that matters for ranking) the fixed point is the maximum and
    the result equals the reference algorithm's.

    Parameters
    ----------
    features:
        ``(N, D)`` features of the target data from the candidate model (numpy or torch).
    labels:
        Classification (default): ``(N,)`` class labels of any values (at least 2 classes).
        Regression (``regression=True``): ``(N,)`` or ``(N, K)`` float targets.
    regression:
        Treat ``labels`` as real-valued targets instead of classes.

    Returns
    -------
    float
        LogME score (higher is better). Not comparable across different target tasks.
    """
    f = as_features(features, "features")
    n, d = f.shape
    if regression:
        y = as_array(
            labels, "labels", ndim=(1, 2), shape_hint="of regression targets (N,) or (N, K)"
        )
        if y.ndim == 1:
            y = y[:, None]
        check_n_samples(n, "features", y.shape[0], "labels")
    else:
        codes, n_classes = as_class_labels(labels, "labels")
        check_n_samples(n, "features", codes.shape[0], "labels")
        y = np.zeros((n, n_classes), dtype=np.float64)
        y[np.arange(n), codes] = 1.0

    u, s, _ = np.linalg.svd(f, full_matrices=False)
    if s.size and s[0] > 0:
        keep = s > s[0] * max(n, d) * np.finfo(np.float64).eps
    else:
        keep = np.zeros_like(s, dtype=bool)
    u, sigma = u[:, keep], s[keep] ** 2
    x = u.T @ y  # (k, K): coordinates of every target column in the column space of F
    evidences = [
        _max_log_evidence(sigma, x[:, j], float(y[:, j] @ y[:, j]), n)[0] for j in range(y.shape[1])
    ]
    return float(np.mean(evidences))


def _max_log_evidence(
    sigma: np.ndarray, x: np.ndarray, yy: float, n: int
) -> tuple[float, float, float]:
    """Maximise the evidence for one target column; return ``(evidence / n, alpha, beta)``.

    ``sigma`` holds the non-zero squared singular values of ``F``, ``x = U^T y`` and
    ``yy = ||y||^2``. The ``D/2 log(alpha) - 1/2 log|A|`` terms are combined into
    ``-1/2 sum_j log(1 + sigma_j / t)``, which is exact for any ``D >= rank(F)``.
    """
    x2 = x**2
    res_x2 = max(yy - float(x2.sum()), 0.0)  # part of ||y||^2 orthogonal to the span of F
    log2pi = math.log(2.0 * math.pi)
    if sigma.size == 0:  # all-zero features: only the noise model remains
        beta = n / (res_x2 + _EPS)
        evidence = 0.5 * n * math.log(beta) - 0.5 * beta * res_x2 - 0.5 * n * log2pi
        return evidence / n, math.inf, beta

    def stats(t: float) -> tuple[float, float, float]:
        ratio = t / (sigma + t)
        gamma = float(np.sum(sigma / (sigma + t)))
        m2 = float(np.sum(sigma * x2 / (sigma + t) ** 2))
        res2 = float(np.sum(x2 * ratio**2)) + res_x2
        return gamma, m2, res2

    alpha, beta = 1.0, 1.0
    for _ in range(_MAX_ITER):
        t = alpha / beta
        gamma, m2, res2 = stats(t)
        alpha = gamma / (m2 + _EPS)
        beta = (n - gamma) / (res2 + _EPS)
        t_new = alpha / beta
        if not (math.isfinite(t_new) and t_new > 0) or abs(t_new - t) <= _TOL * t:
            break
    best = (-math.inf, alpha, beta)
    if math.isfinite(alpha) and math.isfinite(beta) and alpha > 0 and beta > 0:
        t = alpha / beta
        _, m2, res2 = stats(t)
        evidence = (
            0.5 * n * math.log(beta)
            - 0.5 * float(np.sum(np.log1p(sigma / t)))
            - 0.5 * beta * res2
            - 0.5 * alpha * m2
            - 0.5 * n * log2pi
        )
        best = (evidence / n, alpha, beta)

    # Boundary alpha -> inf (w = 0, noise-only model), maximised over beta = n / ||y||^2.
    beta0 = n / (yy + _EPS)
    noise_only = 0.5 * n * math.log(beta0) - 0.5 * beta0 * yy - 0.5 * n * log2pi
    if noise_only / n > best[0]:
        best = (noise_only / n, math.inf, beta0)

    # Boundary beta -> inf, finite only when F F^T is invertible (rank F = n):
    # y ~ N(0, F F^T / alpha), maximised at alpha = n / (y^T (F F^T)^{-1} y).
    if sigma.size == n:
        quad = float(np.sum(x2 / sigma))
        if quad > 0:
            alpha_inf = n / quad
            interp = -0.5 * (
                n * log2pi + float(np.sum(np.log(sigma))) - n * math.log(alpha_inf) + n
            )
            if interp / n > best[0]:
                best = (interp / n, alpha_inf, math.inf)
    return best
