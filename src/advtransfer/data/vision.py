"""CIFAR-10, STL-10 and CelebA as datasets of float tensors in ``[0, 1]``.

Each loader wraps torchvision's own dataset class (:class:`~torchvision.datasets.CIFAR10`,
:class:`~torchvision.datasets.STL10`, :class:`~torchvision.datasets.CelebA`) and its own download
code (``download=True``). Images come out as ``float32`` tensors of shape ``(3, size, size)`` in
``[0, 1]``; normalisation belongs to the model wrapper, not to the data.

Files and checksums
-------------------
Before torchvision is involved, the loader checks the dataset directory itself:

* missing files raise :class:`~advtransfer.errors.AdvTransferError` listing exactly which files
  are missing under which directory, with the official URL and the ``download=True``
  (CLI ``--download``) hint;
* present files are checked for *structure* (a CIFAR-10 batch must unpickle to a dict with
  ``data`` of shape ``(N, 3072)`` ``uint8`` and ``N`` labels; an STL-10 ``*_X.bin`` size must be
  a multiple of ``3*96*96`` bytes and match its ``*_y.bin``; CelebA's text files must parse, agree
  with each other and reference existing images) and the error names the faulty file;
* MD5 checksums (torchvision's own tables, via
  :func:`torchvision.datasets.utils.check_integrity`) are verified only after a download or
  when ``verify=True``. Files written by hand or by :mod:`advtransfer.data.fixtures` are not the
  official files and would never match.

torchvision's constructors insist on the official checksums (``CIFAR10.__init__`` raises
``RuntimeError`` otherwise, and ``CIFAR10._load_meta`` checks ``batches.meta`` separately). The
private subclasses below override ``_check_integrity`` (and ``CIFAR10._load_meta``) to a
presence check of the files the requested split needs; everything else, including the readers and
``download()``, is torchvision's code. With ``download=True`` torchvision downloads only when a
needed file is missing; files already present are used as they are (add ``verify=True`` to check
them).

Security
--------
CIFAR-10's python batches *are* pickles, and torchvision unpickles them. They are only ever read
from the data root the caller passes. As an additional guard, advtransfer first unpickles each
batch with a restricted unpickler that allows nothing but plain containers and numpy arrays, and
refuses the file otherwise, before torchvision reads it.
"""

from __future__ import annotations

import csv
import difflib
import os
import pickle
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T
from torchvision.datasets import CIFAR10 as _TorchvisionCIFAR10
from torchvision.datasets import STL10, CelebA
from torchvision.datasets.utils import calculate_md5, check_integrity

from advtransfer.errors import AdvTransferError, AdvTransferTypeError

__all__ = [
    "CELEBA_ATTRIBUTES",
    "CIFAR10_CLASSES",
    "CIFAR10_TO_STL10",
    "DATASET_INFO",
    "STL10_CLASSES",
    "STL10_TO_CIFAR10",
    "DatasetInfo",
    "celeba",
    "celeba_image_names",
    "cifar10",
    "missing_files",
    "most_common_identities",
    "stl10",
    "verify_checksums",
]

# --------------------------------------------------------------------------------------------
# Metadata
# --------------------------------------------------------------------------------------------

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
"""CIFAR-10 class names in label order (as in ``batches.meta``)."""

STL10_CLASSES: tuple[str, ...] = (
    "airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck",
)  # fmt: skip
"""STL-10 class names in label order (as in ``class_names.txt``); not CIFAR-10's order."""

STL10_TO_CIFAR10: dict[int, int] = {0: 0, 1: 2, 2: 1, 3: 3, 4: 4, 5: 5, 6: 7, 8: 8, 9: 9}
"""STL-10 label -> CIFAR-10 label for the nine shared classes (STL "car" is CIFAR "automobile").

STL-10 ``monkey`` (7) has no CIFAR-10 counterpart and CIFAR-10 ``frog`` (6) has no STL-10
counterpart, so neither appears. To see STL-10 with CIFAR-10 label ids::

    RemapLabels(ClassSubset(stl, list(STL10_TO_CIFAR10), remap=False), STL10_TO_CIFAR10)
"""

CIFAR10_TO_STL10: dict[int, int] = {c: s for s, c in STL10_TO_CIFAR10.items()}
"""Inverse of :data:`STL10_TO_CIFAR10` (CIFAR-10 ``frog`` = 6 is absent)."""

CELEBA_ATTRIBUTES: tuple[str, ...] = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair",
    "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair",
    "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes",
    "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks",
    "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat",
    "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)  # fmt: skip
"""The 40 CelebA attributes in the column order of ``list_attr_celeba.txt``."""

