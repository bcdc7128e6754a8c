"""The text models (``text:`` namespace): embedded-sequence input, padding = all-zero rows."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from advtransfer.cli import app
from advtransfer.errors import AdvTransferError
from advtransfer.knowledge import extract_features, knowledge_transfer
from advtransfer.models import create, list_models
from advtransfer.models.architectures import replace_head
from advtransfer.models.checkpoint import save_model
from advtransfer.models.features import penultimate_layer
from advtransfer.models.registry import resolve_spec
from advtransfer.models.text import TEXT_MODELS, padding_mask

from .conftest import state_equal

NAMES = sorted(TEXT_MODELS)
SIZES = {"embed_dim": 16, "max_len": 24, "width": 12}


def _model(name: str, seed: int = 0, num_classes: int = 3, **sizes: int) -> nn.Module:
    return create(f"text:{name}", "random", num_classes=num_classes, seed=seed,
                  **{**SIZES, **sizes})


def _table(vocab: int = 12, dim: int = 16, seed: int = 0) -> torch.Tensor:
    """A frozen embedding table: row 0 (padding) zero, the others random (never all zero)."""
    table = torch.randn(vocab, dim, generator=torch.Generator().manual_seed(seed))
    table[0] = 0
    return table


def _embedded(lengths: list[int], total: int, seed: int = 1, vocab: int = 12) -> torch.Tensor:
    """Rows of random tokens 1..vocab-1, ``lengths[i]`` of them, then padding up to ``total``."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (len(lengths), total), generator=g)
    ids[torch.arange(total) >= torch.tensor(lengths).unsqueeze(1)] = 0
    return _table(vocab)[ids]


LENGTHS = [5, 12, 1, 0, 9, 3]  # row 3 is all padding


@pytest.mark.parametrize("name", NAMES)
def test_logits_shape_dtype_and_seeded_initialisation(name: str) -> None:
    x = _embedded(LENGTHS, 12)
    model = _model(name)
    out = model(x)
    assert out.shape == (len(LENGTHS), 3) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert state_equal(model, _model(name)) and torch.equal(_model(name)(x), out)
    assert not torch.allclose(_model(name, seed=1)(x), out)
    assert model.double()(x.double()).dtype == torch.float64
    assert not model.training  # create returns eval mode


