r"""The digits model-selection recipes: does adversarial transferability pick the best source
model?

Both recipes rank a pool of candidate source models for several target tasks with every method
of :mod:`advtransfer.selection` (alpha1/alpha2/combined in both directions, Liang et al., ICML
2021; LogME, LEEP, NCE, H-score, regularized H-score, TransRate, GBC, ...; and the data-free
baseline that ranks by each source model's own accuracy), measure the ground truth by
fine-tuning every candidate on every target, and report the weighted Kendall tau
(:func:`scipy.stats.weightedtau`, the field's headline metric) of every method per target and
its mean.

``digits-model-selection`` (runs anywhere in minutes, no download)
    A pool of small source models of different architectures (two-layer MLPs of several widths,
    small CNNs, a linear model whose "features" are the pixels, a LeNet on upsampled inputs, an
    untrained network) trained on different source tasks built from scikit-learn's bundled
    digits: other label sets (all ten digits, subsets, parity, >= 5, mod 3, random labels) and
    other input distributions (noisy, rotated, blurred, pixel-permuted digits, synthetic bar
    patterns). Target tasks are digit tasks (default digits {0..4}, {5..9} and even/odd), each
    with a reference model trained on it. Two ground truths, both always computed and
    reported: the field's protocol, full fine-tuning of the whole candidate with an lr x epochs
    grid selected on a validation split and refit with ``finetune_seeds`` seeds
    (:func:`~advtransfer.experiments.recipes.selection_units.full_finetune_truth`; the
    headline, ``ground_truth="finetune"``), and the test accuracy of a linear head fitted on
    each candidate's penultimate features (the paper's last-layer fine-tuning,
    ``ground_truth="linear_probe"`` makes it the headline). Each mean weighted tau carries a
    subsampling interval, the full fine-tuning truth its agreement with itself across seeds,
    and every method its cost per candidate relative to one full fine-tune
    (:mod:`advtransfer.experiments.selection_analysis`).

``digits-model-selection-shift`` (the second benchmark, same protocol)
    12 sources trained on rotated / inverted / class-subset digit tasks (MLPs of several widths
    and depths, ``mlpWxD``; CNNs; LeNet; linear), ranked for low-data targets (mod 3, >= 5,
    digits 3-8; 30 training samples per class) that no source was trained on.

The work runs in three waves of :meth:`~advtransfer.experiments.registry.RunContext.map` on
the run's executor (:mod:`~advtransfer.experiments.recipes.selection_units`): the sources, then
the targets' references and their attacks, then every (target, candidate) pair; this process
only combines the results and analyses them. The reference model's accuracy on the target
test set is reported beside every ranking (``selection.reference_accuracy``, each record's
``reference_accuracy`` and the description): the alpha scores measure how candidates follow
the reference, so they mean little when the reference itself is poor. Every trained model,
fine-tune and score is a unit of the results store, so reruns resume.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from advtransfer.data.digits import digits
from advtransfer.errors import AdvTransferError
from advtransfer.experiments.recipes.selection_units import (
    RECIPE_METHODS,
    SelectionAdversarialUnit,
    SelectionAttackFields,
    candidate_adversarial,
    check_attack,
    check_ground_truth,
    check_methods,
    estimator_unit,
    full_finetune_text,
    full_finetune_truth,
    linear_probe,
    reference_attack,
)
from advtransfer.experiments.registry import RunContext, register
from advtransfer.experiments.selection_analysis import (
    GROUND_TRUTHS,
    agreement_text,
    analyse_ground_truths,
    cost_table,
    ground_truth_name,
    method_costs,
    protocol_table,
    report_labels,
)
from advtransfer.experiments.stages import (
    Lazy,
    ReferenceUnit,
    SourceUnit,
    accuracy,
    trained_classifier,
)
from advtransfer.methods import (
    COMBINED_METHODS,
    ESTIMATOR_METHODS,
    POOL_METHODS,
    RANK_AVERAGE_METHODS,
    needed_methods,
)
from advtransfer.models.digits import check_name
from advtransfer.models.registry import create
from advtransfer.selection import combine
from advtransfer.units import identity_key

__all__ = [
    "DEFAULT_DIGITS_SOURCES",
    "DEFAULT_DIGITS_TARGETS",
    "DIGITS_METHODS",
    "PRIMARY_METHODS",
    "SHIFT_SOURCES",
    "SHIFT_TARGETS",
    "DigitsModelSelectionConfig",
    "DigitsShiftConfig",
    "DigitsSource",
    "DigitsTarget",
    "LogitEnsemble",
    "digits_target",
    "parse_source",
    "quick_digits",
    "quick_shift",
    "source_data",
    "source_model",
    "synthetic_bars",
    "target_data",
]

# =============================================================================================
# the pool's language: sources, targets, their data and architectures
# =============================================================================================

#: The default pool: ``ARCH/TASK[/DATA]`` (see :func:`parse_source`).
DEFAULT_DIGITS_SOURCES: list[str] = [
    "mlp64/digits10", "cnn16/digits10", "linear/digits10", "mlp32/parity", "cnn8/ge5",
    "mlp64/mod3", "cnn16/0-4", "mlp64/5-9", "lenet/digits10/noisy", "mlp64/digits10/rotated",
    "cnn16/digits10/blurred", "mlp64/digits10/permuted", "mlp64/random10",
    "cnn16/bars4/synthetic", "mlp64/untrained",
]
#: The default target tasks (clean digits).
DEFAULT_DIGITS_TARGETS: list[str] = ["0-4", "5-9", "parity"]

_DATA_KINDS = ("clean", "noisy", "rotated", "blurred", "permuted", "inverted", "synthetic")
_NAMED_TASKS = ("digits10", "parity", "ge5", "mod3", "random10", "bars4", "untrained")

Pair = tuple[torch.Tensor, torch.Tensor]


class LogitEnsemble(nn.Module):
    """The mean of several classifiers' logits: an ensemble reference model."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(0)


