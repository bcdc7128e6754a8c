"""``digits-distribution``: the paper's data-distribution experiment on the bundled digits.

The digit classes are split into the target's group (default {0, 1, 2, 3}) and another group
(default {5, 6, 7, 8}). For each share s in ``shares`` a source task is built from
round(s * k) classes of the target's group and the rest from the other group (k = number of
target classes), mirroring the authors' CIFAR-10 proportions experiment (0%, 25%, ... animal
classes). A small CNN is trained on each source task (``repeats`` seeds per share), a reference
model on the target task, then for every source:

* knowledge transfer: its last layer is re-fitted on the target task (``finetune="head"`` on the
  penultimate features, or ``"full"``): test accuracy and loss;
* adversarial transferability between the source and the reference (both directions) on the
  target's test inputs;

and the report correlates the two. The paper predicts higher alpha with higher transfer accuracy.
The share is set by design and moves alpha and transfer accuracy together, so a pooled
correlation can be carried by the share alone; the report (``groups = "share"``) therefore also
gives per-share means, the correlation of the share with each quantity and the correlation within
groups of equal share (:func:`advtransfer.stats.within_group_correlation`), the test of whether
alpha says anything about transfer beyond the share. The authors' proportions experiment
(``exp1/visualize.py``) trains one source per share and plots alpha and transfer accuracy side by
side per share: the trend across shares only, which the per-share means table reproduces.
The alpha fields follow the convention of :func:`advtransfer.experiments.stages.adversarial`:
``alpha1`` is the mean unsquared ratio (``alpha1_ladv`` the mean squared one, the ICML
paper's alpha1 as a ratio of l_adv values); ``alpha2`` and ``combined`` are squared only with
``convention="authors"`` (default ``"icml"``: unsquared).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from advtransfer.data.digits import Split, digits
from advtransfer.errors import AdvTransferError
from advtransfer.experiments.registry import RunContext, register
from advtransfer.experiments.stages import (
    ReferenceUnit,
    SourceUnit,
    accuracy,
    adversarial,
    alpha_labels,
    attack_config,
    attack_fields,
    attack_fields_class,
    metric_names,
    predict,
    reference_attack,
    trained_classifier,
    transfer,
)
from advtransfer.metrics import Convention
from advtransfer.models import create, list_models

_Attack = attack_fields_class(
    "DigitsDistributionAttack", """The recipe's attack: every field of AttackConfig, at a
    20-step L2 PGD of the deviation objective with eps 1.0 (AttackConfig's other defaults).""",
    eps=1.0, norm="l2", steps=20)


@dataclass
class DigitsDistributionConfig(_Attack):  # type: ignore[misc, valid-type]
    seed: int = 0
    target_classes: list[int] = field(default_factory=lambda: [0, 1, 2, 3])
    other_classes: list[int] = field(default_factory=lambda: [5, 6, 7, 8])
    shares: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    repeats: int = 4
    architecture: str = "digits-cnn"
    reference_architecture: str = "digits-cnn"
    test_fraction: float = 0.3
    epochs: int = 30
    lr: float = 0.01
    finetune: str = "head"
    finetune_epochs: int = 30
    finetune_lr: float = 0.1
    convention: Convention = "icml"
    correct_only: bool = False


def quick(config: DigitsDistributionConfig) -> DigitsDistributionConfig:
    return replace(config, repeats=1, epochs=3, finetune_epochs=3, steps=2)


def source_classes(target: list[int], other: list[int], share: float) -> list[int]:
    """round(share * k) classes of the target's group, the rest from the other group."""
    k = len(target)
    n_target = round(share * k)
    if len(other) < k - n_target:
        raise AdvTransferError(f"other_classes needs at least {k - n_target} classes for "
                               f"share {share}; got {other}")
    return list(target[:n_target]) + list(other[: k - n_target])


