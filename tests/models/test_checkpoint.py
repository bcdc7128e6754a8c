from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import pytest
import safetensors.torch
import torch
from torch import nn

from advtransfer.errors import AdvTransferError, AdvTransferTypeError
from advtransfer.models import checkpoint
from advtransfer.models.architectures import digits_mlp, lenet, resnet18_cifar
from advtransfer.models.checkpoint import (
    load_factory,
    load_into,
    load_model,
    load_state,
    read_metadata,
    save_model,
)

# --- objects that must never be unpickled ----------------------------------------------------

EXECUTED: list[str] = []


def _record(tag: str) -> str:
    EXECUTED.append(tag)
    return tag


class _Payload:
    """Unpickling this calls ``_record`` - code execution that weights_only must block."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (_record, ("payload executed",))


class _Plain:
    def __init__(self) -> None:
        self.value = 3


# --- helpers ----------------------------------------------------------------------------------


def _trained_resnet(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = resnet18_cifar(10, width=0.125)
    model.train()
    with torch.no_grad():  # update BatchNorm running statistics so buffers matter
        for _ in range(2):
            model(torch.rand(4, 3, 32, 32))
    return model.eval()


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# --- save / load round trips ------------------------------------------------------------------


def test_save_load_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    model = _trained_resnet(0)
    path = save_model(model, tmp_path / "model.safetensors")
    assert path == tmp_path / "model.safetensors"
    other = _trained_resnet(1)
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert not torch.equal(other(x), model(x))
        assert load_into(other, path) is other
        assert torch.equal(other(x), model(x))
    state = load_state(path)
    assert set(state) == set(model.state_dict())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_save_model_and_load_model_from_metadata(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = lenet(7, width=0.5).eval()
    path = tmp_path / "sub" / "lenet.safetensors"  # parent created on demand
    save_model(model, path, architecture="lenet", kwargs={"num_classes": 7, "width": 0.5})
    meta = read_metadata(path)
    assert meta["architecture"] == "lenet"
    assert json.loads(meta["kwargs"]) == {"num_classes": 7, "width": 0.5}
    assert meta["format"] == "pt"
    x = torch.rand(2, 3, 32, 32)
    for loaded in (
        load_model(weights=path),
        load_model("lenet", path, num_classes=7, width=0.5),
        load_model("advtransfer.models.architectures:lenet", path, num_classes=7, width=0.5),
    ):
        with torch.no_grad():
            assert torch.equal(loaded.eval()(x), model(x))
    # Stored kwargs can be overridden; a wrong override no longer fits the weights.
    with pytest.raises(AdvTransferError, match="shape mismatches"):
        load_model(weights=path, num_classes=3)


def test_save_model_handles_tied_weights_and_state_dicts(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    model[1].weight = model[0].weight  # shared storage
    path = save_model(model, tmp_path / "tied.safetensors")
    state = load_state(path)
    assert torch.equal(state["0.weight"], state["1.weight"])
    path2 = save_model({"a": torch.arange(6.0).view(2, 3).T}, tmp_path / "dict.safetensors")
    assert torch.equal(load_state(path2)["a"], torch.arange(6.0).view(2, 3).T)


def test_save_model_argument_errors(tmp_path: Path) -> None:
    model = digits_mlp(hidden=4)
    with pytest.raises(AdvTransferError, match=".safetensors"):
        save_model(model, tmp_path / "model.pt")
    with pytest.raises(AdvTransferError, match="JSON"):
        save_model(model, tmp_path / "m.safetensors", kwargs={"act": nn.ReLU()})
    with pytest.raises(AdvTransferTypeError):
        save_model(model, tmp_path / "m.safetensors", metadata={"a": 1})  # type: ignore[dict-item]
    with pytest.raises(AdvTransferTypeError):
        save_model([torch.zeros(1)], tmp_path / "m.safetensors")  # type: ignore[arg-type]
    with pytest.raises(AdvTransferTypeError):
        save_model(model, 123)  # type: ignore[arg-type]
    assert _files(tmp_path) == []


# --- atomic writing ---------------------------------------------------------------------------


def test_atomic_write_leaves_no_temporary_files(tmp_path: Path) -> None:
    model = digits_mlp(hidden=4)
    save_model(model, tmp_path / "m.safetensors")
    save_model(model, tmp_path / "m.safetensors")  # overwrite
    assert _files(tmp_path) == ["m.safetensors"]
    if os.name == "posix":
        assert (tmp_path / "m.safetensors").stat().st_mode & 0o777 == 0o644


def test_failed_write_keeps_existing_file_and_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "m.safetensors"
    save_model(digits_mlp(hidden=4), path)
    before = path.read_bytes()
    written: list[str] = []

    def failing_save(tensors: object, filename: str, metadata: object = None) -> None:
        written.append(filename)
        Path(filename).write_bytes(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_model(digits_mlp(hidden=8), path)
    assert written and Path(written[0]).parent == tmp_path  # temp file in the same directory
    assert Path(written[0]) != path
    assert path.read_bytes() == before
    assert _files(tmp_path) == ["m.safetensors"]

    # A failing first write leaves nothing behind.
    with pytest.raises(OSError):
        save_model(digits_mlp(hidden=8), tmp_path / "new.safetensors")
    assert _files(tmp_path) == ["m.safetensors"]


def test_write_is_fsynced_before_replace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync")
        real_fsync(fd)

    def replace(src: object, dst: object) -> None:
        events.append("replace")
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(checkpoint.os, "fsync", fsync)
    monkeypatch.setattr(checkpoint.os, "replace", replace)
    save_model(digits_mlp(hidden=4), tmp_path / "m.safetensors")
    assert "replace" in events and events.index("fsync") < events.index("replace")


# --- pickled checkpoints ----------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin"])
def test_load_state_reads_pickled_state_dicts(tmp_path: Path, suffix: str) -> None:
    model = digits_mlp(hidden=4)
    path = tmp_path / f"m{suffix}"
    torch.save(model.state_dict(), path)
    state = load_state(path)
    assert set(state) == set(model.state_dict())
    other = digits_mlp(hidden=4)
    load_into(other, path)
    x = torch.rand(2, 64)
    assert torch.equal(other(x), model(x))


def test_load_state_unwraps_nested_state_dict(tmp_path: Path) -> None:
    model = digits_mlp(hidden=4)
    path = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, "state_dict": model.state_dict(), "lr": 0.1}, path)
    assert set(load_state(path)) == set(model.state_dict())


def test_pickle_with_code_execution_is_refused(tmp_path: Path) -> None:
    EXECUTED.clear()
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(2), "payload": _Payload()}, path)
    with pytest.raises(AdvTransferError, match="refused"):
        load_state(path)
    assert EXECUTED == []  # the payload never ran
    # Plain unpickling would have executed it (this is what weights_only prevents).
    torch.load(path, weights_only=False)
    assert EXECUTED == ["payload executed"]
    EXECUTED.clear()


def test_pickle_with_custom_class_instance_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "obj.pth"
    torch.save({"weight": torch.zeros(2), "obj": _Plain()}, path)
    with pytest.raises(AdvTransferError, match="refused to load.*references .*_Plain"):
        load_state(path)
    with pytest.raises(AdvTransferError):
        load_into(digits_mlp(hidden=4), path)


def test_load_state_errors(tmp_path: Path) -> None:
    with pytest.raises(AdvTransferError, match="not found"):
        load_state(tmp_path / "missing.safetensors")
    with pytest.raises(AdvTransferError, match="not a file"):
        load_state(tmp_path)
    bad_suffix = tmp_path / "w.npz"
    bad_suffix.write_bytes(b"x")
    with pytest.raises(AdvTransferError, match=r"\.safetensors, \.pt, \.pth"):
        load_state(bad_suffix)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00\x01not a safetensors file")
    with pytest.raises(AdvTransferError, match="cannot read"):
        load_state(corrupt)
    corrupt_pt = tmp_path / "corrupt.pt"
    corrupt_pt.write_bytes(b"garbage")
    with pytest.raises(AdvTransferError):
        load_state(corrupt_pt)
    not_state = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], not_state)
    with pytest.raises(AdvTransferError, match="state dict"):
        load_state(not_state)


# --- load_into --------------------------------------------------------------------------------


def test_load_into_reports_missing_unexpected_and_mismatched(tmp_path: Path) -> None:
    source = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    path = save_model(source, tmp_path / "s.safetensors")

    target = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2), nn.Linear(2, 2))
    with pytest.raises(AdvTransferError, match=r"missing keys \(2\): 2\.weight, 2\.bias"):
        load_into(target, path)

    smaller = nn.Sequential(nn.Linear(3, 4))
    with pytest.raises(AdvTransferError, match=r"unexpected keys \(2\): 1\.bias, 1\.weight"):
        load_into(smaller, path)

    wrong = nn.Sequential(nn.Linear(3, 5), nn.Linear(5, 2))
    with pytest.raises(AdvTransferError, match=r"0\.weight: file \(4, 3\) vs model \(5, 3\)"):
        load_into(wrong, path)
    with pytest.raises(AdvTransferError, match="shape mismatches"):
        load_into(wrong, path, strict=False)  # shapes must always match


def test_load_into_non_strict_warns_and_loads_matching_keys(tmp_path: Path) -> None:
    source = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    path = save_model(source, tmp_path / "s.safetensors")
    target = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2), nn.Linear(2, 2))
    with pytest.warns(UserWarning, match="missing keys"):
        load_into(target, path, strict=False)
    assert torch.equal(target[0].weight, source[0].weight)
    assert torch.equal(target[1].bias, source[1].bias)


# --- factories --------------------------------------------------------------------------------


def test_load_factory_success_and_dotted_attributes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    factory = load_factory("advtransfer.models.architectures:lenet")
    assert factory.__name__ == "lenet"
    assert isinstance(factory(num_classes=3, width=0.5), nn.Module)

    module = tmp_path / "advtransfer_test_factories.py"
    module.write_text(
        textwrap.dedent(
            """
            from torch import nn

            class Zoo:
                @staticmethod
                def make(k=2):
                    return nn.Linear(3, k)

            def not_a_model():
                return 42

            CONSTANT = 5
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "advtransfer_test_factories", raising=False)
    made = load_factory("advtransfer_test_factories:Zoo.make")(k=4)
    assert isinstance(made, nn.Linear) and made.out_features == 4
    with pytest.raises(AdvTransferTypeError, match="must return an nn.Module, returned int"):
        load_factory("advtransfer_test_factories:not_a_model")()
    with pytest.raises(AdvTransferTypeError, match="not callable"):
        load_factory("advtransfer_test_factories:CONSTANT")
    with pytest.raises(AdvTransferError, match="has no attribute 'nope'"):
        load_factory("advtransfer_test_factories:Zoo.nope")


