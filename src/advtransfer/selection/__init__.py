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

The package, by job: :mod:`~advtransfer.selection.candidates` (what a candidate may be, loading
one), :mod:`~advtransfer.selection.target` (the target data: checks, decoding, subsets),
:mod:`~advtransfer.selection.estimation` (one candidate's estimator scores and the pool-level
combinations), :mod:`~advtransfer.selection.scoring` (the shared reference attack and one
candidate's unit of work), :mod:`~advtransfer.selection.results` (:class:`RankingResult` and
:func:`evaluate_methods`), :mod:`~advtransfer.selection.tables` (:func:`summarize`,
:func:`markdown_table`) and :mod:`~advtransfer.selection.arguments` (the checks of
:func:`rank`'s arguments). This module holds :func:`rank`, which runs them, and re-exports their
public names. :data:`~advtransfer.selection.estimation.GRADIENT_BUDGET` and the
:func:`~advtransfer.reference.measure_against_reference` a unit calls are deliberately not
re-exported: to replace them (e.g. in a test), patch them where they are used
(``selection.estimation``, ``selection.scoring``); patching this module fails loudly.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from advtransfer.attacks import AttackConfig, AttackKeywords, resolve_attack
from advtransfer.devices import resolve_device
from advtransfer.errors import AdvTransferError, AdvTransferTypeError
from advtransfer.executors import Executor, close, connect, get_executor
from advtransfer.methods import (
    ADVERSARIAL_FEATURE_METHODS,
    ADVERSARIAL_METHODS,
    COMBINED_METHODS,
    DEFAULT_METHODS,
    ESTIMATOR_METHODS,
    FEATURE_METHODS,
    METHODS,
    OUTPUT_METHODS,
    RANK_AVERAGE_METHODS,
    needed_methods,
)
from advtransfer.metrics import Convention
from advtransfer.reference import ReferenceAttack
from advtransfer.selection.arguments import (
    _check_methods,
    _check_settings,
    _check_source_accuracy,
)
from advtransfer.selection.candidates import Candidate, _candidate_sources, load_candidate
from advtransfer.selection.estimation import _ESTIMATORS as _ESTIMATORS
from advtransfer.selection.estimation import (
    CandidateOutputs,
    candidate_outputs,
    combine,
    estimator_scores,
    gradient_scores,
    needs_reference,
    normalized_ranks,
    rank_average,
)
from advtransfer.selection.results import RankingResult, evaluate_methods
from advtransfer.selection.scoring import (
    CandidatePlan,
    CandidateScores,
    _clean_outputs,
    prepare_reference,
    score_candidate,
)
from advtransfer.selection.tables import evaluation_to_dict, markdown_table, summarize
from advtransfer.selection.target import _check_target_data, target_tensors

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
    "Candidate",
    "CandidateOutputs",
    "RankingResult",
    "CandidatePlan",
    "CandidateScores",
    "candidate_outputs",
    "combine",
    "estimator_scores",
    "evaluate_methods",
    "evaluation_to_dict",
    "gradient_scores",
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
    attack_samples = _check_settings(methods_t, source_accuracy, attack_samples, batch_size,
                                     finetune_epochs, seed, finetune_test_fraction)
    config = _attack_config(attack, attack_keywords)
    data = _check_target_data(target_data)
    sources = _candidate_sources(candidates)
    sa = (None if source_accuracy is None
          else _check_source_accuracy(source_accuracy, list(sources)))
    runner = get_executor(executor, address=address)
    try:
        return _rank_pool(runner, sources, reference, data, methods_t, needed, config, sa,
                          convention=convention, attack_samples=attack_samples,
                          correct_only=correct_only, seed=seed, batch_size=batch_size,
                          device=device, progress=progress, finetune_epochs=finetune_epochs,
                          finetune_lr=finetune_lr,
                          finetune_test_fraction=finetune_test_fraction)
    finally:
        if isinstance(executor, str):
            close(runner)  # a Ray started for this call is shut down; a given executor is not


def _rank_pool(runner: Executor, sources: Mapping[str, Candidate],
               reference: nn.Module | str | None, data: tuple[torch.Tensor, torch.Tensor],
               methods_t: tuple[str, ...], needed: Sequence[str], config: AttackConfig,
               sa: Mapping[str, float] | None, *, convention: Convention, attack_samples: int,
               correct_only: bool, seed: int, batch_size: int, device: str | torch.device,
               progress: bool, finetune_epochs: int, finetune_lr: float,
               finetune_test_fraction: float) -> RankingResult:
    """:func:`rank` once its arguments are checked, on ``runner``."""
    names = list(sources)
    adversarial = [m for m in needed if m in ADVERSARIAL_METHODS]
    connect(runner)  # an unreachable cluster is an error before any work
    ref_model, run_on = _reference_and_device(reference, adversarial, sources, device)
    cfg = _settings_record(config, convention=convention, attack_samples=attack_samples,
                           correct_only=correct_only, seed=seed, device=run_on, runner=runner)
    timings: dict[str, float] = {}
    x_all, y_all, ref_accuracy, ref_attack = _target_and_reference(
        data, ref_model, config, attack_samples=attack_samples, correct_only=correct_only,
        seed=seed, batch_size=batch_size, device=run_on, progress=progress, cfg=cfg,
        timings=timings)
    plan = CandidatePlan(
        adversarial=tuple(adversarial),
        estimators=tuple(m for m in needed if m in ESTIMATOR_METHODS),
        finetune="linear_probe" in methods_t, attack=config, convention=convention,
        batch_size=batch_size, seed=seed, finetune_epochs=finetune_epochs,
        finetune_lr=finetune_lr, finetune_test_fraction=finetune_test_fraction)
    results = _run_units(runner, sources, plan, (x_all, y_all), ref_attack, ref_model, run_on,
                         progress)
    if plan.finetune:
        cfg.update(finetune_epochs=finetune_epochs, finetune_lr=finetune_lr,
                   finetune_test_fraction=finetune_test_fraction)
    scores, details = _pool_scores(names, needed, methods_t, results, sa, timings)
    return RankingResult(tuple(names), methods_t, {m: scores[m] for m in methods_t}, details,
                         timings, cfg, ref_accuracy)


def _attack_config(attack: AttackConfig | None, keywords: AttackKeywords) -> AttackConfig:
    """The attack of the adversarial methods: ``attack``, or one built from the keywords, with
    ``eps=1.0`` when neither gives it (:func:`advtransfer.attacks.resolve_attack`)."""
    if attack is None:
        keywords = {"eps": 1.0, **keywords}  # type: ignore[typeddict-item]
    return resolve_attack(attack, keywords)


def _reference_and_device(reference: nn.Module | str | None, adversarial: Sequence[str],
                          sources: Mapping[str, Candidate],
                          device: str | torch.device) -> tuple[nn.Module | None, torch.device]:
    """The reference model (``None`` when no adversarial method is asked for; a spec is loaded
    here) and the device the pool runs on: the user's models (candidates given as models, the
    reference given as a model) fix it and are never moved; a reference built here follows
    it (:func:`advtransfer.devices.resolve_device`)."""
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
    return ref_model, run_on


def _settings_record(config: AttackConfig, *, convention: Convention, attack_samples: int | None,
                     correct_only: bool, seed: int, device: torch.device,
                     runner: Executor) -> dict[str, Any]:
    """The resolved settings :attr:`RankingResult.config` starts from (the attack's fields, the
    convention, the sampling, the seed, the device and the executor), in this key order."""
    return {"eps": config.eps, "norm": config.norm,
            "objective": config.objective, "solver": config.solver,
            "steps": config.steps, "tol": config.tol,
            "step_size": config.step_size, "random_start": config.random_start,
            "iterate": config.iterate,
            "bounds": list(config.bounds) if config.bounds else None,
            "convention": convention, "attack_samples": attack_samples,
            "correct_only": correct_only, "seed": seed, "device": str(device),
            "default_direction": "t2s", "executor": runner.name}


def _target_and_reference(
    data: Any, ref_model: nn.Module | None, config: AttackConfig, *,
    attack_samples: int | None, correct_only: bool, seed: int, batch_size: int,
    device: torch.device, progress: bool, cfg: dict[str, Any], timings: dict[str, float],
) -> tuple[torch.Tensor, torch.Tensor, float | None, ReferenceAttack | None]:
    """The target data decoded once for the whole pool (``timings["decode"]``) and, when there
    is a reference model, its accuracy on it and its attack shared by every candidate
    (:func:`prepare_reference` on the reference's clean outputs, one pass that also gives the
    accuracy; ``timings["adversarial"]``, ``cfg["n_attacked"]``)."""
    start = time.perf_counter()
    x_all, y_all = target_tensors(data, progress=progress)
    timings["decode"] = time.perf_counter() - start
    if ref_model is None:
        return x_all, y_all, None, None
    start = time.perf_counter()
    ref_clean = _clean_outputs(ref_model, x_all, batch_size=batch_size, device=device)
    ref_accuracy = float((ref_clean.argmax(1) == y_all.reshape(-1).cpu()).double().mean())
    ref_attack = prepare_reference(ref_model, (x_all, y_all), config,
                                   attack_samples=attack_samples,
                                   correct_only=correct_only, seed=seed,
                                   batch_size=batch_size, device=device, progress=progress,
                                   clean=ref_clean)
    cfg["n_attacked"] = len(ref_attack)
    timings["adversarial"] = time.perf_counter() - start
    return x_all, y_all, ref_accuracy, ref_attack


def _run_units(runner: Executor, sources: Mapping[str, Candidate], plan: CandidatePlan,
               data: tuple[torch.Tensor, torch.Tensor], ref_attack: ReferenceAttack | None,
               ref_model: nn.Module | None, device: torch.device,
               progress: bool) -> list[CandidateScores]:
    """Every candidate's unit of work (:func:`score_candidate`) on ``runner``, in the pool's
    order; the reference model goes to the units only when an s2t method needs it."""
    s2t = any(ADVERSARIAL_METHODS[m][1] == "s2t" for m in plan.adversarial)
    return runner.map(score_candidate, list(sources.items()), shared={
        "plan": plan, "data": data, "reference_attack": ref_attack,
        "reference": ref_model if s2t else None, "device": str(device)},
        description="candidates", progress=progress)


def _pool_scores(names: Sequence[str], needed: Sequence[str], methods: Sequence[str],
                 results: Sequence[CandidateScores], source_accuracy: dict[str, float] | None,
                 timings: dict[str, float],
                 ) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, Any]]]:
    """``{method: {candidate: score}}`` and ``{candidate: details}`` of the pool from the units'
    results (their timings added to ``timings``), with the ``source_accuracy`` baseline when
    asked and the combined methods computed over the pool (:func:`combine`)."""
    scores: dict[str, dict[str, float]] = {m: {} for m in needed}
    details: dict[str, dict[str, Any]] = {}
    for n, res in zip(names, results, strict=True):
        for m, v in res.scores.items():
            scores[m][n] = v
        details[n] = res.details
        for k, v in res.timings.items():
            timings[k] = timings.get(k, 0.0) + v
    if source_accuracy is not None and "source_accuracy" in methods:
        scores["source_accuracy"] = dict(source_accuracy)
    for m in needed:
        if m in COMBINED_METHODS:
            scores[m] = combine(m, scores)
    return scores, details