@pytest.mark.parametrize("name", NAMES)
def test_logits_ignore_padding_length_and_the_rest_of_the_batch(name: str) -> None:
    x = _embedded(LENGTHS, 12)
    model = _model(name)
    with torch.no_grad():
        out = model(x)
        longer = torch.cat([x, torch.zeros(len(x), SIZES["max_len"] - 12, SIZES["embed_dim"])], 1)
        torch.testing.assert_close(model(longer), out, rtol=0, atol=1e-5)
        perm = torch.tensor([4, 2, 0, 5, 3, 1])
        torch.testing.assert_close(model(x[perm]), out[perm], rtol=0, atol=1e-5)
        for i, n in enumerate(LENGTHS):  # each row alone, cut to its own length (at least 1)
            alone = model(x[i:i + 1, :max(n, 1)])
            torch.testing.assert_close(alone, out[i:i + 1], rtol=0, atol=1e-5)
        changed = x.clone()
        changed[1, 7] = _table()[5] if not torch.equal(x[1, 7], _table()[5]) else _table()[6]
        assert not torch.allclose(model(changed)[1], out[1], rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_input_gradient_is_zero_exactly_at_padding(name: str) -> None:
    x = _embedded(LENGTHS, 12).requires_grad_(True)
    model = _model(name)
    weights = torch.randn(len(LENGTHS), 3, generator=torch.Generator().manual_seed(2))
    (grad,) = torch.autograd.grad((model(x) * weights).sum(), x)
    padding = ~padding_mask(x)
    assert torch.isfinite(grad).all()
    assert padding.sum() == 12 * len(LENGTHS) - sum(LENGTHS)
    assert torch.count_nonzero(grad[padding]) == 0
    row_norms = grad.abs().sum(-1)
    for i, n in enumerate(LENGTHS):
        if n:
            assert (row_norms[i, :n] > 0).any(), f"row {i} has no token gradient"


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")  # torch's
@pytest.mark.parametrize("name", NAMES)  # forward-AD decompositions, loaded on first use
def test_forward_mode_jvp_matches_reverse_mode(name: str) -> None:
    """torch.func.jvp (what attacks use for Jacobian-vector products) agrees with the rows of
    the Jacobian from reverse mode, J v = (grad_x f_c . v)_c, in float64."""
    model = _model(name).double()
    x = _embedded(LENGTHS, 12).double()
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    v = v * padding_mask(x).unsqueeze(-1)  # attacks keep padding rows at zero
    out, tangent = torch.func.jvp(model, (x,), (v,))
    xr = x.clone().requires_grad_(True)
    logits = model(xr)
    torch.testing.assert_close(out, logits.detach())
    for c in range(3):
        (grad,) = torch.autograd.grad(logits[:, c].sum(), xr, retain_graph=True)
        torch.testing.assert_close(tangent[:, c], (grad * v).sum((1, 2)), rtol=1e-7, atol=1e-9)


def _presence_task(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 1 iff token 1 occurs somewhere in the row (lengths 2..16, tokens 2..11 otherwise)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, 17, (n,), generator=g)
    ids = torch.randint(2, 12, (n, 20), generator=g)
    y = torch.arange(n) % 2
    where = (torch.rand(n, generator=g) * lengths).long()
    ids[y == 1, where[y == 1]] = 1
    ids[torch.arange(20) >= lengths.unsqueeze(1)] = 0
    return _table()[ids], y


@pytest.fixture(scope="module")
def trained() -> dict[str, nn.Module]:
    """Each model trained for 100 full-batch Adam steps on the presence task (seeded)."""
    x, y = _presence_task(128, seed=10)
    models = {}
    for name in NAMES:
        model = _model(name, num_classes=2, seed=0).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(100):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
        models[name] = model.eval()
    return models


@pytest.mark.parametrize("name", NAMES)
def test_each_model_learns_whether_a_token_occurs(name: str,
                                                  trained: dict[str, nn.Module]) -> None:
    x, y = _presence_task(128, seed=10)
    untrained = _model(name, num_classes=2)
    with torch.no_grad():
        accuracy = (trained[name](x).argmax(1) == y).float().mean().item()
        before = (untrained(x).argmax(1) == y).float().mean().item()
    assert accuracy >= 0.9 > before


@pytest.mark.parametrize("name", NAMES)
def test_penultimate_features_and_head_replacement(name: str,
                                                   trained: dict[str, nn.Module]) -> None:
    model = trained[name]
    x, y = _presence_task(64, seed=11)
    seen: list[torch.Tensor] = []
    hook = model.fc.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    with torch.no_grad():
        logits = model(x)
    hook.remove()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # fc is the last Linear registered and called: no guess
        assert penultimate_layer(model, x) == "fc"
        feats, labels = extract_features(model, (x, y), features="penultimate")
    # (no_grad forwards may take PyTorch's fused Transformer path: equal up to rounding)
    torch.testing.assert_close(feats, seen[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(model.fc(feats), logits)
    assert torch.equal(labels, y)
    # a fresh 5-class head on a copy; the body (hence the features) is unchanged
    headed = replace_head(model, 5)
    assert headed(x).shape == (64, 5) and model(x).shape == (64, 2)
    torch.testing.assert_close(headed.fc(feats), headed(x).detach())
    # the paper's last-layer fine-tuning: a new head on the penultimate features
    train_part, test_part = _presence_task(128, seed=12), _presence_task(128, seed=13)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = knowledge_transfer(model, train_part, test_part, features="penultimate",
                                finetune="head", epochs=30, lr=0.05, batch_size=64)
    assert result.test_accuracy is not None and result.test_accuracy >= 0.8
    end_to_end = knowledge_transfer(model, train_part, test_part, features="penultimate",
                                    finetune="full", epochs=1, lr=0.01, batch_size=64)
    assert end_to_end.n_train == 128 and math.isfinite(end_to_end.train_loss)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_create_round_trips_through_a_weight_file(name: str, suffix: str, tmp_path: Path) -> None:
    model = _model(name, seed=4)
    path = tmp_path / f"model{suffix}"
    if suffix == ".pt":
        torch.save(model.state_dict(), path)
    else:
        save_model(model, path)
    loaded = create(f"text:{name}", path, num_classes=3, seed=9, **SIZES)
    x = _embedded(LENGTHS, 12)
    assert state_equal(loaded, model) and not loaded.training
    assert torch.equal(loaded(x), model(x))
    with pytest.raises(AdvTransferError):  # a different width does not fit the file
        create(f"text:{name}", path, num_classes=3, **{**SIZES, "width": 7})


def test_the_text_namespace_is_listed_and_needs_its_prefix() -> None:
    expected = [f"text:{n}" for n in sorted(TEXT_MODELS)]
    assert list_models("text") == list_models("text:") == expected
    assert len(expected) == 4 and set(expected) <= set(list_models())
    assert not any(s.startswith("cifar:text") for s in list_models("cifar"))
    assert all(resolve_spec(s) == ("text", s[5:]) for s in expected)
    with pytest.raises(AdvTransferError) as unknown:
        create("text:text-lstm", "random", num_classes=2)
    assert all(s in str(unknown.value) for s in expected)
    with pytest.raises(AdvTransferError, match="unknown model name 'text-cnn'"):
        resolve_spec("text-cnn")  # like timm:, always prefixed
    with pytest.raises(AdvTransferError, match="needs the path of its trained weights"):
        create("text:text-bag", num_classes=2)
    result = CliRunner().invoke(app, ["models", "text"])
    assert result.exit_code == 0 and result.output.split() == expected


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"name": "text-transformer", "embed_dim": 18}, "embed_dim must be a multiple of 4"),
    ({"name": "text-cnn", "width": 0}, "width must be a positive int"),
    ({"name": "text-gru", "dropout": 1.0}, r"dropout must be in \[0, 1\)"),
    ({"name": "text-bag", "max_len": 0}, "max_len must be a positive int"),
    ({"name": "text-bag", "hidden": 3}, "unexpected keyword argument 'hidden'"),
])
def test_bad_sizes_are_refused_by_name(kwargs: dict, match: str) -> None:
    name = kwargs.pop("name")
    with pytest.raises(AdvTransferError, match=match):
        create(f"text:{name}", "random", num_classes=2, **kwargs)


@pytest.mark.parametrize("name", NAMES)
def test_inputs_of_the_wrong_shape_are_refused(name: str) -> None:
    model = _model(name)
    with pytest.raises(AdvTransferError, match="embed_dim=16"):
        model(torch.ones(2, 5, 8))
    with pytest.raises(AdvTransferError, match="embed_dim=16"):
        model(torch.ones(5, 16))
    with pytest.raises(AdvTransferError, match="length >= 1"):
        model(torch.ones(2, 0, 16))
    long = _embedded([30], 30)
    if name == "text-transformer":
        with pytest.raises(AdvTransferError, match="max_len=24"):
            model(long)
    else:  # the others take any length
        assert model(long).shape == (1, 3)
