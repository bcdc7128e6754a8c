"""Shared fixtures: small random networks with closed-form or exact references."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch import nn

# Tiny models run faster on one thread, and a second thread only contends with other work.
torch.set_num_threads(1)


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
