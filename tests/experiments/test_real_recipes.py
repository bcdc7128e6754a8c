"""The real-data recipes end to end (``--quick``) on fixture files in the datasets' own formats,
their failure on missing data, and the helpers they are built from."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats as sps

import advtransfer.experiments.recipes.celeba as celeba_recipe
import advtransfer.experiments.recipes.cifar_stl as cifar_stl
import advtransfer.experiments.recipes.taskonomy as taskonomy_recipe
import advtransfer.experiments.stages as stages
import advtransfer.experiments.taskonomy_analysis as taskonomy_analysis
from advtransfer.data import taskonomy as tdata
from advtransfer.data.fixtures import write_celeba, write_cifar10, write_stl10
from advtransfer.errors import AdvTransferError
from advtransfer.experiments import run
from advtransfer.models import taskonomy as tmodels
from advtransfer.models.architectures import resnet18_cifar
from advtransfer.models.wrappers import InputRange

ALPHAS = [f"{m}_{d}" for d in ("t2s", "s2t") for m in ("alpha1", "alpha2", "combined")]


# --quick at half its sample counts: every stage still runs, in half the time
SMALLER = {"cifar10-stl10-architectures": ("max_samples=128", "n_attack=32"),
           "cifar10-stl10-proportions": ("max_samples=128", "n_attack=32"),
           "celeba-attributes": ("max_samples=128", "n_attack=16")}


def _run(name: str, out: Path, root: Path, *extra: str) -> dict:
    overrides = [f'data_root="{root}"', *SMALLER.get(name, ()), *extra]
    return run(name, out, quick=True, overrides=overrides, progress=False, device="cpu")


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(float(value))


def _check_run(results: dict, out: Path, metrics: list[str], outcomes: list[str]) -> None:
    assert results["records"]
    for record in results["records"]:
        for key in metrics + outcomes:
            assert _finite(record[key]), (key, record)
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["records"] == results["records"]
    assert (out / "report.md").is_file() and (out / "report.html").is_file()
    assert results["units"]["computed"] > 0


def _rerun_reuses_everything(name: str, out: Path, root: Path, first: dict, *extra: str) -> None:
    """A rerun of the finished run computes nothing; so does a rerun of a run interrupted just
    before its results were written (the recipe runs again and finds every unit stored)."""
    again = _run(name, out, root, *extra)
    assert again["units"]["computed"] == 0
    assert again["records"] == first["records"]
    (out / "results.json").unlink()
    resumed = _run(name, out, root, *extra)
    assert resumed["units"]["computed"] == 0
    assert resumed["units"]["reused"] == first["units"]["computed"] + first["units"]["reused"]
    assert resumed["records"] == first["records"]


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    """One intra-op thread: on a busy 2-core machine, OpenMP threads spin waiting for each
    other and a toy run slows down tenfold; one thread keeps the timing stable."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def vision_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("vision")
    write_cifar10(root, n_train=500, n_test=200)
    write_stl10(root, n_train=300, n_test=200)
    return root


@pytest.fixture(scope="module")
def celeba_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("celeba")
    write_celeba(root, n_identities=12, n_images=360)
    return root


