"""CIFAR-10 through torchvision's reader, on fixture files in the real pickle format."""

from __future__ import annotations

import os
import pickle
import urllib.error
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar as tv_cifar
from torchvision.datasets import CIFAR10

from advtransfer.data.fixtures import write_cifar10
from advtransfer.data.subsets import ClassSubset, take
from advtransfer.data.vision import DATASET_INFO, cifar10, missing_files
from advtransfer.errors import AdvTransferError

N_TRAIN, N_TEST = 300, 60


@pytest.fixture(scope="module")
def shared_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cifar10(tmp_path_factory.mktemp("cifar"), n_train=N_TRAIN, n_test=N_TEST)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A private copy that a test may damage."""
    return write_cifar10(tmp_path, n_train=50, n_test=10)


def _raw(root: Path, name: str) -> dict[str, Any]:
    with (root / "cifar-10-batches-py" / name).open("rb") as f:
        return pickle.load(f, encoding="latin1")


def test_loads_train_and_test_as_unit_tensors(shared_root: Path) -> None:
    train, test = cifar10(shared_root), cifar10(shared_root, "test")
    assert (len(train), len(test)) == (N_TRAIN, N_TEST)
    raw_labels = [y for i in range(1, 6) for y in _raw(shared_root, f"data_batch_{i}")["labels"]]
    assert train.targets == raw_labels
    assert test.targets == _raw(shared_root, "test_batch")["labels"]
    assert train.classes[:2] == ["airplane", "automobile"]
    images = torch.stack([train[i][0] for i in range(32)])
    assert images.shape == (32, 3, 32, 32) and images.dtype == torch.float32
    assert images.min() >= 0.0 and images.max() <= 1.0 and images.max() > 0.5
    x, y = test[7]
    assert isinstance(y, int) and y == test.targets[7]
    # pixel layout: row 0 of 'data' is R plane, G plane, B plane, each row-major
    row = _raw(shared_root, "test_batch")["data"][7].reshape(3, 32, 32)
    np.testing.assert_allclose(x.numpy() * 255, row, atol=1e-3)


def test_size_and_extra_transform(shared_root: Path) -> None:
    big = cifar10(shared_root, "test", size=48)
    assert big[0][0].shape == (3, 48, 48)
    flipped = cifar10(shared_root, "test", transform=lambda t: t.flip(-1))
    torch.testing.assert_close(flipped[3][0], cifar10(shared_root, "test")[3][0].flip(-1))


def test_class_subset_remaps_animals(shared_root: Path) -> None:
    train = cifar10(shared_root)
    animals = ClassSubset(train, [2, 3, 4, 7])
    counts = Counter(train.targets)
    assert len(animals) == sum(counts[c] for c in (2, 3, 4, 7))
    assert Counter(animals.targets) == {i: counts[c] for i, c in enumerate((2, 3, 4, 7))}
    assert animals.classes == ["bird", "cat", "deer", "horse"]
    x, y = animals[5]
    original = int(animals.indices[5])
    assert y == [2, 3, 4, 7].index(train.targets[original])
    torch.testing.assert_close(x, train[original][0])


def test_quick_take_caps_at_256(shared_root: Path) -> None:
    quick = take(cifar10(shared_root), 256)
    assert len(quick) == 256
    counts = Counter(quick.targets)
    assert max(counts.values()) - min(counts.values()) <= 1


def test_root_may_name_the_dataset_folder(shared_root: Path) -> None:
    assert len(cifar10(shared_root / "cifar-10-batches-py", "test")) == N_TEST


def test_missing_directory_lists_files_and_download(tmp_path: Path) -> None:
    with pytest.raises(AdvTransferError) as err:
        cifar10(tmp_path / "nowhere")
    msg = str(err.value)
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in msg
    assert "does not exist" in msg
    for name in ["data_batch_1", "data_batch_5", "batches.meta"]:
        assert f"- {name}" in msg
    assert "test_batch" not in msg  # not needed for the train split
    assert "download=True" in msg and "--download" in msg and CIFAR10.url in msg


def test_one_missing_batch_is_named(root: Path) -> None:
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    assert missing_files("cifar10", root, "train") == ["data_batch_3"]
    with pytest.raises(AdvTransferError, match="1 file") as err:
        cifar10(root)
    assert "- data_batch_3" in str(err.value) and "data_batch_1" not in str(err.value)
    assert len(cifar10(root, "test")) == 10  # the test split does not need it


def test_truncated_batch_is_named(root: Path) -> None:
    path = root / "cifar-10-batches-py" / "data_batch_2"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(AdvTransferError, match="truncated") as err:
        cifar10(root)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    ("entry", "pattern"),
    [
        ({"data": np.zeros((4, 100), np.uint8), "labels": [0] * 4}, r"shape \(N, 3072\)"),
        ({"data": np.zeros((4, 3072), np.float32), "labels": [0] * 4}, "uint8"),
        ({"data": np.zeros((4, 3072), np.uint8), "labels": [0] * 3}, "3 entries.*4 rows"),
        ({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 12]}, "0..9"),
        ({"labels": [0]}, "expected a dict with 'data'"),
        ([1, 2, 3], "expected a dict"),
    ],
)
def test_malformed_batch_is_described(root: Path, entry: Any, pattern: str) -> None:
    path = root / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(pickle.dumps(entry, protocol=2))
    with pytest.raises(AdvTransferError, match=pattern) as err:
        cifar10(root, "test")
    assert "test_batch" in str(err.value)


class _Evil:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (self.target,))


def test_pickle_with_code_is_refused_before_torchvision(root: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = root / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(pickle.dumps({"data": _Evil(str(marker)), "labels": []}))
    with pytest.raises(AdvTransferError, match="refusing to load global .*mkdir"):
        cifar10(root, "test")
    assert not marker.exists()


def test_verify_rejects_fixture_files(root: Path) -> None:
    with pytest.raises(AdvTransferError, match="checksum .* does not match") as err:
        cifar10(root, verify=True)
    assert "data_batch_1" in str(err.value) and "verify=False" in str(err.value)


def test_download_uses_torchvision_and_verifies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, str]] = []

    def fake_download(url: str, download_root: str, **kwargs: Any) -> None:
        calls.append((url, kwargs.get("md5")))
        write_cifar10(download_root, n_train=10, n_test=10)  # not the official bytes

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", fake_download)
    with pytest.raises(AdvTransferError, match="checksum .* does not match"):
        cifar10(tmp_path, download=True)
    assert calls == [(CIFAR10.url, CIFAR10.tgz_md5)]
    # files now present: download=True does not fetch again and loads them as they are
    assert len(cifar10(tmp_path, "test", download=True)) == 10
    assert len(calls) == 1


def test_failed_download_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: Any, **kwargs: Any) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", offline)
    with pytest.raises(AdvTransferError, match="downloading CIFAR-10 from .* failed") as err:
        cifar10(tmp_path, download=True)
    assert "no network" in str(err.value) and "data_batch_1" in str(err.value)


def test_fixture_is_readable_by_stock_torchvision(
    shared_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)
    stock = CIFAR10(str(shared_root), train=False)
    assert len(stock) == N_TEST and stock.classes == list(DATASET_INFO["cifar10"].classes)
    assert stock.targets == cifar10(shared_root, "test").targets


def test_bad_arguments(shared_root: Path) -> None:
    with pytest.raises(AdvTransferError, match="split must be one of"):
        cifar10(shared_root, "val")
    with pytest.raises(AdvTransferError, match="size"):
        cifar10(shared_root, size=0)
