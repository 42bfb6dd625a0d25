"""Overlap-tile prediction of class probabilities for one plane."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from napari_unet.core.errors import UserError
from napari_unet.core.inference.device import (
    auto_batch_size,
    auto_tile_size,
    autocast,
    compute_dtype,
    empty_cache,
    free_memory_bytes,
    is_out_of_memory,
    memory_tile_pixels,
)
from napari_unet.core.inference.engine import EngineCache, Runner, network_runner_job, runner_engine
from napari_unet.core.inference.tile_choice import choose_cpu_tile, speed_profile
from napari_unet.core.inference.tiling import Region, TileGrid, read_mirrored, tile_grid
from napari_unet.core.network.model_file import SegmentationModel
from napari_unet.core.network.normalization import apply_normalization
from napari_unet.core.progress import Job, Progress, Stage

#: Smallest tile side tried after out-of-memory errors before giving up.
_MIN_TILE = 64


class OutOfMemoryError(UserError, RuntimeError):
    """Even the smallest tiles did not fit in the device's memory."""


def predict_plane_job(
    plane: Any,
    model: SegmentationModel,
    /,
    *,
    device: torch.device,
    tile_size: int | None = None,
    batch_size: int | None = None,
    amp: bool = True,
    stats: np.ndarray | None = None,
    region: Region | None = None,
    plane_index: int = 0,
    n_planes: int = 1,
    engine: str = "auto",
    engine_cache: EngineCache | None = None,
) -> Job[np.ndarray]:
    """Predict class probabilities of one (Y, X, C) plane, tile by tile.

    Parameters
    ----------
    plane : array-like
        Shape (Y, X, C) with C the model's input channels; numpy, dask or
        anything sliceable. Only the pixels each tile needs are read.
    model : SegmentationModel
        The model; its network is moved to ``device``.
    device : torch.device
        Where to run.
    tile_size : int, optional
        Largest network input side; chosen from free memory if omitted.
    batch_size : int, optional
        Tiles per network call; chosen from free memory if omitted.
    amp : bool
        Mixed precision where the device has it: CUDA, and CPUs with
        bfloat16 units (see :func:`~napari_unet.core.inference.device.compute_dtype`).
    stats : numpy.ndarray, optional
        Per-channel (offset, scale) from the model's normalisation; computed
        from this plane if omitted. Pass the whole plane's statistics when
        predicting a ``region``.
    region : tuple of slice, optional
        Predict only this (Y, X) window of the plane. Tiles read their context
        from the rest of the plane (mirrored only at the plane's own borders),
        so the window's probabilities equal those of a whole-plane pass when
        the window starts on the network's pooling grid (multiples of
        ``2**(depth-1)``).
    plane_index, n_planes : int
        Position of this plane in a stack, for progress reports.
    engine : {"auto", "torch", "openvino"}
        What runs the network (see :mod:`napari_unet.core.inference.engine`): ``"auto"``
        uses OpenVINO on the CPU when it is installed. Pass ``"torch"`` when
        the weights change between calls (validation during training).
    engine_cache : EngineCache, optional
        What earlier calls of the same owner counted and converted (see
        :class:`~napari_unet.core.inference.engine.EngineCache`); without one,
        this call is counted on its own.

    Yields
    ------
    Progress
        ``"tiles"`` after every batch; ``"notice"`` when an out-of-memory
        error made the tiles smaller.

    Returns
    -------
    numpy.ndarray
        Probabilities, shape (n_classes, Y, X), float32 (Y, X of the region
        when one is given).

    Raises
    ------
    OutOfMemoryError
        If tiles of 64 px still do not fit.
    """
    config = model.config
    origin, extent = _window(tuple(plane.shape[:2]), region, config.downsampling)
    # channels-last (NHWC) on every device: tensor cores read it on GPUs, and
    # oneDNN's CPU convolutions run about 1.5x faster in it than in NCHW
    net = model.network.to(device).eval().to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if stats is None:
        stats = model.description.normalization.statistics(plane)
    engine_cache = engine_cache if engine_cache is not None else EngineCache()
    precision = compute_dtype(device, amp=amp)
    # on the CPU a same network's tiles are sized for the engine that runs them (tile_choice)
    choose_tiles = tile_size is None and device.type == "cpu" and config.padding == "same"
    if tile_size is None:
        tile_size = auto_tile_size(config, device)
    while True:
        grid = tile_grid(extent, config, tile_shape=(tile_size, tile_size))
        runner = yield from network_runner_job(
            net,
            device,
            engine=engine,
            cache=engine_cache,
            pixels=len(grid.tiles) * grid.input_shape[0] * grid.input_shape[1],
            plane_index=plane_index,
            n_planes=n_planes,
            amp=amp,
        )
        kind = runner_engine(runner)
        if choose_tiles:
            tile_shape = cpu_tile_shape(extent, config, device, engine=kind, precision=precision, cache=engine_cache)
            grid = tile_grid(extent, config, tile_shape=tile_shape)
        if batch_size is None:
            batch = auto_batch_size(config, device, grid.input_shape[0] * grid.input_shape[1])
        else:
            batch = max(1, int(batch_size))
        batch = min(batch, len(grid.tiles))
        speed = _SpeedMeter(engine_cache, kind, precision, grid) if device.type == "cpu" else None
        try:
            return (
                yield from _run_grid(
                    plane,
                    runner,
                    grid,
                    stats,
                    origin=origin,
                    extent=extent,
                    device=device,
                    batch=batch,
                    amp=amp,
                    n_classes=config.n_classes,
                    plane_index=plane_index,
                    n_planes=n_planes,
                    speed=speed,
                )
            )
        except Exception as exc:  # noqa: BLE001 - only out-of-memory is retried
            if not is_out_of_memory(exc):
                raise
            empty_cache(device)
            if batch > 1:
                batch_size = batch // 2
                what = f"batch of {batch_size} tiles"
            elif max(grid.input_shape) // 2 >= _MIN_TILE:
                tile_size = max(grid.input_shape) // 2
                choose_tiles = False
                what = f"tiles of {tile_size} px"
            else:
                raise OutOfMemoryError(
                    f"not enough memory on {device} even for {max(grid.input_shape)} px tiles; "
                    "close other programs using the GPU or choose the CPU"
                ) from exc
            yield Progress(
                Stage.NOTICE,
                plane=plane_index,
                n_planes=n_planes,
                message=f"out of memory on {device}; retrying with a {what}",
            )