def _validate(c: DigitsDistributionConfig) -> None:
    if not c.target_classes or len(set(c.target_classes) | set(c.other_classes)) != len(
            c.target_classes) + len(c.other_classes):
        raise AdvTransferError("target_classes and other_classes must be non-empty and disjoint")
    if not all(0 <= v <= 9 for v in c.target_classes + c.other_classes):
        raise AdvTransferError("digit classes must lie in 0..9")
    if not c.shares or not all(0.0 <= s <= 1.0 for s in c.shares):
        raise AdvTransferError(f"shares must be values in [0, 1]; got {c.shares}")
    if c.repeats < 1:
        raise AdvTransferError(f"repeats must be >= 1; got {c.repeats}")
    if c.finetune not in ("head", "full"):
        raise AdvTransferError(f"finetune must be 'head' or 'full'; got {c.finetune!r}")
    names = [spec.removeprefix("cifar:") for spec in list_models("cifar")]
    for key in ("architecture", "reference_architecture"):
        if getattr(c, key) not in names:
            raise AdvTransferError(f"{key} must be one of {names} (the cifar: models of "
                                   f"advtransfer.models.create); got {getattr(c, key)!r}")
    attack_config(c)


@functools.lru_cache(maxsize=2)
def _split(test_fraction: float, seed: int) -> Split:
    """The digits split (:func:`advtransfer.data.digits.digits`), made once per process: the
    run and each source (in this process or a Ray worker) rebuild it from ``(test_fraction,
    seed)`` instead of receiving it. Its tensors are shared: never modified in place."""
    return digits(test_fraction=test_fraction, seed=seed)


def _split_id(c: DigitsDistributionConfig) -> list[float | int]:
    return [c.test_fraction, c.seed]


def _source(item: tuple[float, int], ctx: RunContext, *, c: DigitsDistributionConfig,
            target_id: str, reference: nn.Module, ref_key: str,
            x_attack: torch.Tensor) -> dict[str, Any]:
    """One source of the design (share of the target's classes, repeat): trained, fine-tuned
    to the target and measured against the reference (each a stored unit); its record. The
    digits split is rebuilt here (:func:`_split`), so a Ray task receives only ``c``, the
    reference and the attacked inputs ``x_attack``."""
    share, rep = item
    split = _split(c.test_fraction, c.seed)
    target = split.subset(c.target_classes)
    classes = source_classes(c.target_classes, c.other_classes, share)
    task = split.subset(classes)
    n_src = len(classes)
    name = f"{round(100 * share)}%" + (f"#{rep}" if c.repeats > 1 else "")
    unit = SourceUnit(model={"arch": c.architecture},
                      data={"classes": classes, "repeat": rep, "seed": c.seed,
                            "split": _split_id(c)},
                      epochs=c.epochs, lr=c.lr)
    model, key = trained_classifier(
        ctx, unit, lambda: create(f"cifar:{c.architecture}", "random", n_src),
        (task.x_train, task.y_train))
    kt = transfer(ctx, key, model, (target.x_train, target.y_train),
                  (target.x_test, target.y_test), target=target_id,
                  task="classification", features="penultimate", finetune=c.finetune,
                  epochs=c.finetune_epochs, lr=c.finetune_lr)
    adv = adversarial(ctx, key, ref_key, model, reference, x_attack,
                      inputs={"n": len(x_attack)}, convention=c.convention, **attack_fields(c))
    return {
        "source": name, "share": share, "repeat": rep, "classes": str(classes),
        "source_accuracy": accuracy(
            ctx, key, model, (task.x_test, task.y_test),
            f"digits-{classes}-split-{_split_id(c)}-test"),
        "transfer_accuracy": kt["test_accuracy"], "transfer_loss": kt["test_loss"],
        **adv,
    }


