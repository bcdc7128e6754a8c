"""The model-selection recipes end to end (quick mode), resume, and their building blocks."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest
import torch

import advtransfer.experiments.recipes.model_selection as ms  # registers the recipes
from advtransfer.cli import _print_summary
from advtransfer.errors import AdvTransferError
from advtransfer.experiments import run
from advtransfer.models import create

METHODS = [*ms.RECIPE_METHODS, "source_accuracy"]


@pytest.fixture
def one_thread():
    """One intra-op thread: much faster on a small shared CPU, restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _check_selection(results: dict, targets: list[str], n_sources: int,
                     methods: list[str] = METHODS) -> None:
    table = results["selection"]["weighted_tau"]
    assert set(table) == set(methods)
    for method, row in table.items():
        assert list(row) == [*targets, "mean"], method
        finite = [v for t, v in row.items() if t != "mean" and v is not None]
        if finite:
            assert -1.0 <= row["mean"] <= 1.0
    assert len(results["records"]) == n_sources * len(targets)
    assert set(results["selection"]["best"]) == set(targets)
    for ev in results["selection"]["evaluations"].values():
        assert set(ev) == set(methods) and "top1" in ev["logme"]


# one method of every kind (adversarial on outputs and on features, both directions, feature
# estimators, a rank average): each estimator has its own tests, the recipe's code path is
# the same for all of them, and the report's figures grow with the number of methods
SOME_DIGITS_METHODS = ["alpha1", "alpha2_s2t", "combined_features", "logme", "leep",
                       "alpha1_features_leep_rankavg"]


def test_digits_model_selection_quick_end_to_end_and_resume(tmp_path, one_thread):
    out = tmp_path / "run"
    methods = [f"methods={SOME_DIGITS_METHODS}"]
    results = run("digits-model-selection", out, quick=True, progress=False, overrides=methods)
    config = ms.quick_digits(ms.DigitsModelSelectionConfig())
    _check_selection(results, config.targets, len(config.sources),
                     [*SOME_DIGITS_METHODS, "source_accuracy"])
    record = results["records"][0]
    assert {"source", "target", "transfer_accuracy", "source_accuracy", "alpha1",
            "logme", "linear_probe_accuracy", "finetune_accuracy"} <= set(record)
    # both ground truths are evaluated; the headline is full fine-tuning
    by_truth = results["selection"]["by_ground_truth"]
    assert set(by_truth) == {"finetune", "linear_probe"}
    assert results["selection"]["weighted_tau"] == by_truth["finetune"]["weighted_tau"]
    assert record["transfer_accuracy"] == record["finetune_accuracy"]
    assert 0.0 <= record["transfer_accuracy"] <= 1.0
    ref_acc = results["selection"]["reference_accuracy"]
    assert all(r["reference_accuracy"] == ref_acc[r["target"]] for r in results["records"])
    report = (out / "report.md").read_text()
    assert "Weighted Kendall tau" in report and "| method |" in report
    assert {r["metric"] for r in results["correlations"]} == {*SOME_DIGITS_METHODS,
                                                              "source_accuracy"}
    # the linear "model" (pixels as features) transfers far better than the untrained MLP
    truth = by_truth["linear_probe"]["truth"]["0-4"]
    assert truth["linear/digits10"] > truth["mlp32/untrained"]
    again = run("digits-model-selection", out, quick=True, progress=False, overrides=methods)
    assert again["units"]["computed"] == 0 and again["units"]["reused"] > 0
    assert again["selection"]["weighted_tau"] == results["selection"]["weighted_tau"]


