"""Tiny CIFAR-10, STL-10 and CelebA datasets written in the datasets' real on-disk formats.

The files are read by the real loaders of :mod:`advtransfer.data.vision` (and so by torchvision's
own readers), which makes them suitable for tests and for ``--quick`` demonstrations where the
real datasets cannot be downloaded. They are *not* the official files: their MD5 checksums never
match, so load them with ``verify=False`` (the default).

Images are synthetic but learnable: each class is a noisy sinusoidal grating whose colour,
orientation and frequency depend on the class, defined in normalised coordinates so that it looks
the same at every resolution. STL-10 classes reuse the pattern of the matching CIFAR-10 class
(``car`` looks like ``automobile``; ``monkey`` has its own), so a model trained on the CIFAR-10
fixture transfers to the STL-10 fixture as in the real experiments. CelebA images are schematic
faces whose background depends on the identity and whose details show some attributes
(hair colour, eyeglasses, hat, smile, pale skin, male, blurry).

Each writer takes well under a second at the default sizes and returns ``root``, the directory to
pass to the corresponding loader.
"""

from __future__ import annotations

import colorsys
import os
import pickle
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageFilter

from advtransfer.data.vision import (
    CELEBA_ATTRIBUTES,
    CIFAR10_CLASSES,
    DATASET_INFO,
    STL10_CLASSES,
    STL10_TO_CIFAR10,
)
from advtransfer.errors import AdvTransferError, AdvTransferTypeError

__all__ = ["write_celeba", "write_cifar10", "write_stl10"]

_N_PATTERNS = 11  # the 10 CIFAR-10 classes plus STL-10's monkey
_MONKEY_PATTERN = 10
_PALETTE = np.array(
    [colorsys.hsv_to_rgb(k / _N_PATTERNS, 0.65, 0.75) for k in range(_N_PATTERNS)],
    dtype=np.float64,
)