_CELEBA_TEXT_FILES: tuple[str, ...] = (
    "list_attr_celeba.txt",
    "identity_CelebA.txt",
    "list_bbox_celeba.txt",
    "list_landmarks_align_celeba.txt",
    "list_eval_partition.txt",
)
_CELEBA_IMAGE_DIR = "img_align_celeba"
_STL_IMAGE_BYTES = 3 * 96 * 96
_CIFAR_ROW = 3 * 32 * 32


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset, for error messages, documentation and the CLI.

    ``files`` maps each split to the paths (relative to ``root/base_folder``) that the loader
    needs; a trailing ``/`` marks a directory. ``file_sizes`` gives approximate sizes in bytes of
    the official files. URLs come from torchvision's class attributes.
    """

    name: str
    title: str
    classes: tuple[str, ...]
    num_classes: int
    url: str
    homepage: str
    archive: str
    archive_size: str
    base_folder: str
    files: Mapping[str, tuple[str, ...]]
    file_sizes: Mapping[str, int]
    split_sizes: Mapping[str, int]
    image_shape: tuple[int, int, int]
    notes: str = ""
    extra_urls: Mapping[str, str] = field(default_factory=dict)

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits the loader accepts."""
        return tuple(self.files)

    def describe_file(self, relative: str) -> str:
        """``relative`` with its approximate official size, e.g. ``data_batch_1 (~31 MB)``."""
        size = self.file_sizes.get(relative)
        return relative if size is None else f"{relative} (~{_human_size(size)})"


