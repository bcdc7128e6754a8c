"""Shared fixtures: small random networks with closed-form or exact references."""

from __future__ import annotations

import types
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import nn

from advtransfer import units

# Tiny models run faster on one thread, and a second thread only contends with other work.
torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def _figures_built_but_not_rasterized(request):
    """In the fast tier (``-m "not slow"``), a report's figures are built as always (every
    artist, label and title) but neither laid out nor rasterized: no label placement (which
    runs the constrained layout) and a 1 x 1 placeholder for the PNG. Layout and rasterizing are
    more than half the time of a small recipe run, and they are tested where they are the
    subject: tests/test_report.py restores both (its figures are opened and checked), and the
    second tier (make test-all) lays out and rasterizes every figure of every run."""
    if "not slow" not in (request.config.option.markexpr or ""):
        yield
        return
    import io

    import matplotlib.image

    import advtransfer.report

    buf = io.BytesIO()
    matplotlib.image.imsave(buf, [[[1.0, 1.0, 1.0]]], format="png")
    placeholder = buf.getvalue()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(advtransfer.report, "_png_bytes", lambda fig: placeholder)
        patch.setattr(advtransfer.report, "_declutter_labels", lambda fig, per_axes: None)
        yield


@pytest.fixture(scope="session", autouse=True)
def _builtin_models_trained_once():
    """The tests that use a built-in digits model (``digits-mlp`` ...) share one trained copy per
    (name, seed, epochs) instead of retraining it: ``builtin_model`` trains deterministically
    from its seed alone (its own RNG fork), so the copy is the model a new call would train. Each
    call returns a deep copy, so no test sees another test's changes."""
    import copy

    import advtransfer.models.builtin as builtin

    real = builtin.builtin_model
    trained: dict[tuple[str, int, int], nn.Module] = {}

    def shared(name: str, *, seed: int = 0, epochs: int = 15, train: bool = True,
               progress: bool = False) -> nn.Module:
        if not train:
            return real(name, seed=seed, epochs=epochs, train=False, progress=progress)
        key = (name, seed, epochs)
        if key not in trained:
            trained[key] = real(name, seed=seed, epochs=epochs, progress=progress)
        return copy.deepcopy(trained[key])

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(builtin, "builtin_model", shared)
        yield


def two_layer(seed: int, n: int = 6, hidden: int = 10, k: int = 3,
              act: type[nn.Module] = nn.Sigmoid, dtype: torch.dtype = torch.float64) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(n, hidden), act(), nn.Linear(hidden, k)).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=dtype))
    return model


class TinyCNN(nn.Module):
    def __init__(self, seed: int = 0, k: int = 4) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4 * 8 * 8, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(torch.relu(self.bn(self.conv(x)))).flatten(1))


@pytest.fixture
def x64() -> torch.Tensor:
    return torch.rand(16, 6, generator=torch.Generator().manual_seed(123), dtype=torch.float64)


@pytest.fixture()
def attacks(monkeypatch):
    """Counts the attacks of advtransfer.reference per attacked model name (one call = one
    batch)."""
    import advtransfer.reference

    calls: Counter[str] = Counter()
    original = advtransfer.reference.run_attack

    def counting(model, x, config, generator, *, name="model", y_clean=None):
        calls[name] += 1
        return original(model, x, config, generator, name=name, y_clean=y_clean)

    monkeypatch.setattr(advtransfer.reference, "run_attack", counting)
    return calls


# ------------------------------------------------------------------------------------------------
# A tiny recipe for the tests of the runner, the CLI and the run directory (lock, resume,
# truncated files, progress): the whole machinery (store units, a trained model, the config check,
# progress lines, results and the report with a figure) in a fraction of a second, so that those
# tests need not run a real recipe each. The real recipes run end to end in their own tests.

#: Unit kinds of the tests' own stores (advtransfer.units.KINDS refuses undeclared kinds).
TEST_KINDS = ("k", "m", "r", "unit", "kind", "other", "tiny", "tiny-model")
units.KINDS.update({k: units.UnitKind(k, 1, "a test's unit") for k in TEST_KINDS})


@dataclass(frozen=True, kw_only=True)
class TestUnit(units.UnitConfig):
    """A test unit's configuration: any JSON value."""

    __test__ = False
    config: Any = None


#: One UnitConfig class per test kind.
TEST_UNITS = {k: dataclass(frozen=True, kw_only=True)(
    types.new_class(f"TestUnit_{k}", (TestUnit,), {"kind": k})) for k in TEST_KINDS}


def tunit(kind: str, config: Any = None) -> TestUnit:
    """The unit of the test kind ``kind`` configured by ``config``."""
    return TEST_UNITS[kind](config=config)


@dataclass
class TinyConfig:
    seed: int = 0
    n: int = 3
    mode: str = "linear"


def _check_tiny(c: TinyConfig) -> None:
    from advtransfer.errors import AdvTransferError

    if c.mode not in ("linear", "square"):
        raise AdvTransferError(f"mode must be 'linear' or 'square'; got {c.mode!r}")
    if c.n < 3:
        raise AdvTransferError(f"n must be at least 3; got {c.n}")


def _run_tiny(c: TinyConfig, ctx) -> dict:
    from advtransfer.progress import track

    def train(model: nn.Module) -> nn.Module:
        with torch.no_grad():
            model.weight.fill_(1.0)
            model.bias.fill_(float(c.seed))
        return model

    model = ctx.store.model(tunit("tiny-model", {"seed": c.seed}), lambda: nn.Linear(1, 1), train)
    records = []
    for i in track(range(c.n), description="tiny units", enabled=ctx.progress):
        def compute(i: int = i) -> dict:
            score = float(model(torch.tensor([[float(i)]])).item())
            return {"source": f"s{i}", "score": score,
                    "outcome": score if c.mode == "linear" else score ** 2}
        records.append(ctx.store.record(
            tunit("tiny", {"i": i, "seed": c.seed, "mode": c.mode}), compute))
    return {"records": records,
            "report": {"title": "tiny", "metrics": ["score"], "outcomes": ["outcome"]}}


@pytest.fixture
def tiny(monkeypatch) -> list[str]:
    """Registers the recipe ``tiny`` and returns the CLI arguments that run it quietly."""
    from advtransfer.experiments.registry import REGISTRY, Recipe

    monkeypatch.setitem(REGISTRY, "tiny", Recipe("tiny", TinyConfig, _run_tiny, "a test recipe",
                                                 quick=lambda c: c, check=_check_tiny))
    return ["run", "tiny", "--quiet"]
