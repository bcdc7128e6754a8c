r"""Text classifiers on embedded sequences: the ``text:`` namespace of the model registry.

Every model reads the same input: a float tensor ``x`` of shape ``[batch, length, embed_dim]``
produced by one frozen embedding table shared by all models, whose row 0 (padding) is exactly
zero and whose other rows are not. So a position is padding iff its row of ``x`` is all zero::

    mask = x.abs().amax(-1) > 0        # [batch, length], True at real tokens

and the models ignore padded positions everywhere (pooling, attention, recurrence). Attacks
perturb ``x`` itself (keeping padding rows at zero), so the models are differentiable w.r.t.
``x`` (reverse and forward mode: input gradients and Jacobian-vector products), their logits do
not depend on how much padding follows a sequence (up to float rounding), nor on the other rows
of the batch, and the gradient w.r.t. ``x`` is exactly zero at padded positions. Padding need
not be trailing (``text-gru`` moves the tokens to the front, keeping their order). A row that is
all padding is the empty sequence (its pooled features are defined below; gradients stay
finite). ``length`` may be anything for ``text-bag``/``text-cnn``/``text-gru`` and at most
``max_len`` for ``text-transformer`` (its positional embedding has ``max_len`` rows).

Layer naming follows :mod:`advtransfer.models.architectures`: the final ``nn.Linear`` is the
attribute ``fc``, registered and called last, whose input is the penultimate features (what
:class:`advtransfer.models.features.PenultimateCapture` takes and
:func:`advtransfer.models.architectures.replace_head` replaces). Parameter counts below are for
the default sizes (``embed_dim=64``) and ``num_classes=4``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from advtransfer.errors import AdvTransferError
from advtransfer.models.architectures import _dropout, _positive_int, build_registered

__all__ = [
    "TEXT_MODELS",
    "TextBag",
    "TextCNN",
    "TextGRU",
    "TextTransformer",
    "build",
    "padding_mask",
    "text_bag",
    "text_cnn",
    "text_gru",
    "text_transformer",
]

#: Kernel sizes of :class:`TextCNN` (Kim, 2014).
CNN_KERNELS = (3, 4, 5)
#: Layers and attention heads of :class:`TextTransformer`.
TRANSFORMER_LAYERS, TRANSFORMER_HEADS = 2, 4


def padding_mask(x: torch.Tensor) -> torch.Tensor:
    """``x.abs().amax(-1) > 0``: the ``[batch, length]`` bool mask of real tokens (no gradient)."""
    return x.detach().abs().amax(-1) > 0


class _TextModel(nn.Module):
    """Shape checks shared by the text models."""

    embed_dim: int
    max_len: int | None = None

    def _mask(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.embed_dim or x.shape[1] < 1:
            raise AdvTransferError(f"x must have shape [batch, length >= 1, embed_dim="
                                   f"{self.embed_dim}]; got {list(x.shape)}")
        if self.max_len is not None and x.shape[1] > self.max_len:
            raise AdvTransferError(f"x has length {x.shape[1]}; {type(self).__name__} accepts "
                                   f"1..max_len={self.max_len} positions")
        return padding_mask(x)


def _masked_mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``sum_t mask[:, t] h[:, t] / max(1, sum_t mask[:, t])`` (0 for an all-padding row)."""
    total = torch.where(mask.unsqueeze(-1), h, h.new_zeros(())).sum(1)
    return total / mask.sum(1, keepdim=True).clamp(min=1).to(h.dtype)


class TextBag(_TextModel):
    """Bag of embeddings: masked mean of the token rows -> ``body`` (Linear(embed_dim, width),
    ReLU, Dropout) -> ``fc`` Linear(width, num_classes). All-padding row: mean 0."""

    def __init__(self, num_classes: int, embed_dim: int, width: int, dropout: float) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.body = nn.Sequential(nn.Linear(embed_dim, width), nn.ReLU(), nn.Dropout(dropout))
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(_masked_mean(x, self._mask(x))))


