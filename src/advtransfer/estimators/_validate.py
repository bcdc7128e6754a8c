"""Input validation shared by the transferability estimators.

Every estimator accepts numpy arrays, torch tensors or nested sequences, and converts them to
numpy ``float64`` (features, probabilities, regression targets) or to integer class codes
``0..C-1`` (class labels, via :func:`numpy.unique` with ``return_inverse=True``). Anything that
cannot be used raises :class:`~advtransfer.errors.AdvTransferError` naming the parameter and what
is accepted.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from advtransfer.errors import AdvTransferError, AdvTransferTypeError

__all__ = [
    "as_array",
    "as_class_labels",
    "as_features",
    "as_probabilities",
    "check_n_samples",
    "features_and_labels",
]


def _to_numpy(x: Any, name: str) -> np.ndarray:
    """Convert a torch tensor, numpy array or nested sequence to a numpy array."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        t = x.detach()
        if t.is_complex():
            raise AdvTransferTypeError(f"{name} must be real-valued; got a complex tensor")
        if t.dtype in (torch.bfloat16, torch.float16):
            t = t.float()
        return t.cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    if x is None or isinstance(x, (str, bytes, dict)):
        raise AdvTransferTypeError(
            f"{name} must be a numpy array or a torch tensor; got {type(x).__name__}"
        )
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise AdvTransferTypeError(
            f"{name} must be a numpy array or a torch tensor; got {type(x).__name__} "
            f"that cannot be converted ({exc})"
        ) from exc


def as_array(x: Any, name: str, *, ndim: int | tuple[int, ...], shape_hint: str) -> np.ndarray:
    """Return ``x`` as a finite, non-empty ``float64`` array with one of the allowed ``ndim``.

    Parameters
    ----------
    x:
        Array-like input (numpy array, torch tensor or nested sequence).
    name:
        Parameter name used in error messages.
    ndim:
        Allowed number of dimensions (an int or a tuple of ints).
    shape_hint:
        Human-readable description of the expected shape, e.g. ``"(n_samples, n_features)"``.
    """
    arr = _to_numpy(x, name)
    allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if arr.ndim not in allowed:
        dims = " or ".join(f"{d}-D" for d in allowed)
        raise AdvTransferError(
            f"{name} must be a {dims} array {shape_hint}; got shape {tuple(arr.shape)}"
        )
    if arr.dtype.kind == "c":
        raise AdvTransferTypeError(f"{name} must be real-valued; got complex dtype {arr.dtype}")
    if arr.dtype.kind not in "biuf":
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise AdvTransferTypeError(f"{name} must hold numbers; got dtype {arr.dtype}") from exc
    arr = np.asarray(arr, dtype=np.float64)
    if arr.size == 0:
        raise AdvTransferError(f"{name} must not be empty; got shape {tuple(arr.shape)}")
    if not np.all(np.isfinite(arr)):
        n_bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise AdvTransferError(
            f"{name} must contain only finite values; found {n_bad} NaN or infinite entries"
        )
    return arr


def as_features(x: Any, name: str = "features", *, min_samples: int = 2) -> np.ndarray:
    """Return a finite ``(n_samples, n_features)`` float64 array with at least ``min_samples`` rows.

    A 1-D input is rejected rather than reshaped, because it is ambiguous whether it holds one
    sample or one feature.
    """
    arr = as_array(x, name, ndim=2, shape_hint="(n_samples, n_features)")
    if arr.shape[0] < min_samples:
        raise AdvTransferError(
            f"{name} must have at least {min_samples} samples (rows); got {arr.shape[0]}"
        )
    return arr


def as_probabilities(x: Any, name: str = "source_probs", *, atol: float = 1e-4) -> np.ndarray:
    """Return a ``(n_samples, n_source_classes)`` array of probability rows.

    Entries must be finite and non-negative, and every row must sum to 1 within ``atol``.
    """
    arr = as_array(x, name, ndim=2, shape_hint="(n_samples, n_source_classes)")
    if np.any(arr < 0):
        raise AdvTransferError(
            f"{name} must hold probabilities (non-negative entries, rows summing to 1); "
            f"found a negative entry ({float(arr.min()):.6g}). Apply softmax to logits first."
        )
    row_sums = arr.sum(axis=1)
    worst = int(np.argmax(np.abs(row_sums - 1.0)))
    if abs(row_sums[worst] - 1.0) > atol:
        raise AdvTransferError(
            f"{name} must hold probabilities whose rows sum to 1 (tolerance {atol:g}); "
            f"row {worst} sums to {float(row_sums[worst]):.6g}. Apply softmax to logits first."
        )
    return arr


def as_class_labels(
    x: Any, name: str = "labels", *, min_classes: int = 2
) -> tuple[np.ndarray, int]:
    """Map 1-D class labels of any values to integer codes ``0..C-1``.

    Integer, boolean and string labels are accepted as they are; float labels must be integral
    (e.g. ``0.0, 1.0``) so that a regression target is not silently treated as thousands of
    classes. Returns ``(codes, n_classes)``.
    """
    arr = _to_numpy(x, name)
    if arr.ndim != 1:
        raise AdvTransferError(
            f"{name} must be a 1-D array of class labels (n_samples,); got shape {tuple(arr.shape)}"
        )
    if arr.size == 0:
        raise AdvTransferError(f"{name} must not be empty")
    kind = arr.dtype.kind
    if kind == "c":
        raise AdvTransferTypeError(f"{name} must hold class labels; got complex dtype {arr.dtype}")
    if kind == "f":
        if not np.all(np.isfinite(arr)):
            raise AdvTransferError(f"{name} must not contain NaN or infinite values")
        if not np.all(arr == np.round(arr)):
            raise AdvTransferError(
                f"{name} must hold class labels (integers, booleans or strings); got "
                "non-integral floats"
            )
    elif kind not in "biuUSO":
        raise AdvTransferTypeError(
            f"{name} must hold class labels (integers, booleans or strings); got dtype {arr.dtype}"
        )
    try:
        _, codes = np.unique(arr, return_inverse=True)
    except TypeError as exc:
        raise AdvTransferTypeError(
            f"{name} must hold mutually comparable class labels; got mixed types ({exc})"
        ) from exc
    codes = codes.reshape(-1).astype(np.intp)
    n_classes = int(codes.max()) + 1
    if n_classes < min_classes:
        raise AdvTransferError(
            f"{name} must contain at least {min_classes} distinct classes; got {n_classes}"
        )
    return codes, n_classes


def check_n_samples(n_a: int, name_a: str, n_b: int, name_b: str) -> None:
    """Raise unless two inputs have the same number of samples."""
    if n_a != n_b:
        raise AdvTransferError(
            f"{name_a} and {name_b} must have the same number of samples; got {n_a} and {n_b}"
        )


def features_and_labels(features: Any, labels: Any, *,
                        min_samples: int = 2) -> tuple[np.ndarray, np.ndarray, int]:
    """``(features, codes, n_classes)``: :func:`as_features` of ``features`` (at least
    ``min_samples`` rows), :func:`as_class_labels` of ``labels``, checked to hold as many
    samples."""
    f = as_features(features, "features", min_samples=min_samples)
    codes, n_classes = as_class_labels(labels, "labels")
    check_n_samples(f.shape[0], "features", codes.shape[0], "labels")
    return f, codes, n_classes
