"""scikit-learn's bundled handwritten digits (8x8, 1797 images, 10 classes): no download.

Images are returned as float tensors (N, 1, 8, 8) scaled to [0, 1] (pixel / 16) and labels as
int64, split into train/test with a stratified, seeded split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from advtransfer.errors import AdvTransferError


@dataclass(frozen=True)
class Split:
    """A labelled train/test split of tensors."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    def subset(self, classes: list[int] | tuple[int, ...], *, remap: bool = True) -> Split:
        """Only the samples of ``classes``; labels become 0..len(classes)-1 in that order."""
        lookup = {c: i for i, c in enumerate(classes)}

        def pick(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            mask = torch.isin(y, torch.tensor(list(classes)))
            yy = y[mask]
            if remap:
                yy = torch.tensor([lookup[int(v)] for v in yy], dtype=torch.int64)
            return x[mask], yy

        return Split(*pick(self.x_train, self.y_train), *pick(self.x_test, self.y_test))


def digits(*, test_fraction: float = 0.3, seed: int = 0, dtype: torch.dtype = torch.float32,
           flatten: bool = False) -> Split:
    """The digits as a stratified train/test :class:`Split` (inputs in [0, 1])."""
    if not 0 < test_fraction < 1:
        raise AdvTransferError(f"test_fraction must lie in (0, 1); got {test_fraction}")
    from sklearn.datasets import load_digits  # imported here: scikit-learn takes ~0.7 s to load
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float64)
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, random_state=seed,
                                              stratify=y)
    shape = (-1, 64) if flatten else (-1, 1, 8, 8)

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a, dtype=dtype).reshape(shape)

    return Split(t(x_tr), torch.as_tensor(y_tr), t(x_te), torch.as_tensor(y_te))
