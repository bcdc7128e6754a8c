r"""The stored units shared by the model-selection recipes, and the work of one (target,
candidate) pair.

A model-selection recipe (:mod:`~advtransfer.experiments.recipes.digits_selection`,
:mod:`~advtransfer.experiments.recipes.imagenet_zoo`) runs in waves of
:meth:`~advtransfer.experiments.registry.RunContext.map`, each item on the run's executor:

1. per source: the source model trained (or reloaded) and its accuracy;
2. per target: the reference model, its accuracy and its attack on the target's test inputs
   (:func:`reference_attack`: one tensor unit shared by every candidate of the target);
3. per (target, candidate) pair: the transferability estimators (:func:`estimator_unit`),
   the ground truths (:func:`full_finetune_truth`, :func:`linear_probe`) and the candidate's
   adversarial scores against the stored attack (:func:`candidate_adversarial`);

the recipe's driver combines the results and runs the analysis
(:mod:`advtransfer.experiments.selection_analysis`). A wave reads the units of the earlier
ones from the store (models are reloaded, never shipped), so no two items of one wave compute
the same unit. Every unit is a typed configuration (:class:`~advtransfer.units.UnitConfig`)
whose key and seed derive from its fields alone, so the waves compute exactly what one loop over
targets and candidates computes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from advtransfer.errors import AdvTransferError
from advtransfer.experiments.registry import RunContext
from advtransfer.experiments.selection_analysis import GROUND_TRUTHS, num
from advtransfer.experiments.stages import (
    AttackFields,
    ReferenceAttackUnit,
    attack_config,
    resolve,
)
from advtransfer.knowledge import knowledge_transfer
from advtransfer.methods import ADVERSARIAL_FEATURE_METHODS, ADVERSARIAL_METHODS, METHODS
from advtransfer.metrics import Convention, check_convention
from advtransfer.reference import ReferenceAttack
from advtransfer.selection import CandidatePlan, prepare_reference, rank, score_candidate
from advtransfer.units import UnitConfig

__all__ = [
    "RECIPE_METHODS",
    "CandidateAdversarialUnit",
    "EstimatorsUnit",
    "FullFinetuneGridUnit",
    "FullFinetuneUnit",
    "LinearProbeUnit",
    "SelectionAdversarialUnit",
    "SelectionAttackFields",
    "attack_key",
    "attack_unit",
    "candidate_adversarial",
    "check_attack",
    "check_ground_truth",
    "check_methods",
    "estimator_unit",
    "full_finetune_text",
    "full_finetune_truth",
    "holdout",
    "linear_probe",
    "reference_attack",
    "seeded_split",
    "split_seed",
]

Model = nn.Module | Callable[[], nn.Module]
"""A model, or a zero-argument producer of it (called only when a unit must be computed)."""

#: Every method scored by the recipes (the data-free source-accuracy baseline is added on top).
RECIPE_METHODS: list[str] = ["alpha1", "alpha2", "combined", "alpha1_s2t", "alpha2_s2t",
                             "combined_s2t", "logme", "leep", "nce", "hscore",
                             "regularized_hscore", "transrate", "gbc", "nleep", "parc", "sfda",
                             "ncti", "etran", "knn", "lfc", "tmi", "lgc", "ped_logme",
                             "ped_sfda"]


@dataclass
class SelectionAttackFields(AttackFields):
    """The attack of the model-selection recipes (:class:`~advtransfer.experiments.stages.
    AttackFields` with an L2 budget of 1.0 in input units), the reporting convention, how many
    target inputs are attacked and whether only those the reference classifies correctly."""

    eps: float = 1.0
    norm: str = "l2"
    convention: Convention = "icml"
    attack_samples: int = 256
    correct_only: bool = False


# ---------------------------------------------------------------------------------------------
# the stored units
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class FullFinetuneGridUnit(UnitConfig, kind="full-finetune-grid"):
    """One point of the full fine-tuning ground truth's grid search (a record): the candidate
    ``source`` (its key) with a new linear head on its penultimate features, all of it trained
    (SGD momentum 0.9, cosine schedule, learning rate ``lr``, ``epochs`` epochs, weight decay
    ``weight_decay``, batches of ``batch_size``) on a seeded ``1 - val_fraction`` of the
    training set of the target ``target`` identifies, evaluated on the rest (its
    ``test_accuracy`` is the validation accuracy). The split is shared by every point of the
    grid: seeded by (source, target) alone (:func:`split_seed`)."""

    source: str
    target: dict[str, Any]
    lr: float
    epochs: int
    weight_decay: float
    val_fraction: float
    batch_size: int


@dataclass(frozen=True, kw_only=True)
class FullFinetuneUnit(UnitConfig, kind="full-finetune"):
    """The full fine-tuning ground truth at the grid's chosen setting (a record): as
    :class:`FullFinetuneGridUnit`, trained on the whole training set of ``target`` and
    evaluated on its test set; ``replicate`` numbers the refits (0, 1, ...), each with its own
    seed (head initialisation and batch order)."""

    source: str
    target: dict[str, Any]
    lr: float
    epochs: int
    weight_decay: float
    batch_size: int
    replicate: int = 0


@dataclass(frozen=True, kw_only=True)
class LinearProbeUnit(UnitConfig, kind="selection-finetune"):
    """The linear-probe ground truth (a record): a new linear head on the candidate
    ``source``'s (its key) ``features`` layer, fine-tuned as ``finetune`` says (``"head"``:
    the head only) for ``epochs`` epochs of SGD at learning rate ``lr`` on the training set of
    the target ``target`` identifies, evaluated on its test set; ``seconds`` its wall time."""

    source: str
    target: dict[str, Any]
    epochs: int
    lr: float
    features: str = "penultimate"
    finetune: str = "head"


@dataclass(frozen=True, kw_only=True)
class EstimatorsUnit(UnitConfig, kind="selection-estimators"):
    """The transferability estimators ``methods`` of the candidate ``source`` (its key) on the
    training set of the target ``target`` identifies (:func:`advtransfer.selection.rank`; a
    record of the scores, the timings by part and the wall time)."""

    source: str
    target: dict[str, Any]
    methods: list[str]


@dataclass(frozen=True, kw_only=True)
class CandidateAdversarialUnit(UnitConfig):
    """One candidate's adversarial scores in one space (a record; a subclass per kind): the
    candidate ``name`` (the model of key ``source``) measured against the stored
    ``reference_attack`` (the key of its :class:`ReferenceAttackUnit`, which holds the attack,
    the attacked inputs and the batch size) for the adversarial ``methods`` (all of one space:
    logits or penultimate features), reported in ``convention``. The source's attack is seeded
    by the reference attack's unit (:func:`candidate_adversarial`), so every candidate of a
    target draws the same random starts."""

    reference_attack: str
    source: str
    name: str
    methods: list[str]
    convention: str


@dataclass(frozen=True, kw_only=True)
class SelectionAdversarialUnit(CandidateAdversarialUnit, kind="selection-adversarial"):
    """A digits candidate's adversarial scores (:class:`CandidateAdversarialUnit`)."""


