"""advtransfer: adversarial transferability as a predictor of knowledge transferability.

Implements Liang et al., *Does Adversarial Transferability Indicate Knowledge Transferability?*
(ICML 2021, arXiv:2006.14512).
"""

from __future__ import annotations

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
    "transfer_matrix",
    "transferability",
]
