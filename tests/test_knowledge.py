from __future__ import annotations

import pytest
import torch
from torch import nn

from advtransfer import AdvTransferError
from advtransfer.data.digits import digits
from advtransfer.knowledge import extract_features, knowledge_transfer

from .conftest import two_layer


def test_regression_head_is_closed_form_least_squares():
    g = torch.Generator().manual_seed(0)
    src = two_layer(0, n=5, hidden=8, k=4)
    x = torch.randn(80, 5, generator=g, dtype=torch.float64)
    with torch.no_grad():
        a = torch.randn(2, 4, generator=g, dtype=torch.float64)
        y = src(x) @ a.T + 0.5  # exactly affine in the source output
    r = knowledge_transfer(src, (x, y), (x, y), task="regression")
    assert r.test_rmse < 1e-8 and r.test_accuracy is None
    # against numpy's least squares on noisy targets
    y_noisy = y + 0.1 * torch.randn(y.shape, generator=g, dtype=torch.float64)
    r = knowledge_transfer(src, (x, y_noisy), (x, y_noisy), task="regression")
    import numpy as np

    f = src(x).detach().numpy()
    design = np.hstack([f, np.ones((80, 1))])
    sol, *_ = np.linalg.lstsq(design, y_noisy.numpy(), rcond=None)
    mse = ((design @ sol - y_noisy.numpy()) ** 2).mean()
    assert r.test_loss == pytest.approx(mse, rel=1e-8)


def test_classification_head_on_penultimate_features_learns_digits():
    split = digits(seed=0)
    torch.manual_seed(0)  # the random features, independent of the tests run before
    src = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    r = knowledge_transfer(src, (split.x_train, split.y_train), (split.x_test, split.y_test),
                           features="penultimate", epochs=60, lr=0.5)
    assert r.n_test == len(split.y_test)
    f, _ = extract_features(src, (split.x_test, split.y_test), features="penultimate")
    f_tr, _ = extract_features(src, (split.x_train, split.y_train), features="penultimate")
    from sklearn.linear_model import LogisticRegression

    ref = LogisticRegression(C=100, max_iter=5000).fit(f_tr.numpy(), split.y_train.numpy())
    ref_acc = ref.score(f.numpy(), split.y_test.numpy())
    assert r.test_accuracy > max(ref_acc - 0.05, 0.5), (r.test_accuracy, ref_acc)
    assert f.shape == (len(split.y_test), 32)
    f1, _ = extract_features(src, (split.x_test, split.y_test), features="2")
    torch.testing.assert_close(f1, f)
    assert not src[-1]._forward_hooks  # no hook left on the user's model


def test_full_finetune_does_not_modify_source_and_beats_chance():
    split = digits(seed=1)
    src = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 5))
    before = [p.clone() for p in src.parameters()]
    r = knowledge_transfer(src, (split.x_train, split.y_train), (split.x_test, split.y_test),
                           finetune="full", epochs=20, lr=0.1)
    assert r.test_accuracy > 0.5
    assert all(torch.equal(a, b) for a, b in zip(before, src.parameters(), strict=True))


def test_bad_arguments():
    src = nn.Linear(3, 2)
    data = (torch.randn(4, 3), torch.tensor([0, 1, 0, 1]))
    with pytest.raises(AdvTransferError, match="task"):
        knowledge_transfer(src, data, data, task="ranking")
    with pytest.raises(AdvTransferError, match="finetune"):
        knowledge_transfer(src, data, data, finetune="partial")
    with pytest.raises(AdvTransferError, match="not a layer"):
        knowledge_transfer(src, data, data, features="layer9")
    with pytest.raises(AdvTransferError, match="epochs"):
        knowledge_transfer(src, data, data, epochs=0)
    with pytest.raises(AdvTransferError, match="empty"):
        knowledge_transfer(src, (torch.zeros(0, 3), torch.zeros(0)), data)