# ---------------------------------------------------------------------------------------------
# checks of the shared configuration fields
# ---------------------------------------------------------------------------------------------


def check_methods(methods: Sequence[str]) -> list[str]:
    """``methods`` if it is a non-empty list of distinct methods the recipes score (every
    method of :data:`advtransfer.methods.METHODS` but the ground truths and the
    source-accuracy baseline, which the recipes add); else an :class:`AdvTransferError`."""
    ground = ("finetune", "linear_probe", "source_accuracy")  # the recipe computes these
    bad = [m for m in methods if m not in METHODS or m in ground]
    if not methods or bad:
        allowed = [m for m in METHODS if m not in ground]
        raise AdvTransferError(f"methods must be a non-empty list of {allowed}; got {bad or []}"
                               " (the source-accuracy baseline is always added)")
    if len(set(methods)) != len(methods):
        raise AdvTransferError(f"methods lists a method twice: {list(methods)}")
    return list(methods)


def check_ground_truth(c: Any) -> None:
    """The ground-truth fields: ``ground_truth`` in :data:`GROUND_TRUTHS`, the full fine-tuning
    grid (learning rates > 0, integer epochs >= 1, weight decay >= 0) and ``val_fraction`` in
    (0, 1)."""
    if c.ground_truth not in GROUND_TRUTHS:
        raise AdvTransferError(f"ground_truth must be one of {list(GROUND_TRUTHS)}; got "
                               f"{c.ground_truth!r}")
    if not c.full_finetune_lrs or any(v <= 0 for v in c.full_finetune_lrs):
        raise AdvTransferError("full_finetune_lrs must be a non-empty list of values > 0; got "
                               f"{c.full_finetune_lrs}")
    if not c.full_finetune_epochs or any(int(e) != e or e < 1 for e in c.full_finetune_epochs):
        raise AdvTransferError("full_finetune_epochs must be a non-empty list of integers >= 1; "
                               f"got {c.full_finetune_epochs}")
    if c.full_finetune_weight_decay < 0:
        raise AdvTransferError(f"full_finetune_weight_decay must be >= 0; got "
                               f"{c.full_finetune_weight_decay}")
    if not 0 < c.val_fraction < 1:
        raise AdvTransferError(f"val_fraction must lie in (0, 1); got {c.val_fraction}")


