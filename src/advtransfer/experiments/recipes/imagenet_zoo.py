r"""``imagenet-zoo``: ranking torchvision ImageNet models for transfer (needs the data sets and,
in practice, a GPU).

The field's standard protocol (You et al., ICML 2021 "LogME"; Pándy et al., CVPR 2022; ...):
11 torchvision ImageNet models (ResNet-34/50/101/152, DenseNet-121/169/201, MobileNetV2,
MNASNet1.0, GoogLeNet, Inception-v3 at 299 px) ranked for CIFAR-10/100, DTD, Oxford-IIIT Pets,
Flowers-102, FGVC-Aircraft, Stanford Cars, Food-101, SUN397, Caltech-101 and VOC2007 (as
single-label classification: the class of the largest object) by adversarial transferability
and the standard estimators. Ground truth: a learning-rate x weight-decay grid of linear-head
fine-tuning on the penultimate features (selected on a validation split of the training set,
reported on the test split), full fine-tuning (``ground_truth="finetune"``,
:func:`~advtransfer.experiments.recipes.selection_units.full_finetune_truth`), or a CSV of
published numbers (``ground_truth_csv``, columns ``model,dataset,accuracy``). Weights come
from local files only (``weights_dir`` or the library cache); nothing is downloaded except
data sets with ``download=true``.

The work runs in waves of :meth:`~advtransfer.experiments.registry.RunContext.map` on the run's
executor (:mod:`~advtransfer.experiments.recipes.selection_units`): the references of every
target (trained or read, their accuracy and attack), then, one target at a time, every
candidate of the target (estimators, ground truth, adversarial scores); this process only
combines the results and analyses them. The candidates of one target share its decoded images
in this process (read once, on first use), and one target's images are held at a time.
"""

from __future__ import annotations

import csv
import functools
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from advtransfer.errors import AdvTransferError
from advtransfer.executors import LocalExecutor
from advtransfer.experiments.recipes.selection_units import (
    RECIPE_METHODS,
    CandidateAdversarialUnit,
    SelectionAttackFields,
    candidate_adversarial,
    check_attack,
    check_ground_truth,
    check_methods,
    full_finetune_text,
    full_finetune_truth,
    reference_attack,
    seeded_split,
)
from advtransfer.experiments.registry import RunContext, register
from advtransfer.experiments.selection_analysis import (
    num,
    report_labels,
    selection_summary,
    wins_losses,
)
from advtransfer.experiments.stages import Lazy, ReferenceUnit, accuracy, trained_classifier
from advtransfer.knowledge import knowledge_transfer
from advtransfer.methods import (
    ADVERSARIAL_METHODS,
    COMBINED_METHODS,
    ESTIMATOR_METHODS,
    needed_methods,
)
from advtransfer.selection import (
    candidate_outputs,
    combine,
    estimator_scores,
    gradient_scores,
    markdown_table,
    target_tensors,
)
from advtransfer.units import UnitConfig, identity_key

__all__ = ["VOC_CLASSES", "ZOO_DATASETS", "ZOO_MODELS", "ImageNetZooConfig", "Resized",
           "ZooAdversarialUnit", "ZooEstimatorsUnit", "ZooFinetuneGridUnit", "ZooFinetuneUnit",
           "ZooModelUnit", "imagenet_top1", "load_zoo_dataset", "quick_zoo"]

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
#: The data sets without an official test split (split by ``split_test_fraction``).
_SEEDED_SPLIT = ("sun397", "caltech101")


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


# =============================================================================================
# data sets
# =============================================================================================


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