def _human_size(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" or value >= 10 else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


def _cifar_md5s() -> dict[str, str]:
    table = {name: md5 for name, md5 in _TorchvisionCIFAR10.train_list}
    table.update({name: md5 for name, md5 in _TorchvisionCIFAR10.test_list})
    table[_TorchvisionCIFAR10.meta["filename"]] = _TorchvisionCIFAR10.meta["md5"]
    return table


def _stl_md5s() -> dict[str, str]:
    return {name: md5 for name, md5 in STL10.train_list + STL10.test_list}


def _celeba_md5s() -> dict[str, str]:
    return {name: md5 for _, md5, name in CelebA.file_list if name.endswith(".txt")}


def _celeba_drive_urls() -> dict[str, str]:
    return {name: f"https://drive.google.com/file/d/{fid}" for fid, _, name in CelebA.file_list}


_MD5_TABLES: dict[str, Callable[[], dict[str, str]]] = {
    "cifar10": _cifar_md5s,
    "stl10": _stl_md5s,
    "celeba": _celeba_md5s,
}

_CIFAR_META = _TorchvisionCIFAR10.meta["filename"]
_CIFAR_TRAIN = tuple(name for name, _ in _TorchvisionCIFAR10.train_list)
_CIFAR_TEST = tuple(name for name, _ in _TorchvisionCIFAR10.test_list)

DATASET_INFO: dict[str, DatasetInfo] = {
    "cifar10": DatasetInfo(
        name="cifar10",
        title="CIFAR-10",
        classes=CIFAR10_CLASSES,
        num_classes=10,
        url=_TorchvisionCIFAR10.url,
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
        archive=_TorchvisionCIFAR10.filename,
        archive_size="~170 MB",
        base_folder=_TorchvisionCIFAR10.base_folder,
        files={"train": (*_CIFAR_TRAIN, _CIFAR_META), "test": (*_CIFAR_TEST, _CIFAR_META)},
        file_sizes={**{n: 31_035_700 for n in _CIFAR_TRAIN + _CIFAR_TEST}, _CIFAR_META: 158},
        split_sizes={"train": 50_000, "test": 10_000},
        image_shape=(3, 32, 32),
        notes="Python pickle batches of 10,000 32x32 RGB images each.",
    ),
    "stl10": DatasetInfo(
        name="stl10",
        title="STL-10",
        classes=STL10_CLASSES,
        num_classes=10,
        url=STL10.url,
        homepage="https://cs.stanford.edu/~acoates/stl10/",
        archive=STL10.filename,
        archive_size="~2.6 GB",
        base_folder=STL10.base_folder,
        files={"train": ("train_X.bin", "train_y.bin"), "test": ("test_X.bin", "test_y.bin")},
        file_sizes={
            "train_X.bin": 5_000 * _STL_IMAGE_BYTES,
            "train_y.bin": 5_000,
            "test_X.bin": 8_000 * _STL_IMAGE_BYTES,
            "test_y.bin": 8_000,
            "unlabeled_X.bin": 100_000 * _STL_IMAGE_BYTES,
            STL10.class_names_file: 60,
        },
        split_sizes={"train": 5_000, "test": 8_000},
        image_shape=(3, 96, 96),
        notes=(
            "Raw uint8 files of 96x96 images stored channel by channel, column-major; labels "
            "are 1-based bytes. The archive also holds unlabeled_X.bin (~2.8 GB), which is not "
            "used. Class order differs from CIFAR-10: see STL10_TO_CIFAR10."
        ),
    ),
    "celeba": DatasetInfo(
        name="celeba",
        title="CelebA",
        classes=CELEBA_ATTRIBUTES,
        num_classes=len(CELEBA_ATTRIBUTES),
        url=_celeba_drive_urls()["img_align_celeba.zip"],
        homepage="https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html",
        archive="img_align_celeba.zip",
        archive_size="~1.4 GB",
        base_folder=CelebA.base_folder,
        files={
            split: (*_CELEBA_TEXT_FILES, _CELEBA_IMAGE_DIR + "/")
            for split in ("train", "valid", "test", "all")
        },
        file_sizes={
            "list_attr_celeba.txt": 26_700_000,
            "identity_CelebA.txt": 3_400_000,
            "list_bbox_celeba.txt": 6_100_000,
            "list_landmarks_align_celeba.txt": 12_200_000,
            "list_eval_partition.txt": 2_800_000,
            _CELEBA_IMAGE_DIR + "/": 1_450_000_000,
        },
        split_sizes={"train": 162_770, "valid": 19_867, "test": 19_962, "all": 202_599},
        image_shape=(3, 218, 178),
        notes=(
            "202,599 aligned 178x218 JPEGs of 10,177 identities with 40 binary attributes. "
            "torchvision downloads it from Google Drive and needs the 'gdown' package; Drive "
            "quotas often make a manual download from the homepage necessary."
        ),
        extra_urls=_celeba_drive_urls(),
    ),
}
"""Metadata for ``cifar10``, ``stl10`` and ``celeba``; see :class:`DatasetInfo`."""


# --------------------------------------------------------------------------------------------
# Argument and file checks
# --------------------------------------------------------------------------------------------


def _check_choice(value: Any, name: str, choices: Sequence[str]) -> str:
    if not isinstance(value, str):
        raise AdvTransferTypeError(f"{name} must be a string, one of {list(choices)}")
    if value not in choices:
        raise AdvTransferError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def _check_size(size: Any) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise AdvTransferTypeError(f"size must be a positive integer, got {type(size).__name__}")
    if size < 1:
        raise AdvTransferError(f"size must be a positive integer, got {size}")
    return int(size)


def _resolve_root(root: str | os.PathLike[str], info: DatasetInfo) -> Path:
    """The data root as a :class:`Path`; a path to the dataset folder itself is accepted too."""
    if not isinstance(root, (str, os.PathLike)):
        raise AdvTransferTypeError(f"root must be a path, got {type(root).__name__}")
    path = Path(root).expanduser()
    if path.name == info.base_folder and not (path / info.base_folder).exists():
        return path.parent
    return path


def _info(name: str) -> DatasetInfo:
    try:
        return DATASET_INFO[name]
    except KeyError:
        raise AdvTransferError(
            f"unknown dataset {name!r}; known: {', '.join(sorted(DATASET_INFO))}"
        ) from None


def missing_files(name: str, root: str | os.PathLike[str], split: str) -> list[str]:
    """The files (relative to ``root/<base folder>``) that split ``split`` of ``name`` lacks."""
    info = _info(name)
    _check_choice(split, "split", info.splits)
    folder = _resolve_root(root, info) / info.base_folder
    missing = []
    for relative in info.files[split]:
        path = folder / relative
        ok = path.is_dir() if relative.endswith("/") else path.is_file()
        if not ok:
            missing.append(relative)
    return missing


def _how_to_get(info: DatasetInfo, root: Path) -> str:
    folder = root / info.base_folder
    text = (
        f"To get them, pass download=True (CLI: --download) to let torchvision fetch "
        f"{info.archive} ({info.archive_size}) from {info.url}; or download it yourself "
        f"(see {info.homepage}) and extract it so that {folder} holds the files above."
    )
    if info.name == "celeba":
        text += (
            f" CelebA is hosted on Google Drive: downloading needs 'pip install gdown', and "
            f"Drive quotas may require fetching {info.archive} and the text files by hand "
            f"(text files: {', '.join(info.extra_urls[f] for f in _CELEBA_TEXT_FILES)})."
        )
    return text


def _missing_error(info: DatasetInfo, root: Path, split: str, missing: list[str]) -> str:
    folder = root / info.base_folder
    where = f"{folder}" + ("" if folder.is_dir() else " (directory does not exist)")
    listing = "\n".join(f"  - {info.describe_file(m)}" for m in missing)
    return (
        f"{info.title} ({split} split) is not available: {len(missing)} file(s) missing under "
        f"{where}:\n{listing}\n{_how_to_get(info, root)}"
    )


def check_available(wanted: Sequence[tuple[str, str]], root: str | os.PathLike[str], *,
                    download: bool = False) -> None:
    """Raise one :class:`AdvTransferError` naming every missing file of every ``(dataset,
    split)`` in ``wanted`` and how to get each, unless ``download`` (then the loaders fetch
    them): a recipe on several datasets reports all of them at once, before any work."""
    if download:
        return
    errors = []
    for name, split in wanted:
        info = _info(name)
        missing = missing_files(name, root, split)
        if missing:
            errors.append(_missing_error(info, _resolve_root(root, info), split, missing))
    if errors:
        raise AdvTransferError("\n".join(errors))


def verify_checksums(name: str, root: str | os.PathLike[str], split: str) -> None:
    """Check the files of ``split`` against torchvision's official MD5 checksums.

    Raises :class:`AdvTransferError` naming the first file whose checksum does not match (or that
    is missing). CelebA's images have no published per-file checksum; its text files are checked.
    """
    info = _info(name)
    _check_choice(split, "split", info.splits)
    root_path = _resolve_root(root, info)
    folder = root_path / info.base_folder
    table = _MD5_TABLES[name]()
    for relative in info.files[split]:
        md5 = table.get(relative)
        if md5 is None:
            continue
        path = folder / relative
        if check_integrity(str(path), md5):
            continue
        if not path.is_file():
            raise AdvTransferError(_missing_error(info, root_path, split, [relative]))
        actual = calculate_md5(str(path))
        raise AdvTransferError(
            f"checksum of {path} does not match the official {info.title} file (MD5 expected "
            f"{md5}, got {actual}): it is corrupt, incomplete or not the official release (files "
            f"written by advtransfer.data.fixtures never match). Delete it and pass download=True "
            f"(CLI: --download) to fetch {info.url}, or pass verify=False to use it anyway."
        )


# --------------------------------------------------------------------------------------------
# Structural validation (no checksums)
# --------------------------------------------------------------------------------------------

_ALLOWED_PICKLE_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
        ("__builtin__", "bytes"),  # protocol-2 pickles of empty arrays call bytes()
        ("builtins", "bytes"),
    }
)


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds plain containers and numpy arrays (CIFAR batch contents)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to load global {module}.{name}: a CIFAR-10 batch holds only dicts, "
            "lists, strings and numpy arrays"
        )


