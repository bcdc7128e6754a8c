r"""``text-datasets``: the ICML version's NLP experiment on the authors' six text files.

The authors' repository ships six 1,000-example text files (AG News, MR, IMDB, Yelp, SNLI,
MultiNLI; :mod:`advtransfer.data.text`). This recipe asks the paper's question on them: does
adversarial transferability between a model of one dataset and a model of another indicate how
well the one transfers to the other's task? It runs in dependency waves of stored units, each
wave's items on the run's executor (:meth:`~advtransfer.experiments.registry.RunContext.map`):

1. **One input space.** A shared vocabulary over the texts of every configured dataset
   (:func:`~advtransfer.data.text.build_vocabulary`, words seen at least ``min_count`` times) and
   one frozen ``embed_dim``-dimensional embedding table (a ``text-embedding`` unit): ``"svd"``
   (default) factors the positive PMI of co-occurring words of all the texts, without labels,
   into unit-norm rows; ``"random"`` draws N(0, I/dim) rows. Every model reads the same embedded
   sequence x = table[ids] ([length ``max_len``, ``embed_dim``], padding rows exactly zero), so
   a perturbation crafted on one model is an input to every other. Measured on the real files
   (text-cnn, 20 epochs): mean test accuracy over the six datasets 0.62 with "svd", 0.53 with
   "random" (text-bag 0.61 vs 0.47), hence the default.
2. **Models.** Per dataset, ``seeds`` models of ``architecture`` (any ``text:`` model of
   :func:`advtransfer.models.create`), trained on its training split (Adam, ``lr``, ``epochs``;
   ``text-model`` units) and tested on its test split. Each file is cut into train /
   validation / test by :func:`~advtransfer.data.text.stratified_split` (``split``,
   ``split_seed``); the validation part is not used by this recipe.
   Seed 0 is the dataset's reference (target) model and the source model the other datasets
   are compared with; seeds 1.. are same-dataset, other-seed controls.
3. **Reference attacks.** Each target's reference is attacked once on ``n_attack`` test texts
   of its dataset (the library's attack, :class:`~advtransfer.attacks.AttackConfig`: PGD on
   the deviation objective, L2 ball of radius ``eps`` per sequence over its tokens,
   ``mask_padding`` so padding stays padding, no box bounds), shared by every source.
4. **Pairs.** For every ordered pair (target T, source S), S the seed-0 model of another
   dataset or a control of T: alpha1 / alpha2 / combined in both directions
   (:func:`~advtransfer.experiments.stages.adversarial`, on T's test texts), knowledge transfer
   by a new linear head on S's penultimate features (``finetune="head"``, ``head_epochs``,
   ``head_lr``; SGD) and by full fine-tuning of S with a new head (``full_epochs``,
   ``full_lr``), both on T's training split, tested on T's test split
   (:func:`~advtransfer.experiments.stages.transfer`); and the model-selection scores of S for
   T (``text-selection`` units: the estimators of ``methods`` on T's training texts and the
   feature-space alphas, :func:`advtransfer.selection.score_candidate`).
5. **Selection benchmark.** For each target, its pool of sources (the other datasets' models
   and, with ``control_in_pool``, its controls) is ranked by every method of ``methods`` against
   full fine-tuning accuracy (headline) and the linear head, in the tables of the digits
   benchmarks (:mod:`advtransfer.experiments.selection_analysis`).

The analysis of the finished records (matrices, Mantel tests, selection benchmark) and the
report's text are in :mod:`advtransfer.experiments.text_analysis`.

``attack="snapped"`` adds the authors' attack (:func:`advtransfer.text_attack.snapped_attack`:
Carlini-Wagner margin loss in the embedding space, each position snapped to the nearest
vocabulary word after every step, so the adversarial example is text) on the first
``snapped_samples`` attacked texts: per pair alpha1/alpha2/combined in both directions from the
two models' snapped attacks (``snapped_*`` record fields) and the number of tokens each attack
changes. It is slow (one nearest-word search over the vocabulary per position and step: about
150 s for 64 texts x 100 steps on a 2-core CPU, per model and target), hence off by default.

Records: one per ordered pair of different datasets (the controls are in ``controls``: their
pairs are not a cross-dataset comparison, and their high transfer and alpha would dominate any
correlation). The report correlates each alpha with both transfer accuracies over these pairs
(bootstrap intervals over records), and within targets (``groups = "target"``, the
correlation across the sources of one target); the pairs share datasets, so the p-value of the
association over ordered pairs is the Mantel test (:func:`advtransfer.stats.mantel`, dataset
labels permuted jointly on rows and columns, exact over all D! permutations), in the
description and in ``results.json`` (``mantel``). Matrices: rows are target datasets, columns
source datasets, the diagonal the first control (seed 1 of the row's dataset).

``eps`` is in embedding units. With the "svd" table every word vector has norm 1, so a
sequence of n tokens has norm sqrt(n) (median 4.6 for MR up to 8.0 for IMDB/Yelp at
``max_len=64``), and the default ``eps = 0.5`` is half a word vector, 6-11 % of a typical
sequence's norm. In a full run on the real files it changes the prediction of 35-60 % of the
reference models' attacked test texts (mean 51 %; a preliminary measurement on models trained
longer gave 36 % at eps 0.25 and 56 % at eps 1, so the attack saturates near one half for the
binary tasks). Each run reports the fraction per target (``targets[T]["flip_rate"]``).
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from advtransfer.data.text import (
    TEXT_DATA_URL,
    TEXT_DATASETS,
    TextDataset,
    Vocabulary,
    build_vocabulary,
    embedding_table,
    encode,
    load_text,
    stratified_split,
)
from advtransfer.errors import AdvTransferError
from advtransfer.experiments.registry import RunContext, register
from advtransfer.experiments.selection_analysis import num
from advtransfer.experiments.stages import (
    AttackFields,
    Lazy,
    TrainedModel,
    accuracy,
    adversarial,
    attack_config,
    attack_fields,
    reference_attack,
    trained_classifier,
    transfer,
)
from advtransfer.experiments.text_analysis import ALPHAS, results
from advtransfer.fileio import sha256_file
from advtransfer.methods import (
    ADVERSARIAL_FEATURE_METHODS,
    ESTIMATOR_METHODS,
    METHODS,
    RANK_AVERAGE_METHODS,
    needed_methods,
)
from advtransfer.metrics import Convention, DirectionAccumulator, check_convention
from advtransfer.models import create
from advtransfer.models.text import TEXT_MODELS
from advtransfer.reference import ReferenceAttack
from advtransfer.selection import CandidatePlan, score_candidate
from advtransfer.units import UnitConfig

__all__ = ["ALPHAS", "TEXT_METHODS", "TextDatasetsConfig", "TextTask", "quick"]

#: The selection benchmark's default methods: the alphas on the outputs and on the penultimate
#: features in both directions, every estimator but LGC (its per-sample parameter gradients
#: cost about 18 s per pair here, 11 minutes for the 36 pairs: add it with ``--set methods``),
#: and the rank averages.
TEXT_METHODS: list[str] = [
    "alpha1", "alpha2", "combined", "alpha1_s2t", "alpha2_s2t", "combined_s2t",
    "alpha1_features", "alpha2_features", "combined_features", "alpha1_features_s2t",
    "alpha2_features_s2t", "combined_features_s2t", "logme", "leep", "nce", "hscore",
    "regularized_hscore", "transrate", "gbc", "nleep", "parc", "sfda", "knn", "lfc", "tmi",
    "ncti", "etran", "ped_logme", "ped_sfda", *RANK_AVERAGE_METHODS]
QUICK_METHODS: list[str] = ["alpha1", "alpha2", "combined", "alpha1_s2t", "alpha1_features",
                            "logme", "leep", "nce", "alpha1_logme_rankavg"]
ATTACKS = ("embedding", "snapped")


@dataclass
class TextDatasetsConfig(AttackFields):
    """``text-datasets`` (module docstring). Data: ``data_root`` the folder holding the six
    files (required unless ``download``, which fetches missing ones into it, default
    ``data``); ``verify`` checks existing files' SHA-256; ``datasets`` which files (>= 2).
    Models: ``architecture`` a text model (text-bag, text-cnn, text-gru, text-transformer),
    ``seeds`` models per dataset (>= 1; seed 0 the reference, the others controls),
    ``embedding`` "svd" or "random", ``embed_dim`` >= 4, ``max_len`` >= 3 tokens,
    ``min_count`` >= 1, ``split`` train/validation/test fractions in (0, 1) summing to 1,
    ``split_seed`` >= 0, ``epochs``/``lr``/``batch_size`` of training (Adam). Transfer:
    ``head_epochs``/``head_lr`` (linear head, SGD), ``full_epochs``/``full_lr`` (full
    fine-tuning, SGD), ``finetune_batch_size``. Attack: the :class:`AttackFields` (``eps`` > 0
    in embedding units, default 0.5; L2; 10 PGD steps of the deviation objective), ``bounds``
    None (embeddings are not boxed), ``mask_padding`` (must be true), ``n_attack`` test texts
    per target (None: the whole test split), ``attack_batch_size``, ``convention``.
    Selection: ``methods`` (ids of :mod:`advtransfer.methods`), ``primary`` (a subset named
    in the goal sentence), ``control_in_pool``, ``resamples`` >= 1. ``attack`` "embedding" or
    "snapped" (adds the authors' snapped attack with ``snapped_samples``, ``snapped_steps``,
    ``snapped_lr``, ``snapped_const``, ``snapped_confidence``). ``seed`` >= 0 seeds the
    models and the embedding."""

    eps: float = 0.5
    norm: str = "l2"
    bounds: list[float] | None = None
    mask_padding: bool = True
    data_root: str = ""
    download: bool = False
    verify: bool = False
    seed: int = 0
    datasets: list[str] = field(default_factory=lambda: list(TEXT_DATASETS))
    architecture: str = "text-cnn"
    seeds: int = 2
    embedding: str = "svd"
    embed_dim: int = 64
    max_len: int = 64
    min_count: int = 1
    split: list[float] = field(default_factory=lambda: [0.6, 0.2, 0.2])
    split_seed: int = 0
    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 32
    head_epochs: int = 10
    head_lr: float = 0.1
    full_epochs: int = 5
    full_lr: float = 0.05
    finetune_batch_size: int = 32
    n_attack: int | None = None
    attack_batch_size: int = 128
    convention: Convention = "icml"
    methods: list[str] = field(default_factory=lambda: list(TEXT_METHODS))
    primary: list[str] = field(default_factory=lambda: ["alpha1", "alpha1_features"])
    control_in_pool: bool = True
    resamples: int = 500
    attack: str = "embedding"
    snapped_samples: int = 32
    snapped_steps: int = 100
    snapped_lr: float = 0.2
    snapped_const: float = 10.0
    snapped_confidence: float = 10.0


def quick(c: TextDatasetsConfig) -> TextDatasetsConfig:
    """``--quick``: AG News, MR and SNLI, two models each, 32-dimensional embeddings of 32
    tokens, 2 training epochs, 2 attack steps on 32 texts, 9 selection methods (on the real
    files about half a minute on 2 cores)."""
    return replace(c, datasets=["ag", "mr", "snli"], seeds=2, embed_dim=32, max_len=32,
                   epochs=2, head_epochs=3, full_epochs=1, steps=2, n_attack=32,
                   methods=list(QUICK_METHODS), resamples=50, snapped_samples=8,
                   snapped_steps=5)


# --------------------------------------------------------------------------------------------
# configuration checks
# --------------------------------------------------------------------------------------------


def _at_least(c: TextDatasetsConfig, names: tuple[str, ...], minimum: int) -> None:
    for name in names:
        value = getattr(c, name)
        if value < minimum:
            raise AdvTransferError(f"{name} must be an integer >= {minimum}; got {value}")


def _check_data(c: TextDatasetsConfig) -> None:
    if not c.datasets or len(set(c.datasets)) != len(c.datasets) or len(c.datasets) < 2:
        raise AdvTransferError(f"datasets must list at least 2 distinct files of "
                               f"{list(TEXT_DATASETS)}; got {c.datasets}")
    unknown = [d for d in c.datasets if d not in TEXT_DATASETS]
    if unknown:
        raise AdvTransferError(f"datasets: unknown file(s) {unknown}; known: "
                               f"{list(TEXT_DATASETS)}")
    if not c.data_root and not c.download:
        raise AdvTransferError(
            f"data_root is required: the folder holding the text files "
            f"{', '.join(c.datasets)} (the authors' files, {TEXT_DATA_URL}/NAME); pass "
            "--data-root DIR, or --download to fetch them (into ./data without --data-root)")
    if c.download:
        return
    root = Path(c.data_root).expanduser()
    missing = [d for d in c.datasets if not (root / d).is_file()]
    if missing:
        raise AdvTransferError(
            f"text file(s) {', '.join(missing)} missing in {root} (data_root); the six files "
            f"({', '.join(TEXT_DATASETS)}) come from {TEXT_DATA_URL}/NAME: pass --download "
            "to fetch them, or copy them there. Nothing was written.")


def _check_model(c: TextDatasetsConfig) -> None:
    if c.architecture not in TEXT_MODELS:
        raise AdvTransferError(f"architecture must be one of {list(TEXT_MODELS)}; got "
                               f"{c.architecture!r}")
    if c.embedding not in ("svd", "random"):
        raise AdvTransferError(f"embedding must be 'svd' or 'random'; got {c.embedding!r}")
    _at_least(c, ("embed_dim",), 4)
    _at_least(c, ("max_len",), 3)
    _at_least(c, ("seeds", "min_count", "epochs", "batch_size", "head_epochs", "full_epochs",
                  "finetune_batch_size", "attack_batch_size", "resamples", "snapped_samples"),
              1)
    _at_least(c, ("seed", "split_seed", "snapped_steps"), 0)
    if c.architecture == "text-transformer" and c.embed_dim % 4:
        raise AdvTransferError(f"embed_dim must be a multiple of 4 for text-transformer (its "
                               f"attention heads); got {c.embed_dim}")
    for name in ("lr", "head_lr", "full_lr", "snapped_lr", "snapped_const"):
        if not getattr(c, name) > 0:
            raise AdvTransferError(f"{name} must be > 0; got {getattr(c, name)}")
    if c.snapped_confidence < 0:
        raise AdvTransferError(f"snapped_confidence must be >= 0; got {c.snapped_confidence}")
    if len(c.split) != 3 or not all(0 < f < 1 for f in c.split) \
            or not math.isclose(sum(c.split), 1.0, abs_tol=1e-6):
        raise AdvTransferError(f"split must be three fractions (train, validation, test) in "
                               f"(0, 1) summing to 1; got {c.split}")


def _check_selection(c: TextDatasetsConfig) -> None:
    ground = ("finetune", "linear_probe", "source_accuracy")  # computed by the recipe
    bad = [m for m in c.methods if m not in METHODS or m in ground]
    if not c.methods or bad or len(set(c.methods)) != len(c.methods):
        allowed = [m for m in METHODS if m not in ground]
        raise AdvTransferError(f"methods must be a non-empty list of distinct ids of {allowed}; "
                               f"got {bad or c.methods}")
    pool = len(c.datasets) - 1 + (c.seeds - 1 if c.control_in_pool else 0)
    if pool < 2:
        raise AdvTransferError(
            f"datasets and seeds give each target a pool of {pool} source model(s); the "
            "selection benchmark ranks at least 2: add a dataset, or set seeds >= 2 with "
            "control_in_pool = true")
    outside = [m for m in c.primary if m not in c.methods]
    if outside:
        raise AdvTransferError(f"primary must name methods of methods; {outside} are not in "
                               f"{c.methods}")


def _check_attack(c: TextDatasetsConfig) -> None:
    if c.attack not in ATTACKS:
        raise AdvTransferError(f"attack must be one of {list(ATTACKS)}; got {c.attack!r}")
    if c.mask_padding is not True:
        raise AdvTransferError("mask_padding must be true: the text models read an all-zero "
                               "row as padding, so a perturbed padding row would be a new token")
    if c.n_attack is not None and c.n_attack < 1:
        raise AdvTransferError(f"n_attack must be None (the whole test split) or >= 1; got "
                               f"{c.n_attack}")
    check_convention(c.convention)
    attack_config(c)  # eps, norm, objective, solver, steps, bounds ...


def check(c: TextDatasetsConfig) -> None:
    """Every value of ``c`` (:class:`AdvTransferError` naming the field and its range) and the
    presence of the data files unless ``download``; reads no file."""
    _check_model(c)
    _check_selection(c)
    _check_attack(c)
    _check_data(c)


# --------------------------------------------------------------------------------------------
# data, embedding and models
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextTask:
    """One dataset as the recipe uses it: token ids (``[n, max_len]``) and labels of its
    train and test parts, the positions of the attacked test texts within the test part, the
    number of classes, the task kind and the file's SHA-256."""

    name: str
    task: str
    classes: int
    sha256: str
    train: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    attacked: torch.Tensor
    size: int = 0

    def embedded(self, table: torch.Tensor, part: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(table[ids], labels)`` of ``part`` ("train" or "test")."""
        ids, y = getattr(self, part)
        return table[ids], y

    def attack_ids(self, n: int | None = None) -> torch.Tensor:
        """Ids of the attacked test texts (the first ``n`` of them when given)."""
        picked = self.test[0][self.attacked]
        return picked if n is None else picked[:n]


def _read(c: TextDatasetsConfig) -> dict[str, TextDataset]:
    """Every configured file (downloaded first with ``download``), before any unit."""
    root = Path(c.data_root or "data").expanduser()
    return {d: load_text(d, root, download=c.download, verify=c.verify) for d in c.datasets}


def _tasks(c: TextDatasetsConfig, sets: dict[str, TextDataset],
           vocab: Vocabulary) -> dict[str, TextTask]:
    """Encode and split every dataset; the attacked test texts are a seeded (``split_seed``)
    subset of ``n_attack`` of the test part (all of it when None), in ascending order."""
    root = Path(c.data_root or "data").expanduser()
    out = {}
    for name, data in sets.items():
        ids, _ = encode(data, vocab, c.max_len)
        y = torch.as_tensor(np.array(data.labels, dtype=np.int64))
        tr, _, te = stratified_split(data.labels, fractions=c.split, seed=c.split_seed)
        n = len(te) if c.n_attack is None else min(c.n_attack, len(te))
        pick = np.sort(np.random.default_rng(c.split_seed).permutation(len(te))[:n])
        out[name] = TextTask(name, data.task, len(data.classes), sha256_file(root / name),
                             (ids[tr], y[tr]), (ids[te], y[te]), torch.as_tensor(pick),
                             len(data))
    return out


def _split_id(c: TextDatasetsConfig) -> dict[str, Any]:
    return {"fractions": list(c.split), "seed": c.split_seed}


@dataclass(frozen=True, kw_only=True)
class TextEmbeddingUnit(UnitConfig, kind="text-embedding"):
    """The frozen word-embedding table shared by every model of a run
    (:func:`advtransfer.data.text.embedding_table`, tensors): ``datasets`` maps each text file
    to its SHA-256 (the texts the vocabulary, words seen at least ``min_count`` times, and the
    table are built from), ``method`` is ``"svd"`` or ``"random"``, ``dim`` the table's width
    and ``table_seed`` the seed of its random draws (the recipe's ``seed``)."""

    datasets: dict[str, str]
    min_count: int
    method: str
    dim: int
    table_seed: int


def _embedding(ctx: RunContext, c: TextDatasetsConfig, sets: dict[str, TextDataset],
               vocab: Vocabulary, hashes: dict[str, str]) -> tuple[torch.Tensor, str]:
    """The shared embedding table (a :class:`TextEmbeddingUnit`) and its key."""
    unit = TextEmbeddingUnit(datasets=hashes, min_count=c.min_count, method=c.embedding,
                             dim=c.embed_dim, table_seed=c.seed)

    def compute() -> dict[str, torch.Tensor]:
        return {"table": embedding_table(vocab, list(sets.values()), dim=unit.dim,
                                         method=unit.method, seed=unit.table_seed)}

    table = ctx.store.tensors(unit, compute)["table"]
    if table.shape != (len(vocab), c.embed_dim):
        raise AdvTransferError(f"the stored embedding table has shape {list(table.shape)}, "
                               f"expected [{len(vocab)}, {c.embed_dim}]")
    return table, unit.key


@dataclass(frozen=True)
class _Shared:
    """What every unit of a run needs: the configuration, the tasks, the table and its key."""

    c: TextDatasetsConfig
    tasks: dict[str, TextTask]
    table: torch.Tensor
    emb_key: str

    def inputs(self, target: str) -> dict[str, Any]:
        """The identity of target ``target``'s attacked texts (part of attack unit keys)."""
        return {"dataset": target, "split": _split_id(self.c), "part": "test",
                "n": len(self.tasks[target].attacked), "embedding": self.emb_key,
                "max_len": self.c.max_len}

    def target_id(self, target: str) -> str:
        """The name of target ``target``'s data in transfer and selection units."""
        return (f"text:{target}/split{_split_id(self.c)}/{self.emb_key}/len{self.c.max_len}"
                "/train->test")

    def attack(self) -> dict[str, Any]:
        return attack_fields(self.c)


@dataclass(frozen=True, kw_only=True)
class TextModelUnit(TrainedModel, kind="text-model"):
    """A text classifier (safetensors) trained on one text dataset's training split, reading
    the run's embedded texts: ``model`` is ``{"arch", "embed_dim", "max_len"}`` (a ``text:``
    model of :func:`advtransfer.models.create`), ``data`` is ``{"dataset", "sha256" (of its
    file), "split" (fractions and seed), "embedding" (the :class:`TextEmbeddingUnit`'s key),
    "seed" ([the recipe's seed, the model's seed number])}``; then the training settings of
    :class:`~advtransfer.experiments.stages.TrainedModel` (Adam here)."""


def _model(ctx: RunContext, s: _Shared, dataset: str, seed: int) -> tuple[nn.Module, str]:
    """Model ``seed`` of ``dataset`` (a :class:`TextModelUnit`: trained, or loaded when
    stored)."""
    c, task = s.c, s.tasks[dataset]
    unit = TextModelUnit(
        model={"arch": c.architecture, "embed_dim": c.embed_dim, "max_len": c.max_len},
        data={"dataset": dataset, "sha256": task.sha256, "split": _split_id(c),
              "embedding": s.emb_key, "seed": [c.seed, seed]},
        epochs=c.epochs, lr=c.lr, optimizer="adam", batch_size=c.batch_size)
    return trained_classifier(
        ctx, unit, lambda: create(f"text:{c.architecture}", "random", task.classes,
                                  embed_dim=c.embed_dim, max_len=c.max_len),
        Lazy(lambda: task.embedded(s.table, "train")),
        description=f"training {c.architecture} on {dataset} (seed {seed})")


def _name(dataset: str, seed: int) -> str:
    return dataset if seed == 0 else f"{dataset}#{seed}"


def _train_item(item: tuple[str, int], ctx: RunContext, *, s: _Shared) -> dict[str, Any]:
    """Wave 2: one model, trained and tested on its dataset's test split."""
    dataset, seed = item
    model, key = _model(ctx, s, dataset, seed)
    acc = accuracy(ctx, key, model, Lazy(lambda: s.tasks[dataset].embedded(s.table, "test")),
                   f"{s.target_id(dataset)}/test")
    return {"dataset": dataset, "seed": seed, "name": _name(dataset, seed), "key": key,
            "accuracy": acc, "n_test": len(s.tasks[dataset].test[1])}


# --------------------------------------------------------------------------------------------
# attacks
# --------------------------------------------------------------------------------------------


def _reference_attack(ctx: RunContext, s: _Shared, target: str) -> tuple[ReferenceAttack, str]:
    reference, ref_key = _model(ctx, s, target, 0)
    task = s.tasks[target]
    return reference_attack(ctx, ref_key, reference, Lazy(lambda: s.table[task.attack_ids()]),
                            inputs=s.inputs(target), batch_size=s.c.attack_batch_size,
                            **s.attack())


@dataclass(frozen=True, kw_only=True)
class TextSnappedUnit(UnitConfig, kind="text-snapped"):
    """One text model's (``model``: its key) snapped word-substitution attack
    (:func:`advtransfer.text_attack.snapped_attack`, tensors: the adversarial ids, the changed
    tokens and the success per text) on the texts ``inputs`` identifies (a target's attacked
    test texts, the first ``first`` of them): ``steps`` steps of learning rate ``lr`` on the
    Carlini-Wagner margin loss with constant ``const`` and margin ``confidence``, the token
    ids ``frozen`` never changed nor chosen ([UNK] = 1, [SEP] = 2)."""

    model: str
    inputs: dict[str, Any]
    steps: int
    lr: float
    const: float
    confidence: float
    frozen: tuple[int, ...] = (1, 2)


def _snapped_unit(s: _Shared, key: str, target: str) -> TextSnappedUnit:
    """The :class:`TextSnappedUnit` of the model ``key`` on the first ``snapped_samples``
    attacked texts of ``target``."""
    c = s.c
    return TextSnappedUnit(model=key, inputs={**s.inputs(target), "first": c.snapped_samples},
                           steps=c.snapped_steps, lr=c.snapped_lr, const=c.snapped_const,
                           confidence=c.snapped_confidence)


def _snapped(ctx: RunContext, s: _Shared, model: nn.Module, key: str,
             target: str) -> dict[str, torch.Tensor]:
    """``model``'s snapped attack on the first ``snapped_samples`` attacked texts of
    ``target`` (a :class:`TextSnappedUnit`, :func:`_snapped_unit`); the pushed-away label is
    the model's prediction."""
    from advtransfer.text_attack import snapped_attack

    c = s.c
    unit = _snapped_unit(s, key, target)

    def compute() -> dict[str, torch.Tensor]:
        ids = s.tasks[target].attack_ids(c.snapped_samples)
        r = snapped_attack(model.to(ctx.device), ids.to(ctx.device), s.table.to(ctx.device),
                           steps=unit.steps, lr=unit.lr, const=unit.const,
                           confidence=unit.confidence, frozen=list(unit.frozen))
        return {"ids": r.ids, "changed": r.changed, "success": r.success.to(torch.uint8)}

    return ctx.store.tensors(unit, compute)


def _target_item(target: str, ctx: RunContext, *, s: _Shared) -> dict[str, Any]:
    """Wave 3: the reference's attack on its test texts (shared by every source), what it
    does to the reference's predictions and the texts' norms; its snapped attack too with
    ``attack="snapped"``."""
    ref, _ = _reference_attack(ctx, s, target)
    before = ref.clean.argmax(1)
    after = (ref.clean + ref.deviation).argmax(1)
    out = {"n_attack": len(ref), "flip_rate": float((before != after).double().mean()),
           "mean_delta_norm": float(ref.delta.flatten(1).norm(dim=1).mean()),
           "median_input_norm": float(ref.x.flatten(1).norm(dim=1).median()),
           "median_tokens": float((ref.x.abs().amax(-1) > 0).sum(1).double().median())}
    if s.c.attack == "snapped":
        reference, ref_key = _model(ctx, s, target, 0)
        snap = _snapped(ctx, s, reference, ref_key, target)
        out.update(snapped_changed=float(snap["changed"].double().mean()),
                   snapped_success=float(snap["success"].double().mean()))
    return out


def _deviation(model: nn.Module, x: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return (model(x) - clean).flatten(1).double()


@dataclass(frozen=True, kw_only=True)
class TextSnappedAdversarialUnit(UnitConfig, kind="text-snapped-adversarial"):
    """alpha1/alpha2/combined in both directions between the text models ``source`` and
    ``target`` (the target dataset's reference; keys) from their snapped attacks
    ``source_attack`` and ``target_attack`` (keys of :class:`TextSnappedUnit` units) on the
    texts ``inputs`` identifies, reported in ``convention``."""

    source: str
    target: str
    source_attack: str
    target_attack: str
    inputs: dict[str, Any]
    convention: str


def _snapped_alphas(ctx: RunContext, s: _Shared, pair: tuple[str, str, str, int]
                    ) -> dict[str, Any]:
    """alpha1/alpha2/combined in both directions from the snapped attacks of the target's
    reference (T) and the source (S) on the same texts x (a ``text-snapped-adversarial``
    unit): t2s compares Delta_{T->S} = f_S(x + delta_T) - f_S(x) with Delta_{S->S}, s2t
    Delta_{S->T} with Delta_{T->T} (:class:`advtransfer.metrics.DirectionAccumulator`; texts
    where the victim's own snapped attack changes nothing have no alpha1 and are left out)."""
    target, _, source, seed = pair
    reference, ref_key = _model(ctx, s, target, 0)
    model, key = _model(ctx, s, source, seed)
    snap_t = _snapped(ctx, s, reference, ref_key, target)
    snap_s = _snapped(ctx, s, model, key, target)
    unit = TextSnappedAdversarialUnit(
        source=key, target=ref_key, source_attack=_snapped_unit(s, key, target).key,
        target_attack=_snapped_unit(s, ref_key, target).key,
        inputs={**s.inputs(target), "first": s.c.snapped_samples}, convention=s.c.convention)

    def compute() -> dict[str, Any]:
        x = s.table[s.tasks[target].attack_ids(s.c.snapped_samples)]
        x_t, x_s = s.table[snap_t["ids"]], s.table[snap_s["ids"]]
        models = {"T": reference.cpu().eval(), "S": model.cpu().eval()}
        with torch.inference_mode():
            clean = {k: m(x) for k, m in models.items()}
        dev = {f"{a}{v}": _deviation(models[v], x_a, clean[v])
               for a, x_a in (("T", x_t), ("S", x_s)) for v in ("T", "S")}
        out: dict[str, Any] = {
            "changed_source": float(snap_s["changed"].double().mean()),
            "success_source": float(snap_s["success"].double().mean())}
        for tag, (a, b) in {"t2s": ("T", "S"), "s2t": ("S", "T")}.items():
            acc = DirectionAccumulator(a, b, convention=s.c.convention)
            acc.update(dev[a + a], dev[a + b], dev[b + b])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # texts without alpha1
                r = acc.compute()
            out.update({f"alpha1_{tag}": r.alpha1, f"alpha2_{tag}": r.alpha2,
                        f"combined_{tag}": r.combined, f"n_undefined_{tag}": r.n_undefined})
        return out

    return ctx.store.record(unit, compute)


# --------------------------------------------------------------------------------------------
# pairs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class TextSelectionUnit(UnitConfig, kind="text-selection"):
    """A text source's (``source``: its key) model-selection scores for a target
    (:func:`advtransfer.selection.score_candidate`): the estimators ``estimators`` on the
    target's embedded training texts (``target`` names that data) and the feature-space
    alphas ``adversarial`` against the target reference's stored attack
    (``reference_attack``: its key, which holds the attack settings), reported in
    ``convention``, in batches of ``batch_size``."""

    source: str
    reference_attack: str
    target: str
    estimators: tuple[str, ...]
    adversarial: tuple[str, ...]
    convention: str
    batch_size: int


def _selection(ctx: RunContext, s: _Shared, pair: tuple[str, str, str, int], model: nn.Module,
               key: str) -> dict[str, float]:
    """The source's estimator and feature-space adversarial scores for the target (a
    ``text-selection`` unit; :func:`advtransfer.selection.score_candidate` on the target's
    embedded training texts and the reference's stored attack)."""
    target, name = pair[0], pair[1]
    needed = needed_methods(s.c.methods)
    est = tuple(m for m in needed if m in ESTIMATOR_METHODS)
    feats = tuple(m for m in needed if m in ADVERSARIAL_FEATURE_METHODS)
    if not est and not feats:
        return {}
    ref, ref_key = _reference_attack(ctx, s, target)
    reference, _ = _model(ctx, s, target, 0)
    unit = TextSelectionUnit(source=key, reference_attack=ref_key, target=s.target_id(target),
                             estimators=est, adversarial=feats, convention=s.c.convention,
                             batch_size=s.c.attack_batch_size)

    def compute() -> dict[str, Any]:
        plan = CandidatePlan(adversarial=feats, estimators=est, attack=attack_config(s.c),
                             convention=unit.convention, batch_size=unit.batch_size,
                             seed=unit.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # a NaN score is reported as such
            r = score_candidate((name, model), plan=plan,
                                data=s.tasks[target].embedded(s.table, "train"),
                                reference_attack=ref, reference=reference, device=ctx.device)
        return {"scores": {m: (v if math.isfinite(v) else None) for m, v in r.scores.items()},
                "timings": r.timings}

    return {m: num(v) for m, v in ctx.store.record(unit, compute)["scores"].items()}


def _pair_item(pair: tuple[str, str, str, int], ctx: RunContext, *,
               s: _Shared) -> dict[str, Any]:
    """Wave 4: one (target, source) pair: the alphas, both knowledge transfers, the selection
    scores (and the snapped alphas); its record."""
    target, name, source, seed = pair
    c = s.c
    reference, ref_key = _model(ctx, s, target, 0)
    model, key = _model(ctx, s, source, seed)
    task = s.tasks[target]
    adv = adversarial(ctx, key, ref_key, model, reference,
                      Lazy(lambda: s.table[task.attack_ids()]), inputs=s.inputs(target),
                      convention=c.convention, batch_size=c.attack_batch_size, **s.attack())
    train = Lazy(lambda: task.embedded(s.table, "train"))
    test = Lazy(lambda: task.embedded(s.table, "test"))
    kt = {mode: transfer(ctx, key, model, train, test, target=s.target_id(target),
                         task="classification", features="penultimate", finetune=mode,
                         epochs=epochs, lr=lr, batch_size=c.finetune_batch_size)
          for mode, epochs, lr in (("head", c.head_epochs, c.head_lr),
                                   ("full", c.full_epochs, c.full_lr))}
    record: dict[str, Any] = {
        "source": f"{name} -> {target}", "target": target, "source_model": name,
        "source_dataset": source, "source_seed": seed,
        "pair": "control" if source == target else "cross",
        "head_accuracy": kt["head"]["test_accuracy"], "head_loss": kt["head"]["test_loss"],
        "full_accuracy": kt["full"]["test_accuracy"], "full_loss": kt["full"]["test_loss"],
        **{k: adv[k] for k in ALPHAS}, "alpha1_median_t2s": adv["alpha1_median_t2s"],
        "n_attack": adv["n_attack"],
        "selection_scores": _selection(ctx, s, pair, model, key)}
    if c.attack == "snapped":
        snap = _snapped_alphas(ctx, s, pair)
        record.update({f"snapped_{k}": v for k, v in snap.items()})
    return record


# --------------------------------------------------------------------------------------------
# the recipe
# --------------------------------------------------------------------------------------------


def _pairs(c: TextDatasetsConfig) -> list[tuple[str, str, str, int]]:
    """(target, source name, source dataset, source seed) of every pair: the seed-0 models of
    the other datasets and the target's own controls."""
    out = []
    for t in c.datasets:
        out += [(t, src, src, 0) for src in c.datasets if src != t]
        out += [(t, _name(t, k), t, k) for k in range(1, c.seeds)]
    return out


@register("text-datasets", TextDatasetsConfig,
          "The ICML version's NLP experiment on the authors' six text files (AG News, MR, IMDB, "
          "Yelp, SNLI, MultiNLI): small text models on one shared frozen embedding, alpha in "
          "both directions vs head / full fine-tuning transfer for every ordered dataset pair, "
          "Mantel tests and a model-selection benchmark (needs --data-root or --download; "
          "minutes on CPU).", quick, check=check)
def run(c: TextDatasetsConfig, ctx: RunContext) -> dict[str, Any]:
    """The waves (module docstring), then the analysis of
    :func:`advtransfer.experiments.text_analysis.results`."""
    check(c)
    sets = _read(c)  # every file read (and checked) before the first unit is written
    vocab = build_vocabulary(list(sets.values()), min_count=c.min_count)
    tasks = _tasks(c, sets, vocab)
    table, emb_key = _embedding(ctx, c, sets, vocab, {d: t.sha256 for d, t in tasks.items()})
    s = _Shared(c, tasks, table, emb_key)
    models = ctx.map(functools.partial(_train_item, s=s),
                     [(d, k) for d in c.datasets for k in range(c.seeds)],
                     description="text models")
    targets = dict(zip(c.datasets, ctx.map(functools.partial(_target_item, s=s), c.datasets,
                                           description="reference attacks"), strict=True))
    every = ctx.map(functools.partial(_pair_item, s=s), _pairs(c), description="pairs")
    return results(s, models, targets, every, len(vocab), ctx.seed_for)