@pytest.mark.parametrize(
    "spec", ["lenet", ":lenet", "advtransfer.models:", "a:b:c", "mod:1bad", "bad-mod:f", "m:a..b"]
)
def test_load_factory_bad_format(spec: str) -> None:
    with pytest.raises(AdvTransferError, match="package.module:factory"):
        load_factory(spec)


def test_load_factory_missing_module_or_attribute() -> None:
    with pytest.raises(AdvTransferError, match="cannot import module 'advtransfer_no_such_mod'"):
        load_factory("advtransfer_no_such_mod:make")
    with pytest.raises(AdvTransferError, match="no attribute 'no_such_builder'"):
        load_factory("advtransfer.models.architectures:no_such_builder")
    with pytest.raises(AdvTransferTypeError):
        load_factory(None)  # type: ignore[arg-type]
    with pytest.raises(AdvTransferTypeError, match="returned Tensor"):
        load_factory("torch:zeros")(2)


def test_load_model_errors(tmp_path: Path) -> None:
    with pytest.raises(AdvTransferError, match="needs spec"):
        load_model()
    with pytest.raises(AdvTransferError, match="lenet"):
        load_model("lenett", num_classes=3)
    path = save_model(digits_mlp(hidden=4), tmp_path / "plain.safetensors")
    with pytest.raises(AdvTransferError, match="no 'architecture' metadata"):
        load_model(weights=path)
    with pytest.raises(AdvTransferError, match="missing keys"):
        load_model("fc", path, in_shape=64, num_classes=10, hidden=(4, 4, 4))
