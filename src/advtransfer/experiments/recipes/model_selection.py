r"""Model selection recipes: does adversarial transferability pick the best source model?

Both recipes rank a pool of candidate source models for several target tasks with every method of
:mod:`advtransfer.selection` (alpha1/alpha2/combined in both directions, Liang et al., ICML 2021;
LogME, LEEP, NCE, H-score, regularized H-score, TransRate, GBC; and the data-free baseline that
ranks by each source model's own accuracy), measure the ground truth by fine-tuning every
candidate on every target, and report the weighted Kendall tau (:func:`scipy.stats.weightedtau`,
the field's headline metric) of every method per target and its mean.

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
    (:func:`full_finetune_truth`; the headline, ``ground_truth="finetune"``), and the test
    accuracy of a linear head fitted on each candidate's penultimate features (the paper's
    last-layer fine-tuning, ``ground_truth="linear_probe"`` makes it the headline). Each mean
    weighted tau carries a subsampling interval (:func:`subsample_intervals`), the full
    fine-tuning truth its agreement with itself across seeds (:func:`seed_agreement`), and
    every method its cost per candidate relative to one full fine-tune.

``digits-model-selection-shift`` (the second benchmark, same protocol)
    12 sources trained on rotated / inverted / class-subset digit tasks (MLPs of several widths
    and depths, ``mlpWxD``; CNNs; LeNet; linear), ranked for low-data targets (mod 3, >= 5,
    digits 3-8; 30 training samples per class) that no source was trained on.

``imagenet-zoo`` (needs the data sets and, in practice, a GPU)
    The field's standard protocol (You et al., ICML 2021 "LogME"; Pándy et al., CVPR 2022; ...):
    11 torchvision ImageNet models (ResNet-34/50/101/152, DenseNet-121/169/201, MobileNetV2,
    MNASNet1.0, GoogLeNet, Inception-v3 at 299 px) ranked for CIFAR-10/100, DTD, Oxford-IIIT
    Pets, Flowers-102, FGVC-Aircraft, Stanford Cars, Food-101, SUN397, Caltech-101 and
    VOC2007 (as single-label classification: the class of the largest object). Ground truth:
    a learning-rate x weight-decay grid of linear-head fine-tuning on the penultimate features
    (selected on a validation split of the training set, reported on the test split), full
    fine-tuning (``ground_truth="finetune"``, :func:`full_finetune_truth`), or a CSV of
    published numbers (``ground_truth_csv``, columns ``model,dataset,accuracy``). Weights
    come from local files only (``weights_dir`` or the library cache); nothing is downloaded
    except data sets with ``download=true``.

The reference model's accuracy on the target test set is reported beside every ranking
(``selection.reference_accuracy``, each record's ``reference_accuracy`` and the description):
the alpha scores measure how candidates follow the reference, so they mean little when the
reference itself is poor. Every trained model, fine-tune and score is a unit of the results
store, so reruns resume.
"""

from __future__ import annotations

import csv
import functools
import math
import re
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset

from advtransfer.data.digits import digits
from advtransfer.errors import AdvTransferError
from advtransfer.estimators import weighted_kendall_tau
from advtransfer.estimators.protocol import evaluate_methods as protocol_evaluate
from advtransfer.estimators.protocol import get_measure
from advtransfer.estimators.protocol import seed_agreement as protocol_seed_agreement
from advtransfer.experiments.registry import RunContext, register
from advtransfer.experiments.stages import (
    AttackFields,
    Lazy,
    accuracy,
    attack_config,
    resolve,
    trained_classifier,
)
from advtransfer.knowledge import knowledge_transfer
from advtransfer.methods import (
    ADVERSARIAL_FEATURE_METHODS,
    ADVERSARIAL_METHODS,
    COMBINED_METHODS,
    ESTIMATOR_METHODS,
    GRADIENT_METHODS,
    METHODS,
    POOL_METHODS,
    RANK_AVERAGE_METHODS,
    method_label,
    needed_methods,
)
from advtransfer.metrics import Convention, check_convention
from advtransfer.models.architectures import digits_cnn, digits_mlp, fc_net, lenet
from advtransfer.reference import ReferenceAttack
from advtransfer.report import md_table
from advtransfer.selection import (
    CandidatePlan,
    candidate_outputs,
    combine,
    estimator_scores,
    evaluate_methods,
    evaluation_to_dict,
    gradient_scores,
    markdown_table,
    prepare_reference,
    rank,
    score_candidate,
    summarize,
    target_tensors,
)
from advtransfer.store import unit_key

__all__ = [
    "DEFAULT_DIGITS_SOURCES",
    "DEFAULT_DIGITS_TARGETS",
    "DIGITS_METHODS",
    "SHIFT_SOURCES",
    "SHIFT_TARGETS",
    "GROUND_TRUTHS",
    "ZOO_DATASETS",
    "ZOO_MODELS",
    "DigitsModelSelectionConfig",
    "DigitsShiftConfig",
    "ImageNetZooConfig",
    "LogitEnsemble",
    "Resized",
    "UpsampledLeNet",
    "full_finetune_truth",
    "imagenet_top1",
    "seed_agreement",
    "selection_summary",
    "subsample_intervals",
]

#: Every method scored by the recipes (the data-free source-accuracy baseline is added on top).
RECIPE_METHODS: list[str] = ["alpha1", "alpha2", "combined", "alpha1_s2t", "alpha2_s2t",
                             "combined_s2t", "logme", "leep", "nce", "hscore",
                             "regularized_hscore", "transrate", "gbc", "nleep", "parc", "sfda",
                             "ncti", "etran", "knn", "lfc", "tmi", "lgc", "ped_logme",
                             "ped_sfda"]
_OUTCOME_LABELS = {
    "transfer_accuracy": "transfer accuracy (fine-tuned head)",
    "reference_accuracy": "reference accuracy (target-trained model, target test set)",
}


def _labels(metrics: list[str], ground_truth: str) -> dict[str, str]:
    labels = {m: method_label(m) for m in metrics}
    labels.update({k: v for k, v in _OUTCOME_LABELS.items()
                   if k in metrics or k in ("transfer_accuracy", "reference_accuracy")})
    if ground_truth == "finetune":
        labels["transfer_accuracy"] = "transfer accuracy (full fine-tuning)"
    return labels


def _check_methods(methods: Sequence[str]) -> list[str]:
    ground = ("finetune", "linear_probe", "source_accuracy")  # the recipe computes these
    bad = [m for m in methods if m not in METHODS or m in ground]
    if not methods or bad:
        allowed = [m for m in METHODS if m not in ground]
        raise AdvTransferError(f"methods must be a non-empty list of {allowed}; got {bad or []}"
                               " (the source-accuracy baseline is always added)")
    if len(set(methods)) != len(methods):
        raise AdvTransferError(f"methods lists a method twice: {list(methods)}")
    return list(methods)


def selection_summary(scores: dict[str, dict[str, dict[str, float]]],
                      truth: dict[str, dict[str, float]],
                      source_accuracy: dict[str, dict[str, float]] | None) -> dict[str, Any]:
    """The ``"selection"`` block of a recipe's results.

    ``scores[target][method][candidate]``, ``truth[target][candidate]`` and
    ``source_accuracy[target][candidate]`` (or None) -> per-target evaluations (weighted tau,
    Kendall tau, Pearson, top-1/top-3 relative accuracy) and tables of each metric per target
    with the mean, the candidate each method picks per target and the true best."""
    evaluations = {t: evaluate_methods(scores[t], truth[t],
                                       source_accuracy=None if source_accuracy is None
                                       else source_accuracy[t])
                   for t in scores}
    out: dict[str, Any] = {
        metric: summarize(evaluations, metric)
        for metric in ("weighted_tau", "kendall_tau", "pearson", "top1", "top3")}
    picked: dict[str, dict[str, str]] = {}
    for t, per in scores.items():
        all_scores = dict(per)
        if source_accuracy is not None:
            all_scores["source_accuracy"] = source_accuracy[t]
        for m, s in all_scores.items():
            best = max(s, key=lambda c: (s[c] if s[c] is not None and math.isfinite(s[c])
                                         else -math.inf))
            picked.setdefault(m, {})[t] = best
    out["picked"] = picked
    out["best"] = {t: max(tr, key=tr.__getitem__) for t, tr in truth.items()}
    out["truth"] = truth
    out["evaluations"] = {t: {m: evaluation_to_dict(e) for m, e in ev.items()}
                          for t, ev in evaluations.items()}
    return out


def _wins_losses(table: dict[str, dict[str, float]]) -> str:
    """One sentence: where the default adversarial score beats / loses to LogME."""
    if "alpha1" not in table and "combined" not in table:
        return ""
    parts = []
    for adv in ("alpha1", "alpha2", "combined"):
        if adv not in table:
            continue
        better = [t for t, v in table[adv].items() if t != "mean" and "logme" in table
                  and math.isfinite(v) and math.isfinite(table["logme"].get(t, math.nan))
                  and v > table["logme"][t]]
        parts.append(f"{adv} beats LogME on {len(better)}/{len(table[adv]) - 1} target(s)"
                     + (f" ({', '.join(better)})" if better else ""))
    return "; ".join(parts) + "."


GROUND_TRUTHS = ("linear_probe", "finetune")


def _check_ground_truth(c: Any) -> None:
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


