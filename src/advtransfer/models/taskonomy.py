"""Taskonomy task models (through the ``visualpriors`` package).

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

Task names, images and affinities are in :mod:`advtransfer.data.taskonomy`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advtransfer.data.taskonomy import DECODER_TASKS, canonical_task
from advtransfer.errors import AdvTransferError
from advtransfer.fileio import sha256_file
from advtransfer.models.checkpoint import unpickling_reason
from advtransfer.models.wrappers import InputRange

__all__ = ["TaskOutput", "task_model", "weight_files"]

_HASH_IN_NAME = re.compile(r"-([a-f0-9]{64})\.pth$")


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


def _fetch(files: dict[str, str], folder: Path, *, download: bool, verify: bool,
           task: str) -> None:
    missing = [name for name in files if not (folder / name).is_file()]
    if verify:
        for name in files:
            match = _HASH_IN_NAME.search(name)
            path = folder / name
            if name in missing or match is None:
                continue
            if sha256_file(path) != match.group(1):
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
