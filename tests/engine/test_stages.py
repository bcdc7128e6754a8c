"""The shared stages of :mod:`advtransfer.experiments.stages`: unit keys and lazy data."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from advtransfer.errors import AdvTransferError
from advtransfer.experiments import stages
from advtransfer.experiments.registry import RunContext
from advtransfer.store import Store


def _ctx(tmp_path) -> RunContext:
    return RunContext(store=Store(tmp_path), device=torch.device("cpu"), progress=False)


def _data(seed: int, n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 4, generator=g)
    return x, (x[:, 0] > 0.5).long()


def _build(seed: int = 0) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


class _Counted:
    """A lazy producer that counts its calls."""

    def __init__(self, value):
        self.value, self.calls = value, 0

    def __call__(self):
        self.calls += 1
        return self.value


def test_accuracy_is_keyed_by_the_evaluated_data(tmp_path) -> None:
    ctx = _ctx(tmp_path)
    unit = stages.SourceUnit(model={"id": 1}, data={}, epochs=5, lr=0.05)
    model, key = stages.trained_classifier(ctx, unit, _build, _data(0))
    right = _data(1)
    wrong = (right[0], 1 - right[1])  # every label flipped: accuracy 1 - a
    a = stages.accuracy(ctx, key, model, right, "right")
    b = stages.accuracy(ctx, key, model, wrong, "wrong")
    assert a + b == pytest.approx(1.0)
    assert a != b  # a second data set is evaluated, not the first result reused
    # the same name is the same unit: the stored result is reused, the data not read
    lazy = _Counted(wrong)
    assert stages.accuracy(ctx, key, model, lazy, "right") == a and lazy.calls == 0


def test_lazy_data_is_read_only_when_a_unit_is_computed(tmp_path) -> None:
    train, test = _Counted(_data(0)), _Counted(_data(1))
    x = _Counted(_data(2)[0][:8])

    def stages_run(ctx: RunContext) -> tuple:
        model, key = stages.trained_classifier(
            ctx, stages.SourceUnit(model={"id": 1}, data={}, epochs=2, lr=0.05), _build, train)
        ref, ref_key = stages.trained_classifier(
            ctx, stages.ReferenceUnit(model={"id": 2}, data={}, epochs=2, lr=0.05), _build,
            train)
        acc = stages.accuracy(ctx, key, model, test, "test")
        kt = stages.transfer(ctx, key, model, train, test, target="t", task="classification",
                             features="penultimate", epochs=2, lr=0.1)
        adv = stages.adversarial(ctx, key, ref_key, model, ref, x, inputs={"n": 8}, eps=0.5,
                                 norm="l2", objective="deviation", steps=2,
                                 convention="authors")
        return acc, kt, adv

    first = stages_run(_ctx(tmp_path))
    assert train.calls > 0 and test.calls > 0 and x.calls == 1
    calls = (train.calls, test.calls, x.calls)
    again = stages_run(_ctx(tmp_path))  # everything stored: nothing is read
    assert (train.calls, test.calls, x.calls) == calls
    assert again == first
    adv = first[2]
    assert adv["n_attack"] == 8
    for tag in ("s2t", "t2s"):
        assert {f"alpha1_{tag}", f"alpha1_median_{tag}", f"alpha1_ladv_{tag}", f"alpha2_{tag}",
                f"combined_{tag}", f"alpha1_above_one_{tag}", f"n_undefined_{tag}",
                f"mean_deviation_{tag}"} <= set(adv)
        assert math.isfinite(adv[f"alpha1_ladv_{tag}"])


def test_adversarial_conventions_from_one_measurement(tmp_path) -> None:
    ctx = _ctx(tmp_path)
    source, target = _build(1), _build(2)
    x = _data(3)[0][:16]
    kw = {"inputs": {"n": 16}, "eps": 0.5, "norm": "l2", "objective": "deviation", "steps": 2,
          "random_start": False}  # no random start: both runs attack alike
    plain = stages.adversarial(ctx, "s", "t", source, target, x, convention="icml", **kw)
    authors = stages.adversarial(ctx, "s", "t", source, target, x, convention="authors", **kw)
    for tag in ("s2t", "t2s"):
        for key in ("alpha1", "alpha1_median", "alpha1_ladv"):
            assert authors[f"{key}_{tag}"] == pytest.approx(plain[f"{key}_{tag}"])
        assert authors[f"alpha2_{tag}"] == pytest.approx(plain[f"alpha2_{tag}"] ** 2)
        assert authors[f"combined_{tag}"] == pytest.approx(plain[f"combined_{tag}"] ** 2)
    with pytest.raises(AdvTransferError, match="convention must be one of"):
        stages.adversarial(ctx, "s", "t", source, target, x, convention="paper", **kw)


def test_8_bit_pairs_are_batched_as_floats_and_augment_needs_a_pair() -> None:
    x = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    y = torch.arange(6)
    xb, yb = next(iter(stages.loader_for((x, y), batch_size=6)))
    assert xb.dtype == torch.float32 and torch.equal(xb, x.float() / 255)
    assert torch.equal(yb, y)
    floats = (torch.rand(6, 4), y)
    assert stages.loader_for(floats, batch_size=6) is floats  # passed on unchanged
    with pytest.raises(AdvTransferError, match="augment"):
        stages.loader_for(torch.utils.data.TensorDataset(*floats), batch_size=6,
                          augmented=True)