def check_attack(c: SelectionAttackFields) -> None:
    """The attack fields and the convention, before anything runs."""
    attack_config(c)
    check_convention(c.convention)


def attack_key(c: Any) -> dict[str, Any]:
    """The recipe's attack settings: every field of the attack (:meth:`AttackConfig.key`),
    the convention and the settings of what is attacked (all in the units' keys:
    :func:`attack_unit`, :class:`CandidateAdversarialUnit`)."""
    return {**attack_config(c).key(), "convention": c.convention,
            "attack_samples": c.attack_samples, "correct_only": c.correct_only}


# ---------------------------------------------------------------------------------------------
# ground truths
# ---------------------------------------------------------------------------------------------


def seeded_split(ds: Dataset, fraction: float, seed: int, train: bool) -> Dataset:
    """The training (``train``) or held-out part of a seeded random split of ``ds``: a share
    ``fraction`` (at least one item) is held out, each part in the data set's order."""
    n = len(ds)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_test = max(1, round(fraction * n))
    return Subset(ds, sorted(perm[n_test:] if train else perm[:n_test]))


def holdout(data: Any, fraction: float, seed: int) -> tuple[Any, Any]:
    """A seeded (fit, validation) split of an (x, y) pair or a Dataset."""
    if isinstance(data, tuple):
        x, y = data
        perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
        n_val = max(1, round(fraction * len(y)))
        val, fit_ = perm[:n_val].sort().values, perm[n_val:].sort().values
        return (x[fit_], y[fit_]), (x[val], y[val])
    return (seeded_split(data, fraction, seed, train=True),
            seeded_split(data, fraction, seed, train=False))


def split_seed(ctx: RunContext, source: str, target: dict[str, Any]) -> int:
    """The seed of the full fine-tuning ground truth's validation split for the candidate
    ``source`` (its key) on the target ``target`` identifies: one split for every point of
    the grid (not a unit's seed: it is drawn from the pair alone)."""
    return ctx.seed_for("full-finetune-split", {"source": source, "target": target})


def _full_fit(ctx: RunContext, model: Model, unit: FullFinetuneGridUnit | FullFinetuneUnit,
              fit_on: Any, evaluate_on: Any) -> dict[str, Any]:
    """One timed full fine-tune of ``model`` (a copy with a new linear head on its penultimate
    features) with ``unit``'s settings and seed: trained on ``fit_on``, evaluated on
    ``evaluate_on``."""
    start = time.perf_counter()
    kt = knowledge_transfer(resolve(model), resolve(fit_on), resolve(evaluate_on),
                            task="classification", features="penultimate", finetune="full",
                            epochs=unit.epochs, lr=unit.lr, weight_decay=unit.weight_decay,
                            batch_size=unit.batch_size, device=ctx.device, seed=unit.seed)
    return {**kt.to_dict(), "seconds": time.perf_counter() - start}


