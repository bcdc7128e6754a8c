"""Stages shared by the recipes: train a classifier, fine-tune for knowledge transfer and
measure adversarial transferability, each stored as a unit of the results store."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from advtransfer.experiments.registry import RunContext
from advtransfer.knowledge import knowledge_transfer
from advtransfer.metrics import transferability
from advtransfer.store import unit_key
from advtransfer.training import LabelledData, evaluate, fit


def trained_classifier(ctx: RunContext, kind: str, config: dict[str, Any],
                       build: Callable[[], nn.Module], train: LabelledData, *, epochs: int,
                       lr: float, optimizer: str = "adam", batch_size: int = 128,
                       weight_decay: float = 0.0) -> tuple[nn.Module, str]:
    """A classifier trained on ``train`` (or loaded from the store) and its unit key."""
    unit = {**config, "epochs": epochs, "lr": lr, "optimizer": optimizer,
            "batch_size": batch_size, "weight_decay": weight_decay}
    seed = ctx.seed_for(kind, unit)

    def seeded_build() -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build().to(ctx.device)

    def do_train(model: nn.Module) -> nn.Module:
        return fit(model, train, epochs=epochs, lr=lr, optimizer=optimizer,  # type: ignore[arg-type]
                   batch_size=batch_size, weight_decay=weight_decay, seed=seed,
                   device=ctx.device, progress=ctx.progress, description=f"training {kind}")

    model = ctx.store.model(kind, unit, seeded_build, do_train)
    return model, unit_key(kind, unit)


def accuracy(ctx: RunContext, model_key: str, model: nn.Module, data: LabelledData) -> float:
    """Test accuracy of a stored model (itself a stored unit)."""
    return ctx.store.record("accuracy", {"model": model_key},
                            lambda: {"accuracy": evaluate(model, data, device=ctx.device)
                                     .accuracy})["accuracy"]


def transfer(ctx: RunContext, model_key: str, source: nn.Module, train: LabelledData,
             test: LabelledData, **kwargs: Any) -> dict[str, Any]:
    """Knowledge transfer of a stored source model to the target task (stored)."""
    unit = {"source": model_key, **kwargs}
    return ctx.store.record(
        "transfer", unit,
        lambda: knowledge_transfer(source, train, test, device=ctx.device,
                                   seed=ctx.seed_for("transfer", unit), progress=ctx.progress,
                                   **kwargs).to_dict())


def adversarial(ctx: RunContext, source_key: str, target_key: str, source: nn.Module,
                target: nn.Module, x: torch.Tensor, **attack: Any) -> dict[str, Any]:
    """alpha1/alpha2/combined in both directions between two stored models (stored), as flat
    ``alpha1_s2t`` ... ``combined_t2s`` fields plus the attack statistics."""
    unit = {"source": source_key, "target": target_key, "n": len(x), **attack}

    def compute() -> dict[str, Any]:
        r = transferability(source, target, x.to(ctx.device), device=ctx.device,
                            generator=ctx.seed_for("adversarial", unit), progress=ctx.progress,
                            **attack)
        out: dict[str, Any] = {}
        for tag, d in (("s2t", r.source_to_target), ("t2s", r.target_to_source)):
            out.update({f"alpha1_{tag}": d.alpha1, f"alpha2_{tag}": d.alpha2,
                        f"combined_{tag}": d.combined,
                        f"alpha1_above_one_{tag}": d.n_alpha1_above_one})
            out.update({f"{k}_{tag}": v for k, v in asdict(d.stats).items()})
        return out

    return ctx.store.record("adversarial", unit, compute)


ALPHA_LABELS = {
    "alpha1_s2t": "alpha1 (source -> target)", "alpha2_s2t": "alpha2 (source -> target)",
    "combined_s2t": "combined (source -> target)", "alpha1_t2s": "alpha1 (target -> source)",
    "alpha2_t2s": "alpha2 (target -> source)", "combined_t2s": "combined (target -> source)",
}
