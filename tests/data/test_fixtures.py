"""The fixture writers: speed, determinism, argument checks and learnable content."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from advtransfer.data.fixtures import write_celeba, write_cifar10, write_stl10
from advtransfer.data.vision import cifar10
from advtransfer.errors import AdvTransferError, AdvTransferTypeError

WRITERS: list[Callable[..., Path]] = [write_cifar10, write_stl10, write_celeba]


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("writer", WRITERS, ids=lambda w: w.__name__)
def test_default_sizes_stay_small(writer: Callable[..., Path], tmp_path: Path) -> None:
    # what makes the fixtures cheap in every test is their size, not a wall-clock figure (which
    # depends on the machine and its load): at most a few MB and a few hundred images by default
    assert writer(tmp_path) == tmp_path
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert 0 < sum(p.stat().st_size for p in files) < 16 * 2**20
    assert len(files) <= 600


@pytest.mark.parametrize("writer", WRITERS, ids=lambda w: w.__name__)
def test_writers_are_deterministic(writer: Callable[..., Path], tmp_path: Path) -> None:
    small: dict[str, Any] = (
        {"n_images": 8, "n_identities": 2}
        if writer is write_celeba
        else {"n_train": 20, "n_test": 10}
    )
    a = _snapshot(writer(tmp_path / "a", seed=3, **small))
    b = _snapshot(writer(tmp_path / "b", seed=3, **small))
    c = _snapshot(writer(tmp_path / "c", seed=4, **small))
    assert a == b
    assert a.keys() == c.keys() and a != c


def test_writer_arguments_are_checked(tmp_path: Path) -> None:
    with pytest.raises(AdvTransferError, match="n_train must be >= 1"):
        write_cifar10(tmp_path, n_train=0)
    with pytest.raises(AdvTransferTypeError):
        write_stl10(tmp_path, n_test=2.0)  # type: ignore[arg-type]
    with pytest.raises(AdvTransferError, match="n_images must be >= 6"):
        write_celeba(tmp_path, n_images=5)
    with pytest.raises(AdvTransferError, match="cannot exceed"):
        write_celeba(tmp_path, n_images=6, n_identities=7)


def test_cifar_fixture_is_learnable(tmp_path: Path) -> None:
    """Nearest class mean, fit on the train split, classifies the test split."""
    write_cifar10(tmp_path, n_train=300, n_test=100)
    train, test = cifar10(tmp_path), cifar10(tmp_path, "test")
    xs = torch.stack([train[i][0] for i in range(len(train))]).flatten(1)
    ys = torch.tensor(train.targets)
    means = torch.stack([xs[ys == c].mean(0) for c in range(10)])
    xt = torch.stack([test[i][0] for i in range(len(test))]).flatten(1)
    accuracy = (torch.cdist(xt, means).argmin(1) == torch.tensor(test.targets)).float().mean()
    assert accuracy > 0.9


def test_small_train_sets_leave_some_batches_empty(tmp_path: Path) -> None:
    write_cifar10(tmp_path, n_train=3, n_test=1)
    assert len(cifar10(tmp_path)) == 3 and len(cifar10(tmp_path, "test")) == 1
