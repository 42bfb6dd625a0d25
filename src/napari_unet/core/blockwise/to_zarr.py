"""Segmenting images larger than memory, block by block, into OME-Zarr.

:func:`segment_to_zarr_job` cuts every plane into blocks
(:mod:`napari_unet.core.blockwise.blocks`), predicts each block with the overlap-tile
network (reading only the pixels it needs, with real context from its
neighbours, so probabilities equal a whole-image pass), and writes the
block's result into a zarr output. Memory stays bounded by the block size,
whatever the image size.

Objects: each block labels its core plus a margin on its own; objects that
two neighbours both see near their shared border are matched and joined
(:mod:`napari_unet.core.blockwise.label_merge`), and a second pass renumbers all
objects 1..N, unique over the whole image (and stack). Blocks run one after
another in this process, or as tasks on a dask.distributed cluster
(``scheduler=``, :mod:`napari_unet.core.blockwise.cluster`) with the same result.
"""

from __future__ import annotations

import math
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_unet.core.blockwise.blocks import Block, block_grid, comparison_zone, neighbours, relative
from napari_unet.core.blockwise.label_merge import LabelUnion, block_offsets, matching_pairs
from napari_unet.core.inference.device import resolve_device
from napari_unet.core.inference.engine import EngineCache
from napari_unet.core.inference.layout import ImageLayout, infer_layout
from napari_unet.core.inference.model_fit import fit_notice
from napari_unet.core.inference.object_scale import ObjectScale, choose_scale_job
from napari_unet.core.inference.options import InferenceOptions, OptionsError, inference_options
from napari_unet.core.inference.plane_outputs import plane_outputs_job
from napari_unet.core.inference.segmentation import ImageTypeError, OutputKind, output_kind_of
from napari_unet.core.inference.tiling import Region
from napari_unet.core.io.ome_zarr import LazyImage, ZarrOutput
from napari_unet.core.network.geometry import round_down, round_up
from napari_unet.core.network.model_file import SegmentationModel
from napari_unet.core.progress import Job, Progress, Stage, run_job, within

__all__ = ["BlockwiseResult", "segment_to_zarr", "segment_to_zarr_job"]

#: Largest zarr chunk side; chunks divide blocks so processes never share one.
_CHUNK = 512
#: Each stage's share of the job's progress (blocks take nearly all the time).
_SHARES = {
    Stage.STATISTICS: (0.0, 0.05),
    Stage.BLOCKS: (0.05, 0.9),
    Stage.RELABEL: (0.9, 0.97),
    Stage.PYRAMID: (0.97, 1.0),
}


@dataclass(frozen=True)
class BlockwiseResult:
    """What :func:`segment_to_zarr_job` wrote.

    Attributes
    ----------
    path : pathlib.Path
        The OME-Zarr result.
    output : {"instances", "classes", "probabilities"}
        What it holds.
    n_objects : int
        Objects found (instances only; IDs 1..n_objects).
    shape : tuple of int
        Shape of the full-resolution result.
    n_blocks : int
        Blocks computed (over all planes).
    levels : int
        Resolution levels written (the full resolution and the pyramid).
    device : str
        Where the blocks ran (``"dask cluster"`` for a cluster).
    seconds : float
        Wall time.
    object_scale : ObjectScale or None
        The objects' diameter used and the factor blocks were resampled by.
    """

    path: Path
    output: str
    n_objects: int
    shape: tuple[int, ...]
    n_blocks: int
    levels: int
    device: str
    seconds: float
    object_scale: ObjectScale | None = None


@dataclass(frozen=True)
class _Unit:
    """One block of one plane: a task."""

    number: int
    plane: tuple[int, ...]
    plane_number: int
    block: Block


@dataclass(frozen=True)
class _Plan:
    """What every block task needs besides its unit and the model (sent to each worker once)."""

    image: Any
    layout: ImageLayout
    stats: list[np.ndarray]
    output: str
    out_path: str
    zones: dict[int, list[tuple[int, Region]]]
    n_units: int
    options: InferenceOptions
    factor: float = 1.0


