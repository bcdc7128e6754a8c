"""``taskonomy``: adversarial transferability among Taskonomy tasks, and the task tree it implies.

The paper's third experiment (the authors' ``exp3``) asks whether adversarial transferability
between the Taskonomy task networks (Zamir et al., CVPR 2018) recovers Taskonomy's own transfer
structure. This recipe:

1. builds the networks of ``tasks`` through the ``visualpriors`` package
   (:func:`advtransfer.models.taskonomy.task_model`): the task outputs (``output="decoder"``, what
   the authors attacked) or the encoders' representations (``output="encoder"``), on images in
   [0, 1] (mapped to the networks' [-1, 1]), at full resolution;
2. reads up to ``n_images`` RGB images from ``data_root`` (e.g. the ``rgb/`` folder of the
   Taskonomy sample building), resized to ``image_size`` (256 for the real networks);
3. measures the N x N matrices of alpha1, alpha2 and combined with
   :func:`pooled_transfer_matrix`: every network is attacked once per image (PGD, L_inf budget
   ``eps`` in [0, 1] pixel units, deviation objective ||f(x + delta) - f(x)||^2 on its own
   full-resolution output; entry [i, j] applies the attack crafted on task i to task j).
   alpha1 is the ratio of full-resolution deviation norms. For alpha2 and combined the
   deviations Delta(x) are average-pooled to ``pool x pool`` cells (``pool=0``: not pooled) and
   each pooled vector rescaled to its full-resolution norm: pooling is linear, so this is the
   coarse structure of the same deviation, and it keeps E[u_A u_B^T] small (a dense 256 x 256
   output has 196,608 values per channel set; unpooled, the accumulator's Gram form keeps
   n_images x m values per direction);
4. clusters the tasks hierarchically (:func:`scipy.cluster.hierarchy.linkage`, method
   ``linkage``) on the distance d_ij = max(0, 1 - (M_ij + M_ji) / 2), M the ``cluster_metric``
   matrix, and draws the tree (``figures/taskonomy_tree.png`` in the run directory, beside the
   report's heatmaps; the linkage and a Newick string are in ``results.json``);
5. given Taskonomy's transfer-affinity matrix as a CSV file (``affinity_csv``, rows the source
   task, columns the target task; see :func:`advtransfer.data.taskonomy.load_affinity_csv`),
   correlates alpha[S, T] (attack crafted on S, evaluated on T) with affinity[S, T] (S's
   representation transferred to T's task) over the ordered task pairs both cover: one
   orientation, the one the authors compare (their ``exp3``: attacks crafted on each source
   task, losses measured on the target task, against the transfer from that source to that
   target). Pairs that share a task are not independent, so the p-value is a Mantel test
   (:func:`advtransfer.stats.mantel`: task labels permuted jointly on rows and columns; exact
   over all n! permutations up to 8 tasks, else ``mantel_permutations`` seeded ones), never the
   pairwise p-value of a correlation over n(n - 1) pairs. The paper finds the
   adversarial-transferability tree close to Taskonomy's: positive rank correlation.

Differences from the authors' protocol: they attacked each task with its own training loss
(L1, L2 or softmax cross-entropy against the clean prediction; eps 0.06 in their figure) and
compared tasks by a tournament over per-image losses; here the attack is the theory's deviation
objective and the comparison uses alpha1/alpha2/combined.

``weights="random"`` (used by ``--quick`` and the tests) builds the same architectures with
seeded random weights and downloads nothing; it exercises the pipeline but its matrix says
nothing about the tasks. The real weights are fetched (with ``--download``) from the URLs
``visualpriors`` lists, SHA-256 checked, into ``weights_dir`` (default: torch hub's
``checkpoints`` directory, shared with ``visualpriors``).

Records: one per ordered pair of distinct tasks (attacker -> victim) with its alphas and, with
an affinity file, affinity[attacker, victim]. The report does not correlate the records as if
they were independent; the Mantel results are in its description and in ``results.json``
(``affinity_correlation``).

The analysis of the finished matrices (tree distance, linkage and Newick string, the tree
figure, the affinity correlation, the records and the report text) is in
:mod:`advtransfer.experiments.taskonomy_analysis`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from advtransfer.attacks import (
    AttackConfig,
    GeneratorLike,
)
from advtransfer.data.taskonomy import (
    PAPER_TASKS,
    check_tasks,
    list_images,
    load_affinity_csv,
    read_images,
)
from advtransfer.devices import resolve_device
from advtransfer.errors import AdvTransferError
from advtransfer.experiments.registry import RunContext, register
from advtransfer.experiments.stages import AttackFields, attack_config
from advtransfer.experiments.taskonomy_analysis import (
    METRICS,
    TREE_FIGURE,
    affinity_comparison,
    linkage,
    newick,
    pair_records,
    report,
    rows,
    tree_distance,
    tree_figure,
)
from advtransfer.fileio import atomic_write_bytes
from advtransfer.metrics import (
    Convention,
    TransferMatrixResult,
    matrix_result,
    measure_matrix,
)
from advtransfer.models.taskonomy import TaskOutput, task_model
from advtransfer.units import UnitConfig


@dataclass
class TaskonomyConfig(AttackFields):
    """``taskonomy``; see the module docstring. ``data_root``: a folder of RGB images;
    ``download``: fetch missing pretrained weights; ``verify``: check existing weight files
    against their SHA-256; ``weights_dir`` "" means torch hub's checkpoint directory;
    ``affinity_csv`` "" means no affinity comparison (rows: source task, columns: target task);
    ``pool`` the cells (per side) the deviations are pooled to for alpha2/combined, 0 for none;
    ``n_images`` None means every image."""

    data_root: str = "data"
    download: bool = False
    verify: bool = False
    seed: int = 0
    tasks: list[str] = field(default_factory=lambda: list(PAPER_TASKS))
    output: str = "decoder"
    weights: str = "pretrained"
    weights_dir: str = ""
    trust_weights: bool = False
    pool: int = 4
    image_size: int = 256
    n_images: int | None = 1000
    convention: Convention = "icml"
    batch_size: int = 16
    cluster_metric: str = "combined"
    linkage: str = "average"
    affinity_csv: str = ""
    mantel_permutations: int = 9999


@dataclass(frozen=True, kw_only=True)
class TaskonomyMatrixUnit(UnitConfig, kind="taskonomy-matrix"):
    """A run's measurements (a record): :func:`pooled_transfer_matrix` among the networks of
    ``tasks`` (their ``output``, ``"encoder"`` or ``"decoder"``, with ``weights``
    ``"pretrained"`` or ``"random"``, seeded per task and ``recipe_seed``, the recipe's
    ``seed``), on the ``n_images`` images whose file names and sizes hash to ``images``
    (:func:`list_images`, chosen with ``recipe_seed``) resized to ``image_size`` px, each
    network attacked on its ``attack_on`` with ``attack``
    (:meth:`advtransfer.attacks.AttackConfig.key`) in batches of ``batch_size``, the
    deviations pooled to ``pool x pool`` cells for alpha2/combined (0: none), reported in
    ``convention``; the attacks draw from the unit's seed."""

    tasks: tuple[str, ...]
    output: str
    weights: str
    pool: int
    image_size: int
    n_images: int
    images: str
    attack: dict[str, Any]
    convention: str
    batch_size: int
    recipe_seed: int
    attack_on: str = "full-resolution output"


