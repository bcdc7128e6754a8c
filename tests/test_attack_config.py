"""One AttackConfig accepted by every public function, the keyword form kept: both forms give
the same numbers, and mixing them is refused."""

import numpy as np
import pytest
import torch
from torch import nn

from advtransfer import AdvTransferError, AttackConfig, attack, transfer_matrix, transferability
from advtransfer.errors import AdvTransferTypeError

KEYWORDS = dict(eps=0.2, norm="linf", objective="ce", solver="pgd", steps=3, step_size=0.05,
                random_start=True, bounds=(-1.0, 1.0), tol=1e-5)


def _models() -> list[nn.Module]:
    torch.manual_seed(0)
    return [nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double()
            for _ in range(3)]


def _x() -> torch.Tensor:
    return torch.rand(12, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64) \
        * 2 - 1


def test_attack_config_and_keywords_give_the_same_perturbation():
    model, x = _models()[0], _x()
    by_keywords = attack(model, x, seed=3, **KEYWORDS)
    by_config = attack(model, x, attack=AttackConfig(**KEYWORDS), seed=3)
    assert torch.equal(by_keywords, by_config)
    # and the settings are used: a different budget gives a different perturbation
    assert not torch.equal(by_keywords, attack(model, x, seed=3, **{**KEYWORDS, "eps": 0.1}))


def test_transferability_config_and_keywords_agree():
    s, t, _ = _models()
    a = transferability(s, t, _x(), seed=5, batch_size=5, **KEYWORDS)
    b = transferability(s, t, _x(), attack=AttackConfig(**KEYWORDS), seed=5, batch_size=5)
    for da, db in ((a.source_to_target, b.source_to_target),
                   (a.target_to_source, b.target_to_source)):
        np.testing.assert_array_equal(da.alpha1_per_sample, db.alpha1_per_sample)
        assert (da.alpha2, da.combined) == (db.alpha2, db.combined)
    assert a.config == b.config
    assert (a.config["eps"], a.config["steps"], a.config["bounds"]) == (0.2, 3, (-1.0, 1.0))


def test_transfer_matrix_config_and_keywords_agree():
    models = dict(zip("abc", _models(), strict=True))
    a = transfer_matrix(models, _x(), seed=2, **KEYWORDS)
    b = transfer_matrix(models, _x(), attack=AttackConfig(**KEYWORDS), seed=2)
    for name in ("alpha1", "alpha2", "combined"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.config == b.config


def test_neither_form_keeps_the_defaults():
    """Keywords not given take AttackConfig's defaults (l2, deviation, pgd, bounds (0, 1))."""
    s, t, _ = _models()
    x = (_x() + 1) / 2
    r = transferability(s, t, x, eps=0.1, steps=2, seed=0)
    assert r.config == transferability(s, t, x, attack=AttackConfig(eps=0.1, steps=2),
                                       seed=0).config
    assert (r.config["norm"], r.config["objective"], r.config["solver"]) == \
        ("l2", "deviation", "pgd")


@pytest.mark.parametrize("call", [
    lambda m, x, cfg: attack(m, x, attack=cfg, norm="l2"),
    lambda m, x, cfg: transferability(m, m, x, attack=cfg, steps=2),
    lambda m, x, cfg: transfer_matrix([m, m], x, attack=cfg, eps=0.1),
])
def test_attack_and_keywords_together_are_refused_naming_both(call):
    model, x = _models()[0], (_x() + 1) / 2
    with pytest.raises(AdvTransferError, match=r"attack= and the attack keyword\(s\) \w+ were"):
        call(model, x, AttackConfig(eps=0.1))


def test_missing_eps_unknown_keyword_and_wrong_attack_type():
    model, x = _models()[0], (_x() + 1) / 2
    with pytest.raises(AdvTransferError, match="eps"):
        transferability(model, model, x)
    with pytest.raises(AdvTransferTypeError, match="epsilon.*eps, norm"):
        attack(model, x, epsilon=0.1)
    with pytest.raises(AdvTransferTypeError, match="AttackConfig"):
        attack(model, x, attack={"eps": 0.1})


def test_recipe_configurations_hold_every_attack_config_field_with_its_type():
    """AttackConfig is the one attack schema: a recipe configuration inheriting AttackFields
    holds every AttackConfig field (checked against AttackConfig's types in TOML and --set),
    and stages.attack_config builds the AttackConfig from all of them."""
    from dataclasses import fields, replace

    from advtransfer.attacks import ATTACK_FIELDS
    from advtransfer.experiments.config import apply
    from advtransfer.experiments.recipes.celeba import CelebAAttributesConfig
    from advtransfer.experiments.recipes.cifar_stl import CifarStlArchitecturesConfig
    from advtransfer.experiments.recipes.taskonomy import TaskonomyConfig
    from advtransfer.experiments.stages import AttackFields, attack_config, attack_fields

    for config in (AttackFields(), CifarStlArchitecturesConfig(), CelebAAttributesConfig(),
                   TaskonomyConfig()):
        assert list(attack_fields(config)) == list(ATTACK_FIELDS)
        built = attack_config(config)
        assert all(getattr(built, k) == getattr(config, k) for k in ATTACK_FIELDS)
    assert attack_config(AttackFields()).bounds == (0.0, 1.0)  # AttackConfig's default
    assert CifarStlArchitecturesConfig().iterate == "last"  # a recipe's own default
    last = apply(AttackFields(), {"iterate": "last", "bounds": [0, 2]}, source="--set")
    assert attack_config(last).iterate == "last" and attack_config(last).bounds == (0.0, 2.0)
    with pytest.raises(AdvTransferError, match="iterate must be one of"):
        apply(AttackFields(), {"iterate": "first"}, source="--set")
    assert [f.name for f in fields(AttackFields)] == list(ATTACK_FIELDS)
    assert replace(AttackFields(), tol=0.1).tol == 0.1


def test_the_command_line_attack_options_are_attack_configs_fields_and_defaults():
    """The CLI's attack options hold no schema of their own: every AttackConfig field but
    mask_padding (embedded text only), at AttackConfig's default (eps: the CLI's 1.0)."""
    from dataclasses import fields

    from advtransfer.attacks import ATTACK_FIELDS, AttackConfig
    from advtransfer.cli import _ATTACK_OPTIONS

    defaults = {f.name: f.default for f in fields(AttackConfig)}
    options = {name: default for name, _, default in _ATTACK_OPTIONS}
    assert set(options) == set(ATTACK_FIELDS) - {"mask_padding"}
    assert options.pop("eps") == 1.0 and options.pop("bounds") == "0,1"
    assert defaults["bounds"] == (0.0, 1.0)
    assert all(options[name] == defaults[name] for name in options)