@dataclass
class _Outcome:
    """What a block task reports back: its object count, the IDs it wrote and its view of the zones."""

    count: int = 0
    written: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    zones: dict[int, np.ndarray] = field(default_factory=dict)


def segment_to_zarr_job(
    image: Any,
    model: SegmentationModel,
    output_path: str | Path,
    /,
    *,
    output_kind: OutputKind | None = None,
    channel_axis: int | None = None,
    rgb: bool = False,
    block_size: int = 2048,
    margin: int = 128,
    options: InferenceOptions | None = None,
    device: str | None = None,
    tile_size: int | None = None,
    batch_size: int | None = None,
    amp: bool | None = None,
    engine: str | None = None,
    diameter: float | str | None = None,
    pixel_size: float | None = None,
    scale: tuple[float, ...] | None = None,
    unit: str | None = None,
    overwrite: bool = False,
    pyramid: bool = True,
    scheduler: Any = None,
    n_workers: int | None = None,
    output: OutputKind | None = None,
) -> Job[BlockwiseResult]:
    """Segment an image of any size block by block into an OME-Zarr result.

    Parameters
    ----------
    image : array-like or path
        A :class:`~napari_unet.core.io.ome_zarr.LazyImage`, a path to a TIFF,
        zarr or OME-Zarr image (opened lazily), a zarr or dask array, or a
        numpy array; same axes as :func:`~napari_unet.core.inference.segmentation.segment_job`
        takes.
    model : SegmentationModel
        The model to apply.
    output_path : str or pathlib.Path
        The ``.zarr`` folder to write. It appears only when complete.
    output_kind : {"instances", "classes", "probabilities"}
        Objects (uint32, IDs unique over the image), the most likely class
        (uint8), or class probabilities (float32, a ``C`` axis before Y, X).
    channel_axis : int, optional
        Axis holding channels for multichannel images.
    rgb : bool
        The last axis is RGB(A) colour.
    block_size : int
        Side of the square of output each block writes; memory grows with
        its square. A multiple of the network's down-sampling factor. When
        the image is resampled to the model's object size, this is the side
        at the model's scale (blocks of the image are ``block_size / factor``).
    margin : int
        Extra pixels predicted around each block for objects; objects up to
        about this size that a block border cuts are joined reliably (at the
        model's scale, as ``block_size``).
    options : InferenceOptions, optional
        Device (on a cluster: of each worker), tile and batch size, mixed
        precision, engine, object diameter and engine cache, as for
        :func:`~napari_unet.core.inference.segmentation.segment_job`: the same
        options give the same labels as a whole-image pass. Without a cache
        the job starts an empty one; on a cluster each worker keeps its own.
    device, tile_size, batch_size, amp, engine, diameter
        Shorthand for ``options=InferenceOptions(device=..., ...)``; not
        together with ``options``. ``diameter="auto"`` estimates the
        objects' size from a central part of the middle plane.
    pixel_size : float, optional
        The image's pixel size in micrometres (``diameter="calibration"``).
    scale : tuple of float, optional
        Pixel size of the image's non-channel axes (default: the file's
        calibration when it has one, else 1).
    unit : str, optional
        Unit of the pixel size (e.g. ``"micrometer"``).
    overwrite : bool
        Replace an existing result when this one completes.
    pyramid : bool
        Also write down-sampled levels for viewers.
    scheduler : "local", str or distributed.Client, optional
        Run the blocks on dask.distributed: ``"local"`` starts a local
        cluster of ``n_workers`` processes, an address connects to a
        running scheduler. None (default) runs them here, one after another.
    n_workers : int, optional
        Workers of a local cluster.
    output : str, optional
        Deprecated name of ``output_kind``.

    Yields
    ------
    Progress
        :attr:`Stage.STATISTICS` first, :attr:`Stage.TILES` within a block
        (in this process), :attr:`Stage.BLOCKS` per finished block,
        :attr:`Stage.RELABEL` and :attr:`Stage.PYRAMID` at the end; the
        fraction only grows (each stage has its share, :data:`_SHARES`).

    Returns
    -------
    BlockwiseResult

    Notes
    -----
    Peak memory is about that of segmenting one ``block_size + 2 * margin``
    square image, plus the zarr chunks being read: it does not grow with
    the image. Blocks with margins are predicted twice where they overlap,
    about ``((block_size + 2 * margin) / block_size) ** 2`` times the work
    of one pass (1.27x at the defaults) for instances; classes and
    probabilities need no margin.
    """
    output = output_kind_of(output_kind, output)
    settings = inference_options(
        options, device=device, tile_size=tile_size, batch_size=batch_size, amp=amp, engine=engine, diameter=diameter
    ).with_cache()
    started = time.perf_counter()
    if isinstance(image, (str, Path)):
        image = LazyImage(image)
    description = model.description
    _check_request(image, model, output, block_size)
    step = model.config.downsampling
    layout = infer_layout(tuple(image.shape), in_channels=model.config.in_channels, channel_axis=channel_axis, rgb=rgb)
    lazy = _as_lazy_array(image, layout)
    planes = list(layout.plane_indices())
    n_classes = model.config.n_classes
    chunk = math.gcd(block_size, _CHUNK)
    shape, chunks, axes = _output_geometry(layout, output, n_classes, chunk, image)
    target = ZarrOutput(
        output_path,
        shape=shape,
        chunks=chunks,
        axes=axes,
        dtype={"instances": np.uint32, "classes": np.uint8, "probabilities": np.float32}[output],
        scale=_output_scale(scale, image, layout, axes),
        unit=unit,
        overwrite=overwrite,
        attributes={"model": description.name, "output": output, "class_names": list(description.class_names)},
    )
    committed = False
    try:
        stats = yield from _statistics_job(lazy, layout, planes, description)
        middle = len(planes) // 2
        fit = fit_notice(layout, layout.plane(lazy, planes[middle]), model, stats=stats[middle])
        if fit is not None:
            yield Progress(Stage.NOTICE, message=fit)
        object_scale, _ = yield from within(
            choose_scale_job(
                layout.plane(lazy, planes[middle]),
                model,
                setting=settings.diameter,
                device=resolve_device(settings.device),
                pixel_size=pixel_size,
                stats=stats[middle],
                **settings.plane_keywords(),
            ),
            start=_SHARES[Stage.STATISTICS][1],
            stop=_SHARES[Stage.STATISTICS][1],
        )
        if object_scale.source == "fallback":
            yield Progress(Stage.NOTICE, message=object_scale.note, data={"object_scale": object_scale.to_dict()})
        factor = object_scale.factor
        # blocks and margins are sizes at the model's scale: in image pixels they scale by 1 / factor,
        # kept on the chunk grid so that no two blocks write into one chunk
        image_block = block_size if factor == 1.0 else max(chunk, round_down(round(block_size / factor), chunk))
        margin = round_up(max(0, margin) / factor, step) if output == "instances" else 0
        blocks = block_grid(layout.plane_shape, block_size=image_block, margin=margin, step=step)
        units = [
            _Unit(p * len(blocks) + b, index, p, block)
            for p, index in enumerate(planes)
            for b, block in enumerate(blocks)
        ]
        zones = _zones_by_unit(blocks, len(planes), margin) if output == "instances" else {}
        plan = _Plan(
            image=lazy,
            layout=layout,
            stats=stats,
            output=output,
            out_path=target.level0_path,
            zones=zones,
            n_units=len(units),
            options=settings.without_cache(),  # travels to the workers; each keeps its own cache
            factor=factor,
        )
        merger = _ZoneMerger(len(units))
        if scheduler is None:
            where = yield from _blocks_here_job(units, plan, model, settings, merger)
        else:
            where = yield from _blocks_on_cluster_job(units, plan, model, merger, scheduler, n_workers)
        n_objects = (yield from _relabel_job(target, units, merger)) if output == "instances" else 0
        levels = (yield from _pyramid_job(target, labels=output != "probabilities")) if pyramid else 1
        path = target.commit()
        committed = True
    except OSError as exc:
        target.raise_if_disk_full(exc)
        raise
    finally:
        if not committed:
            target.discard()
    return BlockwiseResult(
        path=path,
        output=output,
        n_objects=n_objects,
        shape=shape,
        n_blocks=len(units),
        levels=levels,
        device=where,
        seconds=time.perf_counter() - started,
        object_scale=object_scale,
    )