def test_imagenet_zoo_quick_end_to_end_and_resume(tmp_path, one_thread):
    out = tmp_path / "zoo"
    results = run("imagenet-zoo", out, quick=True, progress=False)
    config = ms.quick_zoo(ms.ImageNetZooConfig())
    _check_selection(results, ["fake"], len(config.models))
    record = results["records"][0]
    assert record["source_accuracy"] == pytest.approx(ms.imagenet_top1(record["source"]))
    assert record["best_lr"] in config.finetune_lrs
    assert record["best_weight_decay"] in config.finetune_weight_decays
    notice = ("A dry run: the weights are random and the target data are torchvision's "
              "FakeData (random images), so the numbers say nothing about the method")
    assert notice in (out / "report.md").read_text()
    assert "{c." not in (out / "report.md").read_text()
    again = run("imagenet-zoo", out, quick=True, progress=False)
    assert again["units"]["computed"] == 0
    # the terminal summary says it too, beside the numbers
    from advtransfer.cli import console

    with console.capture() as captured:
        _print_summary(again)
    shown = " ".join(captured.get().split())
    assert notice in shown
    # the tau table names the ground truth it ranks against
    truth = again["report"]["ground_truth"]
    assert truth.endswith("accuracy (grid-searched head)") or "fine-tuning" in truth
    assert f"weighted Kendall tau against {truth}" in shown


def test_imagenet_zoo_reads_a_ground_truth_csv(tmp_path, one_thread):
    csv_path = tmp_path / "truth.csv"
    models = ["resnet18", "regnet_x_400mf"]
    csv_path.write_text("model,dataset,accuracy\nresnet18,fake,0.8\nregnet_x_400mf,fake,0.6\n")
    results = run("imagenet-zoo", tmp_path / "zoo", quick=True, progress=False,
                  overrides=[f"models={models}", f'ground_truth_csv="{csv_path}"',
                             'methods=["logme", "alpha2"]'])
    assert results["selection"]["truth"] == {"fake": {"resnet18": 0.8, "regnet_x_400mf": 0.6}}
    assert {r["source"]: r["transfer_accuracy"] for r in results["records"]} == {
        "resnet18": 0.8, "regnet_x_400mf": 0.6}
    assert "best_lr" not in results["records"][0]


