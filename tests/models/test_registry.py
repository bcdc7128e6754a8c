"""advtransfer.models.create / list_models: one registry for the command line and Python."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn
from typer.testing import CliRunner

import advtransfer.models
from advtransfer.cli import app
from advtransfer.errors import AdvTransferError
from advtransfer.models import create, list_models
from advtransfer.models.architectures import ARCHITECTURES, digits_cnn, fc_net, lenet
from advtransfer.models.checkpoint import save_model
from advtransfer.models.registry import resolve_spec
from advtransfer.selection import load_candidate

from .conftest import FakeTimm, state_equal

runner = CliRunner()


def _seeded(seed: int, build: Any) -> nn.Module:
    torch.manual_seed(seed)
    return build()




def test_each_prefix_builds_from_its_own_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    assert advtransfer.models.create is create
    # builtin: the digits linear classifier, seeded, untrained with 'random'
    linear = create("builtin:digits-linear", "random", seed=3)
    assert state_equal(linear, _seeded(3, lambda: fc_net(64, 10, hidden=())))
    assert state_equal(create("digits-linear", "random", seed=3), linear)  # unprefixed
    # cifar: the library's builder with num_classes and builder keywords
    net = create("cifar:lenet", "random", num_classes=7, seed=1, width=0.5)
    assert state_equal(net, _seeded(1, lambda: lenet(7, width=0.5)))
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 7)
    # tv: torchvision's model (a different class from the CIFAR one of the same name)
    tv = create("tv:squeezenet1_1", "random", num_classes=5)
    assert isinstance(tv, torchvision.models.SqueezeNet)
    assert tv(torch.rand(1, 3, 64, 64)).shape == (1, 5)
    assert type(create("tv:resnet18", "random")).__module__.startswith("torchvision")
    assert type(create("cifar:resnet18", "random", num_classes=10, width=0.125)
                ).__module__.startswith("advtransfer")
    # timm: the optional package, asked for num_classes and never for pretrained weights
    fake = FakeTimm()
    monkeypatch.setitem(sys.modules, "timm", fake)
    small = create("timm:tiny_net", "random", num_classes=3)
    assert isinstance(small, nn.Linear) and small.out_features == 3
    assert fake.calls == [("tiny_net", {"pretrained": False, "num_classes": 3})]
    # every model comes back in eval mode
    assert not any(m.training for m in (linear, net, tv, small))


def test_names_in_two_namespaces_need_a_prefix() -> None:
    both = set(ARCHITECTURES) & set(torchvision.models.list_models())
    assert {"alexnet", "resnet18", "resnet50"} <= both
    for name in sorted(both):
        with pytest.raises(AdvTransferError, match=f"cifar:{name} or tv:{name}"):
            create(name, "random")
    # unambiguous unprefixed names keep working (backward compatibility)
    assert resolve_spec("lenet") == ("cifar", "lenet")
    assert resolve_spec("resnet101") == ("tv", "resnet101")
    assert resolve_spec("digits-cnn") == ("builtin", "digits-cnn")  # builtin before cifar
    assert resolve_spec("torchvision.models:resnet18") == ("module", "torchvision.models:resnet18")
    with pytest.raises(AdvTransferError, match="Close matches: cifar:resnet18"):
        resolve_spec("cifar:resnet19")
    with pytest.raises(AdvTransferError, match="unknown model name 'tv:lenet'"):
        resolve_spec("tv:lenet")
    with pytest.raises(AdvTransferError, match="unknown model name"):
        create("builtin:")


def test_num_classes_reaches_the_builder(tmp_path: Path) -> None:
    # the CIFAR ResNet-18 with 10 classes loads weights saved from resnet18_cifar(10)
    source = _seeded(0, lambda: ARCHITECTURES["resnet18"](10, width=0.125))
    path = tmp_path / "ref.safetensors"
    save_model(source, path)
    loaded = create("cifar:resnet18", path, num_classes=10, width=0.125)
    assert state_equal(loaded, source)
    with pytest.raises(AdvTransferError, match="num_classes"):
        create("cifar:resnet18", path, width=0.125)  # resnet18_cifar has no default
    assert create("tv:squeezenet1_1", "random", num_classes=4)(
        torch.rand(1, 3, 64, 64)).shape == (1, 4)
    with pytest.raises(AdvTransferError, match="num_classes must be 10 or None"):
        create("builtin:digits-cnn", "random", num_classes=3)
    assert create("builtin:digits-cnn", "random", num_classes=10) is not None
    with pytest.raises(AdvTransferError, match="num_classes must be a positive int"):
        create("cifar:lenet", "random", num_classes=0)


def test_module_factory_resolves_from_the_current_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "advt_cwd_nets"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text(
        "from torch import nn\n\n\n"
        "def make_net(num_classes=10):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))\n")
    monkeypatch.chdir(tmp_path)
    # as under a console script: neither the directory nor '' is on the import path
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    try:
        net = create("advt_cwd_nets.models:make_net", num_classes=4)
        assert net(torch.rand(2, 1, 8, 8)).shape == (2, 4)
        assert str(tmp_path) not in sys.path  # the import path is restored
        result = runner.invoke(app, ["measure", "--quiet", "--n-samples", "4", "--steps", "1",
                                     "--source", "advt_cwd_nets.models:make_net",
                                     "--source-num-classes", "10", "--target",
                                     "builtin:digits-linear", "--target-weights", "random"])
        assert result.exit_code == 0, result.output
    finally:
        for name in ("advt_cwd_nets.models", "advt_cwd_nets"):
            sys.modules.pop(name, None)


def test_digits_linear_works_in_python(tmp_path: Path) -> None:
    model = _seeded(5, lambda: fc_net(64, 10, hidden=()))
    path = tmp_path / "linear.safetensors"
    save_model(model, path)
    assert state_equal(load_candidate("digits-linear", path), model)
    assert state_equal(create("builtin:digits-linear", str(path)), model)
    # without weights the built-in model is trained now, as on the command line
    cnn = _seeded(0, lambda: digits_cnn(10, width=16))
    trained = create("builtin:digits-cnn", seed=0)
    assert not state_equal(trained, cnn)


def test_list_models_names_every_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # timm not installed
    assert list_models("builtin") == ["builtin:digits-cnn", "builtin:digits-linear",
                                      "builtin:digits-mlp"]
    cifar = list_models("cifar:")
    assert {"cifar:fc-liang", "cifar:alexnet-liang", "cifar:resnet18", "cifar:lenet"} <= set(cifar)
    assert len(cifar) == len(ARCHITECTURES)
    everything = list_models()
    classifiers = torchvision.models.list_models(module=torchvision.models)
    assert {f"tv:{n}" for n in classifiers} <= set(everything)
    # detection, segmentation, optical flow and video models return no class scores
    assert not {"tv:fasterrcnn_resnet50_fpn", "tv:fcn_resnet50", "tv:raft_small",
                "tv:r3d_18"} & set(everything)
    with pytest.raises(AdvTransferError, match="classification models"):
        resolve_spec("tv:fcn_resnet50")
    assert not any(s.startswith("timm:") for s in everything)
    assert set(everything) == (set(cifar) | set(list_models("builtin")) | set(list_models("tv"))
                               | set(list_models("text")) | set(list_models("digits")))
    for spec in everything:
        assert resolve_spec(spec) == tuple(spec.split(":", 1))
    monkeypatch.setitem(sys.modules, "timm", FakeTimm())
    assert list_models("timm") == ["timm:tiny_net"]
    with pytest.raises(AdvTransferError, match="prefix must be one of"):
        list_models("torchvision")


class _FakeDownload:
    """Stands in for torch.hub.download_url_to_file: records the request and writes a
    state dict of a seeded squeezenet1_1 where the real one would."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str | None]] = []
        self.model = _seeded(7, lambda: torchvision.models.squeezenet1_1())

    def __call__(self, url: str, dst: str, hash_prefix: str | None = None,
                 progress: bool = True) -> None:
        self.calls.append((url, dst, hash_prefix))
        torch.save(self.model.state_dict(), dst)


