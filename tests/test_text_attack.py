"""snapped_attack: the authors' Carlini-Wagner attack in embedding space, snapped to words.

The known answers come from a 2-D vocabulary and a linear model over the mean embedding, where
the cheapest flipping text is found by enumerating every candidate text."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from advtransfer.errors import AdvTransferError
from advtransfer.text_attack import nearest_words, snapped_attack

# Row 0 padding; 1 and 6 read as class 0; 2 is 1's nearest word but keeps class 0; 3, 4, 5, 7
# flip to class 1, and 7 is the nearest flipping word of 1 (3 when 7 is frozen).
TABLE = torch.tensor([[0.0, 0.0], [-1.0, 0.0], [-0.5, 1.0], [0.5, 0.0], [3.0, 0.0],
                      [0.2, 2.5], [-2.0, 0.3], [0.3, -0.1]], dtype=torch.float64)


class MeanLinear(nn.Module):
    """Logits of the mean of the non-padding rows: z = (-a m_1, a m_1) (class 1 iff m_1 > 0),
    behind a dropout that only acts in training mode; records the mode it was called in."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 2).double()
        self.drop = nn.Dropout(0.5)
        self.modes: list[bool] = []
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[-scale, 0.0], [scale, 0.0]]))
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        m = (x.abs().amax(-1) > 0).unsqueeze(-1).to(x.dtype)
        return self.fc(self.drop((x * m).sum(1) / m.sum(1).clamp(min=1)))


def _cheapest_flip(model: nn.Module, tokens: list[int], allowed: list[int]) -> list[int]:
    """The text over ``allowed`` words of smallest squared distance to ``tokens`` whose class
    differs from that of ``tokens``, by enumeration."""
    model.eval()
    with torch.no_grad():
        clean = model(TABLE[tokens][None]).argmax(1)
        texts = [list(t) for t in itertools.product(allowed, repeat=len(tokens))]
        flips = [t for t in texts if model(TABLE[t][None]).argmax(1) != clean]
    return min(flips, key=lambda t: float((TABLE[t] - TABLE[tokens]).pow(2).sum()))


@pytest.mark.parametrize("scale", [0.5, 5.0])
@pytest.mark.parametrize("frozen", [None, {7}])
def test_the_attack_finds_the_cheapest_flipping_text(scale, frozen):
    model = MeanLinear(scale)
    ids = torch.tensor([[1, 0, 0], [1, 6, 0]])
    result = snapped_attack(model, ids, TABLE, frozen=frozen)
    allowed = [i for i in range(1, len(TABLE)) if i not in (frozen or set())]
    expected = [_cheapest_flip(model, [1], allowed), _cheapest_flip(model, [1, 6], allowed)]
    assert result.ids[0, :1].tolist() == expected[0]
    assert result.ids[1, :2].tolist() == expected[1]
    assert expected[0] == ([3] if frozen else [7])  # the example tells the two cases apart
    assert result.success.all()


def test_nearest_words_is_the_euclidean_argmin_over_the_candidates():
    g = torch.Generator().manual_seed(0)
    table = torch.randn(50, 6, generator=g)
    vectors = torch.randn(40, 6, generator=g) * 2
    candidates = torch.tensor([i for i in range(50) if i % 3])
    dist = torch.cdist(vectors.double(), table.double())
    dist[:, [i for i in range(50) if i % 3 == 0]] = float("inf")
    assert torch.equal(nearest_words(vectors, table, candidates), dist.argmin(1))
    assert torch.equal(nearest_words(table[candidates], table, candidates), candidates)


