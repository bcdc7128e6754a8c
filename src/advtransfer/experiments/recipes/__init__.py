"""The built-in recipes. Each module registers its recipes when imported; ``MODULES`` says which
module holds which recipe, so running one recipe imports only its own module (the image
recipes pull in torchvision, which costs more than a finished run's whole rerun)."""

from __future__ import annotations

import importlib

MODULES: dict[str, str] = {
    "digits-distribution": "digits_distribution",
    "synthetic": "synthetic",
    "cifar10-stl10-architectures": "cifar_stl",
    "cifar10-stl10-proportions": "cifar_stl",
    "celeba-attributes": "celeba",
    "taskonomy": "taskonomy",
    "text-datasets": "text_datasets",
    "digits-model-selection": "model_selection",
    "digits-model-selection-shift": "model_selection",
    "imagenet-zoo": "model_selection",
}


def load(name: str | None = None) -> None:
    """Import the module of recipe ``name`` (every recipe module when None or unknown)."""
    modules = [MODULES[name]] if name in MODULES else sorted(set(MODULES.values()))
    for module in modules:
        importlib.import_module(f"{__name__}.{module}")