def _torchvision_dataset(name: str, train: bool, root: str, tf: Any, c: ImageNetZooConfig,
                         ) -> tuple[Dataset, int] | None:
    """The torchvision data sets of :func:`load_zoo_dataset` (None for an unknown name)."""
    from torchvision import datasets as tvd

    dl = c.download
    both = ["train", "val"] if train else ["test"]
    if name == "cifar100":
        return tvd.CIFAR100(root, train=train, transform=tf, download=dl), 100
    if name == "dtd":
        return ConcatDataset([tvd.DTD(root, split=p, transform=tf, download=dl)
                              for p in both]), 47
    if name == "pets":
        return tvd.OxfordIIITPet(root, split="trainval" if train else "test", transform=tf,
                                 download=dl), 37
    if name == "flowers102":
        return ConcatDataset([tvd.Flowers102(root, split=p, transform=tf, download=dl)
                              for p in both]), 102
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
        return seeded_split(ds, c.split_test_fraction, c.seed, train), len(ds.classes)
    if name == "caltech101":
        ds = tvd.Caltech101(root, target_type="category", transform=tf, download=dl)
        return seeded_split(ds, c.split_test_fraction, c.seed, train), 101
    if name == "voc2007":
        return tvd.VOCDetection(root, year="2007", image_set="trainval" if train else "test",
                                transform=tf, target_transform=_voc_label,
                                download=dl), len(VOC_CLASSES)
    return None


def load_zoo_dataset(name: str, split: str, c: ImageNetZooConfig) -> tuple[Dataset, int]:
    """(dataset of (float image in [0, 1] of c.image_size px, int label), number of classes) for
    a standard target ``name`` and split "train" or "test" (train+val where a val split
    exists; a seeded split for SUN397 and Caltech-101, which have no official one)."""
    from torchvision import datasets as tvd
    from torchvision import transforms as T

    size = c.image_size
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
    tf = T.Compose([_RGB(), T.Resize(size), T.CenterCrop(size), T.ToTensor()])
    try:
        found = _torchvision_dataset(name, train, root, tf, c)
    except (RuntimeError, OSError, ValueError) as exc:
        raise AdvTransferError(
            f"could not load data set {name!r} ({split}) from data_root={root!r}: "
            f"{type(exc).__name__}: {exc}. Put it there in torchvision's layout, or pass "
            "--download (download=true) where torchvision can download it (Stanford Cars "
            "cannot be downloaded by torchvision any more).") from exc
    if found is None:
        raise AdvTransferError(f"unknown data set {name!r}; use one of {ZOO_DATASETS + ['fake']}")
    return found


