"""STL-10 through torchvision's reader, on fixture files in the real binary format."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchvision.datasets.stl10 as tv_stl10
from torchvision.datasets import STL10

import advtransfer.data.fixtures as fixtures
from advtransfer.data.fixtures import write_cifar10, write_stl10
from advtransfer.data.subsets import ClassSubset, RemapLabels
from advtransfer.data.vision import (
    CIFAR10_CLASSES,
    CIFAR10_TO_STL10,
    STL10_CLASSES,
    STL10_TO_CIFAR10,
    cifar10,
    stl10,
)
from advtransfer.errors import AdvTransferError

N_TRAIN, N_TEST = 100, 50


@pytest.fixture(scope="module")
def shared_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_stl10(tmp_path_factory.mktemp("stl"), n_train=N_TRAIN, n_test=N_TEST)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return write_stl10(tmp_path, n_train=20, n_test=10)


def test_loads_resized_to_32(shared_root: Path) -> None:
    train, test = stl10(shared_root), stl10(shared_root, "test")
    assert (len(train), len(test)) == (N_TRAIN, N_TEST)
    raw = np.fromfile(shared_root / "stl10_binary" / "train_y.bin", dtype=np.uint8)
    assert [train[i][1] for i in range(len(train))] == (raw.astype(int) - 1).tolist()
    assert sorted(set(train.labels.tolist())) == list(range(10))
    assert train.classes == list(STL10_CLASSES)
    images = torch.stack([test[i][0] for i in range(20)])
    assert images.shape == (20, 3, 32, 32) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1
    assert stl10(shared_root, "test", size=96)[0][0].shape == (3, 96, 96)


def _write_top_bright(folder: Path) -> None:
    """One image, top half white, bottom half black, written column-major by hand."""
    image = np.zeros((3, 96, 96), np.uint8)  # C, H, W
    image[:, :48, :] = 255
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "test_X.bin").write_bytes(image.transpose(0, 2, 1).tobytes())  # C, W, H
    (folder / "test_y.bin").write_bytes(bytes([3]))


def test_column_major_layout_is_read_upright(tmp_path: Path) -> None:
    _write_top_bright(tmp_path / "stl10_binary")
    x, y = stl10(tmp_path, "test", size=96)[0]
    assert y == 2
    assert torch.all(x[:, :48] == 1) and torch.all(x[:, 48:] == 0)


def test_writer_stores_images_upright(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def top_bright(ids: np.ndarray, size: int, rng: Any) -> np.ndarray:
        images = np.zeros((len(ids), size, size, 3), np.uint8)
        images[:, : size // 2] = 255
        return images

    monkeypatch.setattr(fixtures, "_pattern_images", top_bright)
    write_stl10(tmp_path, n_train=2, n_test=2)
    x = stl10(tmp_path, "test", size=96)[0][0]
    assert torch.all(x[:, :48] == 1) and torch.all(x[:, 48:] == 0)


def test_truncated_images_are_named(root: Path) -> None:
    path = root / "stl10_binary" / "train_X.bin"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(AdvTransferError, match="not a positive multiple") as err:
        stl10(root)
    assert str(path) in str(err.value)


def test_label_count_mismatch_is_named(root: Path) -> None:
    path = root / "stl10_binary" / "test_y.bin"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(AdvTransferError, match="9 labels but .* 10 images") as err:
        stl10(root, "test")
    assert str(path) in str(err.value)


def test_zero_based_labels_are_rejected(root: Path) -> None:
    path = root / "stl10_binary" / "test_y.bin"
    path.write_bytes(bytes(10))
    with pytest.raises(AdvTransferError, match="1-based"):
        stl10(root, "test")


def test_missing_files_are_listed(tmp_path: Path) -> None:
    with pytest.raises(AdvTransferError) as err:
        stl10(tmp_path, "test")
    msg = str(err.value)
    assert "- test_X.bin" in msg and "- test_y.bin" in msg and "train_X" not in msg
    assert "unlabeled" not in msg.split("To get them")[0]
    assert str(tmp_path / "stl10_binary") in msg and STL10.url in msg and "download=True" in msg


def test_class_names_file_is_optional(root: Path) -> None:
    (root / "stl10_binary" / "class_names.txt").unlink()
    assert stl10(root).classes == list(STL10_CLASSES)


def test_verify_rejects_fixture_files(root: Path) -> None:
    with pytest.raises(AdvTransferError, match="checksum .*train_X.bin does not match"):
        stl10(root, verify=True)


def test_fixture_is_readable_by_stock_torchvision(
    shared_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tv_stl10, "check_integrity", lambda *a, **k: True)
    stock = STL10(str(shared_root), split="test")
    assert len(stock) == N_TEST
    np.testing.assert_array_equal(stock.labels, stl10(shared_root, "test").labels)


def test_stl_to_cifar_mapping_matches_class_names() -> None:
    assert 7 not in STL10_TO_CIFAR10 and STL10_CLASSES[7] == "monkey"
    assert 6 not in CIFAR10_TO_STL10 and CIFAR10_CLASSES[6] == "frog"
    for s, c in STL10_TO_CIFAR10.items():
        expected = "automobile" if STL10_CLASSES[s] == "car" else STL10_CLASSES[s]
        assert CIFAR10_CLASSES[c] == expected
    assert {CIFAR10_TO_STL10[c]: c for c in CIFAR10_TO_STL10} == STL10_TO_CIFAR10


def test_fixture_classes_transfer_from_cifar(tmp_path: Path, shared_root: Path) -> None:
    """A nearest-class-mean classifier fit on the CIFAR-10 fixture labels the STL-10 fixture."""
    cifar = cifar10(write_cifar10(tmp_path, n_train=200, n_test=10))
    xs = torch.stack([cifar[i][0] for i in range(len(cifar))]).flatten(1)
    ys = torch.tensor(cifar.targets)
    means = torch.stack([xs[ys == c].mean(0) for c in range(10)])
    stl = stl10(shared_root, "test")
    shared = RemapLabels(ClassSubset(stl, list(STL10_TO_CIFAR10), remap=False), STL10_TO_CIFAR10)
    assert Counter(shared.targets).keys() == set(STL10_TO_CIFAR10.values())
    correct = 0
    for i in range(len(shared)):
        x, y = shared[i]
        correct += int(torch.cdist(x.flatten()[None], means).argmin()) == y
    assert correct / len(shared) > 0.8