def _reference(c: DigitsDistributionConfig, ctx: RunContext,
               ) -> tuple[nn.Module, str, torch.Tensor]:
    """The reference trained on the target task (a stored unit: trained, or read when stored),
    its key and the inputs it is attacked on (with ``correct_only``, the target's test inputs
    it classifies correctly, the authors' protocol)."""
    target = _split(c.test_fraction, c.seed).subset(c.target_classes)
    n_cls = len(c.target_classes)
    unit = ReferenceUnit(model={"arch": c.reference_architecture},
                         data={"classes": c.target_classes, "seed": c.seed,
                               "split": _split_id(c)},
                         epochs=c.epochs, lr=c.lr)
    reference, ref_key = trained_classifier(
        ctx, unit, lambda: create(f"cifar:{c.reference_architecture}", "random", n_cls),
        (target.x_train, target.y_train))
    x_attack = target.x_test
    if c.correct_only:
        x_attack = x_attack[predict(reference, x_attack, ctx.device) == target.y_test]
    return reference, ref_key, x_attack


def _reference_units(_: None, ctx: RunContext, *, c: DigitsDistributionConfig) -> float:
    """The reference's units, run by the executor before the sources: the reference, its test
    accuracy (returned) and its attack, which every source shares."""
    reference, ref_key, x_attack = _reference(c, ctx)
    target = _split(c.test_fraction, c.seed).subset(c.target_classes)
    reference_attack(ctx, ref_key, reference, x_attack, inputs={"n": len(x_attack)},
                     **attack_fields(c))
    return accuracy(ctx, ref_key, reference, (target.x_test, target.y_test),
                    f"{_target_id(c)}-test")


def _target_id(c: DigitsDistributionConfig) -> str:
    return f"digits-{c.target_classes}-split-{_split_id(c)}"


@register("digits-distribution", DigitsDistributionConfig,
          "Embedded default: sources trained on digit tasks sharing 0-100% of the target's "
          "classes; alpha vs fine-tuning accuracy (no download, minutes on CPU).", quick,
          check=_validate)
def run(c: DigitsDistributionConfig, ctx: RunContext) -> dict[str, Any]:
    _validate(c)
    n_cls = len(c.target_classes)
    [ref_acc] = ctx.map(functools.partial(_reference_units, c=c), [None],
                        description="reference")
    reference, ref_key, x_attack = _reference(c, ctx)  # read from the store
    items = [(share, rep) for share in c.shares for rep in range(c.repeats)]
    records = ctx.map(functools.partial(
        _source, c=c, target_id=_target_id(c), reference=reference, ref_key=ref_key,
        x_attack=x_attack), items)
    metrics = metric_names("t2s")
    return {
        "records": records,
        "reference": {"accuracy": ref_acc, "classes": c.target_classes},
        "report": {
            "title": "digits-distribution: does adversarial transferability indicate knowledge "
                     "transferability?",
            "description": (
                f"Sources: {c.architecture} trained on {n_cls}-class digit tasks whose share of "
                f"the target's classes {c.target_classes} runs over {c.shares} ({c.repeats} "
                f"seed(s) "
                f"each). Reference: {c.reference_architecture} trained on the target task "
                f"(test accuracy {ref_acc:.3f}). Knowledge transfer: {c.finetune} fine-tuning "
                f"on the target task. Adversarial transferability: {c.solver} {c.norm} "
                f"eps={c.eps}, {c.objective} objective, {c.steps} steps, on "
                f"{len(x_attack)} target test inputs. The paper predicts positive correlations "
                "of every alpha with transfer accuracy and negative ones with transfer loss. "
                "The share is the design variable: it moves both alpha and transfer, so the "
                "report also correlates them within groups of equal share."),
            "metrics": metrics,
            "outcomes": ["transfer_accuracy", "transfer_loss"],
            "sweep": "share",
            "groups": "share",
            "labels": {**alpha_labels(c.convention), "share": "share of target classes",
                       "transfer_accuracy": "transfer accuracy",
                       "transfer_loss": "transfer loss (cross-entropy)"},
            "columns": ["source", "share", "source_accuracy", "transfer_accuracy",
                        "transfer_loss", *metrics],
        },
    }
