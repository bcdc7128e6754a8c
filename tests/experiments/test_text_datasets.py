"""The ``text-datasets`` recipe (--quick) on fixture files in the authors' text format: end to end,
resumed, refused on missing or malformed files and on bad settings, and its snapped option. The
real files are never read here (a user's clone does not have them)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from scipy import stats as sps
from typer.testing import CliRunner

from advtransfer.cli import app
from advtransfer.data.text import TEXT_DATASETS, write_text_fixture
from advtransfer.errors import AdvTransferError
from advtransfer.experiments import run
from advtransfer.experiments.recipes import text_datasets as recipe

DATASETS = ["ag", "mr", "snli"]  # what --quick runs
ALPHAS = list(recipe.ALPHAS)


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    """One intra-op thread: toy runs on a busy 2-core machine stay fast and stable."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _fixtures(root: Path, names: list[str] | tuple[str, ...] = tuple(TEXT_DATASETS)) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        write_text_fixture(root, name, n_per_class=20, seed=1)
    return root


def _run(out: Path, root: Path, *extra: str) -> dict:
    return run("text-datasets", out, quick=True, overrides=[f'data_root="{root}"', *extra],
               progress=False, device="cpu")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, Path]:
    base = tmp_path_factory.mktemp("text")
    root = _fixtures(base / "data", DATASETS)
    out = base / "run"
    return _run(out, root), out, root


def test_quick_run_end_to_end(quick_run):
    results, out, _ = quick_run
    records, controls = results["records"], results["controls"]
    # every ordered pair of different datasets once, each control once
    assert sorted((r["target"], r["source_dataset"]) for r in records) == sorted(
        (t, s) for t in DATASETS for s in DATASETS if s != t)
    assert [(r["target"], r["source_seed"]) for r in controls] == [(t, 1) for t in DATASETS]
    assert all(r["source_dataset"] == r["target"] and r["pair"] == "control" for r in controls)
    for r in records + controls:
        for key in [*ALPHAS, "head_accuracy", "full_accuracy"]:
            assert isinstance(r[key], float) and math.isfinite(r[key]), (key, r)
    assert len(results["models"]) == 2 * len(DATASETS)
    for name in ("report.md", "report.html", "results.csv", "correlations.json", "groups.json",
                 "figures/matrix_alpha1_t2s.png", "figures/matrix_head_accuracy.png",
                 "figures/matrix_full_accuracy.png"):
        assert (out / name).is_file(), name
    assert json.loads((out / "results.json").read_text())["records"] == records
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "Mantel" in report and "What this shows / does not show" in report
    assert "Within groups of equal target dataset" in report  # within-target correlations


def test_matrices_hold_the_pairs_and_the_controls_on_the_diagonal(quick_run):
    results = quick_run[0]
    full = results["text_matrices"]["full_accuracy"]["values"]
    alpha = results["matrices"]["alpha1_t2s"]["values"]  # rows: attacker = target's reference
    for r in results["records"]:
        i, j = DATASETS.index(r["target"]), DATASETS.index(r["source_dataset"])
        assert full[i][j] == r["full_accuracy"] and alpha[i][j] == r["alpha1_t2s"]
    for r in results["controls"]:
        i = DATASETS.index(r["target"])
        assert full[i][i] == r["full_accuracy"]


def test_mantel_statistic_is_spearman_over_the_ordered_pairs(quick_run):
    results = quick_run[0]
    records = results["records"]
    for row in results["mantel"]:
        x = [r[row["metric"]] for r in records]
        y = [r[row["outcome"]] for r in records]
        rho = sps.spearmanr(x, y).statistic
        assert row["n_pairs"] == len(records) and row["exact"]
        assert row["n_permutations"] == math.factorial(len(DATASETS))
        if math.isfinite(rho):
            assert row["statistic"] == pytest.approx(rho, abs=1e-9)


def test_selection_benchmark_ranks_each_targets_pool(quick_run):
    selection = quick_run[0]["selection"]
    for t in DATASETS:
        pool = {s for s in DATASETS if s != t} | {f"{t}#1"}  # control_in_pool
        for method in recipe.QUICK_METHODS:
            assert set(selection["scores"][t][method]) == pool, (t, method)
        assert set(selection["truth"][t]) == pool
    # the output-space alphas are the pairs' own measurements
    for r in quick_run[0]["records"]:
        assert selection["scores"][r["target"]]["alpha1"][r["source_model"]] == r["alpha1_t2s"]
        assert selection["scores"][r["target"]]["alpha1_s2t"][r["source_model"]] == \
            r["alpha1_s2t"]
    assert set(selection["weighted_tau"]) >= set(recipe.QUICK_METHODS)


def test_rerun_and_resume_reuse_every_unit(quick_run):
    first, out, root = quick_run
    again = _run(out, root)
    assert again["units"]["computed"] == 0 and again["records"] == first["records"]
    (out / "results.json").unlink()
    resumed = _run(out, root)
    assert resumed["units"]["computed"] == 0
    assert resumed["units"]["reused"] == first["units"]["computed"] + first["units"]["reused"]
    assert resumed["records"] == first["records"]


