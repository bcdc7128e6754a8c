"""Transferability estimators and ranking evaluation.

Each estimator is a plain function on numpy arrays or torch tensors (converted to ``float64``
internally) that returns a Python ``float``; higher means the source model is expected to
transfer better. Class labels may take any values: they are mapped to ``0..C-1``.

* :func:`logme` - LogME, You et al., ICML 2021.
* :func:`leep` - LEEP, Nguyen et al., ICML 2020.
* :func:`nce` - negative conditional entropy, Tran et al., ICCV 2019.
* :func:`hscore` - H-score, Bao et al., ICIP 2019; :func:`regularized_hscore` - regularized
  H-score (shrinkage), Ibrahim et al., 2022.
* :func:`transrate` - TransRate, Huang et al., ICML 2022 (centred features scaled to unit
  Frobenius norm by default, as the field's benchmark code).
* :func:`gbc` - Gaussian Bhattacharyya coefficient, Pándy et al., CVPR 2022 (in the space of
  the first 64 principal components, as published).

:mod:`advtransfer.estimators.ranking` compares estimator scores with ground-truth fine-tuning
results (:func:`evaluate_ranking`, weighted Kendall tau, top-k relative accuracy).
"""

from __future__ import annotations

from advtransfer.estimators.gbc import gbc
from advtransfer.estimators.hscore import hscore, regularized_hscore
from advtransfer.estimators.leep import leep
from advtransfer.estimators.logme import logme
from advtransfer.estimators.nce import nce
from advtransfer.estimators.ranking import (
    RankingEvaluation,
    evaluate_ranking,
    kendall_tau,
    pearson,
    top_k_relative_accuracy,
    weighted_kendall_tau,
)
from advtransfer.estimators.transrate import transrate

__all__ = [
    "RankingEvaluation",
    "evaluate_ranking",
    "gbc",
    "hscore",
    "kendall_tau",
    "leep",
    "logme",
    "nce",
    "pearson",
    "regularized_hscore",
    "top_k_relative_accuracy",
    "transrate",
    "weighted_kendall_tau",
]
