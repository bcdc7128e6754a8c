"""Taskonomy task models (through the ``visualpriors`` package) and image folders.

Models
------
The Taskonomy task networks (Zamir et al., CVPR 2018) were ported to PyTorch by the
``visualpriors`` package (Sax et al., MIT licence; ``pip install visualpriors``). Each task has a
ResNet-50 encoder (``TaskonomyEncoder``: 3 x 256 x 256 images in ``[-1, 1]`` -> an 8 x 16 x 16
representation) and, for most tasks, a decoder (``TaskonomyDecoder``: a convolutional decoder back
to a dense 256 x 256 output for pixel-to-pixel tasks, or a two-layer MLP for the classification
tasks). :func:`task_model` builds either the encoder (``output="encoder"``, the representation,
group-normalised as ``visualpriors.representation_transform`` returns it) or encoder + decoder
(``output="decoder"``, the task's prediction, as ``visualpriors.feature_readout`` returns it),
wrapped so that it

* takes images in ``[0, 1]`` (an :class:`~advtransfer.models.wrappers.InputRange` to ``[-1, 1]``,
  so attack budgets are in ``[0, 1]`` pixel units), and
* returns the full-resolution output flattened per image (a dense 256 x 256 x 3 prediction
  has 196,608 values), so that attacks act on the task's own output. ``output_shape`` gives the
  unflattened shape, from which the ``taskonomy`` recipe average-pools the *deviations* (not
  the outputs the attack sees) to keep alpha2's m_A x m_B matrices small.

Weights. ``weights="pretrained"`` loads the official ``visualpriors`` checkpoints, the files listed
in ``visualpriors.taskonomy_network.TASKONOMY_PRETRAINED_URLS`` (hosted on GitHub, ~95 MB per
encoder), from ``weights_dir`` (default: torch hub's checkpoint directory, where
``visualpriors`` itself caches them). Missing files are downloaded only with ``download=True``
(CLI ``--download``); every download is checked against the SHA-256 in its file name. The
checkpoints are loaded with ``torch.load(weights_only=True)``; if a file needs full unpickling,
``trust_weights=True`` allows it (the file's SHA-256 has been checked). ``weights="random"`` builds
the same architectures with seeded random weights and downloads nothing (tests, ``--quick``).

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
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from advtransfer.errors import AdvTransferError
from advtransfer.models.wrappers import InputRange
from advtransfer.progress import track

__all__ = [
    "DECODER_TASKS",
    "ENCODER_TASKS",
    "PAPER_TASKS",
    "SAMPLE_DATA_URL",
    "TASK_ALIASES",
    "FolderImages",
    "TaskOutput",
    "canonical_task",
    "check_tasks",
    "load_affinity_csv",
    "list_images",
    "load_images",
    "read_images",
    "task_model",
    "weight_files",
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
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{64})\.pth$")


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


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def _visualpriors() -> Any:
    try:
        from visualpriors import taskonomy_network
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise AdvTransferError(
            "the taskonomy recipe needs the 'visualpriors' package (the PyTorch port of the "
            "Taskonomy networks): pip install visualpriors") from exc
    return taskonomy_network


class TaskOutput(nn.Module):
    """``net`` on ``[0, 1]`` images (mapped to ``[-1, 1]``), its full-resolution output
    flattened per image."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = InputRange(net, (0.0, 1.0), (-1.0, 1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).reshape(len(x), -1)

    def output_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        """The unflattened output shape of one image (e.g. (C, H, W)) for inputs like ``x``."""
        with torch.no_grad():
            return tuple(self.net(x[:1]).shape[1:])


def weight_files(task: str, output: str) -> dict[str, str]:
    """``{file name: URL}`` of the checkpoints ``task`` needs for ``output``."""
    urls = _visualpriors().TASKONOMY_PRETRAINED_URLS
    parts = ["encoder"] + (["decoder"] if output == "decoder" else [])
    out = {}
    for part in parts:
        url = urls[f"{task}_{part}"]
        out[url.rsplit("/", 1)[-1]] = url
    return out