def _holdout(data: Any, fraction: float, seed: int) -> tuple[Any, Any]:
    """A seeded (fit, validation) split of an (x, y) pair or a Dataset."""
    if isinstance(data, tuple):
        x, y = data
        perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
        n_val = max(1, round(fraction * len(y)))
        val, fit_ = perm[:n_val].sort().values, perm[n_val:].sort().values
        return (x[fit_], y[fit_]), (x[val], y[val])
    return (_seeded_split(data, fraction, seed, train=True),
            _seeded_split(data, fraction, seed, train=False))


def full_finetune_truth(ctx: RunContext, base: dict[str, Any],
                        model: nn.Module | Callable[[], nn.Module], train: Any, test: Any,
                        c: Any, *, batch_size: int = 128, seeds: int = 1) -> dict[str, Any]:
    """The field's full fine-tuning ground truth for one (source, target) pair (``model``,
    ``train`` and ``test`` may be zero-argument producers, called only when a fit is not
    stored).

    A copy of the whole source with a new linear head on its penultimate features is trained
    (:func:`advtransfer.knowledge.knowledge_transfer` with ``finetune="full"``: SGD momentum
    0.9, cosine schedule, weight decay ``c.full_finetune_weight_decay``) for every learning rate
    x epochs pair of ``c.full_finetune_lrs`` x ``c.full_finetune_epochs`` on
    ``1 - c.val_fraction`` of the target training set and evaluated on the rest; the best pair
    is trained again on the whole training set, ``seeds`` times with different seeds (head
    initialisation and batch order), and evaluated on the test set. Every fit is a unit of the
    store. Returns the final :class:`KnowledgeTransferResult` dictionary with ``test_accuracy``
    and ``test_loss`` the means over the ``seeds`` refits (``test_accuracies`` lists each),
    plus ``best_lr``, ``best_epochs``, ``best_val_accuracy``, ``seconds`` (all fits) and
    ``fit_seconds`` (the mean time of one refit: the cost of one full fine-tune)."""
    def fit(fit_on: Any, evaluate_on: Any, lr: float, epochs: int, seed: int) -> dict[str, Any]:
        """One timed full fine-tune: trained on ``fit_on``, evaluated on ``evaluate_on``."""
        start = time.perf_counter()
        kt = knowledge_transfer(resolve(model), resolve(fit_on), resolve(evaluate_on),
                                task="classification",
                                features="penultimate", finetune="full", epochs=epochs, lr=lr,
                                weight_decay=c.full_finetune_weight_decay,
                                batch_size=batch_size, device=ctx.device, seed=seed)
        return {**kt.to_dict(), "seconds": time.perf_counter() - start}

    seconds = 0.0
    val_acc: dict[tuple[float, int], float] = {}
    split_seed = ctx.seed_for("full-finetune-split", base)
    for lr in c.full_finetune_lrs:
        for epochs in c.full_finetune_epochs:
            unit = {**base, "ground_truth": "finetune", "lr": lr, "epochs": int(epochs),
                    "weight_decay": c.full_finetune_weight_decay, "val_fraction": c.val_fraction}

            def grid_fit(unit: dict = unit, lr: float = lr, epochs: int = int(epochs),
                         ) -> dict[str, Any]:
                return fit(*_holdout(resolve(train), c.val_fraction, split_seed), lr, epochs,
                           ctx.seed_for("full-finetune-grid", unit))

            r = ctx.store.record("full-finetune-grid", unit, grid_fit)
            seconds += r["seconds"]
            val_acc[(lr, int(epochs))] = float(r["test_accuracy"])
    best_lr, best_epochs = max(val_acc, key=val_acc.__getitem__)
    fits = []
    for replicate in range(seeds):
        unit = {**base, "ground_truth": "finetune", "lr": best_lr, "epochs": best_epochs,
                "weight_decay": c.full_finetune_weight_decay,
                **({"replicate": replicate} if replicate else {})}

        def final(unit: dict = unit) -> dict[str, Any]:
            return fit(train, test, best_lr, best_epochs, ctx.seed_for("full-finetune", unit))

        fits.append(ctx.store.record("full-finetune", unit, final))
    accs = [float(r["test_accuracy"]) for r in fits]
    fit_seconds = [float(r["seconds"]) for r in fits]
    return {**fits[0], "test_accuracy": sum(accs) / seeds,
            "test_loss": sum(float(r["test_loss"]) for r in fits) / seeds,
            "test_accuracies": accs, "seconds": seconds + sum(fit_seconds),
            "fit_seconds": sum(fit_seconds) / seeds, "best_lr": best_lr,
            "best_epochs": best_epochs, "best_val_accuracy": val_acc[(best_lr, best_epochs)]}


def _full_finetune_text(c: Any) -> str:
    return (f"test accuracy after full fine-tuning (the whole source plus a new linear head on "
            f"its penultimate features; SGD momentum 0.9, cosine schedule, weight decay "
            f"{c.full_finetune_weight_decay}), lr x epochs grid {c.full_finetune_lrs} x "
            f"{c.full_finetune_epochs} selected on a {c.val_fraction:.0%} validation split of "
            "the training set and retrained on all of it")


# =============================================================================================
# digits-model-selection
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


class UpsampledLeNet(nn.Module):
    """LeNet-5 on 8x8 digits upsampled (bilinear, differentiable) to ``size`` x ``size``:
    LeNet's two 5x5 convolutions need at least 14 px. Accepts (N, 1, 8, 8) or flat (N, 64)."""

    def __init__(self, num_classes: int, size: int = 16, width: float = 1.0) -> None:
        super().__init__()
        self.size = size
        self.net = lenet(num_classes, in_channels=1, image_size=size, width=width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.reshape(x.shape[0], 1, 8, 8)
        return self.net(F.interpolate(x, size=(self.size, self.size), mode="bilinear",
                                      align_corners=False))


@dataclass(frozen=True)
class DigitsSource:
    """A pool entry: architecture, source task (label set) and input distribution."""

    name: str
    arch: str
    task: str
    data: str


def _check_arch(arch: str) -> None:
    if arch in ("linear", "lenet") or re.fullmatch(r"(mlp[1-9]\d*(x[1-9]\d*)?|cnn[1-9]\d*)",
                                                   arch):
        return
    raise AdvTransferError(f"unknown architecture {arch!r}: use mlpW (digits MLP, two hidden "
                           "layers of width W), mlpWxD (D hidden layers of width W), cnnW "
                           "(digits CNN of width W), linear or lenet")


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
    _check_arch(arch)
    _check_task(task)
    if data not in _DATA_KINDS:
        raise AdvTransferError(f"source {spec!r}: unknown data {data!r}; use one of "
                               f"{list(_DATA_KINDS)}")
    if (task == "bars4") != (data == "synthetic"):
        raise AdvTransferError(f"source {spec!r}: task bars4 goes with data 'synthetic' and only "
                               "with it")
    return DigitsSource(spec, arch, task, data)


def build_digits_model(arch: str, num_classes: int) -> nn.Module:
    """The pool's architectures: mlpW (two hidden ReLU layers of width W), mlpWxD (D hidden
    layers), cnnW, linear (logistic regression on the 64 pixels, whose penultimate features are
    the pixels themselves) and lenet (:class:`UpsampledLeNet`)."""
    _check_arch(arch)
    if arch == "linear":
        return fc_net(64, num_classes, hidden=())
    if arch == "lenet":
        return UpsampledLeNet(num_classes)
    if "x" in arch:
        width, depth = (int(v) for v in arch[3:].split("x"))
        return fc_net(64, num_classes, hidden=(width,) * depth)
    width = int(arch[3:])
    return digits_mlp(num_classes, hidden=width) if arch.startswith("mlp") else \
        digits_cnn(num_classes, width=width)


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


def synthetic_bars(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
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
                ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor],
                           int]:
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
                ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor],
                           int]:
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
class SelectionAttackFields(AttackFields):
    """The attack of the model-selection recipes (:class:`~advtransfer.experiments.stages.
    AttackFields` with an L2 budget of 1.0 in input units), the reporting convention, how many
    target inputs are attacked and whether only those the reference classifies correctly."""

    eps: float = 1.0
    norm: str = "l2"
    convention: Convention = "icml"
    attack_samples: int = 256
    correct_only: bool = False


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
        _check_arch(arch)
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
    _check_methods(c.methods)
    _check_ground_truth(c)
    _check_attack(c)
    return [parse_source(s) for s in c.sources]


def _check_attack(c: SelectionAttackFields) -> None:
    """The attack fields and the convention, before anything runs."""
    attack_config(c)
    check_convention(c.convention)


def _attack(c: Any) -> dict[str, Any]:
    """The attack settings in the units' keys: every field of the attack
    (:meth:`AttackConfig.key`) and the recipe's settings of what is attacked."""
    return {**attack_config(c).key(), "convention": c.convention,
            "attack_samples": c.attack_samples, "correct_only": c.correct_only}


