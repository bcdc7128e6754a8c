"""One candidate's unit of work in :func:`advtransfer.selection.rank`, and the reference
attack every unit shares.

:func:`prepare_reference` attacks the reference once for the whole pool
(:func:`advtransfer.reference.attack_reference`); :func:`score_candidate` then builds or takes
one candidate, measures the adversarial methods against that stored attack with the
candidate's own attack (:func:`advtransfer.reference.measure_against_reference`), runs the
estimators (:mod:`advtransfer.selection.estimation`) and fits the ``linear_probe`` head, as
:class:`CandidatePlan` says. A unit's result does not depend on the other candidates.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from advtransfer.attacks import AttackConfig
from advtransfer.devices import resolve_device
from advtransfer.errors import AdvTransferError, NotApplicableError
from advtransfer.methods import ADVERSARIAL_FEATURE_METHODS, ADVERSARIAL_METHODS
from advtransfer.metrics import Convention
from advtransfer.models.adapters import forward, frozen
from advtransfer.models.features import PenultimateCapture
from advtransfer.reference import ReferenceAttack, attack_reference, measure_against_reference
from advtransfer.selection.candidates import Candidate, _build_candidate
from advtransfer.selection.estimation import (
    _not_applicable,
    candidate_outputs,
    estimator_scores,
    gradient_scores,
)
from advtransfer.selection.target import _check_target_data, _split, _subset_index, _take_labelled

__all__ = ["CandidatePlan", "CandidateScores", "prepare_reference", "score_candidate"]


def _clean_outputs(model: nn.Module, x: torch.Tensor, *, batch_size: int,
                   device: torch.device | str) -> torch.Tensor:
    """f(x) of the reference, flattened per sample, on the CPU (eval mode, no gradients): one
    pass that gives the reference's accuracy, the ``correct_only`` selection and the clean
    outputs its attack starts from."""
    with frozen(model), torch.inference_mode():
        return torch.cat([forward(model, xb.to(device), name="reference").cpu()
                          for xb in x.split(batch_size)])


def prepare_reference(reference: nn.Module, data: Any, config: AttackConfig, *,
                      attack_samples: int | None = 256, correct_only: bool = False,
                      seed: int = 0, batch_size: int = 128,
                      device: str | torch.device = "auto",
                      progress: bool = False,
                      clean: torch.Tensor | None = None) -> ReferenceAttack:
    """The reference's attack shared by every candidate of
    :func:`~advtransfer.selection.rank`: up to ``attack_samples`` labelled target inputs (a
    seeded random subset of ``data``), only those the reference classifies correctly when
    ``correct_only`` (the authors' image protocol), and
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
    """What :func:`score_candidate` computes for every candidate of a
    :func:`~advtransfer.selection.rank` call: the adversarial methods (with the attack and
    reporting convention), the feature/output estimators, and the ``linear_probe`` ground
    truth with its settings."""

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
    """One candidate's unit of work in :func:`~advtransfer.selection.rank`: build (or take)
    the model, measure the adversarial methods against the shared ``reference_attack``
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