QUICK_TASKS = ["autoencoding", "depth_euclidean", "normal"]


def quick(c: TaskonomyConfig) -> TaskonomyConfig:
    """``--quick``: three tasks' random-weight encoders on at most 16 images of 64 px (4 x 4
    representations, deviations pooled to 2 x 2), 2 attack steps."""
    return replace(c, tasks=list(QUICK_TASKS), output="encoder", weights="random",
                   image_size=64, n_images=16, steps=2, pool=2)


def _check(c: TaskonomyConfig) -> list[str]:
    if c.output not in ("encoder", "decoder"):
        raise AdvTransferError(f"output must be 'encoder' or 'decoder'; got {c.output!r}")
    if c.weights not in ("pretrained", "random"):
        raise AdvTransferError(f"weights must be 'pretrained' or 'random'; got {c.weights!r}")
    if c.pool < 0:
        raise AdvTransferError(f"pool must be >= 0 (0: no pooling); got {c.pool}")
    if c.image_size < 32 or c.image_size % 16:
        raise AdvTransferError(f"image_size must be a multiple of 16, at least 32 (the "
                               f"encoder downsamples by 16); got {c.image_size}")
    if c.cluster_metric not in METRICS:
        raise AdvTransferError(f"cluster_metric must be one of {list(METRICS)}; got "
                               f"{c.cluster_metric!r}")
    if c.linkage not in ("single", "complete", "average", "weighted"):
        raise AdvTransferError(f"linkage must be single, complete, average or weighted (methods "
                               f"that take any distance); got {c.linkage!r}")
    if c.batch_size < 1:
        raise AdvTransferError(f"batch_size must be >= 1; got {c.batch_size}")
    if c.mantel_permutations < 1:
        raise AdvTransferError(f"mantel_permutations must be >= 1; got {c.mantel_permutations}")
    attack_config(c)
    return check_tasks(c.tasks, c.output, c.image_size)


