"""The labelled target data of :func:`advtransfer.selection.rank`: its checks, its decoding
into tensors held in memory (once for the whole pool), the seeded subset of the inputs the
reference attack uses, and the seeded train/test split of the ``linear_probe`` method."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from advtransfer.data.batches import labelled
from advtransfer.errors import AdvTransferError, AdvTransferTypeError
from advtransfer.progress import track
from advtransfer.training import labelled_loader

__all__ = ["target_tensors"]


def _check_target_data(data: Any) -> Any:
    if isinstance(data, (DataLoader, Dataset)):
        if not isinstance(data, DataLoader) and hasattr(data, "__len__") and len(data) < 2:
            raise AdvTransferError(f"target_data must hold at least 2 labelled samples; got "
                                   f"{len(data)}")
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise AdvTransferTypeError("target_data as a pair must be (x, y) torch tensors; got "
                                       f"({type(x).__name__}, {type(y).__name__})")
        if not x.is_floating_point():
            raise AdvTransferTypeError(f"target_data x must be floating point; got {x.dtype}")
        if y.ndim != 1:
            raise AdvTransferError(f"target_data y must be a 1-D tensor of class labels; got "
                                   f"shape {tuple(y.shape)}")
        if y.is_floating_point() or y.is_complex():
            raise AdvTransferTypeError(f"target_data y must hold integer class labels; got "
                                       f"{y.dtype}")
        if len(x) != len(y):
            raise AdvTransferError(f"target_data x has {len(x)} samples but y has {len(y)}")
        if len(x) < 2:
            raise AdvTransferError(f"target_data must hold at least 2 labelled samples; got "
                                   f"{len(x)}")
        if torch.unique(y).numel() < 2:
            raise AdvTransferError("target_data y must contain at least 2 classes; got "
                                   f"only {y.unique().tolist()}")
        return x, y
    raise AdvTransferTypeError("target_data must be a pair (x, y) of tensors, a Dataset or a "
                               f"DataLoader of (x, y); got {type(data).__name__}")


def _subset_index(total: int, n: int | None, seed: int) -> torch.Tensor | None:
    """The sorted indices of a seeded random subset of ``n`` of ``total`` samples (None: all)."""
    if n is None or n >= total:
        return None
    return torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n].sort().values


def _take_labelled(data: Any, n: int | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to ``n`` labelled samples: a seeded random subset of tensors or of a Dataset (only
    those are decoded), the first ``n`` of a DataLoader."""
    if isinstance(data, tuple):
        x, y = data
        idx = _subset_index(len(x), n, seed)
        return (x, y) if idx is None else (x[idx], y[idx])
    if isinstance(data, Dataset) and hasattr(data, "__len__"):
        idx = _subset_index(len(data), n, seed)  # type: ignore[arg-type]
        if idx is not None:
            data = Subset(data, idx.tolist())
    return _decode(data, n)


def target_tensors(data: Any, *, description: str = "reading target data",
                   progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Labelled target data (a pair of tensors, a Dataset or a DataLoader of ``(x, y)``)
    decoded once into a pair of tensors ``(x, y)`` held in memory, so that the candidates of a
    pool never decode the same images again."""
    data = _check_target_data(data)
    if isinstance(data, tuple):
        return data
    return _decode(data, None, description=description, progress=progress)


def _decode(data: Any, limit: int | None, *, description: str = "reading target data",
            progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The (first ``limit``) samples of a Dataset or DataLoader of ``(x, y)`` as tensors."""
    xs, ys, have = [], [], 0
    for batch in track(labelled_loader(data, batch_size=256, shuffle=False, name="target_data"),
                       description=description, enabled=progress):
        x, y = labelled(batch, name="target_data")
        xs.append(x)
        ys.append(torch.as_tensor(y).reshape(-1))
        have += len(x)
        if limit is not None and have >= limit:
            break
    if not xs:
        raise AdvTransferError("target_data yielded no samples")
    x, y = torch.cat(xs), torch.cat(ys)
    return (x, y) if limit is None else (x[:limit], y[:limit])


def _split(data: Any, test_fraction: float, seed: int) -> tuple[Any, Any]:
    """A seeded train/test split of tensors or of a Dataset (a DataLoader's dataset)."""
    if isinstance(data, DataLoader):
        data = data.dataset
    n = len(data[0]) if isinstance(data, tuple) else len(data)
    n_test = max(1, round(test_fraction * n))
    if n - n_test < 1:
        raise AdvTransferError(f"target_data has {n} samples: too few to split for 'linear_probe' "
                               f"(finetune_test_fraction={test_fraction})")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    test_idx, train_idx = perm[:n_test].sort().values, perm[n_test:].sort().values
    if isinstance(data, tuple):
        x, y = data
        return (x[train_idx], y[train_idx]), (x[test_idx], y[test_idx])
    return Subset(data, train_idx.tolist()), Subset(data, test_idx.tolist())
