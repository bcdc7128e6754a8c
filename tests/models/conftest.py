"""Fixtures of the model tests: an isolated $ADVTRANSFER_HOME (no test reads or writes the
user's weight cache) and a state-dict comparison."""

from __future__ import annotations

from pathlib import Path

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
