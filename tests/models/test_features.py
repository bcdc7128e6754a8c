"""Penultimate features by execution order (issue 8, item 6), in every place that uses them."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from advtransfer.errors import AdvTransferError
from advtransfer.knowledge import extract_features
from advtransfer.models.features import PenultimateCapture, penultimate_layer
from advtransfer.selection import candidate_outputs


class HeadDefinedFirst(nn.Module):
    """``head`` is registered before ``proj`` but called after it: registration order picks
    ``proj`` (whose input is the raw 6-d input), execution order picks ``head`` (input: the
    4-d projected features)."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(4, 3)
        self.proj = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.proj(x)))


def _data(n: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 6, generator=g), torch.arange(n) % 3


def test_execution_order_not_registration_order_everywhere():
    torch.manual_seed(0)
    model = HeadDefinedFirst().eval()
    x, y = _data()
    expected = torch.relu(model.proj(x)).detach()  # the input of the head, computed directly
    with pytest.warns(UserWarning, match="'head'.*last-registered nn.Linear is 'proj'"):
        assert penultimate_layer(model, x) == "head"
    with pytest.warns(UserWarning, match="'head'"):
        outs = candidate_outputs(model, (x, y))
    torch.testing.assert_close(outs.features, expected, rtol=0, atol=0)
    with pytest.warns(UserWarning, match="'head'"):
        f, _ = extract_features(model, (x, y), features="penultimate")
    torch.testing.assert_close(f, expected, rtol=0, atol=0)
    assert not model.head._forward_hooks and not model.proj._forward_hooks


class SharedLinear(nn.Module):
    """One Linear applied twice, then another one: the last call is what counts."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Linear(6, 6)
        self.out = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.block(torch.tanh(self.block(x)))))


def test_a_plain_classifier_gives_no_warning_and_a_twice_called_layer_counts_last():
    x, _ = _data()
    mlp = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert penultimate_layer(mlp, x) == "2"
        assert penultimate_layer(SharedLinear(), x) == "out"

    class Reused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(6, 6)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(torch.tanh(self.lin(x)))

    model = Reused()
    with pytest.warns(UserWarning, match="called 2 times"):
        outs = candidate_outputs(model, (x, torch.arange(10) % 2))
    torch.testing.assert_close(outs.features, torch.tanh(model.lin(x)).detach())


def test_output_after_the_last_linear_is_reported_as_a_guess():
    x, _ = _data()
    model = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3), nn.Softmax(dim=1))
    with pytest.warns(UserWarning, match="not that layer's output"):
        assert penultimate_layer(model, x) == "2"


def test_no_linear_or_no_call_is_an_error():
    with pytest.raises(AdvTransferError, match="no nn.Linear"):
        PenultimateCapture(nn.Conv1d(1, 1, 1))

    class Unused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(6, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, :2]

    with pytest.raises(AdvTransferError, match="was called"):
        penultimate_layer(Unused(), _data()[0])
