"""Turning the data arguments of the public API into batches of inputs.

``data`` may be a tensor of inputs (batch, ...), a ``Dataset`` or a ``DataLoader`` whose items are
x, or tuples/lists (x, y, ...), or mappings with an ``"image"``, ``"x"`` or ``"input"`` entry.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from advtransfer.errors import AdvTransferError, AdvTransferTypeError

DataLike = torch.Tensor | Dataset | DataLoader
_KEYS = ("image", "x", "input", "inputs")


def as_loader(data: DataLike, *, batch_size: int, name: str = "data") -> DataLoader:
    """A DataLoader over ``data`` (a loader is returned as it is, keeping its batch size)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise AdvTransferError(f"batch_size must be an integer >= 1; got {batch_size!r}")
    if isinstance(data, DataLoader):
        return data
    if isinstance(data, torch.Tensor):
        if data.ndim < 1 or data.shape[0] == 0:
            raise AdvTransferError(f"{name} is empty (shape {tuple(data.shape)}); pass at least "
                                   "one sample")
        return DataLoader(TensorDataset(data), batch_size=batch_size, shuffle=False)
    if isinstance(data, Dataset):
        if hasattr(data, "__len__") and len(data) == 0:  # type: ignore[arg-type]
            raise AdvTransferError(f"{name} is an empty dataset; pass at least one sample")
        return DataLoader(data, batch_size=batch_size, shuffle=False)
    raise AdvTransferTypeError(f"{name} must be a tensor of inputs, a Dataset or a DataLoader; "
                               f"got {type(data).__name__}")


def inputs_of(batch: object, *, name: str = "data") -> torch.Tensor:
    """The input tensor x of one batch: x, (x, y, ...) or {"image": x, ...}."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    if isinstance(batch, dict):
        for key in _KEYS:
            if isinstance(batch.get(key), torch.Tensor):
                return batch[key]
    raise AdvTransferTypeError(f"{name} yielded {type(batch).__name__}; expected a tensor x, a "
                               f"tuple (x, y, ...) or a mapping with one of the keys {_KEYS}")


def labelled(batch: object, *, name: str = "data") -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) of one labelled batch."""
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], torch.as_tensor(batch[1])
    raise AdvTransferTypeError(f"{name} must yield (x, y) pairs; got {type(batch).__name__}")


def iter_inputs(data: DataLike, *, batch_size: int, name: str = "data") -> Iterator[torch.Tensor]:
    """Yield the input tensor of each batch; raise if ``data`` yields nothing."""
    empty = True
    for batch in as_loader(data, batch_size=batch_size, name=name):
        x = inputs_of(batch, name=name)
        if x.shape[0] == 0:
            continue
        empty = False
        yield x
    if empty:
        raise AdvTransferError(f"{name} yielded no samples; pass at least one sample")