def _check_count(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise AdvTransferTypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise AdvTransferError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _balanced_labels(n: int, n_classes: int, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(np.arange(n) % n_classes).astype(np.int64)


def _pattern_images(pattern_ids: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """``uint8`` images ``(N, size, size, 3)``: a noisy coloured grating per pattern id."""
    ids = np.asarray(pattern_ids, dtype=np.int64)
    n = len(ids)
    coords = (np.arange(size) + 0.5) / size
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    theta = (ids * np.pi / _N_PATTERNS)[:, None, None]
    freq = (2.0 + ids % 3)[:, None, None]
    phase = rng.uniform(0.0, 2 * np.pi, n)[:, None, None]
    amplitude = rng.uniform(0.15, 0.3, n)[:, None, None, None]
    wave = np.sin(2 * np.pi * freq * (xx * np.cos(theta) + yy * np.sin(theta)) + phase)
    base = _PALETTE[ids] + rng.normal(0.0, 0.04, (n, 3))
    images = base[:, None, None, :] + amplitude * wave[..., None]
    images += rng.normal(0.0, 0.05, images.shape)
    return np.round(np.clip(images, 0.0, 1.0) * 255).astype(np.uint8)


def write_cifar10(
    root: str | os.PathLike[str], *, n_train: int = 500, n_test: int = 100, seed: int = 0
) -> Path:
    """Write a small CIFAR-10 in the python-pickle format under ``root/cifar-10-batches-py``.

    Writes ``data_batch_1`` .. ``data_batch_5`` (the ``n_train`` images split evenly),
    ``test_batch`` (``n_test`` images) and ``batches.meta``. Each batch is a protocol-2 pickle of
    ``{"batch_label", "labels", "data", "filenames"}`` with ``data`` a ``uint8`` array
    ``(N, 3072)`` (the red plane, then green, then blue, each row-major), as in the real files.
    Classes are balanced. Returns ``root``.
    """
    n_train = _check_count(n_train, "n_train", 1)
    n_test = _check_count(n_test, "n_test", 1)
    rng = np.random.default_rng(seed)
    root_path = Path(root)
    folder = root_path / DATASET_INFO["cifar10"].base_folder
    folder.mkdir(parents=True, exist_ok=True)

    def batch(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = _balanced_labels(n, len(CIFAR10_CLASSES), rng)
        images = _pattern_images(labels, 32, rng)
        return labels, images.transpose(0, 3, 1, 2).reshape(n, 3 * 32 * 32)

    train_labels, train_rows = batch(n_train)
    chunks = np.array_split(np.arange(n_train), 5)
    for i, chunk in enumerate(chunks, start=1):
        _dump(
            folder / f"data_batch_{i}",
            {
                "batch_label": f"training batch {i} of 5",
                "labels": train_labels[chunk].tolist(),
                "data": np.ascontiguousarray(train_rows[chunk]),
                "filenames": [f"advtransfer_fixture_{j:05d}.png" for j in chunk.tolist()],
            },
        )
    test_labels, test_rows = batch(n_test)
    _dump(
        folder / "test_batch",
        {
            "batch_label": "testing batch 1 of 1",
            "labels": test_labels.tolist(),
            "data": test_rows,
            "filenames": [f"advtransfer_fixture_test_{j:05d}.png" for j in range(n_test)],
        },
    )
    _dump(
        folder / "batches.meta",
        {
            "num_cases_per_batch": len(chunks[0]),
            "label_names": list(CIFAR10_CLASSES),
            "num_vis": 3 * 32 * 32,
        },
    )
    return root_path


def _dump(path: Path, obj: object) -> None:
    with path.open("wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_stl10(
    root: str | os.PathLike[str], *, n_train: int = 200, n_test: int = 100, seed: int = 0
) -> Path:
    """Write a small STL-10 in the binary format under ``root/stl10_binary``.

    Writes ``train_X.bin``/``test_X.bin`` (raw ``uint8``, each 96x96 image stored plane by plane
    in column-major order, which torchvision's reader transposes back), ``train_y.bin``/
    ``test_y.bin`` (one byte per image, 1-based labels) and ``class_names.txt``. The unlabelled
    split is not written. Classes are balanced. Returns ``root``.
    """
    n_train = _check_count(n_train, "n_train", 1)
    n_test = _check_count(n_test, "n_test", 1)
    rng = np.random.default_rng(seed)
    root_path = Path(root)
    folder = root_path / DATASET_INFO["stl10"].base_folder
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        labels = _balanced_labels(n, len(STL10_CLASSES), rng)
        patterns = np.array([STL10_TO_CIFAR10.get(int(y), _MONKEY_PATTERN) for y in labels])
        images = _pattern_images(patterns, 96, rng)  # (N, H, W, C)
        (folder / f"{split}_X.bin").write_bytes(images.transpose(0, 3, 2, 1).tobytes())
        (folder / f"{split}_y.bin").write_bytes((labels + 1).astype(np.uint8).tobytes())
    (folder / "class_names.txt").write_text("\n".join(STL10_CLASSES) + "\n")
    return root_path


# CelebA ------------------------------------------------------------------------------------

_W, _H = 178, 218
_ATTR = {name: i for i, name in enumerate(CELEBA_ATTRIBUTES)}
_HAIR = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair")
_HAIR_RGB = {
    "Black_Hair": (0.08, 0.07, 0.06),
    "Blond_Hair": (0.93, 0.82, 0.45),
    "Brown_Hair": (0.45, 0.28, 0.15),
    "Gray_Hair": (0.65, 0.65, 0.65),
    None: (0.35, 0.3, 0.3),
}
_PER_IMAGE = (
    "Smiling",
    "Mouth_Slightly_Open",
    "Eyeglasses",
    "Wearing_Hat",
    "Blurry",
    "Bangs",
    "Wearing_Earrings",
    "Wearing_Necklace",
)
_LANDMARKS = np.array([69, 109, 106, 113, 77, 142, 73, 152, 108, 154])


def _face_masks() -> dict[str, np.ndarray]:
    yy, xx = np.mgrid[0:_H, 0:_W]
    face = ((xx - 89) / 52) ** 2 + ((yy - 125) / 68) ** 2 <= 1
    head = ((xx - 89) / 60) ** 2 + ((yy - 112) / 80) ** 2 <= 1
    return {
        "face": face,
        "hair": head & ~face,
        "eyes": face & (yy >= 104) & (yy <= 118),
        "mouth": (np.abs(xx - 90) <= 18) & (np.abs(yy - 153) <= 5),
        "jaw": face & (yy >= 160),
        "hat": (yy < 55) & (np.abs(xx - 89) <= 70),
        "bangs": face & (yy < 85),
    }


def _celeba_image(
    attrs: np.ndarray,
    background: np.ndarray,
    skin: np.ndarray,
    masks: dict[str, np.ndarray],
    rng: np.random.Generator,
) -> Image.Image:
    def has(name: str) -> bool:
        return bool(attrs[_ATTR[name]] > 0)

    img = np.empty((_H, _W, 3))
    img[:] = background
    hair = next((h for h in _HAIR if has(h)), None)
    img[masks["hair"]] = _HAIR_RGB[hair]
    face_rgb = np.clip(skin + (0.15 if has("Pale_Skin") else 0.0), 0, 1)
    img[masks["face"]] = face_rgb
    if has("Bangs"):
        img[masks["bangs"]] = _HAIR_RGB[hair]
    if has("Male"):
        img[masks["jaw"]] = face_rgb * 0.7
    img[masks["eyes"]] = (0.05, 0.05, 0.05) if has("Eyeglasses") else face_rgb * 0.85
    if has("Smiling"):
        img[masks["mouth"]] = (0.95, 0.95, 0.95)
    elif has("Mouth_Slightly_Open"):
        img[masks["mouth"]] = (0.35, 0.05, 0.05)
    else:
        img[masks["mouth"]] = (0.6, 0.3, 0.3)
    if has("Wearing_Hat"):
        img[masks["hat"]] = (0.7, 0.1, 0.1)
    img += rng.normal(0.0, 0.03, img.shape)
    image = Image.fromarray(np.round(np.clip(img, 0, 1) * 255).astype(np.uint8), mode="RGB")
    if has("Blurry"):
        image = image.filter(ImageFilter.GaussianBlur(2))
    return image


def _attr_line(name: str, values: np.ndarray) -> str:
    return name + " " + " ".join(f"{int(v):2d}" for v in values)


def write_celeba(
    root: str | os.PathLike[str],
    *,
    n_identities: int = 8,
    n_images: int = 64,
    seed: int = 0,
) -> Path:
    """Write a small CelebA under ``root/celeba`` in the files torchvision parses.

    Writes ``img_align_celeba/000001.jpg``.. (178x218 RGB JPEGs), ``list_attr_celeba.txt``
    (count line, header of the 40 attribute names ending with a space as in the official file,
    then ``name`` and 40 values in {-1, 1}), ``identity_CelebA.txt`` (``name id``),
    ``list_eval_partition.txt`` (``name 0|1|2``), ``list_bbox_celeba.txt`` and
    ``list_landmarks_align_celeba.txt`` (count line, header, then integer columns).

    ``n_images`` (>= 6) images are assigned round-robin to ``n_identities`` identities with
    distinct CelebA-like numbers in 1..10177. About 80/10/10 % go to train/valid/test (at least
    two per split; consecutive as in the real partition); identities recur across splits. Returns
    ``root``.
    """
    n_images = _check_count(n_images, "n_images", 6)
    n_identities = _check_count(n_identities, "n_identities", 1)
    if n_identities > n_images:
        raise AdvTransferError(f"n_identities ({n_identities}) cannot exceed n_images ({n_images})")
    rng = np.random.default_rng(seed)
    root_path = Path(root)
    folder = root_path / DATASET_INFO["celeba"].base_folder
    image_dir = folder / "img_align_celeba"
    image_dir.mkdir(parents=True, exist_ok=True)

    people = _celeba_people(rng, n_identities, n_images)
    masks = _face_masks()
    per_image = [_ATTR[name] for name in _PER_IMAGE]
    names = [f"{i:06d}.jpg" for i in range(1, n_images + 1)]
    attrs = people.attrs[people.owner].copy()
    attrs[:, per_image] = np.where(rng.random((n_images, len(per_image))) < 0.4, 1, -1)
    for i, name in enumerate(names):
        k = int(people.owner[i])
        image = _celeba_image(attrs[i], people.backgrounds[k], people.skins[k], masks, rng)
        image.save(image_dir / name, format="JPEG", quality=90)
    _write_celeba_lists(folder, names, attrs, people)
    _write_celeba_boxes(folder, names, rng)
    return root_path


class _CelebAPeople(NamedTuple):
    """The identities of a fixture CelebA: their CelebA numbers ``ids``, the identity
    (position in ``ids``) of every image ``owner``, and per identity the attributes (-1/1,
    one hair colour at most), background and skin colours."""

    ids: np.ndarray
    owner: np.ndarray
    attrs: np.ndarray
    backgrounds: np.ndarray
    skins: np.ndarray


def _celeba_people(rng: np.random.Generator, n_identities: int, n_images: int) -> _CelebAPeople:
    """Draw the identities (see :class:`_CelebAPeople`) from ``rng``, in a fixed order."""
    ids = np.sort(rng.choice(np.arange(1, 10178), size=n_identities, replace=False))
    owner = rng.permutation(np.arange(n_images) % n_identities)
    n_attr = len(CELEBA_ATTRIBUTES)
    identity_attrs = np.where(rng.random((n_identities, n_attr)) < 0.35, 1, -1)
    hair = rng.integers(0, len(_HAIR) + 1, n_identities)  # len(_HAIR) means "other"
    for k in range(n_identities):
        for j, name in enumerate(_HAIR):
            identity_attrs[k, _ATTR[name]] = 1 if hair[k] == j else -1
    backgrounds = rng.uniform(0.1, 0.9, (n_identities, 3))
    skins = rng.uniform(0.45, 0.75, (n_identities, 1)) * np.array([1.0, 0.8, 0.65])
    return _CelebAPeople(ids, owner, identity_attrs, backgrounds, skins)


def _write_celeba_lists(
    folder: Path, names: list[str], attrs: np.ndarray, people: _CelebAPeople
) -> None:
    """Write ``list_attr_celeba.txt``, ``identity_CelebA.txt`` and ``list_eval_partition.txt``
    (about 80/10/10 % train/valid/test, at least two images in valid and test)."""
    n_images = len(names)
    n_valid = max(2, round(0.1 * n_images))
    n_test = max(2, round(0.1 * n_images))
    n_train = n_images - n_valid - n_test
    partition = [0] * n_train + [1] * n_valid + [2] * n_test

    attr_lines = [_attr_line(name, attrs[i]) for i, name in enumerate(names)]
    (folder / "list_attr_celeba.txt").write_text(
        f"{n_images}\n" + " ".join(CELEBA_ATTRIBUTES) + " \n" + "\n".join(attr_lines) + "\n"
    )
    (folder / "identity_CelebA.txt").write_text(
        "".join(f"{name} {int(people.ids[people.owner[i]])}\n" for i, name in enumerate(names))
    )
    (folder / "list_eval_partition.txt").write_text(
        "".join(f"{name} {p}\n" for name, p in zip(names, partition, strict=True))
    )


def _write_celeba_boxes(folder: Path, names: list[str], rng: np.random.Generator) -> None:
    """Write ``list_bbox_celeba.txt`` and ``list_landmarks_align_celeba.txt`` (random boxes,
    landmarks within 3 px of :data:`_LANDMARKS`), drawing the boxes then the landmarks."""
    n_images = len(names)
    count = f"{n_images}\n"
    boxes = np.column_stack(
        [
            rng.integers(40, 120, n_images),
            rng.integers(40, 120, n_images),
            rng.integers(150, 300, n_images),
            rng.integers(180, 360, n_images),
        ]
    )
    (folder / "list_bbox_celeba.txt").write_text(
        count
        + "image_id x_1 y_1 width height\n"
        + "".join(
            f"{name} {' '.join(f'{v:4d}' for v in boxes[i])}\n" for i, name in enumerate(names)
        )
    )
    landmarks = _LANDMARKS + rng.integers(-3, 4, (n_images, len(_LANDMARKS)))
    (folder / "list_landmarks_align_celeba.txt").write_text(
        count
        + "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y "
        + "rightmouth_x rightmouth_y\n"
        + "".join(
            f"{name} {' '.join(f'{v:4d}' for v in landmarks[i])}\n" for i, name in enumerate(names)
        )
    )
