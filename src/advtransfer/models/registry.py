"""One model registry: every command and function that turns a name into a model calls
:func:`create`, so the same specs work on the command line and in Python.

A spec is ``PREFIX:NAME`` or ``package.module:factory``:

* ``builtin:NAME`` (``digits-mlp``, ``digits-cnn``, ``digits-linear``): small classifiers of the
  bundled 8x8 digits. ``weights=None`` trains the model now on the digits training split
  (seconds, seeded by ``seed``); a path loads it; ``"random"`` keeps the seeded initialisation.
* ``cifar:NAME``: the builders of :data:`advtransfer.models.architectures.ARCHITECTURES` (the
  CIFAR-sized ``fc``, ``lenet``, ``alexnet``, ``resnet18``, ``resnet50``, the authors'
  ``fc-liang`` and ``alexnet-liang``, plus ``digits-mlp``, ``digits-cnn``,
  ``two-layer-sigmoid``), with weights (a path) or ``"random"``; ``num_classes`` and
  ``**kwargs`` (``width=`` ...) go to the builder.
* ``text:NAME``: the text classifiers of :data:`advtransfer.models.text.TEXT_MODELS`
  (``text-bag``, ``text-cnn``, ``text-gru``, ``text-transformer``) on embedded sequences
  ``[batch, length, embed_dim]`` (all-zero rows are padding); weights and ``**kwargs``
  (``embed_dim=``, ``width=`` ...) as for ``cifar:``. Like ``timm:``, always prefixed.
* ``digits:NAME``: the model-selection recipes' digits classifiers, named by pattern
  (:mod:`advtransfer.models.digits`: ``mlpW``, ``mlpWxD``, ``cnnW``, ``linear``, ``lenet``),
  weights as for ``cifar:``; always prefixed.
* ``tv:NAME``: ``torchvision.models`` (``torchvision.models.list_models()``); weights from a path,
  from the cache ``$ADVTRANSFER_HOME/weights/NAME.{safetensors,pth,pt}`` (``weights=None``), or
  ``"random"``. ``download=True`` fetches torchvision's ``DEFAULT`` weights for the name when the
  cache has none, checks the SHA-256 prefix in the published file name and stores the file as
  ``$ADVTRANSFER_HOME/weights/NAME.pth``; nothing is ever downloaded without it.
* ``timm:NAME``: a timm model (optional extra ``advtransfer[timm]``), weights as for ``tv:``
  (cache ``$ADVTRANSFER_HOME/weights/timm/NAME.*``); ``download=True`` is not supported for timm.
* ``package.module:factory``: ``factory(**kwargs)`` (plus ``num_classes=`` when given); the module
  is imported with the current directory first on the import path, as ``python -m`` does, so a
  ``mypkg/`` in the working directory needs no ``PYTHONPATH``. ``weights=None`` or ``"random"``
  keep the factory's own weights.

Unprefixed names are kept for backward compatibility: a built-in name is ``builtin:`` (the
built-in ``digits-mlp``/``digits-cnn`` are the ``cifar:`` builders with their defaults plus the
training); otherwise a name in exactly one of ``cifar:`` and ``tv:`` means that one (``lenet`` ->
``cifar:lenet``, ``resnet101`` -> ``tv:resnet101``); a name in both (``alexnet``, ``resnet18``,
``resnet50``) is refused with the two prefixed choices. ``timm:``, ``text:`` and ``digits:``
always need their prefix.

Weight files are ``.safetensors`` or tensor-only ``.pt``/``.pth`` read with
``torch.load(weights_only=True)`` (see :mod:`advtransfer.models.checkpoint`); nothing is unpickled.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import torch
from torch import nn

from advtransfer.errors import AdvTransferError, AdvTransferTypeError
from advtransfer.models.architectures import ARCHITECTURES

__all__ = ["PREFIXES", "create", "list_models", "resolve_spec"]

#: The namespaces of :func:`create`, in the order unprefixed names are resolved.
PREFIXES = ("builtin", "cifar", "tv", "timm", "text", "digits")
_RANDOM = "random"


def _builtin_names() -> list[str]:
    from advtransfer.models.builtin import BUILTIN

    return sorted(BUILTIN)


def _tv_names() -> list[str]:
    """torchvision's classification models (its detection, segmentation, optical-flow and
    video models return no class scores to rank, and are left out)."""
    import torchvision

    return list(torchvision.models.list_models(module=torchvision.models))


def _text_names() -> list[str]:
    from advtransfer.models.text import TEXT_MODELS

    return sorted(TEXT_MODELS)


def _digits_names() -> list[str]:
    from advtransfer.models.digits import EXAMPLES

    return list(EXAMPLES)


def _timm_names() -> list[str]:
    try:
        import timm
    except ImportError:
        return []
    return list(timm.list_models())


def list_models(prefix: str | None = None) -> list[str]:
    """The prefixed specs :func:`create` accepts (``module:factory`` aside), sorted.

    Args:
        prefix: ``"builtin"``, ``"cifar"``, ``"tv"``, ``"timm"``, ``"text"`` or ``"digits"``
            (``digits:`` lists examples of its patterns; a trailing
            ``":"`` is allowed) for one namespace; ``None`` for all (``timm:`` names only when
            timm is installed).
    """
    lists: dict[str, Callable[[], list[str]]] = {
        "builtin": _builtin_names, "cifar": lambda: sorted(ARCHITECTURES), "tv": _tv_names,
        "timm": _timm_names, "text": _text_names, "digits": _digits_names}
    if prefix is None:
        wanted = list(PREFIXES)
    else:
        key = prefix[:-1] if isinstance(prefix, str) and prefix.endswith(":") else prefix
        if key not in lists:
            raise AdvTransferError(f"prefix must be one of {list(PREFIXES)} or None; got "
                                   f"{prefix!r}")
        wanted = [key]
    return sorted(f"{p}:{name}" for p in wanted for name in lists[p]())


def resolve_spec(spec: str) -> tuple[str, str]:
    """``spec`` -> (namespace, name) without building anything; namespace ``"module"`` for
    ``package.module:factory`` (not imported here). Raises :class:`AdvTransferError` for an
    ambiguous unprefixed name or a name unknown to its namespace (timm: names are checked when
    the model is built, as timm is an optional import)."""
    if not isinstance(spec, str) or not spec.strip():
        raise AdvTransferTypeError(f"spec must be a non-empty string; got {spec!r}")
    head, sep, rest = spec.partition(":")
    if sep and head not in PREFIXES:
        return "module", spec
    namespaces: dict[str, Callable[[], Any]] = {
        "builtin": _builtin_names, "cifar": lambda: ARCHITECTURES, "tv": _tv_names,
        "text": _text_names}
    if sep:
        if head == "digits":
            from advtransfer.models.digits import check_name

            check_name(rest)
            return head, rest
        if head != "timm" and rest not in namespaces[head]():
            _unknown(spec, rest, list(namespaces[head]()), head + ":")
        return head, rest
    if spec in _builtin_names():
        return "builtin", spec
    homes = [p for p in ("cifar", "tv") if spec in namespaces[p]()]
    if len(homes) == 1:
        return homes[0], spec
    if homes:
        raise AdvTransferError(
            f"model name {spec!r} is ambiguous: give {' or '.join(f'{p}:{spec}' for p in homes)}"
            " (cifar: this library's CIFAR-sized network, tv: torchvision's ImageNet model)")
    _unknown(spec, spec, [*_builtin_names(), *ARCHITECTURES, *_tv_names()], "")


def _unknown(spec: str, name: str, known: list[str], prefix: str) -> NoReturn:
    close = difflib.get_close_matches(name, list(dict.fromkeys(known)), n=3)
    hint = f" Close matches: {', '.join(prefix + c for c in close)}." if close else ""
    if prefix == "text:":  # a short list: all of it
        hint = f" The text models: {', '.join(prefix + n for n in known)}."
    raise AdvTransferError(
        f"unknown model name {spec!r}.{hint} A spec is builtin:NAME, cifar:NAME, tv:NAME "
        "(torchvision's classification models), text:NAME, timm:NAME or package.module:factory "
        "(the names: `advtransfer models`, or advtransfer.models.list_models() in Python)")


def _weights_arg(spec: str, weights: Any) -> Path | str | None:
    """None, ``"random"`` or the existing weight file (a clear error naming the path)."""
    if weights is None:
        return None
    if not isinstance(weights, (str, os.PathLike)):
        raise AdvTransferTypeError(f"weights must be a path, 'random' or None; got "
                                   f"{type(weights).__name__}")
    if os.fspath(weights) == _RANDOM:
        return _RANDOM
    path = Path(weights).expanduser()
    if not path.is_file():
        raise AdvTransferError(f"weights file not found for model {spec!r}: looked for {path} "
                               f"(weights={os.fspath(weights)!r})")
    return path


def _check_num_classes(num_classes: Any) -> None:
    if num_classes is not None and (isinstance(num_classes, bool)
                                    or not isinstance(num_classes, int) or num_classes < 1):
        raise AdvTransferError(f"num_classes must be a positive int or None; got {num_classes!r}")


def _builtin(spec: str, name: str, weights: Path | str | None, num_classes: int | None,
             seed: int, progress: bool, kwargs: dict[str, Any]) -> nn.Module:
    from advtransfer.models.builtin import builtin_model
    from advtransfer.models.checkpoint import load_into

    if kwargs:
        raise AdvTransferError(f"built-in model {spec!r} takes no keyword arguments; got "
                               f"{sorted(kwargs)} (use cifar:{name} to choose its size)")
    if num_classes not in (None, 10):
        raise AdvTransferError(f"built-in model {spec!r} classifies the 10 digits: num_classes "
                               f"must be 10 or None; got {num_classes} (use cifar:{name} for "
                               "another number of classes)")
    model = builtin_model(name, seed=seed, train=weights is None, progress=progress)
    if isinstance(weights, Path):
        load_into(model, weights)
    return model


def _cifar(spec: str, name: str, weights: Path | str | None, num_classes: int | None,
           kwargs: dict[str, Any], namespace: str = "cifar") -> nn.Module:
    """A ``cifar:`` architecture, a ``text:`` model or a ``digits:`` model (``namespace``),
    built and loaded."""
    from advtransfer.models import architectures, digits, text
    from advtransfer.models.checkpoint import load_into

    builders, build = {"text": (text.TEXT_MODELS, text.build),
                       "digits": ({name: functools.partial(digits.build, name)},
                                  lambda n, **kw: digits.build(n, **kw))}.get(
        namespace, (ARCHITECTURES, architectures.build))
    if num_classes is not None:
        kwargs = {**kwargs, "num_classes": num_classes}
    if weights is None:
        free = all(p.default is not p.empty or p.name in kwargs
                   for p in inspect.signature(builders[name]).parameters.values())
        alt, r = (", or 'random' for a random initialisation", "|random") if free else ("", "")
        raise AdvTransferError(
            f"model {spec!r} is an architecture and needs the path of its trained weights{alt} "
            f"(command line: --source-weights FILE{r} in measure, {spec}=FILE{r} in matrix and "
            f"rank; Python: weights=...)")
    model = build(name, **kwargs)
    if isinstance(weights, Path):
        load_into(model, weights, strict=True)
    return model


def _download_tv(name: str, num_classes: int | None, progress: bool) -> Path:
    """Torchvision's DEFAULT weights of ``name``, hash-checked, at the cache path (the
    download is skipped when that file exists)."""
    import torchvision

    from advtransfer.models.zoo import cache_dir

    try:
        default = torchvision.models.get_model_weights(name).DEFAULT
    except (ValueError, KeyError, AttributeError):
        raise AdvTransferError(f"torchvision publishes no weights for 'tv:{name}'; "
                               "download=True cannot fetch any") from None
    categories = default.meta.get("categories")
    if num_classes is not None and categories is not None and num_classes != len(categories):
        raise AdvTransferError(f"torchvision's weights for 'tv:{name}' have {len(categories)} "
                               f"classes; num_classes={num_classes} does not fit them")
    filename = default.url.rsplit("/", 1)[-1]
    found = torch.hub.HASH_REGEX.search(filename)
    if found is None or not found.group(1):
        raise AdvTransferError(f"the weights file {filename} of 'tv:{name}' carries no hash in "
                               "its name, so its download could not be checked; not fetched")
    target = cache_dir() / f"{name}.pth"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        try:  # torch.hub writes to a temporary file and moves it into place only when checked
            torch.hub.download_url_to_file(default.url, str(target),
                                           hash_prefix=found.group(1), progress=progress)
        except (OSError, RuntimeError) as exc:  # no network (URLError), refused, bad hash
            reason = getattr(exc, "reason", None) or exc
            raise AdvTransferError(
                f"downloading torchvision's weights for 'tv:{name}' from {default.url} failed "
                f"({type(exc).__name__}: {reason}); nothing was written to {target}. Check the "
                f"network, or put the file there yourself (or pass weights=FILE, command line "
                f"SPEC=FILE)") from None
    return target


def _zoo(spec: str, namespace: str, name: str, weights: Path | str | None,
         num_classes: int | None, download: bool, progress: bool,
         kwargs: dict[str, Any]) -> nn.Module:
    from advtransfer.models.zoo import TIMM_PREFIX, from_name, weight_candidates

    zoo_name = TIMM_PREFIX + name if namespace == "timm" else name
    if download and weights is None and not any(p.is_file() for p in weight_candidates(zoo_name)):
        if namespace == "timm":
            raise AdvTransferError(
                f"download is not supported for timm models ({spec!r}): put the weights file at "
                f"{weight_candidates(zoo_name)[0]} or pass its path")
        from advtransfer.models.zoo import _check_torchvision_name

        _check_torchvision_name(name)
        weights = _download_tv(name, num_classes, progress)
    return from_name(zoo_name, weights=weights, num_classes=num_classes, **kwargs)


def _factory(spec: str, weights: Path | str | None, num_classes: int | None,
             kwargs: dict[str, Any]) -> nn.Module:
    from advtransfer.models.checkpoint import load_factory, load_into

    if num_classes is not None:
        kwargs = {**kwargs, "num_classes": num_classes}
    model = load_factory(spec)(**kwargs)
    if isinstance(weights, Path):
        load_into(model, weights, strict=True)
    return model


def create(
    spec: str,
    weights: str | os.PathLike[str] | None = None,
    num_classes: int | None = None,
    *,
    download: bool = False,
    seed: int | None = None,
    progress: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Build the model ``spec`` names and load its weights (the specs: see the module docs).

    Args:
        spec: ``builtin:NAME``, ``cifar:NAME``, ``text:NAME``, ``tv:NAME``, ``timm:NAME``,
            ``package.module:factory`` or an unambiguous unprefixed name.
        weights: a weight file, ``"random"`` (seeded random initialisation), or ``None``:
            builtin -> trained now on the digits; cifar, text -> refused (an architecture needs
            weights); tv/timm -> the ``$ADVTRANSFER_HOME/weights`` cache (or ``download``);
            module:factory -> the factory's own weights.
        num_classes: outputs of the model, passed to the builder (``builtin:`` models have 10).
        download: tv: only: fetch torchvision's published weights into the cache (hash-checked)
            when ``weights`` is None and the cache has none. Ignored by the other namespaces.
        seed: seeds the random initialisation (and a built-in model's training; default 0
            there); ``None`` leaves the global RNG as it is.
        progress: show training / download progress.
        **kwargs: further builder arguments (``width=`` for cifar:, ``transform_input=`` for
            tv: GoogLeNet / Inception-v3, anything a factory takes).

    Returns:
        The model in eval mode (call ``.train()`` to fine-tune it).

    Raises:
        AdvTransferError: unknown or ambiguous spec, missing weights (naming the paths searched),
            weights that do not fit, a bad ``num_classes``.
    """
    _check_num_classes(num_classes)
    namespace, name = resolve_spec(spec)
    path = _weights_arg(spec, weights)
    with torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext():
        if seed is not None:
            torch.manual_seed(seed)
        if namespace == "builtin":
            model = _builtin(spec, name, path, num_classes, 0 if seed is None else seed, progress,
                             kwargs)
        elif namespace in ("cifar", "text", "digits"):
            model = _cifar(spec, name, path, num_classes, kwargs, namespace)
        elif namespace == "module":
            model = _factory(spec, path, num_classes, kwargs)
        else:
            model = _zoo(spec, namespace, name, path, num_classes, download, progress, kwargs)
    return model.eval()