def _check_request(image: Any, model: SegmentationModel, output: str, block_size: int) -> None:
    """Refuse what cannot be segmented block by block, before anything is read or written."""
    description = model.description
    if output == "instances" and description.instance_rule.method == "none":
        raise OptionsError(
            f"the model {description.name!r} does not separate objects; ask for classes or probabilities"
        )
    dtype = np.dtype(getattr(image, "dtype", np.float32))
    if dtype.kind not in "biuf":
        raise ImageTypeError(f"images of type {dtype} cannot be segmented; use integer or floating-point pixels")
    step = model.config.downsampling
    if block_size < step or block_size % step:
        raise OptionsError(
            f"the block size must be a multiple of {step} (the network's down-sampling), got {block_size}"
        )


def _statistics_job(
    lazy: Any, layout: ImageLayout, planes: list[tuple[int, ...]], description: Any
) -> Generator[Progress, None, list[Any]]:
    """The normalisation statistics of every plane (read once, shared by all its blocks)."""
    stats = []
    for p, index in enumerate(planes):
        yield Progress(
            Stage.STATISTICS,
            done=p,
            total=len(planes),
            span=_SHARES[Stage.STATISTICS],
            message=f"reading intensities of plane {p + 1}/{len(planes)}",
        )
        stats.append(description.normalization.statistics(layout.plane(lazy, index)))
    return stats