def _floored(values: Sequence[float]) -> list[float]:
    """Non-finite scores replaced by a value below every finite one (ranked last), the rule of
    :func:`advtransfer.selection.evaluate_methods`."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return [0.0] * len(values)
    floor = min(finite) - 1.0 - (max(finite) - min(finite))
    return [v if math.isfinite(v) else floor for v in values]


def subsample_intervals(scores: dict[str, dict[str, dict[str, float]]],
                        truth: dict[str, dict[str, float]], methods: Sequence[str], *,
                        against: str, resamples: int, seed: int,
                        fraction: float = 0.8) -> dict[str, dict[str, float]]:
    """Percentile intervals of the mean (over targets) weighted Kendall tau by subsampling
    candidates.

    Each of ``resamples`` draws keeps a seeded random ``fraction`` of the candidates of every
    target (without replacement, so no artificial ties), and recomputes every method's weighted
    tau and its mean over targets. Returns ``{method: {"low": 2.5 %, "high": 97.5 %,
    "p_beats": share of draws where the method's mean tau exceeds that of ``against``}}``
    (paired: the same candidates for every method)."""
    rng = torch.Generator().manual_seed(seed)
    targets = list(truth)
    draws: dict[str, list[float]] = {m: [] for m in methods}
    for _ in range(resamples):
        per: dict[str, list[float]] = {m: [] for m in methods}
        for t in targets:
            names = list(truth[t])
            k = max(3, round(fraction * len(names)))
            keep = [names[i] for i in torch.randperm(len(names), generator=rng)[:k].tolist()]
            tr = [truth[t][n] for n in keep]
            for m in methods:
                sc = _floored([_num(scores[t][m][n]) for n in keep])
                per[m].append(weighted_kendall_tau(sc, tr))
        for m in methods:
            vals = [v for v in per[m] if math.isfinite(v)]
            draws[m].append(sum(vals) / len(vals) if vals else math.nan)
    out: dict[str, dict[str, float]] = {}
    base = torch.tensor(draws[against], dtype=torch.float64)
    for m in methods:
        d = torch.tensor(draws[m], dtype=torch.float64)
        ok = torch.isfinite(d)
        q = torch.quantile(d[ok], torch.tensor([0.025, 0.975], dtype=torch.float64)) \
            if bool(ok.any()) else torch.tensor([math.nan, math.nan])
        out[m] = {"low": float(q[0]), "high": float(q[1]),
                  "p_beats": float((d > base).double().mean())}
    return out


def _seed_taus(scores: dict[str, dict[str, dict[str, float]]],
               per_seed: dict[str, dict[str, list[float]]],
               methods: Sequence[str]) -> dict[str, list[float]]:
    """Mean (over targets) weighted tau of every method against each fine-tuning seed's truth
    alone."""
    seeds = len(next(iter(next(iter(per_seed.values())).values())))
    out: dict[str, list[float]] = {m: [] for m in methods}
    for s in range(seeds):
        truth = {t: {n: v[s] for n, v in tr.items()} for t, tr in per_seed.items()}
        table = summarize({t: evaluate_methods({m: scores[t][m] for m in methods}, truth[t])
                           for t in truth})
        for m in methods:
            out[m].append(table[m]["mean"])
    return out


def _n_seeds(per_seed: dict[str, dict[str, list[float]]]) -> int:
    """How many fine-tuning seeds ``per_seed[target][candidate]`` holds (the same for all)."""
    return len(next(iter(next(iter(per_seed.values())).values())))


def seed_agreement(per_seed: dict[str, dict[str, list[float]]]) -> dict[str, float]:
    """How well the ground truth ranks itself: per target, the mean over pairs of fine-tuning
    seeds of the weighted Kendall tau between the two seeds' accuracies
    (:func:`advtransfer.estimators.protocol.seed_agreement`; ``nan`` with one seed), and its
    ``"mean"`` over targets. A method can hardly be expected to agree with the mean truth much
    better than two runs of the truth agree with each other."""
    measure = get_measure("weighted_tau")
    out: dict[str, float] = {}
    for t, tr in per_seed.items():
        several = _n_seeds({t: tr}) > 1
        out[t] = protocol_seed_agreement({t: tr}, measure) if several else math.nan
    vals = [v for v in out.values() if math.isfinite(v)]
    out["mean"] = sum(vals) / len(vals) if vals else math.nan
    return out


#: The protocol's measures in the report's order (:mod:`advtransfer.estimators.protocol`).
PROTOCOL_MEASURES = ("weighted_tau", "kendall_tau", "rel@1", "rel@3", "regret@1")
BASELINE_LABELS = {"seed_ceiling": "fine-tuning seeds' ceiling (seed vs seed)",
                    "static_ranker": "static ranker (mean rank on the other targets)",
                    "random_ranking": "random ranking"}


def _by_method(scores: dict[str, dict[str, dict[str, float]]]
               ) -> dict[str, dict[str, dict[str, float]]]:
    """``scores[target][method][candidate]`` as ``[method][target][candidate]``."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for t, per in scores.items():
        for m, values in per.items():
            out.setdefault(m, {})[t] = values
    return out


def protocol_evaluation(scores: dict[str, dict[str, dict[str, float]]],
                        truth: dict[str, dict[str, float]],
                        truth_runs: dict[str, dict[str, list[float]]] | None, *,
                        resamples: int, seed: int) -> dict[str, Any]:
    """The evaluation protocol over ``scores[method][target][candidate]`` against ``truth``
    (:func:`advtransfer.estimators.protocol.evaluate_methods`): weighted and plain Kendall tau,
    rel@1, rel@3 and regret@1 (the test accuracy, a fraction, lost by taking the top-ranked
    candidate instead of the best), each
    the mean over targets with a 95 % bootstrap interval over candidates and targets
    (``resamples`` draws), and the rows of the seeds' ceiling (with ``truth_runs``), the
    static ranker (two targets or more) and a random ranking. NaN scores propagate (a method
    that cannot score a candidate gets NaN on that target)."""
    runs = truth_runs if truth_runs and _n_seeds(truth_runs) > 1 else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # one target: no static ranker row
        result = protocol_evaluate(scores, truth, truth_runs=runs,
                                   measures=[get_measure(m) for m in PROTOCOL_MEASURES],
                                   n_boot=resamples, seed=seed)
    return {"measures": list(result.measures), "n_boot": result.n_boot,
            "level": result.level, "rows": result.to_rows()}


def _protocol_table(evaluation: dict[str, Any]) -> str:
    """Markdown: one row per method and baseline, each measure's mean over targets and its
    bootstrap interval; best weighted tau first, the baselines last."""
    measures = evaluation["measures"]
    header = ["method", *(f"{m} [95 % CI]" for m in measures)]
    methods = [r for r in evaluation["rows"] if r["kind"] == "method"]
    methods.sort(key=lambda r: -r["weighted_tau"] if math.isfinite(r["weighted_tau"])
                 else math.inf)
    rows = []
    for r in [*methods, *(r for r in evaluation["rows"] if r["kind"] != "method")]:
        name = BASELINE_LABELS.get(r["name"], method_label(r["name"]))
        rows.append([name, *(f"{_f3(r[m])} [{_f3(r[m + '_low'])}, {_f3(r[m + '_high'])}]"
                             for m in measures)])
    return md_table(header, rows)


def _f3(v: float) -> str:
    return f"{v:.3f}" if math.isfinite(v) else "—"


def _tau_table(table: dict[str, dict[str, float]], ci: dict[str, dict[str, float]] | None,
               seed_taus: dict[str, list[float]] | None, against: str) -> str:
    """Markdown: per-target weighted tau, mean, its subsampling interval, the range over
    fine-tuning seeds, and P(mean tau > the best feature estimator's)."""
    targets = [t for t in next(iter(table.values())) if t != "mean"]
    head = ["method", *targets, "mean"]
    if ci is not None:
        head += ["95% interval", f"P(> {method_label(against)})"]
    if seed_taus is not None:
        head += ["per fine-tuning seed"]
    rows = []
    for m, row in sorted(table.items(), key=lambda kv: -kv[1]["mean"] if math.isfinite(
            kv[1]["mean"]) else math.inf):
        cells = [method_label(m), *(_f3(row[t]) for t in targets), f"**{_f3(row['mean'])}**"]
        if ci is not None:
            iv = ci.get(m)
            cells += ([f"[{_f3(iv['low'])}, {_f3(iv['high'])}]",
                       "—" if m == against else f"{iv['p_beats']:.2f}"] if iv else ["", ""])
        if seed_taus is not None:
            cells.append(" / ".join(_f3(v) for v in seed_taus.get(m, [])))
        rows.append(cells)
    return md_table(head, rows)


def _cost_table(costs: dict[str, float], fit_seconds: float) -> str:
    """Markdown: seconds per candidate and target of each method, and relative to one full
    fine-tune."""
    return md_table(["method", "s per candidate", "x one full fine-tune"],
                    [[method_label(m), f"{v:.4f}", f"{v / fit_seconds:.3f}"]
                     for m, v in sorted(costs.items(), key=lambda kv: kv[1])])


def _method_costs(methods: Sequence[str], adv_seconds: dict[str, float],
                  est_seconds: dict[str, float], n_pairs: int) -> dict[str, float]:
    """Seconds per (candidate, target) of each method: the adversarial units shared by every
    method of one space (logits / features, the reference attack amortised over the pool),
    the forward pass plus the estimator for the estimators, the sum of the components for a
    rank average."""
    out: dict[str, float] = {}
    for m in needed_methods(methods):
        if m in ADVERSARIAL_METHODS:
            space = "features" if m in ADVERSARIAL_FEATURE_METHODS else "logits"
            out[m] = adv_seconds[space] / n_pairs
        elif m in RANK_AVERAGE_METHODS:
            out[m] = sum(out[c] for c in RANK_AVERAGE_METHODS[m])
        elif m in est_seconds:  # a pooled estimator's time is that of computing its parts
            out[m] = (est_seconds["forward"] + est_seconds[m]) / n_pairs
    return {m: out[m] for m in methods if m in out}


def _best_estimator(table: dict[str, dict[str, float]]) -> str:
    """The feature/output estimator with the highest mean weighted tau."""
    est = [m for m in table if m in ESTIMATOR_METHODS or m in POOL_METHODS]
    return max(est, key=lambda m: table[m]["mean"] if math.isfinite(table[m]["mean"])
               else -math.inf)


def _goal_sentence(table: dict[str, dict[str, float]], against: str,
                   primary: Sequence[str]) -> str:
    """Plain sentences: does each pre-registered ``primary`` score, and (post hoc) the best of
    all adversarial / combined scores, beat the best feature/output estimator in mean weighted
    tau?"""
    def mean(m: str) -> float:
        v = table[m]["mean"]
        return v if math.isfinite(v) else -math.inf

    adv = [m for m in table if m in ADVERSARIAL_METHODS or m in RANK_AVERAGE_METHODS
           or m in GRADIENT_METHODS]
    if not adv or against not in table:
        return ""
    e = mean(against)
    parts = [f"Pre-registered {m}: {mean(m):.3f}, "
             f"{'beats' if mean(m) > e else 'does not beat'} the best estimator {against} "
             f"({e:.3f})" for m in primary if m in table]
    best = max(adv, key=mean)
    parts.append(f"best of all {len(adv)} adversarial / gradient / combined scores (post hoc, so "
                 f"optimistic): {best} ({mean(best):.3f}, "
                 f"{'beats' if mean(best) > e else 'does not beat'} it)")
    return "; ".join(parts) + "."


def _train_sources(c: DigitsModelSelectionConfig, ctx: RunContext, pool: list[DigitsSource],
                   ) -> tuple[dict[str, nn.Module], dict[str, str], dict[str, float]]:
    """Train (or reload) every source; returns models, store keys and source test accuracies."""
    split_id = {"test_fraction": c.test_fraction, "seed": c.seed}
    models: dict[str, nn.Module] = {}
    keys: dict[str, str] = {}
    src_acc: dict[str, float] = {}
    for src in pool:
        train, test, n_cls = source_data(src, test_fraction=c.test_fraction, seed=c.seed)
        unit = {"arch": src.arch, "task": src.task, "data": src.data, "split": split_id}

        def build(arch: str = src.arch, n: int = n_cls) -> nn.Module:
            return build_digits_model(arch, n)

        if src.task == "untrained":
            unit = {**unit, "untrained": True}
            seed = ctx.seed_for("source", unit)

            def seeded(build: Callable[[], nn.Module] = build, seed: int = seed) -> nn.Module:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed)
                    return build().to(ctx.device)

            model = ctx.store.model("source", unit, seeded, lambda m: m)
            key = unit_key("source", unit)
        else:
            model, key = trained_classifier(ctx, "source", unit, build, train, epochs=c.epochs,
                                            lr=c.lr)
        models[src.name], keys[src.name] = model, key
        src_acc[src.name] = accuracy(ctx, key, model, test,
                                     f"digits-{src.task}-{src.data}-{split_id}-test")
    return models, keys, src_acc


def _linear_probe(c: DigitsModelSelectionConfig, ctx: RunContext, key: str, tid: dict,
                  model: nn.Module, train: tuple, test: tuple) -> dict[str, Any]:
    """The linear-probe ground truth: a linear head on the penultimate features."""
    unit = {"source": key, "target": tid, "features": "penultimate", "finetune": "head",
            "epochs": c.finetune_epochs, "lr": c.finetune_lr}

    def finetune() -> dict[str, Any]:
        start = time.perf_counter()
        kt = knowledge_transfer(model, train, test, task="classification",
                                features="penultimate", finetune="head",
                                epochs=c.finetune_epochs, lr=c.finetune_lr, device=ctx.device,
                                seed=ctx.seed_for("selection-finetune", unit))
        return {**kt.to_dict(), "seconds": time.perf_counter() - start}

    return ctx.store.record("selection-finetune", unit, finetune)


def _candidate_unit(payload: tuple[str, Any], *, plan: CandidatePlan,
                    reference_attack: ReferenceAttack, reference: nn.Module | None,
                    device: str) -> dict[str, Any]:
    """One candidate's adversarial scores (a module-level function: it may run on a Ray
    worker, see :meth:`advtransfer.store.Store.records`)."""
    start = time.perf_counter()
    r = score_candidate(payload, plan=plan, reference_attack=reference_attack,
                        reference=reference, device=device)
    return {"scores": r.scores, "details": r.details, "seconds": time.perf_counter() - start}


def adversarial_units(c: Any, ctx: RunContext, kind: str, candidates: dict[str, tuple[str, Any]],
                      ref_key: str, reference: nn.Module, test: Any, needed: Sequence[str], *,
                      batch_size: int = 128) -> tuple[dict, dict[str, float]]:
    """The adversarial scores of every candidate against one reference, as store units: the
    reference's attack on the test inputs is one tensor unit (computed once, shared by every
    candidate and both spaces), and each candidate (``{name: (unit key, model or builder)}``)
    is one unit per space (logits, penultimate features), run by ``ctx.executor``: adding a
    candidate computes only that candidate. Returns ``{method: {name: score}}`` and the
    seconds per space (the reference's attack counted in the logits space when it is measured,
    else in the features space)."""
    config = attack_config(c)
    attack_unit = {"reference": ref_key, **{k: v for k, v in _attack(c).items()
                                            if k != "convention"}, "batch_size": batch_size}

    def attack() -> dict[str, torch.Tensor]:
        start = time.perf_counter()
        ref = prepare_reference(reference, resolve(test), config,
                                attack_samples=c.attack_samples,
                                correct_only=c.correct_only,
                                seed=ctx.seed_for("reference-attack", attack_unit),
                                batch_size=batch_size, device=ctx.device,
                                progress=ctx.progress)
        return {**ref.tensors(),
                "seconds": torch.tensor(time.perf_counter() - start, dtype=torch.float64)}

    scores: dict[str, dict[str, float]] = {}
    seconds = {"logits": 0.0, "features": 0.0}
    spaces = [(space, [m for m in needed if m in ADVERSARIAL_METHODS
                       and (m in ADVERSARIAL_FEATURE_METHODS) == (space == "features")])
              for space in ("logits", "features")]
    spaces = [(space, adv) for space, adv in spaces if adv]
    if not spaces:
        return scores, seconds
    tensors = ctx.store.tensors("reference-attack", attack_unit, attack)  # once for all
    seconds[spaces[0][0]] += float(tensors["seconds"])
    ref = ReferenceAttack.from_tensors(tensors)
    ref_unit = unit_key("reference-attack", attack_unit)
    for space, adv in spaces:
        plan = CandidatePlan(adversarial=tuple(adv), attack=config, convention=c.convention,
                             batch_size=batch_size, seed=ctx.seed_for(kind, attack_unit))
        s2t = any(ADVERSARIAL_METHODS[m][1] == "s2t" for m in adv)
        units = [({"reference_attack": ref_unit, "source": key, "name": name, "methods": adv,
                   "convention": c.convention}, (name, model))
                 for name, (key, model) in candidates.items()]
        results = ctx.store.records(
            kind, units, _candidate_unit, executor=ctx.executor,
            shared={"plan": plan, "reference_attack": ref,
                    "reference": reference if s2t else None, "device": str(ctx.device)},
            description=f"candidates ({space})", progress=ctx.progress)
        for name, res in zip(candidates, results, strict=True):
            seconds[space] += res["seconds"]
            for m in adv:
                scores.setdefault(m, {})[name] = _num(res["scores"][m])
    return scores, seconds


class LogitEnsemble(nn.Module):
    """The mean of several classifiers' logits: an ensemble reference model."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(0)


def _reference(c: DigitsModelSelectionConfig, ctx: RunContext, tid: dict, train: tuple,
               n_cls: int) -> tuple[nn.Module, str]:
    """The reference model trained on the target (stored), or with ``reference_architecture``
    ``"A+B+..."`` the :class:`LogitEnsemble` of one such model per architecture."""
    models, keys = [], []
    for arch in c.reference_architecture.split("+"):
        unit = {"arch": arch, **tid,
                **({"epochs": c.reference_epochs} if c.reference_epochs else {})}
        model, key = trained_classifier(
            ctx, "reference", unit, lambda arch=arch: build_digits_model(arch, n_cls), train,
            epochs=c.reference_epochs or c.epochs, lr=c.lr)
        models.append(model)
        keys.append(key)
    if len(models) == 1:
        return models[0], keys[0]
    return LogitEnsemble(models).eval(), unit_key("reference-ensemble", {"members": keys})


def _run_digits(c: DigitsModelSelectionConfig, ctx: RunContext, name: str) -> dict[str, Any]:
    pool = _validate_digits(c)
    methods = list(c.methods)
    needed = needed_methods(methods)
    est = [m for m in needed if m in ESTIMATOR_METHODS]
    split_id = {"test_fraction": c.test_fraction, "seed": c.seed}
    models, keys, src_acc = _train_sources(c, ctx, pool)

    records: list[dict[str, Any]] = []
    scores: dict[str, dict[str, dict[str, float]]] = {}
    truths: dict[str, dict[str, dict[str, float]]] = {"finetune": {}, "linear_probe": {}}
    per_seed: dict[str, dict[str, list[float]]] = {}
    ref_acc: dict[str, float] = {}
    n_test: dict[str, int] = {}
    n_train: dict[str, int] = {}
    adv_s = {"logits": 0.0, "features": 0.0}
    est_s: dict[str, float] = {"forward": 0.0, **{m: 0.0 for m in est},
                               **{m: 0.0 for m in needed if m in POOL_METHODS}}
    ft_s = {"finetune_protocol": 0.0, "finetune_fit": 0.0, "linear_probe": 0.0}
    for task in c.targets:
        train, test, n_cls = target_data(task, test_fraction=c.test_fraction, seed=c.seed,
                                         per_class=c.target_train_per_class)
        tid = {"task": task, "split": split_id,
               **({"per_class": c.target_train_per_class} if c.target_train_per_class else {})}
        reference, ref_key = _reference(c, ctx, tid, train, n_cls)
        ref_acc[task] = accuracy(ctx, ref_key, reference, test, f"digits-{tid}-test")
        n_test[task], n_train[task] = len(test[1]), len(train[1])
        per, secs = adversarial_units(
            c, ctx, "selection-adversarial",
            {s.name: (keys[s.name], models[s.name]) for s in pool}, ref_key, reference, test,
            needed)
        for k, v in secs.items():
            adv_s[k] += v

        truths["finetune"][task], truths["linear_probe"][task], per_seed[task] = {}, {}, {}
        for src in pool:
            model, key = models[src.name], keys[src.name]
            if est:
                unit = {"source": key, "target": tid, "methods": est}

                def estimate(model: nn.Module = model, name: str = src.name,
                             train: tuple = train) -> dict[str, Any]:
                    start = time.perf_counter()
                    r = rank({name: model}, train, None, methods=est, device=ctx.device)
                    return {"scores": {m: r.scores[m][name] for m in est},
                            "timings": r.timings, "seconds": time.perf_counter() - start}

                res = ctx.store.record("selection-estimators", unit, estimate)
                for k in est_s:
                    est_s[k] += res["timings"].get(k, 0.0)
                for m in est:
                    per.setdefault(m, {})[src.name] = _num(res["scores"][m])
            ft = full_finetune_truth(ctx, {"source": key, "target": tid}, model, train, test,
                                     c, batch_size=c.full_finetune_batch_size,
                                     seeds=c.finetune_seeds)
            lp = _linear_probe(c, ctx, key, tid, model, train, test)
            ft_s["finetune_protocol"] += ft["seconds"]
            ft_s["finetune_fit"] += ft["fit_seconds"]
            ft_s["linear_probe"] += lp["seconds"]
            truths["finetune"][task][src.name] = float(ft["test_accuracy"])
            truths["linear_probe"][task][src.name] = float(lp["test_accuracy"])
            per_seed[task][src.name] = [float(v) for v in ft["test_accuracies"]]
            head = ft if c.ground_truth == "finetune" else lp
            records.append({
                "source": src.name, "target": task, "architecture": src.arch,
                "source_task": src.task, "source_data": src.data,
                "source_accuracy": src_acc[src.name],
                "transfer_accuracy": head["test_accuracy"], "transfer_loss": head["test_loss"],
                "finetune_accuracy": ft["test_accuracy"],
                "finetune_accuracies": ft["test_accuracies"],
                "linear_probe_accuracy": lp["test_accuracy"],
                "reference_accuracy": ref_acc[task], "ground_truth": c.ground_truth,
                "best_lr": ft["best_lr"], "best_epochs": ft["best_epochs"],
                "best_val_accuracy": ft["best_val_accuracy"],
            })
        for m in needed:
            if m in COMBINED_METHODS:
                per[m] = combine(m, per)
        scores[task] = {m: per[m] for m in methods}
        for r in records[-len(pool):]:
            r.update({m: scores[task][m].get(r["source"]) for m in methods})

    sa = {t: dict(src_acc) for t in c.targets}
    all_methods = [*methods, "source_accuracy"]
    full_scores = {t: {**scores[t], "source_accuracy": sa[t]} for t in c.targets}
    by_truth = {g: selection_summary(scores, truths[g], sa) for g in GROUND_TRUTHS}
    n_pairs = len(pool) * len(c.targets)
    fit_seconds = ft_s["finetune_fit"] / n_pairs
    costs = _method_costs(methods, adv_s, est_s, n_pairs)
    costs.update({"linear probe (ground truth)": ft_s["linear_probe"] / n_pairs,
                  "full fine-tuning protocol (grid + seeds)":
                      ft_s["finetune_protocol"] / n_pairs})
    tables = {}
    for g in GROUND_TRUTHS:
        table = by_truth[g]["weighted_tau"]
        against = _best_estimator(table)
        ci = subsample_intervals(full_scores, truths[g], all_methods, against=against,
                                 resamples=c.resamples,
                                 seed=ctx.seed_for("selection-intervals", g))
        by_truth[g]["intervals"] = ci
        by_truth[g]["best_estimator"] = against
        by_truth[g]["goal"] = _goal_sentence(table, against, c.primary)
        seed_taus = _seed_taus(full_scores, per_seed, all_methods) if g == "finetune" else None
        if seed_taus is not None:
            by_truth[g]["per_seed_weighted_tau"] = seed_taus
            by_truth[g]["seed_agreement"] = seed_agreement(per_seed)
        tables[g] = _tau_table(table, ci, seed_taus, against)
        by_truth[g]["protocol"] = protocol_evaluation(
            _by_method(full_scores), truths[g], per_seed if g == "finetune" else None,
            resamples=c.resamples, seed=ctx.seed_for("selection-protocol", g))
    selection = dict(by_truth[c.ground_truth])
    selection["by_ground_truth"] = by_truth
    selection["reference_accuracy"] = ref_acc
    selection["costs"] = {"seconds_per_candidate": costs, "full_finetune_fit_s": fit_seconds,
                          "adversarial_s": adv_s, "estimators_s": est_s, "truth_s": ft_s}
    other = "linear_probe" if c.ground_truth == "finetune" else "finetune"
    gt_text = {"finetune": _full_finetune_text(c) + f", mean of {c.finetune_seeds} seed(s)",
               "linear_probe": "test accuracy of a linear head fitted on each source's "
               f"penultimate features ({c.finetune_epochs} epochs, SGD lr {c.finetune_lr})"}
    description = (
        f"Pool: {len(pool)} source models ({', '.join(s.name for s in pool)}; ARCH/TASK[/DATA]: "
        "architecture, source label set, source input distribution). Targets: "
        f"{', '.join(c.targets)} on clean digits ("
        + ", ".join(f"{n_train[t]} training / {n_test[t]} test samples for {t}"
                    for t in c.targets)
        + f"); reference models {c.reference_architecture} trained on each target (test "
        "accuracy " + ", ".join(f"{t} {a:.3f}" for t, a in ref_acc.items()) + "). "
        f"Headline ground truth: {gt_text[c.ground_truth]}; also reported: {gt_text[other]}. "
        "Accuracies closer than a few test samples are ties in all but name. Adversarial "
        f"transferability: {c.solver} {c.norm} eps={c.eps}, {c.objective} objective, "
        f"{c.steps} steps, {c.attack_samples} target test inputs, the reference attacked once "
        "for the whole pool; plain alpha names are target -> source on the candidates' "
        "outputs, *_features on their penultimate features, *_s2t the reverse direction; "
        "*_rankavg average the normalised ranks of their two components (no fitted weight). "
        "Estimators on the target training set.\n\n"
        f"**Weighted Kendall tau against {_g_name(c.ground_truth)} (headline), per target and "
        "mean**; interval: 2.5-97.5 % over "
        f"{c.resamples} draws of 80 % of the candidates; P: share of draws in which the "
        f"method's mean beats the best estimator's ({by_truth[c.ground_truth]['best_estimator']})"
        ":\n\n" + tables[c.ground_truth] + "\n\n" + by_truth[c.ground_truth]["goal"]
        + _agreement_text(by_truth["finetune"].get("seed_agreement")) + "\n\n"
        f"**The evaluation protocol against {_g_name(c.ground_truth)}**: each measure's mean "
        "over targets with a 95 % bootstrap interval over candidates and targets "
        f"({c.resamples} draws); regret@1: the test accuracy lost by fine-tuning "
        "the top-ranked candidate instead of the best (a fraction: 0.01 is one point; 0 is "
        "perfect); the baselines never look at the target's "
        "images (the static ranker ranks by the candidates' mean rank on the other targets):"
        "\n\n" + _protocol_table(by_truth[c.ground_truth]["protocol"]) + "\n\n"
        f"**Weighted Kendall tau against {_g_name(other)}:**\n\n" + tables[other] + "\n\n"
        + by_truth[other]["goal"] + "\n\n**Cost per candidate and target** (wall seconds on "
        f"this machine; one full fine-tune = {fit_seconds:.3f} s):\n\n"
        + _cost_table(costs, fit_seconds))
    return {
        "records": records,
        "selection": selection,
        "report": {
            "title": f"{name}: which source model transfers best?",
            "description": description,
            "ground_truth": {"finetune": "full fine-tuning accuracy",
                             "linear_probe": "linear-probe accuracy"}[c.ground_truth],
            "metrics": all_methods,
            "outcomes": ["transfer_accuracy"],
            "sweep": None,
            "labels": _labels(all_methods, c.ground_truth),
            "columns": ["source", "target", "source_accuracy", "transfer_accuracy",
                        "linear_probe_accuracy", "finetune_accuracy", "reference_accuracy",
                        *methods],
        },
    }


def _agreement_text(agreement: dict[str, float] | None) -> str:
    if not agreement or not math.isfinite(agreement["mean"]):
        return ""
    return (" Agreement of the full fine-tuning truth with itself (weighted tau between two "
            "fine-tuning seeds): " + ", ".join(f"{t} {v:.3f}" for t, v in agreement.items())
            + ".")


def _g_name(ground_truth: str) -> str:
    """Readable name of a ground truth."""
    return "full fine-tuning" if ground_truth == "finetune" else "the linear probe"


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


@register("digits-model-selection-shift", DigitsShiftConfig,
          "Second model-selection benchmark on the bundled digits: 12 sources trained on "
          "rotated / inverted / class-subset digit tasks (MLPs of several widths and depths, "
          "CNNs, LeNet, linear), ranked for 3 low-data targets (mod 3, >= 5, digits 3-8, 30 "
          "training samples per class) that no source was trained on; same methods and ground "
          "truths as digits-model-selection.", quick_shift,
          check=_validate_digits, growable=("sources",))
def run_digits_shift(c: DigitsShiftConfig, ctx: RunContext) -> dict[str, Any]:
    return _run_digits(c, ctx, "digits-model-selection-shift")


def _num(v: Any) -> float:
    return math.nan if v is None else float(v)


# =============================================================================================
# imagenet-zoo
# =============================================================================================

#: The 11 torchvision ImageNet models of the field's standard protocol.
ZOO_MODELS: list[str] = ["resnet34", "resnet50", "resnet101", "resnet152", "densenet121",
                         "densenet169", "densenet201", "mobilenet_v2", "mnasnet1_0",
                         "googlenet", "inception_v3"]
#: The standard target data sets (``fake`` = torchvision FakeData, for tests).
ZOO_DATASETS: list[str] = ["cifar10", "cifar100", "dtd", "pets", "flowers102", "aircraft",
                           "cars", "food101", "sun397", "caltech101", "voc2007"]
VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
               "sheep", "sofa", "train", "tvmonitor")
_NATIVE = {"inception_v3": 299}


class Resized(nn.Module):
    """``inner(interpolate(x, size))``: lets models of different native resolutions share one
    input space (the attack's eps is measured on the shared input). Bilinear, differentiable;
    the identity when the input already has that size."""

    def __init__(self, inner: nn.Module, size: int) -> None:
        super().__init__()
        self.inner = inner
        self.size = int(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear",
                              align_corners=False)
        return self.inner(x)


def imagenet_top1(name: str) -> float | None:
    """ImageNet-1K top-1 accuracy (fraction) of torchvision's IMAGENET1K_V1 weights of ``name``
    from torchvision's own metadata (no download), or None if unknown."""
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(name)
    except (ValueError, KeyError):
        return None
    weights = getattr(enum, "IMAGENET1K_V1", None) or getattr(enum, "DEFAULT", None)
    try:
        return float(weights.meta["_metrics"]["ImageNet-1K"]["acc@1"]) / 100.0
    except (AttributeError, KeyError, TypeError):
        return None


@dataclass
class ImageNetZooConfig(SelectionAttackFields):
    seed: int = 0
    models: list[str] = field(default_factory=lambda: list(ZOO_MODELS))
    datasets: list[str] = field(default_factory=lambda: list(ZOO_DATASETS))
    data_root: str = "data"
    download: bool = False
    verify: bool = False
    weights: str = ""
    weights_dir: str = ""
    image_size: int = 224
    max_train: int = 0
    max_test: int = 0
    split_test_fraction: float = 0.2
    fake_train: int = 200
    fake_test: int = 100
    fake_classes: int = 5
    reference_architecture: str = "resnet18"
    reference_width: float = 1.0
    reference_size: int = 64
    reference_epochs: int = 30
    reference_lr: float = 0.001
    reference_weights_dir: str = ""
    ground_truth_csv: str = ""
    finetune_lrs: list[float] = field(default_factory=lambda: [0.1, 0.01, 0.001])
    finetune_weight_decays: list[float] = field(default_factory=lambda: [1e-3, 1e-4, 0.0])
    finetune_epochs: int = 30
    val_fraction: float = 0.2
    ground_truth: str = "linear_probe"
    full_finetune_lrs: list[float] = field(default_factory=lambda: [0.01, 0.001])
    full_finetune_epochs: list[int] = field(default_factory=lambda: [10, 30])
    full_finetune_weight_decay: float = 1e-4
    methods: list[str] = field(default_factory=lambda: list(RECIPE_METHODS))
    batch_size: int = 64
    num_workers: int = 0


def quick_zoo(config: ImageNetZooConfig) -> ImageNetZooConfig:
    """Three small torchvision models with random weights on a tiny FakeData target at 32 px."""
    return replace(config, models=["resnet18", "regnet_x_400mf", "mobilenet_v3_small"],
                   datasets=["fake"], weights="random", image_size=32, fake_train=48,
                   fake_test=24, fake_classes=3, reference_width=0.125, reference_size=32,
                   reference_epochs=1, finetune_lrs=[0.1], finetune_weight_decays=[0.0, 1e-4],
                   finetune_epochs=2, steps=2, attack_samples=16, batch_size=16)


class _RGB:
    def __call__(self, img: Any) -> Any:
        return img.convert("RGB") if hasattr(img, "convert") else img


def _voc_label(annotation: dict) -> int:
    """The class of the largest object of a VOC annotation (single-label classification)."""
    objects = annotation["annotation"]["object"]
    objects = objects if isinstance(objects, list) else [objects]

    def area(o: dict) -> float:
        b = o["bndbox"]
        return (float(b["xmax"]) - float(b["xmin"])) * (float(b["ymax"]) - float(b["ymin"]))

    return VOC_CLASSES.index(max(objects, key=area)["name"])


def _seeded_split(ds: Dataset, fraction: float, seed: int, train: bool) -> Dataset:
    n = len(ds)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_test = max(1, round(fraction * n))
    return Subset(ds, sorted(perm[n_test:] if train else perm[:n_test]))


def load_zoo_dataset(name: str, split: str, c: ImageNetZooConfig) -> tuple[Dataset, int]:
    """(dataset of (float image in [0, 1] of c.image_size px, int label), number of classes) for
    a standard target ``name`` and split "train" or "test" (train+val where a val split
    exists; a seeded split for SUN397 and Caltech-101, which have no official one)."""
    from torchvision import datasets as tvd
    from torchvision import transforms as T

    size = c.image_size
    tf = T.Compose([_RGB(), T.Resize(size), T.CenterCrop(size), T.ToTensor()])
    root = str(Path(c.data_root).expanduser())
    train = split == "train"
    if name == "fake":
        n = c.fake_train if train else c.fake_test
        return tvd.FakeData(size=n, image_size=(3, size, size), num_classes=c.fake_classes,
                            transform=T.ToTensor(), random_offset=0 if train else 1_000_003,
                            ), c.fake_classes
    if name == "cifar10":
        from advtransfer.data.vision import cifar10

        return cifar10(root, split, download=c.download, verify=c.verify, size=size), 10
    dl = c.download
    try:
        if name == "cifar100":
            return tvd.CIFAR100(root, train=train, transform=tf, download=dl), 100
        if name == "dtd":
            parts = ["train", "val"] if train else ["test"]
            return ConcatDataset([tvd.DTD(root, split=p, transform=tf, download=dl)
                                  for p in parts]), 47
        if name == "pets":
            return tvd.OxfordIIITPet(root, split="trainval" if train else "test", transform=tf,
                                     download=dl), 37
        if name == "flowers102":
            parts = ["train", "val"] if train else ["test"]
            return ConcatDataset([tvd.Flowers102(root, split=p, transform=tf, download=dl)
                                  for p in parts]), 102
        if name == "aircraft":
            return tvd.FGVCAircraft(root, split="trainval" if train else "test",
                                    annotation_level="variant", transform=tf, download=dl), 100
        if name == "cars":
            return tvd.StanfordCars(root, split="train" if train else "test", transform=tf,
                                    download=dl), 196
        if name == "food101":
            return tvd.Food101(root, split="train" if train else "test", transform=tf,
                               download=dl), 101
        if name == "sun397":
            ds = tvd.SUN397(root, transform=tf, download=dl)
            return _seeded_split(ds, c.split_test_fraction, c.seed, train), len(ds.classes)
        if name == "caltech101":
            ds = tvd.Caltech101(root, target_type="category", transform=tf, download=dl)
            return _seeded_split(ds, c.split_test_fraction, c.seed, train), 101
        if name == "voc2007":
            return tvd.VOCDetection(root, year="2007", image_set="trainval" if train else "test",
                                    transform=tf, target_transform=_voc_label,
                                    download=dl), len(VOC_CLASSES)
    except (RuntimeError, OSError, ValueError) as exc:
        raise AdvTransferError(
            f"could not load data set {name!r} ({split}) from data_root={root!r}: "
            f"{type(exc).__name__}: {exc}. Put it there in torchvision's layout, or pass "
            "--download (download=true) where torchvision can download it (Stanford Cars "
            "cannot be downloaded by torchvision any more).") from exc
    raise AdvTransferError(f"unknown data set {name!r}; use one of {ZOO_DATASETS + ['fake']}")


def _weights_path(c: ImageNetZooConfig, name: str) -> str | None:
    """The weights argument for :func:`advtransfer.models.zoo.from_name`."""
    if c.weights == "random":
        return "random"
    if c.weights:
        raise AdvTransferError(f"weights must be '' (local files) or 'random'; got {c.weights!r}")
    if not c.weights_dir:
        return None  # the library cache; from_name names the paths it searched
    base = Path(c.weights_dir).expanduser()
    tried = [base / f"{name}{suffix}" for suffix in (".safetensors", ".pth", ".pt")]
    for path in tried:
        if path.is_file():
            return str(path)
    raise AdvTransferError(f"no weights for model {name!r} in weights_dir: looked for "
                           + ", ".join(map(str, tried)) + ". advtransfer never downloads "
                           "weights; copy torchvision's state dicts there, or use "
                           "weights=random for a dry run (command line: --set "
                           "weights=random).")


def _weights_id(path: str | None, name: str) -> Any:
    if path in (None, "random"):
        if path is None:
            from advtransfer.models.zoo import weight_candidates

            found = next((p for p in weight_candidates(name) if p.is_file()), None)
            if found is not None:
                return {"path": str(found), "bytes": found.stat().st_size}
        return path
    p = Path(path)
    return {"path": str(p), "bytes": p.stat().st_size}


def _load_zoo_model(c: ImageNetZooConfig, name: str, seed: int, device: str) -> nn.Module:
    """One zoo model (ImageNet weights or random ones seeded by ``seed``), normalised and
    resized, on ``device``: built where it is used (a candidate's unit), one at a time."""
    from advtransfer.models.wrappers import IMAGENET_MEAN, IMAGENET_STD, Normalized
    from advtransfer.models.zoo import from_name

    weights = _weights_path(c, name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = from_name(name, weights=weights)
    native = _NATIVE.get(name)
    size = c.image_size if native is None else max(75, round(c.image_size * native / 224))
    return Resized(Normalized(model, IMAGENET_MEAN, IMAGENET_STD), size).eval().to(device)


def _read_ground_truth(path: str, models: list[str], datasets: list[str],
                       ) -> dict[str, dict[str, float]]:
    """``{dataset: {model: accuracy}}`` from a CSV with columns model,dataset,accuracy."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise AdvTransferError(f"ground_truth_csv {str(p)!r} does not exist")
    with p.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or not {"model", "dataset", "accuracy"} <= set(
                reader.fieldnames):
            raise AdvTransferError(f"ground_truth_csv {str(p)!r} must have the columns model,"
                                   f"dataset,accuracy; got {reader.fieldnames}")
        out: dict[str, dict[str, float]] = {}
        for i, row in enumerate(reader, start=2):
            try:
                acc = float(row["accuracy"])
            except (TypeError, ValueError):
                raise AdvTransferError(f"ground_truth_csv line {i}: accuracy {row['accuracy']!r}"
                                       " is not a number") from None
            if not math.isfinite(acc):
                raise AdvTransferError(f"ground_truth_csv line {i}: accuracy must be finite")
            out.setdefault(row["dataset"].strip(), {})[row["model"].strip()] = acc
    missing = [f"{m}/{d}" for d in datasets for m in models if m not in out.get(d, {})]
    if missing:
        raise AdvTransferError(f"ground_truth_csv {str(p)!r} has no accuracy for "
                               f"{missing[:10]}{' ...' if len(missing) > 10 else ''} "
                               "(model/dataset)")
    return {d: {m: out[d][m] for m in models} for d in datasets}


def _validate_zoo(c: ImageNetZooConfig) -> None:
    if len(c.models) < 2 or len(set(c.models)) != len(c.models):
        raise AdvTransferError(f"models must list at least 2 distinct models; got {c.models}")
    known = [*ZOO_DATASETS, "fake"]
    bad = [d for d in c.datasets if d not in known]
    if not c.datasets or bad or len(set(c.datasets)) != len(c.datasets):
        raise AdvTransferError(f"datasets must be distinct names from {known}; got {c.datasets}")
    for name in ("image_size", "reference_size", "reference_epochs", "finetune_epochs",
                 "steps", "attack_samples", "batch_size", "fake_train", "fake_test"):
        if getattr(c, name) < 1:
            raise AdvTransferError(f"{name} must be >= 1; got {getattr(c, name)}")
    if c.fake_classes < 2:
        raise AdvTransferError(f"fake_classes must be >= 2; got {c.fake_classes}")
    if c.max_train < 0 or c.max_test < 0 or c.num_workers < 0:
        raise AdvTransferError("max_train, max_test and num_workers must be >= 0")
    if not c.finetune_lrs or not c.finetune_weight_decays or any(
            v <= 0 for v in c.finetune_lrs) or any(v < 0 for v in c.finetune_weight_decays):
        raise AdvTransferError("finetune_lrs must be non-empty and > 0, finetune_weight_decays "
                               "non-empty and >= 0")
    for name in ("val_fraction", "split_test_fraction"):
        if not 0 < getattr(c, name) < 1:
            raise AdvTransferError(f"{name} must lie in (0, 1); got {getattr(c, name)}")
    _check_methods(c.methods)
    _check_attack(c)
    _check_ground_truth(c)
    if c.ground_truth_csv and c.ground_truth != "linear_probe":
        raise AdvTransferError("ground_truth_csv replaces the computed ground truth; leave "
                               f"ground_truth at 'linear_probe' with it (got {c.ground_truth!r})")
    for m in c.models:
        _weights_path(c, m)  # fail early on a missing weights file


def _fit_head(f_tr: torch.Tensor, y_tr: torch.Tensor, f_te: torch.Tensor, y_te: torch.Tensor,
              *, lr: float, wd: float, epochs: int, seed: int, device: torch.device,
              batch_size: int) -> dict[str, Any]:
    """A linear head on precomputed features (knowledge_transfer on the identity map)."""
    kt = knowledge_transfer(nn.Identity(), (f_tr, y_tr), (f_te, y_te), task="classification",
                            finetune="head", epochs=epochs, lr=lr, weight_decay=wd,
                            batch_size=batch_size, device=device, seed=seed)
    return kt.to_dict()


@register("imagenet-zoo", ImageNetZooConfig,
          "The field's model-selection protocol: 11 torchvision ImageNet models ranked for 11 "
          "target data sets by adversarial transferability and the standard estimators, "
          "against a lr x weight-decay grid of head fine-tuning or a ground-truth CSV (needs "
          "the data sets, local weights and a GPU).", quick_zoo,
          check=_validate_zoo, growable=("models",))
def run_zoo(c: ImageNetZooConfig, ctx: RunContext) -> dict[str, Any]:
    _validate_zoo(c)
    from advtransfer.data.subsets import take
    from advtransfer.models.registry import create

    methods = list(c.methods)
    needed = needed_methods(methods)
    adv = [m for m in needed if m in ADVERSARIAL_METHODS]
    est = [m for m in needed if m in ESTIMATOR_METHODS]
    given_truth = (_read_ground_truth(c.ground_truth_csv, c.models, c.datasets)
                   if c.ground_truth_csv else None)
    weight_ids = {m: _weights_id(_weights_path(c, m), m) for m in c.models}
    missing = [m for m, w in weight_ids.items() if w is None]
    if missing:  # checked before any work: the models themselves are loaded unit by unit
        from advtransfer.models.zoo import weight_candidates

        raise AdvTransferError(
            f"no local weights for {missing}: looked for "
            + ", ".join(str(p) for m in missing for p in weight_candidates(m))
            + ". advtransfer never downloads weights; copy torchvision's state dicts there, "
            "point weights_dir at them (command line: --set weights_dir=DIR), or use "
            "weights=random for a dry run (--set weights=random).")
    top1 = {m: imagenet_top1(m) for m in c.models}
    have_top1 = all(v is not None for v in top1.values())
    # builders: each model is loaded where it is used and released after it
    models = {m: functools.partial(_load_zoo_model, c, m, ctx.seed_for("zoo-model", m, c.seed),
                                   str(ctx.device)) for m in c.models}

    def decoded(ds: Dataset, split: str) -> Lazy[tuple[torch.Tensor, torch.Tensor]]:
        """The split decoded once for the run (on first use: a rerun with every unit stored
        reads no image)."""
        return Lazy(lambda: target_tensors(DataLoader(ds, batch_size=c.batch_size,
                                                      num_workers=c.num_workers),
                                           description=f"reading {split}",
                                           progress=ctx.progress))

    records: list[dict[str, Any]] = []
    scores: dict[str, dict[str, dict[str, float]]] = {}
    truth: dict[str, dict[str, float]] = {}
    ref_acc: dict[str, float] = {}
    grid = [(lr, wd) for lr in c.finetune_lrs for wd in c.finetune_weight_decays]
    for ds_name in c.datasets:
        train_ds, n_cls = load_zoo_dataset(ds_name, "train", c)
        test_ds, _ = load_zoo_dataset(ds_name, "test", c)
        gen = torch.Generator().manual_seed(c.seed)
        if c.max_train:
            train_ds = take(train_ds, c.max_train, generator=gen)
        if c.max_test:
            test_ds = take(test_ds, c.max_test, generator=gen)
        train_t, test_t = decoded(train_ds, f"{ds_name} train"), decoded(test_ds,
                                                                         f"{ds_name} test")
        tid = {"dataset": ds_name, "image_size": c.image_size, "max_train": c.max_train,
               "max_test": c.max_test, "seed": c.seed,
               **({"fake": [c.fake_train, c.fake_test, c.fake_classes]}
                  if ds_name == "fake" else {})}
        per: dict[str, dict[str, float]] = {m: {} for m in needed}

        if adv:
            ref_file = (Path(c.reference_weights_dir).expanduser() / f"{ds_name}.safetensors"
                        if c.reference_weights_dir else None)

            def build_ref(n: int = n_cls) -> nn.Module:
                return Resized(create(f"cifar:{c.reference_architecture}", "random", n,
                                      width=c.reference_width), c.reference_size)

            if ref_file is not None:
                from advtransfer.models.checkpoint import load_into

                if not ref_file.is_file():
                    raise AdvTransferError(f"reference_weights_dir has no {ref_file.name}: "
                                           f"looked for {ref_file}")
                reference = load_into(build_ref(), ref_file).eval().to(ctx.device)
                ref_key = unit_key("reference-file", {"path": str(ref_file),
                                                      "bytes": ref_file.stat().st_size})
            else:
                reference, ref_key = trained_classifier(
                    ctx, "reference", {"arch": c.reference_architecture,
                                       "width": c.reference_width, "size": c.reference_size,
                                       **tid}, build_ref, train_t,
                    epochs=c.reference_epochs, lr=c.reference_lr, batch_size=c.batch_size)
            ref_acc[ds_name] = accuracy(ctx, ref_key, reference, test_t, f"zoo-{tid}-test")
            per.update(adversarial_units(
                c, ctx, "zoo-adversarial",
                {m: (unit_key("zoo-model", {"model": m, "weights": weight_ids[m]}), models[m])
                 for m in c.models}, ref_key, reference, test_t, adv,
                batch_size=c.batch_size)[0])

        truth[ds_name] = {}
        for name, builder in models.items():
            cache: dict[str, Any] = {}
            model = Lazy(builder)  # loaded only if one of its units is not stored

            def outputs(split: str, model: Lazy = model, name: str = name,
                        cache: dict = cache, train_t: Lazy = train_t,
                        test_t: Lazy = test_t) -> Any:
                if split not in cache:
                    data = train_t() if split == "train" else test_t()
                    cache[split] = candidate_outputs(model(), data, device=ctx.device,
                                                     name=name)
                return cache[split]

            base = {"model": name, "weights": weight_ids[name], "target": tid}
            if est:
                res = ctx.store.record(
                    "zoo-estimators", {**base, "methods": est},
                    lambda outputs=outputs, name=name, model=model, train_t=train_t: {
                        "scores": {**estimator_scores(outputs("train"), est, name=name),
                                   **gradient_scores(model(), train_t(), est, name=name,
                                                     device=ctx.device)}})
                for m in est:
                    per[m][name] = _num(res["scores"][m])
            record: dict[str, Any] = {"source": name, "target": ds_name,
                                      "source_accuracy": top1[name],
                                      "reference_accuracy": ref_acc.get(ds_name),
                                      "ground_truth": ("csv" if given_truth is not None
                                                       else c.ground_truth)}
            if given_truth is not None:
                truth[ds_name][name] = given_truth[ds_name][name]
                record["transfer_accuracy"] = truth[ds_name][name]
            elif c.ground_truth == "finetune":
                kt = full_finetune_truth(ctx, base, model, train_t, test_t, c,
                                         batch_size=c.batch_size)
                truth[ds_name][name] = float(kt["test_accuracy"])
                record.update(transfer_accuracy=kt["test_accuracy"],
                              transfer_loss=kt["test_loss"], best_lr=kt["best_lr"],
                              best_epochs=kt["best_epochs"],
                              best_val_accuracy=kt["best_val_accuracy"])
            else:
                def split_fit(outputs: Callable = outputs) -> tuple[torch.Tensor, ...]:
                    tr = outputs("train")
                    n = len(tr.labels)
                    perm = torch.randperm(n, generator=torch.Generator().manual_seed(c.seed))
                    n_val = max(1, round(c.val_fraction * n))
                    val, fit_ = perm[:n_val], perm[n_val:]
                    return (tr.features[fit_], tr.labels[fit_], tr.features[val],
                            tr.labels[val])

                val_acc: dict[tuple[float, float], float] = {}
                for lr, wd in grid:
                    gunit = {**base, "lr": lr, "weight_decay": wd, "epochs": c.finetune_epochs,
                             "val_fraction": c.val_fraction}
                    r = ctx.store.record(
                        "zoo-finetune-grid", gunit,
                        lambda lr=lr, wd=wd, gunit=gunit, split_fit=split_fit: _fit_head(
                            *split_fit(), lr=lr, wd=wd, epochs=c.finetune_epochs,
                            seed=ctx.seed_for("zoo-finetune-grid", gunit), device=ctx.device,
                            batch_size=max(c.batch_size, 128)))
                    val_acc[(lr, wd)] = float(r["test_accuracy"])
                best_lr, best_wd = max(grid, key=lambda k: val_acc[k])
                funit = {**base, "lr": best_lr, "weight_decay": best_wd,
                         "epochs": c.finetune_epochs}

                def final(funit: dict = funit, outputs: Callable = outputs,
                          lr: float = best_lr, wd: float = best_wd) -> dict[str, Any]:
                    tr, te = outputs("train"), outputs("test")
                    return _fit_head(tr.features, tr.labels, te.features, te.labels, lr=lr,
                                     wd=wd, epochs=c.finetune_epochs,
                                     seed=ctx.seed_for("zoo-finetune", funit),
                                     device=ctx.device, batch_size=max(c.batch_size, 128))

                kt = ctx.store.record("zoo-finetune", funit, final)
                truth[ds_name][name] = float(kt["test_accuracy"])
                record.update(transfer_accuracy=kt["test_accuracy"],
                              transfer_loss=kt["test_loss"], best_lr=best_lr,
                              best_weight_decay=best_wd,
                              best_val_accuracy=val_acc[(best_lr, best_wd)])
            records.append(record)
            cache.clear()
        for m in needed:  # the rank averages and pooled estimators need the whole pool
            if m in COMBINED_METHODS:
                per[m] = combine(m, per)
        for record in records[-len(models):]:
            record.update({m: per[m].get(record["source"]) for m in methods})
        scores[ds_name] = {m: per[m] for m in methods}

    sa = {d: {m: float(top1[m]) for m in c.models} for d in c.datasets} if have_top1 else None
    selection = selection_summary(scores, truth, sa)
    selection["reference_accuracy"] = ref_acc
    table_md = markdown_table(selection["weighted_tau"])
    dry = [what for what, fake in (("the weights are random", c.weights == "random"),
                                   ("the target data are torchvision's FakeData (random "
                                    "images)", "fake" in c.datasets)) if fake]
    notice = (f"A dry run: {' and '.join(dry)}, so the numbers say nothing about the method"
              + ("; the source accuracies are those of the pretrained weights" if
                 c.weights == "random" else "") + ".") if dry else ""
    caveat = f" **{notice}**" if notice else ""
    description = (
        f"Models: {', '.join(c.models)} (ImageNet, torchvision; Inception-v3 sees its input "
        f"resized to 299/224 of the {c.image_size} px images). Targets: "
        f"{', '.join(c.datasets)}. Ground truth: "
        + ("the accuracies in " + c.ground_truth_csv if c.ground_truth_csv else
           _full_finetune_text(c) if c.ground_truth == "finetune" else
           f"test accuracy of a linear head on the penultimate features, lr x weight decay "
           f"grid {c.finetune_lrs} x {c.finetune_weight_decays} selected on a "
           f"{c.val_fraction:.0%} validation split of the training set")
        + f". Reference per target: {c.reference_architecture} (width {c.reference_width}) at "
        f"{c.reference_size} px"
        + (" (test accuracy " + ", ".join(f"{t} {a:.3f}" for t, a in ref_acc.items()) + ")"
           if ref_acc else "") + f". Adversarial: {c.solver} {c.norm} eps={c.eps}, {c.objective}, "
        f"{c.steps} steps, {c.attack_samples} test inputs; plain alpha names are target -> "
        "source." + caveat + "\n\n**Weighted Kendall tau per target and mean** "
        "(source_accuracy: ImageNet top-1, the data-free baseline):\n\n" + table_md + "\n\n"
        + _wins_losses(selection["weighted_tau"]))
    metrics = [*methods] + (["source_accuracy"] if have_top1 else [])
    return {
        "records": records,
        "selection": selection,
        "report": {
            "title": "imagenet-zoo: ranking ImageNet models for transfer",
            "description": description,
            "notice": notice,
            "ground_truth": ("the accuracies of ground_truth_csv" if c.ground_truth_csv else
                             "full fine-tuning accuracy" if c.ground_truth == "finetune" else
                             "linear-probe accuracy (grid-searched head)"),
            "metrics": metrics,
            "outcomes": ["transfer_accuracy"],
            "sweep": None,
            "labels": _labels(metrics, c.ground_truth),
            "columns": ["source", "target", "source_accuracy", "transfer_accuracy",
                        "reference_accuracy", *methods],
        },
    }

