"""advtransfer.models.adapters.forward: the memory format it hands image batches in."""

from __future__ import annotations

import torch
from torch import nn

from advtransfer.models import adapters
from advtransfer.models.architectures import resnet18_cifar


class Recording(nn.Module):
    """A convolutional model that records whether each batch arrived in channels_last and, with
    ``flatten_by_view``, flattens its activations with ``.view`` (fails on channels_last)."""

    def __init__(self, flatten_by_view: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 6 * 6, 2)
        self.flatten_by_view = flatten_by_view
        self.seen: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.is_contiguous(memory_format=torch.channels_last)
                         and not x.is_contiguous())
        h = self.conv(x)
        h = h.view(len(h), -1) if self.flatten_by_view else h.flatten(1)
        return self.fc(h)


def test_conv_models_get_channels_last_batches_with_the_same_outputs():
    torch.manual_seed(0)
    model = resnet18_cifar(10).eval()
    x = torch.rand(6, 3, 32, 32)
    with torch.no_grad():
        direct = model(x)
        via = adapters.forward(model, x)
    torch.testing.assert_close(via, direct, rtol=1e-4, atol=1e-5)
    rec = Recording().eval()
    adapters.forward(rec, torch.rand(2, 3, 6, 6))
    assert rec.seen == [True]
    # gradients with respect to the input flow through the format change (a smooth model: in
    # a ReLU network, rounding-level differences of the forward pass flip units at their kinks)
    smooth = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, 8, 3),
                           nn.Tanh(), nn.Flatten(), nn.Linear(8 * 30 * 30, 4)).eval()
    xi = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(adapters.forward(smooth, xi).square().sum(), xi)
    xr = x.clone().requires_grad_(True)
    (g_direct,) = torch.autograd.grad(smooth(xr).square().sum(), xr)
    torch.testing.assert_close(g, g_direct, rtol=1e-4, atol=1e-6)

def test_a_model_that_fails_on_channels_last_gets_contiguous_batches_from_then_on():
    rec = Recording(flatten_by_view=True).eval()
    x = torch.rand(2, 3, 6, 6)
    out = adapters.forward(rec, x)
    assert rec.seen == [True, False]  # tried once, then the batch as given
    torch.testing.assert_close(out, rec(x).detach())
    rec.seen.clear()
    adapters.forward(rec, x)
    assert rec.seen == [False]  # remembered: no second try


def test_batches_stay_as_given_where_channels_last_cannot_help():
    rec = Recording().eval()
    rec.train()  # training mode: a failed try could move batch-norm statistics
    adapters.forward(rec, torch.rand(2, 3, 6, 6))
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 6 * 6, 2)).eval()
    seen: list[bool] = []
    mlp.register_forward_pre_hook(lambda m, a: seen.append(a[0].is_contiguous()))
    adapters.forward(mlp, torch.rand(2, 3, 6, 6))  # no convolution
    gray = Recording().eval()
    gray.conv = nn.Conv2d(1, 4, 3, padding=1)
    adapters.forward(gray, torch.rand(2, 1, 6, 6))  # one channel: both layouts are the same
    assert rec.seen == [False] and seen == [True]
    assert not adapters._channels_last(gray, torch.rand(2, 1, 6, 6))