def _safe_unpickle(stream: BinaryIO) -> Any:
    return _RestrictedUnpickler(stream, encoding="latin1").load()


def _read_cifar_pickle(path: Path, what: str) -> Any:
    try:
        with path.open("rb") as f:
            return _safe_unpickle(f)
    except pickle.UnpicklingError as exc:
        if "refusing" in str(exc):
            raise AdvTransferError(f"{path} is not a plain CIFAR-10 {what}: {exc}") from exc
        raise AdvTransferError(
            f"cannot read {path}: the file is truncated or is not a CIFAR-10 {what} "
            f"(UnpicklingError: {exc})"
        ) from exc
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise AdvTransferError(
            f"cannot read {path}: the file is truncated or is not a CIFAR-10 {what} "
            f"({type(exc).__name__}: {exc})"
        ) from exc


def _validate_cifar10(folder: Path, split: str) -> None:
    batches = _CIFAR_TRAIN if split == "train" else _CIFAR_TEST
    total = 0
    for name in batches:
        path = folder / name
        entry = _read_cifar_pickle(path, "python batch")
        if not isinstance(entry, dict) or "data" not in entry:
            keys = sorted(map(str, entry)) if isinstance(entry, dict) else None
            got = f"a dict with keys {keys}" if keys is not None else type(entry).__name__
            raise AdvTransferError(
                f"{path} is not a CIFAR-10 batch: expected a dict with 'data' and 'labels', "
                f"got {got}"
            )
        data = entry["data"]
        if (
            not isinstance(data, np.ndarray)
            or data.dtype != np.uint8
            or data.ndim != 2
            or data.shape[1] != _CIFAR_ROW
        ):
            desc = (
                f"{data.dtype} array of shape {data.shape}"
                if isinstance(data, np.ndarray)
                else type(data).__name__
            )
            raise AdvTransferError(
                f"{path}: 'data' must be a uint8 array of shape (N, {_CIFAR_ROW}), got {desc}"
            )
        labels = entry.get("labels", entry.get("fine_labels"))
        if labels is None:
            raise AdvTransferError(f"{path}: the batch has no 'labels' entry")
        try:
            label_array = np.asarray(labels, dtype=np.int64).reshape(-1)
        except (TypeError, ValueError) as exc:
            raise AdvTransferError(f"{path}: 'labels' must be a list of integers") from exc
        if len(label_array) != data.shape[0]:
            raise AdvTransferError(
                f"{path}: 'labels' has {len(label_array)} entries but 'data' has "
                f"{data.shape[0]} rows"
            )
        bad = np.flatnonzero((label_array < 0) | (label_array > 9))
        if bad.size:
            raise AdvTransferError(
                f"{path}: labels must be in 0..9, found {int(label_array[bad[0]])} at "
                f"position {int(bad[0])}"
            )
        total += data.shape[0]
    if total == 0:
        raise AdvTransferError(f"the CIFAR-10 {split} batches in {folder} hold no images")
    meta_path = folder / _CIFAR_META
    meta = _read_cifar_pickle(meta_path, "metadata file")
    names = meta.get("label_names") if isinstance(meta, dict) else None
    if (
        not isinstance(names, list)
        or len(names) != 10
        or not all(isinstance(n, str) for n in names)
    ):
        raise AdvTransferError(f"{meta_path}: expected a dict with 'label_names', 10 strings")


def _validate_stl10(folder: Path, split: str) -> None:
    x_path = folder / f"{split}_X.bin"
    y_path = folder / f"{split}_y.bin"
    size = x_path.stat().st_size
    if size == 0 or size % _STL_IMAGE_BYTES:
        raise AdvTransferError(
            f"{x_path} has {size} bytes, which is not a positive multiple of one 3x96x96 image "
            f"({_STL_IMAGE_BYTES} bytes): the file is truncated or not an STL-10 image file"
        )
    n_images = size // _STL_IMAGE_BYTES
    labels = np.fromfile(y_path, dtype=np.uint8)
    if len(labels) != n_images:
        raise AdvTransferError(
            f"{y_path} holds {len(labels)} labels but {x_path} holds {n_images} images: one of "
            "them is truncated or they come from different splits"
        )
    bad = np.flatnonzero((labels < 1) | (labels > 10))
    if bad.size:
        raise AdvTransferError(
            f"{y_path}: labels must be 1..10 (STL-10 stores 1-based labels), found "
            f"{int(labels[bad[0]])} at position {int(bad[0])}"
        )
    names_path = folder / STL10.class_names_file
    if names_path.is_file():
        names = [n for n in names_path.read_text().splitlines() if n.strip()]
        if len(names) != 10:
            raise AdvTransferError(
                f"{names_path} lists {len(names)} class names; STL-10 has 10 (one per line)"
            )


