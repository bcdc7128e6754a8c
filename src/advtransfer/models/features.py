r"""The penultimate features of a model: THE one extractor used by the whole library.

The *penultimate features* h_S(x) of a classifier f_S = g o h_S are the input of its last
affine layer g (the paper's "last-layer fine-tuning" replaces g). For an arbitrary
:class:`torch.nn.Module` the last layer is found by **execution order**: forward hooks on every
:class:`torch.nn.Linear` record the calls of one forward pass, and the input of the *last
Linear called* is taken (a Linear called several times counts at its last call). Registration
order (the order of ``model.modules()``) is not used: a module may define ``self.head`` before
``self.proj`` and call them the other way round.

The choice is reported as a guess, with a :class:`UserWarning` naming the layer, when

* the model's output is not the chosen Linear's output (further operations follow it), or
* the last-registered Linear is another layer (registration order would disagree), or
* the chosen Linear is called more than once in one forward pass.

:class:`PenultimateCapture` is used by :func:`advtransfer.selection.candidate_outputs` (the
feature-based estimators) and by :func:`advtransfer.knowledge.knowledge_transfer`
(``features="penultimate"``).
"""

from __future__ import annotations

import warnings
from collections import Counter
from types import TracebackType

import torch
from torch import nn

from advtransfer.errors import AdvTransferError, NotApplicableError
from advtransfer.models.adapters import forward, frozen

__all__ = ["PenultimateCapture", "has_linear", "penultimate_layer"]


def has_linear(model: nn.Module) -> bool:
    """Whether ``model`` contains an :class:`torch.nn.Linear` (so penultimate features exist)."""
    return any(isinstance(m, nn.Linear) for m in model.modules())


class PenultimateCapture:
    """Forward hooks on every ``nn.Linear`` of ``model`` recording the last one called.

    Usage: call :meth:`reset`, run the model on a batch, then :meth:`features` with the
    model's (flattened) output returns the ``(N, -1)`` input of the last Linear called. The
    first batch fixes :attr:`layer` (and warns if the choice is a guess, see the module
    docstring); a later batch whose last Linear differs raises. :meth:`remove` (or leaving
    the ``with`` block) removes the hooks.

    ``detach=True`` detaches the features (for measurement); ``False`` keeps the graph (for
    training through them).
    """

    def __init__(self, model: nn.Module, *, name: str = "model", detach: bool = False) -> None:
        self._names = {m: n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
        if not self._names:
            raise NotApplicableError(f"{name} has no nn.Linear layer: its penultimate features "
                                   "(the input of its last nn.Linear) are undefined")
        self.name = name
        self.detach = detach
        #: the name of the chosen layer (set by the first :meth:`features` call)
        self.layer: str | None = None
        self._last_registered = list(self._names.values())[-1]
        self._calls: Counter[nn.Module] = Counter()
        self._last: tuple[nn.Module, torch.Tensor, torch.Tensor] | None = None
        self._handles = [m.register_forward_hook(self._hook) for m in self._names]

    def _hook(self, module: nn.Module, inputs: tuple[torch.Tensor, ...],
              output: torch.Tensor) -> None:
        self._calls[module] += 1
        self._last = (module, inputs[0], output)

    def reset(self) -> None:
        """Forget the previous forward pass (call before every batch)."""
        self._calls.clear()
        self._last = None

    def features(self, output: torch.Tensor) -> torch.Tensor:
        """The input of the last Linear called in the pass that produced ``output``."""
        if self._last is None:
            raise AdvTransferError(f"{self.name}: none of its nn.Linear layers was called in "
                                   "forward; penultimate features are undefined")
        module, inp, out = self._last
        chosen = self._names[module]
        if self.layer is None:
            self.layer = chosen
            self._warn_if_guess(module, out, output)
        elif chosen != self.layer:
            raise AdvTransferError(f"{self.name}: the last nn.Linear called was {self.layer!r} "
                                   f"on an earlier batch but {chosen!r} now; penultimate "
                                   "features are ambiguous")
        feats = inp.reshape(len(inp), -1)
        return feats.detach() if self.detach else feats

    def _warn_if_guess(self, module: nn.Module, out: torch.Tensor,
                       output: torch.Tensor) -> None:
        chosen = self._names[module]
        reasons = []
        flat = out.detach().reshape(len(out), -1)
        produced = output.detach().reshape(len(output), -1)
        if flat.shape != produced.shape or not torch.equal(flat, produced):
            reasons.append("the model's output is not that layer's output (other operations "
                           "follow it)")
        if self._last_registered != chosen:
            reasons.append(f"the last-registered nn.Linear is {self._last_registered!r}")
        if self._calls[module] > 1:
            reasons.append(f"it is called {self._calls[module]} times in one forward pass (the "
                           "last call is used)")
        if reasons:
            warnings.warn(f"{self.name}: penultimate features taken as the input of {chosen!r}, "
                          "the last nn.Linear called in forward; this is a guess because "
                          + "; ".join(reasons) + ". Check that it is the feature layer you "
                          "mean.", UserWarning, stacklevel=3)

    def remove(self) -> None:
        """Remove the hooks."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> PenultimateCapture:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.remove()


def penultimate_layer(model: nn.Module, x: torch.Tensor, *, name: str = "model") -> str:
    """The name of the layer whose input is ``model``'s penultimate features, found by one
    probe forward pass on ``x`` (eval mode, no gradients; the model is left as it was).
    Warns when the choice is a guess (see the module docstring)."""
    with PenultimateCapture(model, name=name, detach=True) as capture, frozen(model), \
            torch.no_grad():
        capture.features(forward(model, x, name=name))
        assert capture.layer is not None
        return capture.layer
