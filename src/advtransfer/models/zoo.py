"""Named torchvision / timm models with weights from local files (:func:`from_name` never
downloads; :func:`advtransfer.models.create` with ``download=True`` fetches torchvision's weights).

:func:`from_name` builds ``torchvision.models.get_model(name, weights=None)`` or, for names
prefixed ``"timm:"``, ``timm.create_model(name, pretrained=False)`` (timm is optional and imported
only then), and loads weights from

1. ``weights=PATH`` (``.safetensors``, ``.pt``, ``.pth`` or ``.bin``; pickles are read with
   ``weights_only=True``), or
2. the library cache ``$ADVTRANSFER_HOME/weights/`` (default ``~/.cache/advtransfer/weights/``):
   ``<name>.safetensors``, ``<name>.pth`` or ``<name>.pt`` for torchvision names and
   ``timm/<name>.safetensors`` (etc.) for ``"timm:<name>"``, or
3. nowhere, with ``weights="random"`` (explicit random initialisation, e.g. for tests).

A state dict downloaded by torchvision (``$TORCH_HOME/hub/checkpoints/resnet18-*.pth``) can be
copied to ``$ADVTRANSFER_HOME/weights/resnet18.pth`` as it is.

GoogLeNet and Inception-v3 (and their quantized variants) are built as torchvision builds them
for its pretrained weights, which were ported from TensorFlow and expect inputs in [-1, 1]:
when a weights file is loaded, ``transform_input=True`` (the model maps ImageNet-normalised
inputs to that range itself) and ``init_weights=False``, as ``torchvision.models.googlenet`` /
``inception_v3`` do for ``weights=...``; with ``weights="random"`` their defaults stay
(``transform_input=False``). ``transform_input=`` overrides this, e.g. for weights trained
without the transform.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import torchvision
from torch import nn
from torchvision.models import WeightsEnum

from advtransfer.errors import AdvTransferError, AdvTransferTypeError
from advtransfer.models.checkpoint import PICKLE_SUFFIXES, SAFETENSORS_SUFFIX, load_into

__all__ = [
    "HOME_ENV",
    "RANDOM",
    "TIMM_PREFIX",
    "cache_dir",
    "from_name",
    "weight_candidates",
]

#: Environment variable overriding the library home (default ``~/.cache/advtransfer``).
HOME_ENV = "ADVTRANSFER_HOME"
TIMM_PREFIX = "timm:"
#: ``weights=RANDOM`` builds the model with random initialisation.
RANDOM = "random"
_WEIGHT_SUFFIXES = (SAFETENSORS_SUFFIX, ".pth", ".pt")
_TIMM_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
#: torchvision models whose pretrained weights expect ``transform_input=True`` (TF ports).
TRANSFORM_INPUT_MODELS = ("googlenet", "inception_v3", "quantized_googlenet",
                          "quantized_inception_v3")


def cache_dir() -> Path:
    """Directory searched for weights: ``$ADVTRANSFER_HOME/weights`` (default home
    ``~/.cache/advtransfer``)."""
    home = os.environ.get(HOME_ENV) or "~/.cache/advtransfer"
    return Path(home).expanduser() / "weights"


def weight_candidates(name: str) -> list[Path]:
    """Files searched, in order, for the weights of model ``name`` (see the module docs)."""
    if name.startswith(TIMM_PREFIX):
        base = cache_dir() / "timm" / name[len(TIMM_PREFIX) :]
    else:
        base = cache_dir() / name
    return [base.with_name(base.name + suffix) for suffix in _WEIGHT_SUFFIXES]


def _import_timm() -> ModuleType:
    try:
        return importlib.import_module("timm")
    except ImportError as exc:
        raise AdvTransferError(
            "model names starting with 'timm:' need the optional package timm, which is not "
            "installed; install it with: pip install 'advtransfer[timm]'"
        ) from exc


def _checked_timm(model_name: str) -> ModuleType:
    """Import timm and check that ``model_name`` is one of its architectures."""
    if not _TIMM_NAME.match(model_name):
        raise AdvTransferError(
            f"invalid timm model name {model_name!r} in name: give 'timm:<architecture>' with "
            "letters, digits, '_', '.', '-' only (hub references such as 'hf-hub:...' would "
            "download files and are not accepted)"
        )
    timm = _import_timm()
    is_model = getattr(timm, "is_model", None)
    if callable(is_model) and not is_model(model_name):
        known = list(timm.list_models()) if hasattr(timm, "list_models") else []
        close = difflib.get_close_matches(model_name, known, n=5)
        hint = f" Close matches: {', '.join(TIMM_PREFIX + c for c in close)}." if close else ""
        raise AdvTransferError(f"unknown timm model name {model_name!r}.{hint}")
    return timm


def _build_timm(timm: ModuleType, model_name: str, num_classes: int | None) -> nn.Module:
    kwargs: dict[str, Any] = {"pretrained": False}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    model = timm.create_model(model_name, **kwargs)
    if not isinstance(model, nn.Module):
        raise AdvTransferTypeError(
            f"timm.create_model({model_name!r}) returned {type(model).__name__}, not an nn.Module"
        )
    return model


def _torchvision_kwargs(name: str, num_classes: int | None, *, pretrained: bool = False,
                        transform_input: bool | None = None) -> dict[str, Any]:
    """Keyword arguments that build torchvision model ``name`` without any download.

    ``weights=None`` and every other weights-like parameter whose default is a pretrained
    ``WeightsEnum`` (e.g. ``weights_backbone`` of detection and segmentation models) is set to
    ``None``. For :data:`TRANSFORM_INPUT_MODELS`, ``pretrained`` (a weights file will be loaded)
    sets ``transform_input=True`` and ``init_weights=False`` as torchvision's builders do for
    their weights; ``transform_input`` (not None) sets that flag explicitly.
    """
    builder = torchvision.models.get_model_builder(name)
    kwargs: dict[str, Any] = {"weights": None}
    for param in inspect.signature(builder).parameters.values():
        if isinstance(param.default, WeightsEnum):
            kwargs[param.name] = None
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if name in TRANSFORM_INPUT_MODELS:
        if pretrained:
            kwargs.update(transform_input=True, init_weights=False)
        if transform_input is not None:
            kwargs["transform_input"] = bool(transform_input)
    elif transform_input is not None:
        raise AdvTransferError(f"transform_input applies to {list(TRANSFORM_INPUT_MODELS)} "
                               f"only; got it for {name!r}")
    return kwargs


def _check_torchvision_name(name: str) -> None:
    known = torchvision.models.list_models()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=5)
        hint = f" Close matches: {', '.join(close)}." if close else ""
        raise AdvTransferError(
            f"unknown model name {name!r}: not in torchvision.models.list_models().{hint} "
            f"Prefix timm models with {TIMM_PREFIX!r}."
        )


def from_name(
    name: str,
    *,
    weights: str | os.PathLike[str] | None = None,
    num_classes: int | None = None,
    transform_input: bool | None = None,
) -> nn.Module:
    """Build a torchvision or ``"timm:"`` model and load local weights into it.

    Args:
        name: a torchvision model name (``torchvision.models.list_models()``), or
            ``"timm:<name>"`` for a timm model (requires the optional ``timm`` package).
        weights: path to a weight file; ``None`` to use the library cache (see
            :func:`weight_candidates`); ``"random"`` for random initialisation.
        num_classes: number of outputs of the built model (default: the model's own, e.g.
            1000). The weights must match it: to fine-tune on other classes, load the original
            model and call :func:`advtransfer.models.architectures.replace_head`.
        transform_input: GoogLeNet / Inception-v3 only: ``None`` (default) = True when a
            weights file is loaded (torchvision's pretrained weights expect it), else False.

    Returns:
        The model, in the mode the library builds it (training mode; call ``.eval()``).

    Raises:
        AdvTransferError: unknown name (with close matches), timm not installed, missing weight
            file (naming the paths searched) or weights that do not fit the model.
    """
    if not isinstance(name, str) or not name:
        raise AdvTransferTypeError(f"name must be a non-empty str, got {name!r}")
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
    ):
        raise AdvTransferTypeError(
            f"num_classes must be a positive int or None, got {num_classes!r}"
        )
    if weights is not None and not isinstance(weights, (str, os.PathLike)):
        raise AdvTransferTypeError(
            f"weights must be a path, 'random' or None, got {type(weights).__name__}"
        )

    # Check the name, then resolve the weight file, before building anything.
    timm: ModuleType | None = None
    if name.startswith(TIMM_PREFIX):
        if transform_input is not None:
            raise AdvTransferError("transform_input applies to torchvision's "
                                   f"{list(TRANSFORM_INPUT_MODELS)} only; got it for {name!r}")
        timm = _checked_timm(name[len(TIMM_PREFIX) :])
    else:
        _check_torchvision_name(name)
    path: Path | None
    if isinstance(weights, str) and weights == RANDOM:
        path = None
    elif weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise AdvTransferError(f"weights file not found: {path} (weights={weights!r})")
    else:
        candidates = weight_candidates(name)
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            suffixes = ", ".join((SAFETENSORS_SUFFIX, *PICKLE_SUFFIXES))
            raise AdvTransferError(
                f"no local weights for model {name!r}; looked for: "
                + ", ".join(str(c) for c in candidates)
                + f". Provide them with weights=PATH ({suffixes}), by putting a file at one of "
                f"those paths (the directory is ${HOME_ENV}/weights, default "
                f"~/.cache/advtransfer/weights), or pass weights={RANDOM!r} for random "
                "initialisation. advtransfer never downloads weights unless asked (tv: models: "
                "download=True, command line --download)."
            )

    if timm is not None:
        model = _build_timm(timm, name[len(TIMM_PREFIX) :], num_classes)
    else:
        kwargs = _torchvision_kwargs(name, num_classes, pretrained=path is not None,
                                     transform_input=transform_input)
        model = torchvision.models.get_model(name, **kwargs)
    if path is not None:
        load_into(model, path, strict=True)
    return model
