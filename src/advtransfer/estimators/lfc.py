r"""LFC and LGC: label-feature and label-gradient correlation.

Reference: Aditya Deshpande, Alessandro Achille, Avinash Ravichandran, Hao Li, Luca Zancato,
Charless Fowlkes, Rahul Bhotika, Stefano Soatto, Pietro Perona. *A linearized framework and a new
benchmark for model selection for fine-tuning.* arXiv:2102.00084, 2021.

Fine-tuning is approximated by its linearisation around the pre-trained weights :math:`w_0`,
:math:`f_w(x) \approx f_{w_0}(x) + \nabla_w f_{w_0}(x)^\top (w - w_0)`, whose kernel is the
(empirical neural tangent) kernel of the per-sample gradients. LGC correlates that kernel with the
label-agreement matrix; LFC replaces the gradients by the features, i.e. the kernel of a linear
model on the features.

Reference implementation: the authors did not release code for these scores (none found in the
public code index). The re-implementations that circulate in model-selection benchmark code
(classes named ``LFC`` "for the Label-Feature Correlation (LFC) score in A linearized framework
...") compute :math:`\Theta = F F^\top`, subtract the scalar mean of :math:`\Theta` and of the
label matrix and correlate the entries; this module does the same (default ``centering="mean"``).
One of those ports divides by ``np.linalg.norm(M, ord=2)``, the *spectral* norm, which is not a
correlation and is unbounded; the Frobenius norm used here (and in the other port, via cosine
similarity of the flattened matrices) keeps the score in :math:`[-1, 1]`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from advtransfer.errors import AdvTransferError, AdvTransferTypeError
from advtransfer.estimators._validate import (
    as_class_labels,
    as_features,
    check_n_samples,
    features_and_labels,
)

if TYPE_CHECKING:
    import torch

__all__ = ["CENTERING", "lfc", "lgc", "per_sample_gradients"]

#: The accepted ``centering`` values of :func:`lfc` and :func:`lgc`.
CENTERING = ("mean", "double")


def _kernel_label_correlation(f: np.ndarray, codes: np.ndarray, n_classes: int,
                              centering: str) -> float:
    r"""Correlation of :math:`F F^\top` with the label-agreement matrix, without forming N x N.

    Writing :math:`F = F_c + \mathbf{1} m^\top` (column means :math:`m`),
    :math:`K_c = F_c F_c^\top` and :math:`u = F_c m`, the kernel is
    :math:`\Theta = K_c + u \mathbf{1}^\top + \mathbf{1} u^\top + \|m\|^2 \mathbf{1}\mathbf{1}^\top`
    with :math:`\bar\Theta = \|m\|^2` (because :math:`\mathbf{1}^\top F_c = 0`), so

    * :math:`\|\Theta - \bar\Theta\|_F^2 = \|K_c\|_F^2 + 2N\|u\|^2` (a sum of non-negative
      terms: no cancellation even when the mean dominates the Gram matrix);
    * :math:`\langle \Theta - \bar\Theta, Y \rangle = 2 \sum_c \|T_c\|^2 + 4 \sum_i u_i N_{y_i}`
      with :math:`T_c` the sum of the centred features of class :math:`c`;
    * :math:`\|K_c\|_F = \|F_c^\top F_c\|_F`, computed on the smaller of the two Gram matrices.
    """
    n = f.shape[0]
    m = f.mean(axis=0)
    centred = f - m
    # Exactly constant columns centre to exactly 0 (the mean may be off by an ulp), so constant
    # features give a zero kernel rather than one made of rounding noise.
    centred[:, np.ptp(f, axis=0) == 0] = 0.0
    gram = centred.T @ centred if f.shape[1] <= n else centred @ centred.T
    kc_sq = float(np.sum(gram**2))
    counts = np.bincount(codes, minlength=n_classes).astype(np.float64)
    class_sums = np.zeros((n_classes, f.shape[1]))
    np.add.at(class_sums, codes, centred)
    within = float(np.sum(class_sums**2))  # sum_c ||T_c||^2 = <K_c, same-class indicator>

    if centering == "double":
        # <H Theta H, H Y H> = 2 <K_c, S> with S the same-class indicator, and
        # ||H Y H||_F = 2 ||Z^T Z||_F with Z the centred one-hot matrix: linear CKA.
        zz = np.diag(counts) - np.outer(counts, counts) / n
        num = within
        den_theta = math.sqrt(kc_sq)
        den_y = float(np.linalg.norm(zz))
    else:
        u = centred @ m
        num = 2.0 * within + 4.0 * float(np.dot(u, counts[codes]))
        den_theta = math.sqrt(kc_sq + 2.0 * n * float(np.dot(u, u)))
        total_y = 2.0 * float(np.sum(counts**2)) - n * n  # sum of the entries of Y
        den_y = math.sqrt(max(n * n - total_y**2 / (n * n), 0.0))
    # A constant kernel (all samples identical) has no correlation with anything: report 0.
    if den_theta == 0.0 or den_y == 0.0:
        return 0.0
    return float(np.clip(num / (den_theta * den_y), -1.0, 1.0))


def _check_centering(centering: Any) -> None:
    if centering not in CENTERING:
        raise AdvTransferError(f"centering must be one of {list(CENTERING)}; got {centering!r}")


def lfc(features: Any, labels: Any, *,
        centering: Literal["mean", "double"] = "mean") -> float:
    r"""Label-Feature Correlation: how well the feature kernel agrees with the labels.

    With the feature kernel :math:`\Theta_{ij} = \langle f(x_i), f(x_j) \rangle` (the Gram
    matrix of the features as given, not centred per feature) and the label-agreement matrix
    :math:`Y_{ij} = +1` if :math:`y_i = y_j` and :math:`-1` otherwise,

    .. math::

        \operatorname{LFC} = \frac{\sum_{i,j} (\Theta_{ij} - \bar\Theta)(Y_{ij} - \bar Y)}
            {\|\Theta - \bar\Theta\|_F \, \|Y - \bar Y\|_F} \in [-1, 1],

    where :math:`\bar\Theta, \bar Y` are the means of all :math:`N^2` entries: the Pearson
    correlation of the entries of the two matrices (``centering="mean"``, default, as the
    public implementations). ``centering="double"`` centres both matrices on both sides instead,
    :math:`H \Theta H` and :math:`H Y H` with :math:`H = I - \tfrac1N \mathbf{1}\mathbf{1}^\top`,
    which is linear centred kernel alignment between the features and the one-hot labels and
    does not depend on where the feature origin is.

    The score is invariant to scaling the features, to rotations of the feature space
    (:math:`\Theta` is unchanged), to sample order and to renaming the labels; with
    ``centering="double"`` also to translations of the features. Constant features (a
    constant kernel) give 0. It is computed without forming :math:`N \times N` matrices, in
    :math:`O(N \min(N, D)\, \max(N, D))`.

    Parameters
    ----------
    features:
        ``(N, D)`` features of the target data (numpy or torch), ``N >= 2``.
    labels:
        ``(N,)`` target class labels of any values (at least 2 classes).
    centering:
        ``"mean"`` (default) or ``"double"``, see above.

    Returns
    -------
    float
        LFC in :math:`[-1, 1]` (higher is better).
    """
    _check_centering(centering)
    f, codes, n_classes = features_and_labels(features, labels)
    return _kernel_label_correlation(f, codes, n_classes, centering)


def lgc(gradients: Any, labels: Any, *,
        centering: Literal["mean", "double"] = "mean") -> float:
    r"""Label-Gradient Correlation: :func:`lfc` on the kernel of per-sample gradients.

    With :math:`g_i = \nabla_w s(x_i; w_0) \in \mathbb{R}^P` the gradient of a scalar output
    :math:`s` of the network at the pre-trained weights (see :func:`per_sample_gradients`), the
    kernel is the empirical neural tangent kernel :math:`\Theta_{ij} = \langle g_i, g_j
    \rangle` of the linearised network, and

    .. math::

        \operatorname{LGC} = \frac{\sum_{i,j} (\Theta_{ij} - \bar\Theta)(Y_{ij} - \bar Y)}
            {\|\Theta - \bar\Theta\|_F \, \|Y - \bar Y\|_F} \in [-1, 1]

    with the same label-agreement matrix :math:`Y` and centering as :func:`lfc`. For a linear
    model :math:`s(x) = \sum_k (W x + b)_k` the gradients are :math:`(\mathbf{1} x^\top,
    \mathbf{1})` and LGC equals LFC of the features :math:`[x, 1]`.

    Parameters
    ----------
    gradients:
        ``(N, P)`` per-sample gradients (numpy or torch), ``N >= 2``, e.g. from
        :func:`per_sample_gradients`.
    labels:
        ``(N,)`` target class labels of any values (at least 2 classes).
    centering:
        ``"mean"`` (default) or ``"double"``, see :func:`lfc`.

    Returns
    -------
    float
        LGC in :math:`[-1, 1]` (higher is better).
    """
    _check_centering(centering)
    g = as_features(gradients, "gradients")
    codes, n_classes = as_class_labels(labels, "labels")
    check_n_samples(g.shape[0], "gradients", codes.shape[0], "labels")
    return _kernel_label_correlation(g, codes, n_classes, centering)


def per_sample_gradients(model: torch.nn.Module, inputs: Any, *,
                         params: Iterable[str] | None = None,
                         output: Literal["sum", "mean"] | int = "sum",
                         chunk_size: int | None = None) -> torch.Tensor:
    r"""Per-sample gradients of a scalar network output, as an ``(N, P)`` matrix.

    For every sample :math:`x_i` (row ``i`` of ``inputs``) returns
    :math:`g_i = \nabla_w s(x_i; w)` at the model's current weights, where the scalar is

    * ``output="sum"`` (default): :math:`s = \sum_k f_k(x_i)`, the sum of all model outputs
      for the sample (for a single-output model, the output itself);
    * ``output="mean"``: :math:`s = \tfrac1K \sum_k f_k(x_i)`;
    * ``output=k`` (an int): the ``k``-th entry of the flattened per-sample output.

    The paper's LGC kernel is that of the gradients of the network output with respect to the
    pre-trained weights; how a multi-output head is reduced to one scalar is a choice left to
    the caller here (``output``), with the sum as default.

    The model is evaluated with :func:`torch.func.functional_call` in **eval mode** (dropout off,
    batch-norm running statistics; its previous mode is restored afterwards), one sample at a
    time through :func:`torch.func.vmap` of :func:`torch.func.grad`, so the gradients of
    different samples never mix (even with batch-norm). Parameters are differentiated whether or
    not they have ``requires_grad``; the model itself is not modified. Works on CPU and on any
    device the model and ``inputs`` share.

    Parameters
    ----------
    model:
        A :class:`torch.nn.Module` whose forward takes a batch ``inputs[i:i+1]`` and returns a
        tensor with a leading batch dimension of 1.
    inputs:
        ``(N, ...)`` tensor (or numpy array) of ``N >= 1`` samples.
    params:
        Names (as in ``model.named_parameters()``) of the parameters to differentiate, in the
        order of the columns; ``None`` (default) for all parameters, in
        ``named_parameters()`` order. Each block is flattened row-major.
    output:
        ``"sum"``, ``"mean"`` or a non-negative int index into the flattened per-sample output.
    chunk_size:
        Samples per vectorised chunk (positive int) to bound memory, or ``None`` for all at once.

    Returns
    -------
    torch.Tensor
        ``(N, P)`` detached tensor of per-sample gradients (dtype of the parameters).
    """
    import torch
    from torch.func import functional_call, grad, vmap

    inputs = _check_gradient_arguments(model, inputs, output, chunk_size)
    named = dict(model.named_parameters())
    names = _selected_parameters(named, params)
    diff = {name: named[name].detach() for name in names}
    fixed = {name: p.detach() for name, p in named.items() if name not in diff}
    buffers = {name: b.detach() for name, b in model.named_buffers()}

    def scalar(weights: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, (weights, fixed, buffers), (x.unsqueeze(0),))
        return _reduce_output(out, output)

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            probe = functional_call(model, (diff, fixed, buffers), (inputs[:1],))
        _check_probe(probe, output)
        grads = vmap(grad(scalar), in_dims=(None, 0), chunk_size=chunk_size)(diff, inputs)
    finally:
        model.train(was_training)
    n = inputs.shape[0]
    return torch.cat([grads[name].reshape(n, -1) for name in names], dim=1).detach()


def _check_gradient_arguments(model: Any, inputs: Any, output: Any,
                              chunk_size: Any) -> torch.Tensor:
    """The checks of :func:`per_sample_gradients`' arguments; returns ``inputs`` as a tensor
    (a numpy array or array-like through :func:`torch.as_tensor`) with at least one sample."""
    import torch

    if not isinstance(model, torch.nn.Module):
        raise AdvTransferTypeError(
            f"model must be a torch.nn.Module; got {type(model).__name__}"
        )
    if output not in ("sum", "mean") and (
            isinstance(output, bool) or not isinstance(output, int) or output < 0):
        raise AdvTransferError(
            f"output must be 'sum', 'mean' or a non-negative integer index; got {output!r}"
        )
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int)
                                   or chunk_size < 1):
        raise AdvTransferError(
            f"chunk_size must be a positive integer or None; got {chunk_size!r}"
        )
    if not isinstance(inputs, torch.Tensor):
        try:
            inputs = torch.as_tensor(np.asarray(inputs))
        except (TypeError, ValueError, RuntimeError) as exc:
            raise AdvTransferTypeError(
                f"inputs must be a torch tensor or numpy array; got {type(inputs).__name__}"
            ) from exc
    if inputs.ndim < 1 or inputs.shape[0] < 1:
        raise AdvTransferError(
            f"inputs must have a leading batch dimension with at least 1 sample; got shape "
            f"{tuple(inputs.shape)}"
        )
    return inputs


def _selected_parameters(named: dict[str, torch.nn.Parameter],
                         params: Iterable[str] | None) -> list[str]:
    """The names of the parameters :func:`per_sample_gradients` differentiates, in column
    order: all of ``named`` (``named_parameters()`` order) for ``params=None``, else
    ``params`` checked (known, distinct, not a bare string); never empty."""
    if params is None:
        names = list(named)
    else:
        if isinstance(params, str):
            raise AdvTransferError(
                "params must be an iterable of parameter names or None; got a single string "
                f"{params!r} (wrap it in a list)"
            )
        names = list(params)
        unknown = [p for p in names if p not in named]
        if unknown:
            raise AdvTransferError(
                f"params must name parameters of the model (see model.named_parameters()); "
                f"unknown: {unknown[:5]}"
            )
        if len(set(names)) != len(names):
            raise AdvTransferError("params must not repeat a parameter name")
    if not names:
        raise AdvTransferError("params must select at least one parameter; the selection is empty")
    return names


def _reduce_output(out: torch.Tensor, output: Literal["sum", "mean"] | int) -> torch.Tensor:
    """The scalar s of one sample's output: the sum, the mean or entry ``output`` of the
    flattened output."""
    flat = out.reshape(-1)
    if output == "sum":
        return flat.sum()
    if output == "mean":
        return flat.mean()
    return flat[output]


def _check_probe(probe: Any, output: Literal["sum", "mean"] | int) -> None:
    """The model's output on the first sample must be a floating-point tensor with more than
    ``output`` entries (for an integer ``output``)."""
    import torch

    if not isinstance(probe, torch.Tensor) or not probe.is_floating_point():
        raise AdvTransferError(
            "model must return a floating-point tensor to differentiate; got "
            f"{type(probe).__name__}"
        )
    if isinstance(output, int) and not isinstance(output, bool) and output >= probe.numel():
        raise AdvTransferError(
            f"output index must be below the per-sample output size {probe.numel()}; "
            f"got {output}"
        )