def _full_finetune_grid(ctx: RunContext, source: str, target: dict[str, Any], model: Model,
                        train: Any, c: Any, batch_size: int,
                        ) -> tuple[dict[tuple[float, int], float], float]:
    """The validation accuracy of every (lr, epochs) of the grid (one
    :class:`FullFinetuneGridUnit` each) and the seconds of all its fits."""
    seconds = 0.0
    val_acc: dict[tuple[float, int], float] = {}
    seed = split_seed(ctx, source, target)
    for lr in c.full_finetune_lrs:
        for epochs in c.full_finetune_epochs:
            unit = FullFinetuneGridUnit(source=source, target=target, lr=lr, epochs=int(epochs),
                                        weight_decay=c.full_finetune_weight_decay,
                                        val_fraction=c.val_fraction, batch_size=batch_size)

            def grid_fit(unit: FullFinetuneGridUnit = unit) -> dict[str, Any]:
                return _full_fit(ctx, model, unit,
                                 *holdout(resolve(train), unit.val_fraction, seed))

            r = ctx.store.record(unit, grid_fit)
            seconds += r["seconds"]
            val_acc[(lr, int(epochs))] = float(r["test_accuracy"])
    return val_acc, seconds


def full_finetune_truth(ctx: RunContext, source: str, target: dict[str, Any], model: Model,
                        train: Any, test: Any, c: Any, *, batch_size: int = 128,
                        seeds: int = 1) -> dict[str, Any]:
    """The field's full fine-tuning ground truth for the candidate ``source`` (its key) on the
    target ``target`` identifies (``model``, ``train`` and ``test`` may be zero-argument
    producers, called only when a fit is not stored).

    A copy of the whole source with a new linear head on its penultimate features is trained
    (:func:`advtransfer.knowledge.knowledge_transfer` with ``finetune="full"``: SGD momentum
    0.9, cosine schedule, weight decay ``c.full_finetune_weight_decay``) for every learning rate
    x epochs pair of ``c.full_finetune_lrs`` x ``c.full_finetune_epochs`` on
    ``1 - c.val_fraction`` of the target training set and evaluated on the rest
    (:class:`FullFinetuneGridUnit`); the best pair is trained again on the whole training set,
    ``seeds`` times with different seeds (head initialisation and batch order), and evaluated
    on the test set (:class:`FullFinetuneUnit`). Returns the final
    :class:`KnowledgeTransferResult` dictionary with ``test_accuracy`` and ``test_loss`` the
    means over the ``seeds`` refits (``test_accuracies`` lists each), plus ``best_lr``,
    ``best_epochs``, ``best_val_accuracy``, ``seconds`` (all fits) and ``fit_seconds`` (the
    mean time of one refit: the cost of one full fine-tune)."""
    val_acc, seconds = _full_finetune_grid(ctx, source, target, model, train, c, batch_size)
    best_lr, best_epochs = max(val_acc, key=val_acc.__getitem__)
    fits = []
    for replicate in range(seeds):
        unit = FullFinetuneUnit(source=source, target=target, lr=best_lr, epochs=best_epochs,
                                weight_decay=c.full_finetune_weight_decay,
                                batch_size=batch_size, replicate=replicate)

        def final(unit: FullFinetuneUnit = unit) -> dict[str, Any]:
            return _full_fit(ctx, model, unit, train, test)

        fits.append(ctx.store.record(unit, final))
    accs = [float(r["test_accuracy"]) for r in fits]
    fit_seconds = [float(r["seconds"]) for r in fits]
    return {**fits[0], "test_accuracy": sum(accs) / seeds,
            "test_loss": sum(float(r["test_loss"]) for r in fits) / seeds,
            "test_accuracies": accs, "seconds": seconds + sum(fit_seconds),
            "fit_seconds": sum(fit_seconds) / seeds, "best_lr": best_lr,
            "best_epochs": best_epochs, "best_val_accuracy": val_acc[(best_lr, best_epochs)]}