def _default_weights_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(files: dict[str, str], folder: Path, *, download: bool, verify: bool,
           task: str) -> None:
    missing = [name for name in files if not (folder / name).is_file()]
    if verify:
        for name in files:
            match = _HASH_IN_NAME.search(name)
            path = folder / name
            if name in missing or match is None:
                continue
            if _sha256(path) != match.group(1):
                raise AdvTransferError(
                    f"{path} does not match the SHA-256 in its name (the official checkpoint): "
                    "it is corrupt or incomplete; delete it and rerun with --download")
    if not missing:
        return
    if not download:
        listing = "\n".join(f"  - {name}" for name in missing)
        raise AdvTransferError(
            f"the pretrained Taskonomy weights for {task!r} are not available: "
            f"{len(missing)} file(s) missing under {folder}:\n{listing}\nPass download=True "
            "(CLI: --download) to fetch them from "
            f"{files[missing[0]].rsplit('/', 1)[0]} (~95 MB per encoder), or "
            "weights='random' for untrained networks.")
    folder.mkdir(parents=True, exist_ok=True)
    for name in missing:
        match = _HASH_IN_NAME.search(name)
        try:
            torch.hub.download_url_to_file(files[name], str(folder / name),
                                           hash_prefix=match.group(1) if match else None,
                                           progress=False)
        except (OSError, RuntimeError) as exc:
            raise AdvTransferError(f"downloading {files[name]} failed ({type(exc).__name__}: "
                                   f"{exc}); nothing was written to {folder / name}") from exc


def _state_dict(path: Path, *, trust: bool) -> dict[str, torch.Tensor]:
    import pickle

    from advtransfer.models.checkpoint import unpickling_reason

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as exc:
        raise AdvTransferError(
            f"{path} holds more than tensors and plain containers, so torch.load refused it "
            f"with weights_only=True ({unpickling_reason(exc)}). Its SHA-256 matched the "
            "official file when it was downloaded; set trust_weights=true to unpickle it "
            "fully.") from exc
    except (OSError, RuntimeError, EOFError) as exc:
        raise AdvTransferError(f"cannot read the checkpoint {path} ({exc}); delete it and "
                               "rerun with --download") from exc
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise AdvTransferError(f"{path} does not hold a state dict")
    return state


def task_model(task: str, *, output: str = "decoder", weights: str = "pretrained",
               weights_dir: str | os.PathLike[str] | None = None,
               download: bool = False, verify: bool = False, trust_weights: bool = False,
               seed: int = 0) -> TaskOutput:
    """The Taskonomy network of ``task`` as a :class:`TaskOutput` in eval mode (see the module
    docstring for ``output`` and ``weights``; ``verify`` checks existing checkpoint
    files against the SHA-256 in their names; ``seed`` seeds random weights)."""
    vp = _visualpriors()
    task = canonical_task(task)
    if output not in ("encoder", "decoder"):
        raise AdvTransferError(f"output must be 'encoder' or 'decoder'; got {output!r}")
    if weights not in ("pretrained", "random"):
        raise AdvTransferError(f"weights must be 'pretrained' or 'random'; got {weights!r}")
    if output == "decoder" and task not in DECODER_TASKS:
        raise AdvTransferError(f"task {task!r} has no visualpriors decoder; use output='encoder' "
                               f"or one of {', '.join(DECODER_TASKS)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if output == "encoder":
            net: nn.Module = vp.TaskonomyEncoder(normalize_outputs=True, eval_only=True)
        else:
            net = vp.TaskonomyNetwork(
                out_channels=vp.TASKS_TO_CHANNELS[task],
                is_decoder_mlp=task not in vp.PIX_TO_PIX_TASKS,
                apply_tanh=task not in vp.DONT_APPLY_TANH_TASKS)
    if weights == "pretrained":
        folder = Path(weights_dir) if weights_dir else _default_weights_dir()
        files = weight_files(task, output)
        _fetch(files, folder, download=download, verify=verify, task=task)
        encoder_file, *decoder_file = files
        target_encoder = net if output == "encoder" else net.encoder
        target_encoder.load_state_dict(_state_dict(folder / encoder_file, trust=trust_weights))
        if decoder_file:
            net.decoder.load_state_dict(_state_dict(folder / decoder_file[0],
                                                    trust=trust_weights))
    model = TaskOutput(net).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


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
