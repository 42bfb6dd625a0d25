"""The memory this machine can give a job, and refusing images that would not fit.

An image read whole (and its results) must fit in memory; a 20,000 x 20,000 mosaic or a
small compressed TIFF that expands to many GiB does not. Such images are refused before
their pixels are read, with :class:`ImageTooLargeError`, whose message points to the
block-by-block path (:func:`~napari_unet.core.blockwise.to_zarr.segment_to_zarr`),
which needs about the memory of one block.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from napari_unet.core.errors import UserError

__all__ = ["BLOCKWISE_ADVICE", "ImageTooLargeError", "available_memory_bytes", "format_bytes", "refuse_if_too_large"]

#: What to do with an image too large for memory.
BLOCKWISE_ADVICE = (
    "segment it block by block into OME-Zarr, which needs about the memory of one block: "
    "give 'napari-unet segment' --block-size 2048 or an output ending in .zarr, open it lazily in "
    "napari, or call segment_to_zarr in Python (see docs/how-to/large-images.md)"
)


class ImageTooLargeError(UserError, MemoryError):
    """An image (with its results) would need more memory than is available; nothing was read."""


def available_memory_bytes() -> int | None:
    """Memory that can be allocated now without swapping, in bytes; None if unknown.

    The system's available memory (``MemAvailable``: free memory plus the
    caches the kernel gives back), capped by the limit of the process's
    control group (a container or a batch job's allocation) where it has one.
    """
    available: int | None = None
    try:
        import psutil

        available = int(psutil.virtual_memory().available)
    except (ImportError, OSError, AttributeError):
        available = _meminfo_available()
    room = _cgroup_room()
    if room is not None:
        available = room if available is None else min(available, room)
    return available


def refuse_if_too_large(needed: int, /, *, what: str, advice: str = BLOCKWISE_ADVICE) -> None:
    """Raise :class:`ImageTooLargeError` if ``needed`` bytes exceed the available memory.

    Parameters
    ----------
    needed : int
        Estimated bytes the work needs.
    what : str
        What needs them, to start the message (e.g. ``"segmenting 'a.tif' whole"``).
    advice : str
        What to do instead.

    Raises
    ------
    ImageTooLargeError
        With the estimate, the memory available and ``advice``. Nothing is
        raised when the available memory is unknown.
    """
    available = available_memory_bytes()
    if available is not None and needed > available:
        raise ImageTooLargeError(
            f"{what} needs about {format_bytes(needed)} of memory and {format_bytes(available)} is available; {advice}"
        )


def format_bytes(n: int, /) -> str:
    """``n`` bytes in KiB, MiB or GiB, e.g. ``"13.4 GiB"``."""
    if n >= 1024**3:
        return f"{n / 1024**3:.1f} GiB"
    return f"{n / 1024**2:.0f} MiB" if n >= 1024**2 else f"{n / 1024:.0f} KiB"


def _meminfo_available() -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None


def _cgroup_room() -> int | None:
    """Limit minus usage of this process's memory control group (v2, then v1); None without a limit.

    The usage counts the page cache; its inactive part, which the kernel gives back, is not counted.
    """
    for folder, limit, usage, inactive in (
        ("/sys/fs/cgroup", "memory.max", "memory.current", "inactive_file"),
        ("/sys/fs/cgroup/memory", "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"),
    ):
        with contextlib.suppress(OSError, ValueError):
            text = (Path(folder) / limit).read_text().strip()
            if text == "max" or int(text) >= 2**60:
                return None
            used = int((Path(folder) / usage).read_text().strip()) - _stat_value(Path(folder) / "memory.stat", inactive)
            return max(0, int(text) - used)
    return None


def _stat_value(path: Path, key: str) -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in path.read_text().splitlines():
            name, value = line.split()
            if name == key:
                return int(value)
    return 0