def test_ground_truth_csv_errors(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("model,dataset,acc\nresnet50,dtd,0.7\n")
    with pytest.raises(AdvTransferError, match="columns model,dataset,accuracy"):
        ms._read_ground_truth(str(path), ["resnet50"], ["dtd"])
    path.write_text("model,dataset,accuracy\nresnet50,dtd,0.7\n")
    with pytest.raises(AdvTransferError, match=r"no accuracy for \['resnet34/dtd'\]"):
        ms._read_ground_truth(str(path), ["resnet50", "resnet34"], ["dtd"])
    path.write_text("model,dataset,accuracy\nresnet50,dtd,high\n")
    with pytest.raises(AdvTransferError, match="line 2"):
        ms._read_ground_truth(str(path), ["resnet50"], ["dtd"])
    with pytest.raises(AdvTransferError, match="does not exist"):
        ms._read_ground_truth(str(tmp_path / "none.csv"), ["resnet50"], ["dtd"])


def test_imagenet_zoo_never_downloads_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVTRANSFER_HOME", str(tmp_path / "home"))
    with pytest.raises(AdvTransferError) as info:
        run("imagenet-zoo", tmp_path / "a", progress=False, overrides=["datasets=[\"fake\"]"])
    assert str(tmp_path / "home" / "weights" / "resnet34.safetensors") in str(info.value)
    with pytest.raises(AdvTransferError, match="weights_dir: looked for .*resnet34.pth"):
        run("imagenet-zoo", tmp_path / "b", progress=False,
            overrides=[f'weights_dir="{tmp_path}"'])
    with pytest.raises(AdvTransferError, match="datasets must be"):
        run("imagenet-zoo", tmp_path / "c", quick=True, progress=False,
            overrides=['datasets=["imagenet"]'])


@pytest.mark.parametrize(
    ("spec", "match"),
    [("mlp64", "ARCH/TASK"), ("rnn4/digits10", "unknown digits model name"),
     ("mlp64/7-3", "unknown source task"), ("mlp64/digits10/foggy", "unknown data"),
     ("mlp64/bars4", None), ("mlp64/digits10/synthetic", "bars4")],
)
def test_parse_source(spec, match):
    if match is None:
        assert ms.parse_source(spec).data == "synthetic"
    else:
        with pytest.raises(AdvTransferError, match=match):
            ms.parse_source(spec)


def test_digits_config_validation(tmp_path):
    with pytest.raises(AdvTransferError, match="unknown target"):
        run("digits-model-selection", tmp_path / "a", quick=True, progress=False,
            overrides=['targets=["0-4", "random10"]'])
    with pytest.raises(AdvTransferError, match="methods must be"):
        run("digits-model-selection", tmp_path / "b", quick=True, progress=False,
            overrides=['methods=["finetune"]'])


def test_pool_builders():
    src = ms.parse_source("lenet/digits10/noisy")
    (x, y), (xt, yt), n = ms.source_data(src, test_fraction=0.3, seed=0)
    assert n == 10 and x.shape[1:] == (1, 8, 8) and 0 <= float(x.min()) <= float(x.max()) <= 1
    assert create("digits:lenet", "random", 3)(x[:4]).shape == (4, 3)
    (x, y), _, n = ms.source_data(ms.parse_source("cnn8/ge5"), test_fraction=0.3, seed=0)
    assert n == 2 and set(y.tolist()) == {0, 1}
    xb, yb = ms.synthetic_bars(8, seed=0)
    assert xb.shape == (8, 1, 8, 8) and yb.tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    (x, y), (xt, yt), n = ms.target_data("5-9", test_fraction=0.3, seed=0)
    assert n == 5 and int(y.min()) == 0 and int(y.max()) == 4


def test_voc_label_is_the_largest_object():
    box = {"xmin": "0", "ymin": "0"}
    ann = {"annotation": {"object": [
        {"name": "dog", "bndbox": {**box, "xmax": "10", "ymax": "10"}},
        {"name": "person", "bndbox": {**box, "xmax": "30", "ymax": "20"}}]}}
    assert ms.VOC_CLASSES[ms._voc_label(ann)] == "person"
    single = {"annotation": {"object": {"name": "cat", "bndbox": {**box, "xmax": "5",
                                                                  "ymax": "5"}}}}
    assert ms.VOC_CLASSES[ms._voc_label(single)] == "cat"


def test_resized_wrapper_and_imagenet_accuracy():
    inner = torch.nn.Flatten()
    assert ms.Resized(inner, 6)(torch.rand(2, 3, 4, 4)).shape == (2, 3 * 36)
    assert ms.imagenet_top1("inception_v3") == pytest.approx(0.77294)
    assert ms.imagenet_top1("not_a_model") is None
    assert not math.isnan(ms.imagenet_top1("resnet50"))


def test_zoo_loads_cifar10_from_its_real_file_format(tmp_path):
    from advtransfer.data.fixtures import write_cifar10

    root = write_cifar10(tmp_path / "data", n_train=20, n_test=10)
    config = ms.ImageNetZooConfig(data_root=str(root), image_size=16)
    train, n_classes = ms.load_zoo_dataset("cifar10", "train", config)
    test, _ = ms.load_zoo_dataset("cifar10", "test", config)
    x, y = train[0]
    assert n_classes == 10 and len(train) == 20 and len(test) == 10
    assert x.shape == (3, 16, 16) and 0 <= int(y) < 10
    with pytest.raises(AdvTransferError, match="could not load data set 'dtd'.*--download"):
        ms.load_zoo_dataset("dtd", "train", config)


def test_zoo_builds_googlenet_with_transform_input_for_its_weights(tmp_path):

    import torchvision

    from advtransfer.models.checkpoint import save_model

    torch.manual_seed(0)
    save_model(torchvision.models.GoogLeNet(transform_input=True, init_weights=False),
               tmp_path / "googlenet.safetensors")
    config = ms.ImageNetZooConfig(weights_dir=str(tmp_path), image_size=32)
    wrapped = ms._load_zoo_model(config, "googlenet", 0, "cpu")
    inner = wrapped.inner.inner  # Resized(Normalized(model))
    assert isinstance(inner, torchvision.models.GoogLeNet) and inner.transform_input is True


def _three_digit_task(head: int) -> tuple[tuple, tuple, torch.nn.Module]:
    """Digits 0-2 (train, test) and a seeded small MLP with ``head`` outputs."""
    from advtransfer.data.digits import digits

    split = digits(seed=0).subset([0, 1, 2])
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(),
                                torch.nn.Linear(16, head))
    return (split.x_train, split.y_train), (split.x_test, split.y_test), model


