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


def _bn_source() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)).eval()


def test_head_train_mode_moves_batch_norm_statistics_not_weights():
    """finetune="head_train_mode" (the authors' transfer.py): the copy's weights stay those of
    the source, its running statistics follow the target batches, the head learns; the source
    itself is untouched."""
    from advtransfer.knowledge import _fit_end_to_end

    src = _bn_source()
    before = {k: v.clone() for k, v in src.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    x = torch.randn(256, 4, generator=g) * 0.5 + 3.0  # far from the source's zero statistics
    y = (x[:, 0] > 3.0).long()
    kw = {"task": "classification", "epochs": 3, "lr": 0.1, "weight_decay": 0.0,
          "batch_size": 32, "seed": 0, "device": torch.device("cpu"), "progress": False}
    model, tracker = _fit_end_to_end(src, "penultimate", (x, y), (x, y), False, "last", 0,
                                     torch.device("cpu"), kw)
    assert tracker is None
    body = model[0].source
    for name in ("0.weight", "0.bias", "1.weight", "1.bias", "3.weight"):
        torch.testing.assert_close(body.state_dict()[name], before[name], rtol=0, atol=0)
    with torch.no_grad():
        pre_bn = body[0](x)
    # momentum 0.1 over 24 batches: the running mean is within 10 % of the target's mean
    assert not torch.allclose(body[1].running_mean, before["1.running_mean"])
    torch.testing.assert_close(body[1].running_mean, pre_bn.mean(0), rtol=0.1, atol=0.05)
    for k, v in src.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    r = knowledge_transfer(src, (x, y), (x, y), features="penultimate",
                           finetune="head_train_mode", epochs=3)
    fixed = knowledge_transfer(src, (x, y), (x, y), features="penultimate", epochs=3)
    assert r.finetune == "head_train_mode" and r.test_accuracy != fixed.test_accuracy


@pytest.mark.parametrize("finetune", ["head", "head_train_mode", "full"])
def test_best_test_epoch_is_the_maximum_of_the_test_curve(finetune):
    """epoch="best_test" follows the same training as epoch="last" (the curve's last point is
    the last-epoch result) and reports the curve's maximum, at the first epoch reaching it."""
    split = digits(seed=0).subset([0, 1, 2])
    src = _bn_source() if finetune != "head" else two_layer(0, n=64, hidden=12, k=3,
                                                            dtype=torch.float32)
    x_tr, x_te = split.x_train.flatten(1), split.x_test.flatten(1)
    if finetune != "head":
        src = nn.Sequential(nn.Linear(64, 4), src)
    kw = {"features": "penultimate", "finetune": finetune, "epochs": 6, "lr": 0.5,
          "batch_size": 64, "seed": 3}
    best = knowledge_transfer(src, (x_tr, split.y_train), (x_te, split.y_test),
                              epoch="best_test", **kw)
    last = knowledge_transfer(src, (x_tr, split.y_train), (x_te, split.y_test), **kw)
    curve = best.test_curve
    assert curve is not None and len(curve) == 6 and last.test_curve is None
    assert best.test_accuracy == pytest.approx(max(curve), abs=1e-12)
    assert best.selected_epoch == curve.index(max(curve)) + 1 and last.selected_epoch == 6
    assert last.test_accuracy == pytest.approx(curve[-1], abs=1e-12)
    assert (best.epoch, last.epoch) == ("best_test", "last")


def test_best_test_epoch_for_regression_is_the_lowest_loss():
    g = torch.Generator().manual_seed(0)
    src = nn.Sequential(nn.Linear(3, 5), nn.Tanh())
    x = torch.randn(64, 3, generator=g)
    y = torch.randn(64, 2, generator=g)
    r = knowledge_transfer(src, (x, y), (x[:32], y[:32]), task="regression", finetune="full",
                           epoch="best_test", epochs=4, lr=0.05)
    assert r.test_loss == pytest.approx(min(r.test_curve), rel=1e-9)
    closed = knowledge_transfer(src, (x, y), (x, y), task="regression", epoch="best_test")
    assert closed.selected_epoch is None and closed.test_curve is None  # least squares


def test_finetune_and_epoch_are_checked():
    src = _bn_source()
    x, y = torch.randn(8, 4), torch.zeros(8, dtype=torch.long)
    with pytest.raises(AdvTransferError, match="finetune must be one of"):
        knowledge_transfer(src, (x, y), (x, y), finetune="bn")
    with pytest.raises(AdvTransferError, match="epoch must be one of"):
        knowledge_transfer(src, (x, y), (x, y), epoch="best")


def test_train_scores_of_a_randomly_augmenting_loader_do_not_depend_on_the_global_rng():
    """A training loader that augments from the global generator (the recipes' random crops)
    is scored with seeded draws: two runs from different global RNG states agree exactly
    (before, transfer_train_accuracy of cifar10-stl10 varied between identical runs)."""
    from torch.utils.data import DataLoader, TensorDataset

    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(64, 6, generator=gen), torch.randint(0, 3, (64,), generator=gen)

    def noisy(items):
        xb = torch.stack([i[0] for i in items])
        return xb + 0.5 * torch.randn(xb.shape), torch.stack([i[1] for i in items])

    src = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    runs = []
    for state in (1, 2):
        torch.manual_seed(state)
        train = DataLoader(TensorDataset(x, y), batch_size=16, collate_fn=noisy)
        r = knowledge_transfer(src, train, (x, y), finetune="full", epochs=2, seed=3)
        runs.append((r.train_accuracy, r.train_loss, r.test_accuracy))
    assert runs[0] == runs[1]