def full_finetune_text(c: Any) -> str:
    """The report's description of :func:`full_finetune_truth` with ``c``'s settings."""
    return (f"test accuracy after full fine-tuning (the whole source plus a new linear head on "
            f"its penultimate features; SGD momentum 0.9, cosine schedule, weight decay "
            f"{c.full_finetune_weight_decay}), lr x epochs grid {c.full_finetune_lrs} x "
            f"{c.full_finetune_epochs} selected on a {c.val_fraction:.0%} validation split of "
            "the training set and retrained on all of it")


def linear_probe(ctx: RunContext, key: str, tid: dict, model: Model, train: Any, test: Any, *,
                 epochs: int, lr: float) -> dict[str, Any]:
    """The linear-probe ground truth of source ``key`` on target ``tid``: a linear head on the
    penultimate features, ``epochs`` epochs of SGD at ``lr`` (a :class:`LinearProbeUnit`;
    ``seconds`` its wall time)."""
    unit = LinearProbeUnit(source=key, target=tid, epochs=epochs, lr=lr)

    def finetune() -> dict[str, Any]:
        start = time.perf_counter()
        kt = knowledge_transfer(resolve(model), resolve(train), resolve(test),
                                task="classification",
                                features=unit.features,  # type: ignore[arg-type]
                                finetune=unit.finetune,  # type: ignore[arg-type]
                                epochs=unit.epochs, lr=unit.lr, device=ctx.device,
                                seed=unit.seed)
        return {**kt.to_dict(), "seconds": time.perf_counter() - start}

    return ctx.store.record(unit, finetune)


# ---------------------------------------------------------------------------------------------
# estimators
# ---------------------------------------------------------------------------------------------


def estimator_unit(ctx: RunContext, key: str, tid: dict, name: str, model: Model, train: Any,
                   est: list[str]) -> dict[str, Any]:
    """The estimators ``est`` of candidate ``name`` (source ``key``) on target ``tid``'s
    training data (:func:`advtransfer.selection.rank`, an :class:`EstimatorsUnit`):
    ``{"scores": {method: score}, "timings": seconds per part, "seconds": wall time}``,
    a score NaN where the estimator could not score the candidate."""
    unit = EstimatorsUnit(source=key, target=tid, methods=est)

    def estimate() -> dict[str, Any]:
        start = time.perf_counter()
        r = rank({name: resolve(model)}, resolve(train), None, methods=est, device=ctx.device)
        return {"scores": {m: r.scores[m][name] for m in est},
                "timings": r.timings, "seconds": time.perf_counter() - start}

    res = ctx.store.record(unit, estimate)
    return {**res, "scores": {m: num(res["scores"][m]) for m in est}}


# ---------------------------------------------------------------------------------------------
# adversarial scores: the reference's attack once per target, then one unit per candidate
# ---------------------------------------------------------------------------------------------


def _spaces(needed: Sequence[str]) -> list[tuple[str, list[str]]]:
    """The adversarial methods of ``needed`` by space ("logits", "features"): the non-empty
    spaces, logits first."""
    spaces = [(space, [m for m in needed if m in ADVERSARIAL_METHODS
                       and (m in ADVERSARIAL_FEATURE_METHODS) == (space == "features")])
              for space in ("logits", "features")]
    return [(space, adv) for space, adv in spaces if adv]


def attack_unit(c: Any, ref_key: str, target: dict[str, Any],
                batch_size: int) -> ReferenceAttackUnit:
    """The reference's attack unit: the reference ``ref_key``'s attack (every field of
    ``c``'s attack) on the first ``c.attack_samples`` test inputs of the target ``target``
    identifies (only those it classifies correctly with ``c.correct_only``), in batches of
    ``batch_size``."""
    return ReferenceAttackUnit(
        reference=ref_key, inputs={"target": target, "attack_samples": c.attack_samples,
                                   "correct_only": c.correct_only},
        attack=attack_config(c).key(), batch_size=batch_size)


