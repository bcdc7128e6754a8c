"""CelebA through torchvision's reader, on fixture files in the real list/JPEG format."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchvision.datasets.celeba as tv_celeba
from torch.utils.data import Subset
from torchvision.datasets import CelebA

from advtransfer.data.fixtures import write_celeba
from advtransfer.data.subsets import ClassSubset, take
from advtransfer.data.vision import (
    CELEBA_ATTRIBUTES,
    celeba,
    celeba_image_names,
    most_common_identities,
)
from advtransfer.errors import AdvTransferError

N_IMAGES, N_IDS = 40, 5


@pytest.fixture(scope="module")
def shared_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_celeba(tmp_path_factory.mktemp("celeba"), n_identities=N_IDS, n_images=N_IMAGES)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return write_celeba(tmp_path, n_identities=3, n_images=12)


def _table(root: Path, name: str, skip: int) -> dict[str, list[int]]:
    lines = (root / "celeba" / name).read_text().splitlines()[skip:]
    return {p[0]: [int(v) for v in p[1:]] for p in (line.split() for line in lines)}


def _split_names(root: Path, code: int) -> list[str]:
    part = _table(root, "list_eval_partition.txt", 0)
    return [name for name, (p,) in part.items() if p == code]


def test_attribute_targets(shared_root: Path) -> None:
    splits = {s: celeba(shared_root, s) for s in ("train", "valid", "test")}
    assert sum(len(d) for d in splits.values()) == N_IMAGES
    assert len(celeba(shared_root, "all")) == N_IMAGES
    attrs = _table(shared_root, "list_attr_celeba.txt", 2)
    test = splits["test"]
    assert test.attr_names == list(CELEBA_ATTRIBUTES)
    for i, name in enumerate(_split_names(shared_root, 2)):
        x, y = test[i]
        assert x.shape == (3, 64, 64) and x.dtype == torch.float32
        assert 0 <= float(x.min()) and float(x.max()) <= 1
        assert y.shape == (40,)
        assert y.tolist() == [(v + 1) // 2 for v in attrs[name]]


def test_identity_targets(shared_root: Path) -> None:
    ds = celeba(shared_root, "train", target="identity", size=32)
    ids = _table(shared_root, "identity_CelebA.txt", 0)
    names = _split_names(shared_root, 0)
    assert ds.targets == [ids[n][0] for n in names]
    x, y = ds[3]
    assert isinstance(y, int) and y == ids[names[3]][0] and x.shape == (3, 32, 32)


def test_identity_subset_gives_contiguous_labels(shared_root: Path) -> None:
    ds = celeba(shared_root, "all", target="identity")
    top = most_common_identities(ds, 3)
    counts = Counter(ds.targets)
    assert [counts[i] for i in top] == sorted(counts.values(), reverse=True)[:3]
    faces = ClassSubset(ds, top)
    assert sorted(set(faces.targets)) == [0, 1, 2]
    assert faces[0][1] == top.index(ds.targets[int(faces.indices[0])])
    with pytest.raises(AdvTransferError, match="only 5 identities"):
        most_common_identities(ds, 6)


def test_selected_attributes(shared_root: Path) -> None:
    attrs = _table(shared_root, "list_attr_celeba.txt", 2)
    names = _split_names(shared_root, 0)
    pair = celeba(shared_root, attributes=["Smiling", "Male"])
    col = {a: CELEBA_ATTRIBUTES.index(a) for a in ("Smiling", "Male")}
    expected = [(attrs[names[0]][col[a]] + 1) // 2 for a in ("Smiling", "Male")]
    assert pair[0][1].tolist() == expected and pair.classes == ["Smiling", "Male"]
    smiling = celeba(shared_root, attributes="Smiling")
    assert smiling[0][1] == expected[0] and isinstance(smiling[0][1], int)
    assert smiling.targets == [(attrs[n][col["Smiling"]] + 1) // 2 for n in names]
    assert Counter(take(smiling, 10).targets) == {0: 5, 1: 5}


def test_attribute_arguments_are_checked(shared_root: Path) -> None:
    with pytest.raises(AdvTransferError, match="Did you mean Smiling"):
        celeba(shared_root, attributes="Smilling")
    with pytest.raises(AdvTransferError, match="target='attr'"):
        celeba(shared_root, target="identity", attributes="Male")
    with pytest.raises(AdvTransferError, match="target must be one of"):
        celeba(shared_root, target="bbox")
    with pytest.raises(AdvTransferError, match="split must be one of"):
        celeba(shared_root, "val")


def test_missing_directory_lists_files(tmp_path: Path) -> None:
    with pytest.raises(AdvTransferError) as err:
        celeba(tmp_path)
    msg = str(err.value)
    for name in [
        "list_attr_celeba.txt",
        "identity_CelebA.txt",
        "list_eval_partition.txt",
        "list_bbox_celeba.txt",
        "list_landmarks_align_celeba.txt",
        "img_align_celeba/",
    ]:
        assert f"- {name}" in msg
    assert str(tmp_path / "celeba") in msg and "download=True" in msg and "gdown" in msg


def test_missing_image_is_named(root: Path) -> None:
    victim = _split_names(root, 1)[0]
    (root / "celeba" / "img_align_celeba" / victim).unlink()
    with pytest.raises(AdvTransferError, match=f"missing from .*img_align_celeba: {victim}"):
        celeba(root, "valid")
    assert len(celeba(root, "train")) > 0  # other splits are unaffected


@pytest.mark.parametrize(
    ("filename", "mutate", "pattern"),
    [
        (
            "list_attr_celeba.txt",
            lambda t: t.replace(" 1", " x", 1),
            "line 3: 'x' is not an integer",
        ),
        ("list_attr_celeba.txt", lambda t: t.replace(" 1", " 2", 1), "must be -1 or 1"),
        ("identity_CelebA.txt", lambda t: t + "\n", "empty line"),
        ("list_eval_partition.txt", lambda t: t.replace(" 0\n", " 7\n", 1), "partition must"),
        ("list_bbox_celeba.txt", lambda t: t.replace("000002.jpg", "000099.jpg"), "same images"),
        (
            "list_landmarks_align_celeba.txt",
            lambda t: "\n".join(t.splitlines()[:-1]) + "\n",
            "same images",
        ),
    ],
)
def test_malformed_list_file_is_named(root: Path, filename: str, mutate: Any, pattern: str) -> None:
    path = root / "celeba" / filename
    path.write_text(mutate(path.read_text()))
    with pytest.raises(AdvTransferError, match=pattern) as err:
        celeba(root)
    assert filename in str(err.value)


def test_verify_rejects_fixture_files(root: Path) -> None:
    with pytest.raises(AdvTransferError, match=r"checksum .*\.txt does not match"):
        celeba(root, verify=True)


def test_download_failure_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_gdown(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("To download files from GDrive, 'gdown' is required.")

    monkeypatch.setattr(tv_celeba, "download_file_from_google_drive", no_gdown)
    with pytest.raises(AdvTransferError, match="downloading CelebA .* failed.*gdown"):
        celeba(tmp_path, download=True)


def test_fixture_is_readable_by_stock_torchvision(
    shared_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tv_celeba, "check_integrity", lambda *a, **k: True)
    stock = CelebA(str(shared_root), split="valid", target_type=["attr", "identity"])
    ours = celeba(shared_root, "valid")
    image, (attr, identity) = stock[1]
    assert image.size == (178, 218)
    torch.testing.assert_close(attr, ours[1][1])
    assert int(identity) == celeba(shared_root, "valid", target="identity")[1][1]


def test_fixture_images_show_attributes(shared_root: Path) -> None:
    """Eyeglasses darken the eye band of the fixture faces (so attributes are learnable)."""
    ds = celeba(shared_root, "all", attributes="Eyeglasses", size=64)
    band = np.array([float(ds[i][0][:, 30:34, 20:44].mean()) for i in range(len(ds))])
    labels = np.array(ds.targets)
    assert 0 < labels.sum() < len(labels)
    assert band[labels == 1].max() < band[labels == 0].min()


def test_image_names_follow_views_to_the_files(shared_root: Path) -> None:
    test = celeba(shared_root, "test", target="identity", size=16)
    names = _split_names(shared_root, 2)
    assert celeba_image_names(test) == names
    view = Subset(take(test, 3, generator=torch.Generator().manual_seed(0)), [2, 0])
    inner = view.dataset
    expected = [names[int(inner.indices[2])], names[int(inner.indices[0])]]
    assert celeba_image_names(view) == expected
    with pytest.raises(AdvTransferError, match="not a view over a CelebA"):
        celeba_image_names(torch.utils.data.TensorDataset(torch.zeros(2, 1)))


def test_recipe_refuses_target_images_a_source_trained_on(shared_root: Path) -> None:
    from advtransfer.experiments.recipes.celeba import check_disjoint

    train = celeba(shared_root, "train", size=16)
    test = celeba(shared_root, "test", size=16)
    check_disjoint(train, identity=test)  # the official partition: disjoint
    with pytest.raises(AdvTransferError, match=r"2 image\(s\) of the identity set"):
        check_disjoint(train, identity=Subset(celeba(shared_root, "all", size=16), [0, 1, 39]))
