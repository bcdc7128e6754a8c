"""``synthetic``: the paper's synthetic experiment, with the exact first-order quantities.

Data: a regression task from a random RBF mixture, x ~ N(0, I_n) (n = 50),
y = A phi(x) with phi_c(x) = exp(-||x - mu_c||^2 / (2 n)) for 10 centres mu_c ~ N(0, I_n) and
A ~ N(0, 1) (d = 10 outputs), each output standardised to zero mean and unit variance (without
that the RBF features are nearly constant in 50 dimensions and y is mostly its mean), 5000
samples; or (``data = "paper"``) the authors' own data set and
trained target networks (shipped with the package, MIT licence, see
``advtransfer/data/files/paper_synthetic/ATTRIBUTION.md``).

Target f_T: a two-layer sigmoid network f(x) = W2 sigmoid(W1 x + b1) + b2 (hidden width 100)
trained on the data. Sources: f_T with every parameter tensor P replaced by
P + scale * rms(P) * xi, xi ~ N(0, 1), for scale in 0, 0.1, ..., 0.9 (``repeats`` draws each).
For each source: first-order alpha1, alpha2 and combined in both directions
(:func:`advtransfer.theory.first_order_transferability`), the gradient-matching distance
(:func:`advtransfer.theory.gradient_matching_distance`), and the transfer loss: the RMSE on
held-out data after refitting the source's last layer (W2, b2) by least squares.
The paper predicts: as the scale grows, alpha falls, the gradient-matching distance and the
transfer RMSE rise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Any

import numpy as np
import torch
from torch import nn

from advtransfer.errors import AdvTransferError
from advtransfer.experiments.registry import RunContext, register
from advtransfer.experiments.stages import ALPHA_LABELS
from advtransfer.knowledge import knowledge_transfer
from advtransfer.models.architectures import two_layer_sigmoid
from advtransfer.theory import first_order_transferability, gradient_matching_distance
from advtransfer.training import evaluate, fit

PAPER_FILES = "data/files/paper_synthetic"


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


def paper_data(hidden: int) -> tuple[torch.Tensor, torch.Tensor, nn.Module]:
    """The authors' data (one sample per row) and their trained target of width ``hidden``."""
    if hidden not in (50, 100, 200):
        raise AdvTransferError(f"data='paper' ships targets of hidden width 50, 100 and 200; "
                               f"got hidden={hidden}")
    root = resources.files("advtransfer").joinpath(PAPER_FILES)
    with root.joinpath("rbf-n-50-d-10-N-5000-num_centers-10.npz").open("rb") as fh:
        z = np.load(fh)
        x, y = torch.from_numpy(z["X"].T.copy()), torch.from_numpy(z["Y"].T.copy())
    with root.joinpath(f"target-m-{hidden}.npz").open("rb") as fh:
        w = np.load(fh)
        model = two_layer_sigmoid(x.shape[1], hidden, y.shape[1]).double()
        with torch.no_grad():
            model[0].weight.copy_(torch.from_numpy(w["W1"]))
            model[0].bias.copy_(torch.from_numpy(w["b1"]).reshape(-1))
            model[2].weight.copy_(torch.from_numpy(w["W2"]))
            model[2].bias.copy_(torch.from_numpy(w["b2"]).reshape(-1))
    return x, y, model.eval()


