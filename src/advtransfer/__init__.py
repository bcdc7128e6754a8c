"""advtransfer: adversarial transferability as a predictor of knowledge transferability.

Implements Liang et al., *Does Adversarial Transferability Indicate Knowledge Transferability?*
(ICML 2021, arXiv:2006.14512).

Layering. A module imports only modules of its own layer or of lower ones (checked by
tests/test_layers.py, imports inside functions included). From the bottom: *base*
(``errors``, ``fileio``, ``progress``, ``devices``, ``executors``, ``_version``, ``methods``:
the model-selection method ids and their display names, ``units``: the kinds of stored unit
and their versions); *data* (``data.*``: datasets, batching, Taskonomy images and task names,
the text files of the NLP experiment); *models* (``models.adapters``, ``architectures``,
``wrappers``, ``features``, ``checkpoint``, ``zoo``, ``taskonomy``, ``text``: building and
loading networks, no training); *numerics* (``attacks``, ``training``, ``estimators``,
``stats``, ``store``); *metrics* (``metrics``, ``reference``: the shared reference attack,
``text_attack``: the authors' snapped text attack); *analyses* (``theory``, ``knowledge``,
``report.*``); *facade* (this package, the model registry ``advtransfer.models`` /
``models.registry`` / ``models.builtin``, which trains the built-in digits models, and
``selection`` with its ``scoring`` and ``candidates``; its other modules sit lower, each as
low as its imports allow); *experiments* (``experiments.*``: runner, stages, recipes, the
model-selection analysis); *cli*.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from advtransfer._version import __version__
from advtransfer.attacks import AttackConfig, attack
from advtransfer.errors import AdvTransferError, AdvTransferTypeError, AdvTransferWarning
from advtransfer.knowledge import knowledge_transfer
from advtransfer.metrics import transfer_matrix, transferability

if TYPE_CHECKING:  # imported on first use at run time (see __getattr__); static tools see it
    from advtransfer.selection import rank

__all__ = [
    "AdvTransferError",
    "AdvTransferTypeError",
    "AdvTransferWarning",
    "AttackConfig",
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
