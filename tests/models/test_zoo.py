from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from advtransfer.errors import AdvTransferError, AdvTransferTypeError
from advtransfer.models import zoo
from advtransfer.models.checkpoint import save_model
from advtransfer.models.zoo import cache_dir, from_name, weight_candidates

from .conftest import FakeTimm, state_equal


def test_random_torchvision_model() -> None:
    model = from_name("resnet18", weights="random")
    assert isinstance(model, torchvision.models.ResNet)
    assert model.fc.out_features == 1000
    small = from_name("resnet18", weights="random", num_classes=10).eval()
    with torch.no_grad():
        assert small(torch.rand(2, 3, 64, 64)).shape == (2, 10)


def test_missing_weights_error_names_searched_paths(_isolated_home: Path) -> None:
    with pytest.raises(AdvTransferError) as info:
        from_name("resnet18")
    message = str(info.value)
    expected_dir = _isolated_home / "weights"
    for suffix in (".safetensors", ".pth", ".pt"):
        assert str(expected_dir / f"resnet18{suffix}") in message
    assert "weights=" in message and "'random'" in message and "never downloads" in message


def test_default_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("ADVTRANSFER_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "advtransfer" / "weights"
    assert weight_candidates("timm:vit_tiny")[0] == (
        tmp_path / ".cache" / "advtransfer" / "weights" / "timm" / "vit_tiny.safetensors"
    )


@pytest.mark.parametrize("kind", ["safetensors", "pth"])
def test_weights_from_cache_directory(kind: str) -> None:
    torch.manual_seed(0)
    source = from_name("squeezenet1_1", weights="random", num_classes=5)
    target = cache_dir() / f"squeezenet1_1.{kind}"
    target.parent.mkdir(parents=True)
    if kind == "safetensors":
        save_model(source, target)
    else:
        torch.save(source.state_dict(), target)
    loaded = from_name("squeezenet1_1", num_classes=5)
    assert state_equal(loaded, source)


def test_weights_from_explicit_path(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = from_name("squeezenet1_1", weights="random", num_classes=3)
    path = save_model(source, tmp_path / "w.safetensors")
    assert state_equal(from_name("squeezenet1_1", weights=path, num_classes=3), source)
    assert state_equal(from_name("squeezenet1_1", weights=str(path), num_classes=3), source)
    # Weights for 3 classes do not fit the default 1000-class model: clear shape error.
    with pytest.raises(AdvTransferError, match="shape mismatches"):
        from_name("squeezenet1_1", weights=path)
    with pytest.raises(AdvTransferError, match="not found"):
        from_name("squeezenet1_1", weights=tmp_path / "missing.pth")


def test_unknown_name_lists_close_matches() -> None:
    with pytest.raises(AdvTransferError, match="resnet18") as info:
        from_name("resnet19", weights="random")
    assert "unknown model name" in str(info.value)
    # The name is checked before the weights are looked up.
    with pytest.raises(AdvTransferError, match="unknown model name"):
        from_name("resnet19")


def test_argument_type_errors() -> None:
    with pytest.raises(AdvTransferTypeError):
        from_name("resnet18", weights=3)  # type: ignore[arg-type]
    with pytest.raises(AdvTransferTypeError):
        from_name("resnet18", weights="random", num_classes=0)
    with pytest.raises(AdvTransferTypeError):
        from_name("", weights="random")


def test_pretrained_backbones_are_never_requested() -> None:
    kwargs = zoo._torchvision_kwargs("fasterrcnn_resnet50_fpn", None)
    assert kwargs["weights"] is None and kwargs["weights_backbone"] is None
    assert zoo._torchvision_kwargs("resnet18", 10) == {"weights": None, "num_classes": 10}


def test_timm_missing_gives_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # makes `import timm` raise ImportError
    with pytest.raises(AdvTransferError, match=r"pip install 'advtransfer\[timm\]'"):
        from_name("timm:resnet18", weights="random")




def test_timm_models_via_optional_import(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeTimm(("tiny_net", "resnet50"))
    monkeypatch.setitem(sys.modules, "timm", fake)
    model = from_name("timm:tiny_net", weights="random", num_classes=3)
    assert isinstance(model, nn.Linear) and model.out_features == 3
    assert fake.calls == [("tiny_net", {"pretrained": False, "num_classes": 3})]

    # Weights from the cache's timm/ subdirectory.
    target = cache_dir() / "timm" / "tiny_net.safetensors"
    target.parent.mkdir(parents=True)
    save_model(model, target)
    assert state_equal(from_name("timm:tiny_net", num_classes=3), model)

    with pytest.raises(AdvTransferError, match="timm:tiny_net"):
        from_name("timm:tiny_nett", weights="random")
    with pytest.raises(AdvTransferError, match="hf-hub"):
        from_name("timm:hf-hub:org/model", weights="random")
    assert len(fake.calls) == 2  # the rejected names never reached create_model


@pytest.mark.parametrize("name", ["googlenet", "inception_v3"])
def test_tf_ported_models_get_transform_input_with_weights(name: str) -> None:
    # torchvision's googlenet/inception_v3 builders set transform_input=True (and
    # init_weights=False) whenever pretrained weights are given: the weights were ported from
    # TensorFlow and expect inputs in [-1, 1]. Issue 8 item 12: from_name built them with
    # transform_input=False and then loaded those weights.
    kwargs = zoo._torchvision_kwargs(name, None, pretrained=True)
    assert kwargs["transform_input"] is True and kwargs["init_weights"] is False
    assert "transform_input" not in zoo._torchvision_kwargs(name, None)  # random: defaults
    assert zoo._torchvision_kwargs(name, None, pretrained=True,
                                   transform_input=False)["transform_input"] is False
    model = torchvision.models.get_model(name, **kwargs)
    assert model.transform_input is True


@pytest.mark.filterwarnings("ignore:The default weight initialization of GoogleNet")
def test_googlenet_loaded_from_a_file_transforms_its_input(tmp_path: Path) -> None:
    torch.manual_seed(0)
    reference = torchvision.models.GoogLeNet(transform_input=True, aux_logits=True,
                                             init_weights=True).eval()
    path = tmp_path / "googlenet.safetensors"
    save_model(reference, path)
    model = from_name("googlenet", weights=path).eval()
    assert model.transform_input is True
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))
    assert from_name("googlenet", weights=path, transform_input=False).transform_input is False
    assert from_name("googlenet", weights="random").transform_input is False
    with pytest.raises(AdvTransferError, match="transform_input applies"):
        from_name("resnet18", weights="random", transform_input=True)