@pytest.fixture(scope="module")
def taskonomy_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("taskonomy")
    rgb = root / "rgb"
    rgb.mkdir()
    rng = np.random.default_rng(0)
    for i in range(20):  # more than --quick uses, non-square: exercises choice and crop
        pixels = (rng.random((72, 90, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(rgb / f"point_{i}_view_0_domain_rgb.png")
    tasks = ["autoencoder", "rgb2mist", "rgb2sfnorm", "edge2d"]  # Taskonomy's own names
    values = rng.random((len(tasks), len(tasks)))
    lines = ["," + ",".join(tasks)]
    lines += [t + "," + ",".join(f"{v:.4f}" for v in row)
              for t, row in zip(tasks, values, strict=True)]
    (root / "affinity.csv").write_text("\n".join(lines) + "\n")
    return root


# ------------------------------------------------------------------------------------------
# end to end
# ------------------------------------------------------------------------------------------


def test_cifar10_stl10_architectures_quick(vision_root: Path, tmp_path: Path) -> None:
    # three of the five architectures (every stage runs; the networks of all five are checked
    # by test_paper_preset_trains_the_authors_networks and the model tests)
    name, out = "cifar10-stl10-architectures", tmp_path / "arch"
    three = 'architectures=["fc", "alexnet", "resnet18"]'
    results = _run(name, out, vision_root, three)
    _check_run(results, out, ALPHAS, ["transfer_accuracy", "transfer_loss"])
    records = results["records"]
    assert [r["source"] for r in records] == ["fc", "alexnet", "resnet18"]
    # the paper preset trains the authors' fc net and AlexNet (stored under their own names)
    assert [r["network"] for r in records] == ["fc-liang", "alexnet-liang", "resnet18"]
    for r in records:
        assert 0.0 <= r["transfer_accuracy"] <= 1.0
        assert 0.0 <= r["direct_accuracy"] <= 1.0
        assert 0 < r["n_attack"] <= 32
        assert r["alpha1_ladv_t2s"] >= 0.0
    assert results["config"]["convention"] == "authors" and results["config"]["eps"] == AUTHORS_EPS
    assert results["config"]["preset"] == "paper" and results["config"]["steps"] == 1
    assert "FGSM" in results["report"]["description"]
    assert results["config"]["batch_size"] is None  # filled by the preset, as results say:
    assert results["settings"] == {"epochs": 1, "plain_lr": 0.1, "weight_decay": 1e-4,
                                   "batch_size": 64, "finetune_batch_size": 64,
                                   "finetune_weight_decay": 1e-4, "finetune": "head_train_mode",
                                   "finetune_epoch": "best_test", "step_size": AUTHORS_EPS}
    assert "best test accuracy is reported" in results["report"]["description"]
    assert "last iterate" in results["report"]["description"]
    assert results["reference"]["classes"][cifar_stl.MONKEY_AS_CIFAR] == "monkey"
    _rerun_reuses_everything(name, out, vision_root, results, three)


def test_cifar10_stl10_proportions_quick(vision_root: Path, tmp_path: Path) -> None:
    name, out = "cifar10-stl10-proportions", tmp_path / "prop"
    shares = "source_classes=[[0, 1, 8, 9], [2, 3, 8, 9], [2, 3, 4, 7]]"  # 0 %, 50 %, 100 %
    results = _run(name, out, vision_root, shares)
    _check_run(results, out, ALPHAS, ["transfer_accuracy", "transfer_loss"])
    assert [r["share"] for r in results["records"]] == [0.0, 0.5, 1.0]
    assert results["report"]["sweep"] == "share"
    assert results["reference"]["classes"] == ["bird", "cat", "deer", "dog"]
    assert results["report"]["metrics"][0] == "alpha1_s2t"  # as the authors' know2adv.py
    assert "2-step PGD" in results["report"]["description"]  # --quick: 50 steps cut to 2
    assert (out / "figures").is_dir()
    _rerun_reuses_everything(name, out, vision_root, results, shares)


@pytest.fixture(scope="module")
def celeba_run(celeba_root: Path, tmp_path_factory: pytest.TempPathFactory
               ) -> tuple[dict, Path, dict[str, list[str]]]:
    """One ``--quick`` celeba-attributes run, spying on what it reads: (results, out, the
    CelebA file names of every dataset it materialised, by description)."""
    read: dict[str, list[str]] = {}

    def spy(dataset: object, *, description: str, **kw: object) -> object:
        read[description] = _image_names(dataset)
        return stages.materialize(dataset, description=description, **kw)  # type: ignore

    out = tmp_path_factory.mktemp("celeba-run") / "celeba"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(celeba_recipe, "materialize", spy)
        results = _run("celeba-attributes", out, celeba_root)
    return results, out, read


def test_celeba_attributes_quick(celeba_root: Path, celeba_run: tuple) -> None:
    results, out, _ = celeba_run
    name = "celeba-attributes"
    _check_run(results, out, ALPHAS, ["transfer_accuracy", "transfer_loss"])
    records = results["records"]
    assert sorted(r["source"] for r in records) == sorted(celeba_recipe.QUICK_ATTRIBUTES)
    accuracies = [r["transfer_accuracy"] for r in records]
    assert accuracies == sorted(accuracies, reverse=True)
    assert [r["rank"] for r in records] == [1, 2, 3, 4]
    assert sorted(r["alpha_rank"] for r in records) == [1, 2, 3, 4]
    assert results["reference"]["identities"] == 10
    _rerun_reuses_everything(name, out, celeba_root, results)


def _image_names(view: object) -> list[str]:
    """CelebA file names of a view, found here by walking .dataset/.indices to .filename."""
    positions = list(range(len(view)))  # type: ignore[arg-type]
    while not hasattr(view, "filename"):
        indices = getattr(view, "indices", None)
        if indices is not None:
            positions = [int(indices[p]) for p in positions]
        view = view.dataset  # type: ignore[attr-defined]
    return [view.filename[p] for p in positions]  # type: ignore[attr-defined]


def test_celeba_target_images_are_disjoint_from_every_source_training_image(
        celeba_root: Path, celeba_run: tuple) -> None:
    """The attribute sources train on train-partition images only, the identity task
    (reference training, transfer, attack inputs) uses test-partition images only, so no
    target image was seen by a source."""
    results, _, read = celeba_run
    lines = (celeba_root / "celeba" / "list_eval_partition.txt").read_text().split("\n")
    partition = {name: int(p) for name, p in (line.split() for line in lines if line)}
    source_train = read["reading CelebA train (attributes)"]
    target = read["reading CelebA identities (train)"] + read["reading CelebA identities (test)"]
    assert source_train and target
    assert {partition[n] for n in source_train} == {0}
    assert {partition[n] for n in target} == {2}
    assert not set(source_train) & set(target)
    assert results["reference"]["identity_partition"] == "test"
    # the fixture (unlike CelebA) lets people recur across partitions; counted, not hidden
    assert results["reference"]["identities_in_attribute_training"] >= 0


@pytest.fixture(scope="module")
def taskonomy_run(taskonomy_root: Path,
                  tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, str]:
    """One ``--quick`` taskonomy run with the fixture's affinity CSV, at the smallest size the
    encoder takes (32 px: 2 x 2 outputs, pooled to 1 x 1) on 8 images: (results, out, overrides)."""
    pytest.importorskip("visualpriors")
    out = tmp_path_factory.mktemp("taskonomy-run") / "taskonomy"
    overrides = (f'affinity_csv="{taskonomy_root / "affinity.csv"}"', "image_size=32",
                 "n_images=8", "pool=1")
    return _run("taskonomy", out, taskonomy_root, *overrides), out, overrides


def test_taskonomy_quick(taskonomy_root: Path,
                        taskonomy_run: tuple[dict, Path, tuple[str, ...]]) -> None:
    results, out, overrides = taskonomy_run
    name = "taskonomy"
    _check_run(results, out, ["alpha1", "alpha2", "combined", "affinity"], [])
    tasks = taskonomy_recipe.QUICK_TASKS
    assert len(results["records"]) == len(tasks) * (len(tasks) - 1)
    for m in ("alpha1", "alpha2", "combined"):
        values = np.array(results["matrices"][m]["values"], dtype=float)
        assert values.shape == (3, 3) and np.isfinite(values).all()
        assert results["matrices"][m]["names"] == tasks
    np.testing.assert_allclose(np.diag(results["matrices"]["alpha1"]["values"]), 1.0)
    assert results["matrices"]["Taskonomy affinity"]["names"] == tasks
    assert results["output_shapes"] == {t: [8, 2, 2] for t in tasks}  # full resolution
    assert results["tree"]["newick"].endswith(";")
    assert all(t in results["tree"]["newick"] for t in tasks)
    assert (out / taskonomy_recipe.TREE_FIGURE).stat().st_size > 0
    assert results["images"]["n"] == 8
    assert "RANDOM-WEIGHT" in results["report"]["description"]
    _rerun_reuses_everything(name, out, taskonomy_root, results, *overrides)


def test_taskonomy_affinity_correlation_is_one_orientation_with_a_mantel_p(
        taskonomy_root: Path, taskonomy_run: tuple[dict, Path, tuple[str, ...]]) -> None:
    """alpha[S, T] (attack crafted on S, evaluated on T) against affinity[S, T] (CSV row S,
    column T), with the exact Mantel p over the 3! relabellings of the tasks; no per-pair
    correlation (whose p-value would treat the 6 pairs as independent) in the report."""
    results, out, _ = taskonomy_run
    names, table = tdata.load_affinity_csv(taskonomy_root / "affinity.csv")
    pos = [names.index(t) for t in taskonomy_recipe.QUICK_TASKS]
    affinity = table[np.ix_(pos, pos)]
    off = ~np.eye(3, dtype=bool)
    for m in ("alpha1", "alpha2", "combined"):
        alpha = np.array(results["matrices"][m]["values"], dtype=float)
        got = results["affinity_correlation"][m]
        rho = float(sps.spearmanr(alpha[off], affinity[off]).statistic)
        assert got["statistic"] == pytest.approx(rho, rel=1e-12)
        null = [float(sps.spearmanr(alpha[off], affinity[np.ix_(p, p)][off]).statistic)
                for p in itertools.permutations(range(3))]
        expected_p = float(np.mean(np.abs(null) >= abs(rho) - 1e-9))
        assert got["exact"] and got["n_permutations"] == 6
        assert got["p"] == pytest.approx(expected_p, rel=1e-12)
    for r in results["records"]:
        i, j = (taskonomy_recipe.QUICK_TASKS.index(r[k]) for k in ("attacker", "victim"))
        assert r["affinity"] == pytest.approx(affinity[i, j]) and "affinity_transposed" not in r
    assert results["report"]["outcomes"] == []
    assert json.loads((out / "correlations.json").read_text()) == []
    assert "Mantel" in results["report"]["description"]


class _Dense(torch.nn.Module):
    """A small smooth "task network": (B, 3, 4, 4) -> (B, 2, 4, 4), tanh hidden layer."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w1 = torch.nn.Parameter(torch.randn(24, 48, generator=g, dtype=torch.float64) / 4)
        self.w2 = torch.nn.Parameter(torch.randn(32, 24, generator=g, dtype=torch.float64) / 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(x.reshape(len(x), -1) @ self.w1.T)
        return (h @ self.w2.T).reshape(len(x), 2, 4, 4)


def test_pooled_transfer_matrix_attacks_the_full_resolution_output() -> None:
    """Exact first-order L2 attacks (delta = eps v1 of the full Jacobian) on three networks,
    every alpha recomputed here from the definitions: alpha1 from full-resolution deviation
    norms, alpha2/combined from the deviations average-pooled to 2 x 2 cells."""
    from advtransfer.attacks import AttackConfig

    models = {f"t{k}": tmodels.TaskOutput(_Dense(k)).eval() for k in range(3)}
    gen = torch.Generator().manual_seed(0)
    x = 0.4 + 0.2 * torch.rand(5, 3, 4, 4, generator=gen, dtype=torch.float64)
    eps = 1e-6  # small enough that the sign of v1 (arbitrary) does not matter to 1e-6
    config = AttackConfig(eps=eps, norm="l2", solver="first_order", steps=300)
    r = taskonomy_recipe.pooled_transfer_matrix(models, x, config, pool=2, batch_size=2,
                                                generator=1)

    def top_direction(model: torch.nn.Module, xi: torch.Tensor) -> torch.Tensor:
        jac = torch.autograd.functional.jacobian(lambda v: model(v[None])[0], xi)
        return torch.linalg.svd(jac.reshape(32, 48))[2][0].reshape(xi.shape)

    mods = list(models.values())
    dev = {}  # (attacker, victim) -> (full deviations, pooled deviations)
    with torch.no_grad():
        for i, a in enumerate(mods):
            delta = torch.stack([top_direction(a, xi) for xi in x]) * eps
            for j, b in enumerate(mods):
                full = b(x + delta) - b(x)
                pooled = torch.nn.functional.avg_pool2d(full.reshape(5, 2, 4, 4), 2)
                dev[(i, j)] = (full, pooled.reshape(5, -1))
    for i in range(3):
        for j in range(3):
            n_ab = dev[(i, j)][0].norm(dim=1)
            ratio = n_ab / dev[(j, j)][0].norm(dim=1)
            u_a = torch.nn.functional.normalize(dev[(i, i)][1], dim=1)
            u_b = torch.nn.functional.normalize(dev[(i, j)][1], dim=1)
            d = r.direction(i, j)
            assert d.alpha1 == pytest.approx(float(ratio.mean()), rel=1e-6)
            assert d.stats.mean_deviation == pytest.approx(float(n_ab.mean()), rel=1e-6)
            assert d.alpha2 == pytest.approx(float((u_a.T @ u_b / 5).norm()), rel=1e-6)
            weighted = (u_a * ratio[:, None]).T @ u_b / 5
            assert d.combined == pytest.approx(float(weighted.norm()), rel=1e-6)


def test_pool_deviations_keeps_full_norms() -> None:
    dev = torch.randn(3, 2 * 8 * 8, dtype=torch.float64)
    out = taskonomy_recipe.pool_deviations(dev, (2, 8, 8), 4)
    expected = torch.nn.functional.avg_pool2d(dev.reshape(3, 2, 8, 8), 2).reshape(3, -1)
    assert out.shape == (3, 32)
    torch.testing.assert_close(torch.nn.functional.normalize(out, dim=1),
                               torch.nn.functional.normalize(expected, dim=1))
    torch.testing.assert_close(out.norm(dim=1), dev.norm(dim=1))
    assert taskonomy_recipe.pool_deviations(dev, (2, 8, 8), 0) is dev
    assert taskonomy_recipe.pool_deviations(dev[:, :10], (10,), 4) is not None


# ------------------------------------------------------------------------------------------
# bad input: missing data gives the loaders' error, and nothing is half-written
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, expected", [
    ("cifar10-stl10-architectures", "CIFAR-10"),
    ("cifar10-stl10-proportions", "CIFAR-10"),
    ("celeba-attributes", "CelebA"),
    ("taskonomy", "no image"),
])
def test_missing_data_is_a_clear_error(name: str, expected: str, tmp_path: Path) -> None:
    if name == "taskonomy":
        pytest.importorskip("visualpriors")
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    with pytest.raises(AdvTransferError, match=expected) as info:
        _run(name, out, empty)
    assert "--download" in str(info.value)
    if name != "taskonomy":
        assert "missing" in str(info.value)
    if name.startswith("cifar10-stl10"):  # every missing dataset and split named at once
        for title in ("CIFAR-10 (train split)", "CIFAR-10 (test split)",
                      "STL-10 (train split)", "STL-10 (test split)"):
            assert title in str(info.value), title
    assert not out.exists()  # nothing at all is written (no run.json, records/ or models/)


def test_missing_pretrained_weights_are_not_downloaded_without_flag(
        taskonomy_root: Path, tmp_path: Path) -> None:
    pytest.importorskip("visualpriors")
    weights = tmp_path / "weights"
    with pytest.raises(AdvTransferError, match="--download") as info:
        _run("taskonomy", tmp_path / "out", taskonomy_root, 'weights="pretrained"',
             f'weights_dir="{weights}"')
    assert "autoencoding_encoder-" in str(info.value)
    assert not weights.exists()


def test_bad_configuration_values_are_errors(vision_root: Path, tmp_path: Path) -> None:
    with pytest.raises(AdvTransferError, match="direction"):
        _run("cifar10-stl10-proportions", tmp_path / "a", vision_root, 'direction="both"')
    with pytest.raises(AdvTransferError, match="source_classes"):
        _run("cifar10-stl10-proportions", tmp_path / "b", vision_root,
             "source_classes=[[0, 0, 1, 2]]")
    with pytest.raises(AdvTransferError, match="architecture"):
        _run("cifar10-stl10-architectures", tmp_path / "c", vision_root,
             'architectures=["vgg"]')
    with pytest.raises(AdvTransferError, match="preset must be one of"):
        _run("cifar10-stl10-architectures", tmp_path / "d", vision_root, 'preset="icml"')
    with pytest.raises(AdvTransferError, match="steps"):
        _run("cifar10-stl10-proportions", tmp_path / "e", vision_root, "steps=0")


# ------------------------------------------------------------------------------------------
# cifar10-stl10-*: the protocol of the authors' released image code (image_exp/)
# ------------------------------------------------------------------------------------------

AUTHORS_EPS = 0.1
"""``--eps 0.1`` of every adv2know.py / know2adv.py line of the authors' image_exp/cmd.sh."""


def _pixels(length_on_minus1_1: float) -> float:
    """A length on the authors' inputs Normalize(0.5, 0.5)(p) = 2p - 1, in [0, 1] pixels."""
    return length_on_minus1_1 / 2.0


def test_default_eps_is_the_authors_budget_in_pixels() -> None:
    # image_exp/attack.py clamps x_adv - x to [-2 eps_a, 2 eps_a] on [-1, 1] inputs, eps_a = 0.1,
    # so the budget is 0.2 on [-1, 1] = 0.1 in pixels (not 0.05)
    expected = _pixels(2 * AUTHORS_EPS)
    assert expected == pytest.approx(0.1)
    for config in (cifar_stl.CifarStlArchitecturesConfig(),
                   cifar_stl.CifarStlProportionsConfig()):
        assert config.eps == pytest.approx(expected)
    # the recipe's own [0, 1] -> [-1, 1] wrapper turns that pixel budget into 2 eps_a
    wrapped = InputRange(torch.nn.Identity())
    x = torch.full((1, 3), 0.3)
    moved = wrapped(x + expected) - wrapped(x)
    torch.testing.assert_close(moved, torch.full((1, 3), 2 * AUTHORS_EPS))


def test_architectures_attack_is_the_authors_fgsm() -> None:
    # cmd.sh runs adv2know.py with --attack fgsm: attack(itr=1) starts uniformly in the ball
    # (x + (rand - 0.5) * 4 eps_a) and takes one signed step of 2 eps_a on [-1, 1] inputs,
    # crafted on the reference and evaluated on the source (t2s)
    c = cifar_stl.resolved(cifar_stl.CifarStlArchitecturesConfig())
    assert (c.solver, c.steps, c.norm, c.objective) == ("pgd", 1, "linf", "ce")
    assert c.random_start and c.correct_only and c.direction == "t2s"
    assert c.step_size == pytest.approx(_pixels(2 * AUTHORS_EPS))


def test_proportions_attack_is_the_authors_pgd50() -> None:
    # cmd.sh runs know2adv.py with --attack pgd: attack(itr=50), step 2 eps_a * 5 / itr on
    # [-1, 1] inputs, crafted on the source and evaluated on the reference (s2t)
    c = cifar_stl.resolved(cifar_stl.CifarStlProportionsConfig())
    assert (c.solver, c.steps, c.norm, c.objective) == ("pgd", 50, "linf", "ce")
    assert c.random_start and c.direction == "s2t"
    assert c.step_size == pytest.approx(_pixels(2 * AUTHORS_EPS * 5 / 50))
    assert c.step_size == pytest.approx(0.01)
    # the rule follows eps and steps; an explicit step size is kept
    other = cifar_stl.resolved(cifar_stl.CifarStlProportionsConfig(eps=0.03, steps=10))
    assert other.step_size == pytest.approx(_pixels(2 * 0.03 * 5 / 10))
    kept = cifar_stl.resolved(cifar_stl.CifarStlProportionsConfig(step_size=0.002))
    assert kept.step_size == 0.002


def test_paper_preset_is_the_authors_training() -> None:
    # image_exp/train_clf.py defaults, used by cmd.sh for every architecture: 100 epochs, batch
    # 64, SGD lr 0.1 (momentum 0.9, cosine), weight decay 1e-4, random crop and flip;
    # transfer.py: 10 epochs, batch 64, lr 0.1, weight decay 1e-4
    for config in (cifar_stl.CifarStlArchitecturesConfig(),
                   cifar_stl.CifarStlProportionsConfig()):
        c = cifar_stl.resolved(config)
        assert c.preset == "paper"
        assert (c.epochs, c.reference_epochs, c.batch_size) == (100, 100, 64)
        assert (c.lr, c.plain_lr, c.weight_decay, c.augment) == (0.1, 0.1, 1e-4, True)
        assert (c.finetune_epochs, c.finetune_lr, c.finetune_batch_size,
                c.finetune_weight_decay) == (10, 0.1, 64, 1e-4)
        # transfer.py: the head behind the frozen network in train mode on augmented batches,
        # the epoch with the best test accuracy kept; attack.py: the last iterate
        assert (c.finetune, c.finetune_epoch, c.iterate) == ("head_train_mode", "best_test",
                                                             "last")


def _parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_paper_preset_trains_the_authors_networks() -> None:
    # image_exp/models/fc.py: 3072-1176-400-120-84-10 (Linear: in * out + out parameters)
    fc = [3 * 32 * 32, 1176, 400, 120, 84, 10]
    fc_count = sum(a * b + b for a, b in zip(fc, fc[1:], strict=False))
    # their CIFAR AlexNet: convs (c_in, c_out, k) then one Linear(256, 10)
    convs = [(3, 64, 11), (64, 192, 5), (192, 384, 3), (384, 256, 3), (256, 256, 3)]
    alexnet_count = sum(k * k * a * b + b for a, b, k in convs) + 256 * 10 + 10
    # their LeNet: conv 3->6 and 6->16 (5x5), then 400-120-84-10
    lenet_count = (3 * 6 * 25 + 6) + (6 * 16 * 25 + 16) + sum(
        a * b + b for a, b in [(400, 120), (120, 84), (84, 10)])
    expected = {"fc": fc_count, "alexnet": alexnet_count, "lenet": lenet_count}
    assert expected == {"fc": 4_143_782, "alexnet": 2_472_266, "lenet": 62_006}
    for arch, count in expected.items():
        assert _parameters(cifar_stl.network(arch, 10, 1.0, 32)) == count, arch


def test_fast_preset_is_the_earlier_setting() -> None:
    c = cifar_stl.resolved(cifar_stl.CifarStlArchitecturesConfig(preset="fast"))
    assert (c.epochs, c.batch_size, c.lr, c.plain_lr, c.weight_decay) == (50, 128, 0.1, 0.01,
                                                                          5e-4)
    assert (c.finetune_batch_size, c.finetune_weight_decay) == (128, 0.0)
    assert (c.finetune, c.finetune_epoch) == ("head", "last")  # no choice on the test set
    assert cifar_stl.network_name("fc", "fast") == "fc"
    assert cifar_stl.network_name("alexnet", "fast") == "alexnet"
    fc = [3 * 32 * 32, 512, 256, 10]  # the library's fc_net default
    assert _parameters(cifar_stl.network("fc", 10, 1.0, 32, "fast")) == sum(
        a * b + b for a, b in zip(fc, fc[1:], strict=False))
    # a field given explicitly wins over the preset
    mixed = cifar_stl.resolved(cifar_stl.CifarStlArchitecturesConfig(preset="fast", epochs=7,
                                                                      weight_decay=0.0))
    assert (mixed.epochs, mixed.weight_decay, mixed.batch_size) == (7, 0.0, 128)
    with pytest.raises(AdvTransferError, match="preset must be one of"):
        cifar_stl.resolved(cifar_stl.CifarStlArchitecturesConfig(preset="slow"))


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------


def test_stl_labels_as_cifar_ids_are_a_bijection() -> None:
    mapping = cifar_stl.STL10_AS_CIFAR10
    assert sorted(mapping) == list(range(10)) and sorted(mapping.values()) == list(range(10))
    assert mapping[cifar_stl.STL10_MONKEY] == cifar_stl.MONKEY_AS_CIFAR == 6


def test_augment_keeps_shape_and_range_and_is_seeded() -> None:
    x = torch.rand(8, 3, 32, 32)
    torch.manual_seed(1)
    a = stages.augment(x)
    torch.manual_seed(1)
    b = stages.augment(x)
    assert a.shape == x.shape and torch.equal(a, b)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0


def test_materialize_round_trips_8_bit_images() -> None:
    x = torch.randint(0, 256, (5, 3, 4, 4), dtype=torch.uint8)
    y = torch.arange(5)
    data = torch.utils.data.TensorDataset(x.float() / 255, y)
    xs, ys = stages.materialize(data, description="t", progress=False)
    assert torch.equal(xs, x) and torch.equal(ys, y)
    assert torch.equal(stages.to_float(xs), x.float() / 255)


def test_identity_split_holds_out_each_identity() -> None:
    labels = np.repeat(np.arange(4), [1, 2, 5, 10])
    train, test = celeba_recipe.identity_split(labels, 0.2, seed=0)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(len(labels)))
    assert [int((labels[test] == k).sum()) for k in range(4)] == [0, 1, 1, 2]
    assert all((labels[train] == k).any() for k in range(4))


def test_embedding_outputs_the_penultimate_features() -> None:
    torch.manual_seed(0)
    model = InputRange(resnet18_cifar(5, width=0.125)).eval()
    emb = celeba_recipe.Embedding(model).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        feats = emb(x)
        assert feats.shape == (2, 64)
        torch.testing.assert_close(model.inner.fc(feats), model(x))
    assert isinstance(model.inner.fc, torch.nn.Linear)  # the original is untouched


def test_task_names_and_affinity_csv(tmp_path: Path) -> None:
    assert tdata.canonical_task("rgb2sfnorm") == "normal"
    assert tdata.canonical_task("class_places") == "class_scene"
    with pytest.raises(AdvTransferError, match="Did you mean"):
        tdata.canonical_task("normals2")
    path = tmp_path / "a.csv"
    path.write_text(",normal,edge2d\nedge2d,1,2\nnormal,3,4\n")
    names, values = tdata.load_affinity_csv(path)
    assert names == ["normal", "edge_texture"]
    np.testing.assert_array_equal(values, [[3, 4], [1, 2]])
    path.write_text(",normal,edge2d\nnormal,1\n")
    with pytest.raises(AdvTransferError, match="values"):
        tdata.load_affinity_csv(path)


def test_tree_distance_and_newick() -> None:
    m = np.array([[1.0, 0.8, 0.1], [0.6, 1.0, 0.2], [0.1, 0.0, 1.0]])
    d = taskonomy_analysis.tree_distance(m)
    np.testing.assert_allclose(d, [[0, 0.3, 0.9], [0.3, 0, 0.9], [0.9, 0.9, 0]])
    z = taskonomy_analysis.linkage(d, "average")
    text = taskonomy_analysis.newick(z, ["a", "b", "c"])
    assert text.startswith("(c:") and "(a:0.3,b:0.3)" in text and text.endswith(";")


def test_pretrained_loading_path_reads_checkpoints_and_verifies_hashes(tmp_path: Path) -> None:
    vp = pytest.importorskip("visualpriors.taskonomy_network")
    files = tmodels.weight_files("normal", "encoder")
    (name,) = files
    torch.manual_seed(3)
    source = vp.TaskonomyEncoder()
    torch.save({"state_dict": source.state_dict(), "epoch": 1}, tmp_path / name)
    model = tmodels.task_model("rgb2sfnorm", output="encoder", weights="pretrained",
                             weights_dir=tmp_path)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expected = source.eval()(2 * x - 1)
        torch.testing.assert_close(model(x), expected.reshape(2, -1))
    with pytest.raises(AdvTransferError, match="SHA-256"):
        tmodels.task_model("normal", output="encoder", weights_dir=tmp_path, verify=True)


def test_task_outputs_are_full_resolution_predictions() -> None:
    pytest.importorskip("visualpriors")
    model = tmodels.task_model("normal", output="decoder", weights="random", seed=1)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        y = model(x)
    assert model.output_shape(x) == (3, 64, 64)
    assert y.shape == (1, 3 * 64 * 64) and float(y.abs().max()) <= 1.0  # tanh output
    with pytest.raises(AdvTransferError, match="256 px"):
        tdata.check_tasks(["class_object", "normal"], "decoder", 64)
    with pytest.raises(AdvTransferError, match="no visualpriors decoder"):
        tmodels.task_model("jigsaw", output="decoder", weights="random")
