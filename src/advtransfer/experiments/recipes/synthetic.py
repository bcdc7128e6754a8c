"""``synthetic``: the paper's synthetic experiment, with the exact first-order quantities.

Default (``data = "generated"``). Data: a regression task from a random RBF mixture,
x ~ N(0, I_n) (n = 50), y = A phi(x) with phi_c(x) = exp(-||x - mu_c||^2 / (2 n)) for 10 centres
mu_c ~ N(0, I_n) and A ~ N(0, 1) (d = 10 outputs), each output standardised to zero mean and unit
variance (without that the RBF features are nearly constant in 50 dimensions and y is mostly its
mean), 5000 samples. Target f_T: a two-layer sigmoid network f(x) = W2 sigmoid(W1 x + b1) + b2
(hidden width 100) trained on the data. Sources: f_T with every parameter tensor P replaced by
P + scale * rms(P) * xi, xi ~ N(0, 1), for scale in 0, 0.1, ..., 0.9 (``repeats`` draws each).
For each source: first-order alpha1, alpha2 and combined in both directions
(:func:`advtransfer.theory.first_order_transferability`), the gradient-matching distance
(:func:`advtransfer.theory.gradient_matching_distance`), and the transfer loss: the RMSE on
held-out data after refitting the source's last layer (W2, b2) by least squares.
The paper predicts: as the scale grows, alpha falls, the gradient-matching distance and the
transfer RMSE rise.

``data = "paper"``: the authors' sweep (synthetic-exp/main_exp.py and transferability.py of
their repository), on their data set and trained networks (shipped with the package, MIT licence,
see ``advtransfer/data/files/paper_synthetic/ATTRIBUTION.md``). It reproduces their six
published results files (target width 100; sources of width 100, 50, 200; attack levels 0, 1)
to about 1e-6 relative.

* Data: their 5000 samples, all of them used for every quantity (no held-out split).
* Target f_T: their trained network of width ``hidden`` (100 in the paper).
* Sources: for each width m in ``source_widths``, their trained network of width m (for
  m = ``hidden`` the target itself) plus deviations xi_P ~ U[-0.5, 0.5] of W1, b1, W2, b2,
  drawn once from torch seed 233 after the random initialisations their script draws first.
  Their loop adds s * xi at every scale s in turn, so the source at scale s_i carries the
  cumulative (s_0 + ... + s_i) * xi (4.5 xi at 0.9 for the default scales), in float32.
* Attack level k (``attack_levels``): each model attacks along its (k+1)-th right singular
  vector; the victim's reference stays its own optimal attack, so
  alpha1(x) = ||J_B v_{k+1}(J_A)|| / sigma_1(J_B) (``attack_level`` of
  :func:`advtransfer.theory.first_order_transferability`).
* Columns, as the authors name them: ``alpha_S_T`` (alpha1 of the attack crafted on f_S and
  applied to f_T, the library's ``s2t``: mean of the unsquared per-sample ratios),
  ``gamma_S_T`` (alpha2 = ||E[u_S u_T^T]||_F, unsquared), ``alpha_gamma_combined_S_T``
  (||E[alpha1(x) u_S u_T^T]||_F, unsquared), the same ``_T_S``; ``gradient_loss``
  = min_A sqrt(E_x ||J_T - A J_S||_F^2); ``loss_f_S`` = sqrt(mean_i ||g(h_S(x_i)) - y_i||^2)
  after refitting the source's W2, b2 by least squares on all the data; ``loss_f_T`` = the same
  for f_T as trained. Every run's records name the file the authors' script writes for it
  (``authors_file``).
* Draw order (``draw_order``): their main_exp.py initialises a network of the target's width and
  one of the source's width before drawing xi (``"script"``). The published width-100 level-0
  file was made with the target's initialisation alone (an earlier version of the script that
  built no separate clean source): ``"published"`` (default) uses that order for the same-width
  level-0 run, and reproduces all six files; ``"script"`` reproduces the other five and differs
  from that one by up to 89%.
* Differences: everything is computed in float64 from the float32 weights (the authors compute
  in float32); the one visible effect is gradient_loss at scale 0, float32 noise (8.5e-6) in
  their file and about 1e-8 here. ``seed``, ``epochs``, ``lr``, ``test_fraction``, ``repeats``
  and ``n_metric`` do not apply.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Any

import numpy as np
import torch
from torch import nn

from advtransfer.errors import AdvTransferError
from advtransfer.experiments.registry import RunContext, register
from advtransfer.experiments.stages import alpha_labels
from advtransfer.knowledge import knowledge_transfer
from advtransfer.methods import method_label
from advtransfer.models.architectures import two_layer_sigmoid
from advtransfer.theory import first_order_transferability, gradient_matching_distance
from advtransfer.training import evaluate, fit
from advtransfer.units import UnitConfig

PAPER_FILES = "data/files/paper_synthetic"
PAPER_WIDTHS = (50, 100, 200)
PAPER_OUTPUTS = 10
PAPER_SEED = 233
#: The columns of the authors' results files after ``scale``, in their order, with labels.
PAPER_LABELS = {
    "alpha_S_T": method_label("alpha1_s2t"), "alpha_T_S": method_label("alpha1_t2s"),
    "gamma_S_T": method_label("alpha2_s2t"), "gamma_T_S": method_label("alpha2_t2s"),
    "alpha_gamma_combined_S_T": method_label("combined_s2t"),
    "alpha_gamma_combined_T_S": method_label("combined_t2s"),
    "loss_f_S": "transfer RMSE (f_S, last layer refitted)", "loss_f_T": "target RMSE (f_T)",
    "gradient_loss": "gradient-matching distance"}


@dataclass
class SyntheticConfig:
    seed: int = 0
    data: str = "generated"
    n_samples: int = 5000
    input_dim: int = 50
    output_dim: int = 10
    n_centers: int = 10
    hidden: int = 100
    epochs: int = 300
    lr: float = 0.01
    test_fraction: float = 0.2
    scales: list[float] = field(default_factory=lambda: [round(0.1 * i, 1) for i in range(10)])
    repeats: int = 1
    n_metric: int = 1000
    # data = "paper" only:
    source_widths: list[int] = field(default_factory=lambda: [100, 50, 200])
    attack_levels: list[int] = field(default_factory=lambda: [0, 1])
    draw_order: str = "published"


@dataclass(frozen=True, kw_only=True)
class SyntheticTargetUnit(UnitConfig, kind="synthetic-target"):
    """The target f_T of a ``data = "generated"`` run (a stored model): a two-layer sigmoid
    network R^``input_dim`` -> R^``output_dim`` of width ``hidden``, initialised from the
    unit's seed and trained (``optimizer``, ``epochs``, learning rate ``lr``, batches of
    ``batch_size``, MSE) on the training split of the RBF mixture (:func:`rbf_mixture`:
    ``n_samples`` samples, ``n_centers`` centres, drawn from ``data_seed``, the recipe's
    ``seed``; the first floor(``test_fraction`` * n) samples of a permutation seeded by
    ``data_seed`` held out)."""

    n_samples: int
    input_dim: int
    output_dim: int
    n_centers: int
    hidden: int
    epochs: int
    lr: float
    data_seed: int
    test_fraction: float
    optimizer: str = "adam"
    batch_size: int = 256


@dataclass(frozen=True, kw_only=True)
class SyntheticSourceUnit(UnitConfig, kind="synthetic-source"):
    """One source of a ``data = "generated"`` run (a record): the stored target ``target``
    (its key) with every parameter tensor P replaced by P + ``scale`` * rms(P) * xi,
    xi ~ N(0, 1) drawn from the unit's ``"perturb"`` seed (``repeat`` numbers the draws at one
    scale); its exact first-order alphas and gradient-matching distance on the first
    ``n_metric`` held-out inputs, and its transfer RMSE (last layer refitted on the training
    split of the target's ``n_samples`` samples, ``test_fraction`` held out)."""

    target: str
    scale: float
    repeat: int
    n_metric: int
    test_fraction: float
    n_samples: int


@dataclass(frozen=True, kw_only=True)
class SyntheticPaperSourceUnit(UnitConfig, kind="synthetic-paper-source"):
    """One source of a ``data = "paper"`` run (a record of the authors' columns): their trained
    network of width ``source_hidden`` plus (sum of ``scales``) * xi, xi ~ U[-0.5, 0.5] drawn
    from torch seed 233 after initialising networks of widths ``init_widths``
    (:func:`paper_deviations`, :func:`paper_source`), measured against their trained target
    of width ``target_hidden`` at ``attack_level`` on their first ``n_samples`` samples."""

    target_hidden: int
    source_hidden: int
    attack_level: int
    init_widths: tuple[int, ...]
    scales: tuple[float, ...]
    n_samples: int


def quick(config: SyntheticConfig) -> SyntheticConfig:
    return replace(config, n_samples=400, epochs=5, hidden=20, scales=[0.0, 0.3, 0.6, 0.9],
                   n_metric=100)


def rbf_mixture(n_samples: int, input_dim: int, output_dim: int, n_centers: int,
                seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(X, Y) in float64 from the random RBF mixture of the module docstring."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_samples, input_dim))
    centres = rng.standard_normal((n_centers, input_dim))
    a = rng.standard_normal((output_dim, n_centers))
    sq = ((x[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
    phi = np.exp(-sq / (2.0 * input_dim))
    y = phi @ a.T
    y = (y - y.mean(axis=0)) / y.std(axis=0)
    return torch.from_numpy(x), torch.from_numpy(y)


def paper_net(hidden: int) -> nn.Module:
    """The authors' trained network of hidden width ``hidden`` (50, 100 or 200) with their
    float32 weights, in eval mode."""
    if hidden not in PAPER_WIDTHS:
        raise AdvTransferError(f"data='paper' ships networks of hidden width 50, 100 and 200; "
                               f"got {hidden} (--quick sets hidden=20: add --set hidden=100)")
    root = resources.files("advtransfer").joinpath(PAPER_FILES)
    with root.joinpath(f"target-m-{hidden}.npz").open("rb") as fh:
        w = np.load(fh)
        model = two_layer_sigmoid(w["W1"].shape[1], hidden, w["W2"].shape[0])
        with torch.no_grad():
            for p, key in zip(model.parameters(), ("W1", "b1", "W2", "b2"), strict=True):
                p.copy_(torch.from_numpy(w[key]).reshape(p.shape))
    return model.eval()


def paper_data() -> tuple[torch.Tensor, torch.Tensor]:
    """The authors' data set (X 5000 x 50, Y 5000 x 10, one sample per row) in float64 holding
    the float32 values their scripts use (``torch.Tensor`` of the stored float64 arrays)."""
    root = resources.files("advtransfer").joinpath(PAPER_FILES)
    with root.joinpath("rbf-n-50-d-10-N-5000-num_centers-10.npz").open("rb") as fh:
        z = np.load(fh)
        x, y = (torch.from_numpy(z[k].T.copy()).float().double() for k in ("X", "Y"))
    return x, y


def paper_deviations(source: nn.Module, init_widths: Sequence[int]) -> list[torch.Tensor]:
    """The authors' deviations xi ~ U[-0.5, 0.5] (float32) of W1, b1, W2, b2 of ``source``.

    They come from one torch stream seeded 233 after the random initialisations of the networks
    of hidden widths ``init_widths`` that the authors' script builds first (each draws W1 (m, n),
    b1 (m, 1), W2 (d, m), b2 (d, 1) from the same stream).
    """
    n_in, n_out = source[0].in_features, source[2].out_features
    g = torch.Generator().manual_seed(PAPER_SEED)
    for m in init_widths:
        for shape in ((m, n_in), (m, 1), (n_out, m), (n_out, 1)):
            torch.rand(shape, generator=g, dtype=torch.float32)
    return [torch.rand(p.shape, generator=g, dtype=torch.float32) - 0.5
            for p in source.parameters()]


def paper_source(source: nn.Module, deviations: Sequence[torch.Tensor],
                 scales: Sequence[float]) -> nn.Module:
    """f_S after the authors' loop over ``scales``: P <- P + s * xi for each s in turn, in
    float32 (so P carries (sum of scales) * xi), returned in float64 for the measurements."""
    out = copy.deepcopy(source)
    with torch.no_grad():
        for s in scales:
            for p, xi in zip(out.parameters(), deviations, strict=True):
                p += s * xi
    return out.double().eval()


def paper_init_widths(target_hidden: int, source_hidden: int, attack_level: int,
                      draw_order: str) -> tuple[int, ...]:
    """Widths of the networks initialised before the deviations are drawn (see the module
    docstring): the target's and the clean source's, as main_exp.py does (``"script"``), except
    for the same-width optimal attack under ``"published"``, whose published file was made with
    the target's alone."""
    if draw_order == "published" and source_hidden == target_hidden and attack_level == 0:
        return (target_hidden,)
    return (target_hidden, source_hidden)


def authors_file(target_hidden: int, source_hidden: int, attack_level: int, n: int) -> str:
    """The name of the results file the authors' main_exp.py writes for this run."""
    handle = f"rbf-n-50-d-10-m-{target_hidden}-N-{n}-attack_level-{attack_level}.csv"
    if source_hidden != target_hidden:
        return f"result_scale-crossmodel-source_m-{source_hidden}-{handle}"
    return f"result_scale-{handle}"


def rmse(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """sqrt(mean_i ||f(x_i) - y_i||^2), the authors' loss_f_T for f = f_T."""
    return math.sqrt(evaluate(model, (x, y), task="regression").loss * y.shape[1])


def paper_measure(source: nn.Module, target: nn.Module, x: torch.Tensor, y: torch.Tensor,
                  attack_level: int) -> dict[str, float]:
    """The authors' columns for one source, on all of (x, y) (their main_exp.py/
    transferability.py quantities, computed exactly in float64)."""
    fo = first_order_transferability(source, target, x, attack_level=attack_level)
    s2t, t2s = fo.source_to_target, fo.target_to_source
    gm = gradient_matching_distance(source, target, x)
    kt = knowledge_transfer(source, (x, y), (x, y), task="regression", features="penultimate")
    return {"alpha_S_T": s2t.alpha1, "alpha_T_S": t2s.alpha1,
            "gamma_S_T": s2t.alpha2, "gamma_T_S": t2s.alpha2,
            "alpha_gamma_combined_S_T": s2t.combined, "alpha_gamma_combined_T_S": t2s.combined,
            "loss_f_S": kt.test_rmse, "gradient_loss": gm.distance}


def perturbed(model: nn.Module, scale: float, seed: int) -> nn.Module:
    """A copy of ``model`` with P + scale * rms(P) * xi on every parameter tensor."""
    out = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in out.parameters():
            rms = p.pow(2).mean().sqrt()
            p.add_(scale * rms * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return out.eval()


def _split(n: int, c: SyntheticConfig) -> tuple[torch.Tensor, torch.Tensor]:
    perm = torch.from_numpy(np.random.default_rng(c.seed).permutation(n))
    n_test = max(1, math.floor(c.test_fraction * n))
    return perm[n_test:], perm[:n_test]


@register("synthetic", SyntheticConfig,
          "The paper's synthetic experiment: perturbed two-layer sigmoid networks, exact "
          "first-order alpha, gradient matching and transfer RMSE against the scale; "
          "data=\"paper\" reruns the authors' sweep.", quick, check=lambda c: _check(c))
def run(c: SyntheticConfig, ctx: RunContext) -> dict[str, Any]:
    _check(c)
    return _run_paper(c, ctx) if c.data == "paper" else _run_generated(c, ctx)


def _check(c: SyntheticConfig) -> None:
    """Every configuration error, before anything is written."""
    if c.data not in ("generated", "paper"):
        raise AdvTransferError(f"data must be 'generated' or 'paper'; got {c.data!r}")
    if c.data == "paper":
        _check_paper(c, len(paper_data()[0]))
    elif not 0 < c.test_fraction < 1:
        raise AdvTransferError(f"test_fraction must lie in (0, 1); got {c.test_fraction}")


def _run_generated(c: SyntheticConfig, ctx: RunContext) -> dict[str, Any]:
    """The ``data = "generated"`` run: the target trained on the RBF mixture, then one stored
    unit per source (scale, repeat) run through ``ctx.map``."""
    x, y = rbf_mixture(c.n_samples, c.input_dim, c.output_dim, c.n_centers, c.seed)
    train, test = _split(len(x), c)
    x_tr, y_tr, x_te, y_te = x[train], y[train], x[test], y[test]
    target, target_key = _generated_target(c, ctx, x_tr, y_tr)
    mse = evaluate(target, (x_te, y_te), task="regression").loss
    target_rmse = math.sqrt(mse * y.shape[1])
    target_r2 = 1.0 - mse / float(y_te.var(dim=0, unbiased=False).mean())
    x_metric = x_te[: c.n_metric]
    items = [(scale, rep) for scale in c.scales for rep in range(c.repeats)]
    records = ctx.map(functools.partial(
        _generated_source, c=c, target=target, target_key=target_key, x_metric=x_metric,
        train=(x_tr, y_tr), test=(x_te, y_te)), items)
    return {
        "records": records,
        "target": {"test_rmse": target_rmse, "test_r2": target_r2, "hidden": c.hidden,
                   "data": c.data},
        "report": _generated_report(c, target_rmse, len(x_metric)),
    }


def _generated_target(c: SyntheticConfig, ctx: RunContext, x_tr: torch.Tensor,
                      y_tr: torch.Tensor) -> tuple[nn.Module, str]:
    """The target f_T (a stored model unit): a seeded two-layer sigmoid network of width
    ``hidden`` trained by Adam on the training split; (model, unit key)."""
    unit = SyntheticTargetUnit(
        n_samples=c.n_samples, input_dim=c.input_dim, output_dim=c.output_dim,
        n_centers=c.n_centers, hidden=c.hidden, epochs=c.epochs, lr=c.lr, data_seed=c.seed,
        test_fraction=c.test_fraction)
    seed = unit.seed

    def build() -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return two_layer_sigmoid(c.input_dim, c.hidden, c.output_dim).double()

    target = ctx.store.model(
        unit, build,
        lambda m: fit(m, (x_tr, y_tr), task="regression", epochs=unit.epochs, lr=unit.lr,
                      optimizer=unit.optimizer,  # type: ignore[arg-type]
                      batch_size=unit.batch_size, seed=seed, progress=ctx.progress,
                      description="training the target"))
    return target, unit.key


def _generated_source(item: tuple[float, int], ctx: RunContext, *, c: SyntheticConfig,
                      target: nn.Module, target_key: str, x_metric: torch.Tensor,
                      train: tuple[torch.Tensor, torch.Tensor],
                      test: tuple[torch.Tensor, torch.Tensor]) -> dict[str, Any]:
    """One source (scale, repeat), a stored record unit: f_T perturbed (:func:`perturbed`,
    seeded by the unit), its exact first-order alphas both ways and gradient-matching
    distance on ``x_metric``, and its transfer RMSE (last layer refitted); its record."""
    scale, rep = item
    unit = SyntheticSourceUnit(target=target_key, scale=float(scale), repeat=rep,
                               n_metric=len(x_metric), test_fraction=c.test_fraction,
                               n_samples=c.n_samples)

    def compute() -> dict:
        source = perturbed(target, scale, unit.seed_for("perturb"))
        fo = first_order_transferability(source, target, x_metric)
        gm = gradient_matching_distance(source, target, x_metric)
        kt = knowledge_transfer(source, train, test, task="regression",
                                features="penultimate")
        out: dict[str, Any] = {}
        for tag, d in (("s2t", fo.source_to_target), ("t2s", fo.target_to_source)):
            out.update({f"alpha1_{tag}": d.alpha1, f"alpha2_{tag}": d.alpha2,
                        f"combined_{tag}": d.combined})
        out.update(gradient_matching_distance=gm.distance,
                   relative_gradient_matching=gm.relative_distance,
                   transfer_rmse=kt.test_rmse, transfer_loss=kt.test_loss)
        return out

    result = ctx.store.record(unit, compute)
    name = f"{scale:g}" + (f"#{rep}" if c.repeats > 1 else "")
    return {"source": name, "scale": scale, "repeat": rep, **result}


def _generated_report(c: SyntheticConfig, target_rmse: float, n_metric: int) -> dict[str, Any]:
    """The report entry of a ``data = "generated"`` run."""
    metrics = ["alpha1_s2t", "alpha2_s2t", "combined_s2t", "alpha1_t2s", "alpha2_t2s",
               "combined_t2s", "gradient_matching_distance"]
    return {
        "title": "synthetic: perturbed two-layer sigmoid networks (first-order, exact)",
        "description": (
            f"Target: two-layer sigmoid network (hidden {c.hidden}) on a generated "
            f"RBF-mixture regression task ({c.n_samples} samples; target test RMSE "
            f"{target_rmse:.4f}). Sources: the target with relative Gaussian weight noise of "
            f"scale {c.scales}. alpha values are exact first-order quantities on "
            f"{n_metric} test inputs; transfer RMSE after refitting the source's last "
            "layer by least squares. The paper predicts alpha falling and gradient-matching "
            "distance and transfer RMSE rising with the scale."),
        "metrics": metrics,
        "outcomes": ["transfer_rmse"],
        "sweep": "scale",
        "labels": {**alpha_labels("icml"), "scale": "weight-noise scale",
                   "gradient_matching_distance": "gradient-matching distance",
                   "transfer_rmse": "transfer RMSE"},
        "columns": ["source", "scale", *metrics, "transfer_rmse"],
    }


def _check_paper(c: SyntheticConfig, n_available: int) -> None:
    if c.draw_order not in ("published", "script"):
        raise AdvTransferError(f"draw_order must be 'published' or 'script'; "
                               f"got {c.draw_order!r}")
    bad = [m for m in c.source_widths if m not in PAPER_WIDTHS]
    if bad or not c.source_widths:
        raise AdvTransferError(f"source_widths must be a non-empty list of 50, 100 and 200 (the "
                               f"authors' trained widths); got {c.source_widths}")
    if not c.attack_levels or any(isinstance(k, bool) or not isinstance(k, int)
                                  or not 0 <= k < PAPER_OUTPUTS for k in c.attack_levels):
        raise AdvTransferError(f"attack_levels must be a non-empty list of integers in "
                               f"[0, {PAPER_OUTPUTS - 1}]; got {c.attack_levels}")
    if not 1 <= c.n_samples <= n_available:
        raise AdvTransferError(f"n_samples must lie in [1, {n_available}] with data='paper'; "
                               f"got {c.n_samples}")


def _run_paper(c: SyntheticConfig, ctx: RunContext) -> dict[str, Any]:
    x, y = paper_data()
    _check_paper(c, len(x))
    target = paper_net(c.hidden).double()
    x, y = x[: c.n_samples], y[: c.n_samples]
    loss_f_t = rmse(target, x, y)
    records = []
    for m in c.source_widths:
        clean = paper_net(m)
        for level in c.attack_levels:
            records += _paper_run(c, ctx, target, clean, x, y, m, level, loss_f_t)
    return {
        "records": records,
        "target": {"rmse": loss_f_t, "hidden": c.hidden, "data": c.data},
        "report": _paper_report(c, loss_f_t, len(x)),
    }


def _paper_run(c: SyntheticConfig, ctx: RunContext, target: nn.Module, clean: nn.Module,
               x: torch.Tensor, y: torch.Tensor, m: int, level: int,
               loss_f_t: float) -> list[dict[str, Any]]:
    """The records of one run of the authors' sweep (source width ``m`` from the network
    ``clean``, attack level ``level``): one stored unit per scale."""
    widths = paper_init_widths(c.hidden, m, level, c.draw_order)
    deviations = paper_deviations(clean, widths)
    records = []
    for step, scale in enumerate(c.scales):
        unit = SyntheticPaperSourceUnit(
            target_hidden=c.hidden, source_hidden=m, attack_level=level,
            init_widths=tuple(widths), scales=tuple(float(s) for s in c.scales[: step + 1]),
            n_samples=c.n_samples)

        def compute(step: int = step) -> dict:
            source = paper_source(clean, deviations, c.scales[: step + 1])
            return paper_measure(source, target, x, y, level)

        result = {**ctx.store.record(unit, compute), "loss_f_T": loss_f_t}
        records.append({
            "source": f"m{m}/level{level}/{scale:g}", "source_hidden": m,
            "attack_level": level, "run": f"width {m}, attack level {level}",
            "authors_file": authors_file(c.hidden, m, level, len(x)),
            "scale": scale, **{k: result[k] for k in PAPER_LABELS}})
    return records


def _paper_report(c: SyntheticConfig, loss_f_t: float, n: int) -> dict[str, Any]:
    """The report entry of a ``data = "paper"`` run (``n`` samples)."""
    metrics = [k for k in PAPER_LABELS if k not in ("loss_f_S", "loss_f_T")]
    return {
        "title": "synthetic (data=\"paper\"): the authors' sweep of perturbed sigmoid networks",
        "description": (
            f"The authors' protocol (synthetic-exp/main_exp.py): their trained target "
            f"(hidden {c.hidden}, RMSE {loss_f_t:.4f} on their data) and sources made from "
            f"their trained networks of widths {c.source_widths} by cumulative U[-0.5, 0.5] "
            f"weight deviations (torch seed 233, draw order {c.draw_order!r}) over the scales "
            f"{c.scales}, attack levels {c.attack_levels} (0: the optimal attack, k: the "
            f"(k+1)-th singular direction). All {n} samples serve for the exact "
            "first-order alphas, the gradient-matching distance and the refit of the "
            "source's last layer (loss_f_S, RMSE). The records pool every run (source width x "
            "attack level), so the pooled correlations mix runs; the within-run analysis "
            "is the one the paper's per-file curves correspond to. results.csv has the "
            "authors' columns, one run per value of authors_file, to compare with their "
            "published files."),
        "metrics": metrics,
        "outcomes": ["loss_f_S"],
        "sweep": "scale",
        "groups": "run",
        "labels": {"scale": "weight-deviation scale", "run": "run", **PAPER_LABELS},
        "columns": ["source", "scale", *metrics, "loss_f_S"],
    }
