"""The real-data recipes end to end (``--quick``) on fixture files in the datasets' own formats,
their failure on missing data, and the helpers they are built from."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import advtransfer.experiments.recipes.celeba as celeba_recipe
import advtransfer.experiments.recipes.cifar_stl as cifar_stl
import advtransfer.experiments.recipes.taskonomy as taskonomy_recipe
import advtransfer.experiments.stages as stages
from advtransfer.data import taskonomy as tdata
from advtransfer.data.fixtures import write_celeba, write_cifar10, write_stl10
from advtransfer.errors import AdvTransferError
from advtransfer.experiments import run
from advtransfer.models.architectures import resnet18_cifar
from advtransfer.models.wrappers import InputRange

ALPHAS = [f"{m}_{d}" for d in ("t2s", "s2t") for m in ("alpha1", "alpha2", "combined")]


def _run(name: str, out: Path, root: Path, *extra: str) -> dict:
    return run(name, out, quick=True, overrides=[f'data_root="{root}"', *extra],
               progress=False, device="cpu")


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
    write_celeba(root, n_identities=12, n_images=240)
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
    name, out = "cifar10-stl10-architectures", tmp_path / "arch"
    results = _run(name, out, vision_root)
    _check_run(results, out, ALPHAS, ["transfer_accuracy", "transfer_loss"])
    records = results["records"]
    assert [r["source"] for r in records] == list(cifar_stl.ARCHITECTURES)
    for r in records:
        assert 0.0 <= r["transfer_accuracy"] <= 1.0
        assert 0.0 <= r["direct_accuracy"] <= 1.0
        assert 0 < r["n_attack"] <= 64
        assert r["alpha1_sq_t2s"] >= 0.0
    assert results["config"]["squared"] is True and results["config"]["eps"] == 0.05
    assert results["reference"]["classes"][cifar_stl.MONKEY_AS_CIFAR] == "monkey"
    _rerun_reuses_everything(name, out, vision_root, results)


def test_cifar10_stl10_proportions_quick(vision_root: Path, tmp_path: Path) -> None:
    name, out = "cifar10-stl10-proportions", tmp_path / "prop"
    results = _run(name, out, vision_root)
    _check_run(results, out, ALPHAS, ["transfer_accuracy", "transfer_loss"])
    assert [r["share"] for r in results["records"]] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert results["report"]["sweep"] == "share"
    assert results["reference"]["classes"] == ["bird", "cat", "deer", "dog"]
    assert (out / "figures").is_dir()
    _rerun_reuses_everything(name, out, vision_root, results)


def test_celeba_attributes_quick(celeba_root: Path, tmp_path: Path) -> None:
    name, out = "celeba-attributes", tmp_path / "celeba"
    results = _run(name, out, celeba_root)
    _check_run(results, out, ALPHAS, ["transfer_accuracy", "transfer_loss"])
    records = results["records"]
    assert sorted(r["source"] for r in records) == sorted(celeba_recipe.QUICK_ATTRIBUTES)
    accuracies = [r["transfer_accuracy"] for r in records]
    assert accuracies == sorted(accuracies, reverse=True)
    assert [r["rank"] for r in records] == [1, 2, 3, 4]
    assert sorted(r["alpha_rank"] for r in records) == [1, 2, 3, 4]
    assert results["reference"]["identities"] == 10
    _rerun_reuses_everything(name, out, celeba_root, results)


def test_taskonomy_quick(taskonomy_root: Path, tmp_path: Path) -> None:
    pytest.importorskip("visualpriors")
    name, out = "taskonomy", tmp_path / "taskonomy"
    csv = f'affinity_csv="{taskonomy_root / "affinity.csv"}"'
    results = _run(name, out, taskonomy_root, csv)
    _check_run(results, out, ["alpha1", "alpha2", "combined"],
               ["affinity", "affinity_transposed"])
    tasks = taskonomy_recipe.QUICK_TASKS
    assert len(results["records"]) == len(tasks) * (len(tasks) - 1)
    for m in ("alpha1", "alpha2", "combined"):
        values = np.array(results["matrices"][m]["values"], dtype=float)
        assert values.shape == (3, 3) and np.isfinite(values).all()
        assert results["matrices"][m]["names"] == tasks
    np.testing.assert_allclose(np.diag(results["matrices"]["alpha1"]["values"]), 1.0)
    assert results["matrices"]["Taskonomy affinity"]["names"] == tasks
    corr = results["affinity_correlation"]["combined"]["symmetrised"]
    assert corr["n"] == 3 and (corr["rho"] is None or -1.0 <= corr["rho"] <= 1.0)
    assert results["tree"]["newick"].endswith(";")
    assert all(t in results["tree"]["newick"] for t in tasks)
    assert (out / taskonomy_recipe.TREE_FIGURE).stat().st_size > 0
    assert results["images"]["n"] == 16
    assert "RANDOM-WEIGHT" in results["report"]["description"]
    _rerun_reuses_everything(name, out, taskonomy_root, results, csv)


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
    d = taskonomy_recipe.tree_distance(m)
    np.testing.assert_allclose(d, [[0, 0.3, 0.9], [0.3, 0, 0.9], [0.9, 0.9, 0]])
    z = taskonomy_recipe._linkage(d, "average")
    text = taskonomy_recipe.newick(z, ["a", "b", "c"])
    assert text.startswith("(c:") and "(a:0.3,b:0.3)" in text and text.endswith(";")


def test_pretrained_loading_path_reads_checkpoints_and_verifies_hashes(tmp_path: Path) -> None:
    vp = pytest.importorskip("visualpriors.taskonomy_network")
    files = tdata.weight_files("normal", "encoder")
    (name,) = files
    torch.manual_seed(3)
    source = vp.TaskonomyEncoder()
    torch.save({"state_dict": source.state_dict(), "epoch": 1}, tmp_path / name)
    model = tdata.task_model("rgb2sfnorm", output="encoder", weights="pretrained", pool=2,
                             weights_dir=tmp_path)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expected = torch.nn.functional.adaptive_avg_pool2d(source.eval()(2 * x - 1), 2)
        torch.testing.assert_close(model(x), expected.reshape(2, -1))
    with pytest.raises(AdvTransferError, match="SHA-256"):
        tdata.task_model("normal", output="encoder", weights_dir=tmp_path, verify=True)


def test_decoder_outputs_are_pooled_task_predictions() -> None:
    pytest.importorskip("visualpriors")
    model = tdata.task_model("normal", output="decoder", weights="random", pool=4, seed=1)
    with torch.no_grad():
        y = model(torch.rand(1, 3, 64, 64))
    assert y.shape == (1, 3 * 4 * 4) and float(y.abs().max()) <= 1.0  # tanh output
    with pytest.raises(AdvTransferError, match="256 px"):
        tdata.check_tasks(["class_object", "normal"], "decoder", 64)
    with pytest.raises(AdvTransferError, match="no visualpriors decoder"):
        tdata.task_model("jigsaw", output="decoder", weights="random")
