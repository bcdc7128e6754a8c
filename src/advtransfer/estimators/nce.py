r"""NCE: Negative Conditional Entropy between source and target labels.

Reference: Anh T. Tran, Cuong V. Nguyen, Tal Hassner. *Transferability and Hardness of
Supervised Classification Tasks.* ICCV 2019 (arXiv:1908.08142).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from advtransfer.estimators._validate import as_class_labels, check_n_samples

__all__ = ["nce"]


def nce(source_labels: Any, target_labels: Any) -> float:
    r"""Negative conditional entropy :math:`-H(Y \mid Z)` of target labels given source labels.

    With :math:`z_i` the hard label assigned to sample :math:`i` by the source model (e.g. the
    arg-max of its prediction) and :math:`y_i` the target label, the empirical joint is
    :math:`\hat P(y, z) = \frac{1}{N} \#\{i : y_i = y, z_i = z\}` and

    .. math::

        \operatorname{NCE} = -H(Y \mid Z)
            = \sum_{y, z} \hat P(y, z) \log \frac{\hat P(y, z)}{\hat P(z)}.

    It lies in :math:`[-\log C, 0]` and is 0 exactly when the target label is a function of the
    source label. Natural logarithm.

    Parameters
    ----------
    source_labels:
        ``(N,)`` hard source labels of any values (one class is allowed).
    target_labels:
        ``(N,)`` target class labels of any values (at least 2 classes).

    Returns
    -------
    float
        NCE score (higher is better), at most 0.
    """
    z, n_source = as_class_labels(source_labels, "source_labels", min_classes=1)
    y, n_target = as_class_labels(target_labels, "target_labels")
    check_n_samples(z.shape[0], "source_labels", y.shape[0], "target_labels")
    n = z.shape[0]

    joint = np.zeros((n_target, n_source), dtype=np.float64)
    np.add.at(joint, (y, z), 1.0)
    joint /= n
    marginal_z = joint.sum(axis=0, keepdims=True)  # every source class occurs, so > 0
    nz = joint > 0
    return float(np.sum(joint[nz] * np.log((joint / marginal_z)[nz])))
