"""Dataset views: keep some classes, relabel, or take a small deterministic sample.

All views are ordinary :class:`torch.utils.data.Dataset` objects returning ``(x, label)`` pairs
and expose a ``targets`` list, so they compose (``take(ClassSubset(cifar, [2, 3]), 100)``) and
the labels of a view are known without loading any image.

Labels are found without touching the images whenever the underlying dataset exposes them
(see :func:`dataset_labels`); only as a last resort is the dataset iterated once.

Example::

    from advtransfer.data.subsets import ClassSubset, RemapLabels, take
    from advtransfer.data.vision import STL10_TO_CIFAR10, cifar10, stl10

    animals = ClassSubset(cifar10(root), [2, 3, 4, 7])          # labels 0..3
    stl_as_cifar = RemapLabels(ClassSubset(stl10(root), list(STL10_TO_CIFAR10), remap=False),
                               STL10_TO_CIFAR10)                  # STL images, CIFAR label ids
    quick = take(animals, 256)                                    # <= 256 samples, balanced
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset, Subset, TensorDataset

from advtransfer.errors import AdvTransferError, AdvTransferTypeError

__all__ = [
    "ClassSubset",
    "LimitedDataset",
    "RemapLabels",
    "dataset_labels",
    "take",
]

_LABEL_ATTRIBUTES = ("targets", "labels", "_labels")


def _as_int_labels(values: Any) -> np.ndarray | None:
    """Convert a sequence of scalar labels to an ``int64`` array, or ``None`` if not possible."""
    if values is None or callable(values):
        return None
    if isinstance(values, torch.Tensor):
        array = values.detach().cpu().numpy()
    else:
        try:
            array = np.asarray(values)
        except (TypeError, ValueError):
            return None
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        return None
    if array.size == 0:
        return array.astype(np.int64)
    if array.dtype == np.bool_ or np.issubdtype(array.dtype, np.integer):
        return array.astype(np.int64)
    if np.issubdtype(array.dtype, np.floating) and np.all(np.isfinite(array)):
        if np.all(array == np.round(array)):
            return array.astype(np.int64)
    return None


def _fast_labels(dataset: Any) -> np.ndarray | None:
    """Labels read from attributes of ``dataset`` (no image is loaded), or ``None``."""
    if isinstance(dataset, Subset):
        base = _fast_labels(dataset.dataset)
        if base is None:
            return None
        return base[np.asarray(dataset.indices, dtype=np.int64)]
    if isinstance(dataset, ConcatDataset):
        parts = [_fast_labels(d) for d in dataset.datasets]
        if any(p is None for p in parts):
            return None
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    if isinstance(dataset, TensorDataset):
        if len(dataset.tensors) >= 2:
            return _as_int_labels(dataset.tensors[1])
        return None
    # A target_transform changes what __getitem__ returns; the stored labels would be stale.
    if getattr(dataset, "target_transform", None) is not None:
        return None
    for name in _LABEL_ATTRIBUTES:
        labels = _as_int_labels(getattr(dataset, name, None))
        if labels is not None and len(labels) == len(dataset):
            return labels
    # torchvision's CelebA: identity is (N, 1); attr is (N, 40) and only usable for a single
    # target_type "identity" (multi-label attribute targets have no single class label).
    target_type = getattr(dataset, "target_type", None)
    if target_type == ["identity"] and hasattr(dataset, "identity"):
        return _as_int_labels(dataset.identity)
    return None


def _labels_by_iterating(dataset: Dataset[Any]) -> np.ndarray:
    labels = np.empty(len(dataset), dtype=np.int64)  # type: ignore[arg-type]
    for i in range(len(labels)):
        item = dataset[i]
        try:
            labels[i] = _scalar_label(item[1])
        except (TypeError, IndexError) as exc:
            raise AdvTransferError(
                f"sample {i} of {type(dataset).__name__} does not have a single integer label "
                f"(got {type(item).__name__}); class views need (x, int label) samples"
            ) from exc
    return labels


def _scalar_label(label: Any) -> int:
    if isinstance(label, torch.Tensor):
        if label.numel() != 1:
            raise TypeError(f"label tensor has {label.numel()} elements")
        value = label.item()
    elif isinstance(label, np.ndarray):
        if label.size != 1:
            raise TypeError(f"label array has {label.size} elements")
        value = label.item()
    else:
        value = label
    if isinstance(value, bool) or isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    raise TypeError(f"label {value!r} is not an integer")


def dataset_labels(dataset: Dataset[Any], *, allow_iteration: bool = True) -> np.ndarray | None:
    """Return the integer class label of every sample of ``dataset`` as an ``int64`` array.

    Labels are read, without loading images, from ``targets``, ``labels`` or ``_labels``
    attributes (CIFAR-10, STL-10, MNIST-style datasets, the views of this module), from
    torchvision CelebA's ``identity`` when its target type is ``"identity"``, from the second
    tensor of a :class:`~torch.utils.data.TensorDataset`, and through
    :class:`~torch.utils.data.Subset` / :class:`~torch.utils.data.ConcatDataset`. Otherwise, if
    ``allow_iteration`` is true, the dataset is iterated once; if false, ``None`` is returned.
    """
    labels = _fast_labels(dataset)
    if labels is not None or not allow_iteration:
        return labels
    return _labels_by_iterating(dataset)


def _class_names(dataset: Any) -> list[str] | None:
    names = getattr(dataset, "classes", None)
    if isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names):
        return list(names)
    return None


def _label_value(c: Any, names: list[str] | None) -> int:
    """The integer label ``c`` stands for: a class name's position in ``names`` (the dataset's
    ``classes``), or an integer (Python, NumPy or a one-element integer tensor) as it is."""
    if isinstance(c, str):
        if names is None or c not in names:
            known = f"known names: {', '.join(names)}" if names else "the dataset has no"
            if names is None:
                known += " class names (no 'classes' attribute); use integer labels"
            raise AdvTransferError(f"class name {c!r} not found; {known}")
        return names.index(c)
    if isinstance(c, (int, np.integer)) and not isinstance(c, bool):
        return int(c)
    if isinstance(c, torch.Tensor) and c.numel() == 1 and not c.is_floating_point():
        return int(c.item())
    raise AdvTransferTypeError(
        f"classes must contain integer labels or class names, got {c!r} "
        f"({type(c).__name__})"
    )


def _describe_labels(present: Iterable[int]) -> str:
    values = sorted(set(present))
    if not values:
        return "the dataset is empty"
    if len(values) <= 20:
        return "labels present: " + ", ".join(str(v) for v in values)
    return f"{len(values)} distinct labels present, from {values[0]} to {values[-1]}"


class _LabelledView(Dataset[Any]):
    """Common machinery: a base dataset, an index list and per-sample labels."""

    dataset: Dataset[Any]
    indices: np.ndarray

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def targets(self) -> list[int]:
        """The label of every sample of the view, in order (read without loading images)."""
        return self._targets.tolist()

    _targets: np.ndarray


class ClassSubset(_LabelledView):
    """The samples of ``dataset`` whose label is one of ``classes``.

    Args:
        dataset: a dataset returning ``(x, label)`` with a single integer label.
        classes: the labels to keep, as integers or as class names (looked up in
            ``dataset.classes``). Their order defines the new labels.
        remap: if true (default), the label ``classes[i]`` becomes ``i``; otherwise labels are
            returned unchanged.

    Attributes:
        indices: positions of the kept samples in ``dataset`` (ascending).
        label_values: the original labels kept, in the order given.
        classes: class names of the view, in new-label order, when the dataset has names;
            otherwise the original labels as strings.

    Raises:
        AdvTransferError: ``classes`` is empty, has duplicates, or names labels/classes that
            do not occur in ``dataset`` (the message lists those that do).
    """

    def __init__(
        self,
        dataset: Dataset[Any],
        classes: Iterable[int | str],
        *,
        remap: bool = True,
    ) -> None:
        if isinstance(classes, (str, bytes)):
            raise AdvTransferTypeError(
                "classes must be a list of labels or class names, not a single string; "
                f"use [{classes!r}]"
            )
        requested = list(classes)
        if not requested:
            raise AdvTransferError("classes is empty; give at least one label to keep")
        names = _class_names(dataset)
        values = [_label_value(c, names) for c in requested]
        duplicates = sorted({v for v in values if values.count(v) > 1})
        if duplicates:
            raise AdvTransferError(f"classes contains duplicate labels: {duplicates}")

        labels = dataset_labels(dataset)
        assert labels is not None  # allow_iteration=True never returns None
        present = set(np.unique(labels).tolist())
        absent = [v for v in values if v not in present]
        if absent:
            raise AdvTransferError(
                f"classes {absent} do not occur in the dataset; {_describe_labels(present)}"
            )

        self.dataset = dataset
        self.remap = remap
        self.label_values: tuple[int, ...] = tuple(values)
        self._mapping = {v: (i if remap else v) for i, v in enumerate(values)}
        mask = np.isin(labels, np.asarray(values, dtype=np.int64))
        self.indices = np.flatnonzero(mask).astype(np.int64)
        kept = labels[self.indices]
        lookup = np.vectorize(self._mapping.__getitem__, otypes=[np.int64])
        self._targets = lookup(kept) if kept.size else kept
        if names is not None:
            chosen = [names[v] if 0 <= v < len(names) else str(v) for v in values]
        else:
            chosen = [str(v) for v in values]
        self.classes: list[str] = chosen

    @property
    def num_classes(self) -> int:
        """Number of classes kept."""
        return len(self.label_values)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        x, y = self.dataset[int(self.indices[index])]
        original = _scalar_label(y)
        try:
            return x, self._mapping[original]
        except KeyError:  # pragma: no cover - the dataset changed under us
            raise AdvTransferError(
                f"sample {int(self.indices[index])} now has label {original}, which is not one "
                f"of {list(self.label_values)}; was the dataset modified?"
            ) from None

    def __repr__(self) -> str:
        return (
            f"ClassSubset({type(self.dataset).__name__}, classes={list(self.label_values)}, "
            f"remap={self.remap}, n={len(self)})"
        )


class RemapLabels(Dataset[Any]):
    """``dataset`` with every label passed through ``mapping`` (a dict or a callable).

    With a dict, every label of the dataset must be a key: this is checked at construction when
    the labels can be read without loading images, otherwise when the sample is accessed.
    Use :class:`ClassSubset` first to drop labels that have no image under the mapping.
    """

    def __init__(
        self, dataset: Dataset[Any], mapping: Mapping[int, int] | Callable[[int], int]
    ) -> None:
        if not isinstance(mapping, Mapping) and not callable(mapping):
            raise AdvTransferTypeError(
                f"mapping must be a dict or a callable, got {type(mapping).__name__}"
            )
        self.dataset = dataset
        self.mapping = mapping
        base = dataset_labels(dataset, allow_iteration=False)
        self._targets: np.ndarray | None = None
        if base is not None:
            if isinstance(mapping, Mapping):
                unmapped = sorted(set(np.unique(base).tolist()) - set(mapping))
                if unmapped:
                    raise AdvTransferError(
                        f"labels {unmapped} of the dataset have no entry in the mapping "
                        f"(keys: {sorted(mapping)}); drop them first with ClassSubset"
                    )
            self._targets = np.asarray([self._map(int(v)) for v in base], dtype=np.int64)

    def _map(self, label: int) -> int:
        if isinstance(self.mapping, Mapping):
            try:
                return int(self.mapping[label])
            except KeyError:
                raise AdvTransferError(
                    f"label {label} has no entry in the mapping (keys: {sorted(self.mapping)})"
                ) from None
        return int(self.mapping(label))

    @property
    def targets(self) -> list[int] | None:
        """Mapped labels of all samples, or ``None`` if the base labels are not known cheaply."""
        return None if self._targets is None else self._targets.tolist()

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Any, int]:
        x, y = self.dataset[index]
        return x, self._map(_scalar_label(y))

    def __repr__(self) -> str:
        return f"RemapLabels({type(self.dataset).__name__}, n={len(self)})"


def _balanced_indices(labels: np.ndarray, n: int, generator: torch.Generator) -> np.ndarray:
    """Pick ``n`` indices spread as evenly as possible over the classes of ``labels``."""
    classes = np.unique(labels)
    groups = []
    for c in classes.tolist():
        members = np.flatnonzero(labels == c)
        order = torch.randperm(len(members), generator=generator).numpy()
        groups.append(members[order])
    sizes = np.array([len(g) for g in groups])
    quota = np.zeros(len(groups), dtype=np.int64)
    remaining = n
    # Water-filling: give each class an equal share, capped by its size, until n are taken.
    while remaining > 0:
        open_classes = np.flatnonzero(quota < sizes)
        share, extra = divmod(remaining, len(open_classes))
        for rank, k in enumerate(open_classes.tolist()):
            want = share + (1 if rank < extra else 0)
            got = min(want, int(sizes[k] - quota[k]))
            quota[k] += got
            remaining -= got
    chosen = np.concatenate([g[:q] for g, q in zip(groups, quota, strict=True)])
    return np.sort(chosen)


class LimitedDataset(_LabelledView):
    """A deterministic subset of at most ``n`` samples of ``dataset``, balanced over classes.

    If the labels can be read without loading images (see :func:`dataset_labels`), each class
    gets an equal share of the ``n`` samples (classes with too few samples give their share to
    the others); otherwise ``n`` samples are drawn uniformly. The choice depends only on the
    labels, ``n`` and ``generator``: with ``generator=None`` a generator seeded with 0 is used,
    so repeated calls return the same subset. Samples keep their original order and labels.
    If ``n >= len(dataset)`` the whole dataset is used.
    """

    def __init__(
        self, dataset: Dataset[Any], n: int, *, generator: torch.Generator | None = None
    ) -> None:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
            raise AdvTransferTypeError(f"n must be an integer, got {type(n).__name__}")
        if n < 0:
            raise AdvTransferError(f"n must be >= 0, got {n}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise AdvTransferTypeError(
                f"generator must be a torch.Generator or None, got {type(generator).__name__}"
            )
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        total = len(dataset)  # type: ignore[arg-type]
        labels = dataset_labels(dataset, allow_iteration=False)
        self.dataset = dataset
        self.n = int(n)
        if n >= total:
            indices = np.arange(total, dtype=np.int64)
        elif labels is not None:
            indices = _balanced_indices(labels, int(n), gen)
        else:
            indices = np.sort(torch.randperm(total, generator=gen)[: int(n)].numpy())
        self.indices = indices.astype(np.int64)
        self._labels_known = labels is not None
        self._targets = labels[self.indices] if labels is not None else np.zeros(0, np.int64)
        names = _class_names(dataset)
        if names is not None:
            self.classes: list[str] = names

    @property
    def targets(self) -> list[int] | None:  # type: ignore[override]
        """Labels of the kept samples, or ``None`` if the base labels are not known cheaply."""
        return self._targets.tolist() if self._labels_known else None

    def __getitem__(self, index: int) -> Any:
        return self.dataset[int(self.indices[index])]

    def __repr__(self) -> str:
        return f"LimitedDataset({type(self.dataset).__name__}, n={len(self)})"


def take(
    dataset: Dataset[Any], n: int, *, generator: torch.Generator | None = None
) -> LimitedDataset:
    """Return :class:`LimitedDataset` ``(dataset, n, generator=generator)``.

    Used by ``--quick`` runs to cap every split (e.g. at 256 samples) deterministically.
    """
    return LimitedDataset(dataset, n, generator=generator)
