"""advtransfer: adversarial transferability as a predictor of knowledge transferability.

Implements Liang et al., *Does Adversarial Transferability Indicate Knowledge Transferability?*
(ICML 2021, arXiv:2006.14512).
"""

from __future__ import annotations

from typing import Any

from advtransfer.attacks import attack
from advtransfer.errors import AdvTransferError, AdvTransferTypeError
from advtransfer.knowledge import knowledge_transfer
from advtransfer.metrics import transfer_matrix, transferability

__version__ = "0.1.0"

__all__ = [
    "AdvTransferError",
    "AdvTransferTypeError",
    "__version__",
    "attack",
    "knowledge_transfer",
    "rank",
    "transfer_matrix",
    "transferability",
]


_SUBMODULES = ("theory", "estimators", "selection", "experiments", "models", "data", "report",
               "stats", "store")


def __getattr__(name: str) -> Any:
    """``advtransfer.rank`` (:func:`advtransfer.selection.rank`) and the submodules
    (``advtransfer.theory``, ``advtransfer.estimators``, ...) are imported on first use: the
    estimators load scipy and scikit-learn, the recipes torchvision."""
    import importlib

    if name == "rank":
        return importlib.import_module("advtransfer.selection").rank
    if name in _SUBMODULES:
        return importlib.import_module(f"advtransfer.{name}")
    raise AttributeError(f"module 'advtransfer' has no attribute {name!r}")