def _random_problem(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A random table (V = 30, E = 4, row 0 zero), a small MLP over the mean embedding and
    ids [5, 7] with padding and the token 2 (used as a frozen [SEP])."""
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(30, 4, generator=g, dtype=torch.float64)
    table[0] = 0.0
    ids = torch.randint(3, 30, (5, 7), generator=g)
    ids[:, 3] = 2
    for row, n in enumerate((7, 6, 4, 2, 1)):
        ids[row, n:] = 0
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 3)).double()
    return _Mean(model), ids, table


class _Mean(nn.Module):
    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = (x.abs().amax(-1) > 0).unsqueeze(-1).to(x.dtype)
        return self.body((x * m).sum(1) / m.sum(1).clamp(min=1))


def test_padding_and_frozen_ids_never_change_nor_appear():
    model, ids, table = _random_problem()
    result = snapped_attack(model, ids, table, steps=30, frozen={2, 5}, init_scale=0.5, seed=1)
    keep = (ids == 0) | (ids == 2) | (ids == 5)
    assert torch.equal(result.ids[keep], ids[keep])
    assert not torch.isin(result.ids[~keep], torch.tensor([0, 2, 5])).any()
    assert (result.changed > 0).any()  # the attack did change something
    assert torch.all(result.delta[ids == 0] == 0)


def test_outputs_agree_with_the_ids():
    model, ids, table = _random_problem(1)
    labels = torch.tensor([0, 1, 2, 0, 1])
    result = snapped_attack(model, ids, table, steps=40, labels=labels, frozen={2})
    assert torch.equal(result.changed, (result.ids != ids).sum(1))
    assert torch.equal(result.embedded, table[result.ids])
    assert torch.equal(result.delta, table[result.ids] - table[ids])
    with torch.no_grad():
        assert torch.equal(result.success, model(table[result.ids]).argmax(1) != labels)


def test_steps_zero_changes_nothing():
    model, ids, table = _random_problem(2)
    with torch.no_grad():
        clean = model(table[ids]).argmax(1)
    labels = clean.clone()
    labels[0] = (labels[0] + 1) % 3  # a label the model already disagrees with
    result = snapped_attack(model, ids, table, steps=0, labels=labels, init_scale=1.0, seed=0)
    assert torch.equal(result.ids, ids)
    assert result.changed.sum() == 0 and torch.all(result.delta == 0)
    assert result.success.tolist() == [True, False, False, False, False]


def test_the_model_state_is_restored_and_the_attack_runs_in_eval_mode():
    model = MeanLinear()
    model.train()
    model.fc.bias.requires_grad_(False)
    grad = torch.ones_like(model.fc.weight)
    model.fc.weight.grad = grad
    snapped_attack(model, torch.tensor([[1, 6, 0]]), TABLE, steps=5)
    assert model.training and model.drop.training and model.fc.training
    assert model.fc.weight.requires_grad and not model.fc.bias.requires_grad
    assert model.fc.weight.grad is grad and torch.all(grad == 1)
    assert model.fc.bias.grad is None
    assert model.modes and not any(model.modes)


def test_a_seed_makes_the_random_start_reproducible():
    model, ids, table = _random_problem(3)
    kwargs = {"steps": 20, "frozen": {2}, "init_scale": 2.0}
    first = snapped_attack(model, ids, table, seed=4, **kwargs)
    again = snapped_attack(model, ids, table, seed=torch.Generator().manual_seed(4), **kwargs)
    torch.manual_seed(4)  # seed=None draws from the global RNG: the same stream
    global_rng = snapped_attack(model, ids, table, seed=None, **kwargs)
    assert torch.equal(first.ids, again.ids) and torch.equal(first.ids, global_rng.ids)
    others = [snapped_attack(model, ids, table, seed=s, **kwargs).ids for s in range(4)]
    assert any(not torch.equal(o, first.ids) for o in others)  # the seed matters


def test_a_sequence_is_attacked_as_if_alone():
    """The gradient is clipped per sample (on this problem, clipping the batch's gradient as
    one tensor, as the authors' code does, gives other ids), so batching changes nothing."""
    model, ids, table = _random_problem(2)
    batch = snapped_attack(model, ids, table, steps=30, frozen={2})
    for row in range(len(ids)):
        alone = snapped_attack(model, ids[row:row + 1], table, steps=30, frozen={2})
        assert torch.equal(alone.ids[0], batch.ids[row])


@pytest.mark.parametrize(("change", "name"), [
    ({"steps": -1}, "steps"),
    ({"lr": 0.0}, "lr"),
    ({"lr": -0.1}, "lr"),
    ({"confidence": -1.0}, "confidence"),
    ({"const": 0.0}, "const"),
    ({"init_scale": float("nan")}, "init_scale"),
    ({"ids": torch.tensor([1, 2])}, "ids"),
    ({"ids": torch.tensor([[[1, 2]]])}, "ids"),
    ({"ids": torch.tensor([[1, 8]])}, "ids"),
    ({"ids": torch.tensor([[-1, 2]])}, "ids"),
    ({"ids": torch.tensor([[1.0, 2.0]])}, "ids"),
    ({"table": TABLE + 1.0}, "table"),
    ({"table": TABLE[:, 0]}, "table"),
    ({"table": TABLE[:1]}, "table"),
    ({"frozen": {8}}, "frozen"),
    ({"labels": torch.tensor([0, 1])}, "labels"),
    ({"labels": torch.tensor([2])}, "labels"),
    ({"seed": "x"}, "seed"),
])
def test_bad_arguments_name_the_parameter(change, name):
    kwargs = {"ids": torch.tensor([[1, 6, 0]]), "table": TABLE, "steps": 1, **change}
    with pytest.raises(AdvTransferError, match=name):
        snapped_attack(MeanLinear(), **kwargs)
