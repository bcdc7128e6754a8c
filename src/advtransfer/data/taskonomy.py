"""Taskonomy image folders, task names and transfer affinities.

The task networks themselves are in :mod:`advtransfer.models.taskonomy`.

Images
------
:func:`load_images` reads a folder of RGB images (``.png``/``.jpg``/``.jpeg``; if the folder has an
``rgb/`` subfolder, as the Taskonomy sample data ``taskonomy-sample-model-1`` has, that is used),
centre-crops each to a square and resizes it to ``size`` x ``size`` (256 for the real models).

Transfer affinities
-------------------
:func:`load_affinity_csv` reads a square task-affinity matrix (Taskonomy's transfer affinities)
from a CSV file: a header row ``,task_1,task_2,...`` and one row ``task_i,v_i1,v_i2,...`` per task.
Task names may be the ``visualpriors`` names (``depth_euclidean``) or Taskonomy's original names
(``rgb2mist``); see :data:`TASK_ALIASES`.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from advtransfer.errors import AdvTransferError
from advtransfer.progress import track

__all__ = [
    "DECODER_TASKS",
    "ENCODER_TASKS",
    "PAPER_TASKS",
    "SAMPLE_DATA_URL",
    "TASK_ALIASES",
    "FolderImages",
    "canonical_task",
    "check_tasks",
    "load_affinity_csv",
    "list_images",
    "load_images",
    "read_images",
]

SAMPLE_DATA_URL = "https://github.com/alexsax/taskonomy-sample-model-1"
"""The Taskonomy sample building (RGB images under ``rgb/``) the authors' experiment used."""

ENCODER_TASKS: tuple[str, ...] = (
    "autoencoding", "class_object", "class_scene", "colorization", "curvature", "denoising",
    "depth_euclidean", "depth_zbuffer", "edge_occlusion", "edge_texture", "egomotion",
    "fixated_pose", "inpainting", "jigsaw", "keypoints2d", "keypoints3d", "nonfixated_pose",
    "normal", "point_matching", "reshading", "room_layout", "segment_semantic",
    "segment_unsup25d", "segment_unsup2d", "vanishing_point",
)  # fmt: skip
"""Tasks with a ``visualpriors`` encoder checkpoint."""

DECODER_TASKS: tuple[str, ...] = (
    "autoencoding", "class_object", "class_scene", "curvature", "denoising", "depth_euclidean",
    "depth_zbuffer", "edge_occlusion", "edge_texture", "inpainting", "keypoints2d",
    "keypoints3d", "normal", "reshading", "segment_semantic", "segment_unsup25d",
    "segment_unsup2d",
)  # fmt: skip
"""Tasks with a ``visualpriors`` decoder checkpoint (usable with ``output="decoder"``)."""

PAPER_TASKS: tuple[str, ...] = (
    "autoencoding", "curvature", "edge_texture", "keypoints2d", "segment_unsup2d",
    "edge_occlusion", "keypoints3d", "reshading", "depth_zbuffer", "depth_euclidean", "normal",
    "segment_unsup25d", "segment_semantic", "class_object", "class_scene",
)  # fmt: skip
"""The 15 tasks of the authors' Taskonomy figure (their ``exp3/visualize.py``), in their order."""

TASK_ALIASES: dict[str, str] = {
    "autoencoder": "autoencoding", "denoise": "denoising", "edge2d": "edge_texture",
    "edge3d": "edge_occlusion", "ego_motion": "egomotion", "fix_pose": "fixated_pose",
    "keypoint2d": "keypoints2d", "keypoint3d": "keypoints3d",
    "non_fixated_pose": "nonfixated_pose", "point_match": "point_matching",
    "reshade": "reshading", "rgb2depth": "depth_zbuffer", "rgb2mist": "depth_euclidean",
    "rgb2sfnorm": "normal", "segment25d": "segment_unsup25d", "segment2d": "segment_unsup2d",
    "segmentsemantic": "segment_semantic", "segmentsemantic_rb": "segment_semantic",
    "class_1000": "class_object", "class_places": "class_scene", "class_selected": "class_scene",
    "inpainting_whole": "inpainting", "vanishing_point_well_defined": "vanishing_point",
}  # fmt: skip
"""Taskonomy's original task names (and the affinity-file variants) -> ``visualpriors`` names."""

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def canonical_task(name: str) -> str:
    """The ``visualpriors`` name of a task given either naming (see :data:`TASK_ALIASES`)."""
    if not isinstance(name, str):
        raise AdvTransferError(f"task names must be strings; got {name!r}")
    key = name.strip()
    if key in ENCODER_TASKS:
        return key
    if key in TASK_ALIASES:
        return TASK_ALIASES[key]
    known = sorted(set(ENCODER_TASKS) | set(TASK_ALIASES))
    close = difflib.get_close_matches(key, known, n=3)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise AdvTransferError(f"unknown Taskonomy task {name!r}.{hint} Tasks: "
                           f"{', '.join(ENCODER_TASKS)}")


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FolderImages:
    """Images read by :func:`load_images`: ``x`` (N, 3, size, size) float32 in [0, 1], the file
    names (relative to ``folder``) and a fingerprint of the chosen files (names and sizes)."""

    x: torch.Tensor
    names: tuple[str, ...]
    folder: Path
    fingerprint: str


def _image_folder(root: Path) -> Path:
    rgb = root / "rgb"
    return rgb if rgb.is_dir() else root


def _how_to_get_images(root: Path) -> str:
    return (
        f"Put RGB images (.png/.jpg) in {root} (or in {root / 'rgb'}). The authors used the "
        f"Taskonomy sample building: clone {SAMPLE_DATA_URL} (its rgb/ folder holds the images; "
        "`git clone --depth 1` fetches about 1 GB) and pass --data-root to the clone. Taskonomy "
        "images cannot be fetched by --download (which only downloads the visualpriors model "
        "weights); any folder of natural indoor images also works."
    )