def _run_grid(
    plane: Any,
    net: Runner,
    grid: TileGrid,
    stats: np.ndarray,
    *,
    origin: tuple[int, int],
    extent: tuple[int, int],
    device: torch.device,
    batch: int,
    amp: bool,
    n_classes: int,
    plane_index: int,
    n_planes: int,
    speed: _SpeedMeter | None = None,
) -> Job[np.ndarray]:
    height, width = extent
    tiles = grid.tiles
    n_tiles = len(tiles)
    # on an accelerator the tiles are normalised and stitched there and the
    # probabilities cross to the host once, when the output fits beside the
    # network's activations; on the CPU everything stays in numpy
    out_bytes = 4 * n_classes * height * width
    stitch_on_device = device.type != "cpu" and out_bytes <= _DEVICE_OUTPUT_FRACTION * free_memory_bytes(device)
    if stitch_on_device:
        out_dev = torch.empty((n_classes, height, width), dtype=torch.float32, device=device)
        offset = torch.as_tensor(stats[:, 0], dtype=torch.float32, device=device).view(1, -1, 1, 1)
        scale = torch.as_tensor(stats[:, 1], dtype=torch.float32, device=device).view(1, -1, 1, 1)
    else:
        out = np.zeros((n_classes, height, width), dtype=np.float32)
    with _cudnn_autotune(device):
        for first in range(0, n_tiles, batch):
            chunk = tiles[first : first + batch]
            if stitch_on_device:
                raw = np.stack([_transferable(read_mirrored(plane, _shifted(t.read, origin))) for t in chunk])
                x = torch.from_numpy(raw).to(device, non_blocking=True).permute(0, 3, 1, 2).float()
                x = torch.nan_to_num((x - offset) / scale, nan=0.0, posinf=0.0, neginf=0.0)
            else:
                inputs = np.stack(
                    [apply_normalization(read_mirrored(plane, _shifted(t.read, origin)), stats) for t in chunk]
                )
                x = torch.from_numpy(inputs).permute(0, 3, 1, 2).to(device)
            x = x.contiguous(memory_format=torch.channels_last)
            started = time.perf_counter()
            with torch.inference_mode(), autocast(device, enabled=amp):
                logits = net(x)
            if speed is not None:
                speed.add(len(chunk), time.perf_counter() - started)
            with torch.inference_mode():
                probs = torch.softmax(logits.float(), dim=1)
                if stitch_on_device:
                    for tile, p in zip(chunk, probs):
                        out_dev[(slice(None), *tile.write)] = p[(slice(None), *tile.keep)]
                else:
                    for tile, p in zip(chunk, probs.cpu().numpy()):
                        out[(slice(None), *tile.write)] = p[(slice(None), *tile.keep)]
            yield Progress(
                Stage.TILES,
                done=min(first + batch, n_tiles),
                total=n_tiles,
                plane=plane_index,
                n_planes=n_planes,
                message=f"tile {min(first + batch, n_tiles)}/{n_tiles}",
            )
    if stitch_on_device:
        out = np.empty((n_classes, height, width), dtype=np.float32)
        torch.from_numpy(out).copy_(out_dev)
    if speed is not None:
        speed.record()
    return out