def _stub_context(seed_for: Any) -> Any:
    """A run context whose store computes every unit (JSON round trip) and lists the units it
    was given (``ctx.units``), and whose seeds for non-unit purposes are ``seed_for``."""
    import json
    import types

    units: list[Any] = []

    def record(unit: Any, compute: Any) -> Any:
        units.append(unit)
        return json.loads(json.dumps(compute()))

    return types.SimpleNamespace(
        seed_for=seed_for, device=torch.device("cpu"), units=units,
        store=types.SimpleNamespace(record=record))


def test_full_finetune_truth_selects_on_validation_and_refits(one_thread):
    """The grid and the final fit against direct knowledge_transfer calls (stub store), each
    seeded by its unit, the grid's split by the pair alone."""
    from advtransfer.knowledge import knowledge_transfer

    train, test, model = _three_digit_task(head=5)
    ctx = _stub_context(lambda *parts: 7)
    c = ms.DigitsModelSelectionConfig(ground_truth="finetune", full_finetune_lrs=[0.05, 1e-4],
                                      full_finetune_epochs=[1, 3], val_fraction=0.25)
    out = ms.full_finetune_truth(ctx, "s", {"task": "0-2"}, model, train, test, c)
    grid = {(u.lr, u.epochs): u for u in ctx.units if u.kind == "full-finetune-grid"}
    [final_unit] = [u for u in ctx.units if u.kind == "full-finetune"]
    assert len(grid) == 4 and len({u.seed for u in grid.values()}) == 4
    assert all(u.val_fraction == 0.25 and u.batch_size == 128 for u in grid.values())
    fit_part, val_part = ms._holdout(train, 0.25, 7)
    assert len(val_part[1]) == round(0.25 * len(train[1]))
    val = {(lr, e): knowledge_transfer(model, fit_part, val_part, features="penultimate",
                                       finetune="full", epochs=e, lr=lr,
                                       seed=grid[(lr, e)].seed).test_accuracy
           for lr in c.full_finetune_lrs for e in c.full_finetune_epochs}
    best = max(val, key=val.__getitem__)
    assert (out["best_lr"], out["best_epochs"]) == best
    assert (final_unit.lr, final_unit.epochs, final_unit.replicate) == (*best, 0)
    assert out["best_val_accuracy"] == val[best]
    final = knowledge_transfer(model, train, test, features="penultimate", finetune="full",
                               epochs=best[1], lr=best[0], seed=final_unit.seed)
    assert out["test_accuracy"] == final.test_accuracy and out["finetune"] == "full"
    assert out["test_accuracy"] > 0.5  # 3 digit classes (chance 1/3): the fine-tune works


def test_digits_recipe_with_full_finetuning_ground_truth(tmp_path, one_thread):
    results = run("digits-model-selection", tmp_path / "ft", quick=True, progress=False,
                  overrides=['sources=["mlp32/digits10", "linear/digits10"]', 'targets=["0-4"]',
                             'ground_truth="finetune"', "full_finetune_lrs=[0.05]",
                             "full_finetune_epochs=[1, 2]", 'methods=["logme", "alpha1"]'])
    for record in results["records"]:
        assert record["ground_truth"] == "finetune" and record["best_lr"] == 0.05
        assert record["best_epochs"] in (1, 2) and 0.0 <= record["transfer_accuracy"] <= 1.0
    assert "full fine-tuning" in (tmp_path / "ft" / "report.md").read_text()
    with pytest.raises(AdvTransferError, match="ground_truth must be"):
        run("digits-model-selection", tmp_path / "bad", quick=True, progress=False,
            overrides=['ground_truth="probe"'])


def test_imagenet_zoo_with_full_finetuning_ground_truth(tmp_path, one_thread):
    results = run("imagenet-zoo", tmp_path / "zoo", quick=True, progress=False,
                  overrides=['models=["mobilenet_v3_small", "regnet_x_400mf"]',
                             "fake_train=16", "fake_test=8", "batch_size=8",
                             'ground_truth="finetune"', "full_finetune_lrs=[0.01]",
                             "full_finetune_epochs=[1]", 'methods=["logme"]'])
    for record in results["records"]:
        assert record["ground_truth"] == "finetune" and record["best_epochs"] == 1
        assert 0.0 <= record["transfer_accuracy"] <= 1.0
    with pytest.raises(AdvTransferError, match="ground_truth_csv replaces"):
        run("imagenet-zoo", tmp_path / "bad", quick=True, progress=False,
            overrides=['ground_truth="finetune"', f'ground_truth_csv="{tmp_path}/t.csv"'])