def _read_celeba_table(
    path: Path, *, header: bool, columns: int | None
) -> tuple[list[str], list[str], np.ndarray]:
    """Parse a CelebA list file exactly as torchvision does; return (header, names, values)."""
    try:
        with path.open(newline="") as f:
            rows = list(csv.reader(f, delimiter=" ", skipinitialspace=True))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise AdvTransferError(f"cannot read {path}: {exc}") from exc
    head: list[str] = []
    first = 0
    if header:
        if len(rows) < 2:
            raise AdvTransferError(
                f"{path} must start with a count line and a header line; it has {len(rows)} line(s)"
            )
        head = rows[1]
        first = 2
    names: list[str] = []
    width = columns
    for line, row in enumerate(rows[first:], start=first + 1):
        if not row:
            raise AdvTransferError(f"{path}, line {line}: empty line")
        if width is None:
            width = len(row) - 1
        if len(row) - 1 != width:
            raise AdvTransferError(
                f"{path}, line {line}: expected an image name and {width} value(s), got "
                f"{len(row)} field(s) {row[:4]}{'...' if len(row) > 4 else ''}"
            )
        names.append(row[0])
    try:
        values = np.array([row[1:] for row in rows[first:]], dtype=np.int64)
    except ValueError:
        for line, row in enumerate(rows[first:], start=first + 1):
            for value in row[1:]:
                try:
                    int(value)
                except ValueError:
                    raise AdvTransferError(
                        f"{path}, line {line}: {value!r} is not an integer (fields are separated "
                        "by spaces; no trailing space allowed)"
                    ) from None
        raise  # pragma: no cover - np.array failed for another reason
    if values.ndim == 1:  # no rows
        values = values.reshape(0, width or 0)
    return head, names, values


def _celeba_attr_names(header: list[str]) -> list[str]:
    names = list(header)
    while names and names[-1] == "":  # the official header line ends with a space
        names.pop()
    return names


def _validate_celeba(folder: Path, split: str) -> None:
    """Check the CelebA list files under ``folder`` (parsed as torchvision does), that they
    list the same images in the same order, and that the images of ``split`` exist."""
    attr_names = _celeba_attr_rows(folder / "list_attr_celeba.txt")
    tables = {
        "list_attr_celeba.txt": attr_names,
        "identity_CelebA.txt": _read_celeba_table(
            folder / "identity_CelebA.txt", header=False, columns=1
        )[1],
        "list_bbox_celeba.txt": _read_celeba_table(
            folder / "list_bbox_celeba.txt", header=True, columns=4
        )[1],
        "list_landmarks_align_celeba.txt": _read_celeba_table(
            folder / "list_landmarks_align_celeba.txt", header=True, columns=10
        )[1],
    }
    part_path = folder / "list_eval_partition.txt"
    _, part_names, partition = _read_celeba_table(part_path, header=False, columns=1)
    bad = np.flatnonzero(~np.isin(partition[:, 0], (0, 1, 2)))
    if bad.size:
        raise AdvTransferError(
            f"{part_path}, line {int(bad[0]) + 1}: partition must be 0 (train), 1 (valid) or "
            f"2 (test), got {int(partition[bad[0], 0])}"
        )
    for filename, names in tables.items():
        _check_same_images(folder / filename, names, part_path, part_names)
    code = {"train": 0, "valid": 1, "test": 2}.get(split)
    selected = (
        part_names
        if code is None
        else [n for n, p in zip(part_names, partition[:, 0].tolist(), strict=True) if p == code]
    )
    _check_celeba_split(folder, split, part_path, selected)


def _celeba_attr_rows(attr_path: Path) -> list[str]:
    """The image names of ``list_attr_celeba.txt``, after checking its header (attribute
    names, none empty), that every row has one value per attribute and every value is -1 or
    1."""
    head, attr_names, attr = _read_celeba_table(attr_path, header=True, columns=None)
    header = _celeba_attr_names(head)
    if not header or "" in header:
        raise AdvTransferError(f"{attr_path}, line 2: bad attribute header {head[:5]}...")
    if attr.shape[1] != len(header):
        raise AdvTransferError(
            f"{attr_path}: the header names {len(header)} attributes but rows have "
            f"{attr.shape[1]} values"
        )
    if attr.size and not np.isin(attr, (-1, 1)).all():
        row = int(np.flatnonzero(~np.isin(attr, (-1, 1)).all(axis=1))[0])
        raise AdvTransferError(f"{attr_path}, line {row + 3}: attribute values must be -1 or 1")
    return attr_names


def _check_same_images(path: Path, names: list[str], part_path: Path,
                       part_names: list[str]) -> None:
    """Raise unless the list file ``path`` names the images of the partition file, in order
    (the message gives the counts, or the first entry that differs)."""
    if names == part_names:
        return
    if len(names) != len(part_names):
        detail = f"{len(names)} images vs {len(part_names)}"
    else:
        pairs = enumerate(zip(names, part_names, strict=True))
        i = next(i for i, (a, b) in pairs if a != b)
        detail = f"entry {i + 1} is {names[i]!r} vs {part_names[i]!r}"
    raise AdvTransferError(
        f"{path} and {part_path} must list the same images in the same "
        f"order ({detail})"
    )