def list_images(root: str | os.PathLike[str], *, n: int | None = None,
                seed: int = 0) -> tuple[Path, list[Path], str]:
    """(folder, up to ``n`` image files, fingerprint) for the folder ``root``: a seeded random
    choice of ``n`` files when there are more, in name order; the fingerprint hashes the chosen
    names and sizes (no image is read).

    Raises:
        AdvTransferError: the folder does not exist or holds no image.
    """
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise AdvTransferError(f"the number of images must be a positive integer; got {n!r}")
    base = Path(root)
    if not base.is_dir():
        raise AdvTransferError(f"the Taskonomy image folder {base} does not exist. "
                               + _how_to_get_images(base))
    folder = _image_folder(base)
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES)
    if not files:
        raise AdvTransferError(f"no image (.png/.jpg/.jpeg) found in {folder}. "
                               + _how_to_get_images(base))
    if n is not None and n < len(files):
        chosen = np.sort(np.random.default_rng(seed).choice(len(files), size=n, replace=False))
        files = [files[i] for i in chosen.tolist()]
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}:{path.stat().st_size};".encode())
    return folder, files, digest.hexdigest()[:16]


def read_images(files: Sequence[Path], *, size: int = 256,
                progress: bool = False) -> torch.Tensor:
    """The images ``files`` as float32 (N, 3, size, size) in [0, 1]: RGB, centre-cropped to a
    square, resized (antialiased)."""
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms import functional as TF

    if isinstance(size, bool) or not isinstance(size, int) or size < 16:
        raise AdvTransferError(f"image size must be an integer >= 16; got {size!r}")
    images = []
    for path in track(files, description="reading images", enabled=progress):
        try:
            with Image.open(path) as img:
                rgb = img.convert("RGB")
        except (OSError, UnidentifiedImageError) as exc:
            raise AdvTransferError(f"cannot read the image {path}: {exc}") from exc
        side = min(rgb.size)
        rgb = TF.center_crop(rgb, [side, side])
        rgb = TF.resize(rgb, [size, size], antialias=True)
        images.append(TF.to_tensor(rgb))
    return torch.stack(images)


def load_images(root: str | os.PathLike[str], *, size: int = 256, n: int | None = None,
                seed: int = 0, progress: bool = False) -> FolderImages:
    """:func:`list_images` then :func:`read_images`."""
    folder, files, fingerprint = list_images(root, n=n, seed=seed)
    x = read_images(files, size=size, progress=progress)
    return FolderImages(x, tuple(p.name for p in files), folder, fingerprint)


# --------------------------------------------------------------------------------------------
# Affinities
# --------------------------------------------------------------------------------------------


def load_affinity_csv(path: str | os.PathLike[str]) -> tuple[list[str], np.ndarray]:
    """(task names, square matrix) from a CSV file with a header row of task names and one row
    per task (first cell: the task's name). Names are mapped by :func:`canonical_task`; rows are
    reordered to follow the header. Empty cells are NaN.

    Raises:
        AdvTransferError: missing file, ragged or non-square table, unknown or repeated task,
            non-numeric cell.
    """
    file = Path(path)
    if not file.is_file():
        raise AdvTransferError(f"affinity_csv {file} does not exist")
    with file.open(newline="") as fh:
        rows = [r for r in csv.reader(fh) if any(cell.strip() for cell in r)]
    if len(rows) < 2:
        raise AdvTransferError(f"{file}: expected a header row of task names and one row per "
                               "task")
    header = [canonical_task(h) for h in rows[0][1:]]
    if len(set(header)) != len(header):
        raise AdvTransferError(f"{file}: the header names a task twice: {rows[0][1:]}")
    values: dict[str, list[float]] = {}
    for i, row in enumerate(rows[1:], start=2):
        if len(row) != len(header) + 1:
            raise AdvTransferError(f"{file} line {i}: {len(row) - 1} values for "
                                   f"{len(header)} tasks in the header")
        name = canonical_task(row[0])
        if name in values:
            raise AdvTransferError(f"{file} line {i}: task {row[0]!r} appears twice")
        try:
            values[name] = [float(v) if v.strip() else math.nan for v in row[1:]]
        except ValueError as exc:
            raise AdvTransferError(f"{file} line {i}: {exc}") from None
    if set(values) != set(header):
        raise AdvTransferError(f"{file}: the row names {sorted(values)} must be the header's "
                               f"tasks {sorted(header)}")
    return header, np.array([values[t] for t in header], dtype=np.float64)


def check_tasks(tasks: Sequence[str], output: str, image_size: int) -> list[str]:
    """Canonical, distinct task names usable with ``output`` at ``image_size``."""
    names = [canonical_task(t) for t in tasks]
    if len(names) < 2:
        raise AdvTransferError(f"tasks must name at least two tasks; got {list(tasks)}")
    repeated = sorted({t for t in names if names.count(t) > 1})
    if repeated:
        raise AdvTransferError(f"tasks lists {repeated} more than once")
    if output == "decoder":
        no_decoder = [t for t in names if t not in DECODER_TASKS]
        if no_decoder:
            raise AdvTransferError(f"tasks {no_decoder} have no visualpriors decoder; use "
                                   "output='encoder' or drop them")
        mlp = [t for t in names if t in ("class_object", "class_scene")]
        if mlp and image_size != 256:
            raise AdvTransferError(f"the classification decoders of {mlp} need 256 px images "
                                   f"(their MLP reads the 8 x 16 x 16 representation); got "
                                   f"image_size={image_size}")
    return names
