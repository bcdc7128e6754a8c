"""The paper's CIFAR-10 -> STL-10 experiments, and the stages the real-data recipes share.

Two recipes (Liang et al., ICML 2021, Section 5), after the authors' released image code
(``image_exp/``: ``cmd.sh``, ``train_clf.py``, ``transfer.py``, ``attack.py``, ``adv2know.py``,
``know2adv.py``, ``models/``):

``cifar10-stl10-architectures`` ("adversarial transferability indicates knowledge transferability")
    Source models of five architectures (``fc``, ``lenet``, ``alexnet``, ``resnet18``,
    ``resnet50``; 32 px CIFAR networks of :mod:`advtransfer.models.architectures`) trained on
    CIFAR-10; a reference ResNet-18 trained on STL-10 (all 10 classes, 96 px images resized to
    32 px). Labels: STL-10 labels are mapped to CIFAR-10's label ids
    (:data:`~advtransfer.data.vision.STL10_TO_CIFAR10`: STL ``car`` = CIFAR ``automobile`` ...),
    and STL-10 ``monkey``, which has no CIFAR-10 class, takes the id CIFAR-10's ``frog`` leaves
    free (6), so output k of the reference and of a CIFAR-10 source name the same object for the
    nine shared classes. This changes no fine-tuning result (a new head is fitted on the target's
    labels) but makes the reference's outputs readable in CIFAR-10 terms and gives each source a
    *direct* accuracy: its CIFAR-10 prediction on the STL-10 test images of the nine shared
    classes, without any fine-tuning (monkey images, label 6, are left out of it). Attack: FGSM
    (``steps=1``) crafted on the reference and evaluated on the source (``t2s``, listed first),
    as ``adv2know.py --attack fgsm``.

``cifar10-stl10-proportions`` ("knowledge transferability indicates adversarial transferability")
    Five ResNet-18 sources trained on 4-class CIFAR-10 subsets {0,1,8,9}, {2,1,8,9}, {2,3,8,9},
    {2,3,4,9}, {2,3,4,7} (airplane, automobile, ship, truck are vehicles; bird, cat, deer, dog,
    frog, horse animals), so the share of animal classes runs 0, 25, 50, 75, 100 %, as
    ``image_exp/cmd.sh``; the target is the 4-class animal task bird, cat, deer, dog on STL-10
    (STL labels 1, 3, 4, 5, relabelled 0..3), with a ResNet-18 reference trained on it. (The
    older ``exp1/cmd.sh`` trains its 100 % source on {2,3,4,5}, the target's own classes; set
    ``source_classes`` to reproduce it.) Attack: 50-step PGD with the authors' step (below),
    crafted on the source and evaluated on the reference (``s2t``, listed first), as
    ``know2adv.py --attack pgd``.

Presets (``preset``; :data:`PRESETS`)
    ``"paper"`` (default) is the authors' setting: every network, the reference included, is
    trained 100 epochs with batch 64, SGD lr 0.1 (momentum 0.9, cosine schedule), weight decay
    1e-4, random crop (4 px padding) and horizontal flip (``train_clf.py`` defaults, which
    ``cmd.sh`` keeps for every architecture); fine-tuning is the authors' protocol
    (``finetune="head_train_mode"``, ``finetune_epoch="best_test"``: the head trained behind
    the frozen network run in train mode on augmented batches, the epoch with the best test
    accuracy reported, which is optimistic); ``fc`` is their fully connected net
    3072-1176-400-120-84-10 (``fc-liang``), ``alexnet`` their CIFAR AlexNet (11x11 stride-4
    stem, one Linear on the 256-d features; ``alexnet-liang``); LeNet and the ResNets have the
    authors' layer structure. ``"fast"`` is this library's earlier setting: 50 epochs with batch
    128 (a quarter of the SGD steps), lr 0.01 for fc/LeNet/AlexNet (``plain_lr``), weight decay
    5e-4, fine-tuning with batch 128 and no weight decay, the head fitted on features computed
    once and the last epoch reported (``finetune="head"``, ``finetune_epoch="last"``: no choice
    made on the test set), and the library's own ``fc``
    (3072-512-256-10) and ``alexnet`` (5x5 stem, two 1024-wide hidden layers with dropout).
    A training field set explicitly (``epochs``, ``plain_lr``, ``weight_decay``,
    ``batch_size``, ``finetune_batch_size``, ``finetune_weight_decay``, ``finetune``,
    ``finetune_epoch``) wins over the preset.

For every source, in both recipes:

* **knowledge transfer**: last-layer fine-tuning on the STL-10 target (a new linear head on the
  source's penultimate features; the authors' ``transfer.py --transfer_last``: SGD lr 0.1,
  momentum 0.9, cosine schedule, 10 epochs, batch 64, weight decay 1e-4 in the paper preset;
  ``finetune="full"`` trains the whole network instead; see :func:`advtransfer.knowledge.
  knowledge_transfer` for ``finetune`` and ``finetune_epoch``); test accuracy and
  cross-entropy loss;
* **adversarial transferability** between the reference f_T and the source f_S on the STL-10
  test images the reference classifies correctly (``correct_only``), both directions from one
  attack on each model (:func:`advtransfer.transferability`): L_inf, a random start uniform in
  the eps-ball, ascent on the cross-entropy against the attacked model's own prediction
  (``objective="ce"``). The authors' models see inputs in [-1, 1] (``Normalize(0.5, 0.5)``)
  and their ``attack.py`` clamps x_adv - x to +-2 eps_a with ``--eps 0.1``, i.e. 0.2 on
  [-1, 1]; here every model is an :class:`~advtransfer.models.wrappers.InputRange`
  (``[0, 1] -> [-1, 1]``, a factor 2) around the network, trained and attacked on images in
  [0, 1], so the same budget is ``eps = 0.1`` in [0, 1] pixel units. Their step is 2 eps_a
  for one step and 2 eps_a x 5 / steps for more on [-1, 1], i.e. ``step_size`` = eps (FGSM)
  and 5 eps / steps = 0.01 for 50 steps here (:func:`authors_step_size`, used when
  ``step_size`` is None).

Reported metrics, per direction (``t2s``: crafted on the reference, applied to the source;
``s2t``: crafted on the source, applied to the reference; ``direction`` says which is listed
first):

* ``alpha1`` = mean_x ||Delta_{A->B}(x)|| / ||Delta_{B->B}(x)|| (unsquared ratio, as the authors),
  with ``alpha1_ladv`` = mean_x of the squared ratio (the ICML paper's alpha1, a ratio of l_adv
  values) alongside;
* ``alpha2`` = ||E_x[u_{A->A} u_{A->B}^T]||_F and ``combined`` = ||E_x[alpha1(x) u_{A->A}
  u_{A->B}^T]||_F, both squared with ``convention="authors"`` (default, as the authors' image code
  reports them; ``"icml"`` for the unsquared definitions).

Where the paper preset still differs from the authors' code:

* the authors keep the epoch with the best *test* accuracy in training the sources too; here
  the sources' last epoch is kept (the best test epoch only in fine-tuning, as above);
* the cosine schedule decays per batch here, per epoch in the authors' code; the ResNets start
  from torchvision's (Kaiming) initialisation, the authors' from PyTorch's default;
* ``adv2know.py`` loads a ResNet-18 reference while ``cmd.sh`` trains a ResNet-50 on STL-10
  for it; the default follows ``adv2know.py`` (``reference_architecture="resnet50"`` gives
  the other reading);
* the transfer loss is measured on the whole STL-10 test set; ``adv2know.py`` also records it
  on the correctly classified images only;
* the AlexNet and LeNet are the authors' ``image_exp/models/alexnet.py`` (the CIFAR AlexNet of
  W. Yang's ``pytorch-classification``: ``classifier`` is one Linear) and ``lenet.py``
  (``le_net``), which their ``models/__init__.py`` imports; the same networks as in their 2020
  release (``exp1/models``).

The report correlates every alpha with transfer accuracy and loss; the paper finds positive
correlations with accuracy (and negative with loss): the more adversarially transferable a
source is with the reference, the better it transfers.

The stages (stored training, accuracy, transfer and adversarial units) and the data helpers
(lazy data, 8-bit image tensors, augmentation) come from :mod:`advtransfer.experiments.stages`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import torch
from torch import nn
from torch.utils.data import Dataset

from advtransfer.data.subsets import ClassSubset, RemapLabels
from advtransfer.data.vision import (
    CIFAR10_CLASSES,
    STL10_CLASSES,
    STL10_TO_CIFAR10,
    check_available,
    cifar10,
    stl10,
)
from advtransfer.errors import AdvTransferError
from advtransfer.experiments.registry import RunContext, register
from advtransfer.experiments.stages import (
    AccuracyUnit,
    AttackFields,
    Lazy,
    ReferenceUnit,
    SourceUnit,
    Tensors,
    accuracy,
    adversarial,
    alpha_labels,
    attack_fields,
    check_common,
    limit,
    materialize,
    metric_names,
    predict,
    reference_attack,
    to_float,
    trained_classifier,
    transfer,
)
from advtransfer.metrics import Convention
from advtransfer.models import create
from advtransfer.models.wrappers import InputRange

ARCHITECTURES = ("fc", "lenet", "alexnet", "resnet18", "resnet50")
PLAIN_ARCHITECTURES = frozenset({"fc", "lenet", "alexnet"})  # no batch normalisation
ANIMALS = frozenset({2, 3, 4, 5, 6, 7})  # CIFAR-10 bird, cat, deer, dog, frog, horse
STL10_MONKEY = 7
MONKEY_AS_CIFAR = 6  # the CIFAR-10 id (frog) that no STL-10 class uses
STL10_AS_CIFAR10: dict[int, int] = {**STL10_TO_CIFAR10, STL10_MONKEY: MONKEY_AS_CIFAR}
"""All ten STL-10 labels -> CIFAR-10 label ids (monkey takes frog's free id 6)."""

@dataclass(frozen=True)
class Preset:
    """The training settings and network variants a ``preset`` stands for (any of these
    settings given explicitly in the configuration wins over the preset's)."""

    epochs: int
    plain_lr: float
    weight_decay: float
    batch_size: int
    finetune_batch_size: int
    finetune_weight_decay: float
    finetune: str
    finetune_epoch: str
    networks: dict[str, str]
    """Recipe architecture name -> :data:`~advtransfer.models.architectures.ARCHITECTURES`
    name (the architectures not listed keep their own name)."""


PRESETS: dict[str, Preset] = {
    # Liang et al.'s image_exp/train_clf.py and transfer.py defaults, which image_exp/cmd.sh
    # uses for every architecture: 100 epochs, batch 64, SGD lr 0.1 (momentum 0.9, cosine),
    # weight decay 1e-4; fine-tuning with batch 64 and weight decay 1e-4, the head behind the
    # frozen network in train mode on augmented batches, the best test epoch reported; their
    # fc net and CIFAR AlexNet.
    "paper": Preset(epochs=100, plain_lr=0.1, weight_decay=1e-4, batch_size=64,
                    finetune_batch_size=64, finetune_weight_decay=1e-4,
                    finetune="head_train_mode", finetune_epoch="best_test",
                    networks={"fc": "fc-liang", "alexnet": "alexnet-liang"}),
    # this library's earlier defaults: half the epochs at twice the batch (a quarter of the SGD
    # steps), lr 0.01 for the networks without batch normalisation, weight decay 5e-4, no
    # weight decay in fine-tuning, the head fitted on fixed features and the last epoch
    # reported (no choice on the test set), and the library's own fc (3072-512-256) and AlexNet
    "fast": Preset(epochs=50, plain_lr=0.01, weight_decay=5e-4, batch_size=128,
                   finetune_batch_size=128, finetune_weight_decay=0.0, finetune="head",
                   finetune_epoch="last", networks={"fc": "fc", "alexnet": "alexnet"}),
}
PRESET_FIELDS = ("epochs", "plain_lr", "weight_decay", "batch_size", "finetune_batch_size",
                 "finetune_weight_decay", "finetune", "finetune_epoch")

# --------------------------------------------------------------------------------------------
# The two CIFAR-10 -> STL-10 recipes
# --------------------------------------------------------------------------------------------


@dataclass
class _CifarStlConfig(AttackFields):
    data_root: str = "data"
    download: bool = False
    verify: bool = False
    seed: int = 0
    max_samples: int | None = None
    workers: int = 0
    image_size: int = 32
    preset: str = "paper"
    augment: bool = True
    epochs: int | None = None
    lr: float = 0.1
    plain_lr: float | None = None
    weight_decay: float | None = None
    batch_size: int | None = None
    width: float = 1.0
    reference_architecture: str = "resnet18"
    reference_width: float = 1.0
    reference_epochs: int = 100
    finetune: str | None = None
    finetune_epoch: str | None = None
    finetune_epochs: int = 10
    finetune_lr: float = 0.1
    finetune_batch_size: int | None = None
    finetune_weight_decay: float | None = None
    eps: float = 0.1  # AttackFields with the FGSM defaults of the authors
    objective: str = "ce"
    steps: int = 1
    iterate: str = "last"  # image_exp/attack.py returns the final iterate
    convention: Convention = "authors"
    correct_only: bool = True
    n_attack: int | None = None
    attack_batch_size: int = 256
    direction: str = "t2s"


@dataclass
class CifarStlArchitecturesConfig(_CifarStlConfig):
    """``cifar10-stl10-architectures``; see the module docstring. ``preset`` (``"paper"`` or
    ``"fast"``, see :data:`PRESETS`) fills the fields left None (``epochs``, ``plain_lr``,
    ``weight_decay``, ``batch_size``, ``finetune_batch_size``, ``finetune_weight_decay``) and
    picks the fc and AlexNet variants. ``lr`` is the learning rate of the batch-normalised
    ResNets, ``plain_lr`` that of ``fc``/``lenet``/``alexnet``; ``eps`` is in [0, 1] pixel
    units (0.1 = the authors' clamp at +-2 x 0.1 on [-1, 1] inputs); ``step_size`` None is the
    authors' rule (:func:`authors_step_size`); ``max_samples`` caps every split; ``n_attack``
    caps the attacked test images (None: all). Default attack: FGSM with a random start
    (``steps=1``) returning the final iterate (``iterate="last"``), as the authors'
    ``image_exp/cmd.sh`` and ``attack.py``."""

    architectures: list[str] = field(default_factory=lambda: list(ARCHITECTURES))


@dataclass
class CifarStlProportionsConfig(_CifarStlConfig):
    """``cifar10-stl10-proportions``; the fields of the architectures recipe (see
    :class:`CifarStlArchitecturesConfig`), with ``source_classes`` (CIFAR-10 label lists) and
    ``target_classes`` (STL-10 labels, default bird, cat, deer, dog). Default attack: 50-step
    PGD with the authors' step 5 eps / 50 = 0.01, returning the final iterate, reported
    source -> reference first
    (``direction="s2t"``), as the authors' ``image_exp/know2adv.py``."""

    architecture: str = "resnet18"
    source_classes: list[list[int]] = field(default_factory=lambda: [
        [0, 1, 8, 9], [2, 1, 8, 9], [2, 3, 8, 9], [2, 3, 4, 9], [2, 3, 4, 7]])
    target_classes: list[int] = field(default_factory=lambda: [1, 3, 4, 5])
    steps: int = 50
    direction: str = "s2t"


def authors_step_size(eps: float, steps: int) -> float:
    """The step of the authors' ``image_exp/attack.py`` in [0, 1] pixel units. On their
    [-1, 1] inputs the budget is 2 eps_a and the step 2 eps_a for one step, 2 eps_a x 5 / steps
    for more; a [-1, 1] length is half as long in pixels, so with eps = eps_a the step is eps
    for FGSM and 5 eps / steps for PGD (0.01 for their 50 steps at eps 0.1)."""
    return eps if steps == 1 else 5.0 * eps / steps


_C = TypeVar("_C", bound=_CifarStlConfig)


def resolved(c: _C) -> _C:
    """``c`` with its preset applied: every field of :data:`PRESET_FIELDS` left None takes the
    preset's value, and ``step_size`` None the authors' rule (:func:`authors_step_size`)."""
    if c.preset not in PRESETS:
        raise AdvTransferError(f"preset must be one of {list(PRESETS)}; got {c.preset!r}")
    preset = PRESETS[c.preset]
    filled: dict[str, Any] = {k: getattr(preset, k) for k in PRESET_FIELDS
                              if getattr(c, k) is None}
    if c.step_size is None and c.steps >= 1:  # steps < 1 is reported by the checks
        filled["step_size"] = authors_step_size(c.eps, c.steps)
    return replace(c, **filled)


def quick(c: _C) -> _C:
    """``--quick``: at most 256 samples per split, one epoch, width 0.125, at most 2 attack
    steps on at most 64 images."""
    return replace(c, max_samples=256, epochs=1, reference_epochs=1, finetune_epochs=1,
                   width=0.125, reference_width=0.125, steps=min(c.steps, 2), n_attack=64,
                   workers=0)


def network_name(arch: str, preset: str = "paper") -> str:
    """The :data:`~advtransfer.models.architectures.ARCHITECTURES` name a recipe architecture
    stands for under ``preset`` (``fc`` is ``fc-liang`` in the paper preset ...)."""
    if arch not in ARCHITECTURES:
        raise AdvTransferError(f"unknown architecture {arch!r}; choose from {list(ARCHITECTURES)}")
    if preset not in PRESETS:
        raise AdvTransferError(f"preset must be one of {list(PRESETS)}; got {preset!r}")
    return PRESETS[preset].networks.get(arch, arch)


def network(arch: str, num_classes: int, width: float, image_size: int,
            preset: str = "paper") -> nn.Module:
    """``arch`` (in the variant of ``preset``) behind an InputRange ([0, 1] images -> the
    [-1, 1] inputs it is trained on)."""
    name = network_name(arch, preset)
    size: dict[str, Any] = {}
    if name in ("fc", "fc-liang"):
        size = {"in_shape": (3, image_size, image_size)}
    elif name in ("lenet", "alexnet-liang"):
        size = {"image_size": image_size}
    net = create(f"cifar:{name}", "random", num_classes, width=width, **size)
    return InputRange(net, (0.0, 1.0), (-1.0, 1.0))


@dataclass(frozen=True)
class _Source:
    name: str
    arch: str
    classes: list[int] | None  # CIFAR-10 labels; None: all ten
    fields: dict[str, Any]


def _run_cifar_stl(c: _CifarStlConfig, ctx: RunContext, *, sources: list[_Source],
                   target_stl: list[int] | None, title: str, sweep: str | None,
                   description: str) -> dict[str, Any]:
    """The shared run of both recipes; ``c`` is already :func:`resolved`."""
    _check(c)
    names = {a: network_name(a, c.preset) for a in {s.arch for s in sources}
             | {c.reference_architecture}}
    cifar, stl = _datasets(c)
    views, target_names, target_id = _target_task(stl, target_stl)
    data_id = {"max_samples": c.max_samples, "size": c.image_size, "seed": c.seed}
    target = _lazy_reads(c, ctx.progress, views, "STL-10")
    reference, ref_key = _reference(c, ctx, names[c.reference_architecture], target_id,
                                    len(target_names), data_id, target["train"])
    ref_acc = accuracy(ctx, ref_key, reference, target["test"], f"{target_id}-test")
    shared = _Shared(c=c, names=names, cifar=cifar, target=target, target_stl=target_stl,
                     target_id=target_id, data_id=data_id, reference=reference,
                     ref_key=ref_key, x_attack=_attack_inputs(c, ctx, reference,
                                                              target["test"]),
                     attack=attack_fields(c), progress=ctx.progress)
    # the reference's attack, shared by every source: computed here, before the sources run
    reference_attack(ctx, ref_key, reference, shared.x_attack, inputs=_attack_key(c),
                     batch_size=c.attack_batch_size, **shared.attack)
    records = ctx.map(functools.partial(_one_source, shared=shared), sources)
    n_used = records[0]["n_attack"] if records else 0
    return {
        "records": records,
        # the configuration's None fields as the preset and the step rule filled them
        "settings": {k: getattr(c, k) for k in (*PRESET_FIELDS, "step_size")},
        "reference": {"architecture": c.reference_architecture,
                      "network": names[c.reference_architecture], "accuracy": ref_acc,
                      "classes": target_names, "n_attack": n_used},
        "report": _report(c, title=title, sweep=sweep, columns=_columns(sources, target_stl),
                          description=description + _reference_text(
                              c, target_names, ref_acc, n_used)),
    }


def _reference(c: _CifarStlConfig, ctx: RunContext, network_id: str, target_id: str,
               n_classes: int, data_id: dict[str, Any], train: Lazy[Tensors]
               ) -> tuple[nn.Module, str]:
    """The STL-10 reference (a stored :class:`ReferenceUnit`): (model, unit key)."""
    unit = ReferenceUnit(
        model={"arch": network_id, "width": c.reference_width},
        data={"task": target_id, "data": data_id, "seed": c.seed},
        epochs=c.reference_epochs, lr=_lr(c, c.reference_architecture), optimizer="sgd",
        weight_decay=c.weight_decay, batch_size=c.batch_size, augment=c.augment)
    return trained_classifier(
        ctx, unit, lambda: network(c.reference_architecture, n_classes, c.reference_width,
                                   c.image_size, c.preset),
        train, description="training the STL-10 reference")


def _datasets(c: _CifarStlConfig) -> tuple[dict[str, Dataset[Any]], dict[str, Dataset[Any]]]:
    """CIFAR-10 and STL-10, each by split ("train", "test"), after checking that all four
    are present (every missing one named at once)."""
    load = {"download": c.download, "verify": c.verify, "size": c.image_size}
    check_available([(d, s) for d in ("cifar10", "stl10") for s in ("train", "test")],
                    c.data_root, download=c.download)  # every missing dataset named at once
    cifar = {split: cifar10(c.data_root, split, **load) for split in ("train", "test")}
    stl = {split: stl10(c.data_root, split, **load) for split in ("train", "test")}
    return cifar, stl


def _target_task(stl: dict[str, Dataset[Any]], target_stl: list[int] | None
                 ) -> tuple[dict[str, Dataset[Any]], list[str], str]:
    """The target task on STL-10: (views by split, class names, task id). ``target_stl`` None:
    all ten classes with CIFAR-10 label ids (monkey as :data:`MONKEY_AS_CIFAR`); else those
    STL-10 labels, relabelled 0..k-1."""
    if target_stl is None:  # all ten classes, with CIFAR-10 label ids
        views = {s: RemapLabels(d, STL10_AS_CIFAR10) for s, d in stl.items()}
        target_names = [STL10_CLASSES[STL10_MONKEY] if k == MONKEY_AS_CIFAR else name
                        for k, name in enumerate(CIFAR10_CLASSES)]
        return views, target_names, "stl10-all-as-cifar10-ids"
    views = {s: ClassSubset(d, target_stl) for s, d in stl.items()}
    return views, [STL10_CLASSES[k] for k in target_stl], f"stl10-{target_stl}"


def _lazy_reads(c: _CifarStlConfig, progress: bool, views: dict[str, Dataset[Any]],
                label: str) -> dict[str, Lazy[Tensors]]:
    """Each view capped by ``max_samples`` (:func:`limit`, now) and read
    (:func:`materialize`) when first needed."""
    return {s: Lazy(lambda v=limit(v, c.max_samples, c.seed), s=s: materialize(
        v, description=f"reading {label} {s}", progress=progress, workers=c.workers))
        for s, v in views.items()}


def _attack_inputs(c: _CifarStlConfig, ctx: RunContext, reference: nn.Module,
                   test: Lazy[Tensors]) -> Lazy[torch.Tensor]:
    """The attacked images, read when first needed: the STL-10 test images (those the
    reference classifies correctly with ``correct_only``), the first ``n_attack``, as floats."""

    def attack_inputs() -> torch.Tensor:
        x, y = test()
        if c.correct_only:  # the authors' protocol: images the reference gets right
            keep = predict(reference, x, ctx.device) == y
            x = x[keep]
            if len(x) == 0:
                raise AdvTransferError("the reference classifies none of the STL-10 test images "
                                       "correctly; train it longer (reference_epochs) or set "
                                       "correct_only=false")
        if c.n_attack is not None:
            x = x[: c.n_attack]
        return to_float(x)

    return Lazy(attack_inputs)


def _attack_key(c: _CifarStlConfig) -> dict[str, Any]:
    """What identifies the attacked inputs in the adversarial units' keys."""
    return {"correct_only": c.correct_only, "n_attack": c.n_attack}


@dataclass(frozen=True)
class _Shared:
    """What every source of a run uses: the configuration, network names, the CIFAR-10
    datasets, the lazy STL-10 target, unit-key parts, the reference and its key, the attacked
    inputs, the attack fields, whether to show progress and the CIFAR-10 readers made so far
    (one per class subset)."""

    c: _CifarStlConfig
    names: dict[str, str]
    cifar: dict[str, Dataset[Any]]
    target: dict[str, Lazy[Tensors]]
    target_stl: list[int] | None
    target_id: str
    data_id: dict[str, Any]
    reference: nn.Module
    ref_key: str
    x_attack: Lazy[torch.Tensor]
    attack: dict[str, Any]
    progress: bool
    readers: dict[str, dict[str, Lazy[Tensors]]] = field(default_factory=dict)

    def source_data(self, classes: list[int] | None) -> dict[str, Lazy[Tensors]]:
        """The lazy CIFAR-10 splits of ``classes`` (None: all ten), made once per subset."""
        if str(classes) not in self.readers:
            views = {s: (d if classes is None else ClassSubset(d, classes))
                     for s, d in self.cifar.items()}
            self.readers[str(classes)] = _lazy_reads(self.c, self.progress, views, "CIFAR-10")
        return self.readers[str(classes)]


def _one_source(src: _Source, ctx: RunContext, *, shared: _Shared) -> dict[str, Any]:
    """One source: trained, evaluated, fine-tuned and measured (stored units); its record."""
    c, s = shared.c, shared
    classes = src.classes
    n_cls = 10 if classes is None else len(classes)
    source_data = s.source_data(classes)
    unit = SourceUnit(
        model={"arch": s.names[src.arch], "width": c.width},
        data={"classes": classes, "data": s.data_id, "seed": c.seed},
        epochs=c.epochs, lr=_lr(c, src.arch), optimizer="sgd", weight_decay=c.weight_decay,
        batch_size=c.batch_size, augment=c.augment)
    model, key = trained_classifier(
        ctx, unit, lambda a=src.arch, k=n_cls: network(a, k, c.width, c.image_size, c.preset),
        source_data["train"], description=f"training source {src.name}")
    record: dict[str, Any] = {"source": src.name, **src.fields, "network": s.names[src.arch],
                              "parameters": sum(p.numel() for p in model.parameters())}
    record["source_accuracy"] = accuracy(ctx, key, model, source_data["test"],
                                         f"cifar10-{classes}-test")
    if s.target_stl is None:
        record["direct_accuracy"] = _direct_accuracy(ctx, key, model, s.target["test"])
    kt = transfer(ctx, key, model, s.target["train"], s.target["test"], target=s.target_id,
                  task="classification", features="penultimate", finetune=c.finetune,
                  epoch=c.finetune_epoch, epochs=c.finetune_epochs, lr=c.finetune_lr,
                  weight_decay=c.finetune_weight_decay, batch_size=c.finetune_batch_size,
                  augment=c.augment and c.finetune != "head")
    record.update(transfer_accuracy=kt["test_accuracy"], transfer_loss=kt["test_loss"],
                  transfer_train_accuracy=kt["train_accuracy"])
    record.update(adversarial(
        ctx, key, s.ref_key, model, s.reference, s.x_attack, inputs=_attack_key(c),
        convention=c.convention, batch_size=c.attack_batch_size, **s.attack))
    return record


def _columns(sources: Sequence[_Source], target_stl: list[int] | None) -> list[str]:
    """The report's table columns (``direct_accuracy`` only with the ten-class target)."""
    columns = ["source", *src_columns(sources), "source_accuracy", "transfer_accuracy",
               "transfer_loss"]
    if target_stl is None:
        columns.insert(columns.index("transfer_accuracy"), "direct_accuracy")
    return columns


def _reference_text(c: _CifarStlConfig, target_names: list[str], ref_acc: float,
                    n_used: int) -> str:
    """The report description after the recipe's own part: reference, knowledge transfer,
    attack and the paper's prediction."""
    return (
        f" Reference: {c.reference_architecture} (width {c.reference_width}) on the "
        f"STL-10 target ({len(target_names)} classes: {', '.join(target_names)}), test "
        f"accuracy {ref_acc:.3f}. Knowledge transfer: {c.finetune} fine-tuning on STL-10 "
        f"({_epochs(c.finetune_epochs)}, SGD lr {c.finetune_lr}, batch "
        f"{c.finetune_batch_size}, weight decay {c.finetune_weight_decay:g}"
        + (", augmented" if c.augment and c.finetune != "head" else "")
        + ("; the epoch with the best test accuracy is reported, as the authors do: "
           "an optimistic choice made on the test set). " if c.finetune_epoch ==
           "best_test" else "; the last epoch is reported). ")
        + f"Adversarial transferability: {_attack_text(c)} on {n_used} STL-10 test "
        "images"
        + (" the reference classifies correctly" if c.correct_only else "")
        + f"; the first metrics are the {_direction_text(c.direction)} direction. "
        "alpha1 is the mean unsquared ratio"
        + ("; alpha2 and combined are squared, as the authors report them. "
           if c.convention == "authors" else ". ")
        + "The paper finds every alpha positively correlated with transfer accuracy "
        "(negatively with transfer loss).")


def _report(c: _CifarStlConfig, *, title: str, sweep: str | None, columns: list[str],
            description: str) -> dict[str, Any]:
    """The report entry of the results."""
    metrics = metric_names(c.direction)
    return {
        "title": title,
        "description": description,
        "metrics": metrics,
        "outcomes": ["transfer_accuracy", "transfer_loss"],
        "sweep": sweep,
        "labels": {**alpha_labels(c.convention), "share": "share of animal classes",
                   "transfer_accuracy": "transfer accuracy (STL-10 test)",
                   "transfer_loss": "transfer loss (cross-entropy)",
                   "source_accuracy": "source accuracy (CIFAR-10 test)",
                   "direct_accuracy": "direct accuracy (no fine-tuning, 9 shared classes)"},
        "columns": [*columns, *metrics],
    }


def src_columns(sources: Sequence[_Source]) -> list[str]:
    """The extra record fields of the sources, in order."""
    return list(dict.fromkeys(k for s in sources for k in s.fields))


def _direction_text(direction: str) -> str:
    return ("reference -> source (attacks crafted on the reference, evaluated on the source)"
            if direction == "t2s" else
            "source -> reference (attacks crafted on the source, evaluated on the reference)")


def _attack_text(c: _CifarStlConfig) -> str:
    name = ("FGSM" if c.steps == 1 else f"{c.steps}-step PGD") if c.solver == "pgd" else c.solver
    return (f"{name} ({c.norm}, eps={c.eps:g} on [0, 1] images = {2 * c.eps:g} on the models' "
            f"[-1, 1] inputs, step {c.step_size:g}, random start: {c.random_start}, "
            f"{c.objective} objective, {c.iterate} iterate)")


def _training_text(c: _CifarStlConfig) -> str:
    return (f"preset {c.preset!r}: {_epochs(c.epochs)}, batch {c.batch_size}, SGD (momentum "
            f"0.9, cosine) lr {c.lr} (ResNets) / {c.plain_lr} (fc, LeNet, AlexNet), weight decay "
            f"{c.weight_decay:g}; random crop and flip: {c.augment}")


def _check(c: _CifarStlConfig) -> None:
    check_common(c)
    if c.image_size < 16:
        raise AdvTransferError(f"image_size must be >= 16; got {c.image_size}")
    if c.finetune_batch_size < 1:
        raise AdvTransferError(f"finetune_batch_size must be >= 1; got {c.finetune_batch_size}")
    for name in ("weight_decay", "finetune_weight_decay"):
        if not getattr(c, name) >= 0:
            raise AdvTransferError(f"{name} must be >= 0; got {getattr(c, name)}")


def _epochs(n: int) -> str:
    return f"{n} epoch" + ("" if n == 1 else "s")


def _lr(c: _CifarStlConfig, arch: str) -> float:
    return c.plain_lr if arch in PLAIN_ARCHITECTURES else c.lr


@dataclass(frozen=True, kw_only=True)
class DirectAccuracyUnit(AccuracyUnit, kind="direct-accuracy"):
    """A CIFAR-10 source's (``model``: its key) accuracy, without fine-tuning, on the data
    named ``data``: the STL-10 test images of the nine classes both datasets share (labels in
    CIFAR-10 ids, monkey left out)."""


def _direct_accuracy(ctx: RunContext, key: str, model: nn.Module,
                     test: Callable[[], Tensors]) -> float:
    """Accuracy of a CIFAR-10 source on the STL-10 test images of the nine classes both
    datasets share (labels in CIFAR-10 ids; monkey images are left out), without fine-tuning."""
    def compute() -> dict[str, float]:
        x, y = test()
        keep = y != MONKEY_AS_CIFAR
        pred = predict(model, x[keep], ctx.device)
        n = int(keep.sum())
        return {"accuracy": float((pred == y[keep]).sum()) / n if n else math.nan}

    unit = DirectAccuracyUnit(model=key, data="stl10-test-9-shared")
    return ctx.store.record(unit, compute)["accuracy"]


@register("cifar10-stl10-architectures", CifarStlArchitecturesConfig,
          "The paper's architecture experiment: fc, LeNet, AlexNet, ResNet-18 and ResNet-50 "
          "trained on CIFAR-10, a ResNet-18 reference on STL-10; alpha vs last-layer "
          "fine-tuning on STL-10 (needs CIFAR-10 and STL-10).", quick,
          check=lambda c: _check(resolved(c)))
def run_architectures(c: CifarStlArchitecturesConfig, ctx: RunContext) -> dict[str, Any]:
    c = resolved(c)
    if not c.architectures:
        raise AdvTransferError("architectures is empty")
    sources = [_Source(a, a, None, {"architecture": a}) for a in c.architectures]
    return _run_cifar_stl(
        c, ctx, sources=sources, target_stl=None, sweep=None,
        title="cifar10-stl10-architectures: does adversarial transferability indicate "
              "knowledge transferability across architectures?",
        description=(
            f"Sources: {', '.join(c.architectures)} (width {c.width}; networks "
            f"{', '.join(network_name(a, c.preset) for a in c.architectures)}) trained on "
            f"CIFAR-10 ({_training_text(c)}). STL-10 labels are "
            "mapped to CIFAR-10's ids; STL-10 monkey takes the id of CIFAR-10 frog (6), which "
            "STL-10 lacks. Direct accuracy: a source's CIFAR-10 predictions on the STL-10 test "
            "images of the nine shared classes, without fine-tuning."))


@register("cifar10-stl10-proportions", CifarStlProportionsConfig,
          "The paper's data-distribution experiment: ResNet-18 sources on 4-class CIFAR-10 "
          "tasks with 0-100% animal classes, a 4-class animal target on STL-10; alpha vs "
          "last-layer fine-tuning (needs CIFAR-10 and STL-10).", quick,
          check=lambda c: _check(resolved(c)))
def run_proportions(c: CifarStlProportionsConfig, ctx: RunContext) -> dict[str, Any]:
    c = resolved(c)
    if not c.source_classes:
        raise AdvTransferError("source_classes is empty")
    for classes in c.source_classes:
        if not classes or len(set(classes)) != len(classes) or not all(
                0 <= k <= 9 for k in classes):
            raise AdvTransferError(f"each source_classes entry must list distinct CIFAR-10 "
                                   f"labels 0..9; got {classes}")
    if (not c.target_classes or len(set(c.target_classes)) != len(c.target_classes)
            or not all(0 <= k <= 9 for k in c.target_classes)):
        raise AdvTransferError(f"target_classes must list distinct STL-10 labels 0..9; got "
                               f"{c.target_classes}")
    sources = []
    for classes in c.source_classes:
        share = sum(k in ANIMALS for k in classes) / len(classes)
        names = "/".join(CIFAR10_CLASSES[k] for k in classes)
        sources.append(_Source(f"{round(100 * share)}% {{{','.join(map(str, classes))}}}",
                               c.architecture, list(classes),
                               {"share": share, "classes": names}))
    return _run_cifar_stl(
        c, ctx, sources=sources, target_stl=list(c.target_classes), sweep="share",
        title="cifar10-stl10-proportions: does adversarial transferability indicate knowledge "
              "transferability across data distributions?",
        description=(
            f"Sources: {c.architecture} (width {c.width}) trained on the CIFAR-10 class subsets "
            f"{c.source_classes} ({_training_text(c)}); "
            "their share of animal classes is the sweep."))
