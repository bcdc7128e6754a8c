"""One name for randomness across the public API: ``seed=`` (an int seeds a fresh
``torch.Generator``, a generator is used as is, None is the global RNG), with ``generator=``
its deprecated former name (a FutureWarning, for one release)."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

import advtransfer
from advtransfer import AdvTransferError, AdvTransferTypeError

from .conftest import two_layer

# PGD from a random start, few steps: every number depends on the random stream.
KW: dict[str, Any] = dict(eps=0.3, steps=2, bounds=None)


def _x() -> torch.Tensor:
    return torch.rand(8, 6, generator=torch.Generator().manual_seed(11), dtype=torch.float64)


def _models(n: int, global_seed: int | None) -> list[torch.nn.Module]:
    """n fixed models; then the global RNG is seeded with ``global_seed`` (if given), after
    the models' construction has drawn from it."""
    models = [two_layer(i) for i in range(n)]
    if global_seed is not None:
        torch.manual_seed(global_seed)
    return models


def _attack(global_seed: int | None = None, **kw: Any) -> list[np.ndarray]:
    x, (model,) = _x(), _models(1, global_seed)
    return [advtransfer.attack(model, x, **KW, **kw).numpy()]


def _transferability(global_seed: int | None = None, **kw: Any) -> list[np.ndarray]:
    x, (s, t) = _x(), _models(2, global_seed)
    r = advtransfer.transferability(s, t, x, **KW, **kw)
    return [np.asarray([d.alpha2, d.stats.mean_deviation, *d.alpha1_per_sample])
            for d in (r.source_to_target, r.target_to_source)]


def _transfer_matrix(global_seed: int | None = None, **kw: Any) -> list[np.ndarray]:
    x, models = _x(), _models(3, global_seed)
    r = advtransfer.transfer_matrix(models, x, **KW, **kw)
    return [np.asarray(r.alpha1), np.asarray(r.alpha2), np.asarray(r.combined)]


FUNCTIONS: dict[str, Callable[..., list[np.ndarray]]] = {
    "attack": _attack, "transferability": _transferability, "transfer_matrix": _transfer_matrix}


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(u, v, equal_nan=True)
                                    for u, v in zip(a, b, strict=True))


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_seed_int_generator_and_deprecated_generator_keyword_agree(name: str) -> None:
    run = FUNCTIONS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # seed= itself warns about nothing
        by_seed = run(seed=3)
        by_generator_object = run(seed=torch.Generator().manual_seed(3))
        other = run(seed=4)
        # None draws from the global RNG: reproducible under torch.manual_seed, and moved by it
        by_global = run(seed=None, global_seed=3)
        by_global_again = run(seed=None, global_seed=3)
        by_other_global = run(seed=None, global_seed=4)
    with pytest.warns(FutureWarning, match="generator= is deprecated; pass seed=") as record:
        by_old_name = run(generator=3)
    assert [w.filename for w in record if w.category is FutureWarning] == [__file__]
    assert _same(by_seed, by_old_name)
    assert _same(by_seed, by_generator_object)
    assert _same(by_global, by_global_again) and not _same(by_global, by_other_global)
    assert not _same(by_seed, other)  # the stream matters, so the equalities are not vacuous


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_seed_and_generator_together_is_an_error_naming_both(name: str) -> None:
    run = FUNCTIONS[name]
    for old in (3, None, torch.Generator().manual_seed(3)):
        with pytest.raises(AdvTransferError, match=r"seed=.*generator="):
            run(seed=3, generator=old)
    with pytest.warns(FutureWarning, match="generator= is deprecated"):
        run(generator=None)  # an explicit None is a use of the old name too
    with pytest.raises(AdvTransferTypeError, match="seed must be a torch.Generator, an int"):
        run(seed="3")
    with pytest.raises(AdvTransferTypeError, match="seed must be"):
        run(seed=True)


def test_every_public_function_with_randomness_names_it_seed() -> None:
    for fn in (advtransfer.attack, advtransfer.transferability, advtransfer.transfer_matrix,
               advtransfer.rank):
        params = inspect.signature(fn).parameters
        assert "seed" in params, fn.__name__
        assert params["seed"].kind is inspect.Parameter.KEYWORD_ONLY, fn.__name__
    for fn in (advtransfer.attack, advtransfer.transferability, advtransfer.transfer_matrix):
        params = inspect.signature(fn).parameters
        assert params["seed"].default is None
        assert params["generator"].kind is inspect.Parameter.KEYWORD_ONLY
