"""Choosing where to run, how large the tiles are, and surviving out-of-memory."""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import Literal

import torch

from napari_unet.core.network.geometry import round_down
from napari_unet.core.network.unet import UNetConfig

DeviceName = Literal["auto", "cpu", "cuda", "mps"]


class DeviceWarning(UserWarning):
    """A requested accelerator is not usable and the CPU is used instead."""


def mps_available() -> bool:
    """True if Apple's Metal backend can be used."""
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str | torch.device = "auto", /) -> torch.device:
    """Turn ``"auto" | "cpu" | "cuda" | "cuda:N" | "mps"`` into a usable device.

    ``"auto"`` picks CUDA, then MPS, then the CPU. Asking for an accelerator
    that is not there falls back to the CPU with a :class:`DeviceWarning`
    (the job still runs, more slowly).
    """
    text = str(name).lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if text.startswith("cuda"):
        if torch.cuda.is_available():
            return torch.device(text)
        warnings.warn("CUDA was asked for but no CUDA GPU is usable; running on the CPU", DeviceWarning, stacklevel=2)
        return torch.device("cpu")
    if text == "mps":
        if mps_available():
            return torch.device("mps")
        warnings.warn("MPS was asked for but is not available; running on the CPU", DeviceWarning, stacklevel=2)
        return torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or mps")


#: Environment variable that switches mixed precision off on the CPU (``off``/``0``): float32
#: there even where the processor has bfloat16 units (``auto`` or unset: bfloat16 where it has them).
CPU_AMP_VARIABLE = "NAPARI_UNET_CPU_AMP"


def cpu_has_fast_bfloat16() -> bool:
    """True if this processor computes bfloat16 natively (AMX tiles or AVX512-BF16).

    Without those units PyTorch and OpenVINO emulate bfloat16, which is slower
    than float32, so mixed precision is used on the CPU only where this holds.
    """
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    for name in checks:
        check = getattr(cpu, name, None)
        try:
            if check is not None and bool(check()):
                return True
        except (RuntimeError, TypeError):  # pragma: no cover - very old or unusual builds
            continue
    return False


def cpu_amp_allowed() -> bool:
    """False if :data:`CPU_AMP_VARIABLE` switches CPU mixed precision off.

    Raises
    ------
    ValueError
        If the variable holds something other than auto, on, off, 1 or 0.
    """
    text = os.environ.get(CPU_AMP_VARIABLE, "auto").strip().lower() or "auto"
    if text not in ("auto", "on", "1", "off", "0"):
        raise ValueError(f"{CPU_AMP_VARIABLE} must be auto, on, off, 1 or 0, got {text!r}")
    return text not in ("off", "0")


def compute_dtype(device: torch.device, *, amp: bool = True) -> torch.dtype:
    """The precision the network runs in: ``amp`` on a device with fast half precision, else float32.

    CUDA: bfloat16 where supported, else float16. CPU: bfloat16 where the
    processor has bfloat16 units (:func:`cpu_has_fast_bfloat16`) and
    :data:`CPU_AMP_VARIABLE` does not say ``off``. Elsewhere float32.
    Measured on the val sets (docs/performance.md, *Reduced precision on the
    CPU*), CPU bfloat16 changed AP@0.5 by at most 0.004 on the sets with
    hundreds of objects (2 of 38 objects more were matched on the smallest)
    and made Segment 1.8-2.8x faster.
    """
    if not amp:
        return torch.float32
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_amp_allowed() and cpu_has_fast_bfloat16():
        return torch.bfloat16
    return torch.float32


def autocast(device: torch.device, *, enabled: bool = True) -> contextlib.AbstractContextManager:
    """Mixed precision where :func:`compute_dtype` says the device has it; nothing elsewhere."""
    dtype = compute_dtype(device, amp=enabled)
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def is_out_of_memory(exc: BaseException, /) -> bool:
    """True if ``exc`` is an accelerator (or CPU allocator) out-of-memory error.

    The CPU back-end (oneDNN) says ``could not create a primitive`` when it
    cannot allocate the working memory of a convolution: out of memory too.
    """
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    phrases = ("out of memory", "failed to allocate", "can't allocate memory", "could not create a primitive")
    return isinstance(exc, RuntimeError) and any(phrase in text for phrase in phrases)


def free_memory_bytes(device: torch.device, /) -> int:
    """Memory that a job may use on ``device``, in bytes (an estimate)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        # memory torch has cached but holds no tensor in is free for us too;
        # without it the estimate (and the tile size) would shrink after every job
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + max(cached, 0))
    if device.type == "mps":
        try:
            return int(torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory())
        except (AttributeError, RuntimeError):
            return 4 * 1024**3
    try:
        pages = os.sysconf("SC_AVPHYS_PAGES")
        return int(pages * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 4 * 1024**3


def bytes_per_input_pixel(config: UNetConfig, /, *, half: bool = False) -> int:
    """Rough peak activation memory of inference per input pixel.

    The first level dominates: its two feature maps, the skip copy and the
    concatenation in the expanding path hold about six maps of
    ``base_features`` channels at full resolution; deeper levels add a third
    of that (a geometric series over quarter-sized maps of doubled width).
    """
    element = 2 if half else 4
    return int(element * config.base_features * 6 * 1.5) + 4 * config.in_channels + 8 * config.n_classes


def memory_tile_pixels(config: UNetConfig, device: torch.device, /, *, budget_fraction: float = 0.25) -> int:
    """Largest tile (network input pixels) whose activations fit ``budget_fraction`` of free memory."""
    half = device.type == "cuda"
    budget = free_memory_bytes(device) * budget_fraction
    return max(1, int(budget / bytes_per_input_pixel(config, half=half)))


def auto_tile_size(config: UNetConfig, device: torch.device, /, *, budget_fraction: float = 0.25) -> int:
    """Tile side (network input pixels) that fits the device's free memory.

    The CPU gets at most 1024 px tiles (bigger tiles do not run faster there
    and delay the first progress report); GPUs at most 4096 px. On the CPU,
    ``same`` networks get their tiles from
    :func:`~napari_unet.core.inference.tile_choice.choose_cpu_tile` instead,
    which weighs the engine's measured speed.
    """
    side = int(memory_tile_pixels(config, device, budget_fraction=budget_fraction) ** 0.5)
    cap = 1024 if device.type == "cpu" else 4096
    step = config.downsampling
    side = max(step * 4, min(cap, side))
    if device.type != "cpu" and side >= 512:
        # few distinct tile shapes: cuDNN tunes its algorithms once per shape
        side = side // 256 * 256
    return round_down(side, step)


def auto_batch_size(config: UNetConfig, device: torch.device, tile_pixels: int, /) -> int:
    """How many tiles of ``tile_pixels`` to send at once (1 on the CPU)."""
    if device.type == "cpu":
        return 1
    half = device.type == "cuda"
    budget = free_memory_bytes(device) * 0.5
    per_tile = bytes_per_input_pixel(config, half=half) * tile_pixels
    return int(max(1, min(16, budget // max(per_tile, 1))))


def empty_cache(device: torch.device, /) -> None:
    """Release cached accelerator memory after an out-of-memory error."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        with contextlib.suppress(AttributeError, RuntimeError):
            torch.mps.empty_cache()