def _check_celeba_split(folder: Path, split: str, part_path: Path, selected: list[str]) -> None:
    """Raise unless the ``split`` (its image names ``selected``) has at least two images and
    every one of them is in the image folder."""
    if not selected:
        raise AdvTransferError(f"{part_path} assigns no image to the {split!r} split")
    if len(selected) == 1:
        raise AdvTransferError(
            f"{part_path} assigns a single image to the {split!r} split; torchvision's CelebA "
            "cannot load a one-image split"
        )
    image_dir = folder / _CELEBA_IMAGE_DIR
    present = set(os.listdir(image_dir))
    absent = [n for n in selected if n not in present]
    if absent:
        shown = ", ".join(absent[:5]) + (", ..." if len(absent) > 5 else "")
        raise AdvTransferError(
            f"{len(absent)} image(s) of the {split!r} split listed in {part_path} are missing "
            f"from {image_dir}: {shown}"
        )


# --------------------------------------------------------------------------------------------
# torchvision subclasses: presence checks instead of checksum checks
# --------------------------------------------------------------------------------------------


def _present(folder: Path, relatives: Sequence[str]) -> bool:
    return all(
        (folder / r).is_dir() if r.endswith("/") else (folder / r).is_file() for r in relatives
    )


class _CIFAR10(_TorchvisionCIFAR10):
    """torchvision's CIFAR10 checking only that the split's files exist (not their MD5).

    ``_check_integrity`` (used by ``__init__`` and ``download``) and ``_load_meta`` (which
    checks ``batches.meta``'s MD5 on its own) are the only overrides.
    """

    def __init__(
        self, root: Path, *, train: bool, transform: Callable[..., Any], download: bool
    ) -> None:
        split = "train" if train else "test"
        self._required = DATASET_INFO["cifar10"].files[split]
        super().__init__(str(root), train=train, transform=transform, download=download)

    def _check_integrity(self) -> bool:
        return _present(Path(self.root) / self.base_folder, self._required)

    def _load_meta(self) -> None:
        path = Path(self.root) / self.base_folder / self.meta["filename"]
        if not path.is_file():
            raise RuntimeError(f"Dataset metadata file {path} not found")
        data = _read_cifar_pickle(path, "metadata file")  # restricted: containers only
        self.classes = data[self.meta["key"]]
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}


class _STL10(STL10):
    """torchvision's STL10 checking only that the split's files exist (not their MD5).

    torchvision's own check also requires the 2.8 GB ``unlabeled_X.bin``, which the ``train`` and
    ``test`` splits never read.
    """

    def __init__(
        self, root: Path, *, split: str, transform: Callable[..., Any], download: bool
    ) -> None:
        self._required = DATASET_INFO["stl10"].files[split]
        super().__init__(str(root), split=split, transform=transform, download=download)
        if not hasattr(self, "classes"):  # class_names.txt is optional in torchvision
            self.classes = list(STL10_CLASSES)

    def _check_integrity(self) -> bool:
        return _present(Path(self.root) / self.base_folder, self._required)


class _ToRGB:
    """Convert a PIL image to RGB (CelebA JPEGs are RGB; this guards against greyscale files)."""

    def __call__(self, image: Image.Image) -> Image.Image:
        return image if image.mode == "RGB" else image.convert("RGB")

    def __repr__(self) -> str:
        return "ToRGB()"


class _CelebA(CelebA):
    """torchvision's CelebA checking only that its files exist, with simplified targets.

    Targets: ``identity`` -> ``int`` (CelebA's identity number); ``attr`` with ``attributes``
    ``None`` -> ``LongTensor`` of 40 values in {0, 1}; a list of names -> those columns; a single
    name -> ``int`` 0/1. For single-label targets ``targets`` lists all labels, so
    :class:`~advtransfer.data.subsets.ClassSubset` and ``take`` work without loading images.
    """

    def __init__(
        self,
        root: Path,
        *,
        split: str,
        target: str,
        attributes: str | Sequence[str] | None,
        transform: Callable[..., Any],
        download: bool,
    ) -> None:
        self._required = DATASET_INFO["celeba"].files[split]
        super().__init__(
            str(root), split=split, target_type=target, transform=transform, download=download
        )
        self.attr_names = _celeba_attr_names(self.attr_names)
        self.target = target
        self.attributes = attributes
        self._attr_index: int | torch.Tensor | None = None
        if target == "attr" and attributes is not None:
            wanted = [attributes] if isinstance(attributes, str) else list(attributes)
            unknown = [a for a in wanted if a not in self.attr_names]
            if unknown:
                raise AdvTransferError(
                    f"attributes {unknown} are not in the header of "
                    f"{Path(self.root) / self.base_folder / 'list_attr_celeba.txt'}"
                )
            positions = [self.attr_names.index(a) for a in wanted]
            if isinstance(attributes, str):
                self._attr_index = positions[0]
            else:
                self._attr_index = torch.tensor(positions, dtype=torch.long)
        if target == "identity":
            self.targets: list[int] = self.identity[:, 0].tolist()
            self.classes = sorted(set(self.targets))
        elif isinstance(self._attr_index, int):
            self.targets = self.attr[:, self._attr_index].tolist()
            name = self.attr_names[self._attr_index]
            self.classes = [f"not {name}", name]
        else:
            names = self.attr_names
            if isinstance(self._attr_index, torch.Tensor):
                names = [names[i] for i in self._attr_index.tolist()]
            self.classes = names

    def _check_integrity(self) -> bool:
        return _present(Path(self.root) / self.base_folder, self._required)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        image, target = super().__getitem__(index)
        if self.target == "identity":
            return image, int(target)
        if self._attr_index is None:
            return image, target
        if isinstance(self._attr_index, int):
            return image, int(target[self._attr_index])
        return image, target[self._attr_index]


