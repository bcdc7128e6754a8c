"""``taskonomy``: adversarial transferability among Taskonomy tasks, and the task tree it implies.

The paper's third experiment (the authors' ``exp3``) asks whether adversarial transferability
between the Taskonomy task networks (Zamir et al., CVPR 2018) recovers Taskonomy's own transfer
structure. This recipe:

1. builds the networks of ``tasks`` through the ``visualpriors`` package
   (:func:`advtransfer.data.taskonomy.task_model`): the task outputs (``output="decoder"``, what
   the authors attacked) or the encoders' representations (``output="encoder"``), on images in
   [0, 1] (mapped to the networks' [-1, 1]), average-pooled to ``pool x pool`` cells;
2. reads up to ``n_images`` RGB images from ``data_root`` (e.g. the ``rgb/`` folder of the
   Taskonomy sample building), resized to ``image_size`` (256 for the real networks);
3. measures the N x N matrices of alpha1, alpha2 and combined with
   :func:`advtransfer.transfer_matrix`: every network is attacked once per image (PGD, L_inf budget
   ``eps`` in [0, 1] pixel units, deviation objective ||f(x + delta) - f(x)||^2 on its own
   output; entry [i, j] applies the attack crafted on task i to task j);
4. clusters the tasks hierarchically (:func:`scipy.cluster.hierarchy.linkage`, method
   ``linkage``) on the distance d_ij = max(0, 1 - (M_ij + M_ji) / 2), M the ``cluster_metric``
   matrix, and draws the tree (``figures/taskonomy_tree.png`` in the run directory, beside the
   report's heatmaps; the linkage and a Newick string are in ``results.json``);
5. given Taskonomy's transfer-affinity matrix as a CSV file (``affinity_csv``; see
   :func:`advtransfer.data.taskonomy.load_affinity_csv`), reports Spearman's rank correlation
   between alpha and affinity over the task pairs both cover: entry-wise (alpha[i, j] against
   affinity[i, j]), transposed (against affinity[j, i], for files of the other orientation) and
   symmetrised (the upper triangles of (A + A^T) / 2). The paper finds the adversarial-
   transferability tree close to Taskonomy's: positive rank correlation.

``weights="random"`` (used by ``--quick`` and the tests) builds the same architectures with
seeded random weights and downloads nothing; it exercises the pipeline but its matrix says
nothing about the tasks. The real weights are fetched (with ``--download``) from the URLs
``visualpriors`` lists, SHA-256 checked, into ``weights_dir`` (default: torch hub's
``checkpoints`` directory, shared with ``visualpriors``).

Records: one per ordered pair of distinct tasks (attacker -> victim) with its alphas and, with
an affinity file, the two affinity orientations, so the report also correlates them.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from advtransfer.data.taskonomy import (
    PAPER_TASKS,
    check_tasks,
    list_images,
    load_affinity_csv,
    read_images,
    task_model,
)
from advtransfer.errors import AdvTransferError
from advtransfer.experiments.registry import RunContext, register
from advtransfer.fileio import atomic_write_bytes
from advtransfer.metrics import Convention, transfer_matrix

METRICS = ("alpha1", "alpha2", "combined")
TREE_FIGURE = "figures/taskonomy_tree.png"


@dataclass
class TaskonomyConfig:
    """``taskonomy``; see the module docstring. ``data_root``: a folder of RGB images;
    ``download``: fetch missing pretrained weights; ``verify``: check existing weight files
    against their SHA-256; ``weights_dir`` "" means torch hub's checkpoint directory;
    ``affinity_csv`` "" means no affinity comparison; ``n_images`` None means every image."""

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
    eps: float = 0.03
    norm: str = "linf"
    objective: str = "deviation"
    solver: str = "pgd"
    steps: int = 10
    step_size: float | None = None
    random_start: bool = True
    convention: Convention = "icml"
    batch_size: int = 16
    cluster_metric: str = "combined"
    linkage: str = "average"
    affinity_csv: str = ""


QUICK_TASKS = ["autoencoding", "depth_euclidean", "normal"]


def quick(c: TaskonomyConfig) -> TaskonomyConfig:
    """``--quick``: three tasks' random-weight encoders on at most 16 images of 64 px, 2
    attack steps."""
    return replace(c, tasks=list(QUICK_TASKS), output="encoder", weights="random",
                   image_size=64, n_images=16, steps=2)


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
    from advtransfer.attacks import AttackConfig

    AttackConfig(eps=c.eps, norm=c.norm, objective=c.objective, solver=c.solver,  # type: ignore[arg-type]
                 steps=c.steps, step_size=c.step_size, random_start=c.random_start)
    return check_tasks(c.tasks, c.output, c.image_size)


def tree_distance(matrix: np.ndarray) -> np.ndarray:
    """d_ij = max(0, 1 - (M_ij + M_ji) / 2) off the diagonal, 0 on it."""
    sym = (matrix + matrix.T) / 2.0
    d = np.clip(1.0 - sym, 0.0, None)
    np.fill_diagonal(d, 0.0)
    return d


def _linkage(distance: np.ndarray, method: str) -> np.ndarray:
    from scipy.cluster.hierarchy import linkage
    from scipy.spatial.distance import squareform

    return linkage(squareform(np.nan_to_num(distance, nan=1.0), checks=False), method=method)


def newick(z: np.ndarray, names: list[str]) -> str:
    """The tree of the linkage ``z`` as a Newick string (branch lengths: merge heights)."""
    from scipy.cluster.hierarchy import to_tree

    def walk(node: Any, parent_height: float) -> str:
        length = max(parent_height - node.dist, 0.0)
        if node.is_leaf():
            return f"{names[node.id]}:{length:.4g}"
        return (f"({walk(node.left, node.dist)},{walk(node.right, node.dist)})"
                f":{length:.4g}")

    root = to_tree(z)
    return f"({walk(root.left, root.dist)},{walk(root.right, root.dist)});"


def _tree_figure(trees: list[tuple[str, np.ndarray, list[str]]]) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from scipy.cluster.hierarchy import dendrogram

    n = max(len(t[2]) for t in trees)
    fig = Figure(figsize=(6.0 * len(trees), 1.0 + 0.35 * n), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(trees), squeeze=False)[0]
    for ax, (title, z, names) in zip(axes, trees, strict=True):
        dendrogram(z, labels=names, orientation="left", ax=ax, color_threshold=0)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("merge distance")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _spearman(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    from scipy.stats import spearmanr

    keep = np.isfinite(a) & np.isfinite(b)
    n = int(keep.sum())
    if n < 3 or np.ptp(a[keep]) == 0 or np.ptp(b[keep]) == 0:
        return {"rho": None, "p": None, "n": n}
    res = spearmanr(a[keep], b[keep])
    return {"rho": float(res.statistic), "p": float(res.pvalue), "n": n}


def affinity_correlations(alpha: dict[str, np.ndarray], affinity: np.ndarray) -> dict[str, Any]:
    """Spearman's rho between each alpha matrix and the affinity matrix (same task order):
    entry-wise and transposed over the off-diagonal pairs, symmetrised over the upper
    triangle."""
    n = affinity.shape[0]
    off = ~np.eye(n, dtype=bool)
    upper = np.triu(np.ones((n, n), dtype=bool), k=1)
    sym_aff = (affinity + affinity.T) / 2.0
    out: dict[str, Any] = {}
    for name, m in alpha.items():
        sym = (m + m.T) / 2.0
        out[name] = {"entrywise": _spearman(m[off], affinity[off]),
                     "transposed": _spearman(m[off], affinity.T[off]),
                     "symmetrised": _spearman(sym[upper], sym_aff[upper])}
    return out


@register("taskonomy", TaskonomyConfig,
          "The paper's Taskonomy experiment: the N x N adversarial-transferability matrix among "
          "Taskonomy task networks (visualpriors), the task tree it implies and its rank "
          "correlation with Taskonomy's transfer affinities (needs images; --download fetches "
          "the network weights).", quick)
def run(c: TaskonomyConfig, ctx: RunContext) -> dict[str, Any]:
    tasks = _check(c)
    affinity_tasks: list[str] = []
    affinity_full = np.zeros((0, 0))
    if c.affinity_csv:
        affinity_tasks, affinity_full = load_affinity_csv(c.affinity_csv)
    folder, files, fingerprint = list_images(c.data_root, n=c.n_images, seed=c.seed)
    attack = {"eps": c.eps, "norm": c.norm, "objective": c.objective, "solver": c.solver,
              "steps": c.steps, "step_size": c.step_size, "random_start": c.random_start}
    unit = {"tasks": tasks, "output": c.output, "weights": c.weights, "pool": c.pool,
            "image_size": c.image_size, "images": {"n": len(files), "fingerprint": fingerprint},
            "attack": attack, "convention": c.convention, "batch_size": c.batch_size,
            "seed": c.seed}

    def compute() -> dict[str, Any]:
        x = read_images(files, size=c.image_size, progress=ctx.progress)
        models = {}
        for task in tasks:
            models[task] = task_model(
                task, output=c.output, weights=c.weights, pool=c.pool,
                weights_dir=c.weights_dir or None, download=c.download, verify=c.verify,
                trust_weights=c.trust_weights, seed=ctx.seed_for("taskonomy-net", task, c.seed),
            ).to(ctx.device)
        r = transfer_matrix(models, x, device=ctx.device, convention=c.convention,
                            batch_size=c.batch_size, generator=ctx.seed_for("taskonomy", unit),
                            progress=ctx.progress, **attack)
        pairs = {}
        for (i, j), d in r.directions.items():
            pairs[f"{i},{j}"] = {
                "mean_deviation": d.stats.mean_deviation,
                "mean_random_deviation": d.stats.mean_random_deviation,
                "mean_victim_self_deviation": d.stats.mean_victim_self_deviation}
        return {"alpha1": r.alpha1.tolist(), "alpha2": r.alpha2.tolist(),
                "combined": r.combined.tolist(),
                "alpha1_above_one": r.n_alpha1_above_one.tolist(), "pairs": pairs,
                "output_dims": {t: int(np.prod(m(x[:1].to(ctx.device)).shape[1:]))
                                for t, m in models.items()},
                "n_images": len(x)}

    result = ctx.store.record("taskonomy-matrix", unit, compute)
    mats = {m: np.asarray(result[m], dtype=np.float64) for m in METRICS}

    # affinities restricted to the tasks both cover, in the run's order
    shared = [t for t in tasks if t in affinity_tasks]
    affinity = None
    correlations: dict[str, Any] | None = None
    if c.affinity_csv:
        if len(shared) < 3:
            raise AdvTransferError(f"{c.affinity_csv} covers only {shared} of the tasks "
                                   f"{tasks}; the comparison needs at least 3 shared tasks")
        pos = [affinity_tasks.index(t) for t in shared]
        affinity = affinity_full[np.ix_(pos, pos)]
        run_pos = [tasks.index(t) for t in shared]
        correlations = affinity_correlations(
            {m: v[np.ix_(run_pos, run_pos)] for m, v in mats.items()}, affinity)

    # the task tree
    z = _linkage(tree_distance(mats[c.cluster_metric]), c.linkage)
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
        z_aff = _linkage(d_aff, c.linkage)
        trees.append((f"Taskonomy affinity ({c.linkage} linkage)", z_aff, shared))
        body_tree["affinity_newick"] = newick(z_aff, shared)
    atomic_write_bytes(Path(ctx.store.root) / TREE_FIGURE, _tree_figure(trees))

    records = []
    for i, a in enumerate(tasks):
        for j, b in enumerate(tasks):
            if i == j:
                continue
            rec: dict[str, Any] = {"source": f"{a} -> {b}", "attacker": a, "victim": b,
                                   **{m: float(mats[m][i, j]) for m in METRICS},
                                   "alpha1_above_one": result["alpha1_above_one"][i][j],
                                   **result["pairs"][f"{i},{j}"]}
            if affinity is not None:
                if a in shared and b in shared:
                    p, q = shared.index(a), shared.index(b)
                    rec["affinity"] = _finite(affinity[p, q])
                    rec["affinity_transposed"] = _finite(affinity[q, p])
                else:
                    rec["affinity"] = rec["affinity_transposed"] = None
            records.append(rec)
    matrices = {m: {"names": tasks, "values": _rows(mats[m])} for m in METRICS}
    if affinity is not None:
        matrices["Taskonomy affinity"] = {"names": shared, "values": _rows(affinity)}
    outcomes = ["affinity", "affinity_transposed"] if affinity is not None else []
    weights_note = (
        "RANDOM-WEIGHT networks (weights='random'): this run checks the pipeline; its numbers "
        "say nothing about the tasks. " if c.weights == "random" else
        "Pretrained visualpriors weights. ")
    summary = ""
    if correlations is not None:
        s = correlations[c.cluster_metric]["symmetrised"]
        rho = "undefined" if s["rho"] is None else f"{s['rho']:.3f} (p = {s['p']:.3g})"
        summary = (f" Spearman rho between symmetrised {c.cluster_metric} and symmetrised "
                   f"affinity over {s['n']} task pairs: {rho}; all variants in results.json "
                   "(affinity_correlation).")
    return {
        "records": records,
        "matrices": matrices,
        "tree": body_tree,
        "affinity_correlation": correlations,
        "images": {"folder": str(folder), "n": result["n_images"], "fingerprint": fingerprint},
        "output_dims": result["output_dims"],
        "report": {
            "title": "taskonomy: adversarial transferability among Taskonomy tasks",
            "description": (
                weights_note
                + f"Tasks: {', '.join(tasks)}. Each network's {c.output} output "
                + (f"average-pooled to {c.pool} x {c.pool} cells " if c.pool else "")
                + f"on {result['n_images']} images of {c.image_size} px from {folder}. Every "
                f"network attacked once per image: {c.solver} {c.norm} eps={c.eps} on [0, 1] "
                f"pixels, {c.objective} objective, {c.steps} step(s); entry [i, j] of each "
                "matrix applies the attack crafted on task i to task j"
                + ("; alpha2 and combined squared" if c.convention == "authors" else "")
                + ". Task tree: "
                f"{c.linkage}-linkage clustering on 1 - symmetrised {c.cluster_metric}, drawn "
                f"in `{TREE_FIGURE}`; Newick: `{body_tree['newick']}`." + summary
                + " The paper finds the tree of adversarial transferability close to "
                "Taskonomy's (positive rank correlation with the transfer affinities)."),
            "extra_figures": [[TREE_FIGURE, f"Task tree: {c.linkage}-linkage clustering on "
                                            f"1 - symmetrised {c.cluster_metric}."]],
            "metrics": list(METRICS),
            "outcomes": outcomes,
            "sweep": None,
            "labels": {"alpha1": "alpha1 (attacker -> victim)",
                       "alpha2": "alpha2 (attacker -> victim)",
                       "combined": "combined (attacker -> victim)",
                       "affinity": "affinity [attacker, victim]",
                       "affinity_transposed": "affinity [victim, attacker]"},
            "columns": ["source", *METRICS, "alpha1_above_one", *outcomes],
        },
    }


def _finite(v: float) -> float | None:
    return float(v) if math.isfinite(float(v)) else None


def _rows(m: np.ndarray) -> list[list[float | None]]:
    return [[_finite(v) for v in row] for row in m.tolist()]
