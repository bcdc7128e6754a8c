"""The analysis of a ``taskonomy`` run and its text: the task tree of a finished transfer
matrix (distance, linkage, Newick string, dendrogram figure), the rank correlation of the alpha
matrices with Taskonomy's transfer affinities (Mantel test), the per-pair records and the
report entry.

Every function here works on finished matrices (``mats[metric]``, N x N, entry [i, j]: attack
crafted on task i, applied to task j) and the run's settings; nothing here computes a stored
unit. The recipe, :mod:`advtransfer.experiments.recipes.taskonomy`, measures the matrices and
calls these.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from advtransfer.errors import AdvTransferError
from advtransfer.metrics import Convention
from advtransfer.stats import mantel

__all__ = [
    "METRICS",
    "TREE_FIGURE",
    "TaskonomySettings",
    "affinity_comparison",
    "affinity_correlations",
    "linkage",
    "mantel_summary",
    "newick",
    "pair_records",
    "report",
    "rows",
    "tree_distance",
    "tree_figure",
]

METRICS = ("alpha1", "alpha2", "combined")
TREE_FIGURE = "figures/taskonomy_tree.png"


class TaskonomySettings(Protocol):
    """The settings of a run the analysis reads (the recipe's ``TaskonomyConfig`` has them)."""

    seed: int
    output: str
    weights: str
    pool: int
    image_size: int
    convention: Convention
    cluster_metric: str
    linkage: str
    affinity_csv: str
    mantel_permutations: int
    solver: str
    norm: str
    eps: float
    objective: str
    steps: int | None


def tree_distance(matrix: np.ndarray) -> np.ndarray:
    """d_ij = max(0, 1 - (M_ij + M_ji) / 2) off the diagonal, 0 on it."""
    sym = (matrix + matrix.T) / 2.0
    d = np.clip(1.0 - sym, 0.0, None)
    np.fill_diagonal(d, 0.0)
    return d


def linkage(distance: np.ndarray, method: str) -> np.ndarray:
    """The hierarchical clustering (:func:`scipy.cluster.hierarchy.linkage`, ``method``) of the
    square ``distance`` matrix, NaN distances taken as 1."""
    from scipy.cluster.hierarchy import linkage as scipy_linkage
    from scipy.spatial.distance import squareform

    return scipy_linkage(squareform(np.nan_to_num(distance, nan=1.0), checks=False),
                         method=method)


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


def tree_figure(trees: list[tuple[str, np.ndarray, list[str]]]) -> bytes:
    """A PNG of the dendrograms of ``trees`` ((title, linkage, leaf names) each), side by side."""
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


def affinity_correlations(alpha: dict[str, np.ndarray], affinity: np.ndarray, *,
                          n_permutations: int = 9999, seed: int = 0) -> dict[str, Any]:
    """Spearman's rho between each alpha matrix (rows: attacker S, columns: victim T) and the
    affinity matrix (rows: source S, columns: target T; same task order) over the ordered
    pairs S != T, with its two-sided Mantel p-value (:func:`advtransfer.stats.mantel`)."""
    return {name: mantel(m, affinity, method="spearman", n_permutations=n_permutations,
                         seed=seed).to_dict()
            for name, m in alpha.items()}


def affinity_comparison(c: TaskonomySettings, tasks: list[str], mats: dict[str, np.ndarray],
                        affinity_tasks: list[str], affinity_full: np.ndarray
                        ) -> tuple[list[str], np.ndarray | None, dict[str, Any] | None]:
    """(the tasks both the run and the affinity file cover, in the run's order; the affinities
    restricted to them; :func:`affinity_correlations` of the alpha matrices restricted alike),
    the last two None without ``affinity_csv``. Fewer than 3 shared tasks is an error."""
    shared = [t for t in tasks if t in affinity_tasks]
    if not c.affinity_csv:
        return shared, None, None
    if len(shared) < 3:
        raise AdvTransferError(f"{c.affinity_csv} covers only {shared} of the tasks "
                               f"{tasks}; the comparison needs at least 3 shared tasks")
    pos = [affinity_tasks.index(t) for t in shared]
    affinity = affinity_full[np.ix_(pos, pos)]
    run_pos = [tasks.index(t) for t in shared]
    correlations = affinity_correlations(
        {m: v[np.ix_(run_pos, run_pos)] for m, v in mats.items()}, affinity,
        n_permutations=c.mantel_permutations, seed=c.seed)
    return shared, affinity, correlations


def pair_records(tasks: list[str], mats: dict[str, np.ndarray], result: dict[str, Any],
                 shared: list[str], affinity: np.ndarray | None) -> list[dict[str, Any]]:
    """One record per ordered pair of distinct tasks (attacker -> victim): its alphas,
    deviation statistics and, with affinities, affinity[attacker, victim] (None for a task
    the affinity file lacks)."""
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
                else:
                    rec["affinity"] = None
            records.append(rec)
    return records


def mantel_summary(c: TaskonomySettings, correlations: dict[str, Any] | None) -> str:
    """The report's sentence on the Mantel test of ``cluster_metric`` ("" without one)."""
    if correlations is None:
        return ""
    res = correlations[c.cluster_metric]
    kind = (f"exact over all {res['n_permutations']} task permutations" if res["exact"]
            else
            f"{res['n_permutations']} random task permutations, seed {res['seed']}")
    rho = ("undefined" if res["statistic"] is None else
           f"{res['statistic']:.3f}, two-sided Mantel p = {res['p']:.3g} ({kind})")
    return (f" Spearman rho between {c.cluster_metric}[S, T] (attack crafted on S, "
            f"evaluated on T) and affinity[S, T] (transfer from S to T's task) over "
            f"{res['n_pairs']} ordered pairs of {res['n_tasks']} tasks: {rho}. The pairs "
            "share tasks, so they are not independent: the p-value permutes task "
            "labels (Mantel test), and no per-pair correlation table is given; every "
            "metric's test is in results.json (affinity_correlation).")


def report(c: TaskonomySettings, tasks: list[str], folder: Path, n_images: int,
           body_tree: dict[str, Any], correlations: dict[str, Any] | None,
           has_affinity: bool) -> dict[str, Any]:
    """The report entry of the results: title, description, metrics, labels, columns."""
    weights_note = (
        "RANDOM-WEIGHT networks (weights='random'): this run checks the pipeline; its numbers "
        "say nothing about the tasks. " if c.weights == "random" else
        "Pretrained visualpriors weights. ")
    return {
        "title": "taskonomy: adversarial transferability among Taskonomy tasks",
        "description": (
            weights_note
            + f"Tasks: {', '.join(tasks)}. Each network's full-resolution {c.output} "
            f"output on {n_images} images of {c.image_size} px from {folder}. "
            f"Every network attacked once per image on its full output: {c.solver} "
            f"{c.norm} eps={c.eps} on [0, 1] pixels, {c.objective} objective, {c.steps} "
            "step(s); entry [i, j] of each matrix applies the attack crafted on task i to "
            "task j. alpha1 compares full-resolution deviation norms"
            + (f"; alpha2 and combined use the deviations average-pooled to {c.pool} x "
               f"{c.pool} cells" if c.pool else "; alpha2 and combined the full deviations")
            + ("; alpha2 and combined squared" if c.convention == "authors" else "")
            + ". Task tree: "
            f"{c.linkage}-linkage clustering on 1 - symmetrised {c.cluster_metric}, drawn "
            f"in `{TREE_FIGURE}`; Newick: `{body_tree['newick']}`."
            + mantel_summary(c, correlations)
            + " The paper finds the tree of adversarial transferability close to "
            "Taskonomy's (positive rank correlation with the transfer affinities)."),
        "extra_figures": [[TREE_FIGURE, f"Task tree: {c.linkage}-linkage clustering on "
                                        f"1 - symmetrised {c.cluster_metric}."]],
        "metrics": list(METRICS),
        "outcomes": [],
        "sweep": None,
        "labels": {"alpha1": "alpha1 (attacker -> victim)",
                   "alpha2": "alpha2 (attacker -> victim)",
                   "combined": "combined (attacker -> victim)",
                   "affinity": "affinity [attacker -> victim]"},
        "columns": ["source", *METRICS, "alpha1_above_one",
                    *(["affinity"] if has_affinity else [])],
    }


def _finite(v: float) -> float | None:
    """``v`` as a float, None when it is not finite (NaN or infinite)."""
    return float(v) if math.isfinite(float(v)) else None


def rows(m: np.ndarray) -> list[list[float | None]]:
    """The rows of ``m`` as lists of floats, None for every non-finite entry."""
    return [[_finite(v) for v in row] for row in m.tolist()]