@dataclass(frozen=True)
class DigitsSource:
    """A pool entry: architecture, source task (label set) and input distribution."""

    name: str
    arch: str
    task: str
    data: str


def _check_task(task: str, *, target: bool = False) -> None:
    if re.fullmatch(r"\d-\d", task):
        lo, hi = int(task[0]), int(task[2])
        if lo < hi:
            return
    named = ("digits10", "parity", "ge5", "mod3") if target else _NAMED_TASKS
    if task in named:
        return
    what = "target" if target else "source task"
    raise AdvTransferError(f"unknown {what} {task!r}: use a digit range 'a-b' (a < b) or one "
                           f"of {list(named)}")


def parse_source(spec: str) -> DigitsSource:
    """``ARCH/TASK[/DATA]``: ARCH in mlpW, cnnW, linear, lenet; TASK a digit range ``a-b``,
    ``digits10``, ``parity``, ``ge5`` (>= 5), ``mod3``, ``random10`` (random labels), ``bars4``
    (synthetic bar orientation, needs DATA=synthetic) or ``untrained``; DATA in clean (default),
    noisy, rotated, blurred, permuted (a fixed pixel permutation), inverted, synthetic."""
    parts = spec.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise AdvTransferError(f"source {spec!r} must have the form ARCH/TASK[/DATA], e.g. "
                               "'mlp64/digits10' or 'cnn16/digits10/noisy'")
    arch, task = parts[0], parts[1]
    data = parts[2] if len(parts) == 3 else ("synthetic" if task == "bars4" else "clean")
    check_name(arch)
    _check_task(task)
    if data not in _DATA_KINDS:
        raise AdvTransferError(f"source {spec!r}: unknown data {data!r}; use one of "
                               f"{list(_DATA_KINDS)}")
    if (task == "bars4") != (data == "synthetic"):
        raise AdvTransferError(f"source {spec!r}: task bars4 goes with data 'synthetic' and only "
                               "with it")
    return DigitsSource(spec, arch, task, data)