def _no_fetch(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("nothing may be fetched")


def test_download_is_opt_in_hash_checked_and_cached(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _isolated_home: Path) -> None:
    fake = _FakeDownload()
    monkeypatch.setattr(torch.hub, "download_url_to_file", fake)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _no_fetch)
    with pytest.raises(AdvTransferError, match="no local weights"):
        create("tv:squeezenet1_1")
    assert fake.calls == []
    with pytest.raises(AdvTransferError, match="1000 classes"):
        create("tv:squeezenet1_1", num_classes=5, download=True)
    assert fake.calls == []
    model = create("tv:squeezenet1_1", download=True)
    url = "https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth"  # torchvision 0.29
    published = torchvision.models.get_model_weights("squeezenet1_1").DEFAULT.url
    assert published == url
    target = _isolated_home / "weights" / "squeezenet1_1.pth"
    assert fake.calls == [(url, str(target), "b8a52dc0")]
    assert state_equal(model, fake.model)
    assert state_equal(create("tv:squeezenet1_1", download=True), fake.model)  # cached
    assert state_equal(create("tv:squeezenet1_1"), fake.model)
    assert len(fake.calls) == 1
    monkeypatch.setitem(sys.modules, "timm", FakeTimm())
    with pytest.raises(AdvTransferError, match="not supported for timm"):
        create("timm:tiny_net", download=True)