def perturbed(model: nn.Module, scale: float, seed: int) -> nn.Module:
    """A copy of ``model`` with P + scale * rms(P) * xi on every parameter tensor."""
    import copy

    out = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in out.parameters():
            rms = p.pow(2).mean().sqrt()
            p.add_(scale * rms * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return out.eval()


@register("synthetic", SyntheticConfig,
          "The paper's synthetic experiment: perturbed two-layer sigmoid networks, exact "
          "first-order alpha, gradient matching and transfer RMSE against the scale.", quick)
def run(c: SyntheticConfig, ctx: RunContext) -> dict[str, Any]:
    if c.data not in ("generated", "paper"):
        raise AdvTransferError(f"data must be 'generated' or 'paper'; got {c.data!r}")
    if not 0 < c.test_fraction < 1:
        raise AdvTransferError(f"test_fraction must lie in (0, 1); got {c.test_fraction}")
    if c.data == "paper":
        x, y, target = paper_data(c.hidden)
        x, y = x[: c.n_samples], y[: c.n_samples]
    else:
        x, y = rbf_mixture(c.n_samples, c.input_dim, c.output_dim, c.n_centers, c.seed)
        target = None
    perm = torch.from_numpy(np.random.default_rng(c.seed).permutation(len(x)))
    n_test = max(1, math.floor(c.test_fraction * len(x)))
    test, train = perm[:n_test], perm[n_test:]
    x_tr, y_tr, x_te, y_te = x[train], y[train], x[test], y[test]

    if target is None:
        unit = {"data": "generated", "n": c.n_samples, "dims": [c.input_dim, c.output_dim],
                "centers": c.n_centers, "hidden": c.hidden, "epochs": c.epochs, "lr": c.lr,
                "seed": c.seed, "test_fraction": c.test_fraction}
        seed = ctx.seed_for("synthetic-target", unit)

        def build() -> nn.Module:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return two_layer_sigmoid(c.input_dim, c.hidden, c.output_dim).double()

        target = ctx.store.model(
            "synthetic-target", unit, build,
            lambda m: fit(m, (x_tr, y_tr), task="regression", epochs=c.epochs, lr=c.lr,
                          optimizer="adam", batch_size=256, seed=seed, progress=ctx.progress,
                          description="training the target"))
        target_key = unit
    else:
        target_key = {"data": "paper", "hidden": c.hidden}
    mse = evaluate(target, (x_te, y_te), task="regression").loss
    target_rmse = math.sqrt(mse * y.shape[1])
    target_r2 = 1.0 - mse / float(y_te.var(dim=0, unbiased=False).mean())
    x_metric = x_te[: c.n_metric]
    records = []
    for scale in c.scales:
        for rep in range(c.repeats):
            unit = {"target": target_key, "scale": scale, "repeat": rep,
                    "n_metric": len(x_metric), "test_fraction": c.test_fraction,
                    "n": c.n_samples}

            def compute(scale: float = scale, rep: int = rep, unit: dict = unit) -> dict:
                source = perturbed(target, scale, ctx.seed_for("perturb", unit))
                fo = first_order_transferability(source, target, x_metric)
                gm = gradient_matching_distance(source, target, x_metric)
                kt = knowledge_transfer(source, (x_tr, y_tr), (x_te, y_te), task="regression",
                                        features="penultimate")
                out: dict[str, Any] = {}
                for tag, d in (("s2t", fo.source_to_target), ("t2s", fo.target_to_source)):
                    out.update({f"alpha1_{tag}": d.alpha1, f"alpha2_{tag}": d.alpha2,
                                f"combined_{tag}": d.combined})
                out.update(gradient_matching_distance=gm.distance,
                           relative_gradient_matching=gm.relative_distance,
                           transfer_rmse=kt.test_rmse, transfer_loss=kt.test_loss)
                return out

            result = ctx.store.record("synthetic-source", unit, compute)
            name = f"{scale:g}" + (f"#{rep}" if c.repeats > 1 else "")
            records.append({"source": name, "scale": scale, "repeat": rep, **result})
    metrics = ["alpha1_s2t", "alpha2_s2t", "combined_s2t", "alpha1_t2s", "alpha2_t2s",
               "combined_t2s", "gradient_matching_distance"]
    return {
        "records": records,
        "target": {"test_rmse": target_rmse, "test_r2": target_r2, "hidden": c.hidden,
                   "data": c.data},
        "report": {
            "title": "synthetic: perturbed two-layer sigmoid networks (first-order, exact)",
            "description": (
                f"Target: two-layer sigmoid network (hidden {c.hidden}) on "
                f"{'the authors' if c.data == 'paper' else 'a generated'} RBF-mixture regression "
                f"task ({c.n_samples} samples; target test RMSE {target_rmse:.4f}). Sources: the "
                f"target with relative Gaussian weight noise of scale {c.scales}. alpha values "
                f"are exact first-order quantities on {len(x_metric)} test inputs; transfer RMSE "
                "after refitting the source's last layer by least squares. The paper predicts "
                "alpha falling and gradient-matching distance and transfer RMSE rising with the "
                "scale."),
            "metrics": metrics,
            "outcomes": ["transfer_rmse"],
            "sweep": "scale",
            "labels": {**ALPHA_LABELS, "scale": "weight-noise scale",
                       "gradient_matching_distance": "gradient-matching distance",
                       "transfer_rmse": "transfer RMSE"},
            "columns": ["source", "scale", *metrics, "transfer_rmse"],
        },
    }