def _blocks_here_job(
    units: list[_Unit], plan: _Plan, model: SegmentationModel, settings: InferenceOptions, merger: _ZoneMerger
) -> Generator[Progress, None, str]:
    """Every block in this process, one after another; returns where they ran."""
    torch_device = resolve_device(settings.device)
    start, stop = _SHARES[Stage.BLOCKS]
    width = (stop - start) / len(units)
    for k, unit_ in enumerate(units):
        block_job = _block_job(unit_, plan, model, torch_device, settings.engine_cache)
        outcome = yield from within(block_job, start=start + k * width, stop=start + (k + 1) * width)
        merger.absorb(unit_.number, outcome)
        yield Progress(
            Stage.BLOCKS,
            done=k + 1,
            total=len(units),
            span=_SHARES[Stage.BLOCKS],
            message=f"block {k + 1}/{len(units)} done",
        )
    return str(torch_device)


def _blocks_on_cluster_job(
    units: list[_Unit],
    plan: _Plan,
    model: SegmentationModel,
    merger: _ZoneMerger,
    scheduler: Any,
    n_workers: int | None,
) -> Generator[Progress, None, str]:
    """Every block on dask.distributed workers, in any order; returns where they ran."""
    from napari_unet.core.blockwise.cluster import connect, map_tasks

    with connect(scheduler, n_workers=n_workers) as client:
        tasks = map_tasks(client, _block_task, units, shared={"plan": plan, "model": model}, on_result=merger.absorb)
        yield from within(tasks, start=_SHARES[Stage.BLOCKS][0], stop=_SHARES[Stage.BLOCKS][1])
    return "dask cluster"


def _relabel_job(target: ZarrOutput, units: list[_Unit], merger: _ZoneMerger) -> Generator[Progress, None, int]:
    """Join objects cut by block borders and renumber them 1..N over the image; returns N."""
    yield Progress(Stage.RELABEL, span=_SHARES[Stage.RELABEL], message="joining objects cut by block borders")
    tables, n_objects = merger.final_tables()
    array = target.array(0)
    for k, unit_ in enumerate(units):
        key = (*unit_.plane, *unit_.block.core)
        array[key] = tables[unit_.number][np.asarray(array[key])].astype(np.uint32)
        yield Progress(
            Stage.RELABEL,
            done=k + 1,
            total=len(units),
            span=_SHARES[Stage.RELABEL],
            message=f"renumbering block {k + 1}/{len(units)}",
        )
    return n_objects


def _pyramid_job(target: ZarrOutput, *, labels: bool) -> Generator[Progress, None, int]:
    """Write the down-sampled levels; returns the number of levels."""
    yield Progress(Stage.PYRAMID, span=_SHARES[Stage.PYRAMID], message="writing the down-sampled levels")
    levels = target.add_pyramid(labels=labels)
    yield Progress(Stage.PYRAMID, done=1, total=1, span=_SHARES[Stage.PYRAMID], message=f"{levels} levels written")
    return levels