def test_download_flag_on_the_command_line(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeDownload()
    monkeypatch.setattr(torch.hub, "download_url_to_file", fake)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _no_fetch)
    data = tmp_path / "x.safetensors"
    save_file({"x": torch.rand(2, 3, 64, 64)}, str(data))
    args = ["measure", "--quiet", "--n-samples", "2", "--steps", "1", "--data", str(data),
            "--bounds", "none", "--source", "tv:squeezenet1_1", "--target", "tv:squeezenet1_1",
            "--target-weights", "random"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and "no local weights" in result.output
    assert fake.calls == []
    result = runner.invoke(app, [*args, "--download"])
    assert result.exit_code == 0, result.output
    assert [Path(dst).name for _, dst, _ in fake.calls] == ["squeezenet1_1.pth"]
    assert re.search(r"alpha1", result.output)


def test_num_classes_option_of_matrix_and_rank(tmp_path: Path) -> None:
    data = tmp_path / "x.safetensors"
    save_file({"x": torch.rand(4, 3, 32, 32), "y": torch.tensor([0, 1, 2, 0])}, str(data))
    out = tmp_path / "m.json"
    common = ["--quiet", "--n-samples", "4", "--steps", "1", "--data", str(data)]
    models = ["cifar:lenet=random", "cifar:fc-liang=random"]
    # lenet has no default number of classes: without --num-classes a runtime error names it
    result = runner.invoke(app, ["matrix", *models, *common])
    assert result.exit_code == 1 and "num_classes" in result.output
    result = runner.invoke(app, ["matrix", *models, *common, "--num-classes", "3",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["names"] == ["cifar:lenet", "cifar:fc-liang"]
    result = runner.invoke(app, ["rank", "--reference", "cifar:lenet=random", "-c",
                                 "cifar:fc-liang=random", "--methods", "alpha1,logme",
                                 "--attack-samples", "4", *common, "--num-classes", "3"])
    assert result.exit_code == 0, result.output


def test_models_command_lists_the_specs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)
    result = runner.invoke(app, ["models", "builtin"])
    assert result.exit_code == 0
    assert result.output.split() == ["builtin:digits-cnn", "builtin:digits-linear",
                                     "builtin:digits-mlp"]
    listed = runner.invoke(app, ["models"]).stdout.split()  # stderr: timm is missing
    assert {"cifar:fc-liang", "cifar:alexnet-liang", "tv:resnet101"} <= set(listed)
    assert listed == list_models()
    result = runner.invoke(app, ["models", "torchvision"])
    assert result.exit_code == 2 and "prefix must be one of" in result.output
    assert "<bool>" not in runner.invoke(app, ["models", "--help"]).output


def test_rank_checks_every_spec_before_loading() -> None:
    result = runner.invoke(app, ["rank", "--reference", "x=", "-c", "digits-mlp"])
    assert result.exit_code == 2 and "--reference must be SPEC or SPEC=WEIGHTS" in result.output
    result = runner.invoke(app, ["rank", "--reference", "digits-cnn", "-c", "resnet50"])
    assert result.exit_code == 2 and "cifar:resnet50 or tv:resnet50" in result.output


def test_a_download_without_network_is_one_clear_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _isolated_home: Path) -> None:
    """No network: the CLI prints one error line naming the URL and what to do (exit 1), no
    traceback, and nothing is left in the cache."""
    import urllib.error

    def offline(url: str, dst: str, hash_prefix: str | None = None,
                progress: bool = True) -> None:
        raise urllib.error.URLError(OSError(101, "Network is unreachable"))

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    data = tmp_path / "x.safetensors"
    save_file({"x": torch.rand(2, 3, 64, 64)}, str(data))
    result = runner.invoke(app, ["measure", "--quiet", "--n-samples", "2", "--data", str(data),
                                 "--source", "tv:squeezenet1_1", "--target", "tv:squeezenet1_1",
                                 "--target-weights", "random", "--download",
                                 "--threads", "1"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) <= 3
    assert re.search(r"downloading torchvision's weights for 'tv:squeezenet1_1' from "
                     r"https://\S+squeezenet1_1-b8a52dc0\.pth failed \(URLError: .*unreachable",
                     " ".join(result.output.split()))
    assert not list((_isolated_home / "weights").glob("*.pth"))


def test_the_digits_namespace_builds_its_patterns_and_names_them_when_refused() -> None:
    """digits:mlpW / mlpWxD / cnnW / linear / lenet: the model-selection recipes' pools."""
    from advtransfer.models.digits import UpsampledLeNet

    x = torch.rand(5, 64)
    for name, classes, hidden in (("mlp32", 4, [32, 32]), ("mlp16x3", 3, [16, 16, 16]),
                                  ("linear", 2, [])):
        model = create(f"digits:{name}", "random", num_classes=classes)
        assert model(x).shape == (5, classes)
        linears = [m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)]
        assert linears == [*hidden, classes], name
    assert create("digits:cnn8", "random", 10)(x.reshape(5, 1, 8, 8)).shape == (5, 10)
    assert isinstance(create("digits:lenet", "random", 3), UpsampledLeNet)
    for bad in ("mlp0", "mlp", "cnn16x2", "resnet18"):
        with pytest.raises(AdvTransferError, match="unknown digits model name.*mlpWxD"):
            create(f"digits:{bad}", "random")
    with pytest.raises(AdvTransferError, match="needs the path of its trained weights, or "
                                               "'random'"):
        create("digits:mlp32")
    with pytest.raises(AdvTransferError, match="unknown model name 'mlp32'"):
        create("mlp32", "random")  # always prefixed
    assert "digits:mlp32" in list_models("digits")