# --------------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------------


def _image_transform(
    *, size: int, native: tuple[int, int], crop: int | None, extra: Callable[..., Any] | None
) -> T.Compose:
    """RGB PIL image -> [centre crop] -> [resize to size x size] -> float tensor in [0, 1]."""
    steps: list[Callable[..., Any]] = [_ToRGB()]
    current = native
    if crop is not None:
        steps.append(T.CenterCrop(crop))
        current = (crop, crop)
    if current != (size, size):
        steps.append(T.Resize((size, size), antialias=True))
    steps.append(T.ToTensor())
    if extra is not None:
        steps.append(extra)
    return T.Compose(steps)


_LOAD_ERRORS = (OSError, RuntimeError, ValueError, KeyError, EOFError, pickle.UnpicklingError)


def _load(
    info: DatasetInfo,
    root: Path,
    split: str,
    *,
    download: bool,
    verify: bool,
    construct: Callable[[bool], Dataset[Any]],
    validate: Callable[[Path, str], None],
) -> Dataset[Any]:
    folder = root / info.base_folder
    missing = missing_files(info.name, root, split)
    if missing:
        if not download:
            raise AdvTransferError(_missing_error(info, root, split, missing))
        try:
            dataset = construct(True)  # torchvision's download(), then its reader
        except AdvTransferError:
            raise
        except (*_LOAD_ERRORS, ImportError) as exc:
            still = missing_files(info.name, root, split)
            listing = f" Still missing under {folder}: {', '.join(still)}." if still else ""
            raise AdvTransferError(
                f"downloading {info.title} from {info.url} failed ({type(exc).__name__}: {exc})."
                f"{listing} {_how_to_get(info, root)}"
            ) from exc
        verify_checksums(info.name, root, split)
        return dataset
    if verify:
        verify_checksums(info.name, root, split)
    validate(folder, split)
    try:
        return construct(False)
    except AdvTransferError:
        raise
    except _LOAD_ERRORS as exc:
        raise AdvTransferError(
            f"torchvision could not load {info.title} from {folder} ({type(exc).__name__}: {exc})"
        ) from exc


