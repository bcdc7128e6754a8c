"""Transferability estimators and ranking evaluation.

Each estimator is a plain function on numpy arrays or torch tensors (converted to ``float64``
internally) that returns a Python ``float``; higher means the source model is expected to
transfer better. Class labels may take any values: they are mapped to ``0..C-1``.

* :func:`logme` - LogME, You et al., ICML 2021.
* :func:`leep` - LEEP, Nguyen et al., ICML 2020.
* :func:`nce` - negative conditional entropy, Tran et al., ICCV 2019.
* :func:`hscore` - H-score, Bao et al., ICIP 2019; :func:`regularized_hscore` - regularized
  H-score (shrinkage), Ibrahim et al., 2022.
* :func:`transrate` - TransRate, Huang et al., ICML 2022 (the authors' L2 preprocessing).
* :func:`gbc` - Gaussian Bhattacharyya coefficient, Pándy et al., CVPR 2022 (spherical, in the
  space of the first 64 principal components, as the released configuration).
* :func:`~advtransfer.estimators.nleep.nleep` (Li et al., CVPR 2021),
  :func:`~advtransfer.estimators.parc.parc` (Bolya et al., NeurIPS 2021),
  :func:`~advtransfer.estimators.sfda.sfda` (Shao et al., ECCV 2022),
  :func:`~advtransfer.estimators.knn.knn_accuracy` (leave-one-out k-NN accuracy),
  :func:`~advtransfer.estimators.lfc.lfc` and :func:`~advtransfer.estimators.lfc.lgc`
  (Deshpande et al., 2021), :func:`~advtransfer.estimators.tmi.tmi` (Xu & Kang, ICCV 2023),
  :func:`~advtransfer.estimators.ped.ped` (PED around any of them, Li et al., ICCV 2023), and
  the pool-normalised :func:`~advtransfer.estimators.ncti.ncti` (Wang et al., ICCV 2023) and
  :func:`~advtransfer.estimators.etran.etran` (Gholami et al., ICCV 2023) with their raw parts.

:mod:`advtransfer.estimators.ranking` compares estimator scores with ground-truth fine-tuning
results (:func:`evaluate_ranking`, weighted Kendall tau, top-k relative accuracy);
:mod:`advtransfer.estimators.protocol` is the evaluation protocol (rel@k, regret@k, bootstrap
intervals over candidates and targets, the fine-tuning seeds' ceiling, static and random
baselines).
"""

from __future__ import annotations

from advtransfer.estimators.etran import ETranParts, etran, etran_parts
from advtransfer.estimators.gbc import gbc
from advtransfer.estimators.hscore import hscore, regularized_hscore
from advtransfer.estimators.knn import knn_accuracy
from advtransfer.estimators.leep import leep
from advtransfer.estimators.lfc import lfc, lgc, per_sample_gradients
from advtransfer.estimators.logme import logme
from advtransfer.estimators.nce import nce
from advtransfer.estimators.ncti import NCTIParts, ncti, ncti_parts
from advtransfer.estimators.nleep import nleep
from advtransfer.estimators.parc import parc
from advtransfer.estimators.ped import ped, ped_features
from advtransfer.estimators.ranking import (
    RankingEvaluation,
    evaluate_ranking,
    kendall_tau,
    pearson,
    top_k_relative_accuracy,
    weighted_kendall_tau,
)
from advtransfer.estimators.sfda import sfda
from advtransfer.estimators.tmi import tmi
from advtransfer.estimators.transrate import transrate

__all__ = [
    "ETranParts",
    "NCTIParts",
    "RankingEvaluation",
    "etran",
    "etran_parts",
    "evaluate_ranking",
    "gbc",
    "hscore",
    "kendall_tau",
    "knn_accuracy",
    "leep",
    "lfc",
    "lgc",
    "logme",
    "nce",
    "ncti",
    "ncti_parts",
    "nleep",
    "parc",
    "pearson",
    "ped",
    "ped_features",
    "per_sample_gradients",
    "regularized_hscore",
    "sfda",
    "tmi",
    "top_k_relative_accuracy",
    "transrate",
    "weighted_kendall_tau",
]