def segment_to_zarr(
    image: Any, model: SegmentationModel, output_path: str | Path, /, **options: Any
) -> BlockwiseResult:
    """Segment an image of any size into OME-Zarr; :func:`segment_to_zarr_job` run to the end.

    Examples
    --------
    >>> import tempfile
    >>> from napari_unet.core import new_model
    >>> model = new_model(depth=2, base_features=4, padding="same")
    >>> image = np.random.default_rng(0).random((100, 70))
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     result = segment_to_zarr(
    ...         image, model, f"{folder}/out.zarr", output_kind="classes", block_size=64, device="cpu"
    ...     )
    >>> result.shape, result.n_blocks
    ((100, 70), 4)
    """
    return run_job(segment_to_zarr_job(image, model, output_path, **options))


def _block_job(
    unit: _Unit, plan: _Plan, model: SegmentationModel, device: torch.device, cache: EngineCache | None
) -> Job[_Outcome]:
    """Predict one block, write its core into the output, and report its objects."""
    from napari_unet.core.io.ome_zarr import _zarr

    plane = plan.layout.plane(plan.image, unit.plane)
    block = unit.block
    region = block.extended if plan.output == "instances" else block.core
    outputs = yield from plane_outputs_job(
        plane,
        model,
        factor=plan.factor,
        device=device,
        stats=plan.stats[unit.plane_number],
        region=region,
        **{**plan.options.plane_keywords(), "engine_cache": cache},
    )
    array = _zarr().open_array(plan.out_path, mode="r+")
    core = relative(block.core, region)
    if plan.output == "probabilities":
        array[(*unit.plane, slice(None), *block.core)] = outputs.probabilities()
        return _Outcome()
    labels = outputs.labels(plan.output)
    if plan.output == "classes":
        array[(*unit.plane, *block.core)] = labels[core]
        return _Outcome()
    core_labels = labels[core]
    array[(*unit.plane, *block.core)] = core_labels.astype(np.uint32)
    zones = {other: labels[relative(zone, region)] for other, zone in plan.zones.get(unit.number, [])}
    return _Outcome(count=int(labels.max(initial=0)), written=np.unique(core_labels[core_labels > 0]), zones=zones)


def _block_task(unit: _Unit, *, plan: _Plan, model: SegmentationModel) -> _Outcome:
    """:func:`_block_job` as a dask.distributed task: this worker's device and thread count."""
    import dask

    from napari_unet.core.blockwise.cluster import worker_device, worker_engine_cache, worker_threads

    threads = worker_threads()
    if threads:
        torch.set_num_threads(threads)
    device = resolve_device(worker_device(plan.options.device))
    with dask.config.set(scheduler="synchronous"):  # lazy inputs are read by this task, not by the cluster
        return run_job(_block_job(unit, plan, model, device, worker_engine_cache()))


class _ZoneMerger:
    """Collects block outcomes as they arrive; matches each pair of zones once both sides are in."""

    def __init__(self, n_units: int) -> None:
        self.counts = np.zeros(n_units, dtype=np.int64)
        self.written: list[np.ndarray] = [np.zeros(0, np.int64)] * n_units
        self._waiting: dict[tuple[int, int], np.ndarray] = {}
        self._matches: list[tuple[int, int, np.ndarray]] = []

    def absorb(self, number: int, outcome: _Outcome) -> None:
        self.counts[number] = outcome.count
        self.written[number] = outcome.written
        for other, labels in outcome.zones.items():
            mine = self._waiting.pop((other, number), None)
            if mine is None:
                self._waiting[(number, other)] = labels
            else:
                self._matches.append((other, number, matching_pairs(mine, labels)))

    def final_tables(self) -> tuple[list[np.ndarray], int]:
        """Per-unit lookup tables from local to final IDs, and the number of objects."""
        offsets = block_offsets(self.counts)
        union = LabelUnion(int(self.counts.sum()))
        for a, b, pairs in self._matches:
            keep = np.isin(pairs[:, 0], self.written[a]) & np.isin(pairs[:, 1], self.written[b])
            union.join(np.stack([pairs[keep, 0] + offsets[a], pairs[keep, 1] + offsets[b]], axis=1))
        table = union.final_ids(
            np.concatenate([w + o for w, o in zip(self.written, offsets)] or [np.zeros(0, np.int64)])
        )
        tables = []
        for count, offset in zip(self.counts, offsets):
            local = np.zeros(int(count) + 1, dtype=np.int64)
            local[1:] = table[offset + 1 : offset + count + 1]
            tables.append(local)
        return tables, int(table.max(initial=0))


