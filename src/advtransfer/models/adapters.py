"""Calling user models safely: output adapters, error wrapping, and state preservation.

Every model call in advtransfer goes through :func:`forward`, which turns whatever the model
returns (a tensor, a tuple, a dict, a torchvision/timm output object) into one tensor of shape
``(batch, k)`` (outputs are flattened per sample), and turns a model's exception or a non-finite
output into an :class:`~advtransfer.errors.AdvTransferError` that names the model.

:func:`frozen` puts a model in eval mode with its parameters' ``requires_grad`` switched off for
the duration of an attack or a measurement and restores the train/eval mode of every submodule,
every ``requires_grad`` flag and every ``.grad`` afterwards, even when the body raises.
"""

from __future__ import annotations

import contextlib
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from advtransfer.errors import AdvTransferError, AdvTransferTypeError

_OUTPUT_KEYS = ("logits", "out", "output", "features", "last_hidden_state")


OutputSelector = int | str | Callable[[Any], torch.Tensor]


def as_output(out: object, *, name: str = "model") -> torch.Tensor:
    """Return the one tensor in a model's output (the documented default selection): tensors as
    they are, the ``logits``/``out``/``output``/``features``/``last_hidden_state`` entry of a
    mapping or an object (or a mapping's only tensor), and the first element of a tuple/list,
    with a warning, since a tuple has no name that says which element is the output. Choose
    another element explicitly with :func:`select_output` (the ``output=`` argument of the
    public functions)."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        if len(out) > 1:
            warnings.warn(f"{name} returned a {type(out).__name__} of {len(out)} elements; "
                          "using element 0 as its output. Pass output=INDEX (or a key or a "
                          "callable) to choose explicitly", UserWarning, stacklevel=3)
        return out[0]
    if isinstance(out, Mapping):
        for key in _OUTPUT_KEYS:
            if isinstance(out.get(key), torch.Tensor):
                return out[key]
        tensors = [v for v in out.values() if isinstance(v, torch.Tensor)]
        if len(tensors) == 1:
            return tensors[0]
    for key in _OUTPUT_KEYS:
        value = getattr(out, key, None)
        if isinstance(value, torch.Tensor):
            return value
    raise AdvTransferTypeError(
        f"{name} returned {type(out).__name__}; expected a tensor, a tuple whose first element is "
        f"a tensor, or a mapping/object with one of the keys {list(_OUTPUT_KEYS)}"
    )


class SelectedOutput(nn.Module):
    """``model`` with its output replaced by ``output(model(x))`` for a callable, ``model(x)[i]``
    for an int (tuple/list element) or ``model(x)[key]`` / ``model(x).key`` for a str."""

    def __init__(self, model: nn.Module, output: OutputSelector) -> None:
        super().__init__()
        check_module(model)
        if not (callable(output) or isinstance(output, (int, str))) or isinstance(output, bool):
            raise AdvTransferTypeError(f"output must be an int (tuple element), a str (mapping "
                                       f"key or attribute) or a callable; got {output!r}")
        self.model, self.output = model, output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, sel = self.model(x), self.output
        if callable(sel):
            return sel(out)
        try:
            if isinstance(sel, int):
                return out[sel]
            return out[sel] if isinstance(out, Mapping) else getattr(out, sel)
        except (IndexError, KeyError, AttributeError, TypeError):
            raise AdvTransferError(f"output={sel!r} selects nothing in the model's output of "
                                   f"type {type(out).__name__}") from None


def select_output(model: nn.Module, output: OutputSelector | None) -> nn.Module:
    """``model`` itself when ``output`` is None (the default selection of :func:`as_output`),
    else a :class:`SelectedOutput` wrapper."""
    return check_module(model) if output is None else SelectedOutput(model, output)


def check_module(model: Any, name: str = "model") -> nn.Module:
    """``model`` itself, or an :class:`AdvTransferTypeError` when it is not an ``nn.Module``."""
    if not isinstance(model, nn.Module):
        raise AdvTransferTypeError(f"{name} must be a torch.nn.Module; got "
                                   f"{type(model).__name__} (wrap a function in an nn.Module)")
    return model


#: per model: whether its image batches go in channels_last (decided at its first 4-D batch)
_CHANNELS_LAST: weakref.WeakKeyDictionary[nn.Module, bool] = weakref.WeakKeyDictionary()


def _channels_last(model: nn.Module, x: torch.Tensor) -> bool:
    """Whether to hand ``model`` the batch ``x`` in the channels_last memory format: on the
    CPU, for a 4-D batch of several channels, when the model (in eval mode, so that a failed
    try changes no batch-norm statistics) holds a 2-D convolution. oneDNN's
    convolutions run 20-27 % faster on such batches (CIFAR ResNet-18, forward and backward,
    2 cores; ``benchmarks/bench_peer.py``), the model's weights are not touched, and the values
    differ from the contiguous layout's only by float rounding. A model that raises on it
    (e.g. ``.view`` of a non-contiguous activation) is given contiguous batches from then on."""
    if x.ndim != 4 or x.shape[1] < 2 or x.device.type != "cpu" or model.training:
        return False
    known = _CHANNELS_LAST.get(model)
    if known is None:
        known = any(isinstance(m, nn.Conv2d) for m in model.modules())
        _CHANNELS_LAST[model] = known
    return known


def _call(model: nn.Module, x: torch.Tensor) -> object:
    """``model(x)``, with ``x`` in the memory format :func:`_channels_last` chooses."""
    if _channels_last(model, x):
        try:
            return model(x.contiguous(memory_format=torch.channels_last))
        except Exception:  # noqa: BLE001 - retried as given; a real error raises again there
            _CHANNELS_LAST[model] = False
    return model(x)


def forward(model: nn.Module, x: torch.Tensor, *, name: str = "model") -> torch.Tensor:
    """``model(x)`` flattened to ``(batch, k)``, with clear errors for failing models.

    Image batches of convolutional models run in the channels_last memory format on the CPU
    (:func:`_channels_last`). Raises :class:`AdvTransferError` when the model raises, returns a
    batch of a different size than ``x``, or returns NaN/inf.
    """
    try:
        out = _call(model, x)
    except AdvTransferError:
        raise
    except Exception as exc:  # a user model failing is reported as such, with its cause chained
        raise AdvTransferError(
            f"{name} raised {type(exc).__name__} on an input of shape {tuple(x.shape)} "
            f"({x.dtype}, {x.device}): {exc}"
        ) from exc
    y = as_output(out, name=name)
    if y.ndim == 0 or y.shape[0] != x.shape[0]:
        raise AdvTransferError(
            f"{name} returned an output of shape {tuple(y.shape)} for a batch of {x.shape[0]} "
            "inputs; the first dimension of the output must be the batch size"
        )
    y = y.reshape(y.shape[0], -1)
    if not torch.isfinite(y.detach()).all():
        raise AdvTransferError(f"{name} returned NaN or inf for an input of shape "
                               f"{tuple(x.shape)}; outputs must be finite")
    return y


@contextlib.contextmanager
def frozen(*models: nn.Module) -> Iterator[None]:
    """Eval mode and ``requires_grad=False`` on every parameter inside the block; the mode of
    every submodule, every ``requires_grad`` flag and every ``.grad`` are restored on exit."""
    saved = []
    for model in models:
        check_module(model)
        modes = [(m, m.training) for m in model.modules()]
        params = [(p, p.requires_grad, p.grad) for p in model.parameters()]
        saved.append((modes, params))
    try:
        for model in models:
            model.eval()
            for p in model.parameters():
                p.requires_grad_(False)
        yield
    finally:
        for modes, params in saved:
            for m, training in modes:
                m.training = training
            for p, requires_grad, grad in params:
                p.requires_grad_(requires_grad)
                p.grad = grad


