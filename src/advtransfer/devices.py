"""Where computations run: the one :func:`resolve_device` of the library, the command line and
the recipes. advtransfer never moves a model; it runs where the models are."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from advtransfer.errors import AdvTransferError

__all__ = ["model_device", "resolve_device"]


def model_device(model: nn.Module) -> torch.device | None:
    """The device of the model's first parameter or buffer, or None for a stateless model."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return None


def resolve_device(models: Iterable[nn.Module] = (),
                   device: str | torch.device = "auto") -> torch.device:
    """The device to run on.

    ``"auto"`` is the models' device (models are never moved), or CUDA when present for
    parameter-free models or no models at all (the command line's ``--device auto``), else the
    CPU. An explicit device (``"cpu"``, ``"cuda"``, ``"cuda:N"``, a ``torch.device``) must match
    the models' device and, for CUDA, be available.

    Raises:
        AdvTransferError: the models are on different devices, ``device`` is not a device,
            CUDA is asked for but absent, or the models are elsewhere.
    """
    devices = {d for d in (model_device(m) for m in models) if d is not None}
    if len(devices) > 1:
        raise AdvTransferError(f"the models are on different devices {sorted(map(str, devices))}; "
                               "move them to one device with model.to(device)")
    if isinstance(device, str) and device == "auto":
        if devices:
            return devices.pop()
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        target = torch.device(device)
    except (RuntimeError, TypeError):
        raise AdvTransferError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N' (command "
                               f"line: --device); got {device!r}") from None
    if target.type == "cuda" and not torch.cuda.is_available():
        raise AdvTransferError(f"device {str(device)!r} was asked for (command line: --device) "
                               "but no CUDA device is available")
    for d in devices:
        if d.type != target.type or (target.index is not None and d != target):
            raise AdvTransferError(f"device={str(device)!r} but the models are on {d}; "
                                   "advtransfer never moves models: call model.to(device) first")
    return target
