"""The built-in recipes; importing this package registers them."""

from advtransfer.experiments.recipes import (  # noqa: F401
    celeba,
    cifar_stl,
    digits_distribution,
    model_selection,
    synthetic,
    taskonomy,
)
