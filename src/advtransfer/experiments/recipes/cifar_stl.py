"""The paper's CIFAR-10 -> STL-10 experiments, and the stages the real-data recipes share.

Two recipes (Liang et al., ICML 2021, Section 5; the authors' ``exp1`` code):

``cifar10-stl10-architectures``
    Source models of five architectures (``fc``, ``lenet``, ``alexnet``, ``resnet18``,
    ``resnet50``; the 32 px CIFAR variants of :mod:`advtransfer.models.architectures`) trained on
    CIFAR-10; a reference ResNet-18 trained on STL-10 (all 10 classes, 96 px images resized to
    32 px). Labels: STL-10 labels are mapped to CIFAR-10's label ids
    (:data:`~advtransfer.data.vision.STL10_TO_CIFAR10`: STL ``car`` = CIFAR ``automobile`` ...),
    and STL-10 ``monkey``, which has no CIFAR-10 class, takes the id CIFAR-10's ``frog`` leaves
    free (6), so output k of the reference and of a CIFAR-10 source name the same object for the
    nine shared classes. This changes no fine-tuning result (a new head is fitted on the target's
    labels) but makes the reference's outputs readable in CIFAR-10 terms and gives each source a
    *direct* accuracy: its CIFAR-10 prediction on the STL-10 test images of the nine shared
    classes, without any fine-tuning (monkey images, label 6, are left out of it).

``cifar10-stl10-proportions``
    Five ResNet-18 sources trained on 4-class CIFAR-10 subsets {0,1,8,9}, {2,1,8,9}, {2,3,8,9},
    {2,3,4,9}, {2,3,4,7} (airplane, automobile, ship, truck are vehicles; bird, cat, deer, dog,
    frog, horse animals), so the share of animal classes runs 0, 25, 50, 75, 100 %; the target is
    the 4-class animal task bird, cat, deer, dog on STL-10 (STL labels 1, 3, 4, 5, relabelled
    0..3), with a ResNet-18 reference trained on it. (The authors' ``exp1/cmd.sh`` trains its
    100 % source on {2,3,4,5}, the target's own classes; set ``source_classes`` to reproduce it.)

For every source, in both recipes:

* **knowledge transfer**: last-layer fine-tuning on the STL-10 target (a new linear head on the
  source's penultimate features; the authors' setting: SGD, lr 0.1, momentum 0.9, cosine schedule,
  10 epochs; ``finetune="full"`` trains the whole network instead); test accuracy and
  cross-entropy loss;
* **adversarial transferability** between the reference f_T and the source f_S on STL-10 test
  images, both directions from one attack on each model (:func:`advtransfer.transferability`).
  The authors' protocol is the default: an L_inf PGD attack (``steps=1``: FGSM) on the
  cross-entropy against the attacked model's own prediction (``objective="ce"``), on test
  images the reference classifies correctly (``correct_only``). Their models see inputs in
  [-1, 1] (``Normalize(0.5, 0.5)``) and their budget is 0.1 there; here every model is an
  :class:`~advtransfer.models.wrappers.InputRange` (``[0, 1] -> [-1, 1]``) around the network,
  trained and attacked on images in [0, 1], so the same budget is ``eps = 0.05`` in [0, 1] units.

Reported metrics, per direction (``t2s``: crafted on the reference, applied to the source,
listed first by default; ``s2t``: crafted on the source, applied to the reference, which is what
the authors' released ``exp1/attack_and_transfer.py`` computes):

* ``alpha1`` = mean_x ||Delta_{A->B}(x)|| / ||Delta_{B->B}(x)|| (unsquared ratio, as the authors),
  with ``alpha1_sq`` = mean_x of the squared ratio (the paper's statement) alongside;
* ``alpha2`` = ||E_x[u_{A->A} u_{A->B}^T]||_F and ``combined`` = ||E_x[alpha1(x) u_{A->A}
  u_{A->B}^T]||_F, both squared when ``squared`` (default, as the authors' image code reports
  them).

The report correlates every alpha with transfer accuracy and loss; the paper finds positive
correlations with accuracy (and negative with loss): the more adversarially transferable a
source is with the reference, the better it transfers.

The helpers below (lazy data, 8-bit image tensors, augmentation, stored training, transfer and
adversarial units) are shared with :mod:`advtransfer.experiments.recipes.celeba`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from advtransfer.data.subsets import ClassSubset, RemapLabels, take
from advtransfer.data.vision import (
    CIFAR10_CLASSES,
    STL10_CLASSES,
    STL10_TO_CIFAR10,
    cifar10,
    stl10,
)
from advtransfer.errors import AdvTransferError
from advtransfer.experiments.registry import RunContext, register
from advtransfer.experiments.stages import ALPHA_LABELS
from advtransfer.knowledge import knowledge_transfer
from advtransfer.metrics import transferability
from advtransfer.models.architectures import build
from advtransfer.models.wrappers import InputRange
from advtransfer.progress import track
from advtransfer.store import unit_key
from advtransfer.training import evaluate, fit

T = TypeVar("T")
Tensors = tuple[torch.Tensor, torch.Tensor]

ARCHITECTURES = ("fc", "lenet", "alexnet", "resnet18", "resnet50")
PLAIN_ARCHITECTURES = frozenset({"fc", "lenet", "alexnet"})  # no batch normalisation
ANIMALS = frozenset({2, 3, 4, 5, 6, 7})  # CIFAR-10 bird, cat, deer, dog, frog, horse
STL10_MONKEY = 7
MONKEY_AS_CIFAR = 6  # the CIFAR-10 id (frog) that no STL-10 class uses
STL10_AS_CIFAR10: dict[int, int] = {**STL10_TO_CIFAR10, STL10_MONKEY: MONKEY_AS_CIFAR}
"""All ten STL-10 labels -> CIFAR-10 label ids (monkey takes frog's free id 6)."""

# --------------------------------------------------------------------------------------------
# Shared helpers (also used by the celeba recipe)
# --------------------------------------------------------------------------------------------


class Lazy(Generic[T]):
    """A value computed on first call and kept: data is only read when a unit of work that
    needs it is actually computed, so a rerun whose units are all stored reads no image."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make: Callable[[], T] | None = make
        self._value: T | None = None

    def __call__(self) -> T:
        if self._make is not None:
            self._value = self._make()
            self._make = None
        return self._value  # type: ignore[return-value]


def limit(dataset: Dataset, n: int | None, seed: int) -> Dataset:
    """``dataset`` capped at ``n`` samples (class-balanced when labels are known; see
    :func:`advtransfer.data.subsets.take`), or unchanged when ``n`` is None."""
    if n is None:
        return dataset
    return take(dataset, n, generator=torch.Generator().manual_seed(seed))


def materialize(dataset: Dataset, *, description: str, progress: bool,
                workers: int = 0, batch_size: int = 256) -> Tensors:
    """All samples of ``dataset`` as (images as ``uint8`` tensors (N, C, H, W), labels).

    Images in [0, 1] are stored as round(255 x), exact for 8-bit sources such as CIFAR-10; a
    resized image loses less than 1/510 per pixel. 8-bit storage keeps the full CelebA training
    split (162,770 images at 64 px) at 2 GB instead of 8 GB."""
    n = len(dataset)  # type: ignore[arg-type]
    if n == 0:
        raise AdvTransferError(f"{description}: the dataset is empty")
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    xs, ys = [], []
    for x, y in track(loader, description=description, enabled=progress):
        xs.append((x * 255.0).round_().clamp_(0, 255).to(torch.uint8))
        ys.append(torch.as_tensor(y))
    return torch.cat(xs), torch.cat(ys)


def to_float(x: torch.Tensor) -> torch.Tensor:
    """8-bit images -> float32 in [0, 1]."""
    return x.to(torch.float32).div_(255.0)


def augment(x: torch.Tensor) -> torch.Tensor:
    """The authors' training augmentation on a batch: a random crop of the image padded by
    size/8 pixels of zeros on each side (4 px at 32 px) and a random horizontal flip, per image,
    drawn from the global generator (which :func:`advtransfer.training.fit` seeds)."""
    b, _, h, w = x.shape
    pad = max(1, h // 8)
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = torch.randint(0, 2 * pad + 1, (b,)).tolist()
    cols = torch.randint(0, 2 * pad + 1, (b,)).tolist()
    out = torch.stack([padded[k, :, r:r + h, c:c + w] for k, (r, c) in enumerate(zip(rows, cols,
                                                                                     strict=True))])
    flip = torch.rand(b) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


class _Collate:
    def __init__(self, augmented: bool) -> None:
        self.augmented = augmented

    def __call__(self, items: list[tuple[torch.Tensor, torch.Tensor]]) -> Tensors:
        x = to_float(torch.stack([i[0] for i in items]))
        y = torch.stack([i[1] for i in items])
        return (augment(x) if self.augmented else x), y


def batches(data: Tensors, *, batch_size: int, shuffle: bool = False, seed: int = 0,
            augmented: bool = False) -> DataLoader:
    """A loader of float batches in [0, 1] (optionally augmented) over 8-bit tensors."""
    x, y = data
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle,
                      generator=torch.Generator().manual_seed(seed),
                      collate_fn=_Collate(augmented))


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, device: torch.device,
            batch_size: int = 256) -> torch.Tensor:
    """Arg-max predictions of ``model`` (eval mode) on 8-bit or float images, on the CPU."""
    model.eval()
    out = []
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size]
        xb = to_float(xb) if xb.dtype == torch.uint8 else xb
        out.append(model(xb.to(device)).argmax(1).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def trained_model(ctx: RunContext, kind: str, unit: dict[str, Any],
                  make: Callable[[], nn.Module], data: Callable[[], Tensors], *, epochs: int,
                  lr: float, weight_decay: float, batch_size: int, augmented: bool,
                  description: str) -> tuple[nn.Module, str]:
    """A classifier trained with SGD (momentum 0.9, cosine schedule) on ``data()``, or loaded
    from the store; ``unit`` must identify the model and its data (the training settings are
    added here). Returns the model (eval mode, on ``ctx.device``) and its unit key."""
    unit = {**unit, "epochs": epochs, "lr": lr, "weight_decay": weight_decay,
            "batch_size": batch_size, "augment": augmented, "optimizer": "sgd"}
    seed = ctx.seed_for(kind, unit)

    def seeded_build() -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return make().to(ctx.device)

    def train(model: nn.Module) -> nn.Module:
        loader = batches(data(), batch_size=batch_size, shuffle=True, seed=seed,
                         augmented=augmented)
        return fit(model, loader, epochs=epochs, lr=lr, optimizer="sgd",
                   weight_decay=weight_decay, seed=seed, device=ctx.device,
                   progress=ctx.progress, description=description)

    model = ctx.store.model(kind, unit, seeded_build, train)
    return model.to(ctx.device).eval(), unit_key(kind, unit)


def accuracy_record(ctx: RunContext, model_key: str, model: nn.Module,
                    data: Callable[[], Tensors], data_name: str) -> float:
    """Accuracy of a stored model on ``data()`` (a stored unit)."""
    def compute() -> dict[str, float]:
        ev = evaluate(model, batches(data(), batch_size=256), device=ctx.device)
        return {"accuracy": float(ev.accuracy or 0.0), "loss": ev.loss}

    return ctx.store.record("accuracy", {"model": model_key, "data": data_name},
                            compute)["accuracy"]


def transfer_record(ctx: RunContext, model_key: str, model: nn.Module,
                    train: Callable[[], Tensors], test: Callable[[], Tensors], *,
                    target: str, finetune: str, epochs: int, lr: float,
                    batch_size: int = 128) -> dict[str, Any]:
    """Knowledge transfer of a stored source to the target task (a stored unit): a new linear
    head on the penultimate features (``finetune="head"``) or the whole network
    (``"full"``), fitted on ``train()``, evaluated on ``test()``."""
    unit = {"source": model_key, "target": target, "finetune": finetune, "epochs": epochs,
            "lr": lr, "batch_size": batch_size}

    def compute() -> dict[str, Any]:
        seed = ctx.seed_for("transfer", unit)
        return knowledge_transfer(
            model, batches(train(), batch_size=batch_size, shuffle=True, seed=seed),
            batches(test(), batch_size=256), task="classification", features="penultimate",
            finetune=finetune, epochs=epochs, lr=lr, batch_size=batch_size,  # type: ignore[arg-type]
            device=ctx.device, seed=seed, progress=ctx.progress).to_dict()

    return ctx.store.record("transfer", unit, compute)


def adversarial_record(ctx: RunContext, unit: dict[str, Any], source: nn.Module,
                       target: nn.Module, x: Callable[[], torch.Tensor], *, squared: bool,
                       batch_size: int, attack: dict[str, Any]) -> dict[str, Any]:
    """alpha1/alpha2/combined in both directions between ``source`` and ``target`` on the
    float inputs ``x()`` (a stored unit keyed by ``unit``, the attack and ``squared``).

    One attack per model per input (:func:`advtransfer.transferability` with
    ``squared=False``). Fields per direction ``tag`` in ``s2t``, ``t2s``: ``alpha1_tag`` (mean
    unsquared ratio), ``alpha1_sq_tag`` (mean squared ratio), ``alpha2_tag`` and
    ``combined_tag`` (squared when ``squared``), ``alpha1_above_one_tag`` and the attack
    statistics; ``n_attack``: the number of inputs."""
    unit = {**unit, "attack": attack, "squared": squared, "batch_size": batch_size}

    def compute() -> dict[str, Any]:
        inputs = x()
        r = transferability(source, target, inputs, device=ctx.device,
                            generator=ctx.seed_for("adversarial", unit), progress=ctx.progress,
                            batch_size=batch_size, squared=False, **attack)
        out: dict[str, Any] = {"n_attack": len(inputs)}
        for tag, d in (("s2t", r.source_to_target), ("t2s", r.target_to_source)):
            per = d.alpha1_per_sample
            sq = float(np.nanmean(per**2)) if np.isfinite(per).any() else math.nan
            out.update({
                f"alpha1_{tag}": d.alpha1, f"alpha1_sq_{tag}": sq,
                f"alpha2_{tag}": d.alpha2**2 if squared else d.alpha2,
                f"combined_{tag}": d.combined**2 if squared else d.combined,
                f"alpha1_above_one_{tag}": d.n_alpha1_above_one,
                f"mean_deviation_{tag}": d.stats.mean_deviation,
                f"mean_random_deviation_{tag}": d.stats.mean_random_deviation,
                f"mean_victim_self_deviation_{tag}": d.stats.mean_victim_self_deviation,
            })
        return out

    return ctx.store.record("adversarial", unit, compute)


def attack_settings(c: Any) -> dict[str, Any]:
    """The attack keyword arguments of a configuration with the usual attack fields."""
    return {"eps": c.eps, "norm": c.norm, "objective": c.objective, "solver": c.solver,
            "steps": c.steps, "step_size": c.step_size, "random_start": c.random_start}


def check_common(c: Any) -> None:
    """Checks shared by the real-data recipes' configurations."""
    if c.max_samples is not None and c.max_samples < 1:
        raise AdvTransferError(f"max_samples must be None or >= 1; got {c.max_samples}")
    if c.n_attack is not None and c.n_attack < 1:
        raise AdvTransferError(f"n_attack must be None or >= 1; got {c.n_attack}")
    if c.finetune not in ("head", "full"):
        raise AdvTransferError(f"finetune must be 'head' or 'full'; got {c.finetune!r}")
    if c.direction not in ("t2s", "s2t"):
        raise AdvTransferError(f"direction must be 't2s' (attack the reference, evaluate the "
                               f"source) or 's2t'; got {c.direction!r}")
    if c.workers < 0:
        raise AdvTransferError(f"workers must be >= 0; got {c.workers}")
    for name in ("epochs", "reference_epochs", "finetune_epochs", "batch_size",
                 "attack_batch_size"):
        if getattr(c, name) < 1:
            raise AdvTransferError(f"{name} must be >= 1; got {getattr(c, name)}")
    from advtransfer.attacks import AttackConfig

    AttackConfig(**attack_settings(c))  # validates eps, norm, objective, solver, steps


def metric_names(direction: str) -> list[str]:
    """The six alpha fields, the chosen direction's first."""
    other = "s2t" if direction == "t2s" else "t2s"
    return [f"{m}_{d}" for d in (direction, other) for m in ("alpha1", "alpha2", "combined")]


def alpha_labels(squared: bool) -> dict[str, str]:
    """Report labels of the alpha fields (saying when alpha2/combined are squared)."""
    labels = dict(ALPHA_LABELS)
    if squared:
        for key, text in ALPHA_LABELS.items():
            if not key.startswith("alpha1"):
                labels[key] = text.replace(" (", "² (", 1)
    return labels


# --------------------------------------------------------------------------------------------
# The two CIFAR-10 -> STL-10 recipes
# --------------------------------------------------------------------------------------------


@dataclass
class _CifarStlConfig:
    data_root: str = "data"
    download: bool = False
    verify: bool = False
    seed: int = 0
    max_samples: int | None = None
    workers: int = 0
    image_size: int = 32
    augment: bool = True
    epochs: int = 50
    lr: float = 0.1
    plain_lr: float = 0.01
    weight_decay: float = 5e-4
    batch_size: int = 128
    width: float = 1.0
    reference_architecture: str = "resnet18"
    reference_width: float = 1.0
    reference_epochs: int = 100
    finetune: str = "head"
    finetune_epochs: int = 10
    finetune_lr: float = 0.1
    eps: float = 0.05
    norm: str = "linf"
    objective: str = "ce"
    solver: str = "pgd"
    steps: int = 10
    step_size: float | None = None
    random_start: bool = True
    squared: bool = True
    correct_only: bool = True
    n_attack: int | None = None
    attack_batch_size: int = 256
    direction: str = "t2s"


@dataclass
class CifarStlArchitecturesConfig(_CifarStlConfig):
    """``cifar10-stl10-architectures``; see the module docstring. ``lr`` is the learning rate of
    the batch-normalised ResNets, ``plain_lr`` that of ``fc``/``lenet``/``alexnet``; ``eps`` is
    in [0, 1] pixel units (0.05 = the authors' 0.1 on [-1, 1] inputs); ``max_samples`` caps
    every split; ``n_attack`` caps the attacked test images (None: all)."""

    architectures: list[str] = field(default_factory=lambda: list(ARCHITECTURES))


@dataclass
class CifarStlProportionsConfig(_CifarStlConfig):
    """``cifar10-stl10-proportions``; see the module docstring. ``source_classes`` are CIFAR-10
    label lists, ``target_classes`` STL-10 labels (default bird, cat, deer, dog)."""

    architecture: str = "resnet18"
    source_classes: list[list[int]] = field(default_factory=lambda: [
        [0, 1, 8, 9], [2, 1, 8, 9], [2, 3, 8, 9], [2, 3, 4, 9], [2, 3, 4, 7]])
    target_classes: list[int] = field(default_factory=lambda: [1, 3, 4, 5])


def quick(c: _CifarStlConfig) -> _CifarStlConfig:
    """``--quick``: at most 256 samples per split, one epoch, width 0.125, 2 attack steps on
    at most 64 images."""
    return replace(c, max_samples=256, epochs=1, reference_epochs=1, finetune_epochs=1,
                   width=0.125, reference_width=0.125, steps=2, n_attack=64, workers=0)


def _network(arch: str, num_classes: int, width: float, image_size: int) -> nn.Module:
    """``arch`` behind an InputRange ([0, 1] images -> the [-1, 1] inputs it is trained on)."""
    if arch == "fc":
        net = build("fc", in_shape=(3, image_size, image_size), num_classes=num_classes,
                    width=width)
    elif arch == "lenet":
        net = build("lenet", num_classes=num_classes, image_size=image_size, width=width)
    elif arch in ("alexnet", "resnet18", "resnet50"):
        net = build(arch, num_classes=num_classes, width=width)
    else:
        raise AdvTransferError(f"unknown architecture {arch!r}; choose from {list(ARCHITECTURES)}")
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
    check_common(c)
    if c.image_size < 16:
        raise AdvTransferError(f"image_size must be >= 16; got {c.image_size}")
    for arch in {s.arch for s in sources} | {c.reference_architecture}:
        if arch not in ARCHITECTURES:
            raise AdvTransferError(f"unknown architecture {arch!r}; choose from "
                                   f"{list(ARCHITECTURES)}")
    load = {"download": c.download, "verify": c.verify, "size": c.image_size}
    cifar = {split: cifar10(c.data_root, split, **load) for split in ("train", "test")}
    stl = {split: stl10(c.data_root, split, **load) for split in ("train", "test")}

    # the target task on STL-10
    if target_stl is None:  # all ten classes, with CIFAR-10 label ids
        views = {s: RemapLabels(d, STL10_AS_CIFAR10) for s, d in stl.items()}
        target_names = [STL10_CLASSES[STL10_MONKEY] if k == MONKEY_AS_CIFAR else name
                        for k, name in enumerate(CIFAR10_CLASSES)]
        target_id = "stl10-all-as-cifar10-ids"
    else:
        views = {s: ClassSubset(d, target_stl) for s, d in stl.items()}
        target_names = [STL10_CLASSES[k] for k in target_stl]
        target_id = f"stl10-{target_stl}"
    n_target = len(target_names)
    data_id = {"max_samples": c.max_samples, "size": c.image_size, "seed": c.seed}
    target = {s: Lazy(lambda v=limit(v, c.max_samples, c.seed), s=s: materialize(
        v, description=f"reading STL-10 {s}", progress=ctx.progress, workers=c.workers))
        for s, v in views.items()}

    reference, ref_key = trained_model(
        ctx, "reference", {"arch": c.reference_architecture, "width": c.reference_width,
                           "task": target_id, "data": data_id, "seed": c.seed},
        lambda: _network(c.reference_architecture, n_target, c.reference_width, c.image_size),
        target["train"], epochs=c.reference_epochs, lr=_lr(c, c.reference_architecture),
        weight_decay=c.weight_decay, batch_size=c.batch_size, augmented=c.augment,
        description="training the STL-10 reference")
    ref_acc = accuracy_record(ctx, ref_key, reference, target["test"], f"{target_id}-test")

    def attack_inputs() -> torch.Tensor:
        x, y = target["test"]()
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

    x_attack = Lazy(attack_inputs)
    attack = attack_settings(c)
    readers: dict[str, dict[str, Lazy[Tensors]]] = {}  # one read per class subset

    def source_reader(classes: list[int] | None) -> dict[str, Lazy[Tensors]]:
        views = {s: (d if classes is None else ClassSubset(d, classes))
                 for s, d in cifar.items()}
        return {s: Lazy(lambda v=limit(v, c.max_samples, c.seed), s=s: materialize(
            v, description=f"reading CIFAR-10 {s}", progress=ctx.progress, workers=c.workers))
            for s, v in views.items()}

    records = []
    for src in sources:
        classes = src.classes
        n_cls = 10 if classes is None else len(classes)
        if str(classes) not in readers:
            readers[str(classes)] = source_reader(classes)
        source_data = readers[str(classes)]
        model, key = trained_model(
            ctx, "source", {"arch": src.arch, "width": c.width, "classes": classes,
                            "data": data_id, "seed": c.seed},
            lambda a=src.arch, k=n_cls: _network(a, k, c.width, c.image_size),
            source_data["train"], epochs=c.epochs, lr=_lr(c, src.arch),
            weight_decay=c.weight_decay, batch_size=c.batch_size, augmented=c.augment,
            description=f"training source {src.name}")
        record: dict[str, Any] = {"source": src.name, **src.fields,
                                  "parameters": sum(p.numel() for p in model.parameters())}
        record["source_accuracy"] = accuracy_record(ctx, key, model, source_data["test"],
                                                    f"cifar10-{classes}-test")
        if target_stl is None:
            record["direct_accuracy"] = _direct_accuracy(ctx, key, model, target["test"])
        kt = transfer_record(ctx, key, model, target["train"], target["test"], target=target_id,
                             finetune=c.finetune, epochs=c.finetune_epochs, lr=c.finetune_lr)
        record.update(transfer_accuracy=kt["test_accuracy"], transfer_loss=kt["test_loss"],
                      transfer_train_accuracy=kt["train_accuracy"])
        record.update(adversarial_record(
            ctx, {"source": key, "reference": ref_key, "correct_only": c.correct_only,
                  "n_attack": c.n_attack}, model, reference, x_attack, squared=c.squared,
            batch_size=c.attack_batch_size, attack=attack))
        records.append(record)

    metrics = metric_names(c.direction)
    n_used = records[0]["n_attack"] if records else 0
    columns = ["source", *src_columns(sources), "source_accuracy", "transfer_accuracy",
               "transfer_loss", *metrics]
    if target_stl is None:
        columns.insert(columns.index("transfer_accuracy"), "direct_accuracy")
    return {
        "records": records,
        "reference": {"architecture": c.reference_architecture, "accuracy": ref_acc,
                      "classes": target_names, "n_attack": n_used},
        "report": {
            "title": title,
            "description": description + (
                f" Reference: {c.reference_architecture} (width {c.reference_width}) on the "
                f"STL-10 target ({n_target} classes: {', '.join(target_names)}), test accuracy "
                f"{ref_acc:.3f}. Knowledge transfer: {c.finetune} fine-tuning on STL-10 "
                f"({_epochs(c.finetune_epochs)}, lr {c.finetune_lr}). Adversarial "
                f"transferability: {c.solver} {c.norm} eps={c.eps} on [0, 1] images "
                f"(= {2 * c.eps:g} on the models' [-1, 1] inputs), {c.objective} objective, "
                f"{c.steps} step(s), on {n_used} STL-10 test images"
                + (" the reference classifies correctly" if c.correct_only else "")
                + f"; the first metrics are the {_direction_text(c.direction)} direction. "
                "alpha1 is the mean unsquared ratio"
                + ("; alpha2 and combined are squared, as the authors report them. "
                   if c.squared else ". ")
                + "The paper finds every alpha positively correlated with transfer accuracy "
                "(negatively with transfer loss)."),
            "metrics": metrics,
            "outcomes": ["transfer_accuracy", "transfer_loss"],
            "sweep": sweep,
            "labels": {**alpha_labels(c.squared), "share": "share of animal classes",
                       "transfer_accuracy": "transfer accuracy (STL-10 test)",
                       "transfer_loss": "transfer loss (cross-entropy)",
                       "source_accuracy": "source accuracy (CIFAR-10 test)",
                       "direct_accuracy": "direct accuracy (no fine-tuning, 9 shared classes)"},
            "columns": columns,
        },
    }


def src_columns(sources: Sequence[_Source]) -> list[str]:
    """The extra record fields of the sources, in order."""
    return list(dict.fromkeys(k for s in sources for k in s.fields))


def _direction_text(direction: str) -> str:
    return ("reference -> source (attacks crafted on the reference, evaluated on the source)"
            if direction == "t2s" else
            "source -> reference (attacks crafted on the source, evaluated on the reference)")


def _epochs(n: int) -> str:
    return f"{n} epoch" + ("" if n == 1 else "s")


def _lr(c: _CifarStlConfig, arch: str) -> float:
    return c.plain_lr if arch in PLAIN_ARCHITECTURES else c.lr


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

    return ctx.store.record("direct-accuracy", {"model": key, "data": "stl10-test-9-shared"},
                            compute)["accuracy"]


@register("cifar10-stl10-architectures", CifarStlArchitecturesConfig,
          "The paper's architecture experiment: fc, LeNet, AlexNet, ResNet-18 and ResNet-50 "
          "trained on CIFAR-10, a ResNet-18 reference on STL-10; alpha vs last-layer "
          "fine-tuning on STL-10 (needs CIFAR-10 and STL-10).", quick)
def run_architectures(c: CifarStlArchitecturesConfig, ctx: RunContext) -> dict[str, Any]:
    if not c.architectures:
        raise AdvTransferError("architectures is empty")
    sources = [_Source(a, a, None, {"architecture": a}) for a in c.architectures]
    return _run_cifar_stl(
        c, ctx, sources=sources, target_stl=None, sweep=None,
        title="cifar10-stl10-architectures: does adversarial transferability indicate "
              "knowledge transferability across architectures?",
        description=(
            f"Sources: {', '.join(c.architectures)} (width {c.width}) trained on CIFAR-10 "
            f"({_epochs(c.epochs)}, SGD; random crop and flip: {c.augment}). STL-10 labels are "
            "mapped to CIFAR-10's ids; STL-10 monkey takes the id of CIFAR-10 frog (6), which "
            "STL-10 lacks. Direct accuracy: a source's CIFAR-10 predictions on the STL-10 test "
            "images of the nine shared classes, without fine-tuning."))


@register("cifar10-stl10-proportions", CifarStlProportionsConfig,
          "The paper's data-distribution experiment: ResNet-18 sources on 4-class CIFAR-10 "
          "tasks with 0-100% animal classes, a 4-class animal target on STL-10; alpha vs "
          "last-layer fine-tuning (needs CIFAR-10 and STL-10).", quick)
def run_proportions(c: CifarStlProportionsConfig, ctx: RunContext) -> dict[str, Any]:
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
            f"{c.source_classes} ({_epochs(c.epochs)}, SGD; random crop and flip: {c.augment}); "
            "their share of animal classes is the sweep."))
