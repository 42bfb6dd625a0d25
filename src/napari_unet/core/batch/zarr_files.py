"""Segmenting several large images, each block by block into its own OME-Zarr result.

The large-image counterpart of :mod:`napari_unet.core.batch.files`: the same
inputs, names and overwrite guard (:mod:`napari_unet.core.batch.paths`), the same
keep-going rules (a failed file is reported, the others still run; existing
results are skipped unless asked to redo them) and the same
:class:`~napari_unet.core.batch.files.FileSummary` rows, but every input is read
lazily and written with :func:`~napari_unet.core.blockwise.to_zarr.segment_to_zarr_job`.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

from napari_unet.core.batch.files import FileOutcome, FileSummary, per_file_job
from napari_unet.core.batch.paths import batch_targets, expand_inputs, output_paths
from napari_unet.core.blockwise.to_zarr import segment_to_zarr_job
from napari_unet.core.inference.options import INFERENCE_KEYWORDS, InferenceOptions, inference_options
from napari_unet.core.inference.segmentation import OutputKind, output_kind_of
from napari_unet.core.io.ome_zarr import LazyImage
from napari_unet.core.network.model_file import SegmentationModel
from napari_unet.core.network.registry import load_named_model
from napari_unet.core.progress import Progress, run_job

__all__ = ["expand_large_inputs", "segment_files_to_zarr", "segment_files_to_zarr_job", "zarr_output_paths"]


def expand_large_inputs(inputs: Sequence[str | os.PathLike], /) -> list[Path]:
    """TIFF files and zarr/OME-Zarr images of ``inputs``: :func:`~napari_unet.core.batch.paths.expand_inputs` with zarr."""
    return expand_inputs(inputs, zarr=True)


def zarr_output_paths(
    inputs: Sequence[Path], output: str | os.PathLike, /, *, output_kind: str = "instances"
) -> list[Path]:
    """Where each input's zarr result goes: :func:`~napari_unet.core.batch.paths.output_paths` for zarr."""
    return output_paths(inputs, output, kind=output_kind, fmt="zarr")


def segment_files_to_zarr_job(
    inputs: Sequence[str | os.PathLike],
    /,
    *,
    model: SegmentationModel | str | os.PathLike,
    output_folder: str | os.PathLike | None = None,
    outputs: Sequence[str | os.PathLike] | None = None,
    output_kind: OutputKind = "instances",
    options: InferenceOptions | None = None,
    overwrite: bool = False,
    output: str | os.PathLike | None = None,
    **blockwise: Any,
) -> Generator[Progress, None, list[FileSummary]]:
    """Segment large images one by one into zarr results; a generator form of :func:`segment_files_to_zarr`.

    Parameters
    ----------
    inputs : sequence of path-like
        TIFF files, zarr/OME-Zarr images, folders or glob patterns
        (see :func:`~napari_unet.core.batch.paths.expand_inputs`).
    model : SegmentationModel, str or path-like
        A model, a shipped model's name, or a model file.
    output_folder : path-like, optional
        Folder for the results (created if missing), each named
        ``<input name>_<labels|classes|probabilities>.zarr``; or, with one
        input, a name ending in ``.zarr``.
    outputs : sequence of path-like, optional
        One result path per input, instead of ``output_folder``.
    output_kind : {"instances", "classes", "probabilities"}
        What to write.
    options : InferenceOptions, optional
        Device, tile and batch size, mixed precision, engine (and cache);
        all files share one cache. ``device=``, ``tile_size=``, ... are a
        shorthand for it.
    overwrite : bool
        Redo inputs whose result exists (default: skip them).
    output : path-like, optional
        Deprecated name of ``output_folder``.
    **blockwise
        Passed to :func:`~napari_unet.core.blockwise.to_zarr.segment_to_zarr_job`
        (``block_size``, ``margin``, ``scheduler``, ``n_workers``, ...).

    Yields
    ------
    Progress
        ``"file-start"``, the reports of the blockwise job, ``"file-done"``
        (``data["summary"]``: the file's :class:`FileSummary`).

    Returns
    -------
    list of FileSummary
        One row per input, in input order.
    """
    kind = output_kind_of(output_kind)
    shorthand = {name: blockwise.pop(name) for name in INFERENCE_KEYWORDS if name in blockwise}
    settings = inference_options(options, **shorthand).with_cache()
    if output is not None:
        if output_folder is not None:
            raise TypeError("give output_folder= only (output= is its old name)")
        output_folder = output
    if not isinstance(model, SegmentationModel):
        model = load_named_model(model)
    images = expand_large_inputs(inputs)
    targets = batch_targets(images, output_folder=output_folder, outputs=outputs, kind=kind, fmt="zarr")
    scheduler = blockwise.pop("scheduler", None)
    if scheduler is None:
        return (yield from _run_files(images, targets, model, kind, overwrite, settings, blockwise))
    from napari_unet.core.blockwise.cluster import connect

    with connect(scheduler, n_workers=blockwise.pop("n_workers", None)) as client:  # one cluster for all files
        return (
            yield from _run_files(images, targets, model, kind, overwrite, settings, {**blockwise, "scheduler": client})
        )


def _run_files(
    images: list[Path],
    targets: list[Path],
    model: SegmentationModel,
    output_kind: OutputKind,
    overwrite: bool,
    options: InferenceOptions,
    blockwise: dict[str, Any],
) -> Generator[Progress, None, list[FileSummary]]:
    def one(source: Path, target: Path) -> Generator[Progress, None, FileOutcome]:
        image = LazyImage(source)
        try:
            result = yield from segment_to_zarr_job(
                image, model, target, output_kind=output_kind, options=options, overwrite=overwrite, **blockwise
            )
        finally:
            image.close()
        return (result.n_objects if output_kind == "instances" else None), "", result.object_scale

    return (yield from per_file_job(images, targets, one, overwrite=overwrite))


def segment_files_to_zarr(inputs: Sequence[str | os.PathLike], /, **options: Any) -> list[FileSummary]:
    """Segment large images into zarr results; :func:`segment_files_to_zarr_job` run to the end.

    Examples
    --------
    >>> rows = segment_files_to_zarr(["slide.ome.zarr"], model="nuclei", output_folder="results/")  # doctest: +SKIP
    """
    return run_job(segment_files_to_zarr_job(inputs, **options))
