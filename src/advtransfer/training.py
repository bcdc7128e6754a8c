"""Supervised training loops shared by the recipes and full fine-tuning.

:func:`fit` trains a model in place with SGD (momentum 0.9, cosine learning-rate schedule, the
authors' fine-tuning setting) or Adam, on cross-entropy (classification) or mean squared error
(regression), seeded, with an optional progress bar. :func:`evaluate` returns loss and accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from advtransfer.data.batches import labelled
from advtransfer.errors import AdvTransferError
from advtransfer.models.adapters import as_output
from advtransfer.progress import track

Task = Literal["classification", "regression"]
LabelledData = tuple[torch.Tensor, torch.Tensor] | Dataset | DataLoader


@dataclass(frozen=True)
class Evaluation:
    """Mean loss (cross-entropy, or per-element MSE) and accuracy (None for regression)."""

    loss: float
    accuracy: float | None
    n: int


class TensorBatches:
    """Batches (x[idx], y[idx]) sliced straight from tensors: the fast path for in-memory data
    (no per-sample indexing and collation). Shuffled with its own seeded generator per epoch."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, *, batch_size: int, shuffle: bool,
                 seed: int = 0) -> None:
        self.x, self.y, self.batch_size, self.shuffle = x, y, batch_size, shuffle
        self._gen = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.x)
        order = torch.randperm(n, generator=self._gen) if self.shuffle else torch.arange(n)
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size]
            yield self.x[idx], self.y[idx]


def labelled_loader(data: LabelledData, *, batch_size: int, shuffle: bool,
                    seed: int = 0, name: str = "data") -> DataLoader | TensorBatches:
    """Batches of (x, y) from a pair of tensors (sliced directly), a Dataset of (x, y) or a
    DataLoader (used as it is)."""
    if isinstance(data, DataLoader):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
        if len(x) != len(y):
            raise AdvTransferError(f"{name}: x has {len(x)} samples but y has {len(y)}")
        if len(x) == 0:
            raise AdvTransferError(f"{name} is empty; pass at least one labelled sample")
        return TensorBatches(x, torch.as_tensor(y), batch_size=batch_size, shuffle=shuffle,
                             seed=seed)
    if not isinstance(data, Dataset):
        raise AdvTransferError(f"{name} must be a pair (x, y) of tensors, a Dataset or a "
                               f"DataLoader; got {type(data).__name__}")
    if hasattr(data, "__len__") and len(data) == 0:  # type: ignore[arg-type]
        raise AdvTransferError(f"{name} is empty; pass at least one labelled sample")
    return DataLoader(data, batch_size=batch_size, shuffle=shuffle,
                      generator=torch.Generator().manual_seed(seed))


def task_loss(out: torch.Tensor, y: torch.Tensor, task: Task) -> torch.Tensor:
    """Mean cross-entropy (integer labels) or per-element mean squared error."""
    if task == "classification":
        return F.cross_entropy(out, y.long())
    return F.mse_loss(out, y.to(out.dtype).reshape(out.shape))


def fit(
    model: nn.Module,
    data: LabelledData,
    *,
    task: Task = "classification",
    epochs: int = 10,
    lr: float = 0.1,
    optimizer: Literal["sgd", "adam"] = "sgd",
    weight_decay: float = 0.0,
    batch_size: int = 128,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = False,
    description: str = "training",
    on_epoch: Callable[[int, nn.Module], None] | None = None,
) -> nn.Module:
    """Train ``model`` in place and return it (in eval mode).

    SGD uses momentum 0.9 and a cosine schedule over all steps; Adam a constant rate.
    ``on_epoch(epoch, model)``, if given, is called after each epoch (``epoch`` from 1); the
    model is in train mode and must be left so.
    """
    if epochs < 1:
        raise AdvTransferError(f"epochs must be an integer >= 1; got {epochs}")
    if not (lr > 0 and math.isfinite(lr)):
        raise AdvTransferError(f"lr must be a finite number > 0; got {lr}")
    if optimizer not in ("sgd", "adam"):
        raise AdvTransferError(f"optimizer must be 'sgd' or 'adam'; got {optimizer!r}")
    loader = labelled_loader(data, batch_size=batch_size, shuffle=True, seed=seed)
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9,
                                                     weight_decay=weight_decay)
    else:
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * len(loader))
             if optimizer == "sgd" else None)
    device = device or next((p.device for p in model.parameters()), torch.device("cpu"))
    model.train()
    # dropout draws from the global RNG: seed it inside a fork so the caller's state is untouched
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for epoch in track(range(1, epochs + 1), description=description, enabled=progress):
            for batch in loader:
                x, y = labelled(batch)
                x, y = x.to(device), y.to(device)
                opt.zero_grad(set_to_none=True)
                loss = task_loss(as_output(model(x)).reshape(len(x), -1), y, task)
                if not torch.isfinite(loss):
                    raise AdvTransferError(f"{description}: the loss became {float(loss)}; "
                                           f"lower lr (now {lr})")
                loss.backward()
                opt.step()
                if sched is not None:
                    sched.step()
            if on_epoch is not None:
                on_epoch(epoch, model)
    model.eval()
    for p in params:
        p.grad = None
    return model


@torch.no_grad()
def evaluate(model: nn.Module, data: LabelledData, *, task: Task = "classification",
             batch_size: int = 256, device: torch.device | str | None = None) -> Evaluation:
    """Mean loss and accuracy of ``model`` on labelled data (eval mode, mode restored)."""
    loader = labelled_loader(data, batch_size=batch_size, shuffle=False)
    device = device or next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    total, correct, n = 0.0, 0, 0
    try:
        for batch in loader:
            x, y = labelled(batch)
            x, y = x.to(device), y.to(device)
            out = as_output(model(x)).reshape(len(x), -1)
            total += float(task_loss(out, y, task)) * len(x)
            if task == "classification":
                correct += int((out.argmax(1) == y).sum())
            n += len(x)
    finally:
        model.train(was_training)
    return Evaluation(total / n, correct / n if task == "classification" else None, n)
