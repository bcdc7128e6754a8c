r"""LEEP: Log Expected Empirical Prediction.

Reference: Cuong V. Nguyen, Tal Hassner, Matthias Seeger, Cedric Archambeau. *LEEP: A New
Measure to Evaluate Transferability of Learned Representations.* ICML 2020 (arXiv:2002.12462).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from advtransfer.estimators._validate import as_class_labels, as_probabilities, check_n_samples

__all__ = ["leep"]


def leep(source_probs: Any, labels: Any) -> float:
    r"""LEEP score of a source classifier for a target labelling.

    With :math:`\theta(x_i) \in \Delta^{Z}` the source model's predicted distribution over its
    :math:`Z` source classes for target sample :math:`x_i`, and :math:`y_i` the target label:

    .. math::

        \hat P(y, z) = \frac{1}{N} \sum_{i : y_i = y} \theta(x_i)_z, \qquad
        \hat P(y \mid z) = \frac{\hat P(y, z)}{\sum_{y'} \hat P(y', z)},

    .. math::

        \operatorname{LEEP} = \frac{1}{N} \sum_{i=1}^{N}
            \log \Bigl( \sum_{z} \hat P(y_i \mid z)\, \theta(x_i)_z \Bigr).

    It is the average log-likelihood of the "expected empirical predictor" and lies in
    :math:`(-\infty, 0]`: it is 0 when the predictions are one-hot and map one-to-one to the target
    labels, and equals the negative empirical entropy of the labels (:math:`\log(1/C)` for
    balanced classes) when the predictions carry no information. Source classes that receive
    zero total probability (:math:`\hat P(z) = 0`) do not contribute.

    Parameters
    ----------
    source_probs:
        ``(N, Z)`` source-class probabilities (softmax outputs; non-negative rows summing to 1
        within ``1e-4``), numpy or torch.
    labels:
        ``(N,)`` target class labels of any values (at least 2 classes).

    Returns
    -------
    float
        LEEP score (higher is better), at most 0.
    """
    theta = as_probabilities(source_probs, "source_probs")
    codes, n_classes = as_class_labels(labels, "labels")
    check_n_samples(theta.shape[0], "source_probs", codes.shape[0], "labels")
    n = theta.shape[0]

    joint = np.zeros((n_classes, theta.shape[1]), dtype=np.float64)
    np.add.at(joint, codes, theta)
    joint /= n
    marginal_z = joint.sum(axis=0)
    conditional = np.divide(
        joint, marginal_z, out=np.zeros_like(joint), where=marginal_z > 0
    )  # P(y | z), shape (C, Z)
    eep = np.einsum("iz,iz->i", theta, conditional[codes])
    # Every row of theta has some z with theta_iz > 0 and hence P(y_i|z) >= theta_iz / (N P(z)) > 0,
    # so eep > 0 in exact arithmetic; the floor only guards against underflow.
    return float(np.mean(np.log(np.maximum(eep, np.finfo(np.float64).tiny))))
