"""Built-in small models trained on the bundled digits in seconds (no download).

Used by ``advtransfer measure`` and the examples: ``digits-mlp`` and ``digits-cnn`` are trained
on the digits training split with Adam; ``digits-linear`` is a linear classifier.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from advtransfer.data.digits import digits
from advtransfer.errors import AdvTransferError
from advtransfer.models.architectures import digits_cnn, digits_mlp, fc_net
from advtransfer.training import fit

BUILTIN: dict[str, Callable[[], nn.Module]] = {
    "digits-mlp": lambda: digits_mlp(10, hidden=64),
    "digits-cnn": lambda: digits_cnn(10, width=16),
    "digits-linear": lambda: fc_net(64, 10, hidden=()),
}


def builtin_model(name: str, *, seed: int = 0, epochs: int = 15, train: bool = True,
                  progress: bool = False) -> nn.Module:
    """A built-in model, trained on the digits training split unless ``train=False``."""
    if name not in BUILTIN:
        raise AdvTransferError(f"unknown built-in model {name!r}; built-in models are "
                               f"{sorted(BUILTIN)}")
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BUILTIN[name]()
    if train:
        split = digits(seed=0)
        fit(model, (split.x_train, split.y_train), epochs=epochs, lr=1e-2, optimizer="adam",
            seed=seed, progress=progress, description=f"training {name}")
    return model.eval()
