"""The library's one exception family.

Every user mistake is reported as an :class:`AdvTransferError` that names the parameter and what
is accepted; it subclasses :class:`ValueError` so that ``except ValueError`` keeps working.
:class:`AdvTransferTypeError` is raised for an argument of the wrong type,
:class:`NotApplicableError` for a method that cannot apply to a model. Something the user should
know but that does not stop the work (data recomputed, fewer samples than asked) is an
:class:`AdvTransferWarning`, issued through :mod:`warnings` so that it can be filtered.
"""

from __future__ import annotations


class AdvTransferError(ValueError):
    """A bad argument, bad data or a failing model, described in terms the user can act on."""


class AdvTransferTypeError(AdvTransferError, TypeError):
    """An argument of the wrong type."""


class NotApplicableError(AdvTransferError):
    """A method that cannot score this model at all (e.g. penultimate features of a model
    without an ``nn.Linear``): :func:`advtransfer.selection.rank` gives that candidate NaN for
    the method, with a warning, and goes on with the others."""


class AdvTransferWarning(UserWarning):
    """A warning of the library (:func:`advtransfer.progress.warn`): a Python caller filters it
    like any warning (``warnings.simplefilter("error", AdvTransferWarning)`` turns it into an
    error, ``"ignore"`` silences it); the command line shows it as one line ``warning: ...``."""


def check(condition: bool, message: str) -> None:
    """Raise :class:`AdvTransferError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise AdvTransferError(message)