def _task_labels(task: str, y: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(mask of kept samples, new labels, number of classes) of a digit labelling task."""
    keep = torch.ones_like(y, dtype=torch.bool)
    if re.fullmatch(r"\d-\d", task):
        lo, hi = int(task[0]), int(task[2])
        keep = (y >= lo) & (y <= hi)
        return keep, y[keep] - lo, hi - lo + 1
    if task in ("digits10", "untrained"):
        return keep, y.clone(), 10
    if task == "parity":
        return keep, y % 2, 2
    if task == "ge5":
        return keep, (y >= 5).long(), 2
    if task == "mod3":
        return keep, y % 3, 3
    if task == "random10":
        g = torch.Generator().manual_seed(seed)
        return keep, torch.randint(0, 10, y.shape, generator=g), 10
    raise AdvTransferError(f"unknown task {task!r}")  # pragma: no cover - parse_source checks


def synthetic_bars(n: int, seed: int) -> Pair:
    """``n`` synthetic 8x8 images of a bar at a random offset, 4 classes by orientation
    (horizontal, vertical, diagonal, anti-diagonal), plus Gaussian noise (sd 0.2), in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 4
    offsets = torch.randint(0, 8, (n,), generator=g)
    x = torch.zeros(n, 1, 8, 8)
    idx = torch.arange(8)
    for i in range(n):
        o, k = int(offsets[i]), int(y[i])
        if k == 0:
            x[i, 0, o, :] = 1.0
        elif k == 1:
            x[i, 0, :, o] = 1.0
        elif k == 2:
            x[i, 0, idx, (idx + o) % 8] = 1.0
        else:
            x[i, 0, idx, (o - idx) % 8] = 1.0
    x = (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(0.0, 1.0)
    return x, y


def _transform(kind: str, x: torch.Tensor, seed: int) -> torch.Tensor:
    """The input distribution ``kind`` of :func:`parse_source` applied to images ``x``."""
    g = torch.Generator().manual_seed(seed)
    if kind == "clean":
        return x
    if kind == "noisy":
        return (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(0.0, 1.0)
    if kind == "rotated":
        return x.rot90(1, dims=(2, 3)).contiguous()
    if kind == "blurred":
        return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    if kind == "permuted":
        perm = torch.randperm(64, generator=torch.Generator().manual_seed(1234))
        return x.reshape(len(x), 64)[:, perm].reshape(x.shape)
    if kind == "inverted":
        return 1.0 - x
    raise AdvTransferError(f"unknown data kind {kind!r}")  # pragma: no cover


def source_data(src: DigitsSource, *, test_fraction: float, seed: int,
                ) -> tuple[Pair, Pair, int]:
    """(train, test, number of classes) of a source task."""
    if src.data == "synthetic":
        n_test = max(40, round(1600 * test_fraction))
        return synthetic_bars(1600 - n_test, seed + 1), synthetic_bars(n_test, seed + 2), 4
    split = digits(test_fraction=test_fraction, seed=seed)
    out = []
    n_cls = 10
    for j, (x, y) in enumerate(((split.x_train, split.y_train), (split.x_test, split.y_test))):
        keep, labels, n_cls = _task_labels(src.task, y, seed + 10 + j)
        out.append((_transform(src.data, x[keep], seed + 20 + j), labels))
    return out[0], out[1], n_cls


def target_data(task: str, *, test_fraction: float, seed: int, per_class: int = 0,
                ) -> tuple[Pair, Pair, int]:
    """(train, test, number of classes) of a target task on clean digits; ``per_class`` > 0
    keeps a seeded random ``per_class`` training samples of each target class (a low-data
    target), the test set is always whole."""
    _check_task(task, target=True)
    split = digits(test_fraction=test_fraction, seed=seed)
    out = []
    n_cls = 10
    for x, y in ((split.x_train, split.y_train), (split.x_test, split.y_test)):
        keep, labels, n_cls = _task_labels(task, y, seed)
        out.append((x[keep], labels))
    if per_class:
        x, y = out[0]
        perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed + 7))
        idx = torch.cat([perm[y[perm] == k][:per_class] for k in range(n_cls)]).sort().values
        out[0] = (x[idx], y[idx])
    return out[0], out[1], n_cls


# =============================================================================================
# configurations
# =============================================================================================

#: The methods the digits recipes score by default: every method of :data:`RECIPE_METHODS`,
#: alpha on the penultimate features in both directions and the rank-average combinations.
DIGITS_METHODS: list[str] = [*RECIPE_METHODS, "alpha1_features", "alpha2_features",
                             "combined_features", "alpha1_features_s2t", "alpha2_features_s2t",
                             "combined_features_s2t", *RANK_AVERAGE_METHODS]

#: The scores pre-registered (before any full run) as the candidates for the goal "beat every
#: estimator against full fine-tuning": pure adversarial on the transferred representation and
#: its rank average with LogME (the first round); LGC, the label-gradient correlation of the
#: linearised network, which shares the Jacobian with the adversarial scores, and the rank
#: average of alpha1 on features with SFDA, the field's strongest published estimator
#: (registered before the first full run with the new estimators, 2026-12-03).
PRIMARY_METHODS: list[str] = ["alpha1_features", "alpha1_features_logme_rankavg", "lgc",
                              "alpha1_features_sfda_rankavg"]


@dataclass
class DigitsModelSelectionConfig(SelectionAttackFields):
    seed: int = 0
    sources: list[str] = field(default_factory=lambda: list(DEFAULT_DIGITS_SOURCES))
    targets: list[str] = field(default_factory=lambda: list(DEFAULT_DIGITS_TARGETS))
    target_train_per_class: int = 0
    reference_architecture: str = "cnn16"
    reference_epochs: int = 0
    test_fraction: float = 0.3
    epochs: int = 30
    lr: float = 0.01
    finetune_epochs: int = 30
    finetune_lr: float = 0.1
    ground_truth: str = "finetune"
    full_finetune_lrs: list[float] = field(default_factory=lambda: [0.1, 0.01])
    full_finetune_epochs: list[int] = field(default_factory=lambda: [5, 15])
    full_finetune_weight_decay: float = 0.0
    full_finetune_batch_size: int = 32
    finetune_seeds: int = 2
    val_fraction: float = 0.2
    methods: list[str] = field(default_factory=lambda: list(DIGITS_METHODS))
    resamples: int = 500
    primary: list[str] = field(default_factory=lambda: list(PRIMARY_METHODS))


def quick_digits(config: DigitsModelSelectionConfig) -> DigitsModelSelectionConfig:
    """Five sources, three targets, 3 epochs, 2 attack steps on 64 inputs, one fine-tuning
    seed and a 1 x 1 grid."""
    return replace(config, sources=["mlp32/digits10", "linear/digits10", "cnn8/ge5",
                                    "mlp32/digits10/permuted", "mlp32/untrained"],
                   reference_architecture="mlp32", epochs=3, finetune_epochs=3, steps=2,
                   attack_samples=64, full_finetune_lrs=[0.1], full_finetune_epochs=[2],
                   finetune_seeds=1, resamples=50)


def _validate_digits(c: DigitsModelSelectionConfig) -> list[DigitsSource]:
    """Every value of ``c`` checked before anything runs; the pool parsed."""
    if len(c.sources) < 2:
        raise AdvTransferError(f"sources must list at least 2 source models; got {c.sources}")
    if len(set(c.sources)) != len(c.sources):
        raise AdvTransferError(f"sources lists a source twice: {c.sources}")
    if not c.targets or len(set(c.targets)) != len(c.targets):
        raise AdvTransferError(f"targets must be a non-empty list without repeats; got "
                               f"{c.targets}")
    for t in c.targets:
        _check_task(t, target=True)
    for arch in c.reference_architecture.split("+"):
        check_name(arch)
    if not 0 < c.test_fraction < 1:
        raise AdvTransferError(f"test_fraction must lie in (0, 1); got {c.test_fraction}")
    for name in ("epochs", "finetune_epochs", "steps", "attack_samples", "finetune_seeds",
                 "full_finetune_batch_size", "resamples"):
        if getattr(c, name) < 1:
            raise AdvTransferError(f"{name} must be >= 1; got {getattr(c, name)}")
    for name in ("target_train_per_class", "reference_epochs"):
        if getattr(c, name) < 0:
            raise AdvTransferError(f"{name} must be >= 0 (0 = all / the source epochs); got "
                                   f"{getattr(c, name)}")
    check_methods(c.methods)
    check_ground_truth(c)
    check_attack(c)
    return [parse_source(s) for s in c.sources]


#: The shift benchmark's pool: rotated / inverted / class-subset source tasks, several widths
#: and depths; none is trained on a target task.
SHIFT_SOURCES: list[str] = [
    "mlp16/digits10/rotated", "mlp128/digits10/rotated", "cnn8/digits10/inverted",
    "cnn32/digits10/inverted", "mlp64x1/0-4", "mlp64x3/5-9", "cnn16/0-4/rotated",
    "cnn16/5-9/inverted", "mlp32x4/parity/inverted", "lenet/0-4/inverted",
    "mlp64/digits10/noisy", "linear/digits10/rotated",
]
#: The shift benchmark's targets: label sets no source was trained on, low-data.
SHIFT_TARGETS: list[str] = ["mod3", "ge5", "3-8"]


@dataclass
class DigitsShiftConfig(DigitsModelSelectionConfig):
    sources: list[str] = field(default_factory=lambda: list(SHIFT_SOURCES))
    targets: list[str] = field(default_factory=lambda: list(SHIFT_TARGETS))
    target_train_per_class: int = 30


def quick_shift(config: DigitsShiftConfig) -> DigitsShiftConfig:
    """Four sources, the quick settings of ``digits-model-selection``."""
    return replace(quick_digits(config), sources=["mlp16/digits10/rotated", "mlp64x1/0-4",
                                                  "cnn8/digits10/inverted",
                                                  "linear/digits10/rotated"])


# =============================================================================================
# the models: sources and references (stored units)
# =============================================================================================


def _split_id(c: DigitsModelSelectionConfig) -> dict[str, Any]:
    return {"test_fraction": c.test_fraction, "seed": c.seed}


def source_model(c: DigitsModelSelectionConfig, ctx: RunContext, src: DigitsSource,
                 ) -> tuple[nn.Module, str, Pair]:
    """Source ``src`` trained on its task (a :class:`~advtransfer.experiments.stages.
    SourceUnit`: the architecture as its model, the task, input distribution and split as its
    data; reloaded when stored, a cheap safetensors read), its unit key and its test data. An
    ``untrained`` source is a unit of 0 epochs: its seeded initialisation, stored as such."""
    train, test, n_cls = source_data(src, test_fraction=c.test_fraction, seed=c.seed)
    unit = SourceUnit(model={"arch": src.arch},
                      data={"task": src.task, "data": src.data, "split": _split_id(c)},
                      epochs=0 if src.task == "untrained" else c.epochs, lr=c.lr)

    def build(arch: str = src.arch, n: int = n_cls) -> nn.Module:
        return create(f"digits:{arch}", "random", n)

    model, key = trained_classifier(ctx, unit, build, train)
    return model, key, test


@dataclass(frozen=True)
class DigitsTarget:
    """A target task: its name, its identity in the units' keys, its data and classes."""

    task: str
    tid: dict[str, Any]
    train: Pair
    test: Pair
    n_classes: int


def digits_target(c: DigitsModelSelectionConfig, task: str) -> DigitsTarget:
    """Target ``task`` with ``c``'s split and low-data setting (:func:`target_data`)."""
    train, test, n_cls = target_data(task, test_fraction=c.test_fraction, seed=c.seed,
                                     per_class=c.target_train_per_class)
    tid = {"task": task, "split": _split_id(c), "per_class": c.target_train_per_class}
    return DigitsTarget(task, tid, train, test, n_cls)


def _reference(c: DigitsModelSelectionConfig, ctx: RunContext,
               target: DigitsTarget) -> tuple[nn.Module, str]:
    """The reference model trained on the target (stored), or with ``reference_architecture``
    ``"A+B+..."`` the :class:`LogitEnsemble` of one such model per architecture."""
    models, keys = [], []
    for arch in c.reference_architecture.split("+"):
        unit = ReferenceUnit(model={"arch": arch}, data=target.tid,
                             epochs=c.reference_epochs or c.epochs, lr=c.lr)
        model, key = trained_classifier(
            ctx, unit, lambda arch=arch: create(f"digits:{arch}", "random", target.n_classes),
            target.train)
        models.append(model)
        keys.append(key)
    if len(models) == 1:
        return models[0], keys[0]
    return LogitEnsemble(models).eval(), identity_key("reference-ensemble", {"members": keys})


# =============================================================================================
# the waves' items (each may run on a Ray worker)
# =============================================================================================


def _source_item(src: DigitsSource, ctx: RunContext, *,
                 c: DigitsModelSelectionConfig) -> dict[str, Any]:
    """Wave 1: source ``src`` trained (or reloaded) and its test accuracy; its key and
    accuracy (the model stays in the store)."""
    model, key, test = source_model(c, ctx, src)
    acc = accuracy(ctx, key, model, test,
                   f"digits-{src.task}-{src.data}-{_split_id(c)}-test")
    return {"key": key, "accuracy": acc}


def _target_item(task: str, ctx: RunContext, *, c: DigitsModelSelectionConfig,
                 needed: list[str]) -> dict[str, Any]:
    """Wave 2: target ``task``'s reference, its test accuracy and its attack (the tensor unit
    every candidate of the target reads); the reference's key, accuracy, the data sizes and
    the attack's seconds by space."""
    target = digits_target(c, task)
    reference, ref_key = _reference(c, ctx, target)
    ref_acc = accuracy(ctx, ref_key, reference, target.test, f"digits-{target.tid}-test")
    attack_s = reference_attack(c, ctx, ref_key, reference, target.test, needed,
                                target=target.tid)
    return {"ref_key": ref_key, "accuracy": ref_acc, "n_train": len(target.train[1]),
            "n_test": len(target.test[1]), "attack_s": attack_s}


def _pair_item(item: tuple[str, DigitsSource], ctx: RunContext, *,
               c: DigitsModelSelectionConfig, needed: list[str], source_keys: dict[str, str],
               ref_keys: dict[str, str]) -> dict[str, Any]:
    """Wave 3: one (target, candidate) pair: the candidate's adversarial scores against the
    target's stored attack, its estimators, the full fine-tuning ground truth (grid + seeds)
    and the linear probe. The source and the reference are reloaded from the store only when
    a unit of the pair must be computed. Returns the pair's scores, ground truths and
    timings."""
    task, src = item
    target = digits_target(c, task)
    key, ref_key = source_keys[src.name], ref_keys[task]
    model = Lazy(lambda: source_model(c, ctx, src)[0])
    reference = Lazy(lambda: _reference(c, ctx, target)[0])
    scores, adv_s = candidate_adversarial(c, ctx, SelectionAdversarialUnit, src.name, key,
                                          model, ref_key, reference, target.test, needed,
                                          target=target.tid)
    est = [m for m in needed if m in ESTIMATOR_METHODS]
    timings: dict[str, float] = {}
    if est:
        res = estimator_unit(ctx, key, target.tid, src.name, model, target.train, est)
        scores.update(res["scores"])
        timings = res["timings"]
    ft = full_finetune_truth(ctx, key, target.tid, model, target.train, target.test, c,
                             batch_size=c.full_finetune_batch_size, seeds=c.finetune_seeds)
    lp = linear_probe(ctx, key, target.tid, model, target.train, target.test,
                      epochs=c.finetune_epochs, lr=c.finetune_lr)
    return {"scores": scores, "adversarial_s": adv_s, "estimator_timings": timings,
            "finetune": {k: ft[k] for k in ("test_accuracy", "test_loss", "test_accuracies",
                                            "seconds", "fit_seconds", "best_lr", "best_epochs",
                                            "best_val_accuracy")},
            "linear_probe": {k: lp[k] for k in ("test_accuracy", "test_loss", "seconds")}}


# =============================================================================================
# the driver: combine the waves' results, analyse, describe
# =============================================================================================


@dataclass
class _Combined:
    """The waves' results gathered by target: ``records`` (one per pair), ``scores[target]
    [method][candidate]``, ``truths[ground truth][target][candidate]``,
    ``per_seed[target][candidate]`` and the seconds of each part."""

    records: list[dict[str, Any]]
    scores: dict[str, dict[str, dict[str, float]]]
    truths: dict[str, dict[str, dict[str, float]]]
    per_seed: dict[str, dict[str, list[float]]]
    adv_s: dict[str, float]
    est_s: dict[str, float]
    ft_s: dict[str, float]


def _record(c: DigitsModelSelectionConfig, src: DigitsSource, task: str, source_acc: float,
            ref_acc: float, pair: dict[str, Any]) -> dict[str, Any]:
    """One pair's record (the method scores are added once the pool's are combined)."""
    ft, lp = pair["finetune"], pair["linear_probe"]
    head = ft if c.ground_truth == "finetune" else lp
    return {
        "source": src.name, "target": task, "architecture": src.arch,
        "source_task": src.task, "source_data": src.data, "source_accuracy": source_acc,
        "transfer_accuracy": head["test_accuracy"], "transfer_loss": head["test_loss"],
        "finetune_accuracy": ft["test_accuracy"], "finetune_accuracies": ft["test_accuracies"],
        "linear_probe_accuracy": lp["test_accuracy"], "reference_accuracy": ref_acc,
        "ground_truth": c.ground_truth, "best_lr": ft["best_lr"],
        "best_epochs": ft["best_epochs"], "best_val_accuracy": ft["best_val_accuracy"],
    }


def _add_seconds(total: dict[str, float], part: dict[str, float]) -> None:
    for k in total:
        total[k] += part.get(k, 0.0)


def _combine(c: DigitsModelSelectionConfig, pool: list[DigitsSource], sources: list[dict],
             targets: list[dict], pairs: list[dict], methods: list[str],
             needed: list[str]) -> _Combined:
    """The pairs' results (in the order target, then source) as records, scores per target
    (the combined methods computed over the pool), ground truths and summed seconds."""
    est = [m for m in needed if m in ESTIMATOR_METHODS]
    out = _Combined([], {}, {g: {} for g in GROUND_TRUTHS}, {},
                    {"logits": 0.0, "features": 0.0},
                    {"forward": 0.0, **{m: 0.0 for m in est},
                     **{m: 0.0 for m in needed if m in POOL_METHODS}},
                    {"finetune_protocol": 0.0, "finetune_fit": 0.0, "linear_probe": 0.0})
    results = iter(pairs)
    for task, ref in zip(c.targets, targets, strict=True):
        _add_seconds(out.adv_s, ref["attack_s"])
        per: dict[str, dict[str, float]] = {}
        records = []
        for src, source in zip(pool, sources, strict=True):
            pair = next(results)
            for m, v in pair["scores"].items():
                per.setdefault(m, {})[src.name] = v
            _add_seconds(out.adv_s, pair["adversarial_s"])
            _add_seconds(out.est_s, pair["estimator_timings"])
            ft, lp = pair["finetune"], pair["linear_probe"]
            _add_seconds(out.ft_s, {"finetune_protocol": ft["seconds"],
                                    "finetune_fit": ft["fit_seconds"],
                                    "linear_probe": lp["seconds"]})
            out.truths["finetune"].setdefault(task, {})[src.name] = float(ft["test_accuracy"])
            out.truths["linear_probe"].setdefault(task, {})[src.name] = float(
                lp["test_accuracy"])
            out.per_seed.setdefault(task, {})[src.name] = [float(v)
                                                           for v in ft["test_accuracies"]]
            records.append(_record(c, src, task, source["accuracy"], ref["accuracy"], pair))
        for m in needed:
            if m in COMBINED_METHODS:
                per[m] = combine(m, per)
        out.scores[task] = {m: per[m] for m in methods}
        for r in records:
            r.update({m: out.scores[task][m].get(r["source"]) for m in methods})
        out.records += records
    return out


def _costs(methods: list[str], run: _Combined, n_pairs: int) -> tuple[dict[str, float], float]:
    """Seconds per candidate and target of each method and of the ground truths, and of one
    full fine-tune."""
    costs = method_costs(methods, run.adv_s, run.est_s, n_pairs)
    costs.update({"linear probe (ground truth)": run.ft_s["linear_probe"] / n_pairs,
                  "full fine-tuning protocol (grid + seeds)":
                      run.ft_s["finetune_protocol"] / n_pairs})
    return costs, run.ft_s["finetune_fit"] / n_pairs


def _setup_text(c: DigitsModelSelectionConfig, pool: list[DigitsSource],
                targets: list[dict]) -> str:
    """The description's first paragraph: pool, targets, references, ground truths, attack."""
    ref_acc = {t: r["accuracy"] for t, r in zip(c.targets, targets, strict=True)}
    other = "linear_probe" if c.ground_truth == "finetune" else "finetune"
    gt_text = {"finetune": full_finetune_text(c) + f", mean of {c.finetune_seeds} seed(s)",
               "linear_probe": "test accuracy of a linear head fitted on each source's "
               f"penultimate features ({c.finetune_epochs} epochs, SGD lr {c.finetune_lr})"}
    return (
        f"Pool: {len(pool)} source models ({', '.join(s.name for s in pool)}; ARCH/TASK[/DATA]: "
        "architecture, source label set, source input distribution). Targets: "
        f"{', '.join(c.targets)} on clean digits ("
        + ", ".join(f"{r['n_train']} training / {r['n_test']} test samples for {t}"
                    for t, r in zip(c.targets, targets, strict=True))
        + f"); reference models {c.reference_architecture} trained on each target (test "
        "accuracy " + ", ".join(f"{t} {a:.3f}" for t, a in ref_acc.items()) + "). "
        f"Headline ground truth: {gt_text[c.ground_truth]}; also reported: {gt_text[other]}. "
        "Accuracies closer than a few test samples are ties in all but name. Adversarial "
        f"transferability: {c.solver} {c.norm} eps={c.eps}, {c.objective} objective, "
        f"{c.steps} steps, {c.attack_samples} target test inputs, the reference attacked once "
        "for the whole pool; plain alpha names are target -> source on the candidates' "
        "outputs, *_features on their penultimate features, *_s2t the reverse direction; "
        "*_rankavg average the normalised ranks of their two components (no fitted weight). "
        "Estimators on the target training set.\n\n")


def _results_text(c: DigitsModelSelectionConfig, by_truth: dict[str, Any],
                  tables: dict[str, str], costs: dict[str, float], fit_seconds: float) -> str:
    """The description's tables: weighted tau against both ground truths, the protocol and
    the costs, with the goal sentences."""
    g, other = c.ground_truth, ("linear_probe" if c.ground_truth == "finetune" else "finetune")
    return (
        f"**Weighted Kendall tau against {ground_truth_name(g)} (headline), per target and "
        "mean**; interval: 2.5-97.5 % over "
        f"{c.resamples} draws of 80 % of the candidates; P: share of draws in which the "
        f"method's mean beats the best estimator's ({by_truth[g]['best_estimator']})"
        ":\n\n" + tables[g] + "\n\n" + by_truth[g]["goal"]
        + agreement_text(by_truth["finetune"].get("seed_agreement")) + "\n\n"
        f"**The evaluation protocol against {ground_truth_name(g)}**: each measure's mean "
        "over targets with a 95 % bootstrap interval over candidates and targets "
        f"({c.resamples} draws); regret@1: the test accuracy lost by fine-tuning "
        "the top-ranked candidate instead of the best (a fraction: 0.01 is one point; 0 is "
        "perfect); the baselines never look at the target's "
        "images (the static ranker ranks by the candidates' mean rank on the other targets):"
        "\n\n" + protocol_table(by_truth[g]["protocol"]) + "\n\n"
        f"**Weighted Kendall tau against {ground_truth_name(other)}:**\n\n" + tables[other]
        + "\n\n" + by_truth[other]["goal"] + "\n\n**Cost per candidate and target** (wall "
        f"seconds on this machine; one full fine-tune = {fit_seconds:.3f} s):\n\n"
        + cost_table(costs, fit_seconds))


def _run_waves(c: DigitsModelSelectionConfig, ctx: RunContext, pool: list[DigitsSource],
               needed: list[str]) -> tuple[list[dict], list[dict], list[dict]]:
    """The three waves on ``ctx``'s executor: sources, then targets, then every (target,
    source) pair (targets outer); each wave's results in its items' order."""
    sources = ctx.map(functools.partial(_source_item, c=c), pool, description="sources")
    targets = ctx.map(functools.partial(_target_item, c=c, needed=needed),
                       list(c.targets), description="references")
    pairs = ctx.map(functools.partial(
        _pair_item, c=c, needed=needed,
        source_keys={s.name: r["key"] for s, r in zip(pool, sources, strict=True)},
        ref_keys={t: r["ref_key"] for t, r in zip(c.targets, targets, strict=True)}),
        [(t, s) for t in c.targets for s in pool], description="candidates")
    return sources, targets, pairs


def _run_digits(c: DigitsModelSelectionConfig, ctx: RunContext, name: str) -> dict[str, Any]:
    pool = _validate_digits(c)
    methods = list(c.methods)
    needed = needed_methods(methods)
    sources, targets, pairs = _run_waves(c, ctx, pool, needed)
    run = _combine(c, pool, sources, targets, pairs, methods, needed)
    source_acc = {t: {s.name: r["accuracy"] for s, r in zip(pool, sources, strict=True)}
                  for t in c.targets}
    by_truth, tables = analyse_ground_truths(run.scores, run.truths, run.per_seed, source_acc,
                                             primary=c.primary, resamples=c.resamples,
                                             seed_for=ctx.seed_for)
    costs, fit_seconds = _costs(methods, run, len(pool) * len(c.targets))
    selection = dict(by_truth[c.ground_truth])
    selection["by_ground_truth"] = by_truth
    selection["reference_accuracy"] = {t: r["accuracy"]
                                       for t, r in zip(c.targets, targets, strict=True)}
    selection["costs"] = {"seconds_per_candidate": costs, "full_finetune_fit_s": fit_seconds,
                          "adversarial_s": run.adv_s, "estimators_s": run.est_s,
                          "truth_s": run.ft_s}
    all_methods = [*methods, "source_accuracy"]
    return {
        "records": run.records,
        "selection": selection,
        "report": {
            "title": f"{name}: which source model transfers best?",
            "description": _setup_text(c, pool, targets)
            + _results_text(c, by_truth, tables, costs, fit_seconds),
            "ground_truth": {"finetune": "full fine-tuning accuracy",
                             "linear_probe": "linear-probe accuracy"}[c.ground_truth],
            "metrics": all_methods,
            "outcomes": ["transfer_accuracy"],
            "sweep": None,
            "labels": report_labels(all_methods, c.ground_truth),
            "columns": ["source", "target", "source_accuracy", "transfer_accuracy",
                        "linear_probe_accuracy", "finetune_accuracy", "reference_accuracy",
                        *methods],
        },
    }


@register("digits-model-selection", DigitsModelSelectionConfig,
          "Model selection on the bundled digits: a pool of 15 small source models (MLPs, CNNs, "
          "linear, LeNet; other label sets, noisy/rotated/blurred/permuted/synthetic inputs) "
          "ranked for 3 digit targets by alpha (on outputs and on penultimate features), "
          "rank averages with LogME/LEEP, LogME, LEEP, NCE, H-score, TransRate, GBC and source "
          "accuracy; weighted Kendall tau against full fine-tuning (2 seeds) and a linear "
          "probe (no download, minutes on CPU).", quick_digits,
          check=_validate_digits, growable=("sources",))
def run_digits(c: DigitsModelSelectionConfig, ctx: RunContext) -> dict[str, Any]:
    return _run_digits(c, ctx, "digits-model-selection")


@register("digits-model-selection-shift", DigitsShiftConfig,
          "Second model-selection benchmark on the bundled digits: 12 sources trained on "
          "rotated / inverted / class-subset digit tasks (MLPs of several widths and depths, "
          "CNNs, LeNet, linear), ranked for 3 low-data targets (mod 3, >= 5, digits 3-8, 30 "
          "training samples per class) that no source was trained on; same methods and ground "
          "truths as digits-model-selection.", quick_shift,
          check=_validate_digits, growable=("sources",))
def run_digits_shift(c: DigitsShiftConfig, ctx: RunContext) -> dict[str, Any]:
    return _run_digits(c, ctx, "digits-model-selection-shift")