def test_full_finetune_truth_averages_its_seeds(one_thread):
    """seeds=2: two refits at the selected (lr, epochs) with distinct seeds, averaged."""
    from advtransfer.knowledge import knowledge_transfer

    train, test, model = _three_digit_task(head=3)
    ctx = _stub_context(lambda *parts: 11)
    c = ms.DigitsModelSelectionConfig(full_finetune_lrs=[0.05], full_finetune_epochs=[2])
    out = ms.full_finetune_truth(ctx, "s", {"task": "0-2"}, model, train, test, c, seeds=2)
    refits = [u for u in ctx.units if u.kind == "full-finetune"]
    assert [u.replicate for u in refits] == [0, 1] and refits[0].seed != refits[1].seed
    direct = [knowledge_transfer(model, train, test, features="penultimate", finetune="full",
                                 epochs=2, lr=0.05, seed=u.seed).test_accuracy for u in refits]
    assert out["test_accuracies"] == direct
    assert out["test_accuracy"] == pytest.approx(sum(direct) / 2, rel=1e-12)


def test_subsample_intervals_and_seed_agreement_by_hand():
    from scipy.stats import weightedtau

    truth = {"t": {"a": 0.9, "b": 0.8, "c": 0.7, "d": 0.6}}
    scores = {"t": {"good": {"a": 4.0, "b": 3.0, "c": 2.0, "d": 1.0},
                    "bad": {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}}}
    # fraction 1: every draw keeps all 4 candidates, so the interval collapses to the value
    ci = ms.subsample_intervals(scores, truth, ["good", "bad"], against="bad", resamples=5,
                                seed=0, fraction=1.0)
    assert ci["good"] == {"low": pytest.approx(1.0), "high": pytest.approx(1.0), "p_beats": 1.0}
    assert ci["bad"]["low"] == pytest.approx(-1.0) and ci["bad"]["p_beats"] == 0.0
    # 3 of 4 candidates per draw: a perfect ranking stays perfect
    ci = ms.subsample_intervals(scores, truth, ["good"], against="good", resamples=20, seed=1,
                                fraction=0.75)
    assert ci["good"]["low"] == pytest.approx(1.0) and ci["good"]["p_beats"] == 0.0
    per_seed = {"t": {"a": [0.9, 0.7], "b": [0.8, 0.8], "c": [0.7, 0.9]}}
    agree = ms.seed_agreement(per_seed)
    expected = weightedtau([0.9, 0.8, 0.7], [0.7, 0.8, 0.9]).statistic
    assert agree["t"] == pytest.approx(expected) and agree["mean"] == pytest.approx(expected)


def test_shift_pool_depths_and_low_data_targets():
    model = create("digits:mlp32x4", "random", 3)
    assert sum(isinstance(m, torch.nn.Linear) for m in model.modules()) == 5
    assert create("digits:mlp64x1", "random", 2)(torch.rand(2, 64)).shape == (2, 2)
    with pytest.raises(AdvTransferError, match="unknown digits model name"):
        ms.parse_source("mlp32x/digits10")
    (x, y), (xt, yt), n = ms.target_data("mod3", test_fraction=0.3, seed=0, per_class=7)
    assert n == 3 and torch.bincount(y).tolist() == [7, 7, 7] and len(yt) > 300
    full = ms.target_data("mod3", test_fraction=0.3, seed=0)
    assert torch.equal(full[1][1], yt)
    # no target of the shift benchmark is a task any of its sources was trained on
    tasks = {ms.parse_source(s).task for s in ms.SHIFT_SOURCES}
    assert not tasks & set(ms.SHIFT_TARGETS)