def pool_deviations(dev: torch.Tensor, shape: tuple[int, ...], pool: int) -> torch.Tensor:
    """Deviations ``dev`` (batch, prod(shape)) of an output of ``shape`` average-pooled to
    ``pool x pool`` cells when the output is spatial (C, H, W) and larger, each pooled row
    rescaled to the norm of its full-resolution row (so ||.|| stays the full deviation's and
    only the direction is coarse-grained); unchanged when ``pool`` is 0 or nothing to pool.
    A row whose pooled deviation is exactly 0 stays 0 (its direction is lost)."""
    if not pool or len(shape) != 3 or (shape[1] <= pool and shape[2] <= pool):
        return dev
    pooled = F.adaptive_avg_pool2d(dev.reshape(len(dev), *shape), pool).reshape(len(dev), -1)
    full, coarse = dev.norm(dim=1, keepdim=True), pooled.norm(dim=1, keepdim=True)
    return torch.where(coarse > 0, pooled * (full / coarse.clamp_min(torch.finfo(dev.dtype).tiny)),
                       torch.zeros_like(pooled))


def pooled_transfer_matrix(models: dict[str, TaskOutput], x: torch.Tensor,
                           config: AttackConfig, *, pool: int, convention: Convention = "icml",
                           batch_size: int = 16, generator: GeneratorLike = None,
                           progress: bool = False) -> TransferMatrixResult:
    """N x N alpha1/alpha2/combined among full-resolution task networks (entry [i, j]: attack
    crafted on i, applied to j): :func:`advtransfer.metrics.measure_matrix` with every
    deviation Delta_{i->j} passed through :func:`pool_deviations` before accumulation.

    Each network is attacked once per image on its full output (the objective sees every
    output value); alpha1 and the attack statistics are full-resolution norms (pooling keeps
    each deviation's norm); the unit vectors behind alpha2 and combined are those of the pooled
    deviations."""
    names, mods = list(models), list(models.values())
    device = resolve_device(mods, "auto")
    shapes = [m.output_shape(x[:1].to(device)) for m in mods]
    out = measure_matrix(mods, names, x, config, convention=convention, noise_baseline=True,
                         deviation_map=lambda j, d: pool_deviations(d, shapes[j], pool),
                         batch_size=batch_size, device=device, generator=generator,
                         progress=progress)
    return matrix_result(names, out, {"pool": pool, "convention": convention})


@register("taskonomy", TaskonomyConfig,
          "The paper's Taskonomy experiment: the N x N adversarial-transferability matrix among "
          "Taskonomy task networks (visualpriors), the task tree it implies and its rank "
          "correlation with Taskonomy's transfer affinities (needs images; --download fetches "
          "the network weights).", quick, check=_check)
def run(c: TaskonomyConfig, ctx: RunContext) -> dict[str, Any]:
    tasks = _check(c)
    affinity_tasks: list[str] = []
    affinity_full = np.zeros((0, 0))
    if c.affinity_csv:
        affinity_tasks, affinity_full = load_affinity_csv(c.affinity_csv)
    folder, files, fingerprint = list_images(c.data_root, n=c.n_images, seed=c.seed)
    unit = TaskonomyMatrixUnit(
        tasks=tuple(tasks), output=c.output, weights=c.weights, pool=c.pool,
        image_size=c.image_size, n_images=len(files), images=fingerprint,
        attack=attack_config(c).key(), convention=c.convention, batch_size=c.batch_size,
        recipe_seed=c.seed)
    [result] = ctx.map(functools.partial(_matrix_record, c=c, tasks=tasks, files=files,
                                         unit=unit), [None], description="transfer matrix")
    mats = {m: np.asarray(result[m], dtype=np.float64) for m in METRICS}
    shared, affinity, correlations = affinity_comparison(c, tasks, mats, affinity_tasks,
                                                         affinity_full)
    body_tree = _task_tree(c, ctx, tasks, mats, shared, affinity)
    matrices = {m: {"names": tasks, "values": rows(mats[m])} for m in METRICS}
    if affinity is not None:
        matrices["Taskonomy affinity"] = {"names": shared, "values": rows(affinity)}
    return {
        "records": pair_records(tasks, mats, result, shared, affinity),
        "matrices": matrices,
        "tree": body_tree,
        "affinity_correlation": correlations,
        "images": {"folder": str(folder), "n": result["n_images"], "fingerprint": fingerprint},
        "output_shapes": result["output_shapes"],
        "report": report(c, tasks, folder, result["n_images"], body_tree, correlations,
                         affinity is not None),
    }