class TextCNN(_TextModel):
    """Kim's CNN: for each kernel size k in (3, 4, 5), ``width`` filters Conv1d(embed_dim, width,
    k) over the sequence (padding rows zeroed, k - 1 zero rows appended, so position t is the
    window x[t .. t+k-1]), ReLU, max over the windows that start at a real token (0 for an
    all-padding row); the 3 * width maxima -> ``dropout`` -> ``fc``."""

    def __init__(self, num_classes: int, embed_dim: int, width: int, dropout: float) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.convs = nn.ModuleList(nn.Conv1d(embed_dim, width, k) for k in CNN_KERNELS)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(width * len(CNN_KERNELS), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = self._mask(x)
        h = (x * mask.unsqueeze(-1).to(x.dtype)).transpose(1, 2)  # zero gradient at padding
        keep, minus_inf = mask.unsqueeze(1), h.new_full((), float("-inf"))
        pooled = []
        for conv in self.convs:
            windows = torch.relu(conv(nn.functional.pad(h, (0, conv.kernel_size[0] - 1))))
            pooled.append(torch.where(keep, windows, minus_inf).amax(-1))
        features = torch.cat(pooled, dim=1)
        features = torch.where(mask.any(1, keepdim=True), features, h.new_zeros(()))
        return self.fc(self.dropout(features))


class TextGRU(_TextModel):
    """Bidirectional GRU, ``width`` hidden units per direction, over the real tokens only:
    ``forward_gru`` reads them first to last and ``backward_gru`` last to first (each run on
    the tokens moved to the front of the row, in that order; padding is never read, and the
    outputs are taken at the last token, so no packing is needed and forward-mode AD works).
    The two final states, concatenated (2 * width, 0 for an all-padding row) -> ``dropout``
    -> ``fc``."""

    def __init__(self, num_classes: int, embed_dim: int, width: int, dropout: float) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.forward_gru = nn.GRU(embed_dim, width, batch_first=True)
        self.backward_gru = nn.GRU(embed_dim, width, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = self._mask(x)
        lengths = mask.sum(1, keepdim=True)  # [B, 1]
        steps = max(int(lengths.max()), 1)
        order = torch.sort((~mask).to(torch.uint8), dim=1, stable=True).indices  # tokens first
        t = torch.arange(x.shape[1], device=x.device).expand_as(order)
        reverse = order.gather(1, torch.where(t < lengths, lengths - 1 - t, t))
        valid = (t < lengths)[:, :steps].unsqueeze(-1).to(x.dtype)
        last = (lengths - 1).clamp(min=0).unsqueeze(-1)  # [B, 1, 1]
        states = []
        for gru, index in ((self.forward_gru, order), (self.backward_gru, reverse)):
            index = index[:, :steps].unsqueeze(-1)
            tokens = x.gather(1, index.expand(-1, -1, x.shape[-1])) * valid
            out, _ = gru(tokens)
            states.append(out.gather(1, last.expand(-1, 1, out.shape[-1])).squeeze(1))
        features = torch.where(lengths > 0, torch.cat(states, dim=1), x.new_zeros(()))
        return self.fc(self.dropout(features))


class TextTransformer(_TextModel):
    """Pre-norm Transformer encoder: x + ``position[:length]`` (learned, ``max_len`` rows) ->
    ``encoder`` (2 layers, 4 heads, d_model = embed_dim, feed-forward ``width``, GELU, final
    LayerNorm; padded keys masked by ``src_key_padding_mask``) -> masked mean over the real
    tokens -> ``dropout`` -> ``fc``. An all-padding row attends to all its positions (a fully
    masked softmax would be NaN) and pools to 0. Attention runs on PyTorch's math kernel, the
    one with forward-mode AD (forwards under ``torch.no_grad`` in eval mode may take PyTorch's
    fused encoder path instead: the same logits up to float rounding)."""

    def __init__(self, num_classes: int, embed_dim: int, max_len: int, width: int,
                 dropout: float) -> None:
        super().__init__()
        if embed_dim % TRANSFORMER_HEADS:
            raise AdvTransferError(f"embed_dim must be a multiple of {TRANSFORMER_HEADS} (the "
                                   f"attention heads) for text-transformer; got {embed_dim}")
        self.embed_dim, self.max_len = embed_dim, max_len
        self.position = nn.Parameter(torch.randn(max_len, embed_dim) * 0.02)
        layer = nn.TransformerEncoderLayer(embed_dim, TRANSFORMER_HEADS, width, dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, TRANSFORMER_LAYERS,
                                             norm=nn.LayerNorm(embed_dim),
                                             enable_nested_tensor=False)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(embed_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = self._mask(x)
        ignored = ~mask & mask.any(1, keepdim=True)  # True = not attended to
        with sdpa_kernel(SDPBackend.MATH):  # the kernel with forward-mode AD
            h = self.encoder(x + self.position[: x.shape[1]], src_key_padding_mask=ignored)
        return self.fc(self.dropout(_masked_mean(h, mask)))


def _sizes(num_classes: Any, embed_dim: Any, width: Any, dropout: Any) -> tuple[int, int, int,
                                                                               float]:
    return (_positive_int(num_classes, "num_classes"), _positive_int(embed_dim, "embed_dim"),
            _positive_int(width, "width"), _dropout(dropout))


def text_bag(num_classes: int, *, embed_dim: int = 64, max_len: int = 64, width: int = 128,
             dropout: float = 0.0) -> TextBag:
    """Bag of embeddings + one-hidden-layer ReLU MLP (see :class:`TextBag`); ``max_len`` is
    accepted for a uniform signature and unused. 8,836 parameters at the defaults with 4
    classes: (embed_dim + 1) * width + (width + 1) * num_classes."""
    _positive_int(max_len, "max_len")
    return TextBag(*_sizes(num_classes, embed_dim, width, dropout))


def text_cnn(num_classes: int, *, embed_dim: int = 64, max_len: int = 64, width: int = 100,
             dropout: float = 0.0) -> TextCNN:
    """Kim-style CNN, kernels 3, 4, 5 with ``width`` filters each (see :class:`TextCNN`);
    ``max_len`` unused. 78,304 parameters at the defaults with 4 classes:
    (12 * embed_dim + 3) * width + (3 * width + 1) * num_classes."""
    _positive_int(max_len, "max_len")
    return TextCNN(*_sizes(num_classes, embed_dim, width, dropout))


def text_gru(num_classes: int, *, embed_dim: int = 64, max_len: int = 64, width: int = 64,
             dropout: float = 0.0) -> TextGRU:
    """Bidirectional GRU, ``width`` hidden units per direction (see :class:`TextGRU`);
    ``max_len`` unused. 50,436 parameters at the defaults with 4 classes:
    6 * width * (embed_dim + width + 2) + (2 * width + 1) * num_classes."""
    _positive_int(max_len, "max_len")
    return TextGRU(*_sizes(num_classes, embed_dim, width, dropout))


def text_transformer(num_classes: int, *, embed_dim: int = 64, max_len: int = 64,
                     width: int = 128, dropout: float = 0.0) -> TextTransformer:
    """2-layer, 4-head pre-norm Transformer encoder with feed-forward width ``width`` and a
    learned positional embedding of ``max_len`` rows (see :class:`TextTransformer`); inputs of
    at most ``max_len`` positions. 71,428 parameters at the defaults with 4 classes:
    max_len * d + 2 * (4 d^2 + 2 d * width + 9 d + width) + 2 d + (d + 1) * num_classes with
    d = embed_dim."""
    classes, dim, ffn, p = _sizes(num_classes, embed_dim, width, dropout)
    return TextTransformer(classes, dim, _positive_int(max_len, "max_len"), ffn, p)


#: Name -> builder of the ``text:`` namespace (``build(name, **kwargs)``).
TEXT_MODELS: dict[str, Callable[..., nn.Module]] = {
    "text-bag": text_bag,
    "text-cnn": text_cnn,
    "text-gru": text_gru,
    "text-transformer": text_transformer,
}


def build(name: str, **kwargs: Any) -> nn.Module:
    """Build the text model registered as ``name`` in :data:`TEXT_MODELS` with ``kwargs``.

    Raises:
        AdvTransferError: unknown name (the message lists close matches and all names).
        AdvTransferTypeError: a keyword the builder does not accept (the message lists them).
    """
    return build_registered(TEXT_MODELS, name, "text model", **kwargs)