def test_digits_shift_quick_end_to_end(tmp_path, one_thread):
    # every method runs in the digits-model-selection test above (the same code); here the
    # shift pool and targets, with the pre-registered scores, their parts and an estimator
    methods = ["alpha1", "alpha1_features", "alpha1_features_logme_rankavg", "logme", "gbc"]
    results = run("digits-model-selection-shift", tmp_path / "shift", quick=True,
                  progress=False, overrides=[f"methods={methods}"])
    config = ms.quick_shift(ms.DigitsShiftConfig())
    _check_selection(results, config.targets, len(config.sources), [*methods, "source_accuracy"])
    assert all(r["source_accuracy"] > 0.5 or r["source"].startswith("linear")
               for r in results["records"])
    report = (tmp_path / "shift" / "report.md").read_text()
    assert "Pre-registered alpha1_features" in report and "linear probe" in report


def test_logit_ensemble_reference_averages_its_members():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(64, 3), torch.nn.Linear(64, 3)
    x = torch.rand(5, 64)
    ens = ms.LogitEnsemble([a, b])
    torch.testing.assert_close(ens(x), (a(x) + b(x)) / 2)
    with pytest.raises(AdvTransferError, match="unknown digits model name"):
        ms._validate_digits(ms.DigitsModelSelectionConfig(reference_architecture="cnn16+rnn"))


@pytest.mark.parametrize("override, message", [
    ("step_size=-1", "step_size"), ('norm="l3"', "norm"), ('convention="paper"', "convention"),
    ("eps=0", "eps")])
def test_selection_recipes_check_their_attack_before_running(tmp_path, override, message):
    for recipe in ("digits-model-selection", "imagenet-zoo"):
        with pytest.raises(AdvTransferError, match=message):
            run(recipe, tmp_path / recipe, quick=True, progress=False, overrides=[override])
        assert not (tmp_path / recipe).exists()


def test_selection_attack_keys_hold_every_attack_field():
    """Every field of the attack is in the units' keys, defaults included (tol and bounds
    too): no setting that changes the attack can be left out of them."""
    from dataclasses import fields

    from advtransfer.attacks import AttackConfig

    base = ms.DigitsModelSelectionConfig()
    key = ms._attack(base)
    assert {f.name for f in fields(AttackConfig)} <= set(key)
    assert key["tol"] == AttackConfig(eps=1.0).tol and key["steps"] >= 1
    assert ms._attack(replace(base, random_start=False))["random_start"] is False
    assert ms._attack(replace(base, step_size=0.5))["step_size"] == 0.5


def test_adding_a_candidate_to_a_finished_run_computes_only_that_candidate(tmp_path, attacks):
    """A finished digits-model-selection run extended by one source: only the new source's
    units are computed (its training, fine-tunes, estimators and one attack); the reference's
    stored attack and every other unit are reused, and their scores are unchanged. Removing a
    source or changing anything else is still refused."""
    base = ['targets=["ge5"]', 'methods=["alpha1", "alpha2_s2t", "logme"]']
    four = 'sources=["mlp32/digits10", "linear/digits10", "cnn8/ge5", "mlp32/untrained"]'
    five = ('sources=["mlp32/digits10", "linear/digits10", "cnn8/ge5", "mlp32/untrained", '
            '"mlp32/digits10/permuted"]')
    out = tmp_path / "run"
    first = run("digits-model-selection", out, quick=True, progress=False,
                overrides=[*base, four])
    attacks.clear()
    grown = run("digits-model-selection", out, quick=True, progress=False,
                overrides=[*base, five])
    assert dict(attacks) == {"mlp32/digits10/permuted": 1}  # no reference attack, one source
    new_files = set(grown["unit_files"]) - set(first["unit_files"])
    assert grown["units"]["computed"] == len(new_files) > 0
    assert grown["units"]["reused"] == len(first["unit_files"])

    def scores(result):
        return {r["source"]: (r["alpha1"], r["alpha2_s2t"], r["logme"])
                for r in result["records"]}

    kept = scores(grown)
    assert {k: kept[k] for k in scores(first)} == scores(first)
    with pytest.raises(AdvTransferError, match="different configuration"):
        run("digits-model-selection", out, quick=True, progress=False, overrides=[*base, four])
    with pytest.raises(AdvTransferError, match="different configuration"):
        run("digits-model-selection", out, quick=True, progress=False,
            overrides=[*base, five, "eps=0.5"])
