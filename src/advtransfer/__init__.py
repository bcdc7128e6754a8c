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


def __getattr__(name: str) -> Any:
    """``advtransfer.rank`` is :func:`advtransfer.selection.rank`, imported on first use (the
    estimators it needs load scipy and scikit-learn)."""
    if name == "rank":
        from advtransfer.selection import rank

        return rank
    raise AttributeError(f"module 'advtransfer' has no attribute {name!r}")