def test_a_missing_file_is_named_and_nothing_is_written(tmp_path):
    root = _fixtures(tmp_path / "data", ["ag", "snli"])
    out = tmp_path / "run"
    with pytest.raises(AdvTransferError) as err:
        _run(out, root)
    text = str(err.value)
    assert "mr" in text.split("missing")[0] and "--download" in text
    assert "raw/a2fb10f/adversarial-transfer-nlp/data" in text
    assert not out.exists()
    result = CliRunner().invoke(app, ["run", "text-datasets", "--data-root", str(root),
                                      "--quick", "--quiet", "--out", str(out)])
    assert result.exit_code == 2 and "mr" in result.output and not out.exists()


@pytest.mark.parametrize(("name", "line", "expected"), [
    ("mr", "7 a label out of range", "unknown label '7'"),
    ("snli", "neutral\ta premise without its hypothesis", "no hypothesis"),
    ("ag", "2", "a label without text"),
])
def test_a_malformed_line_gives_the_loaders_error_and_nothing_is_written(tmp_path, name, line,
                                                                        expected):
    root = _fixtures(tmp_path / "data", DATASETS)
    path = root / name
    good = path.read_text().splitlines()
    path.write_text("\n".join([*good[:3], line, *good[3:]]) + "\n")
    out = tmp_path / "run"
    with pytest.raises(AdvTransferError, match="line 4") as err:
        _run(out, root)
    assert expected in str(err.value) and str(path) in str(err.value)
    assert not out.exists()


@pytest.mark.parametrize(("override", "field"), [
    ("seeds=0", "seeds"), ('datasets=["ag"]', "datasets"), ('datasets=["ag", "bert"]', "bert"),
    ('architecture="bert"', "architecture"), ("split=[0.5, 0.5, 0.5]", "split"),
    ("eps=-1.0", "eps"), ("mask_padding=false", "mask_padding"),
    ('methods=["alpha1", "nope"]', "methods"), ('primary=["lgc"]', "primary"),
    ('attack="greedy"', "attack"), ('embedding="glove"', "embedding"), ("n_attack=0", "n_attack"),
    ("embed_dim=30", "multiple of 4"), ("full_lr=0.0", "full_lr"),
    ('datasets=["ag", "mr"]\nseeds=1', "pool of 1 source"),
])
def test_bad_settings_are_refused_naming_the_field(tmp_path, quick_run, override, field):
    extra = override.split("\n") + (['architecture="text-transformer"']
                                    if "embed_dim" in override else [])
    out = tmp_path / "run"
    with pytest.raises(AdvTransferError, match=field):
        _run(out, quick_run[2], *extra)  # the files are there: the setting is the problem
    assert not out.exists()


def test_data_root_is_required_without_download(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(AdvTransferError, match="data_root is required") as err:
        run("text-datasets", out, quick=True, progress=False, device="cpu")
    assert "--download" in str(err.value) and "ag" in str(err.value)
    assert not out.exists()


def test_snapped_option_measures_word_substitutions(tmp_path):
    """attack="snapped" adds alphas from the authors' snapped attack; measured between a model
    and itself, alpha1 is exactly 1 in both directions (Delta_{T->S} = Delta_{S->S})."""
    root = _fixtures(tmp_path / "data", ["ag", "mr"])
    out = tmp_path / "run"
    results = _run(out, root, 'datasets=["ag", "mr"]', 'attack="snapped"',
                   "snapped_samples=6", "snapped_steps=3")
    assert len(results["controls"]) == 2 and len(results["records"]) == 2
    for r in results["records"]:
        assert 0 <= r["snapped_changed_source"] <= recipe.quick(
            recipe.TextDatasetsConfig()).max_len
        assert "snapped_alpha1_t2s" in r
    for t in ("ag", "mr"):
        assert 0 <= results["targets"][t]["snapped_success"] <= 1
    # the reference against itself, through the same unit
    from advtransfer.experiments.registry import RunContext
    from advtransfer.store import Store

    c = replace(recipe.quick(recipe.TextDatasetsConfig()), data_root=str(root),
                datasets=["ag", "mr"], attack="snapped", snapped_samples=6, snapped_steps=3)
    sets = recipe._read(c)
    from advtransfer.data.text import build_vocabulary

    vocab = build_vocabulary(list(sets.values()), min_count=c.min_count)
    tasks = recipe._tasks(c, sets, vocab)
    ctx = RunContext(store=Store(out), device=torch.device("cpu"), progress=False)
    table, key = recipe._embedding(ctx, c, sets, vocab, {d: t.sha256 for d, t in tasks.items()})
    shared = recipe._Shared(c, tasks, table, key)
    same = recipe._snapped_alphas(ctx, shared, ("ag", "ag", "ag", 0))
    snapped = recipe._snapped(ctx, shared, *recipe._model(ctx, shared, "ag", 0), "ag")
    moved = int((snapped["changed"] > 0).sum())
    assert moved > 0 and same["n_undefined_t2s"] == len(snapped["changed"]) - moved
    assert same["alpha1_t2s"] == pytest.approx(1.0) and same["alpha1_s2t"] == pytest.approx(1.0)
    other = results["records"][0]  # a different model does not give 1
    assert other["snapped_alpha1_t2s"] != pytest.approx(1.0)


def test_fixture_files_are_never_the_shared_ones(quick_run):
    """The tests read files written here (a different SHA-256 from every official file)."""
    root = quick_run[2]
    from advtransfer.fileio import sha256_file

    assert all(sha256_file(root / d) != TEXT_DATASETS[d].sha256 for d in DATASETS)