def cpu_tile_shape(
    extent: tuple[int, int],
    config: Any,
    device: torch.device,
    /,
    *,
    engine: str,
    precision: torch.dtype,
    cache: EngineCache,
) -> tuple[int, int]:
    """The ``tile_shape`` :func:`predict_plane_job` gives a ``same`` network on the CPU.

    :func:`~napari_unet.core.inference.tile_choice.choose_cpu_tile` at the
    speed ``cache`` measured for ``engine`` in ``precision``, within a quarter
    of the free memory. Once the speed is measured the choice is kept for this
    size: the same image segmented again in a session is cut the same way
    (identical results).
    """
    measured = cache.speed(engine, precision)

    def choose() -> tuple[int, int]:
        return choose_cpu_tile(
            extent, config, engine=engine, speed_mpx_s=measured, max_pixels=memory_tile_pixels(config, device)
        )

    if measured is None:
        return choose()
    return cache.tile_shape((engine, str(precision), extent, config), choose)


class _SpeedMeter:
    """Times a plane's network calls and records the engine's speed in the job's engine cache.

    The first call of a plane is left out when there are others (it pays
    for oneDNN's and OpenVINO's set-up for the tile shape); the figure is
    scaled to the engine's best tile size by its speed profile.
    """

    def __init__(self, cache: EngineCache, engine: str, precision: torch.dtype, grid: TileGrid) -> None:
        self._cache = cache
        self._engine = engine
        self._precision = precision
        self._tile_pixels = grid.input_shape[0] * grid.input_shape[1]
        self._calls: list[tuple[int, float]] = []

    def add(self, tiles: int, seconds: float) -> None:
        self._calls.append((tiles, seconds))

    def record(self) -> None:
        calls = self._calls[1:] if len(self._calls) > 1 else self._calls
        tiles = sum(n for n, _ in calls)
        seconds = sum(t for _, t in calls)
        if tiles and seconds > 0:
            measured = tiles * self._tile_pixels / seconds / 1e6
            relative = speed_profile(self._engine).relative_speed(self._tile_pixels)
            self._cache.record_speed(self._engine, self._precision, measured / relative)


def _window(plane_shape: tuple[int, int], region: Region | None, step: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Origin and size of the window to predict; checks it lies in the plane and on the pooling grid."""
    if region is None:
        return (0, 0), plane_shape
    bounds = [r.indices(n) for r, n in zip(region, plane_shape)]
    if any(s != 1 or stop <= start for start, stop, s in bounds):
        raise ValueError(f"a region must be a non-empty, unit-step window of the plane, got {region}")
    if any(start % step for start, _, _ in bounds):
        raise ValueError(f"a region must start on multiples of {step} (the network's down-sampling), got {region}")
    return (bounds[0][0], bounds[1][0]), (bounds[0][1] - bounds[0][0], bounds[1][1] - bounds[1][0])


def _shifted(region: Region, origin: tuple[int, int]) -> Region:
    if origin == (0, 0):
        return region
    return tuple(slice(r.start + o, r.stop + o) for r, o in zip(region, origin))  # type: ignore[return-value]


#: Largest share of free accelerator memory the stitched output may take.
_DEVICE_OUTPUT_FRACTION = 0.2


def _transferable(tile: np.ndarray) -> np.ndarray:
    """A tile in a dtype torch can take, as small as possible for the copy to the device."""
    if tile.dtype in (np.uint8, np.int16, np.int32, np.int64, np.float16, np.float32, np.float64):
        return np.ascontiguousarray(tile)
    if tile.dtype == np.bool_:
        return tile.astype(np.uint8)
    if tile.dtype in (np.int8,):
        return tile.astype(np.int16)
    if tile.dtype == np.uint16:
        return tile.astype(np.int32)
    return tile.astype(np.float32)


@contextlib.contextmanager
def _cudnn_autotune(device: torch.device) -> Iterator[None]:
    """Let cuDNN pick its fastest convolution algorithms for the (repeated) tile shape."""
    if device.type != "cuda":
        yield
        return
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before