def _zones_by_unit(blocks: list[Block], n_planes: int, margin: int) -> dict[int, list[tuple[int, Region]]]:
    """For every unit, the neighbouring units it compares labels with, and where."""
    number = {block.index: i for i, block in enumerate(blocks)}
    zones: dict[int, list[tuple[int, Region]]] = {}
    for a, b in neighbours(blocks):
        zone = comparison_zone(a, b, margin=margin)
        if zone[0].stop <= zone[0].start or zone[1].stop <= zone[1].start:
            continue
        for p in range(n_planes):
            ua, ub = p * len(blocks) + number[a.index], p * len(blocks) + number[b.index]
            zones.setdefault(ua, []).append((ub, zone))
            zones.setdefault(ub, []).append((ua, zone))
    return zones


def _as_lazy_array(image: Any, layout: ImageLayout) -> Any:
    """numpy and dask arrays as they are; anything else sliceable wrapped in dask, so planes are views.

    Sources without chunks of their own are read in squares of at most
    ``_CHUNK`` pixels (one plane and all channels at a time), so no read
    grows with the image.
    """
    if isinstance(image, np.ndarray) or hasattr(image, "compute"):
        return image
    import dask.array as da

    chunks = getattr(image, "chunks", None)
    if isinstance(image, LazyImage):
        chunks = getattr(image._open(), "chunks", None)
    if not chunks:
        chunks = tuple(
            min(_CHUNK, size) if axis in layout.spatial_axes else size if axis == layout.channel_axis else 1
            for axis, size in enumerate(layout.shape)
        )
    return da.from_array(image, chunks=chunks, asarray=True, lock=False, name=False)


def _output_geometry(
    layout: ImageLayout, output: str, n_classes: int, chunk: int, image: Any
) -> tuple[tuple[int, ...], tuple[int, ...], str]:
    stack = layout.stack_shape
    letters = _stack_letters(layout, image)
    height, width = layout.plane_shape
    if output == "probabilities":
        return (*stack, n_classes, height, width), (*(1,) * len(stack), n_classes, chunk, chunk), f"{letters}cyx"
    return (*stack, height, width), (*(1,) * len(stack), chunk, chunk), f"{letters}yx"


def _stack_letters(layout: ImageLayout, image: Any) -> str:
    axes = getattr(image, "axes", None)
    if axes and len(axes) == len(layout.shape):
        letters = "".join(axes[a].lower() for a in layout.stack_axes)
        if len(set(letters)) == len(letters) and all(c in "tz" for c in letters):
            return letters
    return "tz"[-len(layout.stack_axes) :] if layout.stack_axes else ""


def _output_scale(scale: tuple[float, ...] | None, image: Any, layout: ImageLayout, axes: str) -> tuple[float, ...]:
    """Pixel size per output axis: given, or the file's, or 1; channels get 1."""
    n_spatial = len(layout.stack_axes) + 2
    if scale is None:
        file_scale = getattr(image, "scale", None)
        if file_scale is not None and len(file_scale) == len(layout.shape):
            scale = tuple(file_scale[a] for a in range(len(layout.shape)) if a != layout.channel_axis)
    if scale is None:
        scale = (1.0,) * n_spatial
    if len(scale) != n_spatial:
        raise OptionsError(f"scale needs one value per non-channel axis ({n_spatial}), got {len(scale)}")
    values = list(scale)
    if "c" in axes:
        values.insert(axes.index("c"), 1.0)
    return tuple(float(v) for v in values)
