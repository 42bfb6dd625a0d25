"""Choosing the device, recognising out-of-memory errors, sizing tiles from free memory."""

from __future__ import annotations

import warnings

import pytest
import torch

from napari_unet.core.inference import device as device_module
from napari_unet.core.inference.device import (
    DeviceWarning,
    auto_batch_size,
    auto_tile_size,
    bytes_per_input_pixel,
    is_out_of_memory,
    resolve_device,
)
from napari_unet.core.network.unet import MAX_WIDEST_FEATURES, UNetConfig

needs_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback on machines without CUDA")


def test_cpu_is_the_cpu():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_device("cpu") == torch.device("cpu")


def test_device_names_are_case_insensitive():
    assert resolve_device("CPU") == torch.device("cpu")


def test_a_torch_device_is_accepted():
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_auto_picks_what_is_there():
    expected = "cuda" if torch.cuda.is_available() else ("mps" if device_module.mps_available() else "cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # auto never warns
        assert resolve_device("auto").type == expected


def test_auto_without_accelerators_is_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_module, "mps_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_cuda_without_cuda_warns_and_falls_back_to_the_cpu(monkeypatch, name):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(DeviceWarning, match="running on the CPU"):
        assert resolve_device(name) == torch.device("cpu")


@needs_no_cuda
def test_cuda_on_this_machine_warns_and_falls_back_to_the_cpu():
    with pytest.warns(DeviceWarning):
        assert resolve_device("cuda") == torch.device("cpu")


def test_mps_without_mps_warns_and_falls_back_to_the_cpu(monkeypatch):
    monkeypatch.setattr(device_module, "mps_available", lambda: False)
    with pytest.warns(DeviceWarning, match="MPS"):
        assert resolve_device("mps") == torch.device("cpu")


@pytest.mark.parametrize("name", ["tpu", "gpu", "", "cpu:0x"])
def test_unknown_device_names_are_refused(name):
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device(name)


# --- out of memory ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [
        torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        MemoryError(),
        RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB"),
        RuntimeError("MPS backend out of memory (MPS allocated: 1.00 GB)"),
        RuntimeError("HIP out of memory"),
        RuntimeError("Failed to allocate memory for the tensor"),
        RuntimeError("could not create a primitive"),  # oneDNN (CPU) without memory for a convolution
    ],
    ids=["torch-oom", "MemoryError", "cuda-text", "mps-text", "hip-text", "failed-to-allocate", "onednn-primitive"],
)
def test_out_of_memory_errors_are_recognised(exc):
    assert is_out_of_memory(exc)


@pytest.mark.parametrize(
    "exc",
    [
        RuntimeError("Expected all tensors to be on the same device"),
        ValueError("out of memory"),  # not an allocator error type
        KeyError("memory"),
        OSError(28, "No space left on device"),
        KeyboardInterrupt(),
    ],
    ids=["other-runtime", "valueerror", "keyerror", "disk-full", "ctrl-c"],
)
def test_other_errors_are_not_out_of_memory(exc):
    assert not is_out_of_memory(exc)


def test_the_cpu_allocator_failure_is_out_of_memory():
    # the exact error PyTorch raises when the CPU allocator fails
    with pytest.raises(RuntimeError) as info:
        torch.empty(2**50, dtype=torch.uint8)
    assert is_out_of_memory(info.value), str(info.value)


# --- tile and batch sizes --------------------------------------------------------------------


@pytest.mark.parametrize("depth", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("free", [0, 10**6, 10**9, 10**12])
@pytest.mark.parametrize("kind", ["cpu", "cuda"])
def test_auto_tile_size_is_on_the_pooling_grid_and_within_caps(monkeypatch, depth, free, kind):
    monkeypatch.setattr(device_module, "free_memory_bytes", lambda device: free)
    config = UNetConfig(depth=depth, base_features=min(32, MAX_WIDEST_FEATURES >> (depth - 1)))
    side = auto_tile_size(config, torch.device(kind))
    step = config.downsampling
    assert side % step == 0
    assert side >= 4 * step
    assert side <= max(1024 if kind == "cpu" else 4096, 4 * step)


def test_auto_tile_size_caps_the_cpu_at_1024_and_gpus_at_4096(monkeypatch):
    monkeypatch.setattr(device_module, "free_memory_bytes", lambda device: 10**15)
    config = UNetConfig(depth=4, base_features=8)
    assert auto_tile_size(config, torch.device("cpu")) == 1024
    assert auto_tile_size(config, torch.device("cuda")) == 4096


def test_auto_tile_size_grows_with_free_memory(monkeypatch):
    config = UNetConfig(depth=4, base_features=32)
    sizes = []
    for free in (10**7, 10**8, 10**9):
        monkeypatch.setattr(device_module, "free_memory_bytes", lambda device, free=free: free)
        sizes.append(auto_tile_size(config, torch.device("cuda")))
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]


def test_auto_tile_size_fits_the_memory_budget(monkeypatch):
    free = 2 * 1024**3
    monkeypatch.setattr(device_module, "free_memory_bytes", lambda device: free)
    config = UNetConfig(depth=5, base_features=64)
    side = auto_tile_size(config, torch.device("cuda"))
    assert side * side * bytes_per_input_pixel(config, half=True) <= 0.25 * free


def test_auto_tile_size_on_this_cpu_is_usable():
    config = UNetConfig(depth=4, base_features=32)
    side = auto_tile_size(config, torch.device("cpu"))
    assert 64 <= side <= 1024 and side % 8 == 0


def test_auto_batch_size_is_one_on_the_cpu():
    assert auto_batch_size(UNetConfig(), torch.device("cpu"), 512 * 512) == 1


def test_auto_batch_size_on_a_gpu_is_between_1_and_16(monkeypatch):
    config = UNetConfig(depth=4, base_features=32)
    for free in (0, 10**9, 10**13):
        monkeypatch.setattr(device_module, "free_memory_bytes", lambda device, free=free: free)
        assert 1 <= auto_batch_size(config, torch.device("cuda"), 256 * 256) <= 16


def test_half_precision_needs_less_memory_per_pixel():
    config = UNetConfig(base_features=32)
    assert bytes_per_input_pixel(config, half=True) < bytes_per_input_pixel(config)
