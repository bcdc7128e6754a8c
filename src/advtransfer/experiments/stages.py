"""Stages shared by the recipes: train a classifier, measure its accuracy, fine-tune it for
knowledge transfer and measure adversarial transferability, each stored as a unit of the
results store; plus the data helpers they need (lazy data, 8-bit image tensors, augmentation,
batching) and the attack/report conventions every recipe uses.

Data arguments (training, evaluation and attack inputs) are given either directly (a pair of
tensors ``(x, y)``, a Dataset or a DataLoader; a tensor of inputs for attacks) or as a
zero-argument callable producing them (such as :class:`Lazy`), called only when the unit is
not stored yet, so a rerun whose units are all stored reads no data. Pairs whose ``x`` is an
8-bit image tensor (see :func:`materialize`) are batched as floats in [0, 1] by
:func:`batches`.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields, make_dataclass, replace
from typing import Any, Generic, TypeVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from advtransfer.attacks import ATTACK_FIELDS, AttackConfig
from advtransfer.data.subsets import take
from advtransfer.errors import AdvTransferError
from advtransfer.experiments.registry import RunContext
from advtransfer.knowledge import EPOCHS, FINETUNES, knowledge_transfer
from advtransfer.methods import method_label
from advtransfer.metrics import Convention, check_convention
from advtransfer.progress import track
from advtransfer.reference import ReferenceAttack, attack_reference, measure_against_reference
from advtransfer.training import LabelledData, evaluate, fit
from advtransfer.units import UnitConfig

T = TypeVar("T")
Tensors = tuple[torch.Tensor, torch.Tensor]
Data = LabelledData | Callable[[], LabelledData]
"""Labelled data, or a zero-argument callable producing it (read only when needed)."""
Inputs = torch.Tensor | Callable[[], torch.Tensor]
"""Float inputs to attack, or a zero-argument callable producing them."""

# --------------------------------------------------------------------------------------------
# Data helpers
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


def resolve(data: Any) -> Any:
    """``data()`` when ``data`` is a zero-argument producer (not a tensor, pair, Dataset or
    DataLoader), else ``data`` itself."""
    if callable(data) and not isinstance(data, (torch.Tensor, tuple, list, Dataset,
                                                DataLoader, nn.Module)):
        return data()
    return data


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
    """8-bit images -> float32 in [0, 1]; float tensors are returned as they are."""
    return x.to(torch.float32).div_(255.0) if x.dtype == torch.uint8 else x


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
    """A loader of float batches (8-bit images as [0, 1]; optionally augmented) over a pair
    of tensors."""
    x, y = data
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle,
                      generator=torch.Generator().manual_seed(seed),
                      collate_fn=_Collate(augmented))


def _is_pair(data: Any) -> bool:
    return isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0],
                                                                             torch.Tensor)


def loader_for(data: Data, *, batch_size: int, shuffle: bool = False, seed: int = 0,
               augmented: bool = False) -> LabelledData:
    """``data`` (resolved if lazy) in a form :func:`~advtransfer.training.fit`,
    :func:`~advtransfer.training.evaluate` and :func:`~advtransfer.knowledge_transfer` accept:
    a pair of 8-bit images, or any pair to augment, goes through :func:`batches`; anything else
    is passed on unchanged (those functions batch it themselves)."""
    data = resolve(data)
    if _is_pair(data) and (augmented or data[0].dtype == torch.uint8):
        return batches(data, batch_size=batch_size, shuffle=shuffle, seed=seed,
                       augmented=augmented)
    if augmented:
        raise AdvTransferError("augment needs the training data as a pair of image tensors "
                               f"(x, y); got {type(data).__name__}")
    return data


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, device: torch.device,
            batch_size: int = 256) -> torch.Tensor:
    """Arg-max predictions of ``model`` (eval mode) on 8-bit or float inputs, on the CPU."""
    model.eval()
    out = []
    for start in range(0, len(x), batch_size):
        out.append(model(to_float(x[start:start + batch_size]).to(device)).argmax(1).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


# --------------------------------------------------------------------------------------------
# Stored stages
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class TrainedModel(UnitConfig):
    """A classifier trained by :func:`trained_classifier`: ``model`` identifies the untrained
    network (architecture and its options, as the recipe names them), ``data`` the training
    data (task, classes, split, the recipe's seed ...); then the training settings. SGD uses
    momentum 0.9 and a cosine schedule (:func:`advtransfer.training.fit`); ``augment`` applies
    :func:`augment` (random crop and flip) to every batch; ``epochs = 0`` stores the seeded
    initialisation itself (an untrained source)."""

    model: dict[str, Any]
    data: dict[str, Any]
    epochs: int
    lr: float
    optimizer: str = "adam"
    batch_size: int = 128
    weight_decay: float = 0.0
    augment: bool = False


@dataclass(frozen=True, kw_only=True)
class SourceUnit(TrainedModel, kind="source"):
    """A trained source model (safetensors)."""


@dataclass(frozen=True, kw_only=True)
class ReferenceUnit(TrainedModel, kind="reference"):
    """A trained reference (target) model (safetensors)."""


@dataclass(frozen=True, kw_only=True)
class AccuracyUnit(UnitConfig, kind="accuracy"):
    """A stored model's (``model``: its key) accuracy and loss on the data named ``data``."""

    model: str
    data: str


@dataclass(frozen=True, kw_only=True)
class TransferUnit(UnitConfig, kind="transfer"):
    """Knowledge transfer of the stored model ``source`` (its key) to the task named
    ``target``: :func:`advtransfer.knowledge_transfer` with these settings (its defaults),
    each training batch through :func:`augment` when ``augment``."""

    source: str
    target: str
    task: str = "classification"
    features: str | None = None
    finetune: str = "head"
    epoch: str = "last"
    epochs: int = 10
    lr: float = 0.1
    weight_decay: float = 0.0
    batch_size: int = 128
    augment: bool = False


@dataclass(frozen=True, kw_only=True)
class ReferenceAttackUnit(UnitConfig, kind="reference-attack"):
    """The stored model ``reference``'s (its key) attack on the inputs ``inputs`` identifies,
    with ``attack`` (:meth:`advtransfer.attacks.AttackConfig.key`: every field), in batches of
    ``batch_size``: tensors shared by every source compared with it."""

    reference: str
    inputs: dict[str, Any]
    attack: dict[str, Any]
    batch_size: int = 128


@dataclass(frozen=True, kw_only=True)
class AdversarialUnit(UnitConfig, kind="adversarial"):
    """alpha1/alpha2/combined between the stored models ``source`` and ``target`` (keys) on
    the inputs ``inputs`` identifies, measured against the stored ``reference_attack`` (its
    key) with ``attack``, reported in ``convention``."""

    source: str
    target: str
    reference_attack: str
    inputs: dict[str, Any]
    attack: dict[str, Any]
    convention: str = "icml"
    batch_size: int = 128


def trained_classifier(ctx: RunContext, unit: TrainedModel, build: Callable[[], nn.Module],
                       train: Data, *, description: str | None = None,
                       ) -> tuple[nn.Module, str]:
    """The classifier ``unit`` describes, trained on ``train`` (or loaded from the store;
    ``train`` is then not read), and its unit key; ``build`` returns the untrained network.
    Returns the model in eval mode on ``ctx.device``. The seed (initial weights and batch
    order) is the unit's (:attr:`advtransfer.units.UnitConfig.seed`)."""
    if unit.epochs < 0:
        raise AdvTransferError(f"epochs must be >= 0 (0: the initialisation); got {unit.epochs}")
    seed = unit.seed

    def seeded_build() -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build().to(ctx.device)

    def do_train(model: nn.Module) -> nn.Module:
        if unit.epochs == 0:
            return model
        data = loader_for(train, batch_size=unit.batch_size, shuffle=True, seed=seed,
                          augmented=unit.augment)
        return fit(model, data, epochs=unit.epochs, lr=unit.lr,
                   optimizer=unit.optimizer,  # type: ignore[arg-type]
                   batch_size=unit.batch_size, weight_decay=unit.weight_decay, seed=seed,
                   device=ctx.device, progress=ctx.progress,
                   description=description or f"training {unit.kind}")

    model = ctx.store.model(unit, seeded_build, do_train)
    return model.to(ctx.device).eval(), unit.key


def accuracy(ctx: RunContext, model_key: str, model: nn.Module, data: Data,
             data_name: str, *, unit_type: type[AccuracyUnit] = AccuracyUnit) -> float:
    """Accuracy of a stored model on ``data`` (an :class:`AccuracyUnit`, or ``unit_type``,
    keyed by the model's key and ``data_name``, which must name the evaluated data; the loss
    is stored alongside)."""
    def compute() -> dict[str, float]:
        ev = evaluate(model, loader_for(data, batch_size=256), device=ctx.device)
        return {"accuracy": float(ev.accuracy or 0.0), "loss": ev.loss}

    return ctx.store.record(unit_type(model=model_key, data=data_name), compute)["accuracy"]


def transfer(ctx: RunContext, model_key: str, source: nn.Module, train: Data, test: Data, *,
             target: str, **settings: Any) -> dict[str, Any]:
    """Knowledge transfer of a stored source model to the target task named ``target``
    (a :class:`TransferUnit`; ``settings`` are its fields: ``task``, ``features``,
    ``finetune``, ``epoch``, ``epochs``, ``lr``, ``weight_decay``, ``batch_size``,
    ``augment``), fitted on ``train`` and evaluated on ``test``."""
    unit = TransferUnit(source=model_key, target=target, **settings)

    def compute() -> dict[str, Any]:
        seed = unit.seed
        return knowledge_transfer(
            source, loader_for(train, batch_size=unit.batch_size, shuffle=True, seed=seed,
                               augmented=unit.augment),
            loader_for(test, batch_size=256), device=ctx.device, seed=seed,
            progress=ctx.progress, task=unit.task,  # type: ignore[arg-type]
            features=unit.features, finetune=unit.finetune,  # type: ignore[arg-type]
            epoch=unit.epoch, epochs=unit.epochs, lr=unit.lr,  # type: ignore[arg-type]
            weight_decay=unit.weight_decay, batch_size=unit.batch_size).to_dict()

    return ctx.store.record(unit, compute)


def reference_attack(ctx: RunContext, target_key: str, target: nn.Module, x: Inputs, *,
                     inputs: dict[str, Any], batch_size: int = 128,
                     **attack: Any) -> tuple[ReferenceAttack, str]:
    """The stored model ``target``'s attack on the float inputs ``x``
    (:func:`advtransfer.reference.attack_reference`, with the noise baseline), computed once
    per run and shared by every source compared with it: a :class:`ReferenceAttackUnit` keyed
    by the model, ``inputs`` (which must identify the attacked inputs), the attack settings
    and ``batch_size``. Returns it with its unit key."""
    config = AttackConfig(**attack)
    unit = ReferenceAttackUnit(reference=target_key, inputs=inputs, attack=config.key(),
                               batch_size=batch_size)

    def compute() -> dict[str, torch.Tensor]:
        data = resolve(x)
        return attack_reference(target, data.to(ctx.device), config, seed=unit.seed,
                                noise_baseline=True, batch_size=batch_size,
                                device=ctx.device, progress=ctx.progress).tensors()

    tensors = ctx.store.tensors(unit, compute)
    return ReferenceAttack.from_tensors(tensors), unit.key


def adversarial(ctx: RunContext, source_key: str, target_key: str, source: nn.Module,
                target: nn.Module, x: Inputs, *, inputs: dict[str, Any],
                convention: Convention = "icml", batch_size: int = 128,
                **attack: Any) -> dict[str, Any]:
    """alpha1/alpha2/combined in both directions between two stored models on the float
    inputs ``x`` (an :class:`AdversarialUnit` keyed by both models, ``inputs``, which must
    identify the attacked inputs, the attack settings ``attack``, ``convention`` and
    ``batch_size``).

    ``target`` is the reference every source of a recipe is compared with: its attack is a
    unit of its own (:func:`reference_attack`), computed once for all sources, and each source
    is attacked once (:func:`advtransfer.reference.measure_against_reference`): N sources cost
    N + 1 attacks. Reported per direction ``tag`` in ``s2t`` (crafted on ``source``, applied
    to ``target``) and ``t2s`` exactly as the library reports it (:mod:`advtransfer.metrics`,
    ``convention``):

    * ``alpha1_tag`` (mean unsquared ratio), ``alpha1_median_tag``, ``alpha1_ladv_tag`` (the
      ICML paper's alpha1, a ratio of l_adv values: the mean squared ratio);
    * ``alpha2_tag`` and ``combined_tag`` (squared Frobenius norms when ``convention`` is
      ``"authors"``, as the authors' image code reports them);
    * ``alpha1_above_one_tag``, ``n_undefined_tag`` and the attack statistics
      (``mean_deviation_tag`` ...);

    and ``n_attack``: the number of attacked inputs. The measurement's seed is the unit's at
    the ``"icml"`` convention, which only changes the reporting: both conventions report one
    measurement."""
    check_convention(convention)
    # read (or computed) first, so that every run of the recipe uses the shared unit
    ref, ref_key = reference_attack(ctx, target_key, target, x, inputs=inputs,
                                    batch_size=batch_size, **attack)
    config = AttackConfig(**attack)
    unit = AdversarialUnit(source=source_key, target=target_key, reference_attack=ref_key,
                           inputs=inputs, attack=config.key(), convention=convention,
                           batch_size=batch_size)

    def compute() -> dict[str, Any]:
        r = measure_against_reference(source, ref, config, reference=target,
                                      seed=replace(unit, convention="icml").seed,
                                      name="source", reference_name="target",
                                      convention=convention, noise_baseline=True,
                                      batch_size=batch_size, device=ctx.device,
                                      progress=ctx.progress)
        out: dict[str, Any] = {"n_attack": len(ref)}
        for tag in ("s2t", "t2s"):
            d = r[tag]
            out.update({
                f"alpha1_{tag}": d.alpha1, f"alpha1_median_{tag}": d.alpha1_median,
                f"alpha1_ladv_{tag}": d.alpha1_ladv, f"alpha2_{tag}": d.alpha2,
                f"combined_{tag}": d.combined, f"alpha1_above_one_{tag}": d.n_alpha1_above_one,
                f"n_undefined_{tag}": d.n_undefined,
            })
            out.update({f"{k}_{tag}": v for k, v in asdict(d.stats).items()})
        return out

    return ctx.store.record(unit, compute)


# --------------------------------------------------------------------------------------------
# Configuration checks and report conventions
# --------------------------------------------------------------------------------------------


def attack_fields_class(name: str, doc: str, **defaults: Any) -> type:
    """A dataclass holding every field of :class:`~advtransfer.attacks.AttackConfig`, the one
    attack schema, with its types (``eps`` a float) and its defaults but for ``defaults`` (a
    recipe's own): the attack part of a recipe configuration, named as AttackConfig's fields in
    TOML and ``--set`` and checked against AttackConfig's types there. A recipe configuration
    inherits it (and may redeclare a field whose default differs); :func:`attack_config` builds
    its AttackConfig. No attack setting is declared anywhere else."""
    hints = typing.get_type_hints(AttackConfig)
    unknown = sorted(set(defaults) - set(ATTACK_FIELDS))
    if unknown:
        raise AdvTransferError(f"{name}: {unknown} are not fields of AttackConfig "
                               f"({', '.join(ATTACK_FIELDS)})")
    specs = []
    for f in fields(AttackConfig):
        default = defaults.get(f.name, f.default)
        if default is MISSING:
            raise AdvTransferError(f"{name}: AttackConfig's {f.name} has no default; give one")
        specs.append((f.name, float if f.name == "eps" else hints[f.name],
                      field(default=default)))
    cls = make_dataclass(name, specs, namespace={"__doc__": doc})
    cls.__module__ = __name__
    return cls


AttackFields = attack_fields_class(
    "AttackFields", """The attack settings of an image recipe's configuration: every field of
    :class:`~advtransfer.attacks.AttackConfig` (``eps`` in [0, 1] pixel units), at the celeba
    and taskonomy recipes' defaults, a 10-step Linf PGD of the deviation objective at eps 0.03
    returning the best iterate, and AttackConfig's for the rest (bounds [0, 1], tol, no
    padding mask); a recipe redeclares a field whose default differs.""",
    eps=0.03, norm="linf", steps=10)


def attack_fields(c: Any) -> dict[str, Any]:
    """The attack settings of a recipe configuration (a dataclass): every field it declares
    that is named as a field of :class:`~advtransfer.attacks.AttackConfig`, as configured."""
    declared = {f.name for f in fields(c)}
    return {name: getattr(c, name) for name in ATTACK_FIELDS if name in declared}


def attack_config(c: Any) -> AttackConfig:
    """The validated :class:`~advtransfer.attacks.AttackConfig` of a recipe configuration:
    :func:`attack_fields`, the fields the configuration does not declare at AttackConfig's
    defaults. Raises :class:`AdvTransferError` naming a field out of its range."""
    return AttackConfig(**attack_fields(c))


def check_common(c: Any) -> None:
    """Checks shared by the image recipes' configurations (``max_samples``, ``n_attack``,
    ``finetune``, ``direction``, ``workers``, epochs and batch sizes, the attack)."""
    if c.max_samples is not None and c.max_samples < 1:
        raise AdvTransferError(f"max_samples must be None or >= 1; got {c.max_samples}")
    if c.n_attack is not None and c.n_attack < 1:
        raise AdvTransferError(f"n_attack must be None or >= 1; got {c.n_attack}")
    if c.finetune not in FINETUNES:
        raise AdvTransferError(f"finetune must be one of {list(FINETUNES)}; got {c.finetune!r}")
    if getattr(c, "finetune_epoch", "last") not in EPOCHS:
        raise AdvTransferError(f"finetune_epoch must be one of {list(EPOCHS)}; got "
                               f"{c.finetune_epoch!r}")
    if c.direction not in ("t2s", "s2t"):
        raise AdvTransferError(f"direction must be 't2s' (attack the reference, evaluate the "
                               f"source) or 's2t'; got {c.direction!r}")
    if c.workers < 0:
        raise AdvTransferError(f"workers must be >= 0; got {c.workers}")
    for name in ("epochs", "reference_epochs", "finetune_epochs", "batch_size",
                 "attack_batch_size"):
        if getattr(c, name) < 1:
            raise AdvTransferError(f"{name} must be >= 1; got {getattr(c, name)}")
    attack_config(c)  # validates eps, norm, objective, solver, steps, ...


def metric_names(direction: str) -> list[str]:
    """The six alpha fields, the chosen direction's first."""
    other = "s2t" if direction == "t2s" else "t2s"
    return [f"{m}_{d}" for d in (direction, other) for m in ("alpha1", "alpha2", "combined")]


def alpha_labels(convention: Convention) -> dict[str, str]:
    """Report labels of the six alpha fields (:func:`advtransfer.methods.method_label`, saying
    when alpha2/combined are squared)."""
    squared = check_convention(convention) == "authors"
    return {m: method_label(m, squared=squared) for m in metric_names("t2s")}