def cifar10(
    root: str | os.PathLike[str],
    split: str = "train",
    *,
    download: bool = False,
    verify: bool = False,
    size: int = 32,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Dataset[Any]:
    """CIFAR-10 ``split`` ("train": 50,000 images, "test": 10,000) under ``root``.

    ``root`` is the directory containing ``cifar-10-batches-py`` (the folder itself is accepted
    too). Samples are ``(image, label)`` with ``image`` a ``float32`` tensor ``(3, size, size)``
    in ``[0, 1]`` (resized if ``size != 32``) and ``label`` an ``int`` in 0..9
    (:data:`CIFAR10_CLASSES`). ``transform``, if given, is applied to that tensor (e.g. tensor
    augmentations). ``download=True`` fetches the archive if a needed file is missing (then the
    checksums are verified); ``verify=True`` checks existing files against the official MD5s.

    The files are pickles and are read only from ``root``; see the module's security note.

    Raises:
        AdvTransferError: files are missing (lists them and how to get them), malformed (names
            the file and the problem), or do not match the official checksums.
    """
    info = DATASET_INFO["cifar10"]
    split = _check_choice(split, "split", info.splits)
    size = _check_size(size)
    base = _resolve_root(root, info)
    tf = _image_transform(size=size, native=(32, 32), crop=None, extra=transform)

    def construct(dl: bool) -> Dataset[Any]:
        return _CIFAR10(base, train=split == "train", transform=tf, download=dl)

    return _load(
        info, base, split, download=download, verify=verify, construct=construct,
        validate=_validate_cifar10,
    )  # fmt: skip


def stl10(
    root: str | os.PathLike[str],
    split: str = "train",
    *,
    download: bool = False,
    verify: bool = False,
    size: int = 32,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Dataset[Any]:
    """STL-10 ``split`` ("train": 5,000 labelled images, "test": 8,000) under ``root``.

    ``root`` is the directory containing ``stl10_binary``. The 96x96 images are resized to
    ``size`` (default 32, CIFAR-10's resolution) and returned as ``float32`` tensors
    ``(3, size, size)`` in ``[0, 1]``; labels are ``int`` 0..9 in STL-10's class order
    (:data:`STL10_CLASSES`; see :data:`STL10_TO_CIFAR10`). All 10 classes are kept. The
    unlabelled split is not supported. ``download``/``verify``/``transform`` as in
    :func:`cifar10`.
    """
    info = DATASET_INFO["stl10"]
    split = _check_choice(split, "split", info.splits)
    size = _check_size(size)
    base = _resolve_root(root, info)
    tf = _image_transform(size=size, native=(96, 96), crop=None, extra=transform)

    def construct(dl: bool) -> Dataset[Any]:
        return _STL10(base, split=split, transform=tf, download=dl)

    return _load(
        info, base, split, download=download, verify=verify, construct=construct,
        validate=_validate_stl10,
    )  # fmt: skip


def _check_attributes(attributes: Any, target: str) -> str | list[str] | None:
    if attributes is None:
        return None
    if target != "attr":
        raise AdvTransferError("attributes can only be chosen with target='attr'")
    wanted = [attributes] if isinstance(attributes, str) else attributes
    if not isinstance(wanted, (list, tuple)) or not all(isinstance(a, str) for a in wanted):
        raise AdvTransferTypeError(
            "attributes must be None, an attribute name, or a list of attribute names"
        )
    if not wanted:
        raise AdvTransferError("attributes is empty; pass None for all 40 attributes")
    for a in wanted:
        if a not in CELEBA_ATTRIBUTES:
            close = difflib.get_close_matches(a, CELEBA_ATTRIBUTES, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise AdvTransferError(
                f"unknown CelebA attribute {a!r}.{hint} Valid: {', '.join(CELEBA_ATTRIBUTES)}"
            )
    duplicates = sorted({a for a in wanted if wanted.count(a) > 1})
    if duplicates:
        raise AdvTransferError(f"attributes contains duplicates: {duplicates}")
    return attributes if isinstance(attributes, str) else list(wanted)


def celeba(
    root: str | os.PathLike[str],
    split: str = "train",
    *,
    target: str = "attr",
    attributes: str | Sequence[str] | None = None,
    download: bool = False,
    verify: bool = False,
    size: int = 64,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Dataset[Any]:
    """CelebA ``split`` ("train", "valid", "test" or "all") under ``root``.

    ``root`` is the directory containing ``celeba/`` (with ``img_align_celeba/`` and the five
    list files). The aligned 178x218 images are centre-cropped to 178x178 and resized to
    ``size`` x ``size``, as ``float32`` tensors in ``[0, 1]``.

    Targets: ``target="identity"`` gives the identity number (``int``; CelebA numbers its 10,177
    people from 1, use :class:`~advtransfer.data.subsets.ClassSubset` with
    :func:`most_common_identities` to get contiguous labels). ``target="attr"`` gives the 40
    binary attributes as a ``LongTensor`` of 0/1 (:data:`CELEBA_ATTRIBUTES` order), or only the
    columns named in ``attributes`` (a list keeps the tensor form; a single name gives an ``int``
    0/1 label, usable with ``ClassSubset``/``take``). ``download``/``verify``/``transform`` as
    in :func:`cifar10`; downloading needs the ``gdown`` package. ``verify`` checks the list
    files only (torchvision has no checksum per image).
    """
    info = DATASET_INFO["celeba"]
    split = _check_choice(split, "split", info.splits)
    target = _check_choice(target, "target", ("attr", "identity"))
    chosen = _check_attributes(attributes, target)
    size = _check_size(size)
    base = _resolve_root(root, info)
    tf = _image_transform(size=size, native=(178, 218), crop=178, extra=transform)

    def construct(dl: bool) -> Dataset[Any]:
        return _CelebA(
            base, split=split, target=target, attributes=chosen, transform=tf, download=dl
        )

    return _load(
        info, base, split, download=download, verify=verify, construct=construct,
        validate=_validate_celeba,
    )  # fmt: skip


def most_common_identities(dataset: Dataset[Any], k: int) -> list[int]:
    """The ``k`` CelebA identity numbers with most images in ``dataset`` (ties: smaller first).

    ``dataset`` is a :func:`celeba` dataset (any target) or any dataset with identity labels.
    Typical use: ``ClassSubset(ds, most_common_identities(ds, 10))`` for a 10-way face task.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise AdvTransferError(f"k must be a positive integer, got {k!r}")
    identity = getattr(dataset, "identity", None)
    if isinstance(identity, torch.Tensor):
        ids = identity.reshape(-1).tolist()
    else:
        from advtransfer.data.subsets import dataset_labels

        labels = dataset_labels(dataset)
        ids = [] if labels is None else labels.tolist()
    counts = Counter(ids)
    if len(counts) < k:
        raise AdvTransferError(f"the dataset has only {len(counts)} identities, asked for {k}")
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [identity_id for identity_id, _ in ranked[:k]]


def celeba_image_names(dataset: Dataset[Any]) -> list[str]:
    """The CelebA file names (``000001.jpg``, ...) of the samples of ``dataset``, in order.

    ``dataset`` is a :func:`celeba` dataset or a chain of views over one (``Subset``,
    :class:`~advtransfer.data.subsets.ClassSubset`, :func:`~advtransfer.data.subsets.take`,
    anything with ``dataset`` and optionally ``indices``); no image is read. Used to check that
    two sets of samples share no image.
    """
    positions = np.arange(len(dataset))  # type: ignore[arg-type]
    current: Any = dataset
    while getattr(current, "filename", None) is None:
        inner = getattr(current, "dataset", None)
        if inner is None:
            raise AdvTransferError(f"{type(current).__name__} is not a view over a CelebA "
                                   "dataset; cannot tell which images it holds")
        indices = getattr(current, "indices", None)
        if indices is not None:
            positions = np.asarray(indices, dtype=np.int64)[positions]
        current = inner
    names = current.filename
    return [str(names[int(i)]) for i in positions]
