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


def test_explicit_thread_counts_and_bad_ones():
    from advtransfer.devices import choose_threads

    assert choose_threads(3) == 3 and choose_threads("2") == 2
    for bad in (0, -1, "0", "many", 1.5, True, None):
        with pytest.raises(AdvTransferError, match=r"--threads.*'auto' or an integer >= 1"):
            choose_threads(bad)  # type: ignore[arg-type]


def test_auto_threads_are_the_free_cores_or_the_users_omp_setting(monkeypatch):
    """auto counts the cores the machine leaves idle over 0.2 s (here a /proc/stat that
    shows half of 4 cores idle, then all of them), and respects OMP_NUM_THREADS."""
    import advtransfer.devices as devices

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(devices.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(devices, "_usable_cores", lambda: 4)
    monkeypatch.setattr(devices.time, "sleep", lambda s: None)
    for idle_share, expected in ((0.5, 2), (1.0, 4), (0.1, 1), (0.0, 1)):
        samples = iter([(0.0, 0.0), (400.0 * idle_share, 400.0)])
        monkeypatch.setattr(devices, "_cpu_times", lambda s=samples: next(s))
        assert devices.choose_threads("auto") == expected, idle_share
    monkeypatch.setattr(devices, "_usable_cores", lambda: 3)  # affinity caps it
    samples = iter([(0.0, 0.0), (400.0, 400.0)])
    monkeypatch.setattr(devices, "_cpu_times", lambda: next(samples))
    assert devices.free_cores() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert devices.choose_threads("auto") == 1


def test_free_cores_reads_this_machine():
    from advtransfer.devices import _cpu_times, _usable_cores, free_cores

    assert 1 <= free_cores(interval=0.05) <= _usable_cores()
    times = _cpu_times()
    assert times is None or 0 <= times[0] <= times[1]
