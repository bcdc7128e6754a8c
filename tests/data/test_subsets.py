"""ClassSubset, RemapLabels, LimitedDataset/take and label discovery."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import ConcatDataset, Dataset, Subset, TensorDataset

from advtransfer.data.subsets import (
    ClassSubset,
    LimitedDataset,
    RemapLabels,
    dataset_labels,
    take,
)
from advtransfer.errors import AdvTransferError, AdvTransferTypeError


class Labelled(Dataset[Any]):
    """x = index, label from a list; counts __getitem__ calls."""

    def __init__(self, labels: list[int], attr: str | None = "targets", names: Any = None):
        self._values = list(labels)
        if attr is not None:
            setattr(self, attr, list(labels))
        if names is not None:
            self.classes = names
        self.calls = 0

    def __len__(self) -> int:
        return len(self._values)

    def __getitem__(self, i: int) -> tuple[int, int]:
        self.calls += 1
        return i, self._values[i]


LABELS = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2, 3, 8, 4]


@pytest.mark.parametrize("attr", ["targets", "labels", "_labels"])
def test_labels_read_from_attributes_without_loading(attr: str) -> None:
    ds = Labelled(LABELS, attr=attr)
    np.testing.assert_array_equal(dataset_labels(ds), LABELS)
    assert ds.calls == 0


def test_labels_through_subset_concat_and_tensordataset() -> None:
    ds = Labelled(LABELS)
    np.testing.assert_array_equal(dataset_labels(Subset(ds, [4, 0, 2])), [5, 3, 4])
    both = ConcatDataset([ds, Subset(ds, [1])])
    np.testing.assert_array_equal(dataset_labels(both), [*LABELS, 1])
    td = TensorDataset(torch.zeros(3, 2), torch.tensor([2, 0, 1]))
    np.testing.assert_array_equal(dataset_labels(td), [2, 0, 1])
    assert ds.calls == 0


def test_labels_fall_back_to_iteration() -> None:
    ds = Labelled(LABELS, attr=None)
    assert dataset_labels(ds, allow_iteration=False) is None
    np.testing.assert_array_equal(dataset_labels(ds), LABELS)
    assert ds.calls == len(LABELS)


def test_target_transform_disables_the_fast_path() -> None:
    ds = Labelled(LABELS)
    ds.target_transform = lambda y: y + 100  # type: ignore[attr-defined]
    assert dataset_labels(ds, allow_iteration=False) is None


def test_class_subset_remaps_in_the_given_order() -> None:
    ds = Labelled(LABELS)
    sub = ClassSubset(ds, [9, 3])
    expected = [i for i, y in enumerate(LABELS) if y in (9, 3)]
    np.testing.assert_array_equal(sub.indices, expected)
    assert len(sub) == len(expected)
    assert sub.targets == [0 if LABELS[i] == 9 else 1 for i in expected]
    assert [sub[k] for k in range(len(sub))] == list(zip(expected, sub.targets, strict=True))
    assert sub.num_classes == 2 and sub.label_values == (9, 3)
    assert ds.calls == len(expected)  # only the accessed samples were loaded


def test_class_subset_without_remap_keeps_labels() -> None:
    sub = ClassSubset(Labelled(LABELS), [5, 1], remap=False)
    assert sorted(set(sub.targets)) == [1, 5]
    assert all(LABELS[x] == y for x, y in (sub[k] for k in range(len(sub))))


def test_class_subset_accepts_class_names() -> None:
    names = [f"c{i}" for i in range(10)]
    sub = ClassSubset(Labelled(LABELS, names=names), ["c2", "c8"])
    assert sub.classes == ["c2", "c8"]
    assert Counter(sub.targets) == {0: 2, 1: 2}
    with pytest.raises(AdvTransferError, match="'c42' not found; known names: c0"):
        ClassSubset(Labelled(LABELS, names=names), ["c42"])


def test_class_subset_errors() -> None:
    ds = Labelled(LABELS)
    with pytest.raises(AdvTransferError, match="empty"):
        ClassSubset(ds, [])
    with pytest.raises(AdvTransferError, match=r"classes \[0, 10\] do not occur.*1, 2, 3"):
        ClassSubset(ds, [0, 3, 10])
    with pytest.raises(AdvTransferError, match="duplicate"):
        ClassSubset(ds, [3, 3])
    with pytest.raises(AdvTransferTypeError):
        ClassSubset(ds, [1.5])  # type: ignore[list-item]
    with pytest.raises(AdvTransferTypeError):
        ClassSubset(ds, "3")


def test_class_subset_iterates_when_labels_are_hidden() -> None:
    ds = Labelled(LABELS, attr=None)
    sub = ClassSubset(ds, [8])
    assert sub.targets == [0, 0]
    assert ds.calls == len(LABELS)


def test_views_compose() -> None:
    sub = ClassSubset(Labelled(LABELS), [9, 3, 5])
    inner = take(sub, 6)
    assert len(inner) == 6 and Counter(inner.targets) == {0: 2, 1: 2, 2: 2}
    again = ClassSubset(inner, [2])
    assert again.targets == [0, 0]


def test_remap_labels_dict_and_callable() -> None:
    ds = Labelled([0, 1, 2, 1])
    mapped = RemapLabels(ds, {0: 5, 1: 6, 2: 7})
    assert mapped.targets == [5, 6, 7, 6]
    assert [mapped[i][1] for i in range(4)] == [5, 6, 7, 6]
    doubled = RemapLabels(ds, lambda y: 2 * y)
    assert doubled[2] == (2, 4) and doubled.targets == [0, 2, 4, 2]


def test_remap_labels_reports_unmapped_labels() -> None:
    with pytest.raises(AdvTransferError, match=r"labels \[2\] .*no entry in the mapping"):
        RemapLabels(Labelled([0, 1, 2]), {0: 0, 1: 1})
    hidden = RemapLabels(Labelled([0, 1, 2], attr=None), {0: 0, 1: 1})
    assert hidden.targets is None
    with pytest.raises(AdvTransferError, match="label 2 has no entry"):
        hidden[2]
    with pytest.raises(AdvTransferTypeError):
        RemapLabels(Labelled([0]), [0, 1])  # type: ignore[arg-type]


def _imbalanced() -> Labelled:
    # class 0: 100 samples, 1: 50, 2: 3, 3: 47
    labels = [0] * 100 + [1] * 50 + [2] * 3 + [3] * 47
    rng = np.random.default_rng(0)
    return Labelled(rng.permutation(labels).tolist())


def test_take_is_deterministic_with_a_generator() -> None:
    ds = _imbalanced()
    a = take(ds, 40, generator=torch.Generator().manual_seed(1))
    b = take(ds, 40, generator=torch.Generator().manual_seed(1))
    c = take(ds, 40, generator=torch.Generator().manual_seed(2))
    np.testing.assert_array_equal(a.indices, b.indices)
    assert not np.array_equal(a.indices, c.indices)
    np.testing.assert_array_equal(take(ds, 40).indices, take(ds, 40).indices)
    assert ds.calls == 0


def test_take_balances_classes_and_redistributes() -> None:
    ds = _imbalanced()
    sub = take(ds, 40)
    assert len(sub) == 40
    assert np.all(np.diff(sub.indices) > 0)  # original order, no repeats
    counts = Counter(sub.targets)
    assert counts[2] == 3  # the small class gives away the rest of its share
    assert sorted(counts[k] for k in (0, 1, 3)) == [12, 12, 13]
    assert [sub[k][1] for k in range(len(sub))] == sub.targets


def test_take_edge_cases() -> None:
    ds = Labelled(LABELS)
    assert len(take(ds, 1000)) == len(LABELS)
    np.testing.assert_array_equal(take(ds, 1000).indices, np.arange(len(LABELS)))
    assert len(take(ds, 0)) == 0
    with pytest.raises(AdvTransferError, match=">= 0"):
        take(ds, -1)
    with pytest.raises(AdvTransferTypeError):
        take(ds, 2.5)  # type: ignore[arg-type]
    with pytest.raises(AdvTransferTypeError):
        take(ds, 3, generator=0)  # type: ignore[arg-type]


def test_take_without_known_labels_samples_uniformly() -> None:
    ds = Labelled(LABELS, attr=None)
    sub = LimitedDataset(ds, 5, generator=torch.Generator().manual_seed(3))
    assert len(sub) == 5 and sub.targets is None and ds.calls == 0
    assert len(set(sub.indices.tolist())) == 5
