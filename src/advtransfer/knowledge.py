"""Knowledge transferability: how well f_S transfers to the target task (docs/design.md §2).

The knowledge transfer of f_S to a target task y is the test loss (and accuracy) of g o h_S after
fitting g on target training data, where h_S is the source's output (``features=None``), a named
layer's output, or ``"penultimate"`` (the input of the last ``nn.Linear`` the source calls in
forward, :class:`advtransfer.models.features.PenultimateCapture`; the paper's last-layer
fine-tuning), and g is affine:

* regression: g(z) = W z + b by closed-form least squares, min_{W,b} sum_i ||W h(x_i) + b - y_i||^2;
* classification: a linear head trained on cross-entropy (the authors' setting: SGD, lr 0.1,
  momentum 0.9, cosine schedule, 10 epochs), on features computed once.

``finetune="full"`` instead trains a copy of the whole source together with the head, and
``finetune="head_train_mode"`` trains the head behind a copy of the source whose weights stay
frozen but which runs in train mode, so its batch-norm statistics follow the target batches (and
dropout is active): the fine-tuning of the authors' ``image_exp/transfer.py``. The source itself
is never modified.

``epoch="last"`` (default) reports the model after the last epoch; ``epoch="best_test"`` reports
the epoch with the best test accuracy (lowest test loss for regression), as the authors' code
does. Choosing the epoch on the test set is optimistic: the reported test score is the maximum
of a noisy curve, not an estimate of the score of a model chosen without the test set.
``test_curve`` then holds the test score after every epoch.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn

from advtransfer.data.batches import labelled
from advtransfer.devices import resolve_device
from advtransfer.errors import AdvTransferError
from advtransfer.models.adapters import as_output, forward, frozen
from advtransfer.models.features import PenultimateCapture
from advtransfer.training import LabelledData, Task, evaluate, fit, labelled_loader


@dataclass(frozen=True)
class KnowledgeTransferResult:
    """Test and train loss/accuracy of g o h_S on the target task.

    ``loss`` is the mean cross-entropy (classification) or per-element mean squared error
    (regression); ``rmse`` = sqrt(mean_i ||g(h(x_i)) - y_i||^2) for regression."""

    task: str
    finetune: str
    features: str | None
    epoch: str
    selected_epoch: int | None  # the epoch reported (None for the closed-form regression head)
    test_loss: float
    test_accuracy: float | None
    train_loss: float
    train_accuracy: float | None
    test_rmse: float | None
    n_train: int
    n_test: int
    test_curve: list[float] | None = None  # epoch="best_test": test accuracy (or loss) per epoch

    def to_dict(self) -> dict:
        return asdict(self)


class _Captured(nn.Module):
    """``source`` followed by reading the named layer's output (or input, for "penultimate")."""

    def __init__(self, source: nn.Module, features: str | None) -> None:
        super().__init__()
        self.source = source
        self.features = features
        self._store: list[torch.Tensor] = []
        self._capture: PenultimateCapture | None = None
        if features is None:
            return
        if features == "penultimate":
            self._capture = PenultimateCapture(source, name="source")
            return
        try:
            layer = source.get_submodule(features)
        except AttributeError:
            names = [n for n, _ in source.named_modules() if n]
            raise AdvTransferError(f"features={features!r} is not a layer of the source; its "
                                   f"layers are {names[:30]}") from None
        layer.register_forward_hook(lambda m, i, o: self._store.append(as_output(o)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._store.clear()
        if self._capture is not None:
            self._capture.reset()
        out = as_output(self.source(x))
        if self._capture is not None:
            return self._capture.features(out)
        feats = out if self.features is None else self._store[-1]
        return feats.reshape(len(x), -1)


def extract_features(source: nn.Module, data: LabelledData, *, features: str | None = None,
                     batch_size: int = 256,
                     device: str | torch.device = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """(h_S(x), y) for all of ``data``, with the source in eval mode (restored afterwards).
    The source is copied so that no hook is left on it."""
    run_on = resolve_device([source], device)
    capture = _Captured(copy.deepcopy(source), features)
    feats, labels = [], []
    with frozen(capture), torch.no_grad():
        for batch in labelled_loader(data, batch_size=batch_size, shuffle=False):
            x, y = labelled(batch)
            feats.append(forward(capture, x.to(run_on), name="source").detach())
            labels.append(y)
    return torch.cat(feats), torch.cat(labels)


def _least_squares(f: torch.Tensor, y: torch.Tensor) -> nn.Linear:
    design = torch.cat([f.double(), torch.ones(len(f), 1, dtype=torch.float64, device=f.device)],
                       dim=1)
    target = y.double().reshape(len(y), -1)
    sol = torch.linalg.lstsq(design.cpu(), target.cpu(), driver="gelsd").solution
    head = nn.Linear(f.shape[1], target.shape[1]).to(dtype=f.dtype, device=f.device)
    with torch.no_grad():
        head.weight.copy_(sol[:-1].T)
        head.bias.copy_(sol[-1])
    return head


Finetune = Literal["head", "head_train_mode", "full"]
EpochChoice = Literal["last", "best_test"]
FINETUNES = ("head", "head_train_mode", "full")
EPOCHS = ("last", "best_test")


class _BestEpoch:
    """``fit``'s ``on_epoch``: the test score after each epoch (accuracy, or minus the loss for
    regression), and the state of the best epoch so far (the first one among equals)."""

    def __init__(self, test: LabelledData, task: Task, device: torch.device) -> None:
        self.test, self.task, self.device = test, task, device
        self.curve: list[float] = []
        self.epoch = 0
        self.state: dict[str, torch.Tensor] = {}

    def __call__(self, epoch: int, model: nn.Module) -> None:
        ev = evaluate(model, self.test, task=self.task, device=self.device)
        score = float(ev.accuracy if self.task == "classification" else ev.loss)  # type: ignore
        sign = 1.0 if self.task == "classification" else -1.0
        if not self.curve or sign * score > sign * self.curve[self.epoch - 1]:
            self.epoch = epoch
            self.state = copy.deepcopy(model.state_dict())
        self.curve.append(score)

    def restore(self, model: nn.Module) -> None:
        model.load_state_dict(self.state)


def knowledge_transfer(
    source: nn.Module,
    train: LabelledData,
    test: LabelledData,
    *,
    task: Task = "classification",
    features: str | None = None,
    finetune: Finetune = "head",
    epoch: EpochChoice = "last",
    epochs: int = 10,
    lr: float = 0.1,
    weight_decay: float = 0.0,
    batch_size: int = 128,
    device: str | torch.device = "auto",
    seed: int = 0,
    progress: bool = False,
) -> KnowledgeTransferResult:
    """Fit an affine g on h_S (``features``) of the target training data and evaluate g o h_S
    on the target test data (see the module docstring for ``finetune`` and ``epoch``).
    ``train``/``test`` are (x, y) tensor pairs, Datasets or DataLoaders of (x, y);
    classification labels are integers 0..C-1.

    Example:
        >>> import torch
        >>> src = torch.nn.Linear(4, 3)
        >>> x = torch.randn(64, 4); y = x @ torch.randn(4, 2)
        >>> r = knowledge_transfer(src, (x, y), (x, y), task="regression")
        >>> r.test_rmse < 1e-4
        True
    """
    if task not in ("classification", "regression"):
        raise AdvTransferError(f"task must be 'classification' or 'regression'; got {task!r}")
    if finetune not in FINETUNES:
        raise AdvTransferError(f"finetune must be one of {list(FINETUNES)}; got {finetune!r}")
    if epoch not in EPOCHS:
        raise AdvTransferError(f"epoch must be one of {list(EPOCHS)}; got {epoch!r}")
    run_on = resolve_device([source], device)
    fit_kw = {"task": task, "epochs": epochs, "lr": lr, "weight_decay": weight_decay,
              "batch_size": batch_size, "seed": seed, "device": run_on, "progress": progress}
    if finetune == "head":
        f_tr, y_tr = extract_features(source, train, features=features, device=run_on)
        f_te, y_te = extract_features(source, test, features=features, device=run_on)
        model, tracker = _fit_head(f_tr, y_tr, (f_te, y_te), task, epoch, seed, run_on, fit_kw)
        train, test = (f_tr, y_tr), (f_te, y_te)
    else:
        model, tracker = _fit_end_to_end(source, features, train, test, finetune == "full",
                                         epoch, seed, run_on, fit_kw)
    if tracker is not None:
        tracker.restore(model)
    with torch.random.fork_rng(devices=[]):
        # a loader drawing from the global generator (random augmentation) draws the same
        # numbers in every run: the train scores are seeded, as the fit is
        torch.manual_seed(seed)
        ev_tr = evaluate(model, train, task=task, device=run_on)
    ev_te = evaluate(model, test, task=task, device=run_on)
    n_out_dims = 1
    if task == "regression":
        first = labelled(next(iter(labelled_loader(test, batch_size=1, shuffle=False))))[1]
        n_out_dims = max(first.numel(), 1)
    closed_form = finetune == "head" and task == "regression"
    return KnowledgeTransferResult(
        task=task, finetune=finetune, features=features, epoch=epoch,
        selected_epoch=None if closed_form else (tracker.epoch if tracker else epochs),
        test_loss=ev_te.loss, test_accuracy=ev_te.accuracy, train_loss=ev_tr.loss,
        train_accuracy=ev_tr.accuracy,
        test_rmse=math.sqrt(ev_te.loss * n_out_dims) if task == "regression" else None,
        n_train=ev_tr.n, n_test=ev_te.n, test_curve=tracker.curve if tracker else None,
    )


def _fit_head(f_tr: torch.Tensor, y_tr: torch.Tensor, test: LabelledData, task: Task,
              epoch: str, seed: int, run_on: torch.device, fit_kw: dict
              ) -> tuple[nn.Module, _BestEpoch | None]:
    """The affine head on fixed features: least squares (regression) or SGD on cross-entropy."""
    if task == "regression":
        return _least_squares(f_tr, y_tr), None
    head = nn.Linear(f_tr.shape[1], _n_outputs(y_tr, task)).to(dtype=f_tr.dtype, device=run_on)
    _seeded_reset(head, seed)
    tracker = _BestEpoch(test, task, run_on) if epoch == "best_test" else None
    fit(head, (f_tr, y_tr), description="fine-tuning head", on_epoch=tracker, **fit_kw)
    return head, tracker


def _fit_end_to_end(source: nn.Module, features: str | None, train: LabelledData,
                    test: LabelledData, train_body: bool, epoch: str, seed: int,
                    run_on: torch.device, fit_kw: dict) -> tuple[nn.Module, _BestEpoch | None]:
    """A new head behind a copy of the source, trained on the inputs in train mode: the copy's
    weights too (``train_body``), or only its batch-norm statistics."""
    body = _Captured(copy.deepcopy(source), features)
    with frozen(body), torch.no_grad():  # eval mode: the probe moves no batch-norm statistic
        x0, _ = labelled(next(iter(labelled_loader(train, batch_size=2, shuffle=False))))
        width = body(x0.to(run_on)).shape[1]
    y_all = torch.cat([labelled(b)[1] for b in labelled_loader(train, batch_size=512,
                                                               shuffle=False)])
    head = nn.Linear(width, _n_outputs(y_all, fit_kw["task"])).to(device=run_on,
                                                                   dtype=x0.dtype)
    _seeded_reset(head, seed)
    model = nn.Sequential(body, head)
    for p in body.parameters():
        p.requires_grad_(train_body)
    for p in head.parameters():
        p.requires_grad_(True)
    tracker = _BestEpoch(test, fit_kw["task"], run_on) if epoch == "best_test" else None
    fit(model, train, description="fine-tuning", on_epoch=tracker, **fit_kw)
    return model, tracker


def _n_outputs(y: torch.Tensor, task: Task) -> int:
    if task == "regression":
        return y.reshape(len(y), -1).shape[1]
    if y.is_floating_point() or (y < 0).any():
        raise AdvTransferError("classification labels must be integers 0..C-1; got "
                               f"{y.dtype} values from {float(y.min())}")
    return int(y.max()) + 1


def _seeded_reset(layer: nn.Linear, seed: int) -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layer.reset_parameters()
