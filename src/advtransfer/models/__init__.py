"""Model architectures, output adapters, normalisation wrapper and safe checkpoint I/O.

:func:`create` (``advtransfer.models.create("cifar:resnet18", "ref.safetensors",
num_classes=10)``) builds any model from a spec, as the command line does; :func:`list_models`
lists the specs (see :mod:`advtransfer.models.registry`).
"""

from advtransfer.models.registry import create, list_models

__all__ = ["create", "list_models"]
