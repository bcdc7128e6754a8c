"""One resolve_device for the library (models-aware 'auto') and the command line (a string)."""

import pytest
import torch
from torch import nn

import advtransfer.metrics
from advtransfer.devices import resolve_device
from advtransfer.errors import AdvTransferError

needs_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only case")


def test_auto_is_the_models_device_or_the_machines_default():
    default = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device() == default  # the command line's --device auto
    assert resolve_device(device="auto") == default
    assert resolve_device([nn.ReLU()], "auto") == default  # parameter-free model
    assert resolve_device([nn.Linear(2, 2)], "auto") == torch.device("cpu")
    assert resolve_device([nn.Linear(2, 2)], "cpu") == torch.device("cpu")
    assert resolve_device(device=torch.device("cpu")) == torch.device("cpu")


def test_bad_device_names_are_errors_naming_the_option():
    for bad in ("tpu", "gpu0", ""):
        with pytest.raises(AdvTransferError, match="device must be 'auto'.*--device"):
            resolve_device(device=bad)


@needs_no_cuda
def test_cuda_without_cuda_is_refused_in_the_library_too():
    for asked in ("cuda", "cuda:1"):
        with pytest.raises(AdvTransferError, match="no CUDA device is available"):
            resolve_device(device=asked)
    with pytest.raises(AdvTransferError, match="no CUDA"):
        advtransfer.transferability(nn.Linear(3, 2), nn.Linear(3, 2), torch.rand(4, 3), eps=0.1,
                                    steps=1, device="cuda")


def test_models_elsewhere_or_on_two_devices_are_refused():
    cpu, meta = nn.Linear(2, 2), nn.Linear(2, 2, device="meta")
    with pytest.raises(AdvTransferError, match="different devices"):
        resolve_device([cpu, meta], "auto")
    with pytest.raises(AdvTransferError, match="never moves models"):
        resolve_device([meta], "cpu")


def test_the_metrics_name_is_the_same_function():
    assert advtransfer.metrics.resolve_device is resolve_device