def _attack_tensors(c: Any, ctx: RunContext, ref_key: str, target: dict[str, Any],
                    reference: Model, test: Any, batch_size: int,
                    ) -> tuple[ReferenceAttackUnit, dict[str, torch.Tensor]]:
    """The reference's attack on the target's test inputs, a tensor unit computed here when it
    is not stored (the reference and the data are then resolved); its unit and tensors (with
    its wall time as ``"seconds"``)."""
    unit = attack_unit(c, ref_key, target, batch_size)

    def attack() -> dict[str, torch.Tensor]:
        start = time.perf_counter()
        ref = prepare_reference(resolve(reference), resolve(test), attack_config(c),
                                attack_samples=c.attack_samples,
                                correct_only=c.correct_only, seed=unit.seed,
                                batch_size=batch_size, device=ctx.device,
                                progress=ctx.progress)
        return {**ref.tensors(),
                "seconds": torch.tensor(time.perf_counter() - start, dtype=torch.float64)}

    return unit, ctx.store.tensors(unit, attack)


def reference_attack(c: Any, ctx: RunContext, ref_key: str, reference: Model, test: Any,
                     needed: Sequence[str], *, target: dict[str, Any],
                     batch_size: int = 128) -> dict[str, float]:
    """Wave 2's share of the adversarial scores: the reference's attack on the test inputs of
    the target ``target`` identifies (one tensor unit, :func:`attack_unit`, shared by every
    candidate and both spaces), computed only when ``needed`` holds an adversarial method.
    Returns its seconds by space: counted in the logits space when it is measured, else in the
    features space (zeros without one)."""
    seconds = {"logits": 0.0, "features": 0.0}
    spaces = _spaces(needed)
    if spaces:
        _, tensors = _attack_tensors(c, ctx, ref_key, target, reference, test, batch_size)
        seconds[spaces[0][0]] += float(tensors["seconds"])
    return seconds


def _candidate_unit(payload: tuple[str, Any], *, plan: CandidatePlan,
                    reference_attack: ReferenceAttack, reference: nn.Module | None,
                    device: str) -> dict[str, Any]:
    """One candidate's adversarial scores in one space (the compute of its unit)."""
    start = time.perf_counter()
    r = score_candidate(payload, plan=plan, reference_attack=reference_attack,
                        reference=reference, device=device)
    return {"scores": r.scores, "details": r.details, "seconds": time.perf_counter() - start}


def candidate_adversarial(c: Any, ctx: RunContext, unit_type: type[CandidateAdversarialUnit],
                          name: str, key: str, model: Model, ref_key: str, reference: Model,
                          test: Any, needed: Sequence[str], *, target: dict[str, Any],
                          batch_size: int = 128) -> tuple[dict[str, float], dict[str, float]]:
    """One candidate's adversarial scores against the reference's stored attack on the target
    ``target`` identifies (:func:`reference_attack`, read from the store): one unit of
    ``unit_type`` (a :class:`CandidateAdversarialUnit`) per space (logits, penultimate
    features), keyed by the attack, the candidate's source key ``key`` and ``name``. The
    source's attack is seeded by the reference attack's unit
    (``seed_for(unit_type.kind)``): the same for every candidate of the target.
    ``reference`` is resolved only for the source -> target methods. Returns ``{method:
    score}`` and the seconds by space."""
    scores: dict[str, float] = {}
    seconds = {"logits": 0.0, "features": 0.0}
    spaces = _spaces(needed)
    if not spaces:
        return scores, seconds
    ref_unit, tensors = _attack_tensors(c, ctx, ref_key, target, reference, test, batch_size)
    ref = ReferenceAttack.from_tensors(tensors)
    for space, adv in spaces:
        plan = CandidatePlan(adversarial=tuple(adv), attack=attack_config(c),
                             convention=c.convention, batch_size=batch_size,
                             seed=ref_unit.seed_for(unit_type.kind))
        s2t = any(ADVERSARIAL_METHODS[m][1] == "s2t" for m in adv)
        unit = unit_type(reference_attack=ref_unit.key, source=key, name=name, methods=adv,
                         convention=c.convention)
        [res] = ctx.store.records(
            [(unit, (name, model))], _candidate_unit,
            shared={"plan": plan, "reference_attack": ref,
                    "reference": resolve(reference) if s2t else None,
                    "device": str(ctx.device)},
            description=f"{name} ({space})")
        seconds[space] += res["seconds"]
        scores.update({m: num(res["scores"][m]) for m in adv})
    return scores, seconds