def _decode(ds: Dataset, batch_size: int, num_workers: int, description: str,
            progress: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole split decoded to (images, labels) tensors."""
    return target_tensors(DataLoader(ds, batch_size=batch_size, num_workers=num_workers),
                          description=description, progress=progress)


@dataclass(frozen=True)
class _ZooSets:
    """A target's data sets (not read yet): its name, its identity in the units' keys, its
    number of classes, and its training and test sets."""

    name: str
    tid: dict[str, Any]
    n_classes: int
    train: Dataset
    test: Dataset


def _zoo_sets(c: ImageNetZooConfig, ds_name: str) -> _ZooSets:
    """Target ``ds_name``'s data sets, ``max_train`` / ``max_test`` seeded subsets of them
    (an :class:`AdvTransferError` when they cannot be loaded; no image is read)."""
    from advtransfer.data.subsets import take

    train_ds, n_cls = load_zoo_dataset(ds_name, "train", c)
    test_ds, _ = load_zoo_dataset(ds_name, "test", c)
    gen = torch.Generator().manual_seed(c.seed)
    if c.max_train:
        train_ds = take(train_ds, c.max_train, generator=gen)
    if c.max_test:
        test_ds = take(test_ds, c.max_test, generator=gen)
    tid = {"dataset": ds_name, "image_size": c.image_size, "max_train": c.max_train,
           "max_test": c.max_test, "seed": c.seed,
           # what else defines the data set's images: FakeData's sizes, the split of the data
           # sets without an official one (None for the others: no setting of theirs)
           "fake": [c.fake_train, c.fake_test, c.fake_classes] if ds_name == "fake" else None,
           "split_test_fraction": (c.split_test_fraction if ds_name in _SEEDED_SPLIT
                                   else None)}
    return _ZooSets(ds_name, tid, n_cls, train_ds, test_ds)


@dataclass(frozen=True)
class _ZooTarget:
    """A target with readers of its splits: each decoded on first use and kept as long as the
    target (a rerun with every unit stored reads no image)."""

    name: str
    tid: dict[str, Any]
    n_classes: int
    train: Lazy[tuple[torch.Tensor, torch.Tensor]]
    test: Lazy[tuple[torch.Tensor, torch.Tensor]]


def _open(c: ImageNetZooConfig, sets: _ZooSets, *, progress: bool) -> _ZooTarget:
    """``sets`` with fresh readers of its images (:func:`_decode`)."""
    train, test = (Lazy(functools.partial(_decode, ds, c.batch_size, c.num_workers,
                                          f"reading {sets.name} {split}", progress))
                   for ds, split in ((sets.train, "train"), (sets.test, "test")))
    return _ZooTarget(sets.name, sets.tid, sets.n_classes, train, test)


# =============================================================================================
# weights and ground truth files
# =============================================================================================


def _weights_path(c: ImageNetZooConfig, name: str) -> str | None:
    """The weights argument of :func:`advtransfer.models.create` for the zoo model ``name``."""
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
    """The identity of a model's weights in the units' keys: the file's path and size,
    ``"random"``, or None when no local file exists."""
    if path in (None, "random"):
        if path is None:
            from advtransfer.models.zoo import weight_candidates

            found = next((p for p in weight_candidates(name) if p.is_file()), None)
            if found is not None:
                return {"path": str(found), "bytes": found.stat().st_size}
        return path
    p = Path(path)
    return {"path": str(p), "bytes": p.stat().st_size}


def _weight_ids(c: ImageNetZooConfig) -> dict[str, Any]:
    """Every model's :func:`_weights_id`; an :class:`AdvTransferError` naming the paths looked
    at when a model has no local weights (checked before any work)."""
    weight_ids = {m: _weights_id(_weights_path(c, m), m) for m in c.models}
    missing = [m for m, w in weight_ids.items() if w is None]
    if missing:
        from advtransfer.models.zoo import weight_candidates

        raise AdvTransferError(
            f"no local weights for {missing}: looked for "
            + ", ".join(str(p) for m in missing for p in weight_candidates(m))
            + ". advtransfer never downloads weights; copy torchvision's state dicts there, "
            "point weights_dir at them (command line: --set weights_dir=DIR), or use "
            "weights=random for a dry run (--set weights=random).")
    return weight_ids


def _load_zoo_model(c: ImageNetZooConfig, name: str, seed: int, device: str) -> nn.Module:
    """One zoo model (ImageNet weights or random ones seeded by ``seed``), normalised and
    resized, on ``device``: built where it is used (a candidate's unit), one at a time."""
    from advtransfer.models.registry import create
    from advtransfer.models.wrappers import IMAGENET_MEAN, IMAGENET_STD, Normalized

    spec = name if name.startswith("timm:") else f"tv:{name}"
    model = create(spec, _weights_path(c, name), seed=seed)  # one model registry
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
    """Every value of ``c`` checked before anything runs (weights files included)."""
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
    check_methods(c.methods)
    check_attack(c)
    check_ground_truth(c)
    if c.ground_truth_csv and c.ground_truth != "linear_probe":
        raise AdvTransferError("ground_truth_csv replaces the computed ground truth; leave "
                               f"ground_truth at 'linear_probe' with it (got {c.ground_truth!r})")
    for m in c.models:
        _weights_path(c, m)  # fail early on a missing weights file


# =============================================================================================
# the stored units of one target and one candidate
# =============================================================================================


@dataclass(frozen=True, kw_only=True)
class ZooModelUnit(UnitConfig, kind="zoo-model"):
    """The identity of a candidate (not stored: its key names the candidate in the other
    units' keys): the torchvision model ``model`` with the weights ``weights`` identifies (a
    local file's ``{"path", "bytes"}``, or ``"random"``: an initialisation drawn from the
    unit's seed, which ``recipe_seed``, the recipe's ``seed``, changes)."""

    model: str
    weights: dict[str, Any] | str
    recipe_seed: int


@dataclass(frozen=True, kw_only=True)
class ZooAdversarialUnit(CandidateAdversarialUnit, kind="zoo-adversarial"):
    """A zoo candidate's adversarial scores in one space (:class:`~advtransfer.experiments.
    recipes.selection_units.CandidateAdversarialUnit`; ``source`` its :class:`ZooModelUnit`
    key)."""


@dataclass(frozen=True, kw_only=True)
class ZooEstimatorsUnit(UnitConfig, kind="zoo-estimators"):
    """The estimators ``methods`` of the candidate ``model`` (its :class:`ZooModelUnit` key)
    on the training set of the target ``target`` identifies: the feature estimators on its
    penultimate features and outputs, the gradient scores on the model (a record)."""

    model: str
    target: dict[str, Any]
    methods: list[str]


@dataclass(frozen=True, kw_only=True)
class ZooFinetuneGridUnit(UnitConfig, kind="zoo-finetune-grid"):
    """One point of the linear-probe grid (a record): a linear head on the penultimate
    features of the candidate ``model`` (its :class:`ZooModelUnit` key), trained for
    ``epochs`` epochs (SGD momentum 0.9, cosine schedule, learning rate ``lr``, weight decay
    ``weight_decay``, batches of ``batch_size``) on ``1 - val_fraction`` of the training set of
    the target ``target`` identifies (a permutation seeded by the target's ``seed``, one split
    for the whole grid) and evaluated on the rest (its validation accuracy)."""

    model: str
    target: dict[str, Any]
    lr: float
    weight_decay: float
    epochs: int
    val_fraction: float
    batch_size: int


@dataclass(frozen=True, kw_only=True)
class ZooFinetuneUnit(UnitConfig, kind="zoo-finetune"):
    """The linear-probe ground truth at the grid's chosen (``lr``, ``weight_decay``) (a
    record): as :class:`ZooFinetuneGridUnit`, trained on all the target's training features
    and evaluated on its test features."""

    model: str
    target: dict[str, Any]
    lr: float
    weight_decay: float
    epochs: int
    batch_size: int


def _zoo_reference(c: ImageNetZooConfig, ctx: RunContext,
                   target: _ZooTarget) -> tuple[nn.Module, str]:
    """The reference of ``target``: read from ``reference_weights_dir``/DATASET.safetensors
    when set, else trained on the target (a ``reference`` unit, reloaded when stored)."""
    from advtransfer.models.registry import create

    def build_ref(n: int = target.n_classes) -> nn.Module:
        return Resized(create(f"cifar:{c.reference_architecture}", "random", n,
                              width=c.reference_width), c.reference_size)

    if not c.reference_weights_dir:
        unit = ReferenceUnit(model={"arch": c.reference_architecture, "width": c.reference_width,
                                    "size": c.reference_size},
                             data=target.tid, epochs=c.reference_epochs, lr=c.reference_lr,
                             batch_size=c.batch_size)
        return trained_classifier(ctx, unit, build_ref, target.train)
    from advtransfer.models.checkpoint import load_into

    ref_file = Path(c.reference_weights_dir).expanduser() / f"{target.name}.safetensors"
    if not ref_file.is_file():
        raise AdvTransferError(f"reference_weights_dir has no {ref_file.name}: "
                               f"looked for {ref_file}")
    reference = load_into(build_ref(), ref_file).eval().to(ctx.device)
    return reference, identity_key("reference-file", {"path": str(ref_file),
                                                      "bytes": ref_file.stat().st_size})


class _Outputs:
    """A candidate's features and outputs on a split of the target, computed once (on first
    use) and kept until :meth:`clear`."""

    def __init__(self, ctx: RunContext, model: Lazy[nn.Module], name: str,
                 target: _ZooTarget) -> None:
        self.ctx, self.model, self.name, self.target = ctx, model, name, target
        self.cache: dict[str, Any] = {}

    def __call__(self, split: str) -> Any:
        if split not in self.cache:
            data = self.target.train() if split == "train" else self.target.test()
            self.cache[split] = candidate_outputs(self.model(), data, device=self.ctx.device,
                                                  name=self.name)
        return self.cache[split]

    def clear(self) -> None:
        self.cache.clear()


def _fit_head(f_tr: torch.Tensor, y_tr: torch.Tensor, f_te: torch.Tensor, y_te: torch.Tensor,
              *, lr: float, wd: float, epochs: int, seed: int, device: torch.device,
              batch_size: int) -> dict[str, Any]:
    """A linear head on precomputed features (knowledge_transfer on the identity map)."""
    kt = knowledge_transfer(nn.Identity(), (f_tr, y_tr), (f_te, y_te), task="classification",
                            finetune="head", epochs=epochs, lr=lr, weight_decay=wd,
                            batch_size=batch_size, device=device, seed=seed)
    return kt.to_dict()


def _head_grid(c: ImageNetZooConfig, ctx: RunContext, model_key: str, target: _ZooTarget,
               outputs: _Outputs) -> dict[tuple[float, float], float]:
    """The validation accuracy of a linear head at every (lr, weight decay) of the grid, each
    a :class:`ZooFinetuneGridUnit` fitted on a seeded ``1 - val_fraction`` of the training
    features."""
    def split_fit() -> tuple[torch.Tensor, ...]:
        tr = outputs("train")
        n = len(tr.labels)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(c.seed))
        n_val = max(1, round(c.val_fraction * n))
        val, fit_ = perm[:n_val], perm[n_val:]
        return tr.features[fit_], tr.labels[fit_], tr.features[val], tr.labels[val]

    def fit(unit: ZooFinetuneGridUnit) -> dict[str, Any]:
        return _fit_head(*split_fit(), lr=unit.lr, wd=unit.weight_decay, epochs=unit.epochs,
                         seed=unit.seed, device=ctx.device, batch_size=unit.batch_size)

    val_acc: dict[tuple[float, float], float] = {}
    for lr in c.finetune_lrs:
        for wd in c.finetune_weight_decays:
            unit = ZooFinetuneGridUnit(model=model_key, target=target.tid, lr=lr,
                                       weight_decay=wd, epochs=c.finetune_epochs,
                                       val_fraction=c.val_fraction,
                                       batch_size=max(c.batch_size, 128))
            r = ctx.store.record(unit, functools.partial(fit, unit))
            val_acc[(lr, wd)] = float(r["test_accuracy"])
    return val_acc


def _head_truth(c: ImageNetZooConfig, ctx: RunContext, model_key: str, target: _ZooTarget,
                outputs: _Outputs) -> dict[str, Any]:
    """The linear-probe ground truth: the grid (:func:`_head_grid`), then the best (lr,
    weight decay) refit on all the training features and evaluated on the test features (a
    :class:`ZooFinetuneUnit`); the record's fields."""
    val_acc = _head_grid(c, ctx, model_key, target, outputs)
    best_lr, best_wd = max(val_acc, key=val_acc.__getitem__)
    unit = ZooFinetuneUnit(model=model_key, target=target.tid, lr=best_lr, weight_decay=best_wd,
                           epochs=c.finetune_epochs, batch_size=max(c.batch_size, 128))

    def final() -> dict[str, Any]:
        tr, te = outputs("train"), outputs("test")
        return _fit_head(tr.features, tr.labels, te.features, te.labels, lr=unit.lr,
                         wd=unit.weight_decay, epochs=unit.epochs, seed=unit.seed,
                         device=ctx.device, batch_size=unit.batch_size)

    kt = ctx.store.record(unit, final)
    return {"transfer_accuracy": kt["test_accuracy"], "transfer_loss": kt["test_loss"],
            "best_lr": best_lr, "best_weight_decay": best_wd,
            "best_val_accuracy": val_acc[(best_lr, best_wd)]}


def _zoo_truth(c: ImageNetZooConfig, ctx: RunContext, model_key: str, model: Lazy,
               outputs: _Outputs, target: _ZooTarget, given: float | None) -> dict[str, Any]:
    """The candidate's (``model_key``: its :class:`ZooModelUnit` key) ground truth as record
    fields: the CSV's accuracy ``given``, full fine-tuning, or the linear probe's grid."""
    if given is not None:
        return {"transfer_accuracy": given}
    if c.ground_truth != "finetune":
        return _head_truth(c, ctx, model_key, target, outputs)
    kt = full_finetune_truth(ctx, model_key, target.tid, model, target.train, target.test, c,
                             batch_size=c.batch_size)
    return {"transfer_accuracy": float(kt["test_accuracy"]), "transfer_loss": kt["test_loss"],
            "best_lr": kt["best_lr"], "best_epochs": kt["best_epochs"],
            "best_val_accuracy": kt["best_val_accuracy"]}


# =============================================================================================
# the waves' items (each may run on a Ray worker)
# =============================================================================================


def _reference_item(sets: _ZooSets, ctx: RunContext, *, c: ImageNetZooConfig,
                    adv: list[str]) -> dict[str, Any]:
    """Wave 1 (with adversarial methods only): the target's reference, its test accuracy and
    its attack; the reference's key and accuracy. The target's images are read here when
    needed and let go at the end."""
    target = _open(c, sets, progress=ctx.progress)
    reference, ref_key = _zoo_reference(c, ctx, target)
    ref_acc = accuracy(ctx, ref_key, reference, target.test, f"zoo-{target.tid}-test")
    reference_attack(c, ctx, ref_key, reference, target.test, adv, target=target.tid,
                     batch_size=c.batch_size)
    return {"ref_key": ref_key, "accuracy": ref_acc}


def _zoo_estimators(ctx: RunContext, unit: ZooEstimatorsUnit, name: str, model: Lazy,
                    outputs: _Outputs, target: _ZooTarget) -> dict[str, float]:
    """The candidate's estimator scores (a :class:`ZooEstimatorsUnit`), NaN where one could
    not score it."""
    est = list(unit.methods)

    def estimate() -> dict[str, Any]:
        return {"scores": {**estimator_scores(outputs("train"), est, name=name),
                           **gradient_scores(model(), target.train(), est, name=name,
                                             device=ctx.device)}}

    res = ctx.store.record(unit, estimate)
    return {m: num(res["scores"][m]) for m in est}


def _candidate_item(item: tuple[str, Any], ctx: RunContext, *, c: ImageNetZooConfig,
                    target: _ZooTarget, ref_key: str | None, needed: list[str],
                    given: dict[str, float] | None) -> dict[str, Any]:
    """Wave 2: candidate ``item`` (its name and its weights' identity: a
    :class:`ZooModelUnit`) on ``target``: its adversarial scores against the stored attack,
    its estimators and its ground truth. The model is loaded only when one of its units must
    be computed. Returns its scores, its ground truth and the record's ground-truth fields."""
    name, weight_id = item
    zoo = ZooModelUnit(model=name, weights=weight_id, recipe_seed=c.seed)
    builder = functools.partial(_load_zoo_model, c, name, zoo.seed, str(ctx.device))
    model = Lazy(builder)
    scores: dict[str, float] = {}
    adv = [m for m in needed if m in ADVERSARIAL_METHODS]
    if adv and ref_key is not None:
        reference = Lazy(lambda: _zoo_reference(c, ctx, target)[0])
        scores.update(candidate_adversarial(
            c, ctx, ZooAdversarialUnit, name, zoo.key, builder, ref_key, reference,
            target.test, adv, target=target.tid, batch_size=c.batch_size)[0])
    outputs = _Outputs(ctx, model, name, target)
    est = [m for m in needed if m in ESTIMATOR_METHODS]
    if est:
        unit = ZooEstimatorsUnit(model=zoo.key, target=target.tid, methods=est)
        scores.update(_zoo_estimators(ctx, unit, name, model, outputs, target))
    fields = _zoo_truth(c, ctx, zoo.key, model, outputs, target,
                        None if given is None else given[name])
    outputs.clear()
    return {"scores": scores, "truth": float(fields["transfer_accuracy"]), "fields": fields}


# =============================================================================================
# the driver
# =============================================================================================


def _references(c: ImageNetZooConfig, ctx: RunContext, sets: dict[str, _ZooSets],
                adv: list[str]) -> dict[str, dict]:
    """Wave 1 on ``ctx``'s executor: ``{dataset: {"ref_key", "accuracy"}}`` (empty without
    adversarial methods, which alone need a reference)."""
    if not adv:
        return {}
    out = ctx.map(functools.partial(_reference_item, c=c, adv=adv), list(sets.values()),
                   description="references")
    return dict(zip(sets, out, strict=True))


def _target_scores(c: ImageNetZooConfig, ctx: RunContext, sets: _ZooSets, ref: dict | None,
                   weight_ids: dict[str, Any], methods: list[str], needed: list[str],
                   given: dict[str, dict[str, float]] | None, top1: dict[str, float | None],
                   ) -> tuple[list[dict[str, Any]], dict[str, dict[str, float]], dict]:
    """Wave 2 for one target on ``ctx``'s executor (one target at a time: in this process its
    candidates share its images, read once, and one target's images are held at a time): its
    records, ``scores[method][model]`` (the combined methods computed over the pool) and
    ``truth[model]``."""
    ds_name = sets.name
    target = _open(c, sets, progress=ctx.progress and isinstance(ctx.executor, LocalExecutor))
    results = ctx.map(functools.partial(
        _candidate_item, c=c, target=target, ref_key=None if ref is None else ref["ref_key"],
        needed=needed, given=None if given is None else given[ds_name]),
        [(name, weight_ids[name]) for name in c.models], description=f"candidates ({ds_name})")
    per: dict[str, dict[str, float]] = {m: {} for m in needed}
    records = []
    for name, res in zip(c.models, results, strict=True):
        for m, v in res["scores"].items():
            per[m][name] = v
        records.append({"source": name, "target": ds_name, "source_accuracy": top1[name],
                        "reference_accuracy": None if ref is None else ref["accuracy"],
                        "ground_truth": "csv" if given is not None else c.ground_truth,
                        **res["fields"]})
    for m in needed:  # the rank averages and pooled estimators need the whole pool
        if m in COMBINED_METHODS:
            per[m] = combine(m, per)
    for record in records:
        record.update({m: per[m].get(record["source"]) for m in methods})
    truth = {name: res["truth"] for name, res in zip(c.models, results, strict=True)}
    return records, {m: per[m] for m in methods}, truth


def _description(c: ImageNetZooConfig, selection: dict[str, Any], ref_acc: dict[str, float],
                 notice: str) -> str:
    """The report's description: models, targets, ground truth, reference, attack, and the
    weighted-tau table."""
    caveat = f" **{notice}**" if notice else ""
    return (
        f"Models: {', '.join(c.models)} (ImageNet, torchvision; Inception-v3 sees its input "
        f"resized to 299/224 of the {c.image_size} px images). Targets: "
        f"{', '.join(c.datasets)}. Ground truth: "
        + ("the accuracies in " + c.ground_truth_csv if c.ground_truth_csv else
           full_finetune_text(c) if c.ground_truth == "finetune" else
           f"test accuracy of a linear head on the penultimate features, lr x weight decay "
           f"grid {c.finetune_lrs} x {c.finetune_weight_decays} selected on a "
           f"{c.val_fraction:.0%} validation split of the training set")
        + f". Reference per target: {c.reference_architecture} (width {c.reference_width}) at "
        f"{c.reference_size} px"
        + (" (test accuracy " + ", ".join(f"{t} {a:.3f}" for t, a in ref_acc.items()) + ")"
           if ref_acc else "") + f". Adversarial: {c.solver} {c.norm} eps={c.eps}, {c.objective}, "
        f"{c.steps} steps, {c.attack_samples} test inputs; plain alpha names are target -> "
        "source." + caveat + "\n\n**Weighted Kendall tau per target and mean** "
        "(source_accuracy: ImageNet top-1, the data-free baseline):\n\n"
        + markdown_table(selection["weighted_tau"]) + "\n\n"
        + wins_losses(selection["weighted_tau"]))


def _notice(c: ImageNetZooConfig) -> str:
    """The dry-run notice (random weights, FakeData targets), or empty."""
    dry = [what for what, fake in (("the weights are random", c.weights == "random"),
                                   ("the target data are torchvision's FakeData (random "
                                    "images)", "fake" in c.datasets)) if fake]
    if not dry:
        return ""
    return (f"A dry run: {' and '.join(dry)}, so the numbers say nothing about the method"
            + ("; the source accuracies are those of the pretrained weights" if
               c.weights == "random" else "") + ".")


@register("imagenet-zoo", ImageNetZooConfig,
          "The field's model-selection protocol: 11 torchvision ImageNet models ranked for 11 "
          "target data sets by adversarial transferability and the standard estimators, "
          "against a lr x weight-decay grid of head fine-tuning or a ground-truth CSV (needs "
          "the data sets, local weights and a GPU).", quick_zoo,
          check=_validate_zoo, growable=("models",))
def run_zoo(c: ImageNetZooConfig, ctx: RunContext) -> dict[str, Any]:
    _validate_zoo(c)
    methods = list(c.methods)
    needed = needed_methods(methods)
    given = (_read_ground_truth(c.ground_truth_csv, c.models, c.datasets)
             if c.ground_truth_csv else None)
    weight_ids = _weight_ids(c)  # before any work: the models are loaded unit by unit
    top1 = {m: imagenet_top1(m) for m in c.models}
    sets = {d: _zoo_sets(c, d) for d in c.datasets}  # a missing data set: before any work
    refs = _references(c, ctx, sets, [m for m in needed if m in ADVERSARIAL_METHODS])
    records: list[dict[str, Any]] = []
    scores: dict[str, dict[str, dict[str, float]]] = {}
    truth: dict[str, dict[str, float]] = {}
    for ds_name in c.datasets:
        recs, scores[ds_name], truth[ds_name] = _target_scores(
            c, ctx, sets[ds_name], refs.get(ds_name), weight_ids, methods, needed, given, top1)
        records += recs
    have_top1 = all(v is not None for v in top1.values())
    sa = {d: {m: float(top1[m]) for m in c.models} for d in c.datasets} if have_top1 else None
    selection = selection_summary(scores, truth, sa)
    ref_acc = {d: r["accuracy"] for d, r in refs.items()}
    selection["reference_accuracy"] = ref_acc
    notice = _notice(c)
    metrics = [*methods] + (["source_accuracy"] if have_top1 else [])
    return {
        "records": records,
        "selection": selection,
        "report": {
            "title": "imagenet-zoo: ranking ImageNet models for transfer",
            "description": _description(c, selection, ref_acc, notice),
            "notice": notice,
            "ground_truth": ("the accuracies of ground_truth_csv" if c.ground_truth_csv else
                             "full fine-tuning accuracy" if c.ground_truth == "finetune" else
                             "linear-probe accuracy (grid-searched head)"),
            "metrics": metrics,
            "outcomes": ["transfer_accuracy"],
            "sweep": None,
            "labels": report_labels(metrics, c.ground_truth),
            "columns": ["source", "target", "source_accuracy", "transfer_accuracy",
                        "reference_accuracy", *methods],
        },
    }
