"""``celeba-attributes``: the paper's CelebA experiment (knowledge transfer among attributes).

Source models: one ResNet-18 per CelebA attribute (all 40, or the chosen ``attributes``),
trained as a binary classifier (attribute present or not) on CelebA's official *train*
partition (``list_eval_partition.txt`` value 0). Each is a backbone (every layer up to the
penultimate features, a 512 x ``width`` embedding) followed by a 2-way linear head ``fc``.

Target task: identity recognition among the ``n_identities`` identities with the most images
in CelebA's official *test* partition (value 2), using only test-partition images, so that no
image of the target task was seen by any attribute source (checked: the run stops if the two
sets share an image; in the real partition the people are disjoint too, and the number of
target identities that also appear among the sources' training images is reported). A seeded
``identity_test_fraction`` of each identity's images is held out for testing. The reference
model is a ResNet-18 of the same form trained on the rest: an embedding backbone and an
``n_identities``-way classification head. The attribute accuracies are measured on the test
partition too (no attribute source trains on it).

For every attribute:

* **knowledge transfer**: the attribute backbone's head is replaced by a new ``n_identities``-way
  linear head fitted on the identity training images (the paper's last-layer fine-tuning;
  ``finetune="full"`` trains the whole network); test accuracy and cross-entropy loss;
* **adversarial transferability in embedding space**: the models are wrapped so that their output
  is the backbone's feature vector (the input of ``fc``), and alpha1/alpha2/combined are measured
  between the reference's and the attribute model's embeddings with the deviation objective
  l_adv = ||h(x + delta) - h(x)||^2 (the theory's; the authors' feature attack) under an L_inf
  PGD budget ``eps`` on [0, 1] pixels (the models see [-1, 1], as the authors' ``Normalize(0.5,
  0.5)``), on identity test images. Both directions come from one attack per model; ``t2s``
  (crafted on the reference) is listed first by default.

The report correlates the alphas with transfer accuracy and loss over the attributes (the paper
finds positive correlations with accuracy) and ranks the attributes by transfer accuracy, with
each attribute's rank by the first ``combined`` metric beside it, so the two rankings can be
compared directly.

Differences from the authors' published code (their ``exp2``), which this recipe does not
reproduce:

* their reference is a ResNet-18 with an ArcFace head (focal loss, 125 epochs, 112 px) trained
  on all 10,177 CelebA identities of every partition, including the images the attribute models
  trained on; here a softmax ResNet-18 on ``n_identities`` test-partition identities;
* their knowledge transfer is face verification with each frozen attribute backbone on seven
  external benchmarks (LFW, CFP-FF, CFP-FP, AgeDB, CALFW, CPLFW, VGG2-FP); here a linear head
  (or full fine-tuning) on the identities, scored on held-out images of the same people;
* their attack is crafted on the attribute classifier (PGD, cross-entropy against its own
  prediction, 10 steps, eps 0.03 on [0, 1] pixels) and scored by the reference's ArcFace loss
  on the adversarial images (source -> reference, normalised by its maximum over attributes),
  on the first 1,000 CelebA images, which lie in the train partition the attribute models
  learned; here alpha1/alpha2/combined of the embedding deviation objective in both directions
  on held-out test-partition images;
* their attribute models train with Adadelta (lr 1.0, decay 0.7 per epoch, 14 epochs, 112 px);
  here SGD (``lr``, ``epochs``, ``image_size``).
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from advtransfer.data.subsets import ClassSubset
from advtransfer.data.vision import (
    CELEBA_ATTRIBUTES,
    celeba,
    celeba_image_names,
    most_common_identities,
)
from advtransfer.errors import AdvTransferError
from advtransfer.experiments.registry import RunContext, register
from advtransfer.experiments.stages import (
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


@dataclass
class CelebAAttributesConfig(AttackFields):
    """``celeba-attributes``; see the module docstring. ``eps`` is in [0, 1] pixel units;
    ``max_samples`` caps every split; ``n_attack`` caps the attacked identity test images."""

    data_root: str = "data"
    download: bool = False
    verify: bool = False
    seed: int = 0
    attributes: list[str] = field(default_factory=lambda: list(CELEBA_ATTRIBUTES))
    n_identities: int = 200
    identity_test_fraction: float = 0.2
    image_size: int = 64
    max_samples: int | None = None
    workers: int = 0
    augment: bool = True
    epochs: int = 5
    lr: float = 0.1
    weight_decay: float = 5e-4
    batch_size: int = 128
    width: float = 1.0
    reference_width: float = 1.0
    reference_epochs: int = 30
    finetune: str = "head"
    finetune_epochs: int = 10
    finetune_lr: float = 0.1
    convention: Convention = "authors"
    correct_only: bool = False
    n_attack: int | None = 1000
    attack_batch_size: int = 256
    direction: str = "t2s"


QUICK_ATTRIBUTES = ["Eyeglasses", "Male", "Smiling", "Wearing_Hat"]


def quick(c: CelebAAttributesConfig) -> CelebAAttributesConfig:
    """``--quick``: four attributes, the 10 most frequent identities, at most 256 samples per
    split, 32 px images, one epoch, width 0.125, 2 attack steps on at most 32 images."""
    return replace(c, attributes=list(QUICK_ATTRIBUTES), n_identities=10, max_samples=256,
                   epochs=1, reference_epochs=1, finetune_epochs=1, width=0.125,
                   reference_width=0.125, steps=2, n_attack=32, workers=0,
                   image_size=32)


class Embedding(nn.Module):
    """A copy of a classifier whose final ``fc`` is the identity: its output is the penultimate
    feature vector (the embedding the paper attacks)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = copy.deepcopy(model)
        inner = self.model
        while not hasattr(inner, "fc") and isinstance(getattr(inner, "inner", None), nn.Module):
            inner = inner.inner  # type: ignore[assignment]
        if not isinstance(getattr(inner, "fc", None), nn.Linear):
            raise AdvTransferError("Embedding needs a model whose last layer is an nn.Linear "
                                   "named fc")
        inner.fc = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def identity_split(labels: np.ndarray, test_fraction: float,
                   seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) positions: for each identity with n >= 2 images, round(fraction x n)
    (at least one, at most n - 1) seeded-random images go to the test set."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        members = members[rng.permutation(len(members))]
        n_test = 0 if len(members) < 2 else min(len(members) - 1,
                                                max(1, round(test_fraction * len(members))))
        test.append(members[:n_test])
        train.append(members[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _network(num_classes: int, width: float) -> nn.Module:
    return InputRange(create("cifar:resnet18", "random", num_classes, width=width), (0.0, 1.0),
                      (-1.0, 1.0))


@dataclass(frozen=True)
class CelebASplits:
    """The samples each model of the recipe sees (after ``max_samples``): ``attr_train`` trains
    the attribute sources (train partition), ``attr_test`` scores their attributes, ``id_train``
    and ``id_test`` are the identity task (test partition only); ``identities`` the CelebA
    numbers of its classes, ``shared_identities`` how many of them also appear among the
    train partition's images (0 in the real partition); ``attr_names`` the attribute columns."""

    attr_train: Dataset[Any]
    attr_test: Dataset[Any]
    id_train: Dataset[Any]
    id_test: Dataset[Any]
    identities: list[int]
    shared_identities: int
    attr_names: list[str]


def check_disjoint(train: Dataset[Any], **others: Dataset[Any]) -> None:
    """Raise if any of ``others`` holds an image of ``train`` (compared by CelebA file name)."""
    seen = set(celeba_image_names(train))
    for name, data in others.items():
        common = sorted(seen.intersection(celeba_image_names(data)))
        if common:
            raise AdvTransferError(
                f"{len(common)} image(s) of the {name} set are among the attribute sources' "
                f"training images (e.g. {', '.join(common[:3])}); the target task must use "
                "images no source trained on: check list_eval_partition.txt")


def celeba_splits(c: CelebAAttributesConfig) -> CelebASplits:
    """The datasets of a run (see :class:`CelebASplits`), checked with :func:`check_disjoint`."""
    load = {"download": c.download, "verify": c.verify, "size": c.image_size}
    attr = {s: celeba(c.data_root, s, target="attr", **load) for s in ("train", "test")}
    identities = celeba(c.data_root, "test", target="identity", **load)
    top = most_common_identities(identities, c.n_identities)
    id_view = ClassSubset(identities, top)
    train_idx, test_idx = identity_split(np.asarray(id_view.targets), c.identity_test_fraction,
                                         c.seed)
    if len(test_idx) == 0:
        raise AdvTransferError("the chosen identities have one image each in the test "
                               "partition; no identity test set can be formed")
    attr_train = limit(attr["train"], c.max_samples, c.seed)
    id_train = limit(Subset(id_view, train_idx.tolist()), c.max_samples, c.seed)
    id_test = limit(Subset(id_view, test_idx.tolist()), c.max_samples, c.seed)
    check_disjoint(attr_train, **{"identity training": id_train, "identity test": id_test})
    train_ids = getattr(attr["train"], "identity", torch.zeros(0, 1)).reshape(-1).tolist()
    return CelebASplits(attr_train=attr_train, attr_test=limit(attr["test"], c.max_samples,
                                                                c.seed),
                        id_train=id_train, id_test=id_test, identities=top,
                        shared_identities=len(set(top).intersection(train_ids)),
                        attr_names=list(getattr(attr["train"], "attr_names", CELEBA_ATTRIBUTES)))


def _check(c: CelebAAttributesConfig) -> None:
    check_common(c)
    if not c.attributes:
        raise AdvTransferError("attributes is empty; give attribute names (or leave the default "
                               "for all 40)")
    unknown = [a for a in c.attributes if a not in CELEBA_ATTRIBUTES]
    if unknown:
        raise AdvTransferError(f"unknown CelebA attributes {unknown}; valid: "
                               f"{', '.join(CELEBA_ATTRIBUTES)}")
    if len(set(c.attributes)) != len(c.attributes):
        raise AdvTransferError(f"attributes has duplicates: {c.attributes}")
    if c.n_identities < 2:
        raise AdvTransferError(f"n_identities must be >= 2; got {c.n_identities}")
    if not 0.0 < c.identity_test_fraction < 1.0:
        raise AdvTransferError(f"identity_test_fraction must lie in (0, 1); got "
                               f"{c.identity_test_fraction}")
    if c.image_size < 16:
        raise AdvTransferError(f"image_size must be >= 16; got {c.image_size}")


@register("celeba-attributes", CelebAAttributesConfig,
          "The paper's CelebA experiment: one ResNet-18 per facial attribute, a face-identity "
          "reference; alpha in embedding space vs fine-tuning to identity recognition (needs "
          "CelebA).", quick, check=_check)
def run(c: CelebAAttributesConfig, ctx: RunContext) -> dict[str, Any]:
    _check(c)
    splits = celeba_splits(c)
    columns = {a: splits.attr_names.index(a) for a in c.attributes}
    attr_data, id_data = _readers(c, ctx, splits)
    data_id = {"max_samples": c.max_samples, "size": c.image_size, "seed": c.seed}
    task_id = {"identities": c.n_identities, "test_fraction": c.identity_test_fraction,
               "partition": "test", "data": data_id}
    reference, ref_key = _identity_reference(c, ctx, id_data["train"], task_id)
    ref_acc = accuracy(ctx, ref_key, reference, id_data["test"],
                       f"celeba-identity-{c.n_identities}-test")
    shared = _Shared(c=c, columns=columns, attr_data=attr_data, id_data=id_data,
                     data_id=data_id, task_id=task_id, ref_key=ref_key,
                     x_attack=_attack_inputs(c, ctx, reference, id_data["test"]),
                     ref_embedding=Embedding(reference), attack=attack_fields(c))
    # the reference's attack, shared by every source: computed here, before the sources run
    reference_attack(ctx, ref_key, shared.ref_embedding, shared.x_attack,
                     inputs=_attack_key(c), batch_size=c.attack_batch_size, **shared.attack)
    records = ctx.map(functools.partial(_attribute_source, shared=shared),
                      list(c.attributes))
    metrics = metric_names(c.direction)
    ranking_metric = metrics[2]  # the chosen direction's combined value
    _rank(records, ranking_metric)
    n_used = records[0]["n_attack"] if records else 0
    return {
        "records": records,
        "reference": {"accuracy": ref_acc, "identities": c.n_identities,
                      "identity_partition": "test", "n_attack": n_used,
                      "identities_in_attribute_training": splits.shared_identities},
        "report": _report(c, splits.shared_identities, ref_acc, n_used, metrics,
                          ranking_metric),
    }


def _readers(c: CelebAAttributesConfig, ctx: RunContext, splits: CelebASplits
             ) -> tuple[dict[str, Lazy[Tensors]], dict[str, Lazy[Tensors]]]:
    """Lazy readers of the attribute and identity splits ("train", "test"): each view is read
    (:func:`materialize`) only when a unit that needs it is computed."""

    def reader(view: Any, what: str) -> Lazy[Tensors]:
        return Lazy(lambda: materialize(view, description=f"reading CelebA {what}",
                                        progress=ctx.progress, workers=c.workers))

    attr_data = {"train": reader(splits.attr_train, "train (attributes)"),
                 "test": reader(splits.attr_test, "test (attributes)")}
    id_data = {"train": reader(splits.id_train, "identities (train)"),
               "test": reader(splits.id_test, "identities (test)")}
    return attr_data, id_data


def _identity_reference(c: CelebAAttributesConfig, ctx: RunContext, train: Lazy[Tensors],
                        task_id: dict[str, Any]) -> tuple[nn.Module, str]:
    """The reference (a stored model unit): a ResNet-18 trained on the identity task;
    (model, unit key)."""
    unit = ReferenceUnit(
        model={"arch": "resnet18", "width": c.reference_width},
        data={"task": {"celeba-identity": task_id}, "seed": c.seed},
        epochs=c.reference_epochs, lr=c.lr, optimizer="sgd", weight_decay=c.weight_decay,
        batch_size=c.batch_size, augment=c.augment)
    return trained_classifier(ctx, unit, lambda: _network(c.n_identities, c.reference_width),
                              train, description="training the identity reference")


def _attack_inputs(c: CelebAAttributesConfig, ctx: RunContext, reference: nn.Module,
                   test: Lazy[Tensors]) -> Lazy[torch.Tensor]:
    """The attacked images, read when first needed: the identity test images (those the
    reference recognises with ``correct_only``), the first ``n_attack``, as floats."""

    def attack_inputs() -> torch.Tensor:
        x, y = test()
        if c.correct_only:
            x = x[predict(reference, x, ctx.device) == y]
            if len(x) == 0:
                raise AdvTransferError("the reference recognises none of the identity test "
                                       "images; train it longer or set correct_only=false")
        if c.n_attack is not None:
            x = x[: c.n_attack]
        return to_float(x)

    return Lazy(attack_inputs)


def _attack_key(c: CelebAAttributesConfig) -> dict[str, Any]:
    """What identifies the attacked inputs in the adversarial units' keys."""
    return {"space": "embedding", "correct_only": c.correct_only, "n_attack": c.n_attack}


@dataclass(frozen=True)
class _Shared:
    """What every attribute source of a run uses: the configuration, the attribute columns,
    the lazy data, the unit-key parts, the reference's key and embedding, the attacked inputs
    and the attack fields."""

    c: CelebAAttributesConfig
    columns: dict[str, int]
    attr_data: dict[str, Lazy[Tensors]]
    id_data: dict[str, Lazy[Tensors]]
    data_id: dict[str, Any]
    task_id: dict[str, Any]
    ref_key: str
    x_attack: Lazy[torch.Tensor]
    ref_embedding: nn.Module
    attack: dict[str, Any]


def _attribute_source(name: str, ctx: RunContext, *, shared: _Shared) -> dict[str, Any]:
    """One attribute's backbone: trained, fine-tuned and measured (stored units); its record."""
    c, s = shared.c, shared
    j = s.columns[name]

    def column(split: str, j: int = j) -> Lazy[Tensors]:
        return Lazy(lambda: (s.attr_data[split]()[0], s.attr_data[split]()[1][:, j]))

    train_j, test_j = column("train"), column("test")
    unit = SourceUnit(
        model={"arch": "resnet18", "width": c.width},
        data={"attribute": name, "data": s.data_id, "seed": c.seed},
        epochs=c.epochs, lr=c.lr, optimizer="sgd", weight_decay=c.weight_decay,
        batch_size=c.batch_size, augment=c.augment)
    model, key = trained_classifier(ctx, unit, lambda: _network(2, c.width), train_j,
                                    description=f"training {name}")
    kt = transfer(ctx, key, model, s.id_data["train"], s.id_data["test"],
                  target=f"celeba-identity-{s.task_id}", task="classification",
                  features="penultimate", finetune=c.finetune, epochs=c.finetune_epochs,
                  lr=c.finetune_lr, batch_size=128)
    adv = adversarial(
        ctx, key, s.ref_key, Embedding(model), s.ref_embedding, s.x_attack,
        inputs=_attack_key(c), convention=c.convention, batch_size=c.attack_batch_size,
        **s.attack)
    return {
        "source": name,
        "attribute_accuracy": accuracy(ctx, key, model, test_j, f"celeba-{name}-test"),
        "transfer_accuracy": kt["test_accuracy"], "transfer_loss": kt["test_loss"],
        "transfer_train_accuracy": kt["train_accuracy"], **adv,
    }


def _rank(records: list[dict[str, Any]], ranking_metric: str) -> None:
    """In place: ``alpha_rank`` (1 = largest ``ranking_metric``), then the records sorted by
    transfer accuracy (largest first) and numbered ``rank``; None/NaN rank last."""
    by_alpha = sorted(range(len(records)), key=lambda i: -_num(records[i][ranking_metric]))
    for rank, i in enumerate(by_alpha, start=1):
        records[i]["alpha_rank"] = rank
    records.sort(key=lambda r: -_num(r["transfer_accuracy"]))
    for rank, r in enumerate(records, start=1):
        r["rank"] = rank


def _report(c: CelebAAttributesConfig, shared_identities: int, ref_acc: float, n_used: int,
            metrics: list[str], ranking_metric: str) -> dict[str, Any]:
    """The report entry of the results: title, description, metrics, labels, columns."""
    return {
        "title": "celeba-attributes: does adversarial transferability in embedding space "
                 "indicate which attribute model transfers best to face recognition?",
        "description": (
            f"Sources: a ResNet-18 (width {c.width}) per CelebA attribute "
            f"({len(c.attributes)} attributes), trained as a binary classifier for "
            f"{c.epochs} epoch(s) on {c.image_size} px images of CelebA's train partition. "
            f"Target: identity recognition among the {c.n_identities} most frequent "
            "identities of CelebA's test partition, on test-partition images only (no "
            "source trained on any of them; "
            f"{shared_identities} of these people also appear in the sources' "
            f"training images; {round(100 * c.identity_test_fraction)}% of each "
            "identity's images held out); "
            f"reference: a ResNet-18 (width {c.reference_width}) trained on it, test "
            f"accuracy {ref_acc:.3f}. Knowledge transfer: {c.finetune} fine-tuning of each "
            f"attribute model to the identities ({c.finetune_epochs} epoch(s), lr "
            f"{c.finetune_lr}). Adversarial transferability on the models' penultimate "
            f"features (embeddings): {c.solver} {c.norm} eps={c.eps} on [0, 1] images, "
            f"{c.objective} objective, {c.steps} step(s), {n_used} identity test images. "
            "Records are ranked by transfer accuracy (rank); alpha_rank ranks them by "
            f"{ranking_metric}. alpha1 is the mean unsquared ratio"
            + ("; alpha2 and combined are squared. " if c.convention == "authors" else ". ")
            + "The paper finds alpha positively correlated with transfer accuracy."),
        "metrics": metrics,
        "outcomes": ["transfer_accuracy", "transfer_loss"],
        "sweep": None,
        "labels": {**alpha_labels(c.convention),
                   "transfer_accuracy": "identity accuracy after fine-tuning",
                   "transfer_loss": "identity loss after fine-tuning",
                   "attribute_accuracy": "attribute accuracy (CelebA test)",
                   "rank": "rank by transfer accuracy",
                   "alpha_rank": f"rank by {ranking_metric}"},
        "columns": ["rank", "source", "transfer_accuracy", "alpha_rank", "transfer_loss",
                    "attribute_accuracy", *metrics],
    }


def _num(v: Any) -> float:
    """A sort key: numbers as they are, anything else (None, NaN) last."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return float("-inf")
    return f if f == f else float("-inf")
