"""Segmenting several large images, each block by block into its own OME-Zarr result.

The large-image counterpart of :mod:`napari_unet.core.batch.files`: the same
keep-going rules (a failed file is reported, the others still run; existing
results are skipped unless asked to redo them) and the same
:class:`~napari_unet.core.batch.files.FileSummary` rows, but every input is read
lazily and written with :func:`~napari_unet.core.blockwise.to_zarr.segment_to_zarr_job`.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

from napari_unet.core.batch.files import FileOutcome, FileSummary, InputError, per_file_job
from napari_unet.core.blockwise.to_zarr import segment_to_zarr_job
from napari_unet.core.inference.segmentation import OutputKind
from napari_unet.core.io.ome_zarr import TIFF_SUFFIXES, ZARR_SUFFIXES, LazyImage, is_lazy_path
from napari_unet.core.network.model_file import SegmentationModel
from napari_unet.core.network.registry import load_named_model
from napari_unet.core.progress import Progress, run_job

__all__ = ["expand_large_inputs", "segment_files_to_zarr", "segment_files_to_zarr_job", "zarr_output_paths"]

#: Failures that end one file but not the batch.
#: Name part added to each result, by output kind.
_SUFFIX = {"instances": "labels", "classes": "classes", "probabilities": "probabilities"}


def expand_large_inputs(inputs: Sequence[str | os.PathLike], /) -> list[Path]:
    """Turn files, folders and glob patterns into a list of images readable lazily.

    A zarr or OME-Zarr folder is one image; any other folder gives its TIFF
    files and zarr images (not recursively), sorted by name.

    Raises
    ------
    InputError
        An input does not exist, or no image was found.
    """
    images: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if is_lazy_path(path) and path.exists():
            images.append(path)
        elif path.is_dir():
            images.extend(sorted(p for p in path.iterdir() if _is_image(p)))
        elif path.is_file():
            images.append(path)
        elif glob.has_magic(str(item)):
            images.extend(p for p in sorted(Path(m) for m in glob.glob(str(path))) if _is_image(p))
        else:
            raise InputError(f"no such file or folder: {item}")
    unique = list(dict.fromkeys(images))
    if not unique:
        raise InputError("no TIFF, zarr or OME-Zarr images found in the inputs given")
    return unique


def zarr_output_paths(
    inputs: Sequence[Path], output: str | os.PathLike, /, *, output_kind: str = "instances"
) -> list[Path]:
    """Where each input's zarr result goes.

    With one input, ``output`` may name the result (ending in ``.zarr``);
    otherwise it is a folder and each result is named
    ``<input name>_<labels|classes|probabilities>.zarr``.

    Raises
    ------
    InputError
        Several inputs and a ``.zarr`` name, two inputs with the same name,
        or a result that would replace an input.
    """
    out = Path(output).expanduser()
    if out.suffix.lower() in ZARR_SUFFIXES:
        if len(inputs) != 1:
            raise InputError(f"{len(inputs)} inputs need an output folder, not the name {out.name}")
        targets = [out]
    else:
        stems = [_stem(p) for p in inputs]
        clashes = {s for s in stems if stems.count(s) > 1}
        if clashes:
            raise InputError(f"several inputs are named {sorted(clashes)[0]}; segment them into separate folders")
        targets = [out / f"{s}_{_SUFFIX.get(output_kind, output_kind)}.zarr" for s in stems]
    sources = {p.resolve() for p in inputs}
    for target in targets:
        if target.resolve() in sources:
            raise InputError(f"the result {target} would replace an input image; choose another output name")
    return targets


def segment_files_to_zarr_job(
    inputs: Sequence[str | os.PathLike],
    /,
    *,
    model: SegmentationModel | str | os.PathLike,
    output: str | os.PathLike,
    output_kind: OutputKind = "instances",
    overwrite: bool = False,
    **options: Any,
) -> Generator[Progress, None, list[FileSummary]]:
    """Segment large images one by one into zarr results; a generator form of :func:`segment_files_to_zarr`.

    Parameters
    ----------
    inputs : sequence of path-like
        TIFF files, zarr/OME-Zarr images, folders or glob patterns.
    model : SegmentationModel, str or path-like
        A model, a shipped model's name, or a model file.
    output : path-like
        A ``.zarr`` name (one input) or a folder (created if missing).
    output_kind : {"instances", "classes", "probabilities"}
        What to write.
    overwrite : bool
        Redo inputs whose result exists (default: skip them).
    **options
        Passed to :func:`~napari_unet.core.blockwise.to_zarr.segment_to_zarr_job`
        (``block_size``, ``margin``, ``device``, ``scheduler``, ...).

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
    if not isinstance(model, SegmentationModel):
        model = load_named_model(model)
    images = expand_large_inputs(inputs)
    targets = zarr_output_paths(images, output, output_kind=output_kind)
    for folder in {t.parent for t in targets}:
        folder.mkdir(parents=True, exist_ok=True)
    scheduler = options.pop("scheduler", None)
    if scheduler is None:
        return (yield from _run_files(images, targets, model, output_kind, overwrite, options))
    from napari_unet.core.blockwise.cluster import connect

    with connect(scheduler, n_workers=options.pop("n_workers", None)) as client:  # one cluster for all files
        return (yield from _run_files(images, targets, model, output_kind, overwrite, {**options, "scheduler": client}))


def _run_files(
    images: list[Path],
    targets: list[Path],
    model: SegmentationModel,
    output_kind: OutputKind,
    overwrite: bool,
    options: dict[str, Any],
) -> Generator[Progress, None, list[FileSummary]]:
    def one(source: Path, target: Path) -> Generator[Progress, None, FileOutcome]:
        image = LazyImage(source)
        try:
            result = yield from segment_to_zarr_job(
                image, model, target, output=output_kind, overwrite=overwrite, **options
            )
        finally:
            image.close()
        return (result.n_objects if output_kind == "instances" else None), ""

    return (yield from per_file_job(images, targets, one, overwrite=overwrite))


def segment_files_to_zarr(inputs: Sequence[str | os.PathLike], /, **options: Any) -> list[FileSummary]:
    """Segment large images into zarr results; :func:`segment_files_to_zarr_job` run to the end.

    Examples
    --------
    >>> rows = segment_files_to_zarr(["slide.ome.zarr"], model="nuclei", output="results/")  # doctest: +SKIP
    """
    return run_job(segment_files_to_zarr_job(inputs, **options))


def _is_image(path: Path) -> bool:
    return (path.is_file() and path.suffix.lower() in TIFF_SUFFIXES) or (path.is_dir() and is_lazy_path(path))


def _stem(path: Path) -> str:
    """The input's name without ``.tif``, ``.ome.tif``, ``.zarr`` or ``.ome.zarr``."""
    name = path.name
    for suffix in (".ome.zarr", ".ome.tiff", ".ome.tif", ".zarr", ".tiff", ".tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem
