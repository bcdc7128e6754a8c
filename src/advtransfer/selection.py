r"""Model selection: rank candidate source models for a target task, and evaluate the ranking.

Given a pool of candidate source models f_S (pretrained on other tasks), labelled data of a target
task and a *reference* model f_T trained on that target task, :func:`rank` scores every candidate
with any of these methods (higher = predicted to transfer better, for every method):

Adversarial transferability (Liang et al., *Does Adversarial Transferability Indicate Knowledge
Transferability?*, ICML 2021, arXiv:2006.14512; docs/design.md §2), between each candidate and the
reference on target inputs x:

* ``alpha1``: mean over x of ||Delta_{A->B}(x)|| / ||Delta_{B->B}(x)||, with
  Delta_{A->B}(x) = f_B(x + delta_A(x)) - f_B(x) and delta_A the attack crafted on A;
* ``alpha2``: ||E_x[u_{A->A}(x) u_{A->B}(x)^T]||_F with u the unit deviations;
* ``combined``: ||E_x[alpha1^{A->B}(x) u_{A->A}(x) u_{A->B}(x)^T]||_F.

  **Direction.** The plain names use the *target -> source* direction (A = the reference f_T,
  B = the candidate f_S): the perturbation is crafted once on the reference and applied to every
  candidate. This is the direction of the authors' ``adv2know.py`` (attack the target-trained
  model, evaluate the source); their ``know2adv.py`` reports source -> target first. Both
  directions are always available by name: ``alpha1_t2s`` (= ``alpha1``), ``alpha2_t2s``,
  ``combined_t2s`` and ``alpha1_s2t``, ``alpha2_s2t``, ``combined_s2t`` (attacks crafted on the
  candidate, applied to the reference).
  Both directions come from the same attacks, so asking for both costs no extra attack (only
  one deviation pass per candidate and sample; a direction nobody asked for is not evaluated).

  **On the transferred representation** (an extension of the paper, issue 11): the paper's
  affine g acts on f_S's outputs, but fine-tuning fits its new head on the penultimate features
  h_S(x) (the input of the last ``nn.Linear`` called, :mod:`advtransfer.models.features`).
  ``alpha1_features``, ``alpha2_features``, ``combined_features`` (t2s) and their ``*_s2t``
  twins are the same three quantities with the candidate's output f_S replaced by h_S, e.g.
  ``alpha1_features`` = mean over x of ||h_S(x + delta_T(x)) - h_S(x)|| /
  ||h_S(x + delta_{h_S}(x)) - h_S(x)||, with delta_T the attack on the reference's outputs and
  delta_{h_S} the attack that maximises the deviation of h_S itself. The reference side stays
  f_T's outputs. For a linear h_S(x) = W x + b and f_T(x) = A x with L2 attacks this is
  ||W v_A|| / sigma_1(W), v_A the top right singular vector of A (tested).

  **One candidate at a time.** The reference is attacked once for the whole pool
  (:func:`advtransfer.reference.attack_reference`); each candidate is then one independent
  unit of work (:func:`score_candidate`: build or load it, measure it against the stored
  attack with its own attack, run the estimators, let it go), so N candidates cost N + 1
  attacks and memory holds one candidate at a time when candidates are given as specs or
  builder functions. The units run in this process or as Ray tasks (``executor="ray"``,
  :mod:`advtransfer.executors`); a candidate's scores do not depend on the pool it is ranked
  in (its random draws are seeded by the seed and its name).

Feature-based estimators (:mod:`advtransfer.estimators`), on the candidate's outputs for the
target data, all "higher is better" as published:

* on the *penultimate features* h_S(x) (the input of the last ``nn.Linear`` the
  candidate calls in forward, :mod:`advtransfer.models.features`):
  ``logme`` (You et al., ICML 2021; log marginal evidence per sample), ``hscore`` (Bao et al.,
  ICIP 2019), ``regularized_hscore`` (Ibrahim et al., 2022), ``transrate`` (Huang et al.,
  ICML 2022; the authors' L2 preprocessing), ``gbc`` (Pándy et al., CVPR 2022; spherical, in
  PCA-64 space fitted per candidate; <= 0), ``nleep`` (Li et al., CVPR 2021), ``parc`` (Bolya
  et al., NeurIPS 2021), ``sfda`` (Shao et al., ECCV 2022), ``knn`` (leave-one-out k-NN
  accuracy), ``lfc`` (Deshpande et al., 2021), ``tmi`` (Xu & Kang, ICCV 2023), and
  ``ped_<any of these>`` (PED, Li et al., ICCV 2023: the estimator after PED's class
  repulsion; ``ped_tmi`` equals ``tmi``, which only sees within-class spread);
* pool-normalised (Wang et al., ICCV 2023 ``ncti``; Gholami et al., ICCV 2023 ``etran``): each
  part is min-max normalised over the candidates ranked together, so a candidate's score
  depends on the pool; the raw parts are methods of their own (``ncti_vc``, ``ncti_seli``,
  ``ncti_ncc``, ``etran_energy``, ``etran_lda``, ``etran_svd``), computed per candidate;
* on the *softmax outputs* softmax(f_S(x)): ``leep`` (Nguyen et al., ICML 2020; <= 0);
* on the *arg-max labels* argmax f_S(x): ``nce`` (Tran et al., ICCV 2019; -H(Y|Z) <= 0);
* on the *per-sample parameter gradients* of the sum of the outputs: ``lgc`` (Deshpande et
  al., 2021; the linearised-fine-tuning kernel, which shares the Jacobian with the adversarial
  scores).

Each estimator's formula, reference code and where that code and the paper differ are in its
module's docstring (:mod:`advtransfer.estimators`); the published code's choices are the
defaults.

Combinations (:func:`combine`; :func:`rank_average`, no fitted weight): ``alpha1_logme_rankavg``,
``alpha1_leep_rankavg``, ``alpha1_features_logme_rankavg`` and ``alpha1_features_leep_rankavg``
score each candidate by the mean of its normalised ranks (1 = best, 0 = worst) under the two
named methods, s(c) = (q_alpha(c) + q_est(c)) / 2 (a Borda count, the usual scale-free way to
merge rankings whose units differ; see :data:`RANK_AVERAGE_METHODS`).

Baselines:

* ``source_accuracy``: the data-free baseline, each candidate's accuracy on its own source task
  (e.g. ImageNet top-1), passed by the caller;
* ``linear_probe`` (formerly ``finetune``, still accepted with a DeprecationWarning): the
  expensive ground truth itself, the held-out accuracy of a linear head
  fitted on the penultimate features (:func:`advtransfer.knowledge.knowledge_transfer`) on a
  seeded split of the target data. It is what every other method tries to predict cheaply.

:func:`evaluate_methods` compares the scores with ground-truth transfer results (weighted Kendall
tau, Kendall tau, Pearson r, top-k relative accuracy; :mod:`advtransfer.estimators.ranking`), and
:func:`summarize` tabulates an evaluation metric per target and its mean.
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, astuple, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from advtransfer.attacks import AttackConfig, AttackKeywords, resolve_attack
from advtransfer.data.batches import labelled
from advtransfer.errors import AdvTransferError, AdvTransferTypeError, NotApplicableError
from advtransfer.estimators import (
    ETranParts,
    NCTIParts,
    RankingEvaluation,
    etran,
    etran_parts,
    evaluate_ranking,
    gbc,
    hscore,
    knn_accuracy,
    leep,
    lfc,
    lgc,
    logme,
    nce,
    ncti,
    ncti_parts,
    nleep,
    parc,
    ped,
    per_sample_gradients,
    regularized_hscore,
    sfda,
    tmi,
    transrate,
)
from advtransfer.executors import Executor, connect, get_executor
from advtransfer.methods import (
    ADVERSARIAL_FEATURE_METHODS,
    ADVERSARIAL_METHODS,
    BASE_FEATURE_METHODS,
    COMBINED_METHODS,
    DEFAULT_METHODS,
    DEPRECATED_METHODS,
    ESTIMATOR_METHODS,
    FEATURE_METHODS,
    METHODS,
    OUTPUT_METHODS,
    PED_METHODS,
    POOL_METHODS,
    RANK_AVERAGE_METHODS,
    needed_methods,
)
from advtransfer.metrics import Convention, resolve_device
from advtransfer.models.adapters import forward, frozen
from advtransfer.models.features import PenultimateCapture, has_linear
from advtransfer.progress import track
from advtransfer.reference import ReferenceAttack, attack_reference, measure_against_reference
from advtransfer.report import md_table
from advtransfer.training import labelled_loader

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "ADVERSARIAL_FEATURE_METHODS",
    "ADVERSARIAL_METHODS",
    "DEFAULT_METHODS",
    "FEATURE_METHODS",
    "METHODS",
    "OUTPUT_METHODS",
    "RANK_AVERAGE_METHODS",
    "CandidateOutputs",
    "RankingResult",
    "CandidatePlan",
    "CandidateScores",
    "candidate_outputs",
    "estimator_scores",
    "evaluate_methods",
    "evaluation_to_dict",
    "load_candidate",
    "markdown_table",
    "needs_reference",
    "normalized_ranks",
    "prepare_reference",
    "rank",
    "rank_average",
    "score_candidate",
    "summarize",
    "target_tensors",
]

#: Most entries (samples x parameters) of the per-sample gradient matrix LGC may hold (float32:
#: 4 bytes each, so about 1 GB).
GRADIENT_BUDGET = 2**28
_ESTIMATORS: dict[str, Callable[..., float]] = {
    "logme": logme, "hscore": hscore, "regularized_hscore": regularized_hscore,
    "transrate": transrate, "gbc": gbc, "nleep": nleep, "parc": parc, "sfda": sfda,
    "knn": knn_accuracy, "lfc": lfc, "tmi": tmi,
}
assert set(_ESTIMATORS) == set(BASE_FEATURE_METHODS)
#: The pool-normalised estimators: name -> (its raw parts from one candidate's features, the
#: parts' type, rebuilt from their stored scores, the normalisation of a pool of parts).
_POOLED: dict[str, tuple[Callable[..., Any], Callable[..., Any],
                         Callable[[Sequence[Any]], list[float]]]] = {
    "ncti": (ncti_parts, NCTIParts, ncti), "etran": (etran_parts, ETranParts, etran),
}


# ---------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------


def _sort_key(value: float) -> tuple[int, float]:
    return (1, 0.0) if value is None or not math.isfinite(value) else (0, -float(value))


@dataclass(frozen=True)
class RankingResult:
    """Scores of every candidate by every method (higher = predicted to transfer better).

    Attributes:
        candidates: candidate names, in input order.
        methods: the methods computed, in the order asked (the first is the default sort key).
        scores: ``{method: {candidate: score}}``; ``nan`` where a method is undefined for a
            candidate (e.g. alpha1 when the victim never moves), ranked last.
        details: ``{candidate: {...}}`` extra numbers, e.g. ``n_alpha1_above_one_t2s`` (PGD is
            approximate, so alpha1 may exceed 1; never clipped), ``feature_dim``,
            ``finetune_train_accuracy``.
        timings: wall time in seconds per stage: ``adversarial`` (the whole pool), ``forward``
            (feature passes), one entry per estimator, ``linear_probe``.
        config: the resolved settings (attack, samples, seed, device).
        reference_accuracy: accuracy of the reference (target-trained) model on the labelled
            target data given to :func:`rank` (``None`` when no adversarial method was asked
            for). The alpha scores measure how the candidates follow the reference, so they say
            little when the reference itself classifies the target poorly.
    """

    candidates: tuple[str, ...]
    methods: tuple[str, ...]
    scores: dict[str, dict[str, float]] = field(repr=False)
    details: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    timings: dict[str, float] = field(default_factory=dict, repr=False)
    config: dict[str, Any] = field(default_factory=dict, repr=False)
    reference_accuracy: float | None = None

    def _method(self, method: str | None) -> str:
        if method is None:
            return self.methods[0]
        if method not in self.scores:
            raise AdvTransferError(f"method must be one of the computed methods "
                                   f"{list(self.methods)}; got {method!r}")
        return method

    def order(self, method: str | None = None) -> list[str]:
        """Candidate names best first by ``method`` (default: the first method); undefined
        scores last; ties keep the input order."""
        m = self._method(method)
        return sorted(self.candidates, key=lambda c: _sort_key(self.scores[m][c]))

    def best(self, method: str | None = None) -> str:
        """The candidate ``method`` would pick."""
        return self.order(method)[0]

    def table(self, method: str | None = None) -> list[dict[str, Any]]:
        """One row per candidate, sorted by ``method`` (best first): ``rank``, ``candidate``
        and every method's score."""
        m = self._method(method)
        return [{"rank": i + 1, "candidate": c, **{k: self.scores[k][c] for k in self.methods}}
                for i, c in enumerate(self.order(m))]

    def evaluate(self, truth: Mapping[str, float], *,
                 ks: Iterable[int] = (1, 3)) -> dict[str, RankingEvaluation]:
        """:func:`evaluate_methods` of these scores against ground truth ``truth``."""
        return evaluate_methods(self.scores, truth, ks=ks)

    def to_dict(self, method: str | None = None) -> dict[str, Any]:
        """A JSON-ready dictionary: scores, the ranking by every method and the sorted table."""
        m = self._method(method)
        return {"sort_by": m, "methods": list(self.methods), "candidates": list(self.candidates),
                "reference_accuracy": self.reference_accuracy,
                "scores": {k: dict(v) for k, v in self.scores.items()},
                "ranking": {k: self.order(k) for k in self.methods},
                "table": self.table(m), "details": self.details, "timings": self.timings,
                "config": self.config}

    def to_csv(self, method: str | None = None) -> str:
        """The :meth:`table` as CSV text (``rank,candidate,<methods>``; empty cell = undefined)."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["rank", "candidate", *self.methods])
        for row in self.table(method):
            writer.writerow([row["rank"], row["candidate"],
                             *("" if not _finite(row[k]) else repr(float(row[k]))
                               for k in self.methods)])
        return buf.getvalue()


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float, np.floating)) and math.isfinite(float(v))


# ---------------------------------------------------------------------------------------------
# candidates
# ---------------------------------------------------------------------------------------------


def load_candidate(spec: str, weights: str | os.PathLike[str] | None = None) -> nn.Module:
    """``advtransfer.models.create(spec, weights)``: a candidate model from a spec (kept for
    backward compatibility; see :func:`advtransfer.models.registry.create` for the specs, e.g.
    ``"builtin:digits-cnn"``, ``"cifar:resnet18"``, ``"tv:resnet50"``, ``"timm:NAME"``,
    ``"package.module:factory"``). Returns the model in eval mode."""
    from advtransfer.models.registry import create

    return create(spec, weights)


Candidate = nn.Module | str | tuple[str, Any] | Callable[[], nn.Module]
"""A candidate: a model, a spec ``"SPEC"`` / ``"SPEC=WEIGHTS"``, a pair ``(spec, weights)``, or
a zero-argument function that builds the model (called inside the candidate's unit of work,
so only one such model is in memory at a time)."""


def _candidate_sources(candidates: Any) -> dict[str, Candidate]:
    """Names -> candidates, checked but not loaded (specs and builders are loaded inside each
    candidate's unit, one at a time)."""
    if isinstance(candidates, nn.Module) or isinstance(candidates, (str, bytes)):
        raise AdvTransferTypeError("candidates must be a mapping name -> model (or spec) or a "
                                   "list of specs/models; got a single "
                                   f"{type(candidates).__name__}")
    if isinstance(candidates, Mapping):
        items = [(str(k), v) for k, v in candidates.items()]
    elif isinstance(candidates, Iterable):
        items = []
        for i, item in enumerate(candidates):
            if isinstance(item, str):
                items.append((item, item))
            elif isinstance(item, (tuple, list)) and len(item) == 2:
                items.append((str(item[0]), tuple(item)))
            elif isinstance(item, nn.Module) or callable(item):
                items.append((f"model_{i}", item))
            else:
                raise AdvTransferTypeError(
                    f"candidates[{i}] must be an nn.Module, a spec string ('SPEC' or "
                    f"'SPEC=WEIGHTS'), a pair (spec, weights) or a function building the "
                    f"model; got {type(item).__name__}")
    else:
        raise AdvTransferTypeError(f"candidates must be a mapping or a list; got "
                                   f"{type(candidates).__name__}")
    if not items:
        raise AdvTransferError("candidates is empty; pass at least one candidate model")
    out: dict[str, Candidate] = {}
    for name, value in items:
        if name in out:
            raise AdvTransferError(f"candidates has the name {name!r} twice; names must be "
                                   "unique")
        if isinstance(value, list):
            value = tuple(value)
        if not (isinstance(value, (nn.Module, str)) or callable(value)
                or (isinstance(value, tuple) and len(value) == 2)):
            raise AdvTransferTypeError(f"candidates[{name!r}] must be an nn.Module, a spec "
                                       f"string or a function building the model; got "
                                       f"{type(value).__name__}")
        out[name] = value
    return out


def _build_candidate(value: Candidate, name: str) -> tuple[nn.Module, bool]:
    """The candidate's model, and whether it was built here (and so may be moved)."""
    if isinstance(value, nn.Module):
        return value, False
    if isinstance(value, str):
        spec, _, weights = value.partition("=")
        return load_candidate(spec, weights or None), True
    if isinstance(value, tuple):
        return load_candidate(value[0], value[1]), True
    model = value()
    if not isinstance(model, nn.Module):
        raise AdvTransferTypeError(f"the builder of candidate {name!r} must return an "
                                   f"nn.Module; got {type(model).__name__}")
    return model.eval(), True


# ---------------------------------------------------------------------------------------------
# target data
# ---------------------------------------------------------------------------------------------


def _check_target_data(data: Any) -> Any:
    if isinstance(data, (DataLoader, Dataset)):
        if not isinstance(data, DataLoader) and hasattr(data, "__len__") and len(data) < 2:
            raise AdvTransferError(f"target_data must hold at least 2 labelled samples; got "
                                   f"{len(data)}")
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise AdvTransferTypeError("target_data as a pair must be (x, y) torch tensors; got "
                                       f"({type(x).__name__}, {type(y).__name__})")
        if not x.is_floating_point():
            raise AdvTransferTypeError(f"target_data x must be floating point; got {x.dtype}")
        if y.ndim != 1:
            raise AdvTransferError(f"target_data y must be a 1-D tensor of class labels; got "
                                   f"shape {tuple(y.shape)}")
        if y.is_floating_point() or y.is_complex():
            raise AdvTransferTypeError(f"target_data y must hold integer class labels; got "
                                       f"{y.dtype}")
        if len(x) != len(y):
            raise AdvTransferError(f"target_data x has {len(x)} samples but y has {len(y)}")
        if len(x) < 2:
            raise AdvTransferError(f"target_data must hold at least 2 labelled samples; got "
                                   f"{len(x)}")
        if torch.unique(y).numel() < 2:
            raise AdvTransferError("target_data y must contain at least 2 classes; got "
                                   f"only {y.unique().tolist()}")
        return x, y
    raise AdvTransferTypeError("target_data must be a pair (x, y) of tensors, a Dataset or a "
                               f"DataLoader of (x, y); got {type(data).__name__}")


def _subset_index(total: int, n: int | None, seed: int) -> torch.Tensor | None:
    """The sorted indices of a seeded random subset of ``n`` of ``total`` samples (None: all)."""
    if n is None or n >= total:
        return None
    return torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n].sort().values


def _take_labelled(data: Any, n: int | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to ``n`` labelled samples: a seeded random subset of tensors or of a Dataset (only
    those are decoded), the first ``n`` of a DataLoader."""
    if isinstance(data, tuple):
        x, y = data
        idx = _subset_index(len(x), n, seed)
        return (x, y) if idx is None else (x[idx], y[idx])
    if isinstance(data, Dataset) and hasattr(data, "__len__"):
        idx = _subset_index(len(data), n, seed)  # type: ignore[arg-type]
        if idx is not None:
            data = Subset(data, idx.tolist())
    return _decode(data, n)


def target_tensors(data: Any, *, description: str = "reading target data",
                   progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Labelled target data (a pair of tensors, a Dataset or a DataLoader of ``(x, y)``)
    decoded once into a pair of tensors ``(x, y)`` held in memory, so that the candidates of a
    pool never decode the same images again."""
    data = _check_target_data(data)
    if isinstance(data, tuple):
        return data
    return _decode(data, None, description=description, progress=progress)


def _decode(data: Any, limit: int | None, *, description: str = "reading target data",
            progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The (first ``limit``) samples of a Dataset or DataLoader of ``(x, y)`` as tensors."""
    xs, ys, have = [], [], 0
    for batch in track(labelled_loader(data, batch_size=256, shuffle=False, name="target_data"),
                       description=description, enabled=progress):
        x, y = labelled(batch, name="target_data")
        xs.append(x)
        ys.append(torch.as_tensor(y).reshape(-1))
        have += len(x)
        if limit is not None and have >= limit:
            break
    if not xs:
        raise AdvTransferError("target_data yielded no samples")
    x, y = torch.cat(xs), torch.cat(ys)
    return (x, y) if limit is None else (x[:limit], y[:limit])


def _split(data: Any, test_fraction: float, seed: int) -> tuple[Any, Any]:
    """A seeded train/test split of tensors or of a Dataset (a DataLoader's dataset)."""
    if isinstance(data, DataLoader):
        data = data.dataset
    n = len(data[0]) if isinstance(data, tuple) else len(data)
    n_test = max(1, round(test_fraction * n))
    if n - n_test < 1:
        raise AdvTransferError(f"target_data has {n} samples: too few to split for 'linear_probe' "
                               f"(finetune_test_fraction={test_fraction})")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    test_idx, train_idx = perm[:n_test].sort().values, perm[n_test:].sort().values
    if isinstance(data, tuple):
        x, y = data
        return (x[train_idx], y[train_idx]), (x[test_idx], y[test_idx])
    return Subset(data, train_idx.tolist()), Subset(data, test_idx.tolist())


# ---------------------------------------------------------------------------------------------
# features and estimators
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CandidateOutputs:
    """One forward pass of a candidate over the target data.

    ``features``: the penultimate features (input of the last ``nn.Linear`` called), or
    ``None`` when the model has no ``nn.Linear``; ``outputs``: the model's outputs (logits);
    ``labels``: the target labels, aligned."""

    features: torch.Tensor | None
    outputs: torch.Tensor
    labels: torch.Tensor


def candidate_outputs(model: nn.Module, data: Any, *, batch_size: int = 256,
                      device: str | torch.device = "auto",
                      name: str = "candidate") -> CandidateOutputs:
    """Penultimate features and outputs of ``model`` on labelled ``data`` in one pass (eval mode
    and gradients restored afterwards; the temporary hooks are removed even on error). The
    penultimate features are the input of the last ``nn.Linear`` *called* in forward
    (:class:`advtransfer.models.features.PenultimateCapture`, which warns when that is a
    guess)."""
    run_on = resolve_device([model], device)
    capture = PenultimateCapture(model, name=name, detach=True) if has_linear(model) else None
    feats, outs, labels = [], [], []
    try:
        with frozen(model), torch.no_grad():
            for batch in labelled_loader(data, batch_size=batch_size, shuffle=False,
                                         name="target_data"):
                x, y = labelled(batch, name="target_data")
                if capture is not None:
                    capture.reset()
                out = forward(model, x.to(run_on), name=name).detach()
                if capture is not None:
                    feats.append(capture.features(out).cpu())
                outs.append(out.cpu())
                labels.append(torch.as_tensor(y).reshape(-1).cpu())
    finally:
        if capture is not None:
            capture.remove()
    return CandidateOutputs(torch.cat(feats) if capture is not None else None, torch.cat(outs),
                            torch.cat(labels))


def _clean_outputs(model: nn.Module, x: torch.Tensor, *, batch_size: int,
                   device: torch.device | str) -> torch.Tensor:
    """f(x) of the reference, flattened per sample, on the CPU (eval mode, no gradients): one
    pass that gives the reference's accuracy, the ``correct_only`` selection and the clean
    outputs its attack starts from."""
    with frozen(model), torch.inference_mode():
        return torch.cat([forward(model, xb.to(device), name="reference").cpu()
                          for xb in x.split(batch_size)])


def estimator_scores(outputs: CandidateOutputs, methods: Sequence[str], *,
                     name: str = "candidate",
                     timings: dict[str, float] | None = None) -> dict[str, float]:
    """The feature/output estimators in ``methods`` for one candidate's
    :class:`CandidateOutputs` (other method names are ignored): the estimators of
    :data:`~advtransfer.methods.BASE_FEATURE_METHODS` on the penultimate features, ``ped_<m>``
    on them after PED, the raw parts of the pool-normalised estimators (``ncti_vc``, ...; one
    computation per estimator gives all its parts), LEEP on the softmax outputs and NCE on the
    arg-max. ``timings``, if given, accumulates each estimator's seconds."""
    scores: dict[str, float] = {}
    y = outputs.labels.numpy()
    feats = None if outputs.features is None else outputs.features.double().numpy()
    for method in methods:
        if method in scores or method not in FEATURE_METHODS and method not in OUTPUT_METHODS:
            continue
        start = time.perf_counter()
        if method in FEATURE_METHODS and feats is None:
            _not_applicable(name, [method], "it has no nn.Linear layer, so no penultimate "
                            "features", scores)
            continue
        if method in _ESTIMATORS:
            scores[method] = float(_ESTIMATORS[method](feats, y))
        elif method in PED_METHODS:
            scores[method] = float(ped(_ESTIMATORS[method.removeprefix("ped_")], feats, y))
        elif method == "leep":
            probs = torch.softmax(outputs.outputs.double(), dim=1).numpy()
            scores[method] = float(leep(probs, y))
        elif method == "nce":
            scores[method] = float(nce(outputs.outputs.argmax(dim=1).numpy(), y))
        else:  # a part of a pool-normalised estimator: all its parts at once
            pooled = next(p for p, parts in POOL_METHODS.items() if method in parts)
            values = astuple(_POOLED[pooled][0](feats, y))
            scores.update(zip(POOL_METHODS[pooled], map(float, values), strict=True))
            method = pooled
        if timings is not None:
            timings[method] = timings.get(method, 0.0) + time.perf_counter() - start
    return scores


def gradient_scores(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor],
                    methods: Sequence[str], *, name: str = "candidate",
                    device: torch.device | str = "cpu",
                    timings: dict[str, float] | None = None) -> dict[str, float]:
    """The gradient estimators in ``methods`` (``lgc``) for one candidate: LGC
    (:func:`advtransfer.estimators.lfc.lgc`) on the per-sample gradients of the sum of the
    model's outputs with respect to all its parameters, on the labelled target ``data``
    (:func:`advtransfer.estimators.lfc.per_sample_gradients`, eval mode). The gradient
    matrix has N x P entries: above :data:`GRADIENT_BUDGET` the candidate gets NaN with a
    warning (pass fewer samples)."""
    if "lgc" not in methods:
        return {}
    start = time.perf_counter()
    scores: dict[str, float] = {}
    x, y = data
    n_params = sum(p.numel() for p in model.parameters())
    if len(x) * n_params > GRADIENT_BUDGET:
        _not_applicable(name, ["lgc"], f"{len(x)} samples x {n_params} parameters exceed the "
                        f"gradient budget of {GRADIENT_BUDGET:.0e} entries; pass fewer samples",
                        scores)
        return scores
    grads = per_sample_gradients(model, x.to(device), chunk_size=64)
    scores["lgc"] = float(lgc(grads.double().cpu().numpy(), y.reshape(-1).cpu().numpy()))
    if timings is not None:
        timings["lgc"] = timings.get("lgc", 0.0) + time.perf_counter() - start
    return scores


# ---------------------------------------------------------------------------------------------
# combinations
# ---------------------------------------------------------------------------------------------


def normalized_ranks(scores: Mapping[str, float]) -> dict[str, float]:
    r"""Each candidate's rank by ``scores``, scaled to [0, 1] (1 = best, 0 = worst).

    q(c) = (R(c) - 1) / (N - 1), with R(c) in 1..N the ascending rank of the score of c among the
    N candidates (ties share their average rank, :func:`scipy.stats.rankdata`); non-finite
    scores are undefined and ranked below every finite score (tied with each other), as in
    :func:`evaluate_methods`. A single candidate gets q = 1."""
    names = list(scores)
    if not names:
        raise AdvTransferError("scores is empty; pass at least one candidate")
    if len(names) == 1:
        return {names[0]: 1.0}
    from scipy.stats import rankdata

    values = np.array([float(scores[c]) if _finite(scores[c]) else -np.inf for c in names])
    ranks = rankdata(values, method="average")
    return {c: float((r - 1.0) / (len(names) - 1)) for c, r in zip(names, ranks, strict=True)}


def rank_average(*method_scores: Mapping[str, float]) -> dict[str, float]:
    r"""Rank average (Borda count) of several methods' scores of the same candidates.

    s(c) = (1/M) sum_{m=1}^{M} q_m(c), with q_m the normalised rank of c by method m
    (:func:`normalized_ranks`: 1 = best, 0 = worst, ties averaged). Rank averaging is the
    standard scale-free way to combine scores whose units differ (alpha is a ratio in
    [0, ~1], LogME a log evidence per sample, LEEP a log likelihood); it has no weight, so
    nothing is fitted on any target. The combinations named in :data:`RANK_AVERAGE_METHODS`
    (e.g. ``alpha1_features_logme_rankavg``) are this function of their components."""
    if not method_scores:
        raise AdvTransferError("rank_average needs at least one method's scores")
    names = set(method_scores[0])
    if any(set(s) != names for s in method_scores[1:]):
        raise AdvTransferError("rank_average: every method must score the same candidates")
    qs = [normalized_ranks(s) for s in method_scores]
    return {c: float(np.mean([q[c] for q in qs])) for c in method_scores[0]}


def combine(method: str, scores: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """The pool-level score of a combined method (:data:`COMBINED_METHODS`) from its
    components' per-candidate ``scores[component][candidate]``: the rank average
    (:func:`rank_average`) or the pool-normalised NCTI / ETran of their raw parts
    (:func:`advtransfer.estimators.ncti.ncti`, :func:`advtransfer.estimators.etran.etran`). A
    candidate a part could not score (NaN) gets NaN and is left out of the others'
    normalisation."""
    parts = COMBINED_METHODS[method]
    if method in RANK_AVERAGE_METHODS:
        return rank_average(*(scores[c] for c in parts))
    names = list(scores[parts[0]])
    ok = [n for n in names if all(_finite(scores[c][n]) for c in parts)]
    _, make, pool = _POOLED[method]
    values = pool([make(*(scores[c][n] for c in parts)) for n in ok]) if ok else []
    out = dict.fromkeys(names, math.nan)
    out.update(zip(ok, map(float, values), strict=True))
    return out


def needs_reference(methods: Iterable[str]) -> bool:
    """Whether any of ``methods`` (directly or through a combination) is adversarial and so
    needs the reference model."""
    return any(m in ADVERSARIAL_METHODS for m in needed_methods(methods))


class _FeatureMap(nn.Module):
    """``model``'s penultimate features h_S(x) as a differentiable output (the input of its
    last ``nn.Linear`` called, :class:`advtransfer.models.features.PenultimateCapture`)."""

    def __init__(self, model: nn.Module, name: str) -> None:
        super().__init__()  # a model without nn.Linear: NotApplicableError from the capture
        self.model = model
        self.name = name
        self.capture = PenultimateCapture(model, name=name, detach=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.capture.reset()
        return self.capture.features(forward(self.model, x, name=self.name))


# ---------------------------------------------------------------------------------------------
# rank
# ---------------------------------------------------------------------------------------------


def _check_methods(methods: Any, with_source_accuracy: bool) -> tuple[str, ...]:
    if methods is None:
        return DEFAULT_METHODS + (("source_accuracy",) if with_source_accuracy else ())
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    if not isinstance(methods, Iterable):
        raise AdvTransferTypeError(f"methods must be a list of method names; got "
                                   f"{type(methods).__name__}")
    methods = tuple(methods)
    if not methods:
        raise AdvTransferError(f"methods is empty; choose from {list(METHODS)}")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise AdvTransferError(f"methods has unknown name(s) {unknown}; known methods are "
                               f"{list(METHODS)}")
    dups = sorted({m for m in methods if methods.count(m) > 1})
    if dups:
        raise AdvTransferError(f"methods lists {dups} more than once")
    for old, new in DEPRECATED_METHODS.items():
        if old in methods:
            warnings.warn(f"method {old!r} is now called {new!r} (a linear head fitted on the "
                          f"penultimate features); {old!r} will be removed", DeprecationWarning,
                          stacklevel=3)
            if new in methods:
                raise AdvTransferError(f"methods lists {old!r} and {new!r}, one method")
            methods = tuple(new if m == old else m for m in methods)
    return methods


def _check_positive_int(value: Any, name: str, *, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        what = "an integer >= 1" + (" or None" if allow_none else "")
        raise AdvTransferError(f"{name} must be {what}; got {value!r}")
    return value


def _check_source_accuracy(source_accuracy: Any, names: Sequence[str]) -> dict[str, float]:
    if not isinstance(source_accuracy, Mapping):
        raise AdvTransferTypeError("source_accuracy must be a mapping candidate name -> "
                                   f"accuracy; got {type(source_accuracy).__name__}")
    missing = [n for n in names if n not in source_accuracy]
    extra = [str(k) for k in source_accuracy if k not in names]
    if missing or extra:
        raise AdvTransferError(f"source_accuracy must name exactly the candidates {list(names)}; "
                               f"missing {missing}, unknown {extra}")
    out = {}
    for n in names:
        v = source_accuracy[n]
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) \
                or not math.isfinite(float(v)):
            raise AdvTransferError(f"source_accuracy[{n!r}] must be a finite number; got {v!r}")
        out[n] = float(v)
    return out


def rank(
    candidates: Mapping[str, nn.Module | str] | Sequence[nn.Module | str | tuple[str, Any]],
    target_data: tuple[torch.Tensor, torch.Tensor] | Dataset | DataLoader,
    reference: nn.Module | str | None,
    *,
    methods: Sequence[str] | str | None = None,
    source_accuracy: Mapping[str, float] | None = None,
    attack: AttackConfig | None = None,
    convention: Convention = "icml",
    attack_samples: int | None = 256,
    correct_only: bool = False,
    finetune_epochs: int = 10,
    finetune_lr: float = 0.1,
    finetune_test_fraction: float = 0.3,
    batch_size: int = 128,
    device: str | torch.device = "auto",
    seed: int = 0,
    progress: bool = False,
    executor: str | Executor = "local",
    address: str | None = None,
    **attack_keywords: Unpack[AttackKeywords],
) -> RankingResult:
    """Score every candidate source model for the target task (higher = better, every method).

    Args:
        candidates: ``{name: candidate}`` or a list of candidates. A candidate is a model, a
            spec string for :func:`load_candidate` (``"SPEC=WEIGHTS"`` allowed; a list entry
            is named by the string), a ``(spec, weights)`` pair (named by the spec) or a
            zero-argument function that builds the model (unnamed list entries are named
            ``model_0``, ...). Specs and builders are loaded inside the candidate's unit and
            released after it, so a large pool needs the memory of one candidate.
        target_data: labelled target data: ``(x, y)`` tensors (y integer class labels), or a
            Dataset / DataLoader of ``(x, y)``. It is decoded once into tensors (held in
            memory) for the whole pool; the feature-based estimators use all of it.
        reference: the reference model f_T trained on the target task (a model or a spec);
            needed by the adversarial methods only (``None`` otherwise).
        methods: method names (see the module docstring and :data:`METHODS`), a list or a
            comma-separated string; default :data:`DEFAULT_METHODS` (+ ``source_accuracy``
            when it is passed). The first method is the result's default sort key.
        source_accuracy: each candidate's accuracy on its own source task (the data-free
            baseline), keyed by candidate name.
        attack: the attack of the adversarial methods, an
            :class:`advtransfer.AttackConfig`; or give its fields as keywords (``eps=``,
            ``norm=``, ``objective=``, ``solver=``, ``steps=``, ``step_size=``,
            ``random_start=``, ``bounds=``, ``tol=``, ``iterate=``; see
            :func:`advtransfer.attack`), with ``eps=1.0`` when neither gives it; eps is in input
            space.
        convention: ``"icml"`` (unsquared alpha2/combined) or ``"authors"`` (squared, as the
            authors' image code reports them); see :mod:`advtransfer.metrics`.
        attack_samples: how many target inputs (a seeded random subset) are attacked; ``None``
            attacks all. Adversarial cost grows linearly with it.
        correct_only: attack only inputs the reference classifies correctly (the authors' image
            protocol); requires the reference's outputs to be logits over the target labels.
        finetune_epochs, finetune_lr, finetune_test_fraction: the ``linear_probe`` method (a linear
            head on the penultimate features, SGD + cosine schedule, on a seeded split).
        batch_size: batch size of the forward passes and attacks.
        device: ``"auto"`` (the models' device) or an explicit device; user models are never
            moved (models built from specs are moved to it).
        seed: seeds the attack subset, the attacks (each model's draws from the seed and
            its name), and the fine-tuning split and head.
        progress: show progress bars.
        executor: where the candidates' units run: ``"local"`` (this process, one after the
            other), ``"ray"`` (one Ray task each; ``pip install 'advtransfer[ray]'``) or an
            :class:`advtransfer.executors.Executor`. The scores are the same either way.
        address: the Ray cluster to join (``executor="ray"`` only; ``None`` starts or uses a
            local Ray); see :mod:`advtransfer.executors`.

    Returns:
        A :class:`RankingResult`.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> x, y = torch.rand(40, 6), torch.arange(40) % 2
        >>> pool = {"a": torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Linear(8, 3)),
        ...         "b": torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Linear(8, 3))}
        >>> ref = torch.nn.Linear(6, 2)
        >>> r = rank(pool, (x, y), ref, methods=["alpha2", "logme"], steps=2, eps=0.1)
        >>> sorted(r.order("logme")) == ["a", "b"]
        True
    """
    methods_t = _check_methods(methods, source_accuracy is not None)
    # the methods computed: those asked for plus the components of the combinations
    needed = needed_methods(methods_t)
    adversarial = [m for m in needed if m in ADVERSARIAL_METHODS]
    estimators = [m for m in needed if m in ESTIMATOR_METHODS]
    if "source_accuracy" in methods_t and source_accuracy is None:
        raise AdvTransferError("method 'source_accuracy' needs source_accuracy= (each "
                               "candidate's accuracy on its own source task)")
    attack_samples = _check_positive_int(attack_samples, "attack_samples", allow_none=True)
    _check_positive_int(batch_size, "batch_size")
    _check_positive_int(finetune_epochs, "finetune_epochs")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise AdvTransferTypeError(f"seed must be an integer; got {seed!r}")
    if not (isinstance(finetune_test_fraction, (int, float)) and 0 < finetune_test_fraction < 1):
        raise AdvTransferError(f"finetune_test_fraction must lie in (0, 1); got "
                               f"{finetune_test_fraction!r}")
    if attack is None:
        attack_keywords = {"eps": 1.0, **attack_keywords}  # type: ignore[typeddict-item]
    config = resolve_attack(attack, attack_keywords)
    data = _check_target_data(target_data)
    sources = _candidate_sources(candidates)
    names = list(sources)
    sa = _check_source_accuracy(source_accuracy, names) if source_accuracy is not None else None
    runner = get_executor(executor, address=address)
    connect(runner)  # an unreachable cluster is an error before any work

    ref_model: nn.Module | None = None
    ref_loaded = False
    if adversarial:
        if reference is None:
            raise AdvTransferError(f"reference is None but the adversarial method(s) "
                                   f"{adversarial} need the target's reference model")
        if isinstance(reference, str):
            spec, _, weights = reference.partition("=")
            ref_model, ref_loaded = load_candidate(spec, weights or None), True
        elif isinstance(reference, nn.Module):
            ref_model = reference
        else:
            raise AdvTransferTypeError(f"reference must be an nn.Module, a spec string or None; "
                                       f"got {type(reference).__name__}")
    # user models fix the device (never moved); models built here follow it
    user = [m for m in sources.values() if isinstance(m, nn.Module)]
    if ref_model is not None and not ref_loaded:
        user.append(ref_model)
    run_on = resolve_device(user, device)
    if ref_model is not None and ref_loaded:
        ref_model = ref_model.to(run_on)

    timings: dict[str, float] = {}
    cfg: dict[str, Any] = {"eps": config.eps, "norm": config.norm,
                           "objective": config.objective, "solver": config.solver,
                           "steps": config.steps, "tol": config.tol,
                           "step_size": config.step_size, "random_start": config.random_start,
                           "iterate": config.iterate,
                           "bounds": list(config.bounds) if config.bounds else None,
                           "convention": convention, "attack_samples": attack_samples,
                           "correct_only": correct_only, "seed": seed, "device": str(run_on),
                           "default_direction": "t2s", "executor": runner.name}

    # the target data is decoded once for the whole pool
    start = time.perf_counter()
    x_all, y_all = target_tensors(data, progress=progress)
    timings["decode"] = time.perf_counter() - start

    ref_accuracy: float | None = None
    ref_attack: ReferenceAttack | None = None
    if adversarial:
        assert ref_model is not None
        start = time.perf_counter()
        ref_clean = _clean_outputs(ref_model, x_all, batch_size=batch_size, device=run_on)
        ref_accuracy = float((ref_clean.argmax(1) == y_all.reshape(-1).cpu()).double().mean())
        ref_attack = prepare_reference(ref_model, (x_all, y_all), config,
                                       attack_samples=attack_samples,
                                       correct_only=correct_only, seed=seed,
                                       batch_size=batch_size, device=run_on, progress=progress,
                                       clean=ref_clean)
        cfg["n_attacked"] = len(ref_attack)
        timings["adversarial"] = time.perf_counter() - start

    plan = CandidatePlan(
        adversarial=tuple(adversarial), estimators=tuple(estimators),
        finetune="linear_probe" in methods_t, attack=config, convention=convention,
        batch_size=batch_size, seed=seed, finetune_epochs=finetune_epochs,
        finetune_lr=finetune_lr, finetune_test_fraction=finetune_test_fraction)
    s2t = any(ADVERSARIAL_METHODS[m][1] == "s2t" for m in adversarial)
    results = runner.map(score_candidate, list(sources.items()), shared={
        "plan": plan, "data": (x_all, y_all), "reference_attack": ref_attack,
        "reference": ref_model if s2t else None, "device": str(run_on)},
        description="candidates", progress=progress)

    scores: dict[str, dict[str, float]] = {m: {} for m in needed}
    details: dict[str, dict[str, Any]] = {}
    for n, res in zip(names, results, strict=True):
        for m, v in res.scores.items():
            scores[m][n] = v
        details[n] = res.details
        for k, v in res.timings.items():
            timings[k] = timings.get(k, 0.0) + v
    if plan.finetune:
        cfg.update(finetune_epochs=finetune_epochs, finetune_lr=finetune_lr,
                   finetune_test_fraction=finetune_test_fraction)
    if sa is not None and "source_accuracy" in methods_t:
        scores["source_accuracy"] = dict(sa)
    for m in needed:
        if m in COMBINED_METHODS:
            scores[m] = combine(m, scores)

    return RankingResult(tuple(names), methods_t, {m: scores[m] for m in methods_t}, details,
                         timings, cfg, ref_accuracy)


# ---------------------------------------------------------------------------------------------
# one candidate
# ---------------------------------------------------------------------------------------------


def prepare_reference(reference: nn.Module, data: Any, config: AttackConfig, *,
                      attack_samples: int | None = 256, correct_only: bool = False,
                      seed: int = 0, batch_size: int = 128,
                      device: str | torch.device = "auto",
                      progress: bool = False,
                      clean: torch.Tensor | None = None) -> ReferenceAttack:
    """The reference's attack shared by every candidate of :func:`rank`: up to
    ``attack_samples`` labelled target inputs (a seeded random subset of ``data``), only those
    the reference classifies correctly when ``correct_only`` (the authors' image protocol), and
    :func:`advtransfer.reference.attack_reference` on them. ``clean``, for ``data`` given as a
    pair of tensors ``(x, y)``, is the reference's output f_T(x) on all of ``x`` when the
    caller has it (one forward pass per sample fewer); otherwise one pass here gives both the
    ``correct_only`` selection and the clean outputs the attack starts from."""
    data = _check_target_data(data)
    x_att, y_att = _take_labelled(data, attack_samples, seed)
    run_on = resolve_device([reference], device)
    if clean is not None:
        if not isinstance(data, tuple) or len(clean) != len(data[0]):
            raise AdvTransferError("clean must be the reference's outputs on every sample of "
                                   "data given as a pair of tensors (x, y)")
        idx = _subset_index(len(clean), attack_samples, seed)
        clean = clean if idx is None else clean[idx]
    elif correct_only:
        clean = _clean_outputs(reference, x_att, batch_size=batch_size, device=run_on)
    if correct_only:
        assert clean is not None
        keep = clean.argmax(1).cpu() == y_att.reshape(-1).cpu()
        if not bool(keep.any()):
            raise AdvTransferError("correct_only=True but the reference classifies none of "
                                   "the attacked target inputs correctly")
        x_att, clean = x_att[keep], clean[keep]
    return attack_reference(reference, x_att, config, seed=seed, batch_size=batch_size,
                            device=run_on, progress=progress, clean=clean)


@dataclass(frozen=True)
class CandidatePlan:
    """What :func:`score_candidate` computes for every candidate of a :func:`rank` call: the
    adversarial methods (with the attack and reporting convention), the feature/output
    estimators, and the ``linear_probe`` ground truth with its settings."""

    adversarial: tuple[str, ...] = ()
    estimators: tuple[str, ...] = ()
    finetune: bool = False
    attack: AttackConfig | None = None
    convention: Convention = "icml"
    batch_size: int = 128
    seed: int = 0
    finetune_epochs: int = 10
    finetune_lr: float = 0.1
    finetune_test_fraction: float = 0.3


@dataclass(frozen=True)
class CandidateScores:
    """One candidate's scores (``{method: score}``), details and timings (seconds)."""

    scores: dict[str, float]
    details: dict[str, Any]
    timings: dict[str, float]


def score_candidate(item: tuple[str, Candidate], *, plan: CandidatePlan,
                    data: tuple[torch.Tensor, torch.Tensor] | None = None,
                    reference_attack: ReferenceAttack | None = None,
                    reference: nn.Module | None = None,
                    device: str | torch.device = "auto") -> CandidateScores:
    """One candidate's unit of work in :func:`rank`: build (or take) the model, measure the
    adversarial methods against the shared ``reference_attack``
    (:func:`advtransfer.reference.measure_against_reference`; ``reference``, the model, is
    needed by the s2t methods only), run the estimators on its features and outputs for the
    labelled target ``data``, fit the ``linear_probe`` head, and let the model go. ``item`` is
    ``(name, candidate)``; the result does not depend on the other candidates (its random
    draws are seeded by ``(plan.seed, name)``)."""
    name, value = item
    model, built = _build_candidate(value, name)
    run_on = resolve_device([] if built else [model], device)
    if built:
        model = model.to(run_on)
    scores: dict[str, float] = {}
    details: dict[str, Any] = {}
    timings: dict[str, float] = {}
    if plan.adversarial:
        if reference_attack is None or plan.attack is None:
            raise AdvTransferError("the adversarial methods need the reference's attack")
        start = time.perf_counter()
        _adversarial_scores(model, name, plan, reference_attack, reference, run_on, scores,
                            details)
        timings["adversarial"] = time.perf_counter() - start
    if (plan.estimators or plan.finetune) and data is None:
        raise AdvTransferError("the estimators and 'linear_probe' need the labelled target data")
    if plan.estimators:
        start = time.perf_counter()
        outs = candidate_outputs(model, data, batch_size=max(plan.batch_size, 256),
                                 device=run_on, name=name)
        timings["forward"] = time.perf_counter() - start
        if outs.features is not None:
            details["feature_dim"] = int(outs.features.shape[1])
        scores.update(estimator_scores(outs, plan.estimators, name=name, timings=timings))
        scores.update(gradient_scores(model, data, plan.estimators, name=name, device=run_on,
                                      timings=timings))
    if plan.finetune:
        from advtransfer.knowledge import knowledge_transfer

        start = time.perf_counter()
        train, test = _split(data, plan.finetune_test_fraction, plan.seed)
        try:
            kt = knowledge_transfer(model, train, test, task="classification",
                                    features="penultimate", finetune="head",
                                    epochs=plan.finetune_epochs, lr=plan.finetune_lr,
                                    batch_size=plan.batch_size, device=run_on, seed=plan.seed)
        except NotApplicableError as exc:
            _not_applicable(name, ["linear_probe"], str(exc), scores)
        else:
            scores["linear_probe"] = float(kt.test_accuracy or 0.0)
            details["finetune_train_accuracy"] = kt.train_accuracy
        timings["linear_probe"] = time.perf_counter() - start
    return CandidateScores(scores, details, timings)


def _not_applicable(name: str, methods: Sequence[str], reason: str,
                    scores: dict[str, float]) -> None:
    """NaN for ``methods`` that cannot score candidate ``name`` at all, with a warning: the
    other methods and candidates go on (a NaN ranks below every finite score)."""
    warnings.warn(f"candidate {name!r}: {', '.join(methods)} cannot score it ({reason}); "
                  "NaN for it", UserWarning, stacklevel=3)
    scores.update(dict.fromkeys(methods, math.nan))


def _adversarial_scores(model: nn.Module, name: str, plan: CandidatePlan,
                        ref: ReferenceAttack, reference: nn.Module | None,
                        device: torch.device, scores: dict[str, float],
                        details: dict[str, Any]) -> None:
    """Fill ``scores[m]`` for the adversarial methods ``m`` of ``plan``: the candidate's
    outputs and, for the ``*_features`` methods, its penultimate features (its own attack of
    each), measured against the reference's stored attack. Only the directions the methods
    name are measured (s2t needs the reference model; t2s does not); the reference's own
    deviation, which only alpha2 and combined use, is skipped for alpha1 methods alone."""
    assert plan.attack is not None
    for space in ("", "_features"):
        methods = [m for m in plan.adversarial
                   if (m in ADVERSARIAL_FEATURE_METHODS) == (space == "_features")]
        if not methods:
            continue
        try:
            victim: nn.Module = _FeatureMap(model, name) if space else model
        except NotApplicableError as exc:
            _not_applicable(name, methods, str(exc), scores)
            continue
        try:
            out = measure_against_reference(
                victim, ref, plan.attack, reference=reference,
                directions=sorted({ADVERSARIAL_METHODS[m][1] for m in methods}),
                alpha2=any(ADVERSARIAL_METHODS[m][0] != "alpha1" for m in methods),
                convention=plan.convention, seed=plan.seed, name=f"{name}{space}",
                batch_size=plan.batch_size, device=device)
        finally:
            if isinstance(victim, _FeatureMap):
                victim.capture.remove()
        for m in methods:
            metric, d = ADVERSARIAL_METHODS[m]
            scores[m] = float(getattr(out[d], metric))
        for d, r in out.items():
            details[f"n_alpha1_above_one{space}_{d}"] = r.n_alpha1_above_one


# ---------------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------------


def evaluate_methods(
    scores: Mapping[str, Mapping[str, float]] | RankingResult,
    truth: Mapping[str, float],
    *,
    source_accuracy: Mapping[str, float] | None = None,
    ks: Iterable[int] = (1, 3),
) -> dict[str, RankingEvaluation]:
    r"""How well each method's scores rank the candidates against ground truth.

    For every method, :func:`advtransfer.estimators.evaluate_ranking`: the weighted Kendall
    tau (:func:`scipy.stats.weightedtau`, hyperbolic weights 1/(r+1), the field's headline
    metric, You et al. ICML 2021), Kendall tau_b, Pearson r and the top-k relative accuracy
    max_{m in top_k(s)} t_m / max_m t_m for every k in ``ks`` no larger than the number of
    candidates.

    Args:
        scores: ``{method: {candidate: score}}`` (or a :class:`RankingResult`); higher = better.
            A non-finite (or ``None``) score is undefined and ranked *last*: it is replaced by a
            value below every finite score of that method (with a warning). A method with no
            finite score gets ``nan`` everywhere.
        truth: ``{candidate: ground-truth result}`` (e.g. fine-tuned target accuracy), finite.
        source_accuracy: each candidate's accuracy on its own source task; adds the data-free
            baseline method ``"source_accuracy"`` that ranks by it.
        ks: the k values of the top-k relative accuracy.

    Returns:
        ``{method: RankingEvaluation}`` in the order of ``scores`` (baseline last).
    """
    if isinstance(scores, RankingResult):
        scores = scores.scores
    if not isinstance(scores, Mapping):
        raise AdvTransferTypeError(f"scores must be a mapping method -> {{candidate: score}}; "
                                   f"got {type(scores).__name__}")
    if not isinstance(truth, Mapping):
        raise AdvTransferTypeError(f"truth must be a mapping candidate -> result; got "
                                   f"{type(truth).__name__}")
    all_scores: dict[str, Mapping[str, float]] = dict(scores)
    if source_accuracy is not None:
        if "source_accuracy" in all_scores:
            raise AdvTransferError("scores already has a 'source_accuracy' method; do not also "
                                   "pass source_accuracy=")
        all_scores["source_accuracy"] = source_accuracy
    if not all_scores:
        raise AdvTransferError("scores is empty; pass at least one method")
    ks_t = tuple(ks)
    for k in ks_t:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise AdvTransferError(f"ks must hold integers >= 1; got {k!r}")
    n = len(truth)
    usable = tuple(int(k) for k in ks_t if k <= n) or (1,)
    out: dict[str, RankingEvaluation] = {}
    for method, per in all_scores.items():
        if not isinstance(per, Mapping):
            raise AdvTransferTypeError(f"scores[{method!r}] must be a mapping candidate -> "
                                       f"score; got {type(per).__name__}")
        values: dict[str, float] = {}
        for cand, v in per.items():
            try:
                values[cand] = math.nan if v is None else float(v)
            except (TypeError, ValueError):
                raise AdvTransferTypeError(f"scores[{method!r}][{cand!r}] must be a number; got "
                                           f"{type(v).__name__}") from None
        bad = [c for c, v in values.items() if not math.isfinite(v)]
        if len(bad) == len(values) and values:
            if set(values) != set(truth):
                evaluate_ranking(values, truth, ks=usable)  # raises the naming error
            out[method] = RankingEvaluation(math.nan, math.nan, math.nan,
                                            {k: math.nan for k in usable})
            continue
        if bad:
            warnings.warn(f"method {method!r} has no finite score for {bad}; ranked last",
                          RuntimeWarning, stacklevel=2)
            finite = [v for v in values.values() if math.isfinite(v)]
            floor = min(finite) - 1.0 - (max(finite) - min(finite))
            values = {c: (floor if c in bad else v) for c, v in values.items()}
        try:
            out[method] = evaluate_ranking(values, truth, ks=usable)
        except AdvTransferError as exc:
            raise type(exc)(f"method {method!r}: {exc}") from None
    return out


def summarize(
    evaluations: Mapping[str, Mapping[str, RankingEvaluation]],
    metric: str = "weighted_tau",
) -> dict[str, dict[str, float]]:
    """``{method: {target: value, ..., "mean": mean}}`` of one evaluation ``metric`` over the
    targets of ``evaluations`` (``{target: {method: RankingEvaluation}}``).

    ``metric`` is ``"weighted_tau"``, ``"kendall_tau"``, ``"pearson"`` or ``"top{k}"`` (the
    top-k relative accuracy). The mean is over targets where the value is defined (``nan`` if
    none)."""
    if not isinstance(evaluations, Mapping) or not evaluations:
        raise AdvTransferError("evaluations must be a non-empty mapping target -> "
                               "{method: RankingEvaluation}")
    fields_ = ("weighted_tau", "kendall_tau", "pearson")
    if metric not in fields_ and not (metric.startswith("top") and metric[3:].isdigit()):
        raise AdvTransferError(f"metric must be one of {list(fields_)} or 'top<k>'; got "
                               f"{metric!r}")
    methods = list(dict.fromkeys(m for ev in evaluations.values() for m in ev))
    table: dict[str, dict[str, float]] = {}
    for method in methods:
        row: dict[str, float] = {}
        for target, ev in evaluations.items():
            e = ev.get(method)
            if e is None:
                value = math.nan
            elif metric in fields_:
                value = float(getattr(e, metric))
            else:
                value = float(e.top_k.get(int(metric[3:]), math.nan))
            row[str(target)] = value
        vals = [v for v in row.values() if math.isfinite(v)]
        row["mean"] = float(np.mean(vals)) if vals else math.nan
        table[method] = row
    return table


def markdown_table(summary: Mapping[str, Mapping[str, float]], *, digits: int = 3,
                   sort: bool = True) -> str:
    """A Markdown table of :func:`summarize` output: one row per method (sorted by the mean,
    best first, when ``sort``), one column per target and the mean; "—" marks undefined."""
    if not summary:
        return ""
    cols = list(dict.fromkeys(k for row in summary.values() for k in row))
    cols = [c for c in cols if c != "mean"] + (["mean"] if any("mean" in r for r in
                                                                summary.values()) else [])
    rows = list(summary.items())
    if sort:
        rows.sort(key=lambda kv: _sort_key(kv[1].get("mean", math.nan)))

    def cell(v: Any) -> str:
        return f"{float(v):.{digits}f}" if _finite(v) else "—"

    return md_table(["method", *cols], [[m, *(cell(r.get(c)) for c in cols)] for m, r in rows])


def evaluation_to_dict(ev: RankingEvaluation) -> dict[str, Any]:
    """A JSON-ready dictionary of a :class:`RankingEvaluation` (top-k keys as ``top{k}``)."""
    d = asdict(ev)
    top = d.pop("top_k")
    d.update({f"top{k}": v for k, v in top.items()})
    return d