def _matrix_record(_: None, ctx: RunContext, *, c: TaskonomyConfig, tasks: list[str],
                   files: list[Path], unit: TaskonomyMatrixUnit) -> dict[str, Any]:
    """The run's stored unit, read or computed (:func:`_matrix_unit`) by the executor (a Ray
    worker with ``--executor ray``), which needs the images on a file system it sees."""
    return ctx.store.record(unit, lambda: _matrix_unit(c, ctx, tasks, files, unit))


def _matrix_unit(c: TaskonomyConfig, ctx: RunContext, tasks: list[str], files: list[Path],
                 unit: TaskonomyMatrixUnit) -> dict[str, Any]:
    """The stored unit of a run: the images read, every task network built (seeded per task)
    and :func:`pooled_transfer_matrix` measured among them (attack generator seeded by
    the unit); the alpha matrices, per-pair deviation statistics and output shapes."""
    x = read_images(files, size=c.image_size, progress=ctx.progress)
    models = {}
    for task in tasks:
        models[task] = task_model(
            task, output=c.output, weights=c.weights,
            weights_dir=c.weights_dir or None, download=c.download, verify=c.verify,
            trust_weights=c.trust_weights, seed=ctx.seed_for("taskonomy-net", task, c.seed),
        ).to(ctx.device)
    config = attack_config(c)
    r = pooled_transfer_matrix(models, x, config, pool=c.pool, convention=c.convention,
                               batch_size=c.batch_size,
                               generator=unit.seed,
                               progress=ctx.progress)
    pairs = {}
    for (i, j), d in r.directions.items():
        pairs[f"{i},{j}"] = {
            "mean_deviation": d.stats.mean_deviation,
            "mean_random_deviation": d.stats.mean_random_deviation,
            "mean_victim_self_deviation": d.stats.mean_victim_self_deviation}
    return {"alpha1": r.alpha1.tolist(), "alpha2": r.alpha2.tolist(),
            "combined": r.combined.tolist(),
            "alpha1_above_one": r.n_alpha1_above_one.tolist(), "pairs": pairs,
            "output_shapes": {t: list(m.output_shape(x[:1].to(ctx.device)))
                              for t, m in models.items()},
            "n_images": len(x)}


def _task_tree(c: TaskonomyConfig, ctx: RunContext, tasks: list[str],
               mats: dict[str, np.ndarray], shared: list[str],
               affinity: np.ndarray | None) -> dict[str, Any]:
    """The task tree of ``cluster_metric`` (:func:`tree_distance`, ``linkage``) and, with
    affinities, the tree of d = max(0, max(A_sym) - A_sym) (A_sym = (A + A^T) / 2) beside it:
    both drawn in :data:`TREE_FIGURE` under the run directory; the tree's results entry."""
    z = linkage(tree_distance(mats[c.cluster_metric]), c.linkage)
    trees = [(f"adversarial transferability ({c.cluster_metric}, {c.linkage} linkage)", z,
              tasks)]
    body_tree: dict[str, Any] = {"metric": c.cluster_metric, "method": c.linkage,
                                 "distance": "max(0, 1 - (M + M^T) / 2)",
                                 "linkage": z.tolist(), "newick": newick(z, tasks)}
    if affinity is not None:
        sym = (affinity + affinity.T) / 2.0
        finite = sym[np.isfinite(sym)]
        top = float(finite.max()) if finite.size else 0.0
        d_aff = np.clip(top - sym, 0.0, None)
        np.fill_diagonal(d_aff, 0.0)
        z_aff = linkage(d_aff, c.linkage)
        trees.append((f"Taskonomy affinity ({c.linkage} linkage)", z_aff, shared))
        body_tree["affinity_newick"] = newick(z_aff, shared)
    atomic_write_bytes(Path(ctx.store.root) / TREE_FIGURE, tree_figure(trees))
    return body_tree
