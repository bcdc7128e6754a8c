"""The library's one exception family.

Every user mistake is reported as an :class:`AdvTransferError` that names the parameter and what
is accepted; it subclasses :class:`ValueError` so that ``except ValueError`` keeps working.
:class:`AdvTransferTypeError` is raised for an argument of the wrong type.
"""

from __future__ import annotations


class AdvTransferError(ValueError):
    """A bad argument, bad data or a failing model, described in terms the user can act on."""


class AdvTransferTypeError(AdvTransferError, TypeError):
    """An argument of the wrong type."""


def check(condition: bool, message: str) -> None:
    """Raise :class:`AdvTransferError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise AdvTransferError(message)
