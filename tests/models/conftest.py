"""Fixtures of the model tests: an isolated $ADVTRANSFER_HOME (no test reads or writes the
user's weight cache) and a state-dict comparison."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("ADVTRANSFER_HOME", str(home))
    return home


def state_equal(a: nn.Module, b: nn.Module) -> bool:
    """Same parameter and buffer names, and equal tensors."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


class FakeTimm(types.ModuleType):
    """A stand-in for the optional ``timm`` package: knows one model, ``tiny_net`` (a seeded
    ``nn.Linear(4, num_classes)``), lists ``listed`` and records every ``create_model`` call."""

    def __init__(self, listed: tuple[str, ...] = ("tiny_net",)) -> None:
        super().__init__("timm")
        self.listed = list(listed)
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def is_model(self, name: str) -> bool:
        return name == "tiny_net"

    def list_models(self) -> list[str]:
        return list(self.listed)

    def create_model(self, name: str, **kwargs: Any) -> nn.Module:
        self.calls.append((name, kwargs))
        torch.manual_seed(0)
        return nn.Linear(4, kwargs.get("num_classes", 1000))
